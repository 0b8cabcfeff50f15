"""The OpenAPI 3.0.3 document of /api/v1, built as data.

:data:`OPERATIONS` names every route by hand (path, method, the view's endpoint name as
``operationId``, body, answer); a test compares it with ``app.url_map`` both ways, so a route
cannot be added or removed without the document following. The roles (``x-roles``) are read
from each view's own ``@allow`` declaration, the request schemas from :mod:`lims.api.bodies`
and the enumerations from the domain's StrEnums.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask import Flask

from lims.api import bodies, request_schemas
from lims.api.payload import Body
from lims.api.schemas import COMPONENTS, INTEGER, STRING, enum, ref
from lims.api.storage_schemas import STORAGE_SCHEMAS
from lims.auth.access import PUBLIC, declared_access
from lims.auth.models import Role
from lims.custody.domain import Action
from lims.shipments.logger import MAX_BYTES

PREFIX = "/api/v1"

DESCRIPTION = """\
Chain of identity and custody for CAR-T material. Authenticate every call (except this
document) with `Authorization: Bearer <token>` (`lims create-token USER`).

* Request bodies are JSON objects (`Content-Type: application/json`). A body that is not a
  JSON object answers 400; a missing, unknown or wrongly typed key answers 422 naming the key
  in `field`. The one exception: a shipment's temperature logger file is sent as it is, with
  `Content-Type: text/csv` (or, from clients that send JSON only, as text in a JSON object).
* Times are ISO 8601 **with a time zone** (`2025-03-01T09:30:00+01:00` or `...Z`). A time
  without one is refused with 422, never guessed. Answers give times in UTC ending in `Z`.
* Refusals are `{"error", "message", "field"?}`: 401 no or bad token, 403 role or site not
  allowed, 404 unknown code, 409 the state machine, a guard or a clash refuses (the message
  names why), 422 a value is wrong (including a wrong e-signature password: nothing changes).
* Item codes in the path may be typed (`W000009123456 G`: DIN with its check character),
  plain, or scanned (`=W000009123456 00`), URL-encoded. A CoI in the path is its 15
  characters, with or without the check character. A shipment code may be typed with spaces
  or hyphens. Bag and tube codes in a body (`scan`) are taken the same way as in the path.
* Researchers see aliquots only, reduced: no calendar dates, no people, no Chain of Identity.
  No answer except the identity endpoint ever holds a CPR number, a name or a birth date.
* Storage (units, racks, boxes and what they hold) is for the staff of the site where it
  stands, researchers excepted. Placing and moving are custody steps like any other.
* Aliquot requests: a request you may not see answers 404, as an unknown code does. Its lines
  show the storage location to the staff of the request's site only.
