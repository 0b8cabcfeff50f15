"""Demo CAR-T episodes at every stage of the pipeline, replayed through the real services.

Each episode is a script of steps at times in the past (a generator that yields when its next
step happens). The scripts are interleaved in time order and each step runs under the replayed
clock, so events, signatures and audit rows carry realistic, ever increasing times and the
audit chain verifies. Every step goes through the same use cases as at the bench: shipments
with reconciliation and logger files, second persons, QC review and release, bedside checks,
follow-up draws. The patients are invented; CPR numbers are generated for made-up people.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from lims.auth.models import User
from lims.auth.services import Witness, confirm_second_person
from lims.custody import bedside, holds, production
from lims.custody.domain import Action, Kind
from lims.custody.models import Item
from lims.custody.services import Move, perform_action
from lims.db import replayed_time, utcnow
from lims.demo_storage import box_for
from lims.followup import services as followup
from lims.manufacturing import services as manufacturing
from lims.patients import services as patients
from lims.patients.models import Episode, Patient
from lims.shipments import excursions, receipt
from lims.shipments import services as shipping
from lims.storage import services as storage

#: Where the academic product is made: the cell therapy facility at Rigshospitalet.
FACILITY = "RH"
QC_PASS = {
    "viability": ("92", "%", "≥ 70 %"),
    "sterility": ("no growth", "", "no growth"),
    "transduction_efficiency": ("38", "%", "≥ 15 %"),
    "vector_copy_number": ("1.9", "copies/cell", "≤ 5"),
    "cell_dose": ("2.0e8", "CAR+ cells", "1–2.5e8"),
}
#: Samples drawn at each follow-up timepoint: (material, tubes, mL each).
DRAW = {"pbmc": (4, 1), "plasma": (4, 1), "serum": (2, 1)}

Step = Iterator[datetime]


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


def logger_csv(start: datetime, hours: int, celsius: Callable[[int], float]) -> bytes:
    """A temperature logger's export: one reading every 10 minutes, local time, °C."""
    zone = ZoneInfo("Europe/Copenhagen")
    rows = ["Date Time;Temperature (°C)"]
    for step in range(hours * 6):
        at = (start + timedelta(minutes=10 * step)).astimezone(zone)
        rows.append(f"{at:%Y-%m-%d %H:%M};{celsius(step):.1f}".replace(".", ","))
    return ("\n".join(rows) + "\n").encode()


