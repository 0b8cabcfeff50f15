"""The bench scan page and the bedside check screen through the test client."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.custody import holds, production
from lims.custody.domain import Action, State
from lims.custody.models import BedsideCheck, CustodyEvent, HoldReason, Item
from lims.custody.services import perform_action
from lims.identifiers import eye_readable
from lims.shipments import services as shipping
from tests.conftest import PASSWORD, csrf_token, log_in
from tests.integration.people import actor, build_cast, cpr, new_episode
from tests.integration.test_custody_services import issued_bag, quarantined_lot


@pytest.fixture
def people(app, make_site, make_user):
    return build_cast(make_site, make_user)


def collection(app, people, n: int = 1) -> SimpleNamespace:
    """A new apheresis collection of patient n at RH, as plain values."""
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech, n=n)
        item = production.register_collection(
            session, actor=tech, coi=episode.coi, volume_ml=200, collected_at=lims_db.utcnow()
        )
        return SimpleNamespace(
            code=item.code, check=item.check_character, coi=episode.coi, id=item.id
        )


def thawed_bag(app, people, n: int = 1) -> SimpleNamespace:
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech, n=n)
        bag = issued_bag(app, session, people, episode)
        perform_action(session, actor=tech, code=bag.code, action=Action.THAW)
        return SimpleNamespace(code=bag.code, coi=episode.coi, check=episode.coi_check)


def events_of(app, code: str, action: str | None = None) -> list[str]:
    with app.app_context():
        session = lims_db.session()
        query = select(CustodyEvent.action).join(Item).where(Item.code == code)
        if action:
            query = query.where(CustodyEvent.action == action)
        return list(session.scalars(query.order_by(CustodyEvent.id)))


def state_of(app, code: str) -> State:
    with app.app_context():
        return lims_db.session().scalar(select(Item.state).where(Item.code == code))


def post(client, path: str, **data):
    return client.post(path, data={"csrf_token": csrf_token(client, "/scan"), **data})


def test_a_scan_shows_the_item_card_with_its_steps(app, client, people):
    item = collection(app, people)
    log_in(client, people["tech"].username)
    page = client.get("/scan", query_string={"code": f"={item.code}00"})
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert item.code in text and item.coi in text and "collected" in text
    box = '<span class="check-char" title="check character">'
    assert f"<code>{eye_readable(item.code)}</code> {box}{item.check}</span>" in text
    for step in ("Pack", "Ship: new shipment", "Store…", "Discard…"):
        assert step in text, step
    assert "Release" not in text  # not a step for apheresis
    assert "data-scan-field" in text and "autofocus" in text


@pytest.mark.parametrize(
    ("scan", "status", "message"),
    [
        ("NOSUCHCODE", 404, "No bag or tube with identifier"),
        ("=<S1234V00", 422, "not a bag or tube identifier"),
        ("W123426000001", 422, "check character"),
        ("", 200, ""),
    ],
)
def test_every_scan_error_is_shown_loudly(app, client, people, scan, status, message):
    collection(app, people)
    log_in(client, people["tech"].username)
    page = client.get("/scan", query_string={"code": scan})
    assert page.status_code == status
    text = page.get_data(as_text=True)
    if message:
        assert message in text and 'role="alert" data-alert' in text
        assert "autofocus" in text  # the scan field has the focus again


def test_a_hold_is_shown_on_the_card(app, client, people):
    item = collection(app, people)
    with app.app_context():
        session = lims_db.session()
        holds.place_hold(
            session,
            actor=actor(session, people["tech"]),
            item=session.get(Item, item.id),
            reason=HoldReason.OTHER,
            detail="bag leaking at the port",
        )
    log_in(client, people["tech"].username)
    text = client.get("/scan", query_string={"code": f"={item.code}00"}).get_data(as_text=True)
    assert "ON HOLD" in text and "bag leaking at the port" in text


def test_researchers_and_admins_have_no_bench(client, make_user):
    for role in ("researcher", "admin"):
        user = make_user(role)
        log_in(client, user.username)
        assert client.get("/scan").status_code == 403
        assert client.get("/bedside").status_code == 403
        client.post("/logout", data={"csrf_token": csrf_token(client, "/")})


def test_a_double_scan_within_the_window_records_one_event(app, client, people):
    item = collection(app, people)
    log_in(client, people["tech"].username)
    post(client, "/scan/mode", mode="pack")
    first = post(client, "/scan", code=f"={item.code}00")
    assert first.status_code == 302
    again = post(client, "/scan", code=f"={item.code}00")
    assert again.status_code == 302
    assert events_of(app, item.code, "pack") == ["pack"]
    page = client.get(again.headers["Location"]).get_data(as_text=True)
    assert "double read, nothing recorded twice" in page
    assert state_of(app, item.code) is State.PACKED


def test_a_repeat_after_the_window_is_refused_loudly(app, client, people):
    app.config["LIMS"]["custody"]["double_scan_seconds"] = 0
    item = collection(app, people)
    log_in(client, people["tech"].username)
    post(client, "/scan/mode", mode="pack")
    post(client, "/scan", code=f"={item.code}00")
    again = post(client, "/scan", code=f"={item.code}00")
    assert again.status_code == 409
    assert "Cannot pack material that is packed" in again.get_data(as_text=True)
    assert events_of(app, item.code, "pack") == ["pack"]


def test_scan_mode_refuses_a_step_the_item_cannot_take(app, client, people):
    item = collection(app, people)
    log_in(client, people["tech"].username)
    post(client, "/scan/mode", mode="issue")
    response = post(client, "/scan", code=f"={item.code}00")
    assert response.status_code == 409
    assert "is not an action on apheresis" in response.get_data(as_text=True)
    post(client, "/scan/mode", mode="")
    looked_up = post(client, "/scan", code=item.code + item.check)
    assert looked_up.status_code == 302 and "code=" in looked_up.headers["Location"]


def test_a_step_that_needs_a_reason_or_a_second_scan_asks_for_it(app, client, people):
    item = collection(app, people)
    log_in(client, people["tech"].username)
    form = client.get(f"/scan/{item.code}/store").get_data(as_text=True)
    assert "Scan the box" in form and "data-scan-field" in form
    missing = post(client, f"/scan/{item.code}/store", location="")
    assert missing.status_code == 422 and "Scan the place" in missing.get_data(as_text=True)
    post(client, f"/scan/{item.code}/store", location="LN2 tank 2 / rack B")
    assert state_of(app, item.code) is State.STORED
    refused = post(client, f"/scan/{item.code}/discard", reason="")
    assert refused.status_code == 422 and "Give the reason" in refused.get_data(as_text=True)
    post(client, f"/scan/{item.code}/discard", reason="clotted")
    assert state_of(app, item.code) is State.DISCARDED
    assert events_of(app, item.code) == ["register", "store", "discard"]


def bedside(client, bag, wristband: str, *, coi: str | None = None, witness="tech2"):
    return post(
        client,
        "/bedside",
        wristband=wristband,
        cassette=coi if coi is not None else f"&/{bag.coi}",
        bag=f"={bag.code}00",
        witness_username=witness,
        witness_password=PASSWORD,
    )


def checks(app) -> list[tuple[bool, str]]:
    with app.app_context():
        session = lims_db.session()
        return [(c.passed, c.mismatches) for c in session.scalars(select(BedsideCheck))]


def test_bedside_check_screen_blocks_every_mismatch_and_records_it(app, client, people):
    bag = thawed_bag(app, people, n=1)
    other = thawed_bag(app, people, n=2)
    log_in(client, people["tech"].username)
    witness = people["tech2"].username

    wrong_patient = bedside(client, bag, cpr(2), witness=witness)
    assert wrong_patient.status_code == 409
    text = wrong_patient.get_data(as_text=True)
    assert "DO NOT INFUSE" in text and "wristband is not the patient" in text
    assert cpr(2) not in text

    wrong_bag = bedside(client, other, cpr(1), coi=f"&/{bag.coi}", witness=witness)
    assert wrong_bag.status_code == 409 and "DO NOT INFUSE" in wrong_bag.get_data(as_text=True)
    assert [passed for passed, _ in checks(app)] == [False, False]
    assert state_of(app, bag.code) is State.THAWED
    refused = post(client, f"/scan/{bag.code}/infuse", password=PASSWORD)
    # Infusion is not even offered before a passed check (the guard behind it is tested in
    # the integration tests).
    assert refused.status_code == 422 and "not offered" in refused.get_data(as_text=True)
    assert state_of(app, bag.code) is State.THAWED

    same_person = bedside(client, bag, cpr(1), witness=people["tech"].username)
    assert same_person.status_code == 422
    assert "cannot both" in same_person.get_data(as_text=True)
    assert len(checks(app)) == 2  # a refused second person writes no check

    passed = bedside(client, bag, cpr(1)[:6] + "-" + cpr(1)[6:], witness=witness)
    assert passed.status_code == 302
    page = client.get(passed.headers["Location"]).get_data(as_text=True)
    assert "IDENTITY VERIFIED" in page and "Record infusion" in page
    post(client, f"/scan/{bag.code}/infuse", password=PASSWORD)
    assert state_of(app, bag.code) is State.INFUSED
    assert events_of(app, bag.code)[-2:] == ["verify_identity", "infuse"]
    with app.app_context():
        session = lims_db.session()
        assert session.scalar(select(func.count()).select_from(BedsideCheck)) == 3


def test_a_hand_over_within_the_hospital_needs_no_shipment(app, client, people):
    item = collection(app, people)
    log_in(client, people["tech"].username)
    card = client.get("/scan", query_string={"code": f"={item.code}00"}).get_data(as_text=True)
    assert "Hand over in house…" in card
    form = client.get(f"/scan/{item.code}/ship").get_data(as_text=True)
    assert "porter or courier" in form
    nobody = post(client, f"/scan/{item.code}/ship", custodian="")
    assert nobody.status_code == 422 and "Name the courier or person" in nobody.get_data(
        as_text=True
    )
    post(client, f"/scan/{item.code}/ship", custodian="porter, Blodbanken")
    assert state_of(app, item.code) is State.IN_TRANSIT
    card = client.get("/scan", query_string={"code": f"={item.code}00"}).get_data(as_text=True)
    assert "porter, Blodbanken" in card and "Receive" in card
    post(client, f"/scan/{item.code}/receive")
    assert state_of(app, item.code) is State.RECEIVED_FOR_MANUFACTURING
    assert events_of(app, item.code) == ["register", "ship", "receive"]


def test_a_get_of_a_step_only_asks(app, client, people):
    item = collection(app, people)
    log_in(client, people["tech"].username)
    page = client.get(f"/scan/{item.code}/pack")
    assert page.status_code == 200 and "<form" in page.get_data(as_text=True)
    assert events_of(app, item.code) == ["register"]


def test_a_bag_is_released_with_its_lot_never_alone_from_the_card(app, client, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        lot = quarantined_lot(app, session, people, new_episode(session, tech))
        bag, lot_number = lot.bags[0].code, lot.lot_number
    log_in(client, people["qp"].username)
    card = client.get("/scan", query_string={"code": f"={bag}00"}).get_data(as_text=True)
    assert f"Release: lot {lot_number}" in card
    refused = post(client, f"/scan/{bag}/release", password=PASSWORD)
    assert refused.status_code == 422 and "on the lot page" in refused.get_data(as_text=True)
    assert state_of(app, bag) is State.QUARANTINE


def test_an_item_packed_in_a_shipment_is_not_handed_over_from_the_card(app, client, people):
    item = collection(app, people)
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        shipment = shipping.create_shipment(
            session, actor=tech, to_site_code="AUH", conditions="fresh"
        )
        shipping.add_to_shipment(
            session, actor=tech, shipment_code=shipment.code, scan=f"={item.code}00"
        )
        shipment_code = shipment.code
    log_in(client, people["tech"].username)
    refused = post(client, f"/scan/{item.code}/ship", custodian="porter")
    assert refused.status_code == 422
    assert f"packed in shipment {shipment_code}" in refused.get_data(as_text=True)
    assert state_of(app, item.code) is State.COLLECTED
