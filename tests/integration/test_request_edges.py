"""Requests at their edges: tubes ended outside the request, holds after approval, duplicate
codes, audit rows of resolved and moved lines, withdrawals that leave a request ready, genetic
criteria, consent withdrawal racing a pick, and its e-mail."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from lims import db as lims_db
from lims.audit.models import AuditEntry
from lims.auth.models import User
from lims.custody import holds
from lims.custody import services as custody
from lims.custody.domain import State
from lims.custody.models import Item
from lims.errors import Conflict, InvalidTransition, NotFound
from lims.patients import services as patients
from lims.requests import fulfilment, review, services
from lims.requests.models import LineStatus, Notification, RequestState
from tests.conftest import PASSWORD
from tests.integration.biobank import build_biobank
from tests.integration.people import actor
from tests.integration.test_concurrency import postgresql_only  # noqa: F401
from tests.integration.test_notifications import mail_to, smtp_server  # noqa: F401
from tests.integration.test_requests import checked, draft, events, inbox, state_of, submitted


@pytest.fixture
def bank(app, people, make_user):
    return build_biobank(app, people, make_user)


def approved(session, people, bank, tubes, **approve) -> str:
    code = submitted(session, bank, tubes)
    checked(session, people, code)
    review.decide(
        session,
        actor=actor(session, people["manager"]),
        code=code,
        decision="approved",
        password=PASSWORD,
        **approve,
    )
    return code


def test_a_tube_a_request_holds_is_not_ended_by_a_bare_step(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        a, b = bank.tubes[(bank.pseudonyms[0], "D0")]
        code = approved(session, people, bank, [a, b])
        fulfilment.pick(session, actor=tech, code=code, scan=a)
        for tube, step in ((b, "discard"), (a, "lose")):
            with pytest.raises(InvalidTransition, match=f"held by request {code}"):
                custody.perform_action(session, actor=tech, code=tube, action=step, reason="x")
            session.rollback()
        assert (state_of(session, a), state_of(session, b)) == (State.PICKED, State.RESERVED)
        # The request's own way: a picked tube found damaged is a short pick too.
        fulfilment.short_pick(
            session, actor=tech, code=code, item_code=a, kind="damaged", reason="cracked"
        )
        assert state_of(session, a) is State.DISCARDED


def test_a_hold_after_approval_stops_the_pick_and_the_tube_goes_short(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        a, b = bank.tubes[(bank.pseudonyms[0], "D0")]
        code = approved(session, people, bank, [a, b])
        item = session.scalar(select(Item).where(Item.code == a))
        holds.place_hold(session, actor=tech, item=item, reason="other", detail="leaking cap")
        with pytest.raises(InvalidTransition, match="on hold"):
            fulfilment.pick(session, actor=tech, code=code, scan=a)
        session.rollback()
        fulfilment.short_pick(
            session, actor=tech, code=code, item_code=a, kind="damaged", reason="leaking cap"
        )
        fulfilment.pick(session, actor=tech, code=code, scan=b)
        request = services.get_request(session, tech, code)
        assert request.ready_at is not None and request.state is RequestState.PICKING


def test_staff_of_another_site_cannot_confirm_receipt(app, people, bank):
    app.config["LIMS"]["requests"]["access_committee"] = {
        "CARTBANK-01": [people["elsewhere"].username]
    }
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        tubes = bank.tubes[(bank.pseudonyms[0], "D0")]
        code = submitted(session, bank, tubes)
        review.committee_decide(
            session,
            actor=actor(session, people["elsewhere"]),
            code=code,
            study="CARTBANK-01",
            decision="approved",
            password=PASSWORD,
        )
        checked(session, people, code)
        review.decide(
            session,
            actor=actor(session, people["manager"]),
            code=code,
            decision="approved",
            password=PASSWORD,
        )
        for tube in tubes:
            fulfilment.pick(session, actor=tech, code=code, scan=tube)
        fulfilment.dispatch(session, actor=tech, code=code, courier="Karl")
        olga = actor(session, people["elsewhere"])
        with pytest.raises(NotFound):
            fulfilment.confirm_receipt(session, actor=olga, code=code)
        session.rollback()
        assert {state_of(session, t) for t in tubes} == {State.IN_TRANSIT}


def test_a_code_named_twice_in_an_approval_counts_once(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        a, b = bank.tubes[(bank.pseudonyms[0], "D0")]
        c = bank.tubes[(bank.pseudonyms[0], "D7")][0]
        code = approved(session, people, bank, [a, b, c], approve=[a, a.lower(), b])
        request = services.get_request(session, actor(session, people["manager"]), code)
        assert request.state is RequestState.PARTLY_APPROVED
        assert request.reviews[-1].approved_count == 2
        assert events(session, a).count("reserve") == 1


def test_lines_from_criteria_and_lines_moved_to_another_site_are_audited(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        researcher = actor(session, bank.researcher)
        code = draft(session, bank, [bank.auh_tube])
        services.add_criterion(
            session,
            actor=researcher,
            code=code,
            study="CARTBANK-01",
            material_type="plasma",
            timepoints="D0",
            per_subject=1,
            site="RH",
        )
        first, auh = services.submit(session, actor=researcher, code=code)
        lines = {line.id: line for line in first.lines} | {line.id: line for line in auh.lines}
        assert len(first.lines) == 3 and [x.item.code for x in auh.lines] == [bank.auh_tube]
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.entity == "aliquot_request_line")
        ).all()
        created = {int(r.entity_id) for r in rows if r.action == "create"}
        assert created == set(lines)
        (moved,) = [r for r in rows if r.action == "split"]
        assert (moved.entity_id, moved.field) == (str(auh.lines[0].id), "request_id")
        assert (moved.old_value, moved.new_value) == (str(first.id), str(auh.id))


def test_a_draft_left_with_withdrawn_lines_only_is_not_submitted(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        s1 = bank.pseudonyms[0]
        code = draft(session, bank, bank.tubes[(s1, "D0")][:1])
        patients.record_consent(
            session,
            actor=actor(session, people["tech"]),
            pseudonym=s1,
            biobank=False,
            genetic=False,
            withdrawn=True,
            reason="letter",
        )
        with pytest.raises(Conflict, match="No available aliquot is left"):
            services.submit(session, actor=actor(session, bank.researcher), code=code)


def test_a_withdrawal_of_the_last_tube_to_pick_makes_the_request_ready(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        s1, s2 = bank.pseudonyms[:2]
        keep, goes = bank.tubes[(s2, "D0")][0], bank.tubes[(s1, "D0")][0]
        code = approved(session, people, bank, [keep, goes])
        fulfilment.pick(session, actor=tech, code=code, scan=keep)
        patients.record_consent(
            session, actor=tech, pseudonym=s1, biobank=False, genetic=False, withdrawn=True,
            reason="letter",
        )  # fmt: skip
        assert services.get_request(session, tech, code).ready_at is not None
        assert ("ready", f"Request {code} is ready to collect: 1 aliquots.") in inbox(
            session, bank.researcher
        )


def test_criteria_for_genetic_analyses_take_only_genetic_consent(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        researcher = actor(session, bank.researcher)
        s1, s2, s3 = bank.pseudonyms
        patient = patients.get_patient(session, s2)
        patient.consent_genetic = False
        session.commit()
        code = draft(session, bank, [], genetic=True)
        services.add_criterion(
            session, actor=researcher, code=code, study="CARTBANK-01", material_type="plasma",
            timepoints="D0", per_subject=1, site="RH",
        )  # fmt: skip
        (request,) = services.submit(session, actor=researcher, code=code)
        subjects = {line.item.episode.patient.pseudonym for line in request.lines}
        assert subjects == {s1, s3}
        assert request.criteria[0].shortfall == f"{s2} D0: 0 of 1"


def test_a_withdrawal_notice_is_mailed(app, people, bank, smtp_server):  # noqa: F811
    mail_to(app, smtp_server.host, smtp_server.port)
    with app.app_context():
        session = lims_db.session()
        session.get(User, bank.researcher.id).email = "rita@example.org"
        session.commit()
        tube = bank.tubes[(bank.pseudonyms[0], "D0")][0]
        approved(session, people, bank, [tube])
        patients.record_consent(
            session, actor=actor(session, people["tech"]), pseudonym=bank.pseudonyms[0],
            biobank=False, genetic=False, withdrawn=True, reason="letter",
        )  # fmt: skip
        notice = session.scalar(
            select(Notification).where(
                Notification.kind == "withdrawn", Notification.user_id == bank.researcher.id
            )
        )
        assert notice.mailed_at is not None
        assert any("withdrawn" in m.message["Subject"].lower() for m in smtp_server.messages)


def test_a_withdrawal_racing_a_pick_does_not_deadlock(
    app, people, bank, postgresql_only, monkeypatch  # noqa: F811
):
    s1 = bank.pseudonyms[0]
    tube = bank.tubes[(s1, "D0")][0]
    with app.app_context():
        code = approved(lims_db.session(), people, bank, [tube])
    locked = threading.Event()
    real = fulfilment.perform_action

    def slow(*args, **kwargs):
        if threading.current_thread().name == "pick":
            locked.set()  # the request and the tube are locked by now
            time.sleep(1.0)  # the withdrawal starts meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(fulfilment, "perform_action", slow)
    outcomes: dict[str, str] = {}

    def pick():
        try:
            with app.app_context():
                session = lims_db.session()
                fulfilment.pick(session, actor=actor(session, people["tech"]), code=code, scan=tube)
                outcomes["pick"] = "done"
        except Exception as exc:
            outcomes["pick"] = repr(exc)

    def withdraw():
        locked.wait(10)
        try:
            with app.app_context():
                session = lims_db.session()
                patients.record_consent(
                    session, actor=actor(session, people["tech2"]), pseudonym=s1,
                    biobank=False, genetic=False, withdrawn=True, reason="phone call",
                )  # fmt: skip
                outcomes["withdraw"] = "done"
        except Exception as exc:
            outcomes["withdraw"] = repr(exc)

    threads = [threading.Thread(target=pick, name="pick"), threading.Thread(target=withdraw)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes == {"pick": "done", "withdraw": "done"}
    with app.app_context():
        session = lims_db.session()
        request = services.get_request(session, actor(session, people["tech"]), code)
        # The pick came first; the withdrawal then pulled the picked tube from the request.
        assert [(x.status, x.reason) for x in request.lines] == [
            (LineStatus.WITHDRAWN, "consent withdrawn")
        ]
        assert state_of(session, tube) is State.PICKED
