"""The JSON API under /api/v1. Bearer tokens only: browser cookies are not honoured here.

Each handler parses its body (:mod:`lims.api.bodies`), calls one service and serialises the
answer (:mod:`lims.api.serializers`). Services check roles again, commit, and raise a
``DomainError`` on refusal, which ``lims.web`` turns into a JSON error with its status.
The OpenAPI document (``/api/v1/openapi.json``) lists every route here and in
:mod:`lims.api.shipments` (same blueprint); a test keeps both equal.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request, url_for
from flask_login import current_user

from lims import db
from lims.api import bodies
from lims.api.openapi import build_document
from lims.api.payload import refuse_nul
from lims.api.serializers import (
    bedside_json,
    child_json,
    episode_json,
    events_json,
    hold_json,
    identity_json,
    item_json,
    lot_json,
    patient_json,
    qc_json,
    schedule_json,
    worklist_json,
)
from lims.auth.access import allow, allow_all_roles, public
from lims.auth.models import Role, User
from lims.auth.services import Witness, confirm_second_person
from lims.custody import bedside, holds, production
from lims.custody import services as custody
from lims.custody.models import Item
from lims.errors import NotFound
from lims.followup import services as followup
from lims.patients import services as patients
from lims.patients.models import IdentifierKind

bp = Blueprint("api", __name__, url_prefix="/api/v1")

#: Bench work: registering, moving and deriving material.
BENCH = (Role.TECHNICIAN, Role.MANAGER)
#: Reading custody records and episodes: the bench and administrators, never researchers.
RECORDS = (Role.TECHNICIAN, Role.MANAGER, Role.ADMIN)
MAX_ID = 2**31 - 1


@bp.before_request
def refuse_nul_in_path() -> None:
    """Runs after the access check: a code or pseudonym with a NUL is refused, not looked up."""
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str):
            refuse_nul(value, name)


def user_summary(user) -> dict:
    return {
        "username": user.username,
        "full_name": user.full_name,
        "role": user.role.value,
        "site": user.site.code,
    }


def actor() -> User:
    """The token's user as the model object the services expect (not the proxy)."""
    return current_user._get_current_object()


def witness_from(session, data: dict[str, Any]) -> Witness | None:
    """The second person named in the body, their password checked; None when not named."""
    if not data.get("witness_username"):
        return None
    return confirm_second_person(
        session,
        actor=actor(),
        username=data["witness_username"],
        password=data["witness_password"],
    )


def created(body: dict[str, Any], location: str | None = None) -> Any:
    response = jsonify(body)
    response.status_code = 201
    if location:
        response.headers["Location"] = location
    return response


def visible_item(code: str) -> Item:
    """The item, or 404 worded exactly as for an unknown code when the caller may not see it."""
    item = custody.find_item(db.session(), code)
    if not custody.visible_to(actor(), item):
        raise NotFound(f"No bag or tube with identifier {item.code}.", field="code")
    return item


def item_answer(item: Item) -> dict[str, Any]:
    return item_json(db.session(), item, current_user.role)


# -- general ---------------------------------------------------------------------------------


@bp.route("/")
@allow_all_roles
def index():
    return jsonify(version="1", links={"me": url_for("api.me"), "openapi": url_for("api.openapi")})


@bp.route("/me")
@allow_all_roles
def me():
    """Who the token belongs to: the first call to make when setting up an integration."""
    return jsonify(user_summary(current_user))


@bp.get("/openapi.json")
@public
def openapi():
    return jsonify(build_document(current_app))


# -- items and custody -------------------------------------------------------------------------


@bp.get("/items/<code>")
@allow_all_roles
def get_item(code: str):
    return jsonify(item_answer(visible_item(code)))


@bp.get("/items/<code>/events")
@allow(*RECORDS)
def item_events(code: str):
    session = db.session()
    item = custody.find_item(session, code)
    return jsonify(item=item.code, events=events_json(session, custody.events_of(session, item)))


