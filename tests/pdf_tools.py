"""PDF checks shared by the tests: poppler renders the page, zbar and libdmtx read the codes.

The tools are Debian packages (poppler-utils, libzbar0, libdmtx0b) that `.ci/run` installs: a
developer's machine without them skips these checks with the reason; in CI that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def missing_pdf_tools() -> list[str]:
    """poppler's pdftoppm and pdftotext, and zbar for Code 128, where they are missing."""
    missing = [tool for tool in ("pdftoppm", "pdftotext") if shutil.which(tool) is None]
    try:
        from pyzbar.pyzbar import decode  # noqa: F401  (loads libzbar)
    except ImportError as exc:
        missing.append(f"libzbar0/pyzbar ({exc})")
    return missing


def require(missing: list[str], needs: str) -> None:
    """Skip (on a developer's machine) or fail (in CI) when anything is ``missing``."""
    if not missing:
        return
    message = f"{needs}; missing: {', '.join(missing)}"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(message)
    pytest.skip(message)


def require_pdf_tools() -> None:
    require(missing_pdf_tools(), "PDF checks need poppler-utils and libzbar0")


def rendered(pdf: bytes, tmp_path: Path):
    """The first page at 150 dpi as a greyscale image, and the text of the whole PDF."""
    from PIL import Image

    source = tmp_path / "rendered.pdf"
    source.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "150", "-singlefile", str(source), str(tmp_path / "page")],
        check=True,
        timeout=60,
    )
    text = subprocess.run(
        ["pdftotext", "-layout", str(source), "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    with Image.open(tmp_path / "page.png") as image:
        return image.convert("L"), text
