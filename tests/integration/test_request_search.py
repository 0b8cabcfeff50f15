"""The researcher's search over available aliquots and the resolution of criteria requests,
against a real database: every filter, every exclusion, grouping, paging, the choice per
subject with its shortfall, refused filter values, and nothing identifying in the results."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from werkzeug.datastructures import MultiDict

from lims import db as lims_db
from lims.custody import holds, production
from lims.custody.domain import Action, State
from lims.custody.models import Item, MaterialType
from lims.custody.services import Move, perform_action
from lims.errors import ValidationError
from lims.patients import services as patients
from lims.requests import search
from lims.requests.models import OptOutCheck
from lims.requests.search import SearchFilters, available, group_aliquots, resolve_criterion
from lims.storage import services as storage
from tests.conftest import PASSWORD
from tests.integration.people import actor, cpr, second_person
from tests.integration.test_custody_services import quarantined_lot

PLASMA, SERUM, PBMC = MaterialType.PLASMA, MaterialType.SERUM, MaterialType.PBMC


def _freezer(session, manager, worker, unit: str, box: str) -> None:
    storage.create_unit(
        session,
        actor=manager,
        code=unit,
        name=f"Tank {unit}",
        unit_type="ln2_tank",
        temperature_class="ln2_vapour",
    )
    storage.create_box(session, actor=worker, code=box, unit_code=unit, capacity=100)


class Biobank:
    """Builds the material through the services, as the bench would."""

    def __init__(self, session, people) -> None:
        self.session = session
        self.tech = actor(session, people["tech"])
        self.maker = actor(session, people["maker"])
        self.manager = actor(session, people["manager"])
        self.numbers = itertools.count(1)
        self.patients: dict[str, SimpleNamespace] = {}

    def patient(self, role: str, *, study: str, product: str = "Yescarta", consent=True):
        n = next(self.numbers)
        patient, _ = patients.register_patient(
            self.session,
            actor=self.tech,
            identifier=cpr(n),
            name=f"Patient {n}",
            treating_site_code="RH",
            consent_biobank=consent,
        )
        episode = patients.register_episode(
            self.session,
            actor=self.tech,
            pseudonym=patient.pseudonym,
            product_name=product,
            product_kind="commercial",
            protocol=study,
        )
        found = SimpleNamespace(
            n=n, id=patient.id, pseudonym=patient.pseudonym, coi=episode.coi, episode=episode
        )
        self.patients[role] = found
        return found

    def tubes(self, patient, count, material, timepoint=None, day=None, *, each=0.5, **how):
        """``count`` aliquots of one draw of ``patient``, made and stored at RH (or at AUH
        with ``at_auh=True``); left unstored with ``store=False``."""
        worker = self.maker if how.get("at_auh") else self.tech
        draw = production.register_sample(
            self.session,
            actor=worker,
            coi=patient.coi,
            material_type="whole_blood",
            quantity=count * each,
            unit="mL",
            collected_at=lims_db.utcnow(),
            timepoint=timepoint,
            timepoint_day=day,
        )
        made = production.aliquot(
            self.session,
            actor=worker,
            parent_code=draw.code,
            count=count,
            quantity_each=each,
            unit="mL",
            material_type=material,
        )
        if how.get("store", True):
            box = "AUH-BOX" if how.get("at_auh") else "RH-BOX"
            for tube in made:
                storage.place_item(self.session, actor=worker, item_scan=tube.code, box_scan=box)
        return made

    def opt_out(self, role: str, *checks: tuple[datetime, bool]) -> None:
        for when, registered in checks:
            self.session.add(
                OptOutCheck(
                    patient_id=self.patients[role].id,
                    checked_at=when,
                    checked_by_id=self.manager.id,
                    registered=registered,
                )
            )
        self.session.commit()


def build(app, session, people) -> SimpleNamespace:
    """Study CART-01: subject a (RH, several timepoints), b (Kymriah, tubes at AUH), flip_in
    (opted out, then not); the excluded: no consent, withdrawn, opted out, opted in then out.
    Study CART-02: subject c, one tube at D0."""
    bank = Biobank(session, people)
    _freezer(session, bank.manager, bank.tech, "RH-LN2", "RH-BOX")
    _freezer(session, actor(session, people["qp"]), bank.maker, "AUH-LN2", "AUH-BOX")
    a = bank.patient("a", study="CART-01")
    b = bank.patient("b", study="CART-01", product="Kymriah")
    c = bank.patient("c", study="CART-02")
    flip_in = bank.patient("flip_in", study="CART-01")
    excluded = {
        role: bank.patient(role, study="CART-01", consent=role != "no_consent")
        for role in ("no_consent", "withdrawn", "opted_out", "flip_out")
    }
    t = SimpleNamespace()
    # Subject a, D7 plasma: three of 0.5 mL (one thawed once) and one of 0.8 mL that was held.
    t.d7 = bank.tubes(a, 3, PLASMA, "D7", 7)
    t.thawed = t.d7[2]
    perform_action(session, actor=bank.tech, code=t.thawed.code, action=Action.CHECK_OUT)
    storage.place_item(session, actor=bank.tech, item_scan=t.thawed.code, box_scan="RH-BOX")
    (t.cleared,) = bank.tubes(a, 1, PLASMA, "D7", 7, each=0.8)
    hold = holds.place_hold(
        session, actor=bank.tech, item=t.cleared, reason="other", detail="tube looked cracked"
    )
    holds.clear_hold(session, actor=bank.manager, hold_id=hold.id, reason="tube is fine")
    (t.serum,) = bank.tubes(a, 1, SERUM, "D7", 7)
    t.d28 = bank.tubes(a, 2, PLASMA, "D28", 28, each=1)
    (t.pbmc,) = bank.tubes(a, 1, PBMC, "baseline", -7, each=1)
    (t.untimed,) = bank.tubes(a, 1, PLASMA)
    # Subject a's tubes a researcher may not have.
    (t.held,) = bank.tubes(a, 1, PLASMA, "D7", 7)
    holds.place_hold(session, actor=bank.tech, item=t.held, reason="other", detail="check label")
    (t.reserved,) = bank.tubes(a, 1, PLASMA, "D7", 7)
    # Reserving belongs to a request's approval: done here as that step does it.
    perform_action(
        session,
        actor=bank.manager,
        code=t.reserved.code,
        action=Action.RESERVE,
        reason="approved request",
        internal=True,
    )
    (t.checked_out,) = bank.tubes(a, 1, PLASMA, "D7", 7)
    perform_action(session, actor=bank.tech, code=t.checked_out.code, action=Action.CHECK_OUT)
    (t.unstored,) = bank.tubes(a, 1, PLASMA, "D7", 7, store=False)
    t.apheresis = production.register_collection(
        session, actor=bank.tech, coi=a.coi, volume_ml=150, collected_at=lims_db.utcnow()
    )
    perform_action(
        session,
        actor=bank.tech,
        code=t.apheresis.code,
        action=Action.STORE,
        move=Move(location="RH-LN2"),
    )
    t.bag = stored_bag(app, session, people, a.episode)
    # The other subjects.
    t.at_auh = bank.tubes(b, 2, PLASMA, "D7", 7, at_auh=True)
    (t.d0,) = bank.tubes(c, 1, PLASMA, "D0", 0)
    (t.flip_in,) = bank.tubes(flip_in, 1, PLASMA, "D7", 7)
    t.excluded = {role: bank.tubes(p, 1, PLASMA, "D7", 7)[0] for role, p in excluded.items()}
    patients.record_consent(
        session,
        actor=bank.tech,
        pseudonym=excluded["withdrawn"].pseudonym,
        biobank=False,
        genetic=False,
        withdrawn=True,
        reason="patient asked",
    )
    # Withdrawal holds the material; clear that hold: the withdrawal alone must exclude it.
    for open_hold in holds.open_holds(session, t.excluded["withdrawn"].id):
        holds.clear_hold(session, actor=bank.manager, hold_id=open_hold.id, reason="test")
    earlier = lims_db.utcnow() - timedelta(days=30)
    later = lims_db.utcnow() - timedelta(days=1)
    bank.opt_out("opted_out", (later, True))
    bank.opt_out("flip_in", (earlier, True), (later, False))
    bank.opt_out("flip_out", (earlier, False), (later, True))
    # Plain values: the tests read them in sessions of their own.
    tubes = {
        name: [plain(x) for x in value] if isinstance(value, list) else plain(value)
        for name, value in vars(t).items()
        if name != "excluded"
    }
    tubes["excluded"] = {role: plain(tube) for role, tube in t.excluded.items()}
    people_of = {
        role: SimpleNamespace(n=p.n, id=p.id, pseudonym=p.pseudonym, coi=p.coi)
        for role, p in bank.patients.items()
    }
    return SimpleNamespace(t=SimpleNamespace(**tubes), p=people_of)


def plain(item: Item) -> SimpleNamespace:
    return SimpleNamespace(id=item.id, code=item.code)


def stored_bag(app, session, people, episode) -> Item:
    """A released product bag of the episode, shipped, received and stored at RH."""
    bag = quarantined_lot(app, session, people, episode).bags[0]
    perform_action(
        session,
        actor=actor(session, people["qp"]),
        code=bag.code,
        action=Action.RELEASE,
        password=PASSWORD,
        witness=second_person(session, people["maker"]),
    )
    maker, tech = actor(session, people["maker"]), actor(session, people["tech"])
    perform_action(
        session, actor=maker, code=bag.code, action=Action.SHIP, move=Move(custodian="courier")
    )
    witness = second_person(session, people["manager"])
    perform_action(session, actor=tech, code=bag.code, action=Action.RECEIVE, witness=witness)
    perform_action(
        session, actor=tech, code=bag.code, action=Action.STORE, move=Move(location="RH-LN2")
    )
    return bag


@pytest.fixture
def biobank(app, people):
    with app.app_context():
        return build(app, lims_db.session(), people)


def test_setup_reaches_the_states_the_rules_are_about(app, biobank):
    t = biobank.t
    with app.app_context():
        session = lims_db.session()

        def state(tube):
            return session.get(Item, tube.id).state

        assert state(t.apheresis) is State.STORED and state(t.bag) is State.STORED
        assert session.get(Item, t.thawed.id).thaw_count == 1
        assert [state(x) for x in (t.reserved, t.checked_out, t.unstored)] == [
            State.RESERVED,
            State.CHECKED_OUT,
            State.REGISTERED,
        ]
        assert state(t.excluded["withdrawn"]) is State.STORED
        assert holds.open_holds(session, t.excluded["withdrawn"].id) == []
        assert len(holds.open_holds(session, t.held.id)) == 1


# -- what is available ------------------------------------------------------------------------


def ids(session, filters: SearchFilters) -> set[int]:
    return set(session.scalars(available(filters)))


def test_available_is_exactly_the_stored_eligible_aliquots(app, biobank):
    t = biobank.t
    with app.app_context():
        session = lims_db.session()
        expected = {
            *(x.id for x in t.d7),
            t.cleared.id,  # its hold was cleared
            t.serum.id,
            *(x.id for x in t.d28),
            t.pbmc.id,
            t.untimed.id,
            *(x.id for x in t.at_auh),
            t.d0.id,
            t.flip_in.id,  # registered once, but the latest check says not
        }
        assert ids(session, SearchFilters()) == expected


@pytest.mark.parametrize(
    "tube",
    [
        "held",
        "reserved",
        "checked_out",
        "unstored",
        "apheresis",
        "bag",
        "no_consent",
        "withdrawn",
        "opted_out",
        "flip_out",
    ],
)
def test_each_exclusion_keeps_its_tube_out(app, biobank, tube):
    t = biobank.t
    excluded = t.excluded.get(tube) or getattr(t, tube)
    with app.app_context():
        session = lims_db.session()
        assert excluded.id not in ids(session, SearchFilters())
        # Not even when the filters name it exactly.
        assert excluded.id not in ids(session, SearchFilters(study="CART-01"))


def test_the_latest_opt_out_check_wins(app, biobank, people):
    def check(session, role, registered, at):
        session.add(
            OptOutCheck(
                patient_id=biobank.p[role].id,
                checked_at=at,
                checked_by_id=people["manager"].id,
                registered=registered,
            )
        )
        session.commit()

    t = biobank.t
    with app.app_context():
        session = lims_db.session()
        assert t.flip_in.id in ids(session, SearchFilters())
        check(session, "flip_in", True, lims_db.utcnow())
        assert t.flip_in.id not in ids(session, SearchFilters())
        # A later "not registered" brings the patient's material back.
        check(session, "opted_out", False, lims_db.utcnow())
        assert t.excluded["opted_out"].id in ids(session, SearchFilters())
        # Two checks at the same moment: the one recorded last counts.
        same = lims_db.utcnow()
        check(session, "opted_out", False, same)
        check(session, "opted_out", True, same)
        assert t.excluded["opted_out"].id not in ids(session, SearchFilters())
        check(session, "flip_in", True, same)
        check(session, "flip_in", False, same)
        assert t.flip_in.id in ids(session, SearchFilters())


# -- the grouped search -----------------------------------------------------------------------


def groups_of(result, biobank) -> list[tuple]:
    """The groups with the subject's role instead of the random pseudonym."""
    role = {p.pseudonym: r for r, p in biobank.p.items()}
    return [
        (
            g.study,
            g.product,
            role[g.pseudonym],
            g.timepoint,
            g.timepoint_day,
            {m.value: n for m, n in g.counts.items()},
            g.total,
        )
        for g in result.groups
    ]


