"""The manifest that travels with a request's material, and the researcher's copy of it.

Which aliquots: the lines that are or were physically sent (picked, handed over, received),
ordered by subject, timepoint day, material type and code, so the recipient can check the
tubes off box by box. What each row says is an allow-list (:class:`ManifestRow`): the aliquot
code and its check character, the pseudonymised subject, the study, the timepoint as a label
and a day relative to infusion, the material type, the quantity and the thaw count. Nothing
else ever leaves the database for it: no CPR number, name or birth date, no Chain of Identity
(it names the episode in every clinical system), no calendar date (a collection date is a
hospital visit) and no storage location (the recipient has no use for our freezer layout).

The PDF (A4 portrait) is printed at hand-over or packed with a shipment: the request code as
Code 128, the request's particulars, one row per aliquot with its code as Code 128, page
numbers, and a signature block for the hand-over. The same rows go to the researcher as CSV
or XLSX with the columns in ``COLUMNS``.

No Flask views here and no role checks: the views that serve these decide who may have them.
"""

from __future__ import annotations

import io
from dataclasses import astuple, dataclass
from decimal import Decimal
from functools import partial
from typing import Any
from xml.sax.saxutils import escape

import pandas as pd
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from lims.custody.models import Item, MaterialType
from lims.errors import Conflict
from lims.history.services import plain_number
from lims.identifiers import eye_readable
from lims.patients.models import Episode, Patient
from lims.requests.models import AliquotRequest, Delivery, LineStatus, RequestLine

# The box map's Code 128 flowable and fonts, reused as the brief asks. They are private to
# that module today; the report proposes making them public (a rename, no change of
# behaviour), after which only this import changes.
from lims.storage.boxmap_pdf import code128_flowable, pdf_fonts

#: The line statuses of material that is or was physically sent.
SENT_STATUSES = (LineStatus.PICKED, LineStatus.HANDED_OVER, LineStatus.RECEIVED)
#: The export's columns, in order: the fields of ManifestRow, nothing else.
COLUMNS = (
    "aliquot", "check", "subject", "study", "timepoint", "timepoint_day", "material_type",
    "quantity", "unit", "thaw_count",
)  # fmt: skip
SHEET = "Manifest"
EMPTY = "—"

MARGIN = 10 * mm
WIDTH = A4[0] - 2 * MARGIN
LINE = colors.Color(0.55, 0.57, 0.6)
HEADER_FILL = colors.Color(0.9, 0.91, 0.93)
FOOTER_GREY = colors.Color(0.35, 0.38, 0.43)
#: Table columns (mm): #, Code 128, aliquot, subject and study, timepoint, material type,
#: quantity and thaws. The barcode column takes the box map's Code 128 of a 12-character code
#: (4-letter site, 7 digits, K: 88 mm with its quiet zones).
COLUMN_WIDTHS_MM = (7, 88, 29, 17, 17, 16, 16)


@dataclass(frozen=True)
class ManifestRow:
    """One aliquot on the manifest: exactly the export's columns, in their order."""

    #: The code as stored and scanned; a local identifier ends in its check character.
    aliquot: str
    check: str
    #: The patient's pseudonym.
    subject: str
    #: The episode's protocol ("" when it has none).
    study: str
    timepoint: str | None
    #: Days relative to infusion.
    timepoint_day: int | None
    material_type: MaterialType
    quantity: Decimal
    unit: str
    thaw_count: int


def _order(row: ManifestRow) -> tuple:
    # Sorted here, not in SQL: PostgreSQL's collation and SQLite's byte order disagree on
    # mixed text, and a manifest must read the same whatever the database.
    day = row.timepoint_day
    return (row.subject, day is None, day or 0, row.material_type.value, row.aliquot)


def manifest_rows(session: Session, request: AliquotRequest) -> list[ManifestRow]:
    """The aliquots of ``request`` that travel (picked, handed over or received)."""
    statement = (
        select(
            Item.code,
            Item.check_character,
            Patient.pseudonym,
            Episode.protocol,
            Item.timepoint,
            Item.timepoint_day,
            Item.material_type,
            Item.quantity,
            Item.unit,
            Item.thaw_count,
        )
        .select_from(RequestLine)
        .join(Item, RequestLine.item_id == Item.id)
        .join(Episode, Item.episode_id == Episode.id)
        .join(Patient, Episode.patient_id == Patient.id)
        .where(RequestLine.request_id == request.id, RequestLine.status.in_(SENT_STATUSES))
    )
    rows = [ManifestRow(*record) for record in session.execute(statement)]
    return sorted(rows, key=_order)


# -- CSV and XLSX -------------------------------------------------------------------------------


