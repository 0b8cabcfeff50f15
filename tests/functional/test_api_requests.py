"""Aliquot requests through the JSON API: a researcher searches and asks, the manager reviews
and signs, the technician picks and hands over, the researcher confirms the receipt; and what
is refused on the way. Every answer a researcher gets is searched for the patients' identity.

The biobank is built with the services (tests/integration/biobank.py); everything else goes
over HTTP with bearer tokens. RH keeps the freezer and its staff review and pick; the
researcher works at AUH, where one more tube of the first subject is kept.
"""

from __future__ import annotations

import re
from datetime import date
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from lims import db as lims_db
from lims.api.request_schemas import REQUEST_BODIES, RESEARCHER_LINE_KEYS
from lims.custody.domain import State
from lims.custody.models import Item
from lims.identifiers import format_local_id
from lims.requests.models import Notification
from tests.conftest import PASSWORD
from tests.functional.test_api_episode import Api
from tests.integration.biobank import STUDY, TIMEPOINTS, build_biobank
from tests.integration.people import build_cast

DETAILS = {
    "title": "Cytokine kinetics after CAR-T",
    "principal_investigator": "Prof. Ida Immun",
    "ethics_ref": "H-24012345",
    "dpa_ref": "P-2025-77",
    "intended_analyses": "Luminex cytokine panel; no genetic analyses",
    "delivery_details": "Collected by the lab technician of the research group",
}


class Client(Api):
    """An API client that also patches and deletes, and keeps every answer it was given."""

    def __init__(self, client, token: str, username: str = "") -> None:
        super().__init__(client, token, username)
        self.answers: list[tuple[str, object]] = []

    def keep(self, path: str, response):
        self.answers.append((path, response))
        return response

    def get(self, path: str):
        return self.keep(path, super().get(path))

    def post(self, path: str, body=None, **options):
        return self.keep(path, super().post(path, body, **options))

    def patch(self, path: str, body=None):
        response = self.client.patch("/api/v1" + path, headers=self.headers, json=body)
        return self.keep(path, response)

    def delete(self, path: str):
        return self.keep(path, self.client.delete("/api/v1" + path, headers=self.headers))

    def ok(self, method: str, path: str, body=None, status: int = 200) -> dict:
        if method in ("patch", "delete"):
            response = self.patch(path, body) if method == "patch" else self.delete(path)
        else:
            response = self.get(path) if method == "get" else self.post(path, body)
        assert response.status_code == status, (path, response.get_data(as_text=True))
        return response.json

    def refused(self, method: str, path: str, status: int, body=None, field=None) -> dict:
        response = getattr(self, method)(
            path, **({} if method in ("get", "delete") else {"body": body})
        )
        assert response.status_code == status, (path, response.get_data(as_text=True))
        if field is not None:
            assert response.json["field"] == field, response.json
        return response.json


@pytest.fixture
def world(app, make_site, make_user, token_for, client) -> SimpleNamespace:
    people = build_cast(make_site, make_user)
    bank = build_biobank(app, people, make_user)
    member = make_user("manager", site_code="OUH", username="board.olga", full_name="Olga Board")

    def api(person) -> Client:
        return Client(client, token_for(person), person.username)

    return SimpleNamespace(
        app=app,
        bank=bank,
        researcher=api(bank.researcher),
        manager=api(people["manager"]),
        tech=api(people["tech"]),
        colleague=api(people["researcher"]),  # another researcher, at RH
        auh_manager=api(people["qp"]),
        auh_tech=api(people["maker"]),
        elsewhere=api(people["elsewhere"]),
        admin=api(people["admin"]),
        member=api(member),
    )


def identity_traces(bank) -> list[str]:
    """The CPR numbers (with and without the dash), names, birth dates and CoIs of the bank."""
    traces = [*bank.names, *(name.split()[-1] for name in bank.names), *bank.cois]
    for number in bank.cprs:
        born = date(1900 + int(number[4:6]), int(number[2:4]), int(number[:2]))
        traces += [number, f"{number[:6]}-{number[6:]}", born.isoformat()]
        traces += [born.strftime(form) for form in ("%d-%m-%Y", "%d.%m.%Y", "%d/%m/%Y", "%Y%m%d")]
    return traces


def assert_no_identity(world) -> None:
    traces = identity_traces(world.bank)
    assert world.researcher.answers, "the researcher was given nothing to check"
    for path, response in world.researcher.answers:
        text = response.get_data(as_text=True)
        assert not [trace for trace in traces if trace in text], path


def draft(world, codes=(), **details) -> str:
    body = DETAILS | details
    code = world.researcher.ok("post", "/requests", body, 201)["code"]
    if codes:
        world.researcher.ok("post", f"/requests/{code}/items", {"items": list(codes)})
    return code


