"""The manufacturing services: lots from scans, quarantine, QC review and all-or-nothing release."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.audit.models import AuditEntry, ESignature
from lims.auth.models import User
from lims.custody import holds, production
from lims.custody.domain import Action, State
from lims.custody.models import CustodyEvent, Hold, HoldReason, Item, ProductLot
from lims.custody.services import Move, perform_action
from lims.errors import Conflict, Forbidden, ValidationError
from lims.identifiers import eye_readable
from lims.manufacturing import services
from lims.manufacturing.overview import LotStatus, get_lot, lot_overview, lots_at
from tests.conftest import PASSWORD
from tests.integration.people import actor, new_episode

# -- helpers (after tests/integration/test_custody_services.py) ---------------------------------


def walk(session, who, code, *steps, **options):
    for step in steps:
        perform_action(session, actor=who, code=code, action=step, **options)


def collection_in_manufacturing(session, people, episode, *, start=True) -> Item:
    """A collection at RH shipped to AUH, received there and (by default) in manufacturing."""
    tech, maker = actor(session, people["tech"]), actor(session, people["maker"])
    collection = production.register_collection(
        session, actor=tech, coi=episode.coi, volume_ml=200, collected_at=lims_db.utcnow()
    )
    walk(session, tech, collection.code, Action.SHIP, move=Move(custodian="courier"))
    walk(session, maker, collection.code, Action.RECEIVE)
    if start:
        walk(session, maker, collection.code, Action.START_MANUFACTURING)
    return collection


def pass_qc(app, session, people, lot_number: str) -> None:
    maker = actor(session, people["maker"])
    for test in app.config["LIMS"]["custody"]["required_qc"]:
        production.add_qc_result(
            session, actor=maker, lot_number=lot_number, test=test, value="ok", passed=True
        )


def lot_in_quarantine(app, session, people, *, n=1, bags=2, qc=True) -> ProductLot:
    """A lot of ``bags`` bags of patient n, all in quarantine, with QC complete by default."""
    maker = actor(session, people["maker"])
    episode = new_episode(session, actor(session, people["tech"]), n=n)
    collection = collection_in_manufacturing(session, people, episode)
    lot = production.create_lot(
        session,
        actor=maker,
        lot_number=f"ACAD-{n}",
        apheresis_codes=[collection.code],
        bags=[production.BagSpec(volume_ml=40) for _ in range(bags)],
    )
    services.quarantine_lot(session, actor=maker, lot_number=lot.lot_number)
    if qc:
        pass_qc(app, session, people, lot.lot_number)
    return lot


def committed(app) -> dict:
    """What is committed, read on a connection of its own (not the test's session)."""
    with app.extensions["lims_engine"].connect() as connection:
        counted = {
            model.__tablename__: connection.scalar(select(func.count()).select_from(model))
            for model in (Item, CustodyEvent, ESignature, AuditEntry, Hold, ProductLot)
        }
        counted["items"] = sorted(
            connection.execute(select(Item.id, Item.state, Item.version)).all()
        )
        return counted


def audit_rows(session, entity: str, entity_id, action: str) -> list[AuditEntry]:
    return list(
        session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.entity == entity,
                AuditEntry.entity_id == str(entity_id),
                AuditEntry.action == action,
            )
            .order_by(AuditEntry.seq)
        )
    )


def events(session, item_id: int, action: str) -> list[CustodyEvent]:
    return list(
        session.scalars(
            select(CustodyEvent)
            .where(CustodyEvent.item_id == item_id, CustodyEvent.action == action)
            .order_by(CustodyEvent.id)
        )
    )


def states(session, lot_number: str) -> list[State]:
    lot = get_lot(session, lot_number)
    return [bag.state for bag in sorted(lot.bags, key=lambda b: b.id)]


# -- making a lot -----------------------------------------------------------------------------


