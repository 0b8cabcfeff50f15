"""What a researcher may request: the search over available aliquots and the resolution of a
criteria request ("2 plasma aliquots per subject at D0, D7, D28 of study X") into tubes.

Available means: an aliquot, stored (so not reserved, picked, checked out or gone), on no open
hold, of a patient with biobank consent who has not withdrawn it and whose latest opt-out
register check (if any) did not find them registered. Patients never checked are included: the
check is recorded when the request is reviewed.

Researchers see subjects by pseudonym and timepoints as labels and days relative to infusion;
nothing here selects a CPR number, name, birth date, calendar date, Chain of Identity or
episode id, so nothing of the kind can reach a page, an export or an API answer built on it.

Everything is set-based: counting, grouping, paging and the per-subject choice run in the
database (GROUP BY, window functions), a few statements per answer and no Python loop over
tubes. The search reads the covering index ``ix_item_search`` (migration 0009) instead of the
item table: issue 8 asks for p95 under 300 ms over a million aliquots (benchmarks/
requests_search.py measures it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Select,
    and_,
    bindparam,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.orm import Session, aliased

from lims.auth.models import Site
from lims.custody.domain import Kind, State
from lims.custody.models import TYPES_BY_KIND, Hold, Item, MaterialType
from lims.errors import ValidationError
from lims.patients.models import Episode, Patient
from lims.requests.models import OptOutCheck

#: The material types an aliquot can be, in the order counts are shown.
ALIQUOT_TYPES = tuple(m for m in MaterialType if m in TYPES_BY_KIND[Kind.ALIQUOT])
LONGEST_TEXT = 120
#: Bounds that keep values inside the columns' ranges (a day is an INTEGER, a quantity a
#: NUMERIC(12, 3)); anything beyond them is a typing error, not a search.
LONGEST_DAYS = 36_500
LARGEST_QUANTITY = Decimal("999999999.999")
MOST_THAWS = 1_000
MOST_PER_PAGE = 500
MOST_TIMEPOINTS = 50
SHORTFALL_LINES = 200
NO_TIMEPOINT = "(no timepoint)"
ANY_TIMEPOINT = "any timepoint"
#: The key of a subject who never had the material type: longer than any timepoint label.
NEVER_HAD = "(never had this material type)"


# -- checking values -------------------------------------------------------------------------


def _text(value: Any, field: str) -> str | None:
    """A short single-line text, stripped; blank is None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError("Give text here.", field=field)
    if "\x00" in value:
        raise ValidationError("The value contains a NUL character.", field=field)
    value = value.strip()
    if len(value) > LONGEST_TEXT:
        raise ValidationError(f"At most {LONGEST_TEXT} characters.", field=field)
    return value or None


def _whole(value: Any, field: str, *, low: int, high: int) -> int | None:
    if isinstance(value, str):
        value = _text(value, field)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValidationError("Give a whole number.", field=field)
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValidationError("Give a whole number.", field=field)
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ValidationError("Give a whole number.", field=field) from None
    if not isinstance(value, int):
        raise ValidationError("Give a whole number.", field=field)
    if not low <= value <= high:
        if value < 0 <= low:
            raise ValidationError("The number may not be negative.", field=field)
        raise ValidationError(f"Give a number from {low} to {high}.", field=field)
    return value


