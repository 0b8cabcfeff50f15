"""The follow-up sampling schedule (DOMAIN.md §5): pure rules, any "today" the test likes."""

import copy
from datetime import date, timedelta

import pytest

from lims.config import load_settings
from lims.errors import ConfigurationError
from lims.followup.domain import (
    PlannedTimepoint,
    TimepointStatus,
    build_schedule,
    check_settings,
    collection_day,
    find_timepoint,
    parse_schedule,
    plan_for,
    yearly_timepoints,
)

KNOWN = {"pbmc", "plasma", "serum", "whole_blood", "dna"}
INFUSED = date(2025, 3, 1)
D7 = PlannedTimepoint("D7", 7, 1, 2, ("pbmc", "plasma"))


def settings(**changes):
    """The shipped [followup] section, changed as the test needs."""
    section = copy.deepcopy(load_settings(environ={})["followup"])
    section.update(changes)
    return section


def one(planned, today, samples=(), infused_on=INFUSED):
    (timepoint,) = build_schedule([planned], infused_on=infused_on, today=today, samples=samples)
    return timepoint


# -- statuses and the window's boundary days ---------------------------------------------------


@pytest.mark.parametrize(
    ("today", "status", "days_overdue"),
    [
        (date(2025, 3, 6), TimepointStatus.UPCOMING, 0),  # the day before the window opens
        (date(2025, 3, 7), TimepointStatus.DUE, 0),  # the window's first day
        (date(2025, 3, 8), TimepointStatus.DUE, 0),  # the due day itself
        (date(2025, 3, 9), TimepointStatus.OVERDUE, 1),  # the day after the due day
        (date(2025, 3, 10), TimepointStatus.OVERDUE, 2),  # the window's last day
        (date(2025, 3, 11), TimepointStatus.MISSED, 3),  # the day after the window closed
    ],
)
def test_status_follows_the_window_day_by_day(today, status, days_overdue):
    timepoint = one(D7, today)
    assert (timepoint.due, timepoint.window_start, timepoint.window_end) == (
        date(2025, 3, 8),
        date(2025, 3, 7),
        date(2025, 3, 10),
    )
    assert timepoint.status is status
    assert timepoint.days_overdue == days_overdue
    assert timepoint.missing == ("pbmc", "plasma")
    assert timepoint.collected == ()


@pytest.mark.parametrize("today", [date(2025, 3, 6), date(2025, 3, 9), date(2025, 4, 30)])
def test_a_timepoint_with_every_type_is_collected_whatever_the_day(today):
    timepoint = one(D7, today, samples=[("D7", "plasma"), ("d7", "pbmc")])
    assert timepoint.status is TimepointStatus.COLLECTED
    assert timepoint.missing == ()
    assert timepoint.days_overdue == 0


def test_a_partly_collected_timepoint_lists_what_is_missing():
    timepoint = one(
        D7,
        date(2025, 3, 9),
        samples=[(" d7 ", "pbmc"), ("D7", "whole_blood"), ("D14", "plasma"), (None, "plasma")],
    )
    assert timepoint.status is TimepointStatus.OVERDUE
    assert timepoint.missing == ("plasma",)  # plasma of D14 or of no timepoint does not count
    assert timepoint.collected == ("pbmc", "whole_blood")  # an extra type is shown, not needed


def test_a_day_zero_timepoint_is_due_on_infusion_day_only():
    d0 = PlannedTimepoint("D0", 0, 0, 0, ("pbmc",))
    assert one(d0, INFUSED - timedelta(days=1)).status is TimepointStatus.UPCOMING
    assert one(d0, INFUSED).status is TimepointStatus.DUE
    assert one(d0, INFUSED + timedelta(days=1)).status is TimepointStatus.MISSED


def test_without_infusion_only_baseline_is_due():
    plan = plan_for(settings(), "")
    schedule = build_schedule(plan.timepoints, infused_on=None, today=date(2025, 1, 10))
    statuses = {t.label: t.status for t in schedule}
    assert statuses.pop("baseline") is TimepointStatus.DUE
    assert set(statuses.values()) == {TimepointStatus.AWAITING_INFUSION}
    assert all(t.due is None and t.window_start is None and t.days_overdue == 0 for t in schedule)


def test_baseline_collected_before_infusion_is_collected():
    plan = plan_for(settings(), "")
    samples = [("Baseline", kind) for kind in ("pbmc", "plasma", "serum")]
    schedule = build_schedule(
        plan.timepoints, infused_on=None, today=date(2025, 1, 10), samples=samples
    )
    assert find_timepoint(schedule, "BASELINE").status is TimepointStatus.COLLECTED


