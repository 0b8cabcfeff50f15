"""The history page, the correction form and the chain-of-custody PDF through the test client."""

from __future__ import annotations

import re
from html import unescape

import pytest

from lims import db as lims_db
from lims import identifiers
from lims.custody import production
from lims.custody.domain import Action
from lims.custody.services import Move, perform_action
from lims.history.corrections import correct_item
from tests.conftest import PASSWORD, csrf_token, log_in
from tests.integration.people import actor, build_cast, cpr, new_episode, second_person
from tests.pdf_tools import rendered, require_pdf_tools


@pytest.fixture
def people(app, make_site, make_user):
    return build_cast(make_site, make_user)


def signed_in(app, person):
    """A client of its own, logged in as ``person``."""
    client = app.test_client()
    assert log_in(client, person.username).status_code == 302
    return client


def walk(session, who, code, *steps, **options):
    for step in steps:
        perform_action(session, actor=who, code=code, action=step, **options)


def released_bag(app, people, *, n: int = 1) -> dict:
    """A bag of patient n released by the QP (the maker as second person), shipped to RH and
    received there (the manager as second person); one 1 mL retention aliquot taken from it."""
    with app.app_context():
        session = lims_db.session()
        tech, maker, qp = (actor(session, people[p]) for p in ("tech", "maker", "qp"))
        episode = new_episode(session, tech, n=n)
        collection = production.register_collection(
            session, actor=tech, coi=episode.coi, volume_ml=200, collected_at=lims_db.utcnow()
        )
        walk(session, tech, collection.code, Action.SHIP, move=Move(custodian="courier"))
        walk(session, maker, collection.code, Action.RECEIVE, Action.START_MANUFACTURING)
        lot = production.create_lot(
            session,
            actor=maker,
            lot_number=f"LOT-{n}",
            apheresis_codes=[collection.code],
            bags=[production.BagSpec(volume_ml=40)],
        )
        bag = lot.bags[0]
        walk(session, maker, bag.code, Action.QUARANTINE)
        for test in app.config["LIMS"]["custody"]["required_qc"]:
            production.add_qc_result(
                session, actor=maker, lot_number=lot.lot_number, test=test, value="ok", passed=True
            )
        perform_action(
            session,
            actor=qp,
            code=bag.code,
            action=Action.RELEASE,
            password=PASSWORD,
            witness=second_person(session, people["maker"]),
        )
        walk(session, maker, bag.code, Action.SHIP, move=Move(custodian="DHL Medical"))
        walk(
            session,
            tech,
            bag.code,
            Action.RECEIVE,
            witness=second_person(session, people["manager"]),
        )
        (retention,) = production.aliquot(
            session,
            actor=tech,
            parent_code=bag.code,
            count=1,
            quantity_each=1,
            unit="mL",
            material_type="product_retention",
        )
        return {
            "bag": bag.code,
            "check": bag.check_character,
            "collection": collection.code,
            "aliquot": retention.code,
            "coi": episode.coi,
            "pseudonym": episode.patient.pseudonym,
            "cpr": cpr(n),
            "name": f"Patient {n}",
        }


def page_text(response) -> str:
    """What a person reads on the page: tags dropped, white space collapsed."""
    text = re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))
    return re.sub(r"\s+", " ", unescape(text))


# -- the history page -------------------------------------------------------------------------


def test_the_history_page_shows_events_signatures_and_lineage(app, people):
    made = released_bag(app, people)
    response = signed_in(app, people["tech"]).get(f"/items/{made['aliquot']}")
    assert response.status_code == 200
    text = page_text(response)
    assert made["bag"] in text and made["collection"] in text and "LOT-1" in text
    assert made["pseudonym"] in text and made["coi"][2:7] in text
    assert "Chain-of-custody report (PDF)" in text and "Correct a value" in text

    bag_page = page_text(signed_in(app, people["manager"]).get(f"/items/{made['bag']}"))
    for expected in (
        "quarantine → released",
        "Signed: Quinn Person (released)",
        "Second person: Mads Maker (verified)",
        "Second person: Mona Manager (verified)",
        "Custodian: Mads Maker → DHL Medical",
        "Site: AUH → RH",
        made["aliquot"],
    ):
        assert expected in bag_page, expected
    # The aliquot took 1 mL from the bag: a value changed after first entry, flagged.
    assert "Values changed after first entry" in bag_page
    assert "Quantity 39 mL †" in bag_page
    for identity in (made["cpr"], identifiers.format_cpr(made["cpr"]), made["name"]):
        assert identity not in bag_page


def test_a_scanned_din_finds_the_bag_and_an_unknown_code_is_a_clear_404(app, people):
    made = released_bag(app, people)
    client = signed_in(app, people["tech"])
    assert client.get(f"/items/={made['bag']}00").status_code == 200
    assert client.get(f"/items/{made['bag']}{made['check']}").status_code == 200
    unknown = identifiers.format_local_id("RH", 9_999_999)
    response = client.get(f"/items/{unknown}")
    assert response.status_code == 404
    assert f"No bag or tube with identifier {unknown}" in page_text(response)
    assert client.get(f"/items/{unknown}/report.pdf").status_code == 404
    assert client.get(f"/items/{unknown}/correct").status_code == 404
    product_code = client.get("/items/=<S1234100")
    assert product_code.status_code == 422


