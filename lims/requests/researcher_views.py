"""The researcher's request pages (the list, the biobank search and its cart, the request form,
cancelling and the receipt) and the request page everyone who may see a request shares, with its
manifest downloads. The biobank's review, pick and dispatch pages are in ``staff_views``.

Each POST calls one service and redirects (post/redirect/get); a refusal is flashed, or shown at
its field with the page re-rendered and the refusal's status. What a researcher sees is what the
services and the search select for them: pseudonyms, timepoint labels and relative days, never
an identity, a calendar date of collection or a Chain of Identity.
"""

from __future__ import annotations

import io
from dataclasses import fields
from typing import Any
from urllib.parse import parse_qsl, urlencode

from flask import current_app, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from lims import db
from lims.auth.access import allow
from lims.auth.forms import ConfirmForm
from lims.auth.models import Role, Site
from lims.errors import Conflict, DomainError, ValidationError
from lims.history.services import plain_number
from lims.patients.models import Episode
from lims.requests import fulfilment, manifest, services
from lims.requests import search as biobank
from lims.requests.forms import (
    AddGroupForm,
    AddItemsForm,
    CancelForm,
    CriterionForm,
    ReceiptForm,
    RemoveItemForm,
    RequestForm,
    SearchForm,
)
from lims.requests.models import AliquotRequest, RequestState
from lims.requests.page_content import Group, RequestView, choose, sort_requests
from lims.requests.views import bp

R = RequestState
PEOPLE = (Role.RESEARCHER, Role.MANAGER, Role.TECHNICIAN)
RESEARCHER = (Role.RESEARCHER,)
#: Groups per page of search results.
PER_PAGE = 25
#: The query-string keys of the search page: its filters, the page, the expanded group.
FILTER_KEYS = tuple(f.name for f in fields(biobank.SearchFilters))
SEARCH_KEYS = (*FILTER_KEYS, "page", "subject", "at")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _show(code: str) -> Any:
    return redirect(url_for("requests.show", code=code))


def _field_or_flash(form: FlaskForm | SearchForm, exc: DomainError) -> int:
    """The refusal at the field it names (when the form has it), else as a flash."""
    field = getattr(form, exc.field, None) if exc.field else None
    if field is not None and hasattr(field, "errors"):
        field.errors = [*field.errors, exc.message]
    else:
        flash(exc.message, "error")
    return exc.status_code


def _flash_form_errors(form: FlaskForm) -> None:
    for name, errors in form.errors.items():
        label = getattr(form, name).label.text if hasattr(form, name) else name
        for error in errors:
            flash(f"{label}: {error}" if label else error, "error")


def _studies_and_sites(session) -> dict[str, list[str]]:
    studies = session.scalars(
        select(Episode.protocol).distinct().where(Episode.protocol != "").order_by(Episode.protocol)
    )
    sites = session.scalars(select(Site.code).where(Site.active.is_(True)).order_by(Site.code))
    return {"studies": list(studies), "sites": list(sites)}


def _cart(session) -> AliquotRequest | None:
    """The researcher's cart: their newest draft."""
    drafts = services.requests_for(session, current_user, states=[R.DRAFT])
    return drafts[0] if drafts else None


# -- the list ---------------------------------------------------------------------------------


@bp.get("/requests")
@allow(*PEOPLE)
def index():
    session = db.session()
    sorted_out = sort_requests(session, current_user, services.requests_for(session, current_user))
    return render_template(
        "requests/index.html",
        lists=sorted_out,
        counts=services.counts,
        researcher=current_user.role is Role.RESEARCHER,
    )


# -- the search and the cart ------------------------------------------------------------------


def _search_url(query: str | None) -> str:
    """The search page with its own query string again (only its own keys: no open redirect)."""
    pairs = [(k, v) for k, v in parse_qsl(query or "", keep_blank_values=True) if k in SEARCH_KEYS]
    return url_for("requests.search") + (f"?{urlencode(pairs)}" if pairs else "")


