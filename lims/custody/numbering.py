"""Handing out identifiers: DINs, Chain of Identity identifiers and local aliquot IDs.

A counter row per scope (a FIN and year, or a site's local IDs) is advanced with one atomic
UPDATE ... RETURNING, so two technicians registering at the same moment never get one number.
"""

from __future__ import annotations

from sqlalchemy import insert, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from lims import identifiers
from lims.auth.models import Site
from lims.custody.models import IdentifierCounter
from lims.db import utcnow
from lims.errors import Conflict


def next_value(session: Session, scope: str) -> int:
    advance = (
        update(IdentifierCounter)
        .where(IdentifierCounter.scope == scope)
        .values(last_value=IdentifierCounter.last_value + 1)
        .returning(IdentifierCounter.last_value)
    )
    value = session.execute(advance).scalar()
    if value is None:
        dialect = session.get_bind().dialect.name
        maker = {"postgresql": pg_insert, "sqlite": sqlite_insert}.get(dialect)
        statement = (maker or insert)(IdentifierCounter).values(scope=scope, last_value=0)
        if maker is not None:
            statement = statement.on_conflict_do_nothing(index_elements=["scope"])
        session.execute(statement)
        value = session.execute(advance).scalar_one()
    return value


def _fin(site: Site) -> str:
    if not site.isbt_fin:
        raise Conflict(
            f"Site {site.code} has no ISBT 128 facility identification number (FIN); an "
            "administrator sets it under Sites before DINs or CoI identifiers can be assigned."
        )
    return site.isbt_fin


def new_din(session: Session, site: Site) -> tuple[str, str]:
    """A new 13-character DIN of the site for this year, and its check character."""
    fin, year = _fin(site), utcnow().strftime("%y")
    number = next_value(session, f"din:{fin}:{year}")
    if number > 999_999:
        raise Conflict(f"The DIN numbers of {fin} for 20{year} are used up.")
    din = f"{fin}{year}{number:06d}"
    return din, identifiers.din_check_character(din)


def new_coi(session: Session, site: Site) -> tuple[str, str]:
    """A new Chain of Identity identifier (CH + FIN + yy + 6 characters) and its K."""
    fin, year = _fin(site), utcnow().strftime("%y")
    number = next_value(session, f"coi:{fin}:{year}")
    value = f"CH{fin}{year}{number:06d}"
    return value, identifiers.coi_check_character(value)


def new_local_id(session: Session, site: Site, digits: int) -> tuple[str, str]:
    """A new local identifier (site code + digits + K); the check character ends the code."""
    number = next_value(session, f"local:{site.code}")
    code = identifiers.format_local_id(site.code, number, width=digits)
    return code, code[-1]
