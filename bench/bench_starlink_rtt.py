"""Round trips of a Starlink-like access link: ping from a user terminal to an internet host
behind the gateway (topologies/starlink-access.yaml), every 20 ms, through the emulator.

    sudo .venv/bin/python bench/bench_starlink_rtt.py [--duration-s 240] [--interval-s 0.02]
        [--terminal ut-seattle] [--png docs/img/starlink-rtt.png] [--json]
        [--scenario topologies/starlink-access-calibrated.yaml]

Prints the RTT percentiles, the loss, the instants where the RTT steps (and whether they
fall on the 15 s slots at :12/:27/:42/:57), the size of each step and of the largest
excess over the slot's level just after a slot boundary (the "handover spike"), and the
plan's own RTT for comparison. With ``--png`` it draws the time series and the CDF next to
the published Starlink figures quoted in docs/starlink.md. Time scale 1 (the RTTs are wall
times). Run names start with ``bsr``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from netemu.emulator import Emulation
from netemu.plan.contacts import ContactPlan
from netemu.plan.scenario import load_scenario
from netemu.plan.schedule import compute_plan

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = [
    # (label, RTT ms, CDF level): summary figures of real Starlink, see docs/starlink.md
    ("SpaceX, US median, peak hours, Mar 2024", 33.0, 0.5),
    ("SpaceX, US worst case (p99), peak hours, Mar 2024", 65.0, 0.99),
]
HUSTON_SHIFT_MS = (30.0, 80.0)
"""Huston 2024 (APNIC): the worst RTT shift at a handover in his ping series."""
STEP_MS = 0.5
"""An RTT change of more than this between two 0.5 s windows counts as a step."""

def ping_lines(out: str) -> list[tuple[float, int, float]]:
    """(receive wall time, icmp_seq, rtt_ms) from ``ping -D`` output."""
    pat = re.compile(r"^\[(\d+\.\d+)\].*icmp_seq=(\d+).*time=([\d.]+) ms", re.M)
    return [(float(a), int(b), float(c)) for a, b, c in pat.findall(out)]


def transmitted(out: str) -> int:
    m = re.search(r"(\d+) packets transmitted", out)
    return int(m.group(1)) if m else 0


def path_rtt_s(plan: ContactPlan, terminal: str, gateway: str, host: str, t: float) -> float:
    """The plan's round trip for a packet sent at ``t``: terminal → satellite → gateway →
    host and back, each link's delay taken when the packet reaches it (a link that holds
    frames at a handover holds the request, not also the reply)."""
    up = [c for c in plan.contacts if c.start_s <= t < c.end_s]
    sat = next(c.dst for c in up if c.src == terminal)
    hops = [(terminal, sat), (sat, gateway), (gateway, host)]
    now = t
    for a, b in hops + [(b, a) for a, b in reversed(hops)]:
        ab = [c for c in plan.contacts if c.src == a and c.dst == b]
        c = next((c for c in ab if c.start_s <= now < c.end_s), None) or \
            next(c for c in ab if c.start_s <= t < c.end_s)
        now += c.owlt_at(min(now, c.end_s))
    return now - t


def handovers(plan: ContactPlan, terminal: str, start: float, end: float) -> list[float]:
    """Instants in (start, end) where the terminal's satellite changes."""
    cs = sorted((c for c in plan.contacts if c.src == terminal), key=lambda c: c.start_s)
    return [c.start_s for c in cs[1:] if start < c.start_s < end]


def steps(t: np.ndarray, rtt: np.ndarray, win_s: float = 0.5) -> list[tuple[float, float]]:
    """Where the RTT level moves by more than STEP_MS between the 0.5 s before and after:
    (instant, change ms), one per change (the largest within 1 s)."""
    out: list[tuple[float, float]] = []
    edges = np.arange(t[0] + win_s, t[-1] - win_s, 0.05)
    for e in edges:
        a = rtt[(t >= e - win_s) & (t < e)]
        b = rtt[(t >= e) & (t < e + win_s)]
        if len(a) < 5 or len(b) < 5:
            continue
        d = float(np.median(b) - np.median(a))
        if abs(d) > STEP_MS:
            if out and e - out[-1][0] < 1.0:
                if abs(d) > abs(out[-1][1]):
                    out[-1] = (float(e), d)
            else:
                out.append((float(e), d))
    return out


