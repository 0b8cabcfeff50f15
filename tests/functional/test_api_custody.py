"""The custody API's refusals, one per error class, holds, and the OpenAPI document's coverage."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.api import bodies
from lims.audit.models import ESignature
from lims.custody.domain import Action, State
from lims.custody.models import HoldReason, Item, MaterialType
from lims.identifiers import format_local_id
from tests.conftest import PASSWORD
from tests.functional.test_api_episode import (
    COLLECTED_AT,
    bag_in_quarantine,
    new_episode,
    new_patient,
    pass_all_qc,
    people_of_an_episode,
)


@pytest.fixture
def api(make_site, make_user, token_for, client):
    return people_of_an_episode(make_site, make_user, token_for, client)


def stored_tube(api) -> dict:
    """A new patient's follow-up serum tube, stored at RH."""
    episode = new_episode(api, new_patient(api))
    body = {"material_type": "serum", "quantity": 2, "unit": "mL", "collected_at": COLLECTED_AT}
    tube = api.tech.ok("post", f"/episodes/{episode['coi']}/samples", body, 201)
    api.tech.act(tube["code"], "store", location="-80 freezer 3")
    return tube


# -- 400: not a JSON object --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type", "words"),
    [
        ('{"volume_ml": 250,', "application/json", "not valid JSON"),
        ("[250]", "application/json", "must be a JSON object"),
        ("volume_ml=250", "application/x-www-form-urlencoded", "Content-Type: application/json"),
        ("", "application/json", "not valid JSON"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(api, data, content_type, words):
    coi = new_episode(api, new_patient(api))["coi"]
    response = api.tech.post(f"/episodes/{coi}/collections", data=data, content_type=content_type)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"] == "malformed_request" and words in response.json["message"]


def test_an_action_needs_no_body_but_refuses_a_broken_one(api):
    code = stored_tube(api)["code"]
    broken = api.tech.post(
        f"/items/{code}/actions/check_out", data="{", content_type="application/json"
    )
    assert broken.status_code == 400
    assert api.tech.post(f"/items/{code}/actions/check_out").status_code == 200


# -- 422: a key missing, unknown or of the wrong type ------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"collected_at": COLLECTED_AT}, "volume_ml", "required"),
        ({"volume_ml": "lots", "collected_at": COLLECTED_AT}, "volume_ml", "a number"),
        ({"volume_ml": True, "collected_at": COLLECTED_AT}, "volume_ml", "a number"),
        ({"volume_ml": 250, "collected_at": "2025-03-01T10:30:00"}, "collected_at", "time zone"),
        ({"volume_ml": 250, "collected_at": "1 March"}, "collected_at", "ISO 8601"),
        ({"volume_ml": 250, "collected_at": 1740821400}, "collected_at", "ISO 8601"),
        ({"volume_ml": 250, "collected_at": COLLECTED_AT, "tnc": 5}, "tnc", "Unknown key"),
        ({"volume_ml": 250, "collected_at": COLLECTED_AT, "tnc_count": 1.5}, "tnc_count", "whole"),
    ],
)
def test_a_wrong_field_is_422_naming_it(app, api, body, field, words):
    coi = new_episode(api, new_patient(api))["coi"]
    response = api.tech.post(f"/episodes/{coi}/collections", body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.json["field"] == field and words in response.json["message"]
    with app.app_context():  # and nothing was registered
        assert lims_db.session().scalar(select(func.count()).select_from(Item)) == 0


def test_enumerations_and_nested_lists_are_checked(api):
    pseudonym = new_patient(api)
    kind = api.tech.post(
        "/episodes", {"patient": pseudonym, "product_name": "X", "product_kind": "homemade"}
    )
    assert kind.status_code == 422 and kind.json["field"] == "product_kind"
    assert "commercial, academic" in kind.json["message"]
    patient = api.tech.post(
        "/patients",
        {"identifier": "X1", "identifier_kind": "passport", "name": "A", "treating_site": "RH"},
    )
    assert patient.status_code == 422 and patient.json["field"] == "identifier_kind"
    bags = api.maker.post(
        "/lots", {"lot_number": "L-1", "apheresis": ["W123426000001"], "bags": [{"volume": 5}]}
    )
    assert bags.status_code == 422 and bags.json["field"] == "bags[0].volume"
    codes = api.maker.post("/lots", {"lot_number": "L-1", "apheresis": "W1", "bags": []})
    assert codes.status_code == 422 and codes.json["field"] == "apheresis"
    coi = new_episode(api, pseudonym)["coi"]
    negative = api.tech.post(
        f"/episodes/{coi}/collections", {"volume_ml": -1, "collected_at": COLLECTED_AT}
    )
    assert negative.status_code == 422 and "positive" in negative.json["message"]
    date = api.tech.post(
        "/episodes",
        {
            "patient": pseudonym,
            "product_name": "X",
            "product_kind": "academic",
            "planned_infusion_date": "2025-02-30",
        },
    )
    assert date.status_code == 422 and date.json["field"] == "planned_infusion_date"


def test_values_a_database_column_cannot_hold_are_422_not_500(api):
    """PostgreSQL refuses NUL characters and out-of-range integers; the API refuses first."""
    coi = new_episode(api, new_patient(api))["coi"]
    sample = {"material_type": "serum", "quantity": 1, "unit": "mL", "collected_at": COLLECTED_AT}
    for extra, field in [
        ({"timepoint_day": 10**12}, "timepoint_day"),
        ({"cell_count": 2**63}, "cell_count"),
        ({"timepoint": "D7\x00"}, "timepoint"),
        ({"collected_at": "0001-01-01T00:00:00+01:00"}, "collected_at"),
    ]:
        response = api.tech.post(f"/episodes/{coi}/samples", sample | extra)
        assert response.status_code == 422 and response.json["field"] == field, extra
    for path, field in [("/items/RH%00", "code"), ("/episodes/%00", "coi")]:
        response = api.tech.get(path)
        assert response.status_code == 422 and response.json["field"] == field, path
    assert api.manager.post("/holds/99999999999/clear", {"reason": "x"}).status_code == 404


def test_every_documented_body_is_checked_before_any_service_runs(app, api):
    """Each POST route answers a broken body with 400 and an empty one per its schema."""
    document = api.tech.ok("get", "/openapi.json")
    schemas = document["components"]["schemas"]
    checked = 0
    for path, operations in document["paths"].items():
        if "post" not in operations:
            continue
        if path.startswith(("/api/v1/requests", "/api/v1/notifications")):
            continue  # by each route's own role: tests/functional/test_api_requests.py
        url = re.sub(r"{\w+}", "X", path.replace("{hold_id}", "1"))
        broken = api.manager.client.post(
            url, headers=api.manager.headers, data="{", content_type="application/json"
        )
        assert broken.status_code == 400, url
        body = operations["post"]["requestBody"]["content"]["application/json"]["schema"]
        required = schemas[body["$ref"].rsplit("/", 1)[1]].get("required", [])
        empty = api.manager.client.post(url, headers=api.manager.headers, json={})
        if required:
            assert empty.status_code == 422 and empty.json["field"] == required[0], url
        else:
            assert empty.status_code == 404, url  # the item 'X' is looked up, not refused
        checked += 1
    assert checked == len(bodies.ALL)  # every declared body belongs to one route


# -- 404, 403 ----------------------------------------------------------------------------------


def test_unknown_codes_are_404_and_a_wrong_check_character_422(api):
    unknown = format_local_id("RH", 9_999_999)  # well formed, never issued
    for path in (f"/items/{unknown}", f"/items/{unknown}/events", "/episodes/CHW123425999999"):
        response = api.tech.get(path)
        assert response.status_code == 404 and response.json["error"] == "not_found", path
    assert api.tech.post(f"/items/{unknown}/actions/store").status_code == 404
    slip = unknown[:-1] + ("0" if unknown[-1] != "0" else "1")  # a wrong check character
    response = api.tech.get(f"/items/{slip}")
    assert response.status_code == 422 and "check character" in response.json["message"]
    typed = api.tech.get("/items/W000009123456 A")  # K of this DIN is G
    assert typed.status_code == 422 and typed.json["field"] == "code"
    assert api.manager.post("/holds/999/clear", {"reason": "x"}).status_code == 404


def test_a_scanned_or_typed_din_finds_its_item(api):
    code = bag_in_quarantine(api)["bag"]
    check = api.tech.ok("get", f"/items/{code}")["check_character"]
    for form in (f"={code}00", f"{code[:5]} {code[5:7]} {code[7:]} {check}", code.lower()):
        assert api.tech.ok("get", f"/items/{form}")["code"] == code, form


def test_researchers_are_refused_bench_endpoints(api):
    tube = stored_tube(api)["code"]
    for method, path in [
        ("post", f"/items/{tube}/actions/check_out"),
        ("post", f"/items/{tube}/aliquots"),
        ("post", f"/items/{tube}/holds"),
        ("get", f"/items/{tube}/events"),
        ("get", f"/items/{tube}/lineage"),
        ("post", "/patients"),
        ("post", "/lots"),
        ("post", "/bedside-checks"),
    ]:
        response = getattr(api.researcher, method)(
            path, **({"json": {}} if method == "post" else {})
        )
        assert response.status_code == 403, (method, path)
        assert response.json["error"] == "forbidden"
    assert api.researcher.get(f"/items/{tube}").json["state"] == "stored"
    assert api.tech.ok("get", f"/items/{tube}")["state"] == "stored"  # nothing was done


# -- 409: the state machine and its guards -----------------------------------------------------


def test_a_refused_transition_is_409_naming_the_guard(api):
    made = bag_in_quarantine(api)
    bag = made["bag"]
    early_ship = api.maker.post(f"/items/{bag}/actions/ship", {"custodian": "courier"})
    assert early_ship.status_code == 409
    assert early_ship.json == {
        "error": "invalid_transition",
        "message": "Cannot ship material that is quarantine.",
    }
    release = api.qp.post(f"/items/{bag}/actions/release", {"password": PASSWORD})
    assert release.status_code == 409 and "QC is not complete" in release.json["message"]
    failed = {"test": "sterility", "value": "growth", "passed": False}
    api.maker.ok("post", f"/lots/{made['lot']}/qc", failed, 201)
    unknown = api.maker.post(f"/items/{bag}/actions/fly")
    assert unknown.status_code == 409 and "'fly' is not an action" in unknown.json["message"]
    internal = api.maker.post(f"/items/{made['source']}/actions/consume")
    assert internal.status_code == 409 and "its own step" in internal.json["message"]
    reason = api.tech.post(f"/items/{bag}/actions/discard", {})
    assert reason.status_code == 422 and reason.json["field"] == "reason"
    tech_release = api.maker.post(f"/items/{bag}/actions/release", {"password": PASSWORD})
    assert tech_release.status_code == 403


def test_a_wrong_signature_password_changes_nothing(app, api):
    made = bag_in_quarantine(api)
    pass_all_qc(app, api, made["lot"])
    bag = made["bag"]
    before = api.qp.ok("get", f"/items/{bag}/events")["events"]
    for password in ("wrong", "", None):
        body = {"password": password} if password is not None else {}
        response = api.qp.post(f"/items/{bag}/actions/release", body)
        assert response.status_code == 422, password
        assert response.json["field"] == "password"
        assert "nothing was signed or changed" in response.json["message"]
    assert api.qp.ok("get", f"/items/{bag}")["state"] == State.QUARANTINE
    assert api.qp.ok("get", f"/items/{bag}/events")["events"] == before
    with app.app_context():
        session = lims_db.session()
        assert session.scalar(select(func.count()).select_from(ESignature)) == 0
    released = api.qp.act(bag, "release", password=PASSWORD, **api.maker.as_second_person())
    assert released["item"]["state"] == "released"


# -- holds ---------------------------------------------------------------------------------


def test_a_hold_is_placed_and_only_a_manager_clears_it(api):
    code = stored_tube(api)["code"]
    bad = api.tech.post(f"/items/{code}/holds", {"reason": "broken", "detail": "x"})
    assert bad.status_code == 422 and bad.json["field"] == "reason"
    hold = api.tech.ok(
        "post",
        f"/items/{code}/holds",
        {"reason": "temperature_excursion", "detail": "freezer 3 at -60 °C"},
        201,
    )
    assert hold["item"] == code and hold["cleared_at"] is None
    tube = api.manager.ok("get", f"/items/{code}")
    assert tube["on_hold"] and tube["holds"][0]["id"] == hold["id"]
    # Reserving is the request approval's step (where a hold makes the tube ineligible).
    refused = api.manager.post(f"/items/{code}/actions/reserve")
    assert refused.status_code in {404, 409}
    assert "done through its own step" in refused.json["message"]
    clear = {"reason": "logger shows 4 minutes only"}
    assert api.tech.post(f"/holds/{hold['id']}/clear", clear).status_code == 403
    assert api.manager.post(f"/holds/{hold['id']}/clear", {}).json["field"] == "reason"
    cleared = api.manager.ok("post", f"/holds/{hold['id']}/clear", clear)
    assert cleared["clear_reason"] == clear["reason"] and cleared["cleared_at"]
    assert api.manager.post(f"/holds/{hold['id']}/clear", clear).status_code == 409
    assert not api.manager.ok("get", f"/items/{code}")["on_hold"]


def test_aliquots_take_their_volume_from_the_parent(api):
    code = stored_tube(api)["code"]
    run = {"count": 3, "quantity_each": 0.5, "unit": "mL", "material_type": "serum"}
    made = api.tech.ok("post", f"/items/{code}/aliquots", run, 201)
    assert made["parent"] == code and len(made["aliquots"]) == 3
    assert api.tech.ok("get", f"/items/{code}")["quantity"] == 0.5
    too_much = api.tech.post(f"/items/{code}/aliquots", run)
    assert too_much.status_code == 422 and too_much.json["field"] == "quantity_each"
    child = made["aliquots"][2]["code"]
    lineage = api.tech.ok("get", f"/items/{child}/lineage")["lineage"]
    assert [link["code"] for link in lineage] == [child, code]


# -- the OpenAPI document ----------------------------------------------------------------------


def documented_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule)