def expected_order(biobank, groups: list[tuple]) -> list[tuple]:
    """Sorted as the search sorts: study, pseudonym, day (none last), timepoint."""
    pseudonym = {r: p.pseudonym for r, p in biobank.p.items()}
    return sorted(
        groups,
        key=lambda g: (g[0], pseudonym[g[2]], g[4] is None, g[4] or 0, g[3] or "", g[1]),
    )


ALL_GROUPS = [
    ("CART-01", "Yescarta", "a", "baseline", -7, {"pbmc": 1}, 1),
    ("CART-01", "Yescarta", "a", "D7", 7, {"plasma": 4, "serum": 1}, 5),
    ("CART-01", "Yescarta", "a", "D28", 28, {"plasma": 2}, 2),
    ("CART-01", "Yescarta", "a", None, None, {"plasma": 1}, 1),
    ("CART-01", "Kymriah", "b", "D7", 7, {"plasma": 2}, 2),
    ("CART-01", "Yescarta", "flip_in", "D7", 7, {"plasma": 1}, 1),
    ("CART-02", "Yescarta", "c", "D0", 0, {"plasma": 1}, 1),
]


def test_search_groups_by_subject_and_timepoint_with_counts(app, biobank):
    with app.app_context():
        result = search.search(lims_db.session(), SearchFilters())
        assert groups_of(result, biobank) == expected_order(biobank, ALL_GROUPS)
        assert (result.total_groups, result.total_aliquots) == (7, 13)
        assert (result.page, result.per_page, result.pages) == (1, 50, 1)
        assert result.material_types == [PBMC, PLASMA, SERUM]


