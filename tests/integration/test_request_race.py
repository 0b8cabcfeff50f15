"""Two managers approving overlapping requests at the same moment (PostgreSQL, threads):
every aliquot is reserved once, by one of them, and the other is told which were taken."""

from __future__ import annotations

from sqlalchemy import func, select

from lims import db as lims_db
from lims.custody.models import CustodyEvent, Item
from lims.errors import Conflict
from lims.requests import review, services
from lims.requests.models import LineStatus, RequestLine, RequestState
from tests.conftest import PASSWORD
from tests.integration.biobank import build_biobank
from tests.integration.people import actor
from tests.integration.test_concurrency import ROUNDS, at_once, postgresql_only  # noqa: F401
from tests.integration.test_requests import DETAILS


def _approve(code):
    def job(session, who):
        return review.decide(
            session, actor=who, code=code, decision="approved", password=PASSWORD
        ).code

    return job


def _submitted(session, researcher, codes) -> str:
    request = services.create_request(session, actor=researcher, **DETAILS)
    services.add_items(session, actor=researcher, code=request.code, item_codes=codes)
    services.submit(session, actor=researcher, code=request.code)
    return request.code


def test_two_approvals_of_overlapping_requests(app, people, make_user, postgresql_only):  # noqa: F811
    bank = build_biobank(app, people, make_user, subjects=2)
    second_manager = make_user("manager", site_code="RH", full_name="Max Manager")
    s1, s2 = bank.pseudonyms
    shared = bank.tubes[(s1, "D0")] + bank.tubes[(s1, "D7")]
    only_a = bank.tubes[(s2, "D0")]
    only_b = bank.tubes[(s2, "D7")]
    for round_ in range(ROUNDS):
        with app.app_context():
            session = lims_db.session()
            researcher = actor(session, bank.researcher)
            code_a = _submitted(session, researcher, shared + only_a)
            code_b = _submitted(session, researcher, shared + only_b)
            review.record_opt_out_checks(
                session, actor=actor(session, people["manager"]), code=code_a
            )
            review.record_opt_out_checks(session, actor=actor(session, second_manager), code=code_b)

        outcomes = at_once(
            app, (people["manager"], _approve(code_a)), (second_manager, _approve(code_b))
        )
        won = [o for o in outcomes if isinstance(o, str)]
        lost = [o for o in outcomes if isinstance(o, Conflict)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        for tube in shared:
            assert tube in lost[0].message
        assert "reserved for another request" in lost[0].message
        with app.app_context():
            session = lims_db.session()
            for tube in shared:
                holders = session.scalars(
                    select(RequestLine.request_id)
                    .join(Item, RequestLine.item_id == Item.id)
                    .where(Item.code == tube, RequestLine.status == LineStatus.APPROVED)
                ).all()
                reserves = session.scalar(
                    select(func.count())
                    .select_from(CustodyEvent)
                    .join(Item, CustodyEvent.item_id == Item.id)
                    .where(Item.code == tube, CustodyEvent.action == "reserve")
                )
                assert len(holders) == 1
                assert reserves == round_ + 1  # one per round: the winner's
            loser = code_b if won == [code_a] else code_a
            manager = actor(session, people["manager"])
            assert services.get_request(session, manager, loser).state is RequestState.UNDER_REVIEW
            # Put everything back for the next round: the winner cancels.
            services.cancel(
                session, actor=actor(session, bank.researcher), code=won[0], reason="round over"
            )
            services.cancel(
                session, actor=actor(session, bank.researcher), code=loser, reason="round over"
            )
