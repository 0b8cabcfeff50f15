"""Labels as ZPL II for Zebra printers, at the template's resolution (203 or 300 dpi).

One ``^XA ... ^XZ`` block a label, drawn from the same layout as the PDF: ``^FO`` positions
in printer dots (round(mm * dpi / 25.4)), ``^A0`` text, ``^BX`` Data Matrix ECC 200 or
``^BC`` Code 128 (automatic subsets, no printer-made interpretation line: the label's own
human-readable text is beside it), ``^GB`` for the box around a check character. ``^CI28``
makes field data UTF-8; ``^FH`` hex escapes keep ``^``, ``~`` and ``_`` in data from being read
as commands, so any code prints exactly as it is.
"""

from __future__ import annotations

from lims.errors import ValidationError
from lims.labels.content import LabelContent
from lims.labels.layout import Barcode, Layout, lay_out
from lims.labels.templates import LabelTemplate

#: Characters that would end or start a ZPL command, and the hex-escape indicator itself.
_ESCAPED = {"^": "_5E", "~": "_7E", "_": "_5F"}


def dots(mm: float, dpi: int) -> int:
    return round(mm * dpi / 25.4)


def field_data(text: str) -> str:
    """``^FH^FD<data>^FS`` with the command characters hex-escaped."""
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise ValidationError("Label text cannot hold control characters.")
    return "^FH^FD" + "".join(_ESCAPED.get(char, char) for char in text) + "^FS"


def _barcode(barcode: Barcode, dpi: int) -> str:
    origin = f"^FO{dots(barcode.x_mm, dpi)},{dots(barcode.y_mm, dpi)}"
    if barcode.symbology == "code128":
        height = dots(barcode.height_mm, dpi)
        command = f"^BY{barcode.module_dots},3,{height}^BCN,{height},N,N,N,A"
    else:
        command = f"^BXN,{barcode.module_dots},200"
    return origin + command + field_data(barcode.data)


def _label(layout: Layout) -> str:
    dpi = layout.dpi
    lines = [
        "^XA",
        "^CI28",
        f"^PW{dots(layout.width_mm, dpi)}",
        f"^LL{dots(layout.height_mm, dpi)}",
        "^LH0,0",
        _barcode(layout.barcode, dpi),
    ]
    for text in layout.texts:
        size = max(10, round(text.size_pt * dpi / 72))
        lines.append(
            f"^FO{dots(text.x_mm, dpi)},{dots(text.y_mm, dpi)}^A0N,{size},{size}"
            + field_data(text.text)
        )
    for frame in layout.frames:
        thickness = max(1, dots(frame.line_mm, dpi))
        width = max(thickness, dots(frame.width_mm, dpi))
        height = max(thickness, dots(frame.height_mm, dpi))
        lines.append(
            f"^FO{dots(frame.x_mm, dpi)},{dots(frame.y_mm, dpi)}^GB{width},{height},{thickness}^FS"
        )
    lines += ["^PQ1", "^XZ"]
    return "\n".join(lines)


def render_zpl(template: LabelTemplate, contents: list[LabelContent]) -> str:
    """The labels in order, one ``^XA ... ^XZ`` block each."""
    if not contents:
        raise ValidationError("There are no labels to print.")
    return "\n".join(_label(lay_out(template, content)) for content in contents) + "\n"
