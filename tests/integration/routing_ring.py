"""The four-satellite ring the routing-daemon tests share (FRR OSPF, OSPFv3 and IS-IS,
BIRD OSPF): the plan, an emulation of it that must leave nothing behind, and the check
that traffic goes the other way round once the s1 - s2 ISL ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from test_emulator import EPOCH, assert_clean, nodes, pair
from test_ip_routing_plugin import hops

from netemu.emulator import Emulation
from netemu.emulator.frr import FrrSettings
from netemu.emulator.registry import RUN_ROOT
from netemu.plan.contacts import ContactPlan

RING = ["s1", "s2", "s3", "s4"]
ISL_END_S = 15.0
"""When the s1 - s2 ISL ends in :func:`ring_emulation`'s plan."""


def ring(s1_s2_end_s: float = 600.0) -> ContactPlan:
    contacts = []
    for i, a in enumerate(RING):
        end = s1_s2_end_s if i == 0 else 600.0
        contacts += pair(a, RING[(i + 1) % 4], 0, end, owlt_s=0.002, kind="isl")
    return ContactPlan(EPOCH, nodes(*RING), contacts)


def wait_for(cond: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def daemon_pids(emu: Emulation) -> list[int]:
    assert emu.frr is not None
    return [p.pid for ps in emu.frr.procs.values() for p in ps]


@contextmanager
def ring_emulation(run_name: str, settings: FrrSettings,
                   routing_dir: Path | None = None) -> Iterator[Emulation]:
    """The ring with ``settings``' daemons, started; s1 - s2 ends at :data:`ISL_END_S`.
    Afterwards, even when the body failed: no namespace, daemon, socket or pid file left."""
    emu = Emulation(ring(s1_s2_end_s=ISL_END_S), run_name=run_name, frr=settings,
                    routing_dir=routing_dir)
    pids: list[int] = []
    try:
        emu.start()
        pids = daemon_pids(emu) + (emu.shaper.pids() if emu.shaper else [])
        yield emu
    finally:
        emu.stop()
        assert_clean(emu.run, pids)
    assert not (RUN_ROOT / emu.run).exists()  # sockets and pid files went with the run


def goes_the_other_way_round(emu: Emulation, neighbours: Callable[[str], int],
                             path: Callable[[], list[str] | None] | None = None) -> None:
    """At the s1 - s2 ISL's end (carrier down), s1 loses that neighbour and its traffic
    to s2 goes round by s4 and s3, long before any dead interval the tests set (60 s).
    ``path``: s1's path to s2, s1 first (default: traceroute over IPv4)."""
    route = path or (lambda: ["s1", *hops(emu, "s1", "s2")])
    assert emu.now_s() < ISL_END_S - 1, "bring-up took too long for the ISL's schedule"
    emu.wait(until_s=ISL_END_S)
    assert wait_for(lambda: neighbours("s1") == 1, 10)
    assert wait_for(lambda: route() == ["s1", "s4", "s3", "s2"], 10)
    assert emu.now_s() < 40.0
    assert emu.frr is not None and emu.frr.dead() == []
