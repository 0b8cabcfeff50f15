"""Pages of the manufacturing area (being built)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("manufacturing", __name__, template_folder="templates")
