"""The inbox page: every user's notifications, and the unread count for the page header."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy.exc import SQLAlchemyError

from lims import db
from lims.auth.access import allow
from lims.auth.forms import ConfirmForm
from lims.auth.models import Role
from lims.errors import ValidationError
from lims.requests import notify

bp = Blueprint("inbox", __name__, template_folder="templates")


def _page_number() -> int:
    raw = request.args.get("page", "").strip() or "1"
    # Digits only, and few of them: int() of a huge string is slow, and no inbox is that long.
    if not raw.isdigit() or not raw.isascii() or len(raw) > 7:
        raise ValidationError("The page must be a whole number from 1.", field="page")
    return int(raw)


@bp.get("/inbox")
@allow(*Role)
def index():
    page = notify.inbox(db.session(), current_user, page=_page_number())
    return render_template("inbox/index.html", inbox=page)


@bp.post("/inbox/<int:notification_id>/read")
@allow(*Role)
def read(notification_id: int):
    if not ConfirmForm().validate_on_submit():
        flash("The form had expired. Please try again.", "error")
        return redirect(url_for("inbox.index"))
    notification = notify.mark_read(db.session(), current_user, notification_id)
    if notification.request is not None:
        return redirect(notify.request_path(notification.request.code))
    return redirect(url_for("inbox.index"))


@bp.post("/inbox/read-all")
@allow(*Role)
def read_all():
    if not ConfirmForm().validate_on_submit():
        flash("The form had expired. Please try again.", "error")
        return redirect(url_for("inbox.index"))
    count = notify.mark_all_read(db.session(), current_user)
    if count:
        flash(f"{count} notification(s) marked read.", "success")
    else:
        flash("Nothing was unread.", "info")
    return redirect(url_for("inbox.index"))


@bp.app_context_processor
def inbox_badge() -> dict[str, Any]:
    """``unread_notifications`` for the page header: 0 when nobody is logged in."""
    if not current_user.is_authenticated:
        return {"unread_notifications": 0}
    if "unread_notifications" not in g:  # one count per request, however many templates
        try:
            g.unread_notifications = notify.unread_count(db.session(), current_user)
        except SQLAlchemyError:
            # The error page after a failed database call renders too: it must not fail again.
            return {"unread_notifications": 0}
    return {"unread_notifications": g.unread_notifications}
