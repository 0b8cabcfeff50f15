"""What every page shares: error answers, navigation, time and identifier display."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Flask, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from lims.auth.access import is_api_request, user_may
from lims.errors import DomainError, ValidationError
from lims.identifiers import eye_readable
from lims.localtime import site_zone

#: The navigation: (endpoint, label). A link shows only to the roles its route allows.
NAVIGATION: list[tuple[str, str]] = [
    ("home.index", "Home"),
    ("bench.scan", "Scan"),
    ("shipments.index", "Shipments"),
    ("storage.index", "Storage"),
    ("exports.inventory_form", "Inventory"),
    ("requests.index", "Requests"),
    ("manufacturing.index", "Manufacturing"),
    ("bench.bedside", "Bedside check"),
    ("followup.worklist", "Follow-up"),
    ("admin.users", "Users"),
    ("admin.sites", "Sites"),
    ("audit.index", "Audit trail"),
]

#: Endpoints a user who must change their password may still reach.
PASSWORD_CHANGE_ENDPOINTS = {"auth.account", "auth.logout", "static"}


def local_time(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """UTC from the database shown in the site's time zone (Europe/Copenhagen by default)."""
    if value is None:
        return ""
    return value.astimezone(site_zone()).strftime(fmt)


def _error_body(status: int, message: str, code: str) -> Any:
    if is_api_request():
        return jsonify(error=code, message=message), status
    return render_template("error.html", status=status, message=message), status


def _http_error(exc: HTTPException) -> Any:
    code = (exc.name or "error").lower().replace(" ", "_")
    messages = {
        403: "Your role does not give access to this page.",
        404: "There is nothing at this address.",
        405: "This address does not accept that kind of request.",
    }
    message = messages.get(exc.code or 0, exc.description or exc.name)
    return _error_body(exc.code or 500, message, code)


def _csrf_error(exc: CSRFError) -> Any:
    if is_api_request():
        return _error_body(400, exc.description, "csrf_failed")
    flash("The form had expired. Please try again.", "error")
    return redirect(request.referrer or url_for("home.index"))


def _domain_error(exc: DomainError) -> Any:
    if is_api_request():
        return jsonify(exc.to_dict()), exc.status_code
    return render_template("error.html", status=exc.status_code, message=exc.message), (
        exc.status_code
    )


def _server_error(exc: Exception) -> Any:
    # Logged with the traceback for the administrator; the user sees a plain message only.
    current_app.logger.exception("unhandled error on %s", request.path, exc_info=exc)
    return _error_body(500, "Something went wrong on the server; nothing was saved.", "error")


def _require_password_change() -> Any:
    if (
        current_user.is_authenticated
        and current_user.must_change_password
        and request.endpoint not in PASSWORD_CHANGE_ENDPOINTS
        and not is_api_request()
    ):
        flash("Choose a new password before you go on.", "info")
        return redirect(url_for("auth.account"))
    return None


def _refuse_nul() -> None:
    """No address, query or form value may hold a NUL character: PostgreSQL refuses to store
    or compare one, and no scanner or keyboard sends it. Refused before any page looks up.
    (The API refuses them itself, naming the field.)"""
    if is_api_request():
        return
    values = [*(request.view_args or {}).values(), *request.args.values()]
    if request.method == "POST" and request.mimetype in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        values.extend(request.form.values())
    if any(isinstance(value, str) and "\x00" in value for value in values):
        raise ValidationError("The request holds a NUL character; nothing was looked up or saved.")


def init_app(app: Flask) -> None:
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(DomainError, _domain_error)
    app.register_error_handler(Exception, _server_error)
    app.before_request(_require_password_change)
    app.before_request(_refuse_nul)
    app.add_template_filter(local_time, "local_time")
    # Globals reach imported macros (lims/templates/_identifiers.html) without "with context".
    app.add_template_global(eye_readable, "eye_readable")
    app.add_template_global(user_may, "user_may")

    @app.context_processor
    def navigation() -> dict[str, Any]:
        links = []
        if current_user.is_authenticated:
            links = [(ep, label) for ep, label in NAVIGATION if user_may(ep)]
        return {"navigation": links, "app_name": current_app.config["LIMS"]["app"]["name"]}

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
        )
        if request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")
        return response
