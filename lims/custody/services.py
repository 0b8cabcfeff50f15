"""The custody core: finding an item by its scanned code and moving it through its states.

:func:`perform_action` is the one function through which every state change passes: it locks
the item, checks role, state and guards against the transition table, signs when the step
needs a signature, writes the custody event and the audit rows, and commits once.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from lims import identifiers
from lims.audit import services as audit
from lims.auth.models import Role, Site, User
from lims.auth.services import Witness, site_by_code
from lims.custody import domain
from lims.custody.domain import Action, Facts, Kind, State
from lims.custody.holds import hold_items
from lims.custody.models import (
    UNITS,
    BedsideCheck,
    CustodyEvent,
    Hold,
    HoldReason,
    Item,
    QcResult,
)
from lims.db import utcnow
from lims.errors import Conflict, Forbidden, InvalidTransition, NotFound, ValidationError
from lims.patients.models import Episode
from lims.requests.models import ACTIVE_LINE_STATUSES, AliquotRequest, RequestLine


def custody_settings() -> dict[str, Any]:
    return current_app.config["LIMS"]["custody"]


# -- finding ----------------------------------------------------------------------------------

#: The shape of a local identifier: site code, digits, check character.
LOCAL_ID = re.compile(r"[A-Z]{2,4}[0-9]{4,12}[0-9A-Z*]")


def code_from_scan(text: str, *, manual: bool = False) -> str:
    """The item code a scan or an identifier stands for (refuses other structures).

    ``manual`` is for what a person typed: a DIN typed by hand must carry its check character
    (DOMAIN.md §3). API clients and scans send exact codes and need none.
    """
    raw = (text or "").strip()
    if not raw:
        raise ValidationError("Scan or type an identifier.", field="code")
    if raw[0] in "=&":
        try:
            scan = identifiers.parse_scan(raw)
        except identifiers.IdentifierError as exc:
            raise ValidationError(exc.message, field="code") from None
        if scan.kind is identifiers.ScanKind.DIN:
            return scan.value.din
        raise ValidationError(
            f"That barcode is {identifiers.describe(scan.kind)}, not a bag or tube identifier.",
            field="code",
        )
    compact = "".join(raw.split()).upper().replace("-", "")
    try:
        if identifiers.looks_like_din(compact):
            if manual:
                raise ValidationError(
                    "Type the DIN with its check character (the boxed character printed after "
                    "it), or scan the barcode.",
                    field="code",
                )
            return compact
        if len(compact) == 14 and identifiers.looks_like_din(compact[:13]):
            return identifiers.parse_din(raw, scanned=False).din
        if LOCAL_ID.fullmatch(compact):
            # A local identifier ends in its check character: a typing slip is named as such.
            return identifiers.parse_local_id(compact).text
    except identifiers.IdentifierError as exc:
        raise ValidationError(exc.message, field="code") from None
    return compact


def find_item(
    session: Session, text: str, *, for_update: bool = False, manual: bool = False
) -> Item:
    code = code_from_scan(text, manual=manual)
    query = select(Item).where(Item.code == code)
    if for_update:
        # Refresh a copy the session already holds: the lock is worth nothing if the checks
        # then look at the state as it was before someone else's change.
        query = query.with_for_update(of=Item).execution_options(populate_existing=True)
    item = session.scalar(query)
    if item is None:
        raise NotFound(f"No bag or tube with identifier {code}.", field="code")
    return item


def visible_to(actor: User | None, item: Item) -> bool:
    """Researchers see aliquots only (and through them never who the patient is)."""
    return actor is None or actor.role is not Role.RESEARCHER or item.kind is Kind.ALIQUOT


# -- creating -------------------------------------------------------------------------------


def record_event(
    session: Session,
    *,
    actor: User | None,
    item: Item,
    action: str,
    from_state: State | None,
    from_site_id: int | None = None,
    from_location: str | None = None,
    from_custodian: str | None = None,
    reason: str | None = None,
    temperature_logger_ref: str | None = None,
    signature_id: int | None = None,
    witness_signature_id: int | None = None,
) -> CustodyEvent:
    event = CustodyEvent(
        item=item,
        at=utcnow(),
        user_id=actor.id if actor else None,
        action=action,
        from_state=from_state.value if from_state else None,
        to_state=item.state.value,
        from_site_id=from_site_id,
        to_site_id=item.site_id,
        from_location=from_location,
        to_location=item.location,
        from_custodian=from_custodian,
        to_custodian=item.custodian,
        reason=reason,
        temperature_logger_ref=temperature_logger_ref,
        signature_id=signature_id,
        witness_signature_id=witness_signature_id,
    )
    session.add(event)
    return event


def add_item(
    session: Session, *, actor: User | None, item: Item, reason: str | None = None
) -> Item:
    """Add a new item in its kind's first state, with its registration event and audit row."""
    item.state = domain.INITIAL_STATE[item.kind]
    if not item.custodian:
        item.custodian = actor.full_name if actor else item.site.code
    session.add(item)
    audit.record_created(session, item, actor=actor, reason=reason)
    record_event(session, actor=actor, item=item, action="register", from_state=None, reason=reason)
    if item.episode.patient.consent_withdrawn_at is not None:
        # Consent withdrawal holds the patient's material, including what is registered later.
        hold_items(
            session,
            actor=actor,
            items=[item],
            reason=HoldReason.CONSENT_WITHDRAWN,
            detail="consent was withdrawn before this material was registered",
        )
    return item


