"""Pages of the storage area: freezers and their fill, box maps, placement and filling by scan,
moves of boxes and racks, evacuation of a failed unit, and finding anything by its code.

For bench staff (technicians and managers) of the unit's site; managers also set up and edit
the hierarchy. Each POST calls one service and redirects (post/redirect/get); a refusal is a
loud red banner with the values kept, and the scan field gets the focus again.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import SelectChoice

from lims import db
from lims.auth.access import allow
from lims.auth.models import Role
from lims.custody.models import CustodyEvent
from lims.errors import DomainError, Forbidden
from lims.storage import editing, moves, overview, services
from lims.storage.forms import (
    CONTAINER,
    BoxEditForm,
    BoxForm,
    EvacuateForm,
    FillForm,
    MoveBoxForm,
    MoveRackForm,
    PlaceForm,
    RackEditForm,
    RackForm,
    UndoForm,
    UnitEditForm,
    UnitForm,
)
from lims.storage.models import Box, Rack, StorageUnit

bp = Blueprint("storage", __name__, template_folder="templates", url_prefix="/storage")

BENCH = (Role.TECHNICIAN, Role.MANAGER)


def _flash_errors(form: FlaskForm) -> None:
    for name, errors in form.errors.items():
        label = getattr(form, name).label.text if hasattr(form, name) else name
        for error in errors:
            flash(f"{label}: {error}", "error")


def _own(thing_site_id: int, code: str) -> None:
    """Storage pages show the freezers of the person's own site."""
    if thing_site_id != current_user.site_id:
        raise Forbidden(f"{code} is at another site; you see the freezers of your own.")


def _units(session, *, active_only: bool = False) -> list[StorageUnit]:
    query = select(StorageUnit).where(StorageUnit.site_id == current_user.site_id)
    if active_only:
        query = query.where(StorageUnit.active.is_(True))
    return list(session.scalars(query.order_by(StorageUnit.code)))


def _unit_choices(session, *, exclude: int | None = None) -> list[SelectChoice]:
    return [
        SelectChoice(unit.code, f"{unit.code}: {unit.name} ({unit.temperature_class.label})")
        for unit in _units(session, active_only=True)
        if unit.id != exclude
    ]


def _box(session, code: str) -> Box:
    box = services.box_by_code(session, code)
    _own(box.unit.site_id, box.code)
    return box


# -- freezers --------------------------------------------------------------------------------


@bp.get("")
@allow(*BENCH)
def index():
    session = db.session()
    units = _units(session)
    return render_template(
        "storage/index.html", units=units, fills=overview.fill_by_unit(session, units)
    )


@bp.get("/find")
@allow(*BENCH)
def find():
    """Any identifier or storage code: straight to where it is."""
    text = request.args.get("q", "")[:200]
    try:
        found = overview.find_place(db.session(), text)
    except DomainError as exc:
        flash(exc.message, "error")
        return redirect(request.referrer or url_for("storage.index"))
    if found.kind == "item":
        item = found.item
        if item.box_id is None:
            flash(
                f"{item.code} has no place in a box: it is {item.state.label}"
                + (f", at {item.location}" if item.location else "")
                + ".",
                "info",
            )
            return redirect(url_for("history.item", code=item.code))
        box = db.session().get(Box, item.box_id)
        return redirect(url_for("storage.box", code=box.code, at=item.position))
    return redirect(url_for(f"storage.{found.kind}", code=found.code))


@bp.route("/units/new", methods=["GET", "POST"])
@allow(*BENCH)
def new_unit():
    form = UnitForm()
    if form.validate_on_submit():
        try:
            unit = services.create_unit(
                db.session(),
                actor=current_user,
                code=form.code.data,
                name=form.name.data,
                unit_type=form.unit_type.data,
                temperature_class=form.temperature_class.data,
            )
        except DomainError as exc:
            flash(exc.message, "error")
        else:
            flash(f"Storage unit {unit.code} created.", "success")
            return redirect(url_for("storage.unit", code=unit.code))
    _flash_errors(form)
    return render_template("storage/unit_form.html", form=form, unit=None)


