"""Labels rendered for real: every shipped template to PDF, then to an image whose barcodes are
decoded again; ZPL checked structurally; what a research label may never show; who may print
a bag label with the patient's identity, and that the view is in the audit trail."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims import identifiers
from lims.audit.models import AuditEntry
from lims.custody import production
from lims.custody.services import find_item
from lims.errors import Forbidden, ValidationError
from lims.labels import layout
from lims.labels.content import (
    LabelContent,
    box_content,
    item_content,
    sample_content,
    shipment_content,
)
from lims.labels.render import render
from lims.labels.templates import PROJECT_FOLDER, load_templates
from lims.labels.zpl import dots
from lims.shipments import services as shipments
from lims.storage import services as storage
from lims.web import local_time
from tests.integration.people import actor, cpr, new_episode
from tests.integration.test_custody_services import issued_bag, quarantined_lot
from tests.integration.test_storage import box, freezer
from tests.pdf_tools import missing_pdf_tools, require

TEMPLATES = load_templates([PROJECT_FOLDER])
#: Identifiers with every character class: local IDs (one ending in '*'), DINs as ISBT 128
#: data structure 001, box codes with '-' and '.', a shipment code.
CODES = (
    identifiers.format_local_id("RH", 42),
    "RH0000039*",
    "=W12342500000300",
    "RH-F80-1.B07",
    "A.1-B.2-C.3",
    "SHRH0000121",
)


def require_label_tools() -> None:
    """poppler and zbar, and libdmtx for the Data Matrix codes."""
    missing = missing_pdf_tools()
    try:
        layout.libdmtx()
    except ImportError as exc:
        missing.append(f"libdmtx0b/pylibdmtx ({exc})")
    require(missing, "Label checks need poppler-utils, libzbar0 and libdmtx0b")


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    source = tmp_path / "text.pdf"
    source.write_bytes(pdf)
    text = subprocess.run(
        ["pdftotext", "-layout", str(source), "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return re.sub(r"\s+", " ", text)


def decoded(pdf: bytes, symbology: str, tmp_path: Path) -> list[str]:
    """The barcodes read back from the first page rendered at 300 dpi."""
    from PIL import Image
    from pyzbar.pyzbar import ZBarSymbol
    from pyzbar.pyzbar import decode as zbar_decode

    source = tmp_path / "label.pdf"
    source.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "300", "-singlefile", str(source), str(tmp_path / "label")],
        check=True,
        timeout=60,
    )
    with Image.open(tmp_path / "label.png") as image:
        grey = image.convert("L")
    if symbology == "datamatrix":
        found = layout.libdmtx().decode(grey, max_count=1)
    else:
        found = zbar_decode(grey, symbols=[ZBarSymbol.CODE128])
    return [symbol.data.decode() for symbol in found]


def with_code(template, code: str) -> LabelContent:
    label = sample_content(template)
    values = dict(label.values, code=code.lstrip("="), code_check="")
    return LabelContent(values, code)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_renders_barcodes_that_decode_to_the_identifier(name, tmp_path):
    require_label_tools()
    template = TEMPLATES[name]
    sample = sample_content(template)
    pdf = render(template, [sample], "pdf")
    assert pdf.startswith(b"%PDF") and pdf == render(template, [sample], "pdf")  # deterministic
    assert decoded(pdf, template.barcode.symbology, tmp_path) == [sample.barcode_data]
    assert sample.values["code"] in pdf_text(pdf, tmp_path)
    for code in CODES:
        label = with_code(template, code)
        assert decoded(render(template, [label], "pdf"), template.barcode.symbology, tmp_path) == [
            code
        ], f"{name}: {code}"


def test_a_reprint_says_so_on_the_pdf_and_in_the_zpl(tmp_path):
    require_label_tools()
    for template in TEMPLATES.values():
        label = sample_content(template)
        again = dataclasses.replace(label, reprint=True)
        assert "REPRINT" not in pdf_text(render(template, [label], "pdf"), tmp_path)
        assert "REPRINT" in pdf_text(render(template, [again], "pdf"), tmp_path)
        assert b"REPRINT" not in render(template, [label], "zpl")
        assert b"^FH^FDREPRINT^FS" in render(template, [again], "zpl")


def test_zpl_structure_symbology_and_escaping():
    for template in TEMPLATES.values():
        labels = [with_code(template, code) for code in CODES[:3]]
        zpl = render(template, labels, "zpl").decode("utf-8")
        assert zpl.startswith("^XA") and zpl.rstrip().endswith("^XZ")
        blocks = re.findall(r"\^XA.*?\^XZ", zpl, flags=re.S)
        assert len(blocks) == 3 and zpl.count("^XA") == 3
        for block, label in zip(blocks, labels, strict=True):
            assert f"^FD{label.barcode_data}^FS" in block
            command = "^BXN," if template.barcode.symbology == "datamatrix" else "^BCN,"
            other = "^BCN," if command == "^BXN," else "^BXN,"
            assert command in block and other not in block
            assert "^CI28" in block and "^A0N," in block
    vial = TEMPLATES["cryovial"]
    odd = render(vial, [with_code(vial, "A^B~C_D")], "zpl").decode()
    assert "^FDA_5EB_7EC_5FD^FS" in odd and "A^B" not in odd


def test_zpl_positions_scale_with_the_resolution():
    vial = TEMPLATES["cryovial"]
    label = sample_content(vial)
    at = {}
    for dpi in (203, 300):
        zpl = render(dataclasses.replace(vial, dpi=dpi), [label], "zpl").decode()
        at[dpi] = zpl
        assert f"^PW{round(44 * dpi / 25.4)}" in zpl and f"^LL{round(19 * dpi / 25.4)}" in zpl
        x, y = dots(vial.barcode.x_mm, dpi), dots(vial.barcode.y_mm, dpi)
        module = round(vial.barcode.module_mm * dpi / 25.4)
        assert f"^FO{x},{y}^BXN,{module},200" in zpl
        field = vial.fields[0]
        assert f"^FO{dots(field.x_mm, dpi)},{dots(field.y_mm, dpi)}^A0N," in zpl
    assert "^PW352" in at[203] and "^PW520" in at[300]
    assert "^BXN,4,200" in at[203] and "^BXN,6,200" in at[300]


def test_a4_sheets_tile_the_labels(tmp_path):
    require_label_tools()
    template = TEMPLATES["box"]  # 76 x 25 mm: 2 across, 10 down
    codes = [f"RH-BOX-{n}.A" for n in range(1, 26)]
    pdf = render(template, [with_code(template, code) for code in codes], "pdf", sheet="a4")
    text = subprocess.run(
        ["pdftotext", "-", "-"], input=pdf, check=True, capture_output=True, timeout=60
    ).stdout.decode()
    assert text.count("\f") == 2  # 20 labels on the first sheet, 5 on the second
    first = sorted(decoded_all(pdf, tmp_path))
    assert first == sorted(codes[:20])
    with pytest.raises(ValidationError, match="roll or a4"):
        render(template, [with_code(template, "X1")], "pdf", sheet="letter")


def decoded_all(pdf: bytes, tmp_path: Path) -> list[str]:
    from PIL import Image
    from pyzbar.pyzbar import ZBarSymbol
    from pyzbar.pyzbar import decode as zbar_decode

    source = tmp_path / "sheet.pdf"
    source.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "300", "-f", "1", "-l", "1", "-singlefile", str(source),
         str(tmp_path / "sheet")],
        check=True,
        timeout=60,
    )  # fmt: skip
    with Image.open(tmp_path / "sheet.png") as image:
        found = zbar_decode(image.convert("L"), symbols=[ZBarSymbol.CODE128])
    return [symbol.data.decode() for symbol in found]


def test_a_code_too_long_for_the_label_is_refused_not_cut():
    with pytest.raises(ValidationError, match="too long"):
        render(TEMPLATES["box"], [with_code(TEMPLATES["box"], "BOX-" + "9" * 36)], "pdf")
    with pytest.raises(ValidationError, match="pdf or zpl"):
        render(TEMPLATES["box"], [sample_content(TEMPLATES["box"])], "png")
    with pytest.raises(ValidationError):
        render(TEMPLATES["box"], [], "zpl")


# -- from the database -------------------------------------------------------------------


def aliquots(session, tech, n: int, count: int = 3, material: str = "pbmc"):
    episode = new_episode(session, tech, n=n)
    draw = production.register_sample(
        session,
        actor=tech,
        coi=episode.coi,
        material_type=material,
        quantity=5,
        unit="mL",
        collected_at=lims_db.utcnow(),
        timepoint="M3",
    )
    return production.aliquot(
        session,
        actor=tech,
        parent_code=draw.code,
        count=count,
        quantity_each=0.5,
        unit="mL",
        material_type=material,
    )


def identity_forms(n: int) -> list[str]:
    """The patient's CPR (with and without hyphen), name and birth date as they might print."""
    number = cpr(n)
    born = identifiers.parse_cpr(number).birth_date
    return [
        number,
        identifiers.format_cpr(number),
        f"Patient {n}",
        born.isoformat(),
        born.strftime("%d-%m-%Y"),
        born.strftime("%d.%m.%Y"),
        born.strftime("%d%m%y"),
    ]