@bp.get("/requests/search")
@allow(*RESEARCHER)
def search():
    session = db.session()
    offered = _studies_and_sites(session)
    products = session.scalars(
        select(Episode.product_name).distinct().order_by(Episode.product_name)
    )
    form = SearchForm(request.args).offer(
        studies=offered["studies"], products=list(products), sites=offered["sites"]
    )
    status, result, group = 200, None, None
    try:
        filters = biobank.SearchFilters.from_mapping(request.args)
        result = biobank.search(session, filters, page=request.args.get("page"), per_page=PER_PAGE)
        if request.args.get("subject"):
            group = Group(
                request.args["subject"],
                request.args.get("at") or None,
                biobank.group_aliquots(
                    session, filters, request.args["subject"], request.args.get("at")
                ),
            )
    except ValidationError as exc:
        status = _field_or_flash(form, exc)
    cart = _cart(session)
    own_query = [(k, v) for k, v in request.args.items(multi=True) if k in SEARCH_KEYS]
    return render_template(
        "requests/search.html",
        form=form,
        result=result,
        group=group,
        cart=cart,
        in_cart={line.item.code for line in cart.lines} if cart else set(),
        filter_args={k: v for k, v in request.args.items() if k in FILTER_KEYS and v},
        query=urlencode(own_query),
        number=plain_number,
    ), status


def _add(code: str | None, codes: list[str], back: str) -> Any:
    """Put these tubes in draft ``code`` (None: the cart, made on first use)."""
    session = db.session()
    try:
        if code is None:
            # A new cart is made with its first addition, and refused with it.
            cart = _cart(session) or services.create_request(
                session, actor=current_user, commit=False
            )
            code = cart.code
        added = services.add_items(session, actor=current_user, code=code, item_codes=codes)
    except DomainError as exc:
        session.rollback()
        flash(exc.message, "error")
        return redirect(back)
    if added:
        flash(f"{len(added)} aliquot(s) added to {code}.", "success")
    else:
        flash(f"Those aliquots are in {code} already.", "info")
    return redirect(back)


@bp.post("/requests/cart/items")
@allow(*RESEARCHER)
def add_to_cart():
    form = AddItemsForm()
    back = _search_url(form.query.data)
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return redirect(back)
    return _add(None, form.item_codes(), back)


@bp.post("/requests/cart/group")
@allow(*RESEARCHER)
def add_group():
    """The first N available tubes of one type of a search group, fewest thaws first."""
    form = AddGroupForm()
    back = _search_url(form.query.data)
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return redirect(back)
    session = db.session()
    try:
        filters = biobank.SearchFilters.from_mapping(MultiDict(parse_qsl(form.query.data or "")))
        rows = biobank.group_aliquots(session, filters, form.subject.data, form.at.data)
    except ValidationError as exc:
        flash(exc.message, "error")
        return redirect(back)
    cart = _cart(session)
    taken = {line.item.code for line in cart.lines} if cart else set()
    chosen = choose(rows, form.material_type.data, form.count.data, taken)
    if not chosen:
        flash("No more aliquots of that type are available in this group.", "error")
        return redirect(back)
    if len(chosen) < form.count.data:
        flash(f"Only {len(chosen)} of {form.count.data} are available.", "info")
    return _add(None, chosen, back)


@bp.post("/requests/<code>/items")
@allow(*RESEARCHER)
def add_items(code: str):
    services.get_request(db.session(), current_user, code)  # not theirs: 404, nothing more
    form = AddItemsForm()
    back = _search_url(form.query.data) if form.query.data else url_for("requests.show", code=code)
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return redirect(back)
    return _add(code, form.item_codes(), back)


@bp.post("/requests/<code>/items/remove")
@allow(*RESEARCHER)
def remove_item(code: str):
    form = RemoveItemForm()
    if not form.validate_on_submit():
        _flash_form_errors(form)
        return _show(code)
    try:
        services.remove_item(db.session(), actor=current_user, code=code, item_code=form.item.data)
    except DomainError as exc:
        return _refused(code, exc)
    flash(f"{form.item.data} taken out of {code}.", "success")
    return _show(code)


