"""The storage hierarchy: unit (tank, freezer) > rack (tower, shelf) > box (or canister) >
position. Items point at their box and position; one item per position is a unique index."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lims.auth.models import Site, enum_column
from lims.db import Base, UTCDateTime, utcnow
from lims.storage.domain import BOX_TYPES, Geometry, TemperatureClass


class UnitType(StrEnum):
    LN2_TANK = "ln2_tank"
    FREEZER = "freezer"
    FRIDGE = "fridge"
    CABINET = "cabinet"

    @property
    def label(self) -> str:
        return {
            "ln2_tank": "LN2 tank",
            "freezer": "Freezer",
            "fridge": "Fridge",
            "cabinet": "Cabinet",
        }[self.value]


class RackKind(StrEnum):
    RACK = "rack"
    TOWER = "tower"
    SHELF = "shelf"
    DRAWER = "drawer"

    @property
    def label(self) -> str:
        return self.value.capitalize()


class StorageUnit(Base):
    __tablename__ = "storage_unit"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    #: Printed on the unit's label and scanned (unique across the network).
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    unit_type: Mapped[UnitType] = mapped_column(enum_column(UnitType, "unit_type"))
    temperature_class: Mapped[TemperatureClass] = mapped_column(
        enum_column(TemperatureClass, "temperature_class")
    )
    #: A failed or retired unit takes nothing new; it is never deleted.
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    site: Mapped[Site] = relationship(lazy="joined", innerjoin=True)
    racks: Mapped[list[Rack]] = relationship(back_populates="unit", order_by="Rack.ordinal")

    __mapper_args__ = {"version_id_col": version}


class Rack(Base):
    __tablename__ = "storage_rack"

    id: Mapped[int] = mapped_column(primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("storage_unit.id"), index=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[RackKind] = mapped_column(enum_column(RackKind, "rack_kind"))
    #: Its place in the unit (tower 1, shelf 3), for the unit view and the pick list order.
    ordinal: Mapped[int] = mapped_column(Integer, default=1)
    version: Mapped[int] = mapped_column(Integer, default=1)

    unit: Mapped[StorageUnit] = relationship(back_populates="racks", lazy="joined")
    boxes: Mapped[list[Box]] = relationship(back_populates="rack", order_by="Box.ordinal")

    __mapper_args__ = {"version_id_col": version}


class Box(Base):
    """A box with a grid of positions, or a container with a capacity and no positions."""

    __tablename__ = "storage_box"
    __table_args__ = (
        CheckConstraint(
            "(box_type IS NOT NULL AND capacity IS NULL) OR "
            "(box_type IS NULL AND capacity IS NOT NULL AND capacity > 0)",
            name="grid_or_capacity",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    #: A key of storage.domain.BOX_TYPES (9x9, 10x10, 8x12, cassette-5), or None for a
    #: container without positions (canister, bin, dry shipper) that has a capacity instead.
    box_type: Mapped[str | None] = mapped_column(String(20))
    capacity: Mapped[int | None] = mapped_column(Integer)
    #: Where the box is: its unit always, its rack when it stands in one.
    unit_id: Mapped[int] = mapped_column(ForeignKey("storage_unit.id"), index=True)
    rack_id: Mapped[int | None] = mapped_column(ForeignKey("storage_rack.id"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer, default=1)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(Integer, default=1)

    unit: Mapped[StorageUnit] = relationship(lazy="joined", innerjoin=True)
    rack: Mapped[Rack | None] = relationship(back_populates="boxes", lazy="joined")

    __mapper_args__ = {"version_id_col": version}

    @property
    def geometry(self) -> Geometry | None:
        return BOX_TYPES[self.box_type] if self.box_type else None

    @property
    def size(self) -> int:
        return box_size(self.box_type, self.capacity)

    @property
    def path(self) -> str:
        """Unit / rack / box, as printed in exports and shown on the item card."""
        parts = [self.unit.code, self.rack.code if self.rack else None, self.code]
        return " / ".join(part for part in parts if part)


def box_size(box_type: str | None, capacity: int | None) -> int:
    """The places of a box of this type, or of a container with this capacity."""
    return BOX_TYPES[box_type].capacity if box_type else int(capacity or 0)
