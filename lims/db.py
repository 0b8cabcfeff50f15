"""Database plumbing: the declarative base, the engine and one session per request.

Services receive the session as an argument and own the commit; the request teardown rolls
back whatever a request left uncommitted, so a refusal half way never writes anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import DateTime, Engine, MetaData, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

#: Constraint names follow one rule so that migrations can name what they alter on every
#: database (SQLite batch mode needs names to drop or change a constraint).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every database.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so values are stored as naive
    UTC and made aware again on the way out. Naive datetimes are refused on the way in: a
    local time mistaken for UTC would silently shift a custody record by an hour or two.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware UTC time is required")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: A replayed clock (see :func:`replayed_time`); unset everywhere but while loading the demo.
_REPLAYED_NOW: ContextVar[datetime | None] = ContextVar("lims_replayed_now", default=None)


def utcnow() -> datetime:
    replayed = _REPLAYED_NOW.get()
    return replayed if replayed is not None else datetime.now(UTC)


@contextmanager
def replayed_time(at: datetime) -> Iterator[None]:
    """Run the services as if it were ``at`` (UTC): the demo replays weeks of history.

    Only the current thread and context see it; a server answering requests meanwhile keeps
    the real clock.
    """
    token = _REPLAYED_NOW.set(at.astimezone(UTC))
    try:
        yield
    finally:
        _REPLAYED_NOW.reset(token)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # SQLite ignores foreign keys unless asked, per connection.
    cursor.execute("PRAGMA foreign_keys=ON")
    # A writer waits for SQLite's single write lock this long before the request fails with
    # 503 (lims.dbfaults): 5 s gave a few refusals with 50 busy users (benchmarks/load.py),
    # and this stays well inside gunicorn's 30 s worker timeout.
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


#: Milliseconds a SQLite writer waits for the write lock.
SQLITE_BUSY_TIMEOUT_MS = 15_000


#: Seconds to wait for PostgreSQL to accept a connection: a cut network fails the request
#: (503, lims.dbfaults) instead of holding a worker past gunicorn's own timeout.
CONNECT_TIMEOUT_SECONDS = 5


def make_engine(url: str, *, echo: bool = False) -> Engine:
    options: dict[str, Any] = {}
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    engine = create_engine(url, echo=echo, pool_pre_ping=not url.startswith("sqlite"), **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        if engine.url.database and engine.url.database != ":memory:":
            with engine.connect() as connection:
                # WAL lets the bench page read while another request writes.
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    return engine


def init_app(app: Flask, url: str, *, echo: bool = False) -> None:
    engine = make_engine(url, echo=echo)
    app.extensions["lims_engine"] = engine
    app.extensions["lims_sessionmaker"] = sessionmaker(bind=engine)

    @app.teardown_appcontext
    def close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is None:
            return
        try:
            session.rollback()
        except DBAPIError as exc:
            # The server went away after the answer was made (a restart): nothing is left to
            # roll back there, the pool drops the connection, and the answer stands.
            current_app.logger.warning("rollback on a lost database connection: %s", exc.orig)
        finally:
            session.close()


def session() -> Session:
    """The session of the current request (or CLI command), created on first use."""
    if "db_session" not in g:
        g.db_session = current_app.extensions["lims_sessionmaker"]()
    return g.db_session


def engine() -> Engine:
    return current_app.extensions["lims_engine"]
