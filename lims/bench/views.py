"""The bench scan page (the technician's main screen) and the bedside identity check.

One always-focused scan field: a keyboard-wedge scanner types the code and Enter. A scan shows
the item card with the allowed steps as large buttons (from the transition table); in scan
mode each scan does the chosen step at once. Every refusal is shown as a loud banner and the
focus goes back to the scan field (``static/bench.js``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user

from lims import db
from lims.auth.access import allow
from lims.auth.models import Role
from lims.auth.services import confirm_second_person
from lims.bench import services
from lims.bench.domain import BATCH_ACTIONS, CONFIRM_LABEL, Need, batch_action, needs
from lims.custody import bedside as bedside_service
from lims.custody.domain import Action, Kind, State, available_actions
from lims.custody.models import Item
from lims.custody.services import Move, find_item, second_person_step
from lims.errors import DomainError, ValidationError
from lims.labels.verification import verify_label
from lims.labels.views import may_aliquot
from lims.storage.services import location_of, store_by_scan

bp = Blueprint("bench", __name__, template_folder="templates")

BENCH = (Role.TECHNICIAN, Role.MANAGER)
MODE_KEY = "bench_mode"
#: Longest text accepted from a scan or a typed field (a scan is far shorter).
MAX_SCAN = 200
MAX_TEXT = 2000


def _text(name: str, limit: int = MAX_TEXT) -> str:
    value = request.form.get(name, "")
    if len(value) > limit or "\x00" in value:
        raise ValidationError(f"The {name.replace('_', ' ')} is too long or not text.")
    return value.strip()


def _mode() -> Action | None:
    return batch_action(session.get(MODE_KEY))


def _label_mode() -> bool:
    return session.get(MODE_KEY) == CONFIRM_LABEL


def _scan_page(card=None, error: str | None = None, scanned: str = "", status: int = 200):
    return (
        render_template(
            "bench/scan.html",
            card=card,
            error=error,
            scanned=scanned,
            mode=_mode(),
            label_mode=_label_mode(),
            batch_actions=BATCH_ACTIONS,
            may_aliquot=card is not None and may_aliquot(card.item),
        ),
        status,
    )


@bp.get("/scan")
@allow(*BENCH)
def scan():
    """Look-up: the scan field, and the card of the scanned item."""
    code = request.args.get("code", "")
    if not code:
        return _scan_page()
    manual = request.args.get("from") != "link"  # our own links carry exact codes
    try:
        card = services.item_card(db.session(), actor=current_user, scan=code, manual=manual)
    except DomainError as exc:
        return _scan_page(error=exc.message, scanned=code[:MAX_SCAN], status=exc.status_code)
    return _scan_page(card=card, scanned=code)


@bp.post("/scan")
@allow(*BENCH)
def scan_in_mode():
    """A scan in scan mode: do the chosen step on the scanned item right away."""
    mode = _mode()
    try:
        code = _text("code", MAX_SCAN)
    except ValidationError as exc:
        return _scan_page(error=exc.message, status=422)
    if _label_mode():
        return _confirm_label(code)
    if mode is None:
        return redirect(url_for("bench.scan", code=code))
    try:
        outcome = services.act_on_scan(db.session(), actor=current_user, scan=code, action=mode)
    except DomainError as exc:
        return _scan_page(error=exc.message, scanned=code[:MAX_SCAN], status=exc.status_code)
    _flash_outcome(outcome)
    return redirect(url_for("bench.scan", code=outcome.item_code, **{"from": "link"}))


def _confirm_label(code: str):
    """Scan-back: the printed label on the tube confirms it is the right one."""
    try:
        item = verify_label(db.session(), actor=current_user, scan=code)
    except DomainError as exc:
        return _scan_page(error=exc.message, scanned=code[:MAX_SCAN], status=exc.status_code)
    flash(f"{item.code}: label confirmed.", "success")
    return redirect(url_for("bench.scan", code=item.code, **{"from": "link"}))


@bp.post("/scan/mode")
@allow(*BENCH)
def set_mode():
    chosen = batch_action(request.form.get("mode"))
    if request.form.get("mode") == CONFIRM_LABEL:
        session[MODE_KEY] = CONFIRM_LABEL
        flash("Scan mode: every scan confirms the printed label of the item.", "info")
    elif chosen is None:
        session.pop(MODE_KEY, None)
        flash("Scan mode off: a scan shows the item.", "info")
    else:
        session[MODE_KEY] = chosen.value
        flash(f"Scan mode: every scan will {chosen.label.lower()} the item.", "info")
    return redirect(url_for("bench.scan"))


def _flash_outcome(outcome: services.ScanOutcome) -> None:
    if outcome.duplicate:
        flash(
            f"{outcome.item_code}: scanned again {outcome.seconds_since:.0f} s after "
            f"'{outcome.action.label.lower()}' – double read, nothing recorded twice.",
            "info",
        )
    else:
        flash(f"{outcome.item_code}: {outcome.action.label.lower()} – done.", "success")


@bp.route("/scan/<code>/<action>", methods=["GET", "POST"])
@allow(*BENCH)
def act(code: str, action: str):
    """A step from the card: done at once, or after asking for what it needs."""
    db_session = db.session()
    try:
        item = find_item(db_session, code)
        step = Action(action) if action in Action._value2member_map_ else None
        if step is None or step not in _offered(item):
            raise ValidationError(f"'{action}' is not offered for {item.code} now.")
        if step is Action.RELEASE:
            # A lot is released whole (all bags or none), with its QC review, on its page.
            raise ValidationError(
                f"Release {item.code} with its lot {item.lot.lot_number} on the lot page."
            )
        shipment = services.open_shipment_of(db_session, item)
        if step is Action.SHIP and shipment is not None:
            raise ValidationError(
                f"{item.code} is packed in shipment {shipment.code}: it leaves when that "
                "shipment is dispatched."
            )
    except DomainError as exc:
        return _scan_page(error=exc.message, scanned=code[:MAX_SCAN], status=exc.status_code)
    wanted = needs(item.kind, step)
    witness_needed = second_person_step(db_session, item, step, current_user, Move())
    if request.method == "GET":  # a GET never changes anything: it asks, or confirms
        return _action_page(item, step, wanted, witness_needed)
    try:
        values = _inputs(wanted)
        if Need.LOCATION in wanted:
            placement = store_by_scan(
                db_session,
                actor=current_user,
                item=item,
                location=values["location"],
                position=_text("position", 8) or None,
            )
            if placement is not None:
                where = location_of(placement.box, placement.position)
                flash(f"{item.code}: {placement.action.label.lower()} – {where}.", "success")
                return redirect(url_for("bench.scan", code=item.code, **{"from": "link"}))
        witness = None
        if witness_needed or request.form.get("witness_username"):
            witness = confirm_second_person(
                db_session,
                actor=current_user,
                username=request.form.get("witness_username"),
                password=request.form.get("witness_password"),
            )
        outcome = services.act_on_scan(
            db_session,
            actor=current_user,
            scan=item.code,
            action=step,
            manual=False,
            reason=values.get("reason"),
            move=Move(location=values.get("location"), custodian=values.get("custodian")),
            password=values.get("password"),
            witness=witness,
        )
    except DomainError as exc:
        if wanted or witness_needed:
            return _action_page(
                item, step, wanted, witness_needed, error=exc.message, status=exc.status_code
            )
        return _scan_page(error=exc.message, scanned=item.code, status=exc.status_code)
    _flash_outcome(outcome)
    return redirect(url_for("bench.scan", code=outcome.item_code, **{"from": "link"}))


def _offered(item: Item) -> list[Action]:
    return available_actions(item.kind, item.state, current_user.role)


def _inputs(wanted: tuple[Need, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if Need.LOCATION in wanted:
        values["location"] = _text("location", 200)
        if not values["location"]:
            raise ValidationError("Scan the place where it goes.", field="location")
    if Need.CUSTODIAN in wanted:
        values["custodian"] = _text("custodian", 200)
    if Need.REASON in wanted:
        values["reason"] = _text("reason")
    if Need.SIGNATURE in wanted:
        values["password"] = request.form.get("password", "")
    return values


def _action_page(item, step, wanted, witness_needed, error=None, status=200):
    return (
        render_template(
            "bench/action.html",
            item=item,
            step=step,
            wanted=wanted,
            Need=Need,
            witness_needed=witness_needed,
            error=error,
        ),
        status,
    )


# -- bedside identity check ----------------------------------------------------------------


@bp.route("/bedside", methods=["GET", "POST"])
@allow(*BENCH)
def bedside():
    """Wristband, cassette and bag scanned in turn; any mismatch blocks infusion, loudly."""
    if request.method == "GET":
        return render_template("bench/bedside.html", bag=request.args.get("bag", "")[:MAX_SCAN])
    db_session = db.session()
    scans = {}
    try:
        scans = {name: _text(name, MAX_SCAN) for name in ("wristband", "cassette", "bag")}
        outcome = bedside_service.bedside_check(
            db_session,
            actor=current_user,
            bag_scan=scans["bag"],
            coi_scan=scans["cassette"],
            wristband_scan=scans["wristband"],
            witness_username=request.form.get("witness_username"),
            witness_password=request.form.get("witness_password"),
        )
    except DomainError as exc:
        mismatch = exc.message.startswith("IDENTITY MISMATCH")
        return (
            render_template(
                "bench/bedside.html",
                bag=scans.get("bag", ""),
                error=exc.message,
                mismatch=mismatch,
            ),
            exc.status_code,
        )
    bag = db_session.get(Item, outcome.check.item_id)
    flash("Identity verified: wristband, cassette and bag belong to one patient.", "success")
    return redirect(url_for("bench.infusion", code=bag.code))


@bp.get("/bedside/<code>")
@allow(*BENCH)
def infusion(code: str):
    """After a passed check: the infusion step, signed with the nurse's own password."""
    try:
        item = find_item(db.session(), code)
    except DomainError as exc:
        return _scan_page(error=exc.message, scanned=code[:MAX_SCAN], status=exc.status_code)
    if item.kind is not Kind.PRODUCT_BAG:
        return _scan_page(error=f"{item.code} is not a product bag.", status=422)
    return render_template(
        "bench/infusion.html", item=item, verified=item.state is State.IDENTITY_VERIFIED
    )
