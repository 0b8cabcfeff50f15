"""The PostgreSQL server stopped and restarted under load, with the app under gunicorn.

A private server (never the shared one) holds a migrated LIMS database; ``lims serve`` runs the
app with two workers on loopback; threads keep asking for the health check, an item by the API,
a logged-in page, and check out / return one tube by the API. Mid-run the server is stopped
for two seconds and started, later restarted with ``pg_ctl restart -m fast``. While it is down
every answer is a 503 with the retry message, within seconds; once it is up again the same
requests succeed (the pool's pre-ping replaces the dead connections), and the database holds
exactly the transitions that were answered, plus at most those whose answer was lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from lims import create_app, migrate
from lims import db as lims_db
from lims.auth import services as accounts
from lims.custody import production
from lims.custody.models import CustodyEvent, Item
from lims.dbfaults import RETRY_AFTER_SECONDS, UNREACHABLE
from lims.storage import services as storage
from tests.conftest import CSRF_INPUT, PASSWORD, settings_for
from tests.faults.conftest import assert_chain_intact, free_port
from tests.integration.people import new_episode

#: No answer may take longer (the database URL sets a 3-second connect timeout).
SLOWEST_ANSWER = 5.0
HTTP_TIMEOUT = 15.0
SERVER_START_SECONDS = 90
#: Seconds of load before the stop, of outage, and after each return of the server.
STEADY, OUTAGE, AFTER = 1.5, 2.0, 3.0
PAUSE_BETWEEN_REQUESTS = 0.05
KINDS = ("health", "item", "page", "transition")


def seed(url: str, instance: Path) -> SimpleNamespace:
    """A migrated database with a technician, their API token and two stored tubes."""
    engine = lims_db.make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    app = create_app(overrides=settings_for(url, str(instance)))
    with app.app_context():
        session = lims_db.session()
        accounts.create_site(
            session, actor=None, code="RH", name="Rigshospitalet", isbt_fin="W1234"
        )
        tech = accounts.create_user(
            session,
            actor=None,
            username="tech",
            full_name="Tina Tech",
            role="technician",
            site_code="RH",
            password=PASSWORD,
        )
        _, token = accounts.create_api_token(session, actor=None, user=tech)
        storage.create_unit(
            session,
            actor=tech,
            code="RH-F80",
            name="Freezer",
            unit_type="freezer",
            temperature_class="minus_80",
        )
        storage.create_box(session, actor=tech, code="BOX-1", unit_code="RH-F80", box_type="9x9")
        sample = production.register_sample(
            session,
            actor=tech,
            coi=new_episode(session, tech).coi,
            material_type="plasma",
            quantity=2,
            unit="mL",
            collected_at=lims_db.utcnow(),
        )
        tubes = production.aliquot(
            session,
            actor=tech,
            parent_code=sample.code,
            count=2,
            quantity_each=1,
            unit="mL",
            material_type="plasma",
        )
        codes = [tube.code for tube in tubes]
        for code in codes:
            storage.place_item(session, actor=tech, item_scan=code, box_scan="BOX-1")
    app.extensions["lims_engine"].dispose()
    return SimpleNamespace(app=app, token=token, read_tube=codes[0], moved_tube=codes[1])


def write_config(path: Path, url: str, instance: Path) -> None:
    path.write_text(
        "[app]\n"
        f'instance_path = "{instance}"\n'
        'secret_key = "fault-test-secret-key"\n'
        "[database]\n"
        f'url = "{url}"\n'
        "[security]\n"
        "argon2_time_cost = 1\nargon2_memory_kib = 8\nargon2_parallelism = 1\n",
        encoding="utf-8",
    )


def serve_command(bind: str) -> list[str]:
    lims = Path(sys.executable).with_name("lims")
    if lims.exists():
        return [str(lims), "serve", "--bind", bind, "--workers", "2"]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        bind,
        "--workers",
        "2",
        "lims:create_served_app()",
    ]


# -- HTTP ------------------------------------------------------------------------------------


@dataclass
class Answer:
    kind: str
    started: float
    ended: float
    status: int  # 0: no HTTP answer at all (refused, reset, timed out)
    body: str
    content_type: str
    retry_after: str | None

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def json(self) -> dict:
        return json.loads(self.body)


def fetch(opener, kind: str, url: str, *, headers=None, data: bytes | None = None) -> Answer:
    # Only http:// addresses of the server this test started.
    request = urllib.request.Request(url, data=data, headers=headers or {})  # noqa: S310
    started = time.monotonic()
    try:
        with opener.open(request, timeout=HTTP_TIMEOUT) as response:
            status, body, info = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, body, info = error.code, error.read(), error.headers
    except OSError as error:  # refused, reset, timed out: the server did not answer
        return Answer(kind, started, time.monotonic(), 0, repr(error), "", None)
    return Answer(
        kind,
        started,
        time.monotonic(),
        status,
        body.decode("utf-8", "replace"),
        info.get_content_type(),
        info.get("Retry-After"),
    )


class Load:
    """Threads that keep the server busy; every answer is kept with its start and end time."""

    def __init__(self, base: str, seeded: SimpleNamespace) -> None:
        self.base, self.seeded = base, seeded
        self.api = {"Authorization": f"Bearer {seeded.token}"}
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.page_opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(CookieJar())
        )
        self.plain = urllib.request.build_opener()
        #: Transitions answered 200, and those answered 503 (their outcome unknown).
        self.transitions_done = 0
        self.transitions_unknown = 0

    def keep(self, answer: Answer) -> Answer:
        with self.lock:
            self.answers.append(answer)
        return answer

    def log_in(self) -> None:
        page = fetch(self.page_opener, "login", f"{self.base}/login")
        token = CSRF_INPUT.search(page.body).group(1)
        form = {"username": "tech", "password": PASSWORD, "csrf_token": token}
        answer = fetch(
            self.page_opener,
            "login",
            f"{self.base}/login",
            data=urllib.parse.urlencode(form).encode(),
        )
        assert answer.status == 200 and "Tina Tech" in answer.body, answer.body[:500]

    def health(self) -> None:
        self.keep(fetch(self.plain, "health", f"{self.base}/healthz"))

    def item(self) -> None:
        url = f"{self.base}/api/v1/items/{self.seeded.read_tube}"
        self.keep(fetch(self.plain, "item", url, headers=self.api))

    def page(self) -> None:
        self.keep(fetch(self.page_opener, "page", f"{self.base}/"))

    def transitions(self) -> None:
        """Check the tube out and back, again and again; after an answer is lost (503), read
        its state before the next step, as a person would look before scanning again."""
        url = f"{self.base}/api/v1/items/{self.seeded.moved_tube}"
        state: str | None = "stored"
        while not self.stopping.is_set():
            if state is None:
                answer = self.keep(fetch(self.plain, "transition", url, headers=self.api))
                if answer.status == 200:
                    state = answer.json()["state"]
            else:
                action = "check_out" if state == "stored" else "return_to_storage"
                headers = {**self.api, "Content-Type": "application/json"}
                step = f"{url}/actions/{action}"
                answer = self.keep(
                    fetch(self.plain, "transition", step, data=b"{}", headers=headers)
                )
                if answer.status == 200:
                    self.transitions_done += 1
                    state = answer.json()["item"]["state"]
                else:
                    self.transitions_unknown += answer.status == 503
                    state = None
            time.sleep(PAUSE_BETWEEN_REQUESTS)

    def repeat(self, ask) -> None:
        while not self.stopping.is_set():
            ask()
            time.sleep(PAUSE_BETWEEN_REQUESTS)

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self.repeat, args=(ask,), daemon=True)
            for ask in (self.health, self.item, self.page)
        ]
        threads.append(threading.Thread(target=self.transitions, daemon=True))
        for thread in threads:
            thread.start()
        return threads

    def between(self, start: float, end: float) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if a.started >= start and a.ended <= end]


def wait_until_serving(base: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    opener = urllib.request.build_opener()
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"lims serve ended ({process.returncode}):\n{log.read_text()[-3000:]}")
        if fetch(opener, "start", f"{base}/healthz").status == 200:
            return
        time.sleep(0.3)
    pytest.fail(
        f"lims serve did not answer in {SERVER_START_SECONDS} s:\n{log.read_text()[-3000:]}"
    )


@pytest.fixture
def served(private_postgres, tmp_path):
    """The LIMS under gunicorn (2 workers) on the private server's database."""
    url = private_postgres.create_database("lims")
    instance = tmp_path / "instance"
    seeded = seed(url, instance)
    config = tmp_path / "lims.toml"
    write_config(config, url, instance)
    port, log = free_port(), tmp_path / "gunicorn.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIMS_")}
    env["LIMS_CONFIG"] = str(config)
    # No control socket: its default path is shared by every gunicorn of the user.
    env["GUNICORN_CMD_ARGS"] = "--no-control-socket"
    with log.open("wb") as output:
        process = subprocess.Popen(
            serve_command(f"127.0.0.1:{port}"),
            env=env,
            stdout=output,
            stderr=output,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(base, process, log)
        yield SimpleNamespace(base=base, seeded=seeded, url=url, log=log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # gunicorn's master stops its workers
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def check_retry_answer(answer: Answer) -> None:
    assert answer.retry_after == str(RETRY_AFTER_SECONDS), answer
    if answer.kind in ("item", "transition"):
        assert answer.content_type == "application/json", answer
        assert answer.json() == {"error": "database_unavailable", "message": UNREACHABLE}
    else:
        assert answer.content_type == "text/html", answer
        assert UNREACHABLE in answer.body


def statuses(answers: list[Answer]) -> Counter:
    return Counter((answer.kind, answer.status) for answer in answers)


def test_a_postgresql_restart_under_load_fails_cleanly_and_recovers(private_postgres, served):
    load = Load(served.base, served.seeded)
    load.log_in()
    began = time.monotonic()
    threads = load.start()
    try:
        time.sleep(STEADY)
        stopping = time.monotonic()
        private_postgres.stop("fast")
        down = time.monotonic()
        time.sleep(OUTAGE)
        starting = time.monotonic()
        private_postgres.start()
        up = time.monotonic()
        time.sleep(AFTER)
        restarting = time.monotonic()
        private_postgres.restart()
        restarted = time.monotonic()
        time.sleep(AFTER)
    finally:
        load.stopping.set()
        for thread in threads:
            thread.join(HTTP_TIMEOUT + 5)
    ended = time.monotonic()
    answers = load.answers
    summary = (
        f"{len(answers)} answers in {ended - began:.1f} s; stop {down - stopping:.2f} s, "
        f"start {up - starting:.2f} s, restart {restarted - restarting:.2f} s; "
        f"slowest {max(a.seconds for a in answers):.2f} s; {dict(statuses(answers))}"
    )
    print(summary)

    # Never a 500, never a connection refused or reset, never a long wait.
    assert {answer.status for answer in answers} <= {200, 503}, summary
    assert max(answer.seconds for answer in answers) < SLOWEST_ANSWER, summary
    for answer in answers:
        if answer.status == 503:
            check_retry_answer(answer)
    # Before the stop every request succeeds.
    steady = load.between(began, stopping)
    assert {a.status for a in steady} == {200}, statuses(steady)
    # While the server is down, every request gets the retry answer, of every kind.
    outage = load.between(down, starting)
    assert {a.status for a in outage} == {503}, statuses(outage)
    assert {a.kind for a in outage} == set(KINDS), statuses(outage)
    # Once it is up again (and after the fast restart) the same requests succeed at once.
    for start, end in ((up, restarting), (restarted, ended)):
        recovered = load.between(start, end)
        assert {a.status for a in recovered} == {200}, statuses(recovered)
        assert {a.kind for a in recovered} == set(KINDS), statuses(recovered)

    # The database holds every answered transition, and at most the lost answers' ones.
    app = served.seeded.app
    with app.app_context():
        session = lims_db.session()
        tube = session.scalar(select(Item).where(Item.code == served.seeded.moved_tube))
        steps = session.scalar(
            select(func.count())
            .select_from(CustodyEvent)
            .where(
                CustodyEvent.item_id == tube.id,
                CustodyEvent.action.in_(["check_out", "return_to_storage"]),
            )
        )
        assert load.transitions_done <= steps <= load.transitions_done + load.transitions_unknown
        assert tube.state.value == ("stored" if steps % 2 == 0 else "checked_out")
        assert tube.thaw_count == steps // 2
        assert_chain_intact(session)
    app.extensions["lims_engine"].dispose()
