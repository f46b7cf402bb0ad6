"""The application interface's wire format: length-prefixed CBOR frames.

An agent serves it on a local Unix socket per node (:mod:`netemu.agent.appserver`); the
client (:mod:`netemu.agent.client`) speaks it.

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

This module is the pure framing (:func:`encode_frame`, :class:`FrameDecoder`): no
sockets, no event loop.
"""

from __future__ import annotations

import struct
from typing import Any

import cbor2

from netemu.errors import RemoteProtocolError

MAX_FRAME_BYTES = 256 * 1024 * 1024


class AppFrameError(RemoteProtocolError):
    """A malformed frame from the other end of the application socket."""


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
            frames = [self._decode(body)]
            if extra:
                frames += self.feed(data[len(data) - extra:])
            return frames
        buf = self._buf
        buf += data
        out: list[dict[str, Any]] = []
        off = 0
        while len(buf) - off >= 4:
            (n,) = _HEAD.unpack_from(buf, off)
            if n > self.max_frame_bytes:
                raise AppFrameError(f"frame of {n} bytes exceeds the limit of "
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
            raise AppFrameError(f"frame is not valid CBOR: {e}") from None
        if not isinstance(obj, dict):
            raise AppFrameError(f"frame must be a CBOR map, got {type(obj).__name__}")
        return obj
