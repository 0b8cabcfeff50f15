"""Shipments through the JSON API: packing, dispatch, receipt, the logger file, and refusals.

Mirrors tests/functional/test_shipment_pages.py over HTTP with bearer tokens. RH treats and
collects, AUH manufactures, OUH is a third hospital (see people_of_an_episode).
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.audit.models import AuditEntry
from lims.shipments.models import TemperatureReading
from tests.functional.test_api_episode import (
    COLLECTED_AT,
    bag_in_quarantine,
    keys_of,
    new_episode,
    new_patient,
    pass_all_qc,
    people_of_an_episode,
)

#: Two readings, the second above the 2 to 8 °C of fresh shipments (a Danish logger's export).
EXCURSION = "Time;Temperature (°C)\n01.03.2025 10:00;4,5\n01.03.2025 10:05;11,25\n".encode(
    "latin-1"
)
INSIDE = "timestamp,temp\n2025-03-01T10:00:00+01:00,3.5\n2025-03-01T10:05:00+01:00,4\n"


@pytest.fixture
def api(make_site, make_user, token_for, client):
    return people_of_an_episode(make_site, make_user, token_for, client)


def collections(api, count: int) -> list[str]:
    """Apheresis collections of a new episode, registered at RH (their codes are DINs)."""
    coi = new_episode(api, new_patient(api))["coi"]
    body = {"volume_ml": 200, "collected_at": COLLECTED_AT}
    return [
        api.tech.ok("post", f"/episodes/{coi}/collections", body, 201)["code"] for _ in range(count)
    ]


def new_shipment(person, to_site: str = "AUH", **fields) -> dict:
    return person.ok(
        "post", "/shipments", {"to_site": to_site, "conditions": "fresh"} | fields, 201
    )


def sent(api, codes: list[str], **fields) -> str:
    """A shipment of ``codes`` from RH to AUH, dispatched; its code."""
    shipment = new_shipment(api.tech, **fields)["code"]
    for code in codes:
        packed = api.tech.ok("post", f"/shipments/{shipment}/lines", {"scan": code})
        assert packed["outcome"]["status"] == "added"
    api.tech.ok("post", f"/shipments/{shipment}/dispatch", {"courier": "Blood courier"})
    return shipment


def item(api, code: str) -> dict:
    return api.manager.ok("get", f"/items/{code}")


def upload(person, shipment: str, data: bytes, filename: str = "", content_type="text/csv"):
    query = f"?filename={filename}" if filename else ""
    return person.post(f"/shipments/{shipment}/logger{query}", data=data, content_type=content_type)


# -- the whole journey ------------------------------------------------------------------------


def test_a_shipment_from_packing_to_receipt_with_a_missing_and_an_unexpected_item(app, api):
    arrives, lost, stray = collections(api, 3)
    response = api.tech.post(
        "/shipments",
        {"to_site": "AUH", "conditions": "fresh", "tracking_ref": "TR-9", "logger_ref": "LOG-1"},
    )
    assert response.status_code == 201, response.json
    shipment = response.json
    code = shipment["code"]
    assert response.headers["Location"].endswith(f"/api/v1/shipments/{code}")
    assert code.startswith("SHRH") and shipment["state"] == "packing"
    assert (shipment["from_site"], shipment["to_site"]) == ("RH", "AUH")
    assert shipment["created_by"] == api.tech.username and shipment["created_at"].endswith("Z")
    assert shipment["dispatched_at"] is None and shipment["logger"] is None
    assert shipment["lines"] == []
    assert set(shipment) == keys_of(api, "Shipment")

    packed = api.tech.ok(
        "post", f"/shipments/{code}/lines", {"scan": f"={arrives}00", "container": "box 2"}
    )
    assert packed["outcome"] == {
        "status": "added",
        "code": arrives,
        "message": f"{arrives} added to shipment {code}.",
        "loud": False,
    }
    (line,) = packed["shipment"]["lines"]
    assert line["code"] == arrives and line["container"] == "box 2"
    assert (line["status"], line["kind"], line["state"]) == ("expected", "apheresis", "collected")
    assert set(line) == keys_of(api, "ShipmentLine") and set(packed) == keys_of(
        api, "PackingResult"
    )
    # An exact DIN needs no check character through the API, as on the item routes.
    plain = api.tech.ok("post", f"/shipments/{code}/lines", {"scan": lost})
    assert plain["outcome"]["status"] == "added"
    again = api.tech.ok("post", f"/shipments/{code}/lines", {"scan": arrives})["outcome"]
    assert again["status"] == "already_added" and again["loud"] is False

    dispatched = api.tech.ok("post", f"/shipments/{code}/dispatch", {"courier": "Blood courier"})
    assert dispatched["state"] == "in_transit" and dispatched["courier"] == "Blood courier"
    assert (dispatched["tracking_ref"], dispatched["logger_ref"]) == ("TR-9", "LOG-1")  # kept
    assert dispatched["dispatched_by"] == api.tech.username
    assert item(api, arrives)["state"] == "in_transit"

    assert api.maker.ok("get", f"/shipments/{code.lower()}")["code"] == code  # the other end
    scans = f"/shipments/{code}/receipt/scans"
    first = api.maker.ok("post", scans, {"scan": arrives})
    assert first["outcome"]["status"] == "received" and first["outcome"]["loud"] is False
    assert first["reconciliation"] == {
        "received": [arrives],
        "missing": [lost],
        "unexpected": [],
        "complete": False,
    }
    assert set(first) == keys_of(api, "ReceiptScanResult")
    assert set(first["outcome"]) == keys_of(api, "ScanOutcome")
    scanned_again = api.maker.ok("post", scans, {"scan": f"={arrives}00"})
    assert scanned_again["outcome"]["status"] == "already_scanned"
    unexpected = api.maker.ok("post", scans, {"scan": stray})
    assert unexpected["outcome"]["status"] == "unexpected" and unexpected["outcome"]["loud"]
    assert unexpected["outcome"]["message"].startswith(f"UNEXPECTED: {stray} was not sent")
    repeated = api.maker.ok("post", scans, {"scan": stray})["outcome"]
    assert repeated["status"] == "unexpected_again" and repeated["loud"] is True
    assert repeated["code"] == stray

    no_note = api.maker.post(f"/shipments/{code}/receipt")
    assert no_note.status_code == 422 and no_note.json["field"] == "note"
    assert "1 missing and 1 unexpected" in no_note.json["message"]
    assert item(api, arrives)["state"] == "in_transit"

    note = "One bag missing, a stray bag came along."
    received = api.maker.ok("post", f"/shipments/{code}/receipt", {"note": note})
    assert received["state"] == "received" and received["receipt_note"] == note
    assert received["received_by"] == api.maker.username and received["received_at"].endswith("Z")
    assert received["reconciliation"] == {
        "received": [arrives],
        "missing": [lost],
        "unexpected": [stray],
        "complete": False,
    }
    assert {line["code"]: line["status"] for line in received["lines"]} == {
        arrives: "received",
        lost: "missing",
        stray: "unexpected",
    }
    assert api.tech.ok("get", f"/shipments/{code}") == received  # the sender sees the same
    at_auh = item(api, arrives)
    assert (at_auh["state"], at_auh["site"]) == ("received_for_manufacturing", "AUH")
    assert (item(api, lost)["state"], item(api, lost)["site"]) == ("in_transit", "RH")
    assert item(api, stray)["state"] == "collected"

    twice = api.maker.post(f"/shipments/{code}/receipt", {"note": note})
    assert twice.status_code == 409 and "received" in twice.json["message"]
    with app.app_context():
        actions = lims_db.session().scalars(
            select(AuditEntry.action).where(AuditEntry.entity == "shipment")
        )
        assert {"dispatch", "complete_receipt"} <= set(actions)


def test_a_product_bag_received_at_its_treating_site_needs_a_second_person(app, api):
    made = bag_in_quarantine(api)
    bag = made["bag"]
    pass_all_qc(app, api, made["lot"])
    api.qp.act(bag, "release", password="correct-horse-battery", **api.maker.as_second_person())
    code = new_shipment(api.maker, "RH", conditions="dry_shipper")["code"]
    api.maker.ok("post", f"/shipments/{code}/lines", {"scan": bag})
    api.maker.ok("post", f"/shipments/{code}/dispatch", {"courier": "Cryoport"})

    api.tech.ok("post", f"/shipments/{code}/receipt/scans", {"scan": bag})
    alone = api.tech.post(f"/shipments/{code}/receipt")
    assert alone.status_code == 422 and alone.json["field"] == "witness"
    self_witness = api.tech.post(f"/shipments/{code}/receipt", api.tech.as_second_person())
    assert self_witness.status_code == 422 and "someone else" in self_witness.json["message"]
    wrong = api.tech.post(
        f"/shipments/{code}/receipt",
        {"witness_username": api.manager.username, "witness_password": "not it"},
    )
    assert wrong.status_code == 422 and wrong.json["field"] == "witness"
    assert item(api, bag)["state"] == "in_transit"

    done = api.tech.ok("post", f"/shipments/{code}/receipt", api.manager.as_second_person())
    assert done["state"] == "received" and done["reconciliation"]["complete"] is True
    assert (item(api, bag)["state"], item(api, bag)["site"]) == ("received", "RH")
    receive = api.tech.ok("get", f"/items/{bag}/events")["events"][-1]
    assert receive["action"] == "receive"
    assert receive["witness_signature"]["printed_name"] == "Manager"


# -- the temperature logger -------------------------------------------------------------------


def test_a_logger_file_with_an_excursion_puts_the_items_on_hold(app, api):
    items = collections(api, 2)
    code = sent(api, items, logger_ref="LOG-42")
    assert upload(api.other_tech, code, EXCURSION).status_code == 403  # OUH: not its shipment

    response = upload(api.maker, code, EXCURSION, filename="log42.csv")
    assert response.status_code == 200, response.json
    answer = response.json
    assert answer["shipment"] == code and sorted(answer["held"]) == sorted(items)
    logger = answer["logger"]
    assert logger["file_name"] == "log42.csv" and logger["uploaded_at"].endswith("Z")
    assert (logger["readings"], logger["min_c"], logger["max_c"], logger["excursions"]) == (
        2,
        4.5,
        11.25,
        1,
    )
    assert set(answer) == keys_of(api, "LoggerUploadResult")
    assert set(logger) == keys_of(api, "LoggerSummary")
    assert api.tech.ok("get", f"/shipments/{code}")["logger"] == logger
    for code_ in items:
        tube = item(api, code_)
        assert tube["on_hold"] is True
        (hold,) = tube["holds"]
        assert hold["reason"] == "temperature_excursion" and "LOG-42" in hold["detail"]
        assert "11.25 °C" in hold["detail"]

    again = upload(api.maker, code, EXCURSION)
    assert again.status_code == 409 and "uploaded already" in again.json["message"]


def test_a_logger_file_sent_as_json_inside_the_limits_holds_nothing(app, api):
    items = collections(api, 1)
    code = sent(api, items)
    answer = api.maker.ok("post", f"/shipments/{code}/logger", {"csv": INSIDE})
    assert answer["held"] == [] and answer["logger"]["excursions"] == 0
    assert answer["logger"]["file_name"] == "logger.csv"  # no name given
    assert (answer["logger"]["min_c"], answer["logger"]["max_c"]) == (3.5, 4)
    assert item(api, items[0])["on_hold"] is False


def test_a_bad_logger_file_is_refused_and_nothing_is_stored(app, api):
    code = sent(api, collections(api, 1))
    packing = new_shipment(api.tech)["code"]
    early = upload(api.tech, packing, EXCURSION)
    assert early.status_code == 409 and "in transit or received" in early.json["message"]
    bad = upload(api.maker, code, b"time;temp\n01.03.2025 10:00;5\n01.03.2025 10:05;hot\n")
    assert bad.status_code == 422 and "line 3: 'hot' is not a temperature" in bad.json["message"]
    too_big = upload(api.maker, code, b"2025-03-01 10:00,5\n" * 300_000)
    assert too_big.status_code == 422 and "at most 5 MB" in too_big.json["message"]
    plain = upload(api.maker, code, EXCURSION, content_type="text/plain")
    assert plain.status_code == 400 and "text/csv" in plain.json["message"]
    empty = upload(api.maker, code, b"")
    assert empty.status_code == 422 and "empty" in empty.json["message"]
    unknown = api.maker.post(f"/shipments/{code}/logger", {"csv": INSIDE, "zone": "UTC"})
    assert unknown.status_code == 422 and unknown.json["field"] == "zone"
    with app.app_context():
        count = lims_db.session().scalar(select(func.count()).select_from(TemperatureReading))
        assert count == 0
    assert api.maker.ok("get", f"/shipments/{code}")["logger"] is None


# -- refusals ---------------------------------------------------------------------------------


def test_bodies_are_checked_and_unknown_shipments_are_404(api):
    colour = api.tech.post("/shipments", {"to_site": "AUH", "conditions": "fresh", "colour": "red"})
    assert colour.status_code == 422 and colour.json["field"] == "colour"
    assert "Unknown key 'colour'" in colour.json["message"]
    frozen = api.tech.post("/shipments", {"to_site": "AUH", "conditions": "frozen"})
    assert frozen.status_code == 422 and frozen.json["field"] == "conditions"
    home = api.tech.post("/shipments", {"to_site": "RH", "conditions": "fresh"})
    assert home.status_code == 422 and home.json["field"] == "to_site"
    nowhere = api.tech.post("/shipments", {"to_site": "ZZ", "conditions": "fresh"})
    assert nowhere.status_code == 404

    for method, path, body in [
        ("get", "/shipments/SHRH9999990", None),
        ("post", "/shipments/SHRH9999990/lines", {"scan": "X"}),
        ("post", "/shipments/SHRH9999990/dispatch", {"courier": "c"}),
        ("post", "/shipments/SHRH9999990/receipt/scans", {"scan": "X"}),
        ("post", "/shipments/SHRH9999990/receipt", None),
    ]:
        response = api.tech.get(path) if method == "get" else api.tech.post(path, body)
        assert response.status_code == 404 and response.json["error"] == "not_found", path
        assert "SHRH9999990" in response.json["message"], path

    code = new_shipment(api.tech)["code"]
    empty = api.tech.post(f"/shipments/{code}/dispatch", {"courier": "c"})
    assert empty.status_code == 422 and "at least one" in empty.json["message"]
    blank = api.tech.post(f"/shipments/{code}/dispatch", {"courier": " "})
    assert blank.status_code == 422 and blank.json["field"] == "courier"
    (tube,) = collections(api, 1)
    check = item(api, tube)["check_character"]
    slip = "A" if check != "A" else "B"
    typed = api.tech.post(f"/shipments/{code}/lines", {"scan": f"{tube} {slip}"})
    assert typed.status_code == 422 and typed.json["field"] == "scan"
    unknown = api.tech.post(f"/shipments/{code}/lines", {"scan": "W123425999999"})
    assert unknown.status_code == 404 and unknown.json["field"] == "scan"
    typed_right = api.tech.ok("post", f"/shipments/{code}/lines", {"scan": f"{tube} {check}"})
    assert typed_right["outcome"]["code"] == tube


def test_only_staff_of_the_two_sites_see_and_work_on_a_shipment(api):
    (tube,) = collections(api, 1)
    code = new_shipment(api.tech)["code"]
    for person in (api.other_tech, api.researcher, api.admin):
        assert person.get(f"/shipments/{code}").status_code == 403
        refused = person.post(f"/shipments/{code}/lines", {"scan": tube})
        assert refused.status_code == 403 and refused.is_json
    other = api.other_tech.get(f"/shipments/{code}").json["message"]
    assert "only their staff" in other and tube not in other
    for person in (api.researcher, api.admin):
        assert (
            person.post("/shipments", {"to_site": "RH", "conditions": "fresh"}).status_code == 403
        )
    packs_elsewhere = api.maker.post(f"/shipments/{code}/lines", {"scan": tube})
    assert (
        packs_elsewhere.status_code == 403 and "Only staff at RH" in packs_elsewhere.json["message"]
    )

    api.tech.ok("post", f"/shipments/{code}/lines", {"scan": tube})
    early = api.maker.post(f"/shipments/{code}/receipt/scans", {"scan": tube})
    assert early.status_code == 409 and "packing" in early.json["message"]
    api.tech.ok("post", f"/shipments/{code}/dispatch", {"courier": "Blood courier"})
    sender = api.tech.post(f"/shipments/{code}/receipt/scans", {"scan": tube})
    assert sender.status_code == 403 and sender.json["message"].startswith(f"Shipment {code} goes")
    for path, body in [
        (f"/shipments/{code}/dispatch", {"courier": "Blood courier"}),
        (f"/shipments/{code}/lines", {"scan": tube}),
    ]:
        response = api.tech.post(path, body)
        assert response.status_code == 409 and "in transit" in response.json["message"], path
    product_code = api.maker.post(f"/shipments/{code}/receipt/scans", {"scan": "=<E7644V00"})
    assert product_code.status_code == 422 and product_code.json["field"] == "scan"
    assert "product code" in product_code.json["message"]


def test_the_document_describes_the_csv_upload(client):
    document = client.get("/api/v1/openapi.json").json
    upload_ = document["paths"]["/api/v1/shipments/{code}/logger"]["post"]
    content = upload_["requestBody"]["content"]
    assert content["text/csv"]["schema"]["type"] == "string"
    assert "5 MB" in content["text/csv"]["schema"]["description"]
    assert content["application/json"]["schema"]["$ref"].endswith("/LoggerUpload")
    assert {"name": "filename", "in": "query"}.items() <= upload_["parameters"][1].items()
    assert upload_["parameters"][0]["description"].startswith("Shipment code")
    assert upload_["x-roles"] == ["technician", "manager"]
    shipment = document["components"]["schemas"]["Shipment"]["properties"]
    assert shipment["state"]["enum"] == ["packing", "in_transit", "received", "cancelled"]
    assert "text/csv" in document["info"]["description"]
