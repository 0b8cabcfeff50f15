"""Pages of the history area (being built)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("history", __name__, template_folder="templates")