@bp.route("/units/<code>/edit", methods=["GET", "POST"])
@allow(Role.MANAGER)
def edit_unit(code: str):
    session = db.session()
    unit = services.unit_by_code(session, code)
    _own(unit.site_id, unit.code)
    form = UnitEditForm(obj=unit)
    if request.method == "GET":
        form.unit_type.data = unit.unit_type.value
        form.temperature_class.data = unit.temperature_class.value
    if form.validate_on_submit():
        try:
            editing.update_unit(
                session,
                actor=current_user,
                code=unit.code,
                name=form.name.data,
                unit_type=form.unit_type.data,
                temperature_class=form.temperature_class.data,
                active=form.active.data,
                reason=form.reason.data,
            )
        except DomainError as exc:
            session.rollback()
            flash(exc.message, "error")
        else:
            flash(f"{unit.code} saved.", "success")
            return redirect(url_for("storage.unit", code=unit.code))
    _flash_errors(form)
    return render_template("storage/unit_form.html", form=form, unit=unit)


@bp.get("/units/<code>")
@allow(*BENCH)
def unit(code: str):
    session = db.session()
    unit = services.unit_by_code(session, code)
    _own(unit.site_id, unit.code)
    boxes = list(
        session.scalars(
            select(Box).where(Box.unit_id == unit.id).order_by(Box.rack_id, Box.ordinal, Box.code)
        )
    )
    rack_form, box_form = RackForm(), BoxForm()
    box_form.rack.choices = [SelectChoice("", "(no rack)")] + [
        SelectChoice(rack.code, rack.code) for rack in unit.racks
    ]
    return render_template(
        "storage/unit.html",
        unit=unit,
        boxes=boxes,
        fills=overview.fill_by_box(session, boxes),
        unit_fill=overview.fill_by_unit(session, [unit])[unit.id],
        rack_form=rack_form,
        box_form=box_form,
    )


@bp.post("/units/<code>/racks")
@allow(*BENCH)
def add_rack(code: str):
    form = RackForm()
    if form.validate_on_submit():
        try:
            rack = services.create_rack(
                db.session(),
                actor=current_user,
                unit_code=code,
                code=form.code.data,
                kind=form.kind.data,
                ordinal=form.ordinal.data,
            )
            flash(f"Rack {rack.code} added.", "success")
        except DomainError as exc:
            flash(exc.message, "error")
    _flash_errors(form)
    return redirect(url_for("storage.unit", code=code))


@bp.post("/units/<code>/boxes")
@allow(*BENCH)
def add_box(code: str):
    form = BoxForm()
    form.rack.choices = None  # any rack code; the service checks it is in this unit
    form.rack.validate_choice = False
    if form.validate_on_submit():
        container = form.box_type.data == CONTAINER
        try:
            box = services.create_box(
                db.session(),
                actor=current_user,
                code=form.code.data,
                unit_code=code,
                rack_code=form.rack.data or None,
                box_type=None if container else form.box_type.data,
                capacity=form.capacity.data if container else None,
                label=form.label.data or "",
                ordinal=form.ordinal.data,
            )
            flash(f"Box {box.code} added.", "success")
            return redirect(url_for("storage.box", code=box.code))
        except DomainError as exc:
            flash(exc.message, "error")
    _flash_errors(form)
    return redirect(url_for("storage.unit", code=code))


@bp.route("/units/<code>/evacuate", methods=["GET", "POST"])
@allow(*BENCH)
def evacuate(code: str):
    """A failed freezer: everything in it into another unit, in one go."""
    session = db.session()
    unit = services.unit_by_code(session, code)
    _own(unit.site_id, unit.code)
    form = EvacuateForm()
    form.to_unit.choices = _unit_choices(session, exclude=unit.id)
    error, status = None, 200
    if form.validate_on_submit():
        try:
            done = moves.evacuate_unit(
                session,
                actor=current_user,
                unit_code=unit.code,
                to_unit_code=form.to_unit.data,
                reason=form.reason.data,
                accept_warmer=form.accept_warmer.data,
            )
        except DomainError as exc:
            session.rollback()
            error, status = exc.message, exc.status_code
        else:
            flash(
                f"{done.source.code} evacuated into {done.target.code}: {done.racks} racks, "
                f"{done.boxes} boxes, {len(done.moved)} items moved; {done.source.code} is out "
                "of use.",
                "success",
            )
            if done.held:
                flash(
                    f"{len(done.held)} items are now warmer than their material needs and are "
                    "on hold for review.",
                    "error",
                )
            return redirect(url_for("storage.unit", code=done.target.code))
    _flash_errors(form)
    fill = overview.fill_by_unit(session, [unit])[unit.id]
    return render_template(
        "storage/evacuate.html", unit=unit, form=form, fill=fill, error=error
    ), status


