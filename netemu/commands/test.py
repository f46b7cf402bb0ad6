"""``netemu test SCENARIO...``: run scenarios and check their ``expect:`` sections.

Each scenario runs as an emulation (its ``emulation.test`` profile when it has one, else
its ``emulation:`` window, shortened with --duration-s); its metrics are checked against
its expectations, and with --baseline DIR against a stored run's within the tolerances
of its ``baseline:`` items (--update-baseline stores this run instead); a summary is
printed and JUnit XML written (--junit). -j N runs N scenarios at once; --cluster ADDRESS
runs them over the hosts of a Ray cluster, one per host at a time. The exit status
is 1 when any expectation failed or a run failed, 0 when all passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any

from netemu.analysis import baseline as baseline_mod
from netemu.analysis import compare as compare_mod
from netemu.analysis import expect as expect_mod
from netemu.commands._view import add_view_args
from netemu.errors import InputError, NetemuError
from netemu.run.runner import RunOptions, ScenarioRun


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "test", help="run scenarios and check their expect: sections (JUnit XML for CI)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO", type=Path)
    p.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML here")
    p.add_argument("--out", type=Path,
                   help="parent of the run directories (default: runs/test-<time>)")
    p.add_argument("--duration-s", type=float, help="override every scenario's window length")
    p.add_argument("--time-scale", type=float, help="override every scenario's time scale")
    p.add_argument("--no-report", action="store_true", help="skip the HTML reports")
    p.add_argument("--run-name", help="short run name (1-8 lowercase letters/digits; names the "
                   "namespaces and MQTT topics); default: random")
    p.add_argument("--routing", metavar="ALGORITHM",
                   help="route with this algorithm instead of the scenario's routing:")
    p.add_argument("--ip-routing", metavar="MODE",
                   help="IP routes: oracle, none, frr, bird, frr/ospf6, frr/isis or plugin:MODULE:FUNCTION instead of the "
                   "scenario's ip_routing:")
    p.add_argument("--baseline", type=Path, metavar="DIR",
                   help="compare with the baselines in DIR (<scenario name>.json) within "
                   "the tolerances of the expect: items with baseline:")
    p.add_argument("--update-baseline", action="store_true",
                   help="write this run's baseline into --baseline DIR instead of comparing")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="run N scenarios at once (each in its own netemu process)")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run the scenarios on the hosts of this Ray cluster (auto: the one "
                   "this machine is a node of), one at a time on each; every host needs "
                   "them at the same paths (docs/cluster.md)")
    add_view_args(p)
    p.set_defaults(func=_cmd_test)


def _merge_junit(docs: list[str]) -> str:
    root = ET.Element("testsuites")
    tests = failures = errors = 0
    for d in docs:
        for suite in ET.fromstring(d).iter("testsuite"):
            root.append(suite)
            tests += int(suite.get("tests", 0))
            failures += int(suite.get("failures", 0))
            errors += int(suite.get("errors", 0))
    skipped = sum(int(s.get("skipped", 0)) for s in root.iter("testsuite"))
    if skipped:
        root.set("skipped", str(skipped))
    root.set("tests", str(tests))
    root.set("failures", str(failures))
    root.set("errors", str(errors))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _cmd_test(args: argparse.Namespace) -> int:
    if args.update_baseline and args.baseline is None:
        raise InputError("--update-baseline needs --baseline DIR (where to write it)")
    if args.jobs < 1:
        raise InputError(f"-j must be ≥ 1, got {args.jobs}")
    if args.view and args.jobs > 1:
        raise InputError("--view shows one run at a time: leave out -j")
    if args.cluster and (args.view or args.jobs > 1):
        raise InputError("--cluster runs one scenario per host at a time: leave out --view "
                         "and -j", field="--cluster")
    if os.geteuid() != 0:
        raise NetemuError("the emulation builds network namespaces: run as root "
                   "(sudo .venv/bin/netemu ..., or sudo scripts/dev run)")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    parent = args.out or Path.cwd() / "runs" / f"test-{stamp}"
    # check every scenario before running any: a typo in the third should not cost two runs
    runs = []
    for i, sc in enumerate(args.scenarios):
        run = ScenarioRun(RunOptions(
            scenario=sc, profile="test", duration_s=args.duration_s,
            time_scale=args.time_scale, report=not args.no_report, routing=args.routing,
            view=args.view, view_host=args.view_host, view_port=args.view_port,
            ip_routing=args.ip_routing,
            run_name=f"{args.run_name}{i}" if args.run_name and len(args.scenarios) > 1
            else args.run_name))
        p = run.prepare()
        checks = baseline_mod.parse(p.scenario.section("expect"))
        cmp = compare_mod.parse(p.scenario.section("compare"))
        if cmp is not None and args.routing is not None and cmp.axis == "routing":
            print(f"netemu test: {sc}: --routing {args.routing}: its compare: section is left out")
            cmp = None
        if cmp is not None and args.ip_routing is not None and cmp.axis == "ip_routing":
            print(f"netemu test: {sc}: --ip-routing {args.ip_routing}: its compare: section "
                  "is left out")
            cmp = None
        if not p.expectations and not checks and cmp is None:
            print(f"netemu test: {sc}: no expect: section (nothing to check; it still runs)")
        runs.append((sc, run, p, checks, cmp))
    if args.cluster:
        return _on_cluster(args, parent, [sc for sc, *_ in runs])
    if args.jobs > 1 and len(runs) > 1:
        return _parallel(args, parent, [sc for sc, *_ in runs])
    docs, failed_total, problems = [], 0, 0
    for sc, run, p, checks, cmp in runs:
        name = p.scenario.name
        if cmp is None:
            run.opts.out = parent / name
            done = [_run_one(args, sc, run, p, checks, suite=name, baseline_name=name)]
        else:
            done = _run_routers(args, sc, run, p, checks, cmp, parent / name)
        for d in done:
            docs.append(d.doc)
            failed_total += d.failed
            problems += d.problems
    return _report(args, docs, len(runs), failed_total, problems)


@dataclass
class Done:
    """One run's verdict: its JUnit suite, failed checks, errors and metrics."""

    doc: str
    failed: int
    problems: int
    metrics: dict[str, Any] | None = None


