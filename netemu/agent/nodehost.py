"""The node host: one process, one asyncio loop, the bundle agents of many nodes.

``python -m netemu.agent.nodehost --config HOST.json`` (or :func:`main`) reads::

    {"nodes": [{"config": "sat1.json", "netns": "/run/netns/sat1"},
               {"config": "gs1.json",  "netns": null}, ...]}

Each entry is one node: ``config`` is exactly a ``netemu agent`` config
(:class:`~netemu.agent.config.AgentConfig`; a relative path is relative to HOST.json),
``netns`` the node's network namespace (``null``: this process's). Every node keeps what
a single-node agent has — its own BPA core, store, app socket, CL sockets and log — so
seen from the wire, from its apps and from telemetry it behaves like ``netemu agent``.

Why one loop can serve nodes of many namespaces: a socket keeps the network namespace it
was created in. :class:`NetnsSockets` enters the node's namespace (``setns(2)``, this
thread only) just to create a socket, comes back, and hands the socket to asyncio; binds,
connects and every read and write then happen in the node's namespace. App sockets are
Unix paths, reachable from any namespace.

What the nodes share, read only: one :class:`~netemu.plan.contacts.ContactPlan` per
distinct plan file (:class:`PlanCache`), hence one CGR contact graph and one plan index
per plan. Also shared: the group-commit threads and the store's fdatasync threads (each
node still has at most one commit in flight, so its commits stay in order), one
telemetry thread and broker connection that publishes every node's ``bundle/<node>``
events (:class:`~netemu.agent.telemetry.PublisherHub`), and one timer that samples every
node's ``counters/<node>`` (:class:`~netemu.agent.counters.CountersTimer`).

SIGTERM / SIGINT stop every node as ``netemu agent`` stops. A node whose config is bad,
or that cannot start, fails the start with an error naming the node and its config. An
exception in one node's callbacks or tasks is logged (in that node's log when it can be
told, else on stderr) and the other nodes go on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netemu.agent.agent import Agent, AgentServices
from netemu.agent.channels import Sockets, UdpclEndpoint
from netemu.agent.config import AgentConfig
from netemu.agent.counters import CountersTimer
from netemu.agent.memtune import tune_malloc
from netemu.agent.telemetry import PublisherHub
from netemu.config import Fields, load_yaml
from netemu.dtn import bpa
from netemu.errors import InputError, NetemuError
from netemu.plan.contacts import ContactPlan
from netemu.runtime.env import HostEnv
from netemu.runtime.fdlimit import raise_fd_limit

HOST_KEYS = ("nodes",)
NODE_KEYS = ("config", "netns")
COMMIT_THREADS = 8  # group commits of all nodes (each node has one in flight at most)
SYNC_THREADS = 8  # the stores' fdatasync / directory fsync jobs
FDS_PER_NODE = 16
"""Open files a node needs: measured 13.5 to 14.5 a node on star-compute-2800's node hosts
(four sessions, listeners, app socket, the store's three files, the log, the namespace
handle), with room for handovers and dials in flight. The runner sizes node hosts so
that their nodes fit the open-file limit at this figure."""
FDS_RESERVE = 1024  # the process's own: broker, threads' files, logs
DIALS_IN_FLIGHT = 256  # session set-ups at once (TCP, TCPCL, TLS), all nodes together
LAG_REPORT_S = 5.0  # the loop's worst lateness is logged this often (when late)
LAG_WARN_S = 0.5
CLONE_NEWNET = 0x40000000


# --- the host's config ------------------------------------------------------------------


@dataclass(frozen=True)
class HostedNode:
    """One node of a host: its agent config file and its network namespace."""

    config: str  # absolute path of the node's agent config
    netns: str | None  # a bound namespace (``/run/netns/<name>``); None: the host's own
    where: str  # "HOST.json:3: nodes[0]", for errors about this node


@dataclass(frozen=True)
class HostConfig:
    """What a node host serves (its HOST.json)."""

    nodes: tuple[HostedNode, ...]
    source: str = "<host config>"

    @classmethod
    def load(cls, path: str | Path) -> HostConfig:
        p = Path(path)
        return cls.from_fields(Fields(load_yaml(p), source=str(p), line=1),
                               base=p.resolve().parent)

    @classmethod
    def from_obj(cls, obj: Any, *, source: str = "<host config>",
                 base: Path | None = None) -> HostConfig:
        return cls.from_fields(Fields(obj, source=source), base=base)

    @classmethod
    def from_fields(cls, f: Fields, *, base: Path | None = None) -> HostConfig:
        """Every bad value is an :class:`InputError` naming file, line and field."""
        if not isinstance(f.value, dict):
            raise f.error("expected a mapping with 'nodes'")
        f.check_keys(HOST_KEYS, required=HOST_KEYS)
        entries = f.items("nodes", non_empty=True)
        nodes: list[HostedNode] = []
        seen: dict[str, str] = {}
        for i, e in enumerate(entries):
            if not isinstance(e.value, dict):
                raise f.child("nodes").error(
                    "expected {config: FILE, netns: PATH or null}", i)
            e.check_keys(NODE_KEYS, required=("config",))
            config = e.string("config", required=True) or ""
            if not config:
                raise e.error("empty path", "config")
            netns = None if e.get("netns") is None else (e.string("netns") or None)
            cfg_path = Path(config)
            if not cfg_path.is_absolute() and base is not None:
                cfg_path = base / cfg_path
            where = f"{f.source}:{e.line}: {e.path}" if e.line else f"{f.source}: {e.path}"
            key = str(cfg_path)
            if key in seen:
                raise e.error(f"config listed twice (also {seen[key]})", "config")
            seen[key] = e.path
            nodes.append(HostedNode(key, netns, where))
        return cls(tuple(nodes), f.source)


# --- network namespaces -----------------------------------------------------------------

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def in_netns(ns_fd: int) -> Iterator[None]:
    """Run the block in the network namespace open as ``ns_fd`` (this thread only):
    sockets created in it stay in that namespace after the block."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(ns_fd)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def _addresses(host: str, port: int, kind: socket.SocketKind, *,
               passive: bool = False) -> list[tuple[Any, ...]]:
    """``getaddrinfo`` results for a literal address without a lookup; a name is looked
    up by this process's resolver (the emulation's addresses are literals)."""
    flags = socket.AI_PASSIVE if passive else 0
    try:
        return socket.getaddrinfo(host or None, port, type=kind,
                                  flags=flags | socket.AI_NUMERICHOST)
    except socket.gaierror:
        return socket.getaddrinfo(host or None, port, type=kind, flags=flags)


