"""Hypothesis calls every operation of /api/v1 with generated and broken requests.

The operations, their roles (``x-roles``), parameters and request bodies are read from the
API's own OpenAPI document, so a new operation is fuzzed without a change here. Each example
calls one operation with the bearer token of a cast member its roles allow, with:

* path variables naming real objects of the seeded world, or plausible garbage;
* a body built from the operation's request schema (real codes, sites, people and passwords
  where the key asks for one), with some values swapped for junk of any JSON type, keys left
  out or added; or junk JSON (nested, huge numbers, NaN, NUL strings, not an object); or a
  body that is not JSON at all, or sent with the wrong media type;
* query parameters of the document, real, junk or left out.

Never a 5xx, and a refusal (any 4xx) leaves every table's row count and the audit head as
they were. The answer to a refusal is the documented JSON error object.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lims.api.openapi import OPERATIONS, PREFIX
from lims.auth.access import declared_access
from lims.auth.models import Role
from tests.conftest import PASSWORD
from tests.fuzz.conftest import (
    BEYOND_BIGINT,
    BEYOND_INTEGER,
    FUZZ,
    NASTY_TEXT,
    SENDERS,
    Outcome,
    World,
    changes,
    fill_path,
    garbage_text,
    judge,
    path_values,
    path_variables,
    shown,
    snapshot,
    unlock_everyone,
    value_kind,
)
from tests.integration.biobank import STUDY

pytestmark = pytest.mark.fuzz

LOGGER_CSV = "time,temperature\n2025-03-01T09:00:00+01:00,-79.5\n2025-03-01T10:00:00+01:00,-80.1\n"


def real_strings(world: World) -> dict[str, list[str]]:
    """Values a body key asks for, by the key's name: codes, sites, people, passwords."""
    items = world.values["item"]
    return {
        **{key: items for key in ("scan", "item", "bag", "apheresis", "approve", "registered")},
        "items": items,
        "box": world.values["box"],
        "rack": world.values["rack"],
        "position": ["A1", "B2", "J10", "K1"],
        "coi": world.values["coi"],
        "patient": world.values["pseudonym"],
        "wristband": world.bank.cprs,
        "identifier": [*world.bank.cprs, "0101641234"],
        **{
            key: ["RH", "AUH", "OUH", "HGH"]
            for key in ("site", "to_site", "collection_site", "treating_site")
        },
        "lot_number": world.values["lot"],
        "study": [STUDY],
        "timepoint": ["D0", "D7", "D28"],
        "timepoints": ["D0", "D7", "D28"],
        "test": ["viability", "sterility", "transduction_efficiency"],
        "password": [PASSWORD],
        "witness_password": [PASSWORD],
        "witness_username": [world.people[name].username for name in ("tech2", "maker")],
        "csv": [LOGGER_CSV],
    }


