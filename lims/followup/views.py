"""Pages of the followup area: the site's sampling work list and an episode's schedule.

Technicians and managers only. The pages show the patient's pseudonym and the Chain of
Identity, never who the patient is. "Today" is the local date at the site.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from wtforms import SelectChoice

from lims import db
from lims.auth.access import allow
from lims.auth.models import Role
from lims.errors import DomainError
from lims.followup import domain, services
from lims.followup.domain import ScheduledTimepoint, TimepointStatus
from lims.followup.forms import SampleForm, WorklistSiteForm

bp = Blueprint("followup", __name__, template_folder="templates")

BENCH = (Role.TECHNICIAN, Role.MANAGER)


@bp.record_once
def check_schedules(state: Any) -> None:
    """A malformed schedule stops the start, naming the protocol and entry, rather than the
    first page that reads it."""
    domain.check_settings(state.app.config["LIMS"]["followup"], known_types=services.sample_types())


@bp.context_processor
def followup_helpers() -> dict[str, Any]:
    return {"material_label": services.material_label, "TimepointStatus": TimepointStatus}


@bp.route("/followup")
@allow(*BENCH)
def worklist():
    session = db.session()
    site_form = None
    # The service refuses a technician who asks for another site's list.
    site_code = request.args.get("site") or None
    if current_user.role is Role.MANAGER:
        site_form = WorklistSiteForm(request.args)
        site_form.site.choices = [
            SelectChoice(site.code, f"{site.code} · {site.name}")
            for site in services.worklist_sites(session, actor=current_user)
        ]
    work = services.worklist(
        session, actor=current_user, today=services.local_today(), site_code=site_code
    )
    if site_form is not None and not site_form.site.data:
        site_form.site.data = work.site.code
    return render_template("followup/worklist.html", work=work, site_form=site_form)


def _sample_form(timepoint: ScheduledTimepoint, form: SampleForm | None = None) -> SampleForm:
    form = form or SampleForm(formdata=None, timepoint=timepoint.label)
    form.material_type.choices = [
        SelectChoice(material, services.material_label(material)) for material in timepoint.missing
    ]
    return form


def _episode_page(
    coi: str,
    *,
    timepoint_label: str | None = None,
    form: SampleForm | None = None,
    status: int = 200,
):
    session = db.session()
    schedule = services.episode_schedule(
        session, actor=current_user, coi=coi, today=services.local_today()
    )
    chosen = None
    if timepoint_label:
        try:
            chosen = services.open_timepoint(schedule, timepoint_label)
        except DomainError as exc:
            flash(exc.message, "error")
            status = exc.status_code
    return (
        render_template(
            "followup/episode.html",
            schedule=schedule,
            episode=schedule.episode,
            chosen=chosen,
            form=_sample_form(chosen, form) if chosen else None,
        ),
        status,
    )


@bp.route("/followup/<coi>")
@allow(*BENCH)
def episode(coi: str):
    return _episode_page(coi, timepoint_label=request.args.get("timepoint"))


@bp.route("/followup/<coi>/samples", methods=["POST"])
@allow(*BENCH)
def register_sample(coi: str):
    session = db.session()
    today = services.local_today()
    form = SampleForm()
    label = (form.timepoint.data or "").strip()
    schedule = services.episode_schedule(session, actor=current_user, coi=coi, today=today)
    try:
        timepoint = services.open_timepoint(schedule, label)
    except DomainError as exc:
        flash(exc.message, "error")
        return redirect(url_for("followup.episode", coi=schedule.episode.coi))
    _sample_form(timepoint, form)
    if not form.validate_on_submit():
        return _episode_page(coi, timepoint_label=label, form=form, status=422)
    try:
        sample = services.register_timepoint_sample(
            session,
            actor=current_user,
            coi=coi,
            timepoint=timepoint.label,
            material_type=form.material_type.data,
            quantity=form.quantity.data,
            unit=form.unit.data,
            collected_at=form.collected_at.data,
            cell_count=form.cell_count.data,
            today=today,
        )
    except DomainError as exc:
        session.rollback()  # nothing half-done may leak into the page read below
        flash(exc.message, "error")
        return _episode_page(coi, timepoint_label=label, form=form, status=exc.status_code)
    flash(
        f"Sample {sample.code} ({services.material_label(sample.material_type.value)}, "
        f"{sample.timepoint}, day {sample.timepoint_day}) registered.",
        "success",
    )
    return redirect(url_for("followup.episode", coi=schedule.episode.coi))
