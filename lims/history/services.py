"""The full history of one bag or tube: what the history page and the chain-of-custody report show.

:func:`item_history` reads only. Signed corrections of recorded values live in
:mod:`lims.history.corrections`, which builds on the helpers here (never the other way round).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation

from sqlalchemy import select
from sqlalchemy.orm import Session

from lims import identifiers
from lims.audit import services as audit
from lims.audit.models import AuditEntry, ESignature
from lims.auth.models import Role, Site, User
from lims.auth.services import require_role
from lims.custody.domain import Kind
from lims.custody.models import (
    BedsideCheck,
    CustodyEvent,
    Hold,
    Item,
    ProductLot,
    QcResult,
    product_lot_source,
)
from lims.custody.services import events_of, find_item
from lims.localtime import site_zone
from lims.patients.models import Episode

BENCH = (Role.TECHNICIAN, Role.MANAGER)

#: Columns that custody steps change: their history is the custody events, not corrections.
MOVEMENT_FIELDS = frozenset(
    {
        "state",
        "site_id",
        "location",
        "custodian",
        "thawed_at",
        "thaw_count",
        "version",
        "label_printed_at",
        "label_verified_at",
        # Storage bookkeeping: where it is and since when, recorded by the custody events.
        "box_id",
        "position",
        "stored_at",
        "checked_out_at",
    }
)
#: The recorded values a signed correction may change, with their names on screen (here, not in
#: ``corrections``, because the history labels changes with the same names).
CORRECTABLE = {
    "quantity": "Quantity",
    "cell_count": "Cell count",
    "collected_at": "Collected at",
    "expires_at": "Expires at",
    "timepoint": "Timepoint",
    "timepoint_day": "Timepoint day",
}
DATETIME_FIELDS = frozenset({"collected_at", "expires_at", "thawed_at", "label_printed_at"})
FIELD_LABELS = CORRECTABLE | {
    "material_type": "Type",
    "unit": "Unit",
    "aliquot_number": "Aliquot number",
    "aliquot_total": "Aliquots in run",
}
EMPTY = "—"


def field_label(name: str) -> str:
    return FIELD_LABELS.get(name, name.replace("_", " ").capitalize())


def shown_value(name: str, text: str | None, zone: tzinfo) -> str:
    """A value as the audit trail keeps it (text), as people read it: local times, plain numbers."""
    if text is None or text == "":
        return EMPTY
    if name in DATETIME_FIELDS:
        try:
            return datetime.fromisoformat(text).astimezone(zone).strftime("%Y-%m-%d %H:%M")
        except ValueError:
            return text
    if name == "quantity":
        try:
            return plain_number(Decimal(text))
        except InvalidOperation:
            return text
    if name == "cell_count" and text.isascii() and text.isdigit():
        return f"{int(text):,}"
    return text


def plain_number(value: Decimal) -> str:
    """10.000 → 10, 1.500 → 1.5 (never 1E+1)."""
    return f"{value.normalize():f}"


# -- the history ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """One custody attribute an event changed: site, location or custodian."""

    label: str
    before: str
    after: str


@dataclass(frozen=True)
class EventLine:
    event: CustodyEvent
    who: str
    action: str
    from_state: str | None
    to_state: str
    site: str
    location: str
    custodian: str
    moves: tuple[Move, ...]
    signature: ESignature | None
    witness_signature: ESignature | None

    @property
    def at(self) -> datetime:
        return self.event.at


@dataclass(frozen=True)
class SignatureLine:
    """A signature and the step it was given for; ``second_person`` for the witness."""

    signature: ESignature
    action: str
    second_person: bool


@dataclass(frozen=True)
class HoldLine:
    hold: Hold
    placed_by: str
    cleared_by: str | None


@dataclass(frozen=True)
class CheckLine:
    check: BedsideCheck
    checked_by: str
    witness: ESignature | None


@dataclass(frozen=True)
class ValueChange:
    """A recorded value changed after first entry: who, when, old → new, why."""

    field: str
    label: str
    old: str
    new: str
    who: str
    at: datetime
    reason: str | None
    action: str


@dataclass
class ItemHistory:
    item: Item
    episode: Episode
    #: The item's and its Chain of Identity's eye-readable forms and the item's check character,
    #: as the PDF report prints them (the page uses the _identifiers.html macro on the codes).
    identifier: str
    check: str
    coi: str
    #: Parents up the tree, nearest first (a tube's parent tube, then its bag or sample).
    ancestors: list[Item]
    #: The product lot of the bag at the top of the line, and the collections it was made from.
    lot: ProductLot | None
    collections: list[Item]
    #: For a collection: the product lots made from it.
    made_into: list[ProductLot]
    children: list[Item]
    events: list[EventLine]
    holds: list[HoldLine]
    qc_results: list[QcResult]
    bedside_checks: list[CheckLine]
    changes: list[ValueChange]
    zone: tzinfo = field(default=UTC)

    @property
    def changed_fields(self) -> frozenset[str]:
        return frozenset(change.field for change in self.changes)

    @property
    def signatures(self) -> list[SignatureLine]:
        lines = []
        for line in self.events:
            if line.signature is not None:
                lines.append(SignatureLine(line.signature, line.action, False))
            if line.witness_signature is not None:
                lines.append(SignatureLine(line.witness_signature, line.action, True))
        for check in self.bedside_checks:
            if check.witness is not None:
                lines.append(SignatureLine(check.witness, "bedside check", True))
        return sorted(lines, key=lambda line: (line.signature.signed_at, line.signature.id))

    def facts(self) -> list[tuple[str, str, bool]]:
        """The item's recorded values as (label, shown value, changed after first entry)."""
        item, zone, changed = self.item, self.zone, self.changed_fields

        def when(value: datetime | None) -> str:
            return value.astimezone(zone).strftime("%Y-%m-%d %H:%M") if value else EMPTY

        quantity = f"{plain_number(item.quantity)} {item.unit}"
        rows = [
            ("Kind", item.kind.label, False),
            ("Type", item.material_type.label, "material_type" in changed),
            ("State", item.state.label, False),
            ("Quantity", quantity, "quantity" in changed or "unit" in changed),
            (
                "Cell count",
                f"{item.cell_count:,}" if item.cell_count is not None else EMPTY,
                "cell_count" in changed,
            ),
        ]
        if item.kind is Kind.ALIQUOT:
            rows += [
                ("Timepoint", item.timepoint or EMPTY, "timepoint" in changed),
                (
                    "Timepoint day",
                    str(item.timepoint_day) if item.timepoint_day is not None else EMPTY,
                    "timepoint_day" in changed,
                ),
            ]
        if item.aliquot_number:
            rows.append(
                ("Aliquot", f"{item.aliquot_number} of {item.aliquot_total}", False),
            )
        rows += [
            ("Collected at", when(item.collected_at), "collected_at" in changed),
            ("Expires at", when(item.expires_at), "expires_at" in changed),
            ("Site", f"{item.site.code} ({item.site.name})", False),
            ("Location", item.location or EMPTY, False),
            ("Custodian", item.custodian or EMPTY, False),
            ("Thawed", f"{when(item.thawed_at)} (thaw count {item.thaw_count})", False),
            ("Registered", when(item.created_at), False),
        ]
        return rows


