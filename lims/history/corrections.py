"""Signed corrections of an item's recorded values after first entry.

:func:`correct_item` is the one way to change a recorded value after first entry
(DOMAIN.md §8.1, §8.5): signed, with a reason, an audit row and a custody event "correct".
:func:`correction_target` gives the correction page the values it may change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import User
from lims.auth.services import require_role
from lims.custody.domain import Kind
from lims.custody.models import CELL_TYPES, CustodyEvent, Item
from lims.custody.services import (
    check_quantity,
    commit_or_conflict,
    find_item,
    flush_or_conflict,
    record_event,
)
from lims.db import utcnow
from lims.errors import ValidationError
from lims.history.services import (
    BENCH,
    CORRECTABLE,
    shown_value,
    site_zone,
)

#: What a label carries and the lineage hangs on: never edited, not even by a correction.
NEVER_CORRECTED = frozenset(
    {"code", "check_character", "kind", "episode_id", "parent_id", "lot_id"}
)
#: Follow-up timepoints belong to samples and their aliquots only.
ALIQUOT_ONLY = frozenset({"timepoint", "timepoint_day"})
#: A correction may empty these (a value that should never have been recorded).
CLEARABLE = frozenset({"cell_count", "expires_at", "timepoint", "timepoint_day"})
#: How far ahead of the server clock a collection time may lie (clocks of other PCs drift).
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class CorrectableValue:
    field: str
    label: str
    current: str


@dataclass(frozen=True)
class CorrectionTarget:
    item: Item
    values: list[CorrectableValue]


def correctable_fields(item: Item) -> list[str]:
    return [name for name in CORRECTABLE if item.kind is Kind.ALIQUOT or name not in ALIQUOT_ONLY]


def correction_target(session: Session, *, actor: User | None, code: str) -> CorrectionTarget:
    """The item and the values a correction may change, with their current values."""
    require_role(actor, *BENCH)
    zone = site_zone()
    item = find_item(session, code)
    values = []
    for name in correctable_fields(item):
        current = shown_value(name, audit.as_text(getattr(item, name)), zone)
        if name == "quantity":
            current = f"{current} {item.unit}"
        values.append(CorrectableValue(name, CORRECTABLE[name], current))
    return CorrectionTarget(item, values)


def parse_local_datetime(text: str, zone: tzinfo, *, field: str) -> datetime:
    """ISO date and time as typed at the site (local time unless it names an offset) → UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            "Give the date and time as YYYY-MM-DD HH:MM (local time), e.g. 2025-03-31 14:05.",
            field=field,
        ) from None
    if not 1900 <= value.year <= 2200:
        raise ValidationError("That date is out of range.", field=field)
    if value.tzinfo is not None:
        return value.astimezone(UTC)
    local = value.replace(tzinfo=zone)
    instant = local.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) != value:
        raise ValidationError(
            f"{value:%Y-%m-%d %H:%M} does not exist in local time (the clocks were put "
            "forward); check the time.",
            field=field,
        )
    return instant


def _whole_number(text: str, *, field: str, message: str) -> int:
    try:
        number = Decimal(text.replace(" ", "").replace("_", ""))
    except InvalidOperation:
        raise ValidationError(message, field=field) from None
    if not number.is_finite() or number != number.to_integral_value() or abs(number) >= 10**15:
        raise ValidationError(message, field=field)
    return int(number)