@bp.get("/items/<code>/lineage")
@allow(*BENCH)
def item_lineage(code: str):
    item = custody.find_item(db.session(), code)
    chain = custody.lineage(item)
    return jsonify(
        item=item.code,
        lineage=[item_answer(link) for link in chain],
        episode=episode_json(item.episode),
    )


@bp.post("/items/<code>/actions/<action>")
@allow(*BENCH)
def perform_action(code: str, action: str):
    data = bodies.ACTION.parse()
    session = db.session()
    witness = witness_from(session, data)
    event = custody.perform_action(
        session,
        actor=actor(),
        code=code,
        action=action,
        reason=data["reason"],
        move=custody.Move(
            site_code=data["site"],
            location=data["location"],
            custodian=data["custodian"],
            temperature_logger_ref=data["temperature_logger_ref"],
        ),
        password=data["password"],
        witness=witness,
    )
    return jsonify(event=events_json(session, [event])[0], item=item_answer(event.item))


@bp.post("/items/<code>/aliquots")
@allow(*BENCH)
def make_aliquots(code: str):
    data = bodies.ALIQUOTS.parse()
    children = production.aliquot(
        db.session(),
        actor=actor(),
        parent_code=code,
        count=data["count"],
        quantity_each=data["quantity_each"],
        unit=data["unit"],
        material_type=data["material_type"],
        cell_count_each=data["cell_count_each"],
        timepoint=data["timepoint"],
        timepoint_day=data["timepoint_day"],
    )
    return created(
        {"parent": children[0].parent.code, "aliquots": [child_json(c) for c in children]}
    )


@bp.post("/items/<code>/holds")
@allow(*BENCH)
def place_hold(code: str):
    data = bodies.HOLD.parse()
    session = db.session()
    item = custody.find_item(session, code)
    hold = holds.place_hold(
        session, actor=actor(), item=item, reason=data["reason"], detail=data["detail"]
    )
    return created(hold_json(hold))


@bp.post("/holds/<int:hold_id>/clear")
@allow(Role.MANAGER)
def clear_hold(hold_id: int):
    data = bodies.HOLD_CLEARANCE.parse()
    if hold_id > MAX_ID:  # beyond an id column: unknown, not a database error
        raise NotFound("No such hold.")
    hold = holds.clear_hold(db.session(), actor=actor(), hold_id=hold_id, reason=data["reason"])
    return jsonify(hold_json(hold))


@bp.post("/lots")
@allow(*BENCH)
def create_lot():
    data = bodies.LOT.parse()
    session = db.session()
    lot = production.create_lot(
        session,
        actor=actor(),
        lot_number=data["lot_number"],
        apheresis_codes=data["apheresis"],
        bags=[production.BagSpec(bag["volume_ml"], bag["cell_count"]) for bag in data["bags"]],
        expires_at=data["expires_at"],
    )
    return created(lot_json(session, lot, current_user.role))


@bp.post("/lots/<lot_number>/qc")
@allow(*BENCH)
def add_qc_result(lot_number: str):
    data = bodies.QC_RESULT.parse()
    result = production.add_qc_result(
        db.session(),
        actor=actor(),
        lot_number=lot_number,
        test=data["test"],
        value=data["value"],
        passed=data["passed"],
        unit=data["unit"] or "",
        specification=data["specification"] or "",
    )
    return created(qc_json(result))


@bp.post("/bedside-checks")
@allow(*BENCH)
def bedside_check():
    data = bodies.BEDSIDE_CHECK.parse()
    session = db.session()
    outcome = bedside.bedside_check(
        session,
        actor=actor(),
        bag_scan=data["bag"],
        coi_scan=data["coi"],
        wristband_scan=data["wristband"],
        wristband_kind=data["wristband_kind"] or IdentifierKind.CPR,
        witness_username=data["witness_username"],
        witness_password=data["witness_password"],
    )
    return jsonify(bedside_json(session, outcome))


# -- patients and episodes -------------------------------------------------------------------


