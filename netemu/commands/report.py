"""``netemu report RUN``: metrics.json and report/index.html (+ PNGs) of a finished run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from netemu.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="write a run's metrics.json and HTML report",
        description="Compute metrics.json from a run directory and write report/index.html "
        "with its figures (map, contact timeline, query latency CDF, bytes saved, bundles, "
        "link use, app resources).",
    )
    p.add_argument("run", type=Path, help="run directory (e.g. runs/three-body-12-…)")
    p.add_argument("--metrics-only", action="store_true", help="write metrics.json only")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from netemu.analysis import metrics, report

    run: Path = args.run
    if not run.is_dir():
        hint = ""
        runs = Path("runs")
        if runs.is_dir():
            names = sorted(d.name for d in runs.iterdir() if d.is_dir())[-3:]
            if names:
                hint = f" (recent runs: {', '.join('runs/' + n for n in names)})"
        raise InputError(f"no such run directory{hint}", source=str(run))
    mpath = metrics.write(run)
    print(f"metrics: {mpath}")
    if args.metrics_only:
        return 0
    page = report.build(run, log=lambda s: print(s, file=sys.stderr))
    m = metrics.load(run)
    for label, value in report.headline(m):
        print(f"  {label:32s} {value}")
    print(f"report: {page.resolve()}")
    return 0
