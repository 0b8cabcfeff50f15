"""The chain-of-custody report of one item as a PDF (ReportLab platypus, A4).

Pure layout: it takes the :class:`ItemHistory` the service gathered and writes no record.
The patient appears by pseudonym and Chain of Identity only, never by CPR number or name.
A value changed after first entry carries a dagger wherever the item's facts show it
(DOMAIN.md §8.7).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from datetime import datetime, tzinfo
from functools import cache
from pathlib import Path
from xml.sax.saxutils import escape

import reportlab
from reportlab.graphics.barcode.code128 import Code128
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from lims.history.services import EMPTY, ItemHistory, plain_number

CHANGED_MARK = "†"
MARGIN = 15 * mm
WIDTH = A4[0] - 2 * MARGIN
#: Code 128 module width: 0.5 mm is 3 pixels at 150 dpi, which a phone or fax copy still reads.
MODULE = 0.5 * mm
#: Fonts with the glyphs a Danish site needs (æ ø å, µ, †, →): DejaVu where the system has it,
#: else Bitstream Vera, which ships with ReportLab (it has no arrow; see ``_arrow``).
FONT_CANDIDATES = (
    (
        Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
        Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
    ),
    (
        Path(reportlab.__file__).parent / "fonts" / "Vera.ttf",
        Path(reportlab.__file__).parent / "fonts" / "VeraBd.ttf",
    ),
)


@cache
def _fonts() -> tuple[str, str, bool]:
    """Register the report's fonts once: (regular, bold, has an arrow glyph)."""
    for regular, bold in FONT_CANDIDATES:
        if regular.is_file() and bold.is_file():
            pdfmetrics.registerFont(TTFont("ReportSans", str(regular)))
            pdfmetrics.registerFont(TTFont("ReportSans-Bold", str(bold)))
            pdfmetrics.registerFontFamily(
                "ReportSans",
                normal="ReportSans",
                bold="ReportSans-Bold",
                italic="ReportSans",
                boldItalic="ReportSans-Bold",
            )
            face = pdfmetrics.getFont("ReportSans").face
            return "ReportSans", "ReportSans-Bold", ord("→") in face.charToGlyph
    return "Helvetica", "Helvetica-Bold", False  # pragma: no cover (ReportLab ships Vera)


def _arrow() -> str:
    return "→" if _fonts()[2] else "->"


class _Styles:
    def __init__(self) -> None:
        regular, bold, _ = _fonts()
        self.title = ParagraphStyle("title", fontName=bold, fontSize=17, leading=21)
        self.heading = ParagraphStyle(
            "heading",
            fontName=bold,
            fontSize=11.5,
            leading=14,
            spaceBefore=9,
            spaceAfter=4,
            keepWithNext=1,
        )
        self.body = ParagraphStyle("body", fontName=regular, fontSize=9, leading=11.5)
        self.cell = ParagraphStyle("cell", fontName=regular, fontSize=7.5, leading=9.2)
        self.head = ParagraphStyle("head", fontName=bold, fontSize=7.5, leading=9.2)
        self.identifier = ParagraphStyle("identifier", fontName=bold, fontSize=15, leading=18)
        self.small = ParagraphStyle(
            "small", fontName=regular, fontSize=7.5, leading=9.2, textColor=colors.grey
        )
        self.regular, self.bold = regular, bold


def _text(value: object) -> str:
    """User data made safe for Paragraph markup."""
    text = EMPTY if value is None or value == "" else str(value)
    return escape(text).replace("→", _arrow())


class _BoxedCharacter(Flowable):
    """The check character K, boxed as it is printed beside the identifier."""

    def __init__(self, character: str, font: str, size: float) -> None:
        super().__init__()
        self.character, self.font, self.size = character, font, size
        self.width = size * 1.1
        self.height = size * 1.3

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        return self.width, self.height

    def draw(self) -> None:
        self.canv.setLineWidth(1.2)
        self.canv.rect(0, 0, self.width, self.height)
        self.canv.setFont(self.font, self.size)
        self.canv.drawCentredString(self.width / 2, self.height * 0.24, self.character)


