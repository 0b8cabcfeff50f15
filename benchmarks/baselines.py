"""The bare baselines of ``benchmarks/run.py``: each operation's reads and writes in SQL written
by hand, through the DBAPI connection itself (psycopg or sqlite3; no SQLAlchemy statement, no
ORM object, no service layer), on the same database and in the same run as the LIMS figure.

What each baseline does is what a competent hand-written implementation of the operation must
do, no less: the same rows read, the same rows written, the same checks, one transaction.
Writes keep every invariant the LIMS keeps, so the data set stays valid and the LIMS can undo
them: a custody event per step, one audit row per changed column, chained onto the audit
trail's hash chain under the same lock (``UPDATE audit_head ... RETURNING``), so ``lims audit
verify`` still passes afterwards. What a baseline leaves out is named where it is left out.

One module for every operation (longer than most for that reason): the SQL of an operation is
easiest to compare with the LIMS when it is all in one place. The audit verification's baseline
is ``benchmarks/audit_verify.py``'s (``bare_baseline``). The inventory exports run here
in a process of their own, like ``benchmarks/export_run.py``, for an honest memory figure:
``python benchmarks/baselines.py export --database-url URL --format csv|xlsx -o FILE``.
"""

# The statements are composed of constants, column names and whole numbers read from the
# database (``Bare.in_ids``); every other value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import Engine

from benchmarks import common
from lims.custody.domain import Kind, State
from lims.custody.models import MaterialType
from lims.storage.domain import BOX_TYPES, TemperatureClass, suitable

_NAME = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")
#: SQLAlchemy's storage format of a datetime on SQLite (naive UTC text).
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
AUDIT_INSERT = (
    "INSERT INTO audit_entry (seq, at, user_id, actor, entity, entity_id, action, field, "
    "old_value, new_value, reason, prev_hash, row_hash) VALUES (:seq, :at, :user_id, :actor, "
    ":entity, :entity_id, :action, :field, :old_value, :new_value, :reason, :prev_hash, "
    ":row_hash)"
)
EVENT_INSERT = (
    "INSERT INTO custody_event (item_id, at, user_id, action, from_state, to_state, "
    "from_site_id, to_site_id, from_location, to_location, from_custodian, to_custodian, reason) "
    "VALUES (:item_id, :at, :user_id, :action, :from_state, :to_state, :from_site_id, "
    ":to_site_id, :from_location, :to_location, :from_custodian, :to_custodian, :reason)"
)


class Refused(Exception):
    """A baseline refused the operation, as the LIMS would have (the run stops: a bug)."""


@dataclass(frozen=True)
class Actor:
    """The person doing the step, as plain values."""

    id: int
    username: str
    full_name: str
    site_id: int


class Bare:
    """A DBAPI connection from the engine's pool (its per-connection settings applied) and the
    little the hand-written SQL needs: one parameter style (``:name``), IN lists, and times
    stored as the column type stores them."""

    def __init__(self, engine: Engine) -> None:
        self.postgres = engine.dialect.name == "postgresql"
        self.connection = engine.raw_connection()
        self._texts: dict[str, str] = {}

    def close(self) -> None:
        self.connection.close()

    def _sql(self, text: str) -> str:
        found = self._texts.get(text)
        if found is None:
            found = _NAME.sub(r"%(\1)s", text) if self.postgres else text
            self._texts[text] = found
        return found

    def run(self, text: str, params: dict[str, Any] | None = None) -> Any:
        cursor = self.connection.cursor()
        cursor.execute(self._sql(text), params or {})
        return cursor

    def rows(self, text: str, params: dict[str, Any] | None = None) -> list[tuple]:
        cursor = self.run(text, params)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    def one(self, text: str, params: dict[str, Any] | None = None) -> tuple | None:
        cursor = self.run(text, params)
        try:
            return cursor.fetchone()
        finally:
            cursor.close()

    def many(self, text: str, params: Sequence[dict[str, Any]]) -> None:
        if params:
            cursor = self.connection.cursor()
            cursor.executemany(self._sql(text), params)
            cursor.close()

    def commit(self) -> None:
        self.connection.commit()

    def rollback(self) -> None:
        self.connection.rollback()

    def person(self, actor: Actor) -> None:
        """Look the person up, as a request does before the operation: the LIMS's timings
        start once its session has loaded the user, so its transaction has begun; the
        baseline's begins here too, outside the clock."""
        self.one("SELECT id, active FROM user_account WHERE id = :id", {"id": actor.id})

    def for_update(self, table: str) -> str:
        """Row locks: PostgreSQL's; SQLite has none (its writer lock comes with the first
        write, as it does for the LIMS)."""
        return f" FOR UPDATE OF {table}" if self.postgres else ""

    def in_ids(self, column: str, ids: Iterable[int]) -> str:
        """``column IN (...)`` with whole numbers written into the statement (as the LIMS
        does for its long lists); the ids come from the database, never from a person."""
        return f"{column} IN ({', '.join(str(int(value)) for value in ids) or 'NULL'})"

    def time(self, value: datetime) -> Any:
        return value if self.postgres else value.astimezone(UTC).strftime(_SQLITE_TIME)

    def number(self, value: Decimal) -> Any:
        return value if self.postgres else float(value)


def now() -> datetime:
    return datetime.now(UTC)


