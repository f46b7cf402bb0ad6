"""The run report: ``<run>/report/index.html`` and the PNG figures it shows.

Everything comes from the run directory (metrics.json — computed when missing —,
plan.json, scenario.yaml, app results, traffic_flows.csv, the counters in events.jsonl), so a report can be rebuilt at any time with
``netemu report RUN``. Figures are drawn with matplotlib's Agg backend; the map is a
latitude/longitude grid with coastlines (:mod:`netemu.analysis.coastlines`), ground tracks,
ground stations and the ground links of the run's contacts.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from netemu.analysis import metrics as metrics_mod
from netemu.runtime.rundir import RunDir

# Colours that stay apart for colour-blind readers (Okabe-Ito).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
MAX_TRACK_S = 6 * 3600.0
TRACK_STEP_S = 30.0


def _colors(n: int) -> Sequence[str | tuple[float, float, float, float]]:
    """``n`` distinguishable colours: Okabe-Ito up to 8, else matplotlib's tab20."""
    if n <= len(PALETTE):
        return PALETTE[:n]
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 10, "axes.grid": True,
                         "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} TB"


def _fmt(v: Any, unit: str = "", digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if unit == "%":
            return f"{100 * v:.1f} %"
        if abs(v) >= 1000:
            txt = f"{v:,.0f}"
        elif abs(v) >= 10:
            txt = f"{v:.1f}"
        else:
            txt = f"{v:.{digits}g}"
        return f"{txt}{(' ' + unit) if unit else ''}"
    return f"{v}{(' ' + unit) if unit else ''}"


# --------------------------------------------------------------------------- data


def _plan(run: Path) -> dict[str, Any] | None:
    return metrics_mod.load_plan(run)


def _sub_satellite(run: Path, times_s: Any) -> tuple[list[str], Any, Any,
                                                    dict[str, tuple[float, float]]]:
    """The satellites' names, their sub-satellite latitudes and longitudes (degrees,
    arrays [time, satellite]) at ``times_s``, and the stations ``{name: (lat, lon)}``,
    from the run's scenario.yaml (all empty when it cannot be read)."""
    path = RunDir(run).scenario_yaml
    if not path.exists():
        return [], None, None, {}
    try:
        import numpy as np

        from netemu.plan import orbit
        from netemu.plan.scenario import load_scenario

        sc = load_scenario(path)
    except Exception:  # noqa: BLE001 - a report without a map beats no report
        return [], None, None, {}
    stations = {g.name: (g.lat_deg, g.lon_deg) for g in sc.ground_stations}
    sats = sc.satellites
    if not sats:
        return [], None, None, stations
    lat, lon = orbit.subsatellite_deg([s.satrec for s in sats], sc.epoch,
                                      np.asarray(times_s, dtype=float))
    return [s.name for s in sats], lat, lon, stations


def ground_tracks(run: Path, duration_s: float) -> tuple[dict[str, list[tuple[float, float, float]]],
                                                         dict[str, tuple[float, float]]]:
    """Sub-satellite points ``{sat: [(t_s, lat, lon)]}`` and stations ``{name: (lat,
    lon)}`` from the run's scenario.yaml (empty when it cannot be read)."""
    import numpy as np

    span = min(max(duration_s, 2 * TRACK_STEP_S), MAX_TRACK_S)
    t = np.arange(0.0, span + TRACK_STEP_S, TRACK_STEP_S)
    names, lat, lon, stations = _sub_satellite(run, t)
    tracks = {n: [(float(t[k]), float(lat[k, i]), float(lon[k, i])) for k in range(len(t))]
              for i, n in enumerate(names)}
    return tracks, stations


def positions_at(run: Path, t_s: float) -> tuple[dict[str, tuple[float, float]],
                                                 dict[str, tuple[float, float]]]:
    """Sub-satellite points ``{sat: (lat, lon)}`` at scenario time ``t_s`` and stations
    ``{name: (lat, lon)}``, from the run's scenario.yaml (empty when it cannot be read)."""
    import numpy as np

    names, lat, lon, stations = _sub_satellite(run, [float(t_s)])
    return ({n: (float(lat[0, i]), float(lon[0, i])) for i, n in enumerate(names)
             if np.isfinite(lat[0, i])}, stations)


def storage_scan(run: Path, m: dict) -> Any:
    """The agents' counters (:class:`~netemu.analysis.counters.CounterScan`), or None when
    the run has none."""
    if not m.get("node_counters"):
        return None
    from netemu.analysis.counters import node_kinds, scan

    return scan(metrics_mod.telemetry_events(run), node_kinds(_plan(run)))


# --------------------------------------------------------------------------- figures


def _world_axes(plt: Any) -> tuple[Any, Any]:
    """A figure with longitude/latitude axes over the whole world, for the maps."""
    fig, ax = plt.subplots(figsize=(11, 6.0))
    ax.set_xlim(-180, 180)
    ax.set_ylim(-90, 90)
    ax.set_xticks(range(-180, 181, 30))
    ax.set_yticks(range(-90, 91, 30))
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.set_aspect("equal")
    from netemu.analysis import coastlines

    coastlines.draw(ax)
    return fig, ax


def fig_map(out: Path, tracks, stations, plan) -> str | None:
    if not tracks and not stations:
        return None
    plt = _plt()
    fig, ax = _world_axes(plt)
    cols = _colors(len(tracks))
    for i, (name, pts) in enumerate(sorted(tracks.items(), key=lambda kv: _natural(kv[0]))):
        color = cols[i]
        seg_lon: list[float] = []
        seg_lat: list[float] = []
        for _, la, lo in pts:
            if seg_lon and abs(lo - seg_lon[-1]) > 180:  # wrap at the date line
                ax.plot(seg_lon, seg_lat, color=color, lw=0.9, alpha=0.7)
                seg_lon, seg_lat = [], []
            seg_lon.append(lo)
            seg_lat.append(la)
        ax.plot(seg_lon, seg_lat, color=color, lw=0.9, alpha=0.7,
                label=name if i < 12 else None)
        ax.plot(pts[0][2], pts[0][1], "o", color=color, ms=3)
    # ground links: a line from the station to the satellite at mid-contact
    if plan and tracks:
        for c in plan.get("contacts", []):
            if c.get("kind") != "gsl" or c["to"] not in stations or c["from"] not in tracks:
                continue
            mid = (c["start_s"] + c["end_s"]) / 2
            pts = tracks[c["from"]]
            # track points are every TRACK_STEP_S from pts[0]: the nearest by index
            k = min(max(round((mid - pts[0][0]) / TRACK_STEP_S), 0), len(pts) - 1)
            if abs(pts[k][0] - mid) > 2 * TRACK_STEP_S:
                continue
            la, lo = stations[c["to"]]
            if abs(pts[k][2] - lo) < 180:
                ax.plot([lo, pts[k][2]], [la, pts[k][1]], color="#555555", lw=0.6, alpha=0.6)
    for name, (la, lo) in stations.items():
        ax.plot(lo, la, marker="^", color="#D55E00", ms=9, mec="black", mew=0.6)
        ax.annotate(name, (lo, la), xytext=(5, 5), textcoords="offset points", fontsize=9,
                    weight="bold")
    ax.set_title("Ground tracks (coloured), ground stations (▲) and ground links at mid-contact (grey)")
    if tracks:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), fontsize=7,
                  ncol=min(12, len(tracks)), frameon=False)
    fig.tight_layout()
    fig.savefig(out / "map.png")
    plt.close(fig)
    return "map.png"


