"""The aliquot requests' part of the API (:mod:`lims.api.requests`): the bodies it accepts, the
schemas of its answers, its operations for the OpenAPI document, and the JSON it answers with.

:mod:`lims.api.openapi` merges the declarations here into its own (the operations as keyword
arguments of its ``Operation``, which this module cannot import without a cycle).

What a researcher receives is an allow-list: a line is :data:`RESEARCHER_LINE_KEYS` (no storage
location), a subject is a pseudonym, a timepoint a label and a day relative to infusion. No
function here reads a CPR number, a name, a birth date, a collection date or a Chain of
Identity, so none can reach an answer.
"""

from __future__ import annotations

from typing import Any

from lims.api.bodies import ALIQUOT_TYPES, SCAN, SHORT
from lims.api.payload import Body, Field
from lims.api.schemas import (
    BOOLEAN,
    CODES,
    INTEGER,
    NUMBER,
    STRING,
    TIME,
    Schema,
    enum,
    nullable,
    obj,
    ref,
)
from lims.requests.domain import STEPS
from lims.requests.models import (
    Decision,
    Delivery,
    LineStatus,
    RequestState,
    ReviewStage,
    ShortKind,
)
from lims.requests.services import TEXT_FIELDS
from lims.shipments.models import Conditions

# -- bodies ------------------------------------------------------------------------------------


def particulars(*required: str) -> tuple[Field, ...]:
    """The request's own fields, as the services name and bound them."""
    text = tuple(
        Field(name, "string", required=name in required, max_length=longest, description=label)
        for name, (label, longest) in TEXT_FIELDS.items()
    )
    return (
        *text,
        Field("external", "boolean", description="Recipient outside the network (needs the "
              "recipient institution and the MTA reference to submit)."),
        Field("genetic", "boolean", description="Genetic analyses intended (consent is checked)."),
        Field("delivery", "string", choices=Delivery, description="Default pick_up."),
    )  # fmt: skip


PASSWORD = Field(
    "password", "string", required=True, max_length=1024, description="Yours: the decision is "
    "signed. A wrong one answers 422 and nothing is signed or changed.",
)  # fmt: skip
COMMENT = Field("comment", "string", max_length=2000, description="Required for a rejection.")

REQUEST_DRAFT = Body("RequestDraft", *particulars("title"))
REQUEST_UPDATE = Body("RequestUpdate", *particulars())
REQUEST_ITEMS = Body(
    "RequestItems",
    Field("items", "string_list", required=True, description="Aliquot codes, as typed."),
)
CRITERION = Body(
    "RequestCriterionAddition",
    Field("study", "string", required=True, max_length=120),
    Field("material_type", "string", required=True, choices=ALIQUOT_TYPES),
    Field("timepoints", "string_list", description="D0, D7, M3, ...; absent: every one."),
    Field("per_subject", "integer", minimum=1, maximum=100, description="Default 1."),
    Field("min_quantity", "number"),
    Field("max_thaws", "integer", minimum=0, maximum=100),
    Field("site", "string", max_length=16, description="Only tubes kept at this site."),
)
SUBMISSION = Body("RequestSubmission", optional=True)
CANCELLATION = Body("RequestCancellation", Field("reason", "string", required=True, max_length=500))
REVIEW_START = Body("ReviewStart", optional=True)
OPT_OUT_CHECKS = Body(
    "OptOutChecks",
    Field("registered", "string_list", required=True, description="Pseudonyms found in the "
          "opt-out register ([] for none); every subject of the request counts as checked."),
    Field("note", "string", max_length=200),
)  # fmt: skip
COMMITTEE = Body(
    "CommitteeDecision",
    Field("study", "string", required=True, max_length=120),
    Field("decision", "string", required=True, choices=Decision),
    PASSWORD,
    COMMENT,
)
DECISION = Body(
    "RequestDecision",
    Field("decision", "string", required=True, choices=Decision),
    PASSWORD,
    COMMENT,
    Field("approve", "string_list", description="Approval: the codes approved (the others are "
          "not); absent: every aliquot asked for. Approval reserves them."),
)  # fmt: skip
PICK = Body("PickScan", SCAN)
SHORT_PICK = Body(
    "ShortPick",
    Field("item", "string", required=True, max_length=SHORT, description="The aliquot's code."),
    Field("kind", "string", required=True, choices=ShortKind),
    Field("reason", "string", required=True, max_length=500),
)
REQUEST_DISPATCH = Body(
    "RequestDispatch",
    Field("courier", "string", required=True, max_length=200, description="The courier, or the "
          "person who collects in person."),
    Field("conditions", "string", choices=Conditions, description="Required for a shipment."),
    Field("logger_ref", "string", max_length=100),
    Field("tracking_ref", "string", max_length=100),
)  # fmt: skip
REQUEST_RECEIPT = Body("RequestReceipt", Field("note", "string", max_length=500), optional=True)
NOTIFICATION_READ = Body("NotificationRead", optional=True)

