"""What the API answers: items, custody events, patients, episodes, lots, holds, shipments and
follow-up schedules, as JSON.

Times are ISO 8601 in UTC with a ``Z``. No function here ever puts a CPR number, a name or a
birth date into its answer: identity is only in :func:`identity_json`, which the identity
endpoint alone uses. Researchers get :data:`RESEARCHER_ITEM_KEYS` of an item and nothing else,
a whitelist, so a key added to the item later stays hidden from them until chosen.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lims import identifiers
from lims.audit.models import ESignature
from lims.auth.models import Role, Site, User
from lims.custody.bedside import CheckOutcome
from lims.custody.domain import Kind, available_actions
from lims.custody.holds import open_holds
from lims.custody.models import CustodyEvent, Hold, Item, ProductLot, QcResult
from lims.followup.domain import ScheduledTimepoint
from lims.followup.services import EpisodeSchedule, Worklist, WorklistRow
from lims.patients.models import Episode, Patient
from lims.patients.services import Identity
from lims.shipments.excursions import reading_count
from lims.shipments.models import Shipment, ShipmentLine
from lims.shipments.receipt import Reconciliation
from lims.shipments.services import LineOutcome

#: The item keys a researcher receives: no calendar dates, no people, no CoI, no lot.
RESEARCHER_ITEM_KEYS = (
    "code",
    "check_character",
    "kind",
    "material_type",
    "state",
    "quantity",
    "unit",
    "cell_count",
    "timepoint",
    "timepoint_day",
    "aliquot",
    "parent",
    "pseudonym",
    "site",
    "thaw_count",
    "on_hold",
    "actions",
)

#: An item as a box map shows it (storage answers): what it is and its timepoint, nothing that
#: leads to the patient, no dates.
STORED_ITEM_KEYS = (
    "code",
    "check_character",
    "kind",
    "material_type",
    "state",
    "timepoint",
    "timepoint_day",
    "quantity",
    "unit",
)


def iso(value: datetime | date | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value.isoformat()


def amount(value: Decimal | None) -> int | float | None:
    """A stored quantity as a JSON number (whole numbers without a decimal point)."""
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


# -- items -------------------------------------------------------------------------------------


def item_json(session: Session, item: Item, role: Role) -> dict[str, Any]:
    """The item as ``role`` may see it (researchers: the reduced whitelist)."""
    holds = open_holds(session, item.id)
    parent = item.parent
    full = {
        "code": item.code,
        "check_character": item.check_character,
        "kind": item.kind.value,
        "material_type": item.material_type.value,
        "state": item.state.value,
        "quantity": amount(item.quantity),
        "unit": item.unit,
        "cell_count": item.cell_count,
        "timepoint": item.timepoint,
        "timepoint_day": item.timepoint_day,
        "aliquot": (
            {"number": item.aliquot_number, "total": item.aliquot_total}
            if item.aliquot_number is not None
            else None
        ),
        "parent": parent.code if parent is not None else None,
        "lot_number": item.lot.lot_number if item.lot is not None else None,
        "coi": item.episode.coi,
        "coi_check_character": item.episode.coi_check,
        "pseudonym": item.episode.patient.pseudonym,
        "site": item.site.code,
        "location": item.location,
        "custodian": item.custodian,
        "thaw_count": item.thaw_count,
        "collected_at": iso(item.collected_at),
        "created_at": iso(item.created_at),
        "expires_at": iso(item.expires_at),
        "thawed_at": iso(item.thawed_at),
        "on_hold": bool(holds),
        "holds": [hold_json(hold) for hold in holds],
        "actions": [action.value for action in available_actions(item.kind, item.state, role)],
    }
    if role is not Role.RESEARCHER:
        return full
    reduced = {key: full[key] for key in RESEARCHER_ITEM_KEYS}
    if parent is not None and parent.kind is not Kind.ALIQUOT:
        # A bag's or collection's DIN carries the collection year: not for researchers.
        reduced["parent"] = None
    return reduced


def child_json(item: Item) -> dict[str, Any]:
    """A new aliquot in the answer to an aliquoting run."""
    return {
        "code": item.code,
        "check_character": item.check_character,
        "material_type": item.material_type.value,
        "quantity": amount(item.quantity),
        "unit": item.unit,
        "state": item.state.value,
        "aliquot": {"number": item.aliquot_number, "total": item.aliquot_total},
    }


def hold_json(hold: Hold) -> dict[str, Any]:
    return {
        "id": hold.id,
        "item": hold.item.code,
        "reason": hold.reason.value,
        "detail": hold.detail,
        "placed_at": iso(hold.placed_at),
        "cleared_at": iso(hold.cleared_at),
        "clear_reason": hold.clear_reason,
    }


# -- custody events ------------------------------------------------------------------------


class EventContext:
    """Site codes and signatures the events refer to by id, loaded in two queries."""

    def __init__(self, session: Session, events: Iterable[CustodyEvent]) -> None:
        events = list(events)
        site_ids = {e.from_site_id for e in events} | {e.to_site_id for e in events}
        site_ids.discard(None)
        signature_ids = {e.signature_id for e in events} | {e.witness_signature_id for e in events}
        signature_ids.discard(None)
        self.sites: dict[int, str] = {}
        if site_ids:
            rows = session.execute(select(Site.id, Site.code).where(Site.id.in_(site_ids)))
            self.sites = {site_id: code for site_id, code in rows}
        self.signatures = {
            signature.id: signature
            for signature in (
                session.scalars(select(ESignature).where(ESignature.id.in_(signature_ids)))
                if signature_ids
                else []
            )
        }


def signature_json(signature: ESignature | None) -> dict[str, Any] | None:
    if signature is None:
        return None
    return {
        "printed_name": signature.printed_name,
        "meaning": signature.meaning,
        "signed_at": iso(signature.signed_at),
    }


def event_json(event: CustodyEvent, context: EventContext) -> dict[str, Any]:
    return {
        "at": iso(event.at),
        "actor": event.user.username if event.user is not None else "command line",
        "action": event.action,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "from_site": context.sites.get(event.from_site_id),
        "to_site": context.sites.get(event.to_site_id),
        "from_location": event.from_location,
        "to_location": event.to_location,
        "from_custodian": event.from_custodian,
        "to_custodian": event.to_custodian,
        "reason": event.reason,
        "temperature_logger_ref": event.temperature_logger_ref,
        "signature": signature_json(context.signatures.get(event.signature_id)),
        #: The second person's signature (release, receipt at the treating site, bedside).
        "witness_signature": signature_json(context.signatures.get(event.witness_signature_id)),
    }


def events_json(session: Session, events: list[CustodyEvent]) -> list[dict[str, Any]]:
    context = EventContext(session, events)
    return [event_json(event, context) for event in events]


# -- patients and episodes -----------------------------------------------------------------


def episode_json(episode: Episode) -> dict[str, Any]:
    return {
        "coi": episode.coi,
        "coi_check_character": episode.coi_check,
        "coi_eye_readable": identifiers.format_coi(episode.coi),
        "pseudonym": episode.patient.pseudonym,
        "product_name": episode.product_name,
        "product_kind": episode.product_kind.value,
        "protocol": episode.protocol,
        "treating_site": episode.treating_site.code,
        "planned_infusion_date": iso(episode.planned_infusion_date),
        "infused_at": iso(episode.infused_at),
        "created_at": iso(episode.created_at),
    }


def patient_json(patient: Patient) -> dict[str, Any]:
    """The pseudonymous patient: never the identity (see :func:`identity_json`)."""
    return {
        "pseudonym": patient.pseudonym,
        "identifier_kind": patient.identifier_kind.value,
        "treating_site": patient.treating_site.code,
        "consent_biobank": patient.consent_biobank,
        "consent_genetic": patient.consent_genetic,
        "consent_withdrawn": patient.consent_withdrawn_at is not None,
        "consent_withdrawn_at": iso(patient.consent_withdrawn_at),
        "episodes": [
            episode_json(episode) for episode in sorted(patient.episodes, key=lambda e: e.id)
        ],
    }


def identity_json(pseudonym: str, identity: Identity) -> dict[str, Any]:
    return {
        "pseudonym": pseudonym,
        "identifier": identity.identifier,
        "identifier_kind": identity.identifier_kind.value,
        "name": identity.name,
        "birth_date": iso(identity.birth_date),
    }


# -- production ----------------------------------------------------------------------------


def qc_json(result: QcResult) -> dict[str, Any]:
    return {
        "lot_number": result.lot.lot_number,
        "test": result.test,
        "value": result.value,
        "unit": result.unit,
        "specification": result.specification,
        "passed": result.passed,
        "entered_at": iso(result.entered_at),
    }


def lot_json(session: Session, lot: ProductLot, role: Role) -> dict[str, Any]:
    return {
        "lot_number": lot.lot_number,
        "coi": lot.episode.coi,
        "coi_check_character": lot.episode.coi_check,
        "manufactured_at": iso(lot.manufactured_at),
        "bags": [item_json(session, bag, role) for bag in sorted(lot.bags, key=lambda b: b.id)],
    }


def bedside_json(session: Session, outcome: CheckOutcome) -> dict[str, Any]:
    bag = session.get(Item, outcome.check.item_id)
    return {
        "passed": outcome.passed,
        "bag": bag.code,
        "state": bag.state.value,
        "coi": bag.episode.coi,
        "checked_at": iso(outcome.check.checked_at),
        "mismatches": list(outcome.mismatches),
    }


# -- shipments -----------------------------------------------------------------------------


def usernames(session: Session, user_ids: Iterable[int | None]) -> dict[int, str]:
    ids = {user_id for user_id in user_ids if user_id is not None}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.username).where(User.id.in_(ids))).all())


def shipment_line_json(line: ShipmentLine) -> dict[str, Any]:
    """One line; ``kind`` and ``state`` only when the code is one of ours."""
    item = line.item
    return {
        "code": line.scanned_code,
        "container": line.container,
        "status": line.status.value,
        "kind": item.kind.value if item is not None else None,
        "state": item.state.value if item is not None else None,
        "added_at": iso(line.added_at),
        "scanned_at": iso(line.scanned_at),
    }


def reconciliation_json(found: Reconciliation) -> dict[str, Any]:
    return {
        "received": [line.scanned_code for line in found.received],
        "missing": [line.scanned_code for line in found.missing],
        "unexpected": [line.scanned_code for line in found.unexpected],
        "complete": found.complete,
    }


def logger_json(session: Session, shipment: Shipment) -> dict[str, Any] | None:
    """What the uploaded logger file showed, or None before one is uploaded."""
    if shipment.logger_uploaded_at is None:
        return None
    return {
        "file_name": shipment.logger_file_name,
        "uploaded_at": iso(shipment.logger_uploaded_at),
        "readings": reading_count(session, shipment),
        "min_c": amount(shipment.logger_min_c),
        "max_c": amount(shipment.logger_max_c),
        "excursions": shipment.logger_excursions,
    }


def shipment_json(session: Session, shipment: Shipment, found: Reconciliation) -> dict[str, Any]:
    names = usernames(
        session, (shipment.created_by_id, shipment.dispatched_by_id, shipment.received_by_id)
    )
    return {
        "code": shipment.code,
        "from_site": shipment.from_site.code,
        "to_site": shipment.to_site.code,
        "state": shipment.state.value,
        "conditions": shipment.conditions.value,
        "courier": shipment.courier,
        "tracking_ref": shipment.tracking_ref,
        "logger_ref": shipment.logger_ref,
        "created_at": iso(shipment.created_at),
        "created_by": names.get(shipment.created_by_id),
        "dispatched_at": iso(shipment.dispatched_at),
        "dispatched_by": names.get(shipment.dispatched_by_id),
        "received_at": iso(shipment.received_at),
        "received_by": names.get(shipment.received_by_id),
        "receipt_note": shipment.receipt_note,
        "logger": logger_json(session, shipment),
        "lines": [shipment_line_json(line) for line in shipment.lines],
        "reconciliation": reconciliation_json(found),
    }


def outcome_json(outcome: LineOutcome) -> dict[str, Any]:
    """What one scan did; ``loud`` ones are to be shown as errors (unexpected material)."""
    return {
        "status": outcome.kind,
        "code": outcome.line.scanned_code if outcome.line is not None else None,
        "message": outcome.message,
        "loud": outcome.loud,
    }


# -- follow-up -----------------------------------------------------------------------------


def timepoint_json(timepoint: ScheduledTimepoint) -> dict[str, Any]:
    return {
        "label": timepoint.label,
        "day": timepoint.day,
        "due": iso(timepoint.due),
        "window_start": iso(timepoint.window_start),
        "window_end": iso(timepoint.window_end),
        "status": timepoint.status.value,
        "days_overdue": timepoint.days_overdue,
        "expected": list(timepoint.expected),
        "collected": list(timepoint.collected),
        "missing": list(timepoint.missing),
    }


def schedule_json(schedule: EpisodeSchedule) -> dict[str, Any]:
    episode = schedule.episode
    return {
        "coi": episode.coi,
        "coi_check_character": episode.coi_check,
        "pseudonym": episode.patient.pseudonym,
        "product_name": episode.product_name,
        "plan": schedule.plan_name,
        "infused_on": iso(schedule.infused_on),
        "today": iso(schedule.today),
        "sampling_stopped": schedule.sampling_stopped,
        "timepoints": [timepoint_json(timepoint) for timepoint in schedule.timepoints],
    }


def worklist_row_json(row: WorklistRow) -> dict[str, Any]:
    return {
        "pseudonym": row.pseudonym,
        "coi": row.coi,
        "coi_check_character": row.coi_check,
        "product_name": row.product_name,
        "timepoint": row.timepoint,
        "day": row.day,
        "status": row.status.value,
        "due": iso(row.due),
        "window_end": iso(row.window_end),
        "days_overdue": row.days_overdue,
        "missing": list(row.missing),
    }


def worklist_json(work: Worklist) -> dict[str, Any]:
    return {
        "site": work.site.code,
        "today": iso(work.today),
        "overdue": [worklist_row_json(row) for row in work.overdue],
        "due": [worklist_row_json(row) for row in work.due],
        "missed": [worklist_row_json(row) for row in work.missed],
    }