class NetnsSockets(Sockets):
    """A node's CL sockets, created in its network namespace (``path``), then served by
    the host's one loop."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def socket(self, family: int, kind: socket.SocketKind) -> socket.socket:
        with in_netns(self._fd):
            s = socket.socket(family, kind)
        s.setblocking(False)
        return s

    async def listen(self, loop: asyncio.AbstractEventLoop,
                     factory: Callable[[], asyncio.Protocol], host: str,
                     port: int) -> list[asyncio.AbstractServer]:
        servers: list[asyncio.AbstractServer] = []
        for family, kind, _, _, addr in _addresses(host, port, socket.SOCK_STREAM,
                                                   passive=True):
            s = self.socket(family, kind)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind(addr)
            except OSError:
                s.close()
                for srv in servers:
                    srv.close()
                raise
            servers.append(await loop.create_server(factory, sock=s))
        return servers

    async def datagram(self, loop: asyncio.AbstractEventLoop,
                       factory: Callable[[], UdpclEndpoint], host: str,
                       port: int) -> UdpclEndpoint:
        family, kind, _, _, addr = _addresses(host, port, socket.SOCK_DGRAM, passive=True)[0]
        s = self.socket(family, kind)
        try:
            s.bind(addr)
        except OSError:
            s.close()
            raise
        _, proto = await loop.create_datagram_endpoint(factory, sock=s)
        return proto

    async def connect(self, loop: asyncio.AbstractEventLoop,
                      factory: Callable[[], asyncio.Protocol], host: str, port: int) -> None:
        err: OSError | None = None
        for family, kind, _, _, addr in _addresses(host, port, socket.SOCK_STREAM):
            s = self.socket(family, kind)
            try:
                await loop.sock_connect(s, addr)
            except OSError as e:
                s.close()
                err = e
                continue
            except BaseException:  # cancelled (the connect timeout)
                s.close()
                raise
            await loop.create_connection(factory, sock=s)
            return
        raise err or OSError(f"no address for {host}:{port}")


# --- shared state -----------------------------------------------------------------------


class PlanCache:
    """One :class:`ContactPlan` per distinct plan file, for every node of the process."""

    def __init__(self) -> None:
        self.plans: dict[str, ContactPlan] = {}

    def load(self, path: str) -> ContactPlan:
        key = os.path.realpath(path)
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = ContactPlan.load(path)
        return plan


# --- the host ---------------------------------------------------------------------------


def _log(event: str, **fields: Any) -> None:
    """The host's own log lines (JSON) on stderr; the nodes log to their own logs."""
    print(json.dumps({"t": round(time.time(), 3), "host": os.getpid(), "event": event,
                      **fields}, default=str), file=sys.stderr, flush=True)


