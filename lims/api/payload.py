"""Reading JSON request bodies: one declaration per body, used to parse it and to document it.

A :class:`Body` lists its :class:`Field`\\ s. ``Body.parse()`` reads the request, refuses what is
not a JSON object (400) and any key that is missing, unknown or of the wrong type (422, naming
the key), and returns plain Python values for the service. ``Body.schema()`` gives the OpenAPI
schema of the same declaration, so what is documented and what is accepted cannot disagree.

Times must carry a time zone (``...Z`` or ``+01:00``): a naive time is refused rather than
guessed, because a local time taken for UTC would shift a custody record silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from flask import request

from lims.errors import DomainError, ValidationError


class MalformedRequest(DomainError):
    """The body is not a JSON object at all: nothing in it can be read."""

    status_code = 400
    code = "malformed_request"


#: The JSON kinds a field can have, with the OpenAPI schema each stands for.
KINDS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
    "string_or_number": {"oneOf": [{"type": "string"}, {"type": "number"}]},
    "string_list": {"type": "array", "items": {"type": "string"}},
    "object_list": {"type": "array"},
}


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    required: bool = False
    description: str = ""
    #: Allowed values: a StrEnum (the value returned is its member) or a tuple of strings.
    choices: type[StrEnum] | tuple[str, ...] | None = None
    #: The fields of each object in an ``object_list``.
    items: tuple[Field, ...] = ()
    max_length: int | None = None
    #: Bounds of an ``integer``; by default a 32-bit column's, so no value overflows one.
    minimum: int = -(2**31)
    maximum: int = 2**31 - 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}")

    @property
    def allowed(self) -> list[str]:
        return [str(choice) for choice in self.choices] if self.choices else []

    def schema(self) -> dict[str, Any]:
        schema = dict(KINDS[self.kind])
        if self.kind == "object_list":
            schema["items"] = object_schema(self.items)
            schema["minItems"] = 1
        if self.choices:
            schema["enum"] = self.allowed
        if self.max_length:
            schema["maxLength"] = self.max_length
        if self.kind == "integer":
            schema["minimum"], schema["maximum"] = self.minimum, self.maximum
            schema["format"] = "int32" if self.maximum < 2**31 else "int64"
        if self.description:
            schema["description"] = self.description
        return schema


def object_schema(fields: tuple[Field, ...]) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {f.name: f.schema() for f in fields},
    }
    required = [f.name for f in fields if f.required]
    if required:
        schema["required"] = required
    return schema


class Body:
    """The JSON object an endpoint accepts. ``name`` is its OpenAPI component name."""

    def __init__(self, name: str, *fields: Field, optional: bool = False) -> None:
        self.name = name
        self.fields = fields
        #: Whether an empty request (no body at all) stands for ``{}``.
        self.optional = optional

    def schema(self) -> dict[str, Any]:
        return object_schema(self.fields)

    def parse(self) -> dict[str, Any]:
        """The request's body as typed values; every declared key is present (None if absent)."""
        if self.optional and not request.get_data(cache=True).strip():
            return read_object({}, self.fields)
        if not request.is_json:
            raise MalformedRequest("Send a JSON object with 'Content-Type: application/json'.")
        data = request.get_json(silent=True)
        if data is None:
            raise MalformedRequest("The request body is not valid JSON.")
        if not isinstance(data, dict):
            raise MalformedRequest("The request body must be a JSON object ({...}).")
        return read_object(data, self.fields)


def read_object(data: dict[str, Any], fields: tuple[Field, ...], prefix: str = "") -> dict:
    unknown = sorted(set(data) - {f.name for f in fields})
    if unknown:
        raise ValidationError(
            f"Unknown key '{prefix}{unknown[0]}'; this request takes "
            + ", ".join(f.name for f in fields)
            + ".",
            field=prefix + unknown[0],
        )
    return {f.name: read_value(f, data.get(f.name), prefix + f.name) for f in fields}


def read_value(spec: Field, value: Any, path: str) -> Any:
    if value is None:
        if spec.required:
            raise ValidationError(f"'{path}' is required.", field=path)
        return None
    reader = READERS[spec.kind]
    result = reader(spec, value, path)
    if spec.choices and spec.kind == "string":
        if result not in spec.allowed:
            raise ValidationError(
                f"'{path}' is one of: {', '.join(spec.allowed)}.",
                field=path,
            )
        if isinstance(spec.choices, type):
            result = spec.choices(result)
    return result


def refuse_nul(value: str, path: str) -> None:
    """No text may hold a NUL character (PostgreSQL refuses it; no scanner sends it), nor a
    lone surrogate (JSON's "\\ud800" decodes to one; it cannot be stored as UTF-8)."""
    if "\x00" in value:
        raise ValidationError(f"'{path}' contains a NUL character.", field=path)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"'{path}' is not valid Unicode text.", field=path) from None


def _wrong(path: str, what: str) -> ValidationError:
    return ValidationError(f"'{path}' must be {what}.", field=path)


def _string(spec: Field, value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _wrong(path, "a string")
    refuse_nul(value, path)
    if spec.required and not value.strip():
        raise ValidationError(f"'{path}' must not be empty.", field=path)
    if spec.max_length and len(value) > spec.max_length:
        raise _wrong(path, f"at most {spec.max_length} characters")
    return value


def _integer(spec: Field, value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong(path, "a whole number")
    if not spec.minimum <= value <= spec.maximum:
        raise _wrong(path, f"a whole number from {spec.minimum} to {spec.maximum}")
    return value


def _number(spec: Field, value: Any, path: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _wrong(path, "a number")
    return value


def _boolean(spec: Field, value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _wrong(path, "true or false")
    return value


def _date(spec: Field, value: Any, path: str) -> date:
    if not isinstance(value, str):
        raise _wrong(path, "a date written YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _wrong(path, "a date written YYYY-MM-DD") from None


def _datetime(spec: Field, value: Any, path: str) -> datetime:
    example = "an ISO 8601 time with its time zone, e.g. 2025-03-01T09:30:00+01:00 or ...Z"
    if not isinstance(value, str) or "T" not in value.upper():
        raise _wrong(path, example)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _wrong(path, example) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValidationError(
            f"'{path}' has no time zone; add 'Z' for UTC or the offset, e.g. +01:00.",
            field=path,
        )
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 lies before the year 1 in UTC
        raise _wrong(path, example) from None


def _string_or_number(spec: Field, value: Any, path: str) -> str:
    if isinstance(value, str):
        return _string(spec, value, path)
    return str(_number(spec, value, path))


def _string_list(spec: Field, value: Any, path: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
        raise _wrong(path, "a list of strings")
    for index, entry in enumerate(value):
        refuse_nul(entry, f"{path}[{index}]")
    return value


def _object_list(spec: Field, value: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _wrong(path, "a non-empty list of objects")
    result = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise _wrong(f"{path}[{index}]", "an object")
        result.append(read_object(entry, spec.items, prefix=f"{path}[{index}]."))
    return result


READERS = {
    "string": _string,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "date": _date,
    "datetime": _datetime,
    "string_or_number": _string_or_number,
    "string_list": _string_list,
    "object_list": _object_list,
}
