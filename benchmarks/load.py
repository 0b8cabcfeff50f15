"""Load under gunicorn (issue 9): ``python benchmarks/load.py --database-url URL [--users 50]
[--seconds 60] [--workers 2,3,4] [--threads 8] [--scratch-copy] [--write]``.

The app is served as ``lims serve`` serves it (gunicorn, ``lims:create_served_app()``), with
gthread workers, on a free loopback port. Simulated users, one thread and one keep-alive
connection each, then work for ``--seconds`` through the JSON API with bearer tokens made by
``lims.auth.services.create_api_token``:
- technicians (of every site, round robin over the sites' technician accounts): scan look-up
  ``GET /api/v1/items/<code>``, now and then a misread code (404, an expected refusal), the
  contents of a box, a tube checked out and returned to storage
  (``POST /api/v1/items/<code>/actions/check_out`` then ``return_to_storage``), a tube moved to
  a free position of its box and back (``POST /api/v1/storage/placements`` twice);
- researchers: ``GET /api/v1/requests/search`` with random filters and pages.
Every technician owns boxes no one else touches (the tubes in them and their free positions),
so concurrent users never contend for a tube or a position: a 409 is counted on its own, not
as an error, and named. An error is any other answer than the one expected (a 2xx whose body
says the step happened, or the expected 404) and any connection failure; the script exits 1
when there is one. Every pair leaves its tube where it was (state, box and position); tubes
whose pair was cut short are put back afterwards, and the tubes are checked against the
database at the end. The thaw count of a tube checked out and returned goes up by one, and the
steps stay in the custody record and the audit trail, as they must: ``--scratch-copy`` runs on
a copy of the data set (PostgreSQL: ``CREATE DATABASE ... TEMPLATE``, or pg_dump and
pg_restore while someone is connected to it; SQLite: a file copy) and drops it afterwards, so
the data set itself is left exactly as it was. The tokens are revoked at the end.
``--workers 2,3,4`` and ``--think 0,2`` (mean pause between two steps of a user, in seconds)
each take a list: every combination is measured, with a server started afresh, a warm-up of
``--warm-up`` seconds (the same mix, not counted) and then ``--seconds`` of load.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from flask import Flask
from sqlalchemy import exists, func, select
from sqlalchemy.engine import make_url

from benchmarks import common
from benchmarks.load_server import scratch_copy, served
from benchmarks.load_users import (
    OPERATIONS,
    Cast,
    OwnBox,
    Person,
    Run,
    Tally,
    Tube,
    run_load,
)
from benchmarks.storage import percentile
from lims import create_app
from lims import db as lims_db
from lims.auth import services as accounts
from lims.auth.models import Role, Site, User
from lims.custody.domain import Kind, State
from lims.custody.models import Hold, Item
from lims.patients.models import Episode
from lims.requests.models import RequestLine
from lims.storage.models import Box, StorageUnit
from lims.storage.services import position_name

# -- who works on what ---------------------------------------------------------------------


def _usable_tubes(session, box: Box) -> tuple[list[Tube], list[str]]:
    """The box's stored aliquots free of holds and requests, and its empty positions."""
    held = exists().where(Hold.item_id == Item.id, Hold.cleared_at.is_(None))
    requested = exists().where(RequestLine.item_id == Item.id)
    rows = session.execute(
        select(Item.code, Item.position, Item.kind, Item.state, held, requested)
        .where(Item.box_id == box.id)
        .order_by(Item.position)
    ).all()
    taken = {row.position for row in rows}
    tubes = [
        Tube(code, box.code, index, position_name(box, index))
        for code, index, kind, state, is_held, is_requested in rows
        if kind is Kind.ALIQUOT and state is State.STORED and not (is_held or is_requested)
    ]
    free = [position_name(box, i) for i in range(1, box.size + 1) if i not in taken]
    return tubes, free


