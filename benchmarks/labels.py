"""A batch of 96 cryovial labels (one large aliquoting run) to PDF and to ZPL:
``python benchmarks/labels.py [--labels 96] [--runs 7]``.

Prints p50 and max over the runs of rendering the batch, the PDF (roll, one label a page) and
the ZPL separately, from label content already built (the database is not involved: the
content of a label is a handful of attribute reads). Each run starts with cold barcode caches,
as a new batch of new identifiers would. Targets (issue 7, not asserted): PDF < 1 s, ZPL <
100 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from benchmarks.common import machine
from lims import identifiers
from lims.labels import layout
from lims.labels.content import LabelContent, sample_content
from lims.labels.render import render
from lims.labels.templates import PROJECT_FOLDER, load_templates


def batch(count: int, first: int) -> list[LabelContent]:
    """``count`` vial labels n/N with new local identifiers, starting at number ``first``."""
    template = load_templates([PROJECT_FOLDER])["cryovial"]
    example = sample_content(template)
    labels = []
    for n in range(1, count + 1):
        code = identifiers.format_local_id("RH", first + n)
        values = dict(example.values, code=code[:-1], code_check=code[-1])
        values["n_of_total"] = f"{n}/{count}"
        labels.append(LabelContent(values, code))
    return labels


def timed(runs: int, work: Callable[[int], object]) -> list[float]:
    seconds = []
    for run in range(runs):
        layout.datamatrix_modules.cache_clear()
        layout.code128_modules.cache_clear()
        start = time.perf_counter()
        work(run)
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=96)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    template = load_templates([PROJECT_FOLDER])["cryovial"]
    # Each run prints a batch of identifiers of its own (as a new aliquoting run would).
    batches = [batch(args.labels, run * args.labels) for run in range(args.runs + 1)]
    render(template, batches[-1], "pdf")  # warm-up: fonts registered, modules imported
    sizes: dict[str, int] = {}

    def pdf(run: int) -> None:
        sizes["pdf"] = len(render(template, batches[run], "pdf"))

    def zpl(run: int) -> None:
        sizes["zpl"] = len(render(template, batches[run], "zpl"))

    print(f"{args.labels} cryovial labels, {args.runs} runs, on {machine()}")
    for name, work, target in (("PDF", pdf, 1.0), ("ZPL", zpl, 0.1)):
        seconds = timed(args.runs, work)
        p50 = statistics.median(seconds)
        verdict = "meets" if p50 < target else "MISSES"
        print(
            f"{name}: p50 {p50 * 1000:7.1f} ms, max {max(seconds) * 1000:7.1f} ms, "
            f"{sizes[name.lower()]:,} bytes ({verdict} the {target * 1000:g} ms target)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
