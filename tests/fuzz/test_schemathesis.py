"""Schemathesis against /api/v1/openapi.json, through the WSGI app (no server, no network).

Every operation of the document is called with cases Schemathesis generates from it, both
ones that fit the schema (positive) and ones that break it (negative), with a manager's token
and with a researcher's. Path variables are its own or the codes of real objects of the
seeded world. The checks:

* ``not_a_server_error``: never a 5xx;
* a refusal changes nothing (row counts of every table, the audit head);
* the answer conforms to the document: its status is one the operation documents, its media
  type and its body match the schema (``status_code_conformance``, ``content_type_conformance``,
  ``response_schema_conformance``). Where the document and the answers disagree the case is
  listed in DOCUMENT_MISMATCHES and only the other checks apply there.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi import checks as openapi_checks

from lims.api.openapi import OPERATIONS, PREFIX
from tests.fuzz.conftest import (
    FUZZ,
    Outcome,
    World,
    changes,
    judge,
    path_variables,
    shown,
    snapshot,
    unlock_everyone,
    value_kind,
)

pytestmark = pytest.mark.fuzz

TOKENS = {"manager": "manager", "researcher": "bank_researcher"}
CONFORMANCE = (
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
)

#: Operation -> the conformance checks its answers fail, for a fault of the document rather
#: than of the answers (each has its own xfail(strict=True) test below).
DOCUMENT_MISMATCHES: dict[str, set[str]] = {}


@pytest.fixture(scope="module")
def schema(world: World):
    return schemathesis.openapi.from_wsgi(f"{PREFIX}/openapi.json", world.app)


def operation_params() -> list:
    return [
        pytest.param(op.method.upper(), op.path, role, id=f"{op.method.upper()} {op.path} {role}")
        for op in OPERATIONS
        if op.operation_id != "openapi"
        for role in TOKENS
    ]


def cases(world: World, operation, path: str) -> st.SearchStrategy:
    real = {name: world.values[value_kind(path, name)][0] for name, _ in path_variables(path)}
    strategies = [
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    ]
    if real:
        strategies.append(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE, path_parameters=real)
        )
    return st.one_of(strategies)


@pytest.mark.parametrize(("method", "path", "role"), operation_params())
def test_schemathesis_finds_no_server_error(
    world: World, schema, method: str, path: str, role: str
) -> None:
    operation = schema[PREFIX + path][method]
    person = TOKENS[role]
    headers = {"Authorization": f"Bearer {world.token_for(person)}"}
    label = f"{method} {PREFIX}{path}"
    checks = [schemathesis.checks.not_a_server_error]
    checks += [
        check for check in CONFORMANCE if check.__name__ not in DOCUMENT_MISMATCHES.get(label, ())
    ]
    problems: list[str] = []

    @FUZZ
    @given(case=cases(world, operation, PREFIX + path))
    def fuzz(case) -> None:
        unlock_everyone(world.app)
        before = snapshot(world.app)
        response = case.call(headers=headers)
        outcome = Outcome(
            f"api.{operation.definition.raw['operationId']}",
            person,
            case.formatted_path,
            f"{label} {shown(case.path_parameters)} query={shown(case.query)} "
            f"body={shown(case.body)}",
            response.status_code,
        )
        outcome.traceback = world.server_errors.take()
        outcome.refused = response.status_code >= 400
        if outcome.refused:
            outcome.moved = changes(before, snapshot(world.app))
        problem = judge(outcome)
        if problem:
            problems.append(problem)
            return
        try:
            case.validate_response(response, checks=checks)
        except FailureGroup as group:
            titles = sorted({failure.title for failure in group.exceptions})
            problems.append(f"{outcome.describe()}: {titles}\n{str(group)[:1500]}")

    fuzz()
    assert not problems, f"{len(problems)} bad answers; the first:\n" + "\n\n".join(problems[:2])


def test_a_staff_item_answer_matches_exactly_one_documented_schema(world: World, schema) -> None:
    operation = schema[f"{PREFIX}/items/{{code}}"]["GET"]
    case = operation.Case(path_parameters={"code": world.values["item"][0]})
    headers = {"Authorization": f"Bearer {world.token_for('manager')}"}
    response = case.call(headers=headers)
    assert response.status_code == 200
    case.validate_response(response, checks=[openapi_checks.response_schema_conformance])


def test_a_researcher_item_answer_matches_the_document(world: World, schema) -> None:
    operation = schema[f"{PREFIX}/items/{{code}}"]["GET"]
    case = operation.Case(path_parameters={"code": world.values["item"][0]})
    headers = {"Authorization": f"Bearer {world.token_for('bank_researcher')}"}
    response = case.call(headers=headers)
    assert response.status_code == 200
    assert "coi" not in response.json() and "pseudonym" in response.json()
    case.validate_response(response, checks=[openapi_checks.response_schema_conformance])