def test_make_lot_from_scans_collapses_a_double_scan(app, people):
    with app.app_context():
        session = lims_db.session()
        maker = actor(session, people["maker"])
        episode = new_episode(session, actor(session, people["tech"]))
        first = collection_in_manufacturing(session, people, episode)
        second = collection_in_manufacturing(session, people, episode)
        expiry = lims_db.utcnow() + timedelta(days=30)
        lot = services.make_lot(
            session,
            actor=maker,
            lot_number=" acad-7 ",
            apheresis_scans=[f"={first.code}00", "", f"={second.code}00", f"={first.code}00"],
            bag_count=3,
            volume_ml=45.5,
            cells_per_bag=250_000_000,
            expires_at=expiry,
        )
        assert lot.lot_number == "ACAD-7"
        assert [s.code for s in lot.sources] == sorted([first.code, second.code])
        assert len(lot.bags) == 3
        for bag in lot.bags:
            assert bag.state is State.MANUFACTURED and bag.cell_count == 250_000_000
            assert str(bag.quantity) == "45.500" and bag.expires_at == expiry
        assert session.get(Item, first.id).state is State.CONSUMED
        assert session.get(Item, second.id).state is State.CONSUMED


def test_make_lot_names_the_collection_that_is_not_in_manufacturing(app, people):
    with app.app_context():
        session = lims_db.session()
        maker = actor(session, people["maker"])
        episode = new_episode(session, actor(session, people["tech"]))
        ready = collection_in_manufacturing(session, people, episode)
        waiting = collection_in_manufacturing(session, people, episode, start=False)
        before = committed(app)
        with pytest.raises(Conflict, match="received for manufacturing, not in manufacturing"):
            services.make_lot(
                session,
                actor=maker,
                lot_number="ACAD-8",
                apheresis_scans=[f"={ready.code}00", f"={waiting.code}00"],
                bag_count=1,
                volume_ml=40,
            )
        # A typed DIN must carry its check character.
        with pytest.raises(
            ValidationError, match=f"{ready.code}: Type the DIN with its check character"
        ):
            services.make_lot(
                session,
                actor=maker,
                lot_number="ACAD-8",
                apheresis_scans=[ready.code],
                bag_count=1,
                volume_ml=40,
            )
        with pytest.raises(ValidationError, match="lot number is 1 to 40"):
            services.make_lot(
                session,
                actor=maker,
                lot_number="A/B",
                apheresis_scans=[f"={ready.code}00"],
                bag_count=1,
                volume_ml=40,
            )
        with pytest.raises(ValidationError, match="expiry is in the past"):
            services.make_lot(
                session,
                actor=maker,
                lot_number="ACAD-8",
                apheresis_scans=[ready.code + ready.check_character],
                bag_count=1,
                volume_ml=40,
                expires_at=lims_db.utcnow() - timedelta(minutes=1),
            )
        assert committed(app) == before


# -- quarantine -------------------------------------------------------------------------------


def test_quarantine_lot_moves_every_manufactured_bag_at_once(app, people):
    with app.app_context():
        session = lims_db.session()
        maker = actor(session, people["maker"])
        episode = new_episode(session, actor(session, people["tech"]))
        collection = collection_in_manufacturing(session, people, episode)
        lot = production.create_lot(
            session,
            actor=maker,
            lot_number="ACAD-1",
            apheresis_codes=[collection.code],
            bags=[production.BagSpec(volume_ml=40) for _ in range(3)],
        )
        with pytest.raises(Forbidden):
            services.quarantine_lot(
                session, actor=actor(session, people["researcher"]), lot_number="ACAD-1"
            )
        quarantined = services.quarantine_lot(session, actor=maker, lot_number="acad-1")
        assert len(quarantined) == 3
        assert states(session, "ACAD-1") == [State.QUARANTINE] * 3
        for bag in lot.bags:
            (event,) = events(session, bag.id, "quarantine")
            assert (event.from_state, event.to_state) == ("manufactured", "quarantine")
            assert event.user_id == maker.id and event.reason == "lot ACAD-1"
            (row,) = audit_rows(session, "item", bag.id, "quarantine")
            assert (row.field, row.old_value, row.new_value) == (
                "state",
                "manufactured",
                "quarantine",
            )
        with pytest.raises(Conflict, match="No bag of lot ACAD-1 is waiting for quarantine"):
            services.quarantine_lot(session, actor=maker, lot_number="ACAD-1")


