"""The shape of a benchmark data set, decided before anything is written: which patients and
episodes, which follow-up draws, how many aliquots each draw gave, and how many boxes of which
type stand in which freezers at which site.

Pure and seeded: the same ``Spec`` gives the same plan on every machine. Only counts and small
tuples are kept (tens of thousands of draws for a million aliquots); the aliquots themselves
are produced later, batch by batch, by :mod:`benchmarks.dataset`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from lims.config import DEFAULTS
from lims.demo import SITES as DEMO_SITES
from lims.storage.domain import BOX_TYPES, TemperatureClass

#: Racks per freezer and boxes per rack (an upright -80 °C freezer: 5 shelves of 5 racks).
RACKS_PER_UNIT = 25
BOXES_PER_RACK = 20
PRODUCTS = ("Yescarta", "Kymriah", "Breyanzi", "Tecartus", "Abecma", "Carvykti")
STUDIES = ("DanCAR-FU", "LYMPH-CART", "MM-CART")
#: Follow-up histories reach back this far (the default schedule's yearly draws go to Y15).
HISTORY_DAYS = 15 * 365


@dataclass(frozen=True)
class StorageGroup:
    """Where one kind of aliquot is kept: the freezers' temperature, box type and codes."""

    stem: str
    temperature: TemperatureClass
    box_type: str
    unit_stem: str
    unit_name: str


#: PBMC goes to -150 °C in 9x9 boxes; plasma and serum to -80 °C in 10x10 boxes.
GROUPS = {
    "PBMC": StorageGroup("PBMC", TemperatureClass.MINUS_150, "9x9", "F150", "-150 °C freezer"),
    "PL": StorageGroup("PL", TemperatureClass.MINUS_80, "10x10", "F80", "-80 °C freezer"),
}
GROUP_OF_MATERIAL = {"pbmc": "PBMC", "plasma": "PL", "serum": "PL"}


@dataclass(frozen=True)
class Spec:
    """What to generate. ``registered`` tubes are left unplaced, for placement benchmarks."""

    aliquots: int = 1_000_000
    boxes: int = 12_000
    patients: int = 2_000
    sites: int = 5
    registered: int = 2_000
    seed: int = 6
    batch: int = 10_000


@dataclass(frozen=True)
class SiteSpec:
    code: str
    name: str
    city: str
    fin: str


@dataclass(frozen=True)
class EpisodeSpec:
    patient: int
    site: int
    infused_at: datetime
    product: str
    study: str


@dataclass(frozen=True)
class Draw:
    """One follow-up blood draw of an episode and the aliquots made from it, per material."""

    episode: int
    timepoint: str
    day: int
    collected_at: datetime
    counts: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(count for _, count in self.counts)


@dataclass
class Plan:
    spec: Spec
    now: datetime
    sites: list[SiteSpec]
    #: Per patient: the index of its treating site (the rest is drawn when it is written).
    patient_sites: list[int]
    episodes: list[EpisodeSpec]
    draws: list[Draw]
    #: (site index, group stem) -> boxes and aliquots there.
    boxes: dict[tuple[int, str], int] = field(default_factory=dict)
    aliquots: dict[tuple[int, str], int] = field(default_factory=dict)


