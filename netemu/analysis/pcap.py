"""Reading packet captures of emulated links: what they tell about bundles.

The captures are taken by :mod:`netemu.run.capture` (``netemu capture``, or a scenario's
``capture:`` option): a pcap per link plus a JSON sidecar ``<pcap>.json`` that names the
link and carries the scenario clock.

- :func:`read_transfers`: TCP streams on port 4556 reassembled and parsed as TCPCLv4, each
  complete transfer decoded as a BPv7 bundle (id, size, when its first and last bytes
  crossed the link);
- :func:`bundle_paths`: a bundle's path hop by hop across several link captures — which
  link, when, and how long it waited at each node for its next contact;
- :func:`outside_contacts_from_captures`: DTN bytes seen on a link while the plan says the
  link was down (for the ``traffic_outside_contacts_bytes`` metric).

Times: pcap timestamps are wall clock; they become scenario seconds through the run's
clock segments (``run.json``'s ``clock``: every pause, resume and change of time scale of
a ``--view`` run), else the clock in the sidecar (``epoch``, ``time_scale``, ``t0_wall``,
``t0_s``: the run's first mapping), else a fit of the run's events.jsonl (which carries
both clocks).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from netemu.errors import NetemuError
from netemu.runtime.clock import DTN_EPOCH, ClockSegment, scenario_s_at
from netemu.runtime.rundir import RunDir, read_events

TCPCL_PORT = 4556
CONTACT_SLACK_S = 1.0


class CaptureError(NetemuError):
    """tcpdump could not be started, or a capture could not be read."""


# --------------------------------------------------------------------------- files


def sidecar_path(pcap: Path) -> Path:
    """The JSON sidecar of a capture: the link (``a``, ``b``), namespace, interface,
    filter, ``started_wall`` and the scenario ``clock``."""
    return Path(str(pcap) + ".json")


# --------------------------------------------------------------------------- reading


@dataclass
class Transfer:
    """One complete TCPCL transfer seen in a capture: a bundle crossing a link."""

    link: str  # "a->b" (sender → receiver) when known, else "ip:port->ip:port"
    sender: str
    receiver: str
    transfer_id: int
    bundle_id: str | None
    source: str | None
    destination: str | None
    creation_ms: int | None
    size_bytes: int
    first_wall: float
    last_wall: float
    first_t_s: float = 0.0
    last_t_s: float = 0.0


def _packets(pcap: Path) -> Iterable[tuple[float, str, int, str, int, int, int, bytes]]:
    """(wall, src, sport, dst, dport, seq, tcp flags, payload) of each TCP packet."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import PcapReader

    try:
        reader = PcapReader(str(pcap))
    except (OSError, Exception) as e:  # scapy raises Scapy_Exception for bad files
        raise CaptureError(f"{pcap}: not a readable pcap ({e})") from e
    with reader:
        for pkt in reader:
            ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            tcp = pkt.getlayer(TCP)
            if ip is None or tcp is None:
                continue
            pl = tcp.payload
            data = pl.original if getattr(pl, "original", None) else bytes(pl)
            yield (float(pkt.time), ip.src, int(tcp.sport), ip.dst, int(tcp.dport), int(tcp.seq),
                   int(tcp.flags), bytes(data))


def _streams(pcap: Path, port: int) -> dict[tuple, list[tuple[int, float, bytes]]]:
    flows: dict[tuple, list[tuple[int, float, bytes]]] = defaultdict(list)
    isn: dict[tuple, int] = {}
    for wall, src, sport, dst, dport, seq, flags, payload in _packets(pcap):
        if port not in (sport, dport):
            continue
        key = (src, sport, dst, dport)
        if flags & 0x02:  # SYN: data starts at seq + 1
            isn[key] = seq + 1
        if payload:
            flows[key].append((seq, wall, payload))
    out = {}
    for key, segs in flows.items():
        base = isn.get(key, min(s for s, _, _ in segs))
        # offsets relative to the stream start, modulo 2^32 wrap
        rel = sorted((((s - base) % (1 << 32)), w, p) for s, w, p in segs)
        out[key] = rel
    return out