def _natural(name: str) -> tuple:
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _fault_spans(faults: dict | None, end_s: float | None) -> list[tuple[str, dict, float]]:
    """(id, fault, end_s) of the run's faults (one not ended: to the end of the run)."""
    out = []
    for fid, f in (faults or {}).items():
        t0 = f.get("start_s")
        if t0 is None:
            continue
        t1 = f.get("end_s")
        out.append((fid, f, float(t1) if t1 is not None else float(end_s or t0)))
    return sorted(out, key=lambda x: (x[1]["start_s"], x[0]))


def fig_timeline(out: Path, plan, stations: dict, end_s: float | None,
                 faults: dict | None = None) -> str | None:
    if not plan:
        return None
    info = plan.get("node_info", {})
    grounds = sorted({n for n, i in info.items() if i.get("kind") == "ground"} | set(stations),
                     key=_natural)
    gsl = [c for c in plan.get("contacts", []) if c["to"] in grounds and c["from"] not in grounds]
    if not grounds or not gsl:
        return None
    sats = sorted({c["from"] for c in gsl}, key=_natural)
    color = dict(zip(sats, _colors(len(sats)), strict=True))
    spans = _fault_spans(faults, end_s)
    rows = len(grounds) + (1 if spans else 0)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 0.6 * rows + 2.0))
    by_ground: dict[str, list[dict]] = {}
    for c in gsl:
        by_ground.setdefault(c["to"], []).append(c)
    for row, g in enumerate(grounds):
        cs = by_ground.get(g, [])
        if cs:  # one artist per station
            ax.broken_barh([(c["start_s"] / 60, (c["end_s"] - c["start_s"]) / 60) for c in cs],
                           (row - 0.35, 0.7), facecolors=[color[c["from"]] for c in cs],
                           alpha=0.85)
    # faults: all on their own row, and over the rows of the stations they touch
    for k, (fid, f, t1) in enumerate(spans):
        t0 = float(f["start_s"])
        bar = [(t0 / 60, max(t1 - t0, 1.0) / 60)]
        ax.broken_barh(bar, (len(grounds) - 0.35, 0.7), facecolors="tab:red", alpha=0.6)
        # labels inside the row, alternately high and low so that overlapping faults'
        # names stay apart
        ax.annotate(fid, (t0 / 60, len(grounds) + (0.12 if k % 2 == 0 else -0.22)),
                    fontsize=6)
        for g in f.get("nodes") or ():
            if g in grounds:
                ax.broken_barh(bar, (grounds.index(g) - 0.45, 0.9), facecolors="none",
                               edgecolors="tab:red", hatch="///", lw=1)
    ax.set_yticks(range(rows))
    ax.set_yticklabels([*grounds, "faults"] if spans else grounds)
    ax.set_xlabel("scenario time (minutes from the epoch)")
    if end_s:
        ax.axvline(end_s / 60, color="black", ls="--", lw=1)
        ax.annotate("end of run", (end_s / 60, len(grounds) - 0.5), fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=color[s]) for s in sats[:24]]
    ax.legend(handles, sats[:24], loc="upper center", fontsize=7, ncol=min(12, len(sats)),
              bbox_to_anchor=(0.5, -0.28), frameon=False)
    ax.set_title("Contacts per ground station (colour = satellite)", loc="left")
    fig.tight_layout()
    fig.savefig(out / "timeline.png")
    plt.close(fig)
    return "timeline.png"


