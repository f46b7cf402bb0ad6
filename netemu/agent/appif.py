"""The application interface: a local Unix socket per node, length-prefixed CBOR frames.

Each frame is a 4-byte big-endian length followed by one CBOR map (CBOR rather than JSON
so payloads travel as bytes, not base64). A request carries ``op`` and a request id
``rid``; its answer carries the same ``rid`` and ``ok`` (with ``error`` when false).
Frames the agent pushes unasked carry ``ev`` instead.

Requests:

``{"op": "register", "endpoint": "ipn:5.1"}``
    receive bundles for that endpoint on this connection (stored ones first);
``{"op": "send", "dst": EID, "payload": bytes, "lifetime_s": 86400, "src": EID?,
"priority": 1, "reports": false}``
    create and send a bundle; the answer carries its ``id``;
``{"op": "send_many", "bundles": [ {dst, payload, …}, … ]}``
    the same for a batch (one store commit), answer ``ids``;
``{"op": "ack", "ids": [...]}``
    the app has consumed these delivered bundles (the agent may forget them); with
    ``"rid": 0`` no answer is sent unless the request is bad (the client's acks);
``{"op": "status"}``
    node, neighbours, sessions, store and counters;
``{"op": "watch"}``
    stream the agent's log events (``{"ev": "log", ...}``) on this connection.

Pushed: ``{"ev": "bundle", "id", "src", "dst", "created_ms", "payload"}``, or several at
once as ``{"ev": "bundles", "items": [{id, src, dst, created_ms, payload}, …]}``.

Delivery is at least once from the agent (a bundle stays in the store until the app
acks it, so a crash between delivery and ack re-delivers it); the client drops bundle
IDs it has already handed to the application, which makes delivery exactly once for the
life of the application process.

Framing (:func:`encode_frame`, :class:`FrameDecoder`) is pure; :class:`AppServer` is the
asyncio edge that the agent runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cbor2

from netemu.errors import NetemuError

MAX_FRAME_BYTES = 256 * 1024 * 1024
ENV_SOCKET = "NETEMU_BP_SOCKET"
DEFAULT_RUN_DIR = "/run/netemu"


class AppIfError(NetemuError):
    """A malformed frame or request on the application socket."""


def default_socket_path(node: str) -> str:
    """Where node ``node``'s agent listens unless its config says otherwise."""
    run_dir = os.environ.get("NETEMU_RUN_DIR", DEFAULT_RUN_DIR)
    return str(Path(run_dir) / node / "bp.sock")


#: Frames at least this long travel as two buffers (head, body) and are gathered from
#: their chunks once, not grown byte by byte: a copy of a 1 MB payload is worth avoiding.
BIG_FRAME_BYTES = 64 * 1024
_HEAD = struct.Struct("!I")


def encode_frame(obj: dict[str, Any]) -> bytes:
    body = cbor2.dumps(obj)
    return _HEAD.pack(len(body)) + body


def encode_frame_parts(obj: dict[str, Any]) -> tuple[bytes, ...]:
    """:func:`encode_frame` as buffers to write in turn: one for a small frame, the
    4-byte head and the body for a big one (no copy of the body)."""
    body = cbor2.dumps(obj)
    if len(body) < BIG_FRAME_BYTES:
        return (_HEAD.pack(len(body)) + body,)
    return _HEAD.pack(len(body)), body


def write_frame(transport: asyncio.WriteTransport, obj: dict[str, Any]) -> None:
    """Write one frame; a big body goes to the transport as it is (asyncio sends it
    straight from that buffer when the socket has room)."""
    for part in encode_frame_parts(obj):
        transport.write(part)


