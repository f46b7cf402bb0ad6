"""Helpers for the agent integration tests and the benchmark: configs for agents on
loopback, agent subprocesses, a TCP proxy that can cut a link and bring it back, and a
stand-in core for testing the convergence-layer shell alone."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netemu.agent.agent import Agent

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_pair(tmp: Path, *, port_a: int, port_b: int, a_to_b: str | None = None,
               b_to_a: str | None = None, routing: str = "cgr", extra: dict | None = None,
               rate_bps: float = 1e11) -> dict[str, Path]:
    """Configs for agents A (ipn:1) and B (ipn:2) on loopback with a plan that keeps the
    A–B contact up for a day. ``a_to_b``/``b_to_a`` override the address each side dials
    (to put a proxy in between; "" = never dial)."""
    epoch = datetime.now(timezone.utc) - timedelta(seconds=30)
    plan = {
        "epoch": epoch.isoformat().replace("+00:00", "Z"),
        "nodes": {"A": 1, "B": 2},
        "contacts": [
            {"from": "A", "to": "B", "start_s": 0, "end_s": 86400, "rate_bps": rate_bps,
             "owlt_s": 0.001},
            {"from": "B", "to": "A", "start_s": 0, "end_s": 86400, "rate_bps": rate_bps,
             "owlt_s": 0.001},
        ],
    }
    (tmp / "plan.json").write_text(json.dumps(plan))
    out = {}
    for name, ipn, port, peer, peer_ipn, dial in (
        ("A", 1, port_a, "B", 2, f"127.0.0.1:{port_b}" if a_to_b is None else a_to_b),
        ("B", 2, port_b, "A", 1, f"127.0.0.1:{port_a}" if b_to_a is None else b_to_a),
    ):
        cfg = {
            "node": name, "ipn": ipn,
            "listen": {"tcpcl": [f"127.0.0.1:{port}"], "udpcl": [f"127.0.0.1:{port}"]},
            "app_socket": str(tmp / name / "bp.sock"),
            "store": str(tmp / name / "store.sqlite"),
            "contact_plan": str(tmp / "plan.json"),
            "routing": {"algorithm": routing},
            # as in a scenario run: A (the lower ipn) dials, B only if no session came
            "neighbours": [{"name": peer, "ipn": peer_ipn, "cl": "tcpcl", "address": dial,
                            "dial": "lower"}],
            "log": str(tmp / f"{name}.log"),
            **(extra or {}),
        }
        p = tmp / f"{name}.json"
        p.write_text(json.dumps(cfg, indent=1))
        out[name] = p
    return out


class AgentProc:
    """``netemu agent`` in a subprocess."""

    def __init__(self, node: str, config: Path, *, env: dict | None = None,
                 prefix: list[str] | None = None) -> None:
        self.node = node
        self.config = config
        self.env = env
        self.prefix = prefix or []
        self.proc: subprocess.Popen | None = None

    def start(self) -> AgentProc:
        cmd = [*self.prefix, sys.executable, "-m", "netemu", "agent", "--node", self.node,
               "--config", str(self.config)]
        env = {**os.environ, "PYTHONPATH": str(ROOT), **(self.env or {})}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=open(str(self.config) + ".stderr", "ab"))  # noqa: SIM115
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def stderr_tail(self) -> str:
        p = Path(str(self.config) + ".stderr")
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""


class CutProxy:
    """A TCP relay on loopback that can cut every connection (the link goes down) and
    refuse new ones until :meth:`link_up` (the link returns).

    ``cut_after_bytes``: cut automatically once that many client→server bytes have been
    relayed on a connection (mid-bundle), then stay down for ``down_s`` seconds.
    """

    def __init__(self, target: tuple[str, int], *, cut_after_bytes: int | None = None,
                 down_s: float = 1.0) -> None:
        self.target = target
        self.cut_after_bytes = cut_after_bytes
        self.down_s = down_s
        self.up = True
        self.cuts = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> CutProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server:
            self._server.close()
        self.cut()

    def cut(self) -> None:
        self.up = False
        self.cuts += 1
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._writers.clear()

    def link_up(self) -> None:
        self.up = True

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if not self.up:
            w.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            w.transport.abort()
            return
        self._writers |= {w, uw}
        relayed = [0]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool):
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    if count and self.cut_after_bytes is not None:
                        room = self.cut_after_bytes - relayed[0]
                        if len(data) >= room:
                            dst.write(data[:max(room, 0)])
                            await dst.drain()
                            self.cut_after_bytes = None  # only once
                            self.cut()
                            asyncio.get_running_loop().call_later(self.down_s, self.link_up)
                            return
                        relayed[0] += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.transport.abort()

        await asyncio.gather(pipe(r, uw, True), pipe(ur, w, False))
        self._writers -= {w, uw}


async def wait_for(pred, timeout_s: float, what: str, step_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(step_s)


class StubCore:
    """Stores every bundle by content hash (dedupe), forwards what the test sends."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.stored: dict[str, bytes] = {}
        self.arrivals = 0
        self.sent: list[str] = []
        self.failed: list[str] = []
        self.contacts: list[tuple[str, str]] = []
        self.limits: dict[str, int | None] = {}  # neighbour -> its transfer MRU

    def app_handlers(self):
        return {}

    def app_disconnected(self, conn) -> None:
        pass

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def tick(self) -> None:
        pass

    def contact_started(self, nb: str) -> None:
        self.contacts.append(("up", nb))

    def contact_ended(self, nb: str) -> None:
        self.contacts.append(("down", nb))

    def link_limit(self, nb: str, max_bytes: int | None) -> None:
        self.limits[nb] = max_bytes

    def receive_many(self, items, done):
        for data, _nb in items:
            self.arrivals += 1
            self.stored.setdefault(hashlib.sha256(data).hexdigest(), data)
        done([True] * len(items))

    def transmitted(self, key: str, nb) -> None:
        self.sent.append(key)

    def transmitted_many(self, keys: list[str], nb) -> None:
        self.sent.extend(keys)

    def transmit_failed(self, key: str, nb, reason: str) -> None:
        self.failed.append(key)

    def send(self, nb: str, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        self.agent.enqueue(nb, key, data)
        return key


async def stream_through_a_kill9(tx, rx, dst: str, kill9, restart, n: int = 1000) -> list[bytes]:
    """Send ``n`` numbered bundles from ``tx`` to ``dst`` (registered on ``rx``); after 300,
    once 100 have arrived, ``kill9()`` then ``restart()`` the process in the way (with
    bundles in flight both ways). Returns every payload ``rx`` delivered, repeats included,
    once ``n`` distinct ones arrived; raises if ``rx`` then gets another."""
    seen: list[bytes] = []

    async def receive() -> None:
        while len(set(seen)) < n:
            seen.append((await rx.recv(timeout_s=90)).payload)

    recv_task = asyncio.ensure_future(receive())
    ids: list[str] = []
    for i in range(0, n, 20):
        ids += await tx.send_many([{"dst": dst, "payload": b"n%04d" % j}
                                   for j in range(i, min(i + 20, n))])
        await asyncio.sleep(0.005)
        if i == 300:
            await wait_for(lambda: len(seen) >= 100, 30, "first deliveries")
            kill9()
            await asyncio.sleep(0.5)
            restart()  # same stores
    await recv_task
    assert len(ids) == n
    assert len(seen) == n, f"{len(seen) - len(set(seen))} duplicates reached the app"
    assert sorted(seen) == [b"n%04d" % j for j in range(n)]
    try:
        extra = await rx.recv(timeout_s=2)
    except asyncio.TimeoutError:
        return seen
    raise AssertionError(f"a bundle delivered again after all {n}: {extra.id}")
