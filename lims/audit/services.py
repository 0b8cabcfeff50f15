"""Writing and verifying the audit trail; e-signatures.

Services call these inside their own transaction, before their single commit, so the change,
its custody event and its audit rows land together or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import inspect, update
from sqlalchemy.orm import Session

from lims.audit.models import AuditEntry, AuditHead, ESignature
from lims.audit.verify import verify
from lims.auth.models import User
from lims.auth.passwords import security_policy
from lims.db import utcnow
from lims.errors import ValidationError

COMMAND_LINE = "command line"
#: Columns never written to the audit trail (secrets, or bookkeeping without meaning).
UNAUDITED = {"password_hash", "version", "token_hash", "session_version"}
#: Columns whose value is replaced by a marker: the audit trail must not hold identities.
REDACTED = {"cpr_ciphertext", "name_ciphertext", "birth_date_ciphertext", "cpr_hmac"}


def as_text(value: Any) -> str | None:
    """A value as the audit trail keeps it: stable text, the same on every database."""
    if value is None:
        return None
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (date, Decimal)):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def row_digest(prev_hash: str, content: dict[str, Any]) -> str:
    payload = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + payload).encode()).hexdigest()


def _content(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "at": entry.at.isoformat(),
        "user_id": entry.user_id,
        "actor": entry.actor,
        "entity": entry.entity,
        "entity_id": entry.entity_id,
        "action": entry.action,
        "field": entry.field,
        "old_value": entry.old_value,
        "new_value": entry.new_value,
        "reason": entry.reason,
    }


@dataclass(frozen=True)
class Change:
    field: str | None
    old: str | None
    new: str | None


def _append(
    session: Session,
    *,
    actor: User | None,
    entity: str,
    entity_id: Any,
    action: str,
    changes: Iterable[Change],
    reason: str | None,
) -> list[AuditEntry]:
    return append_rows(
        session,
        actor=actor,
        rows=[(entity, entity_id, action, change, reason) for change in changes],
    )


#: One audit row to write: entity, entity id, action, the change, and the reason.
Row = tuple[str, Any, str, Change, str | None]


def append_rows(session: Session, *, actor: User | None, rows: Sequence[Row]) -> list[AuditEntry]:
    """Chain these rows on, in order. One atomic statement takes their positions and the
    previous hash and holds the write lock (SQLite) or the row lock (PostgreSQL) until commit:
    the chain never forks, however many rows a step writes."""
    if not rows:
        return []
    # No ORM synchronisation: the head is never loaded as an object, and looking for it among
    # the thousands of objects of a large step costs more than the statement.
    last, prev_hash = session.execute(
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(seq=AuditHead.seq + len(rows))
        .returning(AuditHead.seq, AuditHead.last_hash)
        .execution_options(synchronize_session=False)
    ).one()
    at = utcnow()
    entries = []
    for seq, (entity, entity_id, action, change, reason) in enumerate(rows, last - len(rows) + 1):
        entry = AuditEntry(
            seq=seq,
            at=at,
            user_id=actor.id if actor is not None else None,
            actor=actor.username if actor is not None else COMMAND_LINE,
            entity=entity,
            entity_id=str(entity_id),
            action=action,
            field=change.field,
            old_value=change.old,
            new_value=change.new,
            reason=reason,
            prev_hash=prev_hash,
        )
        entry.row_hash = prev_hash = row_digest(prev_hash, _content(entry))
        entries.append(entry)
    session.add_all(entries)
    session.execute(
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(last_hash=prev_hash)
        .execution_options(synchronize_session=False)
    )
    return entries


def _entity(obj: Any) -> tuple[str, Any]:
    identity = inspect(obj).identity
    return obj.__tablename__, identity[0] if identity else obj.id


def record_created(
    session: Session, obj: Any, *, actor: User | None, reason: str | None = None
) -> AuditEntry:
    """One row for a new record, its values as JSON (flushes to learn the new id)."""
    session.flush()
    values = {
        column.key: ("(redacted)" if column.key in REDACTED else as_text(getattr(obj, column.key)))
        for column in inspect(obj).mapper.column_attrs
        if column.key not in UNAUDITED
    }
    entity, entity_id = _entity(obj)
    new = json.dumps(values, sort_keys=True, ensure_ascii=False)
    return _append(
        session,
        actor=actor,
        entity=entity,
        entity_id=entity_id,
        action="create",
        changes=[Change(None, None, new)],
        reason=reason,
    )[0]


def pending_changes(obj: Any) -> list[Change]:
    """The changed columns of ``obj`` not yet flushed, with old and new values."""
    changes = []
    state = inspect(obj)
    for column in state.mapper.column_attrs:
        if column.key in UNAUDITED:
            continue
        history = state.attrs[column.key].history
        if not history.has_changes():
            continue
        old = history.deleted[0] if history.deleted else None
        new = history.added[0] if history.added else None
        if as_text(old) == as_text(new):
            continue
        if column.key in REDACTED:
            changes.append(Change(column.key, "(redacted)", "(redacted)"))
        else:
            changes.append(Change(column.key, as_text(old), as_text(new)))
    return changes


def record_changes(
    session: Session,
    obj: Any,
    *,
    actor: User | None,
    action: str = "update",
    reason: str | None = None,
    changes: list[Change] | None = None,
) -> list[AuditEntry]:
    """A row per changed field. Call after setting the attributes and before any query."""
    changes = pending_changes(obj) if changes is None else changes
    entity, entity_id = _entity(obj)
    return _append(
        session,
        actor=actor,
        entity=entity,
        entity_id=entity_id,
        action=action,
        changes=changes,
        reason=reason,
    )


def record_changes_many(
    session: Session,
    changed: Sequence[tuple[Any, list[Change]]],
    *,
    actor: User | None,
    action: str,
    reason: str | None = None,
) -> list[AuditEntry]:
    """The rows of many records' changes (each with its ``pending_changes``), chained at once."""
    rows: list[Row] = []
    for obj, changes in changed:
        entity, entity_id = _entity(obj)
        rows += [(entity, entity_id, action, change, reason) for change in changes]
    return append_rows(session, actor=actor, rows=rows)