def measure(args: argparse.Namespace) -> dict:
    sc = load_scenario(args.scenario)
    plan = compute_plan(sc)
    emu = Emulation(plan, run_name="bsrtt", time_scale=1.0)
    try:
        emu.start()
        assert emu.clock is not None
        emu.wait(until_s=args.start_s)
        p = emu.popen(args.terminal, ["ping", "-D", "-n", "-i", str(args.interval_s), "-w",
                                      str(int(args.duration_s)), "-W", "1",
                                      emu.node_addr(args.host)],
                      stdout=-1, stderr=-1, text=True)
        out, _err = p.communicate(timeout=args.duration_s + 30)
        clock = emu.clock
        shaper = emu.shaper_reason
    finally:
        emu.stop()
    rows = ping_lines(out)
    sent = transmitted(out)
    t_send = np.array([clock.now_s(w - r / 1e3) for w, _s, r in rows])
    rtt = np.array([r for _w, _s, r in rows])
    t0, t1 = float(t_send[0]), float(t_send[-1])
    ho = handovers(plan, args.terminal, t0, t1)
    st = steps(t_send, rtt)
    plan_rtt = np.array([path_rtt_s(plan, args.terminal, args.gateway, args.host, float(t)) * 1e3
                         for t in t_send])
    excess = rtt - plan_rtt
    spikes = []
    for b in ho:
        before = rtt[(t_send >= b - 1.0) & (t_send < b)]
        after = rtt[(t_send >= b) & (t_send < b + 1.0)]
        first = rtt[(t_send >= b) & (t_send < b + 0.5)]
        spikes.append({"t_s": round(b, 3), "past_minute_s": round(b % 60.0, 3),
                       "step_ms": round(float(np.median(after) - np.median(before)), 3)
                       if len(before) and len(after) else None,
                       "spike_ms": round(float(first.max() - np.median(after)), 3)
                       if len(first) and len(after) else None})
    # losses: sequence numbers that never came back, placed at their send time
    got = {s for _w, s, _r in rows}
    seq0 = min(got)  # iputils numbers from 1
    lost_t = [t0 + (k - seq0) * args.interval_s for k in range(1, sent + 1) if k not in got]
    for sp in spikes:
        sp["lost"] = sum(1 for x in lost_t if abs(x - sp["t_s"]) < 0.5)
    every, off = sc.schedule.reassign_s, sc.schedule.reassign_offset_s
    slot = [s for s, _d in st if min((s - off) % every, every - (s - off) % every) < 0.3]
    res = {
        "scenario": str(args.scenario), "terminal": args.terminal, "host": args.host,
        "shaper": shaper, "interval_s": args.interval_s, "window_s": [round(t0, 3), round(t1, 3)],
        "sent": sent, "received": len(rows), "loss": round(1 - len(rows) / sent, 5) if sent else None,
        "rtt_ms": {f"p{q}": round(float(np.percentile(rtt, q)), 3) for q in (5, 50, 95, 99)}
        | {"min": round(float(rtt.min()), 3), "max": round(float(rtt.max()), 3)},
        "plan_rtt_ms": {f"p{q}": round(float(np.percentile(plan_rtt, q)), 3)
                        for q in (5, 50, 95, 99)},
        "excess_over_plan_ms": {f"p{q}": round(float(np.percentile(excess, q)), 3)
                                for q in (5, 50, 95, 99)},
        "satellite_changes": len(ho),
        "rtt_steps": [{"t_s": round(s, 2), "past_minute_s": round(s % 60.0, 2),
                       "change_ms": round(d, 3)} for s, d in st],
        "rtt_steps_on_slots": f"{len(slot)}/{len(st)}",
        "sawtooth_period_s": round(statistics.median(np.diff([s for s, _d in st])), 2)
        if len(st) > 2 else None,
        "handovers": spikes,
    }
    if args.png:
        draw(args.png, t_send, rtt, plan_rtt, ho, res)
    if args.raw:
        Path(args.raw).write_text(json.dumps({"t_s": t_send.round(4).tolist(),
                                              "rtt_ms": rtt.tolist()}))
    return res


def draw(path: str, t: np.ndarray, rtt: np.ndarray, plan_rtt: np.ndarray, ho: list[float],
         res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.9, 1.1]})
    a.plot(t, rtt, ".", ms=1.5, color="tab:blue", label="ping (emulated)")
    a.plot(t, plan_rtt, "-", lw=0.8, color="black", label="plan (light time + access delays)")
    for k, h in enumerate(ho):
        a.axvline(h, color="tab:red", lw=0.6, ls=":", label="satellite change" if k == 0 else None)
    a.set_xlabel("scenario time (s)")
    a.set_ylabel("RTT (ms)")
    a.set_title(f"{res['terminal']} → {res['host']}, ping every {res['interval_s'] * 1e3:.0f} ms")
    a.legend(loc="upper right", fontsize=8)
    xs = np.sort(rtt)
    b.plot(xs, np.arange(1, len(xs) + 1) / len(xs), color="tab:blue", label="ours (emulated)")
    for (label, x, q), m in zip(PUBLISHED, ("o", "s"), strict=True):
        b.plot([x], [q], m, color="tab:orange", label=label)
    b.axvspan(*HUSTON_SHIFT_MS, color="tab:orange", alpha=0.12,
              label="Huston 2024: worst handover shift, 30 → 80 ms")
    b.set_xlim(0, 100)
    b.set_xlabel("RTT (ms)")
    b.set_ylabel("CDF")
    b.grid(alpha=0.3)
    b.legend(loc="lower right", fontsize=6.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def replot(args: argparse.Namespace) -> None:
    raw = json.loads(Path(args.replot).read_text())
    plan = compute_plan(load_scenario(args.scenario))
    t, rtt = np.array(raw["t_s"]), np.array(raw["rtt_ms"])
    plan_rtt = np.array([path_rtt_s(plan, args.terminal, args.gateway, args.host, float(x)) * 1e3
                         for x in t])
    ho = handovers(plan, args.terminal, float(t[0]), float(t[-1]))
    draw(args.png, t, rtt, plan_rtt, ho, {"terminal": args.terminal, "host": args.host,
                                          "interval_s": args.interval_s})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default=str(ROOT / "topologies" / "starlink-access.yaml"))
    ap.add_argument("--terminal", default="ut-seattle")
    ap.add_argument("--gateway", default="gw-redmond")
    ap.add_argument("--host", default="internet")
    ap.add_argument("--start-s", type=float, default=5.0)
    ap.add_argument("--duration-s", type=float, default=240.0)
    ap.add_argument("--interval-s", type=float, default=0.02)
    ap.add_argument("--png", help="draw the time series and CDF here")
    ap.add_argument("--raw", help="write the samples (t_s, rtt_ms) here as JSON")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--replot", metavar="RAW",
                    help="no emulation: draw --png from the samples an earlier --raw wrote")
    args = ap.parse_args(argv)
    if args.replot:
        replot(args)
        return 0
    t = time.monotonic()
    res = measure(args)
    res["wall_s"] = round(time.monotonic() - t, 1)
    if args.json:
        print(json.dumps(res))
    else:
        print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
