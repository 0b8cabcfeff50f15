"""More audit rows for a generated data set: ``generate.py --extra-audit N`` (issue 9's
5,000,000-row verification target on the 1,000,000-aliquot set).

The rows are those of the bench's daily work on the stored aliquots, as the services write
them: a check-out (state, time out, custodian), a return to storage (state, time back, thaw
count), a reservation and its release by a request (state), a label reprint (the print row),
and a clinical view of a patient's identity; each by one of the site's technicians or its
manager, at the time of writing. They are chained on from the head as it stands, written in
bulk (``COPY`` on PostgreSQL) a batch at a time, each batch committed with the head moved to
its last row, so ``lims audit verify`` passes after every commit.

Only the trail grows: the items keep their state and thaw count (the rows describe cycles that
end where they began, except the thaw count, which a benchmark of the trail does not read).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from benchmarks.bulk import AUDIT, BulkWriter
from lims.audit.models import AuditHead
from lims.audit.services import as_text, row_digest
from lims.auth.models import Role, User
from lims.custody.models import Item
from lims.db import utcnow
from lims.patients.models import Patient

#: One step's rows: (entity, entity id, action, field, old value, new value, reason).
AuditRow = tuple[str, str, str, str | None, str | None, str | None, str | None]


class _Work:
    """Random steps on the data set's records, seeded."""

    def __init__(self, session: Session, seed: int) -> None:
        self.rng = random.Random(seed)  # noqa: S311 (seeded on purpose)
        self.people = session.execute(
            select(User.id, User.username, User.full_name)
            .where(User.role.in_([Role.TECHNICIAN, Role.MANAGER]))
            .order_by(User.id)
        ).all()
        first, last = session.execute(select(func.min(Item.id), func.max(Item.id))).one()
        patients = session.execute(select(func.min(Patient.id), func.max(Patient.id))).one()
        if not self.people or first is None or patients[0] is None:
            raise RuntimeError("no data set to work on: generate one first")
        self.items, self.patients = (first, last), patients

    def step(self) -> tuple[Any, list[AuditRow]]:
        """A person and the rows of one thing they did."""
        person = self.rng.choice(self.people)
        item = str(self.rng.randint(*self.items))
        now = utcnow()
        roll = self.rng.random()
        if roll < 0.35:
            return person, [
                ("item", item, "check_out", "state", "stored", "checked_out", None),
                ("item", item, "check_out", "checked_out_at", None, as_text(now), None),
                ("item", item, "check_out", "custodian", "Bench Technician RH", person[2], None),
            ]
        if roll < 0.70:
            thaws = self.rng.randint(0, 3)
            back = as_text(now - timedelta(minutes=self.rng.randint(5, 240)))
            return person, [
                ("item", item, "return_to_storage", "state", "checked_out", "stored", None),
                ("item", item, "return_to_storage", "checked_out_at", back, None, None),
                ("item", item, "return_to_storage", "thaw_count", str(thaws), str(thaws + 1), None),
            ]
        if roll < 0.85:
            action, old, new = (
                ("reserve", "stored", "reserved")
                if self.rng.random() < 0.5
                else ("unreserve", "reserved", "stored")
            )
            reason = f"request {self.rng.randint(1, 5000)}" if action == "reserve" else None
            return person, [("item", item, action, "state", old, new, reason)]
        if roll < 0.95:
            detail = f"cryovial-44x19 on ZD421-{self.rng.randint(1, 9)} (reprint)"
            return person, [("item", item, "print", None, None, detail, "label smudged")]
        patient = str(self.rng.randint(*self.patients))
        return person, [("patient", patient, "view_identity", None, None, None, "bedside check")]


def _rows(work: _Work, count: int, seq: int, prev_hash: str) -> Iterator[dict[str, Any]]:
    """``count`` chained rows from position ``seq + 1``; a step is cut at the end if need be."""
    written = 0
    while written < count:
        person, rows = work.step()
        at = utcnow()
        for entity, entity_id, action, field, old, new, reason in rows[: count - written]:
            seq += 1
            row = {
                "seq": seq, "at": at, "user_id": person[0], "actor": person[1],
                "entity": entity, "entity_id": entity_id, "action": action, "field": field,
                "old_value": old, "new_value": new, "reason": reason, "prev_hash": prev_hash,
            }  # fmt: skip
            content = {key: row[key] for key in row if key != "prev_hash"}
            content["at"] = at.isoformat()
            row["row_hash"] = prev_hash = row_digest(prev_hash, content)
            written += 1
            yield row


def append_audit(
    session: Session,
    count: int,
    *,
    seed: int = 9,
    batch: int = 50_000,
    use_copy: bool = True,
    report: Callable[[str], None] = print,
) -> int:
    """Chain ``count`` more rows on; returns the head's position afterwards."""
    work = _Work(session, seed)
    writer = BulkWriter(session, use_copy=use_copy)
    head = session.get(AuditHead, 1)
    if head is None:
        raise RuntimeError("the audit chain head is missing: migrate the database first")
    seq, last_hash = head.seq, head.last_hash
    session.commit()
    pending: list[dict[str, Any]] = []
    shown = 0
    for row in _rows(work, count, seq, last_hash):
        pending.append(row)
        if len(pending) == batch:
            seq, last_hash = _flush(session, writer, pending)
            pending = []
            if seq - shown >= 500_000:
                shown = seq
                report(f"  … audit row {seq}")
    if pending:
        seq, last_hash = _flush(session, writer, pending)
    return seq


def _flush(session: Session, writer: BulkWriter, rows: list[dict[str, Any]]) -> tuple[int, str]:
    """Write the rows and move the head to the last, in one transaction."""
    writer.write(AUDIT, rows)
    last = rows[-1]
    session.execute(
        update(AuditHead)
        .where(AuditHead.id == 1)
        .values(seq=last["seq"], last_hash=last["row_hash"])
    )
    session.commit()
    return last["seq"], last["row_hash"]
