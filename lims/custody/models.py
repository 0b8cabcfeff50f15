"""Material (apheresis, product bags, aliquots), its custody events, holds, lots and checks."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lims.audit.models import ESignature
from lims.auth.models import Site, User, enum_column
from lims.custody.domain import Kind, State
from lims.db import Base, UTCDateTime, utcnow
from lims.patients.models import Episode


class MaterialType(StrEnum):
    """The controlled vocabulary of material types."""

    LEUKAPHERESIS = "leukapheresis"
    CAR_T_PRODUCT = "car_t_product"
    WHOLE_BLOOD = "whole_blood"
    PBMC = "pbmc"
    PLASMA = "plasma"
    SERUM = "serum"
    DNA = "dna"
    RNA = "rna"
    CELL_PELLET = "cell_pellet"
    PRODUCT_RETENTION = "product_retention"

    @property
    def label(self) -> str:
        return {
            "pbmc": "PBMC",
            "dna": "DNA",
            "rna": "RNA",
            "car_t_product": "CAR-T product",
        }.get(self.value, self.value.replace("_", " ").capitalize())


#: Which material types each kind may be.
TYPES_BY_KIND = {
    Kind.APHERESIS: frozenset({MaterialType.LEUKAPHERESIS}),
    Kind.PRODUCT_BAG: frozenset({MaterialType.CAR_T_PRODUCT}),
    Kind.ALIQUOT: frozenset(MaterialType)
    - {MaterialType.LEUKAPHERESIS, MaterialType.CAR_T_PRODUCT},
}
CELL_TYPES = frozenset(
    {
        MaterialType.LEUKAPHERESIS,
        MaterialType.CAR_T_PRODUCT,
        MaterialType.PBMC,
        MaterialType.CELL_PELLET,
        MaterialType.PRODUCT_RETENTION,
        MaterialType.WHOLE_BLOOD,
    }
)
UNITS = ("mL", "µL", "µg", "cells")


#: The researcher's search reads only this index (lims.requests.search; migration 0009): the
#: state and kind every search asks for, then what it groups by and filters on.
SEARCH_INDEX_COLUMNS = (
    "state", "kind", "episode_id", "timepoint", "timepoint_day", "material_type",
    "quantity", "thaw_count", "site_id", "id",
)  # fmt: skip


class Item(Base):
    """A bag or tube. Never deleted: it ends in a terminal state."""

    __tablename__ = "item"
    __table_args__ = (
        CheckConstraint("quantity >= 0", name="quantity_not_negative"),
        CheckConstraint("thaw_count >= 0", name="thaw_count_not_negative"),
        CheckConstraint(
            "(aliquot_number IS NULL AND aliquot_total IS NULL) OR "
            "(aliquot_number BETWEEN 1 AND aliquot_total)",
            name="aliquot_n_of_total",
        ),
        CheckConstraint("kind <> 'product_bag' OR lot_id IS NOT NULL", name="bag_has_lot"),
        CheckConstraint("kind = 'aliquot' OR parent_id IS NULL", name="only_aliquots_derive"),
        CheckConstraint("position IS NULL OR box_id IS NOT NULL", name="position_in_a_box"),
        # One item per position: the database refuses a second one, whatever the race.
        UniqueConstraint("box_id", "position", name="uq_item_box_position"),
        Index("ix_item_search", *SEARCH_INDEX_COLUMNS),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: What the barcode carries: a DIN for apheresis and bags, a local ID for aliquots.
    code: Mapped[str] = mapped_column(String(32), unique=True)
    #: The mod 37-2 check character printed beside the code.
    check_character: Mapped[str] = mapped_column(String(1))
    kind: Mapped[Kind] = mapped_column(enum_column(Kind, "kind"))
    material_type: Mapped[MaterialType] = mapped_column(enum_column(MaterialType, "material_type"))
    episode_id: Mapped[int] = mapped_column(ForeignKey("episode.id"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("item.id"), index=True)
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("product_lot.id"), index=True)
    state: Mapped[State] = mapped_column(enum_column(State, "state"), index=True)
    quantity: Mapped[Decimal] = mapped_column(Numeric(12, 3))
    unit: Mapped[str] = mapped_column(String(8))
    cell_count: Mapped[int | None] = mapped_column(BigInteger)
    #: Follow-up timepoint label (baseline, D0, D7, M3, ...) and its day relative to infusion.
    timepoint: Mapped[str | None] = mapped_column(String(16))
    timepoint_day: Mapped[int | None] = mapped_column(Integer)
    aliquot_number: Mapped[int | None] = mapped_column(Integer)
    aliquot_total: Mapped[int | None] = mapped_column(Integer)
    collected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    thawed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    thaw_count: Mapped[int] = mapped_column(Integer, default=0)
    #: Where it is and who holds it (storage positions come with the storage area).
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    location: Mapped[str] = mapped_column(String(200), default="")
    custodian: Mapped[str] = mapped_column(String(200), default="")
    #: Its box and position (index in the box's grid; None in a container without positions).
    box_id: Mapped[int | None] = mapped_column(ForeignKey("storage_box.id"), index=True)
    position: Mapped[int | None] = mapped_column(Integer)
    #: When it was last put into storage, and taken out (time out of storage on return).
    stored_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    checked_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Once a label is printed the identifier is fixed; corrections are signed events.
    label_printed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the printed label was scanned back on the bench (the right label on the right tube).
    label_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    episode: Mapped[Episode] = relationship(lazy="joined", innerjoin=True)
    site: Mapped[Site] = relationship(lazy="joined", innerjoin=True)
    parent: Mapped[Item | None] = relationship(remote_side=[id], back_populates="children")
    children: Mapped[list[Item]] = relationship(back_populates="parent")
    lot: Mapped[ProductLot | None] = relationship(back_populates="bags", foreign_keys=[lot_id])

    __mapper_args__ = {"version_id_col": version}


class CustodyEvent(Base):
    """One step in an item's chain of custody. Append-only."""

    __tablename__ = "custody_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    action: Mapped[str] = mapped_column(String(40))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    from_site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"))
    to_site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"))
    from_location: Mapped[str | None] = mapped_column(String(200))
    to_location: Mapped[str | None] = mapped_column(String(200))
    from_custodian: Mapped[str | None] = mapped_column(String(200))
    to_custodian: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    temperature_logger_ref: Mapped[str | None] = mapped_column(String(100))
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("e_signature.id"))
    #: The second person's signature where the step needs one (release, receipt, bedside).
    witness_signature_id: Mapped[int | None] = mapped_column(ForeignKey("e_signature.id"))

    user: Mapped[User | None] = relationship()
    item: Mapped[Item] = relationship()
    signature: Mapped[ESignature | None] = relationship(foreign_keys=[signature_id])
    witness_signature: Mapped[ESignature | None] = relationship(foreign_keys=[witness_signature_id])