def fig_query_cdf(out: Path, m: dict) -> str | None:
    lat = m.get("query_latencies_s") or []
    if not lat:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = sorted(lat)
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    ax.step(xs, ys, where="post", color=PALETTE[0], lw=2)
    for q, key, col in ((0.5, "query_latency_p50_s", PALETTE[2]), (0.95, "query_latency_p95_s", PALETTE[3])):
        v = m.get(key)
        if v is not None:
            ax.axvline(v, color=col, ls="--", lw=1)
            ax.annotate(f"p{int(q * 100)} = {v:.1f} s", (v, q), xytext=(4, -12),
                        textcoords="offset points", color=col, fontsize=9)
    ax.axvline(120, color="grey", ls=":", lw=1)
    ax.annotate("2 min", (120, 0.05), xytext=(3, 0), textcoords="offset points", color="grey", fontsize=8)
    ax.set_xlabel("query → answer latency (scenario seconds)")
    ax.set_ylabel("fraction of answered queries")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Query latency CDF ({len(xs)} answers)")
    fig.tight_layout()
    fig.savefig(out / "query_cdf.png")
    plt.close(fig)
    return "query_cdf.png"


def fig_bytes(out: Path, m: dict) -> str | None:
    by = m.get("eo_filter_by_node") or {}
    if not by:
        return None
    plt = _plt()
    nodes = sorted(by, key=_natural)
    cap = [by[n].get("bytes_captured", 0) / 1e6 for n in nodes]
    sent = [by[n].get("bytes_sent", 0) / 1e6 for n in nodes]
    fig, ax = plt.subplots(figsize=(max(7.5, 0.55 * len(nodes) + 2), 4))
    x = range(len(nodes))
    ax.bar([i - 0.2 for i in x], cap, width=0.4, color=PALETTE[5], label="captured (raw tiles)")
    ax.bar([i + 0.2 for i in x], sent, width=0.4, color=PALETTE[3], label="sent (bundles)")
    ax.set_xticks(list(x))
    ax.set_xticklabels(nodes, rotation=45 if len(nodes) > 6 else 0, ha="right" if len(nodes) > 6 else "center")
    ax.set_ylabel("MB")
    frac = m.get("downlink_saved_fraction")
    ax.set_title("Bytes captured vs sent"
                 + (f": {100 * frac:.1f} % of downlink saved" if frac is not None else ""))
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "bytes.png")
    plt.close(fig)
    return "bytes.png"


def fig_bundles(out: Path, m: dict) -> str | None:
    keys = [("bundles_delivered", "delivered", PALETTE[2]), ("bundles_in_flight", "in flight at end", PALETTE[1]),
            ("bundles_expired", "expired", PALETTE[3]), ("bundles_deleted", "deleted", PALETTE[7])]
    vals = [(label, m.get(k) or 0, col) for k, label, col in keys]
    if not m.get("bundles_created"):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.barh([v[0] for v in vals], [v[1] for v in vals], color=[v[2] for v in vals])
    for i, v in enumerate(vals):
        ax.annotate(str(v[1]), (v[1], i), xytext=(4, -3), textcoords="offset points")
    ax.invert_yaxis()
    ax.set_xlabel("bundles")
    ratio = m.get("delivery_ratio")
    ax.set_title(f"Bundles: {m['bundles_created']} created, delivery ratio {_fmt(ratio, '%')}")
    fig.tight_layout()
    fig.savefig(out / "bundles.png")
    plt.close(fig)
    return "bundles.png"


