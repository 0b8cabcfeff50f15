"""Logging in and out, lockout, password change and cookie settings through the test client."""

from lims import create_app
from tests.conftest import PASSWORD, csrf_token, log_in, settings_for


def test_login_lands_on_the_home_page(make_user, client):
    user = make_user("manager", full_name="Lars Petersen")
    response = log_in(client, user.username)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    assert "Good to see you, Lars" in page
    assert "Biobank manager" in page


def test_login_follows_only_local_next_links(make_user, client):
    user = make_user()
    token = csrf_token(client)
    response = client.post(
        "/login?next=https://evil.example/",
        data={"username": user.username, "password": PASSWORD, "csrf_token": token},
    )
    assert response.headers["Location"] == "/"
    client.get("/account")  # logged in; log out again for the second case
    client.post("/logout", data={"csrf_token": csrf_token(client, "/account")})
    response = client.post(
        "/login?next=/account",
        data={"username": user.username, "password": PASSWORD, "csrf_token": csrf_token(client)},
    )
    assert response.headers["Location"] == "/account"


def test_wrong_password_shows_an_error(make_user, client):
    user = make_user()
    response = log_in(client, user.username, "not-the-password")
    assert response.status_code == 401
    assert "Wrong username or password" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_sixth_wrong_password_meets_a_locked_account(make_user, client):
    user = make_user()
    for _ in range(5):
        response = log_in(client, user.username, "wrong-password")
    assert "now locked for 15 minutes" in response.get_data(as_text=True)
    response = log_in(client, user.username, "wrong-password")
    assert "This account is locked" in response.get_data(as_text=True)
    response = log_in(client, user.username, PASSWORD)
    assert response.status_code == 401
    assert "This account is locked" in response.get_data(as_text=True)


def test_post_without_csrf_token_is_refused(make_user, client):
    user = make_user()
    response = client.post("/login", data={"username": user.username, "password": PASSWORD})
    assert response.status_code == 302  # sent back with a message, not logged in
    assert client.get("/").status_code == 302


def test_logout_needs_a_post_with_token(make_user, client, login):
    login(make_user())
    assert client.get("/logout").status_code == 405
    client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    assert client.get("/").status_code == 302


def test_session_cookie_is_httponly_and_lax(make_user, client):
    user = make_user()
    log_in(client, user.username)
    cookie = client.get_cookie("session")
    assert cookie.http_only
    assert cookie.same_site == "Lax"
    assert not cookie.secure


def test_session_cookie_is_secure_when_configured(database_url, tmp_path, make_user):
    overrides = settings_for(database_url, str(tmp_path / "secure"))
    overrides["security"]["session_cookie_secure"] = True
    app = create_app(overrides=overrides)
    user = make_user()
    client = app.test_client()
    log_in(client, user.username)
    assert client.get_cookie("session").secure
    app.extensions["lims_engine"].dispose()


def test_change_own_password(make_user, client, login):
    user = make_user()
    login(user)
    token = csrf_token(client, "/account")
    response = client.post(
        "/account",
        data={
            "csrf_token": token,
            "current_password": PASSWORD,
            "new_password": "a new pass phrase",
            "confirm": "a new pass phrase",
        },
    )
    assert response.status_code == 302
    assert client.get("/").status_code == 200  # this browser stays logged in
    client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    assert log_in(client, user.username, PASSWORD).status_code == 401
    assert log_in(client, user.username, "a new pass phrase").status_code == 302


def test_weak_or_mismatched_new_password_is_explained(make_user, client, login):
    login(make_user())
    token = csrf_token(client, "/account")
    response = client.post(
        "/account",
        data={
            "csrf_token": token,
            "current_password": PASSWORD,
            "new_password": "short",
            "confirm": "short",
        },
    )
    assert response.status_code == 422
    assert "at least 10 characters" in response.get_data(as_text=True)
    response = client.post(
        "/account",
        data={
            "csrf_token": token,
            "current_password": PASSWORD,
            "new_password": "a new pass phrase",
            "confirm": "another one",
        },
    )
    assert response.status_code == 422
    assert "The passwords differ." in response.get_data(as_text=True)


def test_user_with_temporary_password_must_change_it_first(make_user, client, login):
    login(make_user(must_change_password=True))
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/account"


def test_errors_are_pages_not_tracebacks(make_user, client, login):
    login(make_user())
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "There is nothing at this address." in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)


def test_health_check_is_open(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}
