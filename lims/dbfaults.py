"""The database out of reach or too busy: a clean 503 with a retry message, never a 500.

A PostgreSQL restart, a fail-over or a cut network make every statement fail for a while with
``OperationalError`` (``InterfaceError`` on a connection the server has closed). The server
rolls back the transaction of a connection that died, so the person can try again; the pool's
pre-ping (``lims.db.make_engine``) replaces the dead connections once the server answers
again. (A step whose commit went through just before the connection was lost is answered 503
too; tried again, it is refused as an invalid transition, and its history shows it done.) A
lock or serialisation timeout gets the same kind of answer with another reason.

The answer touches neither the session nor the logged-in user: both would need the database.
The request's session is ended by ``lims.db``'s teardown, which survives a dead connection.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from markupsafe import escape
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from lims.auth.access import is_api_request

UNREACHABLE = "The database is not reachable; try again in a moment."
BUSY = "The database is busy; try again in a moment."
#: Seconds a client is asked to wait before trying again (the Retry-After header).
RETRY_AFTER_SECONDS = 5
#: SQLSTATEs of a server that answers but could not finish the statement in time: a
#: serialisation failure or deadlock (class 40), a lock not granted, a statement cancelled.
BUSY_STATES = ("40", "55P03", "57014")

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Database unavailable</title>
<link rel="stylesheet" href="{css}"></head>
<body><main><section class="panel error-panel">
<h1>503</h1>
<p class="lead">{message}</p>
<p><a href="{again}">Try again</a></p>
</section></main></body>
</html>
"""


def database_message(exc: DBAPIError) -> str:
    """The retry message for this failure: the database busy, or not reachable at all."""
    state = getattr(exc.orig, "sqlstate", None) or ""
    if state.startswith(BUSY_STATES):
        return BUSY
    text = str(exc.orig).lower()
    if "database is locked" in text or "database is busy" in text:  # SQLite's busy timeout
        return BUSY
    return UNREACHABLE


def database_unavailable(exc: DBAPIError) -> Any:
    message = database_message(exc)
    # One line, no traceback: a restart makes every request of a few seconds fail alike.
    current_app.logger.warning(
        "database unavailable on %s %s: %s", request.method, request.path, exc.orig
    )
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if is_api_request() or request.accept_mimetypes.best == "application/json":
        response = jsonify(error="database_unavailable", message=message)
        response.status_code = 503
        response.headers.update(headers)
        return response
    # Not the site's page layout: it shows the logged-in user, who is read from the database.
    again = request.full_path.rstrip("?") if request.method == "GET" else request.script_root + "/"
    body = PAGE.format(
        css=escape(request.script_root + "/static/lims.css"),
        message=escape(message),
        again=escape(again),
    )
    return Response(body, status=503, headers=headers, mimetype="text/html")


def register(app: Flask) -> None:
    app.register_error_handler(OperationalError, database_unavailable)
    app.register_error_handler(InterfaceError, database_unavailable)