def _assemble(segs: list[tuple[int, float, bytes]]) -> tuple[bytes, list[tuple[int, float]]]:
    """Contiguous stream from offset 0 (retransmissions dropped, stops at a gap), and the
    (offset, wall) at which each new piece arrived."""
    data = bytearray()
    times: list[tuple[int, float]] = []
    for off, wall, payload in segs:
        end = off + len(payload)
        if off > len(data):
            break  # a gap: bytes the capture missed
        if end <= len(data):
            continue  # retransmission
        new = payload[len(data) - off :]
        times.append((len(data), wall))
        data += new
    return bytes(data), times


def _wall_at(times: list[tuple[int, float]], offset: int) -> float:
    """Wall time at which stream byte ``offset`` arrived."""
    lo, hi = 0, len(times) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if times[mid][0] <= offset:
            lo = mid
        else:
            hi = mid - 1
    return times[lo][1]


def read_transfers(pcap: str | Path, *, names: dict[int, str] | None = None,
                   port: int = TCPCL_PORT, ip_names: dict[str, str] | None = None) -> list[Transfer]:
    """Complete TCPCL transfers in a capture, in order of their last byte.

    ``names`` maps ipn node numbers to node names (from plan.json), so a link reads
    ``sat-1->gs-a``; the sender is known from its SESS_INIT node ID, or, for a session
    that started before the capture, from ``ip_names`` (address → node).
    """
    from netemu.analysis.scapy_dtn import decode_bundle_summary
    from netemu.dtn import tcpcl

    names = names or {}
    streams = _streams(Path(pcap), port)
    node_of: dict[tuple, str] = {}
    parsed: dict[tuple, list[tuple[Any, float, float]]] = {}
    for key, segs in streams.items():
        data, times = _assemble(segs)
        if not data:
            continue
        msgs = []
        p = 0
        if data[:4] == tcpcl.MAGIC:
            p = tcpcl.CONTACT_HEADER_LEN
        while p < len(data):
            try:
                got = tcpcl.decode_message(data, p, max_ext_bytes=1 << 24)
            except tcpcl.TcpclError:
                break
            if got is None:
                break
            msg, end = got
            msgs.append((msg, p, end))
            if isinstance(msg, tcpcl.SessInit):
                node_of[key] = _node_name(msg.node_id, names)
            p = end
        parsed[key] = [(m, _wall_at(times, s), _wall_at(times, e - 1)) for m, s, e in msgs]
    out: list[Transfer] = []
    for key, timed in parsed.items():
        src, sport, dst, dport = key
        rev = (dst, dport, src, sport)
        ipn_ = ip_names or {}
        sender = node_of.get(key) or ipn_.get(src) or f"{src}:{sport}"
        receiver = node_of.get(rev) or ipn_.get(dst) or f"{dst}:{dport}"
        pending: dict[int, tuple[bytearray, float]] = {}
        for msg, w0, w1 in timed:
            if not isinstance(msg, tcpcl.XferSegment):
                continue
            tid = msg.transfer_id
            if msg.flags & tcpcl.SEG_START or tid not in pending:
                pending[tid] = (bytearray(), w0)
            pending[tid][0].extend(bytes(msg.data))
            if msg.flags & tcpcl.SEG_END:
                buf, first = pending.pop(tid)
                info = decode_bundle_summary(bytes(buf))
                out.append(Transfer(f"{sender}->{receiver}", sender, receiver, tid,
                                    info.get("bundle_id"), info.get("source"),
                                    info.get("destination"), info.get("creation_ms"),
                                    len(buf), first, w1))
    out.sort(key=lambda t: t.last_wall)
    return out


def _node_name(node_id: str, names: dict[int, str]) -> str:
    if node_id.startswith("ipn:"):
        try:
            n = int(node_id[4:].split(".")[0])
        except ValueError:
            return node_id
        return names.get(n, node_id)
    return node_id


# --------------------------------------------------------------------------- clocks


def _agent_clock_pairs(run_dir: Path, per_file: int = 50) -> list[tuple[float, float]]:
    """(wall, scenario) pairs from the agents' logs: each line carries both readings of
    the one scenario clock at the same instant (``t``, ``ts``)."""
    pairs: list[tuple[float, float]] = []
    for f in RunDir(run_dir).agent_logs():
        try:
            with open(f) as fh:
                for i, line in enumerate(fh):
                    if i >= per_file:
                        break
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(rec.get("t"), (int, float)) and isinstance(rec.get("ts"), (int, float)):
                        pairs.append((float(rec["t"]), float(rec["ts"])))
        except OSError:
            continue
    return pairs