def only(*picked):
    return [g for g in ALL_GROUPS if (g[2], g[3]) in picked]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"study": "cart-02"}, only(("c", "D0"))),
        ({"study": "CART-01", "product": "KYMRIAH"}, only(("b", "D7"))),
        (
            {"material_type": "serum"},
            [("CART-01", "Yescarta", "a", "D7", 7, {"serum": 1}, 1)],
        ),
        ({"material_type": "PBMC"}, only(("a", "baseline"))),
        ({"timepoint": "d28"}, only(("a", "D28"))),
        (
            {"day_from": "0", "day_to": "7"},
            only(("a", "D7"), ("b", "D7"), ("flip_in", "D7"), ("c", "D0")),
        ),
        ({"day_from": 20}, only(("a", "D28"))),
        ({"day_to": "-1"}, only(("a", "baseline"))),
        (
            {"min_quantity": "0.8"},
            [
                ("CART-01", "Yescarta", "a", "baseline", -7, {"pbmc": 1}, 1),
                ("CART-01", "Yescarta", "a", "D7", 7, {"plasma": 1}, 1),
                ("CART-01", "Yescarta", "a", "D28", 28, {"plasma": 2}, 2),
            ],
        ),
        (
            {"max_thaws": "0", "timepoint": "D7", "study": "CART-01", "product": "Yescarta"},
            [
                ("CART-01", "Yescarta", "a", "D7", 7, {"plasma": 3, "serum": 1}, 4),
                ("CART-01", "Yescarta", "flip_in", "D7", 7, {"plasma": 1}, 1),
            ],
        ),
        (
            {"max_thaws": 1, "timepoint": "D7", "product": "Yescarta", "material_type": "serum"},
            [("CART-01", "Yescarta", "a", "D7", 7, {"serum": 1}, 1)],
        ),
        ({"site": "auh"}, only(("b", "D7"))),
        ({"site": "OUH"}, []),
        ({"study": "no such study"}, []),
    ],
)
def test_every_filter(app, biobank, filters, expected):
    with app.app_context():
        result = search.search(lims_db.session(), SearchFilters.from_mapping(filters))
        assert groups_of(result, biobank) == expected_order(biobank, expected)
        assert result.total_groups == len(expected)
        assert result.total_aliquots == sum(g[-1] for g in expected)


