"""The audit trail for managers and admins: filter, page through, export, verify the chain.

Read-only: nothing here writes. Values are shown as the services stored them; identity
columns were stored as "(redacted)", and nothing is decrypted here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from sqlalchemy import ColumnElement, Select, and_, exists, or_, select
from sqlalchemy.orm import Session
from wtforms import DateField, Form, SelectField, StringField
from wtforms.validators import Length, Optional, ValidationError

from lims import db
from lims.audit.cli import describe_report
from lims.audit.models import AuditEntry
from lims.audit.services import verify_chain
from lims.auth.access import allow
from lims.auth.forms import ConfirmForm
from lims.auth.models import Role
from lims.custody.models import BedsideCheck, Hold, Item
from lims.custody.services import find_item
from lims.errors import DomainError

bp = Blueprint("audit", __name__, url_prefix="/audit", template_folder="templates")

PAGE_SIZE = 100
#: The query-string keys that select rows; paging links and the export carry them along.
FILTER_KEYS = ("item", "username", "action", "date_from", "date_to")
CSV_HEADER = (
    "seq",
    "at_utc",
    "at_local",
    "user_id",
    "actor",
    "entity",
    "entity_id",
    "action",
    "field",
    "old_value",
    "new_value",
    "reason",
    "prev_hash",
    "row_hash",
)


class LocalDateField(DateField):
    """A calendar day at the site (Europe/Copenhagen), typed as YYYY-MM-DD."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        try:
            super().process_formdata(valuelist)
        except ValueError:
            raise ValueError("Give the date as YYYY-MM-DD, e.g. 2025-03-31.") from None


class AuditFilterForm(Form):
    """The filters of the audit page, read from the query string (GET: no CSRF token)."""

    item = StringField("Item code", validators=[Optional(), Length(max=64)])
    username = StringField("User", validators=[Optional(), Length(max=120)])
    action = SelectField("Action", validators=[Optional()])
    date_from = LocalDateField("From (date)", validators=[Optional()])
    date_to = LocalDateField("To (date)", validators=[Optional()])

    def validate_date_to(self, field: DateField) -> None:
        if field.data and self.date_from.data and field.data < self.date_from.data:
            raise ValidationError("The end date is before the start date.")


def _site_zone() -> ZoneInfo:
    return ZoneInfo(current_app.config["LIMS"]["app"]["timezone"])


def day_start_utc(day: date) -> datetime:
    """Local midnight at the start of ``day`` as a UTC instant (DST-aware)."""
    return datetime.combine(day, time.min, tzinfo=_site_zone()).astimezone(UTC)


def _action_choices(session: Session) -> list[tuple[str, str]]:
    actions = session.scalars(select(AuditEntry.action).distinct().order_by(AuditEntry.action))
    return [("", "all"), *((action, action) for action in actions)]


def _item_condition(session: Session, code: str) -> ColumnElement[bool]:
    """The item's own rows and those of its holds and bedside checks (signatures are on the
    item's rows already: ``sign`` records against the signed entity)."""
    item = find_item(session, code)
    hold_ids = session.scalars(select(Hold.id).where(Hold.item_id == item.id)).all()
    check_ids = session.scalars(
        select(BedsideCheck.id).where(BedsideCheck.item_id == item.id)
    ).all()
    return or_(
        and_(AuditEntry.entity == "item", AuditEntry.entity_id == str(item.id)),
        and_(AuditEntry.entity == "hold", AuditEntry.entity_id.in_([str(i) for i in hold_ids])),
        and_(
            AuditEntry.entity == "bedside_check",
            AuditEntry.entity_id.in_([str(i) for i in check_ids]),
        ),
    )


def _conditions(session: Session, form: AuditFilterForm) -> tuple[list[ColumnElement[bool]], int]:
    """The WHERE clauses the filters ask for, or the status to answer with when they are bad.

    Errors are attached to the form's fields so the page shows them beside the input.
    """
    if not form.validate():
        return [], 422
    conditions: list[ColumnElement[bool]] = []
    if form.item.data and form.item.data.strip():
        try:
            conditions.append(_item_condition(session, form.item.data))
        except DomainError as exc:
            form.item.errors = [*form.item.errors, exc.message]
            return [], exc.status_code
    if form.username.data and form.username.data.strip():
        conditions.append(AuditEntry.actor == form.username.data.strip())
    if form.action.data:
        conditions.append(AuditEntry.action == form.action.data)
    for field, bound in ((form.date_from, 0), (form.date_to, 1)):
        if not field.data:
            continue
        try:
            instant = day_start_utc(field.data + timedelta(days=bound))
        except OverflowError:
            field.errors = [*field.errors, "That date is out of range."]
            return [], 422
        conditions.append(AuditEntry.at >= instant if bound == 0 else AuditEntry.at < instant)
    return conditions, 200


def _filter_form(session: Session) -> AuditFilterForm:
    form = AuditFilterForm(request.args)
    form.action.choices = _action_choices(session)
    return form


def _filter_args() -> dict[str, str]:
    return {key: request.args[key] for key in FILTER_KEYS if request.args.get(key)}