def submitted(world, codes, **details) -> str:
    code = draft(world, codes, **details)
    world.researcher.ok("post", f"/requests/{code}/submit")
    return code


def approved(world, code: str, **decision) -> dict:
    world.manager.ok("post", f"/requests/{code}/opt-out-checks", {"registered": []})
    body = {"decision": "approved", "password": PASSWORD} | decision
    return world.manager.ok("post", f"/requests/{code}/decision", body)


def item_state(app, code: str) -> State:
    with app.app_context():
        return lims_db.session().scalar(select(Item.state).where(Item.code == code))


def codes_of(lines) -> list[str]:
    return [line["aliquot"] for line in lines]


# -- the whole flow ----------------------------------------------------------------------------


def test_a_request_from_search_to_receipt(app, world):
    bank, researcher, manager, tech = world.bank, world.researcher, world.manager, world.tech
    first, second, _ = bank.pseudonyms

    # The researcher searches: groups by subject and timepoint, counts per material type.
    found = researcher.ok("get", f"/requests/search?study={STUDY.lower()}&material_type=plasma")
    expected = [
        (subject, label, day, 3 if (subject, label) == (first, "D7") else 2)
        for subject in sorted(bank.pseudonyms)
        for label, day in TIMEPOINTS
    ]
    groups = [
        (g["subject"], g["timepoint"], g["timepoint_day"], g["total"]) for g in found["groups"]
    ]
    assert groups == expected
    assert (found["total_groups"], found["total_aliquots"], found["pages"]) == (9, 19, 1)
    assert {tuple(g["counts"].items()) for g in found["groups"]} == {
        (("plasma", 2),),
        (("plasma", 3),),
    }
    assert found["filters"] == {"study": STUDY.lower(), "material_type": "plasma"}
    page = researcher.ok("get", "/requests/search?material_type=plasma&per_page=4&page=3")
    assert (page["page"], page["pages"], len(page["groups"]), page["total_groups"]) == (3, 3, 1, 9)

    group = next(g for g in found["groups"] if (g["subject"], g["timepoint"]) == (first, "D7"))
    listed = researcher.ok("get", group["aliquots_url"].removeprefix("/api/v1"))
    assert listed["subject"] == first and listed["timepoint"] == "D7"
    in_group = sorted(bank.tubes[(first, "D7")] + [bank.auh_tube])
    assert [a["code"] for a in listed["aliquots"]] == in_group
    assert sorted(a["site"] for a in listed["aliquots"]) == ["AUH", "RH", "RH"]
    assert {(a["study"], a["product"], a["timepoint_day"]) for a in listed["aliquots"]} == {
        (STUDY, "Breyanzi", 7)
    }

    # A draft: details, aliquots in and out, criteria in and out.
    response = researcher.post("/requests", DETAILS)
    assert response.status_code == 201, response.json
    code = response.json["code"]
    assert response.headers["Location"].endswith(f"/api/v1/requests/{code}")
    assert re.fullmatch(r"REQ-\d{4}-\d{5}", code)
    made = response.json
    assert (made["state"], made["site"], made["lines"], made["delivery"]) == (
        "draft",
        "AUH",
        [],
        "pick_up",
    )
    assert made["steps"] == ["edit", "submit", "cancel"]
    assert made["researcher"] == {
        "username": bank.researcher.username,
        "full_name": "Rita Research",
    }
    changed = researcher.ok("patch", f"/requests/{code}", {"title": "Cytokines", "genetic": False})
    assert (changed["title"], changed["genetic"], changed["ethics_ref"]) == (
        "Cytokines",
        False,
        DETAILS["ethics_ref"],
    )
    stranger = bank.tubes[(second, "D0")][0]
    wanted = bank.tubes[(first, "D0")] + bank.tubes[(first, "D7")] + [bank.auh_tube]
    body = {"items": [*wanted, stranger]}
    assert len(researcher.ok("post", f"/requests/{code}/items", body)["lines"]) == 6
    after = researcher.ok("delete", f"/requests/{code}/items/{stranger}")
    assert codes_of(after["lines"]) == wanted
    criterion = researcher.ok(
        "post",
        f"/requests/{code}/criteria",
        {"study": STUDY, "material_type": "plasma", "timepoints": ["d28"]},
        201,
    )
    assert (criterion["timepoints"], criterion["per_subject"], criterion["shortfall"]) == (
        ["D28"],
        1,
        [],
    )
    extra = researcher.ok(
        "post", f"/requests/{code}/criteria", {"study": STUDY, "material_type": "serum"}, 201
    )
    kept = researcher.ok("delete", f"/requests/{code}/criteria/{extra['id']}")
    assert [c["id"] for c in kept["criteria"]] == [criterion["id"]]

    # Submitted: the criterion became one D28 tube per subject; the AUH tube is its own request.
    parts = researcher.ok("post", f"/requests/{code}/submit")["requests"]
    rh, auh = parts
    assert rh["code"] == code
    assert (rh["site"], rh["state"], auh["site"], auh["state"]) == (
        "RH",
        "submitted",
        "AUH",
        "submitted",
    )
    assert codes_of(auh["lines"]) == [bank.auh_tube]
    d28 = [line for line in rh["lines"] if line["timepoint"] == "D28"]
    assert sorted(line["subject"] for line in d28) == sorted(bank.pseudonyms)
    assert {line["criterion"] for line in d28} == {criterion["id"]}
    assert rh["counts"]["requested"] == 7 and rh["criteria"][0]["shortfall"] == []
    assert [r["code"] for r in researcher.ok("get", "/requests")["requests"]] == [auh["code"], code]
    assert [r["code"] for r in manager.ok("get", "/requests")["requests"]] == [code]
    assert [r["code"] for r in world.auh_manager.ok("get", "/requests")["requests"]] == [
        auh["code"]
    ]
    assert researcher.ok("get", "/requests?state=draft")["requests"] == []

    # Staff of the site see where each tube is; the researcher never does.
    staff_view = manager.ok("get", f"/requests/{code}")
    spot = staff_view["lines"][0]["location"]
    assert (spot["site"], spot["storage_unit"], spot["rack"], spot["box"]) == (
        "RH",
        "RH-F80",
        "R1",
        "RH-B1",
    )
    assert spot["path"] == f"RH-F80 / R1 / RH-B1 / {spot['position']}"
    own_view = researcher.ok("get", f"/requests/{code}")
    assert all(set(line) == set(RESEARCHER_LINE_KEYS) for line in own_view["lines"])
    assert own_view["steps"] == ["cancel"]

    # Review: the opt-out register first, then the signed decision.
    assert manager.ok("post", f"/requests/{code}/review/start")["state"] == "under_review"
    before = manager.ok("get", f"/requests/{code}/eligibility")
    assert {(line["aliquot"], tuple(line["reasons"])) for line in before["lines"]} == {
        (
            line["aliquot"],
            (f"opt-out register not checked for {line['subject']} in the last 30 days",),
        )
        for line in rh["lines"]
    }
    assert [s["subject"] for s in before["subjects"]] == sorted(bank.pseudonyms)
    assert {(s["checked_at"], s["registered"]) for s in before["subjects"]} == {(None, None)}
    manager.ok("post", f"/requests/{code}/opt-out-checks", {"registered": [], "note": "VAV 1/6"})
    checked = manager.ok("get", f"/requests/{code}/eligibility")
    assert all(line["eligible"] and line["reasons"] == [] for line in checked["lines"])
    assert {s["registered"] for s in checked["subjects"]} == {False}

    left_out = d28[-1]["aliquot"]
    chosen = [c for c in codes_of(rh["lines"]) if c != left_out]
    wrong = manager.post(
        f"/requests/{code}/decision",
        {"decision": "approved", "password": "wrong", "approve": chosen},
    )
    assert wrong.status_code == 422 and wrong.json["field"] == "password"
    assert "nothing was signed or changed" in wrong.json["message"]
    unchanged = manager.ok("get", f"/requests/{code}")
    assert unchanged["state"] == "under_review" and unchanged["counts"]["requested"] == 7
    assert {item_state(app, c) for c in chosen} == {State.STORED}
    decided = manager.ok(
        "post",
        f"/requests/{code}/decision",
        {"decision": "approved", "password": PASSWORD, "comment": "fine", "approve": chosen},
    )
    assert decided["state"] == "partly_approved"
    assert (decided["counts"]["approved"], decided["counts"]["not_approved"]) == (6, 1)
    assert {item_state(app, c) for c in chosen} == {State.RESERVED}
    assert item_state(app, left_out) is State.STORED
    out = next(line for line in decided["lines"] if line["aliquot"] == left_out)
    assert (out["status"], out["reason"]) == ("not_approved", "not chosen by the manager")
    (signed,) = decided["reviews"]
    assert (signed["stage"], signed["decision"], signed["signer"], signed["approved_count"]) == (
        "manager",
        "approved",
        "Mona Manager",
        6,
    )
    assert (signed["comment"], signed["study"]) == ("fine", None) and signed["signed_at"]

    # Picking: the list in freezer order; a wrong tube is refused loudly and nothing changes.
    entries = tech.ok("get", f"/requests/{code}/pick-list")["entries"]
    assert sorted(codes_of(entries)) == sorted(chosen)
    assert {(e["storage_unit"], e["rack"], e["box"]) for e in entries} == {
        ("RH-F80", "R1", "RH-B1")
    }
    indices = [tech.ok("get", f"/items/{e['aliquot']}/location")["index"] for e in entries]
    assert indices == sorted(indices)
    assert [e["position"] for e in entries] == [
        tech.ok("get", f"/items/{e['aliquot']}/location")["position"] for e in entries
    ]
    for scan in (stranger, left_out):
        refused = tech.post(f"/requests/{code}/picks", {"scan": scan})
        assert refused.status_code == 409, refused.json
        assert refused.json["message"].startswith(f"WRONG TUBE: {scan}")
    never_issued = format_local_id("RH", 9_999_999)
    unknown = tech.post(f"/requests/{code}/picks", {"scan": never_issued})
    assert unknown.status_code == 404 and unknown.json["field"] == "scan"
    for number, entry in enumerate(entries[:-1], start=1):
        picked = tech.ok("post", f"/requests/{code}/picks", {"scan": entry["aliquot"]})
        assert (picked["line"]["status"], picked["to_pick"]) == ("picked", 6 - number)
        spot = picked["line"]["location"]  # out of its box: where it was taken from
        assert (spot["box"], spot["path"]) == (None, f"RH-F80 / R1 / RH-B1 / {entry['position']}")
    assert picked["state"] == "picking"
    again = tech.post(f"/requests/{code}/picks", {"scan": entries[0]["aliquot"]})
    assert again.status_code == 409 and "picked already" in again.json["message"]
    early = tech.post(f"/requests/{code}/dispatch", {"courier": "Karl Collector"})
    assert early.status_code == 409 and "Pick every tube" in early.json["message"]
    missing = entries[-1]["aliquot"]
    short = tech.ok(
        "post",
        f"/requests/{code}/short-picks",
        {"item": missing, "kind": "missing", "reason": "not at its position"},
    )
    line = short["line"]
    assert (line["status"], line["short_kind"], line["reason"], short["to_pick"]) == (
        "short",
        "missing",
        "not at its position",
        0,
    )
    assert item_state(app, missing) is State.LOST
    listing = tech.ok("get", f"/requests/{code}/pick-list")
    assert (listing["entries"], listing["picked"], listing["state"]) == ([], 5, "picking")

    # Hand-over in person, the manifest, and the receipt that closes the request.
    sent = tech.ok("post", f"/requests/{code}/dispatch", {"courier": "Karl Collector"})
    assert sent["state"] == "handed_over"
    assert (sent["dispatch"]["courier"], sent["dispatch"]["conditions"]) == ("Karl Collector", None)
    assert sent["dispatch"]["dispatched_at"] and sent["dispatch"]["received_at"] is None
    travelled = [e["aliquot"] for e in entries[:-1]]
    papers = researcher.ok("get", f"/requests/{code}/manifest")
    assert papers["columns"][:3] == ["aliquot", "check", "subject"]
    assert sorted(row["aliquot"] for row in papers["rows"]) == sorted(travelled)
    assert all(set(row) == set(papers["columns"]) for row in papers["rows"])
    assert {row["material_type"] for row in papers["rows"]} == {"plasma"}
    assert tech.ok("get", f"/requests/{code}/manifest")["rows"] == papers["rows"]
    closed = researcher.ok("post", f"/requests/{code}/receipt", {"note": "five tubes, frozen"})
    assert closed["state"] == "closed" and closed["dispatch"]["received_at"]
    assert {k: v for k, v in closed["counts"].items() if v} == {
        "received": 5,
        "short": 1,
        "not_approved": 1,
    }
    assert {item_state(app, c) for c in travelled} == {State.DISTRIBUTED}

    # The researcher's inbox told them each step; one is marked read.
    inbox = researcher.ok("get", "/notifications")
    kinds = [n["kind"] for n in inbox["notifications"] if n["request"] == code]
    assert kinds == [
        "received",
        "handed_over",
        "ready",
        "short_pick",
        "partly_approved",
        "under_review",
    ]
    assert inbox["unread"] == inbox["total"] == len(inbox["notifications"])
    newest = inbox["notifications"][0]
    assert newest["label"] == "Receipt confirmed" and newest["read_at"] is None
    read = researcher.ok("post", f"/notifications/{newest['id']}/read")
    assert read["id"] == newest["id"] and read["read_at"]
    assert researcher.ok("get", "/notifications?per_page=1")["unread"] == inbox["unread"] - 1
    assert (
        researcher.ok("get", "/notifications?per_page=1&page=2")["notifications"][0]["id"]
        == (inbox["notifications"][1]["id"])
    )
    refused = tech.post(f"/notifications/{newest['id']}/read")
    assert refused.status_code == 404  # someone else's: as if there were none

    assert_no_identity(world)