def _share_boxes(session, site_id: int, people: list[Person], boxes_each: int, rng) -> None:
    """Each person gets up to ``boxes_each`` boxes of the site, one with free positions first
    where there is one; no box goes to two people."""
    boxes = list(
        session.scalars(
            select(Box)
            .join(StorageUnit, Box.unit_id == StorageUnit.id)
            .where(StorageUnit.site_id == site_id, Box.active.is_(True), Box.box_type.is_not(None))
            .order_by(Box.code)
        )
    )
    rng.shuffle(boxes)
    roomy: list[OwnBox] = []
    full: list[OwnBox] = []
    wanted = len(people) * boxes_each
    for box in boxes:
        if len(roomy) >= len(people) and len(roomy) + len(full) >= wanted:
            break
        tubes, free = _usable_tubes(session, box)
        if tubes:
            (roomy if free else full).append(OwnBox(box.code, tubes, free))
    for person, own in zip(people, roomy, strict=False):
        person.boxes.append(own)
    for own in roomy[len(people) :] + full:
        fewest = min(people, key=lambda person: len(person.boxes))
        if len(fewest.boxes) >= boxes_each:
            break
        fewest.boxes.append(own)


def _search_values(session) -> dict[str, list[str]]:
    stored = (Item.kind == Kind.ALIQUOT, Item.state == State.STORED)
    labels = select(Item.timepoint).where(*stored, Item.timepoint.is_not(None)).distinct()
    types = select(Item.material_type).where(*stored).distinct()
    return {
        "study": sorted(set(session.scalars(select(Episode.protocol))) - {""}),
        "material_type": sorted(material.value for material in session.scalars(types)),
        "timepoint": sorted(session.scalars(labels)),
        "site": sorted(session.scalars(select(Site.code))),
    }


def _researcher_accounts(session, site_code: str) -> list[User]:
    found = list(
        session.scalars(
            select(User)
            .where(User.role == Role.RESEARCHER, User.active.is_(True))
            .order_by(User.username)
        )
    )
    if found:
        return found
    # A data set without researchers gets one; its password is never used (tokens only).
    return [
        accounts.create_user(
            session,
            actor=None,
            username="load.researcher",
            full_name="Load Researcher",
            role="researcher",
            site_code=site_code,
            password=secrets.token_urlsafe(24),
        )
    ]