def _identifier(text: str, check: str, styles: _Styles, size: float = 15) -> Table:
    style = ParagraphStyle("id", parent=styles.identifier, fontSize=size, leading=size * 1.2)
    text_width = pdfmetrics.stringWidth(text, styles.bold, size) + 4
    table = Table(
        [[Paragraph(_text(text), style), _BoxedCharacter(check, styles.bold, size * 0.9)]],
        colWidths=[text_width, size * 1.4],
        hAlign="LEFT",
    )
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    return table


GRID = TableStyle(
    [
        ("GRID", (0, 0), (-1, -1), 0.4, colors.Color(0.7, 0.72, 0.76)),
        ("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.91, 0.93, 0.95)),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ("TOPPADDING", (0, 0), (-1, -1), 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
    ]
)


def _table(
    header: Iterable[str],
    rows: Iterable[Iterable[object]],
    widths_mm: Iterable[float],
    styles: _Styles,
) -> Table:
    """A grid with a repeated header; cells are Paragraphs so long text wraps."""
    widths = [w * mm for w in widths_mm]
    scale = WIDTH / sum(widths)
    data = [[Paragraph(_text(h), styles.head) for h in header]]
    for row in rows:
        data.append(
            [
                cell if isinstance(cell, Flowable) else Paragraph(_text(cell), styles.cell)
                for cell in row
            ]
        )
    table = Table(data, colWidths=[w * scale for w in widths], repeatRows=1, hAlign="LEFT")
    table.setStyle(GRID)
    return table


def _facts(pairs: list[tuple[str, str]], styles: _Styles) -> Table:
    """Label/value pairs in two columns of two."""
    cells = [
        [Paragraph(_text(label), styles.head), Paragraph(value, styles.cell)]
        for label, value in pairs
    ]
    half = (len(cells) + 1) // 2
    left, right = cells[:half], cells[half:]
    right += [["", ""]] * (len(left) - len(right))
    data = [a + b for a, b in zip(left, right, strict=True)]
    table = Table(data, colWidths=[28 * mm, 62 * mm, 28 * mm, 62 * mm], hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.3, colors.Color(0.85, 0.87, 0.9)),
                ("LEFTPADDING", (0, 0), (-1, -1), 2),
                ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
            ]
        )
    )
    return table


def _signature_text(signature, zone: tzinfo) -> str:
    if signature is None:
        return ""
    return (
        f"{signature.printed_name} ({signature.meaning}), "
        f"{signature.signed_at.astimezone(zone):%Y-%m-%d %H:%M %Z}"
    )