# -- the request page -------------------------------------------------------------------------


def _endpoint(name: str, **values: Any) -> str | None:
    """A link to a page of another module, once that page exists."""
    return url_for(name, **values) if name in current_app.view_functions else None


def _render(code: str, status: int = 200, **forms: FlaskForm) -> Any:
    session = db.session()
    req = services.get_request(session, current_user, code)
    view = RequestView.of(session, current_user, req)
    links = {
        "review": view.offers.review and _endpoint("requests.review", code=req.code),
        "pick": view.offers.pick and _endpoint("requests.pick", code=req.code),
        "dispatch": view.offers.dispatch and _endpoint("requests.dispatch", code=req.code),
        "committee": [
            (study, _endpoint("requests.committee", code=req.code, study=study))
            for study in view.offers.committee
        ],
    }
    criterion_form = forms.get("criterion_form") or CriterionForm(formdata=None)
    criterion_form.offer(**_studies_and_sites(session))
    return render_template(
        "requests/request.html",
        req=req,
        view=view,
        links=links,
        criterion_form=criterion_form,
        add_form=forms.get("add_form") or AddItemsForm(formdata=None),
        cancel_form=forms.get("cancel_form") or CancelForm(formdata=None),
        receipt_form=forms.get("receipt_form") or ReceiptForm(formdata=None),
        remove_form=RemoveItemForm(formdata=None),
        number=plain_number,
    ), status


def _refused(code: str, exc: DomainError, **forms: FlaskForm) -> Any:
    """The request page again with the refusal (at its field, or flashed) and its status."""
    db.session().rollback()
    services.get_request(db.session(), current_user, code)  # not visible: 404, nothing more
    form = next(iter(forms.values()), None)
    if form is None:
        flash(exc.message, "error")
        return _render(code, exc.status_code)
    return _render(code, _field_or_flash(form, exc), **forms)


@bp.get("/requests/<code>")
@allow(*Role)
def show(code: str):
    return _render(code)


@bp.route("/requests/<code>/edit", methods=["GET", "POST"])
@allow(*RESEARCHER)
def edit(code: str):
    session = db.session()
    req = services.get_request(session, current_user, code)
    if req.state is not R.DRAFT or req.researcher_id != current_user.id:
        flash(
            f"Request {req.code} is {req.state.label}; its details can no longer change.", "error"
        )
        return _show(req.code)
    form = RequestForm(obj=req) if request.method == "GET" else RequestForm()
    if request.method == "GET":
        form.delivery.data = req.delivery.value
        return render_template("requests/form.html", form=form, req=req)
    if not form.validate_on_submit():
        return render_template("requests/form.html", form=form, req=req), 422
    try:
        services.update_request(session, actor=current_user, code=req.code, **form.values())
    except DomainError as exc:
        session.rollback()
        status = _field_or_flash(form, exc)
        req = services.get_request(session, current_user, code)
        return render_template("requests/form.html", form=form, req=req), status
    flash(f"The details of {req.code} are saved.", "success")
    return _show(req.code)


@bp.post("/requests/<code>/criteria")
@allow(*RESEARCHER)
def add_criterion(code: str):
    form = CriterionForm()
    form.offer(**_studies_and_sites(db.session()))
    if not form.validate_on_submit():
        return _render(code, 422, criterion_form=form)
    try:
        services.add_criterion(
            db.session(),
            actor=current_user,
            code=code,
            study=form.study.data or "",
            material_type=form.material_type.data,
            timepoints=form.timepoints.data or "",
            per_subject=form.per_subject.data,
            min_quantity=form.min_quantity.data,
            max_thaws=form.max_thaws.data,
            site=form.site.data or "",
        )
    except DomainError as exc:
        return _refused(code, exc, criterion_form=form)
    flash("Criterion added: it becomes aliquots when the request is submitted.", "success")
    return _show(code)


