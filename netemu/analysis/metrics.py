"""Figures of a run, computed from its directory: ``metrics.json``.

Sources (all optional; a figure whose source is missing is ``null``, never invented):

- ``events.jsonl`` — telemetry as recorded: ``bundle/<node>`` events (sent, received,
  forwarded, delivered, deleted, expired), ``link/<a>/<b>`` events (up, down, update) and
  ``app/<app>/<node>`` events;
- ``plan.json`` — the contact plan the run used (link capacity, when each link was up);
- ``apps/<app>/<node>/result.json`` and ``usage.json`` — what each app measured itself
  and what the runner measured of it;
- ``captures/*.pcap`` with ``captures/*.json`` sidecars — packets seen on links
  (``netemu capture``), for traffic outside contacts;
- ``traffic.json`` and ``agents/<node>/traffic.jsonl`` — the traffic flows and the
  bundles the agents sent and delivered for them;
- ``counters/<node>`` events — the agents' counters, summed per node kind.

Top-level keys with scalar values are the metrics that ``expect:`` can test
(:data:`METRIC_DOCS` lists them with their meaning); ``link_use``, ``apps`` and
``query_latencies_s`` carry the detail the report draws; ``traffic`` (the scenario's
traffic flows, :mod:`netemu.analysis.traffic`) and ``node_counters`` (the agents'
counters per node kind, :mod:`netemu.analysis.counters`) are objects whose numbers
``expect:`` reaches by dotted path (``traffic.latency_vs_projection_s.p95``).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from netemu.analysis.counters import counter_metrics, scan
from netemu.analysis.iproute import DOCS as IPROUTE_DOCS
from netemu.analysis.iproute import iproute_metrics
from netemu.analysis.stats import percentile
from netemu.analysis.traffic import traffic_metrics, write_csv
from netemu.errors import InputError
from netemu.runtime.rundir import RunDir

METRIC_DOCS: dict[str, str] = {
    "duration_s": "scenario seconds covered by the recorded events",
    "bundles_created": "distinct bundles seen in bundle events",
    "bundles_delivered": "distinct bundles delivered at their destination",
    "bundles_expired": "distinct bundles that expired before delivery",
    "bundles_deleted": "distinct bundles deleted (other reasons) before delivery",
    "bundles_in_flight": "bundles neither delivered, expired nor deleted at the end",
    "bundle_events_dropped": "bundle events the recorder left out of events.jsonl (its cap)",
    "delivery_ratio": "bundles_delivered / bundles_created",
    "bundle_latency_p50_s": "median first-seen → delivered time of delivered bundles",
    "bundle_latency_p95_s": "95th percentile first-seen → delivered time",
    "queries_sent": "orbit-query queries sent by ground clients",
    "queries_answered": "orbit-query answers received",
    "query_answer_ratio": "queries_answered / queries_sent",
    "query_latency_p50_s": "median query → answer latency (scenario s)",
    "query_latency_p95_s": "95th percentile query → answer latency (scenario s)",
    "query_latency_max_s": "largest query → answer latency (scenario s)",
    "query_network_p95_s": "95th percentile of a query's network time, both ways (scenario s)",
    "query_queueing_p95_s": "95th percentile of a query's wait for the node's compute",
    "query_compute_p95_s": "95th percentile of a query's modelled compute time",
    "compute_requests": "inference requests on the nodes' modelled compute (all apps)",
    "compute_late_requests": "requests answered late because the host could not keep up "
                             "at the time scale",
    "tiles_captured": "tiles eo-filter captured on all satellites",
    "tiles_detected": "tiles eo-filter flagged as containing a vessel",
    "bytes_captured": "raw tile bytes captured onboard",
    "bytes_sent": "bundle payload bytes eo-filter handed to DTN",
    "bytes_saved": "bytes_captured - bytes_sent",
    "downlink_saved_fraction": "1 - bytes_sent / bytes_captured",
    "tiles_received": "tiles stored by downlink on ground stations",
    "downlink_bytes_received": "payload bytes downlink received",
    "link_bytes_total": "bytes forwarded over all links (bundle events)",
    "link_utilisation_max": "largest bytes / capacity over one link's up time",
    "traffic_outside_contacts_bytes": "bytes seen on a link while its contact was down",
    "apps_failed": "app instances that exited with an error status",
    "apps_max_rss_bytes": "largest resident memory of one app instance",
    "faults_count": "faults (faults: section) that started in the window",
    **IPROUTE_DOCS,
}

CONTACT_SLACK_S = 1.0
"""Tolerance at contact edges when judging whether traffic was inside a contact: the
link driver applies changes on its own tick, and packet timestamps carry clock jitter."""


def telemetry_events(run_dir: Path) -> list[dict[str, Any]]:
    """The run's recorded events whose payload is a JSON object (the only ones the
    metrics read)."""
    return [e for e in RunDir(run_dir).events() if isinstance(e.get("payload"), dict)]


def _t(ev: dict[str, Any]) -> float | None:
    t = ev["payload"].get("t_s", ev.get("t_s"))
    return float(t) if isinstance(t, (int, float)) else None


def _topic_parts(ev: dict[str, Any]) -> list[str]:
    """Topic levels after ``netemu/<run>/``."""
    parts = str(ev.get("topic", "")).split("/")
    return parts[2:] if len(parts) > 2 and parts[0] == "netemu" else parts


def load_plan(run_dir: Path) -> dict[str, Any] | None:
    """The run's plan.json (None without one)."""
    return RunDir(run_dir).plan()


