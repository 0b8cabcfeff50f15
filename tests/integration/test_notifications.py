"""The notification machinery of aliquot requests: the inbox services and the e-mail copies.

E-mail goes to a small SMTP responder written here (socketserver on 127.0.0.1, port 0) that
records each envelope and message, so the tests see exactly what a mail server would receive.
"""

from __future__ import annotations

import copy
import email
import email.policy
import logging
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from flask import current_app
from sqlalchemy import func, select

from lims import create_app
from lims import db as lims_db
from lims.auth.models import User
from lims.config import load_settings
from lims.errors import ConfigurationError, NotFound, ValidationError
from lims.requests import notify
from lims.requests.models import AliquotRequest, Notification, RequestState

NOTIFY_LOGGER = "lims.requests.notify"


# -- a tiny SMTP server -----------------------------------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_to: list[str]
    data: bytes

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


@dataclass
class Mailbox:
    host: str
    port: int
    messages: list[Received] = field(default_factory=list)
    connections: int = 0


class _SMTPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *, refuse: set[str], silent: bool) -> None:
        super().__init__(("127.0.0.1", 0), _SMTPHandler)
        self.refuse = refuse
        self.silent = silent
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.mailbox = Mailbox("127.0.0.1", self.server_address[1])


class _SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough of RFC 5321 for smtplib: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    server: _SMTPServer

    def reply(self, line: str) -> None:
        self.wfile.write(line.encode("ascii") + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        with self.server.lock:
            self.server.mailbox.connections += 1
        if self.server.silent:  # accepts the connection, never greets: the client times out
            self.server.released.wait(10)
            return
        try:
            self.converse()
        except OSError:
            return

    def converse(self) -> None:
        self.reply("220 test.invalid ESMTP ready")
        mail_from, rcpt_to = "", []
        while line := self.rfile.readline():
            command = line.decode("ascii", "replace").rstrip("\r\n")
            upper = command.upper()
            if upper.startswith(("EHLO", "HELO")):
                self.reply("250 test.invalid")
            elif upper.startswith("MAIL FROM:"):
                mail_from, rcpt_to = command[10:].strip().strip("<>"), []
                self.reply("250 OK")
            elif upper.startswith("RCPT TO:"):
                address = command[8:].strip().strip("<>")
                if address in self.server.refuse:
                    self.reply("550 No such mailbox")
                else:
                    rcpt_to.append(address)
                    self.reply("250 OK")
            elif upper == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                lines = []
                while (data_line := self.rfile.readline()) not in (b".\r\n", b""):
                    lines.append(data_line[1:] if data_line.startswith(b".") else data_line)
                with self.server.lock:
                    self.server.mailbox.messages.append(
                        Received(mail_from, list(rcpt_to), b"".join(lines))
                    )
                self.reply("250 OK queued")
            elif upper in ("RSET", "NOOP"):
                mail_from, rcpt_to = "", []
                self.reply("250 OK")
            elif upper == "QUIT":
                self.reply("221 Bye")
                return
            else:
                self.reply("502 Command not implemented")


def _serve(*, refuse: set[str] | None = None, silent: bool = False):
    server = _SMTPServer(refuse=refuse or set(), silent=silent)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _stop(server: _SMTPServer, thread: threading.Thread) -> None:
    server.released.set()
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def smtp_server():
    server, thread = _serve(refuse={"refused@example.org"})
    yield server.mailbox
    _stop(server, thread)


@pytest.fixture
def silent_server():
    server, thread = _serve(silent=True)
    yield server.mailbox
    _stop(server, thread)


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def session(app):
    with app.app_context():
        yield lims_db.session()


def account(session, person) -> User:
    return session.get(User, person.id)


def new_request(session, researcher: User, code: str = "REQ-2026-00001") -> AliquotRequest:
    aliquot_request = AliquotRequest(
        code=code,
        state=RequestState.SUBMITTED,
        researcher_id=researcher.id,
        site_id=researcher.site_id,
        title="CAR-T persistence",
    )
    session.add(aliquot_request)
    session.commit()
    return aliquot_request


def count_notifications(session, user_id: int | None = None) -> int:
    query = select(func.count()).select_from(Notification)
    if user_id is not None:
        query = query.where(Notification.user_id == user_id)
    return session.scalar(query)


def mail_to(app, host: str, port: int, **mail) -> None:
    app.config["LIMS"]["mail"].update(host=host, port=port, **mail)


# -- notify -----------------------------------------------------------------------------------


def test_notify_adds_one_row_per_distinct_active_user(session, make_user):
    manager, other = make_user("manager"), make_user("manager")
    gone = make_user("manager")
    users = [account(session, p) for p in (manager, other, gone)]
    users[2].active = False
    session.commit()
    researcher = account(session, make_user("researcher"))
    aliquot_request = new_request(session, researcher)

    added = notify.notify(
        session,
        [users[0], users[1], users[0], users[2], session.get(User, manager.id)],
        kind="submitted",
        message="REQ-2026-00001 was submitted: 12 aliquots.",
        request=aliquot_request,
    )
    session.commit()

    assert [n.user_id for n in added] == [manager.id, other.id]
    rows = session.scalars(select(Notification).order_by(Notification.user_id)).all()
    assert [(n.user_id, n.kind, n.request_id, n.read_at, n.mailed_at) for n in rows] == [
        (manager.id, "submitted", aliquot_request.id, None, None),
        (other.id, "submitted", aliquot_request.id, None, None),
    ]
    assert rows[0].message == "REQ-2026-00001 was submitted: 12 aliquots."
    assert count_notifications(session, gone.id) == 0


def test_notify_leaves_the_commit_to_the_caller(session, make_user):
    user = account(session, make_user("researcher"))
    notify.notify(session, [user], kind="approved", message="Approved.")
    session.rollback()
    assert count_notifications(session) == 0


def test_notify_refuses_an_unknown_kind(session, make_user):
    user = account(session, make_user("researcher"))
    with pytest.raises(ValueError, match="unknown notification kind 'aproved'"):
        notify.notify(session, [user], kind="aproved", message="Approved.")
    with pytest.raises(ValueError, match="needs a message"):
        notify.notify(session, [user], kind="approved", message="   ")
    session.commit()
    assert count_notifications(session) == 0


def test_every_kind_has_a_label():
    assert set(notify.KIND_LABELS) == set(notify.KINDS)
    assert notify.kind_label("short_pick") == "Short pick"


def test_a_long_message_is_cut_with_an_ellipsis(session, make_user):
    user = account(session, make_user("manager"))
    exact = "x" * 500
    (kept,) = notify.notify(session, [user], kind="short_pick", message=exact)
    (cut,) = notify.notify(session, [user], kind="short_pick", message="y" * 501)
    session.commit()
    assert kept.message == exact
    assert len(cut.message) == 500
    assert cut.message == "y" * 499 + "…"


def test_managers_and_technicians_of_a_site(session, make_user):
    m1 = make_user("manager", username="mona", site_code="RH")
    m2 = make_user("manager", username="anna", site_code="RH")
    make_user("manager", username="other", site_code="OUH")
    retired = make_user("manager", username="retired", site_code="RH")
    t1 = make_user("technician", username="tina", site_code="RH")
    make_user("researcher", username="rita", site_code="RH")
    account(session, retired).active = False
    session.commit()
    site_id = account(session, m1).site_id

    assert [u.username for u in notify.managers_of(session, site_id)] == ["anna", "mona"]
    assert [u.id for u in notify.managers_of(session, site_id)] == [m2.id, m1.id]
    assert [u.id for u in notify.technicians_of(session, site_id)] == [t1.id]


# -- inbox ------------------------------------------------------------------------------------


def _inbox_of(session, user: User, count: int) -> list[int]:
    """``count`` notifications a minute apart, oldest first; returns their ids."""
    start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    ids = []
    for n in range(count):
        (row,) = notify.notify(session, [user], kind="ready", message=f"Message {n}")
        row.created_at = start + timedelta(minutes=n)
        session.flush()
        ids.append(row.id)
    session.commit()
    return ids


def test_inbox_is_newest_first_and_paged(session, make_user):
    user = account(session, make_user("researcher"))
    stranger = account(session, make_user("researcher"))
    ids = _inbox_of(session, user, 5)
    notify.notify(session, [stranger], kind="ready", message="Not yours")
    session.commit()

    first = notify.inbox(session, user, page=1, per_page=2)
    assert [e.notification.id for e in first.entries] == [ids[4], ids[3]]
    assert (first.total, first.pages, first.has_previous, first.has_next) == (5, 3, False, True)
    last = notify.inbox(session, user, page=3, per_page=2)
    assert [e.notification.message for e in last.entries] == ["Message 0"]
    assert (last.has_previous, last.has_next) == (True, False)
    assert notify.inbox(session, user, page=4, per_page=2).entries == []
    assert len(notify.inbox(session, user, page=1).entries) == 5


def test_inbox_names_the_request(session, make_user):
    researcher = account(session, make_user("researcher"))
    aliquot_request = new_request(session, researcher, code="REQ-2026-00042")
    notify.notify(session, [researcher], kind="approved", message="A", request=aliquot_request)
    session.commit()
    (entry,) = notify.inbox(session, researcher).entries
    assert (entry.request_code, entry.path, entry.label) == (
        "REQ-2026-00042",
        "/requests/REQ-2026-00042",
        "Request approved",
    )


@pytest.mark.parametrize(("page", "per_page"), [(0, 50), (-1, 50), (1_000_001, 50), (1, 0)])
def test_inbox_refuses_a_page_out_of_range(session, make_user, page, per_page):
    user = account(session, make_user("researcher"))
    with pytest.raises(ValidationError):
        notify.inbox(session, user, page=page, per_page=per_page)


def test_mark_read_is_own_only_and_idempotent(session, make_user):
    user = account(session, make_user("researcher"))
    stranger = account(session, make_user("manager"))
    mine = _inbox_of(session, user, 2)
    (theirs,) = notify.notify(session, [stranger], kind="submitted", message="For the manager")
    session.commit()
    assert notify.unread_count(session, user) == 2

    first = notify.mark_read(session, user, mine[0])
    read_at = first.read_at
    assert read_at is not None
    again = notify.mark_read(session, user, mine[0])
    assert again.read_at == read_at
    assert notify.unread_count(session, user) == 1

    for wrong in (theirs.id, 999_999, 0, -5, 2**40):
        with pytest.raises(NotFound):
            notify.mark_read(session, user, wrong)
    session.expire_all()
    assert session.get(Notification, theirs.id).read_at is None
    assert notify.unread_count(session, stranger) == 1


def test_mark_all_read_touches_only_the_users_unread(session, make_user):
    user = account(session, make_user("researcher"))
    stranger = account(session, make_user("manager"))
    ids = _inbox_of(session, user, 3)
    notify.mark_read(session, user, ids[0])
    notify.notify(session, [stranger], kind="submitted", message="For the manager")
    session.commit()

    assert notify.mark_all_read(session, user) == 2
    assert notify.unread_count(session, user) == 0
    assert notify.unread_count(session, stranger) == 1
    assert notify.mark_all_read(session, user) == 0


# -- e-mail -----------------------------------------------------------------------------------


def _mailed_at(session, ids) -> list:
    session.expire_all()
    return [session.get(Notification, i).mailed_at for i in ids]


def test_send_mail_delivers_a_copy_to_users_with_an_address(app, session, make_user, smtp_server):
    mona = account(session, make_user("manager", email="mona@example.org"))
    quiet = account(session, make_user("manager"))  # no e-mail address
    researcher = account(session, make_user("researcher"))
    aliquot_request = new_request(session, researcher, code="REQ-2026-00007")
    added = notify.notify(
        session,
        [mona, quiet],
        kind="approved",
        message="REQ-2026-00007 approved: 4 of 5 aliquots.",
        request=aliquot_request,
    )
    session.commit()
    mail_to(app, smtp_server.host, smtp_server.port, sender="biobank@rh.example.org")

    assert notify.send_mail(app, added) == 1

    (received,) = smtp_server.messages
    assert received.mail_from == "biobank@rh.example.org"
    assert received.rcpt_to == ["mona@example.org"]
    message = received.message
    assert message["Subject"] == "[CAR-T LIMS] Request approved: REQ-2026-00007"
    assert message["To"] == "mona@example.org"
    assert message["From"] == "biobank@rh.example.org"
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_content()
    assert "REQ-2026-00007 approved: 4 of 5 aliquots." in body
    assert "/requests/REQ-2026-00007" in body
    mailed = _mailed_at(session, [n.id for n in added])
    assert mailed[0] is not None and mailed[1] is None

    # Sent once only: a second call finds nothing left to mail.
    assert notify.send_mail(app, added) == 0
    assert len(smtp_server.messages) == 1


def test_send_mail_takes_the_settings_instead_of_the_app(app, session, make_user, smtp_server):
    user = account(session, make_user("researcher", email="rita@example.org"))
    added = notify.notify(session, [user], kind="cancelled", message="Your draft was cancelled.")
    session.commit()
    settings = copy.deepcopy(app.config["LIMS"])
    settings["mail"].update(host=smtp_server.host, port=smtp_server.port)
    settings["app"]["name"] = "Biobank"

    assert notify.send_mail(settings, added) == 1
    (received,) = smtp_server.messages
    assert received.message["Subject"] == "[Biobank] Request cancelled"
    assert "/inbox" in received.message.get_content()
    assert _mailed_at(session, [added[0].id])[0] is not None


def test_send_mail_takes_the_current_app(app, session, make_user, smtp_server):
    """As the request services call it: ``send_mail(current_app, ...)`` inside a request."""
    user = account(session, make_user("researcher", email="rita@example.org"))
    added = notify.notify(session, [user], kind="received", message="Receipt confirmed.")
    session.commit()
    mail_to(app, smtp_server.host, smtp_server.port)
    assert notify.send_mail(current_app, added) == 1
    assert [m.rcpt_to for m in smtp_server.messages] == [["rita@example.org"]]


def test_a_refused_recipient_does_not_stop_the_others(app, session, make_user, smtp_server, caplog):
    bad = account(session, make_user("manager", email="refused@example.org"))
    good = account(session, make_user("manager", email="good@example.org"))
    added = notify.notify(session, [bad, good], kind="submitted", message="REQ submitted.")
    session.commit()
    mail_to(app, smtp_server.host, smtp_server.port)

    with caplog.at_level(logging.WARNING, logger=NOTIFY_LOGGER):
        assert notify.send_mail(app, added) == 1

    assert [m.rcpt_to for m in smtp_server.messages] == [["good@example.org"]]
    assert _mailed_at(session, [added[0].id])[0] is None
    assert _mailed_at(session, [added[1].id])[0] is not None
    warnings = [r for r in caplog.records if r.name == NOTIFY_LOGGER]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert f"notification {added[0].id} not mailed: SMTPRecipientsRefused" in warnings[0].message


def test_a_refused_connection_is_logged_never_raised(app, session, make_user, closed_port, caplog):
    user = account(session, make_user("manager", email="mona@example.org"))
    added = notify.notify(session, [user], kind="short_pick", message="2 tubes short.")
    session.commit()
    mail_to(app, "127.0.0.1", closed_port)

    with caplog.at_level(logging.WARNING, logger=NOTIFY_LOGGER):
        assert notify.send_mail(app, added) == 0

    assert _mailed_at(session, [added[0].id]) == [None]
    (record,) = [r for r in caplog.records if r.name == NOTIFY_LOGGER]
    assert record.levelno == logging.WARNING
    assert f"e-mail to 127.0.0.1:{closed_port} failed, 1 of 1 notification(s) not mailed" in (
        record.message
    )
    assert "ConnectionRefusedError" in record.message


def test_a_server_that_never_answers_times_out(app, session, make_user, silent_server, caplog):
    user = account(session, make_user("manager", email="mona@example.org"))
    added = notify.notify(session, [user], kind="ready", message="Ready for pick-up.")
    session.commit()
    mail_to(app, silent_server.host, silent_server.port, timeout_seconds=0.3)

    started = datetime.now(UTC)
    with caplog.at_level(logging.WARNING, logger=NOTIFY_LOGGER):
        assert notify.send_mail(app, added) == 0
    assert datetime.now(UTC) - started < timedelta(seconds=5)

    assert silent_server.connections == 1
    assert _mailed_at(session, [added[0].id]) == [None]
    (record,) = [r for r in caplog.records if r.name == NOTIFY_LOGGER]
    assert "SMTPServerDisconnected: Connection unexpectedly closed: timed out" in record.message


def test_no_host_configured_sends_nothing(app, session, make_user, smtp_server):
    user = account(session, make_user("manager", email="mona@example.org"))
    added = notify.notify(session, [user], kind="submitted", message="REQ submitted.")
    session.commit()
    assert app.config["LIMS"]["mail"]["host"] == ""  # the default

    assert notify.send_mail(app, added) == 0
    assert (smtp_server.connections, smtp_server.messages) == (0, [])
    assert _mailed_at(session, [added[0].id]) == [None]


def test_nothing_to_mail_opens_no_connection(app, session, make_user, smtp_server):
    user = account(session, make_user("manager"))  # no address
    added = notify.notify(session, [user], kind="submitted", message="REQ submitted.")
    session.commit()
    mail_to(app, smtp_server.host, smtp_server.port)
    assert notify.send_mail(app, added) == 0
    assert notify.send_mail(app, []) == 0
    assert smtp_server.connections == 0


def test_an_unsaved_notification_is_not_mailed(app, session, make_user, smtp_server, caplog):
    user = account(session, make_user("manager", email="mona@example.org"))
    added = notify.notify(session, [user], kind="submitted", message="REQ submitted.")
    mail_to(app, smtp_server.host, smtp_server.port)
    with caplog.at_level(logging.WARNING, logger=NOTIFY_LOGGER):
        assert notify.send_mail(app, added) == 0
    assert smtp_server.connections == 0
    assert "call send_mail() after the commit" in caplog.text
    session.rollback()


# -- configuration ----------------------------------------------------------------------------


def test_mail_defaults():
    assert load_settings(environ={})["mail"] == {
        "host": "",
        "port": 25,
        "sender": "lims@localhost",
        "starttls": False,
        "username": "",
        "password": "",
        "timeout_seconds": 10.0,
    }


def test_mail_settings_from_file_and_environment(tmp_path):
    config = tmp_path / "lims.toml"
    config.write_text(
        '[mail]\nhost = "smtp.file"\nport = 587\nstarttls = true\ntimeout_seconds = 3\n'
    )
    settings = load_settings(
        config,
        environ={
            "LIMS_MAIL_HOST": "smtp.env",
            "LIMS_MAIL_USERNAME": "lims",
            "LIMS_MAIL_PASSWORD": "pw",
        },
    )
    assert settings["mail"] == {
        "host": "smtp.env",
        "port": 587,
        "sender": "lims@localhost",
        "starttls": True,
        "username": "lims",
        "password": "pw",
        "timeout_seconds": 3.0,
    }


@pytest.mark.parametrize(
    ("mail", "problem"),
    [
        ({"port": "25"}, "'mail.port' must be int, not str"),
        ({"port": True}, "'mail.port' must be a whole number"),
        ({"port": 0}, "'mail.port' must be between 1 and 65535"),
        ({"port": 70000}, "'mail.port' must be between 1 and 65535"),
        ({"timeout_seconds": 0}, "'mail.timeout_seconds' must be more than 0"),
        ({"timeout_seconds": "10"}, "'mail.timeout_seconds' must be float, not str"),
        ({"starttls": "yes"}, "'mail.starttls' must be bool, not str"),
        ({"sender": "lims"}, "'mail.sender' must be an e-mail address"),
        ({"sender": "lims@x\r\nBcc: y@z"}, "'mail.sender' must not hold spaces"),
        ({"host": "smtp example"}, "'mail.host' must not hold spaces"),
        ({"password": "secret"}, "'mail.password' is set but 'mail.username' is empty"),
        ({"hots": "smtp"}, "unknown configuration key 'mail.hots'"),
    ],
)
def test_bad_mail_settings_are_refused(mail, problem):
    with pytest.raises(ConfigurationError) as refused:
        load_settings(environ={}, overrides={"mail": mail})
    assert problem in str(refused.value)


def test_a_bad_port_stops_the_app_at_start(tmp_path):
    config = tmp_path / "lims.toml"
    config.write_text('[mail]\nhost = "smtp.example.org"\nport = "submission"\n')
    with pytest.raises(ConfigurationError) as refused:
        create_app(config, overrides={"app": {"instance_path": str(tmp_path / "instance")}})
    assert str(refused.value) == f"configuration file {config}: 'mail.port' must be int, not str"
