"""``netemu route``: the route CGR picks from A to B at time T, and its alternatives.

For a scenario file the contact plan is computed from the orbits over [T, T + horizon];
for an ION contact plan (or netemu JSON plan) it is read as is. The table lists Yen's
routes in order of best-case arrival with, for the given bundle, the projected arrival
(queue-free here, transmission time and volume counted) and why a route is not usable.
"chosen" is the router's own decision (``CGRRouter.check_routes``): like ION, it looks
at a further route only while none of those found so far can carry the bundle, so a
later route with an earlier projected arrival may be listed as usable but not taken.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from netemu.commands._args import seconds
from netemu.errors import InputError
from netemu.plan.contacts import ContactPlan
from netemu.plan.source import PlanSource


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "route",
        help="show the route CGR picks from A to B at time T, and its alternatives",
        description=(
            "Show the contact graph route from A to B for a bundle created at time T, and "
            "Yen's alternatives, from a scenario (plan computed from the orbits) or an ION "
            "contact plan. Nodes by name, ipn number or ipn:N. Exit status 0 when a route "
            "is found, 1 when none is."
        ),
    )
    p.add_argument("source", metavar="SCENARIO_OR_ION_PLAN",
                   help="scenario YAML, ION contact plan, or netemu JSON plan")
    p.add_argument("--from", dest="src", required=True, help="sending node")
    p.add_argument("--to", dest="dst", required=True, help="destination node")
    p.add_argument("--at", dest="at_s", type=seconds(), default=0.0,
                   help="time the bundle is sent, seconds from the plan epoch (default 0)")
    p.add_argument("--size", dest="size_bytes", type=int, default=1000,
                   help="bundle size in bytes (default 1000)")
    p.add_argument("--deadline", dest="deadline_s", type=seconds(lo=0, lo_open=True), default=None,
                   help="bundle lifetime in seconds from --at (default: none)")
    p.add_argument("-k", dest="k", type=int, default=10,
                   help="how many routes to list (Yen's K, default 10)")
    p.add_argument("--horizon", dest="horizon_s", type=seconds(lo=0, lo_open=True), default=None,
                   help="scenario only: seconds of plan to compute after --at "
                        "(default: the deadline, else 6 hours, capped at the scenario end)")
    p.add_argument("--strict-plan", action="store_true",
                   help="refuse a plan file with contacts that end before they start "
                        "(default: skip them with a warning)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _load(args: argparse.Namespace) -> ContactPlan:
    src = PlanSource.open(args.source, strict=args.strict_plan)
    if src.duration_s is None:
        return src.plan()
    if not 0 <= args.at_s < src.duration_s:
        raise InputError(f"--at {args.at_s:g} is outside the scenario "
                         f"(0 to {src.duration_s:g} s)", source=str(src.path))
    horizon = args.horizon_s or args.deadline_s or 6 * 3600.0
    return src.plan(start_s=args.at_s, duration_s=min(horizon, src.duration_s - args.at_s))


def _resolve(plan: ContactPlan, name: str, flag: str, source: str) -> str:
    if name in plan.nodes:
        return name
    digits = name[4:] if name.startswith("ipn:") else name
    if digits.isdigit():
        for n in plan.nodes.values():
            if n.ipn == int(digits):
                return n.name
    known = sorted(plan.nodes, key=lambda n: plan.nodes[n].ipn)
    shown = ", ".join(known[:12]) + (", …" if len(known) > 12 else "")
    raise InputError(f"{flag} {name!r}: no such node in the plan (nodes: {shown})",
                     source=source)


def run(args: argparse.Namespace) -> int:
    from netemu.routing.base import BundleInfo
    from netemu.routing.cgr import CGRRouter

    if args.k < 1:
        raise InputError("-k must be at least 1")
    if args.size_bytes < 0:
        raise InputError("--size must be ≥ 0")
    plan = _load(args)
    for w in plan.warnings:
        print(f"netemu route: warning: {w}", file=sys.stderr)
    src = _resolve(plan, args.src, "--from", args.source)
    dst = _resolve(plan, args.dst, "--to", args.source)
    if src == dst:
        raise InputError("--from and --to are the same node")
    deadline = math.inf if args.deadline_s is None else args.at_s + args.deadline_s
    router = CGRRouter(src, plan, max_routes=args.k)
    bundle = BundleInfo("netemu-route", src, dst, args.size_bytes, deadline_s=deadline)
    checks = router.check_routes(bundle, args.at_s, k=args.k)
    chosen = next((c for c in checks if c.verdict == "chosen"), None)
    if args.json:
        print(json.dumps(_as_json(args, src, dst, router, checks), indent=1))
    else:
        _print_table(args, src, dst, router, checks, chosen, len(plan.contacts))
    return 0 if chosen else 1


def _as_json(args, src, dst, router, checks) -> dict:
    return {
        "from": src, "to": dst, "at_s": args.at_s, "size_bytes": args.size_bytes,
        "estimated_size_bytes": router.estimated_size(args.size_bytes),
        "deadline_s": None if args.deadline_s is None else args.at_s + args.deadline_s,
        "routes": [
            {
                "rank": i + 1,
                "verdict": c.verdict,
                "best_case_arrival_s": c.route.arrival_s,
                "projected_arrival_s": c.projected_arrival_s,
                "next_hop": c.route.next_hop,
                "considered": c.considered,
                "nodes": list(c.route.nodes),
                "contacts": [
                    {"from": h.src, "to": h.dst, "start_s": h.start_s, "end_s": h.end_s,
                     "owlt_s": h.owlt_s, "rate_bps": h.rate_bps}
                    for h in c.route.hops
                ],
            }
            for i, c in enumerate(checks)
        ],
    }


def _t(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.6f}".rstrip("0").rstrip(".") if abs(x) < 1e6 else f"{x:.0f}"


def _print_table(args, src, dst, router, checks, chosen, n_contacts) -> None:
    eccc = router.estimated_size(args.size_bytes)
    dl = "none" if args.deadline_s is None else f"t={_t(args.at_s + args.deadline_s)} s"
    print(f"CGR from {src} to {dst}, bundle sent at t={_t(args.at_s)} s "
          f"({args.size_bytes} B, estimated {eccc:.10g} B), deadline {dl}; "
          f"plan of {n_contacts} contacts")
    if not checks:
        print(f"no route from {src} to {dst} after t={_t(args.at_s)} s")
        return
    rows = [("#", "best case (s)", "projected (s)", "hops", "next hop", "verdict", "path")]
    for i, c in enumerate(checks):
        mark = "*" if c is chosen else " "
        rows.append((f"{mark}{i + 1}", _t(c.route.arrival_s), _t(c.projected_arrival_s),
                     str(c.route.n_hops), c.route.next_hop, c.verdict,
                     " → ".join(c.route.nodes)))
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    skipped = [i + 1 for i, c in enumerate(checks) if not c.considered]
    if chosen is None:
        print("\nno usable route for this bundle")
        return
    if skipped:
        print(f"\nroutes {skipped[0]}–{skipped[-1]}: not looked at by the router for this "
              f"bundle (it computes another route only while none of routes "
              f"1–{skipped[0] - 1} can carry it)")
    print(f"\nchosen: route {checks.index(chosen) + 1}, next hop {chosen.route.next_hop}, "
          f"projected arrival t={_t(chosen.projected_arrival_s)} s")
    for h, t in zip(chosen.route.hops, chosen.route.times_s, strict=True):
        print(f"  {h.src} → {h.dst}: contact {_t(h.start_s)}–{_t(h.end_s)} s, "
              f"light time {h.owlt_s * 1e3:.3f} ms, {h.rate_bps / 1e6:g} Mbit/s, "
              f"best-case arrival t={_t(t)} s")
