"""The fast audit verification (lims.audit.verify): the same bytes hashed as ``row_digest``,
the same verdict as the one-pass check it replaced, whichever range a broken row falls in and
however many ranges (processes, on PostgreSQL) check the chain."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from benchmarks.dataset import load
from benchmarks.dataset_audit import append_audit
from benchmarks.plan import Spec
from lims import db as lims_db
from lims.audit import services as audit
from lims.audit import verify as fast
from lims.audit.models import GENESIS_HASH, AuditEntry, AuditHead
from lims.audit.services import ChainReport, Change
from lims.auth.models import User
from tests.integration.test_audit_chain import tampering

# -- the hashed text ----------------------------------------------------------------------------

# Any text a column can hold, NUL and lone surrogates aside (no database stores them), with
# the characters JSON escapes and a long one now and then.
texts = st.one_of(
    st.none(),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), min_codepoint=1)),
    st.sampled_from(['"', "\\", "\n\r\t\b\f", "\x1f\x7f", "\u2028\u2029", "Æblegrød ✓ 🧪"]),
    st.text(min_size=2000, max_size=6000),
)
moments = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=400, deadline=None)
@given(
    prev=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    seq=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    at=moments,
    user_id=st.one_of(st.none(), st.integers(min_value=1, max_value=2**31)),
    strings=st.tuples(*[texts] * 8),
)
def test_the_hashed_text_is_byte_for_byte_what_json_dumps_writes(prev, seq, at, user_id, strings):
    actor, entity, entity_id, action, field, old, new, reason = strings
    content = {
        "seq": seq, "at": at.isoformat(), "user_id": user_id, "actor": actor, "entity": entity,
        "entity_id": entity_id, "action": action, "field": field, "old_value": old,
        "new_value": new, "reason": reason,
    }  # fmt: skip
    expected = prev + json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    built = fast.digest_input(
        prev, seq, at.isoformat(), user_id, actor, entity, entity_id, action, field, old, new,
        reason,
    )  # fmt: skip
    assert built == expected
    assert built.encode() == expected.encode()


def test_the_hashed_text_of_an_entry_is_what_row_digest_hashes():
    entry = AuditEntry(
        seq=7, at=datetime(2024, 3, 31, 0, 59, 59, tzinfo=UTC), user_id=None,
        actor="command line", entity="item", entity_id="12", action="create", field=None,
        old_value=None, new_value='{"a": "Ø\\n"}', reason="x\ty",
    )  # fmt: skip
    prev = "ab" * 32
    columns = [getattr(entry, name) for name in fast.COLUMNS[:11]]
    columns[1] = entry.at.isoformat()
    assert hashlib.sha256(
        fast.digest_input(prev, *columns).encode()
    ).hexdigest() == audit.row_digest(prev, audit._content(entry))


def test_ranges_cover_every_position_once():
    assert fast.split(10, 1) == [(None, None)]
    assert fast.split(10, 2) == [(None, 5), (5, None)]
    assert fast.split(10, 3) == [(None, 3), (3, 6), (6, None)]
    assert fast.split(0, 2) == [(None, 0), (0, None)]


# -- the PostgreSQL time text -------------------------------------------------------------------

EDGE_TIMES = [
    datetime(2024, 6, 3, 8, 15, tzinfo=UTC),
    datetime(2024, 6, 3, 8, 15, 0, 1, tzinfo=UTC),
    datetime(2024, 6, 3, 8, 15, 59, 999999, tzinfo=UTC),
    datetime(2024, 6, 3, 8, 15, 0, 120000, tzinfo=UTC),
    datetime(2024, 10, 27, 0, 30, tzinfo=UTC),  # Copenhagen leaves summer time at 01:00 UTC
    datetime(2024, 3, 31, 1, 0, tzinfo=UTC),
    datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(2024, 2, 29, 23, 59, 59, 500, tzinfo=timezone(timedelta(hours=1))),
]


def test_postgresql_writes_the_time_as_isoformat_does(app, backend):
    if backend != "postgresql":
        pytest.skip("SQLite's times are read through the column type")
    engine = app.extensions["lims_engine"]
    with engine.connect() as connection:
        # Whatever the session's zone: the text is UTC.
        connection.execute(text("SET TimeZone = 'Europe/Copenhagen'"))
        for moment in EDGE_TIMES:
            written = connection.execute(
                text(f"SELECT {fast._PG_ISOFORMAT} FROM (SELECT CAST(:t AS timestamptz) AS at) x"),
                {"t": moment},
            ).scalar_one()
            assert written == moment.astimezone(UTC).isoformat(), moment


# -- verdicts on a real chain -------------------------------------------------------------------


def reference_report(session) -> ChainReport:
    """The one-pass check through ORM objects that the fast one replaced, as it was."""
    prev_hash, expected_seq, count = GENESIS_HASH, 1, 0
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.seq)):
        count += 1
        if entry.seq != expected_seq:
            return ChainReport(count, expected_seq, f"row {expected_seq} is missing")
        if entry.prev_hash != prev_hash:
            return ChainReport(
                count, entry.seq, f"row {entry.seq} does not follow row {entry.seq - 1}"
            )
        if audit.row_digest(prev_hash, audit._content(entry)) != entry.row_hash:
            return ChainReport(count, entry.seq, f"row {entry.seq} was altered")
        prev_hash = entry.row_hash
        expected_seq += 1
    head = session.get(AuditHead, 1)
    if head is None:
        return ChainReport(count, None, "the chain head is missing")
    if head.seq != count or head.last_hash != prev_hash:
        return ChainReport(count, count + 1, f"rows after row {count} were removed")
    return ChainReport(count)


AWKWARD = ["Æblegrød ✓ 🧪", 'quote " and \\ backslash', "line\nbreak\ttab\x1f", "x" * 5000, ""]


def build_chain(app, make_user, rows: int = 40) -> int:
    """A chain of ``rows`` rows or a few more: the user's own rows, then ones with awkward
    text and missing values, written by the application's own ``append_rows``."""
    person = make_user("technician", full_name="Åse Ørsted")
    with app.app_context():
        session = lims_db.session()
        user = session.get(User, person.id)
        have = session.get(AuditHead, 1).seq
        batch = []
        for number in range(max(rows - have, 0)):
            value = AWKWARD[number % len(AWKWARD)]
            change = Change(
                None if number % 3 == 0 else "state",
                None if number % 2 else value,
                value[::-1] if number % 4 else None,
            )
            batch.append(("item", number, "test", change, value if number % 5 else None))
        # Two statements, two users: the rows' times and actors differ.
        audit.append_rows(session, actor=user, rows=batch[: len(batch) // 2])
        audit.append_rows(session, actor=None, rows=batch[len(batch) // 2 :])
        session.commit()
        return session.get(AuditHead, 1).seq


def run_sql(app, statement: str, **values) -> None:
    with tampering(app.extensions["lims_engine"]) as connection:
        connection.execute(text(statement), values)


def forge_hash(app, seq: int) -> None:
    """Alter row ``seq`` and give it the hash that fits its new content."""
    with app.app_context():
        entry = lims_db.session().scalar(select(AuditEntry).where(AuditEntry.seq == seq))
        content = audit._content(entry)
        content["reason"] = "forged"
        forged = audit.row_digest(entry.prev_hash, content)
    run_sql(
        app,
        "UPDATE audit_entry SET reason = 'forged', row_hash = :h WHERE seq = :s",
        h=forged,
        s=seq,
    )


def alter(seq_of: Callable[[int], int]):
    return lambda app, n: run_sql(
        app, "UPDATE audit_entry SET new_value = 'forged' WHERE seq = :s", s=seq_of(n)
    )


def delete(first: Callable[[int], int], last: Callable[[int], int] | None = None):
    return lambda app, n: run_sql(
        app,
        "DELETE FROM audit_entry WHERE seq BETWEEN :a AND :b",
        a=first(n),
        b=(last or first)(n),
    )


def cut(n: int) -> int:
    """The last position of the first of two ranges."""
    return n // 2


# (tampering, expected first broken position, expected message), n = rows in the chain.
SCENARIOS = {
    "intact": (lambda app, n: None, lambda n: (None, None)),
    "first row altered": (alter(lambda n: 1), lambda n: (1, "row 1 was altered")),
    "middle of the first range altered": (
        alter(lambda n: cut(n) // 2),
        lambda n: (cut(n) // 2, f"row {cut(n) // 2} was altered"),
    ),
    "last row of the first range altered": (
        alter(cut),
        lambda n: (cut(n), f"row {cut(n)} was altered"),
    ),
    "first row of the second range altered": (
        alter(lambda n: cut(n) + 1),
        lambda n: (cut(n) + 1, f"row {cut(n) + 1} was altered"),
    ),
    "last row altered": (alter(lambda n: n), lambda n: (n, f"row {n} was altered")),
    "boundary: hash recomputed at the end of the first range": (
        lambda app, n: forge_hash(app, cut(n)),
        lambda n: (cut(n) + 1, f"row {cut(n) + 1} does not follow row {cut(n)}"),
    ),
    "hash recomputed inside the second range": (
        lambda app, n: forge_hash(app, cut(n) + 3),
        lambda n: (cut(n) + 4, f"row {cut(n) + 4} does not follow row {cut(n) + 3}"),
    ),
    "hash recomputed on the last row": (
        lambda app, n: forge_hash(app, n),
        lambda n: (n + 1, f"rows after row {n} were removed"),
    ),
    "missing row in the first range": (
        delete(lambda n: 3),
        lambda n: (3, "row 3 is missing"),
    ),
    "missing first row": (delete(lambda n: 1), lambda n: (1, "row 1 is missing")),
    "missing last row of the first range": (
        delete(cut),
        lambda n: (cut(n), f"row {cut(n)} is missing"),
    ),
    "missing first row of the second range": (
        delete(lambda n: cut(n) + 1),
        lambda n: (cut(n) + 1, f"row {cut(n) + 1} is missing"),
    ),
    "missing rows across the boundary": (
        delete(lambda n: cut(n) - 2, lambda n: cut(n) + 2),
        lambda n: (cut(n) - 2, f"row {cut(n) - 2} is missing"),
    ),
    "the whole first range missing": (
        delete(lambda n: 1, cut),
        lambda n: (1, "row 1 is missing"),
    ),
    "removed tail": (
        delete(lambda n: n - 4, lambda n: n),
        lambda n: (n - 4, f"rows after row {n - 5} were removed"),
    ),
    "the whole second range removed": (
        delete(lambda n: cut(n) + 1, lambda n: n),
        lambda n: (cut(n) + 1, f"rows after row {cut(n)} were removed"),
    ),
    "a row appended behind the head's back": (
        lambda app, n: run_sql(
            app,
            "INSERT INTO audit_entry (seq, at, actor, entity, entity_id, action, prev_hash,"
            " row_hash) SELECT seq + 1, at, actor, entity, entity_id, action, row_hash, :h"
            " FROM audit_entry WHERE seq = :s",
            h="f" * 64,
            s=n,
        ),
        lambda n: (n + 1, f"row {n + 1} was altered"),
    ),
    "a row moved before position 1": (
        lambda app, n: run_sql(app, "UPDATE audit_entry SET seq = -1 WHERE seq = :a", a=cut(n) + 2),
        lambda n: (1, "row 1 is missing"),
    ),
    "the chain head missing": (
        lambda app, n: run_sql(app, "DELETE FROM audit_head"),
        lambda n: (None, "the chain head is missing"),
    ),
}


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_verdict_is_the_one_pass_verdict(app, make_user, scenario, workers):
    tamper, expected = SCENARIOS[scenario]
    rows = build_chain(app, make_user)
    tamper(app, rows)
    with app.app_context():
        session = lims_db.session()
        reference = reference_report(session)
        verdict = fast.verify(session, workers=workers)
        found = ChainReport(verdict.rows, verdict.first_broken_seq, verdict.problem)
        assert found == reference
        assert (found.first_broken_seq, found.problem) == expected(rows)
        if scenario == "intact":
            assert found.rows == rows and found.intact


def test_verify_chain_reports_as_before(app, make_user):
    rows = build_chain(app, make_user)
    alter(lambda n: 5)(app, rows)
    with app.app_context():
        report = audit.verify_chain(lims_db.session())
        assert report == ChainReport(5, 5, "row 5 was altered")
        assert not report.intact


def test_large_chains_use_the_parallel_path_by_default(app, make_user, backend, monkeypatch):
    """Below the threshold one pass; above it (lowered here) ranges, with the same verdict."""
    rows = build_chain(app, make_user)
    seen: list = []
    real_split = fast.split
    monkeypatch.setattr(
        fast, "split", lambda last, parts: seen.append(parts) or real_split(last, parts)
    )
    with app.app_context():
        session = lims_db.session()
        assert fast.verify(session) == fast.Verdict(rows)
        assert fast.verify(session, min_parallel_rows=rows) == fast.Verdict(rows)
    # SQLite always reads in one pass unless asked; PostgreSQL splits a large chain.
    assert seen == ([fast.default_workers()] if backend == "postgresql" else [])


def test_a_stop_at_a_broken_row_leaves_no_cursor_open(app, make_user, backend, monkeypatch):
    if backend != "postgresql":
        pytest.skip("only PostgreSQL streams through a server-side cursor")
    rows = build_chain(app, make_user)
    alter(lambda n: 2)(app, rows)
    alter(lambda n: n - 1)(app, rows)
    left_open: list = []
    monkeypatch.setattr(sys, "unraisablehook", left_open.append)
    with app.app_context():
        session = lims_db.session()
        for workers in (1, 2):
            assert fast.verify(session, workers=workers).first_broken_seq == 2
    assert left_open == []
    # Nothing held on to: the table can be altered at once (tampering waits 10 s at most).
    run_sql(app, "UPDATE audit_entry SET reason = reason WHERE seq = 1")


def test_the_generator_appends_a_valid_chain_of_daily_work(app):
    """``generate.py --extra-audit N``: N more rows chained on in batches, the head moved."""
    spec = Spec(aliquots=60, boxes=2, patients=3, sites=1, registered=2, batch=100)
    with app.app_context():
        session = lims_db.session()
        load(session, spec, report=lambda line: None)
        before = session.get(AuditHead, 1).seq
        last = append_audit(session, 1234, batch=500, report=lambda line: None)
        assert last == before + 1234 == session.get(AuditHead, 1).seq
        for workers in (1, 2):
            assert fast.verify(session, workers=workers) == fast.Verdict(last)
        added = session.execute(
            select(AuditEntry.action, AuditEntry.field).where(AuditEntry.seq > before)
        ).all()
        assert len(added) == 1234
        actions = {action for action, _ in added}
        assert {"check_out", "return_to_storage", "print", "view_identity"} <= actions
        assert ("return_to_storage", "thaw_count") in set(added)


def test_a_failing_range_process_is_reported_not_waited_for(app, backend):
    if backend != "postgresql":
        pytest.skip("only PostgreSQL checks ranges in other processes")
    url = app.extensions["lims_engine"].url.render_as_string(hide_password=False)
    child = fast._Child.start(url, "no snapshot", (None, 10))
    try:
        with pytest.raises(RuntimeError, match=r"rows \(None, 10\) failed: ValueError: not a"):
            child.result()
    finally:
        child.stop()
    assert child.process.exitcode == 0  # it reported and ended
