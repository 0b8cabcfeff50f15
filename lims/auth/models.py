"""Sites of the network, user accounts and API tokens."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from flask_login import UserMixin
from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer, String, false, true
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lims.db import Base, UTCDateTime, utcnow


class Role(StrEnum):
    TECHNICIAN = "technician"
    MANAGER = "manager"
    RESEARCHER = "researcher"
    ADMIN = "admin"

    @property
    def label(self) -> str:
        return {
            Role.TECHNICIAN: "Technician",
            Role.MANAGER: "Biobank manager",
            Role.RESEARCHER: "Researcher",
            Role.ADMIN: "Administrator",
        }[self]


def enum_column(enum: type[StrEnum], name: str) -> SAEnum:
    """A portable enum column: VARCHAR plus a CHECK constraint, stored by value."""
    return SAEnum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=max(len(member.value) for member in enum),
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class Site(Base):
    """A hospital of the network; every user, patient and freezer belongs to one."""

    __tablename__ = "site"
    __table_args__ = (
        CheckConstraint("code = upper(code) AND length(code) BETWEEN 2 AND 8", name="code_format"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Short code printed on labels and used as the prefix of local identifiers (RH, OUH, ...).
    code: Mapped[str] = mapped_column(String(8), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    city: Mapped[str] = mapped_column(String(100), default="")
    #: ISBT 128 facility identification number assigned by ICCBBA, when the site has one.
    isbt_fin: Mapped[str | None] = mapped_column(String(5), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    users: Mapped[list[User]] = relationship(back_populates="site")

    def __str__(self) -> str:
        return f"{self.code} - {self.name}"


class User(UserMixin, Base):
    __tablename__ = "user_account"
    __table_args__ = (
        CheckConstraint("username = lower(username)", name="username_lowercase"),
        CheckConstraint("failed_logins >= 0", name="failed_logins_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254), default="")
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    role: Mapped[Role] = mapped_column(enum_column(Role, "role"))
    #: Deactivated accounts are kept (their signatures and custody events refer to them).
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    password_hash: Mapped[str] = mapped_column(String(255))
    #: Set when an administrator chose the password: the user must replace it at next login.
    must_change_password: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Part of the login cookie's identity: bumping it ends every open session of the user.
    session_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    site: Mapped[Site] = relationship(back_populates="users", lazy="joined", innerjoin=True)
    api_tokens: Mapped[list[ApiToken]] = relationship(back_populates="user")

    # Flask-Login: an inactive account cannot log in and loses its open sessions.
    @property
    def is_active(self) -> bool:  # type: ignore[override]
        return self.active

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"

    def is_locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now

    def __str__(self) -> str:
        return f"{self.full_name} ({self.username})"


class ApiToken(Base):
    """A bearer token for the JSON API. Only a SHA-256 of the token is kept."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    #: The first characters of the token, kept so people can tell their tokens apart.
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="api_tokens")

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None