def identity_views(session) -> int:
    return session.scalar(
        select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "view_identity")
    )


def test_vial_labels_never_show_who_the_patient_is(app, people, tmp_path):
    require_label_tools()
    vial = TEMPLATES["cryovial"]
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        tubes = aliquots(session, tech, n=7, count=3)
        before = identity_views(session)
        labels = [item_content(session, actor=tech, item=t, template=vial) for t in tubes]
        assert identity_views(session) == before  # nothing was revealed
        for label, tube in zip(labels, tubes, strict=True):
            assert label.barcode_data == tube.code
            assert set(label.values) <= vial.content_keys | {"code_check"}
            assert label.values["n_of_total"] == f"{tube.aliquot_number}/3"
            assert label.values["pseudonym"] == tube.episode.patient.pseudonym
            assert label.values["collected"] == local_time(tube.collected_at, "%Y-%m-%d")
        pdf = render(vial, labels, "pdf")
        zpl = render(vial, labels, "zpl").decode()
        text = pdf_text(pdf, tmp_path)
        assert [t.code[:-1] for t in tubes] == re.findall(r"RH\d{7}", text)
        assert "1/3" in text and "3/3" in text and "PBMC" in text and "M3" in text
        for shown in (text, zpl, repr(labels)):
            for identity in identity_forms(7):
                assert identity not in shown, identity
            assert tubes[0].episode.coi not in shown
        first = render(vial, labels[:1], "pdf")
        assert decoded(first, "datamatrix", tmp_path) == [tubes[0].code]


