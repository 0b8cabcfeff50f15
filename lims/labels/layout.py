"""Where everything on one label goes, decided once for the PDF and the ZPL output alike.

The layout turns a template and one label's content into a list of marks in millimetres from
the label's top-left corner: text runs (already made to fit their width), boxed check
characters, the barcode (its modules snapped to whole printer dots, so the PDF prints on the
label printer exactly as the ZPL does) and the REPRINT flag. Text is measured with the font
the PDF embeds (DejaVu Sans, or Bitstream Vera, which ships with ReportLab and has the same
metrics); characters the font lacks are written in plain letters instead.
"""

from __future__ import annotations

import unicodedata
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import reportlab
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

from lims.errors import ValidationError
from lims.labels.templates import MM_PER_PT, LabelTemplate

if TYPE_CHECKING:
    from lims.labels.content import LabelContent

#: (regular, bold) font files, first found wins.
FONT_FILES = (
    (
        Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
        Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),
    ),
    (
        Path(reportlab.__file__).parent / "fonts" / "Vera.ttf",
        Path(reportlab.__file__).parent / "fonts" / "VeraBd.ttf",
    ),
)
REGULAR, BOLD = "LabelSans", "LabelSans-Bold"
#: Text is made smaller down to this share of its size (never below MIN_PT) before it is cut.
SHRINK_TO = 0.7
MIN_PT = 5.0
ELLIPSIS = "…"
#: Content that is never cut short: a person reads or types it to identify the material.
NEVER_CUT = frozenset(
    {"code", "coi", "cpr", "birth_date", "pseudonym", "n_of_total", "expiry", "patient_name"}
)
#: Plain-letter forms of characters a label font may lack.
PLAIN = {"→": "->", "−": "-", "≤": "<=", "≥": ">=", "…": "...", "×": "x", "µ": "u"}
#: Baseline below the top of a text line, as a share of the font size (DejaVu's ascent).
ASCENT = 0.76
#: The boxed check character: space before the box and padding inside it, in mm.
BOX_GAP, BOX_PAD = 0.8, 0.45


@dataclass(frozen=True)
class Text:
    x_mm: float
    #: Top of the line; ``baseline_mm`` is where the PDF writes it.
    y_mm: float
    size_pt: float
    bold: bool
    text: str

    @property
    def baseline_mm(self) -> float:
        return self.y_mm + ASCENT * self.size_pt * MM_PER_PT


@dataclass(frozen=True)
class Frame:
    """An outlined rectangle (the box around a check character)."""

    x_mm: float
    y_mm: float
    width_mm: float
    height_mm: float
    line_mm: float


@dataclass(frozen=True)
class Barcode:
    symbology: str
    x_mm: float
    y_mm: float
    #: The module, snapped to whole printer dots; ``module_dots`` of them.
    module_mm: float
    module_dots: int
    height_mm: float
    data: str
    #: Code 128: one string of 0/1 modules. Data Matrix: one string per row, top first.
    modules: tuple[str, ...]

    @property
    def width_mm(self) -> float:
        return len(self.modules[0]) * self.module_mm


@dataclass(frozen=True)
class Layout:
    width_mm: float
    height_mm: float
    dpi: int
    barcode: Barcode
    texts: tuple[Text, ...]
    frames: tuple[Frame, ...]


# -- fonts and text --------------------------------------------------------------------------


@cache
def fonts() -> tuple[str, str]:
    """Register the label font once; returns the (regular, bold) names ReportLab knows."""
    for regular, bold in FONT_FILES:
        if regular.is_file() and bold.is_file():
            pdfmetrics.registerFont(TTFont(REGULAR, str(regular)))
            pdfmetrics.registerFont(TTFont(BOLD, str(bold)))
            return REGULAR, BOLD
    return "Helvetica", "Helvetica-Bold"  # pragma: no cover (ReportLab ships Vera)


def font_name(bold: bool) -> str:
    return fonts()[1 if bold else 0]


@cache
def _has_glyph(char: str) -> bool:
    face = pdfmetrics.getFont(fonts()[0]).face
    glyphs = getattr(face, "charToGlyph", None)
    return glyphs is None or ord(char) in glyphs


def printable(text: str) -> str:
    """The text in characters the label font has: others in plain letters, else dropped to '?'."""
    out = []
    for char in unicodedata.normalize("NFC", " ".join(text.split())):
        if _has_glyph(char):
            out.append(char)
        elif char in PLAIN:
            out.append(PLAIN[char])
        else:
            plain = "".join(
                c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
            )
            out.append(plain if plain and all(_has_glyph(c) for c in plain) else "?")
    return "".join(out)


def text_width_mm(text: str, size_pt: float, bold: bool) -> float:
    return pdfmetrics.stringWidth(text, font_name(bold), size_pt) * MM_PER_PT


def fit(
    text: str, size_pt: float, bold: bool, width_mm: float | None, *, cut: bool
) -> tuple[str, float]:
    """The text and size that fit ``width_mm``: smaller first, then cut with "…" if allowed."""
    if width_mm is None or text_width_mm(text, size_pt, bold) <= width_mm:
        return text, size_pt
    smallest = max(MIN_PT, size_pt * SHRINK_TO)
    size = size_pt
    while size > smallest:
        size = max(smallest, round(size - 0.25, 2))
        if text_width_mm(text, size, bold) <= width_mm:
            return text, size
    if not cut:
        raise ValidationError(f"'{text}' is too long for its place on the label.")
    while text and text_width_mm(text + ELLIPSIS, size, bold) > width_mm:
        text = text[:-1]
    return text.rstrip() + ELLIPSIS, size