class FrameDecoder:
    """Incremental decoder: bytes in, CBOR maps out.

    Small frames are cut from one growing buffer. A frame of :data:`BIG_FRAME_BYTES` or
    more is gathered as a list of the chunks read and joined once when complete (growing
    a buffer by 256 KiB reads copies a 5 MB frame several times over; measured 3x)."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._chunks: list[bytes] = []  # the body of a big frame in the making
        self._have = 0
        self._need = 0  # that body's length (0: none in the making)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        if self._need:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            extra = self._have - self._need
            if extra:
                self._chunks[-1] = data[:len(data) - extra]
            body = b"".join(self._chunks)
            self._chunks, self._have, self._need = [], 0, 0
            out = [self._decode(body)]
            if extra:
                out += self.feed(data[len(data) - extra:])
            return out
        buf = self._buf
        buf += data
        out: list[dict[str, Any]] = []
        off = 0
        while len(buf) - off >= 4:
            (n,) = _HEAD.unpack_from(buf, off)
            if n > self.max_frame_bytes:
                raise AppIfError(f"frame of {n} bytes exceeds the limit of "
                                 f"{self.max_frame_bytes}")
            if len(buf) - off - 4 < n:
                if n >= BIG_FRAME_BYTES:  # gather the rest chunk by chunk
                    self._chunks = [bytes(buf[off + 4:])]
                    self._have = len(buf) - off - 4
                    self._need = n
                    off = len(buf)
                break
            out.append(self._decode(bytes(buf[off + 4 : off + 4 + n])))
            off += 4 + n
        if off:
            del buf[:off]
        return out

    @staticmethod
    def _decode(body: bytes) -> dict[str, Any]:
        # (cbor2 decodes bytes 2.6x faster than a memoryview of the same frame)
        try:
            obj = cbor2.loads(body)
        except Exception as e:  # cbor2 raises several types
            raise AppIfError(f"frame is not valid CBOR: {e}") from None
        if not isinstance(obj, dict):
            raise AppIfError(f"frame must be a CBOR map, got {type(obj).__name__}")
        return obj


SEND_BUFFER_BYTES = 4 << 20


def big_send_buffer(transport: asyncio.BaseTransport) -> None:
    """A 4 MiB kernel send buffer for the app socket, so that pushing a 1 MB bundle is one
    send(2): with the default (~200 KB) asyncio copies the rest into its own growing
    buffer, which cost ~3 ms per MB here. SO_SNDBUFFORCE (root) passes wmem_max."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    for opt in (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF):
        if opt is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SEND_BUFFER_BYTES)
            return
        except OSError:
            continue


class AppConnection:
    """One application connected to the agent."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self.endpoints: set[str] = set()
        self.watching = False
        self.closed = False

    def push(self, obj: dict[str, Any]) -> None:
        if not self.closed:
            write_frame(self.transport, obj)

    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size()


Handler = Callable[[AppConnection, dict[str, Any]], Awaitable[dict[str, Any]] | dict[str, Any]]


class _AppProtocol(asyncio.Protocol):
    def __init__(self, server: AppServer) -> None:
        self.server = server
        self.decoder = FrameDecoder()
        self.conn: AppConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        big_send_buffer(transport)
        self.conn = AppConnection(transport)
        self.server.connections.add(self.conn)

    def data_received(self, data: bytes) -> None:
        assert self.conn is not None
        try:
            frames = self.decoder.feed(data)
        except AppIfError as e:
            self.conn.push({"ev": "error", "error": str(e)})
            self.conn.transport.close()
            return
        for req in frames:
            self.server.dispatch(self.conn, req)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.conn.closed = True
            self.server.connections.discard(self.conn)
            self.server.on_disconnect(self.conn)


class AppServer:
    """Serves the app socket. ``handlers`` maps an ``op`` to a function of
    (connection, request) returning the answer fields (sync or async)."""

    def __init__(self, path: str, handlers: dict[str, Handler],
                 on_disconnect: Callable[[AppConnection], None] | None = None) -> None:
        self.path = path
        self.handlers = handlers
        self.connections: set[AppConnection] = set()
        self._on_disconnect = on_disconnect
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        p = Path(self.path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()  # a stale socket from a killed agent
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _AppProtocol(self), str(p))
        os.chmod(p, 0o666)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for c in list(self.connections):
                c.transport.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        with contextlib.suppress(FileNotFoundError):
            Path(self.path).unlink()

    def on_disconnect(self, conn: AppConnection) -> None:
        if self._on_disconnect is not None:
            self._on_disconnect(conn)

    def dispatch(self, conn: AppConnection, req: dict[str, Any]) -> None:
        rid = req.get("rid")
        op = req.get("op")
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            conn.push({"rid": rid, "ok": False,
                       "error": f"unknown op {op!r}; expected one of {sorted(self.handlers)}"})
            return
        try:
            result = handler(conn, req)
        except NetemuError as e:
            conn.push({"rid": rid, "ok": False, "error": str(e)})
            return
        except (KeyError, TypeError, ValueError) as e:
            conn.push({"rid": rid, "ok": False, "error": f"bad {op} request: {e!r}"})
            return
        if isinstance(result, dict):
            if not (rid == 0 and op == "ack"):  # acks with rid 0 want no answer
                conn.push({"rid": rid, "ok": True, **result})
            return
        task = asyncio.ensure_future(self._finish(conn, rid, op, result))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, conn: AppConnection, rid: Any, op: str, aw: Awaitable) -> None:
        try:
            result = await aw
        except NetemuError as e:
            conn.push({"rid": rid, "ok": False, "error": str(e)})
            return
        except (KeyError, TypeError, ValueError) as e:
            conn.push({"rid": rid, "ok": False, "error": f"bad {op} request: {e!r}"})
            return
        conn.push({"rid": rid, "ok": True, **result})
