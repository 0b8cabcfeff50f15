"""Time the audit trail's verification against a bare baseline (issue 9):
``python benchmarks/audit_verify.py --database-url URL [--repeat N] [--reference] [--write]``.

- ``verify_chain``: what ``lims audit verify`` runs (``lims.audit.verify``: plain rows, two
  processes on a large PostgreSQL chain, one snapshot);
- the same check in one process (``workers=1``), to show what the second process brings;
- the bare baseline: hand-written SQL reading every row through the driver (a server-side
  cursor on PostgreSQL), and in a tight loop the content as ``json.dumps`` writes it and
  ``hashlib.sha256`` over it, compared with the stored hash: the least any one-process check
  in Python does;
- with ``--reference``, the one-pass check through ORM objects that ``verify_chain`` was until
  issue 9, for the figure before.

Every run must find the chain intact (a broken one stops the script). Prints seconds and rows
per second of each; ``--write`` records them in RESULTS.md with the machine and its load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from sqlalchemy import select
from sqlalchemy.orm import Session

from benchmarks import common
from lims import create_app
from lims import db as lims_db
from lims.audit import services as audit
from lims.audit import verify as fast
from lims.audit.models import GENESIS_HASH, AuditEntry, AuditHead

TARGET_SECONDS_PER_5M = 60
COLUMNS = ", ".join(fast.COLUMNS)
#: The keys of the hashed content (``lims.audit.services._content``), in ``COLUMNS`` order.
CONTENT_KEYS = fast.COLUMNS[:11]


def bare_baseline(session: Session) -> int:
    """All rows by hand-written SQL, every hash recomputed in a tight loop; returns rows."""
    connection = session.connection()
    driver = connection.connection.driver_connection
    postgres = connection.dialect.name == "postgresql"
    sql = f"SELECT {COLUMNS} FROM audit_entry ORDER BY seq"  # noqa: S608
    cursor = driver.cursor(name="bare_baseline") if postgres else driver.cursor()
    if postgres:
        cursor.itersize = fast.FETCH_ROWS
    encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
    sha256 = hashlib.sha256
    prev_hash, rows = GENESIS_HASH, 0
    try:
        cursor.execute(sql)
        for row in cursor:
            seq, at, prev, row_hash = row[0], row[1], row[11], row[12]
            content = dict(zip(CONTENT_KEYS, row[:11], strict=True))
            moment = at.astimezone(UTC) if postgres else datetime.fromisoformat(at)
            content["at"] = moment.replace(tzinfo=UTC).isoformat()
            digest = sha256((prev + encode(content)).encode()).hexdigest()
            if prev != prev_hash or digest != row_hash:
                raise SystemExit(f"bare baseline: the chain breaks at row {seq}")
            prev_hash = row_hash
            rows += 1
    finally:
        cursor.close()
        session.rollback()
    return rows


def reference(session: Session) -> audit.ChainReport:
    """``verify_chain`` as it was before issue 9: ORM objects, one pass, ``json.dumps``."""
    prev_hash, expected_seq, count = GENESIS_HASH, 1, 0
    query = select(AuditEntry).order_by(AuditEntry.seq).execution_options(yield_per=5000)
    result = session.scalars(query)
    try:
        for entry in result:
            count += 1
            if entry.seq != expected_seq:
                return audit.ChainReport(count, expected_seq, f"row {expected_seq} is missing")
            if entry.prev_hash != prev_hash:
                return audit.ChainReport(count, entry.seq, f"row {entry.seq} does not follow")
            if audit.row_digest(prev_hash, audit._content(entry)) != entry.row_hash:
                return audit.ChainReport(count, entry.seq, f"row {entry.seq} was altered")
            prev_hash = entry.row_hash
            expected_seq += 1
    finally:
        result.close()
    head = session.get(AuditHead, 1)
    if head is None or (head.seq, head.last_hash) != (count, prev_hash):
        return audit.ChainReport(count, count + 1, "head does not match")
    return audit.ChainReport(count)


def timed(run: Callable[[], int], repeat: int) -> tuple[list[float], int]:
    seconds, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = run()
        seconds.append(time.perf_counter() - started)
    return seconds, rows


def checked(report: audit.ChainReport | fast.Verdict) -> int:
    if report.problem is not None:
        raise SystemExit(f"the chain is broken: {report.problem}")
    return report.rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--reference", action="store_true", help="also time the check before")
    parser.add_argument("--instance-path", default=str(common.DEFAULT_INSTANCE))
    parser.add_argument("--write", action="store_true", help="record the figures in RESULTS.md")
    args = parser.parse_args(argv)

    app = create_app(overrides=common.settings(args.database_url, args.instance_path))
    load_before = os.getloadavg()
    results: list[tuple[str, list[float], int]] = []
    with app.app_context():
        session = lims_db.session()
        runs: list[tuple[str, Callable[[], int]]] = [
            ("verify_chain (lims audit verify)", lambda: checked(audit.verify_chain(session))),
            ("the same, one process", lambda: checked(fast.verify(session, workers=1))),
            ("bare baseline (SQL + hashlib)", lambda: bare_baseline(session)),
        ]
        if args.reference:
            runs.append(("before issue 9 (ORM, one pass)", lambda: checked(reference(session))))
        for name, run in runs:
            seconds, rows = timed(run, args.repeat)
            session.rollback()
            results.append((name, seconds, rows))
            shown = ", ".join(f"{value:.1f}" for value in seconds)
            print(f"{name:<36} {shown} s  {rows:,} rows  {rows / min(seconds):,.0f} rows/s")
        version = common.database_version(app.extensions["lims_engine"])
    load_after = os.getloadavg()
    bare = min(results[2][1])
    rows = results[0][2]
    lines = []
    for name, seconds, _ in results:
        best = min(seconds)
        scaled = best * 5_000_000 / rows if rows else 0.0
        lines.append([
            name, ", ".join(f"{value:.1f}" for value in seconds), f"{rows / best:,.0f}",
            f"{scaled:.0f}", f"{best / bare:.2f}",
        ])  # fmt: skip
    backend = common.backend_name(args.database_url)
    best = min(results[0][1]) * 5_000_000 / rows if rows else float("inf")
    verdict = "met" if best <= TARGET_SECONDS_PER_5M else "MISSED"
    if backend != "postgresql":
        verdict += " (the target is PostgreSQL's; shown for comparison)"
    if rows < 5_000_000:
        verdict += f", extrapolated from {rows:,} rows"
    load = (
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
        f"(1-minute; {os.cpu_count()} cores)"
    )
    print(f"Target: 5,000,000 rows in {TARGET_SECONDS_PER_5M} s or less: {verdict}; {load}.")
    if args.write:
        body = "\n".join([
            f"## Audit verification on {backend} ({common.today()})",
            "",
            f"`python benchmarks/audit_verify.py --repeat {args.repeat}"
            f"{' --reference' if args.reference else ''}`: {rows:,} audit rows.",
            f"Machine: {common.machine()}, {load}. Database: {version}.",
            "",
            common.table(
                ["check", "seconds", "rows/s", "s per 5,000,000", "× bare"], lines
            ),
            "",
            f"Target: 5,000,000 rows in {TARGET_SECONDS_PER_5M} s or less: {verdict}.",
        ])  # fmt: skip
        common.write_section(f"audit-verify:{backend}", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
