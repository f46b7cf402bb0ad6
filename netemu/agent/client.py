"""Async Python client of a node's bundle agent (the app socket; frames and requests in
:mod:`netemu.dtn.appframe`).

::

    from netemu.agent import BpClient

    async with await BpClient.connect(node="sat3") as bp:     # or path=..., or $NETEMU_DTN_SOCKET
        await bp.register("ipn:3.7")
        await bp.send("ipn:1.7", b"hello", lifetime_s=3600)
        async for d in bp.bundles():                           # d.src, d.payload, ...
            ...

With ``reconnect=True`` (the default) the client survives an agent restart: it reconnects,
registers its endpoints again and drops bundles it has already handed to the
application, so each bundle reaches the application exactly once. A request in flight
when the connection drops raises :class:`ConnectionError` (a ``send`` may or may not
have been stored: the caller decides whether to retry).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from netemu.agent.config import check_lifetime, default_socket_path
from netemu.agent.sockopt import big_send_buffer
from netemu.dtn.appframe import FrameDecoder, encode_frame_parts
from netemu.errors import NetemuError
from netemu.runtime.env import NETEMU_DTN_SOCKET, HostEnv

SEEN_MAX = 1_000_000  # delivered IDs remembered for dropping re-deliveries
WRITE_CHUNK_BYTES = 256 * 1024  # a big frame goes to the socket this much at a time
class BpError(NetemuError):
    """The agent refused a request (the message is the agent's)."""


@dataclass(frozen=True, init=False)
class Delivery:
    """A bundle delivered to a registered endpoint."""

    id: str
    src: str
    dst: str
    created_ms: int
    payload: bytes

    def __init__(self, id: str, src: str, dst: str, created_ms: int,  # noqa: A002
                 payload: bytes) -> None:  # (hand-written: one per bundle, 3x cheaper)
        self.__dict__.update(id=id, src=src, dst=dst, created_ms=created_ms, payload=payload)


def resolve_socket(path: str | None = None, node: str | None = None) -> str:
    """The app socket: explicit path, else the node's default, else ``$NETEMU_DTN_SOCKET``
    (which netemu sets in each host; the older ``$NETEMU_BP_SOCKET`` is read too)."""
    if path:
        return path
    if node:
        return default_socket_path(node)
    env = HostEnv.from_env().dtn_socket
    if env:
        return env
    raise NetemuError(f"no agent socket: give --socket, --node, or set ${NETEMU_DTN_SOCKET}")


class BpClient:
    def __init__(self, path: str, *, reconnect: bool = True, reconnect_timeout_s: float = 60.0):
        self.path = path
        self.reconnect = reconnect
        self.reconnect_timeout_s = reconnect_timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._rid = 0
        self._endpoints: list[str] = []
        self._watching = False
        self._deliveries: asyncio.Queue[Delivery] = asyncio.Queue()
        self._events: asyncio.Queue[dict] = asyncio.Queue()
        # IDs handed to the app, oldest first; only recent ones can come again (bundles
        # pushed but not yet acknowledged when the agent died), so the memory is bounded.
        self._seen: dict[str, None] = {}
        self.duplicates_dropped = 0  # re-deliveries after an agent restart, not shown to the app
        self._acks: list[str] = []
        self._ack_scheduled = False
        self._task: asyncio.Task | None = None
        self._closed = False
        self._connected = asyncio.Event()
        self._outq: deque[tuple[bytes, ...]] = deque()  # frames behind a big one
        self._writing = False  # _write_queued at work: every frame queues
        self._write_task: asyncio.Future | None = None

    # --- connection -------------------------------------------------------------------

    @classmethod
    async def connect(cls, path: str | None = None, *, node: str | None = None,
                      reconnect: bool = True, timeout_s: float = 10.0) -> BpClient:
        """Connect to the agent, waiting up to ``timeout_s`` for its socket to appear."""
        self = cls(resolve_socket(path, node), reconnect=reconnect)
        await self._open(timeout_s)
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _open(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(
                    self.path, limit=1 << 24)
                big_send_buffer(self._writer.transport)
                self._connected.set()
                return
            except (FileNotFoundError, ConnectionRefusedError) as e:
                if loop.time() >= deadline:
                    raise ConnectionError(f"no bundle agent at {self.path}: {e.strerror}") from None
                await asyncio.sleep(0.1)

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
                await self._read_loop()
            self._connected.clear()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection to the bundle agent lost"))
            self._pending.clear()
            if self._closed or not self.reconnect:
                break
            try:
                await self._open(self.reconnect_timeout_s)
            except ConnectionError as e:
                self._deliveries.put_nowait(e)  # type: ignore[arg-type]
                break
            for ep in self._endpoints:
                self._write({"op": "register", "endpoint": ep, "rid": self._next_rid()})
            if self._watching:
                self._write({"op": "watch", "rid": self._next_rid()})

    async def _read_loop(self) -> None:
        dec = FrameDecoder()
        assert self._reader is not None
        while True:
            data = await self._reader.read(1 << 20)
            if not data:
                raise ConnectionError("agent closed the connection")
            for msg in dec.feed(data):
                self._on_message(msg)

    def _on_message(self, msg: dict[str, Any]) -> None:
        ev = msg.get("ev")
        if ev == "bundles":
            for item in msg.get("items", ()):
                self._on_bundle(item)
            return
        if ev == "bundle":
            self._on_bundle(msg)
            return
        if ev is not None:
            self._events.put_nowait(msg)
            return
        fut = self._pending.pop(msg.get("rid"), None)  # type: ignore[arg-type]
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def _on_bundle(self, msg: dict[str, Any]) -> None:
        bid = msg["id"]
        if bid in self._seen:
            self.duplicates_dropped += 1
            self._ack([bid])  # already handed to the app: just confirm again
            return
        self._seen[bid] = None
        if len(self._seen) > SEEN_MAX:
            del self._seen[next(iter(self._seen))]
        payload = msg.get("payload", b"")
        self._deliveries.put_nowait(Delivery(
            bid, msg.get("src", ""), msg.get("dst", ""), int(msg.get("created_ms", 0)),
            payload if type(payload) is bytes else bytes(payload)))

    def _next_rid(self) -> int:
        self._rid += 1
        return self._rid

    def _write(self, obj: dict[str, Any]) -> None:
        """Write one frame. Small frames go straight to the transport; a big one (a batch
        of 1 MB payloads) is written by :meth:`_write_queued` in chunks, each sent before
        the next is handed over, and any frame after it waits its turn. Why: asyncio
        copies what the socket does not take at once into its buffer and shifts that
        buffer after every partial send, which cost more CPU than the rest of the client
        for 5 MB frames."""
        if self._writer is None or not self._connected.is_set():
            raise ConnectionError("not connected to the bundle agent")
        parts = encode_frame_parts(obj)
        if len(parts) == 1 and not self._writing:
            self._writer.write(parts[0])
            return
        self._outq.append(parts)
        if not self._writing:
            self._writing = True
            self._write_task = asyncio.ensure_future(self._write_queued(self._writer))

    async def _write_queued(self, writer: asyncio.StreamWriter) -> None:
        try:
            while self._outq and writer is self._writer:
                for part in self._outq.popleft():
                    view = memoryview(part)
                    for i in range(0, len(view), WRITE_CHUNK_BYTES):
                        writer.write(view[i : i + WRITE_CHUNK_BYTES])
                        await writer.drain()
        except (ConnectionError, OSError):
            pass  # the read loop sees the loss: requests in flight fail, then reconnect
        finally:
            self._outq.clear()  # (frames for a lost connection: their requests failed)
            self._writing = False

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its answer; raise :class:`BpError` if refused."""
        if not self._connected.is_set():
            await asyncio.wait_for(self._connected.wait(), self.reconnect_timeout_s)
        rid = self._next_rid()
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self._write({"op": op, "rid": rid, **fields})
        msg = await fut
        if not msg.get("ok"):
            raise BpError(msg.get("error", f"{op} failed"))
        return msg

    async def close(self) -> None:
        self._closed = True
        self._flush_acks()
        if self._write_task is not None:
            with contextlib.suppress(Exception):
                await self._write_task
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer.drain()
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def __aenter__(self) -> BpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- API ------------------------------------------------------------------------

    async def register(self, endpoint: str) -> None:
        """Receive bundles for ``endpoint`` (an EID of this node, e.g. ``ipn:3.7``)."""
        await self.request("register", endpoint=endpoint)
        if endpoint not in self._endpoints:
            self._endpoints.append(endpoint)

    async def send(self, dst: str, payload: bytes, *, lifetime_s: float = 86400.0,
                   src: str | None = None, priority: int = 1, reports: bool = False) -> str:
        """Create a bundle for ``dst``; returns its ID once the agent has stored it."""
        lifetime_s = check_lifetime(lifetime_s)
        fields: dict[str, Any] = {"dst": dst, "payload": payload, "lifetime_s": lifetime_s,
                                  "priority": priority, "reports": reports}
        if src:
            fields["src"] = src
        return (await self.request("send", **fields))["id"]

    async def send_many(self, bundles: list[dict[str, Any]]) -> list[str]:
        """Send a batch (each item: dst, payload, optional lifetime_s/src/priority)."""
        for item in bundles:
            if "lifetime_s" in item:
                check_lifetime(item["lifetime_s"])
        return list((await self.request("send_many", bundles=bundles))["ids"])

    async def recv(self, timeout_s: float | None = None) -> Delivery:
        """The next delivered bundle (acknowledged to the agent once returned)."""
        q = self._deliveries
        # One already here: no wait_for task and no loop turn per bundle (the acks of a
        # whole batch then go to the agent in one request).
        d = q.get_nowait() if not q.empty() else await asyncio.wait_for(q.get(), timeout_s)
        if isinstance(d, Exception):
            raise d
        self._ack([d.id])
        return d

    async def bundles(self) -> AsyncIterator[Delivery]:
        while True:
            yield await self.recv()

    async def status(self) -> dict[str, Any]:
        msg = await self.request("status")
        return {k: v for k, v in msg.items() if k not in ("rid", "ok")}

    async def watch(self) -> AsyncIterator[dict[str, Any]]:
        """Subscribe to the agent's log events now; returns an async iterator over them
        (dicts with ``event``, ``t``, ``ts``, ``node`` …): ``async for e in await bp.watch()``."""
        await self.request("watch")
        self._watching = True
        return self._event_stream()

    async def _event_stream(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self._events.get()

    # --- acks -------------------------------------------------------------------------

    def _ack(self, ids: list[str]) -> None:
        self._acks.extend(ids)
        if not self._ack_scheduled:
            self._ack_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        self._ack_scheduled = False
        if not self._acks or not self._connected.is_set():
            return
        ids, self._acks = self._acks, []
        # If the agent is gone it re-delivers unacked bundles after restart; _seen drops them.
        with contextlib.suppress(ConnectionError):
            self._write({"op": "ack", "ids": ids, "rid": 0})
