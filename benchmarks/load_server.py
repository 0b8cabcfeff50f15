"""The server of ``benchmarks/load.py``: gunicorn as ``lims serve`` runs it on a free
loopback port, and the scratch copy of a data set that a load run may change."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from benchmarks import common

ROOT = Path(__file__).resolve().parent.parent
SERVER_START_SECONDS = 120


# -- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # gunicorn's graceful shutdown
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _healthy(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


@contextlib.contextmanager
def served(app: Flask, *, workers: int, threads: int, log: Path) -> Iterator[str]:
    """gunicorn serving ``lims:create_served_app()`` on the app's database, settings from the
    environment as ``lims serve`` reads them; yields the base URL once /healthz answers."""
    settings = app.config["LIMS"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIMS_")}
    env.update(
        LIMS_DATABASE_URL=settings["database"]["url"],
        LIMS_INSTANCE_PATH=app.instance_path,
        LIMS_SECRET_KEY=app.config["SECRET_KEY"],
    )
    if settings["security"]["patient_key"]:
        env["LIMS_PATIENT_KEY"] = settings["security"]["patient_key"]
    port = free_port()
    command = [
        sys.executable, "-m", "gunicorn",
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers),
        "--worker-class", "gthread",
        "--threads", str(threads),
        # Idle connections of thinking users stay open, as a browser's or a client's would.
        "--keep-alive", "30",
        "--graceful-timeout", "10",
        "--no-control-socket",  # its default path is shared by every gunicorn of the user
        "lims:create_served_app()",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with log.open("ab") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=output)  # noqa: S603 (our own command)
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn ended ({process.returncode}); see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer in {SERVER_START_SECONDS} s")
            if _healthy(port):
                break
            time.sleep(0.3)
        yield base
    finally:
        _stop(process)


def _copy_postgres(url, name: str) -> str:
    """Copy the database ``url`` names to ``name``: as a template (quick), or where someone is
    connected to it, with pg_dump and pg_restore from one snapshot, then VACUUM ANALYZE (the
    search's index-only scans need the visibility map). Says which way it went."""
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            try:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{url.database}"')
                return "template"
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) != "55006":  # object in use
                    raise
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()

    def libpq(database: str) -> str:
        return url.set(drivername="postgresql", database=database).render_as_string(
            hide_password=False
        )

    dump = subprocess.Popen(  # noqa: S603 (our own command)
        ["pg_dump", "--format=custom", "--no-owner", libpq(url.database)],  # noqa: S607
        stdout=subprocess.PIPE,
    )
    restored = subprocess.run(  # noqa: S603
        ["pg_restore", "--no-owner", "--exit-on-error", "--dbname", libpq(name)],  # noqa: S607
        stdin=dump.stdout,
        check=False,
    )
    dump.stdout.close()
    if dump.wait() or restored.returncode:
        raise RuntimeError(f"copying {url.database} to {name} failed")
    copy = create_engine(url.set(database=name), isolation_level="AUTOCOMMIT")
    with copy.connect() as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")
    copy.dispose()
    return "pg_dump | pg_restore"


@contextlib.contextmanager
def scratch_copy(database_url: str, name: str | None = None) -> Iterator[str]:
    """A copy of the data set for the run (PostgreSQL: the database ``name``, by default the
    data set's name + ``_load``), dropped afterwards."""
    url = make_url(database_url)
    if common.backend_name(database_url) == "postgresql":
        name = name or f"{url.database}_load"
        started = time.perf_counter()
        how = _copy_postgres(url, name)
        print(f"copied {url.database} to {name} ({how}) in {time.perf_counter() - started:.0f} s")
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
        return
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "load.sqlite"
        # Read only: a last connection that closes also checkpoints the WAL into the file.
        with (
            contextlib.closing(sqlite3.connect(f"file:{url.database}?mode=ro", uri=True)) as source,
            contextlib.closing(sqlite3.connect(copy)) as target,
        ):
            source.backup(target)
        yield f"sqlite:///{copy}"
