"""Pages of aliquot requests: one blueprint, its researcher pages (search, cart, request form,
receipt) in ``researcher_views`` and the biobank's (review, pick list, dispatch) in
``staff_views``."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("requests", __name__, template_folder="templates")

# The page modules register their routes on ``bp`` when imported.
from lims.requests import researcher_views, staff_views  # noqa: E402, F401
