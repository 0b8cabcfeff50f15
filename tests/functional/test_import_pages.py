"""The import pages through the test client: templates, dry run then import, refusals."""

from __future__ import annotations

import io

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from lims import db as lims_db
from lims.custody.models import Item
from lims.storage import services as storage
from lims.storage.models import Box
from tests.conftest import csrf_token
from tests.functional.test_shipment_pages import browser, flashes, text_of
from tests.integration.people import actor, build_cast, new_episode

LAYOUT = (
    "Unit Code;Unit Name;Unit Type;Temperature Class;Rack Code;Box Code;Box Type\r\n"
    "RH-F80-1;Freezer 1;freezer;-80;R1;BOX-1;9x9\r\n"
    "RH-F80-1;;;;R1;BOX-2;10x10\r\n"
)


@pytest.fixture
def people(app, make_site, make_user):
    return build_cast(make_site, make_user)


def upload(client, path: str, prefix: str, content: bytes, filename: str, *, run=False, **data):
    fields = {
        f"{prefix}-csrf_token": csrf_token(client, "/imports"),
        f"{prefix}-file": (io.BytesIO(content), filename),
        f"{prefix}-{'run' if run else 'dry_run'}": "1",
        **{f"{prefix}-{name}": value for name, value in data.items()},
    }
    return client.post(path, data=fields, content_type="multipart/form-data")


def words(response) -> str:
    """The page's text with runs of white space as one space (templates wrap lines)."""
    return " ".join(text_of(response).split())


def count(app, model) -> int:
    with app.app_context():
        return lims_db.session().scalar(select(func.count()).select_from(model))


def test_templates_download_as_csv_and_xlsx(app, people):
    client = browser(app, people["manager"])
    page = client.get("/imports")
    assert page.status_code == 200
    assert "/imports/inventory/template.xlsx" in text_of(page)
    csv_file = client.get("/imports/inventory/template.csv")
    assert csv_file.status_code == 200 and csv_file.mimetype == "text/csv"
    assert "attachment" in csv_file.headers["Content-Disposition"]
    assert csv_file.get_data().decode("utf-8-sig").startswith("coi,material_type,quantity,unit")
    xlsx_file = client.get("/imports/layout/template.xlsx")
    assert xlsx_file.status_code == 200
    book = load_workbook(io.BytesIO(xlsx_file.get_data()))
    assert book.sheetnames == ["layout", "help"]
    assert book["layout"]["A1"].value == "site" and book["layout"]["B1"].value == "unit_code"
    assert client.get("/imports/layout/template.pdf").status_code == 404
    assert client.get("/imports/labels/template.csv").status_code == 404


def test_a_layout_dry_run_then_the_import_as_a_manager(app, people):
    client = browser(app, people["manager"])
    dry = upload(client, "/imports/layout", "layout", LAYOUT.encode(), "freezer.csv")
    assert dry.status_code == 200, text_of(dry)
    assert "No problems in freezer.csv" in flashes(dry, "info")[0]
    assert "Would create 1 storage unit(s), 1 rack(s) and 2 box(es)" in words(dry)
    assert count(app, Box) == 0
    done = upload(
        client, "/imports/layout", "layout", LAYOUT.encode(), "freezer.csv", run=True,
        reason="new freezer",
    )  # fmt: skip
    assert done.status_code == 200, text_of(done)
    assert flashes(done, "success") == ["freezer.csv imported."]
    assert count(app, Box) == 2
    again = upload(client, "/imports/layout", "layout", LAYOUT.encode(), "freezer.csv", run=True)
    assert again.status_code == 422
    page = text_of(again)
    assert "A box BOX-1 exists already." in page and "Nothing was imported" in page
    assert count(app, Box) == 2


