"""`make bench` (benchmarks/run.py) at a tiny scale: every operation yields a LIMS figure and a
bare-SQL baseline figure, the RESULTS.md section is written where it is told to be, and the
data set is left as it was generated (item states as before, the audit chain intact with the
baselines' own rows on it)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from benchmarks import run
from benchmarks.dataset import load
from benchmarks.plan import Spec
from lims import db
from lims.audit.services import verify_chain
from lims.custody.models import Item

SPEC = Spec(aliquots=2000, boxes=40, patients=40, sites=2, registered=60, batch=1000)
OPERATIONS = [
    "scan look-up",
    "custody transition (check out)",
    "custody transition (return)",
    "placement by scan",
    "box map",
    "researcher search",
    "approval of 20 aliquots",
    "inventory export (CSV)",
    "inventory export (XLSX)",
    "8 labels (PDF)",
    "8 labels (ZPL)",
    "audit verification",
]
BENCHMARKS = Path(run.__file__).parent
TIME = re.compile(r"[0-9][0-9,]*\.[0-9]{1,2} m?s")


def states(app) -> dict[str, int]:
    with app.app_context():
        rows = db.session().execute(select(Item.state, func.count()).group_by(Item.state))
        return {state.value: count for state, count in rows}


def section(text: str, name: str) -> list[list[str]]:
    """The rows of the table in section ``name`` of a RESULTS file, cells stripped."""
    body = text.split(f"<!-- {name} -->", 1)[1].split(f"<!-- /{name} -->", 1)[0]
    lines = [line for line in body.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_every_operation_gets_a_lims_and_a_bare_figure(app, backend, database_url, tmp_path):
    with app.app_context():
        load(db.session(), SPEC, report=lambda line: None)
    before = states(app)
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nkept as it was\n")
    status = run.main(
        [
            "--database-url", database_url,
            "--repeat", "3",
            "--approval-repeat", "1",
            "--approval-size", "20",
            "--label-count", "8",
            "--label-runs", "2",
            "--instance-path", str(tmp_path / "bench-instance"),
            "--write",
            "--results", str(results),
        ]
    )  # fmt: skip
    assert status == 0
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\nkept as it was\n")
    rows = section(text, f"bench:{backend}")
    assert [row[0] for row in rows] == OPERATIONS
    header = ["operation", "LIMS measured", "n", "LIMS p50", "LIMS p95", "bare p50", "bare p95"]
    for row in rows:
        figures = dict(zip(header, row, strict=False))
        for column in ("LIMS p50", "LIMS p95", "bare p50", "bare p95"):
            assert TIME.fullmatch(figures[column]), (row[0], column, figures[column])
        assert re.fullmatch(r"[0-9]+\.[0-9]×", row[7]) and re.fullmatch(r"[0-9]+\.[0-9]×", row[8])
    counts = {row[0]: int(row[2]) for row in rows}
    assert counts["scan look-up"] == counts["placement by scan"] == counts["box map"] == 3
    assert counts["researcher search"] == 3 * 7  # three of each kind of filter
    assert counts["approval of 20 aliquots"] == 1 and counts["8 labels (PDF)"] == 2
    assert "item counts by state as before the run: yes" in text
    # The baselines wrote custody events and chained audit rows; everything was undone.
    assert states(app) == before
    with app.app_context():
        report = verify_chain(db.session())
        assert report.intact, report.problem


def test_an_empty_sqlite_file_is_generated_first(tmp_path, capsys):
    """What `make bench` does on a fresh machine: the file is created and generated."""
    path = tmp_path / "folder" / "bench.sqlite"
    status = run.main(
        [
            "--database-url", f"sqlite:///{path}",
            "--generate-if-missing",
            "--aliquots", "300",
            "--only", "scan,boxmap",
            "--repeat", "2",
            "--instance-path", str(tmp_path / "bench-instance"),
        ]
    )  # fmt: skip
    assert status == 0
    out = capsys.readouterr().out
    assert "generating 300 aliquots" in out
    assert re.search(r"^scan look-up .* LIMS p50 .* bare p50 ", out, re.MULTILINE)
    assert re.search(r"^box map .* LIMS p50 .* bare p50 ", out, re.MULTILINE)
    # A second run finds the data set and does not generate again.
    assert run.main([
        "--database-url", f"sqlite:///{path}", "--generate-if-missing", "--only", "scan",
        "--repeat", "2", "--instance-path", str(tmp_path / "bench-instance"),
    ]) == 0  # fmt: skip
    assert "generating" not in capsys.readouterr().out


def test_the_bare_csv_export_writes_the_same_bytes_as_the_lims(app, database_url, tmp_path):
    """The export baseline is the same work: byte for byte the file `lims export` writes."""
    with app.app_context():
        load(db.session(), SPEC, report=lambda line: None)
    files = {}
    for name, script, extra in (
        ("lims", "export_run.py", ["--instance-path", str(tmp_path / "instance")]),
        ("bare", "baselines.py", []),
    ):
        files[name] = tmp_path / f"{name}.csv"
        command = [sys.executable, str(BENCHMARKS / script)]
        command += ["export"] if name == "bare" else []
        command += ["--database-url", database_url, "--format", "csv", "-o", str(files[name])]
        done = subprocess.run(command + extra, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout.splitlines()[-1])["rows"] == SPEC.aliquots
    assert files["bare"].read_bytes() == files["lims"].read_bytes()