class Demo:
    """The demo's people and the steps they take; every step is a real use case."""

    def __init__(self, session: Session, password: str, now: datetime) -> None:
        self.session, self.password, self.now = session, password, now
        self.zone = ZoneInfo("Europe/Copenhagen")
        self.lots = 0

    # -- time ------------------------------------------------------------------------------

    def day(self, days_ago: int, at: str = "09:00") -> datetime:
        """``days_ago`` days before today at local time ``at`` (never later than now)."""
        today = self.now.astimezone(self.zone).date()
        local = datetime.combine(
            today - timedelta(days=days_ago), time.fromisoformat(at), tzinfo=self.zone
        )
        return min(local.astimezone(UTC), self.now - timedelta(minutes=days_ago + 5))

    def hours_ago(self, hours: float) -> datetime:
        return self.now - timedelta(hours=hours)

    # -- people ----------------------------------------------------------------------------

    def user(self, username: str) -> User:
        return self.session.scalar(select(User).where(User.username == username))

    def tech(self, site: str) -> User:
        return self.user(f"tech.{site.lower()}")

    def second_person(self, who: User, witness: str) -> Witness:
        return confirm_second_person(
            self.session, actor=who, username=witness, password=self.password
        )

    def act(self, who: User, item: Item, action: Action, **options) -> None:
        perform_action(self.session, actor=who, code=item.code, action=action, **options)

    def store(self, who: User, item: Item) -> None:
        """Into the first box of the site's freezer for this material with a free place."""
        box = box_for(self.session, who.site.code, item.material_type.value)
        storage.place_item(
            self.session, actor=who, item_scan=item.code, box_scan=box, manual=False
        )

    # -- steps -----------------------------------------------------------------------------

    def collect(self, episode: Episode, site: str) -> Item:
        rng = random.Random(episode.id)
        return production.register_collection(
            self.session,
            actor=self.tech(site),
            coi=episode.coi,
            volume_ml=rng.choice([180, 220, 265]),
            tnc_count=rng.randrange(8, 20) * 10**9,
            collected_at=utcnow() - timedelta(hours=4),
        )

    def ship(self, site: str, to: str, items: list[Item], conditions: str, logger: str = "") -> str:
        who = self.tech(site)
        courier = "Cryoport" if conditions in ("dry_shipper", "ln2_vapour") else "World Courier"
        shipment = shipping.create_shipment(
            self.session, actor=who, to_site_code=to, conditions=conditions, logger_ref=logger
        )
        for item in items:
            shipping.add_to_shipment(
                self.session,
                actor=who,
                shipment_code=shipment.code,
                scan=f"={item.code}00",
                container="dry shipper DS-118" if conditions == "dry_shipper" else "box 1",
            )
        shipping.dispatch_shipment(
            self.session,
            actor=who,
            shipment_code=shipment.code,
            courier=courier,
            tracking_ref=f"{courier[:3].upper()}-{shipment.id:05d}",
            logger_ref=logger,
        )
        return shipment.code

    def receive(self, site: str, shipment: str, items: list[Item], witness: str | None = None):
        who = self.tech(site)
        for item in items:
            receipt.scan_on_receipt(
                self.session, actor=who, shipment_code=shipment, scan=f"={item.code}00"
            )
        receipt.complete_receipt(
            self.session,
            actor=who,
            shipment_code=shipment,
            witness_username=witness,
            witness_password=self.password if witness else None,
        )

    def logger_file(self, site: str, shipment: str, data: bytes) -> None:
        excursions.upload_logger_csv(
            self.session,
            actor=self.tech(site),
            shipment_code=shipment,
            data=data,
            filename=f"{shipment}-logger.csv",
            zone="Europe/Copenhagen",
        )

    def in_house_transfer(self, item: Item, to: str) -> None:
        """Within the hospital a porter carries the bag: no shipment, a custody hand-over."""
        facility = self.tech(FACILITY)
        self.act(facility, item, Action.SHIP, move=Move(custodian="porter, Blodbanken"))
        witness = None
        if item.kind is Kind.PRODUCT_BAG:  # received at its treating site: a second person
            witness = self.second_person(facility, f"manager.{to.lower()}")
        self.act(facility, item, Action.RECEIVE, move=Move(location="goods-in"), witness=witness)

    def make_lot(self, apheresis: Item) -> Item:
        facility = self.tech(FACILITY)
        self.lots += 1
        lot = manufacturing.make_lot(
            self.session,
            actor=facility,
            lot_number=f"CAR19-{utcnow():%y}-{self.lots:03d}",
            apheresis_scans=[f"={apheresis.code}00"],
            bag_count=1,
            volume_ml=68,
            cells_per_bag=200_000_000,
            expires_at=utcnow() + timedelta(days=365),
        )
        return lot.bags[0]

    def qc(self, bag: Item, tests: list[str], *, failed: str | None = None) -> None:
        for test in tests:
            value, unit, spec = QC_PASS[test]
            production.add_qc_result(
                self.session,
                actor=self.tech(FACILITY),
                lot_number=bag.lot.lot_number,
                test=test,
                value="61" if test == failed else value,
                unit=unit,
                specification=spec,
                passed=test != failed,
            )

    def release(self, bag: Item) -> None:
        manager = self.user(f"manager.{FACILITY.lower()}")
        manufacturing.review_qc(
            self.session,
            actor=manager,
            lot_number=bag.lot.lot_number,
            password=self.password,
            comment="All results within specification; batch record reviewed.",
        )
        manufacturing.release_lot(
            self.session,
            actor=manager,
            lot_number=bag.lot.lot_number,
            password=self.password,
            witness_username=f"tech.{FACILITY.lower()}",
            witness_password=self.password,
        )

    def bedside(self, bag: Item, site: str, cpr: str) -> None:
        bedside.bedside_check(
            self.session,
            actor=self.tech(site),
            bag_scan=f"={bag.code}00",
            coi_scan=f"&/{bag.episode.coi}",
            wristband_scan=cpr,
            witness_username=f"manager.{site.lower()}",
            witness_password=self.password,
        )

    def draw(self, episode: Episode, site: str, timepoint: str, types: list[str]) -> None:
        """A follow-up draw: one tube per type, aliquoted and stored in the biobank freezer."""
        who = self.tech(site)
        for material in types:
            tubes, each = DRAW[material]
            sample = followup.register_timepoint_sample(
                self.session,
                actor=who,
                coi=episode.coi,
                timepoint=timepoint,
                material_type=material,
                quantity=tubes * each,
                unit="mL",
                collected_at=utcnow(),
                today=utcnow().astimezone(self.zone).date(),
            )
            for child in production.aliquot(
                self.session,
                actor=who,
                parent_code=sample.code,
                count=tubes,
                quantity_each=each,
                unit="mL",
                material_type=material,
            ):
                self.store(who, child)


# -- the episodes ---------------------------------------------------------------------------

