"""Writing rows in bulk: PostgreSQL ``COPY`` through psycopg, or executemany (SQLAlchemy Core
``insert()`` with a list of dicts) elsewhere; and the audit trail's hash chain continued in
Python, row by row, exactly as :func:`lims.audit.services._append` computes it.

Rows are plain dicts keyed by column name, with enum members already as their values; no ORM
object is ever made for them. Every row of a table must carry every column (checked on the
first row), so a column added by a later migration cannot be silently left out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

from psycopg import sql
from sqlalchemy import Table, func, insert, select, text, update
from sqlalchemy.orm import Session

from lims.audit.models import AuditEntry, AuditHead
from lims.audit.services import REDACTED, UNAUDITED, as_text, row_digest

AUDIT = AuditEntry.__table__


class BulkWriter:
    """Buffers rows per table and writes them in batches, parents before children."""

    def __init__(self, session: Session, *, use_copy: bool = True) -> None:
        self.session = session
        self.postgres = session.get_bind().dialect.name == "postgresql"
        self.use_copy = use_copy and self.postgres
        self.counts: dict[str, int] = defaultdict(int)
        self._checked: set[str] = set()

    def write(self, table: Table, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if table.name not in self._checked:
            # Columns left out must be ones the database fills itself (the audit row's id).
            expected = {c.name for c in table.columns} - ({"id"} if "id" not in rows[0] else set())
            if set(rows[0]) != expected:
                missing, extra = expected - set(rows[0]), set(rows[0]) - expected
                raise ValueError(
                    f"{table.name}: missing {sorted(missing)}, unknown {sorted(extra)}"
                )
            self._checked.add(table.name)
        if self.use_copy:
            self._copy(table, rows)
        else:
            self.session.execute(insert(table), rows)
        self.counts[table.name] += len(rows)

    def _copy(self, table: Table, rows: list[dict[str, Any]]) -> None:
        columns = list(rows[0])
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        connection = self.session.connection().connection.driver_connection
        with connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([row[column] for column in columns])

    def next_id(self, table: Table) -> int:
        return (self.session.scalar(select(func.max(table.c.id))) or 0) + 1

    def reset_sequences(self, *tables: Table) -> None:
        """After ids given explicitly: PostgreSQL's sequences go on from the largest."""
        if not self.postgres:
            return  # SQLite takes max(rowid) + 1 by itself
        for table in tables:
            self.session.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "  # noqa: S608
                    f"(SELECT coalesce(max(id), 1) FROM {table.name}))"
                )
            )


def complete(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every column of the table: a nullable column without a default that is
    not given is NULL (as when the application leaves it unset); any other missing column is
    an error, so a column added by a later migration is never written wrong unnoticed."""
    for column in table.columns:
        if column.name in values:
            continue
        if column.nullable and column.default is None and column.server_default is None:
            values[column.name] = None
        elif not (column.primary_key and column.name == "id"):
            raise ValueError(f"{table.name}.{column.name} has no value in the generated rows")
    return values


def created_value(values: dict[str, Any]) -> str:
    """``new_value`` of a ``create`` audit row, as :func:`record_created` writes it."""
    shown = {
        key: ("(redacted)" if key in REDACTED else as_text(value))
        for key, value in values.items()
        if key not in UNAUDITED
    }
    return json.dumps(shown, sort_keys=True, ensure_ascii=False)


class AuditChain:
    """The hash chain continued from the head as it stands; the head is moved by ``save``."""

    def __init__(self, session: Session) -> None:
        head = session.get(AuditHead, 1)
        if head is None:
            raise RuntimeError("the audit chain head is missing: migrate the database first")
        self.session = session
        self.seq, self.last_hash = head.seq, head.last_hash
        self.rows: list[dict[str, Any]] = []

    def created(
        self,
        *,
        at: datetime,
        actor: tuple[int | None, str],
        entity: str,
        values: dict[str, Any],
        reason: str | None,
    ) -> None:
        self.seq += 1
        row = {
            "seq": self.seq,
            "at": at,
            "user_id": actor[0],
            "actor": actor[1],
            "entity": entity,
            "entity_id": str(values["id"]),
            "action": "create",
            "field": None,
            "old_value": None,
            "new_value": created_value(values),
            "reason": reason,
            "prev_hash": self.last_hash,
        }
        content = {key: row[key] for key in row if key != "prev_hash"}
        content["at"] = at.isoformat()
        row["row_hash"] = self.last_hash = row_digest(self.last_hash, content)
        self.rows.append(row)

    def flush(self, writer: BulkWriter) -> None:
        """Write the pending rows and move the head in the same transaction."""
        writer.write(AUDIT, self.rows)
        self.rows = []
        self.session.execute(
            update(AuditHead)
            .where(AuditHead.id == 1)
            .values(seq=self.seq, last_hash=self.last_hash)
        )
