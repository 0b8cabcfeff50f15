"""Printing labels: to a Zebra printer over raw TCP, or as a file for the browser.

:func:`print_labels` is the one use case: it checks who prints what where, renders the batch
with the template, sends it, and only once the labels have left the LIMS writes the print job,
its labels, the items' ``label_printed_at`` and the audit rows, in one commit. A printer that
does not answer leaves no trace but a clear message: nothing is marked printed that was not.

A reprint (an item whose label was printed before) needs a reason, says REPRINT on the label,
writes a ``reprint_label`` audit row and takes back the scan-back: the new label must be
scanned on the tube before the held-back steps (``[labels] verify_before``) are allowed again.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import Role, User
from lims.auth.services import require_role
from lims.custody.models import Item
from lims.custody.services import commit_or_conflict, find_item, visible_to
from lims.db import utcnow
from lims.errors import Forbidden, NotFound, ValidationError
from lims.labels import templates
from lims.labels.models import DOWNLOAD, PrintedLabel, PrintFormat, PrintJob, PrintStatus
from lims.labels.printers import (
    Printer,
    PrinterUnreachable,
    label_settings,
    printers_of,
    send_zpl,
)
from lims.labels.templates import LabelTemplate
from lims.patients.models import Patient
from lims.shipments.models import Shipment
from lims.shipments.services import get_shipment
from lims.storage.models import Box
from lims.storage.services import box_by_code

BENCH = (Role.TECHNICIAN, Role.MANAGER)
#: The only labels that may name the patient: bag labels for the bedside check (DOMAIN.md §9).
IDENTITY_STOCK = "product_bag"
MAX_LABELS = 500
MAX_REASON = 2000
MIMETYPES = {PrintFormat.PDF: "application/pdf", PrintFormat.ZPL: "application/x-zpl"}


def label_templates() -> dict[str, LabelTemplate]:
    """Every template: the project's ``labels/`` folder, then the site's extra folder.

    A malformed template is the site's configuration, shown as a refusal naming the file and
    the field, never a server error.
    """
    try:
        return templates.site_templates()
    except templates.TemplateError as exc:
        raise ValidationError(f"Label template {exc}", field="template") from None


def templates_fitting(batch: Batch) -> list[LabelTemplate]:
    """The templates for what the batch labels (for items: for each item's kind)."""
    return [
        t
        for t in label_templates().values()
        if t.subject == batch.subject
        and all(t.labels_item_kind(item.kind.value) for item in batch.items)
    ]


# -- what is printed ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Printout:
    """A recorded print job and the bytes it printed (the file, for a download)."""

    job: PrintJob
    data: bytes
    filename: str
    mimetype: str


@dataclass
class Batch:
    """What one job labels: items, or one box, or one shipment (the template's subject)."""

    subject: str
    site_id: int
    items: list[Item] = dataclasses.field(default_factory=list)
    box: Box | None = None
    shipment: Shipment | None = None

    @property
    def things(self) -> list[Item | Box | Shipment]:
        return list(self.items) or [self.box or self.shipment]  # type: ignore[list-item]


def _batch(
    session: Session,
    actor: User,
    item_codes: Sequence[str],
    box_code: str | None,
    shipment_code: str | None,
    lock: bool = True,
) -> Batch:
    if sum(bool(x) for x in (item_codes, box_code, shipment_code)) != 1:
        raise ValidationError("Print labels for items, or a box, or a shipment.")
    if box_code:
        box = box_by_code(session, box_code, for_update=lock)
        return Batch("box", box.unit.site_id, box=box)
    if shipment_code:
        shipment = get_shipment(session, shipment_code, for_update=lock)
        site_id = actor.site_id if actor.site_id == shipment.to_site_id else shipment.from_site_id
        return Batch("shipment", site_id, shipment=shipment)
    if len(item_codes) > MAX_LABELS:
        raise ValidationError(f"Print at most {MAX_LABELS} labels at a time.")
    items: list[Item] = []
    for code in item_codes:
        item = find_item(session, code, for_update=lock)
        if not visible_to(actor, item):
            raise NotFound(f"No bag or tube with identifier {item.code}.")
        if any(other.id == item.id for other in items):
            raise ValidationError(f"{item.code} is twice in the batch.")
        items.append(item)
    if len({item.kind for item in items}) > 1:
        raise ValidationError("Print bags and tubes in separate batches: they need other labels.")
    sites = {item.site_id for item in items}
    return Batch("item", sites.pop() if len(sites) == 1 else -1, items=items)


def _printed_before(session: Session, batch: Batch) -> list[str]:
    """The codes in the batch whose label was printed before (a new print is a reprint)."""
    if batch.items:
        return [item.code for item in batch.items if item.label_printed_at is not None]
    if batch.box is not None:
        done = exists().where(PrintedLabel.box_id == batch.box.id)
        return [batch.box.code] if session.scalar(select(done)) else []
    assert batch.shipment is not None
    done = exists().where(PrintedLabel.shipment_id == batch.shipment.id)
    return [batch.shipment.code] if session.scalar(select(done)) else []


def _texts(value: Any) -> Iterator[str]:
    """Every piece of text in a label's content, however the content nests it."""
    if isinstance(value, str):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from _texts(getattr(value, field.name))
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from _texts(key)
            yield from _texts(inner)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for inner in value:
            yield from _texts(inner)


def _identity_marks(patient: Patient) -> list[str]:
    """The patient's identifiers in the forms a label could show them (never displayed:
    decrypted only to prove that a label does not carry them)."""
    from lims.patients.services import vault

    identifier = vault().decrypt(patient.cpr_ciphertext, field="cpr").removeprefix("R:")
    name = vault().decrypt(patient.name_ciphertext, field="name").strip()
    born = vault().decrypt(patient.birth_date_ciphertext, field="birth_date")
    year, month, day = born.split("-")
    marks = [identifier, born]
    for separator in "-./":
        marks += [f"{day}{separator}{month}{separator}{year}",
                  f"{day}{separator}{month}{separator}{year[2:]}"]  # fmt: skip
    if len(identifier) == 10 and identifier.isdigit():
        marks.append(f"{identifier[:6]}-{identifier[6:]}")
    if len(name) >= 3:
        marks.append(name)
    # Short marks (a 4-character replacement identifier) would be found inside codes.
    return [mark.lower() for mark in marks if len(mark) >= 6]


def check_no_identity(template: Any, items: Iterable[Item], contents: Iterable[Any]) -> None:
    """Defence in depth: a research, vial, box or shipment label never names the patient.

    The templates refuse identity fields already; this looks at what is about to be printed.
    """
    if template.kind == IDENTITY_STOCK and not template.research:
        return
    marks = {mark for item in items for mark in _identity_marks(item.episode.patient)}
    marks |= {item.episode.coi.lower() for item in items}  # the CoI leads to the patient too
    # Whole tokens only: a birth date 26-04-12 is not inside the collection date 2026-04-12.
    found = [re.compile(rf"(?<![0-9a-z]){re.escape(mark)}(?![0-9a-z])") for mark in marks]
    for content in contents:
        text = "\n".join(_texts(content)).lower()
        if any(pattern.search(text) for pattern in found):
            raise Forbidden(
                f"Template {template.name} would print who the patient is on a "
                f"{'research' if template.research else template.kind} label; nothing printed."
            )


@dataclass(frozen=True)
class PrintPlan:
    """What the print page offers for a batch: its labels, templates and printers."""

    batch: Batch
    templates: list[Any]
    printers: list[Printer]
    #: Codes whose label was printed before: printing them again is a reprint.
    printed_before: list[str]


def plan_print(
    session: Session,
    *,
    actor: User,
    item_codes: Sequence[str] = (),
    box_code: str | None = None,
    shipment_code: str | None = None,
) -> PrintPlan:
    """The print page's offer (nothing changes; ``print_labels`` checks it all again)."""
    require_role(actor, *BENCH)
    batch = _batch(session, actor, item_codes, box_code, shipment_code, lock=False)
    if batch.site_id != actor.site_id:
        raise Forbidden(f"Labels are printed where the material is, not at {actor.site.code}.")
    fitting = templates_fitting(batch)
    return PrintPlan(
        batch=batch,
        templates=fitting,
        printers=[
            printer
            for printer in printers_of(actor.site.code)
            if any(printer.takes(template.kind) for template in fitting)
        ],
        printed_before=_printed_before(session, batch),
    )


# -- the use case -------------------------------------------------------------------------------


def _contents(session: Session, actor: User, template: Any, batch: Batch, reprint: bool) -> list:
    from lims.labels import content

    if batch.box is not None:
        return [content.box_content(session, actor=actor, box=batch.box, template=template,
                                    reprint=reprint)]  # fmt: skip
    if batch.shipment is not None:
        return [content.shipment_content(session, actor=actor, shipment=batch.shipment,
                                         template=template, reprint=reprint)]  # fmt: skip
    return [
        content.item_content(session, actor=actor, item=item, template=template, reprint=reprint)
        for item in batch.items
    ]


def _destination(actor: User, batch: Batch, template: Any, destination: str) -> Printer | None:
    if destination == DOWNLOAD:
        return None
    for printer in printers_of(actor.site.code):
        if printer.name == destination:
            break
    else:
        raise ValidationError(
            f"No printer '{destination}' at {actor.site.code}.", field="destination"
        )
    if not printer.takes(template.kind):
        raise ValidationError(
            f"Printer {printer.name} takes {', '.join(printer.kinds)} labels, not "
            f"{template.kind.replace('_', ' ')} labels.",
            field="destination",
        )
    if printer.dpi is not None and printer.dpi != template.dpi:
        raise ValidationError(
            f"Template {template.name} is made for {template.dpi} dpi; printer {printer.name} "
            f"prints at {printer.dpi} dpi.",
            field="template",
        )
    return printer


def print_labels(
    session: Session,
    *,
    actor: User,
    template_name: str,
    item_codes: Sequence[str] = (),
    box_code: str | None = None,
    shipment_code: str | None = None,
    destination: str = DOWNLOAD,
    fmt: str = PrintFormat.PDF,
    reason: str | None = None,
    reprint: bool = False,
) -> Printout:
    """Print one batch of labels (items in the order given, n/N) and record it.

    ``destination`` is ``"download"`` (the file goes back to the browser, as ``fmt``) or the
    name of a printer of the actor's site (always ZPL). Nothing is written unless the labels
    left the LIMS.
    """
    from lims.labels.render import render

    require_role(actor, *BENCH)
    reason = (reason or "").strip() or None
    if reason and len(reason) > MAX_REASON:
        raise ValidationError("The reason is too long.", field="reason")
    batch = _batch(session, actor, item_codes, box_code, shipment_code)
    if batch.site_id != actor.site_id:
        raise Forbidden(f"Labels are printed where the material is, not at {actor.site.code}.")
    template = label_templates().get(template_name or "")
    if template is None:
        raise ValidationError(f"No label template '{template_name}'.", field="template")
    if template not in templates_fitting(batch):
        raise ValidationError(
            f"Template {template.name} is for {template.kind.replace('_', ' ')} labels: it "
            f"does not fit {', '.join(thing.code for thing in batch.things[:3])}.",
            field="template",
        )
    printer = _destination(actor, batch, template, destination)
    try:
        chosen = PrintFormat.ZPL if printer else PrintFormat(fmt)
    except ValueError:
        raise ValidationError("The format is PDF or ZPL.", field="format") from None
    done_before = _printed_before(session, batch)
    if done_before and not reprint:
        raise ValidationError(
            f"Already printed: {', '.join(done_before)}. Reprint with a reason.", field="reason"
        )
    if reprint and not done_before:
        raise ValidationError("Nothing in this batch was printed before: print, not reprint.")
    if reprint and not reason:
        raise ValidationError("Give the reason for the reprint.", field="reason")
    contents = _contents(session, actor, template, batch, reprint)
    check_no_identity(template, batch.items, contents)
    data = render(template, contents, chosen.value)
    if printer is not None:
        try:
            send_zpl(printer.host, printer.port, data, float(label_settings()["timeout_seconds"]))
        except PrinterUnreachable as exc:
            session.rollback()  # releases the row locks; nothing was written
            raise PrinterUnreachable(f"{printer.name}: {exc.message}") from None
    job = _record(session, actor, template, batch, chosen, printer, reprint, reason)
    commit_or_conflict(session)
    stem = batch.things[0].code if len(batch.things) == 1 else f"{batch.things[0].code}-batch"
    return Printout(job, data, f"labels-{stem}.{chosen.value}", MIMETYPES[chosen])


def _record(
    session: Session,
    actor: User,
    template: Any,
    batch: Batch,
    fmt: PrintFormat,
    printer: Printer | None,
    reprint: bool,
    reason: str | None,
) -> PrintJob:
    """The job, its labels n/N, the items' printed/verified times and the audit rows."""
    things = batch.things
    job = PrintJob(
        printed_at=utcnow(),
        printed_by_id=actor.id,
        site_id=actor.site_id,
        template=template.name,
        format=fmt,
        destination=printer.name if printer else DOWNLOAD,
        printer_host=printer.host if printer else None,
        printer_port=printer.port if printer else None,
        status=PrintStatus.SENT if printer else PrintStatus.DOWNLOADED,
        reprint=reprint,
        reason=reason,
        label_count=len(things),
    )
    # The labels go in with the job: a print record is never changed once written.
    for number, thing in enumerate(things, start=1):
        column = {Item: "item_id", Box: "box_id", Shipment: "shipment_id"}[type(thing)]
        session.add(PrintedLabel(job=job, number=number, total=len(things), **{column: thing.id}))
    session.add(job)
    audit.record_created(session, job, actor=actor, reason=reason)
    action = "reprint_label" if reprint else "print_label"
    where = printer.name if printer else f"download ({fmt.label})"
    for number, thing in enumerate(things, start=1):
        if isinstance(thing, Item):
            if thing.label_printed_at is None:
                thing.label_printed_at = job.printed_at
            # The new label has not been seen on the tube yet: it must be scanned back.
            thing.label_verified_at = None
        changes = audit.pending_changes(thing) if isinstance(thing, Item) else []
        detail = f"{template.name} to {where}, label {number}/{len(things)}, print job {job.id}"
        if changes:
            audit.record_changes(session, thing, actor=actor, action=action, reason=reason,
                                 changes=changes)  # fmt: skip
        audit.record_action(
            session,
            actor=actor,
            entity=thing.__tablename__,
            entity_id=thing.id,
            action=action,
            detail=detail,
            reason=reason,
        )
    return job


# -- reading ------------------------------------------------------------------------------------


def print_queue(session: Session, *, actor: User, limit: int = 200) -> list[PrintJob]:
    """The site's print jobs, newest first: what was printed, by whom, where, and reprints."""
    require_role(actor, *BENCH)
    return list(
        session.scalars(
            select(PrintJob)
            .where(PrintJob.site_id == actor.site_id)
            .order_by(PrintJob.printed_at.desc(), PrintJob.id.desc())
            .limit(limit)
        )
    )


def unlabelled_of_episode(session: Session, *, actor: User, coi: str) -> list[Item]:
    """The episode's material here whose label was never printed (registered, not labelled)."""
    from lims.custody.domain import TERMINAL_STATES
    from lims.patients.services import get_episode

    require_role(actor, *BENCH)
    episode = get_episode(session, coi)
    items = session.scalars(
        select(Item)
        .where(
            Item.episode_id == episode.id,
            Item.site_id == actor.site_id,
            Item.label_printed_at.is_(None),
        )
        .order_by(Item.id)
    )
    return [item for item in items if item.state not in TERMINAL_STATES[item.kind]]
