"""A whole CAR-T episode through the JSON API only, and who may see a patient's identity.

Mirrors tests/integration/test_episode_flow.py step by step, but over HTTP with bearer tokens.
"""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.audit.models import AuditEntry
from lims.identifiers import format_local_id
from tests.conftest import PASSWORD

CPR = "0707614285"  # born 1961-07-07; a made-up number that passes mod 11
IDENTITY_TRACES = ("0707614285", "070761-4285", "Karen", "Hansen", "1961-07-07")
COLLECTED_AT = "2025-03-01T10:30:00+01:00"


class Api:
    """The test client speaking as one user's token."""

    def __init__(self, client, token: str, username: str = "") -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}
        self.username = username

    def as_second_person(self) -> dict[str, str]:
        """This user as the second person of a step (custody.second_person)."""
        return {"witness_username": self.username, "witness_password": PASSWORD}

    def get(self, path: str):
        return self.client.get("/api/v1" + path, headers=self.headers)

    def post(self, path: str, body=None, **options):
        if body is not None:
            options["json"] = body
        return self.client.post("/api/v1" + path, headers=self.headers, **options)

    def ok(self, method: str, path: str, body=None, status: int = 200) -> dict:
        response = self.get(path) if method == "get" else self.post(path, body)
        assert response.status_code == status, (path, response.get_data(as_text=True))
        return response.json

    def act(self, code: str, action: str, **body) -> dict:
        return self.ok("post", f"/items/{code}/actions/{action}", body)


def people_of_an_episode(make_site, make_user, token_for, client) -> SimpleNamespace:
    """The people of one episode: RH treats, AUH manufactures; one API client each."""
    make_site("RH", isbt_fin="W1234")
    make_site("AUH", isbt_fin="W5678")
    make_site("OUH", isbt_fin="W9012")
    people = {
        "tech": ("technician", "RH"),
        "manager": ("manager", "RH"),
        "maker": ("technician", "AUH"),
        "qp": ("manager", "AUH"),
        "other_tech": ("technician", "OUH"),
        "researcher": ("researcher", "AUH"),
        "admin": ("admin", "RH"),
    }
    apis = {}
    for name, (role, site) in people.items():
        user = make_user(role, site_code=site, full_name=name.title())
        apis[name] = Api(client, token_for(user), user.username)
    return SimpleNamespace(**apis)


@pytest.fixture
def api(make_site, make_user, token_for, client) -> SimpleNamespace:
    return people_of_an_episode(make_site, make_user, token_for, client)


def new_patient(api, **overrides) -> str:
    body = {
        "identifier": CPR,
        "name": "Karen Hansen",
        "treating_site": "RH",
        "consent_biobank": True,
    } | overrides
    return api.tech.ok("post", "/patients", body, 201)["pseudonym"]


def new_episode(api, pseudonym: str, product: str = "Kymriah") -> dict:
    body = {"patient": pseudonym, "product_name": product, "product_kind": "commercial"}
    return api.tech.ok("post", "/episodes", body, 201)


def collection_at_manufacturing(api, coi: str) -> str:
    """A new collection of the episode, shipped to AUH and in manufacturing there."""
    body = {"volume_ml": 250, "collected_at": COLLECTED_AT}
    code = api.tech.ok("post", f"/episodes/{coi}/collections", body, 201)["code"]
    api.tech.act(code, "ship", custodian="World Courier")
    api.maker.act(code, "receive")
    api.maker.act(code, "start_manufacturing")
    return code


def bag_in_quarantine(api, lot_number: str = "LOT-0001") -> dict:
    """A new patient, episode, collection and lot; its one bag in quarantine at AUH."""
    episode = new_episode(api, new_patient(api))
    source = collection_at_manufacturing(api, episode["coi"])
    lot = api.maker.ok(
        "post",
        "/lots",
        {"lot_number": lot_number, "apheresis": [source], "bags": [{"volume_ml": 40}]},
        201,
    )
    bag = lot["bags"][0]["code"]
    api.maker.act(bag, "quarantine")
    return {"episode": episode, "source": source, "bag": bag, "lot": lot_number}


def pass_all_qc(app, api, lot_number: str) -> None:
    for test in app.config["LIMS"]["custody"]["required_qc"]:
        body = {"test": test, "value": "ok", "passed": True}
        api.maker.ok("post", f"/lots/{lot_number}/qc", body, 201)


def keys_of(api, schema: str) -> set[str]:
    """The properties the OpenAPI document promises for one answer schema."""
    return set(api.tech.ok("get", "/openapi.json")["components"]["schemas"][schema]["properties"])


