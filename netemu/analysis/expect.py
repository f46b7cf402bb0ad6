"""A scenario's ``expect:`` list, checked against a run's metrics; JUnit XML for CI.

Each expectation is ``{metric: NAME, op: OP, value: NUMBER}`` with OP one of ``>=``,
``<=``, ``>``, ``<``, ``==``, ``!=``. NAME is a key of ``metrics.json`` (see
:data:`netemu.analysis.metrics.METRIC_DOCS`) or a dotted path into it
(``link_use.sat-1->gs-a.utilisation``, ``traffic.latency_vs_projection_s.p95``,
``traffic.by_name.gateways.delivery_ratio``,
``node_counters.by_kind.satellite.stored_bundles_peak``). An expectation whose metric was not measured in
the run (no data: ``null``) fails, saying so. A name that is not a metric at all is a
user error, reported with the closest known names, before anything runs when
:func:`validate` is used.
"""

from __future__ import annotations

import difflib
import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from netemu.analysis.counters import expect_paths as counter_paths
from netemu.analysis.metrics import METRIC_DOCS
from netemu.analysis.traffic import expect_paths as traffic_paths
from netemu.config import Fields
from netemu.errors import InputError
from netemu.runtime.rundir import RunDir

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9),
    "!=": lambda a, b: not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9),
}
_DETAIL_ROOTS = ("link_use", "apps", "eo_filter_by_node", "faults", "ip_convergence_by_link")
# Objects whose paths are known in advance; a NAME/KIND level stands for any key there.
_SCHEMA_ROOTS = {"traffic": "NAME", "node_counters": "KIND"}


def schema_paths() -> list[str]:
    """The dotted paths into ``traffic`` and ``node_counters`` (with NAME / KIND)."""
    return [*traffic_paths(), *counter_paths()]


def _schema_forms(name: str) -> list[str]:
    """``name`` with its free level (an entry name, a node kind: it may hold dots) written
    as in :func:`schema_paths`, each way it can be read."""
    parts = name.split(".")
    root = _SCHEMA_ROOTS.get(parts[0])
    if root is None or len(parts) < 4 or parts[1] not in ("by_name", "by_kind"):
        return [name]
    return [".".join([*parts[:2], root, *parts[-tail:]])
            for tail in (1, 2) if len(parts) - tail > 2]


@dataclass(frozen=True)
class Expectation:
    metric: str
    op: str
    value: float
    source: str | None = None
    line: int | None = None
    field: str | None = None
    label: str | None = None  # the test's name when not "metric op value" (baselines)

    @property
    def text(self) -> str:
        return self.label or f"{self.metric} {self.op} {self.value:g}"


@dataclass(frozen=True)
class Outcome:
    expectation: Expectation
    measured: float | None
    passed: bool
    message: str
    skipped: bool = False  # nothing to compare with (a baseline check without a baseline)


EXPECT_KEYS = ("metric", "op", "value", "name", "baseline")


def parse(section: Fields | Any, *, source: str | None = None) -> list[Expectation]:
    """Validate a scenario's ``expect:`` section (a list of mappings); errors name the
    file, line and item (``expect[2].op``).

    ``section`` is the section as :class:`~netemu.config.Fields`
    (``Scenario.section("expect")``) or its raw value (lines come from a
    :mod:`netemu.config.yamlfile` document; ``source`` names where it came from).
    """
    sec = section if isinstance(section, Fields) else Fields(
        section, source=source or "scenario", path="expect")
    if sec.is_none():
        return []
    out = []
    for item in sec.items():
        # an item with baseline: alone is a baseline check (netemu.analysis.baseline)
        alone = "baseline" in item and "op" not in item and "value" not in item
        item.check_keys(EXPECT_KEYS, required=("metric",) if alone else ("metric", "op", "value"))
        if alone:
            continue
        metric = item.string("metric", required=True)
        if not metric:
            raise item.error("metric must be a name", "metric")
        op = item.string("op", required=True)
        if op not in OPS:
            raise item.error(f"op {op!r} is not one of {', '.join(OPS)}", "op")
        value = item.number("value", required=True)
        assert op is not None and value is not None
        out.append(Expectation(metric, op, value, item.source, item.line, item.path))
    return out


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    if not close:
        close = [k for k in known if name.split("_")[0] in k][:3]
    return f"; did you mean {', '.join(close)}?" if close else ""


def unknown_metric(exp: Expectation, known: Sequence[str], *,
                   shown: str | None = None) -> InputError:
    return InputError(
        f"unknown metric {shown or exp.metric!r}{_suggest(exp.metric, known)} "
        f"(known metrics: see docs/report.md or metrics.json)",
        source=exp.source, line=exp.line, field=f"{exp.field}.metric" if exp.field else "metric",
    )


def validate(expectations: Sequence[Expectation]) -> None:
    """Refuse names that can never be metrics, before a run starts."""
    schema = schema_paths()
    for e in expectations:
        if e.metric in METRIC_DOCS or e.metric.split(".")[0] in _DETAIL_ROOTS:
            continue
        if e.metric.split(".")[0] in _SCHEMA_ROOTS:
            forms = _schema_forms(e.metric)
            if any(f in schema for f in forms):
                continue
            raise unknown_metric(Expectation(forms[0], e.op, e.value, e.source,
                                             e.line, e.field), schema, shown=e.metric)
        raise unknown_metric(e, sorted(METRIC_DOCS))


