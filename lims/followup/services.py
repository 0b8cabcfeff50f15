"""Use cases of follow-up sampling: an episode's schedule, a site's work list, and registering
the sample a timepoint is waiting for.

The rules live in :mod:`lims.followup.domain`; this module reads the episodes and their
samples, hands them over with "today" (the caller's local date at the site), and leaves the
registering itself to :func:`lims.custody.production.register_sample`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from lims.auth.models import Role, Site, User
from lims.auth.services import require_role
from lims.custody import production
from lims.custody.domain import Kind
from lims.custody.models import TYPES_BY_KIND, Item, MaterialType
from lims.custody.services import site_for
from lims.db import utcnow
from lims.errors import Conflict, Forbidden, NotFound, ValidationError
from lims.followup import domain
from lims.followup.domain import Plan, ScheduledTimepoint, TimepointStatus
from lims.localtime import site_zone
from lims.patients.models import Episode, Patient
from lims.patients.services import get_episode

BENCH = (Role.TECHNICIAN, Role.MANAGER)
#: A clock a few minutes ahead on the bench PC must not refuse a sample drawn just now.
CLOCK_SKEW = timedelta(minutes=5)


def followup_settings() -> dict[str, Any]:
    return current_app.config["LIMS"]["followup"]


def local_today() -> date:
    """Today at the site (Europe/Copenhagen by default): the day the pages reason about."""
    return utcnow().astimezone(site_zone()).date()


def local_date(moment: datetime | None) -> date | None:
    return moment.astimezone(site_zone()).date() if moment is not None else None


def sample_types() -> frozenset[str]:
    """The material types a follow-up sample may be (those registrable as an aliquot)."""
    return frozenset(material.value for material in TYPES_BY_KIND[Kind.ALIQUOT])


def material_label(value: str) -> str:
    try:
        return MaterialType(value).label
    except ValueError:
        return value


def plan_of(episode: Episode) -> Plan:
    """The episode's schedule (its protocol's, else the default); checked as it is read."""
    return domain.plan_for(followup_settings(), episode.protocol, known_types=sample_types())


@dataclass(frozen=True)
class EpisodeSchedule:
    episode: Episode
    #: "default" or the name of the protocol whose schedule applies.
    plan_name: str
    infused_on: date | None
    today: date
    timepoints: list[ScheduledTimepoint]

    @property
    def sampling_stopped(self) -> bool:
        """Consent withdrawn: no more follow-up draws for this patient."""
        return self.episode.patient.consent_withdrawn_at is not None

    def count(self, status: TimepointStatus) -> int:
        return sum(1 for timepoint in self.timepoints if timepoint.status is status)


def _samples_of(session: Session, episode_ids: Iterable[int]) -> dict[int, list[tuple[str, str]]]:
    """(timepoint, material type) of the episodes' samples, in every state (a discarded or
    lost tube was still drawn)."""
    ids = list(episode_ids)
    found: dict[int, list[tuple[str, str]]] = {episode_id: [] for episode_id in ids}
    if not ids:
        return found
    rows = session.execute(
        select(Item.episode_id, Item.timepoint, Item.material_type).where(
            Item.episode_id.in_(ids), Item.kind == Kind.ALIQUOT, Item.timepoint.is_not(None)
        )
    )
    for episode_id, timepoint, material in rows:
        found[episode_id].append((timepoint, MaterialType(material).value))
    return found


def _schedule(
    episode: Episode, plan: Plan, samples: list[tuple[str, str]], today: date
) -> EpisodeSchedule:
    infused_on = local_date(episode.infused_at)
    return EpisodeSchedule(
        episode=episode,
        plan_name=plan.name,
        infused_on=infused_on,
        today=today,
        timepoints=domain.build_schedule(
            plan.timepoints, infused_on=infused_on, today=today, samples=samples
        ),
    )


def episode_schedule(
    session: Session, *, actor: User | None, coi: str, today: date
) -> EpisodeSchedule:
    """The whole follow-up schedule of one episode as it stands on ``today``."""
    require_role(actor, *BENCH)
    episode = get_episode(session, coi)
    samples = _samples_of(session, [episode.id])[episode.id]
    return _schedule(episode, plan_of(episode), samples, today)


# -- the work list ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorklistRow:
    """One timepoint of one episode that needs a draw (or was missed)."""

    pseudonym: str
    coi: str
    coi_check: str
    product_name: str
    timepoint: str
    day: int
    status: TimepointStatus
    due: date | None
    window_end: date | None
    days_overdue: int
    missing: tuple[str, ...]


@dataclass(frozen=True)
class Worklist:
    site: Site
    today: date
    overdue: list[WorklistRow]
    due: list[WorklistRow]
    missed: list[WorklistRow]

    @property
    def rows(self) -> list[WorklistRow]:
        """Most urgent first: overdue (window closing soonest), due now, then missed."""
        return [*self.overdue, *self.due, *self.missed]


def worklist_site(session: Session, actor: User | None, site_code: str | None) -> Site:
    """The actor's own site; managers (and the command line) may name another one."""
    chosen = (site_code or "").strip()
    if (
        chosen
        and actor is not None
        and actor.role is not Role.MANAGER
        and chosen.upper() != actor.site.code
    ):
        raise Forbidden("Technicians see the work list of their own site only.")
    return site_for(session, actor, chosen or None)


