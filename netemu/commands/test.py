"""``netemu test SCENARIO...``: run scenarios and check their ``expect:`` sections.

Each scenario runs as an emulation (its ``emulation.test`` profile when it has one, else
its ``emulation:`` window, shortened with --duration-s); its metrics are checked against
its expectations; a summary is printed and JUnit XML written (--junit). The exit status
is 1 when any expectation failed or a run failed, 0 when all passed.
"""

from __future__ import annotations

import argparse
import os
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

from netemu.analysis import expect as expect_mod
from netemu.errors import NetemuError
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
    root.set("tests", str(tests))
    root.set("failures", str(failures))
    root.set("errors", str(errors))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _cmd_test(args: argparse.Namespace) -> int:
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
            time_scale=args.time_scale, report=not args.no_report,
            run_name=f"{args.run_name}{i}" if args.run_name and len(args.scenarios) > 1
            else args.run_name))
        p = run.prepare()
        if not p.expectations:
            print(f"netemu test: {sc}: no expect: section (nothing to check; it still runs)")
        runs.append((sc, run, p))
    docs, failed_total, problems = [], 0, 0
    for sc, run, p in runs:
        name = p.scenario.name
        run.opts.out = parent / name
        print(f"== {sc}: {len(p.expectations)} expectations; window "
              f"{p.window.start_s:g}-{p.window.end_s:g} s at x{p.window.time_scale:g}", flush=True)
        t0 = time.monotonic()
        errors: list[str] = []
        outcomes = []
        try:
            result = run.execute()
            errors += result.errors
            if result.metrics is not None:
                outcomes = expect_mod.evaluate(p.expectations, result.metrics)
            else:
                errors.append("no metrics: the run did not produce any")
        except NetemuError as e:
            errors.append(str(e))
        except Exception as e:  # noqa: BLE001 - one broken run must not hide the others' verdicts
            traceback.print_exc()
            errors.append(f"{type(e).__name__}: {e}")
        dt = time.monotonic() - t0
        print(expect_mod.summary(outcomes) if outcomes else "(no expectations checked)")
        for err in errors:
            print(f"ERROR {err}")
        failed = sum(not o.passed for o in outcomes)
        failed_total += failed
        problems += len(errors)
        docs.append(expect_mod.junit_xml(outcomes, suite=name, time_s=dt, errors=errors))
        if run.opts.out is not None and run.opts.out.is_dir():
            (run.opts.out / "junit.xml").write_text(docs[-1])
    merged = _merge_junit(docs)
    if args.junit:
        args.junit.parent.mkdir(parents=True, exist_ok=True)
        args.junit.write_text(merged)
        print(f"JUnit XML: {args.junit}")
    verdict = "FAILED" if failed_total or problems else "passed"
    print(f"netemu test: {len(runs)} scenario(s), {failed_total} failed expectation(s), "
          f"{problems} run error(s): {verdict}")
    return 1 if failed_total or problems else 0
