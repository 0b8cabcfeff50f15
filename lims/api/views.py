"""The JSON API under /api/v1. Bearer tokens only: browser cookies are not honoured here."""

from __future__ import annotations

from flask import Blueprint, jsonify, url_for
from flask_login import current_user

from lims.auth.access import allow_all_roles

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def user_summary(user) -> dict:
    return {
        "username": user.username,
        "full_name": user.full_name,
        "role": user.role.value,
        "site": user.site.code,
    }


@bp.route("/")
@allow_all_roles
def index():
    return jsonify(version="1", links={"me": url_for("api.me")})


@bp.route("/me")
@allow_all_roles
def me():
    """Who the token belongs to: the first call to make when setting up an integration."""
    return jsonify(user_summary(current_user))
