"""Loading a benchmark data set into an empty, migrated database, keeping every invariant the
application relies on (the generator's CLI and the tests both call :func:`load`).

- Sites and their people go through the services (passwords hashed as usual, audit rows
  written by the application itself); everything else is written in bulk
  (:mod:`benchmarks.bulk`), in batches, each batch committed with the audit head moved to its
  last row, so the database is consistent after every commit.
- Patients: a pseudonym, CPR number, name and birth date encrypted through the project's vault
  and the keyed look-up hash, as ``register_patient`` fills them. Episodes: a Chain of
  Identity from the site's FIN and this year, with its check character.
- Freezers: -150 °C freezers of 9x9 boxes for PBMC and -80 °C freezers of 10x10 boxes for
  plasma and serum at every site, in racks, so each box holds material its temperature suits.
- Collections and products (:mod:`benchmarks.dataset_products`): for every episode an
  apheresis collection consumed into a lot of one CAR-T bag, QC passed, released, shipped to
  the treating site and infused, with the custody events, e-signatures and bedside check the
  services write.
- Items: for each follow-up draw a whole-blood sample (registered, aliquoted) and its aliquots,
  stored, each at its own position with ``location`` = ``location_of(box, position)``; local
  identifiers with their check character, the site's counter moved past the last one; a
  ``register`` and a ``store`` custody event per stored aliquot; one ``create`` audit row per
  record, chained in order. Also ``registered`` unplaced tubes, for placement benchmarks.

The audit rows are those of an import: their time is the load's, their reason says the data
set was generated; the custody events carry the historical times of the material.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session

from benchmarks.bulk import AuditChain, BulkWriter, complete
from benchmarks.dataset_patients import write_patients_and_episodes
from benchmarks.dataset_products import PRODUCT_TABLES, Products, din_counters
from benchmarks.dataset_storage import STORAGE_TABLES, Layout, build_layout
from benchmarks.plan import GROUP_OF_MATERIAL, Plan, Spec, make_plan
from lims import identifiers
from lims.auth import services as accounts
from lims.auth.models import Site
from lims.custody.models import CustodyEvent, IdentifierCounter, Item
from lims.db import utcnow
from lims.patients.models import Episode, Patient

PASSWORD = "bench-password-1"  # noqa: S105 (the benchmark's own accounts, known on purpose)
REASON = "generated benchmark data set"
ITEM, EVENT = Item.__table__, CustodyEvent.__table__
Report = Callable[[str], None]


class Actor:
    """A person of the data set as the rows name them: id, username, full name."""

    def __init__(self, user: Any) -> None:
        self.id, self.username, self.full_name = user.id, user.username, user.full_name

    @property
    def audit(self) -> tuple[int, str]:
        return self.id, self.username


def load(
    session: Session, spec: Spec, *, report: Report = print, use_copy: bool = True
) -> dict[str, int]:
    """Load ``spec`` into the (empty, migrated) database of the current app; returns the
    rows written per table. Needs an application context (vault, password policy)."""
    if session.scalar(select(Site.id).limit(1)) or session.scalar(select(Item.id).limit(1)):
        raise RuntimeError("the database holds sites or items already; load into an empty one")
    started = time.perf_counter()
    plan = make_plan(spec, utcnow())
    writer = BulkWriter(session, use_copy=use_copy)

    def phase(name: str, since: float, detail: str = "") -> float:
        now = time.perf_counter()
        report(f"{name:<32}{now - since:9.1f} s  {detail}".rstrip())
        return now

    mark = phase("plan", started, f"{len(plan.episodes)} episodes, {len(plan.draws)} draws")
    techs, managers = _people(session, plan)
    chain = AuditChain(session)  # the services moved the head
    mark = phase("sites and people (services)", mark, f"{len(techs)} sites")
    sites = site_ids(session, plan)
    first_episode, coi_numbers = write_patients_and_episodes(
        session, writer, chain, plan, sites, techs
    )
    mark = phase("patients and episodes", mark, f"{len(plan.patient_sites)} patients")
    layout = build_layout(session, writer, chain, plan, sites, managers)
    mark = phase("storage units, racks, boxes", mark, f"{layout.box_count} boxes")
    items = _Items(session, writer, chain, plan, layout, techs, first_episode)
    items.stored_aliquots(report)
    mark = phase("stored aliquots", mark, f"{items.stored} aliquots, {items.parents} samples")
    items.registered_tubes()
    mark = phase("registered tubes", mark, f"{items.registered} tubes")
    products = Products(session, writer, chain, plan, sites, techs, managers, first_episode)
    made = products.write_all()
    mark = phase(
        "collections, lots, bags", mark, f"{made.collections} collections, {made.bags} bags"
    )
    _counters(session, plan, items.local_numbers, coi_numbers, din_counters(plan, products))
    writer.reset_sequences(
        Patient.__table__, Episode.__table__, ITEM, *STORAGE_TABLES, *PRODUCT_TABLES
    )
    session.commit()
    session.commit()
    # Fresh statistics, as a database in use has; on PostgreSQL also the visibility map that
    # index-only scans (the researcher's search) rely on, which VACUUM (not in a transaction)
    # builds.
    engine = session.get_bind()
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM (ANALYZE)"))
    else:
        session.execute(text("ANALYZE"))
        session.commit()
    phase("counters, sequences, VACUUM/ANALYZE", mark)
    report(f"{'loaded in':<32}{time.perf_counter() - started:9.1f} s")
    return dict(writer.counts)


def _people(session: Session, plan: Plan) -> tuple[list[Actor], list[Actor]]:
    """Each site with its FIN, a technician and a biobank manager (through the services)."""
    techs, managers = [], []
    for site in plan.sites:
        accounts.create_site(
            session, actor=None, code=site.code, name=site.name, city=site.city, isbt_fin=site.fin
        )
        lower = site.code.lower()
        for role, people in (("technician", techs), ("manager", managers)):
            user = accounts.create_user(
                session,
                actor=None,
                username=f"{'tech' if role == 'technician' else role}.{lower}",
                full_name=f"Bench {role.title()} {site.code}",
                role=role,
                site_code=site.code,
                password=PASSWORD,
            )
            people.append(Actor(user))
    return techs, managers


def site_ids(session: Session, plan: Plan) -> list[int]:
    return [session.scalar(select(Site.id).where(Site.code == site.code)) for site in plan.sites]


class _Items:
    """The items, their custody events and audit rows, written a batch at a time."""

    def __init__(
        self,
        session: Session,
        writer: BulkWriter,
        chain: AuditChain,
        plan: Plan,
        layout: Layout,
        techs: list[Actor],
        first_episode: int,
    ) -> None:
        self.session, self.writer, self.chain, self.plan = session, writer, chain, plan
        self.layout, self.techs = layout, techs
        self.rng = random.Random(plan.spec.seed + 2)  # noqa: S311 (seeded on purpose)
        self.sites = site_ids(session, plan)
        self.digits = current_app.config["LIMS"]["custody"]["local_id_digits"]
        self.local_numbers = [0] * len(plan.sites)
        self.next_id = writer.next_id(ITEM)
        self.first_episode = first_episode
        self.items: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.stored = self.parents = self.registered = 0

    def stored_aliquots(self, report: Report) -> None:
        shown = 0
        for draw in self.plan.draws:
            episode = self.plan.episodes[draw.episode]
            site = episode.site
            created = draw.collected_at + timedelta(hours=1)
            parent = self._item(
                site=site,
                episode=draw.episode,
                material="whole_blood",
                state="registered",
                quantity=Decimal("1.500"),
                created=created,
                collected=draw.collected_at,
                timepoint=(draw.timepoint, draw.day),
            )
            self.parents += 1
            self._event(site, parent, "register", None, created)
            self._event(
                site,
                parent,
                "aliquot",
                "registered",
                created + timedelta(minutes=30),
                reason=f"{draw.total} aliquots taken",
            )
            for material, count in draw.counts:
                group = GROUP_OF_MATERIAL[material]
                for number in range(1, count + 1):
                    slot, position = self.layout.take(site, group)
                    stored = created + timedelta(hours=1, seconds=number)
                    aliquot = self._item(
                        site=site,
                        episode=draw.episode,
                        material=material,
                        state="stored",
                        quantity=Decimal("1.000" if material == "pbmc" else "0.500"),
                        created=created + timedelta(minutes=30),
                        collected=draw.collected_at,
                        timepoint=(draw.timepoint, draw.day),
                        parent=parent["id"],
                        aliquot=(number, count),
                        place=(slot, position, stored),
                    )
                    self._event(site, aliquot, "register", None, aliquot["created_at"], location="")
                    self._event(site, aliquot, "store", "registered", stored, location_before="")
                    self.stored += 1
            if len(self.items) >= self.plan.spec.batch:
                self._flush()
                if self.stored - shown >= 100_000:
                    shown = self.stored
                    report(f"  … {self.stored} aliquots")
        self._flush()

    def registered_tubes(self) -> None:
        """Tubes registered today and not yet placed: plasma and PBMC, at every site."""
        by_site: dict[int, list[int]] = {}
        for number, episode in enumerate(self.plan.episodes):
            by_site.setdefault(episode.site, []).append(number)
        for count in range(self.plan.spec.registered):
            site = count % len(self.plan.sites)
            if site not in by_site:
                continue
            collected = self.plan.now - timedelta(hours=3)
            tube = self._item(
                site=site,
                episode=self.rng.choice(by_site[site]),
                material=("plasma", "pbmc")[count // len(self.plan.sites) % 2],
                state="registered",
                quantity=Decimal("0.500"),
                created=collected + timedelta(hours=1),
                collected=collected,
                timepoint=("M3", 90),
            )
            self._event(site, tube, "register", None, tube["created_at"])
            self.registered += 1
        self._flush()

    def _item(
        self,
        *,
        site: int,
        episode: int,
        material: str,
        state: str,
        quantity: Decimal,
        created: datetime,
        collected: datetime,
        timepoint: tuple[str, int],
        parent: int | None = None,
        aliquot: tuple[int, int] | None = None,
        place: tuple[Any, int, datetime] | None = None,
    ) -> dict[str, Any]:
        self.local_numbers[site] += 1
        code = identifiers.format_local_id(
            self.plan.sites[site].code, self.local_numbers[site], width=self.digits
        )
        slot, position, stored = place if place else (None, None, None)
        values = {
            "id": self.next_id,
            "code": code,
            "check_character": code[-1],
            "kind": "aliquot",
            "material_type": material,
            "episode_id": self.first_episode + episode,
            "parent_id": parent,
            "lot_id": None,
            "state": state,
            "quantity": quantity,
            "unit": "mL",
            "cell_count": self.rng.randint(5, 10) * 1_000_000 if material == "pbmc" else None,
            "timepoint": timepoint[0],
            "timepoint_day": timepoint[1],
            "aliquot_number": aliquot[0] if aliquot else None,
            "aliquot_total": aliquot[1] if aliquot else None,
            "collected_at": collected,
            "expires_at": None,
            "thawed_at": None,
            "thaw_count": 0,
            "site_id": self.sites[site],
            "location": slot.location(position) if slot else "",
            "custodian": self.techs[site].full_name,
            "box_id": slot.id if slot else None,
            "position": position,
            "stored_at": stored,
            "checked_out_at": None,
            "label_printed_at": None,
            "created_at": created,
            "version": 1,
        }
        complete(ITEM, values)
        self.next_id += 1
        self.items.append(values)
        self.chain.created(
            at=utcnow(), actor=self.techs[site].audit, entity="item", values=values, reason=REASON
        )
        return values

    def _event(
        self,
        site: int,
        item: dict[str, Any],
        action: str,
        from_state: str | None,
        at: datetime,
        *,
        location: str | None = None,
        location_before: str | None = None,
        reason: str | None = None,
    ) -> None:
        """A custody event as ``record_event`` writes it: ``location`` is where the item was
        after the step when that is not where it is now, ``location_before`` before it."""
        where = item["location"] if location is None else location
        before = where if location_before is None else location_before
        tech = self.techs[site]
        row = {
            "item_id": item["id"],
            "at": at,
            "user_id": tech.id,
            "action": action,
            "from_state": from_state,
            "to_state": "registered" if action in ("register", "aliquot") else item["state"],
            "from_site_id": item["site_id"] if from_state else None,
            "to_site_id": item["site_id"],
            "from_location": before if from_state else None,
            "to_location": where,
            "from_custodian": item["custodian"] if from_state else None,
            "to_custodian": item["custodian"],
            "reason": reason,
            "temperature_logger_ref": None,
            "signature_id": None,
            "witness_signature_id": None,
        }
        self.events.append(complete(EVENT, row))

    def _flush(self) -> None:
        self.writer.write(ITEM, self.items)
        self.writer.write(EVENT, self.events)
        self.chain.flush(self.writer)
        self.session.commit()
        self.items, self.events = [], []


def _counters(
    session: Session,
    plan: Plan,
    local_numbers: list[int],
    coi_numbers: list[int],
    dins: dict[str, int],
) -> None:
    """Move each identifier counter past the numbers used, so the application goes on from
    there (``lims.custody.numbering.next_value``) without a collision."""
    year = plan.now.strftime("%y")
    wanted = dict(dins)
    for site, local, coi in zip(plan.sites, local_numbers, coi_numbers, strict=True):
        wanted[f"local:{site.code}"] = local
        wanted[f"coi:{site.fin}:{year}"] = coi
    table = IdentifierCounter.__table__
    for scope, value in wanted.items():
        if session.scalar(select(table.c.id).where(table.c.scope == scope)) is None:
            session.execute(insert(table).values(scope=scope, last_value=value))
        else:
            session.execute(update(table).where(table.c.scope == scope).values(last_value=value))