def _event_clock_pairs(events_path: Path) -> list[tuple[float, float]]:
    """(wall at receipt, t_s) pairs of events.jsonl (receipt lags the event a little)."""
    return [(float(ev["wall"]), float(ev["t_s"])) for ev in read_events(events_path)
            if isinstance(ev.get("wall"), (int, float)) and isinstance(ev.get("t_s"), (int, float))]


def wall_to_scenario(clock: dict[str, Any] | None, events_path: Path | None,
                     run_dir: Path | None = None) -> Callable[[float], float]:
    """Wall → scenario seconds: the clock's ``segments`` (run.json's clock: exact across
    pauses and changes of scale); else its one mapping (a sidecar's clock); else a
    least-squares fit of the agents' (wall, scenario) log stamps (exact); else of
    events.jsonl (wall at receipt); else identity."""
    segs = _segments(clock)
    if segs:
        return lambda w: scenario_s_at(segs, w)
    if clock and "t0_wall" in clock:
        t0w = float(clock["t0_wall"])
        t0s = float(clock.get("t0_s", 0.0))
        scale = float(clock.get("time_scale", 1.0))
        return lambda w: t0s + (w - t0w) * scale
    pairs: list[tuple[float, float]] = []
    if run_dir is not None:
        pairs = _agent_clock_pairs(run_dir)
    if len(pairs) < 2 and events_path is not None:
        pairs = _event_clock_pairs(events_path)
    if len(pairs) >= 2 and max(p[0] for p in pairs) - min(p[0] for p in pairs) > 1e-3:
        import numpy as np

        w = np.array([p[0] for p in pairs])
        t = np.array([p[1] for p in pairs])
        slope, icept = np.polyfit(w - w.mean(), t, 1)
        wm = float(w.mean())
        return lambda x: float(icept + slope * (x - wm))
    if pairs:
        off = pairs[0][1] - pairs[0][0]
        return lambda x: x + off
    return lambda x: x


def _segments(clock: dict[str, Any] | None) -> list[ClockSegment]:
    """A clock record's segments in order; [] without them (or when one is malformed)."""
    raw = (clock or {}).get("segments")
    if not isinstance(raw, list) or not raw:
        return []
    try:
        return [ClockSegment.from_obj(s) for s in raw]
    except (ValueError, AttributeError):
        return []


# --------------------------------------------------------------------------- runs


def run_clock(run: Path) -> dict[str, Any] | None:
    """``run.json``'s ``clock`` when it has the run's segments (written by the runner),
    else None."""
    try:
        meta = json.loads(RunDir(run).run_json.read_text())
    except (OSError, ValueError):
        return None
    clock = meta.get("clock") if isinstance(meta, dict) else None
    return clock if isinstance(clock, dict) and _segments(clock) else None


