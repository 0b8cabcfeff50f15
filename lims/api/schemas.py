"""OpenAPI schemas of the API's answers (the request bodies come from :mod:`lims.api.bodies`).

Enumerations are generated from the domain's StrEnums, never copied, so a new state or action
shows up in the document by itself.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from lims.api.serializers import RESEARCHER_ITEM_KEYS
from lims.auth.models import Role
from lims.custody.domain import Action, Kind, State
from lims.custody.models import UNITS, HoldReason, MaterialType
from lims.followup.domain import TimepointStatus
from lims.patients.models import IdentifierKind, ProductKind
from lims.shipments.models import Conditions, LineStatus, ShipmentState

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def enum(values: type[StrEnum] | tuple[str, ...]) -> Schema:
    return {"type": "string", "enum": [str(value) for value in values]}


def nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def obj(properties: dict[str, Schema], description: str = "") -> Schema:
    schema: Schema = {
        "type": "object",
        "required": list(properties),
        "properties": properties,
    }
    if description:
        schema["description"] = description
    return schema


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
TIME: Schema = {"type": "string", "format": "date-time", "description": "UTC, ends in Z."}
DATE: Schema = {"type": "string", "format": "date"}

HOLD: Schema = obj(
    {
        "id": INTEGER,
        "item": STRING,
        "reason": enum(HoldReason),
        "detail": STRING,
        "placed_at": TIME,
        "cleared_at": nullable(TIME),
        "clear_reason": nullable(STRING),
    }
)

ITEM: Schema = obj(
    {
        "code": {**STRING, "description": "DIN (apheresis, bags) or local ID (aliquots)."},
        "check_character": {**STRING, "description": "Mod 37-2 K printed beside the code."},
        "kind": enum(Kind),
        "material_type": enum(MaterialType),
        "state": enum(State),
        "quantity": NUMBER,
        "unit": enum(UNITS),
        "cell_count": nullable(INTEGER),
        "timepoint": nullable(STRING),
        "timepoint_day": nullable(INTEGER),
        "aliquot": nullable(obj({"number": INTEGER, "total": INTEGER}, "n of N in its run.")),
        "parent": nullable({**STRING, "description": "Code of the item it was derived from."}),
        "lot_number": nullable(STRING),
        "coi": STRING,
        "coi_check_character": STRING,
        "pseudonym": STRING,
        "site": {**STRING, "description": "Code of the site holding it."},
        "location": STRING,
        "custodian": STRING,
        "thaw_count": INTEGER,
        "collected_at": nullable(TIME),
        "created_at": TIME,
        "expires_at": nullable(TIME),
        "thawed_at": nullable(TIME),
        "on_hold": BOOLEAN,
        "holds": {"type": "array", "items": ref("Hold"), "description": "Open holds."},
        "actions": {
            "type": "array",
            "items": enum(Action),
            "description": "The steps your role may offer now (guards are checked on POST).",
        },
    },
    "A bag or tube as technicians, managers and administrators see it.",
)

RESEARCHER_ITEM: Schema = {
    **obj(
        {key: ITEM["properties"][key] for key in RESEARCHER_ITEM_KEYS},
        "An aliquot as a researcher sees it: no calendar dates, no people, no Chain of "
        "Identity; 'parent' only when the parent is an aliquot too. Nothing else: a staff "
        "answer is never mistaken for it (oneOf), and a researcher's never carries more.",
    ),
    "additionalProperties": False,
}

SIGNATURE: Schema = obj({"printed_name": STRING, "meaning": STRING, "signed_at": TIME})

EVENT: Schema = obj(
    {
        "at": TIME,
        "actor": {**STRING, "description": "Username, or 'command line'."},
        "action": STRING,
        "from_state": nullable(enum(State)),
        "to_state": enum(State),
        "from_site": nullable(STRING),
        "to_site": nullable(STRING),
        "from_location": nullable(STRING),
        "to_location": nullable(STRING),
        "from_custodian": nullable(STRING),
        "to_custodian": nullable(STRING),
        "reason": nullable(STRING),
        "temperature_logger_ref": nullable(STRING),
        "signature": nullable(ref("Signature")),
        "witness_signature": nullable(ref("Signature")),
    },
    "One step of the chain of custody.",
)

EPISODE: Schema = obj(
    {
        "coi": {**STRING, "description": "Chain of Identity, 15 characters."},
        "coi_check_character": STRING,
        "coi_eye_readable": STRING,
        "pseudonym": STRING,
        "product_name": STRING,
        "product_kind": enum(ProductKind),
        "protocol": STRING,
        "treating_site": STRING,
        "planned_infusion_date": nullable(DATE),
        "infused_at": nullable(TIME),
        "created_at": TIME,
    }
)

PATIENT: Schema = obj(
    {
        "pseudonym": STRING,
        "identifier_kind": enum(IdentifierKind),
        "treating_site": STRING,
        "consent_biobank": BOOLEAN,
        "consent_genetic": BOOLEAN,
        "consent_withdrawn": BOOLEAN,
        "consent_withdrawn_at": nullable(TIME),
        "episodes": {"type": "array", "items": ref("Episode")},
    },
    "A patient by pseudonym. Never the identity.",
)

CODES: Schema = {"type": "array", "items": STRING}

RECONCILIATION: Schema = obj(
    {
        "received": {**CODES, "description": "Sent and scanned on arrival."},
        "missing": {**CODES, "description": "Sent, not (yet) scanned on arrival."},
        "unexpected": {**CODES, "description": "Scanned on arrival, not sent."},
        "complete": {**BOOLEAN, "description": "Nothing missing, nothing unexpected."},
    },
    "What was sent against what was scanned on arrival, by code.",
)

SHIPMENT_LINE: Schema = obj(
    {
        "code": {**STRING, "description": "The bag's or tube's code (or a stranger's code)."},
        "container": STRING,
        "status": enum(LineStatus),
        "kind": nullable({**enum(Kind), "description": "Null when the code is not ours."}),
        "state": nullable({**enum(State), "description": "Null when the code is not ours."}),
        "added_at": TIME,
        "scanned_at": nullable({**TIME, "description": "When scanned on arrival."}),
    }
)

LOGGER_SUMMARY: Schema = obj(
    {
        "file_name": STRING,
        "uploaded_at": TIME,
        "readings": INTEGER,
        "min_c": {**NUMBER, "description": "Lowest reading, °C."},
        "max_c": {**NUMBER, "description": "Highest reading, °C."},
        "excursions": {**INTEGER, "description": "Readings outside the limits."},
    },
    "The temperature logger file kept with the shipment.",
)

SHIPMENT: Schema = obj(
    {
        "code": {
            **STRING,
            "description": "Printed on the shipment label, with its check character.",
        },
        "from_site": STRING,
        "to_site": STRING,
        "state": enum(ShipmentState),
        "conditions": enum(Conditions),
        "courier": STRING,
        "tracking_ref": STRING,
        "logger_ref": STRING,
        "created_at": TIME,
        "created_by": nullable({**STRING, "description": "Username."}),
        "dispatched_at": nullable(TIME),
        "dispatched_by": nullable(STRING),
        "received_at": nullable(TIME),
        "received_by": nullable(STRING),
        "receipt_note": nullable(STRING),
        "logger": nullable(ref("LoggerSummary")),
        "lines": {"type": "array", "items": ref("ShipmentLine")},
        "reconciliation": ref("Reconciliation"),
    },
    "A shipment between two sites: for the staff of those two sites only.",
)

SCAN_OUTCOME: Schema = obj(
    {
        "status": {
            **STRING,
            "description": "Packing: added, already_added. Receipt: received, "
            "already_scanned, unexpected, unexpected_again.",
        },
        "code": nullable(STRING),
        "message": {**STRING, "description": "What to show the person scanning."},
        "loud": {**BOOLEAN, "description": "Show as an error: unexpected material."},
    },
    "What one scan did.",
)

TIMEPOINT: Schema = obj(
    {
        "label": STRING,
        "day": {**INTEGER, "description": "Relative to infusion (day 0)."},
        "due": nullable({**DATE, "description": "Null while the episode is not infused."}),
        "window_start": nullable(DATE),
        "window_end": nullable(DATE),
        "status": enum(TimepointStatus),
        "days_overdue": INTEGER,
        "expected": {"type": "array", "items": STRING, "description": "Material types."},
        "collected": {"type": "array", "items": STRING},
        "missing": {"type": "array", "items": STRING},
    }
)

WORKLIST_ROW: Schema = obj(
    {
        "pseudonym": STRING,
        "coi": STRING,
        "coi_check_character": STRING,
        "product_name": STRING,
        "timepoint": STRING,
        "day": INTEGER,
        "status": enum(TimepointStatus),
        "due": nullable(DATE),
        "window_end": nullable(DATE),
        "days_overdue": INTEGER,
        "missing": {"type": "array", "items": STRING, "description": "Material types."},
    }
)

COMPONENTS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {**STRING, "description": "Machine-readable code, e.g. not_found."},
            "message": {**STRING, "description": "What went wrong, in words to show."},
            "field": {**STRING, "description": "The JSON key the refusal is about."},
        },
    },
    "User": obj({"username": STRING, "full_name": STRING, "role": enum(Role), "site": STRING}),
    "Index": obj({"version": STRING, "links": {"type": "object"}}),
    "Hold": HOLD,
    "Item": ITEM,
    "ResearcherItem": RESEARCHER_ITEM,
    "Signature": SIGNATURE,
    "Event": EVENT,
    "Events": obj({"item": STRING, "events": {"type": "array", "items": ref("Event")}}),
    "Lineage": obj(
        {
            "item": STRING,
            "lineage": {
                "type": "array",
                "items": ref("Item"),
                "description": "The item first, then its parent, up to the first material.",
            },
            "episode": ref("Episode"),
        }
    ),
    "ActionResult": obj({"event": ref("Event"), "item": ref("Item")}),
    "AliquotRunResult": obj(
        {
            "parent": STRING,
            "aliquots": {
                "type": "array",
                "items": obj(
                    {
                        "code": STRING,
                        "check_character": STRING,
                        "material_type": enum(MaterialType),
                        "quantity": NUMBER,
                        "unit": enum(UNITS),
                        "state": enum(State),
                        "aliquot": obj({"number": INTEGER, "total": INTEGER}),
                    }
                ),
            },
        }
    ),
    "Episode": EPISODE,
    "Patient": PATIENT,
    "PatientRegistered": {
        "allOf": [
            ref("Patient"),
            obj({"warnings": {"type": "array", "items": STRING}}),
        ]
    },
    "Identity": obj(
        {
            "pseudonym": STRING,
            "identifier": {**STRING, "description": "CPR as DDMMYY-SSSS, or replacement ID."},
            "identifier_kind": enum(IdentifierKind),
            "name": STRING,
            "birth_date": DATE,
        },
        "Direct identifiers: treating-site technicians and managers only; every view audited.",
    ),
    "QcResult": obj(
        {
            "lot_number": STRING,
            "test": STRING,
            "value": STRING,
            "unit": STRING,
            "specification": STRING,
            "passed": BOOLEAN,
            "entered_at": TIME,
        }
    ),
    "Lot": obj(
        {
            "lot_number": STRING,
            "coi": STRING,
            "coi_check_character": STRING,
            "manufactured_at": TIME,
            "bags": {"type": "array", "items": ref("Item")},
        }
    ),
    "BedsideOutcome": obj(
        {
            "passed": BOOLEAN,
            "bag": STRING,
            "state": enum(State),
            "coi": STRING,
            "checked_at": TIME,
            "mismatches": {"type": "array", "items": STRING},
        }
    ),
    "Reconciliation": RECONCILIATION,
    "ShipmentLine": SHIPMENT_LINE,
    "LoggerSummary": LOGGER_SUMMARY,
    "Shipment": SHIPMENT,
    "ScanOutcome": SCAN_OUTCOME,
    "PackingResult": obj({"outcome": ref("ScanOutcome"), "shipment": ref("Shipment")}),
    "ReceiptScanResult": obj(
        {"outcome": ref("ScanOutcome"), "reconciliation": ref("Reconciliation")}
    ),
    "LoggerUploadResult": obj(
        {
            "shipment": STRING,
            "logger": ref("LoggerSummary"),
            "held": {**CODES, "description": "Codes put on hold by this file (excursion)."},
        }
    ),
    "ScheduledTimepoint": TIMEPOINT,
    "FollowupSchedule": obj(
        {
            "coi": STRING,
            "coi_check_character": STRING,
            "pseudonym": STRING,
            "product_name": STRING,
            "plan": {**STRING, "description": "'default' or the protocol's name."},
            "infused_on": nullable(DATE),
            "today": {**DATE, "description": "The local date at the site."},
            "sampling_stopped": {**BOOLEAN, "description": "Consent withdrawn."},
            "timepoints": {"type": "array", "items": ref("ScheduledTimepoint")},
        },
        "An episode's follow-up sampling schedule, laid over the calendar.",
    ),
    "WorklistRow": WORKLIST_ROW,
    "Worklist": obj(
        {
            "site": STRING,
            "today": DATE,
            "overdue": {"type": "array", "items": ref("WorklistRow")},
            "due": {"type": "array", "items": ref("WorklistRow")},
            "missed": {"type": "array", "items": ref("WorklistRow")},
        },
        "The timepoints that need a draw at one site, most urgent first.",
    ),
}
