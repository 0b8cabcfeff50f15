"""The audit trail's tamper evidence: the hash chain, `lims audit verify`, append-only guards."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from lims import db as lims_db
from lims.audit import services as audit
from lims.audit.append_only import APPEND_ONLY_TABLES, AppendOnlyViolation
from lims.audit.models import AuditEntry, AuditHead, ESignature
from lims.auth.models import User
from lims.custody import production
from lims.custody.domain import Action
from lims.custody.models import CustodyEvent
from lims.custody.services import Move, perform_action
from lims.patients import services as patients
from tests.conftest import PASSWORD

CPR = "0707614285"  # made up; passes mod 11
NAME = "Karen Hansen"


@contextmanager
def tampering(engine, table: str = "audit_entry") -> Iterator:
    """Raw SQL on an append-only table, as someone with direct database access would run it.

    SQLite has no trigger (the ORM guard is its protection). On PostgreSQL the table's trigger
    is disabled first, as a DBA would, and always enabled again: in the same transaction
    (DDL is transactional there) and once more afterwards in case that transaction failed.
    """
    if engine.dialect.name != "postgresql":
        with engine.begin() as connection:
            yield connection
        return
    trigger = f"{table}_append_only"
    try:
        with engine.begin() as connection:
            # Fail instead of hanging if a session of the test still reads the table.
            connection.execute(text("SET LOCAL lock_timeout = '10s'"))
            connection.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}"))
            yield connection
            connection.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}"))
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}"))


def triggers_enabled(engine) -> dict[str, str]:
    """PostgreSQL's state of each append-only trigger ('O' = enabled)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT tgname, tgenabled FROM pg_trigger WHERE tgname LIKE '%_append_only'")
        )
        return {name: state for name, state in rows}


def build_history(app, people) -> SimpleNamespace:
    """Real service calls: patient, episode, collection, a few custody steps, a signature."""
    with app.app_context():
        session = lims_db.session()
        tech = session.get(User, people["tech"].id)
        maker = session.get(User, people["maker"].id)
        manager = session.get(User, people["manager"].id)
        patient, _ = patients.register_patient(
            session, actor=tech, identifier=CPR, name=NAME, treating_site_code="RH"
        )
        episode = patients.register_episode(
            session,
            actor=tech,
            pseudonym=patient.pseudonym,
            product_name="Kymriah",
            product_kind="commercial",
        )
        collection = production.register_collection(
            session,
            actor=tech,
            coi=episode.coi,
            volume_ml=250,
            collected_at=lims_db.utcnow() - timedelta(hours=2),
        )
        perform_action(session, actor=tech, code=collection.code, action=Action.PACK)
        perform_action(
            session,
            actor=tech,
            code=collection.code,
            action=Action.SHIP,
            move=Move(custodian="World Courier"),
        )
        perform_action(session, actor=maker, code=collection.code, action=Action.RECEIVE)
        audit.sign(
            session,
            signer=manager,
            password=PASSWORD,
            meaning="reviewed",
            entity="item",
            entity_id=collection.id,
            record={"code": collection.code, "state": collection.state},
        )
        session.commit()
        rows = session.scalar(select(func.count()).select_from(AuditEntry))
        return SimpleNamespace(rows=rows, item_id=collection.id, code=collection.code)


def entry_at(app, seq: int) -> SimpleNamespace:
    with app.app_context():
        entry = lims_db.session().scalar(select(AuditEntry).where(AuditEntry.seq == seq))
        return SimpleNamespace(id=entry.id, seq=entry.seq, new_value=entry.new_value)


def test_chain_is_intact_after_real_service_calls(app, people, runner):
    history = build_history(app, people)
    with app.app_context():
        session = lims_db.session()
        report = audit.verify_chain(session)
        assert report.intact, report.problem
        assert report.rows == history.rows == session.get(AuditHead, 1).seq
        seqs = session.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)).all()
        assert seqs == list(range(1, history.rows + 1))
        # The patient's identity never enters the trail, only the marker.
        created = session.scalar(
            select(AuditEntry).where(AuditEntry.entity == "patient", AuditEntry.action == "create")
        )
        assert '"name_ciphertext": "(redacted)"' in created.new_value
        everything = " ".join(str(v) for v in session.scalars(select(AuditEntry.new_value)))
        assert NAME not in everything and CPR not in everything
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert f"intact: {history.rows} rows checked" in result.output


