"""The starting material and the products of a benchmark data set: for every episode an
apheresis collection and the CAR-T product made from it, written in bulk.

Each episode's history is the one the bench and the manufacturing pages write, with the same
custody events, states, sites, locations and custodians, in this order:

- the collection, at the treating site 30 days before the infusion: ``register`` (collected),
  ``ship`` by courier, ``receive`` at the manufacturing site (goods-in),
  ``start_manufacturing``, ``consume`` into the lot ("manufactured into lot ...");
- the lot (one bag, its five required QC results, all passed), made at the manufacturing site
  from that collection; the bag: ``register`` (manufactured, "lot ..."), ``quarantine``,
  ``release`` (the site's manager signs "released", a technician countersigns as second
  person), ``ship``, ``receive`` at the treating site (a second person countersigns),
  ``issue`` to the ward, ``thaw``, ``verify_identity`` (a passed bedside check with its second
  person), ``infuse`` (signed "administered") at the episode's infusion time.

The manufacturing site is the data set's first site (RH, the cell therapy facility of the
demo network). DINs come from the sites' counters (``din:<FIN>:<yy>``), which the loader moves
past the numbers used. The e-signatures are bound to the record the services sign (code,
state, version before the step, action, lot), so they carry the hash the application would.
Shipments travel by the bare custody steps: no shipment records or logger files are made.
As for the aliquots, the audit trail holds one ``create`` row per record written; the events
carry the history's times.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy.orm import Session

from benchmarks.bulk import AuditChain, BulkWriter, complete
from benchmarks.plan import Plan
from lims import identifiers
from lims.audit.models import ESignature
from lims.audit.services import record_hash
from lims.custody.models import BedsideCheck, CustodyEvent, Item, ProductLot, QcResult
from lims.custody.models import product_lot_source as LOT_SOURCE
from lims.db import utcnow

if TYPE_CHECKING:
    from benchmarks.dataset import Actor

REASON = "generated benchmark data set"
ITEM, EVENT, LOT = Item.__table__, CustodyEvent.__table__, ProductLot.__table__
QC, SIGNATURE, BEDSIDE = QcResult.__table__, ESignature.__table__, BedsideCheck.__table__
#: Tables whose ids the loader gives explicitly (their sequences are moved on afterwards).
PRODUCT_TABLES = (LOT, QC, SIGNATURE, BEDSIDE)
#: Each required QC test: a passing value, its unit and the specification it meets.
QC_VALUES = {
    "viability": ("91", "%", ">= 80 %"),
    "sterility": ("no growth", "", "no growth"),
    "transduction_efficiency": ("42", "%", ">= 15 %"),
    "vector_copy_number": ("2.1", "copies/cell", "<= 5"),
    "cell_dose": ("2.0e8", "CAR+ cells", "1.0e8 - 2.5e8"),
}
MANUFACTURING_SITE = 0


@dataclass
class Written:
    collections: int = 0
    bags: int = 0
    lots: int = 0


class Products:
    """Writes every episode's collection, lot and bag with their events, QC results,
    signatures and bedside check; a batch of episodes at a time."""

    def __init__(
        self,
        session: Session,
        writer: BulkWriter,
        chain: AuditChain,
        plan: Plan,
        sites: list[int],
        techs: list[Actor],
        managers: list[Actor],
        first_episode: int,
    ) -> None:
        self.session, self.writer, self.chain, self.plan = session, writer, chain, plan
        self.sites, self.techs, self.managers = sites, techs, managers
        self.first_episode = first_episode
        self.rng = random.Random(plan.spec.seed + 3)  # noqa: S311 (seeded on purpose)
        self.year = plan.now.strftime("%y")
        self.din_numbers = [0] * len(plan.sites)
        self.ids = {table.name: writer.next_id(table) for table in (ITEM, *PRODUCT_TABLES)}
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.required_qc = list(current_app.config["LIMS"]["custody"]["required_qc"])
        self.written = Written()

    # -- rows ----------------------------------------------------------------------------------

    def _row(self, table, values: dict[str, Any], actor: Actor) -> dict:
        """A record with the next id of its table, and its ``create`` audit row."""
        values["id"] = self.ids[table.name]
        self.ids[table.name] += 1
        complete(table, values)
        self.rows.setdefault(table.name, []).append(values)
        self.chain.created(
            at=utcnow(), actor=actor.audit, entity=table.name, values=values, reason=REASON
        )
        return values

    def _din(self, site: int) -> tuple[str, str]:
        self.din_numbers[site] += 1
        din = f"{self.plan.sites[site].fin}{self.year}{self.din_numbers[site]:06d}"
        return din, identifiers.din_check_character(din)

    def _signature(
        self, who: Actor, meaning: str, item: dict, version: int, action: str, at: datetime, *,
        second_person: bool = False, state: str,
    ) -> int:  # fmt: skip
        """An e-signature bound to the item as the services sign it (before the step)."""
        signed = {
            "code": item["code"], "state": state, "version": version, "action": action,
            "lot_id": item["lot_id"],
        }  # fmt: skip
        values = {
            "user_id": who.id,
            "printed_name": who.full_name,
            "meaning": meaning,
            "signed_at": at,
            "entity": "item",
            "entity_id": str(item["id"]),
            "record_hash": record_hash(signed),
            "comment": "second person" if second_person else None,
        }
        return self._row(SIGNATURE, values, who)["id"]

    # -- one episode ---------------------------------------------------------------------------

    def episode(self, number: int) -> None:
        spec = self.plan.episodes[number]
        treating, maker = spec.site, MANUFACTURING_SITE
        episode_id = self.first_episode + number
        collected = spec.infused_at - timedelta(days=30)
        history = _History(self, episode_id)

        # The collection: at the treating site, to manufacturing, consumed into the lot.
        code, check = self._din(treating)
        lot_number = f"CAR-{self.year}-{number + 1:05d}"
        tech_t, tech_m = self.techs[treating], self.techs[maker]
        collection = history.item(
            code=code, check=check, kind="apheresis", material="leukapheresis",
            quantity=Decimal(self.rng.randint(150, 250)),
            cell_count=self.rng.randint(8, 20) * 10**9, collected=collected,
            created=collected + timedelta(hours=1), lot_id=None,
        )  # fmt: skip
        history.step(
            collection,
            "register",
            tech_t,
            collected + timedelta(hours=1),
            state="collected",
            site=treating,
            location="",
            custodian=tech_t.full_name,
        )
        history.step(
            collection,
            "ship",
            tech_t,
            collected + timedelta(hours=2),
            state="in_transit",
            location="courier",
            custodian="World Courier",
        )
        received = collected + timedelta(days=1)
        history.step(
            collection,
            "receive",
            tech_m,
            received,
            state="received_for_manufacturing",
            site=maker,
            location="goods-in",
            custodian=tech_m.full_name,
        )
        history.step(
            collection,
            "start_manufacturing",
            tech_m,
            received + timedelta(hours=1),
            state="in_manufacturing",
        )
        history.step(
            collection,
            "consume",
            tech_m,
            received + timedelta(hours=1, minutes=5),
            state="consumed",
            reason=f"manufactured into lot {lot_number}",
        )
        self.written.collections += 1

        # The lot and its bag: QC, release, to the treating site, infused.
        made = collected + timedelta(days=10)
        lot = self._row(LOT, {
            "lot_number": lot_number, "episode_id": episode_id,
            "manufacturing_site_id": self.sites[maker], "manufactured_at": made,
        }, tech_m)  # fmt: skip
        self.rows.setdefault(LOT_SOURCE.name, []).append(
            {"lot_id": lot["id"], "item_id": collection["id"]}
        )
        self.written.lots += 1
        code, check = self._din(maker)
        bag = history.item(
            code=code, check=check, kind="product_bag", material="car_t_product",
            quantity=Decimal(self.rng.randint(40, 90)), cell_count=2 * 10**8, collected=None,
            created=made, lot_id=lot["id"], expires_at=made + timedelta(days=365),
        )  # fmt: skip
        history.step(
            bag,
            "register",
            tech_m,
            made,
            state="manufactured",
            site=maker,
            location="",
            custodian=tech_m.full_name,
            reason=f"lot {lot_number}",
        )
        history.step(
            bag,
            "quarantine",
            tech_m,
            made + timedelta(minutes=10),
            state="quarantine",
            location="Quarantine tank",
        )
        tested = made + timedelta(days=7)
        for test in self.required_qc:
            value, unit, specification = QC_VALUES.get(test, ("pass", "", "pass"))
            self._row(QC, {
                "lot_id": lot["id"], "test": test, "value": value, "unit": unit,
                "specification": specification, "passed": True, "entered_by_id": tech_m.id,
                "entered_at": tested,
            }, tech_m)  # fmt: skip
        released = made + timedelta(days=8)
        history.step(
            bag,
            "release",
            self.managers[maker],
            released,
            state="released",
            signed="released",
            witness=tech_m,
        )
        history.step(
            bag,
            "ship",
            tech_m,
            released + timedelta(days=1),
            state="in_transit",
            location="courier",
            custodian="Cryoport",
        )
        history.step(
            bag,
            "receive",
            tech_t,
            released + timedelta(days=2),
            state="received",
            site=treating,
            location="goods-in",
            custodian=tech_t.full_name,
            witness=self.managers[treating],
        )
        infused = spec.infused_at
        history.step(
            bag,
            "issue",
            tech_t,
            infused - timedelta(hours=2),
            state="issued",
            location="Haematology ward",
            custodian=tech_t.full_name,
        )
        thawed = infused - timedelta(minutes=25)
        history.step(bag, "thaw", tech_t, thawed, state="thawed")
        bag["thawed_at"] = thawed
        checked = infused - timedelta(minutes=10)
        witness = history.step(
            bag,
            "verify_identity",
            tech_t,
            checked,
            state="identity_verified",
            witness=self.managers[treating],
        )
        self._row(BEDSIDE, {
            "item_id": bag["id"], "episode_id": episode_id, "passed": True, "mismatches": "",
            "checked_at": checked, "checked_by_id": tech_t.id, "witness_signature_id": witness,
        }, tech_t)  # fmt: skip
        history.step(bag, "infuse", tech_t, infused, state="infused", signed="administered")
        self.written.bags += 1
        history.finish()

    def flush(self) -> None:
        """Parents before children: the lots before their bags, the signatures before the
        events and bedside checks that name them."""
        for table in (LOT, ITEM, LOT_SOURCE, QC, SIGNATURE, EVENT, BEDSIDE):
            self.writer.write(table, self.rows.pop(table.name, []))
        self.chain.flush(self.writer)
        self.session.commit()

    def write_all(self) -> Written:
        for number in range(len(self.plan.episodes)):
            self.episode(number)
            if number % 500 == 499:
                self.flush()
        self.flush()
        return self.written


class _History:
    """The items of one episode and their events, kept as rows; each step changes the item's
    values as the service does and records the event, its signatures first."""

    def __init__(self, products: Products, episode_id: int) -> None:
        self.products, self.episode_id = products, episode_id
        self.items: list[dict[str, Any]] = []
        self.events: list[tuple[dict, dict]] = []

    def item(self, *, code, check, kind, material, quantity, cell_count, collected, created,
             lot_id, expires_at=None) -> dict:  # fmt: skip
        values = {
            "id": self.products.ids[ITEM.name], "code": code, "check_character": check,
            "kind": kind, "material_type": material, "episode_id": self.episode_id,
            "parent_id": None, "lot_id": lot_id, "state": None, "quantity": quantity,
            "unit": "mL", "cell_count": cell_count, "timepoint": None, "timepoint_day": None,
            "aliquot_number": None, "aliquot_total": None, "collected_at": collected,
            "expires_at": expires_at, "thawed_at": None, "thaw_count": 0, "site_id": None,
            "location": "", "custodian": "", "box_id": None, "position": None,
            "stored_at": None, "checked_out_at": None, "label_printed_at": None,
            "created_at": created, "version": 0,
        }  # fmt: skip
        self.products.ids[ITEM.name] += 1
        self.items.append(values)
        return values

    def step(self, item: dict, action: str, who: Actor, at: datetime, *, state: str,
             site: int | None = None, location: str | None = None, custodian: str | None = None,
             reason: str | None = None, signed: str | None = None,
             witness: Actor | None = None) -> int | None:  # fmt: skip
        """One step; returns the witness's signature id (the bedside check keeps it)."""
        products = self.products
        before = (item["state"], item["site_id"], item["location"], item["custodian"])
        signature = witness_signature = None
        if signed:
            signature = products._signature(
                who, signed, item, item["version"], action, at, state=item["state"]
            )
        if witness is not None:
            witness_signature = products._signature(
                witness, "verified", item, item["version"], action, at,
                second_person=True, state=item["state"],
            )  # fmt: skip
        item["state"] = state
        if site is not None:
            item["site_id"] = products.sites[site]
        if location is not None:
            item["location"] = location
        if custodian is not None:
            item["custodian"] = custodian
        item["version"] += 1
        first = action == "register"
        event = {
            "item_id": item["id"], "at": at, "user_id": who.id, "action": action,
            "from_state": None if first else before[0], "to_state": state,
            "from_site_id": None if first else before[1], "to_site_id": item["site_id"],
            "from_location": None if first else before[2], "to_location": item["location"],
            "from_custodian": None if first else before[3], "to_custodian": item["custodian"],
            "reason": reason, "temperature_logger_ref": None, "signature_id": signature,
            "witness_signature_id": witness_signature,
        }  # fmt: skip
        self.events.append((item, event))
        return witness_signature

    def finish(self) -> None:
        """The items in their final state (one ``create`` audit row each), then the events."""
        products = self.products
        for values in self.items:
            complete(ITEM, values)
            products.rows.setdefault(ITEM.name, []).append(values)
            actor = products.techs[products.sites.index(values["site_id"])]
            products.chain.created(
                at=utcnow(), actor=actor.audit, entity="item", values=values, reason=REASON
            )
        for _, event in self.events:
            products.rows.setdefault(EVENT.name, []).append(complete(EVENT, event))


def din_counters(plan: Plan, products: Products) -> dict[str, int]:
    """The DIN counters' last values per FIN for this year."""
    return {
        f"din:{site.fin}:{products.year}": number
        for site, number in zip(plan.sites, products.din_numbers, strict=True)
        if number
    }
