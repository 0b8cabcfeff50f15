"""The request's life as data: which step may follow which, and who takes it.

The custody of each tube is the custody state machine's business (reserve, pick, hand over,
distribute); this table says where the request as a whole stands.
"""

from __future__ import annotations

from dataclasses import dataclass

from lims.auth.models import Role
from lims.requests.models import LineStatus, RequestState

R = RequestState


@dataclass(frozen=True)
class Step:
    from_states: frozenset[RequestState]
    roles: frozenset[Role]


STEPS: dict[str, Step] = {
    "edit": Step(frozenset({R.DRAFT}), frozenset({Role.RESEARCHER})),
    "submit": Step(frozenset({R.DRAFT}), frozenset({Role.RESEARCHER})),
    "cancel": Step(
        frozenset({R.DRAFT, R.SUBMITTED, R.UNDER_REVIEW, R.APPROVED, R.PARTLY_APPROVED}),
        frozenset({Role.RESEARCHER}),
    ),
    "start_review": Step(frozenset({R.SUBMITTED}), frozenset({Role.MANAGER})),
    "record_opt_out": Step(frozenset({R.SUBMITTED, R.UNDER_REVIEW}), frozenset({Role.MANAGER})),
    # A committee member may hold any role; membership comes from the configuration.
    "committee": Step(frozenset({R.SUBMITTED, R.UNDER_REVIEW}), frozenset(Role)),
    "decide": Step(frozenset({R.SUBMITTED, R.UNDER_REVIEW}), frozenset({Role.MANAGER})),
    "pick": Step(
        frozenset({R.APPROVED, R.PARTLY_APPROVED, R.PICKING}),
        frozenset({Role.TECHNICIAN, Role.MANAGER}),
    ),
    "dispatch": Step(frozenset({R.PICKING}), frozenset({Role.TECHNICIAN, Role.MANAGER})),
    "receive": Step(
        frozenset({R.HANDED_OVER, R.SHIPPED}),
        frozenset({Role.RESEARCHER, Role.TECHNICIAN, Role.MANAGER}),
    ),
}

#: Requests still going somewhere; the rest are finished.
OPEN_STATES = frozenset(
    {
        R.DRAFT,
        R.SUBMITTED,
        R.UNDER_REVIEW,
        R.APPROVED,
        R.PARTLY_APPROVED,
        R.PICKING,
        R.HANDED_OVER,
        R.SHIPPED,
    }
)
#: Lines that still wait for the pick list.
TO_PICK = frozenset({LineStatus.APPROVED})
#: Lines that leave with the dispatch.
TRAVELLING = frozenset({LineStatus.PICKED})
