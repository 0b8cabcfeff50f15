"""The follow-up pages through the test client: the work list, the schedule, registering."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from lims import create_app
from lims import db as lims_db
from lims.audit.models import AuditEntry
from lims.custody.models import Item
from lims.custody.production import register_sample
from lims.errors import ConfigurationError
from lims.followup import services
from lims.identifiers import coi_check_character, eye_readable
from lims.patients import services as patients
from tests.conftest import csrf_token, log_in, settings_for
from tests.integration.people import actor, build_cast, cpr, new_episode


@pytest.fixture
def people(app, make_site, make_user):
    return build_cast(make_site, make_user)


def signed_in(app, person):
    """A client of its own, logged in as ``person``."""
    client = app.test_client()
    assert log_in(client, person.username).status_code == 302
    return client


def local_noon(app, days_ago: int) -> datetime:
    """Noon at the site ``days_ago`` local days before today, as UTC (safe across DST)."""
    zone = ZoneInfo(app.config["LIMS"]["app"]["timezone"])
    with app.app_context():
        day = services.local_today() - timedelta(days=days_ago)
    return datetime.combine(day, time(12), tzinfo=zone).astimezone(UTC)


def a_minute_ago(app) -> str:
    """The local time a minute ago as a datetime-local input sends it."""
    zone = ZoneInfo(app.config["LIMS"]["app"]["timezone"])
    return (datetime.now(UTC) - timedelta(minutes=1)).astimezone(zone).strftime("%Y-%m-%dT%H:%M")


def overdue_d7(app, people, *, n: int = 1, site: str = "RH") -> dict:
    """An episode infused 8 local days ago (D7 overdue by a day) whose D7 PBMC is drawn."""
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech" if site == "RH" else "elsewhere"])
        if site == "RH":
            episode = new_episode(session, tech, n=n)
        else:
            patient, _ = patients.register_patient(
                session, actor=tech, identifier=cpr(n), name=f"P {n}", treating_site_code=site
            )
            episode = patients.register_episode(
                session,
                actor=tech,
                pseudonym=patient.pseudonym,
                product_name="Kymriah",
                product_kind="commercial",
            )
        episode.infused_at = local_noon(app, 8)
        session.commit()
        register_sample(
            session,
            actor=tech,
            coi=episode.coi,
            material_type="pbmc",
            quantity=2,
            unit="mL",
            collected_at=local_noon(app, 1),
            timepoint="D7",
            timepoint_day=7,
        )
        return {"coi": episode.coi, "pseudonym": episode.patient.pseudonym}


def section(page: str, key: str) -> str:
    match = re.search(rf'<section class="panel" id="{key}">(.*?)</section>', page, re.S)
    assert match, f"no section {key}"
    return unescape(match.group(1))


def text(response) -> str:
    return response.get_data(as_text=True)


def test_the_overdue_list_shows_the_episode_and_timepoint(app, people):
    episode = overdue_d7(app, people)
    page = text(signed_in(app, people["tech"]).get("/followup"))
    overdue = section(page, "overdue")
    assert episode["pseudonym"] in overdue
    assert episode["coi"] in overdue
    printed, check = eye_readable(episode["coi"]), coi_check_character(episode["coi"])
    box = '<span class="check-char" title="check character">'
    assert f"<code>{printed}</code> {box}{check}</span>" in overdue
    row = next(r for r in overdue.split("<tr>") if "<strong>D7</strong>" in r)
    assert "Plasma" in row and "PBMC" not in row  # only what is missing
    assert f"/followup/{episode['coi']}?timepoint=D7#register" in row
    assert "<strong>D0</strong>" in section(page, "missed")
    assert "Nothing is due now." in section(page, "due")
    assert re.search(r"<strong>1</strong> overdue", page)
    assert "Content-Security-Policy" in signed_in(app, people["tech"]).get("/followup").headers


def test_registering_a_sample_from_the_page_clears_the_overdue_timepoint(app, people):
    episode = overdue_d7(app, people)
    client = signed_in(app, people["tech"])
    form_page = text(client.get(f"/followup/{episode['coi']}?timepoint=D7"))
    options = re.search(r'<select[^>]*name="material_type"[^>]*>(.*?)</select>', form_page, re.S)
    assert re.findall(r'value="([^"]+)"', options.group(1)) == ["plasma"]
    collected = re.search(r'name="collected_at"[^>]*value="([^"]+)"', form_page).group(1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d", collected)  # now, local, by default
    response = client.post(
        f"/followup/{episode['coi']}/samples",
        data={
            "csrf_token": csrf_token(client, f"/followup/{episode['coi']}"),
            "timepoint": "D7",
            "material_type": "plasma",
            "quantity": "1.5",
            "unit": "mL",
            "collected_at": collected,
            "cell_count": "",
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/followup/{episode['coi']}")
    with app.app_context():
        session = lims_db.session()
        sample = session.scalar(
            select(Item).where(Item.timepoint == "D7", Item.material_type == "plasma")
        )
        assert sample.episode.coi == episode["coi"]
        assert sample.timepoint_day == 8
        (audit_row,) = session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity == "item",
                AuditEntry.entity_id == str(sample.id),
                AuditEntry.action == "create",
            )
        )
        assert audit_row.actor == people["tech"].username
        code = sample.code
    schedule = text(client.get(f"/followup/{episode['coi']}"))
    assert f"Sample {code} (Plasma, D7, day 8) registered." in unescape(schedule)
    d7 = re.search(r'<tr id="tp-D7".*?</tr>', schedule, re.S).group(0)
    assert "collected" in d7 and "Register sample" not in d7
    assert "<strong>D7</strong>" not in section(text(client.get("/followup")), "overdue")


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"material_type": "serum"}, 422, "Not a valid choice"),
        ({"quantity": "a lot"}, 422, "Not a valid decimal value"),
        ({"quantity": "0"}, 422, "The quantity is a positive number."),
        ({"collected_at": "yesterday"}, 422, "Not a valid datetime value"),
        ({"cell_count": "-4"}, 422, "A cell count is a whole number"),
        ({"cell_count": "1000"}, 422, "Plasma has no cell count."),
        ({"collected_at": "2001-01-01T10:00"}, 422, "does not belong to it"),
    ],
)
def test_bad_input_re_renders_the_form_with_a_message(app, people, fields, status, message):
    episode = overdue_d7(app, people)
    client = signed_in(app, people["tech"])
    data = {
        "csrf_token": csrf_token(client, f"/followup/{episode['coi']}"),
        "timepoint": "D7",
        "material_type": "plasma",
        "quantity": "1",
        "unit": "mL",
        "collected_at": a_minute_ago(app),
    } | fields
    response = client.post(f"/followup/{episode['coi']}/samples", data=data)
    assert response.status_code == status
    page = unescape(text(response))
    assert message in page
    assert 'id="register"' in page  # the form is still there, with what was typed
    with app.app_context():
        assert lims_db.session().scalar(select(Item).where(Item.material_type == "plasma")) is None


def test_a_timepoint_that_is_not_open_cannot_be_registered(app, people):
    episode = overdue_d7(app, people)
    client = signed_in(app, people["tech"])
    token = csrf_token(client, f"/followup/{episode['coi']}")
    for label, message in (("D14", "D14 is upcoming"), ("D99", "has no timepoint 'D99'")):
        response = client.post(
            f"/followup/{episode['coi']}/samples",
            data={"csrf_token": token, "timepoint": label, "material_type": "pbmc"},
            follow_redirects=True,
        )
        assert response.status_code == 200
        assert message in unescape(text(response))
    response = client.get(f"/followup/{episode['coi']}?timepoint=D14")
    assert response.status_code == 409
    assert 'id="register"' not in text(response)
    assert client.get("/followup/CHW1234250000ZZ").status_code == 404


def test_consent_withdrawn_stops_sampling_on_the_pages(app, people):
    episode = overdue_d7(app, people)
    with app.app_context():
        session = lims_db.session()
        patients.record_consent(
            session,
            actor=actor(session, people["tech"]),
            pseudonym=episode["pseudonym"],
            biobank=False,
            genetic=False,
            withdrawn=True,
            reason="patient asked",
        )
    client = signed_in(app, people["tech"])
    assert episode["coi"] not in text(client.get("/followup"))
    page = text(client.get(f"/followup/{episode['coi']}"))
    assert "follow-up sampling has stopped" in page
    assert "Register sample" not in page


def test_managers_choose_the_site_technicians_see_their_own(app, people):
    theirs = overdue_d7(app, people, n=2, site="OUH")
    manager = signed_in(app, people["manager"])
    page = text(manager.get("/followup?site=OUH"))
    assert "Follow-up sampling at OUH" in page
    assert theirs["coi"] in section(page, "overdue")
    assert theirs["coi"] not in text(manager.get("/followup"))
    tech = signed_in(app, people["tech"])
    assert 'name="site"' not in text(tech.get("/followup"))
    assert tech.get("/followup?site=OUH").status_code == 403


@pytest.mark.parametrize("person", ["researcher", "admin"])
def test_researchers_and_admins_get_403(app, people, person):
    episode = overdue_d7(app, people)
    client = signed_in(app, people[person])
    assert client.get("/followup").status_code == 403
    assert client.get(f"/followup/{episode['coi']}").status_code == 403
    response = client.post(
        f"/followup/{episode['coi']}/samples",
        data={"csrf_token": csrf_token(client, "/"), "timepoint": "D7"},
    )
    assert response.status_code == 403
    assert episode["pseudonym"] not in text(response)


def test_the_application_does_not_start_with_a_malformed_protocol(database_url, tmp_path):
    overrides = settings_for(database_url, str(tmp_path / "instance"))
    overrides["followup"] = {
        "protocols": {"CAR19-RH-01": [{"label": "D7", "day": 7, "types": ["pbmc", "blood"]}]}
    }
    with pytest.raises(ConfigurationError, match=r"protocol 'CAR19-RH-01', entry 1 \(D7\)"):
        create_app(overrides=overrides)
