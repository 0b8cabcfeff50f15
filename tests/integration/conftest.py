import pytest

from tests.integration.people import build_cast


@pytest.fixture
def people(app, make_site, make_user):
    return build_cast(make_site, make_user)