def as_text(value: Any) -> str | None:
    """A value as the audit trail keeps it (the same text as ``lims.audit.services``)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- the audit chain --------------------------------------------------------------------------

#: One audit row: entity, entity id, action, field, old value, new value, reason.
AuditRow = tuple[str, Any, str, str | None, str | None, str | None, str | None]


def chain(bare: Bare, actor: Actor, rows: Sequence[AuditRow], at: datetime) -> None:
    """Append the rows to the hash chain: take their positions and the last hash under the
    head's lock, hash each row over its content and the previous hash, insert, move the head."""
    if not rows:
        return
    last, prev = bare.one(
        "UPDATE audit_head SET seq = seq + :count WHERE id = 1 RETURNING seq, last_hash",
        {"count": len(rows)},
    )
    stamp, stored_at = at.isoformat(), bare.time(at)
    params = []
    for seq, (entity, entity_id, action, field, old, new, reason) in enumerate(
        rows, last - len(rows) + 1
    ):
        content = {
            "seq": seq,
            "at": stamp,
            "user_id": actor.id,
            "actor": actor.username,
            "entity": entity,
            "entity_id": str(entity_id),
            "action": action,
            "field": field,
            "old_value": old,
            "new_value": new,
            "reason": reason,
        }
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256((prev + text).encode()).hexdigest()
        params.append(
            dict(content, at=stored_at, entity_id=str(entity_id), prev_hash=prev, row_hash=digest)
        )
        prev = digest
    bare.many(AUDIT_INSERT, params)
    bare.run("UPDATE audit_head SET last_hash = :hash WHERE id = 1", {"hash": prev}).close()


def changed(
    entity: str, entity_id: int, action: str, reason: str | None, values: dict[str, tuple]
) -> list[AuditRow]:
    """The audit rows of the columns whose value changed (``values``: field → (old, new))."""
    rows = []
    for field, (old, new) in values.items():
        if as_text(old) != as_text(new):
            rows.append((entity, entity_id, action, field, as_text(old), as_text(new), reason))
    return rows


# -- scan look-up -----------------------------------------------------------------------------

SCAN = """
SELECT i.id, i.code, i.check_character, i.kind, i.material_type, i.state, i.quantity, i.unit,
       i.cell_count, i.timepoint, i.timepoint_day, i.aliquot_number, i.aliquot_total,
       p.code, l.lot_number, e.coi, e.coi_check, pt.pseudonym, s.code, i.location,
       i.custodian, i.thaw_count, i.collected_at, i.created_at, i.expires_at, i.thawed_at
FROM item i
JOIN episode e ON e.id = i.episode_id
JOIN patient pt ON pt.id = e.patient_id
JOIN site s ON s.id = i.site_id
LEFT JOIN item p ON p.id = i.parent_id
LEFT JOIN product_lot l ON l.id = i.lot_id
WHERE i.code = :code
"""
OPEN_HOLDS = (
    "SELECT id, reason, detail, placed_at, cleared_at, clear_reason FROM hold "
    "WHERE item_id = :item_id AND cleared_at IS NULL ORDER BY id"
)


def _iso(bare: Bare, value: Any) -> str | None:
    """A stored time as the API writes it (ISO 8601, UTC as ``Z``)."""
    if value is None:
        return None
    if not bare.postgres:
        value = datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _amount(value: Any) -> int | float | None:
    if value is None:
        return None
    number = Decimal(str(value))
    return int(number) if number == number.to_integral_value() else float(number)


def scan_lookup(bare: Bare, code: str, actions: dict[tuple[str, str], list[str]]) -> dict:
    """What a scan answers (the API's item, staff view): the item, its parent's code, lot,
    episode, pseudonym and site in one statement, then its open holds. ``actions``: the steps
    offered per (kind, state), a table a hand-written program would hold as a constant."""
    row = bare.one(SCAN, {"code": code.strip().upper()})
    if row is None:
        raise Refused(f"no item {code}")
    holds = bare.rows(OPEN_HOLDS, {"item_id": row[0]})
    answer = {
        "code": row[1],
        "check_character": row[2],
        "kind": row[3],
        "material_type": row[4],
        "state": row[5],
        "quantity": _amount(row[6]),
        "unit": row[7],
        "cell_count": row[8],
        "timepoint": row[9],
        "timepoint_day": row[10],
        "aliquot": {"number": row[11], "total": row[12]} if row[11] is not None else None,
        "parent": row[13],
        "lot_number": row[14],
        "coi": row[15],
        "coi_check_character": row[16],
        "pseudonym": row[17],
        "site": row[18],
        "location": row[19],
        "custodian": row[20],
        "thaw_count": row[21],
        "collected_at": _iso(bare, row[22]),
        "created_at": _iso(bare, row[23]),
        "expires_at": _iso(bare, row[24]),
        "thawed_at": _iso(bare, row[25]),
        "on_hold": bool(holds),
        "holds": [
            {
                "id": hold[0],
                "item": row[1],
                "reason": hold[1],
                "detail": hold[2],
                "placed_at": _iso(bare, hold[3]),
                "cleared_at": _iso(bare, hold[4]),
                "clear_reason": hold[5],
            }
            for hold in holds
        ],
        "actions": actions[(row[3], row[5])],
    }
    return answer


# -- custody transition -----------------------------------------------------------------------

LOCK_ITEM = (
    "SELECT id, kind, state, site_id, location, custodian, thaw_count, checked_out_at, version, "
    "box_id, position, material_type FROM item WHERE code = :code"
)
HELD = "SELECT count(*) FROM hold WHERE item_id = :item_id AND cleared_at IS NULL"


def _locked_item(bare: Bare, code: str) -> tuple:
    row = bare.one(LOCK_ITEM + bare.for_update("item"), {"code": code})
    if row is None:
        raise Refused(f"no item {code}")
    return row