def test_an_altered_row_is_named_by_verify(app, people, runner):
    history = build_history(app, people)
    target = entry_at(app, history.rows // 2)
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0
    with tampering(app.extensions["lims_engine"]) as connection:
        connection.execute(
            text("UPDATE audit_entry SET new_value = :forged WHERE seq = :seq"),
            {"forged": "forged", "seq": target.seq},
        )
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1, result.output
    assert f"row {target.seq} (id {target.id})" in result.output
    assert "was altered" in result.output


def test_an_altered_row_with_a_recomputed_hash_breaks_the_next_link(app, people, runner):
    history = build_history(app, people)
    seq = history.rows // 2
    with app.app_context():
        entry = lims_db.session().scalar(select(AuditEntry).where(AuditEntry.seq == seq))
        content = audit._content(entry)
        content["new_value"] = "forged"
        forged_hash = audit.row_digest(entry.prev_hash, content)
    with tampering(app.extensions["lims_engine"]) as connection:
        connection.execute(
            text("UPDATE audit_entry SET new_value = 'forged', row_hash = :hash WHERE seq = :seq"),
            {"hash": forged_hash, "seq": seq},
        )
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1, result.output
    assert f"row {seq + 1} does not follow row {seq}" in result.output


def test_a_removed_middle_row_is_named_as_a_gap(app, people, runner):
    history = build_history(app, people)
    seq = history.rows // 2
    after = entry_at(app, seq + 1)
    with tampering(app.extensions["lims_engine"]) as connection:
        connection.execute(text("DELETE FROM audit_entry WHERE seq = :seq"), {"seq": seq})
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1, result.output
    assert f"row {seq} is missing" in result.output
    assert f"the next is row {after.seq}, id {after.id}" in result.output


def test_verify_closes_its_cursor_when_it_stops_early(app, people, backend, monkeypatch):
    """A server-side cursor (``yield_per``) left to the garbage collector at a broken row would
    stay open on the pooled connection; psycopg reports it through ``sys.unraisablehook``."""
    if backend != "postgresql":
        pytest.skip("only PostgreSQL streams through a server-side cursor")
    build_history(app, people)
    with tampering(app.extensions["lims_engine"]) as connection:
        connection.execute(text("UPDATE audit_entry SET new_value = 'forged' WHERE seq = 2"))
    left_open: list = []
    monkeypatch.setattr(sys, "unraisablehook", left_open.append)
    with app.app_context():
        assert audit.verify_chain(lims_db.session()).first_broken_seq == 2
    assert left_open == []


def test_a_removed_last_row_is_named(app, people, runner):
    history = build_history(app, people)
    with tampering(app.extensions["lims_engine"]) as connection:
        connection.execute(text("DELETE FROM audit_entry WHERE seq = :seq"), {"seq": history.rows})
    result = runner.invoke(args=["audit", "verify"])
    assert result.exit_code == 1, result.output
    assert f"rows after row {history.rows - 1} were removed" in result.output


def test_postgresql_refuses_raw_update_and_delete(app, people, backend):
    if backend != "postgresql":
        pytest.skip("SQLite has no triggers; the ORM guard is its protection")
    build_history(app, people)
    engine = app.extensions["lims_engine"]
    for table in APPEND_ONLY_TABLES:
        for statement in (f"UPDATE {table} SET id = id", f"DELETE FROM {table}"):
            refused = pytest.raises(DBAPIError, match=f"{table} is append-only")
            with refused, engine.begin() as connection:
                connection.execute(text(statement))
    # Tampering as a DBA works only with the trigger off, and leaves it on afterwards.
    with tampering(engine) as connection:
        connection.execute(text("UPDATE audit_entry SET reason = 'x' WHERE seq = 1"))
    # A failure half way rolls the DISABLE back with everything else.
    with pytest.raises(DBAPIError, match="append-only"), tampering(engine) as connection:
        connection.execute(text("ALTER TABLE audit_entry ENABLE TRIGGER ALL"))
        connection.execute(text("DELETE FROM audit_entry"))
    assert triggers_enabled(engine) == {f"{t}_append_only": "O" for t in APPEND_ONLY_TABLES}
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM audit_entry")) > 0


@pytest.mark.parametrize("model", [AuditEntry, CustodyEvent, ESignature])
@pytest.mark.parametrize("change", ["update", "delete"])
def test_the_orm_refuses_to_change_append_only_rows(app, people, model, change):
    build_history(app, people)
    with app.app_context():
        session = lims_db.session()
        row = session.scalar(select(model).order_by(model.id).limit(1))
        assert row is not None
        if change == "update":
            if model is AuditEntry:
                row.new_value = "forged"
            elif model is CustodyEvent:
                row.reason = "forged"
            else:
                row.comment = "forged"
        else:
            session.delete(row)
        with pytest.raises(AppendOnlyViolation, match="cannot be changed or deleted"):
            session.flush()
        session.rollback()
        assert audit.verify_chain(session).intact


def register(session, tech: User, identifier: str) -> None:
    patients.register_patient(
        session,
        actor=tech,
        identifier=identifier,
        identifier_kind="replacement",
        birth_date=date(1970, 1, 1),
        name="Test Person",
        treating_site_code="RH",
    )


def assert_linear(app, expected_rows: int) -> None:
    with app.app_context():
        session = lims_db.session()
        report = audit.verify_chain(session)
        assert report.intact, report.problem
        seqs = session.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)).all()
        assert seqs == list(range(1, expected_rows + 1))


def test_two_sessions_appending_in_turn_keep_one_chain(app, people):
    with app.app_context():
        before = lims_db.session().scalar(select(func.count()).select_from(AuditEntry))
        maker = app.extensions["lims_sessionmaker"]
        with maker() as first, maker() as second:
            techs = [first.get(User, people["tech"].id), second.get(User, people["manager"].id)]
            for n in range(6):
                session = (first, second)[n % 2]
                register(session, techs[n % 2], f"TURN{n:04d}")
        query = select(AuditEntry.actor).where(AuditEntry.seq > before).order_by(AuditEntry.seq)
        actors = lims_db.session().scalars(query).all()
        assert actors == [people["tech"].username, people["manager"].username] * 3
    assert_linear(app, before + 6)


def test_two_threads_appending_at_once_keep_one_chain(app, people, backend):
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers on one file; the sequential test covers it")
    with app.app_context():
        before = lims_db.session().scalar(select(func.count()).select_from(AuditEntry))
    per_thread = 15
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def work(prefix: str, person: SimpleNamespace) -> None:
        try:
            with app.app_context():
                session = lims_db.session()
                actor = session.get(User, person.id)
                session.commit()
                start.wait(timeout=10)
                for n in range(per_thread):
                    register(session, actor, f"{prefix}{n:04d}")
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

    threads = [
        threading.Thread(target=work, args=("ALPHA", people["tech"])),
        threading.Thread(target=work, args=("BRAVO", people["manager"])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert_linear(app, before + 2 * per_thread)
