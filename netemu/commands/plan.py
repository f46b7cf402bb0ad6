"""``netemu plan``: a scenario's contact plan as ION, HDTN or netemu JSON.

The input is a scenario (``.yaml``/``.yml``: the schedule is computed from orbits) or a
contact plan (ION lines or netemu JSON), which is converted.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from netemu.commands._args import seconds
from netemu.errors import InputError
from netemu.plan.contacts import ContactPlan
from netemu.plan.source import PlanSource, is_scenario_path

FORMATS = ("ion", "hdtn", "json")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan",
        help="compute a scenario's contact plan (or convert a plan) to ION, HDTN or JSON",
        description=(
            "Compute every ISL and GSL contact of a scenario from orbital geometry "
            "(boundaries to within 1 ms, one-way light time sampled through each contact) "
            "and write it as ION contact-plan lines (rates in bytes/s), HDTN JSON (bits/s) "
            "or netemu JSON (seconds from the epoch). Given an ION or netemu JSON plan "
            "instead of a scenario, convert it."
        ),
    )
    p.add_argument("scenario", metavar="SCENARIO",
                   help="scenario file (.yaml) or contact plan (ION lines or netemu .json)")
    p.add_argument("--format", "-f", choices=FORMATS, default="ion",
                   help="output format (default: ion)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--start", type=seconds(lo=0), default=0.0, metavar="SECONDS",
                   help="plan from this many seconds after the epoch (default 0)")
    p.add_argument("--duration", type=seconds(lo=0, lo_open=True), default=None, metavar="SECONDS",
                   help="plan this long (default: to the scenario's end)")
    p.add_argument("--epoch", default=None, metavar="UTC",
                   help="epoch of a relative ION plan read as input (default: its "
                        "'# netemu contact plan, epoch' comment, else 2000-01-01)")
    p.add_argument("--no-samples", action="store_true",
                   help="JSON: leave out the light-time samples")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or summary")
    p.set_defaults(func=run)


def _parse_epoch(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        epoch = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{text!r} is not an ISO 8601 time", field="--epoch") from None
    return epoch if epoch.tzinfo is not None else epoch.replace(tzinfo=timezone.utc)


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    epoch = None if is_scenario_path(args.scenario) else _parse_epoch(args.epoch)
    src = PlanSource.open(args.scenario, epoch=epoch)
    if src.scenario is not None:
        plan = _compute(src, args)
    else:
        plan = src.plan(start_s=args.start, duration_s=args.duration, window_file_plan=True)
        plan = plan.with_link_kinds()
    for w in plan.warnings:
        print(f"netemu plan: warning: {w}", file=sys.stderr)
    if args.format == "ion":
        text = plan.to_ion()
    elif args.format == "hdtn":
        text = plan.to_hdtn() + "\n"
    else:
        text = plan.to_json(samples=not args.no_samples) + "\n"
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as e:
            raise InputError(f"cannot write: {e.strerror}", source=args.output) from e
    else:
        sys.stdout.write(text)
    if not args.quiet:
        kinds: dict[str, int] = {}
        for c in plan.contacts:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
        what = ", ".join(f"{n} {k.upper()}" for k, n in sorted(kinds.items())) or "none"
        print(f"netemu plan: {len(plan.nodes)} nodes, {len(plan.contacts)} contacts ({what}, "
              f"each direction counted), {time.monotonic() - t0:.1f} s"
              + (f" → {args.output}" if args.output else ""), file=sys.stderr)
    return 0


def _compute(src: PlanSource, args: argparse.Namespace) -> ContactPlan:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    assert src.duration_s is not None
    if args.start < 0 or args.start >= src.duration_s:
        raise InputError(f"--start must be in [0, {src.duration_s:g}) s", field="--start")
    if args.duration is not None and args.duration <= 0:
        raise InputError("--duration must be > 0", field="--duration")
    console = Console(stderr=True)
    show = not args.quiet and console.is_terminal
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console, transient=True, disable=not show) as bar:
        task = bar.add_task("scenario", total=1.0)

        def progress(phase: str, frac: float) -> None:
            bar.update(task, description=phase, completed=frac)

        return src.plan(start_s=args.start, duration_s=args.duration, progress=progress)
