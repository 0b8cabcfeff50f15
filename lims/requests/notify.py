"""The in-app inbox of aliquot requests, and its e-mail copies.

The request services call :func:`notify` inside their own transaction, so a notification
exists exactly when the step it tells about was committed. E-mail goes out afterwards with
:func:`send_mail`: a mail server that is slow or down must never undo or hold up a step, so
sending happens outside the transaction and its failures are logged, not raised.

Messages carry request codes, aliquot codes and counts only, never patient data: an e-mail
leaves the LIMS and its access control behind.
"""

from __future__ import annotations

import logging
import math
import smtplib
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import quote

from flask import Flask, current_app, has_app_context
from sqlalchemy import Engine, func, inspect, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from lims.auth.models import Role, User
from lims.db import utcnow
from lims.errors import NotFound, ValidationError
from lims.requests.models import AliquotRequest, Notification

logger = logging.getLogger(__name__)

#: What a notification can be about; anything else is a programming error.
KINDS = (
    "submitted",
    "under_review",
    "approved",
    "partly_approved",
    "rejected",
    "ready",
    "handed_over",
    "shipped",
    "received",
    "short_pick",
    "withdrawn",
    "cancelled",
    "committee",
)

#: How each kind is named in the inbox and in an e-mail's subject.
KIND_LABELS: dict[str, str] = {
    "submitted": "Request submitted",
    "under_review": "Request under review",
    "approved": "Request approved",
    "partly_approved": "Request partly approved",
    "rejected": "Request rejected",
    "ready": "Material ready",
    "handed_over": "Material handed over",
    "shipped": "Material shipped",
    "received": "Receipt confirmed",
    "short_pick": "Short pick",
    "withdrawn": "Aliquots withdrawn",
    "cancelled": "Request cancelled",
    "committee": "Access committee",
}

MAX_MESSAGE = 500
ELLIPSIS = "…"
MAX_PAGE = 1_000_000
MAX_PER_PAGE = 500
#: Beyond an id column: no such notification, rather than a database error.
MAX_ID = 2**31 - 1
#: Notifications read back per query when mailing (well under every database's bind limit).
_CHUNK = 500


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind.replace("_", " "))


def request_path(code: str) -> str:
    """The request's page in the LIMS, as the inbox links to it and e-mails name it."""
    return f"/requests/{quote(code, safe='')}"


# -- writing ----------------------------------------------------------------------------------