def test_paging_keeps_the_totals_of_the_whole_filter(app, biobank):
    ordered = expected_order(biobank, ALL_GROUPS)
    with app.app_context():
        session = lims_db.session()
        seen = []
        for page in (1, 2, 3):
            result = search.search(session, SearchFilters(), page=page, per_page=3)
            assert (result.total_groups, result.total_aliquots, result.pages) == (7, 13, 3)
            seen += groups_of(result, biobank)
        assert seen == ordered
        beyond = search.search(session, SearchFilters(), page=4, per_page=3)
        assert (beyond.groups, beyond.total_groups, beyond.total_aliquots) == ([], 7, 13)
        nothing = search.search(session, SearchFilters(site="OUH"))
        assert (nothing.groups, nothing.total_groups, nothing.total_aliquots) == ([], 0, 0)
        assert nothing.pages == 1


@pytest.mark.parametrize(
    ("page", "per_page", "field"),
    [(0, 50, "page"), (1, 0, "per_page"), (1, 501, "per_page"), ("x", 50, "page"),
     (True, 50, "page"), (1, -5, "per_page")],
)  # fmt: skip
def test_bad_paging_is_refused(app, biobank, page, per_page, field):
    with app.app_context(), pytest.raises(ValidationError) as refused:
        search.search(lims_db.session(), SearchFilters(), page=page, per_page=per_page)
    assert refused.value.field == field


