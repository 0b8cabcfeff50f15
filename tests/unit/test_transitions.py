"""The custody transition tables against DOMAIN.md section 4, written out by hand.

The expectations below are literal data taken from the domain reference, never derived from
``TRANSITIONS``: if the table in the code drifts from the rules, these tests fail.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from lims.auth.models import Role
from lims.custody import domain
from lims.custody.domain import (
    Action,
    Facts,
    Kind,
    State,
    available_actions,
    check_transition,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BENCH = {"technician", "manager"}
MANAGER = {"manager"}
ANYONE = {"technician", "manager", "researcher"}
RECIPIENT = {"technician", "manager", "researcher"}

#: kind -> state names (DOMAIN.md section 4).
EXPECTED_STATES = {
    "apheresis": {
        "collected", "packed", "in_transit", "received_for_manufacturing", "in_manufacturing",
        "consumed", "stored", "discarded",
    },
    "product_bag": {
        "manufactured", "quarantine", "released", "in_transit", "received", "stored", "issued",
        "thawed", "identity_verified", "infused", "discarded", "returned",
    },
    "aliquot": {
        "registered", "stored", "reserved", "picked", "in_transit", "distributed",
        "checked_out", "consumed", "discarded", "lost",
    },
}  # fmt: skip

EXPECTED_TERMINAL = {
    "apheresis": {"consumed", "discarded"},
    "product_bag": {"infused", "discarded", "returned"},
    "aliquot": {"distributed", "consumed", "discarded", "lost"},
}

ANY_OPEN = "any open state"
#: The step keeps the state the item is in.
SAME = None

#: kind -> action -> (from states, to state, roles, guards, internal). Guards are named by
#: the fact they look at: hold, qc, receipt, bedside, time.
EXPECTED = {
    "apheresis": {
        "pack": ({"collected"}, "packed", BENCH, set(), False),
        "ship": ({"collected", "packed", "stored"}, "in_transit", BENCH, {"hold"}, False),
        "receive": ({"in_transit"}, "received_for_manufacturing", BENCH, set(), False),
        # Cryopreserved before shipment, or at the manufacturing site before manufacture.
        "store": (
            {"collected", "packed", "received_for_manufacturing"},
            "stored",
            BENCH,
            set(),
            False,
        ),
        "start_manufacturing": (
            {"received_for_manufacturing", "stored"},
            "in_manufacturing",
            BENCH,
            {"hold"},
            False,
        ),
        # Consumed into a product lot by create_lot, never by a button.
        "consume": ({"in_manufacturing"}, "consumed", BENCH, set(), True),
        "discard": (ANY_OPEN, "discarded", BENCH, set(), False),
        # From one storage place to another, by the storage services (DOMAIN.md §6).
        "move": ({"stored"}, SAME, BENCH, set(), True),
    },
    "product_bag": {
        "quarantine": ({"manufactured"}, "quarantine", BENCH, set(), False),
        "release": ({"quarantine"}, "released", MANAGER, {"qc", "hold"}, False),
        "ship": ({"released"}, "in_transit", BENCH, {"hold"}, False),
        "receive": ({"in_transit"}, "received", BENCH, set(), False),
        # An issued bag that was not thawed goes back to the tank.
        "store": ({"received", "issued"}, "stored", BENCH, set(), False),
        "issue": ({"received", "stored"}, "issued", BENCH, set(), False),
        "move": ({"stored"}, SAME, BENCH, set(), True),
        "thaw": ({"issued"}, "thawed", BENCH, {"receipt"}, False),
        # Only the bedside check verifies identity.
        "verify_identity": ({"thawed"}, "identity_verified", BENCH, set(), True),
        "infuse": ({"identity_verified"}, "infused", BENCH, {"bedside", "time"}, False),
        "return": ({"released", "received", "stored", "issued"}, "returned", BENCH, set(), False),
        "discard": (ANY_OPEN, "discarded", BENCH, set(), False),
    },
    "aliquot": {
        "store": ({"registered"}, "stored", BENCH, set(), False),
        # A reserved tube stays in its box until picked: it moves with the box.
        "move": ({"stored", "reserved"}, SAME, BENCH, set(), True),
        # The request steps belong to the request services (issue 8): approval reserves, the
        # pick list picks, dispatch hands over, receipt (the researcher's too) distributes.
        "reserve": ({"stored"}, "reserved", MANAGER, {"hold"}, True),
        "unreserve": ({"reserved"}, "stored", ANYONE, set(), True),
        # A tube put on hold after approval is not picked: it is recorded short.
        "pick": ({"reserved"}, "picked", BENCH, {"hold"}, True),
        "put_back": ({"picked"}, "stored", BENCH, set(), True),
        "hand_over": ({"picked"}, "in_transit", BENCH, {"hold"}, True),
        "distribute": ({"picked", "in_transit"}, "distributed", RECIPIENT, {"hold"}, True),
        "check_out": ({"stored"}, "checked_out", BENCH, set(), False),
        "return_to_storage": ({"checked_out"}, "stored", BENCH, set(), False),
        # Only the undo at the bench takes a fresh placement back (its own service).
        "undo_store": ({"stored"}, "registered", BENCH, set(), True),
        "consume": ({"checked_out"}, "consumed", BENCH, set(), False),
        "discard": (ANY_OPEN, "discarded", BENCH, set(), False),
        "lose": (ANY_OPEN, "lost", BENCH, set(), False),
    },
}

NEEDS_REASON = {"discard", "lose", "return", "unreserve", "undo_store"}
SIGNATURES = {("product_bag", "release"): "released", ("product_bag", "infuse"): "administered"}

#: Facts under which every guard passes.
PASSING = Facts(
    now=NOW,
    has_lot=True,
    received_at_treating_site=True,
    bedside_check_passed=True,
    thawed_at=NOW - timedelta(minutes=5),
    max_minutes_after_thaw=30,
)
#: Facts under which every guard refuses, each one named.
FAILING = {
    "hold": replace(PASSING, on_hold=True, hold_reasons=("consent withdrawn: letter",)),
    "qc": replace(PASSING, qc_missing=("sterility",)),
    "receipt": replace(PASSING, received_at_treating_site=False),
    "bedside": replace(PASSING, bedside_check_passed=False),
    "time": replace(PASSING, thawed_at=NOW - timedelta(minutes=31)),
}
ALL_FAILING = Facts(
    now=NOW,
    on_hold=True,
    hold_reasons=("other: x",),
    qc_missing=("viability",),
    qc_failed=("sterility",),
    has_lot=False,
    received_at_treating_site=False,
    bedside_check_passed=False,
    thawed_at=None,
)


def from_states(kind: str, action: str) -> set[str]:
    states = EXPECTED[kind][action][0]
    if states == ANY_OPEN:
        return EXPECTED_STATES[kind] - EXPECTED_TERMINAL[kind]
    return states


def expected_allowed(kind: str, state: str, action: str, role: str, *, internal: bool) -> bool:
    if action not in EXPECTED[kind]:
        return False
    _, _, roles, _, is_internal = EXPECTED[kind][action]
    return state in from_states(kind, action) and role in roles and (internal or not is_internal)


TRIPLES = [
    (kind, state, action)
    for kind in sorted(EXPECTED_STATES)
    for state in sorted(EXPECTED_STATES[kind])
    for action in Action
]


def test_each_kind_has_the_states_of_the_domain():
    for kind in Kind:
        assert {s.value for s in domain.STATES[kind]} == EXPECTED_STATES[kind.value]
        assert {s.value for s in domain.TERMINAL_STATES[kind]} == EXPECTED_TERMINAL[kind.value]
    assert domain.INITIAL_STATE == {
        Kind.APHERESIS: State.COLLECTED,
        Kind.PRODUCT_BAG: State.MANUFACTURED,
        Kind.ALIQUOT: State.REGISTERED,
    }


@pytest.mark.parametrize(("kind", "state", "action"), TRIPLES, ids="-".join)
def test_every_state_and_action(kind, state, action):
    """Every kind x state x action, for every role, internal or not, with passing facts."""
    for role in Role:
        for internal in (False, True):
            decision = check_transition(
                Kind(kind), State(state), action, role, PASSING, internal=internal
            )
            expected = expected_allowed(kind, state, action, role.value, internal=internal)
            assert decision.allowed is expected, (role, internal, decision.refusals)
            if expected:
                to_state = decision.transition.to_state
                assert (to_state.value if to_state else None) == EXPECTED[kind][action][1]
            else:
                assert len(decision.refusals) >= 1
                status = decision.refusals[0].status
                unknown = action not in EXPECTED[kind]
                if unknown or (EXPECTED[kind][action][4] and not internal):
                    assert status == "unknown"
                elif role.value not in EXPECTED[kind][action][2]:
                    assert status == "forbidden"
                else:
                    assert status == "conflict"
                    assert decision.refusals[0].message.startswith("Cannot ")


@pytest.mark.parametrize(
    ("kind", "action"),
    [(kind, action) for kind in EXPECTED for action in EXPECTED[kind]],
    ids="-".join,
)
def test_each_guard_refuses_alone_and_only_where_the_domain_puts_it(kind, action):
    state = sorted(from_states(kind, action))[0]
    guards = EXPECTED[kind][action][3]
    for name, facts in FAILING.items():
        decision = check_transition(
            Kind(kind), State(state), action, Role.MANAGER, facts, internal=True
        )
        if name in guards:
            assert not decision.allowed, name
            assert [r.status for r in decision.refusals] == ["conflict"]
        else:
            assert decision.allowed, (name, decision.refusals)
    decision = check_transition(
        Kind(kind), State(state), action, Role.MANAGER, ALL_FAILING, internal=True
    )
    assert decision.allowed is (not guards)


def test_hold_refusal_names_the_reasons():
    decision = check_transition(
        Kind.ALIQUOT, State.STORED, "reserve", Role.MANAGER, FAILING["hold"], internal=True
    )
    assert not decision.allowed
    assert "on hold" in decision.refusals[0].message
    assert "consent withdrawn: letter" in decision.refusals[0].message


def test_discard_and_check_out_are_allowed_on_hold():
    """A hold stops material leaving; it must not stop it being discarded or used in house."""
    for kind, state, action in [
        (Kind.ALIQUOT, State.STORED, "discard"),
        (Kind.ALIQUOT, State.STORED, "check_out"),
        (Kind.PRODUCT_BAG, State.QUARANTINE, "discard"),
        (Kind.APHERESIS, State.COLLECTED, "discard"),
    ]:
        assert check_transition(kind, state, action, Role.TECHNICIAN, FAILING["hold"]).allowed


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        (replace(PASSING, has_lot=False), "no product lot"),
        (replace(PASSING, qc_missing=("sterility", "cell_dose")), "sterility, cell_dose missing"),
        (replace(PASSING, qc_failed=("viability",)), "out of specification: viability"),
    ],
)
def test_release_refused_without_complete_and_passed_qc(facts, message):
    assert domain.qc_complete_and_passed(PASSING) is None
    decision = check_transition(Kind.PRODUCT_BAG, State.QUARANTINE, "release", Role.MANAGER, facts)
    assert not decision.allowed
    assert message in decision.refusals[0].message


def test_release_with_qc_failed_and_on_hold_gives_both_refusals():
    facts = replace(PASSING, qc_failed=("viability",), on_hold=True, hold_reasons=("qc",))
    decision = check_transition(Kind.PRODUCT_BAG, State.QUARANTINE, "release", Role.MANAGER, facts)
    assert len(decision.refusals) == 2


def test_thaw_refused_until_received_at_the_treating_site():
    assert domain.received_at_treating_site(PASSING) is None
    decision = check_transition(
        Kind.PRODUCT_BAG, State.ISSUED, "thaw", Role.TECHNICIAN, FAILING["receipt"]
    )
    assert "not been received at the patient's treating site" in decision.refusals[0].message
    assert check_transition(
        Kind.PRODUCT_BAG, State.ISSUED, "thaw", Role.TECHNICIAN, PASSING
    ).allowed


def test_infusion_refused_without_a_passed_bedside_check():
    assert domain.bedside_check_passed(PASSING) is None
    decision = check_transition(
        Kind.PRODUCT_BAG, State.IDENTITY_VERIFIED, "infuse", Role.TECHNICIAN, FAILING["bedside"]
    )
    assert not decision.allowed
    assert "bedside" in decision.refusals[0].message


@pytest.mark.parametrize(
    ("limit", "minutes_since_thaw", "allowed"),
    [
        (30, 0, True),
        (30, 30, True),  # exactly at the limit is still within it
        (30, 30.02, False),
        (20, 19, True),
        (20, 21, False),
        (45, 40, True),
        (45, 46, False),
    ],
)
def test_infusion_time_limit_after_thaw(limit, minutes_since_thaw, allowed):
    facts = replace(
        PASSING,
        thawed_at=NOW - timedelta(minutes=minutes_since_thaw),
        max_minutes_after_thaw=limit,
    )
    decision = check_transition(
        Kind.PRODUCT_BAG, State.IDENTITY_VERIFIED, "infuse", Role.MANAGER, facts
    )
    assert decision.allowed is allowed
    if not allowed:
        assert f"More than {limit} minutes" in decision.refusals[0].message


def test_infusion_refused_when_the_thaw_time_is_unknown():
    facts = replace(PASSING, thawed_at=None)
    assert domain.within_time_after_thaw(facts) == "The product has not been thawed."
    assert not check_transition(
        Kind.PRODUCT_BAG, State.IDENTITY_VERIFIED, "infuse", Role.MANAGER, facts
    ).allowed


@pytest.mark.parametrize(
    ("kind", "state", "action"),
    [("apheresis", "in_manufacturing", "consume"), ("product_bag", "thawed", "verify_identity")],
)
def test_internal_actions_only_through_their_own_step(kind, state, action):
    refused = check_transition(Kind(kind), State(state), action, Role.MANAGER, PASSING)
    assert not refused.allowed
    assert refused.refusals[0].status == "unknown"
    assert "its own step" in refused.refusals[0].message
    assert check_transition(
        Kind(kind), State(state), action, Role.MANAGER, PASSING, internal=True
    ).allowed


#: What a researcher may do through a request's own steps: cancel it (which unreserves) and
#: confirm its receipt (which distributes). Nothing else, and nothing as a plain button.
RESEARCHER_STEPS = {("aliquot", "reserved", "unreserve"), ("aliquot", "picked", "distribute"),
                    ("aliquot", "in_transit", "distribute")}  # fmt: skip


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.ADMIN])
def test_researchers_and_admins_can_do_nothing(role):
    for kind, state, action in TRIPLES:
        decision = check_transition(Kind(kind), State(state), action, role, PASSING, internal=True)
        if role is Role.RESEARCHER and (kind, state, action) in RESEARCHER_STEPS:
            assert decision.allowed
            continue
        assert not decision.allowed
        if action in EXPECTED[kind] and role.value not in EXPECTED[kind][action][2]:
            assert decision.refusals[0].status == "forbidden"
    for kind in Kind:
        for state in domain.STATES[kind]:
            assert available_actions(kind, state, role) == []


@pytest.mark.parametrize(
    ("kind", "state", "action"),
    [
        ("product_bag", "quarantine", "release"),
        ("aliquot", "stored", "reserve"),
    ],
)
def test_only_managers_release_and_reserve(kind, state, action):
    refused = check_transition(
        Kind(kind), State(state), action, Role.TECHNICIAN, PASSING, internal=True
    )
    assert not refused.allowed
    assert refused.refusals[0].status == "forbidden"
    assert check_transition(
        Kind(kind), State(state), action, Role.MANAGER, PASSING, internal=True
    ).allowed


@pytest.mark.parametrize(
    ("kind", "state"),
    [(kind, state) for kind in sorted(EXPECTED_STATES) for state in sorted(EXPECTED_STATES[kind])],
    ids="-".join,
)
def test_available_actions_are_the_allowed_ones_and_never_internal(kind, state):
    for role in Role:
        offered = available_actions(Kind(kind), State(state), role)
        expected = {
            action
            for action in EXPECTED[kind]
            if expected_allowed(kind, state, action, role.value, internal=False)
        }
        assert {a.value for a in offered} == expected
        for action in offered:
            assert not domain.TRANSITIONS[Kind(kind)][action].internal
            assert check_transition(Kind(kind), State(state), action, role, PASSING).allowed


@pytest.mark.parametrize(
    ("kind", "state"),
    [(kind, state) for kind in sorted(EXPECTED_TERMINAL) for state in EXPECTED_TERMINAL[kind]],
    ids="-".join,
)
def test_terminal_states_allow_no_action(kind, state):
    for role in Role:
        assert available_actions(Kind(kind), State(state), role) == []
        for action in Action:
            assert not check_transition(
                Kind(kind), State(state), action, role, PASSING, internal=True
            ).allowed


def test_reason_is_needed_exactly_for_discard_lose_return_and_unreserve():
    seen = set()
    for kind, table in domain.TRANSITIONS.items():
        for action, transition in table.items():
            assert transition.needs_reason is (action.value in NEEDS_REASON), (kind, action)
            if transition.needs_reason:
                seen.add(action.value)
    assert seen == NEEDS_REASON


def test_signatures_are_asked_for_release_and_infusion_only():
    for kind, table in domain.TRANSITIONS.items():
        for action, transition in table.items():
            assert transition.signature == SIGNATURES.get((kind.value, action.value))


@pytest.mark.parametrize("action", ["fly", "", "RELEASE", "infuse "])
def test_unknown_action_names_are_refused(action):
    decision = check_transition(Kind.PRODUCT_BAG, State.QUARANTINE, action, Role.MANAGER, PASSING)
    assert not decision.allowed
    assert decision.refusals[0].status == "unknown"
