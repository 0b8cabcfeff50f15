"""The JSON API of storage: look up a unit, rack or box, list a box, place and move material.

Routes on the blueprint of :mod:`lims.api.views` (which imports this module at its end). Reads
are for technicians, managers and administrators of the site the freezer stands at; placing and
moving are bench work. Researchers get none of it: they find aliquots through requests, never by
freezer position. Answers are built here from allow-listed columns only (no patient, no CoI).
Placing and moving go through :mod:`lims.storage.services`, so each one is a custody step.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from flask import jsonify, request, url_for
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from lims import db
from lims.api import bodies
from lims.api.payload import refuse_nul
from lims.api.serializers import STORED_ITEM_KEYS, amount, iso
from lims.api.shipments import about_scan
from lims.api.views import BENCH, RECORDS, actor, bp, created, visible_item
from lims.auth.access import allow
from lims.custody.models import Item
from lims.errors import Conflict, Forbidden, NotFound, ValidationError
from lims.storage import services
from lims.storage.models import Box, Rack, StorageUnit

Place = StorageUnit | Rack | Box

# -- looking places up -------------------------------------------------------------------------

#: How each kind of place is looked up by its code, and what it is called in a message.
LOOKUPS = {
    "unit": (services.unit_by_code, "storage unit"),
    "rack": (services.rack_by_code, "rack"),
    "box": (services.box_by_code, "box"),
}


def unit_of(place: Place) -> StorageUnit:
    return place if isinstance(place, StorageUnit) else place.unit


def readable(place: Place) -> Place:
    """Storage is per site: the staff of another site are refused, for reads as for writes."""
    unit, user = unit_of(place), actor()
    if unit.site_id != user.site_id:
        raise Forbidden(
            f"{place.code} stands at {unit.site.code}; you work at {user.site.code} and see "
            "its storage only."
        )
    return place


def place_by_code(session: Session, code: str, kind: str | None) -> Place:
    """The unit, rack or box with this code. Codes are unique per kind only, so a code that two
    kinds share is refused rather than guessed: the client names the kind (``?kind=box``)."""
    if kind is not None and kind not in LOOKUPS:
        raise ValidationError(f"'kind' is one of: {', '.join(LOOKUPS)}.", field="kind")
    shown = code.strip().upper()
    found: dict[str, Place] = {}
    for name, (lookup, _) in LOOKUPS.items():
        if kind in (None, name):
            with suppress(NotFound):
                found[name] = lookup(session, code)
    if not found:
        what = LOOKUPS[kind][1] if kind else "storage unit, rack or box"
        raise NotFound(f"No {what} {shown}.", field="code")
    if len(found) > 1:
        raise Conflict(
            f"{shown} is the code of a "
            + " and a ".join(LOOKUPS[name][1] for name in found)
            + "; add "
            + " or ".join(f"?kind={name}" for name in found)
            + " to say which.",
            field="kind",
        )
    return next(iter(found.values()))


def kind_of(place: Place) -> str:
    return {StorageUnit: "unit", Rack: "rack", Box: "box"}[type(place)]


def name_of(place: Place) -> str:
    """What the lab calls it besides its code: the unit's name, 'Tower 2', the box's label."""
    if isinstance(place, StorageUnit):
        return place.name
    if isinstance(place, Rack):
        return f"{place.kind.label} {place.ordinal}"
    return place.label


def location_url(place: Place) -> str:
    return url_for("api.storage_location", code=place.code, kind=kind_of(place))


# -- fill levels -------------------------------------------------------------------------------


def used_by_box(session: Session, which: ColumnElement[bool]) -> dict[int, int]:
    """How many items hold a place in each of the boxes ``which`` selects (checked-out tubes
    keep theirs): one grouped query, however many boxes a freezer holds."""
    rows = session.execute(
        select(Item.box_id, func.count())
        .join(Box, Box.id == Item.box_id)
        .where(which)
        .group_by(Item.box_id)
    )
    return {box_id: count for box_id, count in rows}


def fill(used: int, size: int) -> dict[str, int]:
    return {"used": used, "size": size, "free": max(size - used, 0)}


def geometry_json(box: Box) -> dict[str, Any] | None:
    geometry = box.geometry
    if geometry is None:
        return None
    return {"rows": geometry.rows, "columns": geometry.columns, "naming": geometry.naming.value}


def box_summary(box: Box, used: dict[int, int]) -> dict[str, Any]:
    return {
        "code": box.code,
        "label": box.label,
        "box_type": box.box_type,
        "ordinal": box.ordinal,
        "active": box.active,
        **fill(used.get(box.id, 0), box.size),
        "url": location_url(box),
        "contents_url": url_for("api.box_contents", code=box.code),
    }


def rack_summary(rack: Rack, boxes: list[Box], used: dict[int, int]) -> dict[str, Any]:
    return {
        "code": rack.code,
        "rack_kind": rack.kind.value,
        "ordinal": rack.ordinal,
        **total_fill(boxes, used),
        "url": location_url(rack),
        "boxes": [box_summary(box, used) for box in boxes],
    }


def total_fill(boxes: list[Box], used: dict[int, int]) -> dict[str, int]:
    return fill(sum(used.get(box.id, 0) for box in boxes), sum(box.size for box in boxes))


def boxes_in(place: StorageUnit | Rack) -> ColumnElement[bool]:
    column = Box.unit_id if isinstance(place, StorageUnit) else Box.rack_id
    return column == place.id


# -- answers -----------------------------------------------------------------------------------


def parents_of(place: Place) -> list[Place]:
    if isinstance(place, StorageUnit):
        return []
    if isinstance(place, Rack):
        return [place.unit]
    return [place.unit, *([place.rack] if place.rack else [])]


def location_json(session: Session, place: Place) -> dict[str, Any]:
    """A unit with its racks and boxes, a rack with its boxes, or a box with its geometry."""
    unit = unit_of(place)
    parents = parents_of(place)
    answer: dict[str, Any] = {
        "kind": kind_of(place),
        "code": place.code,
        "name": name_of(place),
        "site": unit.site.code,
        "temperature_class": unit.temperature_class.value,
        "active": getattr(place, "active", True) and unit.active,
        "path": " / ".join(p.code for p in [*parents, place]),
        "parents": [{"kind": kind_of(p), "code": p.code, "url": location_url(p)} for p in parents],
        "url": location_url(place),
    }
    if isinstance(place, Box):
        used = used_by_box(session, Box.id == place.id)
        return answer | {
            "box_type": place.box_type,
            "geometry": geometry_json(place),
            "ordinal": place.ordinal,
            **fill(used.get(place.id, 0), place.size),
            "contents_url": url_for("api.box_contents", code=place.code),
        }
    which = boxes_in(place)
    boxes = list(session.scalars(select(Box).where(which).order_by(Box.ordinal, Box.code)))
    used = used_by_box(session, which)
    if isinstance(place, Rack):
        return answer | {
            "rack_kind": place.kind.value,
            "ordinal": place.ordinal,
            **total_fill(boxes, used),
            "boxes": [box_summary(box, used) for box in boxes],
        }
    by_rack: dict[int | None, list[Box]] = {}
    for box in boxes:
        by_rack.setdefault(box.rack_id, []).append(box)
    return answer | {
        "unit_type": place.unit_type.value,
        **total_fill(boxes, used),
        "racks": [rack_summary(rack, by_rack.get(rack.id, []), used) for rack in place.racks],
        "boxes": [box_summary(box, used) for box in by_rack.get(None, [])],
    }


def stored_item_json(item: Item) -> dict[str, Any]:
    values = {
        "code": item.code,
        "check_character": item.check_character,
        "kind": item.kind.value,
        "material_type": item.material_type.value,
        "state": item.state.value,
        "timepoint": item.timepoint,
        "timepoint_day": item.timepoint_day,
        "quantity": amount(item.quantity),
        "unit": item.unit,
    }
    return {key: values[key] for key in STORED_ITEM_KEYS}


def contents_json(session: Session, box: Box) -> dict[str, Any]:
    """The box's items in order and, for a grid, every position (empty ones as null)."""
    held = services.contents(session, box)
    items = [
        {
            "position": services.position_name(box, item.position) or None,
            "index": item.position,
            "item": stored_item_json(item),
        }
        for item in held
    ]
    positions = None
    if box.geometry is not None:
        at = {item.position: item for item in held}
        positions = [
            {
                "position": box.geometry.name(index),
                "index": index,
                "item": stored_item_json(at[index]) if index in at else None,
            }
            for index in range(1, box.size + 1)
        ]
    return {
        "box": box.code,
        "path": box.path,
        "box_type": box.box_type,
        "geometry": geometry_json(box),
        **fill(len(held), box.size),
        "items": items,
        "positions": positions,
    }