def worklist(
    session: Session, *, actor: User | None, today: date, site_code: str | None = None
) -> Worklist:
    """The overdue, due and missed timepoints of the episodes treated at the site.

    Patients who withdrew consent are left out: their sampling has stopped.
    """
    require_role(actor, *BENCH)
    site = worklist_site(session, actor, site_code)
    episodes = session.scalars(
        select(Episode)
        .join(Patient, Episode.patient_id == Patient.id)
        .where(Episode.treating_site_id == site.id, Patient.consent_withdrawn_at.is_(None))
        .order_by(Episode.id)
    ).all()
    samples = _samples_of(session, [episode.id for episode in episodes])
    plans: dict[str, Plan] = {}
    rows: dict[TimepointStatus, list[WorklistRow]] = {
        TimepointStatus.OVERDUE: [],
        TimepointStatus.DUE: [],
        TimepointStatus.MISSED: [],
    }
    for episode in episodes:
        if episode.protocol not in plans:
            plans[episode.protocol] = plan_of(episode)
        schedule = _schedule(episode, plans[episode.protocol], samples[episode.id], today)
        for timepoint in schedule.timepoints:
            if timepoint.status in rows:
                rows[timepoint.status].append(_row(episode, timepoint))
    far = date.max
    return Worklist(
        site=site,
        today=today,
        overdue=sorted(
            rows[TimepointStatus.OVERDUE],
            key=lambda r: (r.window_end or far, -r.days_overdue, r.pseudonym, r.day),
        ),
        due=sorted(
            rows[TimepointStatus.DUE],
            key=lambda r: (r.due or today, r.window_end or far, r.pseudonym, r.day),
        ),
        # Recently missed first: those are the ones a late draw may still be arranged for.
        missed=sorted(
            rows[TimepointStatus.MISSED],
            key=lambda r: (r.days_overdue, r.pseudonym, r.day),
        ),
    )


def _row(episode: Episode, timepoint: ScheduledTimepoint) -> WorklistRow:
    return WorklistRow(
        pseudonym=episode.patient.pseudonym,
        coi=episode.coi,
        coi_check=episode.coi_check,
        product_name=episode.product_name,
        timepoint=timepoint.label,
        day=timepoint.day,
        status=timepoint.status,
        due=timepoint.due,
        window_end=timepoint.window_end,
        days_overdue=timepoint.days_overdue,
        missing=timepoint.missing,
    )


def worklist_sites(session: Session, *, actor: User | None) -> list[Site]:
    """The sites a manager may pick for the work list (active ones, by code)."""
    require_role(actor, Role.MANAGER)
    return list(session.scalars(select(Site).where(Site.active.is_(True)).order_by(Site.code)))


# -- registering a timepoint's sample -----------------------------------------------------------


def open_timepoint(schedule: EpisodeSchedule, label: str) -> ScheduledTimepoint:
    """The timepoint a sample may be registered for now, or the refusal saying why not."""
    if schedule.sampling_stopped:
        raise Conflict(
            f"Consent was withdrawn for {schedule.episode.patient.pseudonym}: "
            "follow-up sampling has stopped."
        )
    timepoint = domain.find_timepoint(schedule.timepoints, label)
    if timepoint is None:
        raise NotFound(
            f"The schedule of {schedule.episode.coi} has no timepoint '{label}'.",
            field="timepoint",
        )
    if not timepoint.open:
        raise Conflict(
            f"{timepoint.label} is {timepoint.status.label}; a sample is registered against a "
            "due or overdue timepoint only.",
            field="timepoint",
        )
    return timepoint


def register_timepoint_sample(
    session: Session,
    *,
    actor: User | None,
    coi: str,
    timepoint: str,
    material_type: str,
    quantity: float | Decimal,
    unit: str,
    collected_at: datetime,
    today: date,
    cell_count: int | None = None,
) -> Item:
    """Register the sample of a due or overdue timepoint, of a type it still misses.

    The sample carries the timepoint's label and the day of the draw relative to infusion
    (the schedule's day while the episode has no infusion date).
    """
    require_role(actor, *BENCH)
    schedule = episode_schedule(session, actor=actor, coi=coi, today=today)
    planned = open_timepoint(schedule, timepoint)
    material = (material_type or "").strip().lower()
    if material not in planned.missing:
        if material in planned.collected:
            problem = f"{material_label(material)} for {planned.label} is registered already."
        else:
            problem = f"{planned.label} does not expect {material_label(material) or 'that'}."
        raise ValidationError(
            f"{problem} Missing: {', '.join(map(material_label, planned.missing))}.",
            field="material_type",
        )
    if collected_at.tzinfo is None:
        raise ValidationError("Give the collection time with its time zone.", field="collected_at")
    if collected_at > utcnow() + CLOCK_SKEW:
        raise ValidationError("The collection time is in the future.", field="collected_at")
    collected_on = collected_at.astimezone(site_zone()).date()
    start, end = planned.window_start, planned.window_end
    if start is not None and end is not None and not start <= collected_on <= end:
        raise ValidationError(
            f"{planned.label} is drawn from {start} to {end}; a sample collected on "
            f"{collected_on} does not belong to it.",
            field="collected_at",
        )
    return production.register_sample(
        session,
        actor=actor,
        coi=schedule.episode.coi,
        material_type=material,
        quantity=quantity,
        unit=unit,
        collected_at=collected_at,
        timepoint=planned.label,
        timepoint_day=domain.collection_day(planned.day, schedule.infused_on, collected_on),
        cell_count=cell_count,
    )