def _story(history: ItemHistory, styles: _Styles) -> list[Flowable]:
    item, zone, episode = history.item, history.zone, history.episode
    arrow = _arrow()

    def when(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return value.astimezone(zone).strftime(fmt) if value else EMPTY

    def heading(text: str) -> Paragraph:
        return Paragraph(_text(text), styles.heading)

    story: list[Flowable] = [
        Paragraph("Chain-of-custody report", styles.title),
        Spacer(1, 3 * mm),
        Code128(
            item.code,
            barWidth=MODULE,
            barHeight=14 * mm,
            humanReadable=False,
            quiet=True,
            lquiet=12 * MODULE,
            rquiet=12 * MODULE,
            hAlign="LEFT",
        ),
        Spacer(1, 2 * mm),
        _identifier(history.identifier, history.check, styles),
        Paragraph(
            _text(f"{item.kind.label} · {item.material_type.label} · {item.state.label}"),
            styles.body,
        ),
        Spacer(1, 2 * mm),
    ]

    changed = False
    pairs = []
    for label, value, was_changed in history.facts():
        changed = changed or was_changed
        mark = f" <b>{CHANGED_MARK}</b>" if was_changed else ""
        pairs.append((label, _text(value) + mark))
    story += [heading("Item"), _facts(pairs, styles)]
    if changed:
        story.append(
            Paragraph(
                f"{CHANGED_MARK} changed after first entry: see “Values changed after first "
                "entry” below.",
                styles.small,
            )
        )

    coi = Table(
        [
            [
                Paragraph("Chain of Identity", styles.head),
                _identifier(history.coi, episode.coi_check, styles, 10),
            ]
        ],
        colWidths=[28 * mm, WIDTH - 28 * mm],
        hAlign="LEFT",
    )
    coi.setStyle(
        TableStyle([("VALIGN", (0, 0), (-1, -1), "MIDDLE"), ("LEFTPADDING", (0, 0), (-1, -1), 2)])
    )
    story += [
        heading("Episode"),
        coi,
        _facts(
            [
                ("Pseudonym", _text(episode.patient.pseudonym)),
                ("Product", _text(f"{episode.product_name} ({episode.product_kind.value})")),
                (
                    "Treating site",
                    _text(f"{episode.treating_site.code} ({episode.treating_site.name})"),
                ),
                ("Protocol", _text(episode.protocol or EMPTY)),
            ],
            styles,
        ),
    ]

    lineage = [("This item", f"{item.code} · {item.kind.label} · {item.material_type.label}")]
    lineage += [
        ("Derived from", f"{a.code} · {a.kind.label} · {a.material_type.label} · {a.state.label}")
        for a in history.ancestors
    ]
    if history.lot is not None:
        lot = history.lot
        lineage.append(
            ("Product lot", f"{lot.lot_number} · manufactured {when(lot.manufactured_at)}")
        )
    lineage += [
        ("Apheresis", f"{c.code} · collected {when(c.collected_at)} · {c.state.label}")
        for c in history.collections
    ]
    lineage += [("Made into lot", lot.lot_number) for lot in history.made_into]
    lineage.append(("Episode", f"{history.coi} {episode.coi_check} · {episode.patient.pseudonym}"))
    story += [
        heading("Lineage"),
        _table(["Step", "Identifier and details"], lineage, [30, 150], styles),
    ]
    if history.children:
        story += [
            heading(f"Derived aliquots ({len(history.children)})"),
            _table(
                ["Identifier", "Type", "Quantity", "n/N", "State"],
                [
                    (
                        c.code,
                        c.material_type.label,
                        f"{plain_number(c.quantity)} {c.unit}",
                        f"{c.aliquot_number}/{c.aliquot_total}" if c.aliquot_number else EMPTY,
                        c.state.label,
                    )
                    for c in history.children
                ],
                [40, 40, 30, 20, 50],
                styles,
            ),
        ]

    event_rows = []
    for line in history.events:
        state = f"{line.from_state} {arrow} {line.to_state}" if line.from_state else line.to_state
        where = "; ".join(f"{m.label}: {m.before} {arrow} {m.after}" for m in line.moves) or (
            f"{line.site} · {line.location} · {line.custodian}"
        )
        notes = [line.event.reason or ""]
        if line.event.temperature_logger_ref:
            notes.append(f"Logger: {line.event.temperature_logger_ref}")
        if line.signature is not None:
            notes.append(f"Signed: {_signature_text(line.signature, zone)}")
        if line.witness_signature is not None:
            notes.append(f"Second person: {_signature_text(line.witness_signature, zone)}")
        notes_cell = Paragraph("<br/>".join(_text(n) for n in notes if n) or "", styles.cell)
        event_rows.append(
            (
                when(line.at),
                line.action,
                line.who,
                state,
                where,
                notes_cell,
            )
        )
    story += [
        heading("Custody events"),
        _table(
            [
                "Time",
                "Action",
                "By",
                "State",
                "Site / location / custodian",
                "Reason, logger, signatures",
            ],
            event_rows,
            [22, 18, 24, 28, 40, 48],
            styles,
        ),
    ]

    signatures = [
        (
            when(s.signature.signed_at, "%Y-%m-%d %H:%M %Z"),
            s.signature.printed_name,
            s.signature.meaning,
            s.action,
            "second person" if s.second_person else "signer",
        )
        for s in history.signatures
    ]
    story += [heading("Signatures")]
    story.append(
        _table(
            ["Signed at", "Printed name", "Meaning", "Step", "Role"],
            signatures,
            [32, 45, 30, 40, 33],
            styles,
        )
        if signatures
        else Paragraph("No signatures.", styles.body)
    )

    story.append(heading("Holds"))
    story.append(
        _table(
            ["Placed", "Reason", "Detail", "Placed by", "Cleared", "Cleared by", "Why cleared"],
            [
                (
                    when(h.hold.placed_at),
                    h.hold.reason.label,
                    h.hold.detail,
                    h.placed_by,
                    when(h.hold.cleared_at) if h.hold.cleared_at else "open",
                    h.cleared_by or EMPTY,
                    h.hold.clear_reason or EMPTY,
                )
                for h in history.holds
            ],
            [22, 24, 36, 24, 22, 24, 28],
            styles,
        )
        if history.holds
        else Paragraph("Never on hold.", styles.body)
    )

    if history.lot is not None:
        story.append(heading(f"QC results of lot {history.lot.lot_number}"))
        story.append(
            _table(
                ["Test", "Result", "Specification", "Passed", "Entered"],
                [
                    (
                        q.test.replace("_", " "),
                        f"{q.value} {q.unit}".strip(),
                        q.specification or EMPTY,
                        "yes" if q.passed else "NO",
                        when(q.entered_at),
                    )
                    for q in history.qc_results
                ],
                [45, 35, 45, 20, 35],
                styles,
            )
            if history.qc_results
            else Paragraph("No QC results recorded.", styles.body)
        )

    if history.bedside_checks:
        story += [
            heading("Bedside identity checks"),
            _table(
                ["Time", "Result", "Mismatches", "Checked by", "Second person"],
                [
                    (
                        when(c.check.checked_at),
                        "passed" if c.check.passed else "FAILED",
                        c.check.mismatches or EMPTY,
                        c.checked_by,
                        _signature_text(c.witness, zone) or EMPTY,
                    )
                    for c in history.bedside_checks
                ],
                [25, 18, 55, 32, 50],
                styles,
            ),
        ]

    story.append(heading("Values changed after first entry"))
    story.append(
        _table(
            ["Field", "Old", "New", "Who", "When", "Step", "Reason"],
            [
                (c.label, c.old, c.new, c.who, when(c.at), c.action, c.reason or EMPTY)
                for c in history.changes
            ],
            [22, 24, 24, 28, 22, 16, 44],
            styles,
        )
        if history.changes
        else Paragraph("No value was changed after first entry.", styles.body)
    )
    return story


def _footer(
    code: str, generated: str, total: int | None, styles: _Styles
) -> Callable[[Canvas, SimpleDocTemplate], None]:
    def draw(canvas: Canvas, document: SimpleDocTemplate) -> None:
        canvas.saveState()
        canvas.setFont(styles.regular, 7.5)
        canvas.setFillColor(colors.Color(0.35, 0.38, 0.43))
        canvas.drawString(MARGIN, 9 * mm, generated)
        page = canvas.getPageNumber()
        canvas.drawRightString(A4[0] - MARGIN, 9 * mm, f"Page {page} of {total or page}")
        if page > 1:
            canvas.drawRightString(
                A4[0] - MARGIN, A4[1] - 9 * mm, f"Chain-of-custody report · {code}"
            )
        canvas.restoreState()

    return draw


def chain_of_custody_pdf(
    history: ItemHistory, *, generated_by: str, generated_at: datetime
) -> bytes:
    """The report as PDF bytes. Built twice: the first pass counts the pages for "x of y"."""
    styles = _Styles()
    zone = history.zone
    generated = (
        f"Generated {generated_at.astimezone(zone):%Y-%m-%d %H:%M %Z} ({zone}) by {generated_by}"
    )
    total: int | None = None
    for _ in range(2):
        buffer = io.BytesIO()
        document = SimpleDocTemplate(
            buffer,
            pagesize=A4,
            leftMargin=MARGIN,
            rightMargin=MARGIN,
            topMargin=MARGIN,
            bottomMargin=MARGIN + 4 * mm,
            title=f"Chain-of-custody report {history.item.code}",
            author=generated_by,
            subject=f"Chain of custody of {history.item.code}",
            creator="CAR-T LIMS",
        )
        footer = _footer(history.item.code, generated, total, styles)
        document.build(_story(history, styles), onFirstPage=footer, onLaterPages=footer)
        total = document.page
    return buffer.getvalue()