# -- release ----------------------------------------------------------------------------------


def test_release_lot_releases_every_bag_with_both_signatures(app, people):
    with app.app_context():
        session = lims_db.session()
        qp = actor(session, people["qp"])
        lot = lot_in_quarantine(app, session, people, bags=3)
        released = services.release_lot(
            session,
            actor=qp,
            lot_number=lot.lot_number,
            password=PASSWORD,
            witness_username=people["maker"].username,
            witness_password=PASSWORD,
        )
        assert len(released) == 3
        assert states(session, lot.lot_number) == [State.RELEASED] * 3
        for bag in lot.bags:
            (event,) = events(session, bag.id, "release")
            assert (event.from_state, event.to_state, event.user_id) == (
                "quarantine",
                "released",
                qp.id,
            )
            signature = session.get(ESignature, event.signature_id)
            assert (signature.meaning, signature.user_id) == ("released", qp.id)
            assert (signature.entity, signature.entity_id) == ("item", str(bag.id))
            witness = session.get(ESignature, event.witness_signature_id)
            assert (witness.meaning, witness.user_id) == ("verified", people["maker"].id)
        (lot_row,) = audit_rows(session, "product_lot", lot.id, "release")
        assert lot_row.user_id == qp.id
        assert (
            lot_row.new_value == f"3 bags released with {people['maker'].username} as second person"
        )
        overview = lot_overview(session, actor=qp, lot_number=lot.lot_number)
        assert overview.status is LotStatus.RELEASED and len(overview.releases) == 3
        with pytest.raises(Conflict, match="nothing to release"):
            services.release_lot(
                session,
                actor=qp,
                lot_number=lot.lot_number,
                password=PASSWORD,
                witness_username=people["maker"].username,
                witness_password=PASSWORD,
            )


def test_release_is_all_or_nothing_when_one_bag_is_on_hold(app, people):
    with app.app_context():
        session = lims_db.session()
        qp = actor(session, people["qp"])
        lot = lot_in_quarantine(app, session, people, bags=3)
        held = sorted(lot.bags, key=lambda b: b.id)[1]
        holds.place_hold(
            session, actor=qp, item=held, reason="temperature_excursion", detail="logger 7 alarm"
        )
        name = f"Bag {eye_readable(held.code)} {held.check_character}"
        before = committed(app)
        with pytest.raises(Conflict) as refused:
            services.release_lot(
                session,
                actor=qp,
                lot_number=lot.lot_number,
                password=PASSWORD,
                witness_username=people["maker"].username,
                witness_password=PASSWORD,
            )
        message = refused.value.message
        assert message.startswith("Nothing was released.")
        assert f"{name}: The material is on hold (temperature excursion: logger 7 alarm)" in message
        assert committed(app) == before
        assert states(session, lot.lot_number) == [State.QUARANTINE] * 3


def test_a_bag_blocked_during_the_release_rolls_back_the_bags_before_it(app, people, monkeypatch):
    """The check under the lock (perform_action) also stops the whole lot, not just its bag."""
    with app.app_context():
        session = lims_db.session()
        qp = actor(session, people["qp"])
        lot = lot_in_quarantine(app, session, people, bags=3)
        last = sorted(lot.bags, key=lambda b: b.id)[2]
        holds.place_hold(session, actor=qp, item=last, reason="other", detail="bag leaked")
        # As if the hold came in between the read-only check and the release itself.
        monkeypatch.setattr(services, "release_blockers", lambda session, lot: [])
        before = committed(app)
        with pytest.raises(Conflict) as refused:
            services.release_lot(
                session,
                actor=qp,
                lot_number=lot.lot_number,
                password=PASSWORD,
                witness_username=people["maker"].username,
                witness_password=PASSWORD,
            )
        assert eye_readable(last.code) in refused.value.message
        assert "bag leaked" in refused.value.message
        assert committed(app) == before
        assert states(session, lot.lot_number) == [State.QUARANTINE] * 3


