"""Aliquot requests through the services: the whole flow, every eligibility rule, picking,
short picks, cancelling and consent withdrawal."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from lims import db as lims_db
from lims.audit.models import ESignature
from lims.audit.services import verify_chain
from lims.custody import holds
from lims.custody.domain import State
from lims.custody.models import CustodyEvent, Item
from lims.db import utcnow
from lims.errors import Conflict, Forbidden, NotFound, ValidationError
from lims.patients import services as patients
from lims.requests import fulfilment, review, services
from lims.requests.models import (
    AliquotRequest,
    LineStatus,
    Notification,
    OptOutCheck,
    RequestState,
)
from tests.conftest import PASSWORD
from tests.integration.biobank import build_biobank
from tests.integration.people import actor

DETAILS = {
    "title": "Cytokine kinetics after CAR-T",
    "principal_investigator": "Prof. Ida Immun",
    "ethics_ref": "H-24012345",
    "dpa_ref": "P-2025-77",
    "intended_analyses": "Luminex cytokine panel; no genetic analyses",
    "delivery_details": "Collected by the lab technician of the research group",
}


@pytest.fixture
def bank(app, people, make_user):
    return build_biobank(app, people, make_user)


def state_of(session, code: str) -> State:
    return session.scalar(select(Item.state).where(Item.code == code))


def events(session, code: str) -> list[str]:
    return list(
        session.scalars(
            select(CustodyEvent.action)
            .join(Item, CustodyEvent.item_id == Item.id)
            .where(Item.code == code)
            .order_by(CustodyEvent.id)
        )
    )


def inbox(session, person) -> list[tuple[str, str]]:
    return [
        (n.kind, n.message)
        for n in session.scalars(
            select(Notification).where(Notification.user_id == person.id).order_by(Notification.id)
        )
    ]


def draft(session, bank, codes, **details) -> str:
    researcher = actor(session, bank.researcher)
    request = services.create_request(session, actor=researcher, **{**DETAILS, **details})
    if codes:
        services.add_items(session, actor=researcher, code=request.code, item_codes=codes)
    return request.code


def submitted(session, bank, codes, **details) -> str:
    code = draft(session, bank, codes, **details)
    services.submit(session, actor=actor(session, bank.researcher), code=code)
    return code


def checked(session, people, code, registered=()) -> None:
    review.record_opt_out_checks(
        session, actor=actor(session, people["manager"]), code=code, registered=registered
    )


def test_a_request_from_cart_to_receipt(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        first = bank.pseudonyms[0]
        wanted = (
            bank.tubes[(first, "D0")] + bank.tubes[(first, "D7")] + [bank.tubes[(first, "D28")][0]]
        )
        code = draft(session, bank, wanted)
        request = services.get_request(session, actor(session, bank.researcher), code)
        assert request.state is RequestState.DRAFT and len(request.lines) == 5
        # Managers do not see drafts.
        with pytest.raises(NotFound):
            services.get_request(session, actor(session, people["manager"]), code)
        made = services.submit(session, actor=actor(session, bank.researcher), code=code)
        assert [r.code for r in made] == [code] and made[0].site.code == "RH"
        manager = actor(session, people["manager"])
        assert (
            "submitted",
            f'Request {code} was submitted: 5 aliquots for "{DETAILS["title"]}".',
        ) in inbox(session, manager)

        review.start_review(session, actor=manager, code=code)
        lines = review.check_lines(session, services.get_request(session, manager, code))
        assert {tuple(c.reasons) for c in lines} == {
            (f"opt-out register not checked for {first} in the last 30 days",)
        }
        checked(session, people, code)
        assert all(
            c.eligible
            for c in review.check_lines(session, services.get_request(session, manager, code))
        )

        approve = wanted[:4]
        with pytest.raises(ValidationError, match="password"):
            review.decide(
                session,
                actor=manager,
                code=code,
                decision="approved",
                password="wrong",
                approve=approve,
            )
        session.rollback()
        assert state_of(session, wanted[0]) is State.STORED
        review.decide(
            session,
            actor=manager,
            code=code,
            decision="approved",
            password=PASSWORD,
            comment="fine",
            approve=approve,
        )
        request = services.get_request(session, manager, code)
        assert request.state is RequestState.PARTLY_APPROVED
        statuses = {line.item.code: (line.status, line.reason) for line in request.lines}
        assert statuses[wanted[4]] == (LineStatus.NOT_APPROVED, "not chosen by the manager")
        assert [state_of(session, c) for c in wanted] == [State.RESERVED] * 4 + [State.STORED]
        signature = session.scalar(select(ESignature).where(ESignature.entity == "aliquot_request"))
        assert signature.meaning == "approved" and signature.printed_name == "Mona Manager"
        assert (
            "partly_approved",
            f"Request {code} was partly approved: 4 of 5 aliquots reserved.",
        ) in inbox(session, bank.researcher)

        tech = actor(session, people["tech"])
        entries = fulfilment.pick_list(session, request)
        assert [(e.unit, e.rack, e.box) for e in entries] == [("RH-F80", "R1", "RH-B1")] * 4
        assert [e.line.item.code for e in entries] == sorted(
            approve, key=lambda c: session.scalar(select(Item.position).where(Item.code == c))
        )
        stranger = bank.tubes[(bank.pseudonyms[1], "D0")][0]
        with pytest.raises(Conflict, match=f"WRONG TUBE: {stranger} is not on the pick list"):
            fulfilment.pick(session, actor=tech, code=code, scan=stranger)
        session.rollback()
        with pytest.raises(Conflict, match="WRONG TUBE"):
            fulfilment.pick(session, actor=tech, code=code, scan=wanted[4])
        session.rollback()
        for tube in approve[:3]:
            fulfilment.pick(session, actor=tech, code=code, scan=f"{tube}")
        with pytest.raises(Conflict, match="picked already"):
            fulfilment.pick(session, actor=tech, code=code, scan=approve[0])
        session.rollback()
        with pytest.raises(Conflict, match="Pick every tube"):
            fulfilment.dispatch(session, actor=tech, code=code, courier="Ida")
        session.rollback()
        fulfilment.short_pick(
            session, actor=tech, code=code, item_code=approve[3], kind="damaged", reason="cracked"
        )
        assert state_of(session, approve[3]) is State.DISCARDED
        assert (
            "short_pick",
            f"Request {code}: {approve[3]} could not be picked (damaged).",
        ) in inbox(session, manager)
        request = services.get_request(session, manager, code)
        assert request.state is RequestState.PICKING and request.ready_at is not None
        assert ("ready", f"Request {code} is ready to collect: 3 aliquots.") in inbox(
            session, bank.researcher
        )

        fulfilment.dispatch(session, actor=tech, code=code, courier="Karl Collector")
        assert services.get_request(session, manager, code).state is RequestState.HANDED_OVER
        assert {state_of(session, c) for c in approve[:3]} == {State.IN_TRANSIT}
        with pytest.raises(NotFound):  # someone else's request
            fulfilment.confirm_receipt(
                session, actor=actor(session, people["researcher"]), code=code
            )
        session.rollback()
        fulfilment.confirm_receipt(session, actor=actor(session, bank.researcher), code=code)
        request = services.get_request(session, manager, code)
        assert request.state is RequestState.CLOSED and request.received_at is not None
        assert {state_of(session, c) for c in approve[:3]} == {State.DISTRIBUTED}
        assert events(session, approve[0]) == [
            "register",
            "store",
            "reserve",
            "pick",
            "hand_over",
            "distribute",
        ]
        assert events(session, approve[3]) == ["register", "store", "reserve", "discard"]
        assert verify_chain(session).intact


def test_each_eligibility_rule_names_its_reason(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        tech, manager = actor(session, people["tech"]), actor(session, people["manager"])
        s1, s2, s3 = bank.pseudonyms
        held, fine = bank.tubes[(s1, "D0")]
        no_genetic = bank.tubes[(s2, "D0")][0]
        opted_out = bank.tubes[(s3, "D0")][0]
        code = submitted(session, bank, [held, fine, no_genetic, opted_out], genetic=True)
        patient2 = patients.get_patient(session, s2)
        patient2.consent_genetic = False
        session.commit()
        item = session.scalar(select(Item).where(Item.code == held))
        holds.place_hold(session, actor=tech, item=item, reason="other", detail="label smudged")
        checked(session, people, code, registered=[s3])
        request = services.get_request(session, manager, code)
        reasons = {c.line.item.code: c.reasons for c in review.check_lines(session, request)}
        assert reasons == {
            held: ["on hold (other)"],
            fine: [],
            no_genetic: ["consent does not cover genetic analyses"],
            opted_out: [f"{s3} is in the opt-out register"],
        }
        with pytest.raises(Conflict) as refused:
            review.decide(session, actor=manager, code=code, decision="approved", password=PASSWORD)
        assert "3 of the chosen aliquots cannot be" in refused.value.message
        assert f"{held}: on hold (other)" in refused.value.message
        session.rollback()
        assert state_of(session, fine) is State.STORED
        # An old check no longer counts.
        for check in session.scalars(select(OptOutCheck)):
            check.checked_at = utcnow() - timedelta(days=31)
        session.commit()
        request = services.get_request(session, manager, code)
        assert review.check_lines(session, request)[1].reasons == [
            f"opt-out register not checked for {s1} in the last 30 days"
        ]
        checked(session, people, code)
        review.decide(
            session,
            actor=manager,
            code=code,
            decision="approved",
            password=PASSWORD,
            approve=[fine],
        )
        request = services.get_request(session, manager, code)
        left_out = {
            line.item.code: line.reason
            for line in request.lines
            if line.status is LineStatus.NOT_APPROVED
        }
        assert left_out == {
            held: "on hold (other)",
            no_genetic: "consent does not cover genetic analyses",
            opted_out: "not chosen by the manager",
        }
        # Already reserved for another request.
        code2 = draft(session, bank, [])
        with pytest.raises(Conflict, match=f"{fine} is not available \\(reserved\\)"):
            services.add_items(
                session, actor=actor(session, bank.researcher), code=code2, item_codes=[fine]
            )
        session.rollback()


def test_withdrawn_consent_and_no_consent_refuse_the_cart(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        s1 = bank.pseudonyms[0]
        patients.record_consent(
            session,
            actor=tech,
            pseudonym=s1,
            biobank=True,
            genetic=True,
            withdrawn=True,
            reason="letter",
        )
        tube = bank.tubes[(s1, "D0")][0]
        with pytest.raises(Conflict, match=f"{tube} is not available"):
            draft(session, bank, [tube])


def test_a_rejection_is_signed_and_frees_nothing(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        manager = actor(session, people["manager"])
        tube = bank.tubes[(bank.pseudonyms[0], "D0")][0]
        code = submitted(session, bank, [tube])
        with pytest.raises(ValidationError, match="reason for the rejection"):
            review.decide(session, actor=manager, code=code, decision="rejected", password=PASSWORD)
        session.rollback()
        review.decide(
            session,
            actor=manager,
            code=code,
            decision="rejected",
            password=PASSWORD,
            comment="no ethics approval yet",
        )
        request = services.get_request(session, manager, code)
        assert request.state is RequestState.REJECTED
        assert [(x.status, x.reason) for x in request.lines] == [
            (LineStatus.NOT_APPROVED, "request rejected")
        ]
        assert state_of(session, tube) is State.STORED
        assert ("rejected", f"Request {code} was rejected: no ethics approval yet") in inbox(
            session, bank.researcher
        )
        with pytest.raises(Conflict, match="rejected; it cannot be approved or rejected"):
            review.decide(session, actor=manager, code=code, decision="approved", password=PASSWORD)


def test_roles_and_sites(app, people, bank, make_user):
    with app.app_context():
        session = lims_db.session()
        tube = bank.tubes[(bank.pseudonyms[0], "D0")][0]
        code = submitted(session, bank, [tube])
        with pytest.raises(Forbidden):
            services.create_request(session, actor=actor(session, people["tech"]), title="x")
        with pytest.raises(Forbidden):
            review.decide(
                session,
                actor=actor(session, people["tech"]),
                code=code,
                decision="approved",
                password=PASSWORD,
            )
        session.rollback()
        other_manager = actor(session, make_user("manager", site_code="OUH"))
        with pytest.raises(NotFound):
            review.decide(
                session, actor=other_manager, code=code, decision="approved", password=PASSWORD
            )
        session.rollback()
        with pytest.raises(Forbidden):
            review.start_review(session, actor=actor(session, bank.researcher), code=code)


def test_missing_details_stop_the_submission(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        tube = bank.tubes[(bank.pseudonyms[0], "D0")][0]
        code = draft(session, bank, [tube], ethics_ref="", external=True)
        with pytest.raises(ValidationError) as missing:
            services.submit(session, actor=actor(session, bank.researcher), code=code)
        assert missing.value.message == (
            "Fill in before submitting: Ethics approval reference, Recipient institution, "
            "Material transfer agreement reference."
        )
        session.rollback()
        assert (
            services.get_request(session, actor(session, bank.researcher), code).state
            is RequestState.DRAFT
        )


def test_material_at_two_sites_makes_two_requests(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        rh = bank.tubes[(bank.pseudonyms[0], "D7")]
        code = draft(session, bank, [*rh, bank.auh_tube])
        made = services.submit(session, actor=actor(session, bank.researcher), code=code)
        assert [(r.code == code, r.site.code, len(r.lines)) for r in made] == [
            (True, "RH", 2),
            (False, "AUH", 1),
        ]
        assert made[1].title == DETAILS["title"] and made[1].state is RequestState.SUBMITTED
        qp = actor(session, people["qp"])  # the AUH manager sees the AUH part only
        assert [r.code for r in services.requests_for(session, qp)] == [made[1].code]


def test_cancel_before_picking_frees_the_reserved_tubes(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        manager = actor(session, people["manager"])
        tubes = bank.tubes[(bank.pseudonyms[0], "D0")]
        code = submitted(session, bank, tubes)
        checked(session, people, code)
        review.decide(session, actor=manager, code=code, decision="approved", password=PASSWORD)
        with pytest.raises(ValidationError):
            services.cancel(session, actor=actor(session, bank.researcher), code=code, reason=" ")
        session.rollback()
        services.cancel(
            session, actor=actor(session, bank.researcher), code=code, reason="project stopped"
        )
        assert {state_of(session, t) for t in tubes} == {State.STORED}
        assert events(session, tubes[0])[-2:] == ["reserve", "unreserve"]
        request = services.get_request(session, manager, code)
        assert request.state is RequestState.CANCELLED
        assert {x.reason for x in request.lines} == {"request cancelled: project stopped"}
        # Picking has begun: too late to cancel.
        code = submitted(session, bank, bank.tubes[(bank.pseudonyms[1], "D0")])
        checked(session, people, code)
        review.decide(session, actor=manager, code=code, decision="approved", password=PASSWORD)
        fulfilment.pick(
            session,
            actor=actor(session, people["tech"]),
            code=code,
            scan=bank.tubes[(bank.pseudonyms[1], "D0")][0],
        )
        with pytest.raises(Conflict, match="picking; it cannot be cancelled"):
            services.cancel(session, actor=actor(session, bank.researcher), code=code, reason="x")


def test_consent_withdrawal_pulls_reserved_and_picked_tubes(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        s1, s2 = bank.pseudonyms[:2]
        reserved, picked = bank.tubes[(s1, "D0")]
        keep = bank.tubes[(s2, "D0")][0]
        code = submitted(session, bank, [reserved, picked, keep])
        checked(session, people, code)
        review.decide(session, actor=manager, code=code, decision="approved", password=PASSWORD)
        fulfilment.pick(session, actor=tech, code=code, scan=picked)
        patients.record_consent(
            session,
            actor=tech,
            pseudonym=s1,
            biobank=False,
            genetic=False,
            withdrawn=True,
            reason="phone call",
        )
        request = services.get_request(session, manager, code)
        lines = {x.item.code: (x.status, x.reason) for x in request.lines}
        assert lines == {
            reserved: (LineStatus.WITHDRAWN, "consent withdrawn"),
            picked: (LineStatus.WITHDRAWN, "consent withdrawn"),
            keep: (LineStatus.APPROVED, ""),
        }
        assert (
            state_of(session, reserved) is State.STORED
            and state_of(session, picked) is State.PICKED
        )
        message = (
            f"Request {code}: 2 aliquot(s) withdrawn because the donor withdrew consent "
            f"({reserved}, {picked}). Picked tubes go back into storage."
        )
        assert ("withdrawn", message) in inbox(session, bank.researcher)
        assert ("withdrawn", message) in inbox(session, manager)
        for text in (*bank.cprs, *bank.names, *bank.cois):
            assert all(text not in m for _, m in inbox(session, bank.researcher))
        # The picked tube goes back into a box; the rest of the request goes on.
        from lims.storage import services as storage

        storage.place_item(session, actor=tech, item_scan=picked, box_scan="RH-B2")
        assert state_of(session, picked) is State.STORED
        assert events(session, picked)[-1] == "put_back"
        fulfilment.pick(session, actor=tech, code=code, scan=keep)
        assert services.get_request(session, manager, code).ready_at is not None


def test_a_picked_tube_of_a_live_request_is_not_put_back(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        tube = bank.tubes[(bank.pseudonyms[0], "D0")][0]
        code = submitted(session, bank, [tube])
        checked(session, people, code)
        review.decide(session, actor=manager, code=code, decision="approved", password=PASSWORD)
        fulfilment.pick(session, actor=tech, code=code, scan=tube)
        from lims.storage import services as storage

        with pytest.raises(Conflict, match=f"picked for request {code}"):
            storage.place_item(session, actor=tech, item_scan=tube, box_scan="RH-B2")


def test_a_missing_tube_is_recorded_lost_and_an_all_short_request_closes(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        tube = bank.tubes[(bank.pseudonyms[0], "D0")][0]
        code = submitted(session, bank, [tube])
        checked(session, people, code)
        review.decide(session, actor=manager, code=code, decision="approved", password=PASSWORD)
        with pytest.raises(ValidationError, match="missing or damaged"):
            fulfilment.short_pick(
                session, actor=tech, code=code, item_code=tube, kind="gone", reason="x"
            )
        session.rollback()
        fulfilment.short_pick(
            session, actor=tech, code=code, item_code=tube, kind="missing", reason="empty position"
        )
        assert state_of(session, tube) is State.LOST
        request = services.get_request(session, manager, code)
        assert request.state is RequestState.CLOSED
        line = request.lines[0]
        assert (line.status, line.short_kind.value, line.reason) == (
            LineStatus.SHORT,
            "missing",
            "empty position",
        )


def test_the_access_committee_signs_before_the_manager(app, people, bank, make_user):
    member = make_user(
        "researcher", username="committee.anna", site_code="RH", full_name="Anna Board"
    )
    app.config["LIMS"]["requests"]["access_committee"] = {"CARTBANK-01": ["committee.anna"]}
    with app.app_context():
        session = lims_db.session()
        manager = actor(session, people["manager"])
        tube = bank.tubes[(bank.pseudonyms[0], "D0")][0]
        code = submitted(session, bank, [tube])
        anna = actor(session, member)
        assert [r.code for r in services.requests_for(session, anna)] == [code]
        assert (
            "committee",
            f"Request {code} needs the access committee's decision (CARTBANK-01).",
        ) in inbox(session, member)
        checked(session, people, code)
        with pytest.raises(Conflict, match="committee has not decided yet for: CARTBANK-01"):
            review.decide(session, actor=manager, code=code, decision="approved", password=PASSWORD)
        session.rollback()
        with pytest.raises(Forbidden, match="not on the access committee"):
            review.committee_decide(
                session,
                actor=manager,
                code=code,
                study="CARTBANK-01",
                decision="approved",
                password=PASSWORD,
            )
        session.rollback()
        review.committee_decide(
            session,
            actor=anna,
            code=code,
            study="CARTBANK-01",
            decision="approved",
            password=PASSWORD,
        )
        with pytest.raises(Conflict, match="decided on"):
            review.committee_decide(
                session,
                actor=anna,
                code=code,
                study="CARTBANK-01",
                decision="approved",
                password=PASSWORD,
            )
        session.rollback()
        review.decide(session, actor=manager, code=code, decision="approved", password=PASSWORD)
        request = services.get_request(session, manager, code)
        assert [(r.stage.value, r.decision.value, r.reviewer_id) for r in request.reviews] == [
            ("committee", "approved", member.id),
            ("manager", "approved", people["manager"].id),
        ]
        assert state_of(session, tube) is State.RESERVED


def test_criteria_become_aliquots_at_submission(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        researcher = actor(session, bank.researcher)
        code = draft(session, bank, [])
        services.add_criterion(
            session,
            actor=researcher,
            code=code,
            study="CARTBANK-01",
            material_type="plasma",
            timepoints="D0, D7, M3",
            per_subject=2,
            site="rh",
        )
        with pytest.raises(ValidationError):
            services.add_criterion(
                session,
                actor=researcher,
                code=code,
                study="X",
                material_type="plasma",
                per_subject=0,
            )
        session.rollback()
        (request,) = services.submit(session, actor=researcher, code=code)
        request = services.get_request(session, researcher, code)
        got = sorted(line.item.code for line in request.lines)
        want = sorted(c for s in bank.pseudonyms for t in ("D0", "D7") for c in bank.tubes[(s, t)])
        assert got == want
        assert request.criteria[0].shortfall.splitlines()[0].endswith("M3: 0 of 2")


def test_no_patient_identity_reaches_the_researcher_inbox(app, people, bank):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        tubes = bank.tubes[(bank.pseudonyms[0], "D0")]
        code = submitted(session, bank, tubes)
        checked(session, people, code)
        review.decide(session, actor=manager, code=code, decision="approved", password=PASSWORD)
        for tube in tubes:
            fulfilment.pick(session, actor=tech, code=code, scan=tube)
        fulfilment.dispatch(session, actor=tech, code=code, courier="Karl")
        fulfilment.confirm_receipt(session, actor=actor(session, bank.researcher), code=code)
        messages = " ".join(m for _, m in inbox(session, bank.researcher))
        assert code in messages
        for text in (*bank.cprs, *bank.names, *bank.cois):
            assert text not in messages
        assert (
            session.scalar(select(AliquotRequest.state).where(AliquotRequest.code == code))
            is RequestState.CLOSED
        )