def check_out(bare: Bare, actor: Actor, code: str) -> None:
    """Stored → checked out: lock the tube, check its state and that it is on no hold, write
    the new state (it keeps its position for its return), the custody event and the audit rows
    (state, custodian if it changes, the time it went out), commit."""
    _transition(bare, actor, code, "check_out", State.STORED, State.CHECKED_OUT)


def return_to_storage(bare: Bare, actor: Actor, code: str) -> None:
    """Checked out → stored, back in its kept position, its thaw count one higher."""
    _transition(bare, actor, code, "return_to_storage", State.CHECKED_OUT, State.STORED)


def _transition(
    bare: Bare, actor: Actor, code: str, action: str, from_state: State, to_state: State
) -> None:
    at = now()
    try:
        item_id, kind, state, site_id, location, custodian, thaws, out_at, version, *_ = (
            _locked_item(bare, code)
        )
        if kind != Kind.ALIQUOT.value or state != from_state.value:
            raise Refused(f"{code} is {state}, not {from_state.value}")
        if bare.one(HELD, {"item_id": item_id})[0]:
            raise Refused(f"{code} is on hold")
        values: dict[str, tuple] = {"state": (state, to_state.value)}
        new_custodian, new_thaws, new_out = custodian, thaws, None
        if action == "check_out":
            new_custodian, new_out = actor.full_name, at
            values["custodian"] = (custodian, new_custodian)
            values["checked_out_at"] = (None, at)
        else:
            new_thaws = thaws + 1
            values["thaw_count"] = (thaws, new_thaws)
            values["checked_out_at"] = (_read_time(bare, out_at), None)
        done = bare.run(
            "UPDATE item SET state = :state, custodian = :custodian, thaw_count = :thaws, "
            "checked_out_at = :out_at, version = version + 1 WHERE id = :id AND version = :version",
            {
                "state": to_state.value,
                "custodian": new_custodian,
                "thaws": new_thaws,
                "out_at": bare.time(new_out) if new_out is not None else None,
                "id": item_id,
                "version": version,
            },
        )
        if done.rowcount != 1:
            raise Refused(f"{code} was changed at the same moment")
        chain(bare, actor, changed("item", item_id, action, None, values), at)
        event = Event(action, (state, to_state.value), (site_id, site_id), (location, location))
        bare.run(EVENT_INSERT, event.values(bare, actor, item_id, at, (custodian, new_custodian)))
        bare.commit()
    except BaseException:
        bare.rollback()
        raise


def _read_time(bare: Bare, value: Any) -> datetime | None:
    """A time read back from the database, aware UTC (SQLite gives the text it stores)."""
    if value is None:
        return None
    if bare.postgres:
        return value.astimezone(UTC)
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Event:
    """A custody event's step, states, sites and locations (from, to)."""

    action: str
    states: tuple[str | None, str]
    sites: tuple[int | None, int]
    locations: tuple[str | None, str]
    reason: str | None = None

    def values(
        self, bare: Bare, actor: Actor, item_id: int, at: datetime, custodians: tuple
    ) -> dict[str, Any]:
        return {
            "item_id": item_id,
            "at": bare.time(at),
            "user_id": actor.id,
            "action": self.action,
            "from_state": self.states[0],
            "to_state": self.states[1],
            "from_site_id": self.sites[0],
            "to_site_id": self.sites[1],
            "from_location": self.locations[0],
            "to_location": self.locations[1],
            "from_custodian": custodians[0],
            "to_custodian": custodians[1],
            "reason": self.reason,
        }


# -- placement ----------------------------------------------------------------------------------

BOX = """
SELECT b.id, b.code, b.box_type, b.capacity, b.active, u.active, u.site_id,
       u.temperature_class, u.code, r.code
FROM storage_box b
JOIN storage_unit u ON u.id = b.unit_id
LEFT JOIN storage_rack r ON r.id = b.rack_id
WHERE b.code = :code
"""


def place(bare: Bare, actor: Actor, code: str, box_code: str, position: str) -> None:
    """A registered tube into a position of a box: lock the tube and the box, check the box is
    in use, at the person's site and the tube's, cold enough for the material, and that the
    position is free; write the tube's new state and place, the audit rows (state, location,
    box, position, time stored) and the ``store`` event; commit. The unique index on (box,
    position) refuses a position filled at the same moment."""
    at = now()
    try:
        item_id, kind, state, site_id, location, custodian, _, _, version, *_, material = (
            _locked_item(bare, code)
        )
        box = bare.one(BOX + bare.for_update("b"), {"code": box_code.strip().upper()})
        if box is None:
            raise Refused(f"no box {box_code}")
        box_id, box_code, box_type, _, active, unit_active, box_site, unit_class, unit, rack = box
        if not (active and unit_active) or box_site != actor.site_id or site_id != box_site:
            raise Refused(f"{code} cannot go into {box_code}")
        if state != State.REGISTERED.value or kind != Kind.ALIQUOT.value:
            raise Refused(f"{code} is {state}")
        if suitable(material, TemperatureClass(unit_class)) is not None:
            raise Refused(f"{box_code} is the wrong temperature for {code}")
        geometry = BOX_TYPES[box_type]
        index = geometry.index(position)
        holder = bare.one(
            "SELECT id FROM item WHERE box_id = :box_id AND position = :position",
            {"box_id": box_id, "position": index},
        )
        if holder is not None:
            raise Refused(f"{box_code} {position} is taken")
        path = " / ".join(part for part in (unit, rack, box_code, geometry.name(index)) if part)
        done = bare.run(
            "UPDATE item SET state = :state, location = :location, box_id = :box_id, "
            "position = :position, stored_at = :at, version = version + 1 "
            "WHERE id = :id AND version = :version",
            {
                "state": State.STORED.value,
                "location": path,
                "box_id": box_id,
                "position": index,
                "at": bare.time(at),
                "id": item_id,
                "version": version,
            },
        )
        if done.rowcount != 1:
            raise Refused(f"{code} was changed at the same moment")
        values = {
            "state": (state, State.STORED.value),
            "location": (location, path),
            "box_id": (None, box_id),
            "position": (None, index),
            "stored_at": (None, at),
        }
        chain(bare, actor, changed("item", item_id, "store", None, values), at)
        event = Event("store", (state, State.STORED.value), (site_id, site_id), (location, path))
        bare.run(EVENT_INSERT, event.values(bare, actor, item_id, at, (custodian, custodian)))
        bare.commit()
    except BaseException:
        bare.rollback()
        raise