def test_full_episode_from_registration_to_infusion(app, api):
    response = api.tech.post(
        "/patients",
        {"identifier": CPR, "name": "Karen Hansen", "treating_site": "RH", "consent_biobank": True},
    )
    assert response.status_code == 201, response.json
    assert response.json["warnings"] == []
    assert not any(trace in response.get_data(as_text=True) for trace in IDENTITY_TRACES)
    pseudonym = response.json["pseudonym"]
    assert response.headers["Location"].endswith(f"/api/v1/patients/{pseudonym}")

    episode = api.tech.ok(
        "post",
        "/episodes",
        {
            "patient": pseudonym,
            "product_name": "Kymriah",
            "product_kind": "commercial",
            "protocol": "standard of care",
            "planned_infusion_date": "2025-04-01",
        },
        201,
    )
    coi = episode["coi"]
    assert coi.startswith("CHW1234") and len(episode["coi_check_character"]) == 1
    assert api.tech.ok("get", f"/episodes/{coi}{episode['coi_check_character']}")["coi"] == coi

    collection = api.tech.ok(
        "post",
        f"/episodes/{coi}/collections",
        {"volume_ml": 250, "tnc_count": 12_000_000_000, "collected_at": COLLECTED_AT},
        201,
    )
    code = collection["code"]
    assert collection["state"] == "collected" and collection["kind"] == "apheresis"
    assert code.startswith("W1234") and collection["coi"] == coi
    assert collection["collected_at"] == "2025-03-01T09:30:00Z"  # stored in UTC
    assert "pack" in collection["actions"] and "release" not in collection["actions"]

    api.tech.act(code, "pack")
    shipped = api.tech.act(code, "ship", custodian="World Courier", temperature_logger_ref="TL-9")
    assert shipped["event"]["to_custodian"] == "World Courier"
    assert shipped["event"]["temperature_logger_ref"] == "TL-9"
    received = api.maker.act(code, "receive")
    assert received["item"]["site"] == "AUH" and received["event"]["from_site"] == "RH"
    api.maker.act(code, "start_manufacturing")

    lot = api.maker.ok(
        "post",
        "/lots",
        {
            "lot_number": "LOT-0001",
            "apheresis": [code],
            "bags": [{"volume_ml": 50, "cell_count": 600_000_000}],
            "expires_at": "2026-03-01T00:00:00Z",
        },
        201,
    )
    assert api.tech.ok("get", f"/items/{code}")["state"] == "consumed"
    bag = lot["bags"][0]["code"]
    assert lot["bags"][0]["state"] == "manufactured" and lot["bags"][0]["coi"] == coi

    quarantined = api.maker.act(bag, "quarantine")["item"]
    assert "release" not in quarantined["actions"]  # a technician may not release
    assert "release" in api.qp.ok("get", f"/items/{bag}")["actions"]
    refused = api.qp.post(f"/items/{bag}/actions/release", {"password": PASSWORD})
    assert refused.status_code == 409 and "QC is not complete" in refused.json["message"]

    pass_all_qc(app, api, "LOT-0001")
    wrong = api.qp.post(f"/items/{bag}/actions/release", {"password": "wrong"})
    assert wrong.status_code == 422 and wrong.json["field"] == "password"
    assert api.qp.ok("get", f"/items/{bag}")["state"] == "quarantine"

    same = api.qp.post(
        f"/items/{bag}/actions/release",
        {"password": PASSWORD, **api.qp.as_second_person()},
    )
    assert same.status_code == 422 and same.json["field"] == "witness"
    assert "cannot both" in same.json["message"]
    released = api.qp.act(bag, "release", password=PASSWORD, **api.maker.as_second_person())
    assert released["item"]["state"] == "released"
    assert released["event"]["witness_signature"]["printed_name"] == "Maker"
    assert released["event"]["signature"]["printed_name"] == "Qp"
    assert released["event"]["signature"]["meaning"] == "released"

    api.maker.act(bag, "ship", custodian="Cryoport", temperature_logger_ref="LN2-77")
    api.tech.act(bag, "receive", **api.manager.as_second_person())
    assert api.tech.act(bag, "store", location="LN2 tank 2")["item"]["location"] == "LN2 tank 2"
    api.tech.act(bag, "issue")
    early = api.tech.post(f"/items/{bag}/actions/infuse", {"password": PASSWORD})
    assert early.status_code == 409 and "Cannot infuse" in early.json["message"]
    api.tech.act(bag, "thaw")

    mismatch = api.tech.post(
        "/bedside-checks",
        {"bag": bag, "coi": coi + episode["coi_check_character"], "wristband": "2110620629"},
    )
    assert mismatch.status_code == 409
    assert "IDENTITY MISMATCH" in mismatch.json["message"]
    assert "wristband" in mismatch.json["message"]
    assert api.tech.ok("get", f"/items/{bag}")["state"] == "thawed"

    check = api.tech.ok(
        "post",
        "/bedside-checks",
        {"bag": bag, "coi": f"&/{coi}", "wristband": "070761-4285"}
        | api.manager.as_second_person(),
    )
    assert check["passed"] is True and check["state"] == "identity_verified"
    assert not any(trace in json.dumps(check) for trace in IDENTITY_TRACES)

    infused = api.manager.act(bag, "infuse", password=PASSWORD)
    assert infused["item"]["state"] == "infused"
    assert infused["event"]["signature"]["meaning"] == "administered"
    assert api.tech.ok("get", f"/episodes/{coi}")["infused_at"] is not None

    events = api.tech.ok("get", f"/items/{bag}/events")["events"]
    assert [event["action"] for event in events] == [
        "register",
        "quarantine",
        "release",
        "ship",
        "receive",
        "store",
        "issue",
        "thaw",
        "verify_identity",
        "infuse",
    ]
    ship = events[3]
    assert (ship["from_state"], ship["to_state"]) == ("released", "in_transit")
    assert ship["temperature_logger_ref"] == "LN2-77" and ship["to_custodian"] == "Cryoport"
    assert events[4]["to_site"] == "RH" and events[4]["from_site"] == "AUH"
    assert [bool(event["signature"]) for event in events].count(True) == 2
    assert all(event["at"].endswith("Z") for event in events)

    assert set(events[0]) == keys_of(api, "Event")
    assert set(events[2]["signature"]) == keys_of(api, "Signature")
    assert set(check) == keys_of(api, "BedsideOutcome")
    assert set(infused["item"]) == keys_of(api, "Item")
    assert set(lot) == keys_of(api, "Lot") and set(episode) == keys_of(api, "Episode")

    lineage = api.tech.ok("get", f"/items/{bag}/lineage")
    assert [link["code"] for link in lineage["lineage"]] == [bag, code]  # bag ← its apheresis
    assert lineage["episode"]["coi"] == coi and lineage["episode"]["pseudonym"] == pseudonym

    patient = api.manager.ok("get", f"/patients/{pseudonym}")
    assert patient["consent_biobank"] is True and patient["consent_withdrawn"] is False
    assert [e["coi"] for e in patient["episodes"]] == [coi]
    assert set(patient) == keys_of(api, "Patient")
    assert not any(trace in json.dumps(patient) for trace in IDENTITY_TRACES)


