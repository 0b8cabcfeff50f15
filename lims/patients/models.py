"""Patients (known by pseudonym; identity encrypted) and their CAR-T treatment episodes."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Boolean, CheckConstraint, Date, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lims.auth.models import Site, enum_column
from lims.db import Base, UTCDateTime, utcnow


class IdentifierKind(StrEnum):
    CPR = "cpr"
    #: Foreign patients without a CPR number get a replacement identifier.
    REPLACEMENT = "replacement"


class ProductKind(StrEnum):
    COMMERCIAL = "commercial"
    ACADEMIC = "academic"


class Patient(Base):
    __tablename__ = "patient"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The name the LIMS and researchers know the patient by; carries no identity.
    pseudonym: Mapped[str] = mapped_column(String(16), unique=True)
    identifier_kind: Mapped[IdentifierKind] = mapped_column(
        enum_column(IdentifierKind, "identifier_kind")
    )
    #: Keyed hash (HMAC-SHA256) of the normalised identifier: finds the patient, reveals nothing.
    cpr_hmac: Mapped[str] = mapped_column(String(64), unique=True)
    cpr_ciphertext: Mapped[str] = mapped_column(Text)
    name_ciphertext: Mapped[str] = mapped_column(Text)
    birth_date_ciphertext: Mapped[str] = mapped_column(Text)
    treating_site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    consent_biobank: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    consent_genetic: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    consent_withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    treating_site: Mapped[Site] = relationship(lazy="joined", innerjoin=True)
    episodes: Mapped[list[Episode]] = relationship(back_populates="patient")


class Episode(Base):
    """One CAR-T course of one patient; owns the Chain of Identity identifier."""

    __tablename__ = "episode"
    __table_args__ = (CheckConstraint("length(coi) = 15", name="coi_length"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    #: ISBT 128 Chain of Identity (data structure 040): CH + FIN + yy + 6 characters.
    coi: Mapped[str] = mapped_column(String(15), unique=True)
    coi_check: Mapped[str] = mapped_column(String(1))
    product_name: Mapped[str] = mapped_column(String(120))
    product_kind: Mapped[ProductKind] = mapped_column(enum_column(ProductKind, "product_kind"))
    protocol: Mapped[str] = mapped_column(String(120), default="")
    treating_site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    planned_infusion_date: Mapped[date | None] = mapped_column(Date)
    infused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Optimistic lock: two edits of one episode cannot both win.
    version: Mapped[int] = mapped_column(Integer, default=1)

    patient: Mapped[Patient] = relationship(
        back_populates="episodes", lazy="joined", innerjoin=True
    )
    treating_site: Mapped[Site] = relationship(lazy="joined", innerjoin=True)

    __mapper_args__ = {"version_id_col": version}
