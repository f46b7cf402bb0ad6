"""The VM tests run only inside the VM that ``scripts/dev test-vm`` boots (Debian's kernel,
with sch_netem); the host's pytest does not collect them (tests/conftest.py), and run by
hand elsewhere they are skipped with that reason. ``scripts/dev test`` runs
that VM, and fails when it cannot boot it.

Fixtures: ``overhead_ms``, what the VM adds to a ping round trip over one link (measured
once);
``figure``, which appends a measured figure to ``$NETEMU_VM_OUT/figures.txt`` for the docs.
"""

from __future__ import annotations

import os
import statistics
from datetime import datetime, timezone
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--vm-shaper", default="netem", choices=("netem", "relay", "mirred"),
                     help="the shaper the VM tests run with (they must fail with any but netem)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("NETEMU_IN_VM") == "1":
        return
    skip = pytest.mark.skip(reason="VM test: runs inside the VM of `scripts/dev test-vm`")
    for item in items:
        if "vm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def figure(request):
    """``figure(what, value, unit)``: one measured figure, a line of figures.txt, marked
    with the shaper it was measured with."""
    out = os.environ.get("NETEMU_VM_OUT")
    shaper = request.config.getoption("--vm-shaper")

    def record(what: str, value: str, unit: str) -> None:
        line = f"[{shaper}] {what}: {value} {unit}".rstrip()
        print(line)
        if out:
            with open(Path(out) / "figures.txt", "a") as f:
                f.write(line + "\n")

    return record


@pytest.fixture(scope="session")
def overhead_ms(request, figure) -> tuple[float, float]:
    """Median and maximum of RTT - 2 ms over 20 pings through a link of 1 ms light time,
    shaped by the shaper under test: what the VM (software-emulated CPU, coarse timers)
    adds to a round trip over one link. A path of h links may be h times as late. Tests
    compare the best of a few echoes, so the median is what they need; the maximum is
    reported (a stall of the VM)."""
    from netem_checks import ping_rtts_ms

    from netemu.emulator import Emulation
    from netemu.plan.contacts import Contact, ContactPlan, Node

    plan = ContactPlan(datetime(2026, 3, 1, tzinfo=timezone.utc),
                       {"gs1": Node("gs1", 1, "ground", 1), "sat1": Node("sat1", 2, "satellite", 0)},
                       [Contact(a, b, 0, 600, 1e9, 0.001, "gsl", 0.0)
                        for a, b in (("gs1", "sat1"), ("sat1", "gs1"))])
    emu = Emulation(plan, run_name="vnzero", shaper=request.config.getoption("--vm-shaper"))
    try:
        emu.start()
        rtts = ping_rtts_ms(emu, "gs1", "sat1", count=20, interval_s=0.02)
    finally:
        emu.stop()
    assert len(rtts) == 20, f"a link without loss lost echoes: {len(rtts)}/20"
    late = [r - 2.0 for r in rtts]
    med, worst = statistics.median(late), max(late)
    figure("overhead, RTT - 2 ms over a link of 1 ms light time (median, max of 20)",
           f"{med:.3f} {worst:.3f}", "ms")
    return med, worst
