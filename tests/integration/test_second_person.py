"""Second-person verification: another bench user signs with their own password."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from lims import db as lims_db
from lims.audit.models import ESignature
from lims.auth.models import User
from lims.auth.services import confirm_second_person
from lims.custody.domain import Action, State
from lims.custody.models import CustodyEvent, Item
from lims.custody.services import Move, perform_action
from lims.errors import ValidationError
from tests.conftest import PASSWORD
from tests.integration.people import actor, new_episode, second_person
from tests.integration.test_custody_services import quarantined_lot


def released_bag_in_transit(app, session, people, n: int = 1) -> Item:
    qp, maker = actor(session, people["qp"]), actor(session, people["maker"])
    bag = quarantined_lot(
        app, session, people, new_episode(session, actor(session, people["tech"]), n=n)
    )
    code = bag.bags[0].code
    perform_action(
        session,
        actor=qp,
        code=code,
        action=Action.RELEASE,
        password=PASSWORD,
        witness=second_person(session, people["maker"]),
    )
    perform_action(session, actor=maker, code=code, action=Action.SHIP, move=Move(custodian="x"))
    return session.scalar(select(Item).where(Item.code == code))


def test_one_person_cannot_be_both(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        with pytest.raises(ValidationError, match="one person cannot both"):
            confirm_second_person(
                session, actor=tech, username=people["tech"].username, password=PASSWORD
            )
        with pytest.raises(ValidationError, match="cannot both"):
            perform_action(
                session,
                actor=tech,
                code=released_bag_in_transit(app, session, people).code,
                action=Action.RECEIVE,
                witness=second_person(session, people["tech"]),
            )


def test_a_wrong_second_password_is_refused_and_counted(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        with pytest.raises(ValidationError, match="Second person: Wrong username or password"):
            confirm_second_person(
                session, actor=tech, username=people["tech2"].username, password="wrong"
            )
        assert session.get(User, people["tech2"].id).failed_logins == 1
        with pytest.raises(ValidationError, match="Wrong username or password"):
            confirm_second_person(session, actor=tech, username="nobody", password=PASSWORD)
        with pytest.raises(ValidationError, match="needs a second person"):
            confirm_second_person(session, actor=tech, username="", password="")
        with pytest.raises(ValidationError, match="technician or a manager"):
            confirm_second_person(
                session, actor=tech, username=people["researcher"].username, password=PASSWORD
            )
        witness = confirm_second_person(
            session, actor=tech, username=people["tech2"].username.upper(), password=PASSWORD
        )
        assert witness.user.id == people["tech2"].id


def test_receipt_at_the_treating_site_needs_and_records_a_second_person(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        bag = released_bag_in_transit(app, session, people)
        with pytest.raises(ValidationError, match="Receive needs a second person"):
            perform_action(session, actor=tech, code=bag.code, action=Action.RECEIVE)
        session.rollback()
        assert session.get(Item, bag.id).state is State.IN_TRANSIT
        event = perform_action(
            session,
            actor=tech,
            code=bag.code,
            action=Action.RECEIVE,
            witness=second_person(session, people["manager"]),
        )
        signature = session.get(ESignature, event.witness_signature_id)
        assert (signature.user_id, signature.meaning) == (people["manager"].id, "verified")
        assert signature.entity == "item" and signature.entity_id == str(bag.id)


def test_receipt_elsewhere_or_with_the_setting_off_needs_no_second_person(app, people):
    with app.app_context():
        session = lims_db.session()
        bag = released_bag_in_transit(app, session, people)
        elsewhere = actor(session, people["elsewhere"])  # OUH is not the treating site
        event = perform_action(session, actor=elsewhere, code=bag.code, action=Action.RECEIVE)
        assert event.witness_signature_id is None
        perform_action(
            session,
            actor=elsewhere,
            code=bag.code,
            action=Action.RETURN,
            reason="sent to the wrong hospital",
        )
        app.config["LIMS"]["custody"]["second_person"]["receive_at_treating_site"] = False
        other = released_bag_in_transit(app, session, people, n=2)
        event = perform_action(
            session, actor=actor(session, people["tech"]), code=other.code, action=Action.RECEIVE
        )
        assert event.witness_signature_id is None
        assert session.scalar(
            select(CustodyEvent.id).where(CustodyEvent.witness_signature_id.is_not(None))
        )  # the releases were countersigned