def notify(
    session: Session,
    users: Iterable[User],
    *,
    kind: str,
    message: str,
    request: AliquotRequest | None = None,
) -> list[Notification]:
    """Add one notification per distinct active user, in the caller's transaction (no commit).

    Deactivated accounts get nothing: nobody reads their inbox. A message longer than the
    column is cut with an ellipsis rather than refused: the step it reports has happened.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}; expected one of {KINDS}")
    text = message.strip()
    if not text:
        raise ValueError("a notification needs a message")
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - len(ELLIPSIS)].rstrip() + ELLIPSIS
    added: list[Notification] = []
    seen: set[int] = set()
    for user in users:
        if not user.active or user.id in seen:
            continue
        seen.add(user.id)
        notification = Notification(
            user_id=user.id, kind=kind, message=text, request=request, created_at=utcnow()
        )
        session.add(notification)
        added.append(notification)
    return added


def _staff_of(session: Session, site_id: int, role: Role) -> list[User]:
    return list(
        session.scalars(
            select(User)
            .where(User.site_id == site_id, User.role == role, User.active.is_(True))
            .order_by(User.username)
        )
    )


def managers_of(session: Session, site_id: int) -> list[User]:
    """The active biobank managers of a site (who review its requests)."""
    return _staff_of(session, site_id, Role.MANAGER)


def technicians_of(session: Session, site_id: int) -> list[User]:
    """The active technicians of a site (who pick and dispatch its requests)."""
    return _staff_of(session, site_id, Role.TECHNICIAN)


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxEntry:
    notification: Notification
    #: The request's code, when the notification is about one.
    request_code: str | None

    @property
    def label(self) -> str:
        return kind_label(self.notification.kind)

    @property
    def path(self) -> str | None:
        return request_path(self.request_code) if self.request_code else None


@dataclass(frozen=True)
class InboxPage:
    entries: list[InboxEntry]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def unread_count(session: Session, user: User) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Notification)
            .where(Notification.user_id == user.id, Notification.read_at.is_(None))
        )
        or 0
    )


def inbox(session: Session, user: User, *, page: int = 1, per_page: int = 50) -> InboxPage:
    """One page of the user's notifications, newest first (read and unread alike)."""
    if not 1 <= page <= MAX_PAGE:
        raise ValidationError(f"The page must be a number from 1 to {MAX_PAGE}.", field="page")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ValidationError(
            f"Show from 1 to {MAX_PER_PAGE} notifications per page.", field="per_page"
        )
    own = Notification.user_id == user.id
    total = session.scalar(select(func.count()).select_from(Notification).where(own)) or 0
    rows = session.execute(
        select(Notification, AliquotRequest.code)
        .outerjoin(AliquotRequest, AliquotRequest.id == Notification.request_id)
        .where(own)
        .order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    entries = [InboxEntry(notification, code) for notification, code in rows]
    return InboxPage(entries=entries, page=page, per_page=per_page, total=total)


def mark_read(session: Session, user: User, notification_id: int) -> Notification:
    """Mark one of the user's own notifications read (again is no change) and commit.

    Someone else's notification is NotFound, not Forbidden: its existence is not shown.
    """
    notification = None
    if 1 <= notification_id <= MAX_ID:
        notification = session.scalar(
            select(Notification).where(
                Notification.id == notification_id, Notification.user_id == user.id
            )
        )
    if notification is None:
        raise NotFound("There is no such notification in your inbox.")
    if notification.read_at is None:
        notification.read_at = utcnow()
    session.commit()
    return notification


def mark_all_read(session: Session, user: User) -> int:
    """Mark every unread notification of the user read and commit; return how many."""
    result = session.execute(
        update(Notification)
        .where(Notification.user_id == user.id, Notification.read_at.is_(None))
        .values(read_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount or 0


# -- e-mail -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mail:
    notification_id: int
    to: str
    kind: str
    message: str
    request_code: str | None


def _settings(app_or_config: Any) -> Mapping[str, Any]:
    """The LIMS settings from an app, its ``config``, or the settings themselves."""
    if isinstance(app_or_config, Flask):
        return app_or_config.config["LIMS"]
    if isinstance(app_or_config, Mapping):
        if "LIMS" in app_or_config:
            return app_or_config["LIMS"]
        if "mail" in app_or_config:
            return app_or_config
    raise TypeError("send_mail() takes the Flask app, its config, or the LIMS settings")


def _engine(app_or_config: Any, notifications: list[Notification]) -> Engine | None:
    if isinstance(app_or_config, Flask):
        return app_or_config.extensions["lims_engine"]
    for notification in notifications:
        state = inspect(notification)
        if state.session is not None:
            return state.session.get_bind()
    if has_app_context():
        return current_app.extensions["lims_engine"]
    return None


def _ids(notifications: list[Notification]) -> list[int]:
    """The committed notifications' ids, read without touching the caller's session."""
    ids = []
    for notification in notifications:
        identity = inspect(notification).identity
        if identity is None:
            logger.warning("notification not saved yet: call send_mail() after the commit")
            continue
        ids.append(identity[0])
    return ids


def _plausible_address(address: str) -> bool:
    # The address becomes a header: anything with a line break or space could inject another.
    return (
        address.count("@") == 1
        and not address.startswith("@")
        and not address.endswith("@")
        and not any(character.isspace() for character in address)
    )


def _pending_mails(engine: Engine, ids: list[int]) -> list[_Mail]:
    """What to send: not mailed yet, to an active user with an e-mail address."""
    mails: list[_Mail] = []
    with Session(engine) as session:
        for start in range(0, len(ids), _CHUNK):
            rows = session.execute(
                select(
                    Notification.id,
                    User.email,
                    Notification.kind,
                    Notification.message,
                    AliquotRequest.code,
                )
                .join(User, User.id == Notification.user_id)
                .outerjoin(AliquotRequest, AliquotRequest.id == Notification.request_id)
                .where(
                    Notification.id.in_(ids[start : start + _CHUNK]),
                    Notification.mailed_at.is_(None),
                    User.active.is_(True),
                    User.email != "",
                )
                .order_by(Notification.id)
            )
            for notification_id, email, kind, message, code in rows:
                if not _plausible_address(email):
                    logger.warning(
                        "notification %s not mailed: the user's e-mail address is not usable",
                        notification_id,
                    )
                    continue
                mails.append(_Mail(notification_id, email, kind, message, code))
    return mails


def _compose(mail: _Mail, *, sender: str, app_name: str) -> EmailMessage:
    subject = f"[{app_name}] {kind_label(mail.kind)}"
    link = "/inbox"
    if mail.request_code:
        subject += f": {mail.request_code}"
        link = request_path(mail.request_code)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = mail.to
    message["Subject"] = subject
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    # Tells mail systems not to answer it with out-of-office replies.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        f"{mail.message}\n\n"
        f"In the LIMS: {link}\n\n"
        f"This copy of your {app_name} inbox was sent automatically; do not reply.\n"
    )
    return message


def _record_mailed(engine: Engine, ids: list[int]) -> None:
    """Set mailed_at in a short transaction of its own (the caller's is long committed)."""
    if not ids:
        return
    try:
        with Session(engine) as session, session.begin():
            session.execute(
                update(Notification)
                .where(Notification.id.in_(ids))
                .values(mailed_at=utcnow())
                .execution_options(synchronize_session=False)
            )
    except SQLAlchemyError:
        logger.warning("%d notification(s) were mailed but mailed_at was not saved", len(ids))


#: Refusals of one message; the connection is still good for the next.
_MESSAGE_REFUSED = (
    smtplib.SMTPRecipientsRefused,
    smtplib.SMTPSenderRefused,
    smtplib.SMTPDataError,
    smtplib.SMTPNotSupportedError,
)


def send_mail(app_or_config: Any, notifications: Iterable[Notification]) -> int:
    """E-mail a copy of each committed notification whose user has an address.

    Call it after the commit. Does nothing when ``[mail] host`` is empty. Never raises for a
    mail problem: a refused connection, a timeout or an SMTP error is logged as a warning and
    leaves ``mailed_at`` empty. Returns how many messages the server accepted.
    """
    settings = _settings(app_or_config)
    mail_settings = settings["mail"]
    if not mail_settings["host"]:
        return 0
    notifications = list(notifications)
    engine = _engine(app_or_config, notifications)
    if engine is None:
        logger.warning("send_mail() found no database to read the notifications from")
        return 0
    try:
        mails = _pending_mails(engine, _ids(notifications))
    except SQLAlchemyError:
        logger.warning("notifications not mailed: they could not be read back", exc_info=True)
        return 0
    if not mails:
        return 0
    host, port = mail_settings["host"], mail_settings["port"]
    sent: list[int] = []
    try:
        with smtplib.SMTP(host, port, timeout=mail_settings["timeout_seconds"]) as smtp:
            if mail_settings["starttls"]:
                smtp.starttls(context=ssl.create_default_context())
            if mail_settings["username"]:
                smtp.login(mail_settings["username"], mail_settings["password"])
            for mail in mails:
                try:
                    smtp.send_message(
                        _compose(
                            mail, sender=mail_settings["sender"], app_name=settings["app"]["name"]
                        )
                    )
                except (*_MESSAGE_REFUSED, ValueError) as exc:
                    logger.warning(
                        "notification %s not mailed: %s", mail.notification_id, _describe(exc)
                    )
                    continue
                sent.append(mail.notification_id)
    # OSError covers smtplib.SMTPException, refused connections, timeouts and TLS errors;
    # ValueError a login that cannot be encoded.
    except (OSError, ValueError) as exc:
        logger.warning(
            "e-mail to %s:%s failed, %d of %d notification(s) not mailed: %s",
            host,
            port,
            len(mails) - len(sent),
            len(mails),
            _describe(exc),
        )
    finally:
        _record_mailed(engine, sent)
    return len(sent)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