# -- the access committee, shipment, cancelling ------------------------------------------------


def test_the_committee_signs_first_and_a_shipment_needs_its_conditions(app, world):
    bank, manager, member = world.bank, world.manager, world.member
    app.config["LIMS"]["requests"]["access_committee"] = {STUDY: [member.username]}
    first = bank.pseudonyms[0]
    code = submitted(world, bank.tubes[(first, "D0")], delivery="shipment")
    assert code in [r["code"] for r in member.ok("get", "/requests")["requests"]]
    seen = member.ok("get", f"/requests/{code}")
    assert seen["committee_studies"] == [STUDY] and seen["steps"] == ["committee"]
    assert all("location" not in line for line in seen["lines"])  # not the site's staff
    assert len(member.ok("get", f"/requests/{code}/eligibility")["lines"]) == 2
    world.tech.refused("get", f"/requests/{code}/eligibility", 403)
    world.elsewhere.refused("get", f"/requests/{code}", 404)  # OUH, not on the committee

    manager.ok("post", f"/requests/{code}/opt-out-checks", {"registered": []})
    early = manager.post(
        f"/requests/{code}/decision", {"decision": "approved", "password": PASSWORD}
    )
    assert early.status_code == 409 and "committee has not decided" in early.json["message"]
    vote = {"study": STUDY, "decision": "approved", "password": "wrong"}
    member.refused("post", f"/requests/{code}/committee", 422, vote, field="password")
    member.refused("post", f"/requests/{code}/committee", 422, vote | {"study": "X-9"}, "study")
    manager.refused("post", f"/requests/{code}/committee", 403, vote | {"password": PASSWORD})
    done = member.ok("post", f"/requests/{code}/committee", vote | {"password": PASSWORD})
    assert [(r["stage"], r["study"], r["signer"]) for r in done["reviews"]] == [
        ("committee", STUDY, "Olga Board")
    ]
    member.refused("post", f"/requests/{code}/committee", 409, vote | {"password": PASSWORD})
    assert approved(world, code)["state"] == "approved"

    for tube in bank.tubes[(first, "D0")]:
        world.tech.ok("post", f"/requests/{code}/picks", {"scan": tube})
    world.tech.refused("post", f"/requests/{code}/dispatch", 422, {"courier": "DHL"}, "conditions")
    bad = {"courier": "DHL", "conditions": "warm"}
    world.tech.refused("post", f"/requests/{code}/dispatch", 422, bad, "conditions")
    sent = world.tech.ok(
        "post",
        f"/requests/{code}/dispatch",
        {
            "courier": "World Courier",
            "conditions": "dry_ice",
            "logger_ref": "LOG-7",
            "tracking_ref": "TRK-1",
        },
    )
    assert sent["state"] == "shipped"
    assert {
        k: sent["dispatch"][k] for k in ("courier", "conditions", "logger_ref", "tracking_ref")
    } == {
        "courier": "World Courier",
        "conditions": "dry_ice",
        "logger_ref": "LOG-7",
        "tracking_ref": "TRK-1",
    }
    assert world.tech.ok("post", f"/requests/{code}/receipt")["state"] == "closed"
    assert_no_identity(world)


