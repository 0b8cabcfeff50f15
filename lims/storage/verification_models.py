"""Rack-scanner verifications of a box: the uploaded scan, what it found, and its acceptance.

A verification keeps the file's fingerprint (name and SHA-256), who uploaded it and when, and
one line per finding: a tube at its recorded position, a tube missing, an unexpected or a
misplaced tube, a position the scanner could not read, a checked-out tube. A manager accepts
the report with an e-signature; the relocations it makes are custody events of the items.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lims.audit.models import ESignature
from lims.auth.models import User, enum_column
from lims.custody.models import Item
from lims.db import Base, UTCDateTime, utcnow
from lims.storage.models import Box


class VerificationStatus(StrEnum):
    #: Discrepancies found; waits for a manager to accept the report.
    PENDING = "pending"
    #: The box was as recorded: nothing to accept.
    CLEAN = "clean"
    ACCEPTED = "accepted"
    #: A newer scan of the same box replaced it before anyone accepted it.
    SUPERSEDED = "superseded"

    @property
    def label(self) -> str:
        return {
            "pending": "Waiting for a manager",
            "clean": "Clean: as recorded",
            "accepted": "Accepted",
            "superseded": "Superseded by a newer scan",
        }[self.value]


class Finding(StrEnum):
    """What the scan showed about one tube or position."""

    #: The tube at its recorded position.
    MATCHED = "matched"
    #: Recorded in this box, not seen anywhere in the scan.
    MISSING = "missing"
    #: Read in this box but not recorded in it (another box, never stored, or unknown).
    UNEXPECTED = "unexpected"
    #: Recorded in this box, read at another position of it.
    MISPLACED = "misplaced"
    #: A tube stands there but the scanner could not read its code ("NO READ").
    UNREADABLE = "unreadable"
    #: Checked out (it keeps its position) and not in the box: as expected.
    CHECKED_OUT = "checked_out"

    @property
    def label(self) -> str:
        return {
            "matched": "Matched",
            "missing": "Missing",
            "unexpected": "Unexpected",
            "misplaced": "Misplaced",
            "unreadable": "Not read",
            "checked_out": "Checked out",
        }[self.value]

    @property
    def is_discrepancy(self) -> bool:
        return self in DISCREPANCIES


DISCREPANCIES = frozenset(
    {Finding.MISSING, Finding.UNEXPECTED, Finding.MISPLACED, Finding.UNREADABLE}
)


class RackVerification(Base):
    __tablename__ = "rack_verification"
    __table_args__ = (
        # Accepted exactly when a manager accepted it, at a time, under a signature.
        CheckConstraint(
            "(status = 'accepted' AND accepted_by_id IS NOT NULL AND accepted_at IS NOT NULL "
            "AND signature_id IS NOT NULL) OR (status <> 'accepted' AND accepted_by_id IS NULL "
            "AND accepted_at IS NULL AND signature_id IS NULL)",
            name="accepted_is_signed",
        ),
        CheckConstraint("length(sha256) = 64", name="sha256_length"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    box_id: Mapped[int] = mapped_column(ForeignKey("storage_box.id"), index=True)
    #: The uploaded file's name and SHA-256: which export the report was made from.
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    #: The rack identifier the file named, if it named one (it equals the box code).
    rack_id: Mapped[str | None] = mapped_column(String(40))
    uploaded_by_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[VerificationStatus] = mapped_column(
        enum_column(VerificationStatus, "verification_status")
    )
    accepted_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The manager's e-signature ("verified") over the report they accepted.
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("e_signature.id"))
    note: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(Integer, default=1)

    box: Mapped[Box] = relationship(lazy="joined", innerjoin=True)
    uploaded_by: Mapped[User] = relationship(foreign_keys=[uploaded_by_id])
    accepted_by: Mapped[User | None] = relationship(foreign_keys=[accepted_by_id])
    signature: Mapped[ESignature | None] = relationship()
    lines: Mapped[list[RackVerificationLine]] = relationship(
        back_populates="verification", order_by="RackVerificationLine.id"
    )

    __mapper_args__ = {"version_id_col": version}

    def lines_of(self, *findings: Finding) -> list[RackVerificationLine]:
        return [line for line in self.lines if line.finding in findings]

    @property
    def discrepancies(self) -> list[RackVerificationLine]:
        return [line for line in self.lines if line.finding.is_discrepancy]


class RackVerificationLine(Base):
    """One finding of a verification; written with it and changed only by the acceptance
    (``resolution``)."""

    __tablename__ = "rack_verification_line"
    __table_args__ = (
        CheckConstraint(
            "position IS NOT NULL OR finding IN ('missing', 'checked_out')",
            name="read_has_position",
        ),
        CheckConstraint(
            "scanned_code IS NOT NULL OR finding IN ('missing', 'checked_out', 'unreadable')",
            name="read_has_code",
        ),
        CheckConstraint(
            "item_id IS NOT NULL OR finding IN ('unexpected', 'unreadable')",
            name="recorded_has_item",
        ),
        CheckConstraint("position IS NULL OR position > 0", name="position_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    verification_id: Mapped[int] = mapped_column(ForeignKey("rack_verification.id"), index=True)
    finding: Mapped[Finding] = mapped_column(enum_column(Finding, "rack_finding"))
    #: Where the scanner read the tube (index in the box, row by row); None for a tube the
    #: scan did not show (missing, checked out).
    position: Mapped[int | None] = mapped_column(Integer)
    scanned_code: Mapped[str | None] = mapped_column(String(40))
    #: The line of the uploaded file the reading came from.
    file_line: Mapped[int | None] = mapped_column(Integer)
    #: The item the code (or the recorded position) stands for; None for a code unknown to
    #: the LIMS or an unread position nothing is recorded at.
    item_id: Mapped[int | None] = mapped_column(ForeignKey("item.id"), index=True)
    #: The item's position in this box by the records at the time of the scan.
    recorded_position: Mapped[int | None] = mapped_column(Integer)
    #: The item's recorded place and state at the time of the scan (for an unexpected tube:
    #: the other box, or "registered" for a tube never stored).
    recorded_location: Mapped[str | None] = mapped_column(String(200))
    recorded_state: Mapped[str | None] = mapped_column(String(32))
    #: What the acceptance did about the finding ("moved to B3", "recorded lost", "left").
    resolution: Mapped[str | None] = mapped_column(String(200))

    verification: Mapped[RackVerification] = relationship(back_populates="lines")
    item: Mapped[Item | None] = relationship()