def test_group_aliquots_lists_the_tubes_of_one_group(app, biobank):
    t, a = biobank.t, biobank.p["a"]
    with app.app_context():
        session = lims_db.session()
        rows = group_aliquots(session, SearchFilters(), a.pseudonym.lower(), "d7")
        plasma = sorted([*t.d7, t.cleared], key=lambda x: x.code)
        assert [(r.item_id, r.code, r.material_type) for r in rows] == [
            *((x.id, x.code, PLASMA) for x in plasma),
            (t.serum.id, t.serum.code, SERUM),
        ]
        by_code = {r.code: r for r in rows}
        thawed = by_code[t.thawed.code]
        assert (thawed.quantity, thawed.unit, thawed.thaw_count) == (Decimal("0.5"), "mL", 1)
        assert by_code[t.cleared.code].quantity == Decimal("0.8")
        first = rows[0]
        assert (first.site, first.pseudonym, first.timepoint, first.timepoint_day) == (
            "RH",
            a.pseudonym,
            "D7",
            7,
        )
        assert (first.study, first.product) == ("CART-01", "Yescarta")
        # The filters apply; the group without a timepoint; another site's tubes.
        assert [
            r.code
            for r in group_aliquots(
                session, SearchFilters(max_thaws=0, material_type="serum"), a.pseudonym, "D7"
            )
        ] == [t.serum.code]
        assert [r.code for r in group_aliquots(session, SearchFilters(), a.pseudonym, None)] == [
            t.untimed.code
        ]
        b_rows = group_aliquots(session, SearchFilters(), biobank.p["b"].pseudonym, "D7")
        assert [(r.code, r.site, r.product) for r in b_rows] == [
            (x.code, "AUH", "Kymriah") for x in sorted(t.at_auh, key=lambda x: x.code)
        ]
        withdrawn = biobank.p["withdrawn"].pseudonym
        assert group_aliquots(session, SearchFilters(), withdrawn, "D7") == []
        with pytest.raises(ValidationError) as refused:
            group_aliquots(session, SearchFilters(), "  ", "D7")
        assert refused.value.field == "pseudonym"
        with pytest.raises(ValidationError) as refused:
            group_aliquots(session, SearchFilters(), a.pseudonym, "D\x007")
        assert refused.value.field == "timepoint"


