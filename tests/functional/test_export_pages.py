"""The export pages through the test client, as each role: the filter form, the streamed CSV,
the XLSX download, the capacity report and the box-map PDF."""

from __future__ import annotations

import html
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from lims import db as lims_db
from lims.audit.models import AuditEntry
from lims.exports.inventory import RESEARCHER_COLUMNS, STAFF_COLUMNS
from tests.conftest import log_in
from tests.integration.people import build_cast
from tests.integration.test_inventory_export import identities, sheet_rows, small_freezer
from tests.pdf_tools import rendered, require_pdf_tools

FILENAME = re.compile(r'attachment; filename="?inventory-(\w+)-\d{4}-\d{2}-\d{2}\.(csv|xlsx)"?')


@pytest.fixture
def people(app, make_site, make_user):
    return build_cast(make_site, make_user)


@pytest.fixture
def freezer(app, people, make_user):
    with app.app_context():
        return small_freezer(lims_db.session(), people, make_user)


def browser(app, person):
    client = app.test_client()
    assert log_in(client, person.username).status_code == 302
    return client


def text_of(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def flashes(response) -> list[str]:
    found = re.findall(r'<div class="flash flash-error"[^>]*>(.*?)</div>', text_of(response), re.S)
    return [message.strip() for message in found]


def exports_recorded(app) -> list[dict]:
    with app.app_context():
        rows = lims_db.session().scalars(
            select(AuditEntry).where(AuditEntry.entity == "inventory_export")
        )
        return [{"user_id": row.user_id, **json.loads(row.new_value)} for row in rows]


def read_csv(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


@pytest.mark.parametrize("role", ["tech", "manager", "admin", "researcher"])
def test_the_filter_form_offers_what_the_role_may_export(app, people, freezer, role):
    page = browser(app, people[role]).get("/exports/inventory")
    assert page.status_code == 200
    text = text_of(page)
    assert "Download CSV" in text and "Download XLSX" in text
    assert re.search(r'<option[^>]*value="CART-01"', text)
    offers_checked_out = re.search(r'<option[^>]*value="checked_out"', text) is not None
    assert offers_checked_out is (role != "researcher")
    if role == "tech":
        assert re.findall(r'<select[^>]*name="site".*?</select>', text, re.S)[0].count(
            "<option"
        ) == 1  # their own site only
        assert 'value="RH-F80-1"' in text and 'value="OUH-F80-1"' not in text
    if role == "researcher":
        assert "No Chain of Identity and no calendar dates" in text


@pytest.mark.parametrize("role", ["tech", "manager", "admin"])
def test_staff_download_a_streamed_csv_of_their_site(app, people, freezer, role):
    client = browser(app, people[role])
    response = client.get("/exports/inventory.csv")
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "text/csv"
    assert FILENAME.fullmatch(response.headers["Content-Disposition"]).group(1) == "RH"
    frame = read_csv(response.get_data())
    assert list(frame.columns) == list(STAFF_COLUMNS)
    assert frame.to_dict(orient="records") == freezer.expected
    (recorded,) = exports_recorded(app)
    assert (recorded["user_id"], recorded["rows"], recorded["format"]) == (
        people[role].id, 7, "csv",
    )  # fmt: skip


def test_filters_come_from_the_query_string(app, people, freezer):
    client = browser(app, people["manager"])
    response = client.get("/exports/inventory.csv?site=RH&unit=RH-F80-1&state=checked_out&box=")
    assert list(read_csv(response.get_data())["code"]) == [freezer.codes["plasma"][1]]
    everything = read_csv(client.get("/exports/inventory.csv?site=*").get_data())
    assert len(everything) == 8
    assert FILENAME.fullmatch(
        client.get("/exports/inventory.csv?site=*").headers["Content-Disposition"]
    ).group(1) == "all"


def test_refused_exports_show_the_form_with_the_reason_and_record_nothing(app, people, freezer):
    client = browser(app, people["tech"])
    other_site = client.get("/exports/inventory.csv?site=OUH")
    assert other_site.status_code == 403
    assert "technicians see the storage of their own site" in flashes(other_site)[0]
    assert "Download CSV" in text_of(other_site)
    unknown = client.get("/exports/inventory.xlsx?unit=NOPE")
    assert unknown.status_code == 404 and flashes(unknown) == ["No storage unit NOPE."]
    wrong_type = client.get("/exports/inventory.csv?material_type=blood")
    assert wrong_type.status_code == 422 and "Unknown material type" in flashes(wrong_type)[0]
    assert exports_recorded(app) == []


def test_the_xlsx_download(app, people, freezer):
    # Buffered: the client reads the whole file and closes it, as a server does when sent.
    client = browser(app, people["manager"])
    response = client.get("/exports/inventory.xlsx?box=BOX-1", buffered=True)
    assert response.status_code == 200
    assert response.mimetype.endswith("spreadsheetml.sheet")
    assert FILENAME.fullmatch(response.headers["Content-Disposition"]).group(2) == "xlsx"
    header, *lines = sheet_rows(response.data)
    assert list(header) == list(STAFF_COLUMNS)
    codes = [line[header.index("code")] for line in lines]
    assert codes == [row["code"] for row in freezer.expected if row["box"] == "BOX-1"]
    assert all(isinstance(line[header.index("quantity")], float) for line in lines)
    (recorded,) = exports_recorded(app)
    assert (recorded["format"], recorded["rows"], recorded["filters"]) == (
        "xlsx", 5, {"box": "BOX-1"},
    )  # fmt: skip


def test_a_researchers_export_carries_no_identifiers(app, people, freezer):
    client = browser(app, people["researcher"])
    response = client.get("/exports/inventory.csv")
    assert FILENAME.fullmatch(response.headers["Content-Disposition"]).group(1) == "all"
    text = response.get_data(as_text=True)
    frame = read_csv(response.get_data())
    assert list(frame.columns) == list(RESEARCHER_COLUMNS)
    assert len(frame) == 4
    workbook = client.get("/exports/inventory.xlsx", buffered=True).data
    cells = " ".join(
        "" if value is None else str(value) for line in sheet_rows(workbook) for value in line
    )
    for content in (text, cells):
        for identity in identities(freezer):
            assert identity not in content
        assert not re.search(r"\d{4}-\d{2}-\d{2}|\d{1,2}:\d{2}", content)
    refused = client.get("/exports/inventory.csv?state=reserved")
    assert refused.status_code == 422
    assert {row["view"] for row in exports_recorded(app)} == {"researcher"}


# -- capacity and the box map -------------------------------------------------------------------


def test_the_capacity_page(app, people, freezer):
    tech = browser(app, people["tech"])
    page = tech.get("/storage/capacity")
    assert page.status_code == 200
    text = re.sub(r"\s+", " ", text_of(page))
    assert "Storage capacity at RH" in text and "RH-F80-1" in text and "OUH-F80-1" not in text
    assert "Choose a unit to see its racks and boxes." in text
    unit = re.sub(r"\s+", " ", text_of(tech.get("/storage/capacity?unit=RH-F80-1")))
    assert "Boxes of RH-F80-1" in unit and "/storage/boxes/BOX-1/map.pdf" in unit
    assert tech.get("/storage/capacity?site=OUH").status_code == 403
    manager = browser(app, people["manager"])
    network = text_of(manager.get("/storage/capacity?site=*"))
    assert "all sites" in network and "OUH-F80-1" in network
    assert browser(app, people["researcher"]).get("/storage/capacity").status_code == 403
    assert tech.get("/storage/capacity?unit=NOPE").status_code == 404


def map_rendered(pdf: bytes, tmp_path: Path):
    """The box map as an image, and its text with the spaces of the layout collapsed."""
    image, text = rendered(pdf, tmp_path)
    return image, re.sub(r"\s+", " ", text)


def test_the_box_map_pdf(app, people, freezer, tmp_path):
    require_pdf_tools()
    from pyzbar.pyzbar import decode

    client = browser(app, people["tech"])
    response = client.get("/storage/boxes/box-1/map.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.data.startswith(b"%PDF")
    image, text = map_rendered(response.data, tmp_path)
    assert [symbol.data.decode() for symbol in decode(image)] == ["BOX-1"]
    assert "Box BOX-1: RH-F80-1 / R1 / BOX-1" in text
    for code in (*freezer.codes["plasma"], freezer.codes["serum"], freezer.codes["no_consent"]):
        assert code in text
    assert "checked out" in text and "reserved" in text and "Plasma" in text
    assert "5 of 81 used" in text and "printed" in text and "Test Technician" not in text
    assert "Tina Tech" in text  # who printed it
    for identity in identities(freezer):
        assert identity not in text

    bin_map = client.get("/storage/boxes/BOX-2/map.pdf")
    _, bin_text = map_rendered(bin_map.data, tmp_path)
    assert freezer.codes["withdrawn"] in bin_text and "3 of 5 places free" in bin_text

    assert client.get("/storage/boxes/OUH-BOX/map.pdf").status_code == 403
    assert client.get("/storage/boxes/NOPE/map.pdf").status_code == 404
    assert browser(app, people["manager"]).get("/storage/boxes/OUH-BOX/map.pdf").status_code == 200
    researcher = browser(app, people["researcher"])
    assert researcher.get("/storage/boxes/BOX-1/map.pdf").status_code == 403