REQUEST_BODIES = (
    REQUEST_DRAFT, REQUEST_UPDATE, REQUEST_ITEMS, CRITERION, SUBMISSION, CANCELLATION,
    REVIEW_START, OPT_OUT_CHECKS, COMMITTEE, DECISION, PICK, SHORT_PICK, REQUEST_DISPATCH,
    REQUEST_RECEIPT, NOTIFICATION_READ,
)  # fmt: skip

# -- parameters and operations -----------------------------------------------------------------

PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "requests:code": {"schema": STRING, "description": "Request code, REQ-yyyy-nnnnn."},
    "item": {"schema": STRING, "description": "The code of an aliquot of the request."},
    "criterion_id": {"schema": INTEGER, "description": "The criterion's id (criteria[].id)."},
    "notification_id": {"schema": INTEGER, "description": "The notification's id."},
}
SEARCH_FILTERS = (
    "study", "product", "material_type", "timepoint", "day_from", "day_to", "min_quantity",
    "max_thaws", "site",
)  # fmt: skip
QUERY_PARAMETERS: dict[str, dict[str, Any]] = {
    "study": {"schema": STRING, "description": "The study (episode protocol), any case."},
    "product": {"schema": STRING, "description": "The product's name, any case."},
    "material_type": {"schema": enum(ALIQUOT_TYPES), "description": "The aliquot type."},
    "timepoint": {
        "schema": STRING,
        "description": "A timepoint label (D7, M3), any case. For a group's aliquots: the "
        "group's; absent, the tubes without a timepoint.",
    },
    "day_from": {"schema": INTEGER, "description": "First day relative to infusion."},
    "day_to": {"schema": INTEGER, "description": "Last day relative to infusion (inclusive)."},
    "min_quantity": {"schema": NUMBER, "description": "Smallest quantity of a tube."},
    "max_thaws": {"schema": INTEGER, "description": "Most thaws a tube has had."},
    "requests:site": {"schema": STRING, "description": "Code of the site keeping the tube."},
    "subject": {"schema": STRING, "description": "The subject's pseudonym."},
    "page": {"schema": INTEGER, "description": "From 1; default 1."},
    "per_page": {"schema": INTEGER, "description": "1 to 500; default 50."},
    "state": {"schema": enum(RequestState), "description": "Only requests in this state."},
}

READ = (404, 422)
WRITE = (400, 404, 409, 422)


def operation(method: str, path: str, operation_id: str, summary: str, answer: str,
              status: int = 200, body: Body | None = None, errors: tuple[int, ...] = WRITE,
              query: tuple[str, ...] = (), tag: str = "Requests") -> dict[str, Any]:  # fmt: skip
    """The keyword arguments of one ``lims.api.openapi.Operation``."""
    return {
        "method": method, "path": path, "operation_id": operation_id, "summary": summary,
        "tag": tag, "answer": answer, "status": status, "body": body, "errors": errors,
        "query": query,
    }  # fmt: skip