DATE_VALUE = re.compile(r"\d{4}-\d{2}-\d{2}")


def date_keys(value, path: str = "") -> list[str]:
    """Keys naming a calendar date or time anywhere in a JSON value."""
    found = []
    if isinstance(value, dict):
        for key, child in value.items():
            if key.endswith("_at") or "date" in key or key == "at":
                found.append(path + key)
            found += date_keys(child, f"{path}{key}.")
    elif isinstance(value, list):
        for child in value:
            found += date_keys(child, path)
    return found


def test_researcher_answers_never_hold_identity_or_dates(app, api):
    pseudonym = new_patient(api, birth_date="1961-07-07")
    episode = new_episode(api, pseudonym)
    coi = episode["coi"]
    sample = api.tech.ok(
        "post",
        f"/episodes/{coi}/samples",
        {
            "material_type": "whole_blood",
            "quantity": 10,
            "unit": "mL",
            "collected_at": COLLECTED_AT,
            "timepoint": "D7",
            "timepoint_day": 7,
        },
        201,
    )["code"]
    run = {"count": 3, "quantity_each": 1, "unit": "mL", "material_type": "plasma"}
    tubes = api.tech.ok("post", f"/items/{sample}/aliquots", run, 201)["aliquots"]
    assert [t["aliquot"] for t in tubes] == [{"number": n, "total": 3} for n in (1, 2, 3)]
    collection = api.tech.ok(
        "post",
        f"/episodes/{coi}/collections",
        {"volume_ml": 100, "collected_at": COLLECTED_AT},
        201,
    )["code"]
    pbmc = {"count": 1, "quantity_each": 5, "unit": "mL", "material_type": "pbmc"}
    from_din = api.tech.ok("post", f"/items/{collection}/aliquots", pbmc, 201)["aliquots"][0]

    # The bench sees dates and the collection's DIN: the checks below would catch them.
    bench_view = api.tech.ok("get", f"/items/{from_din['code']}")
    assert bench_view["parent"] == collection and "collected_at" in date_keys(bench_view)

    allowed = {
        "/": 200,
        "/me": 200,
        f"/items/{tubes[0]['code']}": 200,
        f"/items/{sample}": 200,
        f"/items/{from_din['code']}": 200,
        f"/items/{collection}": 404,
        f"/items/{tubes[0]['code']}/events": 403,
        f"/items/{tubes[0]['code']}/lineage": 403,
        f"/patients/{pseudonym}": 403,
        f"/patients/{pseudonym}/identity": 403,
        f"/episodes/{coi}": 403,
    }
    answers = {}
    for path, status in allowed.items():
        response = api.researcher.get(path)
        assert response.status_code == status, (path, response.get_data(as_text=True))
        answers[path] = response
    openapi = api.researcher.get("/openapi.json")
    assert openapi.status_code == 200
    for path, response in [*answers.items(), ("/openapi.json", openapi)]:
        text = response.get_data(as_text=True)
        assert not [t for t in IDENTITY_TRACES if t in text], path
        assert coi not in text, path
    for path, response in answers.items():
        assert date_keys(response.json) == [], path
        assert not DATE_VALUE.search(response.get_data(as_text=True)), path

    tube = answers[f"/items/{tubes[0]['code']}"].json
    assert set(tube) == keys_of(api, "ResearcherItem")
    assert set(bench_view) == keys_of(api, "Item")
    assert tube["pseudonym"] == pseudonym and tube["timepoint_day"] == 7
    assert tube["parent"] == sample  # the parent is a tube too
    assert {"location", "custodian", "coi", "lot_number", "holds"}.isdisjoint(tube)
    assert answers[f"/items/{from_din['code']}"].json["parent"] is None  # a DIN: hidden
    never_issued = format_local_id("RH", 9_999_999)
    unknown = api.researcher.get(f"/items/{never_issued}")
    hidden = answers[f"/items/{collection}"]
    assert hidden.json["error"] == unknown.json["error"] == "not_found"
    assert hidden.json["message"] == unknown.json["message"].replace(never_issued, collection)