def site_for(session: Session, actor: User | None, site_code: str | None) -> Site:
    if site_code:
        return site_by_code(session, site_code)
    if actor is None:
        raise ValidationError("Name the site.", field="site")
    return actor.site


def check_quantity(quantity: Any, unit: str) -> Decimal:
    try:
        value = Decimal(str(quantity))
    except (ArithmeticError, ValueError):
        raise ValidationError("The quantity must be a number.", field="quantity") from None
    if not value.is_finite() or value <= 0 or value >= Decimal("1e9"):
        raise ValidationError("The quantity must be a positive number.", field="quantity")
    if unit not in UNITS:
        raise ValidationError(f"The unit is one of {', '.join(UNITS)}.", field="unit")
    return value


# -- transitions ----------------------------------------------------------------------------


def gather_facts(session: Session, item: Item) -> Facts:
    return gather_facts_many(session, [item])[item.id]


def gather_facts_many(session: Session, items: Sequence[Item]) -> dict[int, Facts]:
    """What the guards may look at, for each item, in a few queries whatever their number."""
    ids = [item.id for item in items]
    settings = custody_settings()
    holds: dict[int, list[Hold]] = defaultdict(list)
    for hold in session.scalars(
        select(Hold).where(Hold.item_id.in_(ids), Hold.cleared_at.is_(None)).order_by(Hold.id)
    ):
        holds[hold.item_id].append(hold)
    latest_qc: dict[int, dict[str, bool]] = defaultdict(dict)
    lots = {item.lot_id for item in items if item.lot_id is not None}
    if lots:
        results = session.scalars(
            select(QcResult).where(QcResult.lot_id.in_(lots)).order_by(QcResult.id)
        )
        for result in results:
            latest_qc[result.lot_id][result.test] = result.passed
    received = set(
        session.scalars(
            select(CustodyEvent.item_id)
            .join(Item, CustodyEvent.item_id == Item.id)
            .join(Episode, Item.episode_id == Episode.id)
            .where(
                CustodyEvent.item_id.in_(ids),
                CustodyEvent.action == Action.RECEIVE.value,
                CustodyEvent.to_site_id == Episode.treating_site_id,
            )
        )
    )
    last_checks: dict[int, BedsideCheck] = {}
    bags = [item.id for item in items if item.kind is Kind.PRODUCT_BAG]
    if bags:
        for check in session.scalars(
            select(BedsideCheck).where(BedsideCheck.item_id.in_(bags)).order_by(BedsideCheck.id)
        ):
            last_checks[check.item_id] = check
    limits = settings["max_minutes_after_thaw_by_product"]
    now = utcnow()
    facts = {}
    for item in items:
        episode = item.episode
        latest = latest_qc[item.lot_id] if item.lot_id is not None else {}
        last_check = last_checks.get(item.id)
        facts[item.id] = Facts(
            now=now,
            on_hold=bool(holds[item.id]),
            hold_reasons=tuple(f"{h.reason.label}: {h.detail}" for h in holds[item.id]),
            qc_missing=tuple(t for t in settings["required_qc"] if t not in latest)
            if item.lot_id is not None
            else (),
            qc_failed=tuple(sorted(t for t, passed in latest.items() if not passed)),
            has_lot=item.lot_id is not None,
            received_at_treating_site=item.site_id == episode.treating_site_id
            and item.id in received,
            bedside_check_passed=bool(
                last_check
                and last_check.passed
                and (item.thawed_at is None or last_check.checked_at >= item.thawed_at)
            ),
            thawed_at=item.thawed_at,
            max_minutes_after_thaw=int(
                limits.get(episode.product_name, settings["max_minutes_after_thaw"])
            ),
            label_unverified_steps=label_unverified_steps(item),
        )
    return facts