def _captures(run: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Each capture with its sidecar; the sidecar's ``clock`` becomes the run's (with its
    segments) when ``run.json`` has one: a sidecar keeps the mapping of its start only."""
    out = []
    clock = run_clock(run)
    for p in RunDir(run).pcaps():
        side = {}
        sp = sidecar_path(p)
        if sp.exists():
            try:
                side = json.loads(sp.read_text())
            except json.JSONDecodeError:
                side = {}
        if clock is not None:
            side["clock"] = clock
        out.append((p, side))
    return out


def _plan_names(plan: dict[str, Any] | None) -> dict[int, str]:
    return {int(n): name for name, n in ((plan or {}).get("nodes") or {}).items()}


def plan_ip_names(plan_path: Path) -> dict[str, str]:
    """Address → node for every node and interface address the emulator gives a plan
    (the layout is a pure function of the plan); {} when it cannot be computed."""
    try:
        from netemu.emulator.layout import plan_layout
        from netemu.plan.contacts import ContactPlan

        lay = plan_layout(ContactPlan.load(plan_path))
    except Exception:  # noqa: BLE001 - names are a nicety; addresses still identify hops
        return {}
    out = {addr: node for node, addr in lay.node_addr.items()}
    out.update({e.addr: e.node for e in lay.endpoints})
    return out


def run_transfers(run: Path, plan: dict[str, Any] | None = None) -> list[Transfer]:
    """Every transfer in ``<run>/captures/*.pcap``, times in scenario seconds; a transfer
    seen in two captures of the same link (both ends) counts once."""
    rd = RunDir(run)
    if plan is None:
        plan = rd.plan()
    names = _plan_names(plan)
    ip_names = plan_ip_names(rd.plan_json) if rd.plan_json.exists() else {}
    seen: set[tuple] = set()
    out: list[Transfer] = []
    for pcap, side in _captures(run):
        to_s = wall_to_scenario(side.get("clock"), rd.events_jsonl, run)
        for t in read_transfers(pcap, names=names, ip_names=ip_names):
            key = (t.link, t.bundle_id, t.transfer_id, round(t.first_wall, 3))
            if key in seen:
                continue
            seen.add(key)
            t.first_t_s, t.last_t_s = to_s(t.first_wall), to_s(t.last_wall)
            out.append(t)
    out.sort(key=lambda t: t.last_t_s)
    return out


def bundle_paths(transfers: list[Transfer], epoch: datetime | None = None) -> dict[str, list[dict[str, Any]]]:
    """{bundle_id: hops}; each hop ``{"link", "first_t_s", "last_t_s", "waited_s"}`` in
    order, ``waited_s`` being the time the bundle spent at the hop's sending node before
    its first byte left (from the previous hop's last byte, or for the first hop from
    the bundle's creation time when ``epoch`` is given)."""
    by: dict[str, list[Transfer]] = defaultdict(list)
    for t in transfers:
        if t.bundle_id:
            by[t.bundle_id].append(t)
    out: dict[str, list[dict[str, Any]]] = {}
    for bid, ts in by.items():
        ts.sort(key=lambda t: t.first_t_s)
        hops = []
        prev_end: float | None = None
        if epoch is not None and ts[0].creation_ms:
            prev_end = ts[0].creation_ms / 1000.0 - (epoch - DTN_EPOCH).total_seconds()
        for t in ts:
            hops.append({"link": t.link, "first_t_s": t.first_t_s, "last_t_s": t.last_t_s,
                         "size_bytes": t.size_bytes,
                         "waited_s": None if prev_end is None else max(0.0, t.first_t_s - prev_end)})
            prev_end = t.last_t_s
        out[bid] = hops
    return out


def bundle_paths_from_run(run: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Hop-by-hop paths of every bundle in the run's captures (see :func:`bundle_paths`)."""
    run = Path(run)
    plan = RunDir(run).plan()
    epoch = None
    if plan and plan.get("epoch"):
        epoch = datetime.fromisoformat(str(plan["epoch"]).replace("Z", "+00:00"))
    return bundle_paths(run_transfers(run, plan), epoch)


def outside_contacts_from_captures(run: Path, plan: dict[str, Any] | None) -> int | None:
    """DTN payload bytes (TCP port 4556) captured on a link while no contact of that node
    pair was up (either direction, ±1 s); None when the run has no captures with sidecars.

    Only payload-carrying segments count: a sender's SYN retries towards a link that is
    down are not traffic across the link. Before the window opens (the agents' bring-up,
    while the clock waits) the links hold their state at the window's start, so a packet
    then counts as sent at that start: the sessions agents open over a contact that is up
    when the window opens are not outside it.
    """
    caps = [(p, s) for p, s in _captures(Path(run)) if s.get("a") and s.get("b")]
    if not caps:
        return None
    opens_s = _window_start_s(Path(run))
    windows: dict[frozenset, list[tuple[float, float]]] = defaultdict(list)
    for c in (plan or {}).get("contacts", []):
        windows[frozenset((c["from"], c["to"]))].append((float(c["start_s"]), float(c["end_s"])))
    total = 0
    for pcap, side in caps:
        w = windows.get(frozenset((side["a"], side["b"])), [])
        to_s = wall_to_scenario(side.get("clock"), RunDir(Path(run)).events_jsonl, Path(run))
        for wall, _s, sport, _d, dport, _seq, _f, payload in _packets(pcap):
            if not payload or TCPCL_PORT not in (sport, dport):
                continue
            t = max(to_s(wall), opens_s)
            if not any(a - CONTACT_SLACK_S <= t <= b + CONTACT_SLACK_S for a, b in w):
                total += len(payload)
    return total


def _window_start_s(run: Path) -> float:
    """The scenario time at which the run's window opened (run.json), or -inf when the
    run directory does not say."""
    try:
        meta = json.loads(RunDir(run).run_json.read_text())
        return float(meta["window"]["start_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return -math.inf


def transfers_json(transfers: list[Transfer]) -> list[dict[str, Any]]:
    return [asdict(t) for t in transfers]
