"""Checks that netem, and nothing else, shapes an emulation's links: each raises
AssertionError with what it saw. Kept apart from the tests so that a test can also show
that they catch an emulation whose links are wired but not shaped."""

from __future__ import annotations

import json
import re

from netemu.emulator import Emulation


def qdiscs(emu: Emulation, node: str, ifname: str) -> list[dict]:
    """``tc -s qdisc show`` of one interface inside its node's namespace, as JSON."""
    r = emu.run_cmd(node, ["tc", "-j", "-s", "qdisc", "show", "dev", ifname], timeout=30)
    assert r.returncode == 0, f"tc qdisc show dev {ifname} in {node}: {r.stderr}"
    return json.loads(r.stdout or "[]")


def root_netem(emu: Emulation, node: str, ifname: str) -> dict:
    """The root netem qdisc of ``ifname``; fails when the link has none (relay, or a
    kernel backend that fell back to no shaping)."""
    found = qdiscs(emu, node, ifname)
    roots = [q for q in found if q.get("root")]
    assert roots and roots[0]["kind"] == "netem", (
        f"{node}:{ifname}: no root netem qdisc (shaper {emu.shaper_reason!r}); "
        f"qdiscs: {[(q.get('kind'), q.get('handle')) for q in found]}")
    return roots[0]


def netem_delay_ms(q: dict) -> float:
    return float(q["options"]["delay"]["delay"]) * 1e3


def ping_rtts_ms(emu: Emulation, src: str, dst: str, count: int = 5,
                 interval_s: float = 0.05) -> list[float]:
    r = emu.run_cmd(src, ["ping", "-n", "-c", str(count), "-i", str(interval_s), "-W", "2",
                          emu.node_addr(dst)], timeout=120)
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", r.stdout)]


def assert_rtt_near(got_ms: float, expected_ms: float, slack_ms: float, what: str) -> None:
    """A minimum RTT is never below the configured delay (netem never sends early) and at
    most ``slack_ms`` above it (the VM's measured overhead)."""
    assert expected_ms - 0.5 <= got_ms <= expected_ms + slack_ms, (
        f"{what}: RTT {got_ms:.2f} ms, expected {expected_ms:.2f} ms "
        f"(+{slack_ms:.2f} ms VM overhead allowed)")
