"""``netemu demo``: the flagship scenario end to end, then the report.

Runs topologies/three-body-12.yaml (or another scenario): the 12-satellite computing ring
with a bundle agent and contact graph routing on every node, onboard vessel detection,
ground downlink and ground-to-orbit queries; then writes metrics and the HTML report and
prints its path and headline figures.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from netemu.analysis import expect as expect_mod
from netemu.commands._args import seconds
from netemu.commands._view import add_view_args
from netemu.errors import InputError, NetemuError
from netemu.run.runner import RunOptions, RunResult, ScenarioRun

DEFAULT_SCENARIO = "topologies/three-body-12.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the flagship scenario (three-body-12) end to end and write its report",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("scenario", nargs="?", default=None,
                   help=f"scenario file (default: {DEFAULT_SCENARIO})")
    p.add_argument("--out", type=Path, help="run directory (default: runs/<scenario>-<time>)")
    p.add_argument("--quick", action="store_true",
                   help="a short window (the scenario's emulation.quick profile)")
    p.add_argument("--duration-s", type=float, help="scenario seconds to emulate")
    p.add_argument("--start-s", type=float, help="window start, scenario seconds from the epoch")
    p.add_argument("--time-scale", type=float,
                   help="scenario seconds per wall second (e.g. 10: ten times faster)")
    p.add_argument("--no-isl", action="store_true",
                   help="drop every inter-satellite link (compare against the same run with ISLs)")
    p.add_argument("--shaper", choices=("auto", "netem", "relay"), help="link shaping backend")
    p.add_argument("--ip-routing", metavar="MODE",
                   help="IP routes: oracle, none, frr, bird, frr/ospf6, frr/isis or plugin:MODULE:FUNCTION instead of the "
                   "scenario's ip_routing:")
    p.add_argument("--no-apps", action="store_true", help="agents and links only")
    p.add_argument("--agent-hosts", type=_agent_hosts, metavar="N|per-node|auto",
                   help="run the agents in N node-host processes, one process per node, or "
                   "one node host per CPU (default: the scenario's emulation.agent_hosts)")
    p.add_argument("--lead-s", type=seconds(lo=0), metavar="S",
                   help="wall seconds from bring-up to the window's start, for the agents "
                   "and apps to start (default: estimated for a machine like ours; more on "
                   "a slow one)")
    p.add_argument("--app-grace-s", type=seconds(lo=0, lo_open=True), default=5.0, metavar="S",
                   help="wall seconds an app has to exit after SIGTERM at the end before it "
                   "is killed and counted as failed (default 5; more on a slow machine)")
    p.add_argument("--no-report", action="store_true", help="metrics only, no HTML report")
    p.add_argument("--mqtt-port", type=int, metavar="PORT",
                   help="also serve the run's MQTT on 127.0.0.1:PORT (same credentials)")
    p.add_argument("--run-name", help="short run name (1-8 lowercase letters/digits; names the "
                   "namespaces and MQTT topics); default: random")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="spread the run over a Ray cluster (ADDRESS of its head, or auto: the "
                   "one this machine is a node of): agents and apps on their nodes' hosts, "
                   "the run directory gathered here (docs/cluster.md)")
    add_view_args(p)
    p.set_defaults(func=_cmd_demo)


def _agent_hosts(text: str) -> str:
    if text in ("per-node", "auto") or (text.isdigit() and int(text) >= 1):
        return text
    raise argparse.ArgumentTypeError(f"per-node, auto or a whole number ≥ 1, got {text!r}")


def _check_cluster_args(args: argparse.Namespace) -> None:
    """The options a run spread over hosts does not take, refused before anything runs."""
    given = [opt for opt, on in (("--view", args.view), ("--mqtt-port", args.mqtt_port),
                                 ("--agent-hosts", args.agent_hosts),
                                 ("--lead-s", args.lead_s),
                                 ("--shaper netem", args.shaper == "netem")) if on]
    if given:
        raise InputError(f"--cluster: leave out {', '.join(given)}: a run spread over hosts "
                         "does not take it (docs/cluster.md)", field="--cluster")


def find_default_scenario() -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        cand = base / DEFAULT_SCENARIO
        if cand.is_file():
            return cand
    return Path(DEFAULT_SCENARIO)


def format_headline(result: RunResult) -> str:
    """The lines ``netemu demo`` ends with: where the report is and what it says."""
    lines = []
    if result.report_path is not None:
        lines.append(f"report: {result.report_path}")
    lines.append(f"run directory: {result.run_dir}")
    if result.headline:
        width = max(len(k) for k, _ in result.headline)
        lines += [f"  {k:<{width}}  {v}" for k, v in result.headline]
    elif result.metrics:
        for k in ("delivery_ratio", "query_latency_p50_s", "query_latency_p95_s", "bytes_saved"):
            if result.metrics.get(k) is not None:
                lines.append(f"  {k}: {result.metrics[k]}")
    for e in result.errors:
        lines.append(f"  problem: {e}")
    return "\n".join(lines)


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.cluster:
        _check_cluster_args(args)
    if os.geteuid() != 0:
        raise NetemuError("the emulation builds network namespaces: run as root "
                   "(sudo .venv/bin/netemu ..., or sudo scripts/dev run)")
    scenario = Path(args.scenario) if args.scenario else find_default_scenario()
    opts = RunOptions(
        scenario=scenario,
        out=args.out,
        profile="quick" if args.quick else None,
        start_s=args.start_s,
        duration_s=args.duration_s,
        time_scale=args.time_scale,
        isl=False if args.no_isl else None,
        shaper=args.shaper,
        ip_routing=args.ip_routing,
        apps=not args.no_apps,
        report=not args.no_report,
        run_name=args.run_name,
        mqtt_port=args.mqtt_port,
        view=args.view,
        view_host=args.view_host,
        view_port=args.view_port,
        agent_hosts=args.agent_hosts,
        lead_s=args.lead_s,
        app_grace_s=args.app_grace_s,
    )
    run = ScenarioRun(opts)
    p = run.prepare()
    w = p.window
    print(f"netemu demo: {p.scenario.name}: {len(p.plan.nodes)} nodes, {len(p.plan.contacts)} "
          f"contacts; window {w.start_s:g}-{w.end_s:g} s at x{w.time_scale:g} "
          f"(~{w.wall_s / 60:.1f} min of wall time){'' if w.isl else ', ISLs disabled'}; "
          f"{len(p.apps)} app instances", flush=True)
    result = run.execute_on_cluster(args.cluster) if args.cluster else run.execute()
    print("", flush=True)
    print(format_headline(result), flush=True)
    if p.expectations and result.metrics is not None:
        outcomes = expect_mod.evaluate(p.expectations, result.metrics)
        print("expectations of the scenario (netemu test checks these):")
        print("\n".join("  " + line for line in expect_mod.summary(outcomes).splitlines()))
    if result.interrupted:
        return 130
    return 1 if result.errors else 0
