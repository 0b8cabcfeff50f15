"""`lims export inventory`: CSV and XLSX to a file, with progress on stderr, from the shell."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sqlalchemy import select

from lims import db as lims_db
from lims.audit.models import AuditEntry
from lims.exports.inventory import RESEARCHER_COLUMNS, STAFF_COLUMNS
from tests.integration.people import build_cast
from tests.integration.test_inventory_export import identities, sheet_rows, small_freezer


@pytest.fixture
def freezer(app, make_site, make_user):
    people = build_cast(make_site, make_user)
    with app.app_context():
        return small_freezer(lims_db.session(), people, make_user)


def recorded(app) -> list[dict]:
    with app.app_context():
        entries = lims_db.session().scalars(
            select(AuditEntry).where(AuditEntry.entity == "inventory_export")
        )
        return [
            {"actor": e.actor, "user_id": e.user_id, **json.loads(e.new_value)} for e in entries
        ]


def test_csv_to_a_file(app, runner, freezer, tmp_path):
    target = tmp_path / "rh.csv"
    result = runner.invoke(
        args=["export", "inventory", "--format", "csv", "--site", "RH", "-o", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert "7 rows written" in result.stderr
    assert f"Wrote 7 rows to {target}." in result.stdout
    frame = pd.read_csv(target, dtype=str, keep_default_na=False)
    assert list(frame.columns) == list(STAFF_COLUMNS)
    assert frame.to_dict(orient="records") == freezer.expected
    (entry,) = recorded(app)
    assert (entry["actor"], entry["user_id"]) == ("command line", None)
    assert (entry["filters"], entry["rows"], entry["complete"]) == ({"site": "RH"}, 7, True)


def test_xlsx_to_a_file_with_filters(app, runner, freezer, tmp_path):
    target = tmp_path / "box.xlsx"
    result = runner.invoke(
        args=[
            "export", "inventory", "--format", "xlsx", "--unit", "RH-F80-1", "--box", "BOX-1",
            "--type", "plasma", "--state", "stored", "-o", str(target),
        ]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 rows written" in result.stderr
    header, *lines = sheet_rows(target)
    assert list(header) == list(STAFF_COLUMNS)
    expected = [
        row["code"]
        for row in freezer.expected
        if row["box"] == "BOX-1" and row["material_type"] == "Plasma" and row["state"] == "stored"
    ]
    assert [line[header.index("code")] for line in lines] == expected


def test_the_whole_network_by_default_and_the_researcher_view(app, runner, freezer, tmp_path):
    everything = tmp_path / "all.csv"
    result = runner.invoke(args=["export", "inventory", "--format", "csv", "-o", str(everything)])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(everything)) == 8
    research = tmp_path / "research.csv"
    result = runner.invoke(
        args=["export", "inventory", "--format", "csv", "--researcher", "-o", str(research)]
    )
    assert result.exit_code == 0, result.output
    text = research.read_text(encoding="utf-8")
    assert text.splitlines()[0] == ",".join(RESEARCHER_COLUMNS)
    assert len(text.splitlines()) == 1 + 4
    for identity in identities(freezer):
        assert identity not in text


def test_a_refused_export_exits_non_zero_and_writes_no_file(app, runner, freezer, tmp_path):
    target = tmp_path / "nothing.csv"
    result = runner.invoke(
        args=["export", "inventory", "--format", "csv", "--box", "NOPE", "-o", str(target)]
    )
    assert result.exit_code != 0 and "No box NOPE" in result.output
    assert not target.exists()
    result = runner.invoke(args=["export", "inventory", "--format", "xlsx", "-o", "-"])
    assert result.exit_code != 0 and "XLSX cannot go to stdout" in result.output
    assert recorded(app) == []
