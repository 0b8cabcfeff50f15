"""Administrators manage users and sites in the browser UI; nothing is ever deleted."""

from sqlalchemy import select

from lims import db as lims_db
from lims.auth.models import Site, User
from tests.conftest import csrf_token, log_in


def test_admin_creates_a_user_who_must_change_the_password(app, make_user, client, login):
    login(make_user("admin"))
    token = csrf_token(client, "/admin/users/new")
    with app.app_context():
        rh_id = lims_db.session().scalar(select(Site.id).where(Site.code == "RH"))
    response = client.post(
        "/admin/users/new",
        data={
            "csrf_token": token,
            "username": "New.Tech",
            "full_name": "Ny Tekniker",
            "email": "ny@example.org",
            "role": "technician",
            "site_id": rh_id,
            "password": "temporary pass 1",
        },
    )
    assert response.status_code == 302
    with app.app_context():
        user = lims_db.session().scalar(select(User).where(User.username == "new.tech"))
        assert user.must_change_password
        assert user.site.code == "RH"
        assert user.email == "ny@example.org"
    client.post("/logout", data={"csrf_token": token})
    log_in(client, "new.tech", "temporary pass 1")
    assert client.get("/").headers["Location"] == "/account"


def test_duplicate_username_is_shown_on_the_form(app, make_user, client, login):
    login(make_user("admin", username="boss"))
    token = csrf_token(client, "/admin/users/new")
    with app.app_context():
        rh_id = lims_db.session().scalar(select(Site.id).where(Site.code == "RH"))
    response = client.post(
        "/admin/users/new",
        data={
            "csrf_token": token,
            "username": "boss",
            "full_name": "Copy",
            "role": "technician",
            "site_id": rh_id,
            "password": "temporary pass 1",
        },
    )
    assert response.status_code == 409
    assert "is taken" in response.get_data(as_text=True)


def test_deactivated_user_is_logged_out_and_cannot_log_in(app, make_user):
    admin_client = app.test_client()
    tech_client = app.test_client()
    admin = make_user("admin")
    tech = make_user("technician", full_name="Tech Person")
    log_in(admin_client, admin.username)
    log_in(tech_client, tech.username)
    assert tech_client.get("/").status_code == 200
    token = csrf_token(admin_client, f"/admin/users/{tech.id}")
    with app.app_context():
        site_id = lims_db.session().get(User, tech.id).site_id
    response = admin_client.post(
        f"/admin/users/{tech.id}",
        data={
            "csrf_token": token,
            "full_name": "Tech Person",
            "email": "",
            "role": "technician",
            "site_id": site_id,  # "active" unticked
        },
    )
    assert response.status_code == 302
    assert tech_client.get("/").status_code == 302
    assert log_in(tech_client, tech.username).status_code == 401
    with app.app_context():
        assert lims_db.session().get(User, tech.id) is not None  # kept, only inactive


def test_admin_unlocks_a_locked_account(app, make_user, client):
    tech = make_user()
    for _ in range(5):
        log_in(client, tech.username, "wrong-password")
    admin_client = app.test_client()
    log_in(admin_client, make_user("admin").username)
    assert "locked" in admin_client.get("/admin/users").get_data(as_text=True)
    token = csrf_token(admin_client, f"/admin/users/{tech.id}")
    admin_client.post(f"/admin/users/{tech.id}/unlock", data={"csrf_token": token})
    assert log_in(client, tech.username).status_code == 302


def test_admin_sets_a_temporary_password(app, make_user, client):
    tech = make_user()
    admin_client = app.test_client()
    log_in(admin_client, make_user("admin").username)
    token = csrf_token(admin_client, f"/admin/users/{tech.id}")
    admin_client.post(
        f"/admin/users/{tech.id}/password",
        data={"csrf_token": token, "password": "reset pass phrase"},
    )
    assert log_in(client, tech.username, "reset pass phrase").status_code == 302
    assert client.get("/").headers["Location"] == "/account"


def test_admin_creates_and_edits_a_site(app, make_user, client, login):
    login(make_user("admin"))
    token = csrf_token(client, "/admin/sites/new")
    response = client.post(
        "/admin/sites/new",
        data={
            "csrf_token": token,
            "code": "sjh",
            "name": "Sjællands Universitetshospital",
            "city": "Roskilde",
            "isbt_fin": "",
        },
    )
    assert response.status_code == 302
    with app.app_context():
        site = lims_db.session().scalar(select(Site).where(Site.code == "SJH"))
        assert site.name == "Sjællands Universitetshospital"
        site_id = site.id
    response = client.post(
        f"/admin/sites/{site_id}",
        data={
            "csrf_token": token,
            "name": "SUH Roskilde",
            "city": "Roskilde",
            "isbt_fin": "X1234",
            "active": "y",
        },
    )
    assert response.status_code == 302
    with app.app_context():
        site = lims_db.session().get(Site, site_id)
        assert (site.code, site.name, site.isbt_fin) == ("SJH", "SUH Roskilde", "X1234")


def test_bad_site_code_is_explained(make_user, client, login):
    login(make_user("admin"))
    token = csrf_token(client, "/admin/sites/new")
    response = client.post(
        "/admin/sites/new",
        data={
            "csrf_token": token,
            "code": "R-H",
            "name": "Dash hospital",
        },
    )
    assert response.status_code == 422
    assert "2 to 4 letters" in response.get_data(as_text=True)