# -- box map --------------------------------------------------------------------------------------


def box_map(bare: Bare, actor: Actor, box_code: str) -> dict:
    """What the box page shows, read: the person (the session holds their id), the box with
    its unit and rack, the site's units and racks (the move form's choices), the tubes of the
    box, which of them are on hold, and the unread notifications (the page header); the grid
    of positions built from them. No HTML."""
    bare.one("SELECT id, username, full_name, role, site_id, active FROM user_account "
             "WHERE id = :id", {"id": actor.id})  # fmt: skip
    box = bare.one(BOX, {"code": box_code.strip().upper()})
    if box is None or box[6] != actor.site_id:
        raise Refused(f"no box {box_code} here")
    units = bare.rows(
        "SELECT code, name, temperature_class FROM storage_unit "
        "WHERE site_id = :site_id AND active = TRUE ORDER BY code",
        {"site_id": actor.site_id},
    )
    racks = bare.rows(
        "SELECT r.code, u.code FROM storage_rack r JOIN storage_unit u ON u.id = r.unit_id "
        "WHERE u.site_id = :site_id ORDER BY r.code",
        {"site_id": actor.site_id},
    )
    items = bare.rows(
        "SELECT id, code, check_character, material_type, state, position, timepoint, "
        "quantity, unit FROM item WHERE box_id = :box_id ORDER BY position, id",
        {"box_id": box[0]},
    )
    held = set()
    if items:
        held = {
            row[0]
            for row in bare.rows(
                f"SELECT item_id FROM hold WHERE {bare.in_ids('item_id', (i[0] for i in items))} "
                "AND cleared_at IS NULL"
            )
        }
    unread = bare.one(
        "SELECT count(*) FROM notification WHERE user_id = :id AND read_at IS NULL",
        {"id": actor.id},
    )[0]
    geometry = BOX_TYPES[box[2]]
    by_position = {item[5]: item for item in items}
    cells = [
        (geometry.name(index), by_position.get(index), index in by_position and
         by_position[index][0] in held)
        for index in range(1, geometry.capacity + 1)
    ]  # fmt: skip
    rows = [cells[r * geometry.columns : (r + 1) * geometry.columns] for r in range(geometry.rows)]
    return {"box": box, "rows": rows, "units": units, "racks": racks, "unread": unread}


# -- researcher search ------------------------------------------------------------------------

OPTED_OUT = (
    "SELECT o.patient_id FROM opt_out_check o WHERE o.registered = TRUE AND NOT EXISTS ("
    "SELECT 1 FROM opt_out_check n WHERE n.patient_id = o.patient_id AND (n.checked_at > "
    "o.checked_at OR (n.checked_at = o.checked_at AND n.id > o.id)))"
)
ELIGIBLE = (
    f"p.consent_biobank = TRUE AND p.consent_withdrawn_at IS NULL AND p.id NOT IN ({OPTED_OUT})"
)


def _search_where(bare: Bare, filters: Any) -> tuple[list[str], list[str], dict[str, Any]]:
    """The conditions on the tube (``i``) and on the episode (``e``), and their values."""
    tube = [
        "i.state = 'stored'",
        "i.kind = 'aliquot'",
        "i.id NOT IN (SELECT item_id FROM hold WHERE cleared_at IS NULL)",
    ]
    episode, values = [], {}
    if filters.material_type is not None:
        tube.append("i.material_type = :material")
        values["material"] = filters.material_type.value
    if filters.timepoint is not None:
        tube.append("lower(i.timepoint) = :timepoint")
        values["timepoint"] = filters.timepoint.lower()
    if filters.day_from is not None:
        tube.append("i.timepoint_day >= :day_from")
        values["day_from"] = filters.day_from
    if filters.day_to is not None:
        tube.append("i.timepoint_day <= :day_to")
        values["day_to"] = filters.day_to
    if filters.min_quantity is not None:
        tube.append("i.quantity >= :min_quantity")
        values["min_quantity"] = bare.number(filters.min_quantity)
    if filters.max_thaws is not None:
        tube.append("i.thaw_count <= :max_thaws")
        values["max_thaws"] = filters.max_thaws
    if filters.site is not None:
        tube.append("i.site_id = (SELECT id FROM site WHERE code = :site)")
        values["site"] = filters.site
    if filters.study is not None:
        episode.append("lower(e.protocol) = :study")
        values["study"] = filters.study.lower()
    if filters.product is not None:
        episode.append("lower(e.product_name) = :product")
        values["product"] = filters.product.lower()
    return tube, episode, values


