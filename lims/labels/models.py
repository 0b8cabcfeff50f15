"""The print record: every label batch sent to a printer or downloaded, and its labels.

A print job is written only once the labels have left the LIMS (the printer took the bytes,
or the browser got the file), so the queue page shows what was really printed. Jobs and their
labels are never deleted: a reprint is a new job with its reason.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lims.audit.append_only import protect
from lims.auth.models import Site, User, enum_column
from lims.custody.models import Item
from lims.db import Base, UTCDateTime, utcnow
from lims.shipments.models import Shipment
from lims.storage.models import Box

#: What the job's destination is when the labels went to the browser instead of a printer.
DOWNLOAD = "download"


class PrintFormat(StrEnum):
    PDF = "pdf"
    ZPL = "zpl"

    @property
    def label(self) -> str:
        return {"pdf": "PDF", "zpl": "ZPL (Zebra)"}[self.value]


class PrintStatus(StrEnum):
    #: The printer accepted the bytes over TCP.
    SENT = "sent"
    #: The file was handed to the browser (printed from there, or kept).
    DOWNLOADED = "downloaded"

    @property
    def label(self) -> str:
        return {"sent": "Sent to printer", "downloaded": "Downloaded"}[self.value]


class PrintJob(Base):
    """One batch of labels of one template, printed or downloaded by one person."""

    __tablename__ = "print_job"
    __table_args__ = (
        CheckConstraint("label_count > 0", name="label_count_positive"),
        # A printer job names its printer's address; a download has none.
        CheckConstraint(
            "(status = 'sent' AND destination <> 'download' AND printer_host IS NOT NULL "
            "AND printer_port IS NOT NULL) OR (status = 'downloaded' "
            "AND destination = 'download' AND printer_host IS NULL AND printer_port IS NULL)",
            name="destination_matches_status",
        ),
        CheckConstraint("status <> 'sent' OR format = 'zpl'", name="printers_take_zpl"),
        CheckConstraint("NOT reprint OR reason IS NOT NULL", name="reprint_has_reason"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    printed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    printed_by_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    #: The label template's name (templates are files, so the name is what is kept).
    template: Mapped[str] = mapped_column(String(80))
    format: Mapped[PrintFormat] = mapped_column(enum_column(PrintFormat, "print_format"))
    #: "download", or the configured name of the printer.
    destination: Mapped[str] = mapped_column(String(80))
    printer_host: Mapped[str | None] = mapped_column(String(255))
    printer_port: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[PrintStatus] = mapped_column(enum_column(PrintStatus, "print_status"))
    reprint: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    label_count: Mapped[int] = mapped_column(Integer)

    printed_by: Mapped[User] = relationship()
    site: Mapped[Site] = relationship()
    labels: Mapped[list[PrintedLabel]] = relationship(
        back_populates="job", order_by="PrintedLabel.number"
    )


class PrintedLabel(Base):
    """One label of a job: the item, box or shipment it names and its place n/N in the batch."""

    __tablename__ = "printed_label"
    __table_args__ = (
        CheckConstraint(
            "(item_id IS NOT NULL AND box_id IS NULL AND shipment_id IS NULL) OR "
            "(item_id IS NULL AND box_id IS NOT NULL AND shipment_id IS NULL) OR "
            "(item_id IS NULL AND box_id IS NULL AND shipment_id IS NOT NULL)",
            name="names_one_thing",
        ),
        CheckConstraint("number BETWEEN 1 AND total", name="number_of_total"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("print_job.id"), index=True)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("item.id"), index=True)
    box_id: Mapped[int | None] = mapped_column(ForeignKey("storage_box.id"), index=True)
    shipment_id: Mapped[int | None] = mapped_column(ForeignKey("shipment.id"), index=True)
    #: Its place in the batch, n of N (the order the labels came out of the printer).
    number: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer)

    job: Mapped[PrintJob] = relationship(back_populates="labels")
    item: Mapped[Item | None] = relationship()
    box: Mapped[Box | None] = relationship()
    shipment: Mapped[Shipment | None] = relationship()

    @property
    def code(self) -> str:
        thing = self.item or self.box or self.shipment
        return thing.code if thing is not None else ""


# A print record is history: the ORM refuses to change or delete it once written.
protect(PrintJob, PrintedLabel)
