"""Fixtures of the fault tests: a worker process to kill, snapshots of the whole database, and
a private PostgreSQL server that a test may stop and restart.

The shared PostgreSQL server (``LIMS_TEST_DATABASE_URL``) is never restarted: other tests use
it. The restart test starts its own server with the PostgreSQL binaries (initdb, pg_ctl) in a
temporary folder on a free port.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import create_engine, func, text
from sqlalchemy import select as sql_select

from lims.audit import services as audit
from lims.audit.models import AuditEntry, AuditHead
from lims.db import Base

ROOT = Path(__file__).resolve().parents[2]
#: Longest wait for a worker to reach its pause (it imports the app and sets up first).
WORKER_START_SECONDS = 120
#: Longest wait for a killed worker's PostgreSQL backend to end.
BACKEND_END_SECONDS = 15


# -- the database, whole ----------------------------------------------------------------------


def snapshot(engine) -> dict[str, list[tuple]]:
    """Every row of every table, in primary-key order: equal snapshots, equal databases."""
    tables = {}
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            order = list(table.primary_key.columns) or list(table.columns)
            rows = connection.execute(table.select().order_by(*order))
            tables[table.name] = [tuple(row) for row in rows]
    return tables


def differences(before: dict[str, list[tuple]], after: dict[str, list[tuple]]) -> list[str]:
    """The tables whose rows differ, with their row counts: empty when nothing changed."""
    return [
        f"{name}: {len(before[name])} rows before, {len(after[name])} after"
        for name in before
        if before[name] != after[name]
    ]


def chain_state(session) -> SimpleNamespace:
    report = audit.verify_chain(session)
    return SimpleNamespace(
        intact=report.intact,
        problem=report.problem,
        rows=session.scalar(sql_select(func.count()).select_from(AuditEntry)),
        head_seq=session.scalar(sql_select(AuditHead.seq).where(AuditHead.id == 1)),
    )


def assert_chain_intact(session) -> SimpleNamespace:
    chain = chain_state(session)
    assert chain.intact, chain.problem
    assert chain.head_seq == chain.rows
    return chain


# -- a worker to kill --------------------------------------------------------------------------


@dataclass
class Killed:
    """What a worker reported at its pause, and how it ended."""

    report: dict[str, Any]
    returncode: int
    stderr: str


def _read_line(process: subprocess.Popen, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            return process.stdout.readline().decode()
        if process.poll() is not None:
            return process.stdout.readline().decode()
    return ""


def run_and_kill(job: dict[str, Any], log: Path) -> Killed:
    """Start the worker, wait until it pauses in its transaction, SIGKILL it, reap it."""
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.worker", json.dumps(job)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            line = _read_line(process, WORKER_START_SECONDS)
            if not line.startswith("{"):
                process.kill()
                process.wait(10)
                pytest.fail(f"the worker did not pause: {line!r}\n{log.read_text()[-3000:]}")
            report = json.loads(line)
            if "paused_after" not in report:
                pytest.fail(f"the worker finished instead of pausing: {report}")
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            process.stdout.close()
    return Killed(report, process.returncode, log.read_text())


def wait_for_backend_end(engine, backend_pid: int) -> float:
    """Seconds until the killed client's PostgreSQL backend is gone (its transaction rolled
    back and its locks released); fails after BACKEND_END_SECONDS."""
    started = time.monotonic()
    while time.monotonic() - started < BACKEND_END_SECONDS:
        with engine.connect() as connection:
            alive = connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": backend_pid},
            ).scalar()
            locks = connection.execute(
                text("SELECT count(*) FROM pg_locks WHERE pid = :pid"), {"pid": backend_pid}
            ).scalar()
        if not alive and not locks:
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"backend {backend_pid} of the killed worker still runs or holds locks")


def sqlite_path(engine) -> Path:
    return Path(engine.url.database)


def checkpoint_sqlite(engine) -> None:
    """Empty the write-ahead log, so that what the worker leaves in it can be seen."""
    with engine.connect() as connection:
        busy, _, _ = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    assert busy == 0, "another connection kept the WAL from being checkpointed"
    assert sqlite_path(engine).with_name(sqlite_path(engine).name + "-wal").stat().st_size == 0


def sqlite_integrity(engine) -> str:
    with engine.connect() as connection:
        return connection.exec_driver_sql("PRAGMA integrity_check").scalar()


@pytest.fixture
def worker_job(app, tmp_path):
    """A job for :mod:`tests.faults.worker` on the test's database, as this app is set up."""
    settings = app.config["LIMS"]

    def job(operation: str, actor: str, pause_after: int, **args: Any) -> dict[str, Any]:
        return {
            "operation": operation,
            "actor": actor,
            "pause_after": pause_after,
            "args": args,
            "settings": {
                "app": {
                    "instance_path": app.instance_path,
                    "secret_key": app.config["SECRET_KEY"],
                },
                "database": {"url": settings["database"]["url"]},
                "security": {
                    key: settings["security"][key]
                    for key in ("argon2_time_cost", "argon2_memory_kib", "argon2_parallelism")
                },
            },
        }

    return job


# -- a private PostgreSQL server ---------------------------------------------------------------


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL server binaries (Debian layout), or those on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    for bindir in reversed(candidates):
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PrivatePostgres:
    bindir: Path
    folder: Path
    port: int
    #: The command prefix that runs a server binary as the server's owner.
    as_owner: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    @property
    def options(self) -> str:
        # Durability settings off: the test is about connections, not about a crash of the
        # machine, and a fast server keeps it short.
        return (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )

    def _run(self, *args: str, timeout: float = 60) -> None:
        completed = subprocess.run(
            [*self.as_owner, *args],
            stdin=subprocess.DEVNULL,
            # The server inherits pg_ctl's output: a pipe would never close.
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
        if completed.returncode:
            log = self.log.read_text()[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({completed.returncode}):\n{log}")

    def pg_ctl(self, *args: str) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args)

    def initdb(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self) -> None:
        self.pg_ctl("start", "-w", "-t", "60", "-o", self.options)

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("stop", "-w", "-t", "60", "-m", mode)

    def restart(self) -> None:
        self.pg_ctl("restart", "-w", "-t", "60", "-m", "fast", "-o", self.options)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str, connect_timeout: int = 3) -> str:
        return (
            f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"
            f"?connect_timeout={connect_timeout}"
        )

    def create_database(self, name: str) -> str:
        engine = create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine.dispose()
        return self.url(name)


@pytest.fixture
def private_postgres():
    """A PostgreSQL server of this test only, started; stopped and removed afterwards."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    as_owner: list[str] = []
    owner = None
    if os.geteuid() == 0:
        # The server refuses to run as root: run it as the postgres account, in a folder that
        # account owns (pytest's own temporary folders are closed to other users).
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres account to run the server")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root and runuser is missing to run the server as postgres")
        as_owner = [runuser, "-u", "postgres", "--"]
    # A short path: the server's Unix socket lives in it (socket paths hold ~100 characters).
    folder = Path(tempfile.mkdtemp(prefix="lims-faults-pg-"))
    if owner is not None:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    server = PrivatePostgres(bindir, folder, free_port(), as_owner)
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        if server.running():
            with contextlib.suppress(Exception):
                server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
