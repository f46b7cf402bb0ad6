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

from netemu.errors import InputError

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
    p.add_argument("--start", type=float, default=0.0, metavar="SECONDS",
                   help="plan from this many seconds after the epoch (default 0)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="plan this long (default: to the scenario's end)")
    p.add_argument("--epoch", default=None, metavar="UTC",
                   help="epoch of a relative ION plan read as input (default: its "
                        "'# netemu contact plan, epoch' comment, else 2000-01-01)")
    p.add_argument("--no-samples", action="store_true",
                   help="JSON: leave out the light-time samples")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or summary")
    p.set_defaults(func=run)


def _is_scenario(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def run(args: argparse.Namespace) -> int:
    from netemu.plan.contacts import ContactPlan

    path = Path(args.scenario)
    if not path.exists():
        raise InputError("no such file", source=str(path))
    t0 = time.monotonic()
    if _is_scenario(path):
        plan = _compute(path, args)
    else:
        epoch = None
        if args.epoch:
            try:
                epoch = datetime.fromisoformat(args.epoch.replace("Z", "+00:00"))
            except ValueError:
                raise InputError(f"{args.epoch!r} is not an ISO 8601 time", field="--epoch") from None
            if epoch.tzinfo is None:
                epoch = epoch.replace(tzinfo=timezone.utc)
        plan = _with_kinds(ContactPlan.load(path, epoch=epoch))
        if args.start or args.duration is not None:
            end = args.start + args.duration if args.duration is not None else float("inf")
            plan.contacts = [c for c in plan.contacts if c.end_s > args.start and c.start_s < end]
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


def _compute(path: Path, args: argparse.Namespace):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from netemu.plan.scenario import load_scenario
    from netemu.plan.schedule import compute_plan

    scenario = load_scenario(path)
    if args.start < 0 or args.start >= scenario.duration_s:
        raise InputError(f"--start must be in [0, {scenario.duration_s:g}) s", field="--start")
    duration = args.duration
    if duration is not None and duration <= 0:
        raise InputError("--duration must be > 0", field="--duration")
    console = Console(stderr=True)
    show = not args.quiet and console.is_terminal
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console, transient=True, disable=not show) as bar:
        task = bar.add_task("scenario", total=1.0)

        def progress(phase: str, frac: float) -> None:
            bar.update(task, description=phase, completed=frac)

        return compute_plan(scenario, start_s=args.start, duration_s=duration, progress=progress)


def _with_kinds(plan):
    """Contacts read from ION carry no link kind; where the nodes' kinds are known (netemu
    writes them as comments) a satellite–satellite contact is an ISL, satellite–ground a
    GSL."""
    from dataclasses import replace

    kinds = {n.name: n.kind for n in plan.nodes.values()}
    out = []
    for c in plan.contacts:
        if c.kind == "plan":
            pair = {kinds.get(c.src), kinds.get(c.dst)}
            if pair == {"satellite"}:
                c = replace(c, kind="isl")
            elif pair == {"satellite", "ground"}:
                c = replace(c, kind="gsl")
        out.append(c)
    plan.contacts = out
    return plan