def app_files(run_dir: Path, app: str | None, name: str) -> dict[tuple[str, str], dict]:
    """{(app, node): parsed JSON} of ``apps/<app>/<node>/<name>`` files."""
    out: dict[tuple[str, str], dict] = {}
    for app_name, node, f in RunDir(run_dir).app_files(app, name):
        try:
            obj = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(obj, dict):
            out[(app_name, node)] = obj
    return out


# --------------------------------------------------------------------------- bundles


def _app_bundle_events(events: list[dict[str, Any]]) -> list[tuple[float | None, str, str]]:
    """(t_s, "sent" | "delivered", bundle_id) from the apps' own telemetry: bundles the
    apps handed to DTN and bundles DTN handed to them (ids are the agents' bundle ids)."""
    out: list[tuple[float | None, str, str]] = []
    for ev in events:
        parts = _topic_parts(ev)
        if not parts or parts[0] != "app":
            continue
        p = ev["payload"]
        kind, t = p.get("event"), _t(ev)
        if kind in ("sent", "query") and p.get("bundle_id"):
            out.append((t, "sent", str(p["bundle_id"])))
        elif kind in ("arrived", "answer") and p.get("bundle_id"):
            out.append((t, "delivered", str(p["bundle_id"])))
        elif kind == "answered":
            if p.get("bundle_id"):
                out.append((t, "delivered", str(p["bundle_id"])))
            if p.get("answer_bundle_id"):
                out.append((t, "sent", str(p["answer_bundle_id"])))
    return out


def _agent_expired(run_dir: Path | None) -> set[str]:
    """Bundles the agents' logs say were deleted because their lifetime expired."""
    out: set[str] = set()
    if run_dir is None:
        return out
    for f in RunDir(run_dir).agent_logs():
        try:
            lines = f.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if '"bundle_deleted"' not in line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            reason = str(rec.get("reason", "")).upper()
            if "LIFETIME" in reason or "EXPIRED" in reason or reason == "1" or "expired" in str(rec.get("message", "")):
                out.add(str(rec.get("bundle")))
    return out


def recorder_capped(events: list[dict[str, Any]]) -> tuple[bool, int | None]:
    """Whether the recorder capped the ``bundle/`` lines, and how many it left out (None
    when the run ended before the recorder could say)."""
    capped, dropped = False, None
    for ev in events:
        parts = _topic_parts(ev)
        if parts[:1] != ["recorder"]:
            continue
        p = ev["payload"]
        if p.get("event") == "cap_reached" and p.get("topics") == "bundle":
            capped = True
        elif p.get("event") == "capped" and (p.get("dropped") or {}).get("bundle"):
            capped, dropped = True, int(p["dropped"]["bundle"])
    return capped, dropped