def test_the_manager_cannot_be_their_own_second_person(app, people):
    with app.app_context():
        session = lims_db.session()
        qp = actor(session, people["qp"])
        lot = lot_in_quarantine(app, session, people)
        before = committed(app)
        with pytest.raises(ValidationError, match="second person must be someone else"):
            services.release_lot(
                session,
                actor=qp,
                lot_number=lot.lot_number,
                password=PASSWORD,
                witness_username=people["qp"].username.upper(),
                witness_password=PASSWORD,
            )
        assert committed(app) == before
        assert states(session, lot.lot_number) == [State.QUARANTINE] * 2


def test_a_wrong_second_person_password_releases_nothing(app, people):
    with app.app_context():
        session = lims_db.session()
        qp = actor(session, people["qp"])
        lot = lot_in_quarantine(app, session, people)
        before = committed(app)
        with pytest.raises(ValidationError, match="Second person: Wrong username or password"):
            services.release_lot(
                session,
                actor=qp,
                lot_number=lot.lot_number,
                password=PASSWORD,
                witness_username=people["maker"].username,
                witness_password="not-the-password",
            )
        assert committed(app) == before
        session.expire_all()
        assert states(session, lot.lot_number) == [State.QUARANTINE] * 2
        # The failed attempt counts towards the second person's lockout, like a failed login.
        assert session.get(User, people["maker"].id).failed_logins == 1


def test_a_wrong_manager_password_releases_nothing(app, people):
    with app.app_context():
        session = lims_db.session()
        qp = actor(session, people["qp"])
        lot = lot_in_quarantine(app, session, people)
        before = committed(app)
        with pytest.raises(ValidationError, match="password for the signature is wrong"):
            services.release_lot(
                session,
                actor=qp,
                lot_number=lot.lot_number,
                password="wrong-password-123",
                witness_username=people["maker"].username,
                witness_password=PASSWORD,
            )
        assert committed(app) == before


def test_only_a_manager_releases_and_only_quarantined_lots_with_complete_qc(app, people):
    with app.app_context():
        session = lims_db.session()
        maker, qp = actor(session, people["maker"]), actor(session, people["qp"])
        lot = lot_in_quarantine(app, session, people, qc=False)
        with pytest.raises(Forbidden):
            services.release_lot(
                session,
                actor=maker,
                lot_number=lot.lot_number,
                password=PASSWORD,
                witness_username=people["qp"].username,
                witness_password=PASSWORD,
            )
        with pytest.raises(Conflict, match="QC is not complete: viability"):
            services.release_lot(
                session,
                actor=qp,
                lot_number=lot.lot_number,
                password=PASSWORD,
                witness_username=people["maker"].username,
                witness_password=PASSWORD,
            )
        assert states(session, lot.lot_number) == [State.QUARANTINE] * 2


# -- QC review --------------------------------------------------------------------------------


def test_review_qc_signs_and_writes_its_audit_row(app, people):
    with app.app_context():
        session = lims_db.session()
        qp = actor(session, people["qp"])
        lot = lot_in_quarantine(app, session, people)
        before = committed(app)
        with pytest.raises(ValidationError, match="password for the signature is wrong"):
            services.review_qc(
                session, actor=qp, lot_number=lot.lot_number, password="wrong-password-123"
            )
        with pytest.raises(Forbidden):
            services.review_qc(
                session,
                actor=actor(session, people["maker"]),
                lot_number=lot.lot_number,
                password=PASSWORD,
            )
        assert committed(app) == before
        signature = services.review_qc(
            session,
            actor=qp,
            lot_number=lot.lot_number,
            password=PASSWORD,
            comment="  all within specification ",
        )
        session.expire_all()
        stored = session.get(ESignature, signature.id)
        assert (stored.meaning, stored.entity, stored.entity_id) == (
            "reviewed",
            "product_lot",
            str(lot.id),
        )
        assert stored.user_id == qp.id and stored.printed_name == "Quinn Person"
        assert stored.comment == "all within specification" and len(stored.record_hash) == 64
        (sign_row,) = audit_rows(session, "product_lot", lot.id, "sign")
        assert sign_row.user_id == qp.id and f"signature {signature.id}" in sign_row.new_value
        (review_row,) = audit_rows(session, "product_lot", lot.id, "review_qc")
        assert review_row.user_id == qp.id and review_row.reason == "all within specification"
        required = app.config["LIMS"]["custody"]["required_qc"]
        assert review_row.new_value == (
            f"{len(required)} QC results reviewed, all passed (signature {signature.id})"
        )
        overview = lot_overview(session, actor=qp, lot_number=lot.lot_number)
        assert [s.id for s in overview.reviews] == [signature.id]