def test_a_researcher_cancels_and_the_reserved_tubes_are_freed(app, world):
    tubes = world.bank.tubes[(world.bank.pseudonyms[1], "D7")]
    code = submitted(world, tubes)
    assert approved(world, code)["state"] == "approved"
    assert {item_state(app, c) for c in tubes} == {State.RESERVED}
    world.researcher.refused("post", f"/requests/{code}/cancel", 422, {"reason": " "}, "reason")
    world.colleague.refused("post", f"/requests/{code}/cancel", 404, {"reason": "mine now"})
    cancelled = world.researcher.ok("post", f"/requests/{code}/cancel", {"reason": "grant ended"})
    assert cancelled["state"] == "cancelled" and cancelled["counts"]["withdrawn"] == 2
    assert {line["reason"] for line in cancelled["lines"]} == {"request cancelled: grant ended"}
    assert {item_state(app, c) for c in tubes} == {State.STORED}
    world.researcher.refused("post", f"/requests/{code}/cancel", 409, {"reason": "again"})
    assert_no_identity(world)


# -- refusals ----------------------------------------------------------------------------------


def test_each_role_is_refused_what_it_may_not_do(world):
    bank = world.bank
    code = draft(world, bank.tubes[(bank.pseudonyms[0], "D0")])
    for client, method, path in [
        (world.tech, "post", "/requests"),
        (world.manager, "get", "/requests/search"),
        (world.admin, "get", "/requests"),
        (world.manager, "post", f"/requests/{code}/items"),
        (world.manager, "post", f"/requests/{code}/submit"),
        (world.researcher, "post", f"/requests/{code}/review/start"),
        (world.researcher, "post", f"/requests/{code}/decision"),
        (world.researcher, "post", f"/requests/{code}/opt-out-checks"),
        (world.researcher, "get", f"/requests/{code}/pick-list"),
        (world.researcher, "post", f"/requests/{code}/picks"),
        (world.researcher, "post", f"/requests/{code}/dispatch"),
        (world.tech, "patch", f"/requests/{code}"),
        (world.tech, "delete", f"/requests/{code}/items/x"),
    ]:
        refused = client.refused(method, path, 403, {})
        assert refused["error"] == "forbidden", (method, path)
    # Nobody but its researcher sees a draft; the answer is the one for an unknown code.
    unknown = world.colleague.refused("get", "/requests/REQ-2099-99999", 404)
    for client in (world.colleague, world.manager, world.tech, world.member):
        hidden = client.refused("get", f"/requests/{code}", 404)
        assert hidden["message"] == unknown["message"].replace("REQ-2099-99999", code)
    world.researcher.ok("post", f"/requests/{code}/submit")
    world.auh_tech.refused("get", f"/requests/{code}/pick-list", 404)  # another site's
    world.elsewhere.refused("get", f"/requests/{code}", 404)
    world.tech.refused("get", f"/requests/{code}/eligibility", 403)
    world.researcher.refused("get", f"/requests/{code}/eligibility", 403)
    world.manager.refused("post", f"/requests/{code}/items", 403, {"items": []})
    world.researcher.refused("post", f"/requests/{code}/items", 409, {"items": [bank.auh_tube]})
    world.researcher.refused("post", f"/requests/{code}/receipt", 409)
    world.tech.refused("post", f"/requests/{code}/picks", 409, {"scan": bank.auh_tube})
    assert_no_identity(world)