def fig_links(out: Path, m: dict, top: int = 20) -> str | None:
    lu = {k: v for k, v in (m.get("link_use") or {}).items() if v.get("bytes")}
    if not lu:
        return None
    plt = _plt()
    items = sorted(lu.items(), key=lambda kv: -kv[1]["bytes"])[:top]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(items) + 1.4))
    ax.barh([k for k, _ in items], [v["bytes"] / 1e3 for _, v in items], color=PALETTE[0])
    for i, (_, v) in enumerate(items):
        u = v.get("utilisation")
        note = f"{v['bundles']} bundles" + (f", {100 * u:.3g} % of capacity" if u is not None else "")
        ax.annotate(note, (v["bytes"] / 1e3, i), xytext=(4, -3), textcoords="offset points", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("kB forwarded")
    src = " — from captures, covering only the time they ran" if any(
        v.get("source") == "captures" for _, v in items) else ""
    ax.set_title(f"Link use (top {len(items)} directed links by bytes){src}", fontsize=10)
    ax.margins(x=0.35)
    fig.tight_layout()
    fig.savefig(out / "links.png")
    plt.close(fig)
    return "links.png"


def fig_storage_map(out: Path, run: Path, sc: Any) -> str | None:
    """Stored bundles per satellite (marker size and colour) where the satellites were
    at the moment satellites held the most bundles."""
    if sc is None or "satellite" not in sc.peak:
        return None
    t_peak, total, per_node = sc.peak["satellite"]
    pos, stations = positions_at(run, t_peak)
    if not pos:
        return None
    plt = _plt()
    fig, ax = _world_axes(plt)
    empty = [p for n, p in pos.items() if not per_node.get(n)]
    if empty:
        ax.scatter([p[1] for p in empty], [p[0] for p in empty], s=4, color="#BBBBBB",
                   label="no bundle stored", zorder=1)
    full = sorted(((per_node[n], p) for n, p in pos.items() if per_node.get(n)),
                  key=lambda x: x[0])
    if full:
        vals = [v for v, _ in full]
        top = max(vals)
        sc_plot = ax.scatter([p[1] for _, p in full], [p[0] for _, p in full],
                             s=[12 + 240 * (v / top) ** 0.5 for v in vals], c=vals,
                             cmap="viridis", vmin=0, vmax=top, edgecolors="black",
                             linewidths=0.4, zorder=2)
        fig.colorbar(sc_plot, ax=ax, shrink=0.7, label="bundles stored")
    for name, (la, lo) in stations.items():
        ax.plot(lo, la, marker="^", color="#D55E00", ms=7, mec="black", mew=0.5, zorder=3)
        if len(stations) <= 40:
            ax.annotate(name, (lo, la), xytext=(4, 4), textcoords="offset points", fontsize=7)
    ax.set_title(f"Where bundles waited: bundles stored per satellite at t = {t_peak:,.0f} s, "
                 f"the satellites' peak ({total:,} bundles)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "storage_map.png")
    plt.close(fig)
    return "storage_map.png"


def fig_storage_series(out: Path, sc: Any) -> str | None:
    """Bundles stored over time, summed per node kind."""
    if sc is None or not any(len(v) > 1 for v in sc.series.values()):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for i, (kind, series) in enumerate(sorted(sc.series.items())):
        ax.step([t for t, _, _ in series], [b for _, b, _ in series], where="post",
                color=PALETTE[i % len(PALETTE)], lw=1.6, label=kind)
    ax.set_xlabel("scenario time (s)")
    ax.set_ylabel("bundles stored")
    ax.set_title("Bundles stored in the agents, per node kind", loc="left")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "storage.png")
    plt.close(fig)
    return "storage.png"


def fig_apps(out: Path, m: dict) -> str | None:
    apps = m.get("apps") or {}
    rows = [(k, a) for k, a in apps.items() if isinstance(a.get("cpu_s"), (int, float))]
    if not rows:
        return None
    rows.sort(key=lambda kv: _natural(kv[0]))
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 0.28 * len(rows) + 1.6), sharey=True)
    names = [k for k, _ in rows]
    colors = [PALETTE[0] if a.get("ok", True) else PALETTE[3] for _, a in rows]
    a1.barh(names, [a["cpu_s"] for _, a in rows], color=colors)
    a1.set_xlabel("CPU seconds")
    a2.barh(names, [(a.get("max_rss_bytes") or 0) / 2**20 for _, a in rows], color=colors)
    a2.set_xlabel("peak memory (MiB)")
    a1.invert_yaxis()
    a1.tick_params(axis="y", labelsize=8)
    fig.suptitle("App resource use (red: exited with an error)", x=0.01, ha="left")
    fig.tight_layout()
    fig.savefig(out / "apps.png")
    plt.close(fig)
    return "apps.png"


