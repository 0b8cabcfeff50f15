"""The JSON API of shipments: packing, dispatch, receipt with reconciliation, the logger file.

Routes on the blueprint of :mod:`lims.api.views` (which imports this module at its end), for
technicians and managers. As on the pages, a shipment is shown only to the staff of its two
sites, and each service checks that the caller works at the right end of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import jsonify, request, url_for
from sqlalchemy.orm import Session

from lims import db
from lims.api import bodies
from lims.api.payload import MalformedRequest
from lims.api.serializers import logger_json, outcome_json, reconciliation_json, shipment_json
from lims.api.views import BENCH, actor, bp, created
from lims.auth.access import allow
from lims.errors import DomainError, Forbidden
from lims.shipments import excursions, receipt, services
from lims.shipments.models import Shipment

RAW_CSV = "text/csv"


def shipment_answer(session: Session, shipment: Shipment) -> dict[str, Any]:
    return shipment_json(session, shipment, receipt.reconciliation(shipment))


def visible_shipment(session: Session, code: str) -> Shipment:
    shipment = services.get_shipment(session, code)
    if actor().site_id not in (shipment.from_site_id, shipment.to_site_id):
        raise Forbidden(
            f"Shipment {shipment.code} is between {shipment.from_site.code} and "
            f"{shipment.to_site.code}; only their staff see it."
        )
    return shipment


@contextmanager
def about_scan() -> Iterator[None]:
    """A refusal of the scanned code names the body's key, ``scan`` (services say ``code``)."""
    try:
        yield
    except DomainError as exc:
        if exc.field == "code":
            exc.field = "scan"
        raise


def logger_file() -> tuple[bytes, str]:
    """The logger file and its name: the raw text/csv body, or the JSON ``{csv, filename}``."""
    if request.mimetype == RAW_CSV:
        return request.get_data(), request.args.get("filename", "")
    if not request.is_json:
        raise MalformedRequest(
            f"Send the logger file as the body with 'Content-Type: {RAW_CSV}' (or as JSON "
            '{"csv": "...", "filename": "..."} with Content-Type: application/json).'
        )
    data = bodies.LOGGER_FILE.parse()
    return data["csv"].encode("utf-8"), data["filename"] or ""


# -- packing and dispatch -------------------------------------------------------------------


@bp.post("/shipments")
@allow(*BENCH)
def create_shipment():
    data = bodies.SHIPMENT.parse()
    session = db.session()
    shipment = services.create_shipment(
        session,
        actor=actor(),
        to_site_code=data["to_site"],
        conditions=data["conditions"],
        courier=data["courier"] or "",
        tracking_ref=data["tracking_ref"] or "",
        logger_ref=data["logger_ref"] or "",
    )
    return created(
        shipment_answer(session, shipment), url_for("api.get_shipment", code=shipment.code)
    )


@bp.get("/shipments/<code>")
@allow(*BENCH)
def get_shipment(code: str):
    session = db.session()
    return jsonify(shipment_answer(session, visible_shipment(session, code)))


@bp.post("/shipments/<code>/lines")
@allow(*BENCH)
def add_shipment_line(code: str):
    data = bodies.SHIPMENT_LINE.parse()
    session = db.session()
    with about_scan():
        outcome = services.add_to_shipment(
            session,
            actor=actor(),
            shipment_code=code,
            scan=data["scan"],
            container=data["container"] or "",
            manual=False,
        )
    shipment = services.get_shipment(session, code)
    return jsonify(outcome=outcome_json(outcome), shipment=shipment_answer(session, shipment))


@bp.post("/shipments/<code>/dispatch")
@allow(*BENCH)
def dispatch_shipment(code: str):
    data = bodies.DISPATCH.parse()
    session = db.session()
    # An absent reference keeps the one given when the shipment was created.
    packed = services.get_shipment(session, code)
    tracking_ref, logger_ref = data["tracking_ref"], data["logger_ref"]
    shipment = services.dispatch_shipment(
        session,
        actor=actor(),
        shipment_code=code,
        courier=data["courier"],
        tracking_ref=packed.tracking_ref if tracking_ref is None else tracking_ref,
        logger_ref=packed.logger_ref if logger_ref is None else logger_ref,
    )
    return jsonify(shipment_answer(session, shipment))


# -- receipt -----------------------------------------------------------------------------------


@bp.post("/shipments/<code>/receipt/scans")
@allow(*BENCH)
def receipt_scan(code: str):
    data = bodies.RECEIPT_SCAN.parse()
    session = db.session()
    with about_scan():
        outcome = receipt.scan_on_receipt(
            session, actor=actor(), shipment_code=code, scan=data["scan"], manual=False
        )
    shipment = services.get_shipment(session, code)
    return jsonify(
        outcome=outcome_json(outcome),
        reconciliation=reconciliation_json(receipt.reconciliation(shipment)),
    )


@bp.post("/shipments/<code>/receipt")
@allow(*BENCH)
def complete_receipt(code: str):
    data = bodies.RECEIPT.parse()
    session = db.session()
    receipt.complete_receipt(
        session,
        actor=actor(),
        shipment_code=code,
        note=data["note"] or "",
        witness_username=data["witness_username"],
        witness_password=data["witness_password"],
    )
    return jsonify(shipment_answer(session, services.get_shipment(session, code)))


@bp.post("/shipments/<code>/logger")
@allow(*BENCH)
def upload_logger(code: str):
    data, filename = logger_file()
    session = db.session()
    summary = excursions.upload_logger_csv(
        session, actor=actor(), shipment_code=code, data=data, filename=filename
    )
    shipment = services.get_shipment(session, code)
    return jsonify(shipment=shipment.code, logger=logger_json(session, shipment), held=summary.held)
