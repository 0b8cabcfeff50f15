"""The item history and signed corrections against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims import identifiers
from lims.audit.models import AuditEntry, ESignature
from lims.custody import holds, production
from lims.custody.domain import Action, State
from lims.custody.models import CustodyEvent, HoldReason, Item, ProductLot
from lims.custody.services import Move, perform_action
from lims.errors import Forbidden, NotFound, ValidationError
from lims.history.corrections import correct_item
from lims.history.services import item_history
from tests.conftest import PASSWORD
from tests.integration.people import actor, new_episode, second_person


def walk(session, who, code, *steps, **options):
    for step in steps:
        perform_action(session, actor=who, code=code, action=step, **options)


def quarantined_lot(app, session, people, episode) -> ProductLot:
    tech, maker = actor(session, people["tech"]), actor(session, people["maker"])
    collection = production.register_collection(
        session, actor=tech, coi=episode.coi, volume_ml=200, collected_at=lims_db.utcnow()
    )
    walk(session, tech, collection.code, Action.SHIP, move=Move(custodian="courier"))
    walk(session, maker, collection.code, Action.RECEIVE, Action.START_MANUFACTURING)
    lot = production.create_lot(
        session,
        actor=maker,
        lot_number=f"L-{episode.id}",
        apheresis_codes=[collection.code],
        bags=[production.BagSpec(volume_ml=40)],
    )
    walk(session, maker, lot.bags[0].code, Action.QUARANTINE)
    for test in app.config["LIMS"]["custody"]["required_qc"]:
        production.add_qc_result(
            session, actor=maker, lot_number=lot.lot_number, test=test, value="ok", passed=True
        )
    return lot


def issued_bag(app, session, people, episode) -> Item:
    """Released by the QP with the maker as second person, received at RH with the manager."""
    maker, qp = actor(session, people["maker"]), actor(session, people["qp"])
    bag = quarantined_lot(app, session, people, episode).bags[0]
    perform_action(
        session,
        actor=qp,
        code=bag.code,
        action=Action.RELEASE,
        password=PASSWORD,
        witness=second_person(session, people["maker"]),
    )
    walk(session, maker, bag.code, Action.SHIP, move=Move(custodian="courier"))
    tech = actor(session, people["tech"])
    walk(session, tech, bag.code, Action.RECEIVE, witness=second_person(session, people["manager"]))
    walk(session, tech, bag.code, Action.ISSUE)
    return bag


def stored_sample(session, tech, episode) -> Item:
    sample = production.register_sample(
        session,
        actor=tech,
        coi=episode.coi,
        material_type="pbmc",
        quantity=10,
        unit="mL",
        collected_at=datetime(2025, 1, 15, 9, 30, tzinfo=UTC),
        timepoint="D7",
        timepoint_day=7,
        cell_count=1000,
    )
    walk(session, tech, sample.code, Action.STORE, move=Move(location="-80 freezer 1"))
    return sample


def committed(app) -> dict:
    """What is committed, read on a connection of its own (not the test's session)."""
    with app.extensions["lims_engine"].connect() as connection:
        counted = {
            model.__tablename__: connection.scalar(select(func.count()).select_from(model))
            for model in (CustodyEvent, ESignature, AuditEntry)
        }
        counted["items"] = sorted(
            connection.execute(
                select(Item.id, Item.quantity, Item.cell_count, Item.collected_at, Item.version)
            ).all()
        )
        return counted


def correction_rows(session, item) -> list[AuditEntry]:
    return list(
        session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.entity == "item",
                AuditEntry.entity_id == str(item.id),
                AuditEntry.action == "correct",
            )
            .order_by(AuditEntry.seq)
        )
    )


# -- the history ------------------------------------------------------------------------------


