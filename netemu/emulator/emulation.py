"""The emulation: a network built from a contact plan, with links driven in real time.

    from netemu.emulator import Emulation

    with Emulation(plan, time_scale=10, run_name="x3demo") as emu:
        emu.popen("gs-kashi", ["ping", "-c", "3", emu.node_addr("sat3")])
        emu.host("sat3").cmd("ip -br addr")
        emu.subscribe(print)          # LinkEvent objects from the driver thread
        emu.wait(until_s=600)         # scenario seconds

Bring-up: plan → layout (refused here if the kernel cannot realise it) → run registry →
namespaces and veth pairs in bulk → shaper (probed: netem or relay) → the state at the
start time applied (links, addresses, neighbours, IP routes) → scenario clock started →
driver thread ticking every ``tick_s`` wall seconds. ``stop()`` (or leaving the ``with``)
tears it all down, and also runs at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import math
import os
import random
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netemu.emulator.events import FaultEvent, LinkEvent, Neighbour, RouteEvent
from netemu.emulator.faults import FaultTimeline
from netemu.emulator.layout import Layout, check_run_name, estimate_memory_bytes, plan_layout
from netemu.emulator.network import Network
from netemu.emulator.registry import RUN_ROOT, Registry, clean_run, list_runs
from netemu.emulator.shaper import Shaper
from netemu.emulator.shapers import make_shaper
from netemu.emulator.timeline import Changes, DirParams, Timeline
from netemu.emulator.tunnels import HostShare
from netemu.errors import InputError, NetemuError
from netemu.plan.contacts import ContactPlan
from netemu.plan.faults import Fault
from netemu.runtime.clock import ScenarioClock

if TYPE_CHECKING:
    from netemu.emulator.frr import FrrDaemons, FrrSettings
    from netemu.emulator.iproute import RouteInstaller
    from netemu.emulator.iproute_plugin import PluginRoutes, RouteFunction
    from netemu.routing.iproutes import RouteComputer


@dataclass
class DriverStats:
    """What the driver did; lateness and cost in seconds."""

    ticks: int = 0
    missed_ticks: int = 0
    updates: int = 0
    last_updates: int = 0
    route_changes: int = 0
    lateness_s: list[float] = field(default_factory=list)
    cost_s: list[float] = field(default_factory=list)
    route_s: list[float] = field(default_factory=list)
    links_up: int = 0
    t_s: float = 0.0

    def p99(self, xs: list[float]) -> float:
        if not xs:
            return 0.0
        s = sorted(xs)
        return s[min(len(s) - 1, int(0.99 * len(s)))]


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62


def vtysh_shell_function(sockets: str | os.PathLike[str]) -> str:
    """Shell functions that make ``vtysh`` (FRR) and ``birdc`` (BIRD) in a host's shell
    reach its node's daemons."""
    return (f'vtysh() {{ command vtysh --vty_socket {sockets} "$@"; }}; '
            f'birdc() {{ command birdc -s {sockets}/bird.ctl "$@"; }}')


def new_run_name(prefix: str = "n") -> str:
    for _ in range(100):
        name = prefix + "".join(random.choices(string.ascii_lowercase + string.digits, k=4))
        if not (RUN_ROOT / name).exists():
            return name
    raise NetemuError("no free run name")


