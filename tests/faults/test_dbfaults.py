"""The database out of reach: pages and the API answer 503 with a retry message, never a 500,
and answer normally again once the database is back (lims/dbfaults.py)."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from psycopg import errors as pg_errors
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from lims import db as lims_db
from lims.auth.models import User
from lims.custody import production
from lims.dbfaults import BUSY, RETRY_AFTER_SECONDS, UNREACHABLE, database_message
from tests.faults.conftest import free_port
from tests.integration.people import new_episode


def wrapped(error: Exception) -> OperationalError:
    return OperationalError("SELECT 1", {}, error)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (psycopg.OperationalError("connection failed: Connection refused"), UNREACHABLE),
        (
            pg_errors.lookup("57P01")("terminating connection due to administrator command"),
            UNREACHABLE,
        ),
        (pg_errors.lookup("57P03")("the database system is starting up"), UNREACHABLE),
        (pg_errors.lookup("40P01")("deadlock detected"), BUSY),
        (pg_errors.lookup("40001")("could not serialize access"), BUSY),
        (pg_errors.lookup("55P03")("could not obtain lock"), BUSY),
        (pg_errors.lookup("57014")("canceling statement due to lock timeout"), BUSY),
        (sqlite3.OperationalError("database is locked"), BUSY),
        (sqlite3.OperationalError("unable to open database file"), UNREACHABLE),
    ],
)
def test_the_message_says_whether_the_database_is_gone_or_busy(error, message):
    assert database_message(wrapped(error)) == message


@pytest.fixture
def tube_code(app, make_site, make_user) -> str:
    make_site("RH", isbt_fin="W1234")
    tech = make_user("technician", site_code="RH")
    with app.app_context():
        session = lims_db.session()
        actor = session.get(User, tech.id)
        sample = production.register_sample(
            session,
            actor=actor,
            coi=new_episode(session, actor).coi,
            material_type="plasma",
            quantity=1,
            unit="mL",
            collected_at=lims_db.utcnow(),
        )
        return sample.code


def cut_database(app) -> object:
    """Point the app's sessions at a PostgreSQL port where nothing listens; the old bind."""
    maker = app.extensions["lims_sessionmaker"]
    old = maker.kw["bind"]
    dead = lims_db.make_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/lims?connect_timeout=2"
    )
    maker.configure(bind=dead)
    return old


def test_pages_and_api_answer_503_with_a_retry_message_and_recover(
    app, client, login, make_user, token_for, tube_code
):
    tech = make_user("technician", site_code="RH")
    token = token_for(tech)
    login(tech)
    api = {"Authorization": f"Bearer {token}"}
    assert client.get("/").status_code == 200
    assert client.get(f"/api/v1/items/{tube_code}", headers=api).status_code == 200

    old = cut_database(app)
    page = client.get("/")  # the logged-in user is read from the database
    assert page.status_code == 503
    assert page.mimetype == "text/html"
    assert page.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    body = page.get_data(as_text=True)
    assert UNREACHABLE in body
    assert 'href="/"' in body  # the retry link is the page itself
    assert "psycopg" not in body and "Traceback" not in body
    health = client.get("/healthz")
    assert (health.status_code, health.mimetype) == (503, "text/html")
    as_json = client.get("/healthz", headers={"Accept": "application/json"})
    assert (as_json.status_code, as_json.json) == (
        503,
        {"error": "database_unavailable", "message": UNREACHABLE},
    )
    item = client.get(f"/api/v1/items/{tube_code}", headers=api)
    assert (item.status_code, item.json) == (
        503,
        {"error": "database_unavailable", "message": UNREACHABLE},
    )
    action = client.post(f"/api/v1/items/{tube_code}/actions/discard", headers=api, json={})
    assert action.status_code == 503
    assert action.json["message"] == UNREACHABLE

    app.extensions["lims_sessionmaker"].configure(bind=old)
    assert client.get("/").status_code == 200
    answer = client.get(f"/api/v1/items/{tube_code}", headers=api)
    assert (answer.status_code, answer.json["state"]) == (200, "registered")
    # The request during the outage changed nothing: the tube was not discarded.
    refused = client.post(f"/api/v1/items/{tube_code}/actions/discard", headers=api, json={})
    assert refused.status_code == 422  # a discard needs a reason: the normal refusal again


def test_a_connection_lost_after_the_answer_leaves_the_answer_as_it_was(
    app, client, make_user, token_for, tube_code, monkeypatch
):
    """The server restarted between the answer and the request's closing rollback."""
    api = {"Authorization": f"Bearer {token_for(make_user('technician', site_code='RH'))}"}

    def lost(session):
        raise OperationalError(
            "ROLLBACK", {}, psycopg.OperationalError("server closed the connection unexpectedly")
        )

    with monkeypatch.context() as patch:
        patch.setattr(Session, "rollback", lost)
        answer = client.get(f"/api/v1/items/{tube_code}", headers=api)
    assert (answer.status_code, answer.json["code"]) == (200, tube_code)
    # The session was closed all the same: its connection is back in the pool.
    assert app.extensions["lims_engine"].pool.checkedout() == 0