def item_location_json(session: Session, item: Item) -> dict[str, Any]:
    """Where the item is: its box and position, or ``box: null`` when it has no place."""
    box = session.get(Box, item.box_id) if item.box_id is not None else None
    place = {
        "box": None,
        "position": None,
        "index": None,
        "path": None,
        "unit": None,
        "rack": None,
        "stored_at": None,
        "box_url": None,
    }
    if box is not None:
        place = {
            "box": box.code,
            "position": services.position_name(box, item.position) or None,
            "index": item.position,
            "path": services.location_of(box, item.position),
            "unit": box.unit.code,
            "rack": box.rack.code if box.rack else None,
            "stored_at": iso(item.stored_at),
            "box_url": location_url(box),
        }
    return {
        "item": item.code,
        "state": item.state.value,
        "site": item.site.code,
        # The text recorded with the last custody step (also for material kept without a box).
        "location": item.location,
        **place,
        "checked_out_at": iso(item.checked_out_at),
    }


# -- routes ------------------------------------------------------------------------------------


@bp.get("/storage/locations/<code>")
@allow(*RECORDS)
def storage_location(code: str):
    kind = request.args.get("kind") or None
    if kind is not None:
        refuse_nul(kind, "kind")
    session = db.session()
    return jsonify(location_json(session, readable(place_by_code(session, code, kind))))


