"""A LIMS process that starts one operation and stops half way through its transaction.

The fault tests run ``python -m tests.faults.worker '<job as JSON>'`` from the repository root
and kill it with SIGKILL while it waits. The job names the operation (see :data:`OPERATIONS`),
the database URL, the instance folder, the person who acts, the operation's arguments and
``pause_after``: the number of items after which to stop.

The worker wraps the function its operation calls once per item. After ``pause_after`` calls it
flushes the session (the rows are on the PostgreSQL server, or in SQLite's write-ahead log),
prints one JSON line on stdout (its pid, its PostgreSQL backend pid, what its own uncommitted
transaction sees, the size of SQLite's WAL) and sleeps. It never commits after the pause: if no
one kills it, it leaves without committing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select, text

from lims import create_app
from lims import db as lims_db
from lims.audit.models import AuditEntry, AuditHead
from lims.auth.services import user_by_username
from lims.custody import production
from lims.custody.models import CustodyEvent, Item
from lims.imports import inventory
from lims.storage import services as storage

#: Seconds a paused worker waits to be killed before leaving (without committing).
PAUSE_SECONDS = 300
#: SQLite page cache of the worker, in pages: small, so that the uncommitted pages spill into
#: the write-ahead log before the kill, as they do in a large real transaction.
SQLITE_CACHE_PAGES = 16


def _move_box(session, actor, args: dict[str, Any]) -> Any:
    return storage.move_box(
        session, actor=actor, box_scan=args["box"], unit_code=args["unit"], reason=args["reason"]
    )


def _aliquot(session, actor, args: dict[str, Any]) -> Any:
    return production.aliquot(
        session,
        actor=actor,
        parent_code=args["parent"],
        count=args["count"],
        quantity_each=args["quantity_each"],
        unit=args["unit"],
        material_type=args["material_type"],
    )


def _import(session, actor, args: dict[str, Any]) -> Any:
    path = Path(args["file"])
    return inventory.import_inventory_file(
        session,
        actor=actor,
        data=path.read_bytes(),
        filename=path.name,
        dry_run=False,
        reason=args["reason"],
    )


#: operation → (module, name of the function it calls once per item, how to run it).
OPERATIONS: dict[str, tuple[Any, str, Callable[..., Any]]] = {
    "move_box": (storage, "perform_action", _move_box),
    "aliquot": (production, "add_item", _aliquot),
    "import": (inventory, "perform_action", _import),
}


def transaction_view(session) -> dict[str, int]:
    """What the worker's own transaction sees, uncommitted rows included."""
    return {
        "items": session.scalar(select(func.count()).select_from(Item)),
        "custody_events": session.scalar(select(func.count()).select_from(CustodyEvent)),
        "audit_rows": session.scalar(select(func.count()).select_from(AuditEntry)),
        "audit_head_seq": session.scalar(select(AuditHead.seq).where(AuditHead.id == 1)),
    }


def pause_report(session, calls: int, database: str | None) -> dict[str, Any]:
    report: dict[str, Any] = {"paused_after": calls, "pid": os.getpid()}
    report.update(transaction_view(session))
    if session.get_bind().dialect.name == "postgresql":
        report["backend_pid"] = session.scalar(text("SELECT pg_backend_pid()"))
    else:
        wal = Path(f"{database}-wal")
        report["wal_bytes"] = wal.stat().st_size if wal.exists() else 0
    return report


def pause_in(module: Any, name: str, session, after: int, database: str | None) -> None:
    """Replace ``module.name`` by a wrapper that stops the worker after ``after`` calls."""
    original = getattr(module, name)
    calls = 0

    @wraps(original)
    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        result = original(*args, **kwargs)
        calls += 1
        if calls == after:
            session.flush()
            print(json.dumps(pause_report(session, calls, database)), flush=True)
            time.sleep(PAUSE_SECONDS)
            os._exit(3)  # never go on to the commit
        return result

    setattr(module, name, counted)


def run(job: dict[str, Any]) -> None:
    app = create_app(overrides=job["settings"])
    engine = app.extensions["lims_engine"]
    if engine.dialect.name == "sqlite":
        engine.dispose()  # the pooled connection predates the listener

        def small_cache(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"PRAGMA cache_size={SQLITE_CACHE_PAGES}")

        event.listen(engine, "connect", small_cache)
    module, name, operation = OPERATIONS[job["operation"]]
    with app.app_context():
        session = lims_db.session()
        actor = user_by_username(session, job["actor"])
        if job["pause_after"]:
            pause_in(module, name, session, job["pause_after"], engine.url.database)
        operation(session, actor, job["args"])
    print(json.dumps({"finished": True}), flush=True)


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