# --------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1150px;margin:24px auto;
padding:0 16px;color:#1b1b1b;line-height:1.45}
h1{margin-bottom:2px}.sub{color:#555;margin-top:0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:10px;margin:16px 0}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 12px;background:#fafafa}
.card .v{font-size:1.5em;font-weight:600}.card .k{color:#555;font-size:.85em}
.ok{color:#0a7d3b}.bad{color:#b3261e}
img{max-width:100%;border:1px solid #eee;border-radius:6px;margin:6px 0}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f1f1f1}
td.n{text-align:right;font-variant-numeric:tabular-nums}
section{margin-top:26px}.note{color:#666;font-size:.85em}
"""


def _card(label: str, value: str, cls: str = "") -> str:
    return (f'<div class="card"><div class="v {cls}">{html.escape(value)}</div>'
            f'<div class="k">{html.escape(label)}</div></div>')


def headline(m: dict) -> list[tuple[str, str]]:
    """The figures a reader wants first, as (label, text) pairs (also printed by CLIs)."""
    return [
        ("delivery ratio", _fmt(m.get("delivery_ratio"), "%")),
        ("query latency p50", _fmt(m.get("query_latency_p50_s"), "s")),
        ("query latency p95", _fmt(m.get("query_latency_p95_s"), "s")),
        ("queries answered / sent", f"{m.get('queries_answered') or 0} / {m.get('queries_sent') or '?'}"),
        *_split_cards(m),
        ("downlink saved by filtering", _fmt(m.get("downlink_saved_fraction"), "%")),
        ("bytes captured → sent", f"{_fmt_bytes(m.get('bytes_captured'))} → {_fmt_bytes(m.get('bytes_sent'))}"),
        ("bundles delivered / expired", f"{m.get('bundles_delivered') or 0} / {m.get('bundles_expired') or 0}"),
        ("tiles received on the ground", _fmt(m.get("tiles_received"))),
        *_traffic_cards(m),
    ]


def _split_cards(m: dict) -> list[tuple[str, str]]:
    """The query latency's parts, and requests the host answered late (when measured)."""
    out = []
    if m.get("query_network_p95_s") is not None:
        out.append(("query p95: network / queueing / compute",
                    " / ".join(_fmt(m.get(f"query_{k}_p95_s"), "s")
                               for k in ("network", "queueing", "compute"))))
    if m.get("compute_requests"):
        out.append(("inference late (host behind)",
                    f"{m.get('compute_late_requests') or 0} / {m['compute_requests']}"))
    return out


def _traffic_cards(m: dict) -> list[tuple[str, str]]:
    tr = m.get("traffic")
    if not tr:
        return []
    late = (tr.get("latency_vs_projection_s") or {}).get("p95")
    return [("traffic delivered / expected",
             f"{_fmt(tr.get('expected_delivered'))} / {_fmt(tr.get('expected'))}"),
            ("traffic late vs CGR p95", _fmt(late, "s"))]


def _expect_from_junit(path: Path) -> dict | None:
    """Outcomes from a run's junit.xml (written by ``netemu test``)."""
    import re
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    outs = []
    for case in root.iter("testcase"):
        fail = case.find("failure")
        text = (fail.get("message") if fail is not None else None) or (case.findtext("system-out") or "")
        m = re.search(r"measured ([-+0-9.eE]+)", text)
        outs.append({"expectation": case.get("name", "?"), "passed": fail is None and case.find("error") is None,
                     "measured": float(m.group(1)) if m else None})
    return {"outcomes": outs}


def _expect_html(run: Path) -> str:
    rd = RunDir(run)
    p = rd.expect_json
    res: dict | None = None
    if p.exists():
        try:
            res = json.loads(p.read_text())
        except json.JSONDecodeError:
            res = None
    if res is None and rd.junit_xml.exists():
        res = _expect_from_junit(rd.junit_xml)
    if not res:
        return ""
    rows = "".join(
        f"<tr><td class='{'ok' if r['passed'] else 'bad'}'>{'pass' if r['passed'] else 'FAIL'}</td>"
        f"<td>{html.escape(r['expectation'])}</td><td class='n'>{_fmt(r.get('measured'))}</td></tr>"
        for r in res.get("outcomes", [])
    )
    return ("<section><h2>Expectations</h2><table><tr><th></th><th>expectation</th>"
            f"<th>measured</th></tr>{rows}</table></section>")


def _faults_html(m: dict) -> str:
    """The faults of the run (``faults:``) and what each cost, as a table."""
    faults = m.get("faults") or {}
    if not faults:
        return ""
    rows = []
    for fid, f, _t1 in _fault_spans(faults, None):
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            fid, f.get("kind"), ", ".join(f.get("nodes") or ()), _fmt(f.get("start_s"), "s", 6),
            _fmt(f.get("end_s"), "s", 6), _fmt(f.get("in_transit")), _fmt(f.get("late")),
            _fmt(f.get("undelivered")), _fmt(f.get("rerouted")))) + "</tr>")
    return ("<h3>Faults</h3><table><tr><th>fault</th><th>kind</th><th>nodes</th>"
            "<th>start</th><th>end</th><th>bundles in transit</th><th>late</th>"
            "<th>undelivered</th><th>re-routed</th></tr>" + "".join(rows) + "</table>"
            '<p class="note">Faults the emulator applied (the contact plan did not know them). '
            "In transit: traffic bundles sent before the fault ended, not delivered before it "
            "started and projected to arrive after it started; late: delivered more than 1 s "
            "after CGR's projection; undelivered: never delivered in the run. An overlap in "
            "time, not a traced path. Re-routed: bundles the agents handed back to their "
            "router because of the fault (their logs), until 30 s after it ended.</p>")


def _weather_html(plan: dict[str, Any] | None) -> str:
    """The rain events of the plan (``weather:``) per station, as a table."""
    events = (plan or {}).get("weather") or []
    if not events:
        return ""
    by: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by.setdefault(str(e.get("station")), []).append(e)
    rows = []
    for st, evs in sorted(by.items()):
        worst = max(evs, key=lambda e: float(e.get("atten_db", 0.0)))
        rain_s = sum(float(e["end_s"]) - float(e["start_s"]) for e in evs)
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            st, len(evs), _fmt(rain_s, "s", 6), _fmt(float(worst["atten_db"]), "dB"),
            _fmt(float(worst["start_s"]), "s", 6), _fmt(float(worst["end_s"]), "s", 6))) + "</tr>")
    return ("<h3>Weather</h3><table><tr><th>station</th><th>rain events</th><th>raining</th>"
            "<th>worst attenuation</th><th>from</th><th>to</th></tr>" + "".join(rows)
            + "</table><p class=\"note\">Rain events of the plan (ITU-R P.618 statistics, "
            "attenuation at 45° elevation, more at lower elevation): the ground links' rates "
            "were lowered during them, or the links dropped where no rate closed.</p>")


