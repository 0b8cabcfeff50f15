"""Verifying the audit trail's hash chain fast enough for millions of rows (issue 9).

``lims.audit.services.verify_chain`` calls :func:`verify`; the report and its messages are
the same as they always were: the first row, by position, that breaks the chain.

Why it is fast:
- Plain rows through the driver (a server-side cursor on PostgreSQL), only the columns the
  hash covers: no ORM object, no SQLAlchemy row per audit row.
- The hashed text is built by :func:`digest_input` with the JSON encoder's own string
  escaping instead of ``json.dumps`` of a dict per row; the bytes are the same (a property
  test compares them with :func:`lims.audit.services.row_digest`). On PostgreSQL the database
  writes the time as Python's ``isoformat()`` would, so no datetime object is made either.
- Every row stores the hash it follows (``prev_hash``), so ranges of positions can be checked
  independently: on PostgreSQL with a large chain, one range per process, all reading the same
  exported snapshot (``pg_export_snapshot``), so they see one consistent trail however many
  rows are appended meanwhile; the chain head is read in that snapshot too. The parent checks
  the links between ranges and reports the lowest broken position, exactly as one pass would.

SQLite reads in one pass in the caller's transaction (its target is not the national scale);
asked for several ranges (the tests do) it checks them one after another in-process, through
the same joining logic.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from json.encoder import encode_basestring
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from lims.audit.models import GENESIS_HASH, AuditEntry, AuditHead

#: Chains shorter than this are checked in one process: starting another costs about a second.
PARALLEL_MIN_ROWS = 400_000
#: Processes for a large chain on PostgreSQL (the caller's included).
DEFAULT_WORKERS = 2
#: Rows per round trip of the server-side cursor.
FETCH_ROWS = 10_000

AUDIT = AuditEntry.__table__
HEAD = AuditHead.__table__
#: The columns read, in the order :func:`check_rows` unpacks them.
COLUMNS = (
    "seq", "at", "user_id", "actor", "entity", "entity_id", "action", "field",
    "old_value", "new_value", "reason", "prev_hash", "row_hash",
)  # fmt: skip
#: ``at`` as ``datetime.isoformat()`` writes an aware UTC time: seconds always, the fraction
#: only when there is one, ``+00:00``. Independent of the session's TimeZone setting.
_PG_ISOFORMAT = (
    "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
    " || CASE WHEN date_trunc('second', at) = at THEN ''"
    " ELSE to_char(at AT TIME ZONE 'UTC', '.US') END || '+00:00'"
)
_PG_SELECT = (
    f"SELECT {', '.join(_PG_ISOFORMAT if name == 'at' else name for name in COLUMNS)}"  # noqa: S608
    " FROM audit_entry WHERE {where} ORDER BY seq"
)
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")


def _json_text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def digest_input(
    prev_hash: str,
    seq: int,
    at: str,
    user_id: int | None,
    actor: str | None,
    entity: str | None,
    entity_id: str | None,
    action: str | None,
    field: str | None,
    old_value: str | None,
    new_value: str | None,
    reason: str | None,
) -> str:
    """The text ``row_digest`` hashes: the previous hash, then the row's content as
    ``json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` writes
    it (keys in sorted order; strings escaped by the same function the encoder uses; ``at``
    is ``isoformat()`` text, which needs no escaping)."""
    return (
        f'{prev_hash}{{"action":{_json_text(action)},"actor":{_json_text(actor)},"at":"{at}",'
        f'"entity":{_json_text(entity)},"entity_id":{_json_text(entity_id)},'
        f'"field":{_json_text(field)},"new_value":{_json_text(new_value)},'
        f'"old_value":{_json_text(old_value)},"reason":{_json_text(reason)},'
        f'"seq":{int(seq)},"user_id":{"null" if user_id is None else int(user_id)}}}'
    )


@dataclass(frozen=True)
class RangeCheck:
    """What one pass over a range of positions found."""

    #: Rows read, the broken one included.
    rows: int
    first_seq: int | None = None
    #: The stored ``prev_hash`` of the range's first row: the caller checks the link.
    first_prev_hash: str | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    broken_seq: int | None = None
    problem: str | None = None


def check_rows(rows: Iterable[tuple]) -> RangeCheck:
    """Check consecutive rows (``COLUMNS`` order, ``at`` as isoformat text): positions without
    gaps, each row following the one before, each hash recomputed. The first row's position
    and link are the caller's to check (it knows what came before); its hash is checked here."""
    count = 0
    first_seq = first_prev = None
    expected = 0
    link = ""
    for row in rows:
        seq, prev, row_hash = row[0], row[11], row[12]
        count += 1
        if first_seq is None:
            first_seq, first_prev = seq, prev
            expected, link = seq, prev
        if seq != expected:
            problem = f"row {expected} is missing"
            return RangeCheck(count, first_seq, first_prev, broken_seq=expected, problem=problem)
        if prev != link:
            problem = f"row {seq} does not follow row {seq - 1}"
            return RangeCheck(count, first_seq, first_prev, broken_seq=seq, problem=problem)
        # The row's own columns, in COLUMNS order, are digest_input's arguments after prev.
        if sha256(digest_input(prev, *row[:11]).encode()).hexdigest() != row_hash:
            return RangeCheck(
                count, first_seq, first_prev, broken_seq=seq, problem=f"row {seq} was altered"
            )
        link = row_hash
        expected += 1
    if first_seq is None:
        return RangeCheck(0)
    return RangeCheck(count, first_seq, first_prev, expected - 1, link)


@dataclass(frozen=True)
class Verdict:
    """The chain's verdict, as ``ChainReport`` carries it."""

    rows: int
    first_broken_seq: int | None = None
    problem: str | None = None


def join_ranges(checks: Iterable[RangeCheck], head: tuple[int, str] | None) -> Verdict:
    """The verdict of consecutive ranges (lowest positions first) and the chain head, the same
    as one pass from position 1 would give: the first problem by position, and the rows read
    up to it."""
    count, prev_hash, expected = 0, GENESIS_HASH, 1
    for check in checks:
        if check.rows == 0:
            continue  # a gap covering a whole range: the next range's first row names it
        if check.first_seq != expected:
            return Verdict(count + 1, expected, f"row {expected} is missing")
        if check.first_prev_hash != prev_hash:
            seq = check.first_seq
            return Verdict(count + 1, seq, f"row {seq} does not follow row {seq - 1}")
        if check.problem is not None:
            return Verdict(count + check.rows, check.broken_seq, check.problem)
        count, prev_hash, expected = count + check.rows, check.last_hash, check.last_seq + 1
    if head is None:
        return Verdict(count, None, "the chain head is missing")
    if head != (count, prev_hash):
        return Verdict(count, count + 1, f"rows after row {count} were removed")
    return Verdict(count)


# -- reading ----------------------------------------------------------------------------------


Bounds = tuple[int | None, int | None]


def split(last_seq: int, parts: int) -> list[Bounds]:
    """``parts`` consecutive ranges of positions ``(after, up_to)``, open at both ends so that
    every row, whatever its position, is in exactly one."""
    cuts = [last_seq * number // parts for number in range(1, parts)]
    return list(zip([None, *cuts], [*cuts, None], strict=True))


def _where(bounds: Bounds) -> tuple[str, dict[str, int]]:
    after, up_to = bounds
    conditions, values = [], {}
    if after is not None:
        conditions.append("seq > %(after)s")
        values["after"] = after
    if up_to is not None:
        conditions.append("seq <= %(up_to)s")
        values["up_to"] = up_to
    return " AND ".join(conditions) or "TRUE", values


def _postgres_rows(connection: Connection, bounds: Bounds) -> Iterator[tuple]:
    """The range's rows through a server-side cursor in the connection's transaction."""
    where, values = _where(bounds)
    driver = connection.connection.driver_connection
    with driver.cursor(name="audit_verify") as cursor:
        cursor.itersize = FETCH_ROWS
        cursor.execute(_PG_SELECT.format(where=where), values)
        yield from cursor


def _sqlite_rows(connection: Connection, bounds: Bounds) -> Iterator[tuple]:
    """The range's rows, ``at`` read through its column type (as the ORM reads it)."""
    after, up_to = bounds
    query = select(*(AUDIT.c[name] for name in COLUMNS)).order_by(AUDIT.c.seq)
    if after is not None:
        query = query.where(AUDIT.c.seq > after)
    if up_to is not None:
        query = query.where(AUDIT.c.seq <= up_to)
    result = connection.execute(query.execution_options(yield_per=FETCH_ROWS))
    try:
        for row in result:
            at: datetime = row[1]
            yield (row[0], at.isoformat(), *row[2:])
    finally:
        result.close()


def _check_range(connection: Connection, bounds: Bounds) -> RangeCheck:
    reader = _postgres_rows if connection.dialect.name == "postgresql" else _sqlite_rows
    rows = reader(connection, bounds)
    try:
        return check_rows(rows)
    finally:
        rows.close()  # a cursor left open at a broken row would outlive the check


def _head(connection: Connection) -> tuple[int, str] | None:
    found = connection.execute(select(HEAD.c.seq, HEAD.c.last_hash).where(HEAD.c.id == 1)).first()
    return (found.seq, found.last_hash) if found is not None else None


def _last_seq(connection: Connection) -> int:
    return (
        connection.execute(select(AUDIT.c.seq).order_by(AUDIT.c.seq.desc()).limit(1)).scalar() or 0
    )


def _range_in_child(url: str, snapshot: str, bounds: Bounds, sender: Any) -> None:
    """One range, in a process of its own, in the parent's snapshot; the result (or what went
    wrong, as text: an exception may not survive pickling) goes back through ``sender``."""
    try:
        if not _SNAPSHOT_ID.fullmatch(snapshot):
            raise ValueError(f"not a snapshot id: {snapshot!r}")
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
                with connection.begin():
                    connection.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                    result: RangeCheck | str = _check_range(connection, bounds)
        finally:
            engine.dispose()
    except Exception as exc:  # reported by the parent, which raises
        result = f"{type(exc).__name__}: {exc}"
    sender.send(result)
    sender.close()


@dataclass
class _Child:
    """A range being checked in another process."""

    process: Any
    receiver: Any
    bounds: Bounds

    @classmethod
    def start(cls, url: str, snapshot: str, bounds: Bounds) -> _Child:
        context = multiprocessing.get_context("spawn")  # never fork a threaded server
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_range_in_child, args=(url, snapshot, bounds, sender), daemon=True
        )
        process.start()
        sender.close()  # the child's end only: a child that dies closes it, recv() stops
        return cls(process, receiver, bounds)

    def result(self) -> RangeCheck:
        try:
            found = self.receiver.recv()
        except EOFError:
            found = f"the process ended without an answer (exit code {self.process.exitcode})"
        self.process.join()
        if isinstance(found, str):
            raise RuntimeError(f"Verifying audit rows {self.bounds} failed: {found}")
        return found

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()
        self.receiver.close()


# -- the verification ---------------------------------------------------------------------------


def default_workers() -> int:
    return max(1, min(DEFAULT_WORKERS, os.cpu_count() or 1))


def verify(
    session: Session, *, workers: int | None = None, min_parallel_rows: int = PARALLEL_MIN_ROWS
) -> Verdict:
    """Recompute every hash and link; the first row that does not fit, by position.

    ``workers``: ranges checked at once on PostgreSQL (default: two, for chains of at least
    ``min_parallel_rows``; one below). On SQLite the ranges are checked one after another."""
    engine = session.get_bind()
    if not isinstance(engine, Engine):
        engine = engine.engine
    if engine.dialect.name != "postgresql":
        connection = session.connection()
        parts = workers or 1
        bounds = split(_last_seq(connection), parts) if parts > 1 else [(None, None)]
        checks = _until_broken(_check_range(connection, part) for part in bounds)
        return join_ranges(checks, _head(connection))
    # Its own connection and a repeatable-read transaction: the rows and the head are read in
    # one snapshot, which the other processes share.
    with engine.connect() as connection:
        connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            snapshot = connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
            last = _last_seq(connection)
            parts = workers or (default_workers() if last >= min_parallel_rows else 1)
            if parts <= 1:
                return join_ranges([_check_range(connection, (None, None))], _head(connection))
            bounds = split(last, parts)
            url = engine.url.render_as_string(hide_password=False)
            children: list[_Child] = []
            try:
                children += [_Child.start(url, snapshot, part) for part in bounds[1:]]
                first = _check_range(connection, bounds[0])
                if first.problem is not None:
                    return join_ranges([first], None)  # the later ranges cannot matter
                checks = [first, *_until_broken(child.result() for child in children)]
            finally:
                for child in children:
                    child.stop()
            return join_ranges(checks, _head(connection))


def _until_broken(checks: Iterable[RangeCheck]) -> Iterator[RangeCheck]:
    """The checks in order up to the first that found a problem: the later ranges cannot
    change the verdict."""
    for check in checks:
        yield check
        if check.problem is not None:
            return