def _frame(rows: list[ManifestRow]) -> pd.DataFrame:
    """The rows as the export shows them: material type by its label, numbers as numbers."""
    columns = list(zip(*(astuple(row) for row in rows), strict=True)) or [()] * len(COLUMNS)
    data = dict(zip(COLUMNS, (list(values) for values in columns), strict=True))
    data["material_type"] = [material.label for material in data["material_type"]]
    data["timepoint_day"] = pd.array(data["timepoint_day"], dtype="Int64")
    data["quantity"] = pd.array([float(value) for value in data["quantity"]], dtype="float64")
    data["thaw_count"] = pd.array(data["thaw_count"], dtype="Int64")
    return pd.DataFrame(data, columns=list(COLUMNS))


def manifest_csv(rows: list[ManifestRow]) -> str:
    """UTF-8 text, comma-separated, one header line; empty cells for what is not known."""
    return _frame(rows).to_csv(index=False, lineterminator="\n")


def manifest_xlsx(rows: list[ManifestRow]) -> bytes:
    """One sheet, "Manifest", with a bold header line; quantities and days as numbers."""
    frame = _frame(rows)
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(SHEET)
    header = []
    for name in COLUMNS:
        cell = WriteOnlyCell(sheet, value=name)
        cell.font = Font(bold=True)
        header.append(cell)
    sheet.append(header)
    cells = [frame[column].astype(object).where(frame[column].notna(), None) for column in COLUMNS]
    for record in zip(*cells, strict=True):
        sheet.append(list(record))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


# -- PDF --------------------------------------------------------------------------------------


class _Styles:
    def __init__(self) -> None:
        regular, bold = pdf_fonts()
        self.regular, self.bold = regular, bold
        self.title = ParagraphStyle("title", fontName=bold, fontSize=16, leading=20)
        self.code = ParagraphStyle("code", fontName=bold, fontSize=12, leading=15)
        self.body = ParagraphStyle("body", fontName=regular, fontSize=9, leading=11.5)
        self.label = ParagraphStyle("label", fontName=bold, fontSize=9, leading=11.5)
        self.cell = ParagraphStyle("cell", fontName=regular, fontSize=7.5, leading=9.2)
        self.head = ParagraphStyle("head", fontName=bold, fontSize=7, leading=8.6)


def _text(value: object) -> str:
    """User data made safe for Paragraph markup; a dash for nothing."""
    return escape(EMPTY if value is None or value == "" else str(value))


class _AliquotIdentifier(Flowable):
    """The eye-readable code with its check character boxed beside it, as on the tube.
    Drawn directly (no paragraph to lay out): a manifest has up to 2,000 of them."""

    def __init__(self, code: str, check: str, font: str, size: float) -> None:
        super().__init__()
        readable = eye_readable(code, check)
        self.readable, self.check = (readable, check) if readable != code else (code, "")
        self.font, self.size = font, size
        self.text_width = stringWidth(self.readable, font, size)
        self.box_width = stringWidth(self.check, font, size) + 2.4 if self.check else 0.0
        self.width = self.text_width + (self.box_width + 1.5 if self.check else 0.0)
        self.height = size * 1.25

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        return self.width, self.height

    def draw(self) -> None:
        canvas = self.canv
        baseline = self.size * 0.3
        canvas.setFont(self.font, self.size)
        canvas.drawString(0, baseline, self.readable)
        if self.check:
            left = self.text_width + 1.5
            canvas.drawString(left + 1.2, baseline, self.check)
            canvas.setLineWidth(0.6)
            canvas.rect(left, 0, self.box_width, self.height, stroke=1, fill=0)


def _particulars(request: AliquotRequest, count: int, styles: _Styles) -> Table:
    conditions = request.conditions.label if request.conditions is not None else ""
    facts: list[tuple[str, str]] = [
        ("Project", request.title),
        ("Principal investigator", request.principal_investigator),
    ]
    if request.external:
        facts.append(("Recipient institution", request.recipient_institution))
    facts += [
        ("Delivery", Delivery(request.delivery).label),
        ("Courier", request.courier),
        ("Conditions", conditions),
        ("Temperature logger", request.logger_ref),
        ("Number of aliquots", str(count)),
    ]
    table = Table(
        [[Paragraph(_text(label), styles.label), Paragraph(_text(value), styles.body)]
         for label, value in facts],
        colWidths=[42 * mm, WIDTH - 42 * mm],
        hAlign="LEFT",
    )  # fmt: skip
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("TOPPADDING", (0, 0), (-1, -1), 1),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
            ]
        )
    )
    return table


