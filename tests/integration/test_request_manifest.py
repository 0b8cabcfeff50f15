"""The request manifest against a real database: which lines travel and in what order, the
PDF read back (every Code 128 decoded, pages numbered), the researcher's CSV and XLSX cell by
cell, and no patient identity, Chain of Identity, calendar date or freezer place anywhere."""

from __future__ import annotations

import io
import re
import subprocess
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import openpyxl
import pandas as pd
import pytest

from lims import db as lims_db
from lims.custody import production
from lims.custody.domain import Action
from lims.custody.services import perform_action
from lims.errors import Conflict
from lims.identifiers import eye_readable
from lims.patients import services as patients
from lims.requests.manifest import (
    COLUMNS,
    SHEET,
    ManifestRow,
    manifest_csv,
    manifest_pdf,
    manifest_rows,
    manifest_xlsx,
)
from lims.requests.models import (
    AliquotRequest,
    Delivery,
    LineStatus,
    RequestLine,
    RequestState,
    ShortKind,
)
from lims.shipments.models import Conditions
from lims.storage import services as storage
from tests.integration.people import actor, cpr
from tests.pdf_tools import require_pdf_tools

DRAWN = datetime(2024, 6, 1, 7, 0, tzinfo=UTC)
#: Patients 11 to 13 of ``cpr``: born 1 January 1971, 1972 and 1973.
PATIENTS = {11: "Karen Holm-Andersen", 12: "Jens Østergaard", 13: "Birthe Lykke Nørgaard"}


def _patient(session, tech, n: int, protocol: str):
    patient, _ = patients.register_patient(
        session,
        actor=tech,
        identifier=cpr(n),
        name=PATIENTS[n],
        treating_site_code="RH",
        consent_biobank=True,
    )
    episode = patients.register_episode(
        session,
        actor=tech,
        pseudonym=patient.pseudonym,
        product_name="Kymriah",
        product_kind="commercial",
        protocol=protocol,
    )
    return patient, episode


def _tubes(session, tech, episode, material, count, each, timepoint=None, day=None):
    draw = production.register_sample(
        session,
        actor=tech,
        coi=episode.coi,
        material_type=material,
        quantity=10,
        unit="mL",
        collected_at=DRAWN,
        timepoint=timepoint,
        timepoint_day=day,
    )
    return production.aliquot(
        session,
        actor=tech,
        parent_code=draw.code,
        count=count,
        quantity_each=each,
        unit="mL",
        material_type=material,
    )


def _request(session, researcher, code: str, **fields) -> AliquotRequest:
    request = AliquotRequest(
        code=code,
        state=RequestState.PICKING,
        researcher_id=researcher.id,
        site_id=researcher.site_id,
        title="Cytokine profiles after CD19 CAR-T",
        principal_investigator="Prof. Anna Winther",
        **fields,
    )
    session.add(request)
    session.flush()
    return request


def _line(session, request, item, status: LineStatus, **fields) -> None:
    session.add(RequestLine(request_id=request.id, item_id=item.id, status=status, **fields))


def _row(tube, patient, episode, timepoint, day, quantity, thaws) -> ManifestRow:
    return ManifestRow(
        aliquot=tube.code,
        check=tube.check_character,
        subject=patient.pseudonym,
        study=episode.protocol,
        timepoint=timepoint,
        timepoint_day=day,
        material_type=tube.material_type,
        quantity=Decimal(quantity),
        unit="mL",
        thaw_count=thaws,
    )


def _secrets(patient, episode, n: int) -> list[str]:
    """What must never reach a manifest: the CPR number (both ways it is written), the name,
    the birth date as ddmmyy, dd-mm-yyyy and yyyy-mm-dd, and the CoI (raw and as printed)."""
    number = cpr(n)
    born = date(1960 + n, 1, 1)
    return [
        number,
        f"{number[:6]}-{number[6:]}",
        PATIENTS[n],
        born.strftime("%d%m%y"),
        born.strftime("%d-%m-%Y"),
        born.isoformat(),
        episode.coi,
        eye_readable(episode.coi, episode.coi_check),
    ]