def any_json() -> st.SearchStrategy[Any]:
    """Junk of every JSON type, nested; numbers too big for any column; NaN and infinities."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from([2**31, 2**63, -(2**63) - 1, 10**40]),
        st.floats(),
        garbage_text(),
    )
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(garbage_text(), children, max_size=4),
        ),
        max_leaves=12,
    )


class BodyMaker:
    """Strategies for a schema of the document, with real values and junk mixed in."""

    def __init__(self, document: dict, reals: dict[str, list[str]]) -> None:
        self.components = document["components"]["schemas"]
        self.reals = reals

    def resolve(self, schema: dict) -> dict:
        while "$ref" in schema:
            schema = self.components[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def value(self, schema: dict, key: str = "") -> st.SearchStrategy[Any]:
        """A value for ``schema``: right most of the time, junk of any type sometimes."""
        return st.one_of(self.right(schema, key), any_json())

    def right(self, schema: dict, key: str = "") -> st.SearchStrategy[Any]:
        schema = self.resolve(schema)
        if "oneOf" in schema or "anyOf" in schema:
            return st.one_of(
                [self.right(part, key) for part in schema.get("oneOf", schema.get("anyOf"))]
            )
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        kind = schema.get("type")
        if kind == "object":
            return self.object(schema)
        if kind == "array":
            item = self.right(schema.get("items", {}), key)
            return st.lists(item, min_size=schema.get("minItems", 0), max_size=3)
        if kind == "integer":
            low, high = schema.get("minimum"), schema.get("maximum")
            return st.integers(min_value=low, max_value=high)
        if kind == "number":
            return st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6))
        if kind == "boolean":
            return st.booleans()
        if kind == "string":
            if schema.get("format") == "date-time":
                return st.sampled_from(
                    ["2025-03-01T09:30:00+01:00", "2025-03-01T08:30:00Z", "2025-03-01T09:30:00"]
                )
            if schema.get("format") == "date":
                return st.sampled_from(["2025-03-01", "1962-10-21", "2025-02-30"])
            text = st.text(max_size=schema.get("maxLength") or 40)
            if key in self.reals:
                return st.one_of(st.sampled_from(self.reals[key]), text)
            return text
        return any_json()

    def object(self, schema: dict) -> st.SearchStrategy[dict]:
        properties = schema.get("properties", {})
        required = set(schema.get("required", ()))

        @st.composite
        def build(draw):
            body = {}
            for key, part in properties.items():
                # Required keys are mostly there, others mostly not: both ways now and then.
                if draw(st.integers(0, 9)) < (8 if key in required else 4):
                    body[key] = draw(self.value(part, key))
            if draw(st.integers(0, 9)) == 9:
                body[draw(garbage_text())] = draw(any_json())
            return body

        return build()


def operation_params() -> list[Any]:
    return [
        pytest.param(op.method, op.path, id=f"{op.method.upper()} {op.path}")
        for op in OPERATIONS
        if op.operation_id != "openapi"
    ]


@pytest.fixture(scope="module")
def document(world: World) -> dict:
    answer = world.app.test_client().get(f"{PREFIX}/openapi.json")
    assert answer.status_code == 200
    return answer.get_json()


def senders(operation: dict) -> list[str]:
    roles = operation["x-roles"]
    return [person for role in Role if role.value in roles for person in SENDERS[role]]


@st.composite
def api_requests(draw, world: World, maker: BodyMaker, path: str, operation: dict):
    """(url, body bytes or None, content type) for one example."""
    url = fill_path(PREFIX + path, draw(path_values(world, PREFIX + path)))
    query = {}
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "query" and draw(st.booleans()):
            value = draw(
                st.one_of(maker.right(parameter["schema"], parameter["name"]), garbage_text())
            )
            query[parameter["name"]] = value if isinstance(value, str) else json.dumps(value)
    if query:
        # A lone surrogate goes out as the bytes it would be: not UTF-8, which is the point.
        url += "?" + urlencode(query, errors="surrogatepass")
    content = operation.get("requestBody", {}).get("content", {})
    if not content:
        if draw(st.integers(0, 4)) == 4:  # a body where none is expected
            return url, json.dumps(draw(any_json())).encode(), "application/json"
        return url, None, None
    schema = content["application/json"]["schema"]
    shape = draw(st.sampled_from(["schema", "schema", "schema", "junk", "broken", "raw"]))
    if shape == "schema":
        return (
            url,
            json.dumps(draw(maker.object(maker.resolve(schema)))).encode(),
            "application/json",
        )
    if shape == "junk":
        return url, json.dumps(draw(any_json())).encode(), "application/json"
    if shape == "broken":
        broken = draw(
            st.sampled_from(
                [b"", b"{", b"\xff\xfe{}", b"[1,", b'{"a": 1} trailing', b"NaN", b"1" * 5000]
            )
        )
        return url, broken, "application/json"
    # The document's other media types (the logger's text/csv) or one the route does not take.
    media = draw(st.sampled_from([*[m for m in content if m != "application/json"], "text/plain"]))
    text = draw(st.one_of(st.sampled_from([LOGGER_CSV, *NASTY_TEXT]), st.text(max_size=200)))
    return url, text.encode("utf-8", "surrogatepass"), media


def call(world: World, operation_id: str, method: str, person: str, request: tuple) -> Outcome:
    url, body, media = request
    app = world.app
    client = app.test_client()
    headers = {"Authorization": f"Bearer {world.token_for(person)}"}
    unlock_everyone(app)
    before = snapshot(app)
    response = client.open(
        url, method=method.upper(), headers=headers, data=body, content_type=media
    )
    sent = body.decode("utf-8", "replace") if body is not None else ""
    outcome = Outcome(
        f"api.{operation_id}",
        person,
        url.split("?")[0],
        f"{method.upper()} {url[:200]} {media or ''} {shown(sent, 300)}",
        response.status_code,
    )
    outcome.traceback = world.server_errors.take()
    outcome.refused = response.status_code >= 400
    if outcome.refused or outcome.status >= 500:
        outcome.moved = changes(before, snapshot(app))
    answer = response.get_json(silent=True) if response.is_json else None
    if isinstance(answer, dict) and "message" in answer:
        outcome.messages = [str(answer["message"])]
    documented = isinstance(answer, dict) and {"error", "message"} <= set(answer)
    if outcome.refused and outcome.status < 500 and not documented:
        outcome.answer_problem = "the refusal is not the documented {error, message} object"
    return outcome


@pytest.mark.parametrize(("method", "path"), operation_params())
def test_every_api_operation_refuses_junk_cleanly(
    world: World, document, method: str, path: str
) -> None:
    operation = document["paths"][PREFIX + path][method]
    maker = BodyMaker(document, real_strings(world))
    people = senders(operation)
    problems: list[str] = []

    @FUZZ
    @given(person=st.sampled_from(people), request=api_requests(world, maker, path, operation))
    def fuzz(person: str, request: tuple) -> None:
        problem = judge(call(world, operation["operationId"], method, person, request))
        if problem:
            problems.append(problem)

    fuzz()
    assert not problems, f"{len(problems)} bad answers; the first:\n" + "\n\n".join(problems[:2])


# -- ids beyond what the database holds -------------------------------------------------------


def huge_id_params() -> list[Any]:
    """Every operation with an id in its path (``{..._id}``), with ids no table holds."""
    return [
        pytest.param(op.method, op.path, name, number, id=f"{op.method.upper()} {op.path} {number}")
        for op in OPERATIONS
        for name in re.findall(r"{(\w+_id)}", op.path)
        for number in (BEYOND_INTEGER, BEYOND_BIGINT, -1)
    ]


@pytest.mark.parametrize(("method", "path", "name", "number"), huge_id_params())
def test_an_id_beyond_the_database_is_not_found(
    world: World, method: str, path: str, name: str, number: int
) -> None:
    operation = next(op for op in OPERATIONS if (op.method, op.path) == (method, path))
    person = next(
        person
        for role in Role
        if declared_access(world.app, f"api.{operation.operation_id}") is not None
        and role in declared_access(world.app, f"api.{operation.operation_id}")
        for person in SENDERS[role]
    )
    values = {
        variable: number
        if variable == name
        else world.values[value_kind(PREFIX + path, variable)][0]
        for variable, _ in path_variables(path)
    }
    url = fill_path(PREFIX + path, values)
    headers = {"Authorization": f"Bearer {world.token_for(person)}"}
    before = snapshot(world.app)
    response = world.app.test_client().open(url, method=method.upper(), headers=headers, json={})
    traceback = world.server_errors.take()
    assert response.status_code in (404, 422), f"{url}: {response.status_code}\n{traceback}"
    assert response.get_json()["error"]
    assert changes(before, snapshot(world.app)) == {}
