"""The one entry point the print pages and the command line use: labels as PDF or ZPL bytes."""

from __future__ import annotations

from lims.errors import ValidationError
from lims.labels.content import LabelContent
from lims.labels.pdf import render_pdf
from lims.labels.templates import LabelTemplate
from lims.labels.zpl import render_zpl

FORMATS = ("pdf", "zpl")
MIMETYPES = {"pdf": "application/pdf", "zpl": "application/x-zpl"}


def render(
    template: LabelTemplate, contents: list[LabelContent], fmt: str, sheet: str = "roll"
) -> bytes:
    """The labels in order as a PDF (``sheet`` roll or a4) or as ZPL II (UTF-8)."""
    if fmt == "pdf":
        return render_pdf(template, contents, sheet=sheet)
    if fmt == "zpl":
        return render_zpl(template, contents).encode("utf-8")
    raise ValidationError(f"Labels are rendered as pdf or zpl, not '{fmt}'.", field="format")