def lookup(metrics: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """(found, value) of ``name``: a top-level key or a dotted path into the metrics."""
    if name in metrics:
        return True, metrics[name]
    root, _, rest = name.partition(".")
    node: Any = metrics.get(root)
    if node is None or not rest:
        return False, None
    # keys may contain dots? link keys do not; walk greedily, longest key first
    while rest:
        if not isinstance(node, Mapping):
            return False, None
        for k in sorted(node, key=len, reverse=True):
            if rest == k or rest.startswith(k + "."):
                node = node[k]
                rest = rest[len(k) + 1 :]
                break
        else:
            return False, None
    return True, node


def evaluate(expectations: Sequence[Expectation], metrics: Mapping[str, Any]) -> list[Outcome]:
    """Check each expectation; an unknown metric raises :class:`InputError`."""
    known = sorted(set(METRIC_DOCS) | {k for k, v in metrics.items() if not isinstance(v, (dict, list))})
    out = []
    for e in expectations:
        found, v = lookup(metrics, e.metric)
        if not found and e.metric not in METRIC_DOCS:
            raise unknown_metric(e, known)
        if v is None:
            out.append(Outcome(e, None, False, f"{e.text}: not measured in this run (no data)"))
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            out.append(Outcome(e, None, False, f"{e.text}: {e.metric} is not a number ({v!r})"))
            continue
        ok = OPS[e.op](float(v), e.value)
        verdict = "ok" if ok else "FAILED"
        out.append(Outcome(e, float(v), ok, f"{e.text}: measured {v:.6g} — {verdict}"))
    return out


def summary(outcomes: Sequence[Outcome]) -> str:
    """Human summary, one line per expectation, then a count."""
    lines = [("SKIP  " if o.skipped else "PASS  " if o.passed else "FAIL  ") + o.message
             for o in outcomes]
    failed = sum(not o.passed for o in outcomes)
    skipped = sum(o.skipped for o in outcomes)
    lines.append(f"{len(outcomes) - failed - skipped} passed, {failed} failed"
                 + (f", {skipped} skipped" if skipped else ""))
    return "\n".join(lines)


def junit_xml(outcomes: Sequence[Outcome], *, suite: str, time_s: float = 0.0,
              errors: Sequence[str] = (), notes: Sequence[str] = ()) -> str:
    """JUnit XML (one testsuite, one testcase per expectation); ``errors`` adds error
    test cases (the run itself failed); ``notes`` go to the suite's system-out."""
    failures = sum(not o.passed for o in outcomes)
    skipped = sum(o.skipped for o in outcomes)
    cases = []
    for o in outcomes:
        name = quoteattr(o.expectation.text)
        body = ""
        if o.skipped:
            body = f"<skipped message={quoteattr(o.message)}/>"
        elif not o.passed:
            body = (f"<failure message={quoteattr(o.message)} type=\"expectation\">"
                    f"{escape(o.message)}</failure>")
        measured = "" if o.measured is None else f"<system-out>measured {o.measured:.6g}</system-out>"
        cases.append(f'  <testcase classname={quoteattr(suite)} name={name} time="0">'
                     f"{body}{measured}</testcase>")
    for i, msg in enumerate(errors):
        cases.append(f'  <testcase classname={quoteattr(suite)} name="run-{i}" time="0">'
                     f"<error message={quoteattr(msg)}>{escape(msg)}</error></testcase>")
    if notes:
        cases.append(f"  <system-out>{escape(chr(10).join(notes))}</system-out>")
    skip_attr = f' skipped="{skipped}"' if skipped else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<testsuites tests=\"{len(outcomes) + len(errors)}\" failures=\"{failures}\" "
        f"errors=\"{len(errors)}\">\n"
        f" <testsuite name={quoteattr(suite)} tests=\"{len(outcomes) + len(errors)}\" "
        f"failures=\"{failures}\" errors=\"{len(errors)}\"{skip_attr} time=\"{time_s:.3f}\">\n"
        + "\n".join(cases)
        + "\n </testsuite>\n</testsuites>\n"
    )


def results_obj(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Outcomes as JSON (``<run>/expect.json``, which the report shows)."""
    return {
        "passed": all(o.passed for o in outcomes),
        "outcomes": [
            {"expectation": o.expectation.text, "metric": o.expectation.metric,
             "op": o.expectation.op, "value": o.expectation.value, "measured": o.measured,
             "passed": o.passed, "message": o.message}
            for o in outcomes
        ],
    }


def write_results(run_dir: str | Path, outcomes: Sequence[Outcome], *, suite: str,
                  time_s: float = 0.0) -> tuple[Path, Path]:
    """Write ``<run>/expect.json`` and ``<run>/junit.xml``; returns both paths."""
    rd = RunDir(Path(run_dir))
    j = rd.expect_json
    j.write_text(json.dumps(results_obj(outcomes), indent=1) + "\n")
    x = rd.junit_xml
    x.write_text(junit_xml(outcomes, suite=suite, time_s=time_s))
    return j, x