class NodeHost:
    """The agents of ``config``'s nodes in this process's loop."""

    def __init__(self, config: HostConfig) -> None:
        self.config = config
        self.plans = PlanCache()
        self.commit_pool = ThreadPoolExecutor(COMMIT_THREADS, thread_name_prefix="commit")
        self.sync_pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="store-sync")
        self.agents: list[Agent] = []
        self._sockets: list[NetnsSockets] = []
        self._stop = asyncio.Event()
        self.dial_gate = asyncio.Semaphore(DIALS_IN_FLIGHT)
        self.dials_open = asyncio.Event()  # every node started (listening)
        self._by_node: dict[str, Agent] = {}
        self._started: list[Agent] = []
        host = HostEnv.from_env()  # the run's broker, when set: one connection for all
        self.telemetry = PublisherHub(host.mqtt) if host.mqtt is not None else None
        # one counters/<node> timer for every node (started once the nodes are up)
        self.counters_s = host.counters_interval_s if self.telemetry is not None else 0.0
        self.counters: CountersTimer | None = None
        self._counters_task: asyncio.Task | None = None
        self._lag_task: asyncio.Task | None = None

    def _node_error(self, node: HostedNode, e: BaseException, doing: str) -> NetemuError:
        what = f"{e}" if isinstance(e, NetemuError) else f"{type(e).__name__}: {e}"
        return NetemuError(f"node {node.where} (config {node.config}): {doing}: {what}")

    def build(self) -> None:
        """Read every node's config and plan, open its namespace and store: the first
        bad one fails the whole start, naming the node and the config file."""
        want = len(self.config.nodes) * FDS_PER_NODE + FDS_RESERVE
        got = raise_fd_limit(want)
        if got < want:  # sockets and store files would fail mid-run: say why up front
            _log("fd_limit_low", nodes=len(self.config.nodes), wanted=want, limit=got)
        for node in self.config.nodes:
            try:
                cfg = AgentConfig.load(node.config)
            except (NetemuError, OSError) as e:
                raise self._node_error(node, e, "bad agent config") from None
            if cfg.node in self._by_node:
                raise self._node_error(node, InputError(
                    f"node {cfg.node!r} is served twice by this host"), "bad agent config")
            try:
                sockets: Sockets = Sockets()
                if node.netns:
                    ns = NetnsSockets(node.netns)
                    self._sockets.append(ns)
                    sockets = ns
            except OSError as e:
                raise self._node_error(node, e, f"cannot open network namespace "
                                                f"{node.netns}") from None
            services = AgentServices(sockets=sockets, load_plan=self.plans.load,
                                     commit_pool=self.commit_pool,
                                     sync_pool=self.sync_pool, dial_gate=self.dial_gate,
                                     dials_open=self.dials_open)
            if self.telemetry is not None:
                services.publisher = self.telemetry.publisher
                services.counters_timer = False
            try:
                agent = Agent(cfg, services=services)
            except (NetemuError, OSError) as e:
                raise self._node_error(node, e, "cannot set up the node") from None
            self.agents.append(agent)
            self._by_node[cfg.node] = agent

    async def run(self) -> None:
        """Build and start every node, serve until SIGTERM/SIGINT (or :meth:`stop`), then
        stop every node cleanly."""
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_error)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        try:
            self.build()
            for node, agent in zip(self.config.nodes, self.agents, strict=True):
                try:
                    await agent.start()
                except (NetemuError, OSError) as e:
                    raise self._node_error(node, e, "cannot start") from None
                finally:
                    self._started.append(agent)  # (a half-started node is stopped too)
            _log("host_started", nodes=len(self.agents), plans=len(self.plans.plans))
            self.dials_open.set()
            self._lag_task = asyncio.get_running_loop().create_task(self._watch_lag())
            if self.counters_s > 0 and self.agents:
                self.counters = CountersTimer(lambda: self._started, self.counters_s,
                                              self.agents[0].clock)
                self._counters_task = loop.create_task(self.counters.run(), name="counters")
            await self._stop.wait()
        finally:
            await self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    async def _watch_lag(self) -> None:
        """Log how late the loop ran a 0.1 s timer, worst of each LAG_REPORT_S, when over
        LAG_WARN_S: every node of the host waits that long for its sockets and timers."""
        loop = asyncio.get_running_loop()
        worst, since = 0.0, loop.time()
        while True:
            t0 = loop.time()
            await asyncio.sleep(0.1)
            worst = max(worst, loop.time() - t0 - 0.1)
            if loop.time() - since >= LAG_REPORT_S:
                if worst >= LAG_WARN_S:
                    _log("loop_lag", worst_s=round(worst, 3), nodes=len(self.agents))
                worst, since = 0.0, loop.time()

    async def shutdown(self) -> None:
        """Stop every node (SESS_TERM, stores closed, sockets removed): one node's
        failure to stop does not keep the others from stopping."""
        started = self._started
        for task in (self._counters_task, self._lag_task):
            if task is not None:
                task.cancel()
        self._counters_task = self._lag_task = None
        if self.counters is not None:  # every node's last sample, before any stops
            self.counters.publish(final=True)
            self.counters = None
        results = await asyncio.gather(*(a.shutdown() for a in started),
                                       return_exceptions=True)
        for agent, r in zip(started, results, strict=True):
            if isinstance(r, BaseException):
                _log("node_stop_error", node=agent.cfg.node, error=repr(r))
        for agent in self.agents:
            if agent not in started:  # built, never started: only its store to close
                try:
                    agent.core.close()
                except Exception as e:  # noqa: BLE001 - the others are closed regardless
                    _log("node_stop_error", node=agent.cfg.node, error=repr(e))
                agent.close_log()
        self.agents, self._started = [], []
        for s in self._sockets:
            s.close()
        self._sockets = []
        self.commit_pool.shutdown(wait=True)
        self.sync_pool.shutdown(wait=True)
        _log("host_stopped")

    def _agent_of(self, context: dict[str, Any]) -> Agent | None:
        """The node an asyncio error belongs to: a channel's agent, or a task's name
        (``agent <node>: ...``, see :meth:`Agent._spawn`)."""
        for key in ("protocol", "transport"):
            agent = getattr(context.get(key), "agent", None)
            if isinstance(agent, Agent):
                return agent
        owner = getattr(getattr(context.get("handle"), "_callback", None), "__self__", None)
        for candidate in (owner, getattr(owner, "agent", None)):
            if isinstance(candidate, Agent):
                return candidate
        for key in ("task", "future"):
            get_name = getattr(context.get(key), "get_name", None)
            name = get_name() if get_name is not None else ""
            if name.startswith("agent "):
                return self._by_node.get(name[6:].partition(":")[0])
        return None

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """An exception escaped a callback or task: log it with its node; the loop and
        every node go on."""
        exc = context.get("exception")
        error = repr(exc) if exc is not None else context.get("message", "")
        agent = self._agent_of(context)
        if agent is not None:
            agent.log("node_error", error=error, message=context.get("message", ""))
        _log("node_error", node=agent.cfg.node if agent is not None else None, error=error,
             message=context.get("message", ""))


async def run_host(config: HostConfig, *, tune_gc: bool = True) -> None:
    if tune_gc:  # as an agent process (see netemu.agent.main)
        bpa.tune_gc()
        tune_malloc()
    await NodeHost(config).run()


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments) and serve the nodes."""
    parser = argparse.ArgumentParser(
        prog="python -m netemu.agent.nodehost",
        description="run the DTN bundle agents of many nodes in one process")
    parser.add_argument("--config", required=True, metavar="HOST.json",
                        help='{"nodes": [{"config": AGENT_CONFIG, "netns": PATH or null}]}')
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        asyncio.run(run_host(HostConfig.load(args.config)))
        return 0
    except NetemuError as e:
        print(f"netemu node host: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
