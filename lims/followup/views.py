"""Pages of the followup area (being built)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("followup", __name__, template_folder="templates")