def test_a_bag_label_for_the_treating_site_names_the_patient_and_is_audited(
    app, people, tmp_path
):
    require_label_tools()
    bag_template = TEMPLATES["product_bag"]
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech, n=11)
        bag = issued_bag(app, session, people, episode)
        before = identity_views(session)
        label = item_content(session, actor=tech, item=bag, template=bag_template, reprint=True)
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "view_identity").order_by(AuditEntry.id)
        ).all()
        assert len(rows) == before + 1
        assert (rows[-1].user_id, rows[-1].entity) == (tech.id, "patient")
        assert label.values["patient_name"] == "Patient 11"
        assert label.values["cpr"] == identifiers.format_cpr(cpr(11))
        assert label.values["code_check"] == bag.check_character
        assert label.values["coi_check"] == episode.coi_check
        pdf = render(bag_template, [label], "pdf")
        text = pdf_text(pdf, tmp_path)
        assert "Patient 11" in text and identifiers.format_cpr(cpr(11)) in text
        assert identifiers.eye_readable(bag.code) in text and "REPRINT" in text
        assert "autologous use only" in text
        (scanned,) = decoded(pdf, "code128", tmp_path)
        assert scanned == f"={bag.code}00"
        assert find_item(session, scanned).id == bag.id  # the scan finds the bag again