def bundle_metrics(events: list[dict[str, Any]], run_dir: Path | None = None) -> dict[str, Any]:
    """Bundle figures from ``bundle/<node>`` events when the recorder kept them all; else
    from the agents' ``counters/<node>`` samples (totals only: no latencies); else from
    the apps' own events (bundles sent by apps vs delivered to apps) and the agents' logs
    (expiries). ``bundle_source`` says which."""
    has_bundle = any(_topic_parts(e)[:1] == ["bundle"] for e in events)
    capped, dropped = recorder_capped(events)
    if has_bundle and not capped:
        return {**_bundle_metrics_from_bundle_events(events), "bundle_events_dropped": 0}
    totals = scan(events, {}).totals
    if totals:
        return {**_bundle_metrics_from_counters(totals), "bundle_events_dropped": dropped}
    if has_bundle:  # capped, no counters: the kept events only, no ratio from a part
        m = _bundle_metrics_from_bundle_events(events)
        m.update(delivery_ratio=None, bundle_latency_p50_s=None, bundle_latency_p95_s=None,
                 bundle_source="bundle events (capped by the recorder: partial)",
                 bundle_events_dropped=dropped)
        return m
    app = _app_bundle_events(events)
    if app:
        return _bundle_metrics_from_apps(app, _agent_expired(run_dir))
    return _bundle_metrics_from_bundle_events(events)


def _bundle_metrics_from_counters(totals: dict[str, dict[str, int]]) -> dict[str, Any]:
    def total(key: str) -> int:
        return sum(t[key] for t in totals.values())

    created, delivered = total("sent"), total("delivered")
    expired, deleted = total("expired"), total("deleted")
    return {
        "bundles_created": created,
        "bundles_delivered": delivered,
        "bundles_expired": expired,
        "bundles_deleted": deleted,
        "bundles_in_flight": max(0, created - delivered - expired - deleted),
        "delivery_ratio": (delivered / created) if created else None,
        "bundle_latency_p50_s": None,
        "bundle_latency_p95_s": None,
        "bundle_source": "agent counters",
    }


def _bundle_metrics_from_apps(app: list[tuple[float | None, str, str]], expired_ids: set[str]) -> dict[str, Any]:
    sent: dict[str, float] = {}
    delivered: dict[str, float] = {}
    for t, kind, bid in app:
        target = sent if kind == "sent" else delivered
        target.setdefault(bid, t if t is not None else 0.0)
    created = set(sent) | set(delivered)
    lat = [delivered[b] - sent[b] for b in delivered if b in sent]
    exp = (expired_ids & created) - set(delivered)
    n_created = len(created)
    return {
        "bundles_created": n_created,
        "bundles_delivered": len(delivered),
        "bundles_expired": len(exp),
        "bundles_deleted": 0,
        "bundles_in_flight": n_created - len(delivered) - len(exp),
        "delivery_ratio": (len(delivered) / n_created) if n_created else None,
        "bundle_latency_p50_s": percentile(lat, 50),
        "bundle_latency_p95_s": percentile(lat, 95),
        "bundle_source": "app events",
    }


