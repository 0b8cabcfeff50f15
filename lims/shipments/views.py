"""Pages of the shipments area (being built)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("shipments", __name__, template_folder="templates")
