"""The load harness (benchmarks/load.py) in small: the app under gunicorn on the test database,
five simulated users (four technicians, one researcher) for five seconds. No timing is
asserted; what is: not one error or conflict, every operation answered, every tube back where
it was, one custody event per step answered and the audit chain intact afterwards.
"""

from __future__ import annotations

from sqlalchemy import func, select

from benchmarks import load
from lims import db as lims_db
from lims.audit.services import verify_chain
from lims.auth.models import ApiToken, User
from lims.custody import production
from lims.custody.models import CustodyEvent
from lims.storage import services as storage
from tests.integration.people import new_episode

BOXES, TUBES_EACH = 5, 3
WRITES = ("check out", "return to storage", "move", "move back")


def stock(app, make_site, make_user) -> None:
    """A technician and a researcher at RH, five 9x9 boxes of three stored plasma tubes."""
    make_site("RH", isbt_fin="W1234")
    tech = make_user("technician", site_code="RH", full_name="Tina Tech")
    make_user("researcher", site_code="RH")
    with app.app_context():
        session = lims_db.session()
        actor = session.get(User, tech.id)
        storage.create_unit(
            session, actor=actor, code="RH-F80", name="Freezer", unit_type="freezer",
            temperature_class="minus_80",
        )  # fmt: skip
        sample = production.register_sample(
            session, actor=actor, coi=new_episode(session, actor).coi, material_type="plasma",
            quantity=20, unit="mL", collected_at=lims_db.utcnow(),
        )  # fmt: skip
        tubes = production.aliquot(
            session, actor=actor, parent_code=sample.code, count=BOXES * TUBES_EACH,
            quantity_each=1, unit="mL", material_type="plasma",
        )  # fmt: skip
        for n in range(BOXES):
            code = f"BOX-{n + 1}"
            storage.create_box(session, actor=actor, code=code, unit_code="RH-F80", box_type="9x9")
            for tube in tubes[n * TUBES_EACH : (n + 1) * TUBES_EACH]:
                storage.place_item(session, actor=actor, item_scan=tube.code, box_scan=code)


def event_count(app) -> int:
    with app.app_context():
        return lims_db.session().scalar(select(func.count()).select_from(CustodyEvent))


def test_five_users_for_five_seconds_without_an_error(app, make_site, make_user, tmp_path):
    stock(app, make_site, make_user)
    cast = load.prepare(app, users=5, seed=3)
    assert (len(cast.technicians), len(cast.researchers)) == (4, 1)
    # Every box goes to exactly one technician, with the tubes in it.
    owned = [box.code for person in cast.technicians for box in person.boxes]
    assert sorted(owned) == [f"BOX-{n}" for n in range(1, BOXES + 1)]
    assert len(cast.tubes) == TUBES_EACH * len(owned)
    events_before = event_count(app)

    log = tmp_path / "gunicorn.log"
    measurement = load.measure(app, cast, workers=2, threads=4, seconds=5, seed=3, log=log)
    load.revoke_tokens(app, cast)

    tally = measurement.run.tally
    failures = "\n".join(tally.samples) + "\n" + log.read_text()[-2000:]
    assert measurement.errors == 0, failures
    assert measurement.conflicts == 0, failures
    assert measurement.changed == [] and measurement.run.not_put_back == []
    counts = {operation: len(tally.millis.get(operation, [])) for operation in load.OPERATIONS}
    assert all(counts.values()), counts
    assert counts["check out"] == counts["return to storage"]
    assert counts["move"] == counts["move back"]
    # One custody event per step answered, none for a refused or a read-only call.
    assert event_count(app) - events_before == sum(counts[op] for op in WRITES)
    with app.app_context():
        session = lims_db.session()
        assert verify_chain(session).intact
        tokens = session.scalars(select(ApiToken).where(ApiToken.name == "load test")).all()
        assert len(tokens) == 5 and all(token.revoked_at is not None for token in tokens)
    # The table has a row per operation and the total, with the errors column at zero.
    rows = measurement.rows()
    assert [row[0] for row in rows] == [*load.OPERATIONS, "all"]
    assert all(row[-1] == 0 and row[-2] == 0 for row in rows)