def search(bare: Bare, filters: Any, page: int = 1, per_page: int = 50) -> dict:
    """The researcher's search (``lims.requests.search.search``'s answer) in three statements
    at most: the episodes a study or product filter leaves; the page of groups (subject and
    timepoint) counted from the tubes with GROUP BY, with the totals of the whole filter by
    window functions; the counts per material type of the page's subjects."""
    tube, episode, values = _search_where(bare, filters)
    episode_where = "".join(f" AND {condition}" for condition in episode)
    if episode:
        ids = [
            row[0]
            for row in bare.rows(
                "SELECT e.id FROM episode e JOIN patient p ON p.id = e.patient_id "
                f"WHERE {ELIGIBLE}{episode_where}",
                values,
            )
        ]
        if not ids:
            return {"groups": [], "total_groups": 0, "total_aliquots": 0}
        tube = [*tube, bare.in_ids("i.episode_id", ids)]
    grouped = (
        "SELECT e.protocol, p.pseudonym, c.timepoint_day, c.timepoint, e.product_name, "
        "sum(c.n) AS total FROM (SELECT i.episode_id, i.timepoint, i.timepoint_day, "
        f"count(*) AS n FROM item i WHERE {' AND '.join(tube)} "
        "GROUP BY i.episode_id, i.timepoint, i.timepoint_day) c "
        "JOIN episode e ON e.id = c.episode_id JOIN patient p ON p.id = e.patient_id "
        f"WHERE {ELIGIBLE}{episode_where} "
        "GROUP BY e.protocol, p.pseudonym, c.timepoint_day, c.timepoint, e.product_name"
    )
    rows = bare.rows(
        grouped.replace(
            "sum(c.n) AS total FROM",
            "sum(c.n) AS total, count(*) OVER () AS groups, sum(sum(c.n)) OVER () AS tubes FROM",
        )
        + " ORDER BY e.protocol, p.pseudonym, c.timepoint_day IS NULL, c.timepoint_day, "
        "c.timepoint, e.product_name LIMIT :limit OFFSET :offset",
        dict(values, limit=per_page, offset=(page - 1) * per_page),
    )
    if rows:
        total_groups, total_aliquots = rows[0][6], rows[0][7]
    else:
        total_groups, total_aliquots = bare.one(
            f"SELECT count(*), coalesce(sum(total), 0) FROM ({grouped}) g", values
        )
    counts: dict[tuple, dict[str, int]] = {}
    pseudonyms = sorted({row[1] for row in rows})
    if pseudonyms:
        names = {f"pseudonym_{n}": name for n, name in enumerate(pseudonyms)}
        key = "e.protocol, p.pseudonym, i.timepoint_day, i.timepoint, e.product_name"
        for *group, material, number in bare.rows(
            f"SELECT {key}, i.material_type, count(*) FROM item i "
            "JOIN episode e ON e.id = i.episode_id JOIN patient p ON p.id = e.patient_id "
            f"WHERE {' AND '.join(tube)} AND {ELIGIBLE}{episode_where} "
            f"AND p.pseudonym IN ({', '.join(':' + name for name in names)}) "
            f"GROUP BY {key}, i.material_type",
            dict(values, **names),
        ):
            counts.setdefault(tuple(group), {})[material] = number
    groups = [
        {"group": tuple(row[:5]), "total": int(row[5]), "counts": counts.get(tuple(row[:5]), {})}
        for row in rows
    ]
    return {
        "groups": groups,
        "total_groups": int(total_groups),
        "total_aliquots": int(total_aliquots),
    }


# -- approval of a request ----------------------------------------------------------------------


@dataclass(frozen=True)
class Approval:
    """What the approval needs besides the request: the signer's password and the rules'
    settings (the studies with an access committee; how recent an opt-out check must be)."""

    password: str
    committees: frozenset[str]
    opt_out_days: int


APPROVAL_LINES = """
SELECT l.id, i.id, i.code, i.state, i.site_id, i.location, i.custodian, pt.id, pt.pseudonym,
       pt.consent_biobank, pt.consent_genetic, pt.consent_withdrawn_at
FROM aliquot_request_line l
JOIN item i ON i.id = l.item_id
JOIN episode e ON e.id = i.episode_id
JOIN patient pt ON pt.id = e.patient_id
WHERE l.request_id = :request_id AND l.status = 'requested'
ORDER BY i.id
"""


