"""OpenAPI schemas of the storage routes' answers (:mod:`lims.api.storage`).

Kept beside :mod:`lims.api.schemas` (same helpers, same rules: enumerations from the domain's
StrEnums) so that module stays readable; :mod:`lims.api.openapi` merges both.
"""

from __future__ import annotations

from lims.api.schemas import (
    BOOLEAN,
    CODES,
    INTEGER,
    ITEM,
    STRING,
    TIME,
    Schema,
    enum,
    nullable,
    obj,
    ref,
)
from lims.api.serializers import STORED_ITEM_KEYS
from lims.custody.domain import Action, State
from lims.storage.domain import Naming, TemperatureClass
from lims.storage.models import RackKind, UnitType

FILL: Schema = {
    "used": {**INTEGER, "description": "Places taken (a checked-out tube keeps its own)."},
    "size": {**INTEGER, "description": "Positions, or a container's capacity."},
    "free": INTEGER,
}
PLACE_KIND = enum(("unit", "rack", "box"))
PLACE_COMMON: Schema = {
    "kind": PLACE_KIND,
    "code": STRING,
    "name": {**STRING, "description": "The unit's name, 'Tower 2', or the box's label."},
    "site": STRING,
    "temperature_class": enum(TemperatureClass),
    "active": {**BOOLEAN, "description": "False: out of use, takes nothing new."},
    "path": {**STRING, "description": "Unit / rack / box codes."},
    "parents": {
        "type": "array",
        "items": obj({"kind": PLACE_KIND, "code": STRING, "url": STRING}),
        "description": "Where it stands, outermost first.",
    },
    "url": STRING,
    **FILL,
}
BOX_SUMMARY: Schema = obj(
    {
        "code": STRING,
        "label": STRING,
        "box_type": nullable({**STRING, "description": "Null: a container without positions."}),
        "ordinal": INTEGER,
        "active": BOOLEAN,
        **FILL,
        "url": STRING,
        "contents_url": STRING,
    }
)
STORAGE_SCHEMAS: dict[str, Schema] = {
    "BoxGeometry": obj({"rows": INTEGER, "columns": INTEGER, "naming": enum(Naming)}),
    "BoxSummary": BOX_SUMMARY,
    "RackSummary": obj(
        {
            "code": STRING,
            "rack_kind": enum(RackKind),
            "ordinal": INTEGER,
            **FILL,
            "url": STRING,
            "boxes": {"type": "array", "items": ref("BoxSummary")},
        }
    ),
    "StorageLocation": {
        "type": "object",
        "required": list(PLACE_COMMON),
        "properties": {
            **PLACE_COMMON,
            "unit_type": {**enum(UnitType), "description": "Units only."},
            "rack_kind": {**enum(RackKind), "description": "Racks only."},
            "ordinal": {**INTEGER, "description": "Racks and boxes: place in their unit."},
            "racks": {
                "type": "array",
                "items": ref("RackSummary"),
                "description": "Units only.",
            },
            "boxes": {
                "type": "array",
                "items": ref("BoxSummary"),
                "description": "A rack's boxes; a unit's boxes that stand in no rack.",
            },
            "box_type": nullable({**STRING, "description": "Boxes only."}),
            "geometry": nullable(ref("BoxGeometry")),
            "contents_url": {**STRING, "description": "Boxes only."},
        },
        "description": "A storage unit, rack or box of your site, with its fill.",
    },
    "StoredItem": obj(
        {key: ITEM["properties"][key] for key in STORED_ITEM_KEYS},
        "An item on a box map: no patient, no Chain of Identity, no dates.",
    ),
    "BoxPosition": obj(
        {
            "position": nullable({**STRING, "description": "A1 or 12; null in a container."}),
            "index": nullable({**INTEGER, "description": "1 .. size, row by row."}),
            "item": nullable(ref("StoredItem")),
        }
    ),
    "BoxContents": obj(
        {
            "box": STRING,
            "path": STRING,
            "box_type": nullable(STRING),
            "geometry": nullable(ref("BoxGeometry")),
            **FILL,
            "items": {
                "type": "array",
                "items": ref("BoxPosition"),
                "description": "What the box holds, in position order.",
            },
            "positions": nullable(
                {
                    "type": "array",
                    "items": ref("BoxPosition"),
                    "description": "Every position, empty ones with item null; null for a "
                    "container without positions.",
                }
            ),
        }
    ),
    "ItemLocation": obj(
        {
            "item": STRING,
            "state": enum(State),
            "site": {**STRING, "description": "Code of the site holding it."},
            "location": {**STRING, "description": "As recorded with its last custody step."},
            "box": nullable({**STRING, "description": "Null: the item has no place in a box."}),
            "position": nullable(STRING),
            "index": nullable(INTEGER),
            "path": nullable({**STRING, "description": "Unit / rack / box / position."}),
            "unit": nullable(STRING),
            "rack": nullable(STRING),
            "stored_at": nullable(TIME),
            "box_url": nullable(STRING),
            "checked_out_at": nullable({**TIME, "description": "Out of its box since then."}),
        }
    ),
    "PlacementResult": obj(
        {
            "action": enum(
                (Action.STORE.value, Action.MOVE.value, Action.RETURN_TO_STORAGE.value)
            ),
            "location": ref("ItemLocation"),
        },
        "The custody step taken and where the item is now.",
    ),
    "BoxMoveResult": obj(
        {
            "box": ref("StorageLocation"),
            "moved": {**INTEGER, "description": "Items moved (one custody event each)."},
            "items": {**CODES, "description": "Their codes; checked-out tubes have no event."},
        }
    ),
}