def test_history_of_an_aliquot_goes_up_to_the_episode(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        bag = issued_bag(app, session, people, episode)
        retention = production.aliquot(
            session,
            actor=tech,
            parent_code=bag.code,
            count=2,
            quantity_each=1,
            unit="mL",
            material_type="product_retention",
        )
        history = item_history(session, actor=tech, code=retention[0].code)

        assert history.item.id == retention[0].id
        assert [a.code for a in history.ancestors] == [bag.code]
        assert history.lot.lot_number == f"L-{episode.id}"
        assert [c.kind.value for c in history.collections] == ["apheresis"]
        assert history.episode.coi == episode.coi
        assert history.coi.replace(" ", "") == episode.coi
        assert history.episode.patient.pseudonym
        assert history.identifier + history.check == retention[0].code
        assert [q.test for q in history.qc_results] == app.config["LIMS"]["custody"]["required_qc"]
        assert [line.action for line in history.events] == ["register"]

        bag_history = item_history(session, actor=tech, code=bag.code)
        assert [child.code for child in bag_history.children] == [r.code for r in retention]
        collection_history = item_history(session, actor=tech, code=history.collections[0].code)
        assert [lot.lot_number for lot in collection_history.made_into] == [f"L-{episode.id}"]


def test_history_lists_every_event_oldest_first_with_its_signatures(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        bag = issued_bag(app, session, people, new_episode(session, tech))
        history = item_history(session, actor=tech, code=bag.code)

        actions = [line.action for line in history.events]
        assert actions == ["register", "quarantine", "release", "ship", "receive", "issue"]
        assert [line.at for line in history.events] == sorted(line.at for line in history.events)
        release = history.events[2]
        assert (release.from_state, release.to_state) == ("quarantine", "released")
        assert release.who == "Quinn Person"
        assert (release.signature.printed_name, release.signature.meaning) == (
            "Quinn Person",
            "released",
        )
        assert (release.witness_signature.printed_name, release.witness_signature.meaning) == (
            "Mads Maker",
            "verified",
        )
        ship = history.events[3]
        assert [(m.label, m.before, m.after) for m in ship.moves] == [
            ("Custodian", "Mads Maker", "courier")
        ]
        receive = history.events[4]
        assert ("Site", "AUH", "RH") in [(m.label, m.before, m.after) for m in receive.moves]
        assert receive.witness_signature.printed_name == "Mona Manager"
        assert receive.signature is None

        signatures = [
            (s.signature.printed_name, s.action, s.second_person) for s in history.signatures
        ]
        assert signatures == [
            ("Quinn Person", "release", False),
            ("Mads Maker", "release", True),
            ("Mona Manager", "receive", True),
        ]
        # Moving the bag changed state, site and custodian: events, not corrections.
        assert history.changes == []


def test_history_shows_holds_open_and_cleared(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, manager = actor(session, people["tech"]), actor(session, people["manager"])
        sample = stored_sample(session, tech, new_episode(session, tech))
        first = holds.place_hold(
            session, actor=tech, item=sample, reason=HoldReason.OTHER, detail="label smudged"
        )
        holds.clear_hold(session, actor=manager, hold_id=first.id, reason="label reprinted")
        holds.place_hold(
            session,
            actor=tech,
            item=sample,
            reason=HoldReason.TEMPERATURE_EXCURSION,
            detail="freezer alarm",
        )
        lines = item_history(session, actor=tech, code=sample.code).holds

        assert [(h.hold.detail, h.placed_by, h.cleared_by) for h in lines] == [
            ("label smudged", "Tina Tech", "Mona Manager"),
            ("freezer alarm", "Tina Tech", None),
        ]


def test_history_is_refused_to_researchers_and_unknown_codes(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        sample = stored_sample(session, tech, new_episode(session, tech))
        with pytest.raises(Forbidden):
            item_history(session, actor=actor(session, people["researcher"]), code=sample.code)
        unknown = identifiers.format_local_id("RH", 9_999_999)
        with pytest.raises(NotFound, match=f"No bag or tube with identifier {unknown}"):
            item_history(session, actor=tech, code=unknown)


def test_history_accepts_a_scanned_din_with_flags(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        collection = production.register_collection(
            session, actor=tech, coi=episode.coi, volume_ml=200, collected_at=lims_db.utcnow()
        )
        history = item_history(session, actor=tech, code=f"={collection.code}00")
        assert history.item.id == collection.id


# -- corrections ------------------------------------------------------------------------------


def test_a_correction_is_signed_audited_and_shown_as_changed(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        sample = stored_sample(session, tech, new_episode(session, tech))
        version = sample.version

        event = correct_item(
            session,
            actor=tech,
            code=sample.code,
            field="quantity",
            value="9.5",
            reason="volume re-measured on the balance",
            password=PASSWORD,
        )
        session.expire_all()

        item = session.get(Item, sample.id)
        assert item.quantity == Decimal("9.5")
        assert item.state is State.STORED and item.version == version + 1
        (row,) = correction_rows(session, item)
        assert (row.field, Decimal(row.old_value), Decimal(row.new_value)) == (
            "quantity",
            Decimal("10"),
            Decimal("9.5"),
        )
        assert (row.user_id, row.reason) == (tech.id, "volume re-measured on the balance")
        event = session.get(CustodyEvent, event.id)
        assert (event.action, event.from_state, event.to_state) == ("correct", "stored", "stored")
        assert "10 → 9.5" in event.reason and "balance" in event.reason
        signature = session.get(ESignature, event.signature_id)
        assert (signature.meaning, signature.printed_name, signature.user_id) == (
            "corrected",
            "Tina Tech",
            tech.id,
        )
        assert signature.entity_id == str(item.id)

        history = item_history(session, actor=tech, code=sample.code)
        (change,) = history.changes
        assert (change.field, change.old, change.new, change.who, change.reason) == (
            "quantity",
            "10",
            "9.5",
            "Tina Tech",
            "volume re-measured on the balance",
        )
        assert history.changed_fields == {"quantity"}
        flagged = {label for label, _, changed in history.facts() if changed}
        assert flagged == {"Quantity"}
        assert history.events[-1].action == "correct"
        assert history.events[-1].signature.meaning == "corrected"


def test_a_collection_time_is_read_as_local_time(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        sample = stored_sample(session, tech, new_episode(session, tech))
        for typed, utc in (
            ("2025-01-15 10:05", datetime(2025, 1, 15, 9, 5, tzinfo=UTC)),  # CET, UTC+1
            ("2024-07-01T10:05", datetime(2024, 7, 1, 8, 5, tzinfo=UTC)),  # CEST, UTC+2
        ):
            correct_item(
                session,
                actor=tech,
                code=sample.code,
                field="collected_at",
                value=typed,
                reason="time copied from the draw form",
                password=PASSWORD,
            )
            session.expire_all()
            assert session.get(Item, sample.id).collected_at == utc
        changes = item_history(session, actor=tech, code=sample.code).changes
        assert [(c.old, c.new) for c in changes] == [
            ("2025-01-15 10:30", "2025-01-15 10:05"),
            ("2025-01-15 10:05", "2024-07-01 10:05"),
        ]
        with pytest.raises(ValidationError, match="does not exist in local time"):
            correct_item(
                session,
                actor=tech,
                code=sample.code,
                field="collected_at",
                value="2025-03-30 02:30",
                reason="time copied from the draw form",
                password=PASSWORD,
            )


def test_a_wrong_password_changes_nothing(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        sample = stored_sample(session, tech, new_episode(session, tech))
        before = committed(app)
        with pytest.raises(ValidationError, match="password") as refused:
            correct_item(
                session,
                actor=tech,
                code=sample.code,
                field="quantity",
                value="9",
                reason="re-measured",
                password="not-my-password",
            )
        assert refused.value.field == "password"
        session.rollback()
        assert committed(app) == before


@pytest.mark.parametrize(
    ("field", "value", "reason", "message"),
    [
        ("quantity", "9", "   ", "Give the reason"),
        ("quantity", "9", None, "Give the reason"),
        ("code", "RH00000019", "typo", "never corrected"),
        ("kind", "product_bag", "typo", "never corrected"),
        ("state", "discarded", "typo", "A correction changes one of"),
        ("quantity", "10.000", "same", "already"),
        ("quantity", "-1", "typo", "positive number"),
        ("quantity", "abc", "typo", "must be a number"),
        ("quantity", "1.23456", "typo", "at most 3 decimals"),
        ("quantity", "", "typo", "Give the new quantity"),
        ("cell_count", "-5", "typo", "whole number"),
        ("cell_count", "1.5", "typo", "whole number"),
        ("timepoint_day", "seven", "typo", "whole number"),
        ("timepoint", "D7 " * 10, "typo", "at most 16 characters"),
        ("collected_at", "2025-13-01 10:00", "typo", "YYYY-MM-DD HH:MM"),
        ("collected_at", "2199-01-01 10:00", "typo", "in the future"),
        ("expires_at", "2020-01-01 10:00", "typo", "before the collection time"),
    ],
)
def test_bad_corrections_are_refused_and_change_nothing(app, people, field, value, reason, message):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        sample = stored_sample(session, tech, new_episode(session, tech))
        before = committed(app)
        with pytest.raises(ValidationError, match=message):
            correct_item(
                session,
                actor=tech,
                code=sample.code,
                field=field,
                value=value,
                reason=reason,
                password=PASSWORD,
            )
        session.rollback()
        assert committed(app) == before


def test_corrections_are_for_the_bench_and_allowed_in_any_state(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        sample = stored_sample(session, tech, new_episode(session, tech))
        with pytest.raises(Forbidden):
            correct_item(
                session,
                actor=actor(session, people["researcher"]),
                code=sample.code,
                field="quantity",
                value="9",
                reason="re-measured",
                password=PASSWORD,
            )
        session.rollback()
        walk(session, tech, sample.code, Action.DISCARD, reason="tube cracked")
        manager = actor(session, people["manager"])
        correct_item(
            session,
            actor=manager,
            code=sample.code,
            field="cell_count",
            value="2.5e6",
            reason="count from the analyser printout",
            password=PASSWORD,
        )
        session.expire_all()
        item = session.get(Item, sample.id)
        assert (item.state, item.cell_count) == (State.DISCARDED, 2_500_000)
        (row,) = correction_rows(session, item)
        assert (row.old_value, row.new_value, row.user_id) == ("1000", "2500000", manager.id)
        (change,) = item_history(session, actor=manager, code=sample.code).changes
        assert (change.old, change.new, change.who) == ("1,000", "2,500,000", "Mona Manager")


def test_a_bag_has_no_timepoint_to_correct(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        bag = issued_bag(app, session, people, new_episode(session, tech))
        with pytest.raises(ValidationError, match="Product bag material has no timepoint"):
            correct_item(
                session,
                actor=tech,
                code=bag.code,
                field="timepoint",
                value="D0",
                reason="typo",
                password=PASSWORD,
            )
