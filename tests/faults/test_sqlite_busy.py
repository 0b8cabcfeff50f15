"""SQLite has one write lock: a writer that finds it taken waits (busy_timeout) instead of
failing at once. 50 busy users of the load benchmark held it past the old 5 s now and then, and
some steps were refused with 503; a writer now waits up to 15 s."""

from __future__ import annotations

import threading
import time

from lims import db as lims_db


def test_a_writer_waits_longer_than_five_seconds_for_the_write_lock(tmp_path):
    engine = lims_db.make_engine(f"sqlite:///{tmp_path / 'busy.sqlite'}")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE tally (n INTEGER)")
        taken, released = threading.Event(), threading.Event()

        def hold_the_lock() -> None:
            with engine.connect() as holder:
                holder.exec_driver_sql("BEGIN IMMEDIATE")
                taken.set()
                time.sleep(6)
                holder.exec_driver_sql("INSERT INTO tally VALUES (1)")
                holder.exec_driver_sql("COMMIT")
                released.set()

        thread = threading.Thread(target=hold_the_lock)
        thread.start()
        assert taken.wait(30)
        try:
            with engine.begin() as connection:
                timeout = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
                connection.exec_driver_sql("INSERT INTO tally VALUES (2)")
        finally:
            thread.join(30)
        # The second writer got in only after the first had committed, without an error.
        assert released.is_set()
        assert timeout == lims_db.SQLITE_BUSY_TIMEOUT_MS > 6000
        with engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT n FROM tally ORDER BY rowid").scalars()
            assert list(rows) == [1, 2]
    finally:
        engine.dispose()