def _apps_table(m: dict) -> str:
    apps = m.get("apps") or {}
    if not apps:
        return ""
    rows = []
    for k in sorted(apps, key=_natural):
        a = apps[k]
        lim = a.get("limits") or {}
        lim_s = ", ".join(f"{kk} {vv}" for kk, vv in lim.items()) if isinstance(lim, dict) else str(lim)
        rss = a.get("max_rss_bytes")
        rows.append(
            f"<tr><td>{html.escape(k)}</td><td class='{'ok' if a.get('ok', True) else 'bad'}'>"
            f"{html.escape(str(a.get('exit_status')))}</td><td class='n'>{_fmt(a.get('cpu_s'), 's')}</td>"
            f"<td class='n'>{(rss or 0) / 2**20:.1f} MiB</td><td>{html.escape(lim_s)}</td>"
            f"<td><a href='../apps/{html.escape(k)}/stdout.log'>stdout</a> · "
            f"<a href='../apps/{html.escape(k)}/stderr.log'>stderr</a></td></tr>"
        )
    return ("<table><tr><th>app/node</th><th>exit</th><th>CPU</th><th>peak memory</th><th>limits</th>"
            f"<th>logs</th></tr>{''.join(rows)}</table>")


MAX_FLOW_ROWS = 20
"""Flows listed one by one in the report; beyond that, the worst ones by delivery."""


def _lat(d: dict | None, key: str) -> str:
    return _fmt((d or {}).get(key), "s")


