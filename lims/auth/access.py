"""Authorisation by role, declared on every route.

A view states who may call it with ``@allow(Role...)``, ``@allow_all_roles`` or ``@public``.
One ``before_request`` hook enforces the declaration for every endpoint, and an endpoint with
no declaration is refused (fail closed), so a new route can never be open by accident. The
navigation uses the same declarations to decide which links a user sees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, abort, current_app, jsonify, request
from flask_login import current_user

from lims.auth.models import Role

View = TypeVar("View", bound=Callable[..., Any])

PUBLIC = "public"
ACCESS_ATTRIBUTE = "lims_access"

#: Endpoints Flask itself registers, which cannot carry an attribute.
BUILT_IN_ENDPOINTS: dict[str, str] = {"static": PUBLIC}


def allow(*roles: Role) -> Callable[[View], View]:
    if not roles:
        raise ValueError("allow() needs at least one role; use @public for open routes")

    def decorate(view: View) -> View:
        setattr(view, ACCESS_ATTRIBUTE, frozenset(roles))
        return view

    return decorate


allow_all_roles = allow(*Role)


def public(view: View) -> View:
    setattr(view, ACCESS_ATTRIBUTE, PUBLIC)
    return view


def declared_access(app: Flask, endpoint: str) -> frozenset[Role] | str | None:
    """The declaration of an endpoint: a set of roles, ``PUBLIC`` or ``None`` (undeclared)."""
    if endpoint in BUILT_IN_ENDPOINTS:
        return BUILT_IN_ENDPOINTS[endpoint]
    view = app.view_functions.get(endpoint)
    return getattr(view, ACCESS_ATTRIBUTE, None)


def is_api_request() -> bool:
    return request.blueprint == "api" or request.path.startswith("/api/")


def user_may(endpoint: str) -> bool:
    """Whether the current user may call ``endpoint`` (drives which links are shown)."""
    access = declared_access(current_app, endpoint)
    if access is None:
        return False
    if access == PUBLIC:
        return True
    return bool(current_user.is_authenticated and current_user.role in access)


def enforce_access() -> Any:
    endpoint = request.endpoint
    if endpoint is None:  # no route matched; the 404/405 handler answers
        return None
    access = declared_access(current_app, endpoint)
    if access is None:
        current_app.logger.error("route %s has no access declaration; refused", endpoint)
        abort(403)
    if access == PUBLIC:
        return None
    if not current_user.is_authenticated:
        if is_api_request():
            response = jsonify(
                error="authentication_required",
                message="Send a valid API token as 'Authorization: Bearer <token>'.",
            )
            response.status_code = 401
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]
    if current_user.role not in access:
        abort(403)
    return None
