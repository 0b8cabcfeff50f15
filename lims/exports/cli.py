"""``lims export inventory ...``: the freezer inventory as CSV or XLSX from the server's shell.

The command line acts as the server's administrator (``actor=None``), as every other
``lims`` command does: the whole network, all staff columns, recorded in the audit trail as
"command line". ``--researcher`` writes what a researcher would receive instead (their
columns, consenting patients' stored aliquots only). Progress (rows written) goes to stderr
after every chunk, so a long export shows it is alive and stdout stays clean.
"""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext

from lims import db
from lims.errors import DomainError
from lims.exports import tables
from lims.exports.inventory import InventoryFilter, prepare_export, write_export_csv


@click.group("export", help="Exports in open formats (CSV, XLSX).")
def export_group() -> None:
    pass


@export_group.command(
    "inventory", help="The freezer inventory: one row per item with a place in a box."
)
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), required=True)
@click.option("--site", default=None, help="Site code, e.g. RH (default: every site).")
@click.option("--unit", default=None, help="Storage unit code.")
@click.option("--rack", default=None, help="Rack code.")
@click.option("--box", default=None, help="Box code.")
@click.option("--study", default=None, help="Study (the episode's protocol).")
@click.option("--type", "material_type", default=None, help="Material type, e.g. plasma.")
@click.option("--state", default=None, help="stored, reserved or checked_out.")
@click.option(
    "--researcher", is_flag=True, help="Only what a researcher may see (no CoI, no dates)."
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="The file to write ('-' for stdout, CSV only).",
)
@with_appcontext
def inventory(
    fmt: str,
    site: str | None,
    unit: str | None,
    rack: str | None,
    box: str | None,
    study: str | None,
    material_type: str | None,
    state: str | None,
    researcher: bool,
    output: str,
) -> None:
    session = db.session()
    filters = InventoryFilter.from_mapping(
        {
            "site": site,
            "unit": unit,
            "rack": rack,
            "box": box,
            "study": study,
            "material_type": material_type,
            "state": state,
        }
    )
    if output == "-" and fmt != "csv":
        raise click.UsageError("XLSX cannot go to stdout; name a file with -o.")
    try:
        # Checked before the file is opened: a refused export leaves no empty file behind.
        export = prepare_export(session, actor=None, filters=filters, researcher_view=researcher)
    except DomainError as exc:
        raise click.ClickException(exc.message) from None

    def progress(rows: int) -> None:
        click.echo(f"{rows} rows written", err=True)

    if fmt == "csv" and output == "-":
        rows = write_export_csv(session, export, sys.stdout, progress)
    elif fmt == "csv":
        with open(output, "w", encoding="utf-8", newline="") as stream:
            rows = write_export_csv(session, export, stream, progress)
    else:
        rows = tables.write_xlsx(session, export, output, progress)
    click.echo(f"Wrote {rows} rows to {output}.", err=output == "-")
