"""CAR-T LIMS: chain of identity and custody for cell-therapy material and biobank aliquots."""

from __future__ import annotations

import gc
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, request
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from werkzeug.routing import IntegerConverter

from lims import db
from lims.config import default_database_url, load_settings, resolve_secret_key

csrf = CSRFProtect()
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Log in to continue."
login_manager.login_message_category = "info"
login_manager.session_protection = "basic"


class DatabaseId(IntegerConverter):
    """``<int:...>`` in routes: at most the largest id an INTEGER column holds."""

    def __init__(self, url_map, *args, **kwargs) -> None:
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(url_map, *args, **kwargs)


def create_app(
    config_path: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Flask:
    """Build the application from ``config_path`` (or ``LIMS_CONFIG``) and ``overrides``."""
    settings = load_settings(config_path, overrides)
    instance_path = settings["app"]["instance_path"]
    app = Flask(
        __name__, instance_path=str(Path(instance_path).resolve()) if instance_path else None
    )
    # An id in a path beyond the database's INTEGER is a 404, not an overflow (a 500).
    app.url_map.converters["int"] = DatabaseId
    instance = Path(app.instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    if not settings["database"]["url"]:
        settings["database"]["url"] = default_database_url(instance)

    security = settings["security"]
    app.config.update(
        LIMS=settings,
        SECRET_KEY=resolve_secret_key(settings, instance),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=security["session_cookie_secure"],
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=security["session_cookie_secure"],
        # A bench PC is shared: an idle session ends, each request extends an active one.
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=security["session_idle_minutes"]),
        SESSION_REFRESH_EACH_REQUEST=True,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        MAX_CONTENT_LENGTH=16 * 1024 * 1024,
    )

    from lims.auth.passwords import SecurityPolicy
    from lims.patients.vault import IdentityVault, resolve_patient_key

    app.extensions["lims_security"] = SecurityPolicy.from_settings(security)
    app.extensions["lims_vault"] = IdentityVault(
        resolve_patient_key(security["patient_key"], instance)
    )
    import lims.models  # noqa: F401  (every table and the append-only guards)

    db.init_app(app, settings["database"]["url"], echo=settings["database"]["echo"])
    csrf.init_app(app)
    login_manager.init_app(app)
    _register_blueprints(app)
    from lims.labels.printers import check_verify_before

    check_verify_before(settings)
    _register_user_loaders()

    from lims import dbfaults, web
    from lims.auth.access import enforce_access

    web.init_app(app)
    dbfaults.register(app)
    app.before_request(_make_session_permanent)
    # Registered after web.init_app so that access is refused before anything else runs.
    app.before_request_funcs.setdefault(None, []).insert(0, enforce_access)

    from lims.cli import register_commands

    register_commands(app)
    return app


def create_served_app() -> Flask:
    """The application as a long-running server (gunicorn) holds it.

    The objects made at start-up (about 220,000: models, templates, the OpenAPI document) live
    as long as the process; left in the collector's young generations, each full collection
    walks them all and stalls one request by ~100 ms (benchmarks/RESULTS.md: the box map's
    slowest request fell from 142 ms to 19 ms). Freezing them after start-up moves them out of
    the collector's way. Not for tests: they build an app per test, and frozen cycles are
    never collected.
    """
    app = create_app()
    gc.collect()
    gc.freeze()
    return app


def _make_session_permanent() -> None:
    from flask import session

    session.permanent = True


def _register_blueprints(app: Flask) -> None:
    from lims.api.views import bp as api_bp
    from lims.audit.views import bp as audit_bp
    from lims.auth.admin_views import bp as admin_bp
    from lims.auth.views import bp as auth_bp
    from lims.bench.views import bp as bench_bp
    from lims.exports.views import bp as exports_bp
    from lims.followup.views import bp as followup_bp
    from lims.history.views import bp as history_bp
    from lims.home.views import bp as home_bp
    from lims.imports.views import bp as imports_bp
    from lims.labels.views import bp as labels_bp
    from lims.manufacturing.views import bp as manufacturing_bp
    from lims.requests.inbox_views import bp as inbox_bp
    from lims.requests.views import bp as requests_bp
    from lims.shipments.views import bp as shipments_bp
    from lims.storage.verification_views import bp as storage_verify_bp
    from lims.storage.views import bp as storage_bp

    for blueprint in (
        home_bp,
        auth_bp,
        admin_bp,
        api_bp,
        audit_bp,
        bench_bp,
        shipments_bp,
        manufacturing_bp,
        followup_bp,
        history_bp,
        exports_bp,
        storage_bp,
        storage_verify_bp,
        imports_bp,
        labels_bp,
        inbox_bp,
        requests_bp,
    ):
        app.register_blueprint(blueprint)
    # The API authenticates with bearer tokens, never cookies, so cross-site forgery has
    # nothing to ride on there.
    csrf.exempt(api_bp)


def _register_user_loaders() -> None:
    from lims.auth.access import is_api_request
    from lims.auth.models import User
    from lims.auth.services import user_for_token

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        if is_api_request():
            return None  # the API does not accept the browser's session cookie
        try:
            pk, version = (int(part) for part in user_id.split(":"))
        except ValueError:
            return None
        user = db.session().get(User, pk)
        if user is None or not user.active or user.session_version != version:
            return None
        return user

    @login_manager.request_loader
    def load_user_from_token(req: Any) -> User | None:
        if not is_api_request():
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return user_for_token(db.session(), token.strip())