"""

PARAMETERS: dict[str, dict[str, Any]] = {
    "code": {"schema": STRING, "description": "Item code: typed, plain or scanned."},
    "action": {"schema": enum(Action), "description": "The custody step."},
    "pseudonym": {"schema": STRING, "description": "The patient's pseudonym."},
    "coi": {"schema": STRING, "description": "Chain of Identity (15 characters, K optional)."},
    "lot_number": {"schema": STRING, "description": "The product lot's number."},
    "hold_id": {"schema": INTEGER, "description": "The hold's id (item JSON, holds[].id)."},
    #: The same name means something else under another first path segment.
    "shipments:code": {"schema": STRING, "description": "Shipment code as on its label."},
    "storage:code": {
        "schema": STRING,
        "description": "Code of a storage unit, rack or box as on its label (here: a box's "
        "where the path says boxes).",
    },
    **request_schemas.PATH_PARAMETERS,
}

#: Query parameters, all optional.
QUERY_PARAMETERS: dict[str, dict[str, Any]] = {
    "site": {
        "schema": STRING,
        "description": "Site code; default your own. Technicians: their own site only.",
    },
    "filename": {"schema": STRING, "description": "The logger file's name, for the record."},
    "kind": {
        "schema": enum(("unit", "rack", "box")),
        "description": "Which kind of place the code names; needed only when a unit, a rack "
        "or a box share the code (otherwise 409).",
    },
    #: The same name means something else under another first path segment, as above.
    **request_schemas.QUERY_PARAMETERS,
}

#: Request bodies sent as they are rather than as JSON, by media type.
RAW_BODIES: dict[str, dict[str, Any]] = {
    "text/csv": {
        "schema": {
            "type": "string",
            "description": "The logger's CSV export as it is (UTF-8 or Latin-1; comma, "
            f"semicolon or tab), at most {MAX_BYTES // 1_048_576} MB.",
        }
    },
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    #: The view function's name: the endpoint is ``api.<operation_id>``.
    operation_id: str
    summary: str
    tag: str
    answer: str | None
    status: int = 200
    body: Body | None = None
    #: Refusals this operation can give besides 401/403 (which every protected one can).
    errors: tuple[int, ...] = ()
    #: Optional query parameters (names in QUERY_PARAMETERS).
    query: tuple[str, ...] = ()
    #: A media type (in RAW_BODIES) the body may also be sent as, besides the JSON ``body``.
    raw: str | None = None


READ = (404, 422)
WRITE = (400, 404, 409, 422)

OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/", "index", "Links to the API's entry points", "General", "Index"),
    Operation("get", "/me", "me", "The user the token belongs to", "General", "User"),
    Operation("get", "/openapi.json", "openapi", "This document", "General", None),
    Operation(
        "get", "/items/{code}", "get_item", "Look up a bag or tube", "Custody", "Item", errors=READ
    ),
    Operation(
        "get", "/items/{code}/events", "item_events", "Custody events", "Custody", "Events",
        errors=READ,
    ),
    Operation(
        "get", "/items/{code}/lineage", "item_lineage", "The item and its ancestors",
        "Custody", "Lineage", errors=READ,
    ),
    Operation(
        "post", "/items/{code}/actions/{action}", "perform_action", "Do one custody step",
        "Custody", "ActionResult", body=bodies.ACTION, errors=WRITE,
    ),
    Operation(
        "post", "/items/{code}/aliquots", "make_aliquots", "Split into aliquots n/N",
        "Production", "AliquotRunResult", 201, bodies.ALIQUOTS, WRITE,
    ),
    Operation(
        "post", "/items/{code}/holds", "place_hold", "Put material on hold", "Holds", "Hold",
        201, bodies.HOLD, WRITE,
    ),
    Operation(
        "post", "/holds/{hold_id}/clear", "clear_hold", "Clear a hold (manager)", "Holds",
        "Hold", body=bodies.HOLD_CLEARANCE, errors=WRITE,
    ),
    Operation(
        "post", "/lots", "create_lot", "Make a product lot from collections", "Production",
        "Lot", 201, bodies.LOT, WRITE,
    ),
    Operation(
        "post", "/lots/{lot_number}/qc", "add_qc_result", "Record a QC result", "Production",
        "QcResult", 201, bodies.QC_RESULT, WRITE,
    ),
    Operation(
        "post", "/bedside-checks", "bedside_check", "Bedside identity check before infusion",
        "Custody", "BedsideOutcome", body=bodies.BEDSIDE_CHECK, errors=WRITE,
    ),
    Operation(
        "post", "/patients", "register_patient", "Register a patient under a pseudonym",
        "Patients", "PatientRegistered", 201, bodies.PATIENT, WRITE,
    ),
    Operation(
        "get", "/patients/{pseudonym}", "get_patient", "A patient by pseudonym, no identity",
        "Patients", "Patient", errors=READ,
    ),
    Operation(
        "get", "/patients/{pseudonym}/identity", "patient_identity",
        "CPR, name and birth date (treating site only; audited)", "Patients", "Identity",
        errors=READ,
    ),
    Operation(
        "post", "/patients/{pseudonym}/consent", "record_consent", "Change consent",
        "Patients", "Patient", body=bodies.CONSENT, errors=WRITE,
    ),
    Operation(
        "post", "/episodes", "register_episode", "Open a treatment episode (assigns the CoI)",
        "Episodes", "Episode", 201, bodies.EPISODE, WRITE,
    ),
    Operation(
        "get", "/episodes/{coi}", "get_episode", "A treatment episode", "Episodes", "Episode",
        errors=READ,
    ),
    Operation(
        "post", "/episodes/{coi}/collections", "register_collection",
        "Register an apheresis collection", "Episodes", "Item", 201, bodies.COLLECTION, WRITE,
    ),
    Operation(
        "post", "/episodes/{coi}/samples", "register_sample",
        "Register a follow-up sample", "Episodes", "Item", 201, bodies.SAMPLE, WRITE,
    ),
    Operation(
        "get", "/episodes/{coi}/followup", "episode_followup",
        "The episode's follow-up sampling schedule", "Follow-up", "FollowupSchedule",
        errors=READ,
    ),
    Operation(
        "get", "/followup", "followup_worklist", "Overdue, due and missed follow-up samples",
        "Follow-up", "Worklist", errors=READ, query=("site",),
    ),
    Operation(
        "post", "/shipments", "create_shipment", "Open a shipment from your site",
        "Shipments", "Shipment", 201, bodies.SHIPMENT, WRITE,
    ),
    Operation(
        "get", "/shipments/{code}", "get_shipment",
        "A shipment with its lines and reconciliation (its two sites only)", "Shipments",
        "Shipment", errors=READ,
    ),
    Operation(
        "post", "/shipments/{code}/lines", "add_shipment_line", "Pack a bag or tube",
        "Shipments", "PackingResult", body=bodies.SHIPMENT_LINE, errors=WRITE,
    ),
    Operation(
        "post", "/shipments/{code}/dispatch", "dispatch_shipment",
        "Hand everything to the courier (all or nothing)", "Shipments", "Shipment",
        body=bodies.DISPATCH, errors=WRITE,
    ),
    Operation(
        "post", "/shipments/{code}/receipt/scans", "receipt_scan",
        "Scan a bag or tube found on arrival", "Shipments", "ReceiptScanResult",
        body=bodies.RECEIPT_SCAN, errors=WRITE,
    ),
    Operation(
        "post", "/shipments/{code}/receipt", "complete_receipt",
        "Complete the receipt: what was scanned is received", "Shipments", "Shipment",
        body=bodies.RECEIPT, errors=WRITE,
    ),
    Operation(
        "post", "/shipments/{code}/logger", "upload_logger",
        "Upload the temperature logger file (once); excursions put items on hold",
        "Shipments", "LoggerUploadResult", body=bodies.LOGGER_FILE, errors=(*WRITE, 413),
        query=("filename",), raw="text/csv",
    ),
    Operation(
        "get", "/storage/locations/{code}", "storage_location",
        "A storage unit (racks, boxes, fill), rack (boxes, fill) or box (geometry, fill)",
        "Storage", "StorageLocation", errors=(*READ, 409), query=("kind",),
    ),
    Operation(
        "get", "/storage/boxes/{code}/contents", "box_contents",
        "A box's content in position order, empty positions included", "Storage",
        "BoxContents", errors=READ,
    ),
    Operation(
        "get", "/items/{code}/location", "item_location", "Where a bag or tube is stored",
        "Storage", "ItemLocation", errors=READ,
    ),
    Operation(
        "post", "/storage/placements", "place_item",
        "Put a bag or tube into a box: store, move or return to storage", "Storage",
        "PlacementResult", 201, bodies.PLACEMENT, WRITE,
    ),
    Operation(
        "post", "/storage/boxes/{code}/move", "move_box",
        "Move a box with its content (one custody event per item, all or nothing)",
        "Storage", "BoxMoveResult", body=bodies.BOX_MOVE, errors=WRITE,
    ),
)  # fmt: skip
OPERATIONS += tuple(Operation(**spec) for spec in request_schemas.OPERATIONS)

ERRORS = {
    400: "The body is not a JSON object (or not of the media type the route takes).",
    401: "No token, or a wrong or revoked one.",
    403: "Your role (or site) may not do this.",
    404: "No such item, patient, episode, lot, hold, shipment, site, storage unit, rack, box, "
    "request or notification (or not one you may see).",
    409: "Refused by the state machine, a guard or a clash; the message says why.",
    413: "The request is larger than the server accepts at all.",
    422: "A value is missing, unknown, of the wrong type or wrong (the key is in 'field').",
}


def parameters_of(operation: Operation) -> list[dict[str, Any]]:
    scope = operation.path.split("/")[1]
    in_path = [
        {
            "name": name,
            "in": "path",
            "required": True,
            **PARAMETERS.get(f"{scope}:{name}", PARAMETERS[name]),
        }
        for name in re.findall(r"{(\w+)}", operation.path)
    ]
    in_query = [
        {
            "name": name,
            "in": "query",
            "required": False,
            **(QUERY_PARAMETERS.get(f"{scope}:{name}") or QUERY_PARAMETERS[name]),
        }
        for name in operation.query
    ]
    return in_path + in_query


def roles_of(app: Flask, operation: Operation) -> list[str] | str:
    access = declared_access(app, f"api.{operation.operation_id}")
    if access is None:
        raise LookupError(f"the document names api.{operation.operation_id}, which has no route")
    if access == PUBLIC:
        return PUBLIC
    return [role.value for role in Role if role in access]


def describe(app: Flask, operation: Operation) -> dict[str, Any]:
    roles = roles_of(app, operation)
    answer = {"description": "OK" if operation.status == 200 else "Created"}
    if operation.answer:
        schema = ref(operation.answer)
        if operation.operation_id == "get_item":
            schema = {"oneOf": [ref("Item"), ref("ResearcherItem")]}
        answer["content"] = {"application/json": {"schema": schema}}
    else:
        answer["content"] = {"application/json": {"schema": {"type": "object"}}}
    responses: dict[str, Any] = {str(operation.status): answer}
    statuses = set(operation.errors) | (set() if roles == PUBLIC else {401, 403})
    for status in sorted(statuses):
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    described: dict[str, Any] = {
        "operationId": operation.operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
        "x-roles": roles,
        "responses": responses,
    }
    if roles == PUBLIC:
        described["security"] = []
    if parameters := parameters_of(operation):
        described["parameters"] = parameters
    if operation.body is not None:
        content = {"application/json": {"schema": ref(operation.body.name)}}
        if operation.raw:
            content = {operation.raw: RAW_BODIES[operation.raw], **content}
        described["requestBody"] = {"required": not operation.body.optional, "content": content}
    return described


def build_document(app: Flask) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(PREFIX + operation.path, {})[operation.method] = describe(app, operation)
    schemas = dict(COMPONENTS)
    schemas.update(STORAGE_SCHEMAS)
    schemas.update(request_schemas.SCHEMAS)
    every_body = (*bodies.ALL, *request_schemas.REQUEST_BODIES)
    schemas.update({body.name: body.schema() for body in every_body})
    return {
        "openapi": "3.0.3",
        "info": {"title": "CAR-T LIMS API", "version": "1", "description": DESCRIPTION},
        "tags": [{"name": name} for name in dict.fromkeys(op.tag for op in OPERATIONS)],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A per-user API token; the answer follows its user's role.",
                }
            },
            "schemas": schemas,
            "responses": {
                f"E{status}": {
                    "description": text,
                    "content": {"application/json": {"schema": ref("Error")}},
                }
                for status, text in ERRORS.items()
            },
        },
    }