# -- criteria requests ------------------------------------------------------------------------


def test_criteria_choose_the_fewest_thaws_then_the_most_then_the_code(app, biobank):
    t, p = biobank.t, biobank.p
    d7 = sorted(t.d7[:2], key=lambda x: x.code)  # the two unthawed 0.5 mL tubes
    with app.app_context():
        session = lims_db.session()
        resolution = resolve_criterion(
            session,
            study="CART-01",
            material_type="plasma",
            timepoints=["D7", "d28"],
            per_subject=2,
        )
        chosen = {t.cleared.id, d7[0].id, *(x.id for x in t.d28), *(x.id for x in t.at_auh)}
        chosen.add(t.flip_in.id)
        assert set(resolution.items) == chosen and len(resolution.items) == 7
        assert resolution.shortfall == sorted_lines(
            p,
            [("b", "d28", 0, 2), ("flip_in", "D7", 1, 2), ("flip_in", "d28", 0, 2)],
            order=["D7", "d28"],
        )
        assert resolution.shortfall_text == "\n".join(resolution.shortfall)
        # Three per subject: the thawed tube still comes last.
        three = resolve_criterion(
            session, study="CART-01", material_type="plasma", timepoints="D7", per_subject=3
        )
        a_items = [i for i in three.items if i in {x.id for x in [*t.d7, t.cleared]}]
        assert a_items == [t.cleared.id, d7[0].id, d7[1].id]
        # Excluded ids (already in the request) are passed over; max thaws and quantity apply.
        four = resolve_criterion(
            session,
            study="CART-01",
            material_type="plasma",
            timepoints=["D7"],
            per_subject=4,
            max_thaws=0,
            # More ids than a statement takes as parameters (SQLite: 32,766).
            exclude_item_ids=[t.cleared.id, *range(10**6, 10**6 + 40_000)],
            site="RH",
        )
        assert four.items == sorted_items(p, {"a": [d7[0].id, d7[1].id], "flip_in": [t.flip_in.id]})
        assert four.shortfall == sorted_lines(
            p, [("a", "D7", 2, 4), ("b", "D7", 0, 4), ("flip_in", "D7", 1, 4)], order=["D7"]
        )
        big = resolve_criterion(
            session, study="CART-01", material_type="plasma", timepoints=["D7"], min_quantity="0.8"
        )
        assert big.items == [t.cleared.id]


def sorted_lines(people, lines, order) -> list[str]:
    """Shortfall lines sorted as the resolution sorts them: pseudonym, then asked order."""
    ranked = sorted(lines, key=lambda x: (people[x[0]].pseudonym, order.index(x[1])))
    return [f"{people[r].pseudonym} {tp}: {n} of {want}" for r, tp, n, want in ranked]


def sorted_items(people, by_role) -> list[int]:
    return [i for role in sorted(by_role, key=lambda r: people[r].pseudonym) for i in by_role[role]]


def by_code(tubes) -> list:
    return sorted(tubes, key=lambda x: x.code)