def label_unverified_steps(item: Item) -> frozenset[str]:
    """The steps held back until the item's printed label is scanned back.

    An item whose label was never printed here is not held: material registered before label
    printing (or labelled by hand) keeps its workflow.
    """
    if item.label_printed_at is None or item.label_verified_at is not None:
        return frozenset()
    waiting = current_app.config["LIMS"]["labels"]["verify_before"]
    return frozenset(waiting.get(item.kind.value, ()))


@dataclass(frozen=True)
class Move:
    """Where the material goes and who holds it after the step (all optional)."""

    site_code: str | None = None
    location: str | None = None
    custodian: str | None = None
    temperature_logger_ref: str | None = None
    #: The storage box and position it is put in (store, move, return to storage).
    box_id: int | None = None
    position: int | None = None


#: Steps after which the item is no longer in its storage box: its position is free again.
LEAVES_STORAGE = frozenset(
    {
        Action.SHIP,
        Action.ISSUE,
        Action.PICK,
        Action.START_MANUFACTURING,
        Action.CONSUME,
        Action.DISCARD,
        Action.LOSE,
        Action.RETURN,
        Action.HAND_OVER,
        Action.DISTRIBUTE,
        Action.UNDO_STORE,
    }
)
#: The states in which a request holds an aliquot.
REQUEST_STATES = frozenset({State.RESERVED, State.PICKED, State.IN_TRANSIT})
REFUSALS = {"forbidden": Forbidden, "unknown": InvalidTransition, "conflict": InvalidTransition}
NEEDS_CUSTODIAN = {Action.SHIP, Action.HAND_OVER}


def held_by_request(session: Session, item: Item) -> str | None:
    """The request that holds this tube (reserved, picked or handed over for it), if any.

    Such a tube leaves that state only through the request's own steps (a short pick, a
    withdrawal): ended by a bare discard or loss, it would strand the request."""
    if item.kind is not Kind.ALIQUOT or item.state not in REQUEST_STATES:
        return None
    return session.scalar(
        select(AliquotRequest.code)
        .join(RequestLine, RequestLine.request_id == AliquotRequest.id)
        .where(RequestLine.item_id == item.id, RequestLine.status.in_(ACTIVE_LINE_STATUSES))
    )


def refuse_if_held_by_request(session: Session, item: Item) -> None:
    code = held_by_request(session, item)
    if code is not None:
        raise InvalidTransition(
            f"{item.code} is held by request {code}: a tube that cannot go is recorded short "
            "on the request's pick list."
        )


