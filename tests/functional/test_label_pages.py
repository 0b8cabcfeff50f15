"""The label pages through the test client: print and reprint, aliquoting with its batch of
vial labels, the print queue, scan-back on the bench, and who may do what."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import func, select

from lims import db as lims_db
from lims.custody import production
from lims.custody.models import Item
from lims.labels.models import PrintJob
from tests.conftest import csrf_token
from tests.functional.test_shipment_pages import browser, flashes, post, text_of
from tests.integration.people import actor, build_cast, new_episode
from tests.integration.test_custody_services import issued_bag
from tests.integration.test_label_rendering import decoded, pdf_text, require_label_tools
from tests.integration.test_storage import box, freezer


@pytest.fixture
def people(app, make_site, make_user):
    return build_cast(make_site, make_user)


def sample(app, people, *, quantity=10, n=1) -> str:
    """A whole-blood sample registered at RH: the parent of an aliquoting run."""
    with app.app_context():
        session = lims_db.session()
        tech = actor(session, people["tech"])
        episode = new_episode(session, tech, n=n)
        return production.register_sample(
            session,
            actor=tech,
            coi=episode.coi,
            material_type="whole_blood",
            quantity=quantity,
            unit="mL",
            collected_at=lims_db.utcnow(),
            timepoint="D7",
        ).code


def item_state(app, code: str) -> Item:
    with app.app_context():
        session = lims_db.session()
        item = session.scalar(select(Item).where(Item.code == code))
        session.expunge(item)
        return item


def job_count(app) -> int:
    with app.app_context():
        return lims_db.session().scalar(select(func.count()).select_from(PrintJob))


def print_form(client, path: str, **data):
    token = csrf_token(client, path)
    return client.post(path, data={"csrf_token": token, **data})


def test_print_page_downloads_a_pdf_and_a_second_print_is_a_reprint_with_a_reason(app, people):
    code = sample(app, people)
    tech = browser(app, people["tech"])
    page = tech.get(f"/labels/items/{code}")
    assert page.status_code == 200
    assert 'value="cryovial"' in text_of(page) and "Download PDF" in text_of(page)
    response = print_form(
        tech, f"/labels/items/{code}", template="cryovial", destination="download:pdf"
    )
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert response.data.startswith(b"%PDF")
    assert "attachment" in response.headers["Content-Disposition"]
    assert item_state(app, code).label_printed_at is not None

    page = text_of(tech.get(f"/labels/items/{code}"))
    assert "Reprint." in page and "Reason for the reprint" in page
    refused = print_form(
        tech, f"/labels/items/{code}", template="cryovial", destination="download:zpl"
    )
    assert refused.status_code == 422
    assert "Give the reason for the reprint." in text_of(refused)
    assert job_count(app) == 1
    reprint = print_form(
        tech,
        f"/labels/items/{code}",
        template="cryovial",
        destination="download:zpl",
        reason="tube relabelled after frost",
    )
    assert reprint.status_code == 200 and b"REPRINT" in reprint.data
    assert reprint.data.startswith(b"^XA")
    assert job_count(app) == 2


def test_researchers_are_refused_every_label_page(app, people):
    code = sample(app, people)
    researcher = browser(app, people["researcher"])
    for path in (
        f"/labels/items/{code}",
        f"/labels/aliquot/{code}",
        "/labels/queue",
        f"/labels/batch?item={code}",
    ):
        assert researcher.get(path).status_code == 403, path
    assert researcher.post("/labels/verify", data={"label_code": code}).status_code == 403
    assert job_count(app) == 0


def test_a_printer_that_does_not_answer_is_reported_on_the_page(app, people):
    code = sample(app, people)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app.config["LIMS"]["labels"]["printers"] = {
        "RH": [{"name": "Zebra 1", "host": "127.0.0.1", "port": port, "dpi": 300}]
    }
    tech = browser(app, people["tech"])
    assert "Printer Zebra 1" in text_of(tech.get(f"/labels/items/{code}"))
    response = print_form(
        tech, f"/labels/items/{code}", template="cryovial", destination="printer:Zebra 1"
    )
    assert response.status_code == 503
    page = text_of(response)
    assert f"Zebra 1: The printer at 127.0.0.1:{port} could not be reached" in page
    assert "Traceback" not in page
    assert job_count(app) == 0
    assert item_state(app, code).label_printed_at is None


def test_the_aliquoting_page_makes_n_aliquots_and_offers_their_labels_in_order(app, people):
    code = sample(app, people, quantity=10)
    tech = browser(app, people["tech"])
    card = text_of(tech.get(f"/scan?code={code}&from=link"))
    assert f"/labels/aliquot/{code}" in card and "Aliquot…" in card
    assert f"/labels/items/{code}" in card
    page = tech.get(f"/labels/aliquot/{code}")
    assert page.status_code == 200
    response = post(
        tech,
        f"/labels/aliquot/{code}",
        {"count": "4", "quantity_each": "1.5", "unit": "mL", "material_type": "plasma"},
        form_page=f"/labels/aliquot/{code}",
    )
    assert response.status_code == 200
    assert f"4 aliquots of {code} registered" in flashes(response, "success")[0]
    with app.app_context():
        session = lims_db.session()
        parent = session.scalar(select(Item).where(Item.code == code))
        children = sorted(parent.children, key=lambda child: child.aliquot_number)
        assert [(c.aliquot_number, c.aliquot_total) for c in children] == [
            (n, 4) for n in range(1, 5)
        ]
        assert parent.quantity == 4
        codes = [child.code for child in children]
    page = text_of(response)
    assert "Labels of 4 items" in page
    positions = [page.index(f"<code>{c}</code>") for c in codes]
    assert positions == sorted(positions)
    batch = "/labels/batch?" + "&".join(f"item={c}" for c in codes)
    labels = print_form(tech, batch, template="cryovial", destination="download:zpl")
    zpl = labels.data.decode()
    assert zpl.count("^XA") == 4
    assert [zpl.index(c) for c in codes] == sorted(zpl.index(c) for c in codes)
    for n in range(1, 5):
        assert f"{n}/4" in zpl


def test_aliquoting_more_than_the_parent_holds_is_refused_on_the_page(app, people):
    code = sample(app, people, quantity=2)
    tech = browser(app, people["tech"])
    response = print_form(
        tech,
        f"/labels/aliquot/{code}",
        count="3",
        quantity_each="1",
        unit="mL",
        material_type="plasma",
    )
    assert response.status_code == 422
    assert "holds only" in text_of(response)
    assert item_state(app, code).quantity == 2


def test_the_queue_shows_who_printed_what_where_and_reprints_with_their_reason(app, people):
    code = sample(app, people)
    tech = browser(app, people["tech"])
    path = f"/labels/items/{code}"
    print_form(tech, path, template="cryovial", destination="download:pdf")
    print_form(tech, path, template="cryovial", destination="download:zpl", reason="torn")
    manager = browser(app, people["manager"])
    page = text_of(manager.get("/labels/queue"))
    assert page.count(f"<code>{code}</code>") == 2
    assert "Tina Tech" in page and "Download (PDF)" in page and "Download (ZPL (Zebra))" in page
    assert "REPRINT</span> torn" in page
    elsewhere = text_of(browser(app, people["elsewhere"]).get("/labels/queue"))
    assert code not in elsewhere


def test_a_printed_label_is_confirmed_by_scanning_it_back_on_the_bench(app, people):
    code = sample(app, people)
    other = sample(app, people, n=2)
    tech = browser(app, people["tech"])
    for printed in (code, other):
        path = f"/labels/items/{printed}"
        print_form(tech, path, template="cryovial", destination="download:pdf")
    card = text_of(tech.get(f"/scan?code={code}&from=link"))
    assert "label not verified" in card and "Confirm label" in card
    # The card's own confirmation refuses the label of another tube, loudly.
    wrong = post(
        tech, "/labels/verify", {"label_code": other, "expected": code}, form_page="/scan"
    )
    assert any("WRONG LABEL" in message for message in flashes(wrong, "error"))
    assert item_state(app, other).label_verified_at is None
    # Scan mode "Confirm label": each scan confirms the scanned tube's label.
    mode = post(tech, "/scan/mode", {"mode": "confirm_label"}, form_page="/scan")
    assert "confirms the printed label" in text_of(mode)
    done = post(tech, "/scan", {"code": code}, form_page="/scan")
    assert f"{code}: label confirmed." in flashes(done, "success")
    assert item_state(app, code).label_verified_at is not None
    assert "label not verified" not in text_of(tech.get(f"/scan?code={code}&from=link"))
    token = csrf_token(tech, "/scan")
    refused = tech.post("/scan", data={"code": "RH9999999X", "csrf_token": token})
    assert refused.status_code in (404, 422)
    assert item_state(app, other).label_verified_at is None


def test_print_points_link_to_the_label_pages(app, people):
    code = sample(app, people)
    with app.app_context():
        session = lims_db.session()
        manager = actor(session, people["manager"])
        freezer(session, manager)
        box(session, manager, code="BOX-P1")
        coi = session.scalar(select(Item).where(Item.code == code)).episode.coi
    tech = browser(app, people["tech"])
    assert "/labels/boxes/BOX-P1" in text_of(tech.get("/storage/boxes/BOX-P1"))
    assert f"/labels/items/{code}" in text_of(tech.get(f"/items/{code}"))
    assert f"/labels/episodes/{coi}" in text_of(tech.get(f"/followup/{coi}"))
    unlabelled = text_of(tech.get(f"/labels/episodes/{coi}"))
    assert f"/labels/items/{code}" in unlabelled
    box_label = print_form(tech, "/labels/boxes/BOX-P1", template="box", destination="download:pdf")
    assert box_label.data.startswith(b"%PDF")


def test_a_bag_label_printed_from_the_card_at_the_treating_site_decodes_to_the_bag(
    app, people, tmp_path
):
    """The issue's "done when": a technician prints a product's bag label from the bench."""
    require_label_tools()
    with app.app_context():
        session = lims_db.session()
        episode = new_episode(session, actor(session, people["tech"]), n=12)
        code = issued_bag(app, session, people, episode).code
    tech = browser(app, people["tech"])
    card = text_of(tech.get(f"/scan?code={code}&from=link"))
    assert f"/labels/items/{code}" in card
    response = print_form(
        tech, f"/labels/items/{code}", template="product_bag", destination="download:pdf"
    )
    assert response.status_code == 200 and response.data.startswith(b"%PDF")
    (scanned,) = decoded(response.data, "code128", tmp_path)
    assert scanned == f"={code}00"
    text = pdf_text(response.data, tmp_path)
    assert "Patient 12" in text and "autologous use only" in text
    assert item_state(app, code).label_printed_at is not None
