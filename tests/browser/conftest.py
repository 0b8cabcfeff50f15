"""Headless Chromium against the real app served on loopback.

Chromium is Debian's package at /usr/bin/chromium (``.ci/run`` installs it). Outside CI the
browser tests skip, with the reason, where it is missing; in CI (``CI`` set) that is a failure.
"""

from __future__ import annotations

import os
import threading

import pytest
from werkzeug.serving import make_server

from lims import create_app
from tests.conftest import empty_tables, settings_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_configure(config):
    # Assertions wait as long as actions do: two cores shared with other work can make a page
    # load take seconds, and a slow page is not a failed one.
    try:
        from playwright.sync_api import expect
    except ImportError:  # pragma: no cover - the test extra installs it
        return
    expect.set_options(timeout=10_000)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        reason = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; browser tests must run in CI")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def live_server(database_url, tmp_path_factory):
    """The app on a free loopback port, on the same database backend as the other tests."""
    app = create_app(
        overrides=settings_for(database_url, str(tmp_path_factory.mktemp("browser-instance")))
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    app.base_url = f"http://127.0.0.1:{server.server_port}"
    yield app
    server.shutdown()
    thread.join(timeout=5)
    app.extensions["lims_engine"].dispose()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.base_url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()
    empty_tables(live_server.extensions["lims_engine"])