def test_baseline_not_drawn_by_infusion_is_missed():
    baseline = PlannedTimepoint("baseline", -7, 21, 2, ("pbmc",))
    timepoint = one(baseline, INFUSED)
    assert (timepoint.window_start, timepoint.due, timepoint.window_end) == (
        date(2025, 2, 1),
        date(2025, 2, 22),
        date(2025, 2, 24),
    )
    assert timepoint.status is TimepointStatus.MISSED
    assert timepoint.days_overdue == 7


def test_the_default_schedule_has_every_listed_timepoint_in_order():
    schedule = build_schedule(
        plan_for(settings(), None).timepoints, infused_on=INFUSED, today=date(2025, 3, 9)
    )
    labels = [t.label for t in schedule]
    assert labels[:9] == ["baseline", "D0", "D7", "D14", "D21", "D28", "M3", "M6", "M12"]
    statuses = {t.label: t.status for t in schedule}
    assert statuses["baseline"] is TimepointStatus.MISSED
    assert statuses["D0"] is TimepointStatus.MISSED
    assert statuses["D7"] is TimepointStatus.OVERDUE
    assert statuses["D14"] is TimepointStatus.UPCOMING
    m3 = find_timepoint(schedule, "m3")
    assert m3.due == INFUSED + timedelta(days=90)
    assert m3.expected == ("pbmc", "plasma", "serum")


# -- yearly timepoints --------------------------------------------------------------------------


def test_yearly_timepoints_follow_the_last_listed_one_up_to_yearly_until():
    plan = plan_for(settings(), None)
    yearly = [t for t in plan.timepoints if t.label.startswith("Y")]
    assert [t.label for t in yearly] == [f"Y{n}" for n in range(2, 16)]  # M12 is year 1
    y2, y15 = yearly[0], yearly[-1]
    assert (y2.day, y2.before, y2.after, y2.types) == (730, 60, 60, ("pbmc", "plasma", "serum"))
    assert y15.day == 365 * 15


def test_yearly_window_and_types_come_from_the_configuration():
    plan = plan_for(settings(yearly_until=3, yearly_window_days=10, yearly_types=["DNA"]), None)
    yearly = [t for t in plan.timepoints if t.label.startswith("Y")]
    assert [(t.label, t.day, t.before, t.after, t.types) for t in yearly] == [
        ("Y2", 730, 10, 10, ("dna",)),
        ("Y3", 1095, 10, 10, ("dna",)),
    ]
    y2 = one(yearly[0], INFUSED + timedelta(days=730 + 10))
    assert y2.status is TimepointStatus.OVERDUE
    assert one(yearly[0], INFUSED + timedelta(days=730 + 11)).status is TimepointStatus.MISSED


def test_a_short_schedule_gets_yearly_timepoints_from_year_one():
    listed = (PlannedTimepoint("D28", 28, 3, 3, ("pbmc",)),)
    yearly = yearly_timepoints(listed, until=2, window_days=30, types=["pbmc"])
    assert [(t.label, t.day) for t in yearly] == [("Y1", 365), ("Y2", 730)]


def test_no_yearly_timepoints_when_yearly_until_is_zero_or_listed_already():
    assert [t.label for t in plan_for(settings(yearly_until=0), None).timepoints][-1] == "M12"
    listed = (
        PlannedTimepoint("M12", 365, 30, 30, ("pbmc",)),
        PlannedTimepoint("Y3", 300, 0, 0, ("pbmc",)),
    )
    yearly = yearly_timepoints(listed, until=4, window_days=30, types=["pbmc"])
    assert [t.label for t in yearly] == ["Y2", "Y4"]


# -- schedules per protocol ---------------------------------------------------------------------

TRIAL = [
    {"label": "screening", "day": -14, "before": 14, "after": 0, "types": ["whole_blood"]},
    {"label": "D3", "day": 3, "before": 0, "after": 1, "types": ["PBMC"]},
    {"label": "D10", "day": 10, "before": 1, "after": 1, "types": ["pbmc", "serum"]},
]


