"""The researcher's request pages and the shared request page, through the test client: the
search with each filter, the cart, the request form, submission, cancelling, the receipt, the
manifest downloads, who is refused where, and that no patient identity ever reaches a
researcher. The biobank's steps (review, picking, dispatch) are set up through the services."""

from __future__ import annotations

import csv
import html
import io
import re
import shutil
import subprocess
from datetime import date

import pytest
from openpyxl import load_workbook
from sqlalchemy import select, update

from lims import db as lims_db
from lims.custody.domain import State
from lims.custody.models import Item
from lims.identifiers import eye_readable
from lims.requests import fulfilment, researcher_views, review, services
from lims.requests.models import AliquotRequest, LineStatus, RequestState
from tests.conftest import PASSWORD, csrf_token, log_in
from tests.integration.biobank import STUDY, build_biobank
from tests.integration.people import actor, build_cast
from tests.pdf_tools import require

DETAILS = {
    "title": "Cytokine kinetics after CAR-T",
    "principal_investigator": "Prof. Ida Immun",
    "ethics_ref": "H-24012345",
    "dpa_ref": "P-2025-77",
    "intended_analyses": "Luminex cytokine panel",
    "delivery": "pick_up",
    "delivery_details": "Collected by the group's technician",
}
CSV_HEADER = (
    "aliquot,check,subject,study,timepoint,timepoint_day,material_type,quantity,unit,thaw_count"
)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
def people(app, make_site, make_user):
    return build_cast(make_site, make_user)


@pytest.fixture
def bank(app, people, make_user):
    return build_biobank(app, people, make_user)


def browser(app, person):
    """A client logged in as ``person`` (one per person, as each works in their own browser)."""
    client = app.test_client()
    assert log_in(client, person.username).status_code == 302
    return client