def perform_action(
    session: Session,
    *,
    actor: User,
    code: str,
    action: str,
    reason: str | None = None,
    move: Move | None = None,
    password: str | None = None,
    internal: bool = False,
    commit: bool = True,
    witness: Witness | None = None,
) -> CustodyEvent:
    """Do one custody step on the item with this code, or refuse with a DomainError.

    ``witness`` is the second person (from ``confirm_second_person``) for the steps the
    configuration names in ``custody.second_person``.
    """
    move = move or Move()
    item = find_item(session, code, for_update=True)
    if not visible_to(actor, item):
        raise NotFound(f"No bag or tube with identifier {item.code}.")
    if not internal:
        refuse_if_held_by_request(session, item)
    facts = gather_facts(session, item)
    decision = domain.check_transition(
        item.kind, item.state, action, actor.role, facts, internal=internal
    )
    if not decision.allowed:
        refusal = decision.refusals[0]
        raise REFUSALS[refusal.status](refusal.message)
    transition = decision.transition
    step = Action(action)
    reason = (reason or "").strip() or None
    if transition.needs_reason and not reason:
        raise ValidationError(f"Give the reason to {step.label.lower()}.", field="reason")
    if step in NEEDS_CUSTODIAN and not (move.custodian or "").strip():
        raise ValidationError(
            "Name the courier or person who takes the material.", field="custodian"
        )
    #: What a signature on this step is bound to: the item's version before the step.
    signed_record = {
        "code": item.code,
        "state": item.state,
        "version": item.version,
        "action": step.value,
        "lot_id": item.lot_id,
    }
    signature = None
    if transition.signature:
        signature = audit.sign(
            session,
            signer=actor,
            password=password,
            meaning=transition.signature,
            entity="item",
            entity_id=item.id,
            record=signed_record,
        )
    witness_needed = second_person_step(session, item, step, actor, move)
    if witness_needed and witness is None:
        raise ValidationError(
            f"{step.label} needs a second person: they sign with their own username and password.",
            field="witness",
        )
    if witness is not None and witness.user.id == actor.id:
        raise ValidationError("One person cannot both do and verify this step.", field="witness")
    witness_signature = None
    if witness is not None:
        witness_signature = audit.countersign(
            session, witness=witness, entity="item", entity_id=item.id, record=signed_record
        )
    before = (item.state, item.site_id, item.location, item.custodian)
    _apply(session, item, step, transition.to_state or item.state, actor, move)
    changes = audit.pending_changes(item)
    # Write the item now (version checked) so that a lost race is a Conflict here, not a
    # StaleDataError from the autoflush of the next statement.
    flush_or_conflict(session)
    audit.record_changes(
        session, item, actor=actor, action=step.value, reason=reason, changes=changes
    )
    event = record_event(
        session,
        actor=actor,
        item=item,
        action=step.value,
        from_state=before[0],
        from_site_id=before[1],
        from_location=before[2],
        from_custodian=before[3],
        reason=reason,
        temperature_logger_ref=move.temperature_logger_ref,
        signature_id=signature.id if signature else None,
        witness_signature_id=witness_signature.id if witness_signature else None,
    )
    if step is Action.INFUSE:
        episode = item.episode
        episode.infused_at = utcnow()
        audit.record_changes(session, episode, actor=actor, action="infuse")
    if commit:
        commit_or_conflict(session)
    return event


def perform_many(
    session: Session,
    *,
    actor: User,
    items: Sequence[Item],
    action: str,
    reason: str | None = None,
    move: Move | None = None,
    internal: bool = False,
) -> list[CustodyEvent]:
    """The same step on many items in one transaction (no commit: the caller's), checked as
    :func:`perform_action` checks one: every item is checked before anything changes, and one
    refusal refuses them all, naming the item. The caller has locked the items (``lock_items``
    of the request services). The guards' facts come from a few set queries, the items are
    written in one flush and the audit rows chained in one go, so a step over 500 tubes costs
    little more than over five. Steps that need a signature or a second person are taken one
    at a time with :func:`perform_action`."""
    move = move or Move()
    step = Action(action)
    reason = (reason or "").strip() or None
    facts = gather_facts_many(session, items)
    for item in items:
        if not visible_to(actor, item):
            raise NotFound(f"No bag or tube with identifier {item.code}.")
        if not internal:
            refuse_if_held_by_request(session, item)
        decision = domain.check_transition(
            item.kind, item.state, action, actor.role, facts[item.id], internal=internal
        )
        if not decision.allowed:
            refusal = decision.refusals[0]
            raise REFUSALS[refusal.status](f"{item.code}: {refusal.message}")
        transition = decision.transition
        if transition.signature or second_person_step(session, item, step, actor, move):
            raise ValueError(f"{step.value} needs a signature: use perform_action")
        if transition.needs_reason and not reason:
            raise ValidationError(f"Give the reason to {step.label.lower()}.", field="reason")
    if step in NEEDS_CUSTODIAN and not (move.custodian or "").strip():
        raise ValidationError(
            "Name the courier or person who takes the material.", field="custodian"
        )
    before = {item.id: (item.state, item.site_id, item.location, item.custodian) for item in items}
    changed = []
    for item in items:
        transition = domain.TRANSITIONS[item.kind][step]
        _apply(session, item, step, transition.to_state or item.state, actor, move)
        changed.append((item, audit.pending_changes(item)))
    flush_or_conflict(session)
    audit.record_changes_many(session, changed, actor=actor, action=step.value, reason=reason)
    return [
        record_event(
            session,
            actor=actor,
            item=item,
            action=step.value,
            from_state=before[item.id][0],
            from_site_id=before[item.id][1],
            from_location=before[item.id][2],
            from_custodian=before[item.id][3],
            reason=reason,
            temperature_logger_ref=move.temperature_logger_ref,
        )
        for item in items
    ]


