"""``lims import ...``: the layout and inventory imports from the server's command line.

An import is done as a named manager account (``--as``): their site is where the layout or the
tubes go, and their name is on every audit row and custody event, with "(command line)" in the
reason. A refusal prints every problem (row, column, message) and exits non-zero.
"""

from __future__ import annotations

import csv
from pathlib import Path

import click
from flask.cli import with_appcontext

from lims import db
from lims.auth.models import User
from lims.auth.services import user_by_username
from lims.errors import DomainError
from lims.imports import inventory, layout
from lims.imports.tables import MAX_BYTES, Problem

FILE = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)


@click.group("import", help="Import a freezer layout or an existing inventory (CSV or XLSX).")
def import_group() -> None:
    pass


def _manager(username: str) -> User:
    user = user_by_username(db.session(), username)
    if not user.active:
        raise click.ClickException(f"The account {user.username} is deactivated.")
    return user


def _read(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(MAX_BYTES + 1)  # enough to refuse a larger file


def _reason(reason: str) -> str:
    return f"{reason.strip()} (command line)" if reason.strip() else "(command line)"


def _refuse(problems: list[Problem]) -> None:
    for problem in problems:
        where = f"row {problem.row}" if problem.row else "file"
        column = f", {problem.column}" if problem.column else ""
        click.echo(f"{where}{column}: {problem.message}")
    raise click.ClickException(f"{len(problems)} problem(s); nothing was imported.")


@import_group.command("layout", help="Create storage units, racks and boxes from FILE.")
@click.argument("file", type=FILE)
@click.option("--as", "username", required=True, help="The manager the import is done as.")
@click.option("--dry-run", is_flag=True, help="Check every row and write nothing.")
@click.option("--reason", default="", help="Why (kept in the audit trail with the file name).")
@with_appcontext
def layout_command(file: Path, username: str, dry_run: bool, reason: str) -> None:
    try:
        report = layout.import_layout_file(
            db.session(),
            actor=_manager(username),
            data=_read(file),
            filename=file.name,
            dry_run=dry_run,
            reason=_reason(reason),
        )
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    if not report.ok:
        _refuse(report.problems)
    verb = "Would create" if dry_run else "Created"
    click.echo(
        f"{verb} {len(report.units)} storage unit(s), {len(report.racks)} rack(s) and "
        f"{len(report.boxes)} box(es)."
    )
    for label, codes in (("units", report.units), ("racks", report.racks),
                         ("boxes", report.boxes)):  # fmt: skip
        if codes:
            click.echo(f"  {label}: {', '.join(codes)}")


@import_group.command("inventory", help="Register and store the tubes listed in FILE.")
@click.argument("file", type=FILE)
@click.option("--as", "username", required=True, help="The manager the import is done as.")
@click.option("--reason", required=True, help="Why (kept in the audit trail with the file name).")
@click.option("--dry-run", is_flag=True, help="Check every row and write nothing.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write row, former label and new identifier of each tube to this CSV file.",
)
@with_appcontext
def inventory_command(
    file: Path, username: str, reason: str, dry_run: bool, output: Path | None
) -> None:
    try:
        report = inventory.import_inventory_file(
            db.session(),
            actor=_manager(username),
            data=_read(file),
            filename=file.name,
            dry_run=dry_run,
            reason=_reason(reason),
        )
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    if not report.ok:
        _refuse(report.problems)
    header = ["row", "former_label", "identifier", "material_type", "box_code", "position"]
    lines = [
        [str(item.row), item.former_label, item.code, item.material_type.value,
         item.box_code, item.position]
        for item in report.items
    ]  # fmt: skip
    if output is not None:
        with output.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([header, *lines])
    else:
        for line in [header, *lines]:
            click.echo("\t".join(line))
    verb = "Would register and store" if dry_run else "Registered and stored"
    click.echo(f"{verb} {len(report.items)} tube(s).")


@import_group.command("template", help="Write the template of an import (layout or inventory).")
@click.argument("kind", type=click.Choice(["layout", "inventory"]))
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="xlsx")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path)
)
def template_command(kind: str, fmt: str, output: Path) -> None:
    maker = layout.layout_template if kind == "layout" else inventory.inventory_template
    output.write_bytes(maker(fmt))
    click.echo(f"Wrote {output}.")
