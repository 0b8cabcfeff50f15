"""Every route declares who may call it, and every role is refused where it is not granted.

The routes are read from ``app.url_map``, so a route added later is covered without a change
here: an undeclared route fails the first test, a wrongly open one the others.
"""

import re

import pytest

from lims.auth.access import PUBLIC, declared_access
from lims.auth.models import Role
from tests.conftest import csrf_token, log_in


def concrete_url(rule) -> str:
    """The rule's URL with a placeholder for each variable part (access is checked first)."""
    return re.sub(r"<(?:(\w+):)?(\w+)>", lambda m: "1" if m.group(1) == "int" else "x", rule.rule)


def routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
        yield rule, methods


def test_every_route_declares_its_roles(app):
    undeclared = [
        rule.rule for rule, _ in routes(app) if declared_access(app, rule.endpoint) is None
    ]
    assert undeclared == [], f"routes without an access declaration: {undeclared}"


def test_an_undeclared_route_is_refused(app, make_user, client):
    """Fail closed: a route someone forgot to declare answers 403, not its page."""
    app.add_url_rule("/forgotten", "forgotten", lambda: "secret")
    log_in(client, make_user("admin").username)
    response = client.get("/forgotten")
    assert response.status_code == 403
    assert b"secret" not in response.data


@pytest.mark.parametrize("role", list(Role))
def test_each_role_is_refused_where_not_granted(app, make_user, client, token_for, role):
    user = make_user(role.value)
    token = token_for(user)
    assert log_in(client, user.username).status_code == 302
    checked = 0
    for rule, methods in routes(app):
        access = declared_access(app, rule.endpoint)
        if access == PUBLIC or role in access:
            continue
        url = concrete_url(rule)
        headers = {"Authorization": f"Bearer {token}"} if url.startswith("/api/") else {}
        for method in methods:
            response = client.open(url, method=method, headers=headers)
            assert response.status_code == 403, f"{role} {method} {url}: {response.status_code}"
            checked += 1
    if role is not Role.ADMIN:
        assert checked > 0, "the matrix checked nothing for this role"


def test_logged_out_visitors_are_sent_to_login_or_get_401(app, client):
    for rule, methods in routes(app):
        if declared_access(app, rule.endpoint) == PUBLIC:
            continue
        url = concrete_url(rule)
        for method in methods:
            response = client.open(url, method=method)
            if url.startswith("/api/"):
                assert response.status_code == 401, f"{method} {url}"
                assert response.is_json
            else:
                assert response.status_code == 302, f"{method} {url}"
                assert "/login" in response.headers["Location"]


def test_navigation_shows_each_role_its_own_links(make_user, client):
    expected = {
        Role.ADMIN: {"Home", "Inventory", "Users", "Sites", "Audit trail"},
        Role.MANAGER: {
            "Home",
            "Scan",
            "Shipments",
            "Storage",
            "Inventory",
            "Requests",
            "Manufacturing",
            "Bedside check",
            "Follow-up",
            "Audit trail",
        },
        Role.TECHNICIAN: {
            "Home",
            "Scan",
            "Shipments",
            "Storage",
            "Inventory",
            "Requests",
            "Manufacturing",
            "Bedside check",
            "Follow-up",
        },
        Role.RESEARCHER: {"Home", "Inventory", "Requests"},
    }
    for role, links in expected.items():
        user = make_user(role.value)
        log_in(client, user.username)
        page = client.get("/").get_data(as_text=True)
        nav = re.search(r'<ul class="nav">(.*?)</ul>', page, re.S).group(1)
        shown = set(re.findall(r">([^<]+)</a>", nav))
        assert shown == links, role
        client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