class HoldReason(StrEnum):
    CONSENT_WITHDRAWN = "consent_withdrawn"
    QC_OUT_OF_SPECIFICATION = "qc_out_of_specification"
    TEMPERATURE_EXCURSION = "temperature_excursion"
    OTHER = "other"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


class Hold(Base):
    """Material on hold cannot be reserved, released, shipped or distributed until cleared."""

    __tablename__ = "hold"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"), index=True)
    reason: Mapped[HoldReason] = mapped_column(enum_column(HoldReason, "hold_reason"))
    detail: Mapped[str] = mapped_column(Text, default="")
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    placed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cleared_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    clear_reason: Mapped[str | None] = mapped_column(Text)

    item: Mapped[Item] = relationship()


#: Which apheresis collections a product lot was made from: the lineage of its bags, which a
#: single parent column cannot hold (a lot may pool several collections of one episode).
product_lot_source = Table(
    "product_lot_source",
    Base.metadata,
    Column("lot_id", ForeignKey("product_lot.id"), primary_key=True),
    Column("item_id", ForeignKey("item.id"), primary_key=True),
)


class ProductLot(Base):
    """A manufactured lot made from apheresis collections of one episode."""

    __tablename__ = "product_lot"

    id: Mapped[int] = mapped_column(primary_key=True)
    lot_number: Mapped[str] = mapped_column(String(40), unique=True)
    episode_id: Mapped[int] = mapped_column(ForeignKey("episode.id"), index=True)
    manufacturing_site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    manufactured_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    episode: Mapped[Episode] = relationship(lazy="joined", innerjoin=True)
    bags: Mapped[list[Item]] = relationship(back_populates="lot", foreign_keys=[Item.lot_id])
    sources: Mapped[list[Item]] = relationship(secondary=product_lot_source, order_by=Item.id)
    qc_results: Mapped[list[QcResult]] = relationship(back_populates="lot")


class QcResult(Base):
    __tablename__ = "qc_result"

    id: Mapped[int] = mapped_column(primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("product_lot.id"), index=True)
    #: viability, sterility, transduction_efficiency, vector_copy_number, cell_dose, ...
    test: Mapped[str] = mapped_column(String(40))
    value: Mapped[str] = mapped_column(String(60))
    unit: Mapped[str] = mapped_column(String(20), default="")
    specification: Mapped[str] = mapped_column(String(100), default="")
    passed: Mapped[bool] = mapped_column(Boolean)
    entered_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    lot: Mapped[ProductLot] = relationship(back_populates="qc_results")


class BedsideCheck(Base):
    """A bedside identity check: wristband, cassette/CoI and bag scanned against the episode."""

    __tablename__ = "bedside_check"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("item.id"), index=True)
    episode_id: Mapped[int | None] = mapped_column(ForeignKey("episode.id"))
    passed: Mapped[bool] = mapped_column(Boolean)
    #: What did not match, in words; empty when the check passed. Never the CPR itself.
    mismatches: Mapped[str] = mapped_column(Text, default="")
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    checked_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    witness_signature_id: Mapped[int | None] = mapped_column(ForeignKey("e_signature.id"))


class IdentifierCounter(Base):
    """The last number handed out per scope (a FIN and year, or a site's local IDs)."""

    __tablename__ = "identifier_counter"

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(40), unique=True)
    last_value: Mapped[int] = mapped_column(BigInteger, default=0)