def test_criteria_for_every_timepoint(app, biobank):
    t, p = biobank.t, biobank.p
    with app.app_context():
        session = lims_db.session()
        serum = resolve_criterion(session, study="cart-01", material_type="serum", per_subject=1)
        assert serum.items == [t.serum.id]
        # b and flip_in never had serum: one line each, for any timepoint.
        assert serum.shortfall == sorted(
            f"{p[r].pseudonym} any timepoint: 0 of 1" for r in ("b", "flip_in")
        )
        plasma = resolve_criterion(session, study="CART-01", material_type="plasma", per_subject=2)
        d7 = sorted(t.d7[:2], key=lambda x: x.code)
        # By subject, then day (D7, D28, the tube without a timepoint last), then preference.
        expected = {
            "a": [t.cleared.id, d7[0].id, *(x.id for x in by_code(t.d28)), t.untimed.id],
            "b": [x.id for x in by_code(t.at_auh)],
            "flip_in": [t.flip_in.id],
        }
        assert plasma.items == sorted_items(p, expected)
        a = p["a"].pseudonym
        lines = [f"{a} (no timepoint): 1 of 2", f"{p['flip_in'].pseudonym} D7: 1 of 2"]
        assert plasma.shortfall == sorted(lines, key=lambda line: line.split()[0])


def test_the_shortfall_is_bounded(app, biobank, monkeypatch):
    p = biobank.p
    monkeypatch.setattr(search, "SHORTFALL_LINES", 4)
    with app.app_context():
        resolution = resolve_criterion(
            lims_db.session(),
            study="CART-01",
            material_type="dna",
            timepoints=["D0", "D7", "D14"],
            per_subject=1,
        )
    assert resolution.items == []
    everyone = sorted(p[r].pseudonym for r in ("a", "b", "flip_in"))
    assert resolution.shortfall == [
        f"{everyone[0]} D0: 0 of 1",
        f"{everyone[0]} D7: 0 of 1",
        f"{everyone[0]} D14: 0 of 1",
        f"{everyone[1]} D0: 0 of 1",
        "… and 5 more",
    ]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"study": ""}, "study"),
        ({"material_type": ""}, "material_type"),
        ({"material_type": "car_t_product"}, "material_type"),
        ({"per_subject": 0}, "per_subject"),
        ({"per_subject": 101}, "per_subject"),
        ({"per_subject": None}, "per_subject"),
        ({"timepoints": 7}, "timepoints"),
        ({"timepoints": ["D7", "x" * 121]}, "timepoints"),
        ({"timepoints": [f"D{n}" for n in range(51)]}, "timepoints"),
        ({"exclude_item_ids": ["1"]}, "exclude_item_ids"),
        ({"min_quantity": "-1"}, "min_quantity"),
        ({"max_thaws": -1}, "max_thaws"),
        ({"site": "R\x00H"}, "site"),
    ],
)
def test_bad_criteria_are_refused(app, biobank, options, field):
    criterion = {"study": "CART-01", "material_type": "plasma", "per_subject": 1} | options
    with app.app_context(), pytest.raises(ValidationError) as refused:
        resolve_criterion(lims_db.session(), **criterion)
    assert refused.value.field == field


# -- checking the filter values (no database) -------------------------------------------------


def test_from_mapping_takes_a_query_string():
    query = MultiDict(
        [
            ("study", "  CART-01 "),
            ("product", ""),
            ("material_type", "Cell pellet"),
            ("timepoint", "d7"),
            ("day_from", "-7"),
            ("day_to", " 28 "),
            ("min_quantity", "0,5"),
            ("max_thaws", "2"),
            ("site", "rh"),
            ("page", "3"),
            ("site", "OUH"),
        ]
    )
    filters = SearchFilters.from_mapping(query)
    assert dataclasses.asdict(filters) == {
        "study": "CART-01",
        "product": None,
        "material_type": MaterialType.CELL_PELLET,
        "timepoint": "d7",
        "day_from": -7,
        "day_to": 28,
        "min_quantity": Decimal("0.5"),
        "max_thaws": 2,
        "site": "RH",
    }
    assert SearchFilters.from_mapping({}) == SearchFilters()
    assert SearchFilters.from_mapping({"day_from": 3.0, "min_quantity": 1.5}).given() == {
        "day_from": "3",
        "min_quantity": "1.5",
    }


