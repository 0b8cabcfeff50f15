"""The box map as a PDF to print and keep with the box (ReportLab, A4 landscape).

Title with the box's path and its code as Code 128 (scanned to open the box at the bench),
then the grid row by row: each position with its name, the item's code, material type and
state, coloured by material type with a legend; a container without positions gets a
numbered list. The footer says when (local time) and by whom it was printed.
No patient identifiers: no CPR number, name or birth date, and no Chain of Identity either
(a box map lies about in the freezer room; the item code leads to everything else).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from xml.sax.saxutils import escape

from reportlab.graphics.barcode.code128 import Code128
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from sqlalchemy import select
from sqlalchemy.orm import Session

from lims.auth.models import User
from lims.auth.services import require_role
from lims.custody.domain import State
from lims.custody.models import Item, MaterialType
from lims.db import utcnow
from lims.history.report import FONT_CANDIDATES
from lims.localtime import site_zone
from lims.storage.capacity import STAFF, require_site_access
from lims.storage.domain import Naming
from lims.storage.models import Box

PAGE = landscape(A4)
MARGIN = 12 * mm
WIDTH = PAGE[0] - 2 * MARGIN
#: Code 128 module: 0.5 mm reads from a printout at arm's length; narrower for long codes.
MODULE = 0.5 * mm
#: Light fills, dark enough to tell apart on a grey-scale printer too.
MATERIAL_COLOURS: dict[MaterialType, colors.Color] = {
    MaterialType.LEUKAPHERESIS: colors.HexColor("#f4c7c3"),
    MaterialType.CAR_T_PRODUCT: colors.HexColor("#f6b26b"),
    MaterialType.WHOLE_BLOOD: colors.HexColor("#ea9999"),
    MaterialType.PBMC: colors.HexColor("#9fc5e8"),
    MaterialType.PLASMA: colors.HexColor("#ffe599"),
    MaterialType.SERUM: colors.HexColor("#d9ead3"),
    MaterialType.DNA: colors.HexColor("#b4a7d6"),
    MaterialType.RNA: colors.HexColor("#d5a6bd"),
    MaterialType.CELL_PELLET: colors.HexColor("#a2c4c9"),
    MaterialType.PRODUCT_RETENTION: colors.HexColor("#fce5cd"),
}
EMPTY_COLOUR = colors.white
LINE = colors.Color(0.55, 0.57, 0.6)


@cache
def pdf_fonts() -> tuple[str, str]:
    """DejaVu where the system has it, else Vera (shipped with ReportLab): both have the
    glyphs a Danish site needs (æ ø å, µ, the minus of -80 °C)."""
    for regular, bold in FONT_CANDIDATES:
        if regular.is_file() and bold.is_file():
            pdfmetrics.registerFont(TTFont("BoxMapSans", str(regular)))
            pdfmetrics.registerFont(TTFont("BoxMapSans-Bold", str(bold)))
            return "BoxMapSans", "BoxMapSans-Bold"
    return "Helvetica", "Helvetica-Bold"  # pragma: no cover (ReportLab ships Vera)


@dataclass(frozen=True)
class _Tube:
    position: int | None
    code: str
    material_type: MaterialType
    state: State


def _text(value: object) -> str:
    return escape(str(value))


def code128_flowable(
    code: str, *, max_width: float = WIDTH / 2, height: float = 12 * mm
) -> Code128:
    """A Code 128 of ``code`` for a platypus story, its bars narrowed until it fits."""
    module = MODULE
    while True:
        barcode = Code128(
            code,
            barWidth=module,
            barHeight=height,
            humanReadable=False,
            quiet=True,
            lquiet=10 * module,
            rquiet=10 * module,
            hAlign="LEFT",
        )
        if barcode.width <= max_width or module <= 0.25 * mm:
            return barcode
        module *= 0.8


def _cell(tube: _Tube | None, name: str, style: ParagraphStyle, bold: str) -> Paragraph:
    if tube is None:
        return Paragraph(f"<font name='{bold}'>{_text(name)}</font>", style)
    state = "" if tube.state is State.STORED else f"<br/><i>{_text(tube.state.label)}</i>"
    return Paragraph(
        f"<font name='{bold}'>{_text(name)}</font><br/>{_text(tube.code)}"
        f"<br/>{_text(tube.material_type.label)}{state}",
        style,
    )


def _grid(box: Box, tubes: list[_Tube], fonts: tuple[str, str]) -> Table:
    geometry = box.geometry
    assert geometry is not None
    regular, bold = fonts
    by_position = {tube.position: tube for tube in tubes}
    # Fit the grid to the page: a 10x10 box gets bigger cells than an 8x12 one.
    lettered = geometry.naming is Naming.GRID
    label_width = 7 * mm if lettered else 0
    cell_width = min((WIDTH - label_width) / geometry.columns, 40 * mm)
    cell_height = min(120 * mm / geometry.rows, 22 * mm)
    # Four lines (position, code, type, state) high; a 13-character code wide.
    size = max(min((cell_width - 4) / 8.5, (cell_height - 4) / 4.8, 9), 4.5)
    style = ParagraphStyle("cell", fontName=regular, fontSize=size, leading=size * 1.18)
    head = ParagraphStyle("head", fontName=bold, fontSize=8, leading=10, alignment=1)

    rows: list[list[object]] = []
    commands: list[tuple] = [
        ("GRID", (0, 0), (-1, -1), 0.5, LINE),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 2),
        ("RIGHTPADDING", (0, 0), (-1, -1), 1),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
    ]
    offset = 1 if lettered else 0
    if lettered:
        rows.append(["", *(Paragraph(str(c + 1), head) for c in range(geometry.columns))])
        commands.append(("LINEBELOW", (0, 0), (-1, 0), 0.5, LINE))
    for row in range(geometry.rows):
        line: list[object] = [Paragraph(chr(ord("A") + row), head)] if lettered else []
        for column in range(geometry.columns):
            index = row * geometry.columns + column + 1
            tube = by_position.get(index)
            line.append(_cell(tube, geometry.name(index), style, bold))
            colour = MATERIAL_COLOURS.get(tube.material_type) if tube else EMPTY_COLOUR
            where = (column + offset, row + offset)
            commands.append(("BACKGROUND", where, where, colour or EMPTY_COLOUR))
        rows.append(line)
    widths = ([label_width] if lettered else []) + [cell_width] * geometry.columns
    heights = ([6 * mm] if lettered else []) + [cell_height] * geometry.rows
    table = Table(rows, colWidths=widths, rowHeights=heights, hAlign="LEFT")
    table.setStyle(TableStyle(commands))
    return table


def _list(box: Box, tubes: list[_Tube], fonts: tuple[str, str]) -> Table:
    """A container without positions: its content numbered, then the places still free."""
    regular, bold = fonts
    style = ParagraphStyle("cell", fontName=regular, fontSize=9, leading=11)
    head = ParagraphStyle("head", fontName=bold, fontSize=9, leading=11)
    rows: list[list[object]] = [
        [Paragraph(text, head) for text in ("#", "Item", "Material type", "State")]
    ]
    commands: list[tuple] = [("GRID", (0, 0), (-1, -1), 0.5, LINE)]
    for number, tube in enumerate(tubes, start=1):
        rows.append(
            [
                Paragraph(str(number), style),
                Paragraph(_text(tube.code), style),
                Paragraph(_text(tube.material_type.label), style),
                Paragraph(_text(tube.state.label), style),
            ]
        )
        colour = MATERIAL_COLOURS.get(tube.material_type, EMPTY_COLOUR)
        commands.append(("BACKGROUND", (2, number), (2, number), colour))
    free = max(box.size - len(tubes), 0)
    rows.append([Paragraph(f"{free} of {box.size} places free", style), "", "", ""])
    commands.append(("SPAN", (0, len(rows) - 1), (-1, len(rows) - 1)))
    table = Table(rows, colWidths=[12 * mm, 60 * mm, 50 * mm, 40 * mm], hAlign="LEFT")
    table.setStyle(TableStyle(commands))
    return table


def _legend(tubes: list[_Tube], fonts: tuple[str, str]) -> Table:
    regular, _ = fonts
    style = ParagraphStyle("legend", fontName=regular, fontSize=8, leading=10)
    present = sorted({tube.material_type for tube in tubes}, key=lambda m: m.label)
    entries = [(m.label, MATERIAL_COLOURS.get(m, EMPTY_COLOUR)) for m in present]
    entries.append(("empty", EMPTY_COLOUR))
    cells: list[object] = []
    commands: list[tuple] = []
    for number, (label, colour) in enumerate(entries):
        cells += ["", Paragraph(_text(label), style)]
        commands += [
            ("BACKGROUND", (2 * number, 0), (2 * number, 0), colour),
            ("BOX", (2 * number, 0), (2 * number, 0), 0.5, LINE),
        ]
    table = Table(
        [cells], colWidths=[5 * mm, 32 * mm] * len(entries), rowHeights=[5 * mm], hAlign="LEFT"
    )
    table.setStyle(TableStyle([*commands, ("VALIGN", (0, 0), (-1, -1), "MIDDLE")]))
    return table


def box_map_pdf(session: Session, box: Box, actor: User | None) -> bytes:
    """The box map of ``box`` as PDF bytes, for staff (technicians: their own site's boxes)."""
    require_role(actor, *STAFF)
    require_site_access(actor, box.unit.site_id, box.unit.site.code)
    tubes = [
        _Tube(row.position, row.code, row.material_type, row.state)
        for row in session.execute(
            select(Item.position, Item.code, Item.material_type, Item.state)
            .where(Item.box_id == box.id)
            .order_by(Item.position, Item.code)
        )
    ]
    fonts = pdf_fonts()
    regular, bold = fonts
    title = ParagraphStyle("title", fontName=bold, fontSize=15, leading=19)
    body = ParagraphStyle("body", fontName=regular, fontSize=9, leading=12)
    unit = box.unit
    kind = box.box_type or f"container for {box.size}"
    facts = (
        f"{_text(unit.name)} · {_text(unit.temperature_class.label)} · {_text(kind)} · "
        f"{len(tubes)} of {box.size} used"
    )
    if box.label:
        facts += f" · {_text(box.label)}"
    if not (box.active and unit.active):
        facts += " · <b>out of use</b>"
    printed = utcnow().astimezone(site_zone()).strftime("%Y-%m-%d %H:%M %Z")
    who = f"{actor.full_name} ({actor.username})" if actor is not None else "command line"
    footer = f"Box map of {box.code} · printed {printed} by {who}"

    def draw_footer(canvas: Canvas, document: SimpleDocTemplate) -> None:
        canvas.saveState()
        canvas.setFont(regular, 8)
        canvas.drawString(MARGIN, 7 * mm, footer)
        canvas.drawRightString(PAGE[0] - MARGIN, 7 * mm, f"Page {document.page}")
        canvas.restoreState()

    story = [
        Paragraph(f"Box {_text(box.code)}: {_text(box.path)}", title),
        Spacer(1, 2 * mm),
        code128_flowable(box.code),
        Spacer(1, 2 * mm),
        Paragraph(facts, body),
        Spacer(1, 3 * mm),
        _grid(box, tubes, fonts) if box.geometry is not None else _list(box, tubes, fonts),
        Spacer(1, 3 * mm),
        _legend(tubes, fonts),
    ]
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=PAGE,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=14 * mm,
        title=f"Box map {box.code}",
        author=who,
    )
    document.build(story, onFirstPage=draw_footer, onLaterPages=draw_footer)
    return buffer.getvalue()
