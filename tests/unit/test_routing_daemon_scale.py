"""Routing daemons on large networks: started a wave of nodes at a time, and timers for
hundreds of routers where the scenario sets none (the scenario's own always stay)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.emulator import frr as frr_mod
from netemu.emulator.bird import BirdDaemons, bird_config
from netemu.emulator.frr import LARGE, SCALE_NODES, FrrDaemons, FrrSettings, ospf_config, scaled
from netemu.plan.iprouting import parse_ip_routing


class _Running:
    """Stands in for a daemon's process: running until the test ends."""

    pid = 0

    def poll(self) -> None:
        return None


def test_a_large_network_gets_slower_hellos_and_spf_unless_the_scenario_sets_them() -> None:
    plain = FrrSettings.of(parse_ip_routing({"mode": "frr"}))
    assert scaled(plain, SCALE_NODES - 1) == plain  # small networks: the defaults as before
    big = scaled(plain, 488)
    assert (big.hello_s, big.dead_s) == (LARGE["hello_s"], LARGE["dead_s"])
    conf = ospf_config("s", "10.0.0.2", ["e0"], big)
    assert f"hello-interval {LARGE['hello_s']}" in conf
    assert (f"timers throttle spf {LARGE['spf_delay_ms']} {LARGE['spf_hold_ms']} "
            f"{LARGE['spf_max_hold_ms']}") in conf
    assert f"timers throttle lsa all {LARGE['lsa_hold_ms']}" in conf
    assert "timers throttle lsa all 0" in ospf_config("s", "10.0.0.2", ["e0"], plain)
    # one next hop per route: fewer route writes, each of which takes the kernel's RTNL
    assert "maximum-paths 1" in conf
    assert "maximum-paths" not in ospf_config("s", "10.0.0.2", ["e0"], plain)
    # the scenario's timers win; dead follows an explicit hello as the section's default
    own = scaled(FrrSettings.of(parse_ip_routing({"mode": "frr", "hello_s": 1,
                                                  "spf_hold_ms": 20})), 488)
    assert (own.hello_s, own.dead_s, own.spf_hold_ms) == (1, 4, 20)
    assert own.spf_delay_ms == LARGE["spf_delay_ms"]
    short = scaled(FrrSettings.of(parse_ip_routing({"mode": "frr", "dead_s": 2})), 488)
    assert (short.hello_s, short.dead_s) == (1, 2)  # a hello stays below the dead interval
    # a Python caller's settings are taken as given
    assert scaled(FrrSettings(hello_s=1, dead_s=60), 488) == FrrSettings(hello_s=1, dead_s=60)
    bird = scaled(FrrSettings.of(parse_ip_routing({"mode": "bird"})), 488)
    assert f"tick {LARGE['tick_s']};" in bird_config("10.0.0.2", ["e0"], bird)
    assert f"hello {LARGE['hello_s']};" in bird_config("10.0.0.2", ["e0"], bird)
    assert "ecmp no;" in bird_config("10.0.0.2", ["e0"], bird)
    small = bird_config("10.0.0.2", ["e0"], FrrSettings.of(parse_ip_routing({"mode": "bird"})))
    assert "ecmp yes;" in small and "tick 1;" in small


@pytest.mark.parametrize("cls", [FrrDaemons, BirdDaemons])
def test_daemons_start_a_wave_of_nodes_at_a_time(tmp_path: Path, monkeypatch,
                                                 cls: type[FrrDaemons]) -> None:
    monkeypatch.setattr(frr_mod, "START_WAVE", 3)
    monkeypatch.setattr("netemu.emulator.bird.START_WAVE", 3)
    monkeypatch.setattr(frr_mod.shutil, "chown", lambda *a: None)
    monkeypatch.setattr(frr_mod, "frr_missing", lambda daemon="frr": None)
    monkeypatch.setattr("netemu.emulator.bird.bird_missing", lambda: None)
    nodes = {f"n{i}": (f"10.0.0.{i + 1}", ["e0"]) for i in range(7)}
    started: list[tuple[str, str, int]] = []  # node, daemon, nodes fully up before it

    def up(node: str) -> bool:
        d = tmp_path / node
        need = ["bird.ctl"] if cls is BirdDaemons else ["zserv.api", "ospfd.vty"]
        return all((d / f).exists() for f in need)

    def spawn(node: str, argv: list[str], log: Path):
        daemon = Path(argv[0]).name
        started.append((node, daemon, sum(up(n) for n in nodes)))
        ready = {"zebra": "zserv.api", "bird": "bird.ctl"}.get(daemon, f"{daemon}.vty")
        (tmp_path / node / ready).touch()  # the daemon comes up at once
        return _Running()

    daemons = cls(nodes, tmp_path, FrrSettings(daemon="bird" if cls is BirdDaemons else "frr"),
                  spawn)
    daemons.start(timeout_s=2)
    first = [(n, d) for n, d, _ in started]
    assert len(first) == 7 * len(daemons.daemons())
    # every node of the second wave (n3..n5) starts only once the first wave (n0..n2)
    # is up, and the third wave (n6) once six nodes are
    assert all(k >= 3 for n, _d, k in started if n in ("n3", "n4", "n5"))
    assert all(k >= 6 for n, _d, k in started if n == "n6")
    assert all(k < 3 for n, _d, k in started if n in ("n0", "n1", "n2"))
    assert daemons.start_s is not None


def test_a_daemon_that_never_comes_up_names_its_node(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(frr_mod.shutil, "chown", lambda *a: None)
    monkeypatch.setattr(frr_mod, "frr_missing", lambda daemon="frr": None)
    daemons = FrrDaemons({"n0": ("10.0.0.1", ["e0"])}, tmp_path, FrrSettings(),
                         lambda node, argv, log: _Running())
    with pytest.raises(Exception, match=r"zserv.api not there after 0.1 s on n0"):
        daemons.start(timeout_s=0.1)
