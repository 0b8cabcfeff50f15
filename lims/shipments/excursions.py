"""The temperature logger of a shipment: its readings kept once, checked against the limits
of what travelled, and the items put on hold when a reading lies outside them."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import User
from lims.custody.holds import hold_items
from lims.custody.models import HoldReason, Item
from lims.custody.services import commit_or_conflict
from lims.db import utcnow
from lims.errors import Conflict, Forbidden
from lims.shipments.logger import parse_logger_csv
from lims.shipments.models import Conditions, Shipment, ShipmentState, TemperatureReading
from lims.shipments.services import get_shipment, require_person

_CENTS = Decimal("0.01")


@dataclass(frozen=True)
class LoggerSummary:
    readings: int
    minimum: Decimal
    maximum: Decimal
    excursions: int
    #: Codes of the items put on hold by this upload.
    held: list[str] = field(default_factory=list)


def readings_of(
    session: Session, shipment: Shipment, *, limit: int | None = None
) -> list[TemperatureReading]:
    query = (
        select(TemperatureReading)
        .where(TemperatureReading.shipment_id == shipment.id)
        .order_by(TemperatureReading.at, TemperatureReading.id)
    )
    return list(session.scalars(query.limit(limit) if limit else query))


def reading_count(session: Session, shipment: Shipment) -> int:
    return session.scalar(
        select(func.count())
        .select_from(TemperatureReading)
        .where(TemperatureReading.shipment_id == shipment.id)
    )


def limits_for(conditions: Conditions, material_type: str | None) -> tuple[Decimal, Decimal]:
    """[lowest, highest] °C: the material's own limits for the conditions, else the
    conditions' limits (configuration ``shipping``)."""
    shipping = current_app.config["LIMS"]["shipping"]
    own = shipping.get("limits_by_material", {}).get(material_type or "", {})
    pair = own.get(conditions.value) if isinstance(own, dict) else None
    if pair is None:
        pair = shipping["limits"].get(conditions.value)
    try:
        low, high = (Decimal(str(value)) for value in pair)
        valid = low.is_finite() and high.is_finite() and low <= high
    except (TypeError, ValueError, InvalidOperation):
        valid = False
    if not valid:
        raise Conflict(
            f"The configuration has no valid temperature limits for {conditions.label} "
            f"(shipping.limits.{conditions.value} = [lowest, highest]); ask an administrator."
        )
    return low, high


def _outside(celsius: Decimal, limits: tuple[Decimal, Decimal]) -> bool:
    return not limits[0] <= celsius <= limits[1]


def upload_logger_csv(
    session: Session,
    *,
    actor: User | None,
    shipment_code: str,
    data: bytes,
    filename: str,
    zone: str | None = None,
) -> LoggerSummary:
    """Keep the logger's readings with the shipment (once), and put its items on hold when
    a reading lies outside their limits. ``zone``: of times the file writes without offset."""
    actor = require_person(actor)
    shipment = get_shipment(session, shipment_code, for_update=True)
    if actor.site_id not in (shipment.from_site_id, shipment.to_site_id):
        raise Forbidden(
            f"Only staff at {shipment.from_site.code} or {shipment.to_site.code} upload the "
            f"logger file of shipment {shipment.code}."
        )
    if shipment.state not in (ShipmentState.IN_TRANSIT, ShipmentState.RECEIVED):
        raise Conflict(
            f"Shipment {shipment.code} is {shipment.state.label}: the logger file is uploaded "
            "once the shipment is in transit or received."
        )
    if shipment.logger_uploaded_at is not None:
        raise Conflict(
            f"The logger file of shipment {shipment.code} was uploaded already "
            f"({shipment.logger_file_name}); it cannot be replaced."
        )
    name = _file_name(filename)
    zone = zone or current_app.config["LIMS"]["app"]["timezone"]
    readings = parse_logger_csv(data, zone=zone)
    items = [line.item for line in shipment.lines if line.item is not None]
    limits = {item.id: limits_for(shipment.conditions, item.material_type) for item in items}
    every_limit = set(limits.values()) or {limits_for(shipment.conditions, None)}
    excursions = sum(1 for r in readings if any(_outside(r.celsius, pair) for pair in every_limit))
    session.execute(
        insert(TemperatureReading),
        [{"shipment_id": shipment.id, "at": r.at, "celsius": _cents(r.celsius)} for r in readings],
    )
    shipment.logger_file_name = name
    shipment.logger_uploaded_at = utcnow()
    shipment.logger_min_c = _cents(min(r.celsius for r in readings))
    shipment.logger_max_c = _cents(max(r.celsius for r in readings))
    shipment.logger_excursions = excursions
    audit.record_changes(
        session,
        shipment,
        actor=actor,
        action="upload_logger",
        reason=f"{len(readings)} readings from {name}",
    )
    by_limits: dict[tuple[Decimal, Decimal], list[Item]] = defaultdict(list)
    for item in items:
        by_limits[limits[item.id]].append(item)
    held: list[str] = []
    local = ZoneInfo(zone)
    for pair, group in by_limits.items():
        outside = [r for r in readings if _outside(r.celsius, pair)]
        if not outside:
            continue
        extreme = max(outside, key=lambda r: max(pair[0] - r.celsius, r.celsius - pair[1]))
        detail = (
            f"{len(outside)} of {len(readings)} logger readings outside {pair[0]} to "
            f"{pair[1]} °C; most extreme {extreme.celsius} °C at "
            f"{extreme.at.astimezone(local):%Y-%m-%d %H:%M} ({zone}); logger "
            f"{shipment.logger_ref or '(no reference)'}, shipment {shipment.code}"
        )
        placed = hold_items(
            session,
            actor=actor,
            items=group,
            reason=HoldReason.TEMPERATURE_EXCURSION,
            detail=detail,
        )
        held.extend(hold.item.code for hold in placed)
    commit_or_conflict(session)
    return LoggerSummary(
        readings=len(readings),
        minimum=shipment.logger_min_c,
        maximum=shipment.logger_max_c,
        excursions=excursions,
        held=held,
    )


def _cents(value: Decimal) -> Decimal:
    return value.quantize(_CENTS, rounding=ROUND_HALF_UP)


def _file_name(filename: str | None) -> str:
    """The uploaded file's own name, without any folder a browser sends along."""
    name = re.split(r"[\\/]", (filename or "").strip())[-1].strip()
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:200] or "logger.csv"
