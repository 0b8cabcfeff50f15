"""The `lims` command line, scriptable without prompts."""

from sqlalchemy import func, select

from lims import db as lims_db
from lims.auth.models import Site, User
from lims.demo import SITES, USERS
from tests.conftest import log_in


def test_create_site_user_and_token_then_use_the_token(runner, client):
    result = runner.invoke(args=["create-site", "OUH", "--name", "Odense Universitetshospital"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        args=[
            "create-user",
            "anna",
            "--role",
            "researcher",
            "--site",
            "OUH",
            "--password",
            "a good pass phrase",
            "--full-name",
            "Anna Holm",
            "--email",
            "anna@example.org",
        ]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["create-token", "anna", "--name", "notebook"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.json["full_name"] == "Anna Holm"


def test_refusals_exit_non_zero_with_a_message(runner):
    result = runner.invoke(
        args=[
            "create-user",
            "anna",
            "--role",
            "researcher",
            "--site",
            "NOPE",
            "--password",
            "x" * 12,
        ]
    )
    assert result.exit_code != 0
    assert "No site with code 'NOPE'" in result.output
    result = runner.invoke(args=["create-token", "ghost"])
    assert result.exit_code != 0
    assert "No user 'ghost'" in result.output


def test_demo_is_idempotent_and_prints_a_generated_password_once(app, runner, client):
    first = runner.invoke(args=["demo"])
    assert first.exit_code == 0, first.output
    line = next(line for line in first.output.splitlines() if "(shown once)" in line)
    generated = line.rsplit(": ", 1)[1]
    second = runner.invoke(args=["demo"])
    assert generated not in second.output
    assert "unchanged" in second.output
    with app.app_context():
        session = lims_db.session()
        assert session.scalar(select(func.count()).select_from(Site)) == len(SITES)
        assert session.scalar(select(func.count()).select_from(User)) == len(USERS)
        roles = {user.role.value for user in session.scalars(select(User))}
    assert roles == {"technician", "manager", "researcher", "admin"}
    assert log_in(client, "tech.rh", generated).status_code == 302
    assert client.get("/").status_code == 200


def test_demo_with_password_gives_every_demo_user_that_password(app, runner):
    runner.invoke(args=["demo"])
    result = runner.invoke(args=["demo", "--password", "demo-password"])
    assert result.exit_code == 0
    from lims.auth.passwords import security_policy

    with app.app_context():
        policy = security_policy()
        for user in lims_db.session().scalars(select(User)):
            assert policy.verify(user.password_hash, "demo-password"), user.username


def test_db_check_and_current(runner):
    result = runner.invoke(args=["db", "check"])
    assert result.exit_code == 0
    assert "Schema matches the models." in result.output
    result = runner.invoke(args=["db", "current"])
    assert result.output.strip().isdigit()


def test_demo_loads_episodes_at_every_stage_with_a_valid_audit_chain(app, runner):
    from lims.audit.models import AuditEntry
    from lims.audit.services import verify_chain
    from lims.auth.models import User
    from lims.custody.models import Hold, Item
    from lims.followup import services as followup
    from lims.patients.models import Episode
    from lims.shipments.models import Shipment, TemperatureReading

    result = runner.invoke(args=["demo", "--password", "demo-password"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        session = lims_db.session()
        states = {(i.kind.value, i.state.value) for i in session.scalars(select(Item))}
        assert {
            ("apheresis", "collected"),
            ("apheresis", "in_transit"),
            ("apheresis", "in_manufacturing"),
            ("apheresis", "stored"),
            ("product_bag", "quarantine"),
            ("product_bag", "released"),
            ("product_bag", "stored"),
            ("product_bag", "issued"),
            ("product_bag", "infused"),
            ("aliquot", "stored"),
        } <= states
        assert session.scalar(select(func.count()).select_from(Hold)) >= 2
        assert session.scalar(select(func.count()).select_from(Episode)) == 11
        assert verify_chain(session).intact
        # Replayed history: the audit rows' times never go backwards.
        times = session.scalars(select(AuditEntry.at).order_by(AuditEntry.seq)).all()
        assert times == sorted(times)
        shipped = {s.state.value for s in session.scalars(select(Shipment))}
        assert {"packing", "in_transit", "received"} <= shipped
        assert session.scalar(select(func.count()).select_from(TemperatureReading)) > 0
        worklist = followup.worklist(
            session,
            actor=session.scalar(select(User).where(User.username == "tech.rh")),
            today=followup.local_today(),
        )
        assert {row.timepoint for row in worklist.overdue} >= {"D28"}
    again = runner.invoke(args=["demo", "--password", "demo-password"])
    assert "demo episodes existed already" in again.output
