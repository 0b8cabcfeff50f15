"""``lims labels ...``: the label templates and one-off label files from the server's shell.

``list`` names the templates the installation prints with (the project's and the site's own
folder). ``render`` writes the label of one item, box or shipment (or example content with
``--sample``) as PDF or ZPL. The command line acts as the server's administrator
(``actor=None``), as every ``lims`` command does, with one exception decided here: a template
that prints who the patient is (name, birth date, CPR: the product bag label) needs
``--as USERNAME``, a technician or manager of the patient's treating site, so that every
identity printed on a label is revealed to, and audited as, a named person.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask.cli import with_appcontext

from lims import db
from lims.errors import DomainError
from lims.labels import content as label_content
from lims.labels.render import FORMATS, render
from lims.labels.templates import TemplateError, site_templates, template_named


def _templates():
    try:
        return site_templates()
    except TemplateError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("labels", help="Barcode labels: templates, PDF and ZPL (Zebra) output.")
def labels_group() -> None:
    pass


@labels_group.command("list", help="The label templates: name, kind, size, dpi, code, file.")
@with_appcontext
def list_templates() -> None:
    for template in _templates().values():
        size = f"{template.width_mm:g}x{template.height_mm:g} mm"
        research = " research" if template.research else ""
        click.echo(
            f"{template.name}\t{template.kind}{research}\t{size}\t{template.dpi} dpi\t"
            f"{template.barcode.symbology}\t{template.path}"
        )


@labels_group.command("render", help="Write one label (or --sample) as PDF or ZPL to a file.")
@click.option("--template", "template_name", required=True, help="Template name (see list).")
@click.option("--item", "item_code", default=None, help="Code of a bag or tube.")
@click.option("--box", "box_code", default=None, help="Code of a box.")
@click.option("--shipment", "shipment_code", default=None, help="Code of a shipment.")
@click.option("--sample", is_flag=True, help="Fill the template with example data.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option("--sheet", type=click.Choice(["roll", "a4"]), default="roll", show_default=True)
@click.option("--reprint", is_flag=True, help="Mark the label REPRINT.")
@click.option(
    "--as",
    "username",
    default=None,
    help="Act as this user (needed for labels with patient identifiers).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    help="The file to write ('-' for stdout).",
)
@with_appcontext
def render_label(
    template_name: str,
    item_code: str | None,
    box_code: str | None,
    shipment_code: str | None,
    sample: bool,
    fmt: str,
    sheet: str,
    reprint: bool,
    username: str | None,
    output: str,
) -> None:
    chosen = [flag for flag, given in (
        ("--item", item_code), ("--box", box_code), ("--shipment", shipment_code),
        ("--sample", sample),
    ) if given]  # fmt: skip
    if len(chosen) != 1:
        raise click.UsageError("Give exactly one of --item, --box, --shipment or --sample.")
    try:
        template = template_named(template_name, _templates())
        if sample:
            label = label_content.sample_content(template)
            if reprint:
                label = label_content.LabelContent(label.values, label.barcode_data, True)
        else:
            label = _content(template, item_code, box_code, shipment_code, username, reprint)
        data = render(template, [label], fmt, sheet=sheet)
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    if output == "-":
        sys.stdout.buffer.write(data)
        return
    Path(output).write_bytes(data)
    click.echo(f"Wrote the {template.name} label ({fmt}, {len(data)} bytes) to {output}.")


def _content(template, item_code, box_code, shipment_code, username, reprint):
    from lims.auth.services import user_by_username
    from lims.custody.services import find_item
    from lims.shipments.services import get_shipment
    from lims.storage.services import box_by_code

    session = db.session()
    actor = user_by_username(session, username) if username else None
    if template.patient_keys and actor is None:
        raise click.ClickException(
            f"Label {template.name} prints who the patient is; give --as USERNAME, a "
            "technician or manager of the patient's treating site (the view is audited)."
        )
    options = {"actor": actor, "template": template, "reprint": reprint}
    if item_code:
        item = find_item(session, item_code)
        return label_content.item_content(session, item=item, **options)
    if box_code:
        return label_content.box_content(session, box=box_by_code(session, box_code), **options)
    shipment = get_shipment(session, shipment_code)
    return label_content.shipment_content(session, shipment=shipment, **options)