def _bundle_metrics_from_bundle_events(events: list[dict[str, Any]]) -> dict[str, Any]:
    first_seen: dict[str, float] = {}
    delivered: dict[str, float] = {}
    expired: set[str] = set()
    deleted: set[str] = set()
    for ev in events:
        parts = _topic_parts(ev)
        if not parts or parts[0] != "bundle":
            continue
        p = ev["payload"]
        bid = p.get("bundle_id")
        if not bid:
            continue
        t = _t(ev)
        if bid not in first_seen or (t is not None and t < first_seen[bid]):
            first_seen[bid] = t if t is not None else first_seen.get(bid, 0.0)
        kind = p.get("event")
        if kind == "delivered":
            delivered.setdefault(bid, t if t is not None else 0.0)
        elif kind == "expired":
            expired.add(bid)
        elif kind == "deleted":
            deleted.add(bid)
    created = len(first_seen)
    lat = [delivered[b] - first_seen[b] for b in delivered]
    exp = expired - set(delivered)
    dele = deleted - set(delivered) - exp
    return {
        "bundles_created": created,
        "bundles_delivered": len(delivered),
        "bundles_expired": len(exp),
        "bundles_deleted": len(dele),
        "bundles_in_flight": created - len(delivered) - len(exp) - len(dele),
        "delivery_ratio": (len(delivered) / created) if created else None,
        "bundle_latency_p50_s": percentile(lat, 50),
        "bundle_latency_p95_s": percentile(lat, 95),
        "bundle_source": "bundle events" if created else None,
    }


# --------------------------------------------------------------------------- faults


def fault_records(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{id: {kind, nodes, start_s, end_s}}`` of the faults that started, from their
    ``fault/<id>`` events (the times they were applied; ``end_s`` None when the fault
    had not ended by the end of the run)."""
    out: dict[str, dict[str, Any]] = {}
    for ev in events:
        parts = _topic_parts(ev)
        if len(parts) < 2 or parts[0] != "fault":
            continue
        p = ev["payload"]
        fid = str(p.get("id") or "/".join(parts[1:]))
        t = _t(ev)
        if p.get("event") == "started":
            out[fid] = {"kind": p.get("kind"), "nodes": p.get("nodes"), "start_s": t,
                        "end_s": None}
            for k in ("extra_loss", "rate_factor"):
                if k in p:
                    out[fid][k] = p[k]
        elif p.get("event") == "ended" and fid in out:
            out[fid]["end_s"] = t
    return out


REROUTE_GRACE_S = 30.0
"""Bundles handed back after a fault ends still count as its re-routes this long: a
session cut by the fault is found dead and its bundles given back a little later."""


def fault_rerouted(run: Path, faults: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Bundles each fault made an agent hand back to its router (``returned_to_router``
    in the agents' logs, from the fault's start to REROUTE_GRACE_S after its end): for a
    link fault, those its two ends gave back about each other; for a station outage or
    a node crash, those the node gave back and those its neighbours gave back about it."""
    if not faults:
        return {}
    returns: list[tuple[float, str, str, int]] = []  # (t_s, node, neighbour, bundles)
    for log in RunDir(run).agent_logs():
        node = log.parent.name
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            if '"returned_to_router"' not in line:
                continue
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r.get("ts"), (int, float)) and isinstance(r.get("bundles"), int):
                returns.append((float(r["ts"]), node, str(r.get("neighbour")), r["bundles"]))
    out: dict[str, int] = {}
    for fid, f in faults.items():
        nodes = [str(n) for n in f.get("nodes") or []]
        t0 = f["start_s"] if f["start_s"] is not None else math.inf
        t1 = (math.inf if f["end_s"] is None else f["end_s"]) + REROUTE_GRACE_S
        link = len(nodes) == 2
        n = 0
        for t, node, nb, bundles in returns:
            if not t0 <= t <= t1:
                continue
            if (link and {node, nb} == set(nodes)) or (
                    not link and (node in nodes or nb in nodes)):
                n += bundles
        out[fid] = n
    return out


# --------------------------------------------------------------------------- links


def _plan_windows(plan: dict[str, Any] | None) -> dict[str, list[tuple[float, float, float]]]:
    """{"a->b": [(start_s, end_s, rate_bps)]} from plan.json."""
    out: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for c in (plan or {}).get("contacts", []):
        out[f"{c['from']}->{c['to']}"].append(
            (float(c["start_s"]), float(c["end_s"]), float(c.get("rate_bps", 0.0)))
        )
    return out


