"""Labels as a PDF (ReportLab): one label a page for roll printers, or tiled on A4 sheets.

Everything is drawn from the layout (``lims.labels.layout``) that the ZPL output follows too.
Barcodes are vector shapes whose modules are whole printer dots, so a 203 or 300 dpi label
printer reproduces them exactly; each symbol keeps its quiet zone clear. The output is
deterministic: the same labels give the same bytes (no creation date, fixed document ID).
"""

from __future__ import annotations

import io

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from lims.errors import ValidationError
from lims.labels.content import LabelContent
from lims.labels.layout import Barcode, Layout, font_name, lay_out
from lims.labels.templates import LabelTemplate

SHEETS = ("roll", "a4")
#: A4 sheets: margin around the labels and the gap between them.
SHEET_MARGIN = 10 * mm
SHEET_GAP = 3 * mm
CUT_LINE = colors.Color(0.75, 0.75, 0.75)


def _runs(modules: str) -> list[tuple[int, int]]:
    """(start, length) of each run of dark modules."""
    runs, start = [], None
    for index, module in enumerate(modules + "0"):
        if module == "1" and start is None:
            start = index
        elif module != "1" and start is not None:
            runs.append((start, index - start))
            start = None
    return runs


def _draw_barcode(canvas: Canvas, barcode: Barcode, top: float) -> None:
    """The symbol as one filled path (no hairline seams between modules when rasterised)."""
    module = barcode.module_mm * mm
    x0, y0 = barcode.x_mm * mm, top - barcode.y_mm * mm
    path = canvas.beginPath()
    if barcode.symbology == "code128":
        height = barcode.height_mm * mm
        for start, length in _runs(barcode.modules[0]):
            path.rect(x0 + start * module, y0 - height, length * module, height)
    else:
        for row, line in enumerate(barcode.modules):
            for start, length in _runs(line):
                path.rect(x0 + start * module, y0 - (row + 1) * module, length * module, module)
    canvas.drawPath(path, stroke=0, fill=1)


def _draw_label(canvas: Canvas, layout: Layout, x: float, y: float) -> None:
    """One label with its bottom-left corner at (x, y) in points."""
    top = y + layout.height_mm * mm
    canvas.saveState()
    canvas.translate(x, 0)
    canvas.setFillColor(colors.black)
    canvas.setStrokeColor(colors.black)
    _draw_barcode(canvas, layout.barcode, top)
    for text in layout.texts:
        canvas.setFont(font_name(text.bold), text.size_pt)
        canvas.drawString(text.x_mm * mm, top - text.baseline_mm * mm, text.text)
    for frame in layout.frames:
        canvas.setLineWidth(frame.line_mm * mm)
        canvas.rect(
            frame.x_mm * mm,
            top - (frame.y_mm + frame.height_mm) * mm,
            frame.width_mm * mm,
            frame.height_mm * mm,
            stroke=1,
            fill=0,
        )
    canvas.restoreState()


def _canvas(buffer: io.BytesIO, size: tuple[float, float], title: str) -> Canvas:
    canvas = Canvas(buffer, pagesize=size, invariant=1, pageCompression=1)
    canvas.setTitle(title)
    canvas.setAuthor("CAR-T LIMS")
    canvas.setCreator("CAR-T LIMS labels")
    return canvas


def render_pdf(
    template: LabelTemplate, contents: list[LabelContent], *, sheet: str = "roll"
) -> bytes:
    """The labels in order: one a page (``roll``), or as many as fit on each A4 page (``a4``)."""
    if sheet not in SHEETS:
        raise ValidationError(f"Sheet is roll or a4, not '{sheet}'.", field="sheet")
    if not contents:
        raise ValidationError("There are no labels to print.")
    layouts = [lay_out(template, content) for content in contents]
    width, height = template.width_mm * mm, template.height_mm * mm
    buffer = io.BytesIO()
    title = f"{template.name}: {len(layouts)} label{'s' if len(layouts) != 1 else ''}"
    if sheet == "roll":
        canvas = _canvas(buffer, (width, height), title)
        for layout in layouts:
            _draw_label(canvas, layout, 0, 0)
            canvas.showPage()
        canvas.save()
        return buffer.getvalue()
    page_width, page_height = A4
    columns = int((page_width - 2 * SHEET_MARGIN + SHEET_GAP) // (width + SHEET_GAP))
    rows = int((page_height - 2 * SHEET_MARGIN + SHEET_GAP) // (height + SHEET_GAP))
    if columns < 1 or rows < 1:
        raise ValidationError(f"Label {template.name} is larger than an A4 sheet.", field="sheet")
    canvas = _canvas(buffer, A4, title)
    per_page = columns * rows
    for index, layout in enumerate(layouts):
        slot = index % per_page
        if index and slot == 0:
            canvas.showPage()
        column, row = slot % columns, slot // columns
        x = SHEET_MARGIN + column * (width + SHEET_GAP)
        y = page_height - SHEET_MARGIN - (row + 1) * height - row * SHEET_GAP
        canvas.saveState()
        canvas.translate(0, y)
        # A light outline to cut along; it lies on the label's edge, clear of every mark.
        canvas.setStrokeColor(CUT_LINE)
        canvas.setLineWidth(0.2)
        canvas.rect(x, 0, width, height, stroke=1, fill=0)
        canvas.restoreState()
        canvas.saveState()
        canvas.translate(0, y)
        _draw_label(canvas, layout, x, 0)
        canvas.restoreState()
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()