LONG = "x" * 121


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("material_type", "blood"),
        ("material_type", "leukapheresis"),
        ("material_type", 5),
        ("study", LONG),
        ("study", "CART\x0001"),
        ("study", ["CART-01"]),
        ("product", LONG),
        ("product", "Yes\x00"),
        ("timepoint", LONG),
        ("timepoint", "D\x007"),
        ("site", LONG),
        ("site", "R\x00H"),
        ("day_from", "seven"),
        ("day_from", "1.5"),
        ("day_from", 1.5),
        ("day_from", "nan"),
        ("day_from", float("inf")),
        ("day_from", "99999999"),
        ("day_from", True),
        ("day_to", "-40000"),
        ("day_to", {"x": 1}),
        ("min_quantity", "-0.1"),
        ("min_quantity", "NaN"),
        ("min_quantity", "inf"),
        ("min_quantity", float("nan")),
        ("min_quantity", "1e400"),
        ("min_quantity", "abc"),
        ("min_quantity", "1" * 121),
        ("min_quantity", False),
        ("max_thaws", "-1"),
        ("max_thaws", "two"),
        ("max_thaws", 1001),
        ("max_thaws", "1\x00"),
    ],
)
def test_bad_filter_values_are_refused_naming_the_field(field, value):
    with pytest.raises(ValidationError) as refused:
        SearchFilters.from_mapping({field: value})
    assert refused.value.field == field
    with pytest.raises(ValidationError):
        SearchFilters(**{field: value})


def test_days_must_run_forwards():
    assert SearchFilters(day_from=7, day_to=7).day_to == 7
    with pytest.raises(ValidationError) as refused:
        SearchFilters.from_mapping({"day_from": "28", "day_to": "7"})
    assert refused.value.field == "day_to"


# -- nothing identifying ---------------------------------------------------------------------


def identifying_strings(biobank) -> list[str]:
    found = []
    for person in biobank.p.values():
        number = cpr(person.n)
        born = date(1900 + int(number[4:6]), int(number[2:4]), int(number[:2]))
        found += [number, f"{number[:6]}-{number[6:]}", f"Patient {person.n}", person.coi]
        found += [born.isoformat(), born.strftime("%d-%m-%Y"), born.strftime("%d.%m.%Y")]
    today = lims_db.utcnow().date()
    found += [today.isoformat(), (today - timedelta(days=1)).isoformat(), "datetime", "date("]
    return found


def test_no_identity_or_calendar_date_in_any_result(app, biobank):
    p = biobank.p
    with app.app_context():
        session = lims_db.session()
        results = [
            search.search(session, SearchFilters()),
            group_aliquots(session, SearchFilters(), p["a"].pseudonym, "D7"),
            group_aliquots(session, SearchFilters(), p["b"].pseudonym, "D7"),
            resolve_criterion(session, study="CART-01", material_type="plasma", per_subject=2),
            resolve_criterion(
                session, study="CART-01", material_type="plasma", timepoints=["D0", "D7"]
            ),
        ]
    text = repr(results)
    for secret in identifying_strings(biobank):
        assert secret not in text, secret
    # The rows carry no episode id, no date, nothing beyond the researcher's columns.
    row_fields = {f.name for f in dataclasses.fields(search.AliquotRow)}
    assert row_fields == {
        "item_id", "code", "material_type", "quantity", "unit", "thaw_count", "site",
        "pseudonym", "timepoint", "timepoint_day", "study", "product",
    }  # fmt: skip
    group_fields = {f.name for f in dataclasses.fields(search.SearchGroup)}
    assert group_fields == {
        "study", "product", "pseudonym", "timepoint", "timepoint_day", "counts", "total",
    }  # fmt: skip
    for value in (*results[1], *results[0].groups):
        for field in dataclasses.fields(value):
            assert not isinstance(getattr(value, field.name), date | datetime)
