"""The follow-up sampling schedule of an episode (DOMAIN.md §5): pure rules, no Flask, no DB.

A schedule is read from configuration (the default one or the episode's protocol's), checked
entry by entry, extended by yearly timepoints, and laid over the calendar from the infusion
date. "Today" is always a parameter: the pages pass the local date at the site, the tests any
date they like.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from typing import Any

from lims.errors import ConfigurationError

#: Item.timepoint is a String(16): a longer label could never be recorded on a sample.
MAX_LABEL_LENGTH = 16
DEFAULT_SCHEDULE = "default"


class TimepointStatus(StrEnum):
    """Where a timepoint stands on a given day, most actionable first in the work list."""

    OVERDUE = "overdue"
    DUE = "due"
    MISSED = "missed"
    UPCOMING = "upcoming"
    AWAITING_INFUSION = "awaiting_infusion"
    COLLECTED = "collected"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


#: The statuses from which a sample may be registered against the timepoint.
OPEN_STATUSES = frozenset({TimepointStatus.DUE, TimepointStatus.OVERDUE})
LATE_STATUSES = frozenset({TimepointStatus.OVERDUE, TimepointStatus.MISSED})


@dataclass(frozen=True)
class PlannedTimepoint:
    """One line of a schedule: a day relative to infusion (day 0) and its window."""

    label: str
    day: int
    before: int
    after: int
    types: tuple[str, ...]

    @property
    def before_infusion(self) -> bool:
        """Baseline and other pre-infusion draws are taken before lymphodepletion."""
        return self.day < 0 or self.label.casefold() == "baseline"


@dataclass(frozen=True)
class Plan:
    """The timepoints an episode is expected to have, and which schedule they came from."""

    name: str
    timepoints: tuple[PlannedTimepoint, ...]


@dataclass(frozen=True)
class ScheduledTimepoint:
    """A planned timepoint laid over the calendar, with what was collected for it."""

    label: str
    day: int
    #: The window in days either side of ``day``.
    before: int
    after: int
    #: Calendar dates; None while the episode has no infusion date.
    due: date | None
    window_start: date | None
    window_end: date | None
    expected: tuple[str, ...]
    collected: tuple[str, ...]
    missing: tuple[str, ...]
    status: TimepointStatus
    #: Days since the due day for overdue and missed timepoints, 0 otherwise.
    days_overdue: int

    @property
    def open(self) -> bool:
        return self.status in OPEN_STATUSES


# -- reading the configuration -----------------------------------------------------------------


def _whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(
    entry: Any, *, fail: Callable[[str], ConfigurationError], known_types: Collection[str] | None
) -> PlannedTimepoint:
    if not isinstance(entry, dict):
        raise fail("a timepoint is a table {label, day, before, after, types}")
    unknown = set(entry) - {"label", "day", "before", "after", "types"}
    if unknown:
        raise fail(f"unknown key(s) {', '.join(sorted(unknown))}")
    label = entry.get("label")
    if not isinstance(label, str) or not label.strip():
        raise fail("'label' must be a non-empty text")
    if len(label.strip()) > MAX_LABEL_LENGTH:
        raise fail(f"'label' is at most {MAX_LABEL_LENGTH} characters")
    day = entry.get("day")
    if not _whole_number(day):
        raise fail("'day' must be a whole number of days relative to infusion")
    window = []
    for key in ("before", "after"):
        value = entry.get(key, 0)
        if not _whole_number(value) or value < 0:
            raise fail(f"'{key}' must be a whole number of days ≥ 0")
        window.append(value)
    types = entry.get("types")
    if (
        not isinstance(types, list)
        or not types
        or not all(isinstance(t, str) and t.strip() for t in types)
    ):
        raise fail("'types' must be a non-empty list of material types")
    cleaned = tuple(dict.fromkeys(t.strip().lower() for t in types))
    if known_types is not None:
        unknown_types = [t for t in cleaned if t not in known_types]
        if unknown_types:
            raise fail(
                f"unknown material type(s) {', '.join(unknown_types)}; "
                f"known: {', '.join(sorted(known_types))}"
            )
    return PlannedTimepoint(label.strip(), day, window[0], window[1], cleaned)


def parse_schedule(
    entries: Any, *, name: str, known_types: Collection[str] | None = None
) -> tuple[PlannedTimepoint, ...]:
    """Check a configured schedule and return its timepoints in day order.

    ``name`` says where the schedule came from (``default_schedule`` or ``protocol 'X'``) and
    is part of every error, with the entry's position and label, so an administrator can find
    the line at fault.
    """
    where = f"followup {name}"
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"{where}: the schedule must be a non-empty list of timepoints")
    timepoints: list[PlannedTimepoint] = []
    for number, entry in enumerate(entries, start=1):
        label = entry.get("label") if isinstance(entry, dict) else None
        entry_name = f"entry {number}" + (f" ({label})" if isinstance(label, str) else "")

        def fail(problem: str, entry_name: str = entry_name) -> ConfigurationError:
            return ConfigurationError(f"{where}, {entry_name}: {problem}")

        timepoint = _entry(entry, fail=fail, known_types=known_types)
        if any(t.label.casefold() == timepoint.label.casefold() for t in timepoints):
            raise fail(f"the label '{timepoint.label}' is used twice")
        timepoints.append(timepoint)
    return tuple(sorted(timepoints, key=lambda t: t.day))


def yearly_timepoints(
    listed: Sequence[PlannedTimepoint], *, until: int, window_days: int, types: Sequence[str]
) -> tuple[PlannedTimepoint, ...]:
    """One timepoint a year after the last listed one (Yn at day 365·n), up to year ``until``."""
    if until < 1 or not listed:
        return ()
    if not _whole_number(window_days) or window_days < 0:
        raise ConfigurationError("followup yearly_window_days must be a whole number ≥ 0")
    yearly_types = tuple(dict.fromkeys(str(t).strip().lower() for t in types if str(t).strip()))
    if not yearly_types:
        raise ConfigurationError("followup yearly_types must name at least one material type")
    last_day = max(t.day for t in listed)
    taken = {t.label.casefold() for t in listed}
    first_year = max(1, last_day // 365 + 1)
    return tuple(
        PlannedTimepoint(f"Y{year}", 365 * year, window_days, window_days, yearly_types)
        for year in range(first_year, until + 1)
        if f"y{year}" not in taken
    )


def protocol_key(protocols: Mapping[str, Any], protocol: str | None) -> str | None:
    """The configured protocol the episode's protocol names (exact, else ignoring case)."""
    wanted = (protocol or "").strip()
    if not wanted:
        return None
    if wanted in protocols:
        return wanted
    matches = [key for key in protocols if key.strip().casefold() == wanted.casefold()]
    return matches[0] if matches else None


