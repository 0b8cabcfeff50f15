"""A small joint biobank for the request tests: stored follow-up aliquots of consenting
patients in an RH freezer, a few at AUH, and the people who search, review and pick."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from lims import db as lims_db
from lims.custody import production
from lims.patients import services as patients
from lims.storage import services as storage
from tests.integration.people import actor, cpr

DRAWN = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
STUDY = "CARTBANK-01"
#: (timepoint, day) of the follow-up draws every subject has.
TIMEPOINTS = (("D0", 0), ("D7", 7), ("D28", 28))


def make_patient(session, tech, n: int, *, protocol: str = STUDY, genetic: bool = True):
    patient, _ = patients.register_patient(
        session,
        actor=tech,
        identifier=cpr(n),
        name=f"Patient Number{n}",
        treating_site_code="RH",
        consent_biobank=True,
        consent_genetic=genetic,
    )
    episode = patients.register_episode(
        session,
        actor=tech,
        pseudonym=patient.pseudonym,
        product_name="Breyanzi",
        product_kind="commercial",
        protocol=protocol,
    )
    return patient, episode


def stored_tubes(session, tech, episode, material, count, timepoint, day, box) -> list[str]:
    """``count`` aliquots of one draw, stored in ``box``; their codes."""
    draw = production.register_sample(
        session,
        actor=tech,
        coi=episode.coi,
        material_type=material,
        quantity=count,
        unit="mL",
        collected_at=DRAWN,
        timepoint=timepoint,
        timepoint_day=day,
    )
    tubes = production.aliquot(
        session,
        actor=tech,
        parent_code=draw.code,
        count=count,
        quantity_each=0.5,
        unit="mL",
        material_type=material,
        timepoint=timepoint,
        timepoint_day=day,
    )
    for tube in tubes:
        storage.place_item(session, actor=tech, item_scan=tube.code, box_scan=box)
    return [tube.code for tube in tubes]


def build_biobank(app, people, make_user, *, subjects: int = 3) -> SimpleNamespace:
    """RH-F80 (rack R1, box RH-B1 10x10, RH-B2 10x10); every subject has 2 plasma tubes at
    each of D0, D7, D28; subject 1 also has one plasma tube at AUH (AUH-B1)."""
    with app.app_context():
        session = lims_db.session()
        tech, manager = actor(session, people["tech"]), actor(session, people["manager"])
        maker = actor(session, people["maker"])
        storage.create_unit(
            session,
            actor=manager,
            code="RH-F80",
            name="Biobank freezer",
            unit_type="freezer",
            temperature_class="minus_80",
        )
        storage.create_rack(session, actor=manager, unit_code="RH-F80", code="R1")
        for box in ("RH-B1", "RH-B2"):
            storage.create_box(
                session, actor=tech, code=box, unit_code="RH-F80", rack_code="R1", box_type="10x10"
            )
        storage.create_unit(
            session,
            actor=maker,
            code="AUH-F80",
            name="Aarhus freezer",
            unit_type="freezer",
            temperature_class="minus_80",
        )
        storage.create_box(
            session, actor=maker, code="AUH-B1", unit_code="AUH-F80", box_type="10x10"
        )
        tubes: dict[tuple[str, str], list[str]] = {}
        pseudonyms, cois = [], []
        for n in range(1, subjects + 1):
            patient, episode = make_patient(session, tech, n)
            pseudonyms.append(patient.pseudonym)
            cois.append(episode.coi)
            for timepoint, day in TIMEPOINTS:
                tubes[(patient.pseudonym, timepoint)] = stored_tubes(
                    session, tech, episode, "plasma", 2, timepoint, day, "RH-B1"
                )
        first = pseudonyms[0]
        auh = stored_tubes(
            session, maker, _episode(session, cois[0]), "plasma", 1, "D7", 7, "AUH-B1"
        )
        researcher = make_user("researcher", site_code="AUH", full_name="Rita Research")
        return SimpleNamespace(
            tubes=tubes,
            pseudonyms=pseudonyms,
            cois=cois,
            auh_tube=auh[0],
            first=first,
            researcher=researcher,
            cprs=[cpr(n) for n in range(1, subjects + 1)],
            names=[f"Patient Number{n}" for n in range(1, subjects + 1)],
        )


def _episode(session, coi):
    return patients.get_episode(session, coi)
