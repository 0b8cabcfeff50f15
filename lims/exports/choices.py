"""What the filter forms of the export and capacity pages offer a person: the sites they may
choose, the units of the chosen site, the studies on record, material types and states."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from lims.auth.models import Role, Site, User
from lims.auth.services import require_role
from lims.custody.domain import State
from lims.custody.models import MaterialType
from lims.exports.inventory import ALL_SITES, EXPORTED_STATES
from lims.patients.models import Episode
from lims.storage.models import StorageUnit


@dataclass(frozen=True)
class FilterChoices:
    """What the filter form offers a person: (value, label) pairs."""

    sites: list[tuple[str, str]]
    #: The site the units are listed for ("*": every site).
    site: str
    units: list[tuple[str, str]]
    studies: list[str]
    material_types: list[tuple[str, str]] = field(
        default_factory=lambda: [(m.value, m.label) for m in MaterialType]
    )
    states: list[tuple[str, str]] = field(
        default_factory=lambda: [(s.value, s.label) for s in EXPORTED_STATES]
    )


def filter_choices(session: Session, *, actor: User, site_code: str | None) -> FilterChoices:
    """Sites the person may export, the units of the chosen site, the studies on record."""
    require_role(actor, *Role)
    researcher = actor.role is Role.RESEARCHER
    if actor.role is Role.TECHNICIAN:
        sites = [(actor.site.code, f"{actor.site.code} · {actor.site.name}")]
        chosen = actor.site.code
    else:
        every = session.execute(select(Site.code, Site.name).order_by(Site.code)).all()
        sites = [(ALL_SITES, "All sites")] + [(code, f"{code} · {name}") for code, name in every]
        default = ALL_SITES if researcher else actor.site.code
        chosen = (site_code or "").strip().upper() or default
        if chosen not in {code for code, _ in sites}:
            chosen = default
    units = select(StorageUnit.code, StorageUnit.name).order_by(StorageUnit.code)
    if chosen != ALL_SITES:
        units = units.join(Site, StorageUnit.site_id == Site.id).where(Site.code == chosen)
    studies = session.scalars(
        select(Episode.protocol)
        .distinct()
        .where(Episode.protocol != "")
        .order_by(Episode.protocol)
    )
    return FilterChoices(
        sites=sites,
        site=chosen,
        units=[(code, f"{code} · {name}") for code, name in session.execute(units)],
        studies=list(studies),
        states=[(State.STORED.value, State.STORED.label)]
        if researcher
        else [(s.value, s.label) for s in EXPORTED_STATES],
    )
