"""Use cases for sites, accounts and API tokens. Each one checks the role and commits once."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lims.audit import services as audit
from lims.auth.models import ApiToken, Role, Site, User
from lims.auth.passwords import security_policy
from lims.db import utcnow
from lims.errors import (
    AccountLocked,
    AuthenticationFailed,
    Conflict,
    Forbidden,
    NotFound,
    ValidationError,
)

TOKEN_PREFIX = "lims_"  # noqa: S105 (a marker, not a secret)


def require_role(actor: User | None, *roles: Role) -> None:
    """``actor=None`` is the command line, run by whoever administers the server."""
    if actor is not None and actor.role not in roles:
        raise Forbidden("Your role is not allowed to do this.")


def _commit_unique(session: Session, message: str, field: str) -> None:
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(message, field=field) from None


# -- sites ---------------------------------------------------------------------------------


def get_site(session: Session, site_id: int) -> Site:
    site = session.get(Site, site_id)
    if site is None:
        raise NotFound("No such site.")
    return site


def site_by_code(session: Session, code: str) -> Site:
    site = session.scalar(select(Site).where(Site.code == code.strip().upper()))
    if site is None:
        raise NotFound(f"No site with code '{code}'.", field="site")
    return site


def _clean_site_fields(code: str, name: str, isbt_fin: str | None) -> tuple[str, str, str | None]:
    code = code.strip().upper()
    # The code prefixes the site's local identifiers (DOMAIN.md §3), which need 2-4 letters.
    if not (2 <= len(code) <= 4 and code.isascii() and code.isalpha()):
        raise ValidationError("The site code is 2 to 4 letters, e.g. RH.", field="code")
    if not name.strip():
        raise ValidationError("Give the site's name.", field="name")
    fin = (isbt_fin or "").strip().upper() or None
    if fin is not None and not (len(fin) == 5 and fin.isalnum()):
        raise ValidationError("An ISBT 128 FIN is 5 letters or digits.", field="isbt_fin")
    return code, name.strip(), fin


def create_site(
    session: Session,
    *,
    actor: User | None,
    code: str,
    name: str,
    city: str = "",
    isbt_fin: str | None = None,
) -> Site:
    require_role(actor, Role.ADMIN)
    code, name, fin = _clean_site_fields(code, name, isbt_fin)
    if session.scalar(select(Site.id).where(Site.code == code)):
        raise Conflict(f"A site with code {code} exists already.", field="code")
    site = Site(code=code, name=name, city=city.strip(), isbt_fin=fin, active=True)
    session.add(site)
    try:
        audit.record_created(session, site, actor=actor)
    except IntegrityError:
        session.rollback()
        raise Conflict(f"Another site has the FIN {fin}.", field="isbt_fin") from None
    _commit_unique(session, f"A site with code {code} or FIN {fin} exists already.", "code")
    return site


def update_site(
    session: Session,
    *,
    actor: User | None,
    site_id: int,
    name: str,
    city: str,
    isbt_fin: str | None,
    active: bool,
) -> Site:
    require_role(actor, Role.ADMIN)
    site = get_site(session, site_id)
    _, name, fin = _clean_site_fields(site.code, name, isbt_fin)
    site.name, site.city, site.isbt_fin, site.active = name, city.strip(), fin, active
    changes = audit.pending_changes(site)
    try:
        audit.record_changes(session, site, actor=actor, changes=changes)
    except IntegrityError:
        session.rollback()
        raise Conflict(f"Another site has the FIN {fin}.", field="isbt_fin") from None
    _commit_unique(session, f"Another site has the FIN {fin}.", "isbt_fin")
    return site


# -- accounts ------------------------------------------------------------------------------


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


def user_by_username(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None:
        raise NotFound(f"No user '{username}'.", field="username")
    return user


def _check_new_password(password: str, username: str) -> None:
    problems = security_policy().problems(password, username=username)
    if problems:
        raise ValidationError(" ".join(problems), field="password")


def create_user(
    session: Session,
    *,
    actor: User | None,
    username: str,
    full_name: str,
    role: Role | str,
    site_code: str,
    password: str,
    email: str = "",
    must_change_password: bool = False,
) -> User:
    require_role(actor, Role.ADMIN)
    username = username.strip().lower()
    if not username or not all(ch.isalnum() or ch in "._-" for ch in username):
        raise ValidationError(
            "A username is letters, digits, dots, hyphens and underscores.", field="username"
        )
    try:
        role = Role(role)
    except ValueError:
        raise ValidationError(
            f"Unknown role '{role}'; choose one of {', '.join(Role)}.", field="role"
        ) from None
    site = site_by_code(session, site_code)
    _check_new_password(password, username)
    if session.scalar(select(User.id).where(User.username == username)):
        raise Conflict(f"The username '{username}' is taken.", field="username")
    user = User(
        username=username,
        full_name=full_name.strip() or username,
        email=email.strip(),
        role=role,
        site=site,
        active=True,
        password_hash=security_policy().hash(password),
        must_change_password=must_change_password,
        password_changed_at=utcnow(),
    )
    session.add(user)
    audit.record_created(session, user, actor=actor)
    _commit_unique(session, f"The username '{username}' is taken.", "username")
    return user


def update_user(
    session: Session,
    *,
    actor: User,
    user_id: int,
    full_name: str,
    email: str,
    role: Role | str,
    site_id: int,
    active: bool,
) -> User:
    require_role(actor, Role.ADMIN)
    user = get_user(session, user_id)
    if user.id == actor.id and (not active or Role(role) != Role.ADMIN):
        # An administrator who removes their own rights could leave the network with none.
        raise Conflict("You cannot deactivate yourself or remove your own admin role.")
    get_site(session, site_id)
    if user.active and not active:
        user.session_version += 1  # ends the sessions the account has open
    user.full_name, user.email = full_name.strip(), email.strip()
    user.role, user.site_id, user.active = Role(role), site_id, active
    audit.record_changes(session, user, actor=actor)
    session.commit()
    return user


def unlock_user(session: Session, *, actor: User | None, user_id: int) -> User:
    require_role(actor, Role.ADMIN)
    user = get_user(session, user_id)
    user.locked_until = None
    user.failed_logins = 0
    audit.record_changes(session, user, actor=actor, action="unlock")
    session.commit()
    return user


def set_password(
    session: Session,
    *,
    actor: User | None,
    user_id: int,
    password: str,
    must_change: bool = True,
) -> User:
    """An administrator sets a password; the user must replace it at next login."""
    require_role(actor, Role.ADMIN)
    user = get_user(session, user_id)
    _check_new_password(password, user.username)
    user.password_hash = security_policy().hash(password)
    user.must_change_password = must_change
    user.password_changed_at = utcnow()
    user.session_version += 1
    user.locked_until, user.failed_logins = None, 0
    audit.record_changes(session, user, actor=actor, action="set_password")
    session.commit()
    return user


def _check_password(session: Session, user: User, password: str, now) -> None:
    """Refuse a wrong password, counting it towards the lockout (committed at once)."""
    policy = security_policy()
    if user.is_locked(now):
        raise AccountLocked(
            f"This account is locked after {policy.lockout_threshold} failed logins. "
            "Wait until the lock ends or ask an administrator to unlock it.",
        )
    if not policy.verify(user.password_hash, password):
        user.failed_logins += 1
        if user.failed_logins >= policy.lockout_threshold:
            user.locked_until = now + policy.lockout_duration
            user.failed_logins = 0
            session.commit()
            minutes = int(policy.lockout_duration.total_seconds() // 60)
            raise AccountLocked(
                f"Wrong password. The account is now locked for {minutes} minutes "
                f"after {policy.lockout_threshold} failed logins."
            )
        left = policy.lockout_threshold - user.failed_logins
        session.commit()
        raise AuthenticationFailed(
            f"Wrong username or password. {left} attempt{'s' if left != 1 else ''} left "
            "before the account locks."
        )
    if not user.active:
        raise AuthenticationFailed("This account is deactivated. Ask an administrator.")


def authenticate(session: Session, *, username: str, password: str) -> User:
    """Check a login; count failures and lock the account after too many."""
    policy = security_policy()
    now = utcnow()
    user = session.scalar(
        select(User).where(User.username == username.strip().lower()).with_for_update(of=User)
    )
    if user is None:
        # Spend the same time as a real check so response times do not reveal usernames.
        policy.verify(_dummy_hash(), password)
        raise AuthenticationFailed("Wrong username or password.")
    _check_password(session, user, password, now)
    if policy.hasher.check_needs_rehash(user.password_hash):
        user.password_hash = policy.hash(password)
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    session.commit()
    return user


@dataclass(frozen=True)
class Witness:
    """A second person whose password was checked for one step (see confirm_second_person)."""

    user: User


def confirm_second_person(
    session: Session, *, actor: User, username: str | None, password: str | None
) -> Witness:
    """Check the second person of a step that cannot be undone: another bench user's password.

    Call it before the step writes anything: a wrong password is counted towards that
    account's lockout and committed at once, like a failed login.
    """
    username = (username or "").strip().lower()
    if not username or not password:
        raise ValidationError(
            "This step needs a second person: they enter their own username and password.",
            field="witness",
        )
    if username == actor.username:
        raise ValidationError(
            "The second person must be someone else: one person cannot both do and verify "
            "this step.",
            field="witness",
        )
    policy = security_policy()
    user = session.scalar(select(User).where(User.username == username).with_for_update(of=User))
    if user is None:
        policy.verify(_dummy_hash(), password)
        raise ValidationError("Wrong username or password for the second person.", field="witness")
    try:
        _check_password(session, user, password, utcnow())
    except AuthenticationFailed as exc:
        raise ValidationError(f"Second person: {exc.message}", field="witness") from None
    if user.role not in (Role.TECHNICIAN, Role.MANAGER):
        raise ValidationError(
            "The second person must be a technician or a manager.", field="witness"
        )
    if user.failed_logins:
        user.failed_logins = 0
    return Witness(user)


_DUMMY_HASH: dict[str, str] = {}


def _dummy_hash() -> str:
    policy = security_policy()
    key = str(policy.hasher.memory_cost)
    if key not in _DUMMY_HASH:
        _DUMMY_HASH[key] = policy.hash(secrets.token_hex(8))
    return _DUMMY_HASH[key]


def change_password(
    session: Session, *, user: User, current_password: str, new_password: str
) -> User:
    policy = security_policy()
    if not policy.verify(user.password_hash, current_password):
        raise ValidationError("The current password is wrong.", field="current_password")
    if current_password == new_password:
        raise ValidationError("Choose a password you have not just used.", field="new_password")
    problems = policy.problems(new_password, username=user.username)
    if problems:
        raise ValidationError(" ".join(problems), field="new_password")
    user.password_hash = policy.hash(new_password)
    user.must_change_password = False
    user.password_changed_at = utcnow()
    user.session_version += 1  # other browsers where the user is logged in are logged out
    audit.record_changes(session, user, actor=user, action="change_password")
    session.commit()
    return user


def count_users_by_role(session: Session) -> dict[Role, int]:
    rows = session.execute(
        select(User.role, func.count()).where(User.active.is_(True)).group_by(User.role)
    )
    return {role: count for role, count in rows}


# -- API tokens ----------------------------------------------------------------------------


def _token_digest(token: str) -> str:
    # Tokens are 256-bit random values: a fast hash is enough, a slow one would only cost time.
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(
    session: Session, *, actor: User | None, user: User, name: str = ""
) -> tuple[ApiToken, str]:
    """Return the token record and the token itself, which is shown once and never stored."""
    if actor is not None and actor.id != user.id:
        require_role(actor, Role.ADMIN)
    if not user.active:
        raise Conflict("The account is deactivated; it cannot get an API token.")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(
        user=user, name=name.strip(), prefix=token[:12], token_hash=_token_digest(token)
    )
    session.add(record)
    audit.record_created(session, record, actor=actor)
    session.commit()
    return record, token


def revoke_api_token(session: Session, *, actor: User | None, token_id: int) -> ApiToken:
    record = session.get(ApiToken, token_id)
    if record is None:
        raise NotFound("No such API token.")
    if actor is not None and actor.id != record.user_id:
        require_role(actor, Role.ADMIN)
    if record.revoked_at is None:
        record.revoked_at = utcnow()
        audit.record_changes(session, record, actor=actor, action="revoke")
        session.commit()
    return record


def user_for_token(session: Session, token: str) -> User | None:
    """The active user a bearer token belongs to, or None for an unknown or revoked token."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    record = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_digest(token)))
    if record is None or record.revoked_at is not None or not record.user.active:
        return None
    now = utcnow()
    # Recording every use would turn each API read into a write; once a minute is plenty.
    if record.last_used_at is None or (now - record.last_used_at).total_seconds() > 60:
        record.last_used_at = now
        session.commit()
    return record.user
