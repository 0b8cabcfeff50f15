"""The follow-up work list and schedule against the database (SQLite, and PostgreSQL if set)."""

import json
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.audit.models import AuditEntry
from lims.custody.domain import Action, State
from lims.custody.models import Item
from lims.custody.production import register_sample
from lims.custody.services import perform_action
from lims.errors import ConfigurationError, Conflict, Forbidden, NotFound, ValidationError
from lims.followup import services
from lims.followup.domain import TimepointStatus
from lims.patients import services as patients
from tests.integration.people import actor, cpr, new_episode

#: Infused on 1 March (local day 0): on 9 March D7 (window 6-9 March, due the 8th) is overdue.
INFUSED_AT = datetime(2025, 3, 1, 10, 30, tzinfo=UTC)
TODAY = date(2025, 3, 9)


def infused(session, episode, at=INFUSED_AT):
    """Arrange an infused episode (the infusion itself is the custody flow's business)."""
    episode.infused_at = at
    session.commit()
    return episode


def draw(session, tech, episode, timepoint, material, *, day=7, at=None):
    return register_sample(
        session,
        actor=tech,
        coi=episode.coi,
        material_type=material,
        quantity=2,
        unit="mL",
        collected_at=at or datetime(2025, 3, 8, 9, 0, tzinfo=UTC),
        timepoint=timepoint,
        timepoint_day=day,
    )


def rows_for(work, coi):
    return {
        status: [row for row in getattr(work, status) if row.coi == coi]
        for status in ("overdue", "due", "missed")
    }


