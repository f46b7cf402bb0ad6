"""Router comparisons: one scenario run with several routers, expectations across them.

A scenario's ``compare:`` section names the routers and what must hold between them::

    compare:
      routers: [cgr, epidemic, spray-and-wait, prophet]
      expect:
        # cgr delivers at least what epidemic does ...
        - {metric: traffic.delivery_ratio, router: cgr, op: ">=", than: epidemic}
        # ... with at most a third of its link bytes
        - {metric: link_bytes_total, router: cgr, op: "<=", than: epidemic, factor: 0.334}

Each item reads ``metric(router) op factor × metric(than)`` (``factor`` 1 by default).
``netemu test`` runs the scenario once per router (its ``expect:`` items hold for every
run), checks these across the runs and prints the routers' figures side by side
(:func:`table`), also written as ``compare.json`` and ``compare.html``.

IP routing modes compare the same way, with ``ip_routing:`` instead of ``routers:``
(``router:`` and ``than:`` then name modes)::

    compare:
      ip_routing: [oracle, frr]
      expect:
        - {metric: probe_loss_ratio, router: frr, op: "<=", than: oracle, factor: 20}
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netemu.analysis.expect import OPS, Expectation, Outcome, lookup, validate
from netemu.config import Fields, suggest
from netemu.errors import InputError
from netemu.plan.iprouting import parse_ip_routing_option

SECTION_KEYS = ("routers", "ip_routing", "expect", "metrics")
ITEM_KEYS = ("metric", "router", "op", "than", "factor")
DEFAULT_METRICS = ("traffic.sent", "traffic.delivered", "traffic.delivery_ratio",
                   "traffic.latency_s.p50", "traffic.latency_s.p95", "link_bytes_total",
                   "bundles_expired", "node_counters.by_kind.satellite.stored_bundles_peak")
"""The figures shown side by side when the section names none (``metrics:``)."""
IP_DEFAULT_METRICS = ("probe_loss_ratio", "probe_loss_windows", "probe_outage_max_s",
                      "ip_convergence_p50_s", "ip_convergence_p95_s", "ip_unconverged",
                      "ip_path_stretch_p95", "ip_control_bytes_per_link_s", "ip_routes_mean")
"""The same for IP routing modes."""


@dataclass(frozen=True)
class CrossCheck:
    metric: str
    router: str
    op: str
    than: str
    factor: float = 1.0
    source: str | None = None
    line: int | None = None
    field: str | None = None

    @property
    def text(self) -> str:
        f = "" if self.factor == 1.0 else f"{self.factor:g} × "
        return f"{self.metric}: {self.router} {self.op} {f}{self.than}"


@dataclass(frozen=True)
class Comparison:
    routers: tuple[str, ...]  # the routers, or the IP routing modes (axis "ip_routing")
    checks: tuple[CrossCheck, ...]
    metrics: tuple[str, ...]
    axis: str = "routing"

    def dirname(self, variant: str) -> str:
        """The variant's run directory name (a plug-in's colons and a daemon's slash, as in
        frr/isis, replaced)."""
        return variant.replace(":", "_").replace("/", "-")


def _canonical(name: str) -> str:
    from netemu.routing import get_router

    return str(get_router(name).name)


def parse(section: Fields) -> Comparison | None:
    """The ``compare:`` section (None without one); errors name file, line and field."""
    if section.is_none():
        return None
    section.check_keys(SECTION_KEYS)
    axis = "ip_routing" if "ip_routing" in section else "routing"
    key = "ip_routing" if axis == "ip_routing" else "routers"
    if "routers" in section and "ip_routing" in section:
        raise section.error("compare routers or ip_routing modes, not both", "ip_routing")
    if key not in section:
        raise section.error("name the routers: (or ip_routing: modes) to compare", "routers")
    canonical = _canonical if axis == "routing" else _ip_mode
    routers: list[str] = []
    for item in section.items(key, non_empty=True):
        if not isinstance(item.value, str):
            raise item.error(f"expected a name, got {item.value!r}")
        try:
            name = canonical(item.value)
        except InputError as e:
            raise item.error(e.message) from None
        if name in routers:
            raise item.error(f"{name!r} is listed twice")
        routers.append(name)
    if len(routers) < 2:
        raise section.error(f"name at least two {key} to compare", key)
    checks = []
    for item in section.items("expect"):
        item.check_keys(ITEM_KEYS, required=("metric", "router", "op", "than"))
        metric = item.string("metric", required=True)
        op = item.string("op", required=True)
        if op not in OPS:
            raise item.error(f"op {op!r} is not one of {', '.join(OPS)}", "op")
        pair = []
        for key in ("router", "than"):
            given = item.string(key, required=True)
            assert given is not None
            try:
                canon = canonical(given)
            except InputError:
                canon = given
            if canon not in routers:
                raise item.error(f"{given!r} is not one of the routers compared "
                                 f"({', '.join(routers)}){suggest(given, routers)}", key)
            pair.append(canon)
        factor = item.number("factor", default=1.0, lo=0.0, lo_open=True)
        assert metric is not None and op is not None and factor is not None
        checks.append(CrossCheck(metric, pair[0], op, pair[1], factor, item.source,
                                 item.line, item.path))
    shown = section.string_list("metrics", default=DEFAULT_METRICS if axis == "routing"
                                else IP_DEFAULT_METRICS)
    validate([Expectation(c.metric, ">=", 0.0, c.source, c.line, c.field) for c in checks]
             + [Expectation(m, ">=", 0.0, section.source, section.line_of("metrics"),
                            section.field("metrics")) for m in shown])
    return Comparison(tuple(routers), tuple(checks), tuple(shown), axis)


def _ip_mode(name: str) -> str:
    """An IP routing mode as ``--ip-routing`` takes it (checked)."""
    parse_ip_routing_option(name, option="compare.ip_routing")
    return name


def _number(metrics: Mapping[str, Any] | None, name: str) -> float | None:
    if metrics is None:
        return None
    found, v = lookup(metrics, name)
    if not found or isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def evaluate(cmp: Comparison, by_router: Mapping[str, Mapping[str, Any] | None]
             ) -> list[Outcome]:
    """Each cross check on the routers' metrics (None: that run gave none)."""
    out = []
    for c in cmp.checks:
        exp = Expectation(c.metric, c.op, c.factor, c.source, c.line, c.field, label=c.text)
        a, b = _number(by_router.get(c.router), c.metric), _number(by_router.get(c.than),
                                                                    c.metric)
        if a is None or b is None:
            missing = c.router if a is None else c.than
            out.append(Outcome(exp, a, False, f"{c.text}: not measured in the {missing} run"))
            continue
        ok = OPS[c.op](a, c.factor * b)
        out.append(Outcome(exp, a, ok, f"{c.text}: {c.router} {a:.6g}, {c.than} {b:.6g}"
                           + (f" (× {c.factor:g} = {c.factor * b:.6g})" if c.factor != 1 else "")
                           + f" — {'ok' if ok else 'FAILED'}"))
    return out


