"""The netem backend on a real kernel: what a user on an ordinary Linux machine gets.

Runs inside the VM of ``scripts/dev test-vm`` (Debian's kernel, sch_netem, software-
emulated CPU). Each test fails when the links are shaped by the relay or not shaped at
all: it checks for netem qdiscs, and for delay, loss and rate that only shaping produces.
``--vm-shaper relay`` (or ``mirred``: kernel wiring, no shaping) runs the same tests with
another backend, to see them fail. Run names start with ``vn``.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
from netem_checks import (
    assert_rtt_near,
    netem_delay_ms,
    ping_rtts_ms,
    qdiscs,
    root_netem,
)

from netemu.emulator import Emulation
from netemu.emulator.netns import list_netns
from netemu.emulator.registry import RUN_ROOT
from netemu.plan.contacts import C_KM_S, Contact, ContactPlan, Node

pytestmark = [pytest.mark.vm, pytest.mark.integration]
EPOCH = datetime(2026, 3, 1, tzinfo=timezone.utc)


def pair(a: str, b: str, start: float, end: float, *, owlt_s: float = 0.005,
         rate_bps: float = 1e9, loss: float = 0.0, samples=()) -> list[Contact]:
    return [Contact(x, y, start, end, rate_bps, owlt_s, "gsl", loss, owlt_samples=tuple(samples))
            for x, y in ((a, b), (b, a))]


def nodes(*names: str) -> dict[str, Node]:
    return {n: Node(n, i + 1, "ground" if n.startswith("gs") else "satellite",
                    1 if n.startswith("gs") else 0) for i, n in enumerate(names)}


def wait_for(condition, timeout_s: float) -> bool:
    """Polls ``condition`` until it holds or ``timeout_s`` (wall) has passed."""
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def run_leftovers(run: str) -> list[str]:
    """What of run ``run`` is still in the kernel or the registry."""
    left = [f"netns {n}" for n in list_netns() if n.startswith((run + "-", run + "+"))]
    if (RUN_ROOT / run).exists():
        left.append(f"registry {RUN_ROOT / run}")
    links = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True,
                           text=True).stdout
    left += [f"veth {m}" for m in re.findall(r"^\d+: ([^:@]+)", links, re.M)]
    qd = subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True).stdout
    left += [f"qdisc {line}" for line in qd.splitlines() if "netem" in line]
    return left


@pytest.fixture
def emulation(request):
    """Builds Emulations with the shaper under test; after the test, pass or fail, stops
    them and checks that nothing of theirs is left."""
    shaper = request.config.getoption("--vm-shaper")
    emus: list[Emulation] = []

    def make(plan: ContactPlan, run: str, **kw) -> Emulation:
        emu = Emulation(plan, run_name=run, shaper=shaper, **kw)
        emus.append(emu)
        return emu.start()

    yield make
    for emu in emus:
        emu.stop()
        assert run_leftovers(emu.run) == []


# --- qdiscs ----------------------------------------------------------------------------


def pass_profile(t_s: float) -> float:
    """Slant range (km) of a made-up pass: 3,000 km overhead at t=5 s, ~7,000 km at ends."""
    return math.hypot(3000.0, 800.0 * (t_s - 5.0))


def pass_plan(end_s: float = 12.0) -> ContactPlan:
    samples = [(t / 2, pass_profile(t / 2) / C_KM_S) for t in range(0, int(2 * end_s) + 1)]
    return ContactPlan(EPOCH, nodes("gs1", "sat1"),
                       pair("gs1", "sat1", 0, end_s, owlt_s=max(o for _t, o in samples),
                            samples=samples))


def test_links_get_netem_qdiscs_changed_in_place(emulation):
    """Each link interface has a root netem qdisc whose delay follows the range; updates
    change it in place: same handle, its counters kept, no qdisc ever deleted."""
    emu = emulation(pass_plan(), "vnqd")
    monitor = emu.popen("gs1", ["tc", "monitor"], stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True)
    try:
        first = root_netem(emu, "gs1", "gs1-eth0")
        assert root_netem(emu, "sat1", "sat1-eth0")["handle"] == first["handle"] == "1:"
        ping_rtts_ms(emu, "gs1", "sat1", count=5, interval_s=0.02)
        seen = root_netem(emu, "gs1", "gs1-eth0")
        delays = {round(netem_delay_ms(first), 2)}
        for until_s in (3.0, 5.0, 7.0):
            emu.wait(until_s=until_s)
            q = root_netem(emu, "gs1", "gs1-eth0")
            assert q["handle"] == first["handle"]
            assert q["packets"] >= seen["packets"] >= 5, "qdisc counters reset: recreated"
            delays.add(round(netem_delay_ms(q), 2))
            seen = q
    finally:
        monitor.terminate()
        out, _ = monitor.communicate(timeout=10)
    # the delay went down toward the pass's middle and back up: at least 3 values
    assert len(delays) >= 3, f"netem delay did not follow the range: {sorted(delays)} ms"
    assert "qdisc netem 1:" in out, f"tc monitor saw no netem change:\n{out[:2000]}"
    assert "deleted qdisc" not in out, f"a qdisc was deleted during the run:\n{out[:2000]}"


# --- delay -------------------------------------------------------------------------------


def test_ping_rtt_is_twice_range_over_c_through_a_pass(emulation, overhead_ms, figure):
    """Pings at three points of a pass, each echo against 2 × range / c at the middle of
    its own round trip (``ping -D`` stamps each reply; a process starts slowly on a
    software CPU, so the time asked for is not the time measured). The smallest error of
    ten echoes must lie between -0.5 ms and twice the VM's own overhead over one link
    (the median lateness of 20 pings over a link of 1 ms light time, measured in the
    same VM) plus 1 ms."""
    emu = emulation(pass_plan(), "vnrtt")
    slack_ms = 2 * overhead_ms[0] + 1.0
    wall_to_scenario_s = emu.now_s() - time.time()  # time scale 1
    errors_ms = []
    for moment in (1.0, 5.0, 9.0):
        emu.wait(until_s=moment)
        r = emu.run_cmd("gs1", ["ping", "-n", "-D", "-c", "10", "-i", "0.05", "-W", "2",
                                emu.node_addr("sat1")], timeout=60)
        echoes = [(float(ts), float(rtt)) for ts, rtt
                  in re.findall(r"^\[([\d.]+)\].*time=([\d.]+) ms", r.stdout, re.M)]
        assert echoes, f"t={moment:.0f} s: no echo\n{r.stdout}"
        err_ms = min(rtt - 2 * pass_profile(ts + wall_to_scenario_s - rtt / 2e3) / C_KM_S * 1e3
                     for ts, rtt in echoes)
        assert -0.5 <= err_ms <= slack_ms, (
            f"t={moment:.0f} s: RTT {err_ms:+.2f} ms off 2 x range / c "
            f"(+{slack_ms:.2f} ms VM overhead allowed)\n{r.stdout}")
        errors_ms.append(err_ms)
    figure("RTT error at t = 1, 5, 9 s of a pass (best of 10 echoes - 2 x range / c)",
           " ".join(f"{e:+.2f}" for e in errors_ms), "ms")
    root_netem(emu, "gs1", "gs1-eth0")


# --- loss and rate -----------------------------------------------------------------------


def test_configured_loss_is_observed_within_binomial_bounds(emulation, figure):
    """20 % loss one way: of 400 echoes, 320 expected back, ± 4.5 σ (σ = 8): a false
    failure about once in 150,000 runs."""
    loss, n = 0.2, 400
    contacts = [Contact("gs1", "sat1", 0, 600, 1e9, 0.001, "gsl", loss),
                Contact("sat1", "gs1", 0, 600, 1e9, 0.001, "gsl", 0.0)]
    emu = emulation(ContactPlan(EPOCH, nodes("gs1", "sat1"), contacts), "vnloss")
    got = len(ping_rtts_ms(emu, "gs1", "sat1", count=n, interval_s=0.005))
    sigma = math.sqrt(n * loss * (1 - loss))
    figure("echoes back through 20 % one-way loss", f"{got}/{n}", "")
    q = root_netem(emu, "gs1", "gs1-eth0")
    assert float(q["options"]["loss-random"]["loss"]) == pytest.approx(loss)
    assert abs(got - n * (1 - loss)) <= 4.5 * sigma, f"{got}/{n} echoes with 20 % loss one way"


SENDER = """
import socket, sys, time
dst, rate_bps, secs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
print("sending", flush=True)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = bytes(1472)
gap = len(payload) * 8 / rate_bps
t0 = time.monotonic()
n = 0
while time.monotonic() - t0 < secs:
    s.sendto(payload, (dst, 9))
    n += 1
    time.sleep(max(0.0, t0 + n * gap - time.monotonic()))