class Emulation:
    """A running emulated network for ``plan`` (see the module docstring)."""

    def __init__(
        self,
        plan: ContactPlan,
        *,
        shaper: str = "auto",
        time_scale: float = 1.0,
        ip_routing: bool = True,
        run_name: str | None = None,
        start_s: float = 0.0,
        duration_s: float | None = None,
        tick_s: float = 0.1,
        relay_workers: int | None = None,
        relay_gso: bool = False,
        queue_limit_s: float = 0.1,
        delay_step_s: float = 100e-6,
        ground: Sequence[str] | None = None,
        clock_lead_s: float = 0.0,
        faults: Sequence[Fault] = (),
        route_function: RouteFunction | str | None = None,
        frr: FrrSettings | None = None,
        routing_dir: str | os.PathLike[str] | None = None,
        share: HostShare | None = None,
        start_wall: float | None = None,
    ) -> None:
        if not time_scale > 0:
            raise InputError("time scale must be > 0", field="time_scale")
        if not tick_s > 0:
            raise InputError("tick must be > 0", field="tick_s")
        if not 0 <= clock_lead_s < math.inf:
            raise InputError("clock lead must be a finite number ≥ 0", field="clock_lead_s")
        # The scenario clock reaches start_s this long after the network is up: the time
        # that software started in the hosts (agents) needs before the window opens.
        self.clock_lead_s = float(clock_lead_s)
        # A host's share of a cluster run (tunnels.py): its nodes only, the others' links
        # through tunnels; every host's scenario clock starts at the same ``start_wall``.
        self.share = share
        self.start_wall = start_wall
        if share is not None and shaper not in ("auto", "relay"):
            raise InputError(f"--shaper {shaper}: a cluster run's tunnels go through the relay "
                             "(use auto or relay)", field="shaper")
        self.plan = plan
        self.shaper_kind = shaper
        self.time_scale = float(time_scale)
        # the scale the links are shaped at now: the clock's, once a clock file changes it
        self.shaped_scale = self.time_scale
        self.ip_routing = ip_routing
        # a routing plug-in instead of the oracle (netemu.emulator.iproute_plugin)
        if isinstance(route_function, str):
            from netemu.emulator.iproute_plugin import load_route_function

            self.route_function_name: str | None = route_function
            route_function = load_route_function(route_function, field="route_function")
        else:
            self.route_function_name = (None if route_function is None else
                                        getattr(route_function, "__qualname__", "plug-in"))
        self.route_function = route_function
        # FRR daemons in every node instead of netemu's routes (netemu.emulator.frr)
        self.frr_settings = frr
        self.routing_dir = Path(routing_dir) if routing_dir is not None else None
        self.frr: FrrDaemons | None = None
        if frr is not None:
            self.ip_routing = False
        self.run = check_run_name(run_name) if run_name else new_run_name()
        self.start_s = float(start_s)
        self.tick_s = float(tick_s)
        self.relay_opts = {"workers": relay_workers, "gso": relay_gso, "qlimit_s": queue_limit_s}
        self.layout: Layout = plan_layout(plan)
        self._node_index = {n: i for i, n in enumerate(self.layout.nodes)}
        end = max((c.end_s for c in plan.contacts), default=self.start_s)
        self.end_s = self.start_s + duration_s if duration_s is not None else end
        self.ground = set(ground) if ground is not None else {
            n.name for n in plan.nodes.values() if n.kind == "ground"}
        need = estimate_memory_bytes(self.layout, ip_routing=ip_routing)
        if share is not None:  # this host builds its share of the nodes
            need = need * len(share.local) // max(1, len(self.layout.nodes))
        avail = _mem_available()
        if need > 0.8 * avail:
            raise InputError(
                f"{len(self.layout.nodes)} nodes and {len(self.layout.endpoints)} interfaces need "
                f"about {need / 2**30:.1f} GiB; only {avail / 2**30:.1f} GiB is available")
        # link faults (netemu.plan.faults) act on the links, never on the plan
        self.timeline = (FaultTimeline(plan, self.layout, faults, delay_step_s=delay_step_s)
                         if faults else Timeline(plan, self.layout, delay_step_s=delay_step_s))
        self.clock: ScenarioClock | None = None
        self.net: Network | None = None
        self.shaper: Shaper | None = None
        self.shaper_reason = ""
        self.registry = Registry(self.run)
        self.stats = DriverStats()
        self.timings: dict[str, float] = {}
        self._subs: list[Callable[[LinkEvent], None]] = []
        self._fault_subs: list[Callable[[FaultEvent], None]] = []
        self._route_subs: list[Callable[[RouteEvent], None]] = []
        self._scale_subs: list[Callable[[float, float, int], None]] = []
        self._hosts: dict[str, object] = {}
        self._procs: list[subprocess.Popen] = []
        self._user_procs: list[subprocess.Popen] = []  # started by popen(): hosted_pids()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.RLock()
        self._up: set[int] = set()
        self._routes: tuple[RouteComputer | PluginRoutes, RouteInstaller] | None = None
        self._router: threading.Thread | None = None
        self._route_wake = threading.Event()
        self._route_gen = 0
        self._started = False
        self._stopped = False
        self.driver_error: BaseException | None = None

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> Emulation:
        if self._started:
            return self
        self._started = True
        if os.geteuid() != 0:
            raise NetemuError("the emulator builds network namespaces: run it as root")
        meta = {"shm": f"netemu-{self.run}", "nodes": len(self.layout.nodes),
                "endpoints": len(self.layout.endpoints)}
        try:
            self.registry.create(meta)
        except FileExistsError:
            stale = next((r for r in list_runs() if r.run == self.run), None)
            if stale is None or stale.owner_alive:
                raise NetemuError(f"a run named {self.run!r} is running "
                                  f"({self.registry.path}); pick another name") from None
            clean_run(stale)  # left by a run that crashed: take the name over
            self.registry.create(meta)
        atexit.register(self.stop)
        try:
            self._bring_up()
        except BaseException:
            self.stop()
            raise
        return self

    def _bring_up(self) -> None:
        t0 = time.monotonic()
        self.net = Network(self.layout, self.run, self.registry,
                           tx_offload=bool(self.relay_opts.get("gso")), share=self.share)
        self.net.build()
        t1 = time.monotonic()
        kind = "relay" if self.share is not None else self.shaper_kind
        self.shaper, self.shaper_reason = make_shaper(kind, self.net,
                                                      **self.relay_opts)
        self.shaper.start()
        t2 = time.monotonic()
        if self.ip_routing:
            from netemu.emulator.iproute import RouteInstaller
            from netemu.emulator.iproute_plugin import PluginRoutes
            from netemu.routing.iproutes import RouteComputer

            comp: RouteComputer | PluginRoutes
            if self.route_function is not None:
                comp = PluginRoutes(self.route_function, self.route_function_name or "",
                                    self.layout, self.plan, self._route_error)
            else:
                comp = RouteComputer(self.layout.nodes, self.ground)
            self._routes = (comp, RouteInstaller(self.layout, self.net.nl, self.net.ifindex))
        self._apply(self.timeline.advance(self.start_s))
        if self.frr_settings is not None:
            self._start_frr(self.frr_settings)
        # The kernel activates a device's queue shortly after carrier-on (linkwatch); let
        # the first links settle so the first packets of a run are not lost.
        time.sleep(0.1 if self._up else 0.0)
        t3 = time.monotonic()
        self.clock = ScenarioClock.start(self.plan.epoch, time_scale=self.time_scale,
                                         t0_s=self.start_s,
                                         wall=self.start_wall if self.start_wall is not None
                                         else time.time() + self.clock_lead_s)
        # What `netemu run --attach` needs to open a CLI on this run from another process.
        meta = self.registry.read_meta()
        meta.update(clock=self.clock.to_env(), node_addr=self.layout.node_addr,
                    shaper=self.shaper_reason)
        if self.frr is not None:
            meta["frr_dir"] = str(self.frr.state_dir)
        self.registry.write_meta(meta)
        self.timings.update(self.net.timings)
        self.timings.update(build_s=t1 - t0, shaper_s=t2 - t1, initial_state_s=t3 - t2,
                            up_s=t3 - t0)
        # Everything built so far lives as long as the run: keep the garbage collector from
        # rescanning it (a full collection over a large plan stalls the driver for tens of ms).
        gc.collect()
        gc.freeze()
        # A waiting thread gets the interpreter lock after this long (default 5 ms): the
        # driver's ticks should not wait behind route computations or user code.
        if sys.getswitchinterval() > 0.001:
            sys.setswitchinterval(0.001)
        self._thread = threading.Thread(target=self._drive, name=f"netemu-driver-{self.run}",
                                        daemon=True)
        self._thread.start()
        if self._routes is not None:
            self._router = threading.Thread(target=self._route_loop, daemon=True,
                                            name=f"netemu-routes-{self.run}")
            self._router.start()

    def stop(self) -> dict[str, float]:
        """Tear everything down (idempotent); returns timings."""
        if self._stopped or not self._started:
            return {}
        self._stopped = True
        t0 = time.monotonic()
        self._stop.set()
        for th in (self._thread, self._router):
            if th is not None and th is not threading.current_thread():
                th.join(timeout=5)
        out: dict[str, float] = {}
        for h in list(self._hosts.values()):
            with contextlib.suppress(Exception):
                h.terminate()  # type: ignore[attr-defined]
        if self.frr is not None:
            with contextlib.suppress(Exception):
                self.frr.stop()
        pids = [p.pid for p in self._procs if p.poll() is None]
        if self.shaper is not None:
            with contextlib.suppress(Exception):
                self.shaper.stop()
        if self.net is not None:
            with contextlib.suppress(Exception):
                out.update(self.net.teardown(pids))
        for p in self._procs:
            with contextlib.suppress(Exception):
                p.wait(timeout=1)
        self.registry.remove()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        out["down_s"] = time.monotonic() - t0
        self.timings.update(out)
        self._done.set()
        return out

    def __enter__(self) -> Emulation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the driver --------------------------------------------------------------------

    def _drive(self) -> None:
        assert self.clock is not None
        period = self.tick_s
        # links hold their start_s state until the clock reaches start_s (clock_lead_s)
        if self._stop.wait(max(0.0, self.clock.t0_wall - time.time())):
            self._done.set()
            return
        next_wall = time.time() + period
        st = self.stats
        try:
            while not self._stop.is_set():
                # Wake at the next tick, or earlier at the next contact start/end, so
                # carrier changes happen on time rather than up to a tick late.
                target = next_wall
                ev = self.timeline.next_event_s()
                if ev is not None and ev < self.end_s:
                    target = min(target, self.clock.wall_at(ev))
                delay = target - time.time()
                if delay > 0 and self._stop.wait(delay):
                    break
                wake = time.time()
                st.lateness_s.append(max(0.0, wake - target))
                t_s = self.clock.now_s(wake)
                if ev is not None and target < next_wall:
                    t_s = max(t_s, ev)  # rounding must not leave the event unapplied
                t_s = min(t_s, self.end_s)
                c0 = time.perf_counter()
                scale = self.clock.scale_now()
                if scale != self.shaped_scale:
                    self._reshape(scale, t_s)
                ch = self.timeline.advance(t_s)
                self._apply(ch)
                st.cost_s.append(time.perf_counter() - c0)
                st.ticks += 1
                st.last_updates = len(ch)
                st.updates += len(ch)
                st.t_s = t_s
                if len(st.lateness_s) > 100_000:
                    del st.lateness_s[:50_000], st.cost_s[:50_000]
                if t_s >= self.end_s:
                    break
                if target < next_wall:
                    continue  # an event wake-up: the regular tick is still ahead
                next_wall += period
                now = time.time()
                if now > next_wall + period:
                    skipped = int((now - next_wall) / period)
                    st.missed_ticks += skipped
                    next_wall += skipped * period
        except BaseException as e:  # surfaced through driver_error / wait()
            self.driver_error = e
        finally:
            self._done.set()

    def _apply(self, ch: Changes) -> None:
        net, sh, lay = self.net, self.shaper, self.layout
        assert net is not None and sh is not None
        events: list[LinkEvent] = []
        eps = lay.endpoints
        with self._lock:
            sh.begin()
            touched: set[str] = set()
            for pi in ch.down:
                p = lay.periods[pi]
                self._up.discard(pi)
                sh.clear_dir(p.ep_a)
                sh.clear_dir(p.ep_b)
                net.set_carrier([p.ep_a, p.ep_b], False)
                self._neighbours(p.a, p.ep_a, p.b, p.ep_b, up=False)
                self._neighbours(p.b, p.ep_b, p.a, p.ep_a, up=False)
                touched.update((p.a, p.b))
                t_down = ch.t_s if pi in ch.faulted else p.end_s
                events.append(LinkEvent("down", t_down, p.a, p.b, eps[p.ep_a].ifname,
                                        eps[p.ep_b].ifname, p.kind))
            for e in ch.stopped:
                sh.clear_dir(e)
            self._shape(ch.params, self.shaped_scale)
            for pi in ch.up:
                p = lay.periods[pi]
                self._up.add(pi)
                net.set_carrier([p.ep_a, p.ep_b], True)
                self._neighbours(p.a, p.ep_a, p.b, p.ep_b, up=True)
                self._neighbours(p.b, p.ep_b, p.a, p.ep_a, up=True)
                touched.update((p.a, p.b))
                t_up = ch.t_s if pi in ch.faulted else max(p.start_s, self.start_s)
                events.append(LinkEvent("up", t_up, p.a, p.b, eps[p.ep_a].ifname,
                                        eps[p.ep_b].ifname, p.kind))
            sh.commit()
            assert net.nl_shaper is not None
            net.nl_shaper.flush()
            for n in touched:
                if n in net.nl:
                    net.nl[n].flush()
            if ch.topology_changed and self._routes is not None:
                if self._router is None:  # bring-up: routes in place before the clock starts
                    self._install_routes()
                else:
                    self._route_gen += 1
                    self._route_wake.set()
            self.stats.links_up = len(self._up)
        for e in ch.stopped:
            ep = eps[e]
            peer = self._peer_of(e)
            events.append(LinkEvent("stopped", ch.t_s, ep.node, peer[0] if peer else "",
                                    ep.ifname, peer[1] if peer else "", ep.kind))
        for dp in ch.params:
            s, d = eps[dp.src], eps[dp.dst]
            events.append(LinkEvent("params", ch.t_s, s.node, d.node, s.ifname, d.ifname, s.kind,
                                    dp.delay_s, dp.rate_bps, dp.loss))
        # a fault's start before the links it took down, its end after those it restored
        started = [FaultEvent("started", f.start_s, f) for what, f in ch.faults
                   if what == "started"]
        ended = [FaultEvent("ended", f.end_s, f) for what, f in ch.faults if what == "ended"]
        self._notify(self._fault_subs, started)
        self._notify(self._subs, events)
        self._notify(self._fault_subs, ended)

    def _shape(self, params: Sequence[DirParams], scale: float) -> None:
        """Set directions' shaping from their scenario values (under ``_lock``, between
        the shaper's begin and commit)."""
        sh, lay, share = self.shaper, self.layout, self.share
        assert sh is not None
        for dp in params:
            # Wall-clock values: at time scale k, scenario seconds pass k times faster,
            # so delays shrink and rates grow by k (a contact still carries its volume).
            delay_s = dp.delay_s / scale
            if share is not None:
                if not share.is_local_endpoint(lay, dp.src):  # shaped by its own host
                    sh.set_dir(dp.src, dp.dst, 0.0, 0.0, 0.0)
                    continue
                if not share.is_local_endpoint(lay, dp.dst):  # the tunnel adds its own
                    delay_s = max(0.0, delay_s - share.underlay_delay_s)
            sh.set_dir(dp.src, dp.dst, delay_s, dp.rate_bps * scale, dp.loss)

    def _reshape(self, scale: float, t_s: float) -> None:
        """The clock's time scale changed: every direction carrying now is shaped at the
        new one (the same scenario delays, rates and losses in new wall-clock values)."""
        net, sh = self.net, self.shaper
        assert net is not None and sh is not None and net.nl_shaper is not None
        with self._lock:
            params = self.timeline.current_params()
            sh.begin()
            self._shape(params, scale)
            sh.commit()
            net.nl_shaper.flush()
            self.shaped_scale = scale
        for cb in list(self._scale_subs):
            cb(t_s, scale, len(params))

    def subscribe_scale(self, callback: Callable[[float, float, int], None]
                        ) -> Callable[[], None]:
        """Call ``callback(t_s, time_scale, directions)`` once the links are shaped at a
        new time scale (the run's clock file changed it; from the driver thread)."""
        self._scale_subs.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._scale_subs.remove(callback)

        return unsubscribe

    @staticmethod
    def _notify(subs: list[Callable[[Any], None]], events: Sequence[object]) -> None:
        if subs and events:
            for cb in list(subs):
                for ev in events:
                    with contextlib.suppress(Exception):
                        cb(ev)

    def _install_routes(self) -> None:
        from netemu.emulator.iproute_plugin import PluginRoutes

        assert self._routes is not None
        comp, inst = self._routes
        with self._lock:
            links = self._route_links()
            t_s = self.timeline.t_s
            info = self._route_info() if isinstance(comp, PluginRoutes) else None
        if isinstance(comp, PluginRoutes):
            assert info is not None
            table = comp.compute(links, info, t_s)
            if table is None:  # the plug-in failed (reported): the routes in place stay
                return
        else:
            table = comp.compute(links)
        changed = inst.install(table)
        self.stats.route_changes += changed
        self._notify(self._route_subs, [RouteEvent("installed", t_s, changed)])

    def _start_frr(self, settings: FrrSettings) -> None:
        from netemu.emulator.bird import BirdDaemons
        from netemu.emulator.frr import FrrDaemons

        t0 = time.monotonic()
        lay = self.layout
        nodes = {n: (lay.node_addr[n], [lay.endpoints[e].ifname for e in lay.node_endpoints[n]])
                 for n in lay.nodes}

        def spawn(node: str, argv: list[str], log: Path) -> subprocess.Popen:
            assert self.net is not None
            with open(log, "wb") as out:  # before the clock starts: no clock variables
                p = subprocess.Popen(self.net.exec_argv(node, argv), stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self._procs.append(p)
            self.registry.add_pid(p.pid, f"frr:{node}")
            return p

        cls = BirdDaemons if settings.daemon == "bird" else FrrDaemons
        self.frr = cls(nodes, self.registry.path / "frr", settings, spawn,
                       log_dir=self.routing_dir)
        self.frr.start()
        self.timings["frr_start_s"] = time.monotonic() - t0

    def vtysh(self, node: str, *args: str, timeout: float = 30) -> str:
        """``vtysh ARGS`` on ``node``'s FRR daemons (``vtysh(n, "-c", "show ip route")``);
        in mode bird, ``birdc ARGS`` (``vtysh(n, "show", "protocols")``)."""
        if self.frr is None:
            raise NetemuError("no routing daemons run here (ip_routing mode frr or bird)")
        r = self.run_cmd(node, self.frr.vtysh_argv(node, *args), timeout=timeout)
        return str(r.stdout) + str(r.stderr)

    def _shell_init(self, node: str) -> str:
        return vtysh_shell_function(self.frr.node_dir(node)) if self.frr is not None else ""

    def _route_error(self, t_s: float, message: str) -> None:
        self._notify(self._route_subs, [RouteEvent("error", t_s, message=message)])

    def _route_info(self) -> dict[tuple[int, int], tuple[float, str]]:
        """(rate_bps of the slower direction, link kind) per node pair linked now."""
        index = self._node_index
        rate: dict[int, float] = {}
        for ci, (_d, r, _loss) in self.timeline.applied.items():
            pi = self.layout.contact_period[ci]
            rate[pi] = min(r, rate.get(pi, r))
        out: dict[tuple[int, int], tuple[float, str]] = {}
        for pi in self._up:
            p = self.layout.periods[pi]
            u, v = sorted((index[p.a], index[p.b]))
            r = rate.get(pi, 0.0)
            if (u, v) not in out or r > out[(u, v)][0]:
                out[(u, v)] = (r, p.kind)
        return out

    def _route_loop(self) -> None:
        """Routes are recomputed off the driver thread, so a topology change never
        delays a tick; changes that arrive meanwhile are coalesced into the next run."""
        done = 0
        while not self._stop.is_set():
            self._route_wake.wait(0.5)
            self._route_wake.clear()
            gen = self._route_gen
            if gen == done:
                continue
            try:
                t0 = time.perf_counter()
                self._install_routes()
                self.stats.route_s.append(time.perf_counter() - t0)
            except Exception as e:  # keep the emulation going; report it
                self.driver_error = e
            done = gen

    def _neighbours(self, node: str, ep: int, peer: str, peer_ep: int, *, up: bool) -> None:
        """Permanent neighbour entries and a host route to the peer's link address."""
        net, lay = self.net, self.layout
        assert net is not None
        if node not in net.nl:  # on another host of a cluster run
            return
        nl = net.nl[node]
        oif = net.ifindex[ep]
        pe = lay.endpoints[peer_ep]
        if up:
            nl.neigh_replace(oif, pe.addr, pe.mac)
            nl.neigh_replace(oif, lay.node_addr[peer], pe.mac)
            nl.route_replace(pe.addr, 32, oif=oif, src=lay.endpoints[ep].addr)
        else:
            nl.route_del(pe.addr, 32)
            nl.neigh_del(oif, pe.addr)
            nl.neigh_del(oif, lay.node_addr[peer])

    def _route_links(self) -> dict[tuple[int, int], tuple[float, int, int]]:
        """The links up now: (u, v) node indices (layout order, u < v) → (delay_s, endpoint
        at u, endpoint at v), the lightest link where a pair has several."""
        index = self._node_index
        delay: dict[int, float] = {}
        tl = self.timeline
        for ci in tl.active:
            d = tl.delay_of(ci)
            pi = self.layout.contact_period[ci]
            if d == d:  # not NaN
                delay[pi] = min(d, delay.get(pi, d))
        out: dict[tuple[int, int], tuple[float, int, int]] = {}
        for pi in self._up:
            p = self.layout.periods[pi]
            u, v = index[p.a], index[p.b]
            w = delay.get(pi, 0.0)
            if u < v:
                key, val = (u, v), (w, p.ep_a, p.ep_b)
            else:
                key, val = (v, u), (w, p.ep_b, p.ep_a)
            if key not in out or w < out[key][0]:
                out[key] = val
        return out

    def links_now(self) -> dict[tuple[int, int], tuple[float, int, int]]:
        """:meth:`_route_links` under the driver's lock (for measurements)."""
        with self._lock:
            return self._route_links()

    def _peer_of(self, e: int) -> tuple[str, str] | None:
        for pi in self._up:
            p = self.layout.periods[pi]
            if p.ep_a == e:
                return p.b, self.layout.endpoints[p.ep_b].ifname
            if p.ep_b == e:
                return p.a, self.layout.endpoints[p.ep_a].ifname
        return None

    # --- the Python API ------------------------------------------------------------------

    def now_s(self) -> float:
        """Scenario time now (seconds from the plan epoch)."""
        if self.clock is None:
            return self.start_s
        return max(self.start_s, min(self.clock.now_s(), self.end_s))

    def wait(self, until_s: float | None = None, *, timeout: float | None = None) -> bool:
        """Block until scenario time ``until_s`` (default: the end); False on timeout."""
        assert self.clock is not None, "start() first"
        target = self.end_s if until_s is None else min(until_s, self.end_s)
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.clock.now_s() < target and not self._done.is_set():
            left = self.clock.timer_s(target)
            if deadline is not None:
                left = min(left, deadline - time.monotonic())
                if left <= 0:
                    return False
            self._done.wait(max(0.0, min(left, 0.5)))
        if self.driver_error is not None:
            raise NetemuError(f"link driver failed: {self.driver_error!r}")
        return True

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def subscribe(self, callback: Callable[[LinkEvent], None]) -> Callable[[], None]:
        """Call ``callback(LinkEvent)`` for every link change (from the driver thread;
        keep it quick). Returns a function that unsubscribes."""
        self._subs.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subs.remove(callback)

        return unsubscribe

    def subscribe_faults(self, callback: Callable[[FaultEvent], None]) -> Callable[[], None]:
        """Call ``callback(FaultEvent)`` when a link fault starts or ends (driver thread)."""
        self._fault_subs.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._fault_subs.remove(callback)

        return unsubscribe

    def subscribe_routes(self, callback: Callable[[RouteEvent], None]) -> Callable[[], None]:
        """Call ``callback(RouteEvent)`` when routes are installed or a routing plug-in
        fails (from the route thread)."""
        self._route_subs.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._route_subs.remove(callback)

        return unsubscribe

    def env(self, node: str) -> dict[str, str]:
        """Environment for processes in ``node``: the clock and who/where they are."""
        assert self.clock is not None, "start() first"
        env = self.clock.to_env()
        env.update(NETEMU_RUN=self.run, NETEMU_NODE=node,
                   NETEMU_NODE_ADDR=self.layout.node_addr[node])
        return env

    def popen(self, node: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
              **kwargs: object) -> subprocess.Popen:
        """Start ``argv`` inside ``node``'s namespace with the clock variables set (and
        ``env`` on top of this process's environment). Killed at ``stop()``."""
        self._check_node(node)
        assert self.net is not None, "start() first"
        full = dict(os.environ)
        full.update(self.env(node))
        if env:
            full.update(env)
        p = subprocess.Popen(self.net.exec_argv(node, list(argv)), env=full,  # type: ignore[call-overload]
                             **kwargs)
        self._procs.append(p)
        self._user_procs.append(p)
        self.registry.add_pid(p.pid, f"popen:{node}")
        return p

    def hosted_pids(self) -> list[int]:
        """The processes that run in the hosts for the scenario: those started with
        :meth:`popen` (bundle agents, probes, the user's) with their children, and the
        commands run from the hosts' shells (the CLI), not the shells themselves nor the
        routing daemons. What a paused run stops (netemu.run.pause)."""
        import psutil

        roots = [(p.pid, True) for p in self._user_procs if p.poll() is None]
        roots += [(int(h.pid), False) for h in list(self._hosts.values())  # type: ignore[attr-defined]
                  if getattr(h, "pid", None)]
        out: list[int] = []
        for pid, itself in roots:
            try:
                proc = psutil.Process(pid)
                out += ([pid] if itself else []) + [c.pid for c in proc.children(recursive=True)]
            except psutil.Error:
                continue
        return out

    def run_cmd(self, node: str, argv: Sequence[str], *, timeout: float | None = 60,
                **kwargs: object) -> subprocess.CompletedProcess:
        """Run ``argv`` in ``node`` to completion (output captured as text)."""
        self._check_node(node)
        assert self.net is not None, "start() first"
        full = dict(os.environ)
        full.update(self.env(node))
        return subprocess.run(self.net.exec_argv(node, list(argv)), env=full,  # type: ignore[call-overload]
                              capture_output=True, text=True, timeout=timeout, **kwargs)

    def host(self, node: str):  # -> EmuHost
        """The Mininet host of ``node`` (its shell starts on first use)."""
        self._check_node(node)
        h = self._hosts.get(node)
        if h is None:
            from netemu.emulator.hosts import EmuHost

            assert self.net is not None, "start() first"
            h = EmuHost(node, netns=self.net.host_ns[node], node_ip=self.layout.node_addr[node],
                        env=self.env(node), init=self._shell_init(node))
            self._hosts[node] = h
            self.registry.add_pid(h.pid, f"shell:{node}")
        return h

    def cli(self) -> None:
        """Mininet's CLI over every host (``sat3 ping gs-kashi``)."""
        from netemu.emulator.hosts import EmuCLI, EmuHost, EmuNet

        assert self.net is not None, "start() first"
        missing = [n for n in self.layout.nodes if n not in self._hosts]
        started = [EmuHost(n, netns=self.net.host_ns[n], node_ip=self.layout.node_addr[n],
                           env=self.env(n), wait=False, init=self._shell_init(n))
                   for n in missing]
        for h in started:
            h.finish_start()
            self._hosts[h.name] = h
            self.registry.add_pid(h.pid, f"shell:{h.name}")
        EmuCLI(EmuNet([self._hosts[n] for n in self.layout.nodes]))  # type: ignore[misc]

    def node_addr(self, node: str) -> str:
        """The node's address: on its loopback, reachable over any path (IP routing)."""
        self._check_node(node)
        return self.layout.node_addr[node]

    def addresses(self, node: str) -> dict[str, str]:
        """``{"node": node address, <ifname>: interface address, …}``."""
        self._check_node(node)
        out = {"node": self.layout.node_addr[node]}
        for e in self.layout.node_endpoints[node]:
            ep = self.layout.endpoints[e]
            out[ep.ifname] = ep.addr
        return out

    def neighbours(self, node: str) -> list[Neighbour]:
        """Nodes linked to ``node`` now."""
        self._check_node(node)
        out = []
        lay = self.layout
        with self._lock:
            up = list(self._up)
        for pi in up:
            p = lay.periods[pi]
            if node not in (p.a, p.b):
                continue
            me, other, pe = (p.ep_a, p.b, p.ep_b) if p.a == node else (p.ep_b, p.a, p.ep_a)
            out.append(Neighbour(other, lay.node_addr[other], lay.endpoints[pe].addr,
                                 lay.endpoints[me].ifname, lay.endpoints[pe].ifname, p.kind))
        return sorted(out, key=lambda n: n.node)

    def link_counters(self, src: str, dst: str) -> dict[str, float]:
        """Shaper counters of frames ``src`` sent toward ``dst`` over the links between them
        (zeros where the shaper keeps none per endpoint: netem)."""
        out = {"frames": 0.0, "bytes": 0.0, "lost": 0.0, "queue_drops": 0.0}
        if self.shaper is None:
            return out
        seen = set()
        for p in self.layout.periods:
            if {p.a, p.b} == {src, dst}:
                e = p.ep_a if p.a == src else p.ep_b
                if e in seen:
                    continue
                seen.add(e)
                counters = self.shaper.endpoint_counters(e)
                if counters is None:
                    return out
                f, b, lo, q = counters
                out["frames"] += f
                out["bytes"] += b
                out["lost"] += lo
                out["queue_drops"] += q
        return out

    def _check_node(self, node: str) -> None:
        if node not in self.layout.node_addr:
            raise InputError(f"no node named {node!r} in this emulation")