def record_action(
    session: Session,
    *,
    actor: User | None,
    entity: str,
    entity_id: Any,
    action: str,
    detail: str | None = None,
    reason: str | None = None,
) -> AuditEntry:
    """A row for something done that changes no column (a view of an identity, a print)."""
    return _append(
        session,
        actor=actor,
        entity=entity,
        entity_id=entity_id,
        action=action,
        changes=[Change(None, None, detail)],
        reason=reason,
    )[0]


# -- verification -------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainReport:
    rows: int
    first_broken_seq: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


def verify_chain(session: Session) -> ChainReport:
    """Recompute every hash in order; name the first row that does not fit.

    The work is :func:`lims.audit.verify.verify`'s: plain rows, the large chains of
    PostgreSQL checked in two processes in one snapshot; the report is the same."""
    verdict = verify(session)
    return ChainReport(verdict.rows, verdict.first_broken_seq, verdict.problem)


# -- e-signatures -------------------------------------------------------------------------


def record_hash(values: dict[str, Any]) -> str:
    payload = json.dumps({k: as_text(v) for k, v in values.items()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def sign(
    session: Session,
    *,
    signer: User,
    password: str | None,
    meaning: str,
    entity: str,
    entity_id: Any,
    record: dict[str, Any],
    comment: str | None = None,
) -> ESignature:
    """Sign a record version; the password is asked again at every signing."""
    if not password or not security_policy().verify(signer.password_hash, password):
        raise ValidationError(
            "The password for the signature is wrong; nothing was signed or changed.",
            field="password",
        )
    return _signature(
        session,
        signer=signer,
        meaning=meaning,
        entity=entity,
        entity_id=entity_id,
        record=record,
        comment=comment,
    )


def countersign(
    session: Session,
    *,
    witness: Any,
    meaning: str = "verified",
    entity: str,
    entity_id: Any,
    record: dict[str, Any],
) -> ESignature:
    """The second person's signature; ``witness`` comes from ``confirm_second_person``,
    which checked their password before the step began."""
    return _signature(
        session,
        signer=witness.user,
        meaning=meaning,
        entity=entity,
        entity_id=entity_id,
        record=record,
        comment="second person",
    )


def _signature(
    session: Session,
    *,
    signer: User,
    meaning: str,
    entity: str,
    entity_id: Any,
    record: dict[str, Any],
    comment: str | None,
) -> ESignature:
    signature = ESignature(
        user_id=signer.id,
        printed_name=signer.full_name,
        meaning=meaning,
        signed_at=utcnow(),
        entity=entity,
        entity_id=str(entity_id),
        record_hash=record_hash(record),
        comment=comment,
    )
    session.add(signature)
    session.flush()
    record_action(
        session,
        actor=signer,
        entity=entity,
        entity_id=entity_id,
        action="sign",
        detail=f"{meaning} by {signer.full_name} (signature {signature.id})",
    )
    return signature