#: (name, birth date, treating site, product, product kind, script)
EPISODES = [
    ("Karen Holm Jensen", date(1958, 3, 14), "RH", "CAR19-RH", "academic", "collected"),
    ("Jørgen Lund", date(1966, 11, 2), "OUH", "CAR19-RH", "academic", "apheresis in transit"),
    ("Birgitte Munk", date(1972, 6, 23), "AUH", "CAR19-RH", "academic", "in manufacturing"),
    ("Niels Østergaard", date(1949, 1, 30), "AAUH", "CAR19-RH", "academic", "awaiting QC"),
    ("Hanne Thomsen", date(1981, 9, 9), "HGH", "CAR19-RH", "academic", "released, packed"),
    ("Per Kristensen", date(1963, 12, 5), "OUH", "CAR19-RH", "academic", "stored at site"),
    ("Lone Bech", date(1955, 4, 17), "AUH", "CAR19-RH", "academic", "issued to ward"),
    ("Ole Damgaard", date(1969, 8, 28), "RH", "CAR19-RH", "academic", "infused, follow-up"),
    ("Inge Frandsen", date(1977, 2, 11), "AAUH", "CAR19-RH", "academic", "QC hold"),
    ("Erik Vinther", date(1960, 10, 3), "HGH", "Kymriah", "commercial", "cryopreserved"),
    ("Sven Aagaard", date(1952, 5, 19), "OUH", "CAR19-RH", "academic", "long-term follow-up"),
]


def episode_script(demo: Demo, spec: tuple, cpr: str, consent_genetic: bool) -> Step:
    """The steps of one episode up to its stage, each preceded by the time it happens."""
    name, _birth, site, product, kind, stage = spec
    start = {
        "collected": 0,
        "apheresis in transit": 1,
        "in manufacturing": 12,
        "awaiting QC": 20,
        "released, packed": 25,
        "stored at site": 35,
        "issued to ward": 38,
        "infused, follow-up": 75,
        "QC hold": 18,
        "cryopreserved": 3,
        "long-term follow-up": 245,
    }[stage]
    # Referred a week before collection: the patient, consent and the treatment episode.
    yield demo.day(start + 7, "11:00")
    patient, _ = patients.register_patient(
        demo.session,
        actor=demo.tech(site),
        identifier=cpr,
        name=name,
        treating_site_code=site,
        consent_biobank=True,
        consent_genetic=consent_genetic,
    )
    episode = patients.register_episode(
        demo.session,
        actor=demo.user(f"manager.{site.lower()}"),
        pseudonym=patient.pseudonym,
        product_name=product,
        product_kind=kind,
        protocol="CAR19-DK-01" if kind == "academic" else "standard of care",
        planned_infusion_date=(demo.day(max(start - 35, 0)) + timedelta(days=7)).date(),
    )
    yield demo.day(start, "08:30") if start else demo.hours_ago(3)
    apheresis = demo.collect(episode, site)
    if stage == "collected":
        return
    if stage == "cryopreserved":
        yield demo.day(start, "15:00")
        demo.store(demo.tech(site), apheresis)
        return

    # The collection goes to the facility: by courier, or by porter within Rigshospitalet.
    yield demo.day(start, "13:00") if start else demo.hours_ago(2)
    if site == FACILITY:
        demo.in_house_transfer(apheresis, FACILITY)
    else:
        inbound = demo.ship(site, FACILITY, [apheresis], "fresh", logger=f"TL-{episode.id:04d}")
    if stage == "apheresis in transit":
        return
    if site != FACILITY:
        yield demo.day(start - 1, "09:10")
        demo.receive(FACILITY, inbound, [apheresis])
        sent = demo.day(start, "13:00")
        if stage == "in manufacturing":
            # 40 minutes at 9-10 °C on the road: the logger file puts the collection on hold,
            # QA assesses it against the stability data and the manager clears the hold.
            demo.logger_file(
                FACILITY, inbound, logger_csv(sent, 20, lambda s: 9.4 if 30 <= s < 34 else 5.2)
            )
            yield demo.day(start - 1, "11:00")
            hold = holds.open_holds(demo.session, apheresis.id)[0]
            holds.clear_hold(
                demo.session,
                actor=demo.user("manager.rh"),
                hold_id=hold.id,
                reason="QA: 40 min at 9.4 °C is within the validated stability of fresh "
                "leukapheresis (deviation DEV-2026-114).",
            )
        else:
            demo.logger_file(FACILITY, inbound, logger_csv(sent, 20, lambda s: 4.8 + s % 3 / 10))
    yield demo.day(start - 1, "12:00")
    demo.act(demo.tech(FACILITY), apheresis, Action.START_MANUFACTURING)
    if stage == "in manufacturing":
        return

    yield demo.day(start - 10, "10:00")
    bag = demo.make_lot(apheresis)
    demo.act(demo.tech(FACILITY), bag, Action.QUARANTINE, move=Move(location="Quarantine tank"))
    if stage == "QC hold":
        yield demo.day(6, "14:00")
        demo.qc(bag, list(QC_PASS), failed="viability")
        return
    if stage == "awaiting QC":
        yield demo.day(3, "14:00")
        demo.qc(bag, ["viability", "sterility", "cell_dose"])
        return
    yield demo.day(start - 20, "14:00")
    demo.qc(bag, list(QC_PASS))
    yield demo.day(start - 21, "10:00")
    demo.release(bag)
    if stage == "released, packed":
        yield demo.hours_ago(1.5)
        packing = shipping.create_shipment(
            demo.session,
            actor=demo.tech(FACILITY),
            to_site_code=site,
            conditions="dry_shipper",
            logger_ref="DS-LOG-77",
        )
        shipping.add_to_shipment(
            demo.session,
            actor=demo.tech(FACILITY),
            shipment_code=packing.code,
            scan=f"={bag.code}00",
            container="dry shipper DS-077",
        )
        return

    # To the treating site, received there with a second person, into its LN2 tank.
    yield demo.day(start - 23, "08:00")
    if site == FACILITY:
        demo.in_house_transfer(bag, site)
    else:
        outbound = demo.ship(FACILITY, site, [bag], "dry_shipper", logger="DS-LOG-31")
        yield demo.day(start - 24, "10:00")
        demo.receive(site, outbound, [bag], witness=f"manager.{site.lower()}")
        demo.logger_file(
            site,
            outbound,
            logger_csv(demo.day(start - 23, "08:00"), 26, lambda s: -183.0 + s % 5 / 2),
        )
    demo.store(demo.tech(site), bag)
    if stage == "stored at site":
        return
    if stage == "issued to ward":
        yield demo.hours_ago(1)
        demo.act(demo.tech(site), bag, Action.ISSUE, move=Move(location="Haematology ward 2"))
        return

    # Infusion, then the follow-up schedule.
    infusion_day = {"infused, follow-up": 30, "long-term follow-up": 200}[stage]
    yield demo.day(infusion_day + 7, "08:00")
    demo.draw(episode, site, "baseline", ["pbmc", "plasma", "serum"])
    yield demo.day(infusion_day, "09:00")
    demo.act(demo.tech(site), bag, Action.ISSUE, move=Move(location="Haematology ward 2"))
    demo.act(demo.tech(site), bag, Action.THAW)
    yield demo.day(infusion_day, "09:20")
    demo.bedside(bag, site, cpr)
    demo.act(demo.user(f"manager.{site.lower()}"), bag, Action.INFUSE, password=demo.password)
    yield demo.day(infusion_day, "16:00")
    demo.draw(episode, site, "D0", ["pbmc", "plasma"])
    # D21 is missed on purpose and D28 left overdue in the shorter episode: the work list.
    plan = [("D7", 7), ("D14", 14)] if stage == "infused, follow-up" else [
        ("D7", 7), ("D14", 14), ("D21", 21), ("D28", 28), ("M3", 90), ("M6", 180),
    ]  # fmt: skip
    for label, day in plan:
        yield demo.day(infusion_day - day, "10:30")
        types = ["pbmc", "plasma"] if label in ("D7", "D14", "D21") else ["pbmc", "plasma", "serum"]
        demo.draw(episode, site, label, types)


