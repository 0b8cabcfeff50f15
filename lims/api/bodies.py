"""The request bodies of the API, declared once: the views parse them, openapi.py documents them.

Enumerations come from the domain's own StrEnums and tuples, never from copied lists.
"""

from __future__ import annotations

from lims.api.payload import Body, Field
from lims.custody.domain import Kind
from lims.custody.models import TYPES_BY_KIND, UNITS, HoldReason, MaterialType
from lims.custody.production import QC_TESTS
from lims.patients.models import IdentifierKind, ProductKind
from lims.shipments.logger import MAX_BYTES
from lims.shipments.models import Conditions

SHORT = 200
#: Cell counts are 64-bit columns; a timepoint is a day within a century of infusion.
CELLS = {"minimum": 0, "maximum": 2**63 - 1}
DAYS = {"minimum": -36500, "maximum": 36500}
#: The material types a tube may be (samples and aliquots), in the enum's order.
ALIQUOT_TYPES = tuple(m.value for m in MaterialType if m in TYPES_BY_KIND[Kind.ALIQUOT])

#: The second person of a step that cannot be undone (custody.second_person).
WITNESS = (
    Field(
        "witness_username",
        "string",
        max_length=SHORT,
        description="Second person's username (release, receipt at the treating site).",
    ),
    Field("witness_password", "string", max_length=1024, description="Second person's password."),
)

ACTION = Body(
    "ActionRequest",
    Field("reason", "string", description="Why; required for discard, lose, return, unreserve."),
    Field("site", "string", description="Code of the site the material goes to."),
    Field("location", "string", max_length=SHORT, description="Where it is put."),
    Field("custodian", "string", max_length=SHORT, description="Who takes it (ship: courier)."),
    Field("temperature_logger_ref", "string", max_length=100),
    Field(
        "password",
        "string",
        max_length=1024,
        description="Your password, for steps signed (release, infuse).",
    ),
    *WITNESS,
    optional=True,
)

PATIENT = Body(
    "PatientRegistration",
    Field("identifier", "string", required=True, description="CPR number or replacement ID."),
    Field("identifier_kind", "string", choices=IdentifierKind, description="Default cpr."),
    Field("name", "string", required=True, max_length=SHORT),
    Field("birth_date", "date", description="Needed for a replacement identifier."),
    Field("treating_site", "string", required=True, description="Site code, e.g. RH."),
    Field("consent_biobank", "boolean"),
    Field("consent_genetic", "boolean"),
)

CONSENT = Body(
    "ConsentChange",
    Field("biobank", "boolean", required=True),
    Field("genetic", "boolean", required=True),
    Field("withdrawn", "boolean", required=True),
    Field("reason", "string", required=True),
)

EPISODE = Body(
    "EpisodeRegistration",
    Field("patient", "string", required=True, description="The patient's pseudonym."),
    Field("product_name", "string", required=True, max_length=120),
    Field("product_kind", "string", required=True, choices=ProductKind),
    Field("protocol", "string", max_length=120),
    Field("treating_site", "string", description="Site code; default the patient's."),
    Field("planned_infusion_date", "date"),
)

COLLECTION = Body(
    "CollectionRegistration",
    Field("volume_ml", "number", required=True),
    Field("collected_at", "datetime", required=True),
    Field("tnc_count", "integer", description="Total nucleated cells.", **CELLS),
    Field("collection_site", "string", description="Site code; default your own."),
)

SAMPLE = Body(
    "SampleRegistration",
    Field("material_type", "string", required=True, choices=ALIQUOT_TYPES),
    Field("quantity", "number", required=True),
    Field("unit", "string", required=True, choices=UNITS),
    Field("collected_at", "datetime", required=True),
    Field("timepoint", "string", max_length=16, description="baseline, D0, D7, M3, ..."),
    Field("timepoint_day", "integer", description="Day relative to infusion.", **DAYS),
    Field("cell_count", "integer", **CELLS),
)

LOT = Body(
    "LotCreation",
    Field("lot_number", "string", required=True, max_length=40),
    Field("apheresis", "string_list", required=True, description="Codes of the collections."),
    Field(
        "bags",
        "object_list",
        required=True,
        items=(
            Field("volume_ml", "number", required=True),
            Field("cell_count", "integer", **CELLS),
        ),
    ),
    Field("expires_at", "datetime"),
)

QC_RESULT = Body(
    "QcResultEntry",
    Field("test", "string", required=True, choices=QC_TESTS),
    Field("value", "string_or_number", required=True, max_length=60),
    Field("passed", "boolean", required=True),
    Field("unit", "string", max_length=20),
    Field("specification", "string", max_length=100),
)