C = "/requests/{code}"
OPERATIONS = (
    operation("get", "/requests/search", "search_aliquots", "Available aliquots by subject and "
              "timepoint (no identity, no dates)", "SearchResult", errors=(422,),
              query=(*SEARCH_FILTERS, "page", "per_page")),
    operation("get", "/requests/search/aliquots", "group_aliquots", "The available aliquots of "
              "one subject at one timepoint", "GroupAliquots", errors=(422,),
              query=("subject", *SEARCH_FILTERS)),
    operation("get", "/requests", "list_requests", "Your requests, your site's, your "
              "committee's", "RequestList", errors=(422,), query=("state",)),
    operation("post", "/requests", "create_request", "Start a draft", "Request", 201,
              REQUEST_DRAFT),
    operation("get", C, "get_request", "A request with its lines, criteria, reviews, dispatch",
              "Request", errors=READ),
    operation("patch", C, "update_request", "Change a draft", "Request", body=REQUEST_UPDATE),
    operation("post", f"{C}/items", "add_request_items", "Put aliquots in a draft (all or "
              "none)", "Request", body=REQUEST_ITEMS),
    operation("delete", f"{C}/items/{{item}}", "remove_request_item", "Take an aliquot out of "
              "a draft", "Request"),
    operation("post", f"{C}/criteria", "add_request_criterion", "Ask by criteria (they become "
              "aliquots on submission)", "RequestCriterion", 201, CRITERION),
    operation("delete", f"{C}/criteria/{{criterion_id}}", "remove_request_criterion",
              "Take a criterion out of a draft", "Request"),
    operation("post", f"{C}/submit", "submit_request", "Submit a draft: one request per site "
              "keeping material, the draft first", "Submission", body=SUBMISSION),
    operation("post", f"{C}/cancel", "cancel_request", "Call a request off (before picking)",
              "Request", body=CANCELLATION),
    operation("post", f"{C}/review/start", "start_review", "Take a request for review",
              "Request", body=REVIEW_START),
    operation("get", f"{C}/eligibility", "request_eligibility", "Why each aliquot asked for "
              "can or cannot be approved (site managers, access committee)", "Eligibility",
              errors=READ),
    operation("post", f"{C}/opt-out-checks", "record_opt_out_checks", "Record the opt-out "
              "register check of every subject", "Request", body=OPT_OUT_CHECKS),
    operation("post", f"{C}/committee", "committee_decision", "The access committee's signed "
              "decision for one study (its members, any role)", "Request", body=COMMITTEE),
    operation("post", f"{C}/decision", "decide_request", "The manager's signed decision; "
              "approval reserves the aliquots (all or nothing)", "Request", body=DECISION),
    operation("get", f"{C}/pick-list", "pick_list", "What is left to pick, in freezer order",
              "PickList", errors=READ),
    operation("post", f"{C}/picks", "pick_aliquot", "Pick a tube by scan (409 WRONG TUBE)",
              "PickResult", body=PICK),
    operation("post", f"{C}/short-picks", "short_pick", "A tube that cannot be picked",
              "PickResult", body=SHORT_PICK),
    operation("post", f"{C}/dispatch", "dispatch_request", "Hand over or ship what was picked",
              "Request", body=REQUEST_DISPATCH),
    operation("post", f"{C}/receipt", "confirm_request_receipt", "Confirm the arrival: the "
              "request closes", "Request", body=REQUEST_RECEIPT),
    operation("get", f"{C}/manifest", "request_manifest", "The manifest's rows (the files are "
              "pages)", "Manifest", errors=READ),
    operation("get", "/notifications", "notifications", "Your inbox, newest first", "Inbox",
              errors=(422,), query=("page", "per_page"), tag="Notifications"),
    operation("post", "/notifications/{notification_id}/read", "read_notification",
              "Mark a notification read", "Notification", body=NOTIFICATION_READ,
              errors=(400, 404), tag="Notifications"),
)  # fmt: skip