def _traffic_html(run: Path, m: dict) -> str:
    tr = m.get("traffic")
    if not tr:
        return ""
    from netemu.analysis.traffic import read_csv

    def row(label: str, x: dict) -> str:
        cells = [x.get("flows"), x.get("sent"), x.get("delivered"),
                 _fmt(x.get("delivery_ratio"), "%"),
                 _lat(x.get("latency_s"), "p50"), _lat(x.get("latency_s"), "p95"),
                 _lat(x.get("latency_s"), "max"), x.get("expected"),
                 x.get("expected_delivered"), _fmt(x.get("expected_delivery_ratio"), "%"),
                 _lat(x.get("latency_vs_projection_s"), "p95")]
        return (f"<tr><td>{html.escape(label)}</td>"
                + "".join(f"<td class='n'>{html.escape(_fmt(c))}</td>" for c in cells)
                + "</tr>")

    head = ("<tr><th>entry</th><th>flows</th><th>sent</th><th>delivered</th><th>ratio</th>"
            "<th>latency p50</th><th>p95</th><th>max</th><th>expected</th>"
            "<th>expected delivered</th><th>ratio</th><th>late p95</th></tr>")
    rows = [row(name, x) for name, x in sorted(tr.get("by_name", {}).items())]
    rows.append(row("all", tr).replace("<td>all</td>", "<td><b>all</b></td>"))
    flows = read_csv(RunDir(run).traffic_flows_csv)
    flow_html = ""
    if flows:
        if len(flows) > MAX_FLOW_ROWS:
            def badness(r: dict) -> tuple:
                ratio = float(r["delivery_ratio"]) if r["delivery_ratio"] else 2.0
                return (ratio, -int(r["sent"] or 0))
            shown = sorted(flows, key=badness)[:MAX_FLOW_ROWS]
            what = (f"the {MAX_FLOW_ROWS} flows with the lowest delivery ratio, of "
                    f"{len(flows):,} (all in <a href='../traffic_flows.csv'>"
                    "traffic_flows.csv</a>)")
        else:
            shown, what = flows, "every flow"
        fr = "".join(
            f"<tr><td>{html.escape(r['key'])}</td><td class='n'>{r['sent']}</td>"
            f"<td class='n'>{r['delivered']}</td>"
            f"<td class='n'>{_fmt(float(r['delivery_ratio']), '%') if r['delivery_ratio'] else '—'}</td>"
            f"<td class='n'>{_fmt(float(r['latency_p50_s']), 's') if r['latency_p50_s'] else '—'}</td>"
            f"<td class='n'>{_fmt(float(r['latency_max_s']), 's') if r['latency_max_s'] else '—'}</td>"
            f"<td class='n'>{r['expected'] or '—'}</td>"
            f"<td class='n'>{_fmt(float(r['late_p95_s']), 's') if r['late_p95_s'] else '—'}</td></tr>"
            for r in shown)
        flow_html = (f"<p class='note'>Per flow: {what}.</p><table><tr><th>flow</th>"
                     "<th>sent</th><th>delivered</th><th>ratio</th><th>latency p50</th>"
                     f"<th>max</th><th>expected</th><th>late p95</th></tr>{fr}</table>")
    w = tr.get("window_s")
    proj = tr.get("projection") or {}
    note = (f"Sends {html.escape(_fmt(tr.get('scheduled')))} scheduled in the window"
            + (f" [{w[0]:g}, {w[1]:g}] s" if w else "")
            + f", {tr.get('sent')} recorded. <i>Expected</i>: sends whose arrival as CGR "
            "projects it at send time falls inside the window; <i>late</i>: delivery time − "
            "that projected arrival"
            + (f" ({proj.get('sends')} projections in {proj.get('seconds')} s)"
               if proj.get("seconds") is not None else " (no plan.json: no projection)")
            + f". {tr.get('duplicates')} repeated records (restarts) and "
            f"{tr.get('records_skipped')} cut lines were not counted.")
    return (f"<section><h2>Traffic flows</h2><p class='note'>{note}</p>"
            f"<table>{head}{''.join(rows)}</table>{flow_html}</section>")


def _paths_html(run: Path) -> str:
    try:
        from netemu.analysis.pcap import bundle_paths_from_run
    except ImportError:
        return ""
    try:
        paths = bundle_paths_from_run(run)
    except Exception:  # noqa: BLE001
        return ""
    if not paths:
        return ""
    rows = []
    for bid, hops in list(paths.items())[:20]:
        desc = " → ".join(
            f"{html.escape(h['link'])} at {h['first_t_s']:.1f} s"
            + (f" (waited {h['waited_s']:.1f} s)" if h.get("waited_s") else "")
            for h in hops
        )
        rows.append(f"<tr><td>{html.escape(bid)}</td><td>{desc}</td></tr>")
    return ("<section><h2>Bundle paths from captures</h2><p class='note'>Reconstructed from the "
            "pcaps under captures/ (TCPCLv4 transfers decoded as BPv7 bundles).</p>"
            f"<table><tr><th>bundle</th><th>hops</th></tr>{''.join(rows)}</table></section>")


def _storage_note(m: dict) -> str:
    nc = m.get("node_counters")
    if not nc:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td class='n'>{v.get('nodes')}</td>"
        + "".join(f"<td class='n'>{_fmt(v.get(c))}</td>" for c in (
            "sent", "received", "forwarded", "delivered", "expired", "deleted",
            "stored_bundles_peak", "stored_bundles_end"))
        + f"<td class='n'>{html.escape(_fmt_bytes(v.get('stored_bytes_peak')))}</td></tr>"
        for k, v in nc.get("by_kind", {}).items())
    top = ", ".join(f"{html.escape(x['node'])} {x['stored_bundles']} at {x['t_s']:g} s"
                    for x in nc.get("top_stored", []))
    return ("<p class='note'>The agents' counters (<code>counters/&lt;node&gt;</code>), "
            "summed per node kind:</p><table><tr><th>kind</th><th>nodes</th><th>sent</th>"
            "<th>received</th><th>forwarded</th><th>delivered</th><th>expired</th>"
            "<th>deleted</th><th>stored peak</th><th>stored at end</th><th>bytes peak</th>"
            f"</tr>{rows}</table>"
            + (f"<p class='note'>Most bundles held by one node: {top}.</p>" if top else ""))


