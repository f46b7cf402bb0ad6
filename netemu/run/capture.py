"""Taking packet captures of emulated links: ``tcpdump`` inside a host's network namespace.

:class:`LinkCapture` runs ``tcpdump`` on the interface of a link (``netemu capture``, or a
scenario's ``capture:`` option through the runner) and writes a pcap plus a JSON sidecar
that names the link and carries the scenario clock; :mod:`netemu.analysis.pcap` reads
them back.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netemu.analysis.pcap import CaptureError, sidecar_path
from netemu.config import Fields
from netemu.errors import InputError
from netemu.runtime.clock import DTN_EPOCH, NETEMU_EPOCH, NETEMU_T0_WALL, ScenarioClock
from netemu.runtime.rundir import RunDir

__all__ = ["CaptureError", "CaptureSpec", "LinkCapture", "clock_from_env", "find_netns",
           "parse_capture_section", "parse_link", "resolve_link", "start_scenario_captures",
           "tcpdump_argv"]


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


def clock_from_env(env: Mapping[str, str]) -> dict[str, Any] | None:
    """The sidecar clock from the ``NETEMU_*`` clock variables (None without
    ``NETEMU_T0_WALL``); ``epoch`` is None when ``NETEMU_EPOCH`` is not set."""
    if not env.get(NETEMU_T0_WALL):
        return None
    clk = ScenarioClock.from_env(env, default=ScenarioClock.start(DTN_EPOCH))
    epoch = clk.to_env()[NETEMU_EPOCH] if env.get(NETEMU_EPOCH) else None
    return {"epoch": epoch, "time_scale": clk.time_scale, "t0_wall": clk.t0_wall,
            "t0_s": clk.t0_s}


def parse_capture_section(section: Fields | Any, *,
                          source: str = "scenario") -> list[tuple[str, str]]:
    """A scenario's ``capture:`` section (``Scenario.section("capture")``, or its raw
    value) → links (A, B) to capture for the whole run.

    Accepted: ``capture: [tb-1:sanya, tb-1:tb-2]`` or ``capture: {links: [...]}``.
    """
    sec = section if isinstance(section, Fields) else Fields(section, source=source,
                                                              path="capture")
    if sec.is_none():
        return []
    if isinstance(sec.value, dict):
        sec.check_keys(("links",))
        sec = sec.child("links")
    if not isinstance(sec.value, list) or not all(isinstance(x, str) for x in sec.value):
        raise sec.error("expected a list of links A:B")
    out = []
    for item in sec.items():
        try:
            out.append(parse_link(item.value))
        except InputError as e:
            raise item.error(e.message) from None
    return out


def start_scenario_captures(
    links: list[tuple[str, str]], run_dir: Path, netns_of: Callable[[str], str],
    clock_env: dict[str, str] | None = None,
) -> list[LinkCapture]:
    """Start one capture per link into ``<run>/captures/A_B.pcap`` (for the runner: call
    after the emulation is up, ``stop()`` each before it goes down). ``netns_of`` maps a
    node to its host's namespace name."""
    rd = RunDir(Path(run_dir))
    plan_path = rd.plan_json
    clock = clock_from_env(clock_env or {})
    started: list[LinkCapture] = []
    try:
        for a, b in links:
            iface, bpf = resolve_link(plan_path, a, b)
            spec = CaptureSpec(a, b, netns_of(a), iface, bpf, clock)
            started.append(LinkCapture(spec, rd.capture_pcap(a, b)).start())
    except BaseException:
        for c in started:
            c.stop()
        raise
    return started
