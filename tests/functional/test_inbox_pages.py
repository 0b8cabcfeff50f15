"""The inbox pages through the test client, as each role."""

from __future__ import annotations

import html
import re

import pytest
from flask import render_template_string
from flask_login import login_user
from sqlalchemy import select

from lims import db as lims_db
from lims.auth.models import User
from lims.requests import notify
from lims.requests.models import AliquotRequest, Notification, RequestState
from tests.conftest import csrf_token, log_in

ROLES = ("technician", "manager", "researcher", "admin")


def text_of(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def unread_badge(response) -> str:
    match = re.search(r'id="unread-count">([^<]*)</span>', response.get_data(as_text=True))
    assert match, "no unread count on the page"
    return match.group(1)


def flashes(response, category: str) -> list[str]:
    page = response.get_data(as_text=True)
    found = re.findall(rf'<div class="flash flash-{category}"[^>]*>(.*?)</div>', page, re.S)
    return [html.unescape(message) for message in found]


def tell(app, person, kind: str, message: str, *, request_code: str | None = None) -> int:
    """A notification for ``person``; with ``request_code``, about a new request of theirs."""
    with app.app_context():
        session = lims_db.session()
        user = session.get(User, person.id)
        aliquot_request = None
        if request_code:
            aliquot_request = AliquotRequest(
                code=request_code,
                state=RequestState.SUBMITTED,
                researcher_id=user.id,
                site_id=user.site_id,
            )
            session.add(aliquot_request)
        (notification,) = notify.notify(
            session, [user], kind=kind, message=message, request=aliquot_request
        )
        session.commit()
        return notification.id


def read_at(app, notification_id: int):
    with app.app_context():
        return lims_db.session().get(Notification, notification_id).read_at


def unread_ids(app, person) -> list[int]:
    with app.app_context():
        return list(
            lims_db.session().scalars(
                select(Notification.id)
                .where(Notification.user_id == person.id, Notification.read_at.is_(None))
                .order_by(Notification.id)
            )
        )


@pytest.mark.parametrize("role", ROLES)
def test_each_role_sees_its_own_inbox(app, client, make_user, role):
    me, someone = make_user(role), make_user("manager")
    tell(app, me, "approved", "REQ-2026-00003 approved: 3 aliquots.", request_code="REQ-2026-00003")
    tell(app, me, "shipped", "Your material left the biobank.")
    tell(app, someone, "submitted", "Someone else's REQ-2026-00999 was submitted.")
    log_in(client, me.username)

    response = client.get("/inbox")

    assert response.status_code == 200
    page = text_of(response)
    assert "REQ-2026-00003 approved: 3 aliquots." in page
    assert "Your material left the biobank." in page
    assert "REQ-2026-00999" not in page
    assert unread_badge(response) == "2 unread"
    # Newest first.
    assert page.index("Material shipped") < page.index("Request approved")
    assert "Open request" in page and "Mark read" in page


def test_logged_out_visitors_are_sent_to_login(client):
    for method, path in (("GET", "/inbox"), ("POST", "/inbox/1/read"), ("POST", "/inbox/read-all")):
        response = client.open(path, method=method)
        assert response.status_code == 302, path
        assert "/login" in response.headers["Location"]


def test_an_empty_inbox(client, make_user):
    log_in(client, make_user("researcher").username)
    response = client.get("/inbox")
    assert response.status_code == 200
    assert "No notifications yet." in text_of(response)
    assert unread_badge(response) == "0 unread"
    assert "Mark all read" not in text_of(response)


def test_reading_opens_the_request_and_marks_it_read(app, client, make_user):
    me = make_user("researcher")
    about = tell(app, me, "ready", "REQ-2026-00005 is ready.", request_code="REQ-2026-00005")
    plain = tell(app, me, "withdrawn", "1 aliquot was withdrawn.")
    log_in(client, me.username)
    token = csrf_token(client, "/inbox")

    response = client.post(f"/inbox/{about}/read", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == "/requests/REQ-2026-00005"
    assert read_at(app, about) is not None
    assert unread_badge(client.get("/inbox")) == "1 unread"

    response = client.post(f"/inbox/{plain}/read", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == "/inbox"
    assert unread_ids(app, me) == []

    # Again: no change, still the request page.
    first = read_at(app, about)
    response = client.post(f"/inbox/{about}/read", data={"csrf_token": token})
    assert response.headers["Location"] == "/requests/REQ-2026-00005"
    assert read_at(app, about) == first


def test_reading_needs_the_csrf_token(app, client, make_user):
    me = make_user("manager")
    notification_id = tell(app, me, "submitted", "REQ-2026-00006 was submitted.")
    log_in(client, me.username)

    response = client.post(f"/inbox/{notification_id}/read", follow_redirects=True)
    assert "The form had expired. Please try again." in flashes(response, "error")
    response = client.post("/inbox/read-all", data={"csrf_token": "forged"})
    assert response.status_code == 302
    assert unread_ids(app, me) == [notification_id]


def test_someone_elses_notification_is_not_found(app, client, make_user):
    me, other = make_user("researcher"), make_user("researcher")
    theirs = tell(app, other, "approved", "Not yours.", request_code="REQ-2026-00008")
    log_in(client, me.username)
    token = csrf_token(client, "/inbox")

    for notification_id in (theirs, 999_999):
        response = client.post(f"/inbox/{notification_id}/read", data={"csrf_token": token})
        assert response.status_code == 404, notification_id
        assert "There is no such notification in your inbox." in text_of(response)
    # Beyond any id the database holds: no such page at all (the route refuses it).
    response = client.post("/inbox/99999999999999999999999/read", data={"csrf_token": token})
    assert response.status_code == 404
    assert read_at(app, theirs) is None


def test_read_all_marks_only_mine(app, client, make_user):
    me, other = make_user("technician"), make_user("technician")
    for n in range(3):
        tell(app, me, "short_pick", f"REQ-2026-0001{n}: 1 tube short.")
    theirs = tell(app, other, "short_pick", "Not yours.")
    log_in(client, me.username)
    token = csrf_token(client, "/inbox")

    response = client.post("/inbox/read-all", data={"csrf_token": token}, follow_redirects=True)
    assert flashes(response, "success") == ["3 notification(s) marked read."]
    assert unread_badge(response) == "0 unread"
    assert unread_ids(app, me) == []
    assert unread_ids(app, other) == [theirs]

    response = client.post("/inbox/read-all", data={"csrf_token": token}, follow_redirects=True)
    assert flashes(response, "info") == ["Nothing was unread."]


def test_paging(app, client, make_user):
    me = make_user("researcher")
    for n in range(52):
        tell(app, me, "received", f"Receipt number {n:02d} confirmed.")
    log_in(client, me.username)

    first = text_of(client.get("/inbox"))
    assert "Receipt number 51 confirmed." in first
    assert "Receipt number 01 confirmed." not in first
    assert "Page 1 of 2" in first and "Older →" in first
    second = text_of(client.get("/inbox?page=2"))
    assert "Receipt number 01 confirmed." in second
    assert "Receipt number 00 confirmed." in second
    assert "Receipt number 02 confirmed." not in second
    assert "Nothing on this page." in text_of(client.get("/inbox?page=3"))
    assert "Receipt number 51 confirmed." in text_of(client.get("/inbox?page="))


@pytest.mark.parametrize("page", ["0", "-1", "x", "1.5", "99999999", "٣"])
def test_a_bad_page_number_is_refused(client, make_user, page):
    log_in(client, make_user("researcher").username)
    response = client.get("/inbox", query_string={"page": page})
    assert response.status_code == 422
    assert "The page must be" in text_of(response)


def test_the_badge_counts_unread_for_the_header(app, make_user):
    me = make_user("manager")
    tell(app, me, "submitted", "One.")
    tell(app, me, "submitted", "Two.")
    template = "{{ unread_notifications }}"
    with app.test_request_context("/"):
        assert render_template_string(template) == "0"  # nobody logged in
    with app.test_request_context("/"):
        login_user(lims_db.session().get(User, me.id))
        assert render_template_string(template) == "2"