def _names(session: Session, user_ids: set[int | None]) -> dict[int, str]:
    wanted = {user_id for user_id in user_ids if user_id is not None}
    if not wanted:
        return {}
    users = session.scalars(select(User).where(User.id.in_(wanted)))
    return {user.id: user.full_name for user in users}


def _event_lines(session: Session, item: Item) -> list[EventLine]:
    events = events_of(session, item)
    site_ids = {e.from_site_id for e in events} | {e.to_site_id for e in events}
    sites = {
        site.id: site.code
        for site in session.scalars(select(Site).where(Site.id.in_(site_ids - {None})))
    }
    lines = []
    for event in events:
        moves = []
        pairs = (
            ("Site", sites.get(event.from_site_id or 0), sites.get(event.to_site_id or 0)),
            ("Location", event.from_location, event.to_location),
            ("Custodian", event.from_custodian, event.to_custodian),
        )
        for label, before, after in pairs:
            # The registration has no "before": everything it records is where it starts.
            if event.from_state is not None and (before or "") != (after or ""):
                moves.append(Move(label, before or EMPTY, after or EMPTY))
        lines.append(
            EventLine(
                event=event,
                who=event.user.full_name if event.user else audit.COMMAND_LINE,
                action=event.action.replace("_", " "),
                from_state=event.from_state.replace("_", " ") if event.from_state else None,
                to_state=event.to_state.replace("_", " "),
                site=sites.get(event.to_site_id or 0, EMPTY),
                location=event.to_location or EMPTY,
                custodian=event.to_custodian or EMPTY,
                moves=tuple(moves),
                signature=event.signature,
                witness_signature=event.witness_signature,
            )
        )
    return lines