def test_an_inventory_dry_run_then_the_import_lists_the_new_identifiers(app, people):
    with app.app_context():
        session = lims_db.session()
        manager, tech = actor(session, people["manager"]), actor(session, people["tech"])
        storage.create_unit(
            session, actor=manager, code="RH-F80-1", name="F", unit_type="freezer",
            temperature_class="minus_80",
        )  # fmt: skip
        storage.create_box(session, actor=manager, code="BOX-1", unit_code="RH-F80-1",
                           box_type="9x9")  # fmt: skip
        coi = new_episode(session, tech).coi
    content = (
        "coi,material_type,quantity,unit,collected_at,box_code,position,former_label\n"
        f"{coi},plasma,1.0,mL,2024-03-05,BOX-1,A1,OLD-7\n"
    ).encode()
    client = browser(app, people["manager"])
    dry = upload(client, "/imports/inventory", "inventory", content, "old.csv")
    assert dry.status_code == 200 and "Would register and store 1 tube(s)" in words(dry)
    assert count(app, Item) == 0
    no_reason = upload(client, "/imports/inventory", "inventory", content, "old.csv", run=True)
    assert no_reason.status_code == 422
    assert flashes(no_reason, "error") == ["Give the reason for the import."]
    assert count(app, Item) == 0
    done = upload(
        client, "/imports/inventory", "inventory", content, "old.csv", run=True, reason="legacy"
    )
    assert done.status_code == 200, text_of(done)
    with app.app_context():
        code = lims_db.session().scalar(select(Item.code))
    assert code and code in text_of(done) and "OLD-7" in text_of(done)


@pytest.mark.parametrize("person", ["tech", "researcher", "admin"])
def test_other_roles_get_403(app, people, person):
    client = browser(app, people[person])
    assert client.get("/imports").status_code == 403
    assert client.get("/imports/inventory/template.csv").status_code == 403
    token = csrf_token(client, "/")
    response = client.post(
        "/imports/layout",
        data={"layout-csrf_token": token, "layout-file": (io.BytesIO(LAYOUT.encode()), "x.csv"),
              "layout-run": "1"},
        content_type="multipart/form-data",
    )  # fmt: skip
    assert response.status_code == 403
    assert count(app, Box) == 0


@pytest.mark.parametrize(
    ("content", "filename", "expected"),
    [
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "scan.pdf", "is not a CSV or XLSX file (it is a PDF)"),
        (bytes(range(256)) * 8, "garbage.csv", "'garbage.csv' is not a CSV or XLSX file"),
        (b"PK\x03\x04" + b"\x01" * 64, "broken.xlsx", "The Excel file is damaged"),
        (b"colour,size\nred,2\n", "wrong.csv", "missing column unit_code, box_code"),
    ],
)
def test_a_bad_upload_shows_a_clear_error_and_changes_nothing(
    app, people, content, filename, expected
):
    client = browser(app, people["manager"])
    response = upload(client, "/imports/layout", "layout", content, filename, run=True)
    assert response.status_code == 422
    (message,) = flashes(response, "error")
    assert expected in message and "Nothing was imported" in message
    assert count(app, Box) == 0


def test_no_file_chosen_is_a_form_error(app, people):
    client = browser(app, people["manager"])
    response = client.post(
        "/imports/inventory",
        data={"inventory-csrf_token": csrf_token(client, "/imports"), "inventory-dry_run": "1"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    assert flashes(response, "error") == ["File (CSV or XLSX): Choose the file to import."]


def test_a_file_too_long_for_a_page_is_sent_to_the_command_line(app, people, monkeypatch):
    from lims.imports import views

    monkeypatch.setitem(views.PAGE_ROWS, "layout", 1)
    client = browser(app, people["manager"])
    response = upload(client, "/imports/layout", "layout", LAYOUT.encode(), "big.csv", run=True)
    assert response.status_code == 422
    (message,) = flashes(response, "error")
    assert "The file has 2 rows; an import here takes at most 1" in message
    assert "lims import" in message
    assert count(app, Box) == 0