# -- answer schemas ----------------------------------------------------------------------------


def many(name: str, description: str = "") -> Schema:
    schema: Schema = {"type": "array", "items": ref(name)}
    return {**schema, "description": description} if description else schema


def pick(properties: Schema, *keys: str) -> Schema:
    return {key: properties[key] for key in keys}


SUBJECT = {**STRING, "description": "The subject's pseudonym."}
DAY = nullable({**INTEGER, "description": "Day relative to infusion."})
LINE_COUNTS = obj({status.value: INTEGER for status in LineStatus}, "Lines per status.")
PLACE = {key: nullable(STRING) for key in ("storage_unit", "rack", "box", "position")}
LINE_PROPERTIES: Schema = {
    "aliquot": STRING, "check_character": STRING, "subject": SUBJECT, "study": STRING,
    "timepoint": nullable(STRING), "timepoint_day": DAY, "material_type": enum(ALIQUOT_TYPES),
    "quantity": NUMBER, "unit": STRING, "thaw_count": INTEGER,
    "site": {**STRING, "description": "Code of the site keeping it."},
    "status": enum(LineStatus),
    "reason": {**STRING, "description": "Why not approved, short or withdrawn."},
    "short_kind": nullable(enum(ShortKind)),
    "criterion": nullable({**INTEGER, "description": "The criterion that chose it."}),
}  # fmt: skip
#: The keys of a line a researcher receives; staff of the request's site also get ``location``.
RESEARCHER_LINE_KEYS = tuple(LINE_PROPERTIES)
REQUEST_PROPERTIES: Schema = {
    "code": STRING, "state": enum(RequestState),
    "site": {**STRING, "description": "The biobank serving it."},
    "researcher": obj({"username": STRING, "full_name": STRING}),
    **{name: STRING for name in TEXT_FIELDS},
    "external": BOOLEAN, "genetic": BOOLEAN, "delivery": enum(Delivery), "created_at": TIME,
    "submitted_at": nullable(TIME), "decided_at": nullable(TIME),
    "ready_at": nullable({**TIME, "description": "Everything picked or short."}),
    "closed_at": nullable(TIME), "counts": LINE_COUNTS, "lines": many("RequestLine"),
    "criteria": many("RequestCriterion"),
    "reviews": many("RequestReview", "Signed decisions, oldest first."),
    "dispatch": ref("RequestDispatchRecord"),
    "committee_studies": {**CODES, "description": "Studies needing their access committee."},
    "steps": {"type": "array", "items": enum(tuple(STEPS)),
              "description": "The steps open to you now (checked again on POST)."},
}  # fmt: skip
AVAILABLE: Schema = {
    "code": STRING, **pick(LINE_PROPERTIES, "material_type", "quantity", "unit", "thaw_count"),
    "site": STRING, "subject": SUBJECT, "timepoint": nullable(STRING), "timepoint_day": DAY,
    "study": STRING, "product": STRING,
}  # fmt: skip
PAGING: Schema = {"page": INTEGER, "per_page": INTEGER, "pages": INTEGER}

