"""Approval of a request for 500 aliquots (issue 8: under 2 s) on a generated data set:
``python benchmarks/requests_approval.py --database-url URL [--repeat 5] [--size 500]``.

Server time: ``lims.requests.review.decide`` timed with ``time.perf_counter()``, i.e. the
manager's signature, the eligibility of every line, the locks, one ``reserve`` custody event
and its audit rows per aliquot, the request's own rows and the notifications, and the commit.
The request is made before the clock starts (a researcher's cart of ``--size`` stored aliquots
of one site, submitted; the opt-out register checks recorded) and cancelled afterwards, so the
data set keeps its stored aliquots (the steps stay on record, as they must).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from sqlalchemy import exists, select

from benchmarks import common
from benchmarks.dataset import PASSWORD
from benchmarks.storage import summary
from lims import create_app
from lims import db as lims_db
from lims.auth import services as accounts
from lims.auth.models import Site, User
from lims.custody.domain import Kind, State
from lims.custody.models import Hold, Item
from lims.errors import NotFound
from lims.patients.models import Episode, Patient
from lims.requests import review, services
from lims.requests.models import RequestLine

TARGET_MS = 2000.0
RESEARCHER = "bench.researcher"
DETAILS = {
    "title": "Benchmark request",
    "principal_investigator": "Bench PI",
    "ethics_ref": "H-0000",
    "dpa_ref": "P-0000",
    "intended_analyses": "timing",
    "delivery_details": "pick-up",
}


def researcher(session, site_code: str) -> User:
    try:
        return accounts.user_by_username(session, RESEARCHER)
    except NotFound:
        return accounts.create_user(
            session,
            actor=None,
            username=RESEARCHER,
            full_name="Bench Researcher",
            role="researcher",
            site_code=site_code,
            password=PASSWORD,
        )


def free_aliquots(session, site_id: int, size: int, offset: int) -> list[str]:
    """Stored aliquots of the site that a request could have: consent, no hold, no request."""
    held = exists().where(Hold.item_id == Item.id, Hold.cleared_at.is_(None))
    wanted = exists().where(RequestLine.item_id == Item.id)
    return list(
        session.scalars(
            select(Item.code)
            .join(Episode, Item.episode_id == Episode.id)
            .join(Patient, Episode.patient_id == Patient.id)
            .where(
                Item.site_id == site_id,
                Item.kind == Kind.ALIQUOT,
                Item.state == State.STORED,
                Patient.consent_biobank.is_(True),
                Patient.consent_withdrawn_at.is_(None),
                ~held,
                ~wanted,
            )
            .order_by(Item.id)
            .offset(offset)
            .limit(size)
        )
    )


def one_approval(app, site_code: str, size: int, offset: int) -> float:
    with app.app_context():
        session = lims_db.session()
        site = session.scalar(select(Site).where(Site.code == site_code))
        manager = accounts.user_by_username(session, f"manager.{site_code.lower()}")
        asker = researcher(session, site_code)
        codes = free_aliquots(session, site.id, size, offset)
        if len(codes) < size:
            raise SystemExit(f"only {len(codes)} free aliquots at {site_code}")
        draft = services.create_request(session, actor=asker, **DETAILS)
        services.add_items(session, actor=asker, code=draft.code, item_codes=codes)
        (request, *others) = services.submit(session, actor=asker, code=draft.code)
        if others:
            raise SystemExit("the aliquots were expected at one site")
        review.record_opt_out_checks(session, actor=manager, code=request.code)
        session.expire_all()
        started = time.perf_counter()
        review.decide(
            session, actor=manager, code=request.code, decision="approved", password=PASSWORD
        )
        elapsed = (time.perf_counter() - started) * 1000
        services.cancel(session, actor=asker, code=request.code, reason="benchmark over")
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--site", default="RH")
    parser.add_argument("--write", action="store_true", help="record the figures in RESULTS.md")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as instance:
        app = create_app(overrides=common.settings(arguments.database_url, instance))
        gc.collect()
        gc.freeze()
        one_approval(app, arguments.site, 20, 0)  # warm-up: templates, statement cache
        with app.app_context():
            version = common.database_version(app.extensions["lims_engine"])
        millis = [
            one_approval(app, arguments.site, arguments.size, 0)
            for _ in range(arguments.repeat)
        ]
    figures = summary(f"approval of {arguments.size} aliquots", millis)
    backend = common.backend_name(arguments.database_url)
    line = (
        f"{backend}: {figures['name']}: n={figures['n']} p50={figures['p50']:.0f} ms "
        f"p95={figures['p95']:.0f} ms max={figures['max']:.0f} ms (target {TARGET_MS:.0f} ms)"
    )
    print(line)
    if arguments.write:
        met = "met" if figures["p95"] <= TARGET_MS else "MISSED"
        body = [
            f"## Request approval on {backend} ({common.today()})",
            "",
            f"A request for {arguments.size} aliquots, {arguments.repeat} times. Machine: "
            f"{common.machine()}. Database: {version}. Server time around "
            "`review.decide` (signature, eligibility, locks, one reserve event and its audit rows "
            "per aliquot, commit); `benchmarks/requests_approval.py`.",
            "",
            common.table(
                ["n", "p50 ms", "p95 ms", "max ms", "target", ""],
                [[figures["n"], f"{figures['p50']:.0f}", f"{figures['p95']:.0f}",
                  f"{figures['max']:.0f}", f"p95 ≤ {TARGET_MS:.0f} ms", met]],
            ),
        ]  # fmt: skip
        common.write_section(f"requests-approval:{backend}", "\n".join(body))


if __name__ == "__main__":
    main()