def _quantity(value: Any, field: str) -> Decimal | None:
    if isinstance(value, str):
        value = _text(value, field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise ValidationError("Give a number.", field=field)
    try:
        number = Decimal(str(value).replace(",", ".")) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ValidationError("Give a number, e.g. 0.5.", field=field) from None
    if not number.is_finite():
        raise ValidationError("Give a finite number.", field=field)
    if number < 0:
        raise ValidationError("The quantity may not be negative.", field=field)
    if number > LARGEST_QUANTITY:
        raise ValidationError("The quantity is too large.", field=field)
    return number


def parse_material_type(value: Any, field: str = "material_type") -> MaterialType | None:
    """An aliquot material type, by value or label (``plasma``, ``PBMC``, ``Cell pellet``)."""
    if isinstance(value, MaterialType):
        material = value
    else:
        text = _text(value, field)
        if text is None:
            return None
        wanted = text.lower().replace(" ", "_").replace("-", "_")
        material = next(
            (
                m
                for m in MaterialType
                if wanted in (m.value, m.label.lower().replace(" ", "_").replace("-", "_"))
            ),
            None,
        )
    if material not in ALIQUOT_TYPES:
        raise ValidationError(
            f"Unknown aliquot material type; one of {', '.join(m.value for m in ALIQUOT_TYPES)}.",
            field=field,
        )
    return material


def _site_code(value: Any, field: str = "site") -> str | None:
    text = _text(value, field)
    return text.upper() if text else None


# -- the filters -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchFilters:
    """What a researcher searches for; every field optional. Values are checked and
    normalised when the object is made, however it is made."""

    #: The episode's protocol, compared without regard to case (as the product).
    study: str | None = None
    product: str | None = None
    material_type: MaterialType | None = None
    #: A timepoint label (D7, M3, baseline), exact but without regard to case.
    timepoint: str | None = None
    #: The day relative to infusion, inclusive at both ends (baseline days are negative).
    day_from: int | None = None
    day_to: int | None = None
    min_quantity: Decimal | None = None
    max_thaws: int | None = None
    #: The code of the site the tube is at.
    site: str | None = None

    def __post_init__(self) -> None:
        checked = {
            "study": _text(self.study, "study"),
            "product": _text(self.product, "product"),
            "material_type": parse_material_type(self.material_type),
            "timepoint": _text(self.timepoint, "timepoint"),
            "day_from": _whole(self.day_from, "day_from", low=-LONGEST_DAYS, high=LONGEST_DAYS),
            "day_to": _whole(self.day_to, "day_to", low=-LONGEST_DAYS, high=LONGEST_DAYS),
            "min_quantity": _quantity(self.min_quantity, "min_quantity"),
            "max_thaws": _whole(self.max_thaws, "max_thaws", low=0, high=MOST_THAWS),
            "site": _site_code(self.site),
        }
        if (
            checked["day_from"] is not None
            and checked["day_to"] is not None
            and checked["day_from"] > checked["day_to"]
        ):
            raise ValidationError("The last day comes before the first.", field="day_to")
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SearchFilters:
        """From a query string (a MultiDict: its first value counts) or a JSON object; blanks
        count as not given, keys that are no filter (``page``) are left alone."""
        return cls(**{f.name: values.get(f.name) for f in fields(cls)})

    def given(self) -> dict[str, str]:
        """The filters given, as text (for a page's summary or an audit row)."""
        return {
            f.name: str(getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        }


# -- what may be requested -------------------------------------------------------------------


def _opted_out() -> Select:
    """Patients whose latest opt-out register check found them registered."""
    later = aliased(OptOutCheck)
    newer = exists().where(
        later.patient_id == OptOutCheck.patient_id,
        or_(
            later.checked_at > OptOutCheck.checked_at,
            and_(later.checked_at == OptOutCheck.checked_at, later.id > OptOutCheck.id),
        ),
    )
    return select(OptOutCheck.patient_id).where(OptOutCheck.registered.is_(True), ~newer)


def eligible_patient() -> ColumnElement[bool]:
    """The patient-level rules (consent, withdrawal, opt-out); needs Patient in the FROM."""
    return and_(
        Patient.consent_biobank.is_(True),
        Patient.consent_withdrawn_at.is_(None),
        Patient.id.not_in(_opted_out()),
    )


def _same_text(column: Any, value: str) -> ColumnElement[bool]:
    return func.lower(column) == value.lower()


def _episode_conditions(filters: SearchFilters) -> list[ColumnElement[bool]]:
    """The filters on the episode (study, product); need Episode in the FROM."""
    conditions = []
    if filters.study is not None:
        conditions.append(_same_text(Episode.protocol, filters.study))
    if filters.product is not None:
        conditions.append(_same_text(Episode.product_name, filters.product))
    return conditions


def _item_conditions(filters: SearchFilters) -> list[ColumnElement[bool]]:
    """The rules and filters on the tube itself. Each reads only columns of ``ix_item_search``
    (or the item's id), so the search scans that index and never the table."""
    # NOT IN over the few open holds: one hashed lookup per tube, not a subquery per tube.
    held = select(Hold.item_id).where(Hold.cleared_at.is_(None))
    conditions = [
        Item.state == State.STORED,
        Item.kind == Kind.ALIQUOT,
        Item.id.not_in(held),
    ]
    if filters.material_type is not None:
        conditions.append(Item.material_type == filters.material_type)
    if filters.timepoint is not None:
        conditions.append(_same_text(Item.timepoint, filters.timepoint))
    if filters.day_from is not None:
        conditions.append(Item.timepoint_day >= filters.day_from)
    if filters.day_to is not None:
        conditions.append(Item.timepoint_day <= filters.day_to)
    if filters.min_quantity is not None:
        conditions.append(Item.quantity >= filters.min_quantity)
    if filters.max_thaws is not None:
        conditions.append(Item.thaw_count <= filters.max_thaws)
    if filters.site is not None:
        site_id = select(Site.id).where(Site.code == filters.site).scalar_subquery()
        conditions.append(Item.site_id == site_id)
    return conditions


def available(filters: SearchFilters) -> Select:
    """``SELECT item.id`` of every aliquot a researcher may request that matches ``filters``,
    joined to its Episode and Patient: add columns with ``with_only_columns`` (the joins stay)
    and conditions with ``where``."""
    return (
        select(Item.id)
        .select_from(Item)
        .join(Episode, Item.episode_id == Episode.id)
        .join(Patient, Episode.patient_id == Patient.id)
        .where(*_item_conditions(filters), eligible_patient(), *_episode_conditions(filters))
    )


# -- the search ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchGroup:
    """The available aliquots of one subject at one timepoint. No identity, no dates."""

    study: str
    product: str
    pseudonym: str
    timepoint: str | None
    timepoint_day: int | None
    #: Aliquots per material type (only the types there are), in ``ALIQUOT_TYPES`` order.
    counts: dict[MaterialType, int]
    total: int


@dataclass(frozen=True)
class SearchResult:
    groups: list[SearchGroup]
    page: int
    per_page: int
    #: For the whole filter, not only this page.
    total_groups: int
    total_aliquots: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total_groups // self.per_page))

    @property
    def material_types(self) -> list[MaterialType]:
        """The types that occur on this page (the columns of a results table)."""
        present = {material for group in self.groups for material in group.counts}
        return [material for material in ALIQUOT_TYPES if material in present]


def _paging(page: Any, per_page: Any) -> tuple[int, int]:
    page = _whole(page, "page", low=1, high=1_000_000)
    per_page = _whole(per_page, "per_page", low=1, high=MOST_PER_PAGE)
    return page or 1, per_page or 50


def _eligible_episodes(session: Session, filters: SearchFilters) -> list[int] | None:
    """The ids of the episodes a study or product filter leaves (None: no such filter), so the
    scan of the tubes reads only theirs."""
    conditions = _episode_conditions(filters)
    if not conditions:
        return None
    return list(
        session.scalars(
            select(Episode.id)
            .join(Patient, Episode.patient_id == Patient.id)
            .where(eligible_patient(), *conditions)
        )
    )


def search(
    session: Session, filters: SearchFilters, *, page: int = 1, per_page: int = 50
) -> SearchResult:
    """The available aliquots grouped by subject (pseudonym) and timepoint, one page of groups,
    sorted by study, pseudonym, day (groups without a day last), timepoint label and product.

    Three statements, none of them a loop over tubes: the tubes are counted per episode and
    timepoint straight from ``ix_item_search`` (the grouping follows the index's order), those
    counts are joined to episodes and patients, grouped for researchers, sorted and cut to the
    page, with the totals of the whole filter computed by window functions in the same pass; then
    the counts per material type are taken for the page's subjects only."""
    page, per_page = _paging(page, per_page)
    episode_ids = _eligible_episodes(session, filters)
    if episode_ids == []:
        return SearchResult([], page, per_page, 0, 0)
    counted = select(
        Item.episode_id, Item.timepoint, Item.timepoint_day, func.count().label("n")
    ).where(*_item_conditions(filters))
    if episode_ids is not None:
        # Whole numbers from the database, written into the statement: no limit on how many.
        counted = counted.where(
            Item.episode_id.in_(bindparam("episodes", episode_ids, literal_execute=True))
        )
    per_episode = counted.group_by(Item.episode_id, Item.timepoint, Item.timepoint_day).subquery(
        "per_episode"
    )
    key = (
        Episode.protocol,
        Patient.pseudonym,
        per_episode.c.timepoint_day,
        per_episode.c.timepoint,
        Episode.product_name,
    )
    total = func.sum(per_episode.c.n)
    grouped = (
        select(*key, total.label("total"))
        .select_from(per_episode)
        .join(Episode, Episode.id == per_episode.c.episode_id)
        .join(Patient, Patient.id == Episode.patient_id)
        .where(eligible_patient(), *_episode_conditions(filters))
        .group_by(*key)
    )
    # The totals of the whole filter come with the page (window functions run before LIMIT).
    page_statement = (
        grouped.add_columns(
            func.count().over().label("total_groups"),
            func.sum(total).over().label("total_aliquots"),
        )
        .order_by(
            Episode.protocol,
            Patient.pseudonym,
            per_episode.c.timepoint_day.is_(None),
            per_episode.c.timepoint_day,
            per_episode.c.timepoint,
            Episode.product_name,
        )
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    rows = session.execute(page_statement).all()
    if rows:
        total_groups, total_aliquots = rows[0].total_groups, rows[0].total_aliquots
    else:  # nothing found, or a page past the last one: count on their own
        whole = grouped.subquery()
        total_groups, total_aliquots = session.execute(
            select(func.count(), func.coalesce(func.sum(whole.c.total), 0))
        ).one()
    counts = _counts_per_type(session, filters, {row.pseudonym for row in rows})
    groups = [
        SearchGroup(
            study=row.protocol,
            product=row.product_name,
            pseudonym=row.pseudonym,
            timepoint=row.timepoint,
            timepoint_day=row.timepoint_day,
            counts=counts.get(tuple(row[:5]), {}),
            total=int(row.total),
        )
        for row in rows
    ]
    return SearchResult(groups, page, per_page, int(total_groups), int(total_aliquots))


GroupKey = tuple[str, str, int | None, str | None, str]


def _counts_per_type(
    session: Session, filters: SearchFilters, pseudonyms: set[str]
) -> dict[GroupKey, dict[MaterialType, int]]:
    """Per group of these subjects: the number of tubes of each material type, in
    ``ALIQUOT_TYPES`` order."""
    if not pseudonyms:
        return {}
    key = (
        Episode.protocol,
        Patient.pseudonym,
        Item.timepoint_day,
        Item.timepoint,
        Episode.product_name,
        Item.material_type,
    )
    statement = (
        available(filters)
        .with_only_columns(*key, func.count())
        .where(Patient.pseudonym.in_(sorted(pseudonyms)))
        .group_by(*key)
    )
    found: dict[GroupKey, dict[MaterialType, int]] = {}
    for *group, material, number in session.execute(statement):
        found.setdefault(tuple(group), {})[material] = number
    order = {material: index for index, material in enumerate(ALIQUOT_TYPES)}
    return {
        group: dict(sorted(per_type.items(), key=lambda pair: order[pair[0]]))
        for group, per_type in found.items()
    }


@dataclass(frozen=True)
class AliquotRow:
    """One available aliquot as a researcher sees it."""

    item_id: int
    code: str
    material_type: MaterialType
    quantity: Decimal
    unit: str
    thaw_count: int
    site: str
    pseudonym: str
    timepoint: str | None
    timepoint_day: int | None
    study: str
    product: str


def _timepoint_is(label: str | None) -> ColumnElement[bool]:
    return Item.timepoint.is_(None) if label is None else _same_text(Item.timepoint, label)


def group_aliquots(
    session: Session, filters: SearchFilters, pseudonym: str, timepoint: str | None
) -> list[AliquotRow]:
    """The available aliquots of one group of :func:`search` (``timepoint`` None or blank: the
    tubes without one), sorted by material type and code; empty when there are none."""
    pseudonym = _text(pseudonym, "pseudonym")
    label = _text(timepoint, "timepoint")
    if pseudonym is None:
        raise ValidationError("Name the subject.", field="pseudonym")
    statement = (
        available(filters)
        .with_only_columns(
            Item.id,
            Item.code,
            Item.material_type,
            Item.quantity,
            Item.unit,
            Item.thaw_count,
            Site.code.label("site"),
            Patient.pseudonym,
            Item.timepoint,
            Item.timepoint_day,
            Episode.protocol,
            Episode.product_name,
        )
        .join(Site, Item.site_id == Site.id)
        .where(Patient.pseudonym == pseudonym.upper(), _timepoint_is(label))
        .order_by(Item.material_type, Item.code)
    )
    return [AliquotRow(*row) for row in session.execute(statement)]


# -- criteria requests -----------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """What a criterion became: the tubes chosen, and what could not be found."""

    #: Item ids, by subject, timepoint and preference.
    items: list[int]
    #: "S-4F2A D28: 1 of 2", at most SHORTFALL_LINES of them and then "… and N more".
    shortfall: list[str]

    @property
    def shortfall_text(self) -> str:
        return "\n".join(self.shortfall)


def _labels(timepoints: Any) -> list[tuple[str, str]]:
    """(key, label as asked) per asked timepoint, without repeats; a text is split at commas."""
    if timepoints is None:
        return []
    if isinstance(timepoints, str):
        timepoints = timepoints.split(",")
    if not isinstance(timepoints, list | tuple):
        raise ValidationError("Give the timepoints as a list of labels.", field="timepoints")
    labels: dict[str, str] = {}
    for value in timepoints:
        label = _text(value, "timepoints")
        if label is not None:
            labels.setdefault(label.lower(), label)
    if len(labels) > MOST_TIMEPOINTS:
        raise ValidationError(f"At most {MOST_TIMEPOINTS} timepoints.", field="timepoints")
    return list(labels.items())


def _item_ids(values: Iterable[Any] | None) -> list[int]:
    """Whole numbers only: they are written into the statement (no limit on how many)."""
    ids = []
    for value in values or ():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("Item ids are whole numbers.", field="exclude_item_ids")
        ids.append(value)
    return ids


def resolve_criterion(
    session: Session,
    *,
    study: str,
    material_type: MaterialType | str,
    timepoints: list[str] | tuple[str, ...] | str | None = None,
    per_subject: int = 1,
    min_quantity: Decimal | str | None = None,
    max_thaws: int | None = None,
    site: str | None = None,
    exclude_item_ids: Iterable[int] = (),
    genetic: bool = False,
) -> Resolution:
    """Up to ``per_subject`` available aliquots of ``material_type`` for every subject of
    ``study`` at every asked timepoint, the fewest thaws first, then the largest quantity, then
    the code; and a shortfall line for every subject and timepoint with fewer.

    The subjects of a study are the patients with any aliquot of it (whatever its type or
    state) whose consent allows research use. With timepoints asked, every subject is checked at
    each of them; with none asked, at every timepoint where the subject ever had this material
    type, and a subject who never had it gets one line for "any timepoint". For ``genetic``
    analyses only subjects with genetic consent are chosen (the others show as short)."""
    filters = SearchFilters(
        study=study,
        material_type=material_type,
        min_quantity=min_quantity,
        max_thaws=max_thaws,
        site=site,
    )
    if filters.study is None:
        raise ValidationError("Name the study.", field="study")
    if filters.material_type is None:
        raise ValidationError("Choose the material type.", field="material_type")
    wanted = _whole(per_subject, "per_subject", low=1, high=100)
    if wanted is None:
        raise ValidationError("Say how many aliquots per subject.", field="per_subject")
    labels = _labels(timepoints)
    excluded = _item_ids(exclude_item_ids)

    key = func.coalesce(func.lower(Item.timepoint), "")
    rank = func.row_number().over(
        partition_by=(Patient.id, key),
        order_by=(Item.thaw_count, Item.quantity.desc(), Item.code),
    )
    candidates = available(filters).with_only_columns(
        Item.id.label("item_id"),
        Patient.id.label("patient_id"),
        Patient.pseudonym.label("pseudonym"),
        key.label("tp_key"),
        Item.timepoint_day.label("day"),
        rank.label("rank"),
    )
    if labels:
        candidates = candidates.where(key.in_([k for k, _ in labels]))
    if genetic:
        candidates = candidates.where(Patient.consent_genetic.is_(True))
    if excluded:
        candidates = candidates.where(
            Item.id.not_in(bindparam("excluded", excluded, literal_execute=True))
        )
    ranked = candidates.cte("ranked")
    chosen = select(ranked).where(ranked.c.rank <= wanted).cte("chosen")
    items = session.scalars(
        select(chosen.c.item_id).order_by(
            chosen.c.pseudonym,
            chosen.c.day.is_(None),
            chosen.c.day,
            chosen.c.tp_key,
            chosen.c.rank,
        )
    ).all()
    return Resolution(list(items), _shortfall(session, filters, labels, chosen, wanted))


def _shortfall(
    session: Session,
    filters: SearchFilters,
    labels: list[tuple[str, str]],
    chosen: CTE,
    wanted: int,
) -> list[str]:
    """One line per subject and timepoint with fewer than ``wanted`` chosen, sorted by subject
    and then the asked order (or the day), at most SHORTFALL_LINES and a count of the rest."""
    key = func.coalesce(func.lower(Item.timepoint), "")
    of_study = (
        select()
        .select_from(Item)
        .join(Episode, Item.episode_id == Episode.id)
        .join(Patient, Episode.patient_id == Patient.id)
        .where(
            Item.kind == Kind.ALIQUOT,
            _same_text(Episode.protocol, filters.study),
            eligible_patient(),
        )
    )
    subjects = (
        of_study.with_only_columns(Patient.id.label("patient_id"), Patient.pseudonym)
        .distinct()
        .subquery("subjects")
    )
    if labels:
        asked = union_all(
            *(
                select(
                    literal(k).label("tp_key"),
                    literal(label).label("label"),
                    literal(number).label("ordinal"),
                )
                for number, (k, label) in enumerate(labels)
            )
        ).subquery("asked")
        pairs = (
            select(
                subjects.c.patient_id,
                subjects.c.pseudonym,
                asked.c.tp_key,
                asked.c.label,
                asked.c.ordinal,
            )
            .select_from(subjects)
            .join(asked, true())
            .subquery("pairs")
        )
    else:
        # Every timepoint: each one at which the subject ever had this material type, and one
        # line for a subject who never had it (but has other material of the study).
        of_type = of_study.where(Item.material_type == filters.material_type)
        had_type = of_type.with_only_columns(Patient.id).where(Patient.id == subjects.c.patient_id)
        pairs = union_all(
            of_type.with_only_columns(
                Patient.id.label("patient_id"),
                Patient.pseudonym,
                key.label("tp_key"),
                func.min(Item.timepoint).label("label"),
                func.min(Item.timepoint_day).label("ordinal"),
            ).group_by(Patient.id, Patient.pseudonym, key),
            select(
                subjects.c.patient_id,
                subjects.c.pseudonym,
                literal(NEVER_HAD).label("tp_key"),
                literal(ANY_TIMEPOINT).label("label"),
                null().label("ordinal"),
            ).where(~had_type.exists()),
        ).subquery("pairs")
    found = (
        select(chosen.c.patient_id, chosen.c.tp_key, func.count().label("n"))
        .group_by(chosen.c.patient_id, chosen.c.tp_key)
        .subquery("found")
    )
    number = func.coalesce(found.c.n, 0)
    lines = session.execute(
        select(pairs.c.pseudonym, pairs.c.label, number, func.count().over())
        .select_from(pairs)
        .outerjoin(
            found,
            and_(found.c.patient_id == pairs.c.patient_id, found.c.tp_key == pairs.c.tp_key),
        )
        .where(number < wanted)
        .order_by(pairs.c.pseudonym, pairs.c.ordinal.is_(None), pairs.c.ordinal, pairs.c.label)
        .limit(SHORTFALL_LINES)
    ).all()
    shortfall = [f"{who} {label or NO_TIMEPOINT}: {n} of {wanted}" for who, label, n, _ in lines]
    if lines and lines[0][3] > SHORTFALL_LINES:
        shortfall.append(f"… and {lines[0][3] - SHORTFALL_LINES} more")
    return shortfall