def _event_windows(events: list[dict[str, Any]], end_s: float) -> dict[str, list[tuple[float, float, float]]]:
    """Up intervals per direction from ``link/<a>/<b>`` events (both directions)."""
    open_: dict[str, tuple[float, float]] = {}
    out: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for ev in events:
        parts = _topic_parts(ev)
        if len(parts) < 3 or parts[0] != "link":
            continue
        a, b = parts[1], parts[2]
        p = ev["payload"]
        t = _t(ev)
        if t is None:
            continue
        for key in (f"{a}->{b}", f"{b}->{a}"):
            kind = p.get("event")
            if kind == "up" and key not in open_:
                open_[key] = (t, float(p.get("rate_bps") or 0.0))
            elif kind == "update" and key in open_ and p.get("rate_bps") is not None:
                t0, r0 = open_[key]
                out[key].append((t0, t, r0))
                open_[key] = (t, float(p["rate_bps"]))
            elif kind == "down" and key in open_:
                t0, r0 = open_.pop(key)
                out[key].append((t0, t, r0))
    for key, (t0, r0) in open_.items():
        out[key].append((t0, max(t0, end_s), r0))
    return out


def _inside(windows: list[tuple[float, float, float]], t: float, slack_s: float) -> bool:
    return any(s - slack_s <= t <= e + slack_s for s, e, _ in windows)


def link_metrics(
    events: list[dict[str, Any]], plan: dict[str, Any] | None, end_s: float
) -> tuple[dict[str, dict[str, Any]], int]:
    """Per directed link: bytes and bundles forwarded, up time, capacity, utilisation; and
    the bytes forwarded at a time the link was down (by the plan)."""
    windows = _plan_windows(plan) or _event_windows(events, end_s)
    use: dict[str, dict[str, Any]] = {}
    outside = 0
    for ev in events:
        parts = _topic_parts(ev)
        p = ev["payload"]
        if not parts or parts[0] != "bundle" or p.get("event") != "forwarded":
            continue
        node = parts[1] if len(parts) > 1 else p.get("node")
        nh = p.get("next_hop")
        if not node or not nh:
            continue
        key = f"{node}->{nh}"
        u = use.setdefault(key, {"bytes": 0, "bundles": 0})
        size = int(p.get("size_bytes") or 0)
        u["bytes"] += size
        u["bundles"] += 1
        t = _t(ev)
        if windows and t is not None and not _inside(windows.get(key, []), t, CONTACT_SLACK_S):
            outside += size
    for key, w in windows.items():
        u = use.setdefault(key, {"bytes": 0, "bundles": 0})
        up = sum(max(0.0, min(e, end_s) - s) for s, e, _ in w if s < end_s) if end_s > 0 else 0.0
        cap = sum(max(0.0, min(e, end_s) - s) * r / 8 for s, e, r in w if s < end_s) if end_s > 0 else 0.0
        u["up_s"] = round(up, 3)
        u["capacity_bytes"] = round(cap)
    for u in use.values():
        cap_bytes = u.get("capacity_bytes")
        u["utilisation"] = (u["bytes"] / cap_bytes) if cap_bytes else None
    return dict(sorted(use.items())), outside


# --------------------------------------------------------------------------- apps


