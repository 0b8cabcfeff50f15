"""The simulated users of ``benchmarks/load.py``: technicians and researchers, one thread
and one keep-alive HTTP connection each, and what they tally."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field

from lims.auth.models import Role

HTTP_TIMEOUT = 60.0
#: What a simulated technician does next, and how often.
TECHNICIAN_STEPS = {
    "scan": 45,
    "scan (unknown code)": 5,
    "box contents": 15,
    "check out and return": 20,
    "move and back": 15,
}
OPERATIONS = (
    "scan",
    "scan (unknown code)",
    "box contents",
    "check out",
    "return to storage",
    "move",
    "move back",
    "search",
)
#: A researcher's searches: the filters given, drawn from what the data set holds or from
#: these values.
SEARCHES = (
    (),
    ("study",),
    ("study", "material_type"),
    ("study", "material_type", "timepoint"),
    ("min_quantity",),
    ("site",),
    ("max_thaws",),
)
SEARCH_VALUES = {"min_quantity": ["0.5", "0.75", "1"], "max_thaws": ["0", "1", "2"]}


# -- who works on what ---------------------------------------------------------------------


@dataclass
class Tube:
    code: str
    box: str
    #: Where it was when the run began (the position's index and its name, e.g. ``C4``).
    index: int
    position: str


@dataclass
class OwnBox:
    code: str
    tubes: list[Tube]
    free: list[str]


@dataclass
class Person:
    role: Role
    token: str
    token_id: int
    boxes: list[OwnBox] = field(default_factory=list)

    @property
    def tubes(self) -> list[Tube]:
        return [tube for box in self.boxes for tube in box.tubes]


@dataclass
class Cast:
    technicians: list[Person]
    researchers: list[Person]
    #: What the data set holds to search for: studies, types, timepoints, sites.
    search_values: dict[str, list[str]]
    #: Every tube given out, as it was before the first run (checked after each run).
    tubes: list[Tube] = field(default_factory=list)

    @property
    def people(self) -> list[Person]:
        return self.technicians + self.researchers


# -- HTTP ------------------------------------------------------------------------------------


class Client:
    """One user's keep-alive connection; a failed connection is replaced at the next call."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self.connection: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object, float]:
        """(status, parsed JSON answer or the failure, milliseconds); status 0: no answer."""
        headers, data = dict(self.headers), None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=HTTP_TIMEOUT
                )
            self.connection.request(method, path, body=data, headers=headers)
            response = self.connection.getresponse()
            raw, status = response.read(), response.status
            if response.will_close:
                self.close()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return 0, repr(exc), (time.perf_counter() - started) * 1000
        millis = (time.perf_counter() - started) * 1000
        try:
            return status, json.loads(raw), millis
        except ValueError:
            return status, raw[:200].decode("utf-8", "replace"), millis

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@dataclass
class Tally:
    """One thread's answers: latencies of the good ones, conflicts and errors per operation."""

    millis: dict[str, list[float]] = field(default_factory=dict)
    conflicts: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    #: The answers that were not the expected ones: status and error code (or failure).
    refusals: Counter = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)

    def add(self, operation: str, status: int, answer: object, millis: float, good: bool) -> bool:
        if good:
            self.millis.setdefault(operation, []).append(millis)
            return True
        if status == 409:
            self.conflicts[operation] += 1
        else:
            self.errors[operation] += 1
        code = _field(answer, "error") or ("no answer" if status == 0 else "unexpected answer")
        self.refusals[f"{status} {code}"] += 1
        if len(self.samples) < 20:
            self.samples.append(f"{operation}: {status} after {millis:.0f} ms: {str(answer)[:300]}")
        return False

    def merge(self, other: Tally) -> None:
        for operation, values in other.millis.items():
            self.millis.setdefault(operation, []).extend(values)
        self.conflicts.update(other.conflicts)
        self.errors.update(other.errors)
        self.refusals.update(other.refusals)
        self.samples.extend(other.samples[: max(0, 20 - len(self.samples))])


def _path(*parts: str) -> str:
    return "/api/v1/" + "/".join(urllib.parse.quote(part, safe="") for part in parts)


def _field(answer: object, *keys: str) -> object:
    """``answer[key][key]...``, or None where the answer is not shaped so."""
    for key in keys:
        if not isinstance(answer, dict):
            return None
        answer = answer.get(key)
    return answer