"""

# On the receiver: once frames arrive (the sender may start slowly on a software CPU) and
# a second more has filled the link's queue, (time, received bytes) every 0.2 s.
RX_SAMPLER = """
import sys, time
path, secs = f"/sys/class/net/{sys.argv[1]}/statistics/rx_bytes", float(sys.argv[2])
def rx():
    with open(path) as f:
        return int(f.read())
z, t0 = rx(), time.monotonic()
while rx() - z < 30000 and time.monotonic() - t0 < 60:
    time.sleep(0.05)
time.sleep(1.0)
t0 = time.monotonic()
while time.monotonic() - t0 < secs:
    print(time.monotonic(), rx())
    time.sleep(0.2)
"""


def robust_rate_bps(samples: list[tuple[float, float]], min_gap_s: float = 2.0) -> float:
    """Median of the slopes between samples at least ``min_gap_s`` apart (Theil-Sen): a
    stall of the VM (a burst of late frames after it) moves a few slopes, not the median."""
    slopes = sorted((b2 - b1) * 8 / (t2 - t1) for i, (t1, b1) in enumerate(samples)
                    for t2, b2 in samples[i + 1:] if t2 - t1 >= min_gap_s)
    assert slopes, f"too few samples: {samples}"
    return slopes[len(slopes) // 2]


def test_rate_within_5_percent_at_a_low_rate(emulation, figure):
    """A 1 Mbit/s link offered 2 Mbit/s of UDP: the receiver's interface counts 1 Mbit/s
    of frames (netem's rate counts whole Ethernet frames, as the interface does), ± 5 %,
    over 6 s of samples (a robust slope: the VM stalls now and then, and netem then
    sends the frames that fell due at once)."""
    rate_bps = 1e6
    emu = emulation(ContactPlan(EPOCH, nodes("gs1", "sat1"),
                                pair("gs1", "sat1", 0, 600, owlt_s=0.002, rate_bps=rate_bps)),
                    "vnrate")
    ifname = emu.neighbours("sat1")[0].ifname
    sender = emu.popen("gs1", [sys.executable, "-c", SENDER, emu.node_addr("sat1"),
                               str(2 * rate_bps), "120"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    try:
        r = emu.run_cmd("sat1", [sys.executable, "-c", RX_SAMPLER, ifname, "6"], timeout=120)
    finally:
        sender.kill()
        said, _ = sender.communicate(timeout=30)
    samples = [(float(t), float(b)) for t, b in (line.split() for line in r.stdout.splitlines())]
    assert samples and samples[-1][1] > samples[0][1], (
        f"no frames received; the sender said: {said!r}; {r.stderr}")
    got_bps = robust_rate_bps(samples)
    figure("rate through a 1 Mbit/s link, frames at the receiver", f"{got_bps / 1e6:.4f}",
           "Mbit/s")
    root_netem(emu, "gs1", "gs1-eth0")
    assert abs(got_bps - rate_bps) / rate_bps <= 0.05, (
        f"{got_bps / 1e6:.3f} Mbit/s of frames through a {rate_bps / 1e6:.1f} Mbit/s link")


# --- contacts and routes -----------------------------------------------------------------


def test_carrier_drops_at_contact_end_and_returns_with_the_next_contact(emulation, overhead_ms):
    plan = ContactPlan(EPOCH, nodes("gs1", "sat1"),
                       pair("gs1", "sat1", 0, 20, owlt_s=0.02)  # 10 s of wall time
                       + pair("gs1", "sat1", 32, 60, owlt_s=0.03))
    emu = emulation(plan, "vngap", time_scale=2.0)
    root_netem(emu, "gs1", "gs1-eth0")

    def carrier() -> bool:
        out = emu.run_cmd("gs1", ["ip", "link", "show", "gs1-eth0"]).stdout
        return "NO-CARRIER" not in out and "LOWER_UP" in out

    assert carrier(), "no carrier during the first contact"
    emu.wait(until_s=20.0)
    # the driver may run behind the clock on a loaded software CPU: up to 5 s (wall)
    assert wait_for(lambda: not carrier(), 5.0), "carrier still up after the contact's end"
    assert emu.now_s() < 32.0, "too late to check the gap"
    assert ping_rtts_ms(emu, "gs1", "sat1", count=3, interval_s=0.1) == []
    emu.wait(until_s=32.0)
    assert wait_for(carrier, 5.0), "no carrier at the next contact"
    rtts = ping_rtts_ms(emu, "gs1", "sat1", count=5)
    assert rtts, "traffic did not resume at the next contact"
    # time scale 2: a 30 ms light time is 15 ms of wall time each way
    assert_rtt_near(min(rtts), 30.0, 2 * overhead_ms[0] + 1.0, "second contact")


def test_ip_route_and_delay_follow_a_handover(emulation, overhead_ms):
    """gs1 → gs2 through sata (4 ms a hop), then satb (8 ms a hop): the route's next hop
    moves and the RTT goes from 8 to 16 ms (4 links, time scale 2), the station's one interface
    keeping its netem qdisc."""
    # sata for 20 s (10 s of wall time): the checks before the handover take seconds on
    # a software CPU
    contacts = (pair("gs1", "sata", 0, 20, owlt_s=0.004)
                + pair("gs2", "sata", 0, 20, owlt_s=0.004)
                + pair("gs1", "satb", 20, 60, owlt_s=0.008)
                + pair("gs2", "satb", 20, 60, owlt_s=0.008))
    emu = emulation(ContactPlan(EPOCH, nodes("gs1", "gs2", "sata", "satb"), contacts), "vnho",
                    time_scale=2.0)

    def via() -> str:
        out = emu.run_cmd("gs1", ["ip", "route", "get", emu.node_addr("gs2")]).stdout
        m = re.search(r"via (\S+)", out)
        assert m, out
        return m.group(1)

    handle = root_netem(emu, "gs1", "gs1-eth0")["handle"]
    assert via() == emu.node_addr("sata")
    before = min(ping_rtts_ms(emu, "gs1", "gs2", count=5))
    assert emu.now_s() < 20.0, "the VM was too slow to measure before the handover"
    assert_rtt_near(before, 8.0, 4 * overhead_ms[0] + 1.0, "through sata")  # 2 links
    emu.wait(until_s=20.0)
    # the driver may run behind the clock on a loaded software CPU: up to 5 s (wall)
    assert wait_for(lambda: via() == emu.node_addr("satb"), 5.0), "route still via sata"
    after = min(ping_rtts_ms(emu, "gs1", "gs2", count=5))
    assert_rtt_near(after, 16.0, 4 * overhead_ms[0] + 1.0, "through satb")
    assert [x.node for x in emu.neighbours("gs1")] == ["satb"]
    assert root_netem(emu, "gs1", "gs1-eth0")["handle"] == handle


# --- what is left, and what the checks catch ---------------------------------------------


def test_stop_leaves_no_qdisc_namespace_or_veth(request):
    shaper = request.config.getoption("--vm-shaper")
    emu = Emulation(ContactPlan(EPOCH, nodes("gs1", "sat1"), pair("gs1", "sat1", 0, 600)),
                    run_name="vnclean", shaper=shaper)
    try:
        emu.start()
        assert root_netem(emu, "gs1", "gs1-eth0")
        assert ping_rtts_ms(emu, "gs1", "sat1", count=2)
    finally:
        emu.stop()
    assert run_leftovers("vnclean") == []


def test_auto_picks_netem_on_this_kernel():
    emu = Emulation(ContactPlan(EPOCH, nodes("gs1", "sat1"), pair("gs1", "sat1", 0, 600)),
                    run_name="vnauto", shaper="auto")
    try:
        emu.start()
        assert emu.shaper is not None and emu.shaper.name == "netem", emu.shaper_reason
        assert qdiscs(emu, "gs1", "gs1-eth0")[0]["kind"] == "netem"
    finally:
        emu.stop()
    assert run_leftovers("vnauto") == []


def test_the_checks_catch_links_wired_but_not_shaped():
    """The kernel wiring without netem (as Mininet's TCLink is when netem is missing): the
    qdisc check and the RTT check both fail on it."""
    emu = Emulation(ContactPlan(EPOCH, nodes("gs1", "sat1"),
                                pair("gs1", "sat1", 0, 600, owlt_s=0.02)),
                    run_name="vnbare", shaper="mirred")
    try:
        emu.start()
        rtts = ping_rtts_ms(emu, "gs1", "sat1", count=3)
        assert rtts, "the unshaped wiring carries no traffic"
        with pytest.raises(AssertionError, match="no root netem qdisc"):
            root_netem(emu, "gs1", "gs1-eth0")
        with pytest.raises(AssertionError, match="expected 40.00 ms"):
            assert_rtt_near(min(rtts), 40.0, 5.0, "unshaped")
    finally:
        emu.stop()
    assert run_leftovers("vnbare") == []