def _page(
    session: Session, conditions: list[ColumnElement[bool]]
) -> tuple[list[AuditEntry], int | None, int | None]:
    """One page, newest first, with keyset paging on ``seq``.

    Keyset rather than offset paging: rows are appended all the time, and an offset page
    would shift under the reader and show a row twice or skip one.
    Returns the rows and the ``before``/``after`` values for the older and newer pages.
    """
    query = select(AuditEntry).where(*conditions)
    after = request.args.get("after", type=int)
    before = request.args.get("before", type=int)
    if after is not None:
        query = query.where(AuditEntry.seq > after).order_by(AuditEntry.seq)
        rows = list(reversed(session.scalars(query.limit(PAGE_SIZE)).all()))
    else:
        if before is not None:
            query = query.where(AuditEntry.seq < before)
        rows = session.scalars(query.order_by(AuditEntry.seq.desc()).limit(PAGE_SIZE)).all()
    if not rows:
        return [], None, None

    def any_where(*extra: ColumnElement[bool]) -> bool:
        return bool(session.scalar(select(exists().where(*conditions, *extra))))

    newest, oldest = rows[0].seq, rows[-1].seq
    older = oldest if any_where(AuditEntry.seq < oldest) else None
    newer = newest if any_where(AuditEntry.seq > newest) else None
    return list(rows), older, newer


def _item_codes(rows: list[AuditEntry]) -> dict[str, str]:
    """The codes of the items on the page: people look for a tube by its code, not its id."""
    ids = {int(row.entity_id) for row in rows if row.entity == "item" and row.entity_id.isdigit()}
    if not ids:
        return {}
    found = db.session().execute(select(Item.id, Item.code).where(Item.id.in_(ids)))
    return {str(item_id): code for item_id, code in found}


def _page_answer(
    form: AuditFilterForm,
    status: int,
    rows: list[AuditEntry] | None = None,
    older: int | None = None,
    newer: int | None = None,
) -> tuple[str, int]:
    return (
        render_template(
            "audit/index.html",
            form=form,
            rows=rows or [],
            item_codes=_item_codes(rows or []),
            older=older,
            newer=newer,
            filters=_filter_args(),
            valid=status == 200,
            confirm_form=ConfirmForm(),
        ),
        status,
    )


@bp.route("")
@allow(Role.MANAGER, Role.ADMIN)
def index():
    session = db.session()
    form = _filter_form(session)
    conditions, status = _conditions(session, form)
    if status != 200:
        return _page_answer(form, status)
    return _page_answer(form, status, *_page(session, conditions))


def _csv_text(writer_buffer: io.StringIO) -> str:
    text = writer_buffer.getvalue()
    writer_buffer.seek(0)
    writer_buffer.truncate()
    return text


def _csv_rows(query: Select[tuple[AuditEntry]]) -> Iterator[str]:
    """The export, streamed in batches: the trail grows for 30 years and is never loaded whole.

    Runs after the view has returned and its session was closed, so it reads through a session
    of its own (``db.session()`` in the contexts ``stream_with_context`` pushes again, closed
    by their teardown), and closes its cursor if the download is broken off.
    """
    zone = _site_zone()
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    yield "\ufeff" + _csv_text(buffer)  # the byte-order mark makes Excel read UTF-8 (æ, ø, å)
    with db.session().scalars(query.execution_options(yield_per=1000)) as entries:
        for number, entry in enumerate(entries, 1):
            writer.writerow(
                (
                    entry.seq,
                    entry.at.isoformat(),
                    entry.at.astimezone(zone).isoformat(timespec="seconds"),
                    entry.user_id if entry.user_id is not None else "",
                    entry.actor,
                    entry.entity,
                    entry.entity_id,
                    entry.action,
                    entry.field or "",
                    entry.old_value or "",
                    entry.new_value or "",
                    entry.reason or "",
                    entry.prev_hash,
                    entry.row_hash,
                )
            )
            if number % 500 == 0:
                yield _csv_text(buffer)
    yield _csv_text(buffer)


@bp.route("/export.csv")
@allow(Role.MANAGER, Role.ADMIN)
def export_csv():
    session = db.session()
    form = _filter_form(session)
    conditions, status = _conditions(session, form)
    if status != 200:
        return _page_answer(form, status)
    # Chain order (oldest first), so each row's prev_hash is the row_hash of the line above.
    query = select(AuditEntry).where(*conditions).order_by(AuditEntry.seq)
    stamp = datetime.now(UTC).astimezone(_site_zone()).strftime("%Y%m%d-%H%M")
    return Response(
        stream_with_context(_csv_rows(query)),
        mimetype="text/csv",
        headers={"Content-Disposition": f"attachment; filename=audit-{stamp}.csv"},
    )


@bp.route("/verify", methods=["POST"])
@allow(Role.MANAGER, Role.ADMIN)
def verify():
    if ConfirmForm().validate_on_submit():
        session = db.session()
        report = verify_chain(session)
        flash(describe_report(session, report), "success" if report.intact else "error")
    return redirect(url_for("audit.index", **_filter_args()))