def _run_one(args: argparse.Namespace, sc: Path, run: ScenarioRun, p: Any, checks: list[Any],
             *, suite: str, baseline_name: str) -> Done:
    """Run one scenario (into ``run.opts.out``) and check it."""
    print(f"== {sc}: {len(p.expectations)} expectations, {len(checks)} baseline checks; "
          f"routing {p.routing['algorithm']}; window "
          f"{p.window.start_s:g}-{p.window.end_s:g} s at x{p.window.time_scale:g}", flush=True)
    t0 = time.monotonic()
    errors: list[str] = []
    notes: list[str] = []
    outcomes = []
    metrics = None
    try:
        result = run.execute()
        errors += result.errors
        metrics = result.metrics
        if metrics is not None:
            outcomes = expect_mod.evaluate(p.expectations, metrics)
            outcomes += _baseline(args, sc, p, checks, metrics, errors, notes, baseline_name)
        else:
            errors.append("no metrics: the run did not produce any")
    except NetemuError as e:
        errors.append(str(e))
    except Exception as e:  # noqa: BLE001 - one broken run must not hide the others' verdicts
        traceback.print_exc()
        errors.append(f"{type(e).__name__}: {e}")
    dt = time.monotonic() - t0
    for note in notes:
        print(f"NOTE  {note}")
    print(expect_mod.summary(outcomes) if outcomes else "(no expectations checked)")
    for err in errors:
        print(f"ERROR {err}")
    doc = expect_mod.junit_xml(outcomes, suite=suite, time_s=dt, errors=errors, notes=notes)
    if run.opts.out is not None and run.opts.out.is_dir():
        (run.opts.out / "junit.xml").write_text(doc)
    return Done(doc, sum(not o.passed for o in outcomes), len(errors), metrics)


def _run_routers(args: argparse.Namespace, sc: Path, run: ScenarioRun, p: Any,
                 checks: list[Any], cmp: Any, out: Path) -> list[Done]:
    """The scenario once per router of its ``compare:`` section (``out/<router>``), then
    the checks across them, and the routers' figures side by side."""
    done: list[Done] = []
    by_router: dict[str, dict[str, Any] | None] = {}
    for k, router in enumerate(cmp.routers):
        run_name = f"{run.opts.run_name[:7]}{k}" if run.opts.run_name else None
        if cmp.axis == "ip_routing":  # prepared again: the mode decides what is checked
            opts = dc_replace(run.opts, ip_routing=router, out=out / cmp.dirname(router),
                              run_name=run_name)
            variant = ScenarioRun(opts)
            variant.prepare()
        else:
            routing = p.routing if p.routing["algorithm"] == router else {"algorithm": router}
            opts = dc_replace(run.opts, routing=router, out=out / router, run_name=run_name)
            variant = ScenarioRun(opts)
            variant.prepared = dc_replace(p, routing=routing)
        assert variant.prepared is not None
        d = _run_one(args, sc, variant, variant.prepared, checks,
                     suite=f"{p.scenario.name}[{router}]",
                     baseline_name=f"{p.scenario.name}--{cmp.dirname(router)}")
        done.append(d)
        by_router[router] = d.metrics
    outcomes = compare_mod.evaluate(cmp, by_router)
    rows = compare_mod.table(cmp, by_router)
    what = "IP routing modes" if cmp.axis == "ip_routing" else "routers"
    print(f"== {sc}: {len(cmp.routers)} {what} side by side")
    print(compare_mod.text_table(rows))
    print(expect_mod.summary(outcomes) if outcomes else "(no checks across routers)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(
        compare_mod.to_obj(cmp, by_router, outcomes), indent=1) + "\n")
    links = {r: f"{cmp.dirname(r)}/report/index.html" for r in cmp.routers}
    (out / "compare.html").write_text(compare_mod.to_html(
        f"{p.scenario.name}: {what} compared", rows, outcomes, links))
    done.append(Done(expect_mod.junit_xml(outcomes, suite=f"{p.scenario.name}[routers]"),
                     sum(not o.passed for o in outcomes), 0))
    return done


