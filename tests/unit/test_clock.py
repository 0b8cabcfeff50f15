"""The replayed clock the demo loads history with."""

import threading
from datetime import UTC, datetime, timedelta, timezone

from lims.db import replayed_time, utcnow


def test_replayed_time_applies_inside_the_block_only():
    then = datetime(2026, 1, 5, 9, 30, tzinfo=timezone(timedelta(hours=1)))
    with replayed_time(then):
        assert utcnow() == datetime(2026, 1, 5, 8, 30, tzinfo=UTC)
        assert utcnow().tzinfo is UTC
    assert abs(utcnow() - datetime.now(UTC)) < timedelta(seconds=5)


def test_other_threads_keep_the_real_clock():
    seen = []
    with replayed_time(datetime(2020, 1, 1, tzinfo=UTC)):
        worker = threading.Thread(target=lambda: seen.append(utcnow()))
        worker.start()
        worker.join()
    assert seen[0].year >= 2026