# -- racks and boxes -------------------------------------------------------------------------


@bp.get("/racks/<code>")
@allow(*BENCH)
def rack(code: str):
    session = db.session()
    rack = services.rack_by_code(session, code)
    _own(rack.unit.site_id, rack.code)
    move_form = MoveRackForm()
    move_form.unit.choices = _unit_choices(session, exclude=rack.unit_id)
    edit_form = RackEditForm(obj=rack)
    edit_form.kind.data = rack.kind.value
    return render_template(
        "storage/rack.html",
        rack=rack,
        fills=overview.fill_by_box(session, rack.boxes),
        move_form=move_form,
        edit_form=edit_form,
    )


@bp.post("/racks/<code>/edit")
@allow(Role.MANAGER)
def edit_rack(code: str):
    session = db.session()
    form = RackEditForm()
    if form.validate_on_submit():
        try:
            editing.update_rack(
                session,
                actor=current_user,
                code=code,
                kind=form.kind.data,
                ordinal=form.ordinal.data,
                reason=form.reason.data,
            )
            flash(f"{code.upper()} saved.", "success")
        except DomainError as exc:
            session.rollback()
            flash(exc.message, "error")
    _flash_errors(form)
    return redirect(url_for("storage.rack", code=code))


@bp.post("/racks/<code>/move")
@allow(*BENCH)
def move_rack(code: str):
    session = db.session()
    form = MoveRackForm()
    form.unit.choices = _unit_choices(session)
    if form.validate_on_submit():
        try:
            moved = moves.move_rack(
                session,
                actor=current_user,
                rack_code=code,
                unit_code=form.unit.data,
                reason=form.reason.data,
            )
            flash(f"Rack moved into {form.unit.data} with {len(moved)} items.", "success")
        except DomainError as exc:
            session.rollback()
            flash(exc.message, "error")
    _flash_errors(form)
    return redirect(url_for("storage.rack", code=code))


@bp.get("/boxes/<code>")
@allow(*BENCH)
def box(code: str):
    session = db.session()
    box = _box(session, code)
    move_form = MoveBoxForm()
    move_form.unit.choices = _unit_choices(session)
    move_form.unit.data = box.unit.code
    move_form.rack.choices = _rack_choices(session)
    move_form.rack.data = box.rack.code if box.rack else ""
    return render_template(
        "storage/box.html",
        box=box,
        map=overview.box_map(session, box),
        at=request.args.get("at", type=int),
        move_form=move_form,
    )


def _rack_choices(session) -> list[SelectChoice]:
    racks = session.scalars(
        select(Rack)
        .join(StorageUnit, Rack.unit_id == StorageUnit.id)
        .where(StorageUnit.site_id == current_user.site_id, StorageUnit.active.is_(True))
        .order_by(Rack.code)
    )
    return [SelectChoice("", "(no rack)")] + [
        SelectChoice(rack.code, f"{rack.code} in {rack.unit.code}") for rack in racks
    ]


@bp.post("/boxes/<code>/move")
@allow(*BENCH)
def move_box(code: str):
    session = db.session()
    form = MoveBoxForm()
    form.unit.choices = _unit_choices(session)
    form.rack.choices = _rack_choices(session)
    if form.validate_on_submit():
        try:
            moved = services.move_box(
                session,
                actor=current_user,
                box_scan=code,
                unit_code=form.unit.data,
                rack_code=form.rack.data or None,
                reason=form.reason.data,
            )
            flash(f"Box moved with {len(moved)} items.", "success")
        except DomainError as exc:
            session.rollback()
            flash(exc.message, "error")
    _flash_errors(form)
    return redirect(url_for("storage.box", code=code))


@bp.route("/boxes/<code>/edit", methods=["GET", "POST"])
@allow(Role.MANAGER)
def edit_box(code: str):
    session = db.session()
    box = _box(session, code)
    form = BoxEditForm(obj=box)
    if form.validate_on_submit():
        try:
            editing.update_box(
                session,
                actor=current_user,
                code=box.code,
                label=form.label.data,
                ordinal=form.ordinal.data,
                active=form.active.data,
                reason=form.reason.data,
            )
        except DomainError as exc:
            session.rollback()
            flash(exc.message, "error")
        else:
            flash(f"{box.code} saved.", "success")
            return redirect(url_for("storage.box", code=box.code))
    _flash_errors(form)
    return render_template("storage/box_edit.html", form=form, box=box)