def sites_for(count: int) -> list[SiteSpec]:
    """The five university hospitals of the demo, then invented ones for a larger network."""
    if count < 1:
        raise ValueError("a data set needs at least one site")
    found = [SiteSpec(*site) for site in DEMO_SITES[:count]]
    for extra in range(count - len(found)):
        letters = chr(65 + extra // 26) + chr(65 + extra % 26)
        found.append(SiteSpec(f"X{letters}", f"Benchmark hospital {letters}", "", f"E{extra:04d}"))
    return found


def timepoints() -> list[tuple[str, int, tuple[str, ...]]]:
    """The configured default follow-up schedule, then one draw a year (as lims.followup)."""
    followup = DEFAULTS["followup"]
    points = [(t["label"], t["day"], tuple(t["types"])) for t in followup["default_schedule"]]
    last_day = max(day for _, day, _ in points)
    for year in range(2, followup["yearly_until"] + 1):
        if 365 * year > last_day:
            points.append((f"Y{year}", 365 * year, tuple(followup["yearly_types"])))
    return points


def make_plan(spec: Spec, now: datetime) -> Plan:
    """Decide everything countable; raises ValueError when the aliquots cannot fit."""
    if spec.aliquots < 0 or spec.patients < 1 or spec.boxes < 0 or spec.registered < 0:
        raise ValueError("counts must not be negative, and there is at least one patient")
    rng = random.Random(spec.seed)  # noqa: S311 (seeded on purpose)
    sites = sites_for(spec.sites)
    patient_sites = [number % len(sites) for number in range(spec.patients)]
    episodes = []
    for patient, site in enumerate(patient_sites):
        # One CAR-T course each, a second one for about one patient in ten.
        for _ in range(2 if rng.random() < 0.1 else 1):
            infused = now - timedelta(days=rng.randint(14, HISTORY_DAYS), hours=rng.randint(0, 8))
            episodes.append(
                EpisodeSpec(patient, site, infused, rng.choice(PRODUCTS), rng.choice(STUDIES))
            )
    schedule = timepoints()
    due: list[tuple[int, str, int, datetime, tuple[str, ...]]] = []
    for number, episode in enumerate(episodes):
        for label, day, types in schedule:
            collected = episode.infused_at + timedelta(days=day, minutes=rng.randint(0, 480))
            if collected < now - timedelta(days=1):
                due.append((number, label, day, collected, types))
    if not due and spec.aliquots:
        raise ValueError("no follow-up draw is due yet: nothing to make aliquots from")
    draws = _share_aliquots(spec.aliquots, due, rng)
    plan = Plan(spec, now, sites, patient_sites, episodes, draws)
    for draw in draws:
        site = episodes[draw.episode].site
        for material, count in draw.counts:
            key = (site, GROUP_OF_MATERIAL[material])
            plan.aliquots[key] = plan.aliquots.get(key, 0) + count
    plan.boxes = allocate_boxes(spec.boxes, plan.aliquots)
    return plan


def _share_aliquots(total: int, due: list, rng: random.Random) -> list[Draw]:
    """``total`` aliquots over the draws as evenly as whole numbers allow, each draw's share
    split over the material types its timepoint collects."""
    if not due:
        return []
    order = list(range(len(due)))
    rng.shuffle(order)
    base, extra = divmod(total, len(due))
    share = [base] * len(due)
    for index in order[:extra]:
        share[index] += 1
    draws = []
    for (episode, label, day, collected, types), count in zip(due, share, strict=True):
        if count == 0:
            continue
        each, more = divmod(count, len(types))
        counts = tuple((t, each + (1 if n < more else 0)) for n, t in enumerate(types))
        draws.append(Draw(episode, label, day, collected, tuple(c for c in counts if c[1])))
    return draws


def allocate_boxes(boxes: int, aliquots: dict[tuple[int, str], int]) -> dict[tuple[int, str], int]:
    """Boxes per (site, group): enough for each, the spare ones shared in proportion, so every
    box is about equally full (and keeps a few free places for placement benchmarks)."""
    needed = {
        key: math.ceil(count / BOX_TYPES[GROUPS[key[1]].box_type].capacity)
        for key, count in aliquots.items()
        if count
    }
    if sum(needed.values()) > boxes:
        raise ValueError(
            f"{sum(aliquots.values())} aliquots need at least {sum(needed.values())} boxes "
            f"across sites and freezer temperatures; {boxes} were asked for"
        )
    if not needed:
        return {}
    weight = {key: aliquots[key] / BOX_TYPES[GROUPS[key[1]].box_type].capacity for key in needed}
    spare = boxes - sum(needed.values())
    whole = sum(weight.values())
    exact = {key: spare * weight[key] / whole for key in needed}
    given = {key: needed[key] + int(exact[key]) for key in needed}
    # Largest remainders first, in a fixed order, so the total is exactly ``boxes``.
    rest = sorted(needed, key=lambda key: (-(exact[key] - int(exact[key])), key))
    for key in rest[: boxes - sum(given.values())]:
        given[key] += 1
    return given