def test_researchers_are_refused_every_history_page(app, people):
    made = released_bag(app, people)
    client = signed_in(app, people["researcher"])
    for path in ("", "/report.pdf", "/correct"):
        assert client.get(f"/items/{made['aliquot']}{path}").status_code == 403
    assert client.post(f"/items/{made['aliquot']}/correct").status_code == 403


# -- the correction form ----------------------------------------------------------------------


def test_a_correction_through_the_form_is_signed_and_flagged(app, people):
    made = released_bag(app, people)
    client = signed_in(app, people["tech"])
    form_page = client.get(f"/items/{made['aliquot']}/correct")
    assert form_page.status_code == 200
    assert "Quantity (now 1 mL)" in page_text(form_page)
    token = csrf_token(client, f"/items/{made['aliquot']}/correct")
    data = {
        "csrf_token": token,
        "field": "quantity",
        "value": "1.2",
        "reason": "weighed again",
        "password": "wrong-password-here",
    }
    refused = client.post(f"/items/{made['aliquot']}/correct", data=data)
    assert refused.status_code == 422
    text = page_text(refused)
    assert "The password for the signature is wrong" in text
    assert "weighed again" in text  # the form keeps what was typed

    blank = client.post(f"/items/{made['aliquot']}/correct", data=data | {"reason": ""})
    assert blank.status_code == 422
    assert "Give the reason for the correction." in page_text(blank)
    bad_field = client.post(f"/items/{made['aliquot']}/correct", data=data | {"field": "code"})
    assert bad_field.status_code == 422

    done = client.post(f"/items/{made['aliquot']}/correct", data=data | {"password": PASSWORD})
    assert done.status_code == 302
    assert done.headers["Location"].endswith(f"/items/{made['aliquot']}")
    history = page_text(client.get(f"/items/{made['aliquot']}"))
    assert "quantity corrected and signed" in history
    assert "1.2 mL †" in history
    assert "Signed: Tina Tech (corrected)" in history
    assert "weighed again" in history


# -- the PDF report ---------------------------------------------------------------------------


def test_the_report_pdf_carries_the_barcode_signatures_and_changes(app, people, tmp_path):
    require_pdf_tools()
    from pyzbar.pyzbar import decode

    made = released_bag(app, people)
    with app.app_context():
        session = lims_db.session()
        correct_item(
            session,
            actor=actor(session, people["manager"]),
            code=made["bag"],
            field="cell_count",
            value="250000000",
            reason="dose from the CoA",
            password=PASSWORD,
        )
    response = signed_in(app, people["tech"]).get(f"/items/{made['bag']}/report.pdf")
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert f"chain-of-custody-{made['bag']}.pdf" in response.headers["Content-Disposition"]
    assert response.data.startswith(b"%PDF")

    image, text = rendered(response.data, tmp_path)
    assert [symbol.data.decode() for symbol in decode(image)] == [made["bag"]]
    dark = sum(image.histogram()[:128])
    assert dark > 0.01 * image.width * image.height, "the page is blank"

    flat = re.sub(r"\s+", " ", text)
    assert "Chain-of-custody report" in flat
    assert "Quinn Person" in flat and "released" in flat
    assert "Mads Maker" in flat and "second person" in flat
    assert "Mona Manager" in flat
    assert "changed after first entry" in flat
    assert "Values changed after first entry" in flat
    assert "250,000,000 †" in flat  # the corrected value, flagged in the item facts
    assert "dose from the CoA" in flat
    # Old and new values in "Values changed after first entry", with the step that changed them.
    assert re.search(r"Cell count\s+—\s+250,000,000\s+Mona Manager", flat), flat
    assert re.search(r"Quantity\s+40\s+39\s+Tina Tech", flat), flat
    assert made["pseudonym"] in flat and "LOT-1" in flat
    assert re.search(r"Page 1 of \d", flat)
    assert "Tina Tech" in flat  # the generating user in the footer
    for identity in (made["cpr"], identifiers.format_cpr(made["cpr"]), made["name"]):
        assert identity not in flat


def test_the_report_barcode_of_an_aliquot_decodes_to_its_local_id(app, people, tmp_path):
    require_pdf_tools()
    from pyzbar.pyzbar import decode

    made = released_bag(app, people)
    response = signed_in(app, people["manager"]).get(f"/items/{made['aliquot']}/report.pdf")
    assert response.status_code == 200
    image, text = rendered(response.data, tmp_path)
    assert [symbol.data.decode() for symbol in decode(image)] == [made["aliquot"]]
    assert made["bag"] in text
