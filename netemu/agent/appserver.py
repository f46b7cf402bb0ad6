"""The application socket's server: a local Unix socket per node, serving the frames of
:mod:`netemu.dtn.appframe` (requests, answers and pushed bundles are described there).

:class:`AppServer` is the asyncio edge that the agent runs: it decodes requests, calls
the agent's handler for each ``op`` and writes the answers.

Whoever reaches the socket can send bundles in the node's name (signed with its BIB key)
and take an endpoint's deliveries, so the socket is its owner's alone: mode 0600 (a
directory the server makes is 0700), and each connection's peer credentials are checked
(a socket someone made world-writable by hand still refuses other users). Where the
config lets other users in (``app_users``, ``reserved_endpoints``) the socket is 0666 and
the peer credentials alone decide; an endpoint reserved for a user is then that user's
alone (the agent's core checks it on register and send).
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

from netemu.agent.sockopt import big_send_buffer
from netemu.dtn.appframe import AppFrameError, FrameDecoder, encode_frame_parts
from netemu.errors import NetemuError


def write_frame(transport: asyncio.WriteTransport, obj: dict[str, Any]) -> None:
    """Write one frame; a big body goes to the transport as it is (asyncio sends it
    straight from that buffer when the socket has room)."""
    for part in encode_frame_parts(obj):
        transport.write(part)


class AppConnection:
    """One application connected to the agent."""

    def __init__(self, transport: asyncio.WriteTransport, uid: int | None = None) -> None:
        self.transport = transport
        self.uid = uid  # the app's user (SO_PEERCRED), None where the OS does not say
        self.endpoints: set[str] = set()
        self.watching = False
        self.closed = False

    def push(self, obj: dict[str, Any]) -> None:
        if not self.closed:
            write_frame(self.transport, obj)

    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size()


Handler = Callable[[AppConnection, dict[str, Any]], Awaitable[dict[str, Any]] | dict[str, Any]]


SOCKET_MODE = 0o600
DIR_MODE = 0o700
SHARED_SOCKET_MODE = 0o666  # other users' apps too: the peer credentials decide
SHARED_DIR_MODE = 0o711
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_uid(transport: asyncio.BaseTransport) -> int | None:
    """The user id of the process at the other end of a Unix socket (SO_PEERCRED; None
    where the platform has no such option)."""
    sock = transport.get_extra_info("socket")
    opt = getattr(socket, "SO_PEERCRED", None)
    if sock is None or opt is None:
        return None
    _pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, opt, _UCRED.size))
    return int(uid)


def bind_private(path: Path, *, shared: bool = False) -> socket.socket:
    """A Unix stream socket bound at ``path`` with mode 0600 from the start: the umask is
    tightened around ``bind`` so that no other user can connect in the moment before the
    chmod. A missing directory is made 0700. ``shared``: other users' apps may connect
    (socket 0666, a directory made 0711); the peer-credential check then decides who
    may use it."""
    if not path.parent.exists():
        path.parent.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.parent.mkdir(mode=SHARED_DIR_MODE if shared else DIR_MODE)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale socket from a killed agent
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, SHARED_SOCKET_MODE if shared else SOCKET_MODE)
    except BaseException:
        sock.close()
        raise
    return sock


class _AppProtocol(asyncio.Protocol):
    def __init__(self, server: AppServer) -> None:
        self.server = server
        self.decoder = FrameDecoder()
        self.conn: AppConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        uid = peer_uid(transport)
        if uid is not None and uid not in self.server.allowed_uids:
            write_frame(transport, {"ev": "error", "error": f"uid {uid} may not use this "
                                    f"app socket (allowed: {sorted(self.server.allowed_uids)})"})
            transport.close()
            return
        big_send_buffer(transport)
        self.conn = AppConnection(transport, uid)
        self.server.connections.add(self.conn)

    def data_received(self, data: bytes) -> None:
        if self.conn is None:  # refused in connection_made
            return
        try:
            frames = self.decoder.feed(data)
        except AppFrameError as e:
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
    (connection, request) returning the answer fields (sync or async). Only the users in
    ``allowed_uids`` (default: root and the server's own user) may connect; when others
    are among them the socket file lets them reach it."""

    def __init__(self, path: str, handlers: dict[str, Handler],
                 on_disconnect: Callable[[AppConnection], None] | None = None, *,
                 allowed_uids: frozenset[int] | None = None) -> None:
        self.path = path
        self.handlers = handlers
        self.allowed_uids = (allowed_uids if allowed_uids is not None
                             else frozenset({0, os.geteuid()}))
        self.connections: set[AppConnection] = set()
        self._on_disconnect = on_disconnect
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        sock = bind_private(Path(self.path),
                            shared=bool(self.allowed_uids - {0, os.geteuid()}))
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_unix_server(lambda: _AppProtocol(self),
                                                         sock=sock)
        except BaseException:
            sock.close()
            raise

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
        except (KeyError, TypeError, ValueError, ArithmeticError) as e:
            conn.push({"rid": rid, "ok": False, "error": f"bad {op} request: {e!r}"})
            return
        if isinstance(result, dict):
            if not (rid == 0 and op == "ack"):  # acks with rid 0 want no answer
                conn.push({"rid": rid, "ok": True, **result})
            return
        task = asyncio.ensure_future(self._finish(conn, rid, op, result))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, conn: AppConnection, rid: Any, op: Any, aw: Awaitable) -> None:
        try:
            result = await aw
        except NetemuError as e:
            conn.push({"rid": rid, "ok": False, "error": str(e)})
            return
        except (KeyError, TypeError, ValueError, ArithmeticError) as e:
            conn.push({"rid": rid, "ok": False, "error": f"bad {op} request: {e!r}"})
            return
        conn.push({"rid": rid, "ok": True, **result})