def test_an_episode_of_a_configured_protocol_gets_its_schedule():
    section = settings(protocols={"CAR19-RH-01": TRIAL}, yearly_until=0)
    plan = plan_for(section, "car19-rh-01 ", known_types=KNOWN)  # as typed on the episode
    assert plan.name == "CAR19-RH-01"
    assert [(t.label, t.day, t.types) for t in plan.timepoints] == [
        ("screening", -14, ("whole_blood",)),
        ("D3", 3, ("pbmc",)),
        ("D10", 10, ("pbmc", "serum")),
    ]
    schedule = build_schedule(plan.timepoints, infused_on=None, today=INFUSED)
    assert [t.status for t in schedule] == [
        TimepointStatus.DUE,  # any pre-infusion draw is due before lymphodepletion
        TimepointStatus.AWAITING_INFUSION,
        TimepointStatus.AWAITING_INFUSION,
    ]
    schedule = build_schedule(plan.timepoints, infused_on=INFUSED, today=date(2025, 3, 6))
    assert [t.status for t in schedule] == [
        TimepointStatus.MISSED,
        TimepointStatus.MISSED,  # D3's window (day 3 to 4) closed yesterday
        TimepointStatus.UPCOMING,
    ]


def test_other_protocols_get_the_default_schedule():
    section = settings(protocols={"CAR19-RH-01": TRIAL})
    for protocol in ("", None, "Some other trial"):
        plan = plan_for(section, protocol)
        assert plan.name == "default"
        assert plan.timepoints[0].label == "baseline"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"day": 7, "types": ["pbmc"]}, "entry 2: 'label' must be a non-empty text"),
        ({"label": "D7", "day": "7", "types": ["pbmc"]}, r"entry 2 \(D7\): 'day' must be"),
        ({"label": "D7", "day": 7.5, "types": ["pbmc"]}, r"entry 2 \(D7\): 'day' must be"),
        ({"label": "D7", "day": 7, "before": -1, "types": ["pbmc"]}, "'before' must be"),
        ({"label": "D7", "day": 7, "after": True, "types": ["pbmc"]}, "'after' must be"),
        ({"label": "D7", "day": 7, "types": []}, r"entry 2 \(D7\): 'types' must be"),
        ({"label": "D7", "day": 7, "types": "pbmc"}, "'types' must be"),
        ({"label": "D7", "day": 7, "types": ["blood"]}, r"unknown material type\(s\) blood"),
        ({"label": "d3", "day": 7, "types": ["pbmc"]}, "the label 'd3' is used twice"),
        ({"label": "D7", "day": 7, "types": ["pbmc"], "window": 3}, r"unknown key\(s\) window"),
        ({"label": "D7-with-a-long-name", "day": 7, "types": ["pbmc"]}, "at most 16"),
        ("D7", "entry 2: a timepoint is a table"),
    ],
)
def test_a_malformed_protocol_schedule_names_the_protocol_and_entry(entry, problem):
    section = settings(protocols={"CAR19-RH-01": [TRIAL[1], entry]})
    with pytest.raises(ConfigurationError, match=problem) as raised:
        plan_for(section, "CAR19-RH-01", known_types=KNOWN)
    assert "followup protocol 'CAR19-RH-01', entry 2" in str(raised.value)


@pytest.mark.parametrize("schedule", [[], {"label": "D7"}, "D7"])
def test_a_protocol_schedule_must_be_a_list_of_timepoints(schedule):
    with pytest.raises(ConfigurationError, match="protocol 'P1': the schedule must be"):
        plan_for(settings(protocols={"P1": schedule}), "P1")


def test_a_malformed_protocol_does_not_disturb_other_episodes_but_fails_the_check():
    section = settings(protocols={"BROKEN": [{"label": "D7"}], "CAR19-RH-01": TRIAL})
    assert plan_for(section, "CAR19-RH-01", known_types=KNOWN).name == "CAR19-RH-01"
    assert plan_for(section, "", known_types=KNOWN).name == "default"
    with pytest.raises(ConfigurationError, match=r"protocol 'BROKEN', entry 1 \(D7\): 'day'"):
        check_settings(section, known_types=KNOWN)


def test_the_shipped_configuration_passes_the_check():
    check_settings(settings(), known_types=KNOWN)


def test_a_malformed_default_schedule_is_named_too():
    with pytest.raises(ConfigurationError, match=r"default_schedule, entry 1 \(D0\): 'day'"):
        parse_schedule([{"label": "D0", "day": None, "types": ["pbmc"]}], name="default_schedule")


def test_unknown_yearly_types_are_refused():
    with pytest.raises(ConfigurationError, match="yearly_types"):
        plan_for(settings(yearly_types=["blood"]), None, known_types=KNOWN)
    with pytest.raises(ConfigurationError, match="yearly_types"):
        plan_for(settings(yearly_types=[]), None)


# -- the day a sample is recorded against -------------------------------------------------------


def test_collection_day_is_relative_to_infusion_or_the_schedules_day():
    assert collection_day(7, INFUSED, date(2025, 3, 9)) == 8
    assert collection_day(-7, INFUSED, date(2025, 2, 27)) == -2
    assert collection_day(-7, None, date(2025, 2, 27)) == -7