def test_review_qc_is_refused_while_required_tests_are_missing(app, people):
    with app.app_context():
        session = lims_db.session()
        qp = actor(session, people["qp"])
        lot = lot_in_quarantine(app, session, people, qc=False)
        production.add_qc_result(
            session,
            actor=actor(session, people["maker"]),
            lot_number=lot.lot_number,
            test="viability",
            value="92",
            unit="%",
            passed=True,
        )
        before = committed(app)
        with pytest.raises(Conflict, match="cannot be reviewed yet: sterility, ") as refused:
            services.review_qc(session, actor=qp, lot_number=lot.lot_number, password=PASSWORD)
        assert "viability" not in refused.value.message
        assert committed(app) == before


# -- what the pages show ----------------------------------------------------------------------


def test_overview_and_queue_follow_the_lot_through_qc(app, people):
    with app.app_context():
        session = lims_db.session()
        maker, qp = actor(session, people["maker"]), actor(session, people["qp"])
        ready = lot_in_quarantine(app, session, people, n=1)
        waiting_qc = lot_in_quarantine(app, session, people, n=2, qc=False)
        failed = lot_in_quarantine(app, session, people, n=3)
        production.add_qc_result(
            session,
            actor=maker,
            lot_number=failed.lot_number,
            test="viability",
            value="61",
            unit="%",
            specification=">= 70 %",
            passed=False,
        )
        spare = collection_in_manufacturing(
            session, people, new_episode(session, actor(session, people["tech"]), n=4)
        )
        queue = lots_at(session, actor=maker)
        numbers = {
            status: [row.lot.lot_number for row in rows] for status, rows in queue.lots.items()
        }
        assert numbers[LotStatus.READY] == [ready.lot_number]
        assert numbers[LotStatus.AWAITING_QC] == [waiting_qc.lot_number]
        assert numbers[LotStatus.ON_HOLD] == [failed.lot_number]
        assert [item.code for item in queue.waiting] == [spare.code]
        # RH makes nothing: its overview is empty.
        assert not any(lots_at(session, actor=actor(session, people["tech"])).lots.values())

        overview = lot_overview(session, actor=maker, lot_number=failed.lot_number)
        assert overview.status is LotStatus.ON_HOLD and overview.failed == ("viability",)
        assert [row.result.value for row in overview.out_of_spec] == ["61"]
        assert {hold.reason for _, hold in overview.holds} == {HoldReason.QC_OUT_OF_SPECIFICATION}
        assert len(overview.holds) == 2
        assert any("QC out of specification: viability" in b for b in overview.blockers)
        assert overview.qc[0].entered_by == "Mads Maker"

        waiting = lot_overview(session, actor=qp, lot_number=waiting_qc.lot_number)
        assert waiting.missing == tuple(app.config["LIMS"]["custody"]["required_qc"])
        for person in ("researcher", "admin"):
            with pytest.raises(Forbidden):
                lot_overview(
                    session, actor=actor(session, people[person]), lot_number=ready.lot_number
                )
            with pytest.raises(Forbidden):
                lots_at(session, actor=actor(session, people[person]))
