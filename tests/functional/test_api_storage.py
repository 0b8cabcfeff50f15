"""Storage through the JSON API: looking places up, box contents, placing and moving material.

The freezers and boxes are set up with the storage services (there is no API to build them);
everything else goes over HTTP with bearer tokens. RH is the tech's and manager's site, AUH
manufactures, OUH is a third hospital (see people_of_an_episode).
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.auth.services import user_by_username
from lims.custody.models import CustodyEvent
from lims.identifiers import format_local_id
from lims.storage import services as storage
from tests.conftest import PASSWORD
from tests.functional.test_api_episode import (
    bag_in_quarantine,
    keys_of,
    pass_all_qc,
    people_of_an_episode,
)
from tests.integration.test_storage import box, freezer, tubes


@pytest.fixture
def api(make_site, make_user, token_for, client):
    return people_of_an_episode(make_site, make_user, token_for, client)


def staff(session, person):
    """The account behind one of the API clients, for the services."""
    return user_by_username(session, person.username)


def rh_freezer(app, api) -> None:
    """RH-F80-1 (-80 °C) with rack RH-F80-1-R1 holding BOX-1 (9x9) and BIN-1 (3 places), a loose
    box LOOSE-1 (8x12) standing in no rack, and RH-F20-1 (-20 °C) with BOX-20."""
    with app.app_context():
        session = lims_db.session()
        manager, tech = staff(session, api.manager), staff(session, api.tech)
        freezer(session, manager)
        freezer(session, manager, code="RH-F20-1", temperature="minus_20")
        box(session, tech, label="Plasma D7")
        box(session, tech, code="BIN-1", box_type=None, capacity=3, ordinal=2)
        storage.create_box(
            session, actor=tech, code="LOOSE-1", unit_code="RH-F80-1", box_type="8x12"
        )
        box(session, tech, code="BOX-20", unit="RH-F20-1")


def new_tubes(app, api, n: int, material: str = "plasma") -> list[str]:
    """n plasma aliquots registered at RH (not yet stored); their codes."""
    with app.app_context():
        session = lims_db.session()
        return [tube.code for tube in tubes(session, staff(session, api.tech), n, material)]


def custody_events(app) -> int:
    with app.app_context():
        return lims_db.session().scalar(select(func.count()).select_from(CustodyEvent))


def place(person, scan: str, box_code: str, position: str | None = None):
    body = {"scan": scan, "box": box_code}
    if position is not None:
        body["position"] = position
    return person.post("/storage/placements", body)


def placed(person, scan: str, box_code: str, position: str | None = None) -> dict:
    response = place(person, scan, box_code, position)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.json


def follow(person, url: str) -> dict:
    """A link from an answer (already under /api/v1), followed with the same token."""
    response = person.client.get(url, headers=person.headers)
    assert response.status_code == 200, (url, response.get_data(as_text=True))
    return response.json


# -- looking places up -------------------------------------------------------------------------


def test_a_unit_a_rack_and_a_box_are_looked_up_by_code_with_their_fill(app, api):
    rh_freezer(app, api)
    one, two = new_tubes(app, api, 2)
    placed(api.tech, one, "BOX-1")
    placed(api.tech, two, "BIN-1")
    documented = keys_of(api, "StorageLocation")

    unit = api.tech.ok("get", "/storage/locations/rh-f80-1")
    assert set(unit) <= documented
    assert (unit["kind"], unit["code"], unit["name"]) == ("unit", "RH-F80-1", "Freezer RH-F80-1")
    assert (unit["site"], unit["temperature_class"], unit["unit_type"]) == (
        "RH",
        "minus_80",
        "freezer",
    )
    assert (unit["used"], unit["size"], unit["free"]) == (2, 81 + 3 + 96, 81 + 1 + 96)
    assert unit["parents"] == [] and unit["path"] == "RH-F80-1" and unit["active"] is True
    (rack,) = unit["racks"]
    assert (rack["code"], rack["rack_kind"], rack["used"], rack["size"]) == (
        "RH-F80-1-R1",
        "rack",
        2,
        84,
    )
    assert [(b["code"], b["used"], b["free"], b["box_type"]) for b in rack["boxes"]] == [
        ("BOX-1", 1, 80, "9x9"),
        ("BIN-1", 1, 2, None),
    ]
    assert [b["code"] for b in unit["boxes"]] == ["LOOSE-1"]  # in the unit, in no rack

    rack_answer = follow(api.tech, rack["url"])
    assert (rack_answer["kind"], rack_answer["name"], rack_answer["path"]) == (
        "rack",
        "Rack 1",
        "RH-F80-1 / RH-F80-1-R1",
    )
    assert [p["code"] for p in rack_answer["parents"]] == ["RH-F80-1"]
    assert follow(api.tech, rack_answer["parents"][0]["url"])["code"] == "RH-F80-1"

    found = follow(api.tech, rack["boxes"][0]["url"])
    assert set(found) <= documented and found["kind"] == "box"
    assert found["geometry"] == {"rows": 9, "columns": 9, "naming": "grid"}
    assert (found["name"], found["used"], found["size"], found["free"]) == ("Plasma D7", 1, 81, 80)
    assert found["path"] == "RH-F80-1 / RH-F80-1-R1 / BOX-1"
    assert [p["kind"] for p in found["parents"]] == ["unit", "rack"]
    assert follow(api.tech, found["contents_url"])["box"] == "BOX-1"
    canister = api.admin.ok("get", "/storage/locations/BIN-1")  # administrators read too
    assert canister["geometry"] is None and (canister["size"], canister["free"]) == (3, 2)


def test_unknown_ambiguous_and_other_sites_places_are_refused(app, api):
    rh_freezer(app, api)
    unknown = api.tech.get("/storage/locations/NOPE-9")
    assert unknown.status_code == 404 and unknown.json["message"] == (
        "No storage unit, rack or box NOPE-9."
    )
    assert api.tech.get("/storage/locations/BOX-1?kind=rack").status_code == 404
    wrong_kind = api.tech.get("/storage/locations/BOX-1?kind=tank")
    assert wrong_kind.status_code == 422 and wrong_kind.json["field"] == "kind"

    # Codes are unique per kind only: a box may carry a unit's code.
    with app.app_context():
        session = lims_db.session()
        box(session, staff(session, api.tech), code="RH-F20-1", unit="RH-F20-1")
    shared = api.tech.get("/storage/locations/RH-F20-1")
    assert shared.status_code == 409 and shared.json["field"] == "kind"
    assert shared.json["message"] == (
        "RH-F20-1 is the code of a storage unit and a box; add ?kind=unit or ?kind=box to say "
        "which."
    )
    assert api.tech.ok("get", "/storage/locations/RH-F20-1?kind=box")["kind"] == "box"
    assert api.tech.ok("get", "/storage/locations/RH-F20-1?kind=unit")["kind"] == "unit"

    for path in ("/storage/locations/RH-F80-1", "/storage/boxes/BOX-1/contents"):
        elsewhere = api.maker.get(path)  # AUH staff
        assert elsewhere.status_code == 403, path
        assert " stands at RH; you work at AUH" in elsewhere.json["message"], path
        assert api.researcher.get(path).status_code == 403, path
    assert api.tech.get("/storage/boxes/NOPE/contents").status_code == 404


# -- what a box holds --------------------------------------------------------------------------


def test_the_contents_of_a_grid_box_include_its_empty_positions(app, api):
    rh_freezer(app, api)
    first, second = new_tubes(app, api, 2)
    placed(api.tech, first, "BOX-1", "A1")
    placed(api.tech, second, "BOX-1", "b03")
    contents = api.tech.ok("get", "/storage/boxes/box-1/contents")
    assert set(contents) == keys_of(api, "BoxContents")
    assert (contents["box"], contents["box_type"], contents["path"]) == (
        "BOX-1",
        "9x9",
        "RH-F80-1 / RH-F80-1-R1 / BOX-1",
    )
    assert (contents["used"], contents["size"], contents["free"]) == (2, 81, 79)
    positions = contents["positions"]
    assert [p["position"] for p in positions[:3]] == ["A1", "A2", "A3"]
    assert [p["index"] for p in positions] == list(range(1, 82))
    assert positions[-1]["position"] == "I9"
    assert [p["index"] for p in positions if p["item"]] == [1, 12]
    held = positions[11]
    assert held["position"] == "B3" and held["item"]["code"] == second
    assert held["item"] == {
        "code": second,
        "check_character": held["item"]["check_character"],
        "kind": "aliquot",
        "material_type": "plasma",
        "state": "stored",
        "timepoint": None,
        "timepoint_day": None,
        "quantity": 1,
        "unit": "mL",
    }
    assert set(held["item"]) == keys_of(api, "StoredItem")
    assert [(i["position"], i["item"]["code"]) for i in contents["items"]] == [
        ("A1", first),
        ("B3", second),
    ]


def test_the_contents_of_a_canister_are_its_items(app, api):
    rh_freezer(app, api)
    codes = new_tubes(app, api, 2)
    for code in codes:
        placed(api.tech, code, "BIN-1")
    contents = api.manager.ok("get", "/storage/boxes/BIN-1/contents")
    assert contents["positions"] is None and contents["geometry"] is None
    assert (contents["used"], contents["size"], contents["free"]) == (2, 3, 1)
    assert [i["item"]["code"] for i in contents["items"]] == codes
    assert {(i["position"], i["index"]) for i in contents["items"]} == {(None, None)}


# -- placing -----------------------------------------------------------------------------------


def test_a_tube_is_stored_then_moved_with_a_custody_event_each(app, api):
    rh_freezer(app, api)
    (tube,) = new_tubes(app, api, 1)
    nowhere = api.tech.ok("get", f"/items/{tube}/location")
    assert set(nowhere) == keys_of(api, "ItemLocation")
    assert (nowhere["box"], nowhere["path"], nowhere["state"]) == (None, None, "registered")

    response = place(api.tech, tube, "BOX-1")
    assert response.status_code == 201, response.json
    assert response.headers["Location"].endswith(f"/api/v1/items/{tube}/location")
    stored = response.json
    assert set(stored) == keys_of(api, "PlacementResult")
    assert stored["action"] == "store"
    location = stored["location"]
    assert (location["box"], location["position"], location["index"]) == ("BOX-1", "A1", 1)
    assert location["path"] == "RH-F80-1 / RH-F80-1-R1 / BOX-1 / A1"
    assert (location["unit"], location["rack"], location["site"]) == (
        "RH-F80-1",
        "RH-F80-1-R1",
        "RH",
    )
    assert location["stored_at"].endswith("Z") and location["checked_out_at"] is None
    assert follow(api.tech, location["box_url"])["code"] == "BOX-1"

    moved = placed(api.manager, tube, "LOOSE-1", "H12")
    assert moved["action"] == "move" and moved["location"]["path"] == "RH-F80-1 / LOOSE-1 / H12"
    assert api.admin.ok("get", f"/items/{tube}/location") == moved["location"]
    events = api.tech.ok("get", f"/items/{tube}/events")["events"]
    assert [e["action"] for e in events] == ["register", "store", "move"]
    assert events[2]["from_location"] == "RH-F80-1 / RH-F80-1-R1 / BOX-1 / A1"
    assert events[2]["to_location"] == "RH-F80-1 / LOOSE-1 / H12"
    assert api.tech.ok("get", f"/items/{tube}")["location"] == "RH-F80-1 / LOOSE-1 / H12"

    api.tech.act(tube, "check_out")
    out = api.tech.ok("get", f"/items/{tube}/location")
    assert out["position"] == "H12" and out["checked_out_at"].endswith("Z")  # its place is kept
    back = placed(api.tech, tube, "LOOSE-1")
    assert back["action"] == "return_to_storage" and back["location"]["position"] == "H12"


def test_refused_placements_say_why_and_change_nothing(app, api):
    rh_freezer(app, api)
    holder, tube = new_tubes(app, api, 2)
    placed(api.tech, holder, "BOX-1", "C4")
    with app.app_context():
        session = lims_db.session()
        box(session, staff(session, api.tech), code="BIN-S", box_type=None, capacity=1)
    (filler,) = new_tubes(app, api, 1)
    placed(api.tech, filler, "BIN-S")
    before = custody_events(app)

    refusals = [
        (("BOX-1", "c04"), 409, "position", f"BOX-1 C4 holds {holder} already."),
        (("BOX-20", None), 409, None, "RH-F20-1 is the wrong temperature for"),
        (("BOX-1", "K1"), 422, "position", "K1 is outside this box (A1–I9)."),
        (("BOX-1", "A0"), 422, "position", "outside this box"),
        (("BIN-1", "A1"), 422, "position", "BIN-1 has no positions"),
        (("BIN-S", None), 409, "box", "BIN-S is full (1 places)."),
        (("NO-SUCH-BOX", None), 404, "box", "No box NO-SUCH-BOX."),
    ]
    for (box_code, position), status, field, words in refusals:
        response = place(api.tech, tube, box_code, position)
        assert response.status_code == status, (box_code, response.json)
        assert response.json.get("field") == field, (box_code, response.json)
        assert words in response.json["message"], (box_code, response.json)
    unknown = place(api.tech, format_local_id("RH", 9_999_999), "BOX-1")
    assert unknown.status_code == 404 and unknown.json["field"] == "scan"
    again = place(api.tech, holder, "BOX-1", "C4")
    assert again.status_code == 409 and "already" in again.json["message"]

    api.tech.act(tube, "discard", reason="tube cracked")
    discarded = place(api.tech, tube, "BOX-1")
    assert discarded.status_code == 409
    assert discarded.json["error"] == "invalid_transition"
    before += 1  # the discard

    assert custody_events(app) == before
    assert api.tech.ok("get", f"/items/{tube}/location")["box"] is None
    assert api.tech.ok("get", f"/items/{holder}/location")["position"] == "C4"
    assert api.tech.ok("get", "/storage/boxes/BOX-1/contents")["used"] == 1


def test_a_bag_on_hold_is_refused_storage_when_the_policy_says_so(app, api):
    bag = bag_in_quarantine(api)["bag"]
    pass_all_qc(app, api, "LOT-0001")
    api.qp.act(bag, "release", password=PASSWORD, **api.maker.as_second_person())
    api.maker.act(bag, "ship", custodian="Cryoport")
    api.tech.act(bag, "receive", **api.manager.as_second_person())
    with app.app_context():
        session = lims_db.session()
        manager = staff(session, api.manager)
        freezer(session, manager, code="RH-LN2-1", temperature="ln2_vapour")
        box(session, manager, code="CASS-1", unit="RH-LN2-1", box_type="cassette-5")
    api.tech.ok(
        "post", f"/items/{bag}/holds", {"reason": "other", "detail": "label smudged"}, 201
    )
    app.config["LIMS"]["storage"]["store_held_material"] = False
    before = custody_events(app)
    refused = place(api.tech, bag, "CASS-1", "2")
    assert refused.status_code == 409
    assert refused.json["message"] == f"{bag} is on hold (other); it is not stored."
    assert custody_events(app) == before
    assert api.tech.ok("get", f"/items/{bag}/location")["box"] is None

    app.config["LIMS"]["storage"]["store_held_material"] = True  # the default: a bag needs LN2
    stored = placed(api.tech, f"={bag}00", "CASS-1", "2")  # as scanned
    assert stored["action"] == "store"
    assert stored["location"]["path"] == "RH-LN2-1 / RH-LN2-1-R1 / CASS-1 / 2"
    assert custody_events(app) == before + 1


def test_only_the_bench_of_the_boxes_site_places(app, api):
    rh_freezer(app, api)
    (tube,) = new_tubes(app, api, 1)
    for person in (api.admin, api.researcher):
        assert place(person, tube, "BOX-1").status_code == 403
    elsewhere = place(api.other_tech, tube, "BOX-1")  # OUH
    assert elsewhere.status_code == 403 and "you work at OUH" in elsewhere.json["message"]
    assert api.researcher.get(f"/items/{tube}/location").status_code == 403
    assert api.tech.ok("get", f"/items/{tube}/location")["state"] == "registered"


# -- moving a box ------------------------------------------------------------------------------


def test_a_box_moves_with_its_content_keeping_every_position(app, api):
    rh_freezer(app, api)
    with app.app_context():
        freezer(lims_db.session(), staff(lims_db.session(), api.manager), code="RH-F80-2")
    codes = new_tubes(app, api, 4)
    for code, position in zip(codes, ("A1", "C5", "I9", "E2"), strict=True):
        placed(api.tech, code, "BOX-1", position)
    api.tech.act(codes[3], "check_out")  # its place moves with the box; it gets no event
    before = custody_events(app)

    too_warm = api.tech.post("/storage/boxes/BOX-1/move", {"unit": "RH-F20-1"})
    assert too_warm.status_code == 409 and too_warm.json["message"].startswith(
        "Nothing moved: RH-F20-1 is the wrong temperature"
    )
    wrong_rack = api.tech.post(
        "/storage/boxes/BOX-1/move", {"unit": "RH-F80-2", "rack": "RH-F80-1-R1"}
    )
    assert wrong_rack.status_code == 422 and wrong_rack.json["field"] == "rack"
    no_unit = api.tech.post("/storage/boxes/BOX-1/move", {"unit": "NOPE"})
    assert no_unit.status_code == 404 and no_unit.json["field"] == "unit"
    assert api.tech.post("/storage/boxes/NOPE/move", {"unit": "RH-F80-2"}).status_code == 404
    elsewhere = api.maker.post("/storage/boxes/BOX-1/move", {"unit": "RH-F80-2"})
    assert elsewhere.status_code == 403
    assert api.admin.post("/storage/boxes/BOX-1/move", {"unit": "RH-F80-2"}).status_code == 403
    assert custody_events(app) == before

    body = {"unit": "rh-f80-2", "rack": "RH-F80-2-R1", "reason": "defrost of F80-1"}
    moved = api.tech.ok("post", "/storage/boxes/BOX-1/move", body)
    assert set(moved) == keys_of(api, "BoxMoveResult")
    assert moved["moved"] == 3 and moved["items"] == codes[:3]
    assert moved["box"]["path"] == "RH-F80-2 / RH-F80-2-R1 / BOX-1"
    assert (moved["box"]["used"], moved["box"]["kind"]) == (4, "box")
    assert custody_events(app) == before + 3
    for code, position in zip(codes, ("A1", "C5", "I9", "E2"), strict=True):
        location = api.tech.ok("get", f"/items/{code}/location")
        assert (location["unit"], location["rack"], location["position"]) == (
            "RH-F80-2",
            "RH-F80-2-R1",
            position,
        )
        events = api.tech.ok("get", f"/items/{code}/events")["events"]
        moves = [e for e in events if e["action"] == "move"]
        if code == codes[3]:
            assert moves == []
            continue
        (move,) = moves
        assert move["reason"] == "defrost of F80-1"
        assert move["to_location"] == f"RH-F80-2 / RH-F80-2-R1 / BOX-1 / {position}"
    unit = api.tech.ok("get", "/storage/locations/RH-F80-2")
    assert [b["code"] for b in unit["racks"][0]["boxes"]] == ["BOX-1"]


# -- the document ------------------------------------------------------------------------------


def test_the_document_describes_the_storage_routes(client):
    document = client.get("/api/v1/openapi.json").json
    paths = document["paths"]
    lookup = paths["/api/v1/storage/locations/{code}"]["get"]
    assert lookup["x-roles"] == ["technician", "manager", "admin"]
    assert "409" in lookup["responses"] and lookup["parameters"][0]["description"].startswith(
        "Code of a storage unit"
    )
    assert lookup["parameters"][1]["schema"]["enum"] == ["unit", "rack", "box"]
    placement = paths["/api/v1/storage/placements"]["post"]
    assert placement["x-roles"] == ["technician", "manager"] and "201" in placement["responses"]
    assert placement["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/StoragePlacement"
    )
    where = paths["/api/v1/items/{code}/location"]["get"]
    assert where["parameters"][0]["description"].startswith("Item code")
    assert "researcher" not in str([paths[p] for p in paths if "storage" in p or "location" in p])