def audit_rows(app, action: str) -> list[tuple[str, str]]:
    with app.app_context():
        rows = lims_db.session().execute(
            select(AuditEntry.actor, AuditEntry.entity).where(AuditEntry.action == action)
        )
        return [tuple(row) for row in rows]


def test_identity_only_for_the_treating_site_and_audited(app, api, make_user, token_for):
    pseudonym = new_patient(api)
    viewer = make_user("technician", site_code="RH", username="viewer")
    answer = Api(api.tech.client, token_for(viewer)).ok("get", f"/patients/{pseudonym}/identity")
    assert answer == {
        "pseudonym": pseudonym,
        "identifier": "070761-4285",
        "identifier_kind": "cpr",
        "name": "Karen Hansen",
        "birth_date": "1961-07-07",
    }
    assert audit_rows(app, "view_identity") == [("viewer", "patient")]
    assert api.manager.ok("get", f"/patients/{pseudonym}/identity")["name"] == "Karen Hansen"
    for who in (api.other_tech, api.researcher, api.admin):
        response = who.get(f"/patients/{pseudonym}/identity")
        assert response.status_code == 403 and response.is_json
        assert "Karen" not in response.get_data(as_text=True)
    assert len(audit_rows(app, "view_identity")) == 2  # the refusals saw nothing
    assert api.other_tech.get("/patients/PNOSUCH1/identity").status_code == 404


def test_consent_withdrawal_holds_material(app, api):
    pseudonym = new_patient(api)
    episode = new_episode(api, pseudonym)
    sample = {"material_type": "serum", "quantity": 2, "unit": "mL", "collected_at": COLLECTED_AT}
    code = api.tech.ok("post", f"/episodes/{episode['coi']}/samples", sample, 201)["code"]
    api.tech.act(code, "store", location="-80 freezer 3")
    other_site = api.other_tech.post(
        f"/patients/{pseudonym}/consent",
        {"biobank": False, "genetic": False, "withdrawn": True, "reason": "letter"},
    )
    assert other_site.status_code == 403
    withdrawn = api.tech.ok(
        "post",
        f"/patients/{pseudonym}/consent",
        {"biobank": True, "genetic": False, "withdrawn": True, "reason": "letter of 3 March"},
    )
    assert withdrawn["consent_withdrawn"] is True and withdrawn["consent_biobank"] is False
    tube = api.manager.ok("get", f"/items/{code}")
    assert tube["on_hold"] is True and tube["holds"][0]["reason"] == "consent_withdrawn"
    # What the hold then refuses (reservation by a request's approval) is tested with the
    # requests: tests/integration/test_requests.py.
    with app.app_context():
        count = lims_db.session().scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "consent")
        )
    assert count >= 1
