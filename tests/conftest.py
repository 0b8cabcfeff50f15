"""Fixtures shared by the integration, functional and browser tests.

Every test that touches a database runs once per backend: SQLite always, PostgreSQL too when
``LIMS_TEST_DATABASE_URL`` is set. The schema is built once per backend with the migrations
(not ``create_all``), so the suite also proves that the migrations produce a working schema.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from lims import create_app, migrate
from lims import db as lims_db
from lims.audit.models import GENESIS_HASH
from lims.auth import services
from lims.db import Base
from lims.errors import NotFound

PG_URL = os.environ.get("LIMS_TEST_DATABASE_URL", "")
PASSWORD = "correct-horse-battery"  # meets the default policy
FAST_HASHING = {"argon2_time_cost": 1, "argon2_memory_kib": 8, "argon2_parallelism": 1}
ENVIRONMENT = (
    "LIMS_CONFIG",
    "LIMS_DATABASE_URL",
    "LIMS_SECRET_KEY",
    "LIMS_INSTANCE_PATH",
    "LIMS_PATIENT_KEY",
    "LIMS_MAIL_HOST",
    "LIMS_MAIL_USERNAME",
    "LIMS_MAIL_PASSWORD",
)


def pytest_report_header(config: pytest.Config) -> str:
    if PG_URL:
        return f"database backends: sqlite, postgresql ({make_url(PG_URL).render_as_string()})"
    return "database backends: sqlite only (set LIMS_TEST_DATABASE_URL to add PostgreSQL)"


def backends() -> list[str]:
    return ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own LIMS_* variables must not leak into the tests."""
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


def reset_postgres(url: str) -> None:
    engine = lims_db.make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session", params=backends())
def database_url(request: pytest.FixtureRequest, tmp_path_factory) -> str:
    """A database migrated to head, one per backend for the whole session."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'lims.sqlite'}"
    else:
        url = PG_URL
        try:
            reset_postgres(url)
        except Exception as exc:  # a set URL that does not answer is an error, never a skip
            pytest.fail(f"LIMS_TEST_DATABASE_URL is set but PostgreSQL is not usable: {exc}")
    engine = lims_db.make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


def settings_for(database_url: str, instance_path: str) -> dict:
    return {
        "app": {"instance_path": instance_path, "secret_key": "test-secret-key"},
        "database": {"url": database_url},
        "security": dict(FAST_HASHING),
    }


def empty_tables(engine) -> None:
    tables = [table.name for table in Base.metadata.sorted_tables]
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            quoted = ", ".join(f'"{name}"' for name in tables)
            connection.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))
        else:
            for name in reversed(tables):
                connection.execute(text(f'DELETE FROM "{name}"'))
        # The chain head is seeded by the migrations; put it back to the genesis state.
        connection.execute(
            text("INSERT INTO audit_head (id, seq, last_hash) VALUES (1, 0, :genesis)"),
            {"genesis": GENESIS_HASH},
        )


@pytest.fixture
def app(database_url: str, tmp_path):
    application = create_app(overrides=settings_for(database_url, str(tmp_path / "instance")))
    application.config["TESTING"] = True
    yield application
    engine = application.extensions["lims_engine"]
    empty_tables(engine)
    engine.dispose()


@pytest.fixture
def backend(app) -> str:
    return app.extensions["lims_engine"].dialect.name


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


# -- factories: each returns plain values, so tests never hold a session across requests -------


@pytest.fixture
def make_site(app) -> Callable[..., SimpleNamespace]:
    letters = iter(f"T{a}{b}" for a in "ABCDEFGHIJ" for b in "ABCDEFGHIJ")

    def factory(code: str | None = None, name: str | None = None, **fields) -> SimpleNamespace:
        with app.app_context():
            session = lims_db.session()
            code = code or next(letters)
            site = services.create_site(
                session, actor=None, code=code, name=name or f"Test hospital {code}", **fields
            )
            return SimpleNamespace(id=site.id, code=site.code, name=site.name)

    return factory


def user_factory(
    app, *, prefix: str = "", name: str = "Test", numbers: Iterator[int] | None = None
) -> Callable[..., SimpleNamespace]:
    """A function making users (and their site when new) as plain values. ``numbers`` makes
    the usernames: give one counter to factories that must not repeat each other's."""
    numbers = numbers if numbers is not None else itertools.count(1)

    def factory(
        role: str = "technician",
        *,
        username: str | None = None,
        site_code: str = "RH",
        password: str = PASSWORD,
        **fields,
    ) -> SimpleNamespace:
        with app.app_context():
            session = lims_db.session()
            try:
                services.site_by_code(session, site_code)
            except NotFound:
                services.create_site(
                    session, actor=None, code=site_code, name=f"Hospital {site_code}"
                )
            user = services.create_user(
                session,
                actor=None,
                username=username or f"{prefix}{role}{next(numbers)}",
                full_name=fields.pop("full_name", f"{name} {role.title()}"),
                role=role,
                site_code=site_code,
                password=password,
                **fields,
            )
            return SimpleNamespace(
                id=user.id, username=user.username, password=password, role=user.role
            )

    return factory


@pytest.fixture
def make_user(app) -> Callable[..., SimpleNamespace]:
    return user_factory(app)


CSRF_INPUT = re.compile(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token(client, path: str = "/login") -> str:
    """The CSRF token of the client's session, read from a page as a browser would."""
    page = client.get(path)
    match = CSRF_INPUT.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def log_in(client, username: str, password: str = PASSWORD):
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf_token(client)},
    )


@pytest.fixture
def login(client) -> Callable[..., object]:
    def do(user: SimpleNamespace):
        response = log_in(client, user.username, user.password)
        assert response.status_code == 302, response.get_data(as_text=True)
        return client

    return do


@pytest.fixture
def token_for(app) -> Callable[[SimpleNamespace], str]:
    def factory(user: SimpleNamespace) -> str:
        with app.app_context():
            session = lims_db.session()
            account = services.get_user(session, user.id)
            return services.create_api_token(session, actor=None, user=account)[1]

    return factory


@pytest.fixture
def sites_and_users(make_user) -> Iterator[dict[str, SimpleNamespace]]:
    """One user of every role at RH."""
    yield {role: make_user(role) for role in ("technician", "manager", "researcher", "admin")}