def build(run_dir: str | Path, *, log: Callable[[str], None] | None = None) -> Path:
    """Write ``<run>/report/index.html`` and its PNGs; returns the HTML path."""
    run = Path(run_dir)
    rd = RunDir(run)
    m = metrics_mod.load(run)  # (computed and written once when missing)
    out = rd.report_dir
    out.mkdir(exist_ok=True)
    plan = _plan(run)
    duration = float(m.get("duration_s") or 0.0)
    end_s = None
    if plan and plan.get("contacts"):
        end_s = duration or None
    tracks, stations = ground_tracks(run, duration or 3600.0)
    try:
        storage = storage_scan(run, m)
    except Exception as e:  # noqa: BLE001 - no storage figures rather than no report
        storage = None
        if log:
            log(f"report: storage skipped: {e}")
    figs: dict[str, str | None] = {}
    for key, fn in (
        ("map", lambda: fig_map(out, tracks, stations, plan)),
        ("timeline", lambda: fig_timeline(out, plan, stations, end_s, m.get("faults"))),
        ("query", lambda: fig_query_cdf(out, m)),
        ("bytes", lambda: fig_bytes(out, m)),
        ("bundles", lambda: fig_bundles(out, m)),
        ("links", lambda: fig_links(out, m)),
        ("apps", lambda: fig_apps(out, m)),
        ("storage_map", lambda: fig_storage_map(out, run, storage)),
        ("storage", lambda: fig_storage_series(out, storage)),
    ):
        try:
            figs[key] = fn()
        except Exception as e:  # noqa: BLE001 - one broken figure must not lose the report
            figs[key] = None
            if log:
                log(f"report: figure {key} skipped: {e}")

    def img(key: str, alt: str, missing: str) -> str:
        f = figs.get(key)
        if f:
            return f'<img src="{f}" alt="{html.escape(alt)}">'
        return f'<p class="note">{html.escape(missing)}</p>'

    title = f"netemu run {run.name}"
    scen = ""
    if rd.scenario_yaml.exists():
        scen = ' — scenario <a href="../scenario.yaml">scenario.yaml</a>'
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cards = "".join(
        _card(label, value, "bad" if label == "delivery ratio" and m.get("delivery_ratio") is not None
              and m["delivery_ratio"] < 0.99 else "")
        for label, value in headline(m)
    )
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="sub">{_fmt(duration, 's', 6)} of scenario time, {m.get('events', 0)} telemetry events{scen} · report made {made}</p>
<div class="cards">{cards}</div>
{_expect_html(run)}
<section><h2>Where the satellites went</h2>
{img('map', 'ground tracks map', 'No map: the run has no readable scenario.yaml.')}</section>
<section><h2>Contacts per ground station</h2>
{img('timeline', 'contact timeline', 'No contact plan (plan.json) in this run.')}
{_faults_html(m)}
{_weather_html(plan)}</section>
<section><h2>Ground-to-orbit queries</h2>
{img('query', 'query latency CDF', 'No query answers recorded.')}
<p class="note">Latency from the query leaving the ground client to the answer arriving back, in scenario seconds.
{_fmt(m.get('queries_answered'))} of {_fmt(m.get('queries_sent'))} queries answered; max {_fmt(m.get('query_latency_max_s'), 's')}.</p></section>
<section><h2>Downlink saved by onboard filtering</h2>
{img('bytes', 'bytes captured vs sent', 'No eo-filter results in this run.')}
<p class="note">{_fmt(m.get('tiles_captured'))} tiles captured, {_fmt(m.get('tiles_detected'))} flagged with a vessel and sent;
{_fmt_bytes(m.get('bytes_saved'))} never needed the downlink.</p></section>
<section><h2>Bundles</h2>
{img('bundles', 'bundles delivered and expired', 'No bundle events recorded.')}
<p class="note">Bundle latency (first seen → delivered): p50 {_fmt(m.get('bundle_latency_p50_s'), 's')}, p95 {_fmt(m.get('bundle_latency_p95_s'), 's')}.
Traffic outside contacts: {_fmt_bytes(m.get('traffic_outside_contacts_bytes'))} (from {html.escape(str(m.get('traffic_outside_contacts_source')))}).</p></section>
{_traffic_html(run, m)}
<section><h2>Where bundles wait</h2>
{img('storage_map', 'bundles stored per satellite on the map', 'No satellite storage recorded (no counters/<node> samples from satellites, or no readable scenario.yaml).')}
{img('storage', 'bundles stored over time', 'No storage series (fewer than two counters samples).')}
{_storage_note(m)}</section>
<section><h2>Link use</h2>
{img('links', 'link use', 'No per-link traffic recorded (no forwarded-bundle events from the agents, no captures under captures/).')}</section>
{_paths_html(run)}
<section><h2>Apps</h2>
{img('apps', 'app resource use', 'No app usage recorded.')}
{_apps_table(m)}</section>
<p class="note">All figures: <a href="../metrics.json">metrics.json</a> · events: <a href="../events.jsonl">events.jsonl</a></p>
</body></html>
"""
    page = rd.report_index
    page.write_text(body)
    return page
