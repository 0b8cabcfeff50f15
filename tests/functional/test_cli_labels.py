"""`lims labels list` and `lims labels render` from the shell."""

from __future__ import annotations

from sqlalchemy import select

from lims import db as lims_db
from lims import identifiers
from lims.audit.models import AuditEntry
from tests.integration.people import actor, build_cast, cpr, new_episode
from tests.integration.test_custody_services import issued_bag
from tests.integration.test_label_rendering import (
    aliquots,
    decoded,
    pdf_text,
    require_label_tools,
)


def identity_views(app) -> list[int | None]:
    """Who viewed an identity, one user id per audit row."""
    with app.app_context():
        session = lims_db.session()
        return list(
            session.scalars(
                select(AuditEntry.user_id).where(AuditEntry.action == "view_identity")
            )
        )


def test_list_names_every_template(runner):
    result = runner.invoke(args=["labels", "list"])
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.output.strip().splitlines()]
    assert [row[0] for row in rows] == ["box", "cryovial", "product_bag", "shipment"]
    vial = next(row for row in rows if row[0] == "cryovial")
    assert vial[1:5] == ["cryovial research", "44x19 mm", "300 dpi", "datamatrix"]
    assert vial[5].endswith("labels/cryovial.toml")


def test_list_shows_a_broken_site_template_by_file_and_field(app, runner, tmp_path):
    (tmp_path / "bad.toml").write_text('name = "bad"\nkind = "box"\n', encoding="utf-8")
    app.config["LIMS"]["labels"]["extra_folder"] = str(tmp_path)
    result = runner.invoke(args=["labels", "list"])
    assert result.exit_code == 1
    assert f"{tmp_path / 'bad.toml'}: research: missing" in result.output


def test_render_a_sample_as_pdf_and_zpl(runner, tmp_path):
    require_label_tools()
    target = tmp_path / "vial.pdf"
    result = runner.invoke(
        args=["labels", "render", "--template", "cryovial", "--sample", "--format", "pdf",
              "-o", str(target)]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"to {target}" in result.output
    sample = identifiers.format_local_id("RH", 42)
    assert decoded(target.read_bytes(), "datamatrix", tmp_path) == [sample]
    zpl = tmp_path / "bag.zpl"
    result = runner.invoke(
        args=["labels", "render", "--template", "product_bag", "--sample", "--format", "zpl",
              "--reprint", "-o", str(zpl)]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = zpl.read_text(encoding="utf-8")
    assert text.startswith("^XA") and text.rstrip().endswith("^XZ")
    assert "^BCN," in text and "^FD=W12342500012300^FS" in text and "REPRINT" in text
    sheet = tmp_path / "boxes.pdf"
    result = runner.invoke(
        args=["labels", "render", "--template", "box", "--sample", "--format", "pdf",
              "--sheet", "a4", "-o", str(sheet)]
    )  # fmt: skip
    assert result.exit_code == 0 and sheet.read_bytes().startswith(b"%PDF")


def test_render_refuses_what_it_cannot_do(runner, tmp_path):
    out = str(tmp_path / "x.pdf")
    result = runner.invoke(args=["labels", "render", "--template", "nope", "--sample",
                                 "--format", "pdf", "-o", out])  # fmt: skip
    assert result.exit_code == 1 and "No label template 'nope'" in result.output
    result = runner.invoke(args=["labels", "render", "--template", "box", "--format", "pdf",
                                 "-o", out])  # fmt: skip
    assert result.exit_code == 2 and "exactly one of" in result.output
    result = runner.invoke(args=["labels", "render", "--template", "box", "--box", "NOPE",
                                 "--format", "zpl", "-o", out])  # fmt: skip
    assert result.exit_code == 1 and "No box NOPE" in result.output
    assert not (tmp_path / "x.pdf").exists()


def test_render_an_items_label(app, runner, make_site, make_user, tmp_path):
    require_label_tools()
    people = build_cast(make_site, make_user)
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        tube = aliquots(session, tech, n=21, count=2)[1]
        code, coi = tube.code, tube.episode.coi
        bag = issued_bag(app, session, people, new_episode(session, tech, n=22))
        bag_code = bag.code
    target = tmp_path / "tube.pdf"
    result = runner.invoke(
        args=["labels", "render", "--template", "cryovial", "--item", code.lower(),
              "--format", "pdf", "-o", str(target)]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert decoded(target.read_bytes(), "datamatrix", tmp_path) == [code]
    text = pdf_text(target.read_bytes(), tmp_path)
    assert code[:-1] in text and "2/2" in text and coi not in text
    assert identifiers.format_cpr(cpr(21)) not in text and "Patient 21" not in text

    # The bag label names the patient: only as a person of the treating site, audited.
    bag_file = tmp_path / "bag.pdf"
    args = ["labels", "render", "--template", "product_bag", "--item", bag_code,
            "--format", "pdf", "-o", str(bag_file)]  # fmt: skip
    result = runner.invoke(args=args)
    assert result.exit_code == 1 and "--as USERNAME" in result.output
    assert not bag_file.exists() and identity_views(app) == []
    result = runner.invoke(args=[*args, "--as", people["researcher"].username])
    assert result.exit_code == 1 and "not allowed" in result.output
    result = runner.invoke(args=[*args, "--as", people["maker"].username])
    assert result.exit_code == 1 and "not at your site" in result.output
    assert identity_views(app) == [] and not bag_file.exists()
    result = runner.invoke(args=[*args, "--as", people["tech"].username])
    assert result.exit_code == 0, result.output
    text = pdf_text(bag_file.read_bytes(), tmp_path)
    assert "Patient 22" in text and identifiers.format_cpr(cpr(22)) in text
    assert identity_views(app) == [people["tech"].id]