def test_openapi_covers_every_api_route_and_nothing_else(app, client):
    response = client.get("/api/v1/openapi.json")  # public: no token
    assert response.status_code == 200
    document = response.json
    assert document["openapi"] == "3.0.3"
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1"):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routes[(documented_path(rule.rule), method.lower())] = rule.endpoint
    documented = {
        (path, method): operation["operationId"]
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }
    assert set(routes) - set(documented) == set(), "routes missing from the document"
    assert set(documented) - set(routes) == set(), "documented paths without a route"
    for key, endpoint in routes.items():
        assert f"api.{documented[key]}" == endpoint, key
    assert len(routes) >= 20


def test_openapi_schemas_resolve_and_follow_the_enums(client):
    document = client.get("/api/v1/openapi.json").json
    text = str(document)
    for name in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert name in document["components"]["schemas"], name
    for name in set(re.findall(r"#/components/responses/(\w+)", text)):
        assert name in document["components"]["responses"], name
    schemas = document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert schemas["Item"]["properties"]["state"]["enum"] == [s.value for s in State]
    assert schemas["HoldPlacement"]["properties"]["reason"]["enum"] == list(HoldReason)
    actions = document["paths"]["/api/v1/items/{code}/actions/{action}"]["post"]
    assert actions["parameters"][1]["schema"]["enum"] == [a.value for a in Action]
    sample_types = schemas["SampleRegistration"]["properties"]["material_type"]["enum"]
    assert "pbmc" in sample_types and MaterialType.CAR_T_PRODUCT not in sample_types
    assert set(schemas["ResearcherItem"]["properties"]).isdisjoint(
        {"coi", "location", "custodian", "collected_at", "created_at", "lot_number", "holds"}
    )
    assert "time zone" in document["info"]["description"]
    clear = document["paths"]["/api/v1/holds/{hold_id}/clear"]["post"]
    assert clear["x-roles"] == ["manager"] and "401" in clear["responses"]
    assert document["paths"]["/api/v1/openapi.json"]["get"]["security"] == []
