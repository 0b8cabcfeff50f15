"""Generate a benchmark data set: ``python benchmarks/generate.py --database-url URL``.

Creates the schema with the project's migrations on an empty database (``--reset`` empties a
used one first), loads the data set in bulk (:mod:`benchmarks.dataset`), then verifies the
audit trail's hash chain as ``lims audit verify`` does. Prints the time of every phase and
the rows written; ``--write`` records them in RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from benchmarks import common
from benchmarks.dataset import PASSWORD, load
from benchmarks.dataset_audit import append_audit
from benchmarks.plan import Spec
from lims import create_app, migrate
from lims import db as lims_db
from lims.audit.models import AuditHead
from lims.audit.services import verify_chain


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    defaults = Spec()
    parser.add_argument("--aliquots", type=int, default=defaults.aliquots)
    parser.add_argument("--boxes", type=int, default=defaults.boxes)
    parser.add_argument("--patients", type=int, default=defaults.patients)
    parser.add_argument("--sites", type=int, default=defaults.sites)
    parser.add_argument(
        "--registered",
        type=int,
        default=defaults.registered,
        help="registered tubes left unplaced, for the placement benchmark",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--reset", action="store_true", help="empty a used database first")
    parser.add_argument(
        "--no-copy", action="store_true", help="PostgreSQL: INSERT batches instead of COPY"
    )
    parser.add_argument(
        "--extra-audit",
        type=int,
        default=0,
        metavar="N",
        help="then chain N more audit rows of daily work (benchmarks/dataset_audit.py), "
        "e.g. 4000000 for a 5,000,000-row trail",
    )
    parser.add_argument(
        "--audit-total",
        type=int,
        default=0,
        metavar="N",
        help="instead of --extra-audit: as many more rows as make the trail N rows long "
        "(make bench: 5,000,000 for 1,000,000 aliquots)",
    )
    parser.add_argument(
        "--extra-audit-only",
        action="store_true",
        help="only append the --extra-audit rows to the data set already in the database",
    )
    parser.add_argument("--instance-path", default=str(common.DEFAULT_INSTANCE))
    parser.add_argument("--write", action="store_true", help="record the figures in --results")
    parser.add_argument("--results", default=str(common.RESULTS))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    spec = Spec(
        aliquots=args.aliquots,
        boxes=args.boxes,
        patients=args.patients,
        sites=args.sites,
        registered=args.registered,
        seed=args.seed,
        batch=args.batch,
    )
    if args.extra_audit_only:
        return extra_audit_only(args)
    engine = lims_db.make_engine(args.database_url)
    if not common.is_empty(engine):
        if not args.reset:
            print("The database is not empty; give --reset to empty it first.", file=sys.stderr)
            return 2
        engine.dispose()
        common.reset(args.database_url)
        engine = lims_db.make_engine(args.database_url)
    started = time.perf_counter()
    migrate.upgrade(engine, "head")
    engine.dispose()
    lines = [f"{'migrations':<32}{time.perf_counter() - started:9.1f} s"]
    print(lines[0])

    def report(line: str) -> None:
        print(line, flush=True)
        if not line.startswith("  "):
            lines.append(line)

    app = create_app(overrides=common.settings(args.database_url, args.instance_path))
    with app.app_context():
        session = lims_db.session()
        counts = load(session, spec, report=report, use_copy=not args.no_copy)
        if args.audit_total:
            args.extra_audit = max(0, args.audit_total - session.get(AuditHead, 1).seq)
        if args.extra_audit:
            mark = time.perf_counter()
            append_audit(session, args.extra_audit, seed=spec.seed, use_copy=not args.no_copy)
            report(
                f"{'extra audit rows':<32}{time.perf_counter() - mark:9.1f} s  {args.extra_audit}"
            )
            counts["audit_entry"] += args.extra_audit
        mark = time.perf_counter()
        chain = verify_chain(session)
        report(
            f"{'audit verify_chain':<32}{time.perf_counter() - mark:9.1f} s  "
            f"{chain.rows} rows, {'intact' if chain.intact else chain.problem}"
        )
        version = common.database_version(app.extensions["lims_engine"])
    total = time.perf_counter() - started
    report(f"{'total':<32}{total:9.1f} s")
    for name, count in sorted(counts.items()):
        print(f"  {name:<20}{count:>12,}")
    print(f"Log in as tech.rh or manager.rh with the password {PASSWORD}.")
    if args.write:
        body = "\n".join(
            [
                f"## Generation on {common.backend_name(args.database_url)} ({common.today()})",
                "",
                f"`python benchmarks/generate.py --aliquots {spec.aliquots} --boxes {spec.boxes}"
                f" --patients {spec.patients} --sites {spec.sites}"
                f"{f' --extra-audit {args.extra_audit}' if args.extra_audit else ''}"
                f"{' --no-copy' if args.no_copy else ''}`",
                f"on {common.machine()}; {version}.",
                "",
                "```",
                *lines,
                "```",
                "",
                common.table(["table", "rows"], [[n, f"{c:,}"] for n, c in sorted(counts.items())]),
            ]
        )
        common.write_section(
            f"generate:{common.backend_name(args.database_url)}", body, path=Path(args.results)
        )
    return 0 if chain.intact else 1


def extra_audit_only(args: argparse.Namespace) -> int:
    """``--extra-audit N --extra-audit-only``: grow the trail of a generated data set."""
    app = create_app(overrides=common.settings(args.database_url, args.instance_path))
    with app.app_context():
        session = lims_db.session()
        started = time.perf_counter()
        last = append_audit(session, args.extra_audit, seed=args.seed, use_copy=not args.no_copy)
        print(f"{'extra audit rows':<32}{time.perf_counter() - started:9.1f} s  {args.extra_audit}")
        mark = time.perf_counter()
        chain = verify_chain(session)
        print(
            f"{'audit verify_chain':<32}{time.perf_counter() - mark:9.1f} s  "
            f"{chain.rows} rows, {'intact' if chain.intact else chain.problem}"
        )
    return 0 if chain.intact and chain.rows == last else 1


if __name__ == "__main__":
    sys.exit(main())