def _changes(session: Session, item: Item, zone: tzinfo) -> list[ValueChange]:
    entries = session.scalars(
        select(AuditEntry)
        .where(
            AuditEntry.entity == Item.__tablename__,
            AuditEntry.entity_id == str(item.id),
            AuditEntry.action != "create",
            AuditEntry.field.is_not(None),
            AuditEntry.field.not_in(MOVEMENT_FIELDS),
        )
        .order_by(AuditEntry.seq)
    )
    return [
        ValueChange(
            field=entry.field or "",
            label=field_label(entry.field or ""),
            old=shown_value(entry.field or "", entry.old_value, zone),
            new=shown_value(entry.field or "", entry.new_value, zone),
            who=entry.user.full_name if entry.user else entry.actor,
            at=entry.at,
            reason=entry.reason,
            action=entry.action.replace("_", " "),
        )
        for entry in entries
    ]


def item_history(session: Session, *, actor: User | None, code: str) -> ItemHistory:
    """Everything recorded about one bag or tube, for the history page and the report."""
    require_role(actor, *BENCH)
    zone = site_zone()
    item = find_item(session, code)
    ancestors = []
    top = item
    while top.parent is not None:
        top = top.parent
        ancestors.append(top)
    lot = top.lot
    collections = list(lot.sources) if lot is not None else []
    made_into = list(
        session.scalars(
            select(ProductLot)
            .join(product_lot_source, product_lot_source.c.lot_id == ProductLot.id)
            .where(product_lot_source.c.item_id == item.id)
            .order_by(ProductLot.id)
        )
    )
    holds = list(session.scalars(select(Hold).where(Hold.item_id == item.id).order_by(Hold.id)))
    checks = list(
        session.scalars(
            select(BedsideCheck).where(BedsideCheck.item_id == item.id).order_by(BedsideCheck.id)
        )
    )
    names = _names(
        session,
        {h.placed_by_id for h in holds}
        | {h.cleared_by_id for h in holds}
        | {c.checked_by_id for c in checks},
    )
    qc_results = (
        list(
            session.scalars(select(QcResult).where(QcResult.lot_id == lot.id).order_by(QcResult.id))
        )
        if lot is not None
        else []
    )
    episode = item.episode
    return ItemHistory(
        item=item,
        episode=episode,
        identifier=identifiers.eye_readable(item.code, item.check_character),
        check=item.check_character,
        coi=identifiers.eye_readable(episode.coi, episode.coi_check),
        ancestors=ancestors,
        lot=lot,
        collections=collections,
        made_into=made_into,
        children=sorted(item.children, key=lambda child: child.id),
        events=_event_lines(session, item),
        holds=[
            HoldLine(
                hold=h,
                placed_by=names.get(h.placed_by_id or 0, audit.COMMAND_LINE),
                cleared_by=names.get(h.cleared_by_id or 0, audit.COMMAND_LINE)
                if h.cleared_at
                else None,
            )
            for h in holds
        ],
        qc_results=qc_results,
        bedside_checks=[
            CheckLine(
                check=c,
                checked_by=names.get(c.checked_by_id or 0, audit.COMMAND_LINE),
                witness=session.get(ESignature, c.witness_signature_id)
                if c.witness_signature_id
                else None,
            )
            for c in checks
        ],
        changes=_changes(session, item, zone),
        zone=zone,
    )
