"""Account services against a real database (SQLite and PostgreSQL)."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from lims import db as lims_db
from lims.auth import services
from lims.auth.models import ApiToken, Role, User
from lims.errors import (
    AccountLocked,
    AuthenticationFailed,
    Conflict,
    Forbidden,
    NotFound,
    ValidationError,
)
from tests.conftest import PASSWORD


@pytest.fixture
def session(app):
    with app.app_context():
        yield lims_db.session()


def test_create_user_stores_a_hash_not_the_password(session, make_user):
    user = make_user("manager", username="Anna.Holm")
    account = session.get(User, user.id)
    assert account.username == "anna.holm"
    assert account.role is Role.MANAGER
    assert PASSWORD not in account.password_hash
    assert account.password_hash.startswith("$argon2id$")


def test_duplicate_username_is_refused(session, make_user):
    make_user(username="tech")
    with pytest.raises(Conflict, match="taken"):
        services.create_user(
            session,
            actor=None,
            username="TECH",
            full_name="x",
            role="technician",
            site_code="RH",
            password=PASSWORD,
        )


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"role": "surgeon"}, ValidationError),
        ({"site_code": "NOPE"}, NotFound),
        ({"password": "short"}, ValidationError),
        ({"username": "bad name!"}, ValidationError),
    ],
)
def test_invalid_user_is_refused_and_nothing_written(session, make_site, fields, error):
    make_site("RH")
    values = {
        "username": "new",
        "full_name": "N",
        "role": "technician",
        "site_code": "RH",
        "password": PASSWORD,
        **fields,
    }
    with pytest.raises(error):
        services.create_user(session, actor=None, **values)
    assert session.scalars(select(User)).all() == []


def test_only_admins_manage_users(session, make_user):
    manager = session.get(User, make_user("manager").id)
    with pytest.raises(Forbidden):
        services.create_user(
            session,
            actor=manager,
            username="x",
            full_name="x",
            role="admin",
            site_code="RH",
            password=PASSWORD,
        )


def test_five_failures_lock_the_account_and_the_right_password_does_not_open_it(session, make_user):
    user = make_user()
    for attempt in range(1, 5):
        with pytest.raises(AuthenticationFailed, match=f"{5 - attempt} attempt"):
            services.authenticate(session, username=user.username, password="wrong")
    with pytest.raises(AccountLocked, match="now locked for 15 minutes"):
        services.authenticate(session, username=user.username, password="wrong")
    with pytest.raises(AccountLocked, match="locked"):
        services.authenticate(session, username=user.username, password=PASSWORD)
    account = session.get(User, user.id)
    remaining = account.locked_until - lims_db.utcnow()
    assert timedelta(minutes=14) < remaining <= timedelta(minutes=15)


def test_lock_ends_after_its_time(session, make_user):
    user = make_user()
    account = session.get(User, user.id)
    account.locked_until = lims_db.utcnow() - timedelta(seconds=1)
    session.commit()
    assert services.authenticate(session, username=user.username, password=PASSWORD).id == user.id


def test_successful_login_resets_the_failure_count(session, make_user):
    user = make_user()
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            services.authenticate(session, username=user.username, password="wrong")
    services.authenticate(session, username=user.username, password=PASSWORD)
    account = session.get(User, user.id)
    assert account.failed_logins == 0
    assert account.last_login_at is not None


def test_unknown_user_and_inactive_user_cannot_log_in(session, make_user):
    with pytest.raises(AuthenticationFailed, match="Wrong username or password"):
        services.authenticate(session, username="ghost", password=PASSWORD)
    user = make_user()
    account = session.get(User, user.id)
    account.active = False
    session.commit()
    with pytest.raises(AuthenticationFailed, match="deactivated"):
        services.authenticate(session, username=user.username, password=PASSWORD)


def test_change_password_checks_the_old_one_and_ends_other_sessions(session, make_user):
    user = make_user()
    account = session.get(User, user.id)
    version = account.session_version
    with pytest.raises(ValidationError, match="current password is wrong"):
        services.change_password(
            session, user=account, current_password="nope", new_password="another pass phrase"
        )
    services.change_password(
        session, user=account, current_password=PASSWORD, new_password="another pass phrase"
    )
    assert account.session_version == version + 1
    assert services.authenticate(session, username=user.username, password="another pass phrase")


def test_admin_cannot_lock_themselves_out(session, make_user):
    admin = session.get(User, make_user("admin").id)
    with pytest.raises(Conflict):
        services.update_user(
            session,
            actor=admin,
            user_id=admin.id,
            full_name="A",
            email="",
            role="admin",
            site_id=admin.site_id,
            active=False,
        )


def test_deactivation_ends_open_sessions(session, make_user):
    admin = session.get(User, make_user("admin").id)
    tech = session.get(User, make_user().id)
    version = tech.session_version
    services.update_user(
        session,
        actor=admin,
        user_id=tech.id,
        full_name=tech.full_name,
        email="",
        role="technician",
        site_id=tech.site_id,
        active=False,
    )
    assert tech.session_version == version + 1
    assert not tech.active


def test_api_token_is_stored_hashed_and_can_be_revoked(session, make_user):
    account = session.get(User, make_user("researcher").id)
    record, token = services.create_api_token(session, actor=None, user=account, name="R")
    stored = session.scalar(select(ApiToken))
    assert token not in (stored.token_hash, stored.prefix)
    assert token.startswith(stored.prefix)
    assert services.user_for_token(session, token).id == account.id
    assert services.user_for_token(session, token + "x") is None
    services.revoke_api_token(session, actor=None, token_id=record.id)
    assert services.user_for_token(session, token) is None


def test_token_of_deactivated_user_stops_working(session, make_user):
    account = session.get(User, make_user().id)
    _, token = services.create_api_token(session, actor=None, user=account)
    account.active = False
    session.commit()
    assert services.user_for_token(session, token) is None


def test_account_changes_are_audited_without_secrets(session, make_user):
    from lims.audit.models import AuditEntry
    from lims.audit.services import verify_chain

    admin = session.get(User, make_user("admin", username="root").id)
    tech = session.get(User, make_user(username="tech").id)
    services.update_user(
        session,
        actor=admin,
        user_id=tech.id,
        full_name="Tech Two",
        email="t@example.org",
        role="manager",
        site_id=tech.site_id,
        active=True,
    )
    services.set_password(session, actor=admin, user_id=tech.id, password="temporary pass 9")
    _, token = services.create_api_token(session, actor=admin, user=tech)
    rows = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.entity == "user_account", AuditEntry.entity_id == str(tech.id))
        .order_by(AuditEntry.seq)
    ).all()
    assert [r.action for r in rows] == [
        "create",
        "update",
        "update",
        "update",
        "set_password",
        "set_password",
    ]
    role_change = next(r for r in rows if r.field == "role")
    assert (role_change.old_value, role_change.new_value, role_change.actor) == (
        "technician",
        "manager",
        "root",
    )
    everything = " ".join(
        f"{r.old_value} {r.new_value}" for r in session.scalars(select(AuditEntry))
    )
    assert "$argon2" not in everything and token not in everything
    assert PASSWORD not in everything and "temporary pass 9" not in everything
    assert verify_chain(session).intact
