"""Two people acting on the same material, or asking for identifiers, at the same moment."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims import identifiers
from lims.audit import services as audit
from lims.audit.models import AuditEntry
from lims.custody import holds, production, services
from lims.custody.domain import Action, State
from lims.custody.models import CustodyEvent, Hold, Item
from lims.custody.services import Move, perform_action
from lims.errors import Conflict, InvalidTransition
from tests.integration.people import actor, new_episode

ROUNDS = 5


@pytest.fixture
def postgresql_only(backend):
    if backend != "postgresql":
        pytest.skip(
            "SQLite has no row locks and serialises writers on one file: two threads racing "
            "for one row is a PostgreSQL question (set LIMS_TEST_DATABASE_URL)"
        )


def new_sample(session, tech, episode, quantity=10) -> Item:
    return production.register_sample(
        session,
        actor=tech,
        coi=episode.coi,
        material_type="whole_blood",
        quantity=quantity,
        unit="mL",
        collected_at=lims_db.utcnow(),
    )


def at_once(app, *jobs: tuple[Any, Callable[..., Any]]) -> list[Any]:
    """Run each (person, job) in its own thread, app context and session, released together.

    Returns what each job returned, or the exception it raised.
    """
    barrier = threading.Barrier(len(jobs))
    outcomes: list[Any] = [None] * len(jobs)

    def work(index: int, person, job) -> None:
        try:
            with app.app_context():
                session = lims_db.session()
                who = actor(session, person)
                session.commit()  # no transaction left open while waiting
                barrier.wait(timeout=20)
                outcomes[index] = job(session, who)
        except BaseException as exc:  # handed to the test, not lost in the thread
            outcomes[index] = exc

    threads = [
        threading.Thread(target=work, args=(i, person, job)) for i, (person, job) in enumerate(jobs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hangs (deadlock?)"
    return outcomes


@dataclass(frozen=True)
class Done:
    """What a successful step left, as plain values (its session is gone with its thread)."""

    event_id: int
    to_location: str | None


def exactly_one_wins(outcomes: list[Any]) -> None:
    winners = [o for o in outcomes if isinstance(o, Done)]
    losers = [o for o in outcomes if not isinstance(o, Done)]
    assert len(winners) == 1, outcomes
    for loser in losers:
        assert isinstance(loser, Conflict), repr(loser)  # InvalidTransition is a Conflict
        assert loser.status_code == 409


def step(code: str, action: Action, **options) -> Callable:
    def job(session, who):
        event = perform_action(session, actor=who, code=code, action=action, **options)
        return Done(event.id, event.to_location)

    return job


def count_events(session, item_id: int, action: str) -> int:
    return session.scalar(
        select(func.count())
        .select_from(CustodyEvent)
        .where(CustodyEvent.item_id == item_id, CustodyEvent.action == action)
    )


# -- the same transition twice at once --------------------------------------------------------


def test_two_people_storing_one_tube_at_once(app, people, postgresql_only):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        samples = [
            (s.id, s.code) for s in (new_sample(session, tech, episode) for _ in range(ROUNDS))
        ]
    for item_id, code in samples:
        outcomes = at_once(
            app,
            (people["tech"], step(code, Action.STORE, move=Move(location="rack 1"))),
            (people["tech2"], step(code, Action.STORE, move=Move(location="rack 2"))),
        )
        exactly_one_wins(outcomes)
        with app.app_context():
            session = lims_db.session()
            assert count_events(session, item_id, "store") == 1
            item = session.get(Item, item_id)
            assert item.state is State.STORED and item.version == 2
            winner = next(o for o in outcomes if isinstance(o, Done))
            assert item.location == winner.to_location
    with app.app_context():
        assert audit.verify_chain(lims_db.session()).intact


def test_two_people_shipping_one_collection_at_once(app, people, postgresql_only):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        collections = [
            production.register_collection(
                session, actor=tech, coi=episode.coi, volume_ml=100, collected_at=lims_db.utcnow()
            )
            for _ in range(ROUNDS)
        ]
        targets = [(c.id, c.code) for c in collections]
    for item_id, code in targets:
        outcomes = at_once(
            app,
            (people["tech"], step(code, Action.SHIP, move=Move(custodian="World Courier"))),
            (people["tech2"], step(code, Action.SHIP, move=Move(custodian="Cryoport"))),
        )
        exactly_one_wins(outcomes)
        with app.app_context():
            session = lims_db.session()
            assert count_events(session, item_id, "ship") == 1
            assert session.get(Item, item_id).state is State.IN_TRANSIT
    with app.app_context():
        assert audit.verify_chain(lims_db.session()).intact


def test_reserve_and_check_out_of_one_tube_at_once(app, people, postgresql_only):
    """Two different steps that exclude each other: one wins, the other sees the new state."""
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        targets = []
        for _ in range(ROUNDS):
            sample = new_sample(session, tech, episode)
            perform_action(session, actor=tech, code=sample.code, action=Action.STORE)
            targets.append((sample.id, sample.code))
    for item_id, code in targets:
        outcomes = at_once(
            app,
            (people["manager"], step(code, Action.RESERVE, internal=True)),
            (people["tech"], step(code, Action.CHECK_OUT)),
        )
        exactly_one_wins(outcomes)
        with app.app_context():
            session = lims_db.session()
            item = session.get(Item, item_id)
            assert item.state in {State.RESERVED, State.CHECKED_OUT}
            assert (
                count_events(session, item_id, "reserve")
                + count_events(session, item_id, "check_out")
                == 1
            )
    with app.app_context():
        assert audit.verify_chain(lims_db.session()).intact


def test_a_stale_copy_in_the_session_does_not_win(app, people):
    """A request that loaded the tube before someone else moved it must not move it again."""
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        sample = new_sample(session, tech, new_episode(session, tech))
        # This request has the tube in its session (as a page that shows it first would) ...
        assert sample.state is State.REGISTERED
        code = sample.code
        with app.app_context():  # another request, with its own session
            other = lims_db.session()
            perform_action(other, actor=actor(other, people["tech2"]), code=code, action="store")
        # ... and sees the state as it is now, not as it was when it read it.
        with pytest.raises(InvalidTransition, match="Cannot store material that is stored"):
            perform_action(session, actor=tech, code=code, action=Action.STORE)
        session.rollback()
        assert count_events(session, sample.id, "store") == 1
        assert audit.verify_chain(session).intact


def test_a_hold_cleared_meanwhile_is_not_cleared_twice(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, manager = actor(session, people["tech"]), actor(session, people["manager"])
        sample = new_sample(session, tech, new_episode(session, tech))
        hold = holds.place_hold(session, actor=tech, item=sample, reason="other", detail="check")
        assert hold.cleared_at is None  # this request has the open hold in its session
        with app.app_context():
            other = lims_db.session()
            holds.clear_hold(
                other, actor=actor(other, people["manager"]), hold_id=hold.id, reason="first"
            )
        with pytest.raises(Conflict, match="cleared already"):
            holds.clear_hold(session, actor=manager, hold_id=hold.id, reason="second")
        session.rollback()
        assert session.get(Hold, hold.id).clear_reason == "first"
        clears = session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "clear_hold", AuditEntry.field == "clear_reason")
        )
        assert clears == 1


def test_a_change_between_reading_and_writing_is_a_conflict(app, people, backend, monkeypatch):
    """Without row locks (SQLite) the version column must still turn a lost race into a 409."""
    if backend == "postgresql":
        pytest.skip("PostgreSQL locks the row when it is read: the other writer would wait")
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        code = new_sample(session, tech, new_episode(session, tech)).code
        item_id = session.scalar(select(Item.id).where(Item.code == code))
        session.commit()
        real = services.gather_facts
        raced = []

        def someone_else_first(session_, item):
            if not raced:  # only the first read is overtaken
                raced.append(item.code)
                with app.app_context():
                    other = lims_db.session()
                    perform_action(
                        other, actor=actor(other, people["tech2"]), code=code, action="store"
                    )
            return real(session_, item)

        monkeypatch.setattr(services, "gather_facts", someone_else_first)
        with pytest.raises(Conflict) as refusal:
            perform_action(session, actor=tech, code=code, action=Action.STORE)
        assert refusal.value.status_code == 409
        session.rollback()
        assert count_events(session, item_id, "store") == 1
        assert audit.verify_chain(session).intact


# -- identifiers handed out at once -------------------------------------------------------------


def registering(session, who, coi: str, times: int) -> list[str]:
    return [new_sample_code(session, who, coi) for _ in range(times)]


def new_sample_code(session, who, coi: str) -> str:
    return production.register_sample(
        session,
        actor=who,
        coi=coi,
        material_type="plasma",
        quantity=1,
        unit="mL",
        collected_at=lims_db.utcnow(),
    ).code


def aliquoting(parent_code: str, count: int) -> Callable:
    def job(session, who):
        children = production.aliquot(
            session,
            actor=who,
            parent_code=parent_code,
            count=count,
            quantity_each="0.1",
            unit="mL",
            material_type="plasma",
        )
        return [c.code for c in children]

    return job


def assert_distinct_local_ids(codes: list[str]) -> None:
    duplicates = [code for code, n in Counter(codes).items() if n > 1]
    assert duplicates == []
    for code in codes:
        assert identifiers.parse_local_id(code, width=7).text == code


def test_local_ids_registered_at_once_are_distinct(app, people, postgresql_only):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        coi = episode.coi
        first, second = (
            new_sample(session, tech, episode, 50),
            new_sample(session, tech, episode, 50),
        )
        parents = (first.code, second.code)
    outcomes = at_once(
        app,
        (people["tech"], lambda s, who: registering(s, who, coi, 12)),
        (people["tech2"], lambda s, who: registering(s, who, coi, 12)),
        (people["manager"], aliquoting(parents[0], 15)),
        (people["tech"], aliquoting(parents[1], 15)),
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures == []
    codes = [code for batch in outcomes for code in batch]
    assert len(codes) == 12 + 12 + 15 + 15
    assert_distinct_local_ids(codes + list(parents))
    with app.app_context():
        session = lims_db.session()
        stored = session.scalars(select(Item.code)).all()
        assert set(codes) <= set(stored) and len(stored) == len(set(stored))
        sequences = sorted(identifiers.parse_local_id(c).sequence for c in stored)
        assert sequences == list(range(1, len(stored) + 1))  # no number lost or repeated
        assert audit.verify_chain(session).intact


def test_dins_assigned_at_once_are_distinct(app, people, postgresql_only):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        coi = episode.coi
        sources = []
        for _ in range(3):
            source = production.register_collection(
                session, actor=tech, coi=coi, volume_ml=50, collected_at=lims_db.utcnow()
            )
            for action in (Action.SHIP, Action.RECEIVE, Action.START_MANUFACTURING):
                perform_action(
                    session,
                    actor=tech,
                    code=source.code,
                    action=action,
                    move=Move(custodian="courier"),
                )
            sources.append(source.code)

    def collecting(session, who):
        return [
            production.register_collection(
                session, actor=who, coi=coi, volume_ml=50, collected_at=lims_db.utcnow()
            ).code
            for _ in range(10)
        ]

    def manufacturing(session, who):
        codes = []
        for n, source in enumerate(sources):
            lot = production.create_lot(
                session,
                actor=who,
                lot_number=f"RACE-{n}",
                apheresis_codes=[source],
                bags=[production.BagSpec(volume_ml=10) for _ in range(4)],
            )
            codes += [bag.code for bag in lot.bags]
        return codes

    outcomes = at_once(
        app,
        (people["tech"], collecting),
        (people["tech2"], collecting),
        (people["manager"], manufacturing),
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures == []
    codes = outcomes[0] + outcomes[1] + outcomes[2]
    assert len(codes) == 10 + 10 + 12 and len(set(codes)) == len(codes)
    for code in codes:
        assert identifiers.parse_din("=" + code + "00", scanned=True).din == code
    with app.app_context():
        session = lims_db.session()
        stored = session.scalars(select(Item.code).where(Item.kind != "aliquot")).all()
        sequences = sorted(int(code[-6:]) for code in stored)
        assert sequences == list(range(1, len(stored) + 1))  # no number lost or repeated
        assert audit.verify_chain(session).intact
