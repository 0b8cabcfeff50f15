"""The audit trail (append-only, hash-chained) and electronic signatures."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lims.auth.models import User
from lims.db import Base, UTCDateTime, utcnow

GENESIS_HASH = "0" * 64


class AuditEntry(Base):
    """One recorded fact: who changed or saw what, when, from which value to which, and why.

    ``row_hash`` covers the row's content and the previous row's hash, so editing, inserting or
    removing any row breaks the chain from that row on (``lims audit verify``).
    """

    __tablename__ = "audit_entry"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Position in the chain: 1, 2, 3, ... without gaps.
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"), index=True)
    #: Username at the time, or "command line" for server-side commands.
    actor: Mapped[str] = mapped_column(String(120))
    entity: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(40), index=True)
    field: Mapped[str | None] = mapped_column(String(64))
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64), unique=True)

    user: Mapped[User | None] = relationship()


class AuditHead(Base):
    """The chain's last position and hash, one row; writers serialise on it."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    last_hash: Mapped[str] = mapped_column(String(64), default=GENESIS_HASH)


class ESignature(Base):
    """A signature: who, their printed name, when, what it means, over which record version."""

    __tablename__ = "e_signature"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    printed_name: Mapped[str] = mapped_column(String(200))
    #: reviewed, approved, rejected, released, administered, verified, ...
    meaning: Mapped[str] = mapped_column(String(40))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    entity: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str] = mapped_column(String(64), index=True)
    #: SHA-256 of the signed record as it was when signed.
    record_hash: Mapped[str] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(Text)

    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)
