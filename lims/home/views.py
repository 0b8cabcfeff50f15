"""The home page: each role's starting point (its work queues as later areas add them)."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template
from flask_login import current_user
from sqlalchemy import select, text

from lims import db
from lims.auth import services as auth_services
from lims.auth.access import allow_all_roles, public
from lims.auth.models import Role, Site, User
from lims.home.queue import work_queue

bp = Blueprint("home", __name__, template_folder="templates")


@bp.route("/")
@allow_all_roles
def index():
    session = db.session()
    context: dict = {}
    if current_user.role == Role.ADMIN:
        context["users_by_role"] = auth_services.count_users_by_role(session)
        context["sites"] = session.scalars(select(Site).order_by(Site.code)).all()
        context["locked"] = session.scalars(
            select(User).where(User.locked_until > db.utcnow()).order_by(User.username)
        ).all()
    elif current_user.role in (Role.TECHNICIAN, Role.MANAGER):
        context["queue"] = work_queue(session, actor=current_user)
    return render_template("home/index.html", **context)


@bp.route("/healthz")
@public
def health():
    """For the reverse proxy and monitoring: the app answers and reaches its database."""
    db.session().execute(text("SELECT 1"))
    return jsonify(status="ok")