def approve(bare: Bare, actor: Actor, code: str, rules: Approval) -> int:
    """The manager's signed approval of every line of a submitted request, all or nothing:
    lock the request and its tubes (in id order), check every rule per line (state, another
    request, holds, consent, opt-out check), check the password, sign; reserve the tubes in one
    UPDATE, one ``reserve`` event per tube, the lines approved in one UPDATE, the review, the
    request's new state, every audit row chained at once, the notifications; commit. Returns
    the tubes reserved."""
    at = now()
    try:
        request = bare.one(
            "SELECT id, state, site_id, researcher_id, version, genetic FROM aliquot_request "
            "WHERE code = :code" + bare.for_update("aliquot_request"),
            {"code": code},
        )
        if request is None:
            raise Refused(f"no request {code}")
        request_id, state, site_id, researcher_id, version, genetic = request
        if state not in ("submitted", "under_review") or site_id != actor.site_id:
            raise Refused(f"request {code} is {state}")
        if researcher_id == actor.id:
            raise Refused("nobody decides on their own request")
        studies = bare.rows(
            "SELECT DISTINCT e.protocol FROM episode e JOIN item i ON i.episode_id = e.id "
            "JOIN aliquot_request_line l ON l.item_id = i.id WHERE l.request_id = :id",
            {"id": request_id},
        )
        if {row[0] for row in studies} & rules.committees:
            raise Refused("an access committee decides first")  # none in the data set
        lines = bare.rows(APPROVAL_LINES + bare.for_update("i"), {"request_id": request_id})
        if not lines:
            raise Refused(f"request {code} has no lines to approve")
        item_ids = [line[1] for line in lines]
        held = {
            row[0]
            for row in bare.rows(
                f"SELECT item_id FROM hold WHERE {bare.in_ids('item_id', item_ids)} "
                "AND cleared_at IS NULL"
            )
        }
        taken = {
            row[0]
            for row in bare.rows(
                "SELECT item_id FROM aliquot_request_line WHERE "
                f"{bare.in_ids('item_id', item_ids)} AND request_id <> :id "
                "AND status IN ('approved', 'picked', 'handed_over')",
                {"id": request_id},
            )
        }
        latest = {}
        for patient_id, checked_at, registered in bare.rows(
            "SELECT patient_id, checked_at, registered FROM opt_out_check WHERE "
            f"{bare.in_ids('patient_id', {line[7] for line in lines})} ORDER BY checked_at, id"
        ):
            latest[patient_id] = (_read_time(bare, checked_at), registered)
        oldest = at.timestamp() - rules.opt_out_days * 86400
        for line in lines:
            _, item_id, item_code, item_state, *_, patient_id, _, biobank, genetic_ok, gone = line
            check = latest.get(patient_id)
            if (
                item_id in taken
                or item_state != State.STORED.value
                or item_id in held
                or gone is not None
                or not biobank
                or (genetic and not genetic_ok)
                or check is None
                or check[0].timestamp() < oldest
                or check[1]
            ):
                raise Refused(f"{item_code} cannot be approved")
        password_hash = bare.one(
            "SELECT password_hash FROM user_account WHERE id = :id", {"id": actor.id}
        )[0]
        try:
            PasswordHasher().verify(password_hash, rules.password)
        except VerificationError:
            raise Refused("wrong password") from None
        codes = sorted(line[2] for line in lines)
        signed = {"aliquots": ",".join(codes), "decision": "approved", "request": code,
                  "version": str(version)}  # fmt: skip
        signature_id = bare.one(
            "INSERT INTO e_signature (user_id, printed_name, meaning, signed_at, entity, "
            "entity_id, record_hash, comment) VALUES (:user_id, :name, 'approved', :at, "
            "'aliquot_request', :entity_id, :hash, NULL) RETURNING id",
            {
                "user_id": actor.id,
                "name": actor.full_name,
                "at": bare.time(at),
                "entity_id": str(request_id),
                "hash": hashlib.sha256(json.dumps(signed, sort_keys=True).encode()).hexdigest(),
            },
        )[0]
        audit: list[AuditRow] = [
            ("aliquot_request", request_id, "sign", None, None,
             f"approved by {actor.full_name} (signature {signature_id})", None)
        ]  # fmt: skip
        reason = f"request {code}"
        done = bare.run(
            "UPDATE item SET state = 'reserved', version = version + 1 WHERE "
            f"{bare.in_ids('id', item_ids)} AND state = 'stored'"
        )
        if done.rowcount != len(item_ids):
            raise Refused("a tube changed at the same moment")
        audit += [("item", i, "reserve", "state", "stored", "reserved", reason) for i in item_ids]
        bare.many(
            EVENT_INSERT,
            [
                Event("reserve", ("stored", "reserved"), (line[4], line[4]),
                      (line[5], line[5]), reason).values(
                    bare, actor, line[1], at, (line[6], line[6]))
                for line in lines
            ],
        )  # fmt: skip
        bare.run(
            "UPDATE aliquot_request_line SET status = 'approved' "
            "WHERE request_id = :id AND status = 'requested'",
            {"id": request_id},
        ).close()
        audit += [
            ("aliquot_request_line", line[0], "decide", "status", "requested", "approved", None)
            for line in lines
        ]
        review_id = bare.one(
            "INSERT INTO aliquot_request_review (request_id, stage, study, decision, "
            "reviewer_id, signature_id, comment, approved_count, at) VALUES (:request_id, "
            "'manager', '', 'approved', :reviewer_id, :signature_id, '', :count, :at) "
            "RETURNING id",
            {
                "request_id": request_id,
                "reviewer_id": actor.id,
                "signature_id": signature_id,
                "count": len(lines),
                "at": bare.time(at),
            },
        )[0]
        created = {"approved_count": str(len(lines)), "at": at.isoformat(), "comment": "",
                   "decision": "approved", "id": str(review_id), "request_id": str(request_id),
                   "reviewer_id": str(actor.id), "signature_id": str(signature_id),
                   "stage": "manager", "study": ""}  # fmt: skip
        audit.append(
            ("aliquot_request_review", review_id, "create", None, None,
             json.dumps(created, sort_keys=True, ensure_ascii=False), None)
        )  # fmt: skip
        done = bare.run(
            "UPDATE aliquot_request SET state = 'approved', decided_at = :at, "
            "version = version + 1 WHERE id = :id AND version = :version",
            {"at": bare.time(at), "id": request_id, "version": version},
        )
        if done.rowcount != 1:
            raise Refused(f"request {code} changed at the same moment")
        audit += changed(
            "aliquot_request", request_id, "request_approved", None,
            {"state": (state, "approved"), "decided_at": (None, at)},
        )  # fmt: skip
        chain(bare, actor, audit, at)
        told = [
            (user_id, f"Request {code}: {len(lines)} aliquots to pick.")
            for (user_id,) in bare.rows(
                "SELECT id FROM user_account WHERE site_id = :site_id AND role = 'technician' "
                "AND active = TRUE ORDER BY username",
                {"site_id": site_id},
            )
        ]
        if bare.one("SELECT active FROM user_account WHERE id = :id", {"id": researcher_id})[0]:
            told.insert(0, (researcher_id, f"Request {code} was approved: {len(lines)} of "
                                           f"{len(lines)} aliquots reserved."))  # fmt: skip
        bare.many(
            "INSERT INTO notification (user_id, kind, request_id, message, created_at) "
            "VALUES (:user_id, 'approved', :request_id, :message, :at)",
            [
                {"user_id": user, "request_id": request_id, "message": text,
                 "at": bare.time(at)}
                for user, text in told
            ],
        )  # fmt: skip
        bare.commit()
        return len(lines)
    except BaseException:
        bare.rollback()
        raise