def replay(scripts: list[Step]) -> None:
    """Run the scripts' steps in time order, each under the replayed clock."""
    queue: list[tuple[datetime, int, Step]] = []
    for number, script in enumerate(scripts):
        first = next(script, None)
        if first is not None:
            heapq.heappush(queue, (first, number, script))
    while queue:
        at, number, script = heapq.heappop(queue)
        with replayed_time(at):
            following = next(script, None)
        if following is not None:
            heapq.heappush(queue, (max(following, at), number, script))


def load_demo_episodes(session: Session, *, password: str) -> list[str]:
    if session.scalar(select(Patient.id).limit(1)) is not None:
        return ["demo episodes existed already"]
    rng = random.Random(2026)
    demo = Demo(session, password, utcnow())
    cprs = [invented_cpr(spec[1], rng) for spec in EPISODES]
    replay(
        [
            episode_script(demo, spec, cpr, rng.random() < 0.7)
            for spec, cpr in zip(EPISODES, cprs, strict=True)
        ]
    )
    ward = next(n for n, spec in enumerate(EPISODES) if spec[5] == "issued to ward")
    return [
        f"demo episodes: {len(EPISODES)} patients at every stage of the pipeline",
        f"to practise the bedside check: the bag issued at {EPISODES[ward][2]} belongs to the "
        f"invented patient whose wristband reads {cprs[ward]}",
    ]