SCHEMAS: dict[str, Schema] = {
    "RequestLine": {
        "type": "object",
        "required": list(LINE_PROPERTIES),
        "properties": {**LINE_PROPERTIES, "location": nullable(ref("StorageSpot"))},
        "description": "One aliquot of a request. 'location' only for the staff of its site.",
    },
    "StorageSpot": obj(
        {"site": STRING, **PLACE, "path": nullable({**STRING, "description": "Unit / rack / "
         "box / position; for a tube out of its box, where its last custody step put it."})},
        "Where the tube is: for the staff of its site, never for researchers.",
    ),
    "RequestCriterion": obj({
        "id": INTEGER, "study": STRING, "material_type": enum(ALIQUOT_TYPES),
        "timepoints": {**CODES, "description": "Empty: every timepoint."},
        "per_subject": INTEGER, "min_quantity": nullable(NUMBER), "max_thaws": nullable(INTEGER),
        "site": nullable(STRING),
        "shortfall": {**CODES, "description": "What was not found on submission."},
    }),
    "RequestReview": obj({
        "stage": enum(ReviewStage), "study": nullable(STRING), "decision": enum(Decision),
        "signer": {**STRING, "description": "Printed name of the signature."},
        "signed_at": TIME, "comment": STRING, "approved_count": INTEGER,
    }),
    "RequestDispatchRecord": obj({
        "courier": STRING, "conditions": nullable(enum(Conditions)), "logger_ref": STRING,
        "tracking_ref": STRING, "dispatched_at": nullable(TIME), "received_at": nullable(TIME),
    }),
    "Request": obj(REQUEST_PROPERTIES, "An aliquot request as its researcher or staff see it."),
    "RequestSummary": obj({
        **pick(REQUEST_PROPERTIES, "code", "title", "state", "site", "submitted_at", "counts"),
        "lines": {**INTEGER, "description": "How many aliquots."},
    }),
    "RequestList": obj({"requests": many("RequestSummary", "Newest first.")}),
    "Submission": obj({"requests": many("Request", "The draft first, then one per site.")}),
    "SearchGroup": obj({
        "study": STRING, "product": STRING, "subject": SUBJECT, "timepoint": nullable(STRING),
        "timepoint_day": DAY, "total": INTEGER, "aliquots_url": STRING,
        "counts": {"type": "object", "additionalProperties": INTEGER,
                   "description": "Aliquots per material type."},
    }),
    "SearchResult": obj({
        "groups": many("SearchGroup"), **PAGING, "total_groups": INTEGER,
        "total_aliquots": INTEGER,
        "filters": {"type": "object", "description": "The filters applied, as text."},
    }),
    "AvailableAliquot": obj(AVAILABLE),
    "GroupAliquots": obj(
        {"subject": SUBJECT, "timepoint": nullable(STRING), "aliquots": many("AvailableAliquot")}
    ),
    "Eligibility": obj({
        "request": STRING,
        "lines": {"type": "array", "description": "The lines still asked for.", "items": obj(
            {"aliquot": STRING, "subject": SUBJECT, "eligible": BOOLEAN, "reasons": CODES})},
        "subjects": {"type": "array", "items": obj({
            "subject": SUBJECT, "registered": nullable(BOOLEAN),
            "checked_at": nullable({**TIME, "description": "Last opt-out register check."})})},
    }),
    "PickEntry": obj({
        **pick(LINE_PROPERTIES, "aliquot", "check_character", "subject", "material_type",
               "timepoint", "quantity", "unit", "site"),
        **PLACE,
    }),
    "PickList": obj({
        "request": STRING, "state": enum(RequestState), "picked": INTEGER,
        "entries": many("PickEntry", "By site, unit, rack, box, position."),
    }),
    "PickResult": obj({
        "line": ref("RequestLine"), "state": enum(RequestState),
        "to_pick": {**INTEGER, "description": "Tubes left on the pick list."},
    }),
    "Manifest": obj({
        "request": STRING,
        "columns": {**CODES, "description": "The CSV/XLSX columns, in order."},
        "rows": {"type": "array", "items": {"type": "object"}},
    }),
    "Notification": obj({
        "id": INTEGER, "kind": STRING, "label": STRING, "message": STRING,
        "request": nullable({**STRING, "description": "The request's code."}),
        "created_at": TIME, "read_at": nullable(TIME),
    }),
    "Inbox": obj(
        {"notifications": many("Notification"), **PAGING, "total": INTEGER, "unread": INTEGER}
    ),
}  # fmt: skip