def build_request(session, people) -> SimpleNamespace:
    """REQ-2025-00001, external, shipped on dry ice: seven lines travel (picked, handed over,
    received) from two patients; five do not (requested, not approved, short, withdrawn, and
    one line of another request). The tubes are stored in RH-F80-1 / R1 / BOX-1 first."""
    tech, manager = actor(session, people["tech"]), actor(session, people["manager"])
    researcher = actor(session, people["researcher"])
    storage.create_unit(
        session,
        actor=manager,
        code="RH-F80-1",
        name="Freezer one",
        unit_type="freezer",
        temperature_class="minus_80",
    )
    storage.create_rack(session, actor=manager, unit_code="RH-F80-1", code="R1")
    storage.create_box(
        session, actor=tech, code="BOX-1", unit_code="RH-F80-1", rack_code="R1", box_type="9x9"
    )
    p1, e1 = _patient(session, tech, 11, "CART-01")
    p2, e2 = _patient(session, tech, 12, "CART-02")
    p3, e3 = _patient(session, tech, 13, "CART-01")
    d7_plasma = _tubes(session, tech, e1, "plasma", 2, 0.5, "D7", 7)
    (d0_serum,) = _tubes(session, tech, e1, "serum", 1, 0.25, "D0", 0)
    (d0_plasma,) = _tubes(session, tech, e1, "plasma", 1, 1.5, "D0", 0)
    (dna,) = _tubes(session, tech, e1, "dna", 1, 1, None, None)
    (d28_plasma,) = _tubes(session, tech, e2, "plasma", 1, 0.5, "D28", 28)
    (d7_serum,) = _tubes(session, tech, e2, "serum", 1, 0.5, "D7", 7)
    left_out = _tubes(session, tech, e1, "plasma", 2, 0.5, "D7", 7)
    left_out += _tubes(session, tech, e3, "serum", 3, 0.5, "M3", 90)
    travelling = [*d7_plasma, d0_serum, d0_plasma, dna, d28_plasma, d7_serum]
    for tube in travelling + left_out:
        storage.place_item(session, actor=tech, item_scan=tube.code, box_scan="BOX-1")
    # Thawed once in house and put back: thaw count 1.
    perform_action(session, actor=tech, code=d0_plasma.code, action=Action.CHECK_OUT)
    storage.place_item(session, actor=tech, item_scan=d0_plasma.code, box_scan="BOX-1")

    request = _request(
        session,
        researcher,
        "REQ-2025-00001",
        external=True,
        recipient_institution="Karolinska Institutet, Stockholm",
        mta_ref="MTA-2025-17",
        delivery=Delivery.SHIPMENT,
        courier="World Courier",
        conditions=Conditions.DRY_ICE,
        logger_ref="TL-88412",
    )
    for tube in [*d7_plasma, d0_serum, d0_plasma, dna]:
        _line(session, request, tube, LineStatus.PICKED)
    _line(session, request, d28_plasma, LineStatus.HANDED_OVER)
    _line(session, request, d7_serum, LineStatus.RECEIVED)
    _line(session, request, left_out[0], LineStatus.REQUESTED)
    _line(session, request, left_out[1], LineStatus.NOT_APPROVED, reason="not chosen")
    _line(
        session,
        request,
        left_out[2],
        LineStatus.SHORT,
        reason="not in its place",
        short_kind=ShortKind.MISSING,
    )
    _line(session, request, left_out[3], LineStatus.WITHDRAWN, reason="consent withdrawn")
    other = _request(session, researcher, "REQ-2025-00002")
    _line(session, other, left_out[4], LineStatus.PICKED)
    nothing_yet = _request(session, researcher, "REQ-2025-00003")
    _line(session, nothing_yet, left_out[2], LineStatus.APPROVED)
    session.commit()

    by_patient = {
        p1.pseudonym: [
            _row(d0_plasma, p1, e1, "D0", 0, "1.5", 1),
            _row(d0_serum, p1, e1, "D0", 0, "0.25", 0),
            _row(d7_plasma[0], p1, e1, "D7", 7, "0.5", 0),
            _row(d7_plasma[1], p1, e1, "D7", 7, "0.5", 0),
            _row(dna, p1, e1, None, None, "1", 0),  # no timepoint: last
        ],
        p2.pseudonym: [
            _row(d7_serum, p2, e2, "D7", 7, "0.5", 0),
            _row(d28_plasma, p2, e2, "D28", 28, "0.5", 0),
        ],
    }
    return SimpleNamespace(
        request_id=request.id,
        other_id=other.id,
        nothing_yet_id=nothing_yet.id,
        expected=[row for pseudonym in sorted(by_patient) for row in by_patient[pseudonym]],
        left_out=[tube.code for tube in left_out],
        secrets=[
            secret
            for n, (patient, episode) in zip(
                (11, 12, 13), ((p1, e1), (p2, e2), (p3, e3)), strict=True
            )
            for secret in _secrets(patient, episode, n)
        ],
        storage_words=["RH-F80-1", "BOX-1", "Freezer one"],
    )


