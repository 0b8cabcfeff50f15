"""What the benchmark scripts share: the application's settings for a benchmark database, the
machine and database they ran on, and the sections of ``RESULTS.md`` they keep up to date."""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url

from lims import db as lims_db

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
#: The patient key of benchmark databases: fixed so that the generator and every benchmark
#: read the same (invented) identities; derived from a public phrase, it protects nothing.
BENCH_PATIENT_KEY = base64.b64encode(hashlib.sha256(b"lims benchmark data set").digest()).decode()
DEFAULT_INSTANCE = Path(tempfile.gettempdir()) / "lims-bench-instance"


def settings(database_url: str, instance_path: str | os.PathLike[str] | None = None) -> dict:
    """``create_app(overrides=...)`` for a benchmark database (as tests/conftest.py does)."""
    return {
        "app": {
            "instance_path": str(instance_path or DEFAULT_INSTANCE),
            "secret_key": "benchmark-secret-key",
        },
        "database": {"url": database_url},
        "security": {"patient_key": BENCH_PATIENT_KEY},
    }


def backend_name(database_url: str) -> str:
    return "postgresql" if make_url(database_url).get_backend_name() == "postgresql" else "sqlite"


def is_empty(engine: Engine) -> bool:
    return not inspect(engine).get_table_names()


def reset(database_url: str) -> None:
    """Drop everything: PostgreSQL's public schema, or the SQLite file."""
    url = make_url(database_url)
    if backend_name(database_url) == "postgresql":
        engine = lims_db.make_engine(database_url)
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        engine.dispose()
        return
    if url.database and url.database != ":memory:":
        for suffix in ("", "-wal", "-shm"):
            Path(url.database + suffix).unlink(missing_ok=True)


def machine() -> str:
    """CPU model, cores and memory, from /proc where there is one."""
    cpu, memory = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores{memory}"


def database_version(engine: Engine) -> str:
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            found = connection.execute(text("SHOW server_version")).scalar()
            return f"PostgreSQL {found}"
        found = connection.execute(text("SELECT sqlite_version()")).scalar()
        return f"SQLite {found} (file {engine.url.database})"


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace the section ``name`` of RESULTS.md (between its markers), or append it."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    current = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: block, current)
    else:
        updated = current.rstrip() + "\n\n" + block
    path.write_text(updated)


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def memory_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def load_average() -> str:
    """The machine's load averages over 1, 5 and 15 minutes, as the figures' context."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def export_figures(fmt: str, seconds: float, rows: int, idle_mib: float, output: str) -> dict:
    """One export run's figures, as the LIMS's and the bare runner print them (a JSON line)."""
    return {
        "format": fmt,
        "seconds": round(seconds, 2),
        "rows": rows,
        "idle_rss_mib": round(idle_mib, 1),
        "peak_rss_mib": round(memory_mib("VmHWM"), 1),
        "file_mib": round(Path(output).stat().st_size / 2**20, 1),
    }