def plan_for(
    settings: Mapping[str, Any], protocol: str | None, *, known_types: Collection[str] | None = None
) -> Plan:
    """The schedule of an episode with this protocol: the protocol's own or the default one.

    ``settings`` is the ``followup`` section of the configuration. Raises ConfigurationError
    naming the protocol and the entry when the schedule is malformed.
    """
    protocols = settings.get("protocols") or {}
    key = protocol_key(protocols, protocol)
    if key is None:
        name = DEFAULT_SCHEDULE
        listed = parse_schedule(
            settings["default_schedule"], name="default_schedule", known_types=known_types
        )
    else:
        name = key
        listed = parse_schedule(protocols[key], name=f"protocol '{key}'", known_types=known_types)
    yearly = yearly_timepoints(
        listed,
        until=settings.get("yearly_until", 0),
        window_days=settings.get("yearly_window_days", 0),
        types=settings.get("yearly_types", ()),
    )
    if known_types is not None:
        unknown = sorted({t for tp in yearly for t in tp.types} - set(known_types))
        if unknown:
            raise ConfigurationError(f"followup yearly_types: unknown material type(s) {unknown}")
    return Plan(name, listed + yearly)


def check_settings(settings: Mapping[str, Any], *, known_types: Collection[str]) -> None:
    """Check the default schedule and every protocol's (at start-up)."""
    plan_for(settings, None, known_types=known_types)
    for key in settings.get("protocols") or {}:
        plan_for(settings, key, known_types=known_types)


# -- laying the schedule over the calendar ------------------------------------------------------


def collected_by_label(samples: Iterable[tuple[str | None, str]]) -> dict[str, set[str]]:
    """Material types per timepoint label (compared ignoring case) from (label, type) pairs."""
    found: dict[str, set[str]] = {}
    for label, material in samples:
        if label and label.strip():
            found.setdefault(label.strip().casefold(), set()).add(str(material))
    return found


def _status(
    planned: PlannedTimepoint, missing: tuple[str, ...], infused_on: date | None, today: date
) -> tuple[TimepointStatus, date | None, date | None, date | None, int]:
    """Status, due date, window start and end, and days overdue of one timepoint."""
    if infused_on is None:
        if not missing:
            status = TimepointStatus.COLLECTED
        elif planned.before_infusion:
            status = TimepointStatus.DUE  # drawn before lymphodepletion, whenever that is
        else:
            status = TimepointStatus.AWAITING_INFUSION
        return status, None, None, None, 0
    due = infused_on + timedelta(days=planned.day)
    start = due - timedelta(days=planned.before)
    end = due + timedelta(days=planned.after)
    if not missing:
        status = TimepointStatus.COLLECTED
    elif today < start:
        status = TimepointStatus.UPCOMING
    elif today <= due:
        status = TimepointStatus.DUE
    elif today <= end:
        status = TimepointStatus.OVERDUE
    else:
        status = TimepointStatus.MISSED
    late = (today - due).days if status in LATE_STATUSES else 0
    return status, due, start, end, late


def build_schedule(
    timepoints: Sequence[PlannedTimepoint],
    *,
    infused_on: date | None,
    today: date,
    samples: Iterable[tuple[str | None, str]] = (),
) -> list[ScheduledTimepoint]:
    """Each timepoint with its dates, the types collected and missing, and its status today.

    ``samples`` are (timepoint label, material type) of the episode's samples, in any state:
    a discarded or lost tube was still drawn.
    """
    found = collected_by_label(samples)
    schedule = []
    for planned in timepoints:
        have = found.get(planned.label.casefold(), set())
        missing = tuple(t for t in planned.types if t not in have)
        collected = tuple(t for t in planned.types if t in have) + tuple(
            sorted(have - set(planned.types))
        )
        status, due, start, end, days_overdue = _status(planned, missing, infused_on, today)
        schedule.append(
            ScheduledTimepoint(
                label=planned.label,
                day=planned.day,
                before=planned.before,
                after=planned.after,
                due=due,
                window_start=start,
                window_end=end,
                expected=planned.types,
                collected=collected,
                missing=missing,
                status=status,
                days_overdue=days_overdue,
            )
        )
    return schedule


def find_timepoint(schedule: Sequence[ScheduledTimepoint], label: str) -> ScheduledTimepoint | None:
    wanted = (label or "").strip().casefold()
    return next((t for t in schedule if t.label.casefold() == wanted), None)


def collection_day(planned_day: int, infused_on: date | None, collected_on: date) -> int:
    """The day relative to infusion a sample was drawn on (the planned day before infusion)."""
    if infused_on is None:
        return planned_day
    return (collected_on - infused_on).days