class Technician:
    """A technician's scans and steps on the tubes of their own boxes."""

    def __init__(self, base_url: str, person: Person, tally: Tally, rng: random.Random) -> None:
        self.client = Client(base_url, person.token)
        self.person, self.tally, self.rng = person, tally, rng
        self.tubes = person.tubes
        #: Tubes whose pair was cut short: out of the mix, put back after the run.
        self.suspect: list[Tube] = []
        #: One of each step first, so that even a short run has every operation.
        self.opening = self.rng.sample(list(TECHNICIAN_STEPS), len(TECHNICIAN_STEPS))

    def step(self) -> None:
        kind = (
            self.opening.pop()
            if self.opening
            else self.rng.choices(list(TECHNICIAN_STEPS), weights=TECHNICIAN_STEPS.values())[0]
        )
        if kind == "move and back" and not any(b.free and b.tubes for b in self.person.boxes):
            kind = "check out and return"
        if kind in ("check out and return", "move and back", "scan") and not self.tubes:
            kind = "box contents"
        {
            "scan": self.scan,
            "scan (unknown code)": self.scan_unknown_code,
            "box contents": self.box_contents,
            "check out and return": self.check_out_and_return,
            "move and back": self.move_and_back,
        }[kind]()

    def _tube(self, box: OwnBox | None = None) -> Tube:
        return self.rng.choice(box.tubes if box else self.tubes)

    def _drop(self, tube: Tube) -> None:
        self.suspect.append(tube)
        self.tubes.remove(tube)
        for box in self.person.boxes:
            if tube in box.tubes:
                box.tubes.remove(tube)

    def scan(self) -> None:
        tube = self._tube()
        status, answer, millis = self.client.call("GET", _path("items", tube.code))
        good = status == 200 and _field(answer, "code") == tube.code
        self.tally.add("scan", status, answer, millis, good)

    def scan_unknown_code(self) -> None:
        code = f"NOSUCHTUBE{self.rng.randrange(10**6):06d}"
        status, answer, millis = self.client.call("GET", _path("items", code))
        self.tally.add("scan (unknown code)", status, answer, millis, status == 404)

    def box_contents(self) -> None:
        box = self.rng.choice(self.person.boxes)
        status, answer, millis = self.client.call(
            "GET", _path("storage", "boxes", box.code, "contents")
        )
        good = status == 200 and _field(answer, "box") == box.code
        self.tally.add("box contents", status, answer, millis, good)

    def _act(self, operation: str, tube: Tube, action: str, state: str) -> bool:
        status, answer, millis = self.client.call(
            "POST", _path("items", tube.code, "actions", action), {}
        )
        good = status == 200 and _field(answer, "item", "state") == state
        return self.tally.add(operation, status, answer, millis, good)

    def check_out_and_return(self) -> None:
        tube = self._tube()
        if not (
            self._act("check out", tube, "check_out", "checked_out")
            and self._act("return to storage", tube, "return_to_storage", "stored")
        ):
            self._drop(tube)

    def _place(self, operation: str, tube: Tube, position: str) -> bool:
        body = {"scan": tube.code, "box": tube.box, "position": position}
        status, answer, millis = self.client.call("POST", _path("storage", "placements"), body)
        place = (_field(answer, "location", "box"), _field(answer, "location", "position"))
        good = status == 201 and place == (tube.box, position)
        return self.tally.add(operation, status, answer, millis, good)

    def move_and_back(self) -> None:
        box = self.rng.choice([box for box in self.person.boxes if box.free and box.tubes])
        tube, target = self._tube(box), self.rng.choice(box.free)
        moved = self._place("move", tube, target)
        if not (moved and self._place("move back", tube, tube.position)):
            box.free.remove(target)  # who holds it now is not known: leave it alone
            self._drop(tube)

    def put_back(self) -> list[str]:
        """Return the suspect tubes to storage and to their positions; what could not be."""
        left = []
        for tube in self.suspect:
            where = _path("items", tube.code, "location")
            status, answer, _ = self.client.call("GET", where)
            if status == 200 and _field(answer, "state") == "checked_out":
                self.client.call("POST", _path("items", tube.code, "actions", "return_to_storage"))
                status, answer, _ = self.client.call("GET", where)
            if _field(answer, "state") == "stored" and _field(answer, "position") != tube.position:
                body = {"scan": tube.code, "box": tube.box, "position": tube.position}
                status, answer, _ = self.client.call("POST", _path("storage", "placements"), body)
            if status not in (200, 201):
                left.append(f"{tube.code}: {status} {str(answer)[:200]}")
        return left


class Researcher:
    def __init__(self, base_url: str, person: Person, tally: Tally, rng, values: dict) -> None:
        self.client = Client(base_url, person.token)
        self.tally, self.rng, self.values = tally, rng, values

    def filters(self) -> dict[str, str]:
        given = {}
        for name in self.rng.choice(SEARCHES):
            choices = SEARCH_VALUES.get(name) or self.values[name]
            if choices:
                given[name] = self.rng.choice(choices)
        given["page"] = str(self.rng.choice((1, 1, 1, 2, 3)))
        return given

    def step(self) -> None:
        query = urllib.parse.urlencode(self.filters())
        status, answer, millis = self.client.call("GET", f"{_path('requests', 'search')}?{query}")
        good = status == 200 and isinstance(_field(answer, "groups"), list)
        self.tally.add("search", status, answer, millis, good)


@dataclass
class Run:
    seconds: float
    tally: Tally
    #: Tubes a cut-short pair left elsewhere that could not be put back.
    not_put_back: list[str]


def run_load(base_url: str, cast: Cast, *, seconds: float, seed: int, think: float = 0.0) -> Run:
    """Every simulated user in a thread of its own until the time is up (a pair begun is
    finished); ``think``: mean seconds of pause between two steps (exponential)."""
    tallies, workers = [], []
    for n, person in enumerate(cast.people):
        tally, rng = Tally(), random.Random(seed * 1000 + n)  # noqa: S311
        if person.role is Role.RESEARCHER:
            workers.append(Researcher(base_url, person, tally, rng, cast.search_values))
        else:
            workers.append(Technician(base_url, person, tally, rng))
        tallies.append(tally)
    deadline = time.monotonic() + seconds

    def work(worker) -> None:
        while time.monotonic() < deadline:
            worker.step()
            if think:
                time.sleep(worker.rng.expovariate(1 / think))

    threads = [threading.Thread(target=work, args=(worker,), daemon=True) for worker in workers]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 10 * HTTP_TIMEOUT)
    elapsed = time.perf_counter() - started
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    left = []
    for worker in workers:
        if isinstance(worker, Technician):
            left += worker.put_back()  # they stay out of later runs with this cast
        worker.client.close()
    return Run(elapsed, total, left)
