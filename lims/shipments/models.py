"""Shipments: what was sent, in which conditions, and what arrived."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import ForeignKey, Integer, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lims.auth.models import Site, enum_column
from lims.custody.models import Item
from lims.db import Base, UTCDateTime, utcnow


class ShipmentState(StrEnum):
    PACKING = "packing"
    IN_TRANSIT = "in_transit"
    RECEIVED = "received"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


class Conditions(StrEnum):
    """How the material travels; each has its temperature limits in the configuration."""

    FRESH = "fresh"
    AMBIENT = "ambient"
    DRY_ICE = "dry_ice"
    DRY_SHIPPER = "dry_shipper"
    LN2_VAPOUR = "ln2_vapour"

    @property
    def label(self) -> str:
        return {
            "fresh": "Fresh (2–8 °C)",
            "ambient": "Ambient (15–25 °C)",
            "dry_ice": "Dry ice",
            "dry_shipper": "Dry shipper (LN2)",
            "ln2_vapour": "LN2 vapour",
        }[self.value]


class LineStatus(StrEnum):
    #: Packed and sent; not yet scanned on arrival.
    EXPECTED = "expected"
    #: Scanned on arrival.
    RECEIVED = "received"
    #: Sent but not there when the receipt was completed.
    MISSING = "missing"
    #: Scanned on arrival but not sent in this shipment.
    UNEXPECTED = "unexpected"
    #: Taken off again while packing (kept, not deleted: the record shows it was there).
    REMOVED = "removed"

    @property
    def label(self) -> str:
        return self.value


class Shipment(Base):
    __tablename__ = "shipment"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Printed on the shipment label and scanned on arrival (site code + number + check char).
    code: Mapped[str] = mapped_column(String(32), unique=True)
    from_site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    to_site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    state: Mapped[ShipmentState] = mapped_column(
        enum_column(ShipmentState, "shipment_state"), index=True
    )
    conditions: Mapped[Conditions] = mapped_column(enum_column(Conditions, "shipment_conditions"))
    courier: Mapped[str] = mapped_column(String(200), default="")
    tracking_ref: Mapped[str] = mapped_column(String(100), default="")
    #: The temperature logger travelling with the shipment (its serial or reference).
    logger_ref: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    #: Why the receipt was completed with missing or unexpected items.
    receipt_note: Mapped[str | None] = mapped_column(Text)
    #: The uploaded logger file: its name, when, and what it showed.
    logger_file_name: Mapped[str | None] = mapped_column(String(200))
    logger_uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    logger_min_c: Mapped[Decimal | None] = mapped_column(Numeric(7, 2))
    logger_max_c: Mapped[Decimal | None] = mapped_column(Numeric(7, 2))
    logger_excursions: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=1)

    from_site: Mapped[Site] = relationship(foreign_keys=[from_site_id], lazy="joined")
    to_site: Mapped[Site] = relationship(foreign_keys=[to_site_id], lazy="joined")
    #: The lines that count: what was packed and what turned up, not what was taken off.
    lines: Mapped[list[ShipmentLine]] = relationship(
        primaryjoin="and_(ShipmentLine.shipment_id == Shipment.id, "
        "ShipmentLine.status != 'removed')",
        order_by="ShipmentLine.id",
        viewonly=True,
    )

    __mapper_args__ = {"version_id_col": version}


class ShipmentLine(Base):
    """One bag or tube of a shipment (or a code scanned on arrival that was not sent)."""

    __tablename__ = "shipment_line"
    __table_args__ = (UniqueConstraint("shipment_id", "scanned_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    shipment_id: Mapped[int] = mapped_column(ForeignKey("shipment.id"), index=True)
    #: The item, when the code is one of ours (an unexpected scan may be a stranger's code).
    item_id: Mapped[int | None] = mapped_column(ForeignKey("item.id"), index=True)
    scanned_code: Mapped[str] = mapped_column(String(64))
    #: The container it travels in (dry shipper, canister, box), as written on it.
    container: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[LineStatus] = mapped_column(enum_column(LineStatus, "shipment_line_status"))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    added_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    scanned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scanned_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))

    shipment: Mapped[Shipment] = relationship()
    item: Mapped[Item | None] = relationship()


class TemperatureReading(Base):
    """One row of a temperature logger's CSV, kept with the shipment it travelled with."""

    __tablename__ = "temperature_reading"

    id: Mapped[int] = mapped_column(primary_key=True)
    shipment_id: Mapped[int] = mapped_column(ForeignKey("shipment.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    celsius: Mapped[Decimal] = mapped_column(Numeric(7, 2))