def app_metrics(run_dir: Path, events: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    eo = app_files(run_dir, "eo-filter", "result.json")
    if not eo:  # fall back to the last stats event of each satellite
        for ev in events:
            parts = _topic_parts(ev)
            if parts[:2] == ["app", "eo-filter"] and ev["payload"].get("event") == "stats":
                eo[("eo-filter", parts[2] if len(parts) > 2 else "?")] = ev["payload"]
    if eo:
        cap = sum(int(r.get("bytes_captured", 0)) for r in eo.values())
        sent = sum(int(r.get("bytes_sent", 0)) for r in eo.values())
        out.update(
            tiles_captured=sum(int(r.get("tiles", 0)) for r in eo.values()),
            tiles_detected=sum(int(r.get("detections", 0)) for r in eo.values()),
            bytes_captured=cap,
            bytes_sent=sent,
            bytes_saved=cap - sent,
            downlink_saved_fraction=(1 - sent / cap) if cap else None,
        )
        out["eo_filter_by_node"] = {node: r for (_, node), r in eo.items()}
    dl = app_files(run_dir, "downlink", "result.json")
    if dl:
        out["tiles_received"] = sum(int(r.get("tiles_received", 0)) for r in dl.values())
        out["downlink_bytes_received"] = sum(int(r.get("bytes_received", 0)) for r in dl.values())
    split: dict[str, list[float]] = {"network_s": [], "queueing_s": [], "compute_s": []}
    lat: list[float] = []
    sent_q = answered = 0
    clients = {k: r for k, r in app_files(run_dir, "orbit-query", "result.json").items()
               if r.get("role") == "client"}
    if clients:
        for r in clients.values():
            sent_q += int(r.get("queries_sent", 0))
            got = [float(x) for x in r.get("latencies_s", []) if x is not None]
            answered += len(got)
            lat += got
            for q in r.get("queries", []):
                for k, vals in split.items():
                    if isinstance(q.get(k), (int, float)):
                        vals.append(float(q[k]))
    else:
        for ev in events:
            parts = _topic_parts(ev)
            if parts[:2] != ["app", "orbit-query"]:
                continue
            p = ev["payload"]
            if p.get("event") == "query":
                sent_q += 1
            elif p.get("event") == "answer" and isinstance(p.get("latency_s"), (int, float)):
                answered += 1
                lat.append(float(p["latency_s"]))
    if sent_q or lat:
        out.update(
            queries_sent=sent_q,
            queries_answered=answered,
            query_answer_ratio=(answered / sent_q) if sent_q else None,
            query_latency_p50_s=percentile(lat, 50),
            query_latency_p95_s=percentile(lat, 95),
            query_latency_max_s=max(lat) if lat else None,
        )
        out["query_latencies_s"] = sorted(lat)
        for k, vals in split.items():
            if vals:
                out[f"query_{k[:-2]}_p95_s"] = percentile(vals, 95)
    requests = late = 0
    for app in ("eo-filter", "orbit-query"):
        for r in app_files(run_dir, app, "result.json").values():
            c = r.get("compute")
            if isinstance(c, dict):
                requests += int(c.get("requests", 0))
                late += int(c.get("late", 0))
    if requests:
        out.update(compute_requests=requests, compute_late_requests=late)
    usage = app_files(run_dir, None, "usage.json")
    if usage:
        apps: dict[str, dict[str, Any]] = {}
        failed = 0
        for (app, node), u in usage.items():
            status = u.get("exit_status", u.get("returncode"))
            # the runner's own verdict when it gives one
            ok = u["ok"] if isinstance(u.get("ok"), bool) else status in (0, None, -15, 143)
            failed += 0 if ok else 1
            apps[f"{app}/{node}"] = {
                "exit_status": status,
                "cpu_s": u.get("cpu_s"),
                "max_rss_bytes": u.get("max_rss_bytes"),
                "limits": u.get("limits"),
                "ok": bool(ok),
            }
        out["apps"] = apps
        out["apps_failed"] = failed
        rss = [a["max_rss_bytes"] for a in apps.values() if isinstance(a["max_rss_bytes"], (int, float))]
        out["apps_max_rss_bytes"] = max(rss) if rss else None
    return out


def _link_use_from_captures(run: Path, plan: dict[str, Any] | None, links: dict[str, dict[str, Any]]) -> None:
    """Bundle bytes per directed link from ``captures/*.pcap`` (complete TCPCL transfers),
    for runs whose agents publish no forwarded-bundle events. Updates ``links``."""
    if not RunDir(run).captures_dir.is_dir():
        return
    try:
        from netemu.analysis.pcap import run_transfers

        transfers = run_transfers(run, plan)
    except Exception:  # noqa: BLE001 - unreadable captures: no link use rather than no metrics
        return
    for t in transfers:
        u = links.setdefault(t.link, {"bytes": 0, "bundles": 0})
        u["bytes"] += t.size_bytes
        u["bundles"] += 1
        u["source"] = "captures"
    for u in links.values():
        cap_bytes = u.get("capacity_bytes")
        u["utilisation"] = (u["bytes"] / cap_bytes) if cap_bytes else None


# --------------------------------------------------------------------------- all


def compute(run_dir: str | Path, *, traffic_rows: list[dict[str, Any]] | None = None
            ) -> dict[str, Any]:
    """Every metric of the run in ``run_dir`` (see :data:`METRIC_DOCS`); one row per
    traffic flow is appended to ``traffic_rows`` when given."""
    run = Path(run_dir)
    if not run.is_dir():
        raise InputError("not a run directory", source=str(run))
    events = telemetry_events(run)
    plan = load_plan(run)
    times = [t for t in (_t(e) for e in events) if t is not None]
    end_s = max(times) if times else 0.0
    m: dict[str, Any] = {"run": run.name, "duration_s": round(end_s - min(times), 3) if times else 0.0,
                         "events": len(events)}
    m.update(bundle_metrics(events, run))
    links, outside = link_metrics(events, plan, end_s)
    m["link_use"] = links
    m["link_bytes_total"] = sum(u["bytes"] for u in links.values())
    utils = [u["utilisation"] for u in links.values() if u.get("utilisation") is not None]
    m["link_utilisation_max"] = max(utils) if utils else None
    forwarded = any(u.get("bundles") for u in links.values())
    if not forwarded:
        _link_use_from_captures(run, plan, links)
        m["link_bytes_total"] = sum(u["bytes"] for u in links.values())
        utils = [u["utilisation"] for u in links.values() if u.get("utilisation") is not None]
        m["link_utilisation_max"] = max(utils) if utils else None
    m["traffic_outside_contacts_bytes"] = outside if (plan or links) else None
    m["traffic_outside_contacts_source"] = (
        "bundle events" if forwarded else "none seen (no forwarded-bundle events, no captures)")
    try:
        from netemu.analysis.pcap import outside_contacts_from_captures

        cap = outside_contacts_from_captures(run, plan)
    except ImportError:
        cap = None
    if cap is not None:
        m["traffic_outside_contacts_bytes"] = cap
        m["traffic_outside_contacts_source"] = "captures"
    m.update(app_metrics(run, events))
    m["node_counters"] = counter_metrics(events, plan) or None
    faults = fault_records(events)
    costs: dict[str, dict[str, int]] = {}
    m["traffic"] = traffic_metrics(run, flows_out=traffic_rows, fault_costs=costs, faults=[
        (fid, f["start_s"], math.inf if f["end_s"] is None else f["end_s"])
        for fid, f in faults.items()])
    for fid, cost in costs.items():
        faults[fid].update(cost)
    for fid, n in fault_rerouted(run, faults).items():
        faults[fid]["rerouted"] = n
    m["faults"] = faults or None
    m["faults_count"] = len(faults)
    m.update(iproute_metrics(run / "iproute", tolerance=_ip_tolerance(run)))
    for key in METRIC_DOCS:
        m.setdefault(key, None)
    return m


def _ip_tolerance(run: Path) -> float:
    """The convergence tolerance the run was measured with (``run.json``)."""
    try:
        meta = json.loads(RunDir(run).run_json.read_text())
        return float(meta.get("ip_measure", {}).get("convergence_tolerance", 0.05))
    except (OSError, ValueError, AttributeError, TypeError):
        return 0.05


def write(run_dir: str | Path) -> Path:
    """Compute the metrics and write ``<run>/metrics.json``; returns its path."""
    run = Path(run_dir)
    rows: list[dict[str, Any]] = []
    m = compute(run, traffic_rows=rows)
    rd = RunDir(run)
    if m.get("traffic") is not None:
        write_csv(rd.traffic_flows_csv, rows)
    out = rd.metrics_json
    out.write_text(json.dumps(m, indent=1, sort_keys=True, default=_json_default) + "\n")
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def load(run_dir: str | Path) -> dict[str, Any]:
    """``metrics.json`` of a run, computed first when missing."""
    p = RunDir(Path(run_dir)).metrics_json
    if not p.exists():
        write(run_dir)
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg}", source=str(p), line=e.lineno) from e