def text_of(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def plain(response) -> str:
    """The page's text without tags, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text_of(response)))


def flashes(response, category: str) -> list[str]:
    found = re.findall(
        rf'<div class="flash flash-{category}"[^>]*>(.*?)</div>', response.get_data(as_text=True)
    )
    return [html.unescape(message) for message in found]


def field_errors(response) -> list[str]:
    found = re.findall(r'<div class="error" role="alert">(.*?)</div>', response.get_data(True))
    return [html.unescape(message) for message in found]


def post(client, path: str, data: dict, *, page: str = "/requests", follow: bool = True):
    return client.post(
        path, data={**data, "csrf_token": csrf_token(client, page)}, follow_redirects=follow
    )


def summary(response) -> tuple[int, int]:
    """(groups, aliquots) from the results heading of the search page."""
    match = re.search(r"<h2>(\d+) group\(s\), (\d+) aliquot\(s\)</h2>", response.get_data(True))
    assert match, response.get_data(as_text=True)[:2000]
    return int(match.group(1)), int(match.group(2))


# -- set-up through the services --------------------------------------------------------------


def in_session(app, work):
    with app.app_context():
        return work(lims_db.session())


def make_draft(app, bank, codes, **details) -> str:
    def work(session):
        researcher = actor(session, bank.researcher)
        code = services.create_request(session, actor=researcher, **{**DETAILS, **details}).code
        if codes:
            services.add_items(session, actor=researcher, code=code, item_codes=codes)
        return code

    return in_session(app, work)


def make_submitted(app, bank, codes) -> str:
    code = make_draft(app, bank, codes)
    in_session(app, lambda s: services.submit(s, actor=actor(s, bank.researcher), code=code))
    return code


def approve(app, people, code, codes=None) -> None:
    def work(session):
        manager = actor(session, people["manager"])
        review.start_review(session, actor=manager, code=code)
        review.record_opt_out_checks(session, actor=manager, code=code)
        review.decide(
            session,
            actor=manager,
            code=code,
            decision="approved",
            password=PASSWORD,
            comment="fits the ethics approval",
            approve=codes,
        )

    in_session(app, work)


def pick(app, people, code, codes) -> None:
    def work(session):
        for tube in codes:
            fulfilment.pick(session, actor=actor(session, people["tech"]), code=code, scan=tube)

    in_session(app, work)


def hand_over(app, people, code) -> None:
    in_session(
        app,
        lambda s: fulfilment.dispatch(
            s, actor=actor(s, people["tech"]), code=code, courier="Karl Collector"
        ),
    )


def state_of(app, code) -> RequestState:
    return in_session(
        app, lambda s: s.scalar(select(AliquotRequest.state).where(AliquotRequest.code == code))
    )


def line_codes(app, code) -> list[str]:
    def work(session):
        request = session.scalar(select(AliquotRequest).where(AliquotRequest.code == code))
        return sorted(line.item.code for line in request.lines)

    return in_session(app, work)


def drafts_of(app, person) -> list[str]:
    return in_session(
        app,
        lambda s: list(
            s.scalars(
                select(AliquotRequest.code).where(
                    AliquotRequest.researcher_id == person.id,
                    AliquotRequest.state == RequestState.DRAFT,
                )
            )
        ),
    )


# -- the search -------------------------------------------------------------------------------


def test_the_search_with_each_filter(app, bank):
    client = browser(app, bank.researcher)
    first_d0 = bank.tubes[(bank.first, "D0")][0]
    in_session(
        app,
        lambda s: (
            s.execute(update(Item).where(Item.code == first_d0).values(thaw_count=2)),
            s.commit(),
        ),
    )
    # 3 subjects x D0, D7, D28, 2 tubes each at RH; subject 1 has one more D7 tube at AUH.
    expected = {
        "": (9, 19),
        f"study={STUDY}": (9, 19),
        "study=OTHER-STUDY": (0, 0),
        "product=Breyanzi": (9, 19),
        "product=Yescarta": (0, 0),
        "material_type=plasma": (9, 19),
        "material_type=pbmc": (0, 0),
        "timepoint=D7": (3, 7),
        "timepoint=d28": (3, 6),
        "day_from=7": (6, 13),
        "day_to=0": (3, 6),
        "day_from=7&day_to=7": (3, 7),
        "min_quantity=0.5": (9, 19),
        "min_quantity=0.6": (0, 0),
        "max_thaws=0": (9, 18),
        "max_thaws=2": (9, 19),
        "site=AUH": (1, 1),
        "site=RH": (9, 18),
        "site=RH&timepoint=D7&max_thaws=0": (3, 6),
    }
    for query, figures in expected.items():
        response = client.get(f"/requests/search?{query}")
        assert response.status_code == 200, query
        assert summary(response) == figures, query
    page = text_of(client.get("/requests/search?timepoint=D7"))
    for pseudonym in bank.pseudonyms:
        assert pseudonym in page
    assert "(day 7)" in page and "(day 0)" not in page


def test_the_results_are_paged(app, bank, monkeypatch):
    monkeypatch.setattr(researcher_views, "PER_PAGE", 4)
    client = browser(app, bank.researcher)
    first = text_of(client.get("/requests/search"))
    third = text_of(client.get("/requests/search?page=3"))
    assert "Page 1 of 3" in first and "Next →" in first
    assert "Page 3 of 3" in third and "← Previous" in third
    assert third.count('class="add-group"') == 1


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("day_from=abc", "Give a whole number."),
        ("day_from=10&day_to=5", "The last day comes before the first."),
        ("material_type=gold", "Unknown aliquot material type"),
        ("min_quantity=-1", "The quantity may not be negative."),
        ("min_quantity=lots", "Give a number, e.g. 0.5."),
        ("max_thaws=-1", "The number may not be negative."),
        ("max_thaws=1.5", "Give a whole number."),
        ("page=0", "Give a number from 1 to 1000000."),
        ("subject=" + "X" * 200, "At most 120 characters."),
    ],
)
def test_bad_filters_show_the_message_with_422(app, bank, query, message):
    client = browser(app, bank.researcher)
    response = client.get(f"/requests/search?{query}")
    assert response.status_code == 422
    shown = field_errors(response) + flashes(response, "error")
    assert any(text.startswith(message) for text in shown), shown
    # A bad filter gives no results; a bad group leaves the results of good filters shown.
    assert ("group(s)" in response.get_data(as_text=True)) is query.startswith("subject=")


def test_a_group_expands_and_its_aliquots_go_into_the_cart(app, bank):
    client = browser(app, bank.researcher)
    first, second = bank.pseudonyms[0], bank.pseudonyms[1]
    d0 = bank.tubes[(first, "D0")]
    page = client.get(f"/requests/search?study={STUDY}&subject={first}&at=D0")
    body = text_of(page)
    assert f"Subject {first} at D0" in plain(page)
    for tube in d0:
        assert f'name="items" value="{tube}"' in body
    assert bank.tubes[(first, "D7")][0] not in body  # another group's tube
    assert drafts_of(app, bank.researcher) == []

    response = post(
        client,
        "/requests/cart/items",
        {"items": [d0[0]], "query": f"study={STUDY}&subject={first}&at=D0"},
        page="/requests/search",
        follow=False,
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"/requests/search?study={STUDY}&subject={first}&at=D0"
    (cart,) = drafts_of(app, bank.researcher)
    assert line_codes(app, cart) == [d0[0]]
    page = client.get(response.headers["Location"])
    assert flashes(page, "success") == [f"1 aliquot(s) added to {cart}."]
    assert f'name="items" value="{d0[0]}"' not in page.get_data(as_text=True)  # in the cart
    assert f'name="items" value="{d0[1]}"' in page.get_data(as_text=True)

    # Once there is a cart, the group's form adds to it (and a second add reuses it).
    assert f'action="/requests/{cart}/items"' in page.get_data(as_text=True)
    post(client, f"/requests/{cart}/items", {"items": [d0[1]]}, page="/requests/search")
    # "Add N of this group": two of the three D7 tubes of subject 1, and one D28 of subject 2.
    post(
        client,
        "/requests/cart/group",
        {"subject": first, "at": "D7", "material_type": "plasma", "count": "2", "query": ""},
        page="/requests/search",
    )
    response = post(
        client,
        "/requests/cart/group",
        {"subject": second, "at": "D28", "material_type": "plasma", "count": "5", "query": ""},
        page="/requests/search",
    )
    assert flashes(response, "info") == ["Only 2 of 5 are available."]
    assert drafts_of(app, bank.researcher) == [cart]
    codes = line_codes(app, cart)
    assert len(codes) == 6
    assert set(d0) | set(bank.tubes[(second, "D28")]) <= set(codes)
    assert len(set(codes) & ({bank.auh_tube} | set(bank.tubes[(first, "D7")]))) == 2

    # A code that is no aliquot refuses the lot: nothing is added.
    response = post(
        client,
        "/requests/cart/items",
        {"items": [bank.tubes[(second, "D0")][0], "NOPE-1"]},
        page="/requests/search",
    )
    assert flashes(response, "error") == ["Nothing was added: No aliquot NOPE-1."]
    assert len(line_codes(app, cart)) == 6


def test_the_search_is_for_researchers_only(app, people, bank):
    for person in ("manager", "tech", "admin"):
        client = browser(app, people[person])
        assert client.get("/requests/search").status_code == 403
        assert client.post("/requests/cart/items").status_code == 403


# -- the draft, the form and the submission ---------------------------------------------------


def test_the_request_form_and_the_submission(app, people, bank):
    client = browser(app, bank.researcher)
    tubes = bank.tubes[(bank.first, "D0")] + [bank.auh_tube]
    code = make_draft(app, bank, tubes, principal_investigator="", ethics_ref="")
    page = client.get(f"/requests/{code}/edit")
    assert page.status_code == 200
    assert 'value="Cytokine kinetics after CAR-T"' in page.get_data(as_text=True)

    # The service's refusal is shown at the field it names, and nothing is saved.
    response = post(
        client, f"/requests/{code}/edit", {**DETAILS, "title": "T" * 201}, page=f"/requests/{code}"
    )
    assert response.status_code == 422
    assert field_errors(response) == ["Project title is at most 200 characters."]
    assert (
        in_session(
            app, lambda s: s.scalar(select(AliquotRequest.title).where(AliquotRequest.code == code))
        )
        == DETAILS["title"]
    )

    # Submitting with a detail missing: refused, named, still a draft.
    response = post(client, f"/requests/{code}/submit", {}, page=f"/requests/{code}")
    assert response.status_code == 422
    assert flashes(response, "error") == [
        "Fill in before submitting: Principal investigator, Ethics approval reference."
    ]
    assert state_of(app, code) is RequestState.DRAFT

    details = {**DETAILS, "principal_investigator": "Prof. Ida Immun", "ethics_ref": "H-1"}
    response = post(client, f"/requests/{code}/edit", details, page=f"/requests/{code}")
    assert response.status_code == 200
    assert flashes(response, "success") == [f"The details of {code} are saved."]
    response = post(client, f"/requests/{code}/submit", {}, page=f"/requests/{code}")
    assert response.status_code == 200
    assert state_of(app, code) is RequestState.SUBMITTED
    (success,) = flashes(response, "success")
    assert success == f"Request {code} submitted: 2 aliquot(s) for review at RH."
    (info,) = flashes(response, "info")
    sibling = re.search(r"request (REQ-\d{4}-\d{5})", info).group(1)
    assert info.startswith(f"The part kept at AUH is request {sibling} (1 aliquot(s))")
    assert line_codes(app, sibling) == [bank.auh_tube]
    body = plain(client.get(f"/requests/{code}"))
    assert "draft → submitted" in body
    assert "Edit details" not in body and "Submit request" not in body

    # The RH manager has it on their desk; AUH's manager sees the AUH part only.
    manager = browser(app, people["manager"])
    listing = manager.get("/requests").get_data(as_text=True)
    waiting = listing.split('id="waiting"')[1].split("</section>")[0]
    assert f'id="request-{code}"' in waiting and sibling not in listing
    page = manager.get(f"/requests/{code}")
    assert page.status_code == 200
    assert 'id="to-review"' in page.get_data(as_text=True)
    other = browser(app, people["other_manager"])
    assert other.get(f"/requests/{code}").status_code == 404
    assert code not in other.get("/requests").get_data(as_text=True)
    assert other.get(f"/requests/{sibling}").status_code == 200
    # Once submitted, the details are fixed.
    response = client.get(f"/requests/{code}/edit", follow_redirects=True)
    assert flashes(response, "error") == [
        f"Request {code} is submitted; its details can no longer change."
    ]


def test_lines_and_criteria_on_the_draft(app, bank):
    client = browser(app, bank.researcher)
    tubes = bank.tubes[(bank.first, "D0")]
    code = make_draft(app, bank, tubes)
    response = post(client, f"/requests/{code}/items/remove", {"item": tubes[0]})
    assert flashes(response, "success") == [f"{tubes[0]} taken out of {code}."]
    assert line_codes(app, code) == [tubes[1]]
    # Typed or scanned codes, one per line.
    second = bank.tubes[(bank.pseudonyms[1], "D7")]
    response = post(client, f"/requests/{code}/items", {"codes": "\n".join(second)})
    assert flashes(response, "success") == [f"2 aliquot(s) added to {code}."]
    assert line_codes(app, code) == sorted([tubes[1], *second])

    criterion = {"study": STUDY, "material_type": "plasma", "timepoints": "D28"}
    response = post(client, f"/requests/{code}/criteria", {**criterion, "per_subject": "0"})
    assert response.status_code == 422
    assert field_errors(response) == ["Aliquots per subject is 1 to 100."]
    response = post(client, f"/requests/{code}/criteria", {**criterion, "per_subject": "1"})
    assert flashes(response, "success") == [
        "Criterion added: it becomes aliquots when the request is submitted."
    ]
    criterion_id = in_session(
        app,
        lambda s: (
            s.scalar(select(AliquotRequest).where(AliquotRequest.code == code)).criteria[0].id
        ),
    )
    assert f'id="criterion-{criterion_id}"' in response.get_data(as_text=True)
    response = post(client, f"/requests/{code}/submit", {})
    assert state_of(app, code) is RequestState.SUBMITTED
    # One D28 tube per subject joined the three chosen ones.
    assert len(line_codes(app, code)) == 6
    body = text_of(client.get(f"/requests/{code}"))
    assert "Remove" not in body


def test_cancelling_with_and_without_a_reason(app, people, bank):
    client = browser(app, bank.researcher)
    code = make_submitted(app, bank, bank.tubes[(bank.first, "D0")])
    approve(app, people, code)
    assert (
        in_session(
            app,
            lambda s: s.scalar(
                select(Item.state).where(Item.code == bank.tubes[(bank.first, "D0")][0])
            ),
        )
        is State.RESERVED
    )
    response = post(client, f"/requests/{code}/cancel", {"reason": " "})
    assert response.status_code == 422
    assert field_errors(response) == ["Say why the request is cancelled."]
    assert state_of(app, code) is RequestState.APPROVED
    response = post(client, f"/requests/{code}/cancel", {"reason": "Funding withdrawn"})
    assert flashes(response, "success") == [f"Request {code} is cancelled."]
    assert state_of(app, code) is RequestState.CANCELLED
    states = in_session(
        app,
        lambda s: set(
            s.scalars(select(Item.state).where(Item.code.in_(bank.tubes[(bank.first, "D0")])))
        ),
    )
    assert states == {State.STORED}
    timeline = plain(client.get(f"/requests/{code}"))
    assert "approved → cancelled" in timeline and "Funding withdrawn" in timeline
    # A cancelled request cannot be cancelled again: the page says so, with 409.
    response = post(client, f"/requests/{code}/cancel", {"reason": "again"}, page="/requests")
    assert response.status_code == 409
    assert flashes(response, "error") == [f"Request {code} is cancelled; it cannot be cancelled."]


def test_receipt_by_the_researcher_and_by_the_biobank(app, people, bank):
    client = browser(app, bank.researcher)
    first = bank.tubes[(bank.first, "D0")]
    second = bank.tubes[(bank.pseudonyms[1], "D0")]
    mine = make_submitted(app, bank, first)
    theirs = make_submitted(app, bank, second)
    for code, tubes in ((mine, first), (theirs, second)):
        approve(app, people, code)
        assert client.get(f"/requests/{code}").get_data(as_text=True).count("Confirm receipt") == 0
        pick(app, people, code, tubes)
        hand_over(app, people, code)
    page = text_of(client.get(f"/requests/{mine}"))
    assert "Confirm receipt" in page and "Karl Collector" in page
    response = post(client, f"/requests/{mine}/receipt", {"note": "All well, on dry ice"})
    assert flashes(response, "success") == [f"Receipt confirmed: request {mine} is closed."]
    assert state_of(app, mine) is RequestState.CLOSED
    body = plain(response)
    assert "handed over → received" in body and "All well, on dry ice" in body
    assert "received → closed" in body

    # The biobank's technician confirms for the researcher; a second receipt is refused.
    tech = browser(app, people["tech"])
    assert "Confirm for the researcher" in text_of(tech.get(f"/requests/{theirs}"))
    response = post(tech, f"/requests/{theirs}/receipt", {"note": ""})
    assert state_of(app, theirs) is RequestState.CLOSED
    response = post(tech, f"/requests/{theirs}/receipt", {"note": ""})
    assert response.status_code == 409
    statuses = in_session(
        app,
        lambda s: {
            line.status
            for line in s.scalar(select(AliquotRequest).where(AliquotRequest.code == theirs)).lines
        },
    )
    assert statuses == {LineStatus.RECEIVED}


def test_staff_see_the_storage_location_researchers_do_not(app, people, bank):
    code = make_submitted(app, bank, bank.tubes[(bank.first, "D7")])
    staff = text_of(browser(app, people["tech"]).get(f"/requests/{code}"))
    assert "<th>Location</th>" in staff and "RH-F80 / R1 / RH-B1 / " in staff
    mine = text_of(browser(app, bank.researcher).get(f"/requests/{code}"))
    assert "<th>Location</th>" not in mine and "RH-B1" not in mine and "RH-F80" not in mine


def test_a_committee_member_finds_the_request_waiting(app, people, bank, make_user):
    member = make_user("researcher", site_code="OUH", full_name="Carl Committee")
    admin_member = make_user("admin", site_code="OUH")
    app.config["LIMS"]["requests"]["access_committee"] = {
        STUDY: [member.username, admin_member.username]
    }
    code = make_submitted(app, bank, bank.tubes[(bank.first, "D0")])
    client = browser(app, member)
    listing = client.get("/requests").get_data(as_text=True)
    waiting = listing.split('id="waiting"')[1].split("</section>")[0]
    assert f'id="request-{code}"' in waiting
    page = client.get(f"/requests/{code}")
    assert page.status_code == 200
    assert f'href="/requests/{code}/committee/{STUDY}"' in page.get_data(as_text=True)
    assert "<th>Location</th>" not in page.get_data(as_text=True)
    # Any role may sit on a committee: an administrator opens the request from the inbox.
    admin = browser(app, admin_member)
    assert f"/requests/{code}/committee/{STUDY}" in admin.get(f"/requests/{code}").get_data(True)
    # Once the study's committee has signed, nothing waits for the member any more.
    in_session(
        app,
        lambda s: review.committee_decide(
            s,
            actor=actor(s, member),
            code=code,
            study=STUDY,
            decision="approved",
            password=PASSWORD,
            comment="within the consent",
        ),
    )
    page = plain(client.get(f"/requests/{code}"))
    assert "Access committee CARTBANK-01 approved Carl Committee" in page
    assert "/committee/" not in client.get(f"/requests/{code}").get_data(as_text=True)
    waiting = client.get("/requests").get_data(as_text=True).split('id="waiting"')[1]
    assert code not in waiting.split("</section>")[0]


# -- the manifest -----------------------------------------------------------------------------


def test_the_manifest_downloads(app, people, bank):
    client = browser(app, bank.researcher)
    tubes = bank.tubes[(bank.first, "D0")] + bank.tubes[(bank.first, "D28")]
    code = make_submitted(app, bank, tubes)
    approve(app, people, code, tubes[:3])
    for kind in ("pdf", "csv", "xlsx"):
        response = client.get(f"/requests/{code}/manifest.{kind}")
        assert response.status_code == 409, kind
        assert f"Nothing of request {code} has been picked yet: no manifest." in text_of(response)
    assert "Manifest (PDF)" not in client.get(f"/requests/{code}").get_data(as_text=True)
    pick(app, people, code, tubes[:2])
    assert "Manifest (PDF)" in client.get(f"/requests/{code}").get_data(as_text=True)

    pdf = client.get(f"/requests/{code}/manifest.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert pdf.data.startswith(b"%PDF")
    sheet = client.get(f"/requests/{code}/manifest.csv")
    assert sheet.status_code == 200
    assert sheet.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert f"filename=manifest-{code}.csv" in sheet.headers["Content-Disposition"]
    rows = sheet.get_data(as_text=True).splitlines()
    assert rows[0] == CSV_HEADER
    assert sorted(row.split(",")[0] for row in rows[1:]) == sorted(tubes[:2])
    workbook = client.get(f"/requests/{code}/manifest.xlsx")
    assert workbook.status_code == 200 and workbook.mimetype == XLSX
    values = list(load_workbook(io.BytesIO(workbook.data)).active.values)
    assert ",".join(values[0]) == CSV_HEADER and len(values) == 3
    # The biobank's manager may have it too; another site's may not.
    assert browser(app, people["manager"]).get(f"/requests/{code}/manifest.csv").status_code == 200
    other = browser(app, people["other_manager"])
    assert other.get(f"/requests/{code}/manifest.csv").status_code == 404


# -- who is refused where ---------------------------------------------------------------------


def test_roles_and_other_peoples_requests_are_refused(app, people, bank, make_user):
    draft = make_draft(app, bank, bank.tubes[(bank.first, "D0")])
    code = make_submitted(app, bank, bank.tubes[(bank.first, "D7")][:1])
    researcher_posts = ("edit", "criteria", "submit", "cancel", "items", "items/remove")
    for person in ("manager", "tech"):
        client = browser(app, people[person])
        assert client.get(f"/requests/{code}").status_code == 200
        assert client.get(f"/requests/{draft}").status_code == 404  # nobody sees a draft
        assert client.get(f"/requests/{code}/edit").status_code == 403
        for action in researcher_posts:
            assert client.post(f"/requests/{code}/{action}").status_code == 403, action
    admin = browser(app, people["admin"])
    assert admin.get("/requests").status_code == 403
    assert admin.get(f"/requests/{code}").status_code == 404
    assert admin.post(f"/requests/{code}/receipt").status_code == 403

    other = browser(app, people["researcher"])  # a researcher at RH, not the author
    assert code not in other.get("/requests").get_data(as_text=True)
    for path in ("", "/edit", "/manifest.csv", "/manifest.pdf", "/manifest.xlsx"):
        assert other.get(f"/requests/{code}{path}").status_code == 404, path
        assert other.get(f"/requests/{draft}{path}").status_code == 404, path
    for action, data in (
        ("cancel", {"reason": "mine now"}),
        ("submit", {}),
        ("items", {"codes": bank.tubes[(bank.first, "D28")][0]}),
        ("items/remove", {"item": bank.tubes[(bank.first, "D0")][0]}),
        ("receipt", {}),
    ):
        response = post(other, f"/requests/{draft}/{action}", data, follow=False)
        assert response.status_code == 404, action
        assert f"No request {draft}." in text_of(response)
    assert state_of(app, draft) is RequestState.DRAFT
    assert len(line_codes(app, draft)) == 2
    assert other.get("/requests/REQ-NOPE").status_code == 404


# -- no identity anywhere ---------------------------------------------------------------------


def pdf_text(pdf: bytes, tmp_path) -> str:
    require([] if shutil.which("pdftotext") else ["pdftotext"], "The PDF check needs poppler")
    source = tmp_path / "manifest.pdf"
    source.write_bytes(pdf)
    return subprocess.run(
        ["pdftotext", "-raw", str(source), "-"], check=True, capture_output=True, text=True
    ).stdout


def forbidden_strings(app, bank) -> list[str]:
    """Every form of the demo patients' identity a page could leak."""
    found = []
    for number in bank.cprs:
        found += [number, f"{number[:6]}-{number[6:]}"]
        born = date(1900 + int(number[4:6]), int(number[2:4]), int(number[:2]))
        found += [
            born.isoformat(),
            born.strftime("%d-%m-%Y"),
            born.strftime("%d.%m.%Y"),
            born.strftime("%d/%m/%Y"),
            f"{born.day}.{born.month}.{born.year}",
            born.strftime("%d %b %Y"),
        ]
    found += bank.names
    for coi in bank.cois:
        found += [coi, eye_readable(coi)]
    # The calendar date of the follow-up draws (tests.integration.biobank.DRAWN).
    found += ["2025-03-01", "01-03-2025", "01.03.2025", "01/03/2025"]
    return found


def test_no_identity_reaches_a_researcher_anywhere(app, people, bank, tmp_path):
    client = browser(app, bank.researcher)
    bodies: dict[str, str] = {}

    def visit(path: str) -> None:
        response = client.get(path)
        assert response.status_code == 200, path
        bodies[f"{path} #{len(bodies)}"] = response.get_data(as_text=True)

    first = bank.first
    for path in (
        "/requests",
        "/requests/search",
        f"/requests/search?study={STUDY}&timepoint=D7",
        f"/requests/search?subject={first}&at=D7",
        f"/requests/search?subject={first}&at=D0&site=RH&max_thaws=3",
    ):
        visit(path)
    tubes = bank.tubes[(first, "D0")] + bank.tubes[(first, "D7")] + [bank.auh_tube]
    post(client, "/requests/cart/items", {"items": tubes}, page="/requests/search")
    (code,) = drafts_of(app, bank.researcher)
    post(client, f"/requests/{code}/edit", DETAILS, page=f"/requests/{code}")
    post(
        client,
        f"/requests/{code}/criteria",
        {"study": STUDY, "material_type": "plasma", "timepoints": "D28", "per_subject": "1"},
    )
    for path in ("/requests", f"/requests/{code}", f"/requests/{code}/edit", "/requests/search"):
        visit(path)
    post(client, f"/requests/{code}/submit", {})
    visit(f"/requests/{code}")
    lines = line_codes(app, code)
    in_session(app, lambda s: review.start_review(s, actor=actor(s, people["manager"]), code=code))
    visit(f"/requests/{code}")
    approve_codes = [c for c in lines if c != tubes[0]]

    def decide(session):
        manager = actor(session, people["manager"])
        review.record_opt_out_checks(session, actor=manager, code=code)
        review.decide(
            session,
            actor=manager,
            code=code,
            decision="approved",
            password=PASSWORD,
            comment="ok",
            approve=approve_codes,
        )

    in_session(app, decide)
    visit(f"/requests/{code}")
    pick(app, people, code, approve_codes[:-1])
    in_session(
        app,
        lambda s: fulfilment.short_pick(
            s,
            actor=actor(s, people["tech"]),
            code=code,
            item_code=approve_codes[-1],
            kind="damaged",
            reason="cracked lid",
        ),
    )
    visit(f"/requests/{code}")
    hand_over(app, people, code)
    visit(f"/requests/{code}")
    visit("/requests")
    visit("/inbox")
    csv_text = client.get(f"/requests/{code}/manifest.csv").get_data(as_text=True)
    xlsx = client.get(f"/requests/{code}/manifest.xlsx").data
    pdf = client.get(f"/requests/{code}/manifest.pdf").data
    post(client, f"/requests/{code}/receipt", {"note": "arrived"})
    visit(f"/requests/{code}")
    visit("/requests")
    sibling = in_session(
        app,
        lambda s: s.scalar(
            select(AliquotRequest.code).where(
                AliquotRequest.researcher_id == bank.researcher.id, AliquotRequest.code != code
            )
        ),
    )
    visit(f"/requests/{sibling}")

    bodies["manifest.csv"] = csv_text
    bodies["manifest.xlsx"] = "\n".join(
        ",".join("" if v is None else str(v) for v in row)
        for row in load_workbook(io.BytesIO(xlsx)).active.values
    )
    bodies["manifest.pdf"] = pdf_text(pdf, tmp_path)
    # The walk did reach the material: the pages name the subject and the tubes.
    assert first in bodies["manifest.csv"] and first in bodies["manifest.pdf"]
    everything = "\n".join(bodies.values())
    assert approve_codes[0] in everything and "cracked lid" in everything
    assert len(list(csv.reader(io.StringIO(csv_text)))) == len(approve_codes)
    for name, body in bodies.items():
        text = html.unescape(body)
        for secret in forbidden_strings(app, bank):
            assert secret not in text, f"{secret!r} in {name}"
