"""Aliquot requests: what a researcher asks for, its review, picking, dispatch and receipt.

A request names concrete aliquots (its lines). A researcher may ask by criteria instead
("2 plasma per subject at D0, D7, D28 of study X"); the criteria are kept and turned into lines
when the request is submitted, with what could not be found written down beside them.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lims.auth.models import Site, User, enum_column
from lims.custody.models import Item, MaterialType
from lims.db import Base, UTCDateTime, utcnow
from lims.patients.models import Patient
from lims.shipments.models import Conditions


class RequestState(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    UNDER_REVIEW = "under_review"
    APPROVED = "approved"
    PARTLY_APPROVED = "partly_approved"
    REJECTED = "rejected"
    PICKING = "picking"
    HANDED_OVER = "handed_over"
    SHIPPED = "shipped"
    RECEIVED = "received"
    CLOSED = "closed"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


class Delivery(StrEnum):
    #: Collected in person at the biobank.
    PICK_UP = "pick_up"
    #: Sent by courier.
    SHIPMENT = "shipment"

    @property
    def label(self) -> str:
        return {"pick_up": "Pick-up at the biobank", "shipment": "Shipment by courier"}[self.value]


class LineStatus(StrEnum):
    #: Asked for; no decision yet.
    REQUESTED = "requested"
    #: Approved and reserved for this request.
    APPROVED = "approved"
    #: Left out of the approval (ineligible, or not chosen); ``reason`` says why.
    NOT_APPROVED = "not_approved"
    #: Taken from its box by scan.
    PICKED = "picked"
    #: Could not be picked (missing or damaged); ``reason`` says why.
    SHORT = "short"
    #: Pulled after approval (consent withdrawn, request cancelled); ``reason`` says why.
    WITHDRAWN = "withdrawn"
    #: Given to the recipient or the courier.
    HANDED_OVER = "handed_over"
    #: Arrived; the tube is distributed.
    RECEIVED = "received"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


#: The line statuses that hold an aliquot for a request: at most one such line per aliquot.
ACTIVE_LINE_STATUSES = (LineStatus.APPROVED, LineStatus.PICKED, LineStatus.HANDED_OVER)
_ACTIVE_SQL = "status IN ('approved', 'picked', 'handed_over')"


class ShortKind(StrEnum):
    MISSING = "missing"
    DAMAGED = "damaged"

    @property
    def label(self) -> str:
        return self.value


class ReviewStage(StrEnum):
    #: The study's access committee (only for studies the configuration names).
    COMMITTEE = "committee"
    #: The biobank manager; this signature reserves the material.
    MANAGER = "manager"

    @property
    def label(self) -> str:
        return {"committee": "Access committee", "manager": "Biobank manager"}[self.value]


class Decision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"

    @property
    def label(self) -> str:
        return self.value


class AliquotRequest(Base):
    __tablename__ = "aliquot_request"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: REQ-yyyy-nnnnn, handed out when the draft is made.
    code: Mapped[str] = mapped_column(String(16), unique=True)
    state: Mapped[RequestState] = mapped_column(
        enum_column(RequestState, "request_state"), index=True
    )
    researcher_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    #: The biobank that serves it (where the researcher asked; material may be network-wide).
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    principal_investigator: Mapped[str] = mapped_column(String(120), default="")
    ethics_ref: Mapped[str] = mapped_column(String(60), default="")
    dpa_ref: Mapped[str] = mapped_column(String(60), default="")
    #: For a recipient outside the network: the institution and the material transfer agreement.
    external: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    recipient_institution: Mapped[str] = mapped_column(String(200), default="")
    mta_ref: Mapped[str] = mapped_column(String(60), default="")
    intended_analyses: Mapped[str] = mapped_column(Text, default="")
    genetic: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    delivery: Mapped[Delivery] = mapped_column(
        enum_column(Delivery, "request_delivery"), default=Delivery.PICK_UP
    )
    #: Address and contact for a shipment, or who collects for a pick-up.
    delivery_details: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Every line picked or short: the researcher was told the material is ready.
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Dispatch: who took it (the researcher in person, or a courier), in which conditions.
    courier: Mapped[str] = mapped_column(String(200), default="")
    conditions: Mapped[Conditions | None] = mapped_column(
        enum_column(Conditions, "request_conditions")
    )
    logger_ref: Mapped[str] = mapped_column(String(100), default="")
    tracking_ref: Mapped[str] = mapped_column(String(100), default="")
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)

    researcher: Mapped[User] = relationship(foreign_keys=[researcher_id], lazy="joined")
    site: Mapped[Site] = relationship(lazy="joined")
    lines: Mapped[list[RequestLine]] = relationship(
        back_populates="request", order_by="RequestLine.id"
    )
    criteria: Mapped[list[RequestCriterion]] = relationship(
        back_populates="request", order_by="RequestCriterion.id"
    )
    reviews: Mapped[list[RequestReview]] = relationship(
        back_populates="request", order_by="RequestReview.id"
    )

    __mapper_args__ = {"version_id_col": version}


class RequestCriterion(Base):
    """"N aliquots of this type per subject at these timepoints of this study"."""

    __tablename__ = "aliquot_request_criterion"
    __table_args__ = (
        CheckConstraint("per_subject BETWEEN 1 AND 100", name="per_subject_in_range"),
        CheckConstraint("max_thaws IS NULL OR max_thaws >= 0", name="max_thaws_not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("aliquot_request.id"), index=True)
    study: Mapped[str] = mapped_column(String(120), default="")
    material_type: Mapped[MaterialType] = mapped_column(
        enum_column(MaterialType, "criterion_material_type")
    )
    #: Timepoint labels, comma-separated (D0,D7,D28); empty for any timepoint.
    timepoints: Mapped[str] = mapped_column(String(200), default="")
    per_subject: Mapped[int] = mapped_column(Integer, default=1)
    min_quantity: Mapped[Decimal | None] = mapped_column(Numeric(12, 3))
    max_thaws: Mapped[int | None] = mapped_column(Integer)
    site_code: Mapped[str] = mapped_column(String(16), default="")
    #: What could not be found when the request was submitted ("S-4F2A D28: 1 of 2").
    shortfall: Mapped[str] = mapped_column(Text, default="")

    request: Mapped[AliquotRequest] = relationship(back_populates="criteria")


class RequestLine(Base):
    """One aliquot of a request. Kept whatever becomes of it: its status says what."""

    __tablename__ = "aliquot_request_line"
    __table_args__ = (
        UniqueConstraint("request_id", "item_id", name="uq_request_line_item"),
        CheckConstraint(
            "status NOT IN ('not_approved', 'short', 'withdrawn') OR reason <> ''",
            name="left_out_says_why",
        ),
        CheckConstraint(
            "(status = 'short') = (short_kind IS NOT NULL)", name="short_kind_only_when_short"
        ),
        # An aliquot is held for at most one request at a time, whatever the race.
        Index(
            "uq_request_line_active_item",
            "item_id",
            unique=True,
            sqlite_where=text(_ACTIVE_SQL),
            postgresql_where=text(_ACTIVE_SQL),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("aliquot_request.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    criterion_id: Mapped[int | None] = mapped_column(ForeignKey("aliquot_request_criterion.id"))
    status: Mapped[LineStatus] = mapped_column(
        enum_column(LineStatus, "request_line_status"), default=LineStatus.REQUESTED
    )
    #: Why it was not approved, came up short or was withdrawn.
    reason: Mapped[str] = mapped_column(Text, default="")
    short_kind: Mapped[ShortKind | None] = mapped_column(enum_column(ShortKind, "short_kind"))
    picked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    picked_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))

    request: Mapped[AliquotRequest] = relationship(back_populates="lines")
    item: Mapped[Item] = relationship(lazy="joined", innerjoin=True)


class RequestReview(Base):
    """A signed decision on a request: the committee's or the manager's."""

    __tablename__ = "aliquot_request_review"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("aliquot_request.id"), index=True)
    stage: Mapped[ReviewStage] = mapped_column(enum_column(ReviewStage, "review_stage"))
    #: The study a committee decided for (a request may span several); empty for the manager.
    study: Mapped[str] = mapped_column(String(120), default="")
    decision: Mapped[Decision] = mapped_column(enum_column(Decision, "review_decision"))
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    signature_id: Mapped[int] = mapped_column(ForeignKey("e_signature.id"))
    comment: Mapped[str] = mapped_column(Text, default="")
    approved_count: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    request: Mapped[AliquotRequest] = relationship(back_populates="reviews")
    reviewer: Mapped[User] = relationship(lazy="joined")


class OptOutCheck(Base):
    """That the tissue-use opt-out register (Vævsanvendelsesregisteret) was looked up for a
    patient, when, by whom and what it said."""

    __tablename__ = "opt_out_check"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    checked_by_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    #: True: the patient is in the register and has opted out of research use.
    registered: Mapped[bool] = mapped_column(Boolean)
    #: The request it was checked for, when there was one.
    request_id: Mapped[int | None] = mapped_column(ForeignKey("aliquot_request.id"))
    note: Mapped[str] = mapped_column(String(200), default="")

    patient: Mapped[Patient] = relationship()


class Notification(Base):
    """One message in a user's in-app inbox."""

    __tablename__ = "notification"
    __table_args__ = (Index("ix_notification_user_unread", "user_id", "read_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    #: submitted, approved, rejected, ready, shipped, handed_over, short_pick, withdrawn, ...
    kind: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[int | None] = mapped_column(ForeignKey("aliquot_request.id"), index=True)
    message: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the e-mail copy went out (None: no SMTP configured, or it failed; see the log).
    mailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    request: Mapped[AliquotRequest | None] = relationship()