ALIQUOTS = Body(
    "AliquotRun",
    Field("count", "integer", required=True, minimum=1, maximum=500),
    Field("quantity_each", "number", required=True),
    Field("unit", "string", required=True, choices=UNITS),
    Field("material_type", "string", required=True, choices=ALIQUOT_TYPES),
    Field("cell_count_each", "integer", **CELLS),
    Field("timepoint", "string", max_length=16),
    Field("timepoint_day", "integer", **DAYS),
)

HOLD = Body(
    "HoldPlacement",
    Field("reason", "string", required=True, choices=HoldReason),
    Field("detail", "string", required=True),
)

HOLD_CLEARANCE = Body("HoldClearance", Field("reason", "string", required=True))

BEDSIDE_CHECK = Body(
    "BedsideCheckRequest",
    Field("bag", "string", required=True, description="The bag's DIN as scanned."),
    Field("coi", "string", required=True, description="The cassette's CoI as scanned."),
    Field("wristband", "string", required=True, description="The wristband as scanned."),
    Field("wristband_kind", "string", choices=IdentifierKind, description="Default cpr."),
    *WITNESS,
)

# -- shipments ----------------------------------------------------------------------------------

#: A bag's or tube's code as the API takes it: exact (a DIN needs no check character), typed
#: with its check character, or the scanner's string (``=W000009123456 00``).
SCAN = Field(
    "scan",
    "string",
    required=True,
    max_length=SHORT,
    description="The bag's or tube's code, exact or as scanned.",
)

SHIPMENT = Body(
    "ShipmentCreation",
    Field("to_site", "string", required=True, description="Code of the destination site."),
    Field("conditions", "string", required=True, choices=Conditions),
    Field("courier", "string", max_length=200),
    Field("tracking_ref", "string", max_length=100, description="The courier's reference."),
    Field("logger_ref", "string", max_length=100, description="The temperature logger's."),
)

SHIPMENT_LINE = Body(
    "ShipmentLineAddition",
    SCAN,
    Field("container", "string", max_length=100, description="Dry shipper, canister, box."),
)

DISPATCH = Body(
    "ShipmentDispatch",
    Field("courier", "string", required=True, max_length=200),
    Field(
        "tracking_ref",
        "string",
        max_length=100,
        description="Absent: the one given at creation is kept.",
    ),
    Field(
        "logger_ref",
        "string",
        max_length=100,
        description="Absent: the one given at creation is kept.",
    ),
)

RECEIPT_SCAN = Body("ReceiptScan", SCAN)

RECEIPT = Body(
    "ReceiptCompletion",
    Field(
        "note",
        "string",
        max_length=2000,
        description="What happened; required when something is missing or unexpected.",
    ),
    *WITNESS,
    optional=True,
)

#: The logger file as JSON, for clients that send JSON only; it is usually sent as text/csv.
LOGGER_FILE = Body(
    "LoggerUpload",
    Field(
        "csv",
        "string",
        required=True,
        description=f"The logger's CSV export as text, at most {MAX_BYTES // 1_048_576} MB.",
    ),
    Field("filename", "string", max_length=200, description="The file's name, for the record."),
)

# -- storage -----------------------------------------------------------------------------------

PLACEMENT = Body(
    "StoragePlacement",
    SCAN,
    Field("box", "string", required=True, max_length=100, description="The box's code."),
    Field(
        "position",
        "string",
        max_length=10,
        description="A1, A01 or, numbered, 12. Absent: the next free position (a checked-out "
        "tube: its own). Only for boxes with positions.",
    ),
)

BOX_MOVE = Body(
    "BoxMove",
    Field("unit", "string", required=True, max_length=100, description="The unit it goes to."),
    Field("rack", "string", max_length=100, description="The rack in that unit; absent: none."),
    Field("reason", "string", max_length=2000, description="Why, for every item's record."),
)

ALL = (
    ACTION,
    PATIENT,
    CONSENT,
    EPISODE,
    COLLECTION,
    SAMPLE,
    LOT,
    QC_RESULT,
    ALIQUOTS,
    HOLD,
    HOLD_CLEARANCE,
    BEDSIDE_CHECK,
    SHIPMENT,
    SHIPMENT_LINE,
    DISPATCH,
    RECEIPT_SCAN,
    RECEIPT,
    LOGGER_FILE,
    PLACEMENT,
    BOX_MOVE,
)
