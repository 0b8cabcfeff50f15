"""The JSON API: bearer tokens only, JSON answers always."""

from tests.conftest import log_in


def test_token_identifies_its_user(make_user, client, token_for):
    user = make_user("researcher", site_code="AUH")
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token_for(user)}"})
    assert response.status_code == 200
    assert response.json == {
        "username": user.username,
        "full_name": "Test Researcher",
        "role": "researcher",
        "site": "AUH",
    }


def test_missing_or_wrong_token_gets_401_json(client):
    for headers in ({}, {"Authorization": "Bearer lims_nonsense"}, {"Authorization": "Basic x"}):
        response = client.get("/api/v1/me", headers=headers)
        assert response.status_code == 401
        assert response.is_json
        assert response.json["error"] == "authentication_required"


def test_browser_session_cookie_does_not_open_the_api(make_user, client):
    log_in(client, make_user().username)
    assert client.get("/").status_code == 200
    assert client.get("/api/v1/me").status_code == 401


def test_revoked_token_stops_working(app, make_user, client, token_for, runner):
    user = make_user()
    token = token_for(user)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    listing = runner.invoke(args=["list-tokens", user.username])
    token_id = listing.output.split("\t")[0]
    assert runner.invoke(args=["revoke-token", token_id]).exit_code == 0
    assert client.get("/api/v1/me", headers=headers).status_code == 401


def test_api_errors_are_json_never_html(make_user, client, token_for):
    headers = {"Authorization": f"Bearer {token_for(make_user())}"}
    response = client.get("/api/v1/no-such-thing", headers=headers)
    assert response.status_code == 404
    assert response.is_json and response.json["error"] == "not_found"
    response = client.delete("/api/v1/me", headers=headers)
    assert response.status_code == 405
    assert response.is_json
