"""What the bench scan page asks for each custody step: pure rules, no Flask, no database.

The buttons on the item card come from the transition table (``available_actions``); this
module only says which of them need something more than a press (a reason, a second scan, a
password) and which can be done scan after scan in a batch ("scan mode").
"""

from __future__ import annotations

from enum import StrEnum

from lims.custody.domain import TRANSITIONS, Action, Kind


class Need(StrEnum):
    REASON = "reason"
    #: A second scan: the storage place's label (freezer, rack, box, position).
    LOCATION = "location"
    #: Who takes the material (a courier for a hand-over).
    CUSTODIAN = "custodian"
    #: The performer's own password: the step is e-signed.
    SIGNATURE = "signature"


#: Steps that are done elsewhere in the workflow, and the page that does them.
ELSEWHERE = {Action.SHIP: "shipment", Action.RELEASE: "lot"}

#: Steps a technician may repeat scan after scan without further input.
BATCH_ACTIONS = (
    Action.PACK,
    Action.QUARANTINE,
    Action.START_MANUFACTURING,
    Action.ISSUE,
    Action.CHECK_OUT,
)

#: The scan mode that confirms printed labels (scan-back). Not a custody step: the bench
#: handles it before the custody actions (``lims.labels.verification``).
CONFIRM_LABEL = "confirm_label"

#: Steps that end something or cannot be undone: shown apart, in red.
DANGEROUS = {Action.DISCARD, Action.LOSE, Action.RETURN, Action.CONSUME, Action.UNRESERVE}


def needs(kind: Kind, action: Action) -> tuple[Need, ...]:
    transition = TRANSITIONS[kind][action]
    wanted: list[Need] = []
    if action in {Action.STORE, Action.RETURN_TO_STORAGE}:
        wanted.append(Need.LOCATION)
    if action in {Action.HAND_OVER, Action.SHIP}:
        # Shipping between sites goes through a shipment; this is the hand-over within a
        # hospital (a porter carries the bag from the facility to the ward's tank).
        wanted.append(Need.CUSTODIAN)
    if transition.needs_reason:
        wanted.append(Need.REASON)
    if transition.signature:
        wanted.append(Need.SIGNATURE)
    return tuple(wanted)


def batch_action(value: str | None) -> Action | None:
    """The scan mode chosen on the page, if it is one a batch may do (else look-up)."""
    try:
        action = Action(value or "")
    except ValueError:
        return None
    return action if action in BATCH_ACTIONS else None
