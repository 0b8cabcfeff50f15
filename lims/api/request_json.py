"""The JSON answers of the request API: built from allow-lists, so a researcher's answer never
holds more than the keys named in ``request_schemas`` (no storage place, no identity)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from lims.api.request_schemas import PLACE
from lims.api.serializers import amount, iso
from lims.audit.models import ESignature
from lims.auth.models import Role, User
from lims.custody.models import Item
from lims.requests import review
from lims.requests.domain import STEPS
from lims.requests.fulfilment import PickEntry
from lims.requests.manifest import COLUMNS, ManifestRow
from lims.requests.models import (
    AliquotRequest,
    Notification,
    RequestCriterion,
    RequestLine,
    RequestReview,
)
from lims.requests.notify import InboxPage, kind_label
from lims.requests.search import AliquotRow, SearchFilters, SearchResult
from lims.requests.services import TEXT_FIELDS, committee_needed, committee_studies_of, counts
from lims.storage import services as storage
from lims.storage.models import Box

# -- answers -----------------------------------------------------------------------------------


def location_json(session: Session, item: Item) -> dict[str, Any]:
    box = session.get(Box, item.box_id) if item.box_id is not None else None
    if box is None:  # picked, checked out, gone: its last recorded place
        return {"site": item.site.code, **dict.fromkeys(PLACE), "path": item.location or None}
    return {
        "site": item.site.code,
        "storage_unit": box.unit.code,
        "rack": box.rack.code if box.rack else None,
        "box": box.code,
        "position": storage.position_name(box, item.position) or None,
        "path": storage.location_of(box, item.position),
    }


def sees_locations(actor: User, request: AliquotRequest) -> bool:
    """Storage is for the staff of the site where it stands (the request's, after the split)."""
    return actor.role in (Role.TECHNICIAN, Role.MANAGER) and actor.site_id == request.site_id


def line_json(session: Session, line: RequestLine, with_location: bool) -> dict[str, Any]:
    item = line.item
    answer = {
        "aliquot": item.code,
        "check_character": item.check_character,
        "subject": item.episode.patient.pseudonym,
        "study": item.episode.protocol,
        "timepoint": item.timepoint,
        "timepoint_day": item.timepoint_day,
        "material_type": item.material_type.value,
        "quantity": amount(item.quantity),
        "unit": item.unit,
        "thaw_count": item.thaw_count,
        "site": item.site.code,
        "status": line.status.value,
        "reason": line.reason,
        "short_kind": line.short_kind.value if line.short_kind else None,
        "criterion": line.criterion_id,
    }
    if with_location:
        answer["location"] = location_json(session, item)
    return answer


def criterion_json(criterion: RequestCriterion) -> dict[str, Any]:
    return {
        "id": criterion.id,
        "study": criterion.study,
        "material_type": criterion.material_type.value,
        "timepoints": [t for t in criterion.timepoints.split(",") if t],
        "per_subject": criterion.per_subject,
        "min_quantity": amount(criterion.min_quantity),
        "max_thaws": criterion.max_thaws,
        "site": criterion.site_code or None,
        "shortfall": [s for s in criterion.shortfall.splitlines() if s],
    }


def review_json(session: Session, entry: RequestReview) -> dict[str, Any]:
    signature = session.get(ESignature, entry.signature_id)
    return {
        "stage": entry.stage.value,
        "study": entry.study or None,
        "decision": entry.decision.value,
        "signer": signature.printed_name,
        "signed_at": iso(signature.signed_at),
        "comment": entry.comment,
        "approved_count": entry.approved_count,
    }


def counts_json(request: AliquotRequest) -> dict[str, int]:
    return {status.value: number for status, number in counts(request).items()}


def summary_json(request: AliquotRequest) -> dict[str, Any]:
    return {
        "code": request.code,
        "title": request.title,
        "state": request.state.value,
        "site": request.site.code,
        "submitted_at": iso(request.submitted_at),
        "counts": counts_json(request),
        "lines": len(request.lines),
    }


def request_json(session: Session, request: AliquotRequest, actor: User) -> dict[str, Any]:
    locations = sees_locations(actor, request)
    return {
        "code": request.code,
        "state": request.state.value,
        "site": request.site.code,
        "researcher": {
            "username": request.researcher.username,
            "full_name": request.researcher.full_name,
        },
        **{name: getattr(request, name) for name in TEXT_FIELDS},
        "external": request.external,
        "genetic": request.genetic,
        "delivery": request.delivery.value,
        "created_at": iso(request.created_at),
        "submitted_at": iso(request.submitted_at),
        "decided_at": iso(request.decided_at),
        "ready_at": iso(request.ready_at),
        "closed_at": iso(request.closed_at),
        "counts": counts_json(request),
        "lines": [line_json(session, line, locations) for line in request.lines],
        "criteria": [criterion_json(c) for c in request.criteria],
        "reviews": [review_json(session, r) for r in request.reviews],
        "dispatch": {
            "courier": request.courier,
            "conditions": request.conditions.value if request.conditions else None,
            "logger_ref": request.logger_ref,
            "tracking_ref": request.tracking_ref,
            "dispatched_at": iso(request.dispatched_at),
            "received_at": iso(request.received_at),
        },
        "committee_studies": sorted(committee_needed(session, request)),
        "steps": steps_for(session, actor, request),
    }


def steps_for(session: Session, actor: User, request: AliquotRequest) -> list[str]:
    """The steps of :data:`STEPS` open to this person now: their role's, on their own request
    (researchers) or their site's (staff); the committee's to its members."""
    if actor.role is Role.RESEARCHER:
        mine = request.researcher_id == actor.id
    else:
        mine = actor.site_id == request.site_id
    member = bool(committee_studies_of(actor) & committee_needed(session, request))
    return [
        name
        for name, step in STEPS.items()
        if request.state in step.from_states
        and actor.role in step.roles
        and (member if name == "committee" else mine)
    ]


def search_json(result: SearchResult, filters: SearchFilters, aliquots_url) -> dict[str, Any]:
    """``aliquots_url(group)``: where the group's aliquots are listed."""
    return {
        "groups": [
            {
                "study": group.study,
                "product": group.product,
                "subject": group.pseudonym,
                "timepoint": group.timepoint,
                "timepoint_day": group.timepoint_day,
                "counts": {material.value: n for material, n in group.counts.items()},
                "total": group.total,
                "aliquots_url": aliquots_url(group),
            }
            for group in result.groups
        ],
        "page": result.page,
        "per_page": result.per_page,
        "pages": result.pages,
        "total_groups": result.total_groups,
        "total_aliquots": result.total_aliquots,
        "filters": filters.given(),
    }


def available_json(row: AliquotRow) -> dict[str, Any]:
    return {
        "code": row.code,
        "material_type": row.material_type.value,
        "quantity": amount(row.quantity),
        "unit": row.unit,
        "thaw_count": row.thaw_count,
        "site": row.site,
        "subject": row.pseudonym,
        "timepoint": row.timepoint,
        "timepoint_day": row.timepoint_day,
        "study": row.study,
        "product": row.product,
    }


def eligibility_json(session: Session, request: AliquotRequest) -> dict[str, Any]:
    patients = review.patients_of(session, request)
    checks = review.latest_opt_out_checks(session, [p.id for p in patients])
    return {
        "request": request.code,
        "lines": [
            {
                "aliquot": check.line.item.code,
                "subject": check.line.item.episode.patient.pseudonym,
                "eligible": check.eligible,
                "reasons": check.reasons,
            }
            for check in review.check_lines(session, request)
        ],
        "subjects": [
            {
                "subject": patient.pseudonym,
                "checked_at": iso(checks[patient.id].checked_at) if patient.id in checks else None,
                "registered": checks[patient.id].registered if patient.id in checks else None,
            }
            for patient in patients
        ],
    }


def pick_entry_json(entry: PickEntry) -> dict[str, Any]:
    item = entry.line.item
    return {
        "aliquot": item.code,
        "check_character": item.check_character,
        "subject": item.episode.patient.pseudonym,
        "material_type": item.material_type.value,
        "timepoint": item.timepoint,
        "quantity": amount(item.quantity),
        "unit": item.unit,
        "site": entry.site,
        "storage_unit": entry.unit or None,
        "rack": entry.rack or None,
        "box": entry.box or None,
        "position": entry.position or None,
    }


def manifest_json(request: AliquotRequest, rows: list[ManifestRow]) -> dict[str, Any]:
    def value(row: ManifestRow, column: str) -> Any:
        found = getattr(row, column)
        return amount(found) if column == "quantity" else getattr(found, "value", found)

    return {
        "request": request.code,
        "columns": list(COLUMNS),
        "rows": [{column: value(row, column) for column in COLUMNS} for row in rows],
    }


def notification_json(notification: Notification, request_code: str | None) -> dict[str, Any]:
    return {
        "id": notification.id,
        "kind": notification.kind,
        "label": kind_label(notification.kind),
        "message": notification.message,
        "request": request_code,
        "created_at": iso(notification.created_at),
        "read_at": iso(notification.read_at),
    }


def inbox_json(page: InboxPage, unread: int) -> dict[str, Any]:
    return {
        "notifications": [
            notification_json(entry.notification, entry.request_code) for entry in page.entries
        ],
        "page": page.page,
        "per_page": page.per_page,
        "pages": page.pages,
        "total": page.total,
        "unread": unread,
    }
