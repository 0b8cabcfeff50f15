"""The custody state machine: states and transitions per kind of material, declared as data.

Pure rules, no Flask and no database. The service gathers the facts a guard needs
(:class:`Facts`) and asks :func:`check_transition`; pages and the API compute the actions they
offer with :func:`available_actions` from the same table, so what is offered and what is allowed
cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from lims.auth.models import Role


class Kind(StrEnum):
    APHERESIS = "apheresis"
    PRODUCT_BAG = "product_bag"
    ALIQUOT = "aliquot"

    @property
    def label(self) -> str:
        return {"apheresis": "Apheresis", "product_bag": "Product bag", "aliquot": "Aliquot"}[
            self.value
        ]


class State(StrEnum):
    # apheresis
    COLLECTED = "collected"
    PACKED = "packed"
    RECEIVED_FOR_MANUFACTURING = "received_for_manufacturing"
    IN_MANUFACTURING = "in_manufacturing"
    CONSUMED = "consumed"
    # product bag
    MANUFACTURED = "manufactured"
    QUARANTINE = "quarantine"
    RELEASED = "released"
    RECEIVED = "received"
    ISSUED = "issued"
    THAWED = "thawed"
    IDENTITY_VERIFIED = "identity_verified"
    INFUSED = "infused"
    RETURNED = "returned"
    # aliquot
    REGISTERED = "registered"
    RESERVED = "reserved"
    PICKED = "picked"
    DISTRIBUTED = "distributed"
    CHECKED_OUT = "checked_out"
    LOST = "lost"
    # shared
    IN_TRANSIT = "in_transit"
    STORED = "stored"
    DISCARDED = "discarded"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


INITIAL_STATE = {
    Kind.APHERESIS: State.COLLECTED,
    Kind.PRODUCT_BAG: State.MANUFACTURED,
    Kind.ALIQUOT: State.REGISTERED,
}

TERMINAL_STATES = {
    Kind.APHERESIS: frozenset({State.CONSUMED, State.DISCARDED}),
    Kind.PRODUCT_BAG: frozenset({State.INFUSED, State.DISCARDED, State.RETURNED}),
    Kind.ALIQUOT: frozenset({State.DISTRIBUTED, State.CONSUMED, State.DISCARDED, State.LOST}),
}

STATES = {
    Kind.APHERESIS: frozenset(
        {
            State.COLLECTED, State.PACKED, State.IN_TRANSIT, State.RECEIVED_FOR_MANUFACTURING,
            State.IN_MANUFACTURING, State.CONSUMED, State.STORED, State.DISCARDED,
        }
    ),
    Kind.PRODUCT_BAG: frozenset(
        {
            State.MANUFACTURED, State.QUARANTINE, State.RELEASED, State.IN_TRANSIT,
            State.RECEIVED, State.STORED, State.ISSUED, State.THAWED, State.IDENTITY_VERIFIED,
            State.INFUSED, State.DISCARDED, State.RETURNED,
        }
    ),
    Kind.ALIQUOT: frozenset(
        {
            State.REGISTERED, State.STORED, State.RESERVED, State.PICKED, State.IN_TRANSIT,
            State.DISTRIBUTED, State.CHECKED_OUT, State.CONSUMED, State.DISCARDED, State.LOST,
        }
    ),
}  # fmt: skip


class Action(StrEnum):
    PACK = "pack"
    SHIP = "ship"
    RECEIVE = "receive"
    START_MANUFACTURING = "start_manufacturing"
    CONSUME = "consume"
    STORE = "store"
    #: From one storage place to another (a position, a box or a rack moved with its content).
    MOVE = "move"
    QUARANTINE = "quarantine"
    RELEASE = "release"
    ISSUE = "issue"
    THAW = "thaw"
    VERIFY_IDENTITY = "verify_identity"
    INFUSE = "infuse"
    RETURN = "return"
    RESERVE = "reserve"
    UNRESERVE = "unreserve"
    PICK = "pick"
    PUT_BACK = "put_back"
    HAND_OVER = "hand_over"
    DISTRIBUTE = "distribute"
    CHECK_OUT = "check_out"
    RETURN_TO_STORAGE = "return_to_storage"
    #: Takes back a placement made by mistake while filling a box (the tube goes back to
    #: registered, its position is free again); the events of both steps stay on record.
    UNDO_STORE = "undo_store"
    DISCARD = "discard"
    LOSE = "lose"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize()


@dataclass(frozen=True)
class Facts:
    """What the guards may look at, gathered by the service before it asks."""

    now: datetime
    on_hold: bool = False
    hold_reasons: tuple[str, ...] = ()
    #: QC of the product lot: tests still missing, and tests that failed.
    qc_missing: tuple[str, ...] = ()
    qc_failed: tuple[str, ...] = ()
    has_lot: bool = False
    #: Whether the item's current site is the episode's treating site, and it was received there.
    received_at_treating_site: bool = False
    bedside_check_passed: bool = False
    thawed_at: datetime | None = None
    max_minutes_after_thaw: int = 30
    #: The steps (action values) the configuration holds back until the item's printed label
    #: is scanned back ([labels] verify_before); empty when no label was printed or it was.
    label_unverified_steps: frozenset[str] = frozenset()


Guard = Callable[[Facts], str | None]


def not_on_hold(facts: Facts) -> str | None:
    if facts.on_hold:
        return "The material is on hold (" + "; ".join(facts.hold_reasons) + ")."
    return None


def qc_complete_and_passed(facts: Facts) -> str | None:
    if not facts.has_lot:
        return "The bag belongs to no product lot, so it has no QC results."
    if facts.qc_missing:
        return "QC is not complete: " + ", ".join(facts.qc_missing) + " missing."
    if facts.qc_failed:
        return "QC out of specification: " + ", ".join(facts.qc_failed) + "."
    return None


def received_at_treating_site(facts: Facts) -> str | None:
    if not facts.received_at_treating_site:
        return "The product has not been received at the patient's treating site."
    return None


def bedside_check_passed(facts: Facts) -> str | None:
    if not facts.bedside_check_passed:
        return "No passed bedside identity check for this bag."
    return None


def within_time_after_thaw(facts: Facts) -> str | None:
    if facts.thawed_at is None:
        return "The product has not been thawed."
    limit = facts.thawed_at + timedelta(minutes=facts.max_minutes_after_thaw)
    if facts.now > limit:
        return (
            f"More than {facts.max_minutes_after_thaw} minutes have passed since thaw; "
            "the product must not be infused."
        )
    return None


def label_verified(action: Action, facts: Facts) -> str | None:
    """A guard on every step: those the configuration names wait for the label's scan-back.

    It reads the action as well as the facts, because which steps wait is configured per kind
    of material, not written into the table.
    """
    if action.value in facts.label_unverified_steps:
        return "Printed label not verified: scan the label first (bench, Confirm label)."
    return None


@dataclass(frozen=True)
class Transition:
    from_states: frozenset[State]
    #: None: the step keeps the state (a move from one storage place to another).
    to_state: State | None
    roles: frozenset[Role]
    guards: tuple[Guard, ...] = ()
    needs_reason: bool = False
    #: The meaning of the e-signature this step needs ("released"), or None.
    signature: str | None = None
    #: Done by a dedicated service (bedside check, request approval), never a plain button.
    internal: bool = False


BENCH = frozenset({Role.TECHNICIAN, Role.MANAGER})
MANAGER = frozenset({Role.MANAGER})
ANYONE = frozenset({Role.TECHNICIAN, Role.MANAGER, Role.RESEARCHER})


def _t(from_states, to_state: State | None, roles=BENCH, **options) -> Transition:
    return Transition(frozenset(from_states), to_state, roles, **options)


def _any_open(kind: Kind) -> frozenset[State]:
    return STATES[kind] - TERMINAL_STATES[kind]


S = State
TRANSITIONS: dict[Kind, dict[Action, Transition]] = {
    Kind.APHERESIS: {
        Action.PACK: _t({S.COLLECTED}, S.PACKED),
        Action.SHIP: _t({S.COLLECTED, S.PACKED, S.STORED}, S.IN_TRANSIT, guards=(not_on_hold,)),
        Action.RECEIVE: _t({S.IN_TRANSIT}, S.RECEIVED_FOR_MANUFACTURING),
        Action.STORE: _t({S.COLLECTED, S.PACKED, S.RECEIVED_FOR_MANUFACTURING}, S.STORED),
        Action.MOVE: _t({S.STORED}, None, internal=True),
        Action.START_MANUFACTURING: _t(
            {S.RECEIVED_FOR_MANUFACTURING, S.STORED}, S.IN_MANUFACTURING, guards=(not_on_hold,)
        ),
        # Consumption happens when a product lot is made from the collection.
        Action.CONSUME: _t({S.IN_MANUFACTURING}, S.CONSUMED, internal=True),
        Action.DISCARD: _t(_any_open(Kind.APHERESIS), S.DISCARDED, needs_reason=True),
    },
    Kind.PRODUCT_BAG: {
        Action.QUARANTINE: _t({S.MANUFACTURED}, S.QUARANTINE),
        Action.RELEASE: _t(
            {S.QUARANTINE},
            S.RELEASED,
            roles=MANAGER,
            guards=(qc_complete_and_passed, not_on_hold),
            signature="released",
        ),
        Action.SHIP: _t({S.RELEASED}, S.IN_TRANSIT, guards=(not_on_hold,)),
        Action.RECEIVE: _t({S.IN_TRANSIT}, S.RECEIVED),
        Action.STORE: _t({S.RECEIVED, S.ISSUED}, S.STORED),
        Action.MOVE: _t({S.STORED}, None, internal=True),
        Action.ISSUE: _t({S.RECEIVED, S.STORED}, S.ISSUED),
        Action.THAW: _t({S.ISSUED}, S.THAWED, guards=(received_at_treating_site,)),
        Action.VERIFY_IDENTITY: _t({S.THAWED}, S.IDENTITY_VERIFIED, internal=True),
        Action.INFUSE: _t(
            {S.IDENTITY_VERIFIED},
            S.INFUSED,
            guards=(bedside_check_passed, within_time_after_thaw),
            signature="administered",
        ),
        Action.RETURN: _t(
            {S.RELEASED, S.RECEIVED, S.STORED, S.ISSUED}, S.RETURNED, needs_reason=True
        ),
        Action.DISCARD: _t(_any_open(Kind.PRODUCT_BAG), S.DISCARDED, needs_reason=True),
    },
    Kind.ALIQUOT: {
        Action.STORE: _t({S.REGISTERED}, S.STORED),
        # A reserved tube stays in its box until picked, so it moves with the box.
        Action.MOVE: _t({S.STORED, S.RESERVED}, None, internal=True),
        # The request steps are done through the request (lims.requests.services): approval
        # reserves, the pick list picks, dispatch hands over, receipt distributes.
        Action.RESERVE: _t(
            {S.STORED}, S.RESERVED, roles=MANAGER, guards=(not_on_hold,), internal=True
        ),
        # Pulled from a request (cancelled, consent withdrawn): by whoever records that.
        Action.UNRESERVE: _t(
            {S.RESERVED}, S.STORED, roles=ANYONE, needs_reason=True, internal=True
        ),
        Action.PICK: _t({S.RESERVED}, S.PICKED, guards=(not_on_hold,), internal=True),
        # A picked tube whose request no longer wants it goes back into a box.
        Action.PUT_BACK: _t({S.PICKED}, S.STORED, internal=True),
        Action.HAND_OVER: _t({S.PICKED}, S.IN_TRANSIT, guards=(not_on_hold,), internal=True),
        Action.DISTRIBUTE: _t(
            {S.PICKED, S.IN_TRANSIT},
            S.DISTRIBUTED,
            roles=BENCH | {Role.RESEARCHER},
            guards=(not_on_hold,),
            internal=True,
        ),
        Action.CHECK_OUT: _t({S.STORED}, S.CHECKED_OUT),
        Action.RETURN_TO_STORAGE: _t({S.CHECKED_OUT}, S.STORED),
        Action.UNDO_STORE: _t({S.STORED}, S.REGISTERED, internal=True, needs_reason=True),
        Action.CONSUME: _t({S.CHECKED_OUT}, S.CONSUMED),
        Action.DISCARD: _t(_any_open(Kind.ALIQUOT), S.DISCARDED, needs_reason=True),
        Action.LOSE: _t(_any_open(Kind.ALIQUOT), S.LOST, needs_reason=True),
    },
}


@dataclass(frozen=True)
class Refusal:
    """Why an action is not possible; ``status`` says which HTTP answer fits."""

    message: str
    status: str = "conflict"  # or "forbidden", "unknown"


@dataclass(frozen=True)
class Decision:
    transition: Transition | None
    refusals: list[Refusal] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return self.transition is not None and not self.refusals


def check_transition(
    kind: Kind, state: State, action: str, role: Role, facts: Facts, *, internal: bool = False
) -> Decision:
    """Whether ``role`` may do ``action`` on material of ``kind`` in ``state`` now."""
    try:
        transition = TRANSITIONS[kind][Action(action)]
    except (ValueError, KeyError):
        return Decision(
            None, [Refusal(f"'{action}' is not an action on {kind.label.lower()}.", "unknown")]
        )
    if transition.internal and not internal:
        return Decision(
            None, [Refusal(f"'{action}' is done through its own step, not directly.", "unknown")]
        )
    if role not in transition.roles:
        return Decision(transition, [Refusal("Your role may not do this.", "forbidden")])
    if state not in transition.from_states:
        return Decision(
            transition,
            [Refusal(f"Cannot {Action(action).label.lower()} material that is {state.label}.")],
        )
    refusals = [Refusal(message) for guard in transition.guards if (message := guard(facts))]
    if message := label_verified(Action(action), facts):
        refusals.append(Refusal(message))
    return Decision(transition, refusals)


def available_actions(kind: Kind, state: State, role: Role) -> list[Action]:
    """The actions to offer: allowed from this state for this role, not internal ones."""
    return [
        action
        for action, transition in TRANSITIONS[kind].items()
        if state in transition.from_states and role in transition.roles and not transition.internal
    ]