@pytest.mark.parametrize(
    ("data", "content_type", "words"),
    [
        ('{"title": "x",', "application/json", "not valid JSON"),
        ('["title"]', "application/json", "must be a JSON object"),
        ("title=x", "application/x-www-form-urlencoded", "Content-Type: application/json"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(world, data, content_type, words):
    response = world.researcher.post("/requests", data=data, content_type=content_type)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"] == "malformed_request" and words in response.json["message"]
    code = draft(world)
    broken = world.researcher.post(f"/requests/{code}/submit", data=data, content_type=content_type)
    assert broken.status_code == 400


def test_wrong_values_are_422_naming_the_key_and_change_nothing(app, world):
    bank, researcher = world.bank, world.researcher
    for body, field in [
        ({}, "title"),
        ({"title": " "}, "title"),
        ({"title": 7}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": "x", "delivery": "drone"}, "delivery"),
        ({"title": "x", "genetic": "yes"}, "genetic"),
        ({"title": "x", "colour": "red"}, "colour"),
        ({"title": "x\x00"}, "title"),
        ({"title": "x\ud800y"}, "title"),  # a lone surrogate: not storable text
    ]:
        researcher.refused("post", "/requests", 422, body, field)
    assert researcher.ok("get", "/requests")["requests"] == []  # nothing was made

    code = draft(world, title="Short", intended_analyses="")
    tube = bank.tubes[(bank.pseudonyms[0], "D0")][0]
    for path, body, field in [
        ("items", {"items": tube}, "items"),
        ("items", {"items": [7]}, "items"),
        ("items", {"items": []}, "items"),
        ("criteria", {"material_type": "plasma"}, "study"),
        ("criteria", {"study": STUDY, "material_type": "blood"}, "material_type"),
        ("criteria", {"study": STUDY, "material_type": "plasma", "per_subject": 0}, "per_subject"),
        ("criteria", {"study": STUDY, "material_type": "plasma", "timepoints": "D0"}, "timepoints"),
        (
            "criteria",
            {"study": STUDY, "material_type": "plasma", "min_quantity": -1},
            "min_quantity",
        ),
        ("criteria", {"study": STUDY, "material_type": "plasma", "max_thaws": 1.5}, "max_thaws"),
        (
            "criteria",
            {"study": STUDY, "material_type": "plasma", "timepoints": ["D 7!"]},
            "timepoints",
        ),
    ]:
        researcher.refused("post", f"/requests/{code}/{path}", 422, body, field)
    nothing = researcher.refused(
        "post", f"/requests/{code}/items", 409, {"items": [tube, "RH-NOPE"]}
    )
    assert nothing["field"] == "items" and "Nothing was added" in nothing["message"]
    researcher.refused("patch", f"/requests/{code}", 422, {"external": 1}, "external")
    researcher.refused("delete", f"/requests/{code}/items/{tube}", 404)
    researcher.refused("delete", f"/requests/{code}/criteria/99999999999", 404)
    unfinished = researcher.refused("post", f"/requests/{code}/submit", 422)
    assert unfinished["message"] == "Fill in before submitting: Intended analyses."
    researcher.ok("patch", f"/requests/{code}", {"intended_analyses": "ELISA"})
    empty = researcher.refused("post", f"/requests/{code}/submit", 422, field="items")
    assert "Choose aliquots" in empty["message"]
    assert researcher.ok("get", f"/requests/{code}")["state"] == "draft"

    for query, field in [
        ("page=abc", "page"),
        ("per_page=501", "per_page"),
        ("day_from=5&day_to=1", "day_to"),
        ("material_type=gold", "material_type"),
        ("max_thaws=-1", "max_thaws"),
        ("min_quantity=lots", "min_quantity"),
        ("study=CART%00", "study"),
    ]:
        researcher.refused("get", f"/requests/search?{query}", 422, field=field)
    researcher.refused("get", "/requests/search/aliquots?timepoint=D0", 422, field="subject")
    researcher.refused("get", "/requests?state=open", 422, field="state")
    researcher.refused("get", "/requests/REQ%00", 422, field="code")
    for query, field in [("page=0", "page"), ("per_page=1000", "per_page"), ("page=x", "page")]:
        researcher.refused("get", f"/notifications?{query}", 422, field=field)
    for notification in ("abc", "0", "99999999999", "%C2%B2"):
        researcher.refused("post", f"/notifications/{notification}/read", 404)
    assert_no_identity(world)


def test_a_decision_and_the_bench_steps_check_their_values(app, world):
    bank, manager, tech = world.bank, world.manager, world.tech
    tubes = bank.tubes[(bank.pseudonyms[2], "D0")]
    code = submitted(world, tubes)
    manager.ok("post", f"/requests/{code}/opt-out-checks", {"registered": []})
    for body, field in [
        ({"password": PASSWORD}, "decision"),
        ({"decision": "maybe", "password": PASSWORD}, "decision"),
        ({"decision": "approved"}, "password"),
        ({"decision": "approved", "password": PASSWORD, "approve": "all"}, "approve"),
        ({"decision": "approved", "password": PASSWORD, "approve": ["RH-NOPE"]}, "approve"),
        ({"decision": "approved", "password": PASSWORD, "approve": []}, "approve"),
        ({"decision": "rejected", "password": PASSWORD}, "comment"),
    ]:
        manager.refused("post", f"/requests/{code}/decision", 422, body, field)
    manager.refused("post", f"/requests/{code}/opt-out-checks", 422, {}, "registered")
    stranger = manager.refused(
        "post", f"/requests/{code}/opt-out-checks", 422, {"registered": ["S-NOBODY"]}, "registered"
    )
    assert "S-NOBODY" in stranger["message"]
    assert {item_state(app, c) for c in tubes} == {State.STORED}
    approved(world, code)
    for body, field in [
        ({"item": tubes[0], "kind": "lost", "reason": "x"}, "kind"),
        ({"item": tubes[0], "kind": "damaged"}, "reason"),
        ({"item": tubes[0], "kind": "damaged", "reason": " "}, "reason"),
        ({"kind": "damaged", "reason": "x"}, "item"),
    ]:
        tech.refused("post", f"/requests/{code}/short-picks", 422, body, field)
    tech.refused("post", f"/requests/{code}/picks", 422, {"scan": 7}, "scan")
    tech.refused("post", f"/requests/{code}/picks", 422, {"code": tubes[0]}, "code")
    tech.ok(
        "post",
        f"/requests/{code}/short-picks",
        {"item": tubes[0], "kind": "damaged", "reason": "cracked"},
    )
    assert item_state(app, tubes[0]) is State.DISCARDED
    tech.refused(
        "post",
        f"/requests/{code}/short-picks",
        409,
        {"item": tubes[0], "kind": "damaged", "reason": "x"},
    )
    tech.ok("post", f"/requests/{code}/picks", {"scan": tubes[1]})
    tech.refused("post", f"/requests/{code}/dispatch", 422, {"courier": ""}, "courier")
    tech.refused("post", f"/requests/{code}/dispatch", 422, {"courier": "x" * 201}, "courier")
    tech.refused("post", f"/requests/{code}/receipt", 409)
    world.researcher.refused("post", f"/requests/{code}/receipt", 422, {"note": "n" * 501}, "note")


def test_a_rejection_is_signed_and_told(world):
    code = submitted(world, world.bank.tubes[(world.bank.pseudonyms[1], "D28")])
    body = {"decision": "rejected", "password": PASSWORD, "comment": "no ethics approval on file"}
    rejected = world.manager.ok("post", f"/requests/{code}/decision", body)
    assert rejected["state"] == "rejected" and rejected["counts"]["not_approved"] == 2
    assert [(r["decision"], r["comment"]) for r in rejected["reviews"]] == [
        ("rejected", "no ethics approval on file")
    ]
    told = world.researcher.ok("get", "/notifications")["notifications"][0]
    assert (told["kind"], told["request"]) == ("rejected", code)
    assert told["message"] == f"Request {code} was rejected: no ethics approval on file"
    assert world.researcher.ok("get", f"/requests/{code}")["steps"] == []
    assert_no_identity(world)


# -- the document ------------------------------------------------------------------------------


def request_routes(document) -> dict[tuple[str, str], dict]:
    return {
        (path, method): operation
        for path, operations in document["paths"].items()
        if path.startswith(("/api/v1/requests", "/api/v1/notifications"))
        for method, operation in operations.items()
    }


def test_the_document_names_each_request_route_its_roles_and_answers(world):
    document = world.manager.ok("get", "/openapi.json")
    routes = request_routes(document)
    assert len(routes) == 25
    roles = {key: op["x-roles"] for key, op in routes.items()}
    assert roles[("/api/v1/requests/search", "get")] == ["researcher"]
    assert roles[("/api/v1/requests/{code}/decision", "post")] == ["manager"]
    assert roles[("/api/v1/requests/{code}/picks", "post")] == ["technician", "manager"]
    assert roles[("/api/v1/requests", "get")] == ["technician", "manager", "researcher"]
    assert len(roles[("/api/v1/requests/{code}/committee", "post")]) == 4
    schemas = document["components"]["schemas"]
    assert schemas["RequestDecision"]["required"] == ["decision", "password"]
    assert schemas["Request"]["properties"]["state"]["enum"][0] == "draft"
    search = routes[("/api/v1/requests/search", "get")]
    site = next(p for p in search["parameters"] if p["name"] == "site")
    assert site["description"] == "Code of the site keeping the tube."
    assert set(schemas["RequestLine"]["required"]) == set(RESEARCHER_LINE_KEYS)
    assert "location" not in schemas["RequestLine"]["required"]

    bank = world.bank
    code = submitted(world, bank.tubes[(bank.pseudonyms[0], "D0")])
    staff = world.manager.ok("get", f"/requests/{code}")
    assert set(staff) == set(schemas["Request"]["required"])
    assert set(staff["lines"][0]) == set(schemas["RequestLine"]["properties"])
    assert set(staff["lines"][0]["location"]) == set(schemas["StorageSpot"]["required"])
    own = world.researcher.ok("get", "/requests")["requests"][0]
    assert set(own) == set(schemas["RequestSummary"]["required"])
    group = world.researcher.ok("get", "/requests/search")["groups"][0]
    assert set(group) == set(schemas["SearchGroup"]["required"])


def test_every_request_body_is_checked_before_any_service_runs(world):
    """As for the other routes: a broken body is 400, an empty one 422 naming its first
    required key, or, when nothing is required, 404 for the unknown request 'X'."""
    document = world.manager.ok("get", "/openapi.json")
    schemas = document["components"]["schemas"]
    by_role = {"researcher": world.researcher, "manager": world.manager, "technician": world.tech}
    checked = set()
    for (path, method), operation in request_routes(document).items():
        if "requestBody" not in operation:
            continue
        client = next(by_role[role] for role in by_role if role in operation["x-roles"])
        url = re.sub(r"{\w+}", "X", path)
        send = getattr(client.client, method)
        broken = send(url, headers=client.headers, data="{", content_type="application/json")
        assert broken.status_code == 400, url
        empty = send(url, headers=client.headers, json={})
        name = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        required = schemas[name.rsplit("/", 1)[1]].get("required", [])
        if required:
            assert empty.status_code == 422 and empty.json["field"] == required[0], url
        else:
            assert empty.status_code == 404, url
        checked.add(name.rsplit("/", 1)[1])
    assert checked == {body.name for body in REQUEST_BODIES}


def test_notifications_of_other_users_stay_theirs(app, world):
    code = submitted(world, world.bank.tubes[(world.bank.pseudonyms[0], "D28")])
    inbox = world.manager.ok("get", "/notifications")
    (told,) = inbox["notifications"]
    assert (told["kind"], told["request"], inbox["unread"]) == ("submitted", code, 1)
    with app.app_context():
        ids = set(lims_db.session().scalars(select(Notification.id)))
    assert ids == {told["id"]}
    world.researcher.refused("post", f"/notifications/{told['id']}/read", 404)
    assert world.manager.ok("get", "/notifications")["unread"] == 1
    assert world.admin.ok("get", "/notifications")["notifications"] == []