# -- barcodes --------------------------------------------------------------------------------


def snapped_module(module_mm: float, dpi: int) -> tuple[float, int]:
    """The module as whole printer dots: (mm, dots)."""
    dots = max(1, round(module_mm * dpi / 25.4))
    return dots * 25.4 / dpi, dots


@cache
def code128_modules(data: str) -> str:
    """Code 128 bars and spaces (1 = bar) without quiet zones, by python-barcode."""
    from barcode.codex import Code128

    try:
        return Code128(data).build()[0]
    except Exception as exc:  # python-barcode raises its own errors for characters it refuses
        raise ValidationError(f"'{data}' cannot be written as Code 128: {exc}") from None


@cache
def libdmtx():
    """pylibdmtx, loaded once (its version check warns about distutils on import; harmless)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pylibdmtx import pylibdmtx
    return pylibdmtx


@cache
def datamatrix_modules(data: str) -> tuple[str, ...]:
    """Data Matrix ECC 200 modules (1 = dark), the smallest square symbol for the data."""
    encoded = libdmtx().encode(data.encode("utf-8"), size="SquareAuto", scheme="Ascii")
    # libdmtx draws 5 pixels a module with a margin of 10 pixels; read each module's centre.
    module, margin, bpp = 5, 10, encoded.bpp // 8
    count = (encoded.width - 2 * margin) // module
    rows = []
    for row in range(count):
        y = margin + row * module + module // 2
        line = []
        for col in range(count):
            x = margin + col * module + module // 2
            offset = (y * encoded.width + x) * bpp
            line.append("1" if encoded.pixels[offset] < 128 else "0")
        rows.append("".join(line))
    return tuple(rows)


def _barcode(template: LabelTemplate, data: str) -> Barcode:
    spec = template.barcode
    if not data:
        raise ValidationError(f"Nothing to encode in the barcode of label {template.name}.")
    module_mm, dots = snapped_module(spec.module_mm, template.dpi)
    if spec.symbology == "code128":
        modules: tuple[str, ...] = (code128_modules(data),)
        height, quiet = spec.height_mm or 0.0, 10 * module_mm
    else:
        modules = datamatrix_modules(data)
        height, quiet = len(modules) * module_mm, module_mm
    barcode = Barcode(spec.symbology, spec.x_mm, spec.y_mm, module_mm, dots, height, data, modules)
    if (
        spec.x_mm + barcode.width_mm + quiet > template.width_mm + 1e-6
        or spec.y_mm + height + (quiet if spec.symbology == "datamatrix" else 0)
        > template.height_mm + 1e-6
    ):
        raise ValidationError(
            f"'{data}' is too long for the barcode of label {template.name}: it would run off "
            "the label (use a larger label stock)."
        )
    return barcode


# -- the label -------------------------------------------------------------------------------


def _check_frame(x: float, y: float, size: float, bold: bool, char: str) -> tuple[Text, Frame]:
    """A check character in its box, starting at x."""
    height = size * MM_PER_PT
    char_width = text_width_mm(char, size, bold)
    box = Frame(
        x_mm=x,
        y_mm=y - 0.15 * height,
        width_mm=char_width + 2 * BOX_PAD,
        height_mm=1.15 * height,
        line_mm=max(0.15, min(0.35, size * 0.03)),
    )
    return Text(x + BOX_PAD, y, size, bold, char), box


def box_extent_mm(char: str, size: float, bold: bool) -> float:
    return BOX_GAP + text_width_mm(char, size, bold) + 2 * BOX_PAD if char else 0.0


def lay_out(template: LabelTemplate, content: LabelContent) -> Layout:
    """Every mark of one label, in mm from its top-left corner."""
    texts: list[Text] = []
    frames: list[Frame] = []
    for spec in template.fields:
        value = spec.text if spec.name == "text" else content.values.get(spec.name, "")
        if not value:
            continue  # an empty value leaves its place empty, prefix and all
        text = printable(spec.prefix + value)
        check = printable(content.values.get(f"{spec.name}_check", ""))
        width = spec.max_width_mm
        if width is not None and check:
            width -= box_extent_mm(check, spec.size_pt, spec.bold)
        text, size = fit(text, spec.size_pt, spec.bold, width, cut=spec.name not in NEVER_CUT)
        texts.append(Text(spec.x_mm, spec.y_mm, size, spec.bold, text))
        if check:
            x = spec.x_mm + text_width_mm(text, size, spec.bold) + BOX_GAP
            boxed, frame = _check_frame(x, spec.y_mm, size, spec.bold, check)
            texts.append(boxed)
            frames.append(frame)
    if content.reprint:
        mark = template.reprint
        texts.append(Text(mark.x_mm, mark.y_mm, mark.size_pt, True, "REPRINT"))
    return Layout(
        width_mm=template.width_mm,
        height_mm=template.height_mm,
        dpi=template.dpi,
        barcode=_barcode(template, content.barcode_data),
        texts=tuple(texts),
        frames=tuple(frames),
    )
