"""Follow-up sampling through the JSON API: an episode's schedule and a site's work list.

Calendar dates of a patient's draws are for the bench only: researchers and administrators
are refused. "Today" is the local date at the site (Europe/Copenhagen by default).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from lims import db as lims_db
from lims.followup import services as followup
from lims.patients import services as patients
from tests.functional.test_api_episode import keys_of, new_episode, new_patient
from tests.functional.test_api_episode import people_of_an_episode as cast


@pytest.fixture
def api(make_site, make_user, token_for, client):
    return cast(make_site, make_user, token_for, client)


@pytest.fixture
def today(app) -> date:
    with app.app_context():
        return followup.local_today()


def local_noon(app, day: date) -> datetime:
    """Noon of a local calendar day at the site, with its offset (safe across DST)."""
    return datetime.combine(day, time(12), tzinfo=ZoneInfo(app.config["LIMS"]["app"]["timezone"]))


def infused(app, coi: str, day: date) -> None:
    """Record the infusion day directly (the full road to infusion is test_api_episode's)."""
    with app.app_context():
        session = lims_db.session()
        patients.get_episode(session, coi).infused_at = local_noon(app, day).astimezone(UTC)
        session.commit()


def overdue_d7(app, api, today: date, *, identifier: str = "0707614285") -> dict:
    """An RH episode infused 8 days ago whose D7 PBMC was drawn yesterday (plasma missing)."""
    episode = new_episode(api, new_patient(api, identifier=identifier))
    infused(app, episode["coi"], today - timedelta(days=8))
    body = {
        "material_type": "pbmc",
        "quantity": 2,
        "unit": "mL",
        "collected_at": local_noon(app, today - timedelta(days=1)).isoformat(),
        "timepoint": "D7",
        "timepoint_day": 7,
    }
    api.tech.ok("post", f"/episodes/{episode['coi']}/samples", body, 201)
    return episode


def test_the_schedule_of_an_infused_episode(app, api, today):
    episode = overdue_d7(app, api, today)
    coi = episode["coi"]
    schedule = api.tech.ok("get", f"/episodes/{coi}{episode['coi_check_character']}/followup")
    assert schedule["coi"] == coi and schedule["pseudonym"] == episode["pseudonym"]
    assert schedule["plan"] == "default" and schedule["sampling_stopped"] is False
    assert schedule["infused_on"] == (today - timedelta(days=8)).isoformat()
    assert schedule["today"] == today.isoformat()
    assert set(schedule) == keys_of(api, "FollowupSchedule")
    by_label = {timepoint["label"]: timepoint for timepoint in schedule["timepoints"]}
    d7 = by_label["D7"]
    assert set(d7) == keys_of(api, "ScheduledTimepoint")
    assert d7 == {
        "label": "D7",
        "day": 7,
        "due": (today - timedelta(days=1)).isoformat(),
        "window_start": (today - timedelta(days=2)).isoformat(),  # 1 day before
        "window_end": (today + timedelta(days=1)).isoformat(),  # 2 days after
        "status": "overdue",
        "days_overdue": 1,
        "expected": ["pbmc", "plasma"],
        "collected": ["pbmc"],
        "missing": ["plasma"],
    }
    assert by_label["D0"]["status"] == "missed" and by_label["D14"]["status"] == "upcoming"
    assert [t["day"] for t in schedule["timepoints"]] == sorted(
        t["day"] for t in schedule["timepoints"]
    )
    assert api.manager.ok("get", f"/episodes/{coi}/followup")["coi"] == coi
    assert api.other_tech.ok("get", f"/episodes/{coi}/followup")["coi"] == coi  # the bench


def test_an_episode_not_yet_infused_has_no_dates(api):
    coi = new_episode(api, new_patient(api))["coi"]
    schedule = api.tech.ok("get", f"/episodes/{coi}/followup")
    assert schedule["infused_on"] is None
    after = [t for t in schedule["timepoints"] if t["day"] >= 0]
    assert after and all(t["due"] is None and t["window_end"] is None for t in after)
    assert {t["status"] for t in after} == {"awaiting_infusion"}


def test_the_work_list_of_a_site(app, api, today):
    episode = overdue_d7(app, api, today)
    work = api.tech.ok("get", "/followup")
    assert work["site"] == "RH" and work["today"] == today.isoformat()
    assert set(work) == keys_of(api, "Worklist")
    (row,) = work["overdue"]
    assert set(row) == keys_of(api, "WorklistRow")
    assert row == {
        "pseudonym": episode["pseudonym"],
        "coi": episode["coi"],
        "coi_check_character": episode["coi_check_character"],
        "product_name": "Kymriah",
        "timepoint": "D7",
        "day": 7,
        "status": "overdue",
        "due": (today - timedelta(days=1)).isoformat(),
        "window_end": (today + timedelta(days=1)).isoformat(),
        "days_overdue": 1,
        "missing": ["plasma"],
    }
    assert work["due"] == []
    assert {r["timepoint"] for r in work["missed"]} == {"baseline", "D0"}
    assert all(r["status"] == "missed" for r in work["missed"])

    assert api.manager.ok("get", "/followup?site=rh") == work
    elsewhere = api.manager.ok("get", "/followup?site=OUH")
    assert elsewhere["site"] == "OUH" and elsewhere["overdue"] == elsewhere["missed"] == []
    assert api.other_tech.ok("get", "/followup")["overdue"] == []  # OUH's own list
    refused = api.tech.get("/followup?site=OUH")
    assert refused.status_code == 403 and "own site" in refused.json["message"]
    assert api.manager.get("/followup?site=ZZ").status_code == 404
    assert api.manager.get("/followup?site=R%00H").status_code == 422


def test_withdrawn_consent_stops_sampling(app, api, today):
    episode = overdue_d7(app, api, today)
    api.tech.ok(
        "post",
        f"/patients/{episode['pseudonym']}/consent",
        {"biobank": False, "genetic": False, "withdrawn": True, "reason": "letter of 3 March"},
    )
    work = api.tech.ok("get", "/followup")
    assert work["overdue"] == work["missed"] == work["due"] == []
    schedule = api.tech.ok("get", f"/episodes/{episode['coi']}/followup")
    assert schedule["sampling_stopped"] is True


def test_researchers_and_administrators_get_no_calendar_dates(app, api, today):
    episode = overdue_d7(app, api, today)
    for person in (api.researcher, api.admin):
        for path in ("/followup", f"/episodes/{episode['coi']}/followup"):
            response = person.get(path)
            assert response.status_code == 403 and response.is_json, path
            assert episode["pseudonym"] not in response.get_data(as_text=True)
    assert api.tech.get("/episodes/CHW123425999999/followup").status_code == 404