@bp.post("/requests/<code>/criteria/<int:criterion_id>/remove")
@allow(*RESEARCHER)
def remove_criterion(code: str, criterion_id: int):
    if not ConfirmForm().validate_on_submit():
        flash("The form had expired. Please try again.", "error")
        return _show(code)
    try:
        services.remove_criterion(
            db.session(), actor=current_user, code=code, criterion_id=criterion_id
        )
    except DomainError as exc:
        return _refused(code, exc)
    flash("Criterion removed.", "success")
    return _show(code)


@bp.post("/requests/<code>/submit")
@allow(*RESEARCHER)
def submit(code: str):
    if not ConfirmForm().validate_on_submit():
        flash("The form had expired. Please try again.", "error")
        return _show(code)
    try:
        made = services.submit(db.session(), actor=current_user, code=code)
    except DomainError as exc:
        return _refused(code, exc)
    first = made[0]
    flash(
        f"Request {first.code} submitted: {len(first.lines)} aliquot(s) for review at "
        f"{first.site.code}.",
        "success",
    )
    for sibling in made[1:]:
        flash(
            f"The part kept at {sibling.site.code} is request {sibling.code} "
            f"({len(sibling.lines)} aliquot(s)); that biobank reviews and sends it.",
            "info",
        )
    return _show(first.code)


@bp.post("/requests/<code>/cancel")
@allow(*RESEARCHER)
def cancel(code: str):
    form = CancelForm()
    if not form.validate_on_submit():
        return _render(code, 422, cancel_form=form)
    try:
        services.cancel(db.session(), actor=current_user, code=code, reason=form.reason.data)
    except DomainError as exc:
        return _refused(code, exc, cancel_form=form)
    flash(f"Request {code} is cancelled.", "success")
    return _show(code)


@bp.post("/requests/<code>/receipt")
@allow(*PEOPLE)
def receipt(code: str):
    form = ReceiptForm()
    if not form.validate_on_submit():
        return _render(code, 422, receipt_form=form)
    try:
        done = fulfilment.confirm_receipt(
            db.session(), actor=current_user, code=code, note=form.note.data or ""
        )
    except DomainError as exc:
        return _refused(code, exc, receipt_form=form)
    flash(f"Receipt confirmed: request {done.code} is closed.", "success")
    return _show(done.code)


# -- the manifest -----------------------------------------------------------------------------


def _manifest_rows(code: str) -> tuple[AliquotRequest, list[manifest.ManifestRow]]:
    session = db.session()
    req = services.get_request(session, current_user, code)
    rows = manifest.manifest_rows(session, req)
    if not rows:
        raise Conflict(f"Nothing of request {req.code} has been picked yet: no manifest.")
    return req, rows


@bp.get("/requests/<code>/manifest.pdf")
@allow(*Role)
def manifest_pdf(code: str):
    session = db.session()
    req = services.get_request(session, current_user, code)
    pdf = manifest.manifest_pdf(session, req)
    return send_file(
        io.BytesIO(pdf), mimetype="application/pdf", download_name=f"manifest-{req.code}.pdf"
    )


@bp.get("/requests/<code>/manifest.csv")
@allow(*Role)
def manifest_csv(code: str):
    req, rows = _manifest_rows(code)
    return send_file(
        io.BytesIO(manifest.manifest_csv(rows).encode("utf-8")),
        mimetype="text/csv",
        as_attachment=True,
        download_name=f"manifest-{req.code}.csv",
    )


@bp.get("/requests/<code>/manifest.xlsx")
@allow(*Role)
def manifest_xlsx(code: str):
    req, rows = _manifest_rows(code)
    return send_file(
        io.BytesIO(manifest.manifest_xlsx(rows)),
        mimetype=XLSX,
        as_attachment=True,
        download_name=f"manifest-{req.code}.xlsx",
    )