def _report(args: argparse.Namespace, docs: list[str], n_runs: int, failed_total: int,
            problems: int) -> int:
    """Write the merged JUnit XML, print the verdict; the exit status."""
    merged = _merge_junit(docs)
    if args.junit:
        args.junit.parent.mkdir(parents=True, exist_ok=True)
        args.junit.write_text(merged)
        print(f"JUnit XML: {args.junit}")
    verdict = "FAILED" if failed_total or problems else "passed"
    print(f"netemu test: {n_runs} scenario(s), {failed_total} failed expectation(s), "
          f"{problems} run error(s): {verdict}")
    return 1 if failed_total or problems else 0


def _baseline(args: argparse.Namespace, sc: Path, p: Any, checks: list[Any],
              metrics: dict[str, Any], errors: list[str], notes: list[str],
              name: str) -> list[Any]:
    """With --baseline: the baseline checks' outcomes, or (--update-baseline) the
    baseline written; ``notes`` say how the baseline's run differs from this one."""
    if args.baseline is None:
        if checks:
            notes.append(f"{len(checks)} baseline check(s) not run (no --baseline DIR)")
        return []
    routing = p.routing["algorithm"]
    if args.update_baseline:
        if errors:
            errors.append("baseline not written: the run had errors")
            return []
        made = baseline_mod.make(metrics, scenario=name, scenario_path=sc,
                                 routing=routing, checks=checks)
        notes.append(f"baseline written: {baseline_mod.write(args.baseline, made)}")
        return []
    stored = baseline_mod.load(args.baseline, name)
    if stored is not None:
        notes += baseline_mod.differences(stored, scenario_path=sc, routing=routing)
    return baseline_mod.compare(checks, stored, metrics, where=f" in {args.baseline}")


def _child_flags(args: argparse.Namespace, i: int) -> list[str]:
    """The options a scenario's own ``netemu test`` process gets (-j, --cluster)."""
    argv: list[str] = []
    for flag, value in (("--duration-s", args.duration_s), ("--time-scale", args.time_scale),
                        ("--routing", args.routing), ("--ip-routing", args.ip_routing),
                        # absolute: a host of --cluster runs it from another directory
                        ("--baseline", args.baseline.resolve() if args.baseline else None),
                        ("--run-name", f"{args.run_name}{i}" if args.run_name else None)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--no-report"] if args.no_report else []
    argv += ["--update-baseline"] if args.update_baseline else []
    return argv


def _parallel(args: argparse.Namespace, parent: Path, scenarios: list[Path]) -> int:
    """Each scenario in its own ``netemu test`` process, ``args.jobs`` at a time; their
    output goes to ``<out>/<scenario file>.log`` (printed as each ends), their JUnit is
    merged."""
    parent.mkdir(parents=True, exist_ok=True)

    def one(i: int, sc: Path) -> tuple[Path, int, str | None]:
        junit = parent / f"{sc.stem}.junit.xml"
        log = parent / f"{sc.stem}.log"
        argv = [sys.executable, "-m", "netemu", "test", str(sc), "--out", str(parent),
                "--junit", str(junit), *_child_flags(args, i)]
        with open(log, "wb") as out:
            rc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL).returncode
        text = log.read_text(errors="replace")
        print(f"== {sc} (exit {rc}; output: {log})\n{text[-3000:]}", flush=True)
        return sc, rc, junit.read_text() if junit.exists() else None

    print(f"netemu test: {len(scenarios)} scenarios, {args.jobs} at a time", flush=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda a: one(*a), enumerate(scenarios)))
    return _collect(args, results)


def _on_cluster(args: argparse.Namespace, parent: Path, scenarios: list[Path]) -> int:
    """Each scenario as a ``netemu test`` process on a host of the Ray cluster, one at a
    time on each host (netemu.run.cluster_suite); run directories and logs under
    ``parent``, JUnit merged."""
    from netemu.run.cluster_suite import run_suite

    results = run_suite(args.cluster, scenarios,
                        [_child_flags(args, i) for i in range(len(scenarios))], parent,
                        echo=lambda s: print(s, flush=True))
    return _collect(args, results)


def _collect(args: argparse.Namespace,
             results: Sequence[tuple[Path, int | None, str | None]]) -> int:
    """The scenario processes' JUnit merged (one that wrote none is an error)."""
    docs, problems, failed = [], 0, 0
    for sc, rc, doc in results:
        if doc is None:
            problems += 1
            docs.append(expect_mod.junit_xml([], suite=sc.stem, errors=[
                f"netemu test {sc} exited with status {rc} and wrote no JUnit XML"]))
            continue
        docs.append(doc)
        for suite in ET.fromstring(doc).iter("testsuite"):
            failed += int(suite.get("failures", 0))
            problems += int(suite.get("errors", 0))
    return _report(args, docs, len(results), failed, problems)