def table(cmp: Comparison, by_router: Mapping[str, Mapping[str, Any] | None]
          ) -> list[list[str]]:
    """Rows of the side-by-side table: a header, then one row per metric shown."""
    rows = [["metric", *cmp.routers]]
    for m in dict.fromkeys([*cmp.metrics, *(c.metric for c in cmp.checks)]):
        cells = []
        for r in cmp.routers:
            v = _number(by_router.get(r), m)
            cells.append("—" if v is None else f"{v:.4g}")
        rows.append([m, *cells])
    return rows


def text_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                     for r in rows)


def to_obj(cmp: Comparison, by_router: Mapping[str, Mapping[str, Any] | None],
           outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """``compare.json``: the routers' figures and the cross checks' outcomes."""
    return {"routers": list(cmp.routers),
            "metrics": {m: {r: _number(by_router.get(r), m) for r in cmp.routers}
                        for m in dict.fromkeys([*cmp.metrics, *(c.metric for c in cmp.checks)])},
            "outcomes": [{"check": o.expectation.text, "passed": o.passed, "message": o.message}
                         for o in outcomes]}


def to_html(title: str, rows: Sequence[Sequence[str]], outcomes: Sequence[Outcome],
            links: Mapping[str, str]) -> str:
    """``compare.html``: the table, the checks, and a link to each router's run."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0][:1]) + "".join(
        f'<th><a href="{html.escape(links.get(c, ""))}">{html.escape(c)}</a></th>'
        for c in rows[0][1:])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows[1:])
    checks = "".join(f"<li>{'PASS' if o.passed else 'FAIL'} {html.escape(o.message)}</li>"
                     for o in outcomes)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>'
            f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f'<table border="1" cellpadding="4"><tr>{head}</tr>{body}</table>'
            f"<h2>Checks across routers</h2><ul>{checks}</ul></body></html>\n")


__all__ = ["Comparison", "CrossCheck", "evaluate", "parse", "table", "text_table", "to_html",
           "to_obj"]
