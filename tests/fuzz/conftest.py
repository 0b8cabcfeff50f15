"""What the fuzz tests share: one seeded world per test module, and the checks of every case.

The world is a small CAR-T network (``build_cast``) with its joint biobank (``build_biobank``)
and one of everything a URL can name: a collection, a released bag of a lot, two shipments
(packing, in transit), a draft, a submitted and an approved request, a hold, a rack
verification waiting for a manager, a notification, an API token, a spare freezer, a locked
account for the admin pages. It is built once per module and backend, so the examples of
every route run against real objects; the tables are emptied after the module.

Each case compares the row count of every table and the audit chain's head before and after
a refused request: a refusal changes nothing. A 5xx is never acceptable; its traceback (the
app logs it before answering "Something went wrong") goes into the failure message.

The budget: a few examples per route (``LIMS_FUZZ_EXAMPLES``, default 5), derandomized, no
example database, no deadline, so a CI run is the same every time and takes about a minute
per backend. Set ``LIMS_FUZZ_EXAMPLES=100`` for a deep run on a workstation.
"""

from __future__ import annotations

import functools
import html
import itertools
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from sqlalchemy import select, text, update

from lims import create_app
from lims import db as lims_db
from lims.auth import services as accounts
from lims.auth.access import PUBLIC, declared_access
from lims.auth.models import Role, User
from lims.custody import holds, production
from lims.custody.domain import Action
from lims.custody.models import HoldReason, Item
from lims.custody.services import Move, perform_action
from lims.db import Base
from lims.requests import review
from lims.requests import services as requests
from lims.requests.models import Notification
from lims.shipments import services as shipments
from lims.storage import services as storage
from lims.storage import verification
from tests.conftest import (
    ENVIRONMENT,
    PASSWORD,
    csrf_token,
    empty_tables,
    log_in,
    settings_for,
    user_factory,
)
from tests.integration.biobank import STUDY, build_biobank
from tests.integration.people import actor, build_cast, new_episode, second_person

EXAMPLES = int(os.environ.get("LIMS_FUZZ_EXAMPLES", "5"))

#: Every fuzz test runs with these: deterministic, bounded, no stored examples.
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # Shrinking replays a failing case many times against a database the earlier replays
    # changed; the case as found, with its traceback, is the better report.
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large),
    print_blob=False,
)

#: One more than the largest INTEGER (PostgreSQL's id columns) and than the largest BIGINT
#: (SQLite's); Flask's <int:> converter takes a number of any size.
BEYOND_INTEGER, BEYOND_BIGINT = 2**31, 2**63

DRAWN = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
LOT = "L-FUZZ-1"


# -- garbage ----------------------------------------------------------------------------------

#: Values that have broken form handlers somewhere: numbers a float or an int cannot hold,
#: dates that do not exist, text that is not what it looks like, and very long text.
NASTY_TEXT: tuple[str, ...] = (
    "", " ", "0", "-1", "-0", "1.5", "1e309", "-1e309", "NaN", "nan", "inf", "-Infinity",
    "9" * 40, "-" + "9" * 30, "0x1F", "1_000", "²", "𝟗", "½",
    "١٢٣",  # Arabic-Indic digits: int() takes them
    "\u202egnp.exe", "\ufeffA1", "😀", "<script>alert(1)</script>", "' OR 1=1 --", "%s%n%x",
    "../../etc/passwd", "A1", "Z99", "\r\n", "\t", "\x00", "a\x00b", "x" * 100_000, "é" * 5_000,
    "2025-02-30", "2025-13-01T25:61:00", "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00Z",
    "true", "null", "[]", "{}",
)  # fmt: skip

#: Text hypothesis makes up: any printable or control character except surrogates (which no
#: browser can send), NUL included now and then through NASTY_TEXT.
_CHARACTERS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")


def garbage_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(NASTY_TEXT),
        st.text(_CHARACTERS, max_size=40),
        st.integers().map(str),
        st.floats().map(str),
    )