def second_person_step(session: Session, item: Item, step: Action, actor: User, move: Move) -> bool:
    """Whether the configuration asks for a second person on this step of this item."""
    wanted = custody_settings()["second_person"]
    if step is Action.RELEASE:
        return bool(wanted.get("release"))
    if step is Action.RECEIVE and item.kind is Kind.PRODUCT_BAG:
        site_id = site_by_code(session, move.site_code).id if move.site_code else actor.site_id
        return bool(wanted.get("receive_at_treating_site")) and (
            site_id == item.episode.treating_site_id
        )
    return False


def _apply(
    session: Session, item: Item, step: Action, to_state: State, actor: User, move: Move
) -> None:
    # Look the site up before changing anything: the query autoflushes, and a flushed change
    # leaves no history for the audit rows (pending_changes) to read.
    site = site_by_code(session, move.site_code) if move.site_code else None
    item.state = to_state
    if site is not None:
        item.site_id = site.id
    elif step is Action.RECEIVE:
        item.site_id = actor.site_id  # received where the receiving person works
    if move.location is not None:
        item.location = move.location.strip()
    if move.custodian:
        item.custodian = move.custodian.strip()
    elif step in {Action.RECEIVE, Action.PICK, Action.CHECK_OUT, Action.ISSUE}:
        item.custodian = actor.full_name
    if step is Action.THAW:
        item.thawed_at = utcnow()
    if step is Action.RETURN_TO_STORAGE:
        item.thaw_count += 1
        item.checked_out_at = None
    if step is Action.CHECK_OUT:
        # It keeps its position while out: the tube goes back where it came from.
        item.checked_out_at = utcnow()
    if move.box_id is not None:
        item.box_id, item.position = move.box_id, move.position
        if step is not Action.RETURN_TO_STORAGE or item.stored_at is None:
            item.stored_at = utcnow()
    elif step in LEAVES_STORAGE:
        item.box_id = item.position = None
        if step is Action.UNDO_STORE:
            item.stored_at = None


def commit_or_conflict(session: Session) -> None:
    try:
        session.commit()
    except StaleDataError:
        session.rollback()
        raise Conflict(
            "Someone else changed this item at the same moment; scan it again."
        ) from None


def flush_or_conflict(session: Session) -> None:
    try:
        session.flush()
    except StaleDataError:
        session.rollback()
        raise Conflict(
            "Someone else changed this item at the same moment; scan it again."
        ) from None


def events_of(session: Session, item: Item) -> list[CustodyEvent]:
    return list(
        session.scalars(
            select(CustodyEvent).where(CustodyEvent.item_id == item.id).order_by(CustodyEvent.id)
        )
    )


def lineage(item: Item) -> list[Item]:
    """The item and its ancestors, nearest first, down to the apheresis it was made from."""
    chain = [item]
    while chain[-1].parent is not None:
        chain.append(chain[-1].parent)
    if chain[-1].lot is not None:
        # A bag comes from its lot's apheresis collections (several when pooled).
        chain.extend(chain[-1].lot.sources)
    return chain


def episode_of(session: Session, episode_id: int) -> Episode:
    episode = session.get(Episode, episode_id)
    if episode is None:
        raise NotFound("No such episode.")
    return episode