@pytest.fixture
def shipment(app, people) -> SimpleNamespace:
    with app.app_context():
        return build_request(lims_db.session(), people)


def _get(session, request_id: int) -> AliquotRequest:
    return session.get(AliquotRequest, request_id)


# -- reading a PDF back --------------------------------------------------------------------------


def _pdf_text(pdf: bytes, tmp_path: Path) -> str:
    source = tmp_path / "manifest.pdf"
    source.write_bytes(pdf)
    return subprocess.run(
        ["pdftotext", "-raw", str(source), "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


def _decoded_pages(pdf: bytes, tmp_path: Path, dpi: int = 150) -> list[list[str]]:
    """Every page rendered by poppler, and the Code 128 symbols zbar reads on each, in the
    order they stand on the page (top to bottom)."""
    from PIL import Image
    from pyzbar.pyzbar import ZBarSymbol
    from pyzbar.pyzbar import decode as zbar_decode

    source = tmp_path / "pages.pdf"
    source.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-png", "-r", str(dpi), str(source), str(tmp_path / "page")],
        check=True,
        timeout=300,
    )
    pages = []
    for path in sorted(tmp_path.glob("page-*.png")):
        with Image.open(path) as image:
            found = zbar_decode(image.convert("L"), symbols=[ZBarSymbol.CODE128])
        ordered = sorted(found, key=lambda symbol: symbol.rect.top)
        pages.append([symbol.data.decode() for symbol in ordered])
    return pages


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _pdf_row(number: int, row: ManifestRow) -> str:
    """A table row as pdftotext -raw reads it, cell after cell, whitespace flattened."""
    timepoint = f"{row.timepoint} day {row.timepoint_day}" if row.timepoint else "—"
    thaws = "1 thaw" if row.thaw_count == 1 else f"{row.thaw_count} thaws"
    return (
        f"{number} {eye_readable(row.aliquot, row.check)} {row.check} {row.subject} "
        f"{row.study} {timepoint} {row.material_type.label} {row.quantity:f} {row.unit} {thaws}"
    )


# -- the rows -----------------------------------------------------------------------------------


def test_the_rows_are_the_travelling_lines_in_manifest_order(app, shipment):
    with app.app_context():
        session = lims_db.session()
        rows = manifest_rows(session, _get(session, shipment.request_id))
        assert rows == shipment.expected
        codes = {row.aliquot for row in rows}
        # Requested, not approved, short, withdrawn, and another request's picked line.
        assert codes.isdisjoint(shipment.left_out)
        assert [
            row.aliquot for row in manifest_rows(session, _get(session, shipment.other_id))
        ] == [shipment.left_out[4]]
        # Only approved so far: nothing travels yet.
        assert manifest_rows(session, _get(session, shipment.nothing_yet_id)) == []


def test_a_row_holds_the_allowed_fields_only():
    assert [name for name in ManifestRow.__dataclass_fields__] == list(COLUMNS)
    assert COLUMNS == (
        "aliquot", "check", "subject", "study", "timepoint", "timepoint_day", "material_type",
        "quantity", "unit", "thaw_count",
    )  # fmt: skip


# -- CSV and XLSX -------------------------------------------------------------------------------


def _expected_cells(rows: list[ManifestRow]) -> list[dict[str, str]]:
    return [
        {
            "aliquot": row.aliquot,
            "check": row.check,
            "subject": row.subject,
            "study": row.study,
            "timepoint": row.timepoint or "",
            "timepoint_day": "" if row.timepoint_day is None else str(row.timepoint_day),
            "material_type": row.material_type.label,
            "quantity": str(float(row.quantity)),
            "unit": row.unit,
            "thaw_count": str(row.thaw_count),
        }
        for row in rows
    ]


def test_the_csv_has_exactly_the_columns_and_values(app, shipment):
    with app.app_context():
        session = lims_db.session()
        text = manifest_csv(manifest_rows(session, _get(session, shipment.request_id)))
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    assert list(frame.columns) == list(COLUMNS)
    assert frame.to_dict(orient="records") == _expected_cells(shipment.expected)
    lines = text.splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert len(lines) == 1 + len(shipment.expected)
    # The text itself: numbers plain, nothing known left empty.
    thawed = next(row for row in shipment.expected if row.thaw_count)
    undated = next(row for row in shipment.expected if row.timepoint is None)
    assert f"{thawed.aliquot},{thawed.check},{thawed.subject},CART-01,D0,0,Plasma,1.5,mL,1" in lines
    assert f"{undated.aliquot},{undated.check},{undated.subject},CART-01,,,DNA,1.0,mL,0" in lines


def test_an_empty_csv_is_the_header_alone():
    assert manifest_csv([]) == ",".join(COLUMNS) + "\n"


def test_the_xlsx_has_exactly_the_columns_and_values(app, shipment):
    with app.app_context():
        session = lims_db.session()
        content = manifest_xlsx(manifest_rows(session, _get(session, shipment.request_id)))
    book = openpyxl.load_workbook(io.BytesIO(content), read_only=True)
    try:
        assert book.sheetnames == [SHEET]
        rows = list(book[SHEET].iter_rows(values_only=True))
    finally:
        book.close()
    assert rows[0] == COLUMNS
    assert rows[1:] == [
        (
            row.aliquot,
            row.check,
            row.subject,
            row.study,
            row.timepoint,
            row.timepoint_day,
            row.material_type.label,
            float(row.quantity),
            row.unit,
            row.thaw_count,
        )
        for row in shipment.expected
    ]
    # Numbers are numbers in the workbook, not text.
    assert isinstance(rows[1][5], int) and isinstance(rows[1][7], float)


# -- the PDF ------------------------------------------------------------------------------------


def test_the_pdf_reads_back_barcodes_particulars_and_rows(app, shipment, tmp_path):
    require_pdf_tools()
    with app.app_context():
        session = lims_db.session()
        pdf = manifest_pdf(session, _get(session, shipment.request_id))
    assert pdf.startswith(b"%PDF")
    pages = _decoded_pages(pdf, tmp_path, dpi=300)
    assert len(pages) == 1
    # The request code on top, then every aliquot in the manifest's order.
    assert pages[0] == ["REQ-2025-00001", *(row.aliquot for row in shipment.expected)]

    text = _flat(_pdf_text(pdf, tmp_path))
    for phrase in (
        "Material transfer manifest",
        "REQ-2025-00001",
        "Project Cytokine profiles after CD19 CAR-T",
        "Principal investigator Prof. Anna Winther",
        "Recipient institution Karolinska Institutet, Stockholm",
        "Delivery Shipment by courier",
        "Courier World Courier",
        "Conditions Dry ice",
        "Temperature logger TL-88412",
        "Number of aliquots 7",
        "Handed over by",
        "Received by",
        "Signature",
        "page 1 of 1",
    ):
        assert phrase in text, phrase
    # The rows' cells in order. Spaces aside: pdftotext may split a word whose glyphs are
    # set wide (a pseudonym such as PD8KGWWQ came out in two pieces once).
    packed = text.replace(" ", "")
    for number, row in enumerate(shipment.expected, start=1):
        assert _pdf_row(number, row).replace(" ", "") in packed
    thawed = next(row for row in shipment.expected if row.thaw_count)
    assert f"{thawed.subject}CART-01D0day0Plasma1.5mL1thaw" in packed
    undated = next(row for row in shipment.expected if row.timepoint is None)
    assert f"{undated.subject}CART-01—DNA1mL0thaws" in packed


def test_a_pick_up_by_an_internal_researcher_shows_no_recipient_institution(
    app, shipment, tmp_path
):
    require_pdf_tools()
    with app.app_context():
        session = lims_db.session()
        request = _get(session, shipment.request_id)
        request.external = False
        request.delivery = Delivery.PICK_UP
        request.courier = request.logger_ref = ""
        request.conditions = None
        session.commit()
        pdf = manifest_pdf(session, request)
    text = _flat(_pdf_text(pdf, tmp_path))
    assert "Recipient institution" not in text and "Karolinska" not in text
    assert "Delivery Pick-up at the biobank" in text
    assert "Courier — Conditions — Temperature logger —" in text


def test_no_manifest_before_anything_is_picked(app, shipment):
    with app.app_context():
        session = lims_db.session()
        with pytest.raises(Conflict, match="REQ-2025-00003"):
            manifest_pdf(session, _get(session, shipment.nothing_yet_id))


def test_no_identity_coi_date_or_freezer_place_in_pdf_csv_or_xlsx(app, shipment, tmp_path):
    require_pdf_tools()
    with app.app_context():
        session = lims_db.session()
        request = _get(session, shipment.request_id)
        rows = manifest_rows(session, request)
        pdf_text = _pdf_text(manifest_pdf(session, request), tmp_path)
        csv_text = manifest_csv(rows)
        book = openpyxl.load_workbook(io.BytesIO(manifest_xlsx(rows)), read_only=True)
        try:
            cells = book[SHEET].iter_rows(values_only=True)
            xlsx_text = " ".join(str(value) for row in cells for value in row if value is not None)
        finally:
            book.close()
    assert len(shipment.secrets) == 3 * 8
    for name, text in (("pdf", pdf_text), ("csv", csv_text), ("xlsx", xlsx_text)):
        for secret in shipment.secrets:
            assert secret not in text, f"{name} shows {secret!r}"
            assert secret not in _flat(text), f"{name} shows {secret!r}"
        for word in shipment.storage_words:
            assert word not in text, f"{name} shows the freezer place {word!r}"
        # No calendar date in any form (the collection was 2024-06-01).
        assert not re.search(r"\d{4}-\d{2}-\d{2}|\d{2}[-./]\d{2}[-./]\d{4}", text), name


def test_a_300_line_manifest_runs_over_several_pages_every_code_readable(app, people, tmp_path):
    require_pdf_tools()
    with app.app_context():
        session = lims_db.session()
        tech, researcher = actor(session, people["tech"]), actor(session, people["researcher"])
        patient, episode = _patient(session, tech, 11, "CART-01")
        draw = production.register_sample(
            session,
            actor=tech,
            coi=episode.coi,
            material_type="plasma",
            quantity=100,
            unit="mL",
            collected_at=DRAWN,
            timepoint="D14",
            timepoint_day=14,
        )
        tubes = production.aliquot(
            session,
            actor=tech,
            parent_code=draw.code,
            count=300,
            quantity_each=0.25,
            unit="mL",
            material_type="plasma",
        )
        request = _request(session, researcher, "REQ-2025-00300")
        for tube in tubes:
            _line(session, request, tube, LineStatus.PICKED)
        session.commit()
        codes, pseudonym = sorted(tube.code for tube in tubes), patient.pseudonym
        rows = manifest_rows(session, request)
        pdf = manifest_pdf(session, request)
    assert [row.aliquot for row in rows] == codes
    assert {row.subject for row in rows} == {pseudonym}

    pages = _decoded_pages(pdf, tmp_path)
    assert len(pages) >= 10
    assert pages[0][0] == "REQ-2025-00300"
    # Every tube once, in order, across the pages; no page without rows but the last.
    assert [code for page in pages for code in page][1:] == [row.aliquot for row in rows]
    assert all(pages[:-1])
    page_texts = _pdf_text(pdf, tmp_path).split("\f")
    total = len(pages)
    for number, (codes, text) in enumerate(zip(pages, page_texts, strict=False), start=1):
        assert f"page {number} of {total}" in text
        if codes:  # the table's header row repeats on every page the table runs onto
            assert "Code 128" in text and "Subject /" in text
    assert "Received by" in page_texts[total - 1]