def _aliquot_table(rows: list[ManifestRow], styles: _Styles) -> Table:
    """One row per aliquot; the header row repeats on every page the table runs onto."""
    head = ["#", "Code 128", "Aliquot", "Subject / study", "Timepoint", "Material type",
            "Quantity / thaws"]  # fmt: skip
    data: list[list[object]] = [[Paragraph(text, styles.head) for text in head]]
    for number, row in enumerate(rows, start=1):
        # Short values of known shape as plain cell text (cheap); free text as paragraphs,
        # which wrap.
        day = "" if row.timepoint_day is None else f"day {row.timepoint_day}"
        timepoint = "\n".join(part for part in (row.timepoint, day) if part) or EMPTY
        thaws = "1 thaw" if row.thaw_count == 1 else f"{row.thaw_count} thaws"
        data.append(
            [
                str(number),
                code128_flowable(row.aliquot),
                _AliquotIdentifier(row.aliquot, row.check, styles.bold, 8),
                Paragraph(f"{_text(row.subject)}<br/>{_text(row.study)}", styles.cell),
                timepoint,
                Paragraph(_text(row.material_type.label), styles.cell),
                f"{plain_number(row.quantity)} {row.unit}\n{thaws}",
            ]
        )
    table = Table(
        data,
        colWidths=[width * mm for width in COLUMN_WIDTHS_MM],
        repeatRows=1,
        hAlign="LEFT",
    )
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.5, LINE),
                ("BACKGROUND", (0, 0), (-1, 0), HEADER_FILL),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("FONT", (0, 1), (-1, -1), styles.regular, 7.5, 9.2),
                ("LEFTPADDING", (0, 0), (-1, -1), 1.5),
                ("RIGHTPADDING", (0, 0), (-1, -1), 1.5),
                # The barcode brings its own quiet zones.
                ("LEFTPADDING", (1, 1), (1, -1), 0),
                ("TOPPADDING", (1, 1), (1, -1), 1.5),
                ("BOTTOMPADDING", (1, 1), (1, -1), 1.5),
            ]
        )
    )
    return table


def _signatures(styles: _Styles) -> Flowable:
    """Handed over by / received by, each with a name, a date and a signature to fill in."""
    head = [Paragraph(text, styles.head) for text in ("", "Name", "Date", "Signature")]
    rows = [head] + [
        [Paragraph(who, styles.label), "", "", ""] for who in ("Handed over by", "Received by")
    ]
    table = Table(
        rows,
        colWidths=[36 * mm, 62 * mm, 30 * mm, WIDTH - 128 * mm],
        rowHeights=[6 * mm, 14 * mm, 14 * mm],
        hAlign="LEFT",
    )
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.5, LINE),
                ("BACKGROUND", (0, 0), (-1, 0), HEADER_FILL),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ]
        )
    )
    return KeepTogether([Spacer(1, 6 * mm), table])


class _NumberedCanvas(Canvas):
    """Holds each page back until the document ends, then writes them with a footer that
    knows the page count. One layout pass: a 2,000-line manifest lays out in seconds, and
    building it twice to count the pages (as the chain-of-custody report does) would double
    that."""

    def __init__(self, *args: Any, footer: str, font: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._footer, self._footer_font = footer, font
        self._held: list[dict[str, Any]] = []

    def showPage(self) -> None:
        self._held.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._held)
        for state in self._held:
            self.__dict__.update(state)
            self.saveState()
            self.setFont(self._footer_font, 8)
            self.setFillColor(FOOTER_GREY)
            self.drawString(MARGIN, 7 * mm, self._footer)
            page = f"page {self.getPageNumber()} of {total}"
            self.drawRightString(A4[0] - MARGIN, 7 * mm, page)
            self.restoreState()
            super().showPage()
        super().save()


def manifest_pdf(session: Session, request: AliquotRequest) -> bytes:
    """The manifest of ``request`` as PDF bytes (A4 portrait), pages numbered "page n of N".

    Refused (Conflict) while no aliquot of the request has been picked: there is nothing to
    hand over yet."""
    rows = manifest_rows(session, request)
    if not rows:
        raise Conflict(f"Nothing of request {request.code} has been picked yet: no manifest.")
    styles = _Styles()
    story = [
        Paragraph("Material transfer manifest", styles.title),
        Spacer(1, 3 * mm),
        code128_flowable(request.code),
        Paragraph(_text(request.code), styles.code),
        Spacer(1, 3 * mm),
        _particulars(request, len(rows), styles),
        Spacer(1, 5 * mm),
        _aliquot_table(rows, styles),
        _signatures(styles),
    ]
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN + 4 * mm,
        title=f"Material transfer manifest {request.code}",
        subject=f"Material transfer manifest of request {request.code}",
        creator="CAR-T LIMS",
        invariant=True,
    )
    footer = f"Material transfer manifest · {request.code}"
    document.build(
        story,
        canvasmaker=partial(_NumberedCanvas, footer=footer, font=styles.regular),
    )
    return buffer.getvalue()
