"""Demo CAR-T episodes at every stage of the pipeline, made through the real services.

Everything goes through the same use cases as at the bench (signatures included), so the demo
data obeys every rule and leaves a valid audit chain. The patients are invented: CPR numbers
are generated for made-up names and birth dates.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from lims.auth.models import User
from lims.auth.services import Witness, confirm_second_person
from lims.custody import bedside, holds, production
from lims.custody.domain import Action
from lims.custody.models import HoldReason, Item
from lims.custody.services import Move, perform_action
from lims.db import utcnow
from lims.patients import services as patients
from lims.patients.models import Patient

#: (name, birth date, treating site, product, kind, stage)
EPISODES = [
    ("Karen Holm Jensen", date(1958, 3, 14), "RH", "CAR19-RH", "academic", "collected"),
    ("Jørgen Lund", date(1966, 11, 2), "OUH", "CAR19-RH", "academic", "apheresis in transit"),
    ("Birgitte Munk", date(1972, 6, 23), "AUH", "CAR19-RH", "academic", "in manufacturing"),
    ("Niels Østergaard", date(1949, 1, 30), "AAUH", "CAR19-RH", "academic", "quarantine"),
    ("Hanne Thomsen", date(1981, 9, 9), "HGH", "CAR19-RH", "academic", "released"),
    ("Per Kristensen", date(1963, 12, 5), "OUH", "CAR19-RH", "academic", "stored at ward"),
    ("Lone Bech", date(1955, 4, 17), "AUH", "CAR19-RH", "academic", "thawed"),
    ("Ole Damgaard", date(1969, 8, 28), "RH", "CAR19-RH", "academic", "infused"),
    ("Inge Frandsen", date(1977, 2, 11), "AAUH", "CAR19-RH", "academic", "QC hold"),
    ("Erik Vinther", date(1960, 10, 3), "HGH", "Kymriah", "commercial", "cryopreserved"),
]

QC_PASS = {
    "viability": ("92", "%"),
    "sterility": ("no growth", ""),
    "transduction_efficiency": ("38", "%"),
    "vector_copy_number": ("1.9", "copies/cell"),
    "cell_dose": ("2.0e8", "CAR+ cells"),
}
FOLLOW_UP = [("D0", 0), ("D7", 7), ("D14", 14)]


def invented_cpr(birth: date, rng: random.Random) -> str:
    """A CPR number for an invented person: right date and century digit, passes mod 11."""
    century_digit = {1900: rng.choice("0123"), 2000: "4"}[1900 if birth.year < 2000 else 2000]
    for _ in range(1000):
        serial = century_digit + f"{rng.randrange(1000):03d}"
        cpr = birth.strftime("%d%m%y") + serial
        weights = (4, 3, 2, 7, 6, 5, 4, 3, 2, 1)
        if sum(int(d) * w for d, w in zip(cpr, weights, strict=True)) % 11 == 0:
            return cpr
    raise RuntimeError("no CPR number found")  # unreachable in practice


class _Demo:
    def __init__(self, session: Session, password: str) -> None:
        self.session, self.password = session, password
        self.lots = 0

    def user(self, username: str) -> User:
        return self.session.scalar(select(User).where(User.username == username))

    def act(self, who: str, item: Item, action: Action, **options) -> None:
        perform_action(self.session, actor=self.user(who), code=item.code, action=action, **options)

    def second_person(self, who: str, witness: str) -> Witness:
        return confirm_second_person(
            self.session, actor=self.user(who), username=witness, password=self.password
        )

    def collection(self, episode, site: str) -> Item:
        return production.register_collection(
            self.session,
            actor=self.user(f"tech.{site.lower()}"),
            coi=episode.coi,
            volume_ml=random.Random(episode.id).choice([180, 220, 265]),
            tnc_count=random.Random(episode.id).randrange(8, 20) * 10**9,
            collected_at=utcnow() - timedelta(days=2),
        )

    def to_manufacturing(self, item: Item, site: str) -> None:
        self.act(f"tech.{site.lower()}", item, Action.PACK)
        self.act(
            f"tech.{site.lower()}",
            item,
            Action.SHIP,
            move=Move(custodian="Blodbank-kurer", temperature_logger_ref="TL-2041"),
        )

    def manufacture(self, item: Item) -> Item:
        self.act("tech.rh", item, Action.RECEIVE, move=Move(location="Cell therapy facility"))
        self.act("tech.rh", item, Action.START_MANUFACTURING)
        self.lots += 1
        lot = production.create_lot(
            self.session,
            actor=self.user("tech.rh"),
            lot_number=f"CAR19-{utcnow():%y}-{self.lots:03d}",
            apheresis_codes=[item.code],
            bags=[production.BagSpec(volume_ml=68, cell_count=200_000_000)],
            expires_at=utcnow() + timedelta(days=365),
        )
        bag = lot.bags[0]
        self.act("tech.rh", bag, Action.QUARANTINE, move=Move(location="Quarantine LN2 tank"))
        return bag

    def qc(
        self, bag: Item, tests: dict[str, tuple[str, str]], *, failed: str | None = None
    ) -> None:
        for test, (value, unit) in tests.items():
            production.add_qc_result(
                self.session,
                actor=self.user("tech.rh"),
                lot_number=bag.lot.lot_number,
                test=test,
                value=value if test != failed else "61",
                unit=unit,
                passed=test != failed,
                specification="≥ 70 %" if test == "viability" else "",
            )

    def release(self, bag: Item) -> None:
        self.qc(bag, QC_PASS)
        self.act(
            "manager.rh",
            bag,
            Action.RELEASE,
            password=self.password,
            witness=self.second_person("manager.rh", "tech.rh"),
        )

    def deliver(self, bag: Item, site: str) -> None:
        self.act(
            "tech.rh",
            bag,
            Action.SHIP,
            move=Move(custodian="Cryoport", temperature_logger_ref="LN2-DS-118"),
        )
        self.act(
            f"tech.{site.lower()}",
            bag,
            Action.RECEIVE,
            witness=self.second_person(f"tech.{site.lower()}", f"manager.{site.lower()}"),
        )
        self.act(
            f"tech.{site.lower()}", bag, Action.STORE, move=Move(location="Vapour-phase LN2 tank 1")
        )

    def thaw(self, bag: Item, site: str) -> None:
        self.act(f"tech.{site.lower()}", bag, Action.ISSUE, move=Move(location="Ward"))
        self.act(f"tech.{site.lower()}", bag, Action.THAW)

    def infuse(self, bag: Item, site: str, cpr: str) -> None:
        bedside.bedside_check(
            self.session,
            actor=self.user(f"tech.{site.lower()}"),
            bag_scan=bag.code,
            coi_scan=f"&/{bag.episode.coi}",
            wristband_scan=cpr,
            witness_username=f"manager.{site.lower()}",
            witness_password=self.password,
        )
        self.act(f"manager.{site.lower()}", bag, Action.INFUSE, password=self.password)

    def follow_up(self, episode, site: str) -> None:
        tech = self.user(f"tech.{site.lower()}")
        for label, day in FOLLOW_UP:
            draw = production.register_sample(
                self.session,
                actor=tech,
                coi=episode.coi,
                material_type="whole_blood",
                quantity=18,
                unit="mL",
                collected_at=utcnow(),
                timepoint=label,
                timepoint_day=day,
            )
            for material, count, each in (("plasma", 4, 1), ("pbmc", 4, 1)):
                for child in production.aliquot(
                    self.session,
                    actor=tech,
                    parent_code=draw.code,
                    count=count,
                    quantity_each=each,
                    unit="mL",
                    material_type=material,
                ):
                    self.act(
                        tech.username, child, Action.STORE, move=Move(location="-150 °C freezer 3")
                    )


def load_demo_episodes(session: Session, *, password: str) -> list[str]:
    if session.scalar(select(Patient.id).limit(1)) is not None:
        return ["demo episodes existed already"]
    rng = random.Random(2026)
    demo = _Demo(session, password)
    for name, birth, site, product, kind, stage in EPISODES:
        cpr = invented_cpr(birth, rng)
        patient, _ = patients.register_patient(
            session,
            actor=demo.user(f"tech.{site.lower()}"),
            identifier=cpr,
            name=name,
            treating_site_code=site,
            consent_biobank=True,
            consent_genetic=rng.random() < 0.7,
        )
        episode = patients.register_episode(
            session,
            actor=demo.user(f"manager.{site.lower()}"),
            pseudonym=patient.pseudonym,
            product_name=product,
            product_kind=kind,
            protocol="CAR19-DK-01" if kind == "academic" else "standard of care",
            planned_infusion_date=date.today() + timedelta(days=21),
        )
        apheresis = demo.collection(episode, site)
        if stage == "collected":
            continue
        if stage == "cryopreserved":
            demo.act(
                f"tech.{site.lower()}",
                apheresis,
                Action.STORE,
                move=Move(location="Vapour-phase LN2 tank 2"),
            )
            continue
        demo.to_manufacturing(apheresis, site)
        if stage == "apheresis in transit":
            continue
        if stage == "in manufacturing":
            demo.act("tech.rh", apheresis, Action.RECEIVE)
            demo.act("tech.rh", apheresis, Action.START_MANUFACTURING)
            continue
        bag = demo.manufacture(apheresis)
        if stage == "quarantine":
            demo.qc(bag, dict(list(QC_PASS.items())[:3]))
            continue
        if stage == "QC hold":
            demo.qc(bag, QC_PASS, failed="viability")
            continue
        demo.release(bag)
        if stage == "released":
            continue
        demo.deliver(bag, site)
        if stage == "stored at ward":
            continue
        demo.thaw(bag, site)
        if stage == "thawed":
            continue
        demo.infuse(bag, site, cpr)
        demo.follow_up(episode, site)
    # One aliquot put on hold by hand, so the hold work list has something to show.
    held = session.scalar(select(Item).where(Item.material_type == "plasma").limit(1))
    if held is not None:
        holds.place_hold(
            session,
            actor=demo.user("tech.rh"),
            item=held,
            reason=HoldReason.TEMPERATURE_EXCURSION,
            detail="freezer 3 alarm 40 min above -130 °C",
        )
    return [f"demo episodes: {len(EPISODES)} patients at every stage of the pipeline"]
