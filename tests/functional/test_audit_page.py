"""The audit page and its CSV export, as a manager, an admin and the roles refused."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from html import unescape
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text

from lims import db as lims_db
from lims.audit import services as audit_services
from lims.audit import views as audit_views
from lims.audit.models import AuditEntry
from lims.auth.models import User
from lims.custody import holds, production
from lims.custody.domain import Action
from lims.custody.services import perform_action
from lims.patients import services as patients
from tests.conftest import csrf_token, log_in
from tests.integration.test_audit_chain import tampering

CPR = "0707614285"  # made up; passes mod 11
NAME = "Karen Hansen"
ROW = re.compile(r'<tr id="audit-(\d+)"')
#: 2024-03-31 00:30 in Copenhagen (CET), still 2024-03-30 in UTC; DST starts at 01:00 UTC.
BEFORE_DST = datetime(2024, 3, 30, 23, 30, tzinfo=UTC)
#: 2024-04-01 00:30 in Copenhagen (CEST), still 2024-03-31 in UTC.
AFTER_DST = datetime(2024, 3, 31, 22, 30, tzinfo=UTC)


@pytest.fixture
def history(app, make_site, make_user, monkeypatch) -> SimpleNamespace:
    """Two collections of one patient, one packed and put on hold, and two site rows written
    at chosen moments around a change to summer time."""
    for moment, code in ((BEFORE_DST, "OLDA"), (AFTER_DST, "OLDB")):
        with monkeypatch.context() as patch:
            patch.setattr(audit_services, "utcnow", lambda moment=moment: moment)
            make_site(code)
    make_site("RH", isbt_fin="W1234")
    people = {role: make_user(role) for role in ("technician", "manager", "researcher", "admin")}
    with app.app_context():
        session = lims_db.session()
        tech = session.get(User, people["technician"].id)
        manager = session.get(User, people["manager"].id)
        patient, _ = patients.register_patient(
            session, actor=tech, identifier=CPR, name=NAME, treating_site_code="RH"
        )
        episode = patients.register_episode(
            session,
            actor=tech,
            pseudonym=patient.pseudonym,
            product_name="Kymriah",
            product_kind="commercial",
        )
        packed, other = (
            production.register_collection(
                session,
                actor=tech,
                coi=episode.coi,
                volume_ml=volume,
                collected_at=lims_db.utcnow() - timedelta(hours=1),
            )
            for volume in (250, 120)
        )
        perform_action(session, actor=tech, code=packed.code, action=Action.PACK)
        hold = holds.place_hold(
            session, actor=manager, item=packed, reason="other", detail="label smudged"
        )
        return SimpleNamespace(
            people=people,
            packed=SimpleNamespace(id=packed.id, code=packed.code),
            other=SimpleNamespace(id=other.id, code=other.code),
            hold_id=hold.id,
        )


def seqs_where(app, *conditions) -> set[int]:
    with app.app_context():
        return set(lims_db.session().scalars(select(AuditEntry.seq).where(*conditions)))


def shown(response) -> list[int]:
    return [int(seq) for seq in ROW.findall(response.get_data(as_text=True))]


def test_manager_sees_every_row_newest_first_without_identities(app, client, history):
    log_in(client, history.people["manager"].username)
    response = client.get("/audit")
    assert response.status_code == 200
    seqs = shown(response)
    assert seqs == sorted(seqs_where(app), reverse=True) and len(seqs) > 10
    page = response.get_data(as_text=True)
    assert "(redacted)" in page
    assert NAME not in page and CPR not in page
    assert "<details>" in page  # the long JSON of a created record is folded


def test_admin_sees_the_page_and_the_navigation_link(client, history):
    log_in(client, history.people["admin"].username)
    page = client.get("/audit")
    assert page.status_code == 200
    assert ">Audit trail</a>" in client.get("/").get_data(as_text=True)


def test_filter_by_item_shows_its_rows_and_its_holds_only(app, client, history):
    log_in(client, history.people["manager"].username)
    response = client.get("/audit", query_string={"item": history.packed.code.lower()})
    assert response.status_code == 200
    expected = seqs_where(
        app, AuditEntry.entity == "item", AuditEntry.entity_id == str(history.packed.id)
    ) | seqs_where(app, AuditEntry.entity == "hold", AuditEntry.entity_id == str(history.hold_id))
    other = seqs_where(
        app, AuditEntry.entity == "item", AuditEntry.entity_id == str(history.other.id)
    )
    assert set(shown(response)) == expected
    assert len(expected) >= 3 and other and not other & expected
    # Rows name the tube by the code on its label, not by a database id.
    assert f"item <code>{history.packed.code}</code>" in response.get_data(as_text=True)


def test_filter_by_user_and_by_action(app, client, history):
    log_in(client, history.people["manager"].username)
    tech = history.people["technician"].username
    by_tech = shown(client.get("/audit", query_string={"username": tech}))
    assert set(by_tech) == seqs_where(app, AuditEntry.actor == tech) != set()
    by_command_line = shown(client.get("/audit", query_string={"username": "command line"}))
    assert set(by_command_line) == seqs_where(app, AuditEntry.actor == "command line")
    assert not set(by_tech) & set(by_command_line)
    packs = shown(client.get("/audit", query_string={"action": "pack"}))
    assert set(packs) == seqs_where(app, AuditEntry.action == "pack") != set()
    page = client.get("/audit").get_data(as_text=True)
    assert '<option value="pack">pack</option>' in page  # actions offered are those present


def test_filter_by_local_dates_across_the_change_to_summer_time(app, client, history):
    log_in(client, history.people["manager"].username)
    before, after = (seqs_where(app, AuditEntry.at == moment) for moment in (BEFORE_DST, AFTER_DST))
    assert before and after

    def days(date_from: str, date_to: str) -> set[int]:
        response = client.get("/audit", query_string={"date_from": date_from, "date_to": date_to})
        assert response.status_code == 200
        return set(shown(response))

    assert days("2024-03-31", "2024-03-31") == before
    assert days("2024-04-01", "2024-04-01") == after
    assert days("2024-03-30", "2024-03-30") == set()
    today = datetime.now(ZoneInfo("Europe/Copenhagen")).date().isoformat()
    assert days(today, "") == seqs_where(app) - before - after


def test_paging_is_newest_first_and_keeps_the_filters(app, client, history, monkeypatch):
    monkeypatch.setattr(audit_views, "PAGE_SIZE", 3)
    log_in(client, history.people["manager"].username)
    created = sorted(seqs_where(app, AuditEntry.action == "create"), reverse=True)
    assert len(created) > 6
    first = client.get("/audit", query_string={"action": "create"})
    assert shown(first) == created[:3]
    older = unescape(re.search(r'href="([^"]*before=[^"]*)"', first.get_data(as_text=True))[1])
    assert "action=create" in older
    second = client.get(older)
    assert shown(second) == created[3:6]
    newer = unescape(re.search(r'href="([^"]*after=[^"]*)"', second.get_data(as_text=True))[1])
    assert "action=create" in newer
    assert shown(client.get(newer)) == created[:3]


def test_csv_export_has_the_header_and_the_filtered_rows_only(app, client, history):
    log_in(client, history.people["manager"].username)
    tech = history.people["technician"].username
    response = client.get("/audit/export.csv", query_string={"username": tech})
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    disposition = response.headers["Content-Disposition"]
    assert re.fullmatch(r"attachment; filename=audit-\d{8}-\d{4}\.csv", disposition)
    body = response.get_data().decode("utf-8-sig")
    # Streamed after the view returned: its session must still end with the download.
    assert app.extensions["lims_engine"].pool.checkedout() == 0
    rows = list(csv.reader(io.StringIO(body)))
    assert tuple(rows[0]) == audit_views.CSV_HEADER
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert [int(r["seq"]) for r in records] == sorted(seqs_where(app, AuditEntry.actor == tech))
    assert {r["actor"] for r in records} == {tech}
    for record in records:
        at_utc = datetime.fromisoformat(record["at_utc"])
        at_local = datetime.fromisoformat(record["at_local"])
        assert at_utc.utcoffset() == timedelta(0)
        assert at_local.utcoffset() in (timedelta(hours=1), timedelta(hours=2))
        assert abs(at_local - at_utc) < timedelta(seconds=1)
    everything = client.get("/audit/export.csv").get_data().decode("utf-8-sig")
    assert len(everything.splitlines()) == len(seqs_where(app)) + 1
    assert NAME not in everything and CPR not in everything


@pytest.mark.parametrize("role", ["technician", "researcher"])
def test_technicians_and_researchers_are_refused(client, history, role):
    log_in(client, history.people[role].username)
    assert client.get("/audit").status_code == 403
    assert client.get("/audit/export.csv").status_code == 403
    token = csrf_token(client, "/")
    assert client.post("/audit/verify", data={"csrf_token": token}).status_code == 403


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ({"date_from": "2024-02-30"}, 422, "Give the date as YYYY-MM-DD"),
        ({"date_to": "31/03/2024"}, 422, "Give the date as YYYY-MM-DD"),
        ({"date_from": "2024-04-02", "date_to": "2024-04-01"}, 422, "end date is before"),
        ({"date_from": "0001-01-01"}, 422, "out of range"),
        ({"date_to": "9999-12-31"}, 422, "out of range"),
        ({"item": "W999926000001"}, 404, "No bag or tube with identifier W999926000001"),
        ({"item": "=<E7393V00"}, 422, "product code, not a bag or tube identifier"),
        ({"action": "no-such-action"}, 422, "Not a valid choice"),
    ],
)
def test_bad_filters_get_a_message_never_a_server_error(client, history, query, status, message):
    log_in(client, history.people["manager"].username)
    for path in ("/audit", "/audit/export.csv"):
        response = client.get(path, query_string=query)
        page = response.get_data(as_text=True)
        assert response.status_code == status, page
        assert response.mimetype == "text/html"
        assert message in unescape(page)
        assert "Traceback" not in page and ROW.search(page) is None


def test_verify_button_flashes_intact(app, client, history):
    log_in(client, history.people["manager"].username)
    token = csrf_token(client, "/audit")
    response = client.post("/audit/verify", data={"csrf_token": token}, follow_redirects=True)
    assert response.status_code == 200
    assert f"Audit trail intact: {len(seqs_where(app))} rows checked." in response.get_data(
        as_text=True
    )


def test_verify_button_names_the_broken_row(app, client, history):
    log_in(client, history.people["admin"].username)
    token = csrf_token(client, "/audit")
    seq = max(seqs_where(app)) - 2
    with tampering(app.extensions["lims_engine"]) as connection:
        connection.execute(
            text("UPDATE audit_entry SET reason = 'edited' WHERE seq = :seq"), {"seq": seq}
        )
    response = client.post(
        "/audit/verify?action=create",
        data={"csrf_token": token},
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/audit?action=create")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert f"Audit trail broken at row {seq} (id " in page
    assert f"row {seq} was altered" in page