# -- placing by scan -------------------------------------------------------------------------


def _last_placement(session) -> dict[str, Any] | None:
    """The placement just made (from the redirect), for the map highlight and its undo."""
    event_id = request.args.get("last", type=int)
    if event_id is None:
        return None
    event = session.get(CustodyEvent, event_id)
    if event is None or not moves.undoable(event, current_user):
        return None
    item = event.item
    return {"event": event, "item": item, "undo": UndoForm(item=item.code, event=event.id)}


def _placed(placement: services.Placement, event_id: int, endpoint: str, **args) -> Any:
    where = services.location_of(placement.box, placement.position)
    flash(f"{placement.item.code} {placement.action.label.lower()}d: {where}.", "success")
    return redirect(url_for(endpoint, last=event_id, **args))


def _event_of(session, placement: services.Placement) -> int:
    return session.scalar(
        select(CustodyEvent.id)
        .where(CustodyEvent.item_id == placement.item.id)
        .order_by(CustodyEvent.id.desc())
        .limit(1)
    )


@bp.route("/place", methods=["GET", "POST"])
@allow(*BENCH)
def place():
    """Scan the item, scan the box, then scan a position or take the next free one."""
    session = db.session()
    form = PlaceForm()
    if request.method == "GET":
        form.item.data = request.args.get("item", "")[:40]
        form.box.data = request.args.get("box", "")[:40]
    error, status = None, 200
    if form.validate_on_submit():
        try:
            placement = services.place_item(
                session,
                actor=current_user,
                item_scan=form.item.data,
                box_scan=form.box.data,
                position=form.position.data or None,
                manual=False,
            )
        except DomainError as exc:
            session.rollback()
            error, status = exc.message, exc.status_code
        else:
            return _placed(
                placement, _event_of(session, placement), "storage.place", box=placement.box.code
            )
    elif request.method == "POST":
        error, status = "Scan the item and the box.", 422
    last = _last_placement(session)
    shown = None
    if last and last["item"].box_id:
        shown = overview.box_map(session, session.get(Box, last["item"].box_id))
    return render_template(
        "storage/place.html", form=form, error=error, last=last, map=shown
    ), status


@bp.route("/boxes/<code>/fill", methods=["GET", "POST"])
@allow(*BENCH)
def fill(code: str):
    """Fill a box tube after tube: each scan goes to the next free position after the last."""
    session = db.session()
    box = _box(session, code)
    form = FillForm()
    last = _last_placement(session)
    after = 0
    if last and last["item"].box_id == box.id and last["item"].position:
        after = last["item"].position
    after = request.form.get("after", type=int, default=after)
    after = max(0, min(after, box.size))  # a hand-made form cannot point outside the box
    suggested = None
    if box.geometry is not None:
        suggested = services.next_free_position(session, box, after=after)
        if suggested is None:
            suggested = services.next_free_position(session, box)
    error, status = None, 200
    if form.validate_on_submit():
        try:
            placement = services.place_item(
                session,
                actor=current_user,
                item_scan=form.item.data,
                box_scan=box.code,
                position=form.position.data or None,
                manual=False,
                after=after,
            )
        except DomainError as exc:
            session.rollback()
            error, status = exc.message, exc.status_code
            form.item.data = ""  # the banner names it; the field waits for the next tube
        else:
            return _placed(placement, _event_of(session, placement), "storage.fill", code=box.code)
    elif request.method == "POST":
        error, status = "Scan a tube.", 422
    return render_template(
        "storage/fill.html",
        box=box,
        form=form,
        error=error,
        last=last,
        after=after,
        suggested=suggested,
        map=overview.box_map(session, box),
    ), status


@bp.post("/undo")
@allow(*BENCH)
def undo():
    session = db.session()
    form = UndoForm()
    back = request.form.get("back", "")
    if not back.startswith("/storage/"):
        back = url_for("storage.place")
    if form.validate_on_submit() and form.event.data.isascii() and form.event.data.isdigit():
        try:
            done = moves.undo_placement(
                session, actor=current_user, item_scan=form.item.data, event_id=int(form.event.data)
            )
        except DomainError as exc:
            session.rollback()
            flash(exc.message, "error")
        else:
            where = f"back in {done.location}" if done.location else "registered, in no box"
            flash(f"Undone: {done.item.code} is {where}.", "success")
    else:
        flash("Nothing to undo.", "error")
    return redirect(back)
