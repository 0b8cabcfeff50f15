"""The home page's work queue, on the demo network (which has something in every queue)."""

from __future__ import annotations

from sqlalchemy import select

from lims import db as lims_db
from lims.custody.models import Hold, Item
from lims.shipments.models import Shipment, ShipmentState
from tests.conftest import log_in


def test_technician_and_manager_see_what_waits_at_their_site(app, runner, client):
    assert runner.invoke(args=["demo", "--password", "demo-password"]).exit_code == 0
    with app.app_context():
        session = lims_db.session()
        incoming = session.scalar(
            select(Shipment).where(Shipment.state == ShipmentState.IN_TRANSIT)
        )
        held_code = session.scalar(
            select(Item.code).join(Hold).where(Hold.cleared_at.is_(None), Item.site.has(code="RH"))
        )
        assert incoming.to_site.code == "RH"
        incoming_code = incoming.code
    log_in(client, "tech.rh", "demo-password")
    page = client.get("/").get_data(as_text=True)
    assert incoming_code in page and held_code in page
    assert "1</strong> overdue" in page
    assert "Ready for release" not in page  # a manager's queue

    fresh = app.test_client()
    log_in(fresh, "manager.rh", "demo-password")
    assert "Ready for release" in fresh.get("/").get_data(as_text=True)
    other = app.test_client()
    log_in(other, "tech.hgh", "demo-password")
    assert incoming_code not in other.get("/").get_data(as_text=True)