def prepare(
    app: Flask, *, users: int, researcher_share: float = 0.2, boxes_each: int = 3, seed: int = 9
) -> Cast:
    """The simulated users, each with an API token of their own, and the boxes they own."""
    rng = random.Random(seed)  # noqa: S311 (seeded on purpose)
    researchers = max(1, round(users * researcher_share)) if users > 1 else 0
    with app.app_context():
        session = lims_db.session()
        staff: dict[int, list[User]] = {}
        for user in session.scalars(
            select(User)
            .where(User.role == Role.TECHNICIAN, User.active.is_(True))
            .order_by(User.username)
        ):
            staff.setdefault(user.site_id, []).append(user)
        if not staff:
            raise SystemExit("no active technician in the data set")
        site_ids = sorted(staff)
        technicians: list[Person] = []
        by_site: dict[int, list[Person]] = {site_id: [] for site_id in site_ids}
        for n in range(users - researchers):
            site_id = site_ids[n % len(site_ids)]
            account = staff[site_id][(n // len(site_ids)) % len(staff[site_id])]
            record, token = accounts.create_api_token(
                session, actor=None, user=account, name="load test"
            )
            person = Person(Role.TECHNICIAN, token, record.id)
            technicians.append(person)
            by_site[site_id].append(person)
        for site_id, people in by_site.items():
            if people:
                _share_boxes(session, site_id, people, boxes_each, rng)
        idle = [n for n, person in enumerate(technicians) if not person.tubes]
        if idle:
            raise SystemExit(f"{len(idle)} technicians found no stored tube of their own")
        first_site = session.get(Site, site_ids[0]).code
        asking = _researcher_accounts(session, first_site)
        people = []
        for n in range(researchers):
            record, token = accounts.create_api_token(
                session, actor=None, user=asking[n % len(asking)], name="load test"
            )
            people.append(Person(Role.RESEARCHER, token, record.id))
        tubes = [tube for person in technicians for tube in person.tubes]
        return Cast(technicians, people, _search_values(session), tubes)


def revoke_tokens(app: Flask, cast: Cast) -> None:
    with app.app_context():
        session = lims_db.session()
        for person in cast.people:
            accounts.revoke_api_token(session, actor=None, token_id=person.token_id)


def changed_tubes(app: Flask, cast: Cast) -> list[str]:
    """The tubes not in the state and place they had when the run began."""
    wanted = {tube.code: tube for tube in cast.tubes}
    codes = list(wanted)
    changed = []
    with app.app_context():
        session = lims_db.session()
        for start in range(0, len(codes), 1000):
            rows = session.execute(
                select(Item.code, Item.state, Box.code, Item.position)
                .outerjoin(Box, Item.box_id == Box.id)
                .where(Item.code.in_(codes[start : start + 1000]))
            ).all()
            for code, state, box, index in rows:
                tube = wanted[code]
                if (state, box, index) != (State.STORED, tube.box, tube.index):
                    changed.append(f"{code}: {state.value} in {box} at {index}")
    return changed


# -- figures ---------------------------------------------------------------------------------


@dataclass
class Measurement:
    workers: int
    threads: int
    think: float
    run: Run
    changed: list[str]
    load_before: float
    load_after: float
    client_cpu: float

    @property
    def errors(self) -> int:
        return sum(self.run.tally.errors.values())

    @property
    def conflicts(self) -> int:
        return sum(self.run.tally.conflicts.values())

    def rows(self) -> list[list]:
        tally, seconds, rows = self.run.tally, self.run.seconds, []
        everything: list[float] = []
        for operation in OPERATIONS:
            millis = tally.millis.get(operation, [])
            everything += millis
            rows.append(_row(operation, millis, seconds, tally, [operation]))
        rows.append(_row("all", everything, seconds, tally, list(OPERATIONS)))
        return rows


def _row(name: str, millis: list[float], seconds: float, tally: Tally, ops: list[str]) -> list:
    def ms(share: float) -> str:
        return f"{percentile(millis, share):.1f}" if millis else "-"

    return [
        name,
        f"{len(millis):,}",
        f"{len(millis) / seconds:.1f}",
        ms(0.5),
        ms(0.95),
        ms(0.99),
        f"{max(millis):.0f}" if millis else "-",
        sum(tally.conflicts[op] for op in ops),
        sum(tally.errors[op] for op in ops),
    ]


HEADER = ["operation", "count", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms", "409", "errors"]


def measure(
    app: Flask,
    cast: Cast,
    *,
    workers: int,
    threads: int,
    seconds: float,
    warm_up: float = 0.0,
    seed: int = 9,
    think: float = 0.0,
    log: Path,
) -> Measurement:
    """One server configuration: start it, warm it up, measure, stop it, check the tubes."""
    with served(app, workers=workers, threads=threads, log=log) as base:
        if warm_up:
            run_load(base, cast, seconds=warm_up, seed=seed + 1, think=think)
        load_before, cpu_before = os.getloadavg()[0], time.process_time()
        run = run_load(base, cast, seconds=seconds, seed=seed, think=think)
        client_cpu = time.process_time() - cpu_before
        load_after = os.getloadavg()[0]
    changed = changed_tubes(app, cast)
    return Measurement(workers, threads, think, run, changed, load_before, load_after, client_cpu)


def heading(cast: Cast, arguments: argparse.Namespace, version: str, stored: int) -> str:
    backend = common.backend_name(arguments.database_url)
    copy = " --scratch-copy" if arguments.scratch_copy else ""
    return (
        f"## Load on {backend} ({common.today()})\n\n"
        f"`python benchmarks/load.py --users {arguments.users} --seconds {arguments.seconds:g}"
        f" --workers {arguments.workers} --threads {arguments.threads}"
        f" --think {arguments.think}{copy}` on {stored:,} stored aliquots:"
        " gunicorn gthread workers on loopback,"
        f" {len(cast.technicians)} technicians ({len(cast.tubes):,} tubes in boxes of their own)"
        f" and {len(cast.researchers)} researchers, one keep-alive connection each, without a"
        " pause between steps or with pauses of the --think seconds on average (exponential);"
        f" {arguments.warm_up:g} s of warm-up not counted. Latency"
        " as the client sees it; the client's threads run on the same machine.\n"
        f"Machine: {common.machine()}. Database: {version}.\n"
    )


def section(measurement: Measurement) -> str:
    pauses = f"pauses of {measurement.think:g} s" if measurement.think else "no pause"
    refusals = measurement.run.tally.refusals.most_common()
    unexpected = ", ".join(f"{count} x {refusal}" for refusal, count in refusals)
    return (
        f"\n### {measurement.workers} workers x {measurement.threads} threads, {pauses}\n\n"
        f"Load average (1 min) {measurement.load_before:.1f} before, "
        f"{measurement.load_after:.1f} at the end; load client CPU "
        f"{measurement.client_cpu:.0f} s in {measurement.run.seconds:.0f} s; tubes back "
        f"where they were: {'no' if measurement.changed else 'yes'}."
        + (f" Answers not as expected: {unexpected}." if unexpected else "")
        + "\n\n"
        + common.table(HEADER, measurement.rows())
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warm-up", type=float, default=10.0)
    parser.add_argument("--workers", default="2,3,4", help="gunicorn workers, e.g. 2,3,4")
    parser.add_argument("--threads", type=int, default=8, help="threads per gthread worker")
    parser.add_argument("--researchers", type=float, default=0.2, help="share of the users")
    parser.add_argument("--boxes-each", type=int, default=3, help="boxes per technician")
    parser.add_argument("--think", default="0", help="mean pauses between steps (s), e.g. 0,2")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--scratch-copy", action="store_true", help="run on a copy of the data")
    parser.add_argument("--copy-name", help="PostgreSQL: the copy's name (default <name>_load)")
    parser.add_argument("--write", action="store_true", help="record the figures in RESULTS.md")
    arguments = parser.parse_args()
    configurations = [
        (int(workers), float(think))
        for think in arguments.think.split(",")
        for workers in arguments.workers.split(",")
    ]
    with contextlib.ExitStack() as stack:
        url = arguments.database_url
        if arguments.scratch_copy:
            url = stack.enter_context(scratch_copy(url, arguments.copy_name))
        instance = stack.enter_context(tempfile.TemporaryDirectory())
        app = create_app(overrides=common.settings(url, instance))
        stack.callback(app.extensions["lims_engine"].dispose)
        with app.app_context():
            version = common.database_version(app.extensions["lims_engine"])
            if arguments.scratch_copy:
                version += f", a copy of {make_url(arguments.database_url).database}"
            stored = lims_db.session().scalar(
                select(func.count()).select_from(Item).where(Item.state == State.STORED)
            )
        cast = prepare(
            app,
            users=arguments.users,
            researcher_share=arguments.researchers,
            boxes_each=arguments.boxes_each,
            seed=arguments.seed,
        )
        print(heading(cast, arguments, version, stored))
        measurements = []
        try:
            for workers, think in configurations:
                log = Path(instance) / f"gunicorn-{workers}-{think:g}.log"
                measurement = measure(
                    app,
                    cast,
                    workers=workers,
                    threads=arguments.threads,
                    seconds=arguments.seconds,
                    warm_up=arguments.warm_up,
                    seed=arguments.seed,
                    think=think,
                    log=log,
                )
                measurements.append(measurement)
                print(section(measurement))
                for sample in measurement.run.tally.samples:
                    print("  refused:", sample)
                for line in measurement.run.not_put_back + measurement.changed:
                    print("  not back in place:", line)
                if measurement.errors or measurement.changed:
                    print(log.read_text()[-3000:])
        finally:
            revoke_tokens(app, cast)
    body = heading(cast, arguments, version, stored) + "".join(map(section, measurements))
    if arguments.write:
        common.write_section(f"load:{common.backend_name(arguments.database_url)}", body)
    failed = any(m.errors or m.changed or m.run.not_put_back for m in measurements)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