@bp.get("/storage/boxes/<code>/contents")
@allow(*RECORDS)
def box_contents(code: str):
    session = db.session()
    box = readable(services.box_by_code(session, code))
    return jsonify(contents_json(session, box))


@bp.get("/items/<code>/location")
@allow(*RECORDS)
def item_location(code: str):
    return jsonify(item_location_json(db.session(), visible_item(code)))


@bp.post("/storage/placements")
@allow(*BENCH)
def place_item():
    data = bodies.PLACEMENT.parse()
    session = db.session()
    if data["position"]:
        box = readable(services.box_by_code(session, data["box"]))
        if box.geometry is None:
            raise ValidationError(
                f"{box.code} has no positions (it holds up to {box.size}); leave 'position' out.",
                field="position",
            )
    with about_scan():
        placement = services.place_item(
            session,
            actor=actor(),
            item_scan=data["scan"],
            box_scan=data["box"],
            position=data["position"],
            manual=False,  # as everywhere in the API: exact codes, a DIN needs no check character
        )
    return created(
        {
            "action": placement.action.value,
            "location": item_location_json(session, placement.item),
        },
        url_for("api.item_location", code=placement.item.code),
    )


@bp.post("/storage/boxes/<code>/move")
@allow(*BENCH)
def move_box(code: str):
    data = bodies.BOX_MOVE.parse()
    session = db.session()
    moved = services.move_box(
        session,
        actor=actor(),
        box_scan=code,
        unit_code=data["unit"],
        rack_code=data["rack"],
        reason=data["reason"],
    )
    box = services.box_by_code(session, code)
    return jsonify(
        box=location_json(session, box), moved=len(moved), items=[item.code for item in moved]
    )
