"""Pages of the bench area (being built)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("bench", __name__, template_folder="templates")