# -- inventory export -----------------------------------------------------------------------------

EXPORT = """
SELECT s.code, u.code, r.code, b.code, b.box_type, i.position, i.code, i.check_character,
       i.kind, i.material_type, e.protocol, e.product_name, e.coi, pt.pseudonym, i.timepoint,
       i.timepoint_day, i.quantity, i.unit, i.state, i.thaw_count, i.stored_at, i.collected_at
FROM item i
JOIN storage_box b ON b.id = i.box_id
JOIN storage_unit u ON u.id = b.unit_id
JOIN site s ON s.id = u.site_id
LEFT JOIN storage_rack r ON r.id = b.rack_id
JOIN episode e ON e.id = i.episode_id
JOIN patient pt ON pt.id = e.patient_id
WHERE i.box_id IS NOT NULL
ORDER BY s.code, u.code, b.rack_id IS NULL, r.ordinal, r.code, b.ordinal, b.code, i.position,
         i.code
"""
EXPORT_HEADER = (
    "site", "unit", "rack", "box", "position", "location", "code", "check", "kind",
    "material_type", "study", "product", "coi", "pseudonym", "timepoint", "timepoint_day",
    "quantity", "quantity_unit", "state", "thaw_count", "stored_at", "collected_at",
)  # fmt: skip
FETCH_ROWS = 5_000
_KIND = {kind.value: kind.label for kind in Kind}
_MATERIAL = {material.value: material.label for material in MaterialType}
_STATE = {state.value: state.label for state in State}
_POSITIONS = {box_type: geometry.names() for box_type, geometry in BOX_TYPES.items()}


def export_rows(bare: Bare) -> Iterator[tuple]:
    """The whole network's inventory (staff columns), read in blocks: through a server-side
    cursor on PostgreSQL, the plain cursor on SQLite."""
    if bare.postgres:
        cursor = bare.connection.driver_connection.cursor(name="baseline_export")
    else:
        cursor = bare.connection.cursor()
    try:
        cursor.execute(EXPORT)
        while block := cursor.fetchmany(FETCH_ROWS):
            yield from block
    finally:
        cursor.close()


def export_cells(bare: Bare, zone: ZoneInfo, *, times_as_text: bool) -> Iterator[list]:
    """Each row as the export's cells: labels for stored values, the position's name, the
    location path, the quantity as a number, times in local time (text for CSV)."""
    for (site, unit, rack, box, box_type, index, code, check, kind, material, study, product,
         coi, pseudonym, timepoint, day, quantity, quantity_unit, state, thaws, stored,
         collected) in export_rows(bare):  # fmt: skip
        position = _POSITIONS[box_type][index - 1] if box_type and index else None
        local = []
        for moment in (stored, collected):
            if moment is None:
                local.append(None)
                continue
            aware = _read_time(bare, moment).astimezone(zone)
            local.append(aware.strftime("%Y-%m-%d %H:%M") if times_as_text else
                         aware.replace(tzinfo=None))  # fmt: skip
        yield [
            site, unit, rack, box, position,
            " / ".join(part for part in (unit, rack, box, position) if part),
            code, check, _KIND[kind], _MATERIAL[material], study, product, coi, pseudonym,
            timepoint, day, float(quantity), quantity_unit, _STATE[state], thaws, *local,
        ]  # fmt: skip


def write_csv(bare: Bare, stream: Any, zone: ZoneInfo) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(EXPORT_HEADER)
    rows = 0
    for cells in export_cells(bare, zone, times_as_text=True):
        writer.writerow(cells)
        rows += 1
    return rows


