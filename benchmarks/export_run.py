"""One inventory export in a process of its own, for an honest memory figure:
``python benchmarks/export_run.py --database-url URL --format csv|xlsx -o FILE``.

Prints one JSON line: seconds, rows, the resident memory of the idle application process
before the export (application created, pandas and openpyxl imported, connected) and the
peak resident memory of the whole process (``VmHWM``), in MiB. The export is the command
line's (``lims export inventory``): the whole network, staff columns, through the same
functions (``prepare_export`` then the streamed CSV writer or the write-only XLSX writer).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from benchmarks import common
from lims import create_app
from lims import db as lims_db


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--format", choices=("csv", "xlsx"), required=True)
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--instance-path", default=str(common.DEFAULT_INSTANCE))
    args = parser.parse_args(argv)

    app = create_app(overrides=common.settings(args.database_url, args.instance_path))
    from lims.exports import tables
    from lims.exports.inventory import InventoryFilter, prepare_export, write_export_csv

    with app.app_context():
        session = lims_db.session()
        export = prepare_export(session, actor=None, filters=InventoryFilter())
        idle = common.memory_mib("VmRSS")
        started = time.perf_counter()
        if args.format == "csv":
            with open(args.output, "w", encoding="utf-8", newline="") as stream:
                rows = write_export_csv(session, export, stream)
        else:
            rows = tables.write_xlsx(session, export, args.output, None)
        seconds = time.perf_counter() - started
    print(json.dumps(common.export_figures(args.format, seconds, rows, idle, args.output)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
