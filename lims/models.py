"""Imports every model so that the metadata knows all tables (Alembic, tests)."""

from lims.audit.append_only import protect
from lims.audit.models import AuditEntry, AuditHead, ESignature
from lims.auth.models import ApiToken, Site, User
from lims.custody.models import (
    BedsideCheck,
    CustodyEvent,
    Hold,
    IdentifierCounter,
    Item,
    ProductLot,
    QcResult,
)
from lims.labels.models import PrintedLabel, PrintJob  # noqa: F401
from lims.patients.models import Episode, Patient
from lims.requests.models import (  # noqa: F401
    AliquotRequest,
    Notification,
    OptOutCheck,
    RequestCriterion,
    RequestLine,
    RequestReview,
)
from lims.shipments.models import Shipment, ShipmentLine, TemperatureReading
from lims.storage.models import Box, Rack, StorageUnit
from lims.storage.verification_models import RackVerification, RackVerificationLine  # noqa: F401

protect(AuditEntry, CustodyEvent, ESignature)

__all__ = [
    "ApiToken",
    "AuditEntry",
    "AuditHead",
    "BedsideCheck",
    "Box",
    "CustodyEvent",
    "ESignature",
    "Episode",
    "Hold",
    "IdentifierCounter",
    "Item",
    "Patient",
    "ProductLot",
    "QcResult",
    "Rack",
    "Shipment",
    "ShipmentLine",
    "Site",
    "StorageUnit",
    "TemperatureReading",
    "User",
]
