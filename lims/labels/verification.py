"""Scan-back: the printed label, scanned on the bench, confirms it sits on the right tube or bag.

Until then the item is "label not verified", and the steps ``[labels] verify_before`` names for
its kind are refused by the custody state machine (the guard ``label_verified`` reads what
:func:`lims.custody.services.label_unverified_steps` gathers).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import Role, User
from lims.auth.services import require_role
from lims.custody.models import Item
from lims.custody.services import code_from_scan, commit_or_conflict, find_item, visible_to
from lims.db import utcnow
from lims.errors import Conflict, NotFound, ValidationError

BENCH = (Role.TECHNICIAN, Role.MANAGER)


def verify_label(
    session: Session, *, actor: User, scan: str, expected: str | None = None
) -> Item:
    """Confirm the label of the scanned item; ``expected`` is the item whose card asked for it.

    Scanning the label of another item than the one expected is a wrong label on the tube:
    refused loudly, nothing recorded. A label confirmed already stays confirmed (no new row).
    """
    require_role(actor, *BENCH)
    item = find_item(session, scan, for_update=True)
    if not visible_to(actor, item):
        raise NotFound(f"No bag or tube with identifier {item.code}.", field="code")
    if expected is not None and code_from_scan(expected) != item.code:
        raise Conflict(
            f"WRONG LABEL: the label scanned is {item.code}, not {code_from_scan(expected)}. "
            "Take the tube aside and check it before anything else.",
            field="code",
        )
    if item.label_printed_at is None:
        raise ValidationError(
            f"No label of {item.code} was printed by the LIMS: print it first.", field="code"
        )
    if item.site_id != actor.site_id:
        raise Conflict(f"{item.code} is recorded at {item.site.code}, not here.", field="code")
    if item.label_verified_at is not None:
        return item
    item.label_verified_at = utcnow()
    audit.record_changes(session, item, actor=actor, action="verify_label")
    commit_or_conflict(session)
    return item
