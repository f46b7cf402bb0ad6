"""The emulator on real namespaces: what a user of ping, iperf3 and routes would notice.

This machine has no sch_netem, so the userspace relay shapes the links here. Plans are
hand-made (short passes, light-time samples computed from a range profile) so each test
takes seconds. Run names start with ``te``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from netemu.emulator import Emulation
from netemu.emulator.netns import list_netns
from netemu.emulator.registry import RUN_ROOT, pid_alive
from netemu.plan.contacts import C_KM_S, Contact, ContactPlan, Node

pytestmark = pytest.mark.integration
EPOCH = datetime(2026, 3, 1, tzinfo=timezone.utc)


def pair(a: str, b: str, start: float, end: float, *, owlt_s: float = 0.005, rate_bps: float = 1e9,
         kind: str = "gsl", loss: float = 0.0, samples=()) -> list[Contact]:
    return [Contact(x, y, start, end, rate_bps, owlt_s, kind, loss, owlt_samples=tuple(samples))
            for x, y in ((a, b), (b, a))]


def nodes(*names: str) -> dict[str, Node]:
    return {n: Node(n, i + 1, "ground" if n.startswith("gs") else "satellite",
                    1 if n.startswith("gs") else 0) for i, n in enumerate(names)}


def assert_clean(run: str, pids: list[int] = ()) -> None:  # type: ignore[assignment]
    left = [n for n in list_netns() if n.startswith(run + "-") or n.startswith(run + "+")]
    assert left == [], f"namespaces left: {left}"
    assert not (RUN_ROOT / run).exists(), "run registry entry left"
    assert not os.path.exists(f"/dev/shm/netemu-{run}"), "shared memory left"
    alive = [p for p in pids if pid_alive(p) and not _zombie(p)]
    assert alive == [], f"processes left: {alive}"


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def ping_rtts_ms(emu: Emulation, src: str, dst: str, count: int = 5,
                 interval: float = 0.05) -> list[float]:
    r = emu.run_cmd(src, ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "2",
                          emu.node_addr(dst)], timeout=30)
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", r.stdout)]


@pytest.fixture
def cleanup_check():
    """Yields a list to put Emulations in; after the test (pass or fail) they are stopped
    and nothing of theirs may remain."""
    emus: list[Emulation] = []
    yield emus
    for emu in emus:
        pids = emu.shaper.pids() if emu.shaper else []
        emu.stop()
        assert_clean(emu.run, pids)


# --- delay follows the range ---------------------------------------------------------


def pass_profile(t_s: float) -> float:
    """Slant range (km) of a made-up pass: 3,000 km overhead at t=5 s, 7,000 km at ends."""
    return math.hypot(3000.0, 800.0 * (t_s - 5.0))


def test_ping_rtt_follows_range(cleanup_check):
    samples = [(t / 2, pass_profile(t / 2) / C_KM_S) for t in range(0, 25)]
    plan = ContactPlan(EPOCH, nodes("gs1", "sat1"),
                       pair("gs1", "sat1", 0, 12, owlt_s=max(o for _t, o in samples),
                            samples=samples))
    emu = Emulation(plan, run_name="tertt", time_scale=1.0)
    cleanup_check.append(emu)
    emu.start()
    for moment in (1.0, 5.0, 9.0):
        emu.wait(until_s=moment)
        t_a = emu.now_s()
        rtts = ping_rtts_ms(emu, "gs1", "sat1", count=5, interval=0.05)
        t_b = emu.now_s()
        expected = [2 * pass_profile(t) / C_KM_S * 1e3 for t in (t_a, t_b)]
        got = min(rtts)  # scheduling noise on a busy machine only ever adds delay
        lo, hi = min(expected) - 1.0, max(expected) + 1.0
        assert lo <= got <= hi, f"t={t_a:.2f}..{t_b:.2f}: RTT {got:.2f} ms, expected {expected}"


# --- contacts end and start ----------------------------------------------------------


def test_contact_end_stops_traffic_and_next_contact_resumes(cleanup_check):
    plan = ContactPlan(EPOCH, nodes("gs1", "sat1"),
                       pair("gs1", "sat1", 0, 4, owlt_s=0.02) + pair("gs1", "sat1", 8, 12,
                                                                     owlt_s=0.03))
    emu = Emulation(plan, run_name="tegap", time_scale=2.0)
    cleanup_check.append(emu)
    events = []
    emu.subscribe(events.append)
    emu.start()
    assert ping_rtts_ms(emu, "gs1", "sat1", count=3), "no traffic during the first contact"
    emu.wait(until_s=5.0)
    assert ping_rtts_ms(emu, "gs1", "sat1", count=3, interval=0.1) == []
    link = emu.run_cmd("gs1", ["ip", "link", "show", "gs1-eth0"]).stdout
    assert "NO-CARRIER" in link, link
    assert emu.neighbours("gs1") == []
    emu.wait(until_s=9.0)
    rtts = ping_rtts_ms(emu, "gs1", "sat1", count=5)
    assert rtts, "traffic did not resume at the next contact"
    # time scale 2: a 30 ms light time is 15 ms of wall time each way
    assert abs(min(rtts) - 30.0) < 1.0
    kinds = [(e.kind, round(e.t_s)) for e in events if e.kind in ("up", "down")]
    assert ("down", 4) in kinds and ("up", 8) in kinds


def test_a_new_time_scale_reshapes_the_links_and_a_pause_stops_hosted_processes(
        cleanup_check, tmp_path):
    """The run's clock file goes from x1 to x4 (as the view's speed control does): the
    same 100 ms light time is 25 ms of wall time each way. A pause stops what runs in the
    hosts (emu.popen), a resume continues it."""
    from netemu.run.pause import RunPause

    plan = ContactPlan(EPOCH, nodes("gs1", "sat1"), pair("gs1", "sat1", 0, 3600, owlt_s=0.1))
    emu = Emulation(plan, run_name="tescale", time_scale=1.0)
    cleanup_check.append(emu)
    shaped = []
    emu.subscribe_scale(lambda t_s, x, n: shaped.append((x, n)))
    emu.start()
    assert emu.clock is not None
    pc = RunPause(tmp_path / "clock", emu.clock, processes=emu.hosted_pids)
    emu.use_clock(pc.clock)
    pc.enabled = True
    assert abs(min(ping_rtts_ms(emu, "gs1", "sat1", count=3)) - 200.0) < 5.0
    pc.set_scale(4.0)
    deadline = time.monotonic() + 10
    while not shaped and time.monotonic() < deadline:
        time.sleep(0.05)
    assert shaped == [(4.0, 2)]  # both directions of the one link
    assert abs(min(ping_rtts_ms(emu, "gs1", "sat1", count=3)) - 50.0) < 5.0
    sleeper = emu.popen("sat1", ["sleep", "60"])
    time.sleep(0.2)
    assert pc.pause()

    def state(pid: int) -> str:
        """The process's state once a signal sent to it has been taken (a loaded machine
        shows a stopped process running for a moment)."""
        deadline = time.monotonic() + 2.0
        while True:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()[0]
            if st in ("T", "S") or time.monotonic() > deadline:
                return st
            time.sleep(0.01)

    assert state(sleeper.pid) == "T"
    assert pc.resume() and state(sleeper.pid) in ("S", "R")
    # a command started from `netemu run --attach` (another process) reads the run's
    # clock file and is stopped by a pause too
    import psutil

    attach = subprocess.Popen([sys.executable, "-m", "netemu", "run", "--attach", "tescale"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        assert attach.stdin is not None
        attach.stdin.write("gs1 sleep 61 &\n")
        attach.stdin.flush()
        theirs = None
        deadline = time.monotonic() + 20
        while theirs is None and time.monotonic() < deadline:
            time.sleep(0.1)
            with contextlib.suppress(psutil.Error):
                theirs = next((p for p in psutil.Process(attach.pid).children(recursive=True)
                               if p.cmdline() == ["sleep", "61"]), None)
        assert theirs is not None, "the attached CLI did not start the command"
        assert theirs.environ().get("NETEMU_CLOCK_FILE") == str(tmp_path / "clock")
        assert pc.pause()
        assert state(theirs.pid) == "T"
        assert pc.resume() and state(theirs.pid) in ("S", "R")
        theirs.kill()
    finally:
        attach.communicate(timeout=30)  # stdin closed: the CLI ends, its shells with it


# --- handover --------------------------------------------------------------------------


def test_ground_to_ground_route_moves_at_handover(cleanup_check):
    n = nodes("gs1", "gs2", "sata", "satb")
    contacts = (pair("gs1", "sata", 0, 5, owlt_s=0.004) + pair("gs2", "sata", 0, 5, owlt_s=0.004)
                + pair("gs1", "satb", 5, 12, owlt_s=0.008)
                + pair("gs2", "satb", 5, 12, owlt_s=0.008)
                + pair("sata", "satb", 0, 12, owlt_s=0.002, kind="isl"))
    emu = Emulation(ContactPlan(EPOCH, n, contacts), run_name="teho", time_scale=2.0)
    cleanup_check.append(emu)
    emu.start()

    def via() -> str:
        out = emu.run_cmd("gs1", ["ip", "route", "get", emu.node_addr("gs2")]).stdout
        return re.search(r"via (\S+)", out).group(1)

    assert via() == emu.node_addr("sata")
    before = min(ping_rtts_ms(emu, "gs1", "gs2", count=5))
    emu.wait(until_s=6.5)
    assert via() == emu.node_addr("satb")
    after = min(ping_rtts_ms(emu, "gs1", "gs2", count=5))
    # 4 hops of 4 ms, then 4 hops of 8 ms, at time scale 2: the RTT grows by 8 ms
    assert abs((after - before) - 8.0) < 1.0, (before, after)
    assert 8.0 <= before < 10.0, before
    # the station kept one antenna interface: the same slot now reaches satb
    assert [x.node for x in emu.neighbours("gs1")] == ["satb"]
    assert emu.neighbours("gs1")[0].ifname == "gs1-eth0"


# --- rate and loss ----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed")
def test_iperf3_throughput_within_5_percent_of_link_rate(cleanup_check):
    rate = 20e6
    plan = ContactPlan(EPOCH, nodes("gs1", "sat1"),
                       pair("gs1", "sat1", 0, 60, owlt_s=0.005, rate_bps=rate))
    emu = Emulation(plan, run_name="tetcp")
    cleanup_check.append(emu)
    emu.start()
    server = emu.popen("sat1", ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    r = emu.run_cmd("gs1", ["iperf3", "-c", emu.node_addr("sat1"), "-t", "5", "-O", "1", "-J"],
                    timeout=30)
    server.wait(timeout=10)
    got = json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]
    assert abs(got - rate) / rate <= 0.05, f"{got / 1e6:.2f} Mbit/s through a 20 Mbit/s link"


def _iperf3_bps(emu: Emulation, server: str, client: str, seconds: int) -> float:
    srv = emu.popen(server, ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    r = emu.run_cmd(client, ["iperf3", "-c", emu.node_addr(server), "-t", str(seconds),
                             "-O", "1", "-J"], timeout=30)
    srv.wait(timeout=10)
    return float(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"])


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed")
def test_iperf3_follows_the_modcod_steps_of_a_pass(cleanup_check):
    from netemu.plan.linkmodel import LinkBudget

    # a narrow DVB-S2 carrier: low in the sky QPSK, higher up 16APSK (rates of a few Mbit/s,
    # which the relay shapes well)
    b = LinkBudget(8.2e9, 0, 25, 3.6e6, other_losses_db=3, modcod="dvb-s2",
                   zenith_atmos_db=0.4)
    low, high = (2400.0, 0.17), (1500.0, 0.35)
    assert b.modcod_name(*low) == "QPSK 5/6" and b.modcod_name(*high) == "16APSK 3/4"
    rates = ((0.0, b.rate_bps(*low)), (10.0, b.rate_bps(*high)))
    contacts = [Contact(x, y, 0, 40, b.rate_bps(*low), 0.008, "gsl", rate_samples=rates)
                for x, y in (("gs1", "sat1"), ("sat1", "gs1"))]
    emu = Emulation(ContactPlan(EPOCH, nodes("gs1", "sat1"), contacts), run_name="temodcod")
    cleanup_check.append(emu)
    emu.start()
    first = _iperf3_bps(emu, "sat1", "gs1", 5)
    assert emu.clock is not None and emu.clock.now_s() < 10.0
    emu.wait(until_s=10.5)
    second = _iperf3_bps(emu, "sat1", "gs1", 5)
    for got, (_, want) in zip((first, second), rates, strict=True):
        assert abs(got - want) / want <= 0.05, \
            f"{got / 1e6:.2f} Mbit/s through a {want / 1e6:.2f} Mbit/s step"


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed")
def test_iperf3_drops_when_a_scheduled_rain_event_starts(cleanup_check):
    pytest.importorskip("itur")
    from netemu.plan.scenario import scenario_from_dict
    from netemu.plan.schedule import compute_plan

    # one satellite over one station, a narrow DVB-S2 carrier, 6 dB of rain from 35,110 s
    # (near the top of a pass that starts at 34,934 s): the rate drops at 35,110 s exactly
    sc = scenario_from_dict({
        "epoch": "2026-06-01T00:00:00Z", "duration_s": 36000,
        "satellites": [{"walker": {"planes": 1, "sats_per_plane": 1, "altitude_km": 550,
                                   "inclination_deg": 53}}],
        "ground_stations": [{"name": "gs1", "lat_deg": 30.0, "lon_deg": 0.0}],
        "links": {"gsl": {"budget": {"frequency_hz": 8.2e9, "eirp_dbw": -6, "gt_dbk": 25,
                                     "bandwidth_hz": 3.6e6, "other_losses_db": 3,
                                     "modcod": "dvb-s2"}}},
        "weather": {"random": False, "events": [{"station": "gs1", "start_s": 35110,
                                                  "end_s": 35200, "atten_db": 6}]}})
    plan = compute_plan(sc, start_s=35000, duration_s=300)
    up = next(c for c in plan.contacts if c.src == "gs1")  # iperf3 sends gs1 → sat-0
    dry, wet = (35095.5, 35103.5), (35111.5, 35119.5)  # the window opens at 35,095 s
    for a, b in (dry, wet):  # one rate over each measured stretch
        assert up.rate_at(a) == up.rate_at(b)
    want_dry, want_wet = up.rate_at(dry[0]), up.rate_at(wet[0])
    assert want_wet < 0.5 * want_dry and plan.weather[0]["atten_db"] == 6
    emu = Emulation(plan, run_name="terain", start_s=35095, duration_s=45)
    cleanup_check.append(emu)
    emu.start()
    first = _iperf3_bps(emu, "gs1", "sat-0", 5)
    assert emu.clock is not None and emu.clock.now_s() < 35110
    emu.wait(until_s=35111)
    second = _iperf3_bps(emu, "gs1", "sat-0", 5)
    for got, want in ((first, want_dry), (second, want_wet)):
        assert abs(got - want) / want <= 0.05, \
            f"{got / 1e6:.2f} Mbit/s through a {want / 1e6:.2f} Mbit/s step"


def test_configured_loss_is_observed(cleanup_check):
    loss, n = 0.2, 400
    contacts = [Contact("gs1", "sat1", 0, 60, 1e9, 0.001, "gsl", loss),
                Contact("sat1", "gs1", 0, 60, 1e9, 0.001, "gsl", 0.0)]
    emu = Emulation(ContactPlan(EPOCH, nodes("gs1", "sat1"), contacts), run_name="teloss")
    cleanup_check.append(emu)
    emu.start()
    got = len(ping_rtts_ms(emu, "gs1", "sat1", count=n, interval=0.005))
    sigma = math.sqrt(n * loss * (1 - loss))
    assert abs(got - n * (1 - loss)) <= 4 * sigma, f"{got}/{n} echoes with 20 % loss one way"
    time.sleep(0.4)  # relay counters are published a few times a second
    c = emu.link_counters("gs1", "sat1")
    assert c["lost"] > 0 and c["frames"] > 0


# --- hosts, addresses, Mininet ------------------------------------------------------------


def test_mininet_host_and_popen_see_clock_and_addresses(cleanup_check):
    plan = ContactPlan(EPOCH, nodes("gs1", "sat1", "gs2"),
                       pair("gs1", "sat1", 0, 60) + pair("gs2", "sat1", 0, 60))
    emu = Emulation(plan, run_name="tehost", time_scale=10.0)
    cleanup_check.append(emu)
    emu.start()
    h = emu.host("gs1")
    out = h.cmd(f"ping -c 1 -W 2 {emu.node_addr('gs2')}")
    assert "1 received" in out, out
    assert h.IP() == emu.node_addr("gs1")
    env = emu.run_cmd("sat1", ["env"]).stdout
    assert "NETEMU_TIME_SCALE=10.0" in env and "NETEMU_NODE=sat1" in env
    code = ("from netemu.runtime.clock import ScenarioClock; print(ScenarioClock.from_env().now_s())")
    r = emu.run_cmd("sat1", [sys.executable, "-c", code])
    assert abs(float(r.stdout) - emu.now_s()) < 1.0
    addrs = emu.addresses("sat1")
    ips = emu.run_cmd("sat1", ["ip", "-4", "-o", "addr"]).stdout
    assert all(a in ips for a in addrs.values())
    nb = {x.node: x for x in emu.neighbours("sat1")}
    assert set(nb) == {"gs1", "gs2"}
    r = emu.run_cmd("sat1", ["ping", "-c", "1", "-W", "2", nb["gs2"].link_addr])
    assert r.returncode == 0


# --- refusals and leftovers --------------------------------------------------------------


def test_netem_shaper_refused_clearly_on_this_kernel_and_nothing_left():
    from netemu.emulator.shapers import probe_netem

    plan = ContactPlan(EPOCH, nodes("gs1", "sat1"), pair("gs1", "sat1", 0, 10))
    emu = Emulation(plan, run_name="tenetem", shaper="netem")
    try:
        emu.start()
    except Exception as e:  # the kernel has no netem here
        assert "netem" in str(e)
    else:
        emu.stop()
        pytest.skip("this kernel has sch_netem")
    assert_clean("tenetem")
    assert probe_netem is not None


def test_failing_test_body_leaves_nothing():
    plan = ContactPlan(EPOCH, nodes("gs1", "sat1"), pair("gs1", "sat1", 0, 10))
    pids: list[int] = []
    with pytest.raises(RuntimeError), Emulation(plan, run_name="tefail") as emu:
        emu.popen("gs1", ["sleep", "60"])
        pids = emu.shaper.pids() + [p.pid for p in emu._procs]
        raise RuntimeError("test body failed")
    assert_clean("tefail", pids)


def test_netemu_clean_removes_a_crashed_run(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(
        "import os, sys, time\n"
        "from datetime import datetime, timezone\n"
        "from netemu.plan.contacts import Contact, ContactPlan, Node\n"
        "from netemu.emulator import Emulation\n"
        "n = {'gs1': Node('gs1', 1, 'ground', 1), 'sat1': Node('sat1', 2, 'satellite')}\n"
        "c = [Contact('gs1', 'sat1', 0, 600, 1e9, 0.01, 'gsl'),"
        " Contact('sat1', 'gs1', 0, 600, 1e9, 0.01, 'gsl')]\n"
        "emu = Emulation(ContactPlan(datetime(2026, 1, 1, tzinfo=timezone.utc), n, c),"
        " run_name='tecrash').start()\n"
        "emu.popen('sat1', ['sleep', '600'])\n"
        "print('up', flush=True)\n"
        "time.sleep(600)\n")
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"up"
        pids = [int(x.split()[0]) for x in (RUN_ROOT / "tecrash" / "pids").read_text().splitlines()]
        p.kill()  # SIGKILL: no cleanup code runs
        p.wait()
        assert any(n.startswith("tecrash-") for n in list_netns())
        r = subprocess.run([sys.executable, "-m", "netemu", "clean"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "tecrash" in r.stdout
        assert_clean("tecrash", pids)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        subprocess.run([sys.executable, "-m", "netemu", "clean", "--quiet", "--run", "tecrash"],
                       capture_output=True)


def test_kernel_backend_wiring_follows_handover(cleanup_check):
    """The netem backend's mirred wiring (testable without sch_netem): the station's one
    antenna interface reaches sata, then satb after the handover."""
    contacts = pair("gs1", "sata", 0, 3) + pair("gs1", "satb", 3, 60)
    emu = Emulation(ContactPlan(EPOCH, nodes("gs1", "sata", "satb"), contacts),
                    run_name="temir", shaper="mirred", time_scale=2.0)
    cleanup_check.append(emu)
    emu.start()
    assert ping_rtts_ms(emu, "gs1", "sata", count=3)
    emu.wait(until_s=4.0)
    assert ping_rtts_ms(emu, "gs1", "satb", count=3)
    r = emu.run_cmd("sata", ["ping", "-c", "2", "-i", "0.1", "-W", "1",
                             emu.addresses("gs1")["gs1-eth0"]])
    assert r.returncode != 0  # sata is no longer linked to the station


def test_netemu_run_cli_pings_by_host_name(tmp_path):
    """`netemu run plan --cli`: Mininet's CLI, where `sat-1 ping gs-a` uses node names."""
    plan = ContactPlan(EPOCH, nodes("gs-a", "sat-1"), pair("gs-a", "sat-1", 0, 120))
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json())
    r = subprocess.run([sys.executable, "-m", "netemu", "run", str(path), "--cli", "--run-name",
                        "tecli"], input="sat-1 ping -c 1 -W 2 gs-a\n", capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "shaper: relay" in r.stdout or "shaper: netem" in r.stdout
    assert "1 received" in r.stdout + r.stderr, (r.stdout + r.stderr)[-800:]  # Mininet logs to stderr
    assert_clean("tecli")


def test_netemu_run_ends_with_the_duration(tmp_path):
    plan = ContactPlan(EPOCH, nodes("gs1", "sat1"), pair("gs1", "sat1", 0, 4) + pair("gs1", "sat1", 6, 9))
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json())
    r = subprocess.run([sys.executable, "-m", "netemu", "run", str(path), "--time-scale", "4",
                        "--run-name", "tedur", "--quiet"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "down in" in r.stdout and "0 missed ticks" in r.stdout
    assert_clean("tedur")


def test_cli_attaches_to_a_running_emulation(cleanup_check):
    plan = ContactPlan(EPOCH, nodes("gs1", "sat1"), pair("gs1", "sat1", 0, 120))
    emu = Emulation(plan, run_name="teatt")
    cleanup_check.append(emu)
    emu.start()
    r = subprocess.run([sys.executable, "-m", "netemu", "run", "--attach", "teatt"],
                       input="gs1 ping -c 1 -W 2 sat1\n", capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "1 received" in r.stdout + r.stderr
    assert emu.run_cmd("gs1", ["true"]).returncode == 0  # the run goes on


def test_refused_netlink_request_is_a_netemu_error_with_its_errno():
    import errno

    from netemu.emulator.netlink import Netlink, NetlinkError
    from netemu.errors import NetemuError

    nl = Netlink(label="root")
    try:
        nl.link_set(2**31 - 1, up=True)  # no such interface: the kernel says ENODEV
        with pytest.raises(NetlinkError) as e:
            nl.flush()
    finally:
        nl.close()
    assert isinstance(e.value, NetemuError) and not isinstance(e.value, OSError)
    assert e.value.errno == errno.ENODEV
    assert "root: link" in str(e.value)


# --- Starlink-like access: a terminal, a satellite, the gateway, the internet ------------


def test_a_terminal_reaches_the_internet_host_through_a_satellite_and_the_gateway(cleanup_check):
    """topologies/starlink-access.yaml around a satellite change (42 s): the terminal's
    route to the internet host goes to its satellite, which sends it to the gateway, which
    hands it to its wired neighbour; the round trip is the plan's light time; after the
    change the route follows the new satellite, and the host answers through the gateway."""
    from pathlib import Path

    from netemu.plan.scenario import load_scenario
    from netemu.plan.schedule import compute_plan

    sc = load_scenario(Path(__file__).resolve().parents[2] / "topologies" / "starlink-access.yaml")
    # from a slot instant (:27), so the window's plan is the whole scenario's
    plan = compute_plan(sc, start_s=27.0, duration_s=20.0)
    emu = Emulation(plan, run_name="teacc", time_scale=1.0, start_s=38.0)
    cleanup_check.append(emu)
    emu.start()

    def sat_at(t: float) -> str:
        return next(c.dst for c in plan.contacts
                    if c.src == "ut-seattle" and c.start_s <= t < c.end_s)

    def via(node: str, dst: str) -> str:
        out = emu.run_cmd(node, ["ip", "route", "get", emu.node_addr(dst)]).stdout
        m = re.search(r"via (\S+)", out)
        return m.group(1) if m else out

    def plan_rtt_ms(t: float) -> float:
        sat = sat_at(t)
        legs = [("ut-seattle", sat), (sat, "gw-redmond"), ("gw-redmond", "internet")]
        return 1e3 * sum(c.owlt_at(t) for c in plan.contacts if c.start_s <= t < c.end_s
                         and ((c.src, c.dst) in legs or (c.dst, c.src) in legs))

    whole = compute_plan(sc)
    assert [(c.dst, c.start_s) for c in plan.contacts if c.src == "ut-seattle"] == \
        [(c.dst, max(27.0, c.start_s)) for c in whole.contacts
         if c.src == "ut-seattle" and c.start_s < 47.0 and c.end_s > 27.0]
    before, after = sat_at(39.0), sat_at(44.0)
    assert before != after
    for t, sat in ((39.0, before), (44.0, after)):
        emu.wait(until_s=t)
        assert via("ut-seattle", "internet") == emu.node_addr(sat)
        assert via(sat, "internet") == emu.node_addr("gw-redmond")
        assert via("gw-redmond", "internet") == emu.node_addr("internet")
        assert via("internet", "ut-seattle") == emu.node_addr("gw-redmond")
        rtts = ping_rtts_ms(emu, "ut-seattle", "internet", count=5, interval=0.05)
        expected = plan_rtt_ms(emu.now_s())
        assert rtts and abs(min(rtts) - expected) < 1.0, (t, rtts, expected)
        assert ping_rtts_ms(emu, "internet", "ut-seattle", count=3, interval=0.05)


def test_a_calibrated_terminal_holds_pings_at_a_satellite_change(cleanup_check):
    """topologies/starlink-access-calibrated.yaml across the satellite change at 42 s: the
    pings sent in the new link's first 40 ms (`handover_gap_s`) come back that much late
    (held, not lost), and a second later the round trip is the plan's again, access delay
    and PoP detour included."""
    from pathlib import Path

    from netemu.plan.scenario import load_scenario
    from netemu.plan.schedule import compute_plan

    sc = load_scenario(Path(__file__).resolve().parents[2] / "topologies"
                       / "starlink-access-calibrated.yaml")
    plan = compute_plan(sc, start_s=27.0, duration_s=20.0)
    sats = {c.dst: c.start_s for c in plan.contacts if c.src == "ut-seattle"}
    assert sorted(sats.values()) == [27.0, 42.0]
    emu = Emulation(plan, run_name="tecal", time_scale=1.0, start_s=40.0)
    cleanup_check.append(emu)
    emu.start()
    emu.wait(until_s=41.0)
    p = emu.popen("ut-seattle", ["ping", "-D", "-n", "-i", "0.01", "-w", "3", "-W", "1",
                                 emu.node_addr("internet")], stdout=-1, stderr=-1, text=True)
    out, _ = p.communicate(timeout=30)
    clock = emu.clock
    assert clock is not None
    rows = [(clock.now_s(float(w) - float(r) / 1e3), float(r)) for w, r in
            re.findall(r"^\[(\d+\.\d+)\].*time=([\d.]+) ms", out, re.M)]
    held = [r for t, r in rows if 42.0 <= t < 42.02]
    level = [r for t, r in rows if 42.5 <= t < 43.5]
    assert held and level, out
    hold = next(c for c in plan.contacts if c.src == "ut-seattle" and c.start_s == 42.0)
    assert hold.owlt_at(42.0) - hold.owlt_at(42.04) == pytest.approx(0.04, abs=1e-3)
    # sent 0-20 ms into the 40 ms gap: at least 20 ms late (timing slack below that)
    assert max(held) - min(level) > 15.0, (held, level)
    sat = next(s for s, t0 in sats.items() if t0 == 42.0)
    legs = [("ut-seattle", sat), (sat, "gw-redmond"), ("gw-redmond", "internet")]
    plan_ms = 1e3 * sum(c.owlt_at(43.0) for c in plan.contacts if c.start_s <= 43.0 < c.end_s
                        and ((c.src, c.dst) in legs or (c.dst, c.src) in legs))
    assert abs(min(level) - plan_ms) < 1.0, (level, plan_ms)
    assert plan_ms > 25.0  # light time alone is under 12 ms