def write_xlsx(bare: Bare, path: str, zone: ZoneInfo) -> int:
    """openpyxl's write-only workbook, a new sheet past Excel's row limit."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheets = 0

    def new_sheet() -> Any:
        nonlocal sheets
        sheets += 1
        sheet = workbook.create_sheet("Inventory" if sheets == 1 else f"Inventory {sheets}")
        sheet.append(EXPORT_HEADER)
        return sheet

    sheet, rows, in_sheet = new_sheet(), 0, 0
    for cells in export_cells(bare, zone, times_as_text=False):
        if in_sheet == 1_048_575:
            sheet, in_sheet = new_sheet(), 0
        sheet.append(cells)
        rows += 1
        in_sheet += 1
    workbook.save(path)
    return rows


# -- labels ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelDrawing:
    """A cryovial label's fixed geometry, as a hand-written program would hold it: the size,
    where the Data Matrix goes and its module, and where each field is written (field, x,
    baseline, size, bold) -- taken from the LIMS's layout of one label before the clock starts,
    so the baseline draws the same thing. Fonts: the names the LIMS registered."""

    width_mm: float
    height_mm: float
    dpi: int
    barcode_x_mm: float
    barcode_y_mm: float
    module_mm: float
    module_dots: int
    texts: tuple[tuple[str, float, float, float, bool, float], ...]
    frame: tuple[float, float, float, float, float] | None
    fonts: tuple[str, str]


def datamatrix(data: str) -> list[str]:
    """The Data Matrix ECC 200 modules of ``data`` by libdmtx (5 pixels a module, a margin of
    10): each module's centre pixel."""
    with warnings.catch_warnings():  # its version check warns about distutils on import
        warnings.simplefilter("ignore", DeprecationWarning)
        from pylibdmtx import pylibdmtx

    encoded = pylibdmtx.encode(data.encode(), size="SquareAuto", scheme="Ascii")
    step, margin, bpp = 5, 10, encoded.bpp // 8
    count = (encoded.width - 2 * margin) // step
    pixels, width = encoded.pixels, encoded.width
    return [
        "".join(
            "1" if pixels[((margin + r * step + 2) * width + margin + c * step + 2) * bpp] < 128
            else "0"
            for c in range(count)
        )
        for r in range(count)
    ]  # fmt: skip


def labels_pdf(drawing: LabelDrawing, labels: Sequence[dict[str, str]]) -> bytes:
    """One label a page: the symbol's dark runs as one filled path, the fields as text, the box
    around the check character."""
    from reportlab.lib.units import mm
    from reportlab.pdfgen.canvas import Canvas

    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=(drawing.width_mm * mm, drawing.height_mm * mm),
                    invariant=1, pageCompression=1)  # fmt: skip
    top = drawing.height_mm * mm
    module = drawing.module_mm * mm
    x0, y0 = drawing.barcode_x_mm * mm, top - drawing.barcode_y_mm * mm
    for label in labels:
        path = canvas.beginPath()
        for row, line in enumerate(datamatrix(label["barcode"])):
            start = None
            for column, dark in enumerate(line + "0"):
                if dark == "1" and start is None:
                    start = column
                elif dark != "1" and start is not None:
                    path.rect(x0 + start * module, y0 - (row + 1) * module,
                              (column - start) * module, module)  # fmt: skip
                    start = None
        canvas.drawPath(path, stroke=0, fill=1)
        for field, x, baseline, size, bold, _ in drawing.texts:
            canvas.setFont(drawing.fonts[bold], size)
            canvas.drawString(x * mm, top - baseline * mm, label[field])
        if drawing.frame is not None:
            x, y, width, height, line = drawing.frame
            canvas.setLineWidth(line * mm)
            canvas.rect(x * mm, top - (y + height) * mm, width * mm, height * mm, stroke=1, fill=0)
        canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def _zpl_text(text: str) -> str:
    return text.replace("_", "_5F").replace("^", "_5E").replace("~", "_7E")


def labels_zpl(drawing: LabelDrawing, labels: Sequence[dict[str, str]]) -> str:
    """ZPL II, one ``^XA ... ^XZ`` block a label: the printer draws the Data Matrix itself
    (``^BX``), so the program only writes positions in dots and the fields."""
    dpi = drawing.dpi

    def dots(value_mm: float) -> int:
        return round(value_mm * dpi / 25.4)

    head = f"^XA\n^CI28\n^PW{dots(drawing.width_mm)}\n^LL{dots(drawing.height_mm)}\n^LH0,0\n"
    barcode = f"^FO{dots(drawing.barcode_x_mm)},{dots(drawing.barcode_y_mm)}^BXN,"
    barcode += f"{drawing.module_dots},200^FH^FD"
    places = [
        (field, f"^FO{dots(x)},{dots(top)}^A0N,{max(10, round(size * dpi / 72))},"
                f"{max(10, round(size * dpi / 72))}^FH^FD")
        for field, x, _, size, _, top in drawing.texts
    ]  # fmt: skip
    frame = ""
    if drawing.frame is not None:
        x, y, width, height, line = drawing.frame
        thick = max(1, dots(line))
        frame = (f"^FO{dots(x)},{dots(y)}^GB{max(thick, dots(width))},"
                 f"{max(thick, dots(height))},{thick}^FS\n")  # fmt: skip
    blocks = []
    for label in labels:
        text = "".join(f"{place}{_zpl_text(label[field])}^FS\n" for field, place in places)
        blocks.append(f"{head}{barcode}{_zpl_text(label['barcode'])}^FS\n{text}{frame}^PQ1\n^XZ")
    return "\n".join(blocks) + "\n"


# -- the export in a process of its own -----------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The bare inventory export (one JSON line).")
    parser.add_argument("command", choices=("export",))
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--format", choices=("csv", "xlsx"), required=True)
    parser.add_argument("--zone", default="Europe/Copenhagen")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args(argv)
    from lims.db import make_engine

    engine = make_engine(args.database_url)
    bare = Bare(engine)
    zone = ZoneInfo(args.zone)
    if args.format == "xlsx":
        import openpyxl  # noqa: F401 (imported before the idle figure, as the LIMS has it)
    idle = common.memory_mib("VmRSS")
    started = time.perf_counter()
    if args.format == "csv":
        with open(args.output, "w", encoding="utf-8", newline="") as stream:
            rows = write_csv(bare, stream, zone)
    else:
        rows = write_xlsx(bare, args.output, zone)
    seconds = time.perf_counter() - started
    bare.rollback()
    bare.close()
    engine.dispose()
    print(json.dumps(common.export_figures(args.format, seconds, rows, idle, args.output)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
