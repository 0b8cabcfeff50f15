"""A NUL character anywhere in a page request is refused cleanly (PostgreSQL cannot hold one)."""

import pytest

from tests.conftest import csrf_token, log_in


@pytest.mark.parametrize(
    "path",
    [
        "/items/AB%00C",
        "/shipments/SH%00",
        "/followup/CH%00",
        "/manufacturing/lots/L%00",
        "/scan/AB%00C/store",
        "/scan?code=AB%00C",
        "/audit?item=%00",
    ],
)
def test_a_nul_in_the_address_is_refused_with_422(client, make_user, path):
    user = make_user("manager")
    log_in(client, user.username)
    response = client.get(path)
    assert response.status_code == 422
    assert "NUL character" in response.get_data(as_text=True)


def test_a_nul_in_a_form_is_refused_before_anything_is_saved(client, make_user):
    user = make_user("technician")
    log_in(client, user.username)
    token = csrf_token(client, "/scan")
    response = client.post(
        "/bedside",
        data={"csrf_token": token, "wristband": "x", "cassette": "y", "bag": "z",
              "witness_username": "a\x00b", "witness_password": "p"},
    )  # fmt: skip
    assert response.status_code == 422
    assert "NUL character" in response.get_data(as_text=True)