def test_who_is_refused_a_bag_label(app, people):
    bag_template, vial = TEMPLATES["product_bag"], TEMPLATES["cryovial"]
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech, n=12)
        at_manufacturer = quarantined_lot(app, session, people, episode).bags[0]
        before = identity_views(session)
        # The manufacturer holds the bag but is not the treating site: no identity.
        with pytest.raises(Forbidden, match="treating site"):
            item_content(
                session,
                actor=actor(session, people["maker"]),
                item=at_manufacturer,
                template=bag_template,
            )
        for who in ("researcher", "admin"):
            with pytest.raises(Forbidden):
                item_content(
                    session,
                    actor=actor(session, people[who]),
                    item=at_manufacturer,
                    template=bag_template,
                )
        tube = aliquots(session, tech, n=13, count=1)[0]
        with pytest.raises(Forbidden):
            item_content(
                session, actor=actor(session, people["researcher"]), item=tube, template=vial
            )
        with pytest.raises(Forbidden, match="not at your site"):
            item_content(
                session, actor=actor(session, people["elsewhere"]), item=tube, template=vial
            )
        with pytest.raises(ValidationError, match="cryovial label"):
            item_content(session, actor=tech, item=at_manufacturer, template=vial)
        with pytest.raises(ValidationError, match="not one for a bag or tube"):
            item_content(session, actor=tech, item=tube, template=TEMPLATES["box"])
        assert identity_views(session) == before


def test_box_and_shipment_labels(app, people, tmp_path):
    require_label_tools()
    with app.app_context():
        session = lims_db.session()
        tech, manager = actor(session, people["tech"]), actor(session, people["manager"])
        freezer(session, manager)
        box(session, manager, code="RH-BOX-1.A")
        tubes = aliquots(session, tech, n=14, count=2, material="plasma")
        for tube in tubes:
            storage.place_item(session, actor=tech, item_scan=tube.code, box_scan="RH-BOX-1.A")
        target = storage.box_by_code(session, "RH-BOX-1.A")
        label = box_content(session, actor=tech, box=target, template=TEMPLATES["box"])
        assert label.barcode_data == "RH-BOX-1.A"
        assert label.values["contents"] == "2 of 81: 2 Plasma"
        assert label.values["path"] == target.path
        pdf = render(TEMPLATES["box"], [label], "pdf")
        assert decoded(pdf, "code128", tmp_path) == ["RH-BOX-1.A"]
        assert "2 of 81: 2 Plasma" in pdf_text(pdf, tmp_path)
        with pytest.raises(Forbidden):
            box_content(
                session,
                actor=actor(session, people["researcher"]),
                box=target,
                template=TEMPLATES["box"],
            )

        shipment = shipments.create_shipment(
            session, actor=tech, to_site_code="AUH", conditions="dry_shipper", courier="Courier A"
        )
        label = shipment_content(
            session, actor=tech, shipment=shipment, template=TEMPLATES["shipment"]
        )
        assert label.barcode_data == shipment.code
        assert label.values["to_site"].startswith("AUH ") and "route" not in label.values
        assert label.values["item_count"] == "0 items"
        pdf = render(TEMPLATES["shipment"], [label], "pdf")
        assert decoded(pdf, "code128", tmp_path) == [shipment.code]
        text = pdf_text(pdf, tmp_path)
        assert shipment.code in text and "Dry shipper (LN2)" in text and "Courier A" in text
        with pytest.raises(Forbidden, match="not at your site"):
            shipment_content(
                session,
                actor=actor(session, people["elsewhere"]),
                shipment=shipment,
                template=TEMPLATES["shipment"],
            )
