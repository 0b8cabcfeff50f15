"""A whole CAR-T episode at the bench through the pages, every identifier entered by scanning.

Apheresis collected at RH (the treating site) is shipped to AUH, made into a product, released
by AUH's manager with a second person, shipped back, received at RH with a second person,
stored, issued, thawed, checked at the bedside and infused. Each person works in their own
browser session; every bag and tube is entered as the scanner types it (``=DIN`` + flags).
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from lims import db as lims_db
from lims.audit.services import verify_chain
from lims.custody import production
from lims.custody.models import CustodyEvent, Item, ProductLot
from tests.conftest import PASSWORD, csrf_token, log_in
from tests.integration.people import actor, build_cast, cpr, new_episode


@pytest.fixture
def people(app, make_site, make_user):
    return build_cast(make_site, make_user)


class Bench:
    """One person's browser session."""

    def __init__(self, app, person) -> None:
        self.client = app.test_client()
        self.person = person
        assert log_in(self.client, person.username).status_code == 302

    def post(self, path: str, *, expect: int = 302, **data) -> str:
        token = csrf_token(self.client, "/scan")
        response = self.client.post(path, data={"csrf_token": token, **data})
        body = response.get_data(as_text=True)
        assert response.status_code == expect, (path, response.status_code, body[-1500:])
        if response.status_code == 302:
            return response.headers["Location"]
        return body

    def page(self, path: str) -> str:
        response = self.client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        return response.get_data(as_text=True)


def scanned(code: str) -> str:
    """What a scanner types for a DIN: data identifier, the DIN, flag characters."""
    return f"={code}00"


def events(app, code: str) -> list[str]:
    with app.app_context():
        session = lims_db.session()
        query = select(CustodyEvent.action).join(Item).where(Item.code == code)
        return list(session.scalars(query.order_by(CustodyEvent.id)))


def ship(bench: Bench, to_site: str, conditions: str, code: str) -> str:
    location = bench.post(
        "/shipments/new", to_site=to_site, conditions=conditions, courier="World Courier"
    )
    shipment = re.search(r"/shipments/([A-Z0-9*]+)$", location).group(1)
    bench.post(f"/shipments/{shipment}/lines", scan=scanned(code))
    bench.post(f"/shipments/{shipment}/dispatch", courier="World Courier", logger_ref="TL-2041")
    return shipment


def receive(bench: Bench, shipment: str, code: str, **witness) -> None:
    bench.post(f"/shipments/{shipment}/receipt/scan", scan=scanned(code))
    bench.post(f"/shipments/{shipment}/receipt/complete", note="", **witness)


def test_an_episode_from_apheresis_to_infusion_by_scanning(app, people):
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech, n=1)
        coi = episode.coi
        apheresis = production.register_collection(
            session, actor=tech, coi=coi, volume_ml=220, collected_at=lims_db.utcnow()
        ).code
    rh, rh2 = Bench(app, people["tech"]), Bench(app, people["tech2"])
    auh, qp = Bench(app, people["maker"]), Bench(app, people["qp"])

    # RH packs the collection into a shipment to the manufacturer; AUH receives it by scan.
    outbound = ship(rh, "AUH", "fresh", apheresis)
    receive(auh, outbound, apheresis)
    card = auh.page(f"/scan?code={scanned(apheresis)}")
    assert "received for manufacturing" in card and "Start manufacturing" in card
    auh.post(f"/scan/{apheresis}/start_manufacturing")

    # The lot: the collection scanned into the new-lot form, QC entered, released.
    lot_page = auh.post(
        "/manufacturing/lots/new",
        lot_number="CAR19-26-001",
        apheresis_codes=scanned(apheresis),
        bag_count="1",
        volume_ml="68",
    )
    assert lot_page.endswith("/manufacturing/lots/CAR19-26-001")
    for test in app.config["LIMS"]["custody"]["required_qc"]:
        auh.post("/manufacturing/lots/CAR19-26-001/qc", test=test, value="ok", passed="yes")
    auh.post("/manufacturing/lots/CAR19-26-001/quarantine")
    with app.app_context():
        lot = lims_db.session().scalar(select(ProductLot))
        bag = lot.bags[0].code
    qp.post(
        "/manufacturing/lots/CAR19-26-001/release",
        release_password=PASSWORD,
        witness_username=people["maker"].username,
        witness_password=PASSWORD,
    )

    # Back to the treating site, received there with a second person.
    inbound = ship(auh, "RH", "ln2_vapour", bag)
    receive(
        rh,
        inbound,
        bag,
        witness_username=people["tech2"].username,
        witness_password=PASSWORD,
    )
    rh.post(f"/scan/{bag}/store", location="LN2-TANK-1/R2/P4")
    rh.post("/scan/mode", mode="issue")
    rh.post("/scan", code=scanned(bag))
    rh.post("/scan/mode", mode="")
    rh.post(f"/scan/{bag}/thaw")

    # The bedside: wristband, cassette and bag scanned; the nurse signs the infusion.
    infusion = rh.post(
        "/bedside",
        wristband=cpr(1),
        cassette=f"&/{coi}",
        bag=scanned(bag),
        witness_username=people["tech2"].username,
        witness_password=PASSWORD,
    )
    assert "IDENTITY VERIFIED" in rh.page(infusion)
    rh2.post(f"/scan/{bag}/infuse", password=PASSWORD)

    assert events(app, apheresis) == [
        "register", "ship", "receive", "start_manufacturing", "consume",
    ]  # fmt: skip
    assert events(app, bag) == [
        "register", "quarantine", "release", "ship", "receive", "store", "issue", "thaw",
        "verify_identity", "infuse",
    ]  # fmt: skip
    history = rh.page(f"/items/{bag}")
    for step in ("release", "receive", "verify identity", "infuse"):
        assert step in history.replace("_", " ").lower(), step
    assert apheresis in history.replace(" ", "") and coi in history.replace(" ", ""), history
    with app.app_context():
        report = verify_chain(lims_db.session())
        assert report.first_broken_seq is None and report.rows > 50
