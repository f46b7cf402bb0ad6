"""Packet captures of emulated links, and what they tell about bundles.

- :func:`tcpdump_argv` / :class:`LinkCapture`: run ``tcpdump`` inside a host's network
  namespace on the interface of a link (``netemu capture``, or a scenario's ``capture:``
  option through the runner), writing a pcap plus a JSON sidecar that names the link;
- :func:`read_transfers`: TCP streams on port 4556 reassembled and parsed as TCPCLv4, each
  complete transfer decoded as a BPv7 bundle (id, size, when its first and last bytes
  crossed the link);
- :func:`bundle_paths`: a bundle's path hop by hop across several link captures — which
  link, when, and how long it waited at each node for its next contact;
- :func:`outside_contacts_from_captures`: DTN bytes seen on a link while the plan says the
  link was down (for the ``traffic_outside_contacts_bytes`` metric).

Times: pcap timestamps are wall clock; they become scenario seconds through the clock in
the sidecar (``epoch``, ``time_scale``, ``t0_wall``, ``t0_s``), else through a fit of the
run's events.jsonl (which carries both clocks).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from netemu.errors import InputError, NetemuError

TCPCL_PORT = 4556
CONTACT_SLACK_S = 1.0
_DTN_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


class CaptureError(NetemuError):
    """tcpdump could not be started, or a capture could not be read."""


# --------------------------------------------------------------------------- capturing


def tcpdump_argv(netns: str | None, iface: str, out: Path, bpf: str = "") -> list[str]:
    """The command that captures ``iface`` inside namespace ``netns`` into ``out``
    (whole frames, written packet by packet so a killed capture is still readable).

    ``--immediate-mode`` hands each frame to tcpdump at once: otherwise frames wait in
    the kernel's TPACKET_V3 ring until a block times out, and whatever still waits there
    when the capture is stopped is lost (seen here: the last second of a link missing)."""
    cmd = ["tcpdump", "--immediate-mode", "-i", iface, "-n", "-U", "-s", "0", "-w", str(out)]
    if bpf:
        cmd += bpf.split()
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return cmd


@dataclass
class CaptureSpec:
    """What one capture records: the link (``a``, ``b``), where (namespace, interface,
    filter), and the scenario clock if known."""

    a: str
    b: str
    netns: str | None
    iface: str
    bpf: str = ""
    clock: dict[str, Any] | None = None


class LinkCapture:
    """A running tcpdump; ``stop()`` ends it and writes the sidecar ``<pcap>.json``."""

    def __init__(self, spec: CaptureSpec, out: Path) -> None:
        self.spec = spec
        self.out = Path(out)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_wall = 0.0

    def start(self, ready_timeout_s: float = 5.0) -> LinkCapture:
        if not shutil.which("tcpdump"):
            raise CaptureError("tcpdump not found: install Debian's tcpdump (scripts/dev setup)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.started_wall = time.time()
        self.proc = subprocess.Popen(
            tcpdump_argv(self.spec.netns, self.spec.iface, self.out, self.spec.bpf),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        # tcpdump says "listening on ..." once the socket is open: wait for it, so that
        # packets sent right after start() are not missed
        deadline = time.time() + ready_timeout_s
        assert self.proc.stderr is not None
        import os
        import select

        fd = self.proc.stderr.fileno()
        os.set_blocking(fd, False)
        buf = b""
        while time.time() < deadline:
            if self.proc.poll() is not None:
                err = buf + (self.proc.stderr.read() or b"")
                raise CaptureError(f"tcpdump failed: {err.decode(errors='replace').strip()}")
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                buf += os.read(fd, 4096)
                if b"listening on" in buf:
                    break
        self._write_sidecar()
        return self

    def _write_sidecar(self) -> None:
        side = {"a": self.spec.a, "b": self.spec.b, "netns": self.spec.netns,
                "iface": self.spec.iface, "filter": self.spec.bpf,
                "started_wall": self.started_wall, "clock": self.spec.clock}
        sidecar_path(self.out).write_text(json.dumps(side, indent=1))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


def sidecar_path(pcap: Path) -> Path:
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
    parsed: dict[tuple, list[tuple[Any, int, int]]] = {}
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
    for key, msgs in parsed.items():
        src, sport, dst, dport = key
        rev = (dst, dport, src, sport)
        ipn_ = ip_names or {}
        sender = node_of.get(key) or ipn_.get(src) or f"{src}:{sport}"
        receiver = node_of.get(rev) or ipn_.get(dst) or f"{dst}:{dport}"
        pending: dict[int, tuple[bytearray, float]] = {}
        for msg, w0, w1 in msgs:
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
    for f in sorted(run_dir.glob("agents/*/agent.jsonl")):
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
    pairs: list[tuple[float, float]] = []
    if not events_path.exists():
        return pairs
    with open(events_path) as f:
        for line in f:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(ev.get("wall"), (int, float)) and isinstance(ev.get("t_s"), (int, float)):
                pairs.append((float(ev["wall"]), float(ev["t_s"])))
    return pairs


def wall_to_scenario(clock: dict[str, Any] | None, events_path: Path | None,
                     run_dir: Path | None = None) -> Callable[[float], float]:
    """Wall → scenario seconds: the sidecar clock; else a least-squares fit of the
    agents' (wall, scenario) log stamps (exact); else of events.jsonl (wall at receipt);
    else identity."""
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


# --------------------------------------------------------------------------- runs


def _captures(run: Path) -> list[tuple[Path, dict[str, Any]]]:
    d = run / "captures"
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("*.pcap")):
        side = {}
        sp = sidecar_path(p)
        if sp.exists():
            try:
                side = json.loads(sp.read_text())
            except json.JSONDecodeError:
                side = {}
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
    if plan is None and (run / "plan.json").exists():
        plan = json.loads((run / "plan.json").read_text())
    names = _plan_names(plan)
    ip_names = plan_ip_names(run / "plan.json") if (run / "plan.json").exists() else {}
    seen: set[tuple] = set()
    out: list[Transfer] = []
    for pcap, side in _captures(run):
        to_s = wall_to_scenario(side.get("clock"), run / "events.jsonl", run)
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
            prev_end = ts[0].creation_ms / 1000.0 - (epoch - _DTN_EPOCH).total_seconds()
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
    plan = json.loads((run / "plan.json").read_text()) if (run / "plan.json").exists() else None
    epoch = None
    if plan and plan.get("epoch"):
        epoch = datetime.fromisoformat(str(plan["epoch"]).replace("Z", "+00:00"))
    return bundle_paths(run_transfers(run, plan), epoch)


def outside_contacts_from_captures(run: Path, plan: dict[str, Any] | None) -> int | None:
    """DTN payload bytes (TCP port 4556) captured on a link while no contact of that node
    pair was up (either direction, ±1 s); None when the run has no captures with sidecars.

    Only payload-carrying segments count: a sender's SYN retries towards a link that is
    down are not traffic across the link.
    """
    caps = [(p, s) for p, s in _captures(Path(run)) if s.get("a") and s.get("b")]
    if not caps:
        return None
    windows: dict[frozenset, list[tuple[float, float]]] = defaultdict(list)
    for c in (plan or {}).get("contacts", []):
        windows[frozenset((c["from"], c["to"]))].append((float(c["start_s"]), float(c["end_s"])))
    total = 0
    for pcap, side in caps:
        w = windows.get(frozenset((side["a"], side["b"])), [])
        to_s = wall_to_scenario(side.get("clock"), Path(run) / "events.jsonl", Path(run))
        for wall, _s, sport, _d, dport, _seq, _f, payload in _packets(pcap):
            if not payload or TCPCL_PORT not in (sport, dport):
                continue
            t = to_s(wall)
            if not any(a - CONTACT_SLACK_S <= t <= b + CONTACT_SLACK_S for a, b in w):
                total += len(payload)
    return total


def transfers_json(transfers: list[Transfer]) -> list[dict[str, Any]]:
    return [asdict(t) for t in transfers]


# --------------------------------------------------------------------------- resolution


def parse_link(text: str) -> tuple[str, str]:
    """``a-b``? Node names may contain '-': accept ``a:b``, ``a,b``, ``a->b`` or ``a/b``."""
    for sep in ("->", ":", ",", "/", "~"):
        if sep in text:
            a, _, b = text.partition(sep)
            if a and b:
                return a, b
    raise InputError(f"link {text!r}: write it as A:B (node names), e.g. tb-1:sanya", field="LINK")


def resolve_link(plan_path: Path, a: str, b: str) -> tuple[str, str]:
    """(interface in ``a``'s host, BPF filter) capturing the link a–b.

    An ISL has its own interface; ground links use slot interfaces that move from pass to
    pass, so those capture every interface of ``a`` filtered to ``b``'s addresses.
    """
    from netemu.emulator.layout import plan_layout
    from netemu.plan.contacts import ContactPlan

    plan = ContactPlan.load(plan_path)
    for n in (a, b):
        if n not in plan.nodes:
            known = ", ".join(sorted(plan.nodes)[:12])
            raise InputError(f"no node {n!r} in the plan (nodes: {known}…)", source=str(plan_path),
                             field="LINK")
    lay = plan_layout(plan)
    eps = {e.index: e for e in lay.endpoints}
    for p in lay.periods:
        if {p.a, p.b} == {a, b} and p.kind != "gsl":
            ep = eps[p.ep_a if p.a == a else p.ep_b]
            return ep.ifname, ""
    if not any({c.src, c.dst} == {a, b} for c in plan.contacts):
        raise InputError(f"{a} and {b} never have a contact in this plan", source=str(plan_path),
                         field="LINK")
    addrs = [lay.node_addr[b]] + [eps[i].addr for i in lay.node_endpoints.get(b, [])]
    return "any", " or ".join(f"host {x}" for x in addrs)


def find_netns(node: str, prefix: str | None = None) -> str:
    """The namespace of ``node``'s host: ``<run>-<node>`` (``prefix`` = the emulator's run
    name when several runs are up)."""
    from netemu.emulator.netns import list_netns

    cands = [n for n in list_netns() if n.endswith("-" + node) and (prefix is None or n == f"{prefix}-{node}")]
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise InputError(f"no running host for node {node!r} (no network namespace '*-{node}'): "
                         "is the run still up?", field="TARGET")
    raise InputError(f"several runs have a host {node!r} ({', '.join(cands)}): pass --netns",
                     field="TARGET")


# --------------------------------------------------------------------------- scenarios


def clock_from_env(env: dict[str, str]) -> dict[str, Any] | None:
    """The sidecar clock from the ``NETEMU_*`` clock variables (see netemu.runtime.clock)."""
    if "NETEMU_T0_WALL" not in env:
        return None
    return {"epoch": env.get("NETEMU_EPOCH"), "time_scale": float(env.get("NETEMU_TIME_SCALE", 1)),
            "t0_wall": float(env["NETEMU_T0_WALL"]), "t0_s": float(env.get("NETEMU_T0_S", 0))}


def parse_capture_section(section: Any, *, source: str = "scenario") -> list[tuple[str, str]]:
    """A scenario's ``capture:`` section → links (A, B) to capture for the whole run.

    Accepted: ``capture: [tb-1:sanya, tb-1:tb-2]`` or ``capture: {links: [...]}``.
    """
    if section is None:
        return []
    links = section.get("links") if isinstance(section, dict) else section
    if isinstance(section, dict) and set(section) - {"links"}:
        bad = sorted(set(section) - {"links"})[0]
        raise InputError(f"unknown key {bad!r} (expected links)", source=source, field=f"capture.{bad}")
    if not isinstance(links, list) or not all(isinstance(x, str) for x in links):
        raise InputError("expected a list of links A:B", source=source, field="capture")
    out = []
    for i, text in enumerate(links):
        try:
            out.append(parse_link(text))
        except InputError as e:
            raise InputError(e.message, source=source, field=f"capture[{i}]") from None
    return out


def start_scenario_captures(
    links: list[tuple[str, str]], run_dir: Path, netns_of: Callable[[str], str],
    clock_env: dict[str, str] | None = None,
) -> list[LinkCapture]:
    """Start one capture per link into ``<run>/captures/A_B.pcap`` (for the runner: call
    after the emulation is up, ``stop()`` each before it goes down). ``netns_of`` maps a
    node to its host's namespace name."""
    plan_path = Path(run_dir) / "plan.json"
    clock = clock_from_env(clock_env or {})
    started: list[LinkCapture] = []
    try:
        for a, b in links:
            iface, bpf = resolve_link(plan_path, a, b)
            spec = CaptureSpec(a, b, netns_of(a), iface, bpf, clock)
            started.append(LinkCapture(spec, Path(run_dir) / "captures" / f"{a}_{b}.pcap").start())
    except BaseException:
        for c in started:
            c.stop()
        raise
    return started