@bp.post("/patients")
@allow(*BENCH)
def register_patient():
    data = bodies.PATIENT.parse()
    patient, warnings = patients.register_patient(
        db.session(),
        actor=actor(),
        identifier=data["identifier"],
        identifier_kind=data["identifier_kind"] or IdentifierKind.CPR,
        name=data["name"],
        birth_date=data["birth_date"],
        treating_site_code=data["treating_site"],
        consent_biobank=bool(data["consent_biobank"]),
        consent_genetic=bool(data["consent_genetic"]),
    )
    return created(
        patient_json(patient) | {"warnings": warnings},
        url_for("api.get_patient", pseudonym=patient.pseudonym),
    )


@bp.get("/patients/<pseudonym>")
@allow(*RECORDS)
def get_patient(pseudonym: str):
    return jsonify(patient_json(patients.get_patient(db.session(), pseudonym)))


@bp.get("/patients/<pseudonym>/identity")
@allow(*BENCH)
def patient_identity(pseudonym: str):
    identity = patients.reveal_identity(db.session(), actor=actor(), pseudonym=pseudonym)
    return jsonify(identity_json(pseudonym.upper(), identity))


@bp.post("/patients/<pseudonym>/consent")
@allow(*BENCH)
def record_consent(pseudonym: str):
    data = bodies.CONSENT.parse()
    patient = patients.record_consent(
        db.session(),
        actor=actor(),
        pseudonym=pseudonym,
        biobank=data["biobank"],
        genetic=data["genetic"],
        withdrawn=data["withdrawn"],
        reason=data["reason"],
    )
    return jsonify(patient_json(patient))


@bp.post("/episodes")
@allow(*BENCH)
def register_episode():
    data = bodies.EPISODE.parse()
    episode = patients.register_episode(
        db.session(),
        actor=actor(),
        pseudonym=data["patient"],
        product_name=data["product_name"],
        product_kind=data["product_kind"],
        protocol=data["protocol"] or "",
        treating_site_code=data["treating_site"],
        planned_infusion_date=data["planned_infusion_date"],
    )
    return created(episode_json(episode), url_for("api.get_episode", coi=episode.coi))


@bp.get("/episodes/<coi>")
@allow(*RECORDS)
def get_episode(coi: str):
    return jsonify(episode_json(patients.get_episode(db.session(), coi)))


@bp.post("/episodes/<coi>/collections")
@allow(*BENCH)
def register_collection(coi: str):
    data = bodies.COLLECTION.parse()
    item = production.register_collection(
        db.session(),
        actor=actor(),
        coi=coi,
        volume_ml=data["volume_ml"],
        collected_at=data["collected_at"],
        collection_site_code=data["collection_site"],
        tnc_count=data["tnc_count"],
    )
    return created(item_answer(item), url_for("api.get_item", code=item.code))


@bp.post("/episodes/<coi>/samples")
@allow(*BENCH)
def register_sample(coi: str):
    data = bodies.SAMPLE.parse()
    item = production.register_sample(
        db.session(),
        actor=actor(),
        coi=coi,
        material_type=data["material_type"],
        quantity=data["quantity"],
        unit=data["unit"],
        collected_at=data["collected_at"],
        timepoint=data["timepoint"],
        timepoint_day=data["timepoint_day"],
        cell_count=data["cell_count"],
    )
    return created(item_answer(item), url_for("api.get_item", code=item.code))


# -- follow-up -------------------------------------------------------------------------------
# Calendar dates of a patient's draws: bench staff only. "Today" is the local date at the site.


@bp.get("/episodes/<coi>/followup")
@allow(*BENCH)
def episode_followup(coi: str):
    schedule = followup.episode_schedule(
        db.session(), actor=actor(), coi=coi, today=followup.local_today()
    )
    return jsonify(schedule_json(schedule))


@bp.get("/followup")
@allow(*BENCH)
def followup_worklist():
    site = request.args.get("site") or None
    if site is not None:
        refuse_nul(site, "site")
    work = followup.worklist(
        db.session(), actor=actor(), today=followup.local_today(), site_code=site
    )
    return jsonify(worklist_json(work))


# The shipment and storage routes live in their own modules on this blueprint.
from lims.api import requests, shipments, storage  # noqa: E402, F401