def parse_value(item: Item, name: str, value: Any, zone: tzinfo) -> Any:
    """The typed, checked new value of ``name``, or a ValidationError naming what is wrong."""
    text = value.isoformat() if isinstance(value, datetime) else str(value or "").strip()
    if not text:
        if name in CLEARABLE:
            return None
        raise ValidationError(f"Give the new {CORRECTABLE[name].lower()}.", field="value")
    if len(text) > 100:
        raise ValidationError("The new value is too long.", field="value")
    if name == "quantity":
        quantity = check_quantity(text, item.unit)
        if quantity.as_tuple().exponent < -3:  # type: ignore[operator]
            raise ValidationError("The quantity is recorded to at most 3 decimals.", field="value")
        return quantity
    if name == "cell_count":
        if item.material_type not in CELL_TYPES:
            raise ValidationError(f"{item.material_type.label} has no cell count.", field="value")
        count = _whole_number(
            text, field="value", message="A cell count is a whole number ≥ 0, e.g. 2.5e8."
        )
        if count < 0:
            raise ValidationError("A cell count is a whole number ≥ 0, e.g. 2.5e8.", field="value")
        return count
    if name == "timepoint_day":
        day = _whole_number(
            text, field="value", message="The timepoint day is a whole number, e.g. 7 or -3."
        )
        if not -3650 <= day <= 36500:
            raise ValidationError("The timepoint day is out of range.", field="value")
        return day
    if name == "timepoint":
        if len(text) > 16 or not text.isprintable():
            raise ValidationError(
                "A timepoint is a short label of at most 16 characters, e.g. D7 or M3.",
                field="value",
            )
        return text
    instant = parse_local_datetime(text, zone, field="value")
    if name == "collected_at":
        if instant > utcnow() + CLOCK_SKEW:
            raise ValidationError("The collection time lies in the future.", field="value")
        if item.expires_at is not None and instant >= item.expires_at:
            raise ValidationError("The collection time is after the expiry.", field="value")
    if name == "expires_at" and item.collected_at is not None and instant <= item.collected_at:
        raise ValidationError("The expiry is before the collection time.", field="value")
    return instant


def _check_field(name: str) -> str:
    name = (name or "").strip()
    if name in NEVER_CORRECTED:
        raise ValidationError(
            "The identifier, its check character, the kind and the lineage are never "
            "corrected: register the material again and discard the wrong record with a reason.",
            field="field",
        )
    if name not in CORRECTABLE:
        raise ValidationError(
            f"A correction changes one of: {', '.join(CORRECTABLE.values()).lower()}.",
            field="field",
        )
    return name


def correct_item(
    session: Session,
    *,
    actor: User,
    code: str,
    field: str,
    value: Any,
    reason: str | None,
    password: str | None,
) -> CustodyEvent:
    """Correct one recorded value of an item: signed "corrected", with a reason, in any state.

    The old value stays in the audit trail and the custody event; the history and the report
    flag the value as changed after first entry.
    """
    require_role(actor, *BENCH)
    name = _check_field(field)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("Give the reason for the correction.", field="reason")
    if len(reason) > 1000:
        raise ValidationError("Keep the reason under 1000 characters.", field="reason")
    zone = site_zone()
    item = find_item(session, code, for_update=True)
    if name not in correctable_fields(item):
        raise ValidationError(
            f"{item.kind.label} material has no {CORRECTABLE[name].lower()}.", field="field"
        )
    new = parse_value(item, name, value, zone)
    old = getattr(item, name)
    if audit.as_text(old) == audit.as_text(new) or (old is not None and old == new):
        raise ValidationError(
            f"The {CORRECTABLE[name].lower()} is {shown_value(name, audit.as_text(old), zone)} "
            "already; nothing to correct.",
            field="value",
        )
    # Sign before changing anything: signing flushes, and a flushed change would leave no
    # history for the audit rows to read.
    signature = audit.sign(
        session,
        signer=actor,
        password=password,
        meaning="corrected",
        entity="item",
        entity_id=item.id,
        record={
            "code": item.code,
            "version": item.version,
            "field": name,
            "old": old,
            "new": new,
            "reason": reason,
        },
    )
    setattr(item, name, new)
    changes = audit.pending_changes(item)
    flush_or_conflict(session)
    audit.record_changes(
        session, item, actor=actor, action="correct", reason=reason, changes=changes
    )
    old_text = shown_value(name, audit.as_text(old), zone)
    new_text = shown_value(name, audit.as_text(new), zone)
    event = record_event(
        session,
        actor=actor,
        item=item,
        action="correct",
        from_state=item.state,
        from_site_id=item.site_id,
        from_location=item.location,
        from_custodian=item.custodian,
        reason=f"{CORRECTABLE[name]} {old_text} → {new_text}: {reason}",
        signature_id=signature.id,
    )
    commit_or_conflict(session)
    return event