# -- the state of the database ----------------------------------------------------------------


def snapshot(app: Flask) -> dict[str, int]:
    """Row count of every table and the audit chain's head: what a refusal must not change."""
    counts = " UNION ALL ".join(
        f"SELECT '{table.name}', COUNT(*) FROM \"{table.name}\""
        for table in Base.metadata.sorted_tables
    )
    with app.app_context():
        session = lims_db.session()
        state = {name: count for name, count in session.execute(text(counts))}
        state["audit_head.seq"] = session.scalar(text("SELECT seq FROM audit_head"))
        session.rollback()
    return state


def changes(before: dict[str, int], after: dict[str, int]) -> dict[str, tuple[int, int]]:
    return {name: (before[name], after[name]) for name in before if before[name] != after[name]}


class ServerErrors(logging.Handler):
    """Keeps the tracebacks the app logs when it answers 500 (lims.web._server_error)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.tracebacks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.tracebacks.append(self.format(record))

    def take(self) -> str:
        found, self.tracebacks = "\n".join(self.tracebacks), []
        return found


def unlock_everyone(app: Flask) -> None:
    """Wrong passwords are part of the fuzz; reset the lockout counters between cases (of
    the cast: the admin pages' own target account keeps its state)."""
    with app.app_context():
        session = lims_db.session()
        session.execute(
            update(User).where(User.username != "victim").values(failed_logins=0, locked_until=None)
        )
        session.commit()


#: Who sends, most capable first (a derandomized run starts with the first): cast members
#: per role. RH runs the biobank; AUH makes the product lot; the bank's researcher owns the
#: requests.
SENDERS: dict[Role, tuple[str, ...]] = {
    Role.MANAGER: ("manager", "qp"),
    Role.TECHNICIAN: ("tech", "maker", "elsewhere"),
    Role.RESEARCHER: ("bank_researcher", "researcher"),
    Role.ADMIN: ("admin",),
}


def posters(world: World, endpoint: str) -> list[str]:
    """The cast members who may call ``endpoint`` ("anonymous" for a public one)."""
    access = declared_access(world.app, endpoint)
    if access == PUBLIC:
        return ["anonymous"]
    return [person for role in Role if role in access for person in SENDERS[role]]


# -- the world --------------------------------------------------------------------------------


@dataclass
class World:
    app: Flask
    people: dict[str, SimpleNamespace]
    bank: SimpleNamespace
    #: Real values for each kind of URL variable (see value_kind).
    values: dict[str, list[str]]
    server_errors: ServerErrors
    clients: dict[str, Any] = field(default_factory=dict)
    #: The CSRF token of each client's session (valid as long as the session).
    csrf: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def token_for(self, person: str) -> str:
        """An API token of the cast member ``person`` (made once per module)."""
        if person not in self.tokens:
            with self.app.app_context():
                session = lims_db.session()
                account = session.get(User, self.people[person].id)
                _, self.tokens[person] = accounts.create_api_token(
                    session, actor=None, user=account
                )
        return self.tokens[person]

    def client_for(self, person: str):
        """A test client logged in as the cast member ``person`` (kept for the module)."""
        if person not in self.clients:
            client = self.app.test_client()
            response = log_in(client, self.people[person].username)
            assert response.status_code == 302, f"{person} could not log in"
            self.clients[person] = client
            self.csrf[person] = csrf_token(client, "/")
        return self.clients[person]

    def logged_out(self, person: str) -> None:
        """Forget the client of ``person``: the next case logs in again."""
        self.clients.pop(person, None)


def site_factory(app: Flask):
    def make_site(code: str, **fields) -> SimpleNamespace:
        with app.app_context():
            site = accounts.create_site(
                lims_db.session(), actor=None, code=code, name=f"Hospital {code}", **fields
            )
            return SimpleNamespace(id=site.id, code=site.code)

    return make_site


#: Usernames stay unique across the factories of a session.
_NUMBERS = itertools.count(1)


def fuzz_user_factory(app: Flask):
    return user_factory(app, prefix="fuzz", name="Fuzz", numbers=_NUMBERS)


def _released_lot(session, app: Flask, people) -> tuple[str, str]:
    """A collection of an RH patient made into lot LOT at AUH, its bag released: the bag."""
    tech, maker = actor(session, people["tech"]), actor(session, people["maker"])
    episode = new_episode(session, tech, n=40)
    source = production.register_collection(
        session, actor=tech, coi=episode.coi, volume_ml=200, collected_at=DRAWN
    )
    perform_action(
        session, actor=tech, code=source.code, action=Action.SHIP, move=Move(custodian="c")
    )
    for step in (Action.RECEIVE, Action.START_MANUFACTURING):
        perform_action(session, actor=maker, code=source.code, action=step)
    lot = production.create_lot(
        session,
        actor=maker,
        lot_number=LOT,
        apheresis_codes=[source.code],
        bags=[production.BagSpec(volume_ml=40), production.BagSpec(volume_ml=40)],
    )
    bag = lot.bags[0].code
    perform_action(session, actor=maker, code=bag, action=Action.QUARANTINE)
    for test in app.config["LIMS"]["custody"]["required_qc"]:
        production.add_qc_result(
            session, actor=maker, lot_number=LOT, test=test, value="ok", passed=True
        )
    perform_action(
        session,
        actor=actor(session, people["qp"]),
        code=bag,
        action=Action.RELEASE,
        password=PASSWORD,
        witness=second_person(session, people["maker"]),
    )
    return bag, episode.coi


def _collection(session, tech, bank) -> str:
    return production.register_collection(
        session, actor=tech, coi=bank.cois[2], volume_ml=100, collected_at=DRAWN
    ).code


def build_world(app: Flask, server_errors: ServerErrors) -> World:
    make_site, make_user = site_factory(app), fuzz_user_factory(app)
    people = build_cast(make_site, make_user)
    bank = build_biobank(app, people, make_user)
    #: The account the admin pages edit, lock and reset: never one the fuzz logs in as.
    people["victim"] = make_user("technician", site_code="HGH", username="victim")
    people["bank_researcher"] = bank.researcher
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        researcher = actor(session, bank.researcher)
        subjects = bank.pseudonyms
        tubes = {key: list(codes) for key, codes in bank.tubes.items()}

        collection = production.register_collection(
            session, actor=tech, coi=bank.cois[1], volume_ml=150, collected_at=DRAWN
        ).code
        bag, lot_coi = _released_lot(session, app, people)

        packing = shipments.create_shipment(
            session, actor=tech, to_site_code="AUH", conditions="dry_ice"
        ).code
        shipments.add_to_shipment(
            session,
            actor=tech,
            shipment_code=packing,
            scan=_collection(session, tech, bank),
            manual=False,
        )
        in_transit = shipments.create_shipment(
            session, actor=tech, to_site_code="OUH", conditions="dry_ice"
        ).code
        shipments.add_to_shipment(
            session,
            actor=tech,
            shipment_code=in_transit,
            scan=_collection(session, tech, bank),
            manual=False,
        )
        shipments.dispatch_shipment(
            session, actor=tech, shipment_code=in_transit, courier="Karl Collector"
        )

        details = {
            "title": "Cytokine kinetics after CAR-T",
            "principal_investigator": "Prof. Ida Immun",
            "ethics_ref": "H-24012345",
            "dpa_ref": "P-2025-77",
            "intended_analyses": "Luminex cytokine panel",
            "delivery": "pick_up",
            "delivery_details": "Collected by the group's technician",
        }
        draft = requests.create_request(session, actor=researcher, **details).code
        requests.add_items(
            session, actor=researcher, code=draft, item_codes=[tubes[(subjects[0], "D0")][0]]
        )
        criterion = requests.add_criterion(
            session, actor=researcher, code=draft, study=STUDY, material_type="plasma"
        ).id
        submitted = requests.create_request(session, actor=researcher, **details).code
        requests.add_items(
            session, actor=researcher, code=submitted, item_codes=[tubes[(subjects[1], "D7")][0]]
        )
        requests.submit(session, actor=researcher, code=submitted)
        approved = requests.create_request(session, actor=researcher, **details).code
        requests.add_items(
            session, actor=researcher, code=approved, item_codes=[tubes[(subjects[2], "D0")][0]]
        )
        requests.submit(session, actor=researcher, code=approved)
        manager = actor(session, people["manager"])
        review.start_review(session, actor=manager, code=approved)
        review.record_opt_out_checks(session, actor=manager, code=approved)
        review.decide(session, actor=manager, code=approved, decision="approved", password=PASSWORD)
        # A second freezer at RH: somewhere to move a rack to or evacuate a unit into.
        storage.create_unit(
            session,
            actor=manager,
            code="RH-F20",
            name="Spare freezer",
            unit_type="freezer",
            temperature_class="minus_20",
        )
        # A locked account, so that the admin pages offer to unlock it.
        victim = session.get(User, people["victim"].id)
        victim.locked_until = datetime(2100, 1, 1, tzinfo=UTC)
        session.commit()

        held = tubes[(subjects[1], "D28")][0]
        hold = holds.place_hold(
            session,
            actor=tech,
            item=session.scalar(select(Item).where(Item.code == held)),
            reason=HoldReason.TEMPERATURE_EXCURSION,
            detail="Freezer alarm overnight",
        ).id
        report = verification.verify_box(
            session,
            actor=tech,
            box_code="RH-B2",
            file_bytes=b"Rack ID: RH-B2\r\nPosition,Barcode\r\nA01,ALIEN7\r\n",
            filename="scan.csv",
        ).id
        token = accounts.create_api_token(
            session, actor=None, user=actor(session, people["victim"])
        )[0].id
        notifications = [
            str(number) for number in session.scalars(select(Notification.id).limit(3))
        ]
        site_hgh = accounts.site_by_code(session, "HGH").id
        every_tube = [code for codes in tubes.values() for code in codes]
    values = {
        "item": [every_tube[0], collection, bag, held, bank.auh_tube, every_tube[-1]],
        "shipment": [packing, in_transit],
        "box": ["RH-B1", "RH-B2", "AUH-B1"],
        "rack": ["R1"],
        "unit": ["RH-F80", "AUH-F80", "RH-F20"],
        "location": ["RH-F80", "R1", "RH-B1"],
        "request": [draft, submitted, approved],
        "coi": [*bank.cois, lot_coi],
        "lot": [LOT],
        "pseudonym": list(bank.pseudonyms),
        "hold": [str(hold)],
        "notification": notifications or ["1"],
        "criterion": [str(criterion)],
        "verification": [str(report)],
        "token": [str(token)],
        "site": [str(site_hgh)],
        "user": [str(people["victim"].id)],
        "action": [action.value for action in Action],
        "study": [STUDY],
        "kind": ["layout", "inventory"],
        "fmt": ["csv", "xlsx"],
    }
    return World(app, people, bank, values, server_errors)


#: URL variables whose meaning depends on the path: (path prefix, variable) -> kind.
_BY_PREFIX: tuple[tuple[str, str, str], ...] = (
    ("/api/v1/storage/boxes/", "code", "box"),
    ("/api/v1/storage/locations/", "code", "location"),
    ("/api/v1/shipments/", "code", "shipment"),
    ("/api/v1/requests/", "code", "request"),
    ("/api/v1/requests/", "item", "item"),
    ("/storage/boxes/", "code", "box"),
    ("/storage/racks/", "code", "rack"),
    ("/storage/units/", "code", "unit"),
    ("/labels/boxes/", "code", "box"),
    ("/labels/shipments/", "code", "shipment"),
    ("/shipments/", "code", "shipment"),
    ("/requests/", "code", "request"),
)
_BY_NAME = {
    "code": "item",
    "item": "item",
    "coi": "coi",
    "lot_number": "lot",
    "pseudonym": "pseudonym",
    "hold_id": "hold",
    "notification_id": "notification",
    "criterion_id": "criterion",
    "verification_id": "verification",
    "token_id": "token",
    "site_id": "site",
    "user_id": "user",
    "action": "action",
    "study": "study",
    "kind": "kind",
    "fmt": "fmt",
}

URL_VARIABLE = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>|\{(\w+)\}")


def value_kind(path: str, name: str) -> str:
    for prefix, variable, kind in _BY_PREFIX:
        if path.startswith(prefix) and name == variable:
            return kind
    return _BY_NAME[name]


def fill_path(path: str, values: dict[str, str]) -> str:
    """A Flask rule (``<int:id>``) or an OpenAPI path (``{id}``) with its variables set."""
    from urllib.parse import quote

    def one(match: re.Match) -> str:
        name = match.group(2) or match.group(3)
        return quote(str(values[name]), safe="")

    return URL_VARIABLE.sub(one, path)


def path_variables(path: str) -> list[tuple[str, bool]]:
    """The variables of a rule or OpenAPI path and whether each is an integer."""
    return [
        (match.group(2) or match.group(3), match.group(1) == "int")
        for match in URL_VARIABLE.finditer(path)
    ]


def path_values(world: World, path: str, *, garbage: bool = True) -> st.SearchStrategy[dict]:
    """Values for a path's variables: real objects mostly, sometimes plausible garbage."""
    parts = {}
    for name, is_int in path_variables(path):
        real = st.sampled_from(world.values[value_kind(path, name)])
        if not garbage:
            parts[name] = real
        elif is_int:
            # Not a small number: that could be the id of a cast member the fuzz logs in as.
            parts[name] = st.one_of(real, st.integers(10**6, 2**63).map(str))
        else:
            parts[name] = st.one_of(real, st.text(_CHARACTERS, min_size=1, max_size=30))
    return st.fixed_dictionaries(parts)


@pytest.fixture(scope="module")
def world(database_url: str, tmp_path_factory) -> Iterator[World]:
    with pytest.MonkeyPatch.context() as environment:
        for name in ENVIRONMENT:  # as isolated_environment does for each test
            environment.delenv(name, raising=False)
        instance = tmp_path_factory.mktemp("fuzz-instance")
        app = create_app(overrides=settings_for(database_url, str(instance)))
        app.config["TESTING"] = True
        server_errors = ServerErrors()
        app.logger.addHandler(server_errors)
        try:
            yield build_world(app, server_errors)
        finally:
            app.logger.removeHandler(server_errors)
            engine = app.extensions["lims_engine"]
            empty_tables(engine)
            engine.dispose()


@functools.cache
def probe_app() -> Flask:
    """An app to read the routes from while the tests are collected (no database is opened)."""
    import tempfile

    with tempfile.TemporaryDirectory() as instance:
        app = create_app(overrides=settings_for("sqlite://", instance))
        app.extensions["lims_engine"].dispose()
    return app


# -- judging a case ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """One request of a fuzz case and what it did."""

    endpoint: str
    person: str
    #: The path requested (no query) and the request as shown in a report.
    path: str
    request: str
    status: int
    traceback: str = ""
    refused: bool = False
    moved: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Messages the answer showed (flashes, field errors, the JSON message).
    messages: list[str] = field(default_factory=list)
    #: What is wrong with the answer's form, if anything (e.g. an API refusal not in JSON).
    answer_problem: str = ""

    def describe(self) -> str:
        return f"{self.endpoint} as {self.person}: {self.request} -> {self.status}"


@dataclass(frozen=True)
class KnownBug:
    """A fault the fuzz found and reported: tolerated here (and traced) so that the
    rest of the fuzz keeps running; its own reproduction is an xfail(strict=True) test."""

    name: str
    reason: str
    #: Where it happens (empty: the signature alone decides).
    endpoints: frozenset[str]
    #: Tells this fault's outcome apart from any other on the same endpoints.
    signature: Callable[[Outcome], bool]

    def matches(self, outcome: Outcome) -> bool:
        if self.endpoints and outcome.endpoint not in self.endpoints:
            return False
        return bool(self.signature(outcome))


#: Bugs the fuzz found, tolerated (and traced) until fixed: none open.
KNOWN_BUGS: tuple[KnownBug, ...] = ()


#: Error messages that come with something recorded on purpose: a warning, not a refusal.
RECORDED_WITH_A_WARNING = re.compile(
    r"is out of specification: the lot's bags are on hold"  # a failed QC result, recorded
    r"|discrepancies in box"  # a rack scan that differs from the records, stored
    r"|^UNEXPECTED: "  # a tube found on arrival that was not sent, recorded
    r"|^Recorded with \d+ missing"  # a receipt completed with tubes missing
    r"|^TEMPERATURE EXCURSION"  # the logger's readings, stored, put items on hold
)


#: ``LIMS_FUZZ_TRACE=file``: one line per case (the request and its answer, refused or done,
#: what changed, the messages, a known bug met), to see what the fuzz reached.
TRACE = os.environ.get("LIMS_FUZZ_TRACE", "")


FLASH = re.compile(r'<div class="flash flash-(\w+)"[^>]*>(.*?)</div>', re.S)
FIELD_ERROR = re.compile(r'<div class="error" role="alert">(.*?)</div>', re.S)
ERROR_PAGE = re.compile(r'<section class="panel error-panel">.*?<p class="lead">(.*?)</p>', re.S)


def read_answer(response, client) -> tuple[bool, list[str]]:
    """Whether the answer is a refusal, and the messages it shows."""
    if response.status_code in (301, 302, 303, 307, 308):
        with client.session_transaction() as session:
            flashes = session.pop("_flashes", [])
    elif response.mimetype == "text/html":
        page = response.get_data(as_text=True)
        flashes = FLASH.findall(page) + [
            ("error", text) for text in FIELD_ERROR.findall(page) + ERROR_PAGE.findall(page)
        ]
    else:
        flashes = []
    flashes = [(category, html.unescape(text).strip()) for category, text in flashes]
    messages = [text for _, text in flashes]
    categories = {category for category, _ in flashes}
    errors = [text for category, text in flashes if category == "error"]
    warned = bool(errors) and all(RECORDED_WITH_A_WARNING.search(text) for text in errors)
    refused = response.status_code >= 400 or (
        "error" in categories and "success" not in categories and not warned
    )
    return refused, messages


def judge(outcome: Outcome) -> str | None:
    """The problem with this outcome, or None (also for a known bug, which is traced)."""
    known = next((bug.name for bug in KNOWN_BUGS if bug.matches(outcome)), "")
    if TRACE:
        with open(TRACE, "a", encoding="utf-8") as trace:
            print(
                outcome.describe()[:300].replace("\n", " "),
                "refused" if outcome.refused else "done",
                outcome.moved or "",
                " | ".join(outcome.messages)[:200].replace("\n", " "),
                f"known bug: {known}" if known else "",
                sep="\t",
                file=trace,
            )
    if known:
        return None
    if outcome.status >= 500:
        return f"{outcome.describe()}\n{outcome.traceback}"
    if outcome.answer_problem:
        return f"{outcome.describe()}: {outcome.answer_problem}"
    if outcome.refused and outcome.moved:
        return (
            f"{outcome.describe()} refused ({' | '.join(outcome.messages)[:300]}) but the "
            f"database changed: {outcome.moved}"
        )
    return None


def shown(data: Any, limit: int = 80) -> str:
    """The input of a case, short enough to read in a failure message."""

    def cut(value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            return f"{value[:limit]}...({len(value)} chars)"
        if isinstance(value, list):
            return [cut(part) for part in value[:5]]
        if isinstance(value, dict):
            return {cut(key): cut(part) for key, part in list(value.items())[:12]}
        return value

    return repr(cut(data))
