"""Append-only tables: the ORM refuses to update or delete their rows.

PostgreSQL refuses it too, with triggers created by the migrations (see
``APPEND_ONLY_TABLES``), so a stray UPDATE from a console fails as well.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Mapper

#: Tables whose rows are never changed or removed once written.
APPEND_ONLY_TABLES = ("audit_entry", "custody_event", "e_signature")


class AppendOnlyViolation(RuntimeError):
    pass


def _refuse(mapper: Mapper, _connection: Any, target: Any) -> None:
    raise AppendOnlyViolation(f"{mapper.persist_selectable.name} rows cannot be changed or deleted")


def protect(*models: type) -> None:
    for model in models:
        if not event.contains(model, "before_update", _refuse):
            event.listen(model, "before_update", _refuse)
            event.listen(model, "before_delete", _refuse)