def test_an_overdue_episode_is_listed_with_its_missing_types(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = infused(session, new_episode(session, tech))
        draw(session, tech, episode, "D7", "pbmc")
        work = services.worklist(session, actor=tech, today=TODAY)
        assert work.site.code == "RH"
        listed = rows_for(work, episode.coi)
        (d7,) = listed["overdue"]
        assert (d7.timepoint, d7.due, d7.days_overdue, d7.missing) == (
            "D7",
            date(2025, 3, 8),
            1,
            ("plasma",),
        )
        assert (d7.pseudonym, d7.coi_check, d7.product_name) == (
            episode.patient.pseudonym,
            episode.coi_check,
            "Yescarta",
        )
        assert listed["due"] == []
        # Baseline and D0 were never drawn and their windows closed; D14 is not listed yet.
        assert [row.timepoint for row in listed["missed"]] == ["D0", "baseline"]
        assert [row.timepoint for row in work.rows] == ["D7", "D0", "baseline"]


def test_a_collected_timepoint_is_not_listed_even_if_a_tube_was_discarded(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = infused(session, new_episode(session, tech))
        draw(session, tech, episode, "d7", "pbmc")  # the label is matched ignoring case
        plasma = draw(session, tech, episode, "D7", "plasma")
        perform_action(
            session, actor=tech, code=plasma.code, action=Action.DISCARD, reason="tube cracked"
        )
        assert session.get(Item, plasma.id).state is State.DISCARDED
        work = services.worklist(session, actor=tech, today=TODAY)
        assert all(row.timepoint != "D7" for row in work.rows)
        schedule = services.episode_schedule(session, actor=tech, coi=episode.coi, today=TODAY)
        d7 = next(t for t in schedule.timepoints if t.label == "D7")
        assert d7.status is TimepointStatus.COLLECTED
        assert d7.collected == ("pbmc", "plasma")


def test_baseline_is_due_before_infusion_and_the_rest_waits(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        work = services.worklist(session, actor=tech, today=TODAY)
        (baseline,) = rows_for(work, episode.coi)["due"]
        assert (baseline.timepoint, baseline.due, baseline.missing) == (
            "baseline",
            None,
            ("pbmc", "plasma", "serum"),
        )
        assert rows_for(work, episode.coi)["overdue"] == rows_for(work, episode.coi)["missed"] == []
        schedule = services.episode_schedule(session, actor=tech, coi=episode.coi, today=TODAY)
        assert schedule.infused_on is None
        assert schedule.count(TimepointStatus.AWAITING_INFUSION) == len(schedule.timepoints) - 1


def test_other_sites_episodes_are_not_listed(app, people):
    with app.app_context():
        session = lims_db.session()
        tech, elsewhere = actor(session, people["tech"]), actor(session, people["elsewhere"])
        manager = actor(session, people["manager"])
        patient, _ = patients.register_patient(
            session, actor=elsewhere, identifier=cpr(7), name="Patient 7", treating_site_code="OUH"
        )
        theirs = patients.register_episode(
            session,
            actor=elsewhere,
            pseudonym=patient.pseudonym,
            product_name="Kymriah",
            product_kind="commercial",
        )
        infused(session, theirs)
        ours = infused(session, new_episode(session, tech))
        listed = services.worklist(session, actor=tech, today=TODAY)
        assert {row.coi for row in listed.rows} == {ours.coi}
        at_ouh = services.worklist(session, actor=elsewhere, today=TODAY)
        assert {row.coi for row in at_ouh.rows} == {theirs.coi}
        # A manager may look at another site's list; a technician may not.
        chosen = services.worklist(session, actor=manager, today=TODAY, site_code="ouh")
        assert chosen.site.code == "OUH"
        assert {row.coi for row in chosen.rows} == {theirs.coi}
        with pytest.raises(Forbidden):
            services.worklist(session, actor=tech, today=TODAY, site_code="OUH")
        assert services.worklist(session, actor=tech, today=TODAY, site_code="RH").rows


def test_a_patient_who_withdrew_consent_is_left_out(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        withdrawn = infused(session, new_episode(session, tech, n=1))
        staying = infused(session, new_episode(session, tech, n=2))
        patients.record_consent(
            session,
            actor=tech,
            pseudonym=withdrawn.patient.pseudonym,
            biobank=False,
            genetic=False,
            withdrawn=True,
            reason="patient asked",
        )
        work = services.worklist(session, actor=tech, today=TODAY)
        assert {row.coi for row in work.rows} == {staying.coi}
        schedule = services.episode_schedule(session, actor=tech, coi=withdrawn.coi, today=TODAY)
        assert schedule.sampling_stopped
        with pytest.raises(Conflict, match="sampling has stopped"):
            services.register_timepoint_sample(
                session,
                actor=tech,
                coi=withdrawn.coi,
                timepoint="D7",
                material_type="pbmc",
                quantity=2,
                unit="mL",
                collected_at=datetime(2025, 3, 9, 8, 0, tzinfo=UTC),
                today=TODAY,
            )


def test_registering_a_timepoints_sample_records_label_day_and_audit_row(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = infused(session, new_episode(session, tech))
        sample = services.register_timepoint_sample(
            session,
            actor=tech,
            coi=episode.coi,
            timepoint="d7",
            material_type="PBMC",
            quantity="1.5",
            unit="mL",
            collected_at=datetime(2025, 3, 8, 23, 30, tzinfo=UTC),  # 9 March, 00:30 local
            cell_count=5_000_000,
            today=TODAY,
        )
        assert (sample.timepoint, sample.timepoint_day) == ("D7", 8)
        assert (sample.material_type.value, sample.cell_count) == ("pbmc", 5_000_000)
        (row,) = session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity == "item",
                AuditEntry.entity_id == str(sample.id),
                AuditEntry.action == "create",
            )
        )
        assert row.user_id == tech.id
        assert json.loads(row.new_value)["timepoint"] == "D7"
        (d7,) = [
            r
            for r in services.worklist(session, actor=tech, today=TODAY).rows
            if r.timepoint == "D7"
        ]
        assert d7.missing == ("plasma",)


def test_before_infusion_a_baseline_sample_gets_the_schedules_day(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech)
        sample = services.register_timepoint_sample(
            session,
            actor=tech,
            coi=episode.coi,
            timepoint="baseline",
            material_type="serum",
            quantity=1,
            unit="mL",
            collected_at=datetime(2025, 3, 9, 8, 0, tzinfo=UTC),
            today=TODAY,
        )
        assert (sample.timepoint, sample.timepoint_day) == ("baseline", -7)


@pytest.mark.parametrize(
    ("timepoint", "material", "collected_at", "refusal", "message"),
    [
        ("D7", "serum", datetime(2025, 3, 9, 8, tzinfo=UTC), ValidationError, "not expect Serum"),
        ("D7", "pbmc", datetime(2025, 3, 9, 8, tzinfo=UTC), ValidationError, "registered already"),
        ("D7", "plasma", datetime(2025, 3, 5, 8, tzinfo=UTC), ValidationError, "does not belong"),
        ("D7", "plasma", datetime(2099, 1, 1, tzinfo=UTC), ValidationError, "in the future"),
        ("D14", "pbmc", datetime(2025, 3, 9, 8, tzinfo=UTC), Conflict, "D14 is upcoming"),
        ("D0", "pbmc", datetime(2025, 3, 9, 8, tzinfo=UTC), Conflict, "D0 is missed"),
        ("D8", "pbmc", datetime(2025, 3, 9, 8, tzinfo=UTC), NotFound, "has no timepoint 'D8'"),
    ],
)
def test_a_sample_that_does_not_fit_the_timepoint_is_refused(
    app, people, timepoint, material, collected_at, refusal, message
):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = infused(session, new_episode(session, tech))
        draw(session, tech, episode, "D7", "pbmc")
        before = session.scalar(select(func.count()).select_from(Item))
        with pytest.raises(refusal, match=message):
            services.register_timepoint_sample(
                session,
                actor=tech,
                coi=episode.coi,
                timepoint=timepoint,
                material_type=material,
                quantity=1,
                unit="mL",
                collected_at=collected_at,
                today=TODAY,
            )
        session.rollback()
        assert session.scalar(select(func.count()).select_from(Item)) == before


def test_a_protocols_schedule_applies_to_its_episodes(app, people):
    app.config["LIMS"]["followup"]["protocols"] = {
        "CAR19-RH-01": [{"label": "D6", "day": 6, "before": 0, "after": 3, "types": ["serum"]}]
    }
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        patient, _ = patients.register_patient(
            session, actor=tech, identifier=cpr(3), name="Patient 3", treating_site_code="RH"
        )
        trial = patients.register_episode(
            session,
            actor=tech,
            pseudonym=patient.pseudonym,
            product_name="ARI-0001",
            product_kind="academic",
            protocol="CAR19-RH-01",
        )
        infused(session, trial)
        schedule = services.episode_schedule(session, actor=tech, coi=trial.coi, today=TODAY)
        assert schedule.plan_name == "CAR19-RH-01"
        assert [t.label for t in schedule.timepoints][:2] == ["D6", "Y1"]
        assert schedule.timepoints[0].status is TimepointStatus.OVERDUE
        (row,) = services.worklist(session, actor=tech, today=TODAY).rows
        assert (row.timepoint, row.missing, row.days_overdue) == ("D6", ("serum",), 2)


def test_a_malformed_protocol_is_reported_when_read(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        patient, _ = patients.register_patient(
            session, actor=tech, identifier=cpr(4), name="Patient 4", treating_site_code="RH"
        )
        trial = patients.register_episode(
            session,
            actor=tech,
            pseudonym=patient.pseudonym,
            product_name="ARI-0001",
            product_kind="academic",
            protocol="CAR19-RH-02",
        )
        app.config["LIMS"]["followup"]["protocols"] = {
            "CAR19-RH-02": [{"label": "D7", "day": 7, "types": ["blood"]}]
        }
        with pytest.raises(ConfigurationError, match=r"protocol 'CAR19-RH-02', entry 1 \(D7\)"):
            services.episode_schedule(session, actor=tech, coi=trial.coi, today=TODAY)


@pytest.mark.parametrize("person", ["researcher", "admin"])
def test_researchers_and_admins_are_refused(app, people, person):
    with app.app_context():
        session = lims_db.session()
        tech, someone = actor(session, people["tech"]), actor(session, people[person])
        episode = new_episode(session, tech)
        with pytest.raises(Forbidden):
            services.worklist(session, actor=someone, today=TODAY)
        with pytest.raises(Forbidden):
            services.episode_schedule(session, actor=someone, coi=episode.coi, today=TODAY)
