"""TCPCL's TLS layer with OpenSSL on the socket itself: an asyncio transport over a
non-blocking :class:`ssl.SSLSocket`, driven by the loop's reader and writer callbacks.

Why not ``loop.start_tls``: asyncio's TLS layer (``asyncio.sslproto``) pumps every byte
through memory BIOs in Python (a read into its buffer, a copy into OpenSSL, a decrypt into
another buffer, a copy out; the same on the way out, per chunk and per record). On a node
host that carries bursts across many hops that Python work, not the cipher, doubled the
CPU a bundle costs per hop (docs/scale.md, "Cost per hop"). Here OpenSSL reads and writes
the socket's file descriptor in C and Python sees one call per TLS record.

:func:`take_over` takes over a connected plaintext transport once its contact header is out
(RFC 9174 §4.4: the handshake follows on the same connection); the protocol stays the
same object and sees the TLS transport's plaintext from then on.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections import deque
from typing import Any

RECORD_BYTES = 16 * 1024 + 256  # one TLS record's plaintext (16 KiB), and room
READ_BURST_BYTES = 256 * 1024  # read at most this much per wake-up (fair to other sockets)
JOIN_BYTES = 256 * 1024  # queued writes up to this size are joined into one SSL_write
SHUTDOWN_TIMEOUT_S = 5.0  # wait this long for the peer's close_notify after ours


class _Discard(asyncio.Protocol):
    """The plaintext transport's protocol once its socket belongs to the TLS transport."""


class TlsSocketTransport(asyncio.Transport):
    """TLS on a socket that OpenSSL reads and writes itself. :meth:`handshake` runs the
    handshake; the protocol (already connected to the plaintext transport) gets
    ``data_received`` with plaintext after it, ``pause_writing``/``resume_writing`` when
    the write buffer crosses its limits, and ``connection_lost`` once the socket is closed
    (after a close_notify exchange on :meth:`close`, at once on :meth:`abort` or an error).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket,
                 protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._ready = False  # handshake done
        self._handshake: asyncio.Future[None] | None = None
        self._buffer: deque[bytes | bytearray | memoryview] = deque()
        self._buffer_bytes = 0
        self._retry = False  # the head of _buffer got SSL_ERROR_WANT_WRITE: resend it as is
        self._reading = False
        self._writing = False
        self._read_paused = False
        self._read_wants_write = False
        self._closing = False
        self._shutting_down = False
        self._closed = False
        self._paused = False  # the protocol's writing
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._timer: asyncio.TimerHandle | None = None
        peer = sock.getpeername()
        self._extra = {"peername": peer, "sockname": sock.getsockname(), "socket": sock}

    # the handshake
    async def handshake(self, timeout_s: float) -> None:
        """Run the TLS handshake; raises :class:`ssl.SSLError`, :class:`OSError` or
        :class:`asyncio.TimeoutError` (and the transport is then closed)."""
        self._handshake = self._loop.create_future()
        self._handshake_step()
        try:
            await asyncio.wait_for(self._handshake, timeout_s)
        except BaseException:
            self._force_close(None)
            raise
        self._ready = True
        self._extra["ssl_object"] = self._sock
        self._extra["peercert"] = self._sock.getpeercert()
        self._extra["cipher"] = self._sock.cipher()
        self._start_reading()
        # (records that came with the handshake's last flight may already sit in
        # OpenSSL's buffer, where the selector does not see them)
        self._loop.call_soon(self._read_ready)
        if self._buffer:
            self._write_ready()

    def _handshake_step(self) -> None:
        fut = self._handshake
        if fut is None or fut.done() or self._closed:
            return
        try:
            self._sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(read=True)
            return
        except ssl.SSLWantWriteError:
            self._want(read=False)
            return
        except (ssl.SSLError, OSError) as e:
            self._unwatch()
            fut.set_exception(e)
            return
        self._unwatch()
        fut.set_result(None)

    def _want(self, read: bool) -> None:
        """Wait for the socket to become readable (or writable) to go on with the handshake."""
        self._unwatch()
        if read:
            self._loop.add_reader(self._fd, self._handshake_step)
            self._reading = True
        else:
            self._loop.add_writer(self._fd, self._handshake_step)
            self._writing = True

    def _unwatch(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False

    # reading
    def _start_reading(self) -> None:
        if not self._reading and not self._read_paused and not self._closed:
            self._loop.add_reader(self._fd, self._read_ready)
            self._reading = True

    def _read_ready(self) -> None:
        if self._closed or self._read_paused or not self._ready:
            return
        chunks: list[bytes] = []
        n, eof = 0, False
        recv = self._sock.recv
        try:
            while n < READ_BURST_BYTES:
                data = recv(RECORD_BYTES)
                if not data:
                    eof = True
                    break
                chunks.append(data)
                n += len(data)
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):  # (close_notify after ours)
            eof = True
        except ssl.SSLWantWriteError:  # (a TLS 1.3 KeyUpdate answer waits for room)
            self._read_wants_write = True
            self._watch_write()
        except (ssl.SSLError, OSError) as e:
            self._deliver(chunks)
            self._force_close(e)
            return
        if self._shutting_down:  # our close_notify is out: what still comes is dropped
            if eof:
                self._force_close(None)
            return
        self._deliver(chunks)
        if eof:
            if not self._closing:
                self._protocol.eof_received()
            self.close()
        elif n >= READ_BURST_BYTES and not self._closing:
            self._loop.call_soon(self._read_ready)

    def _deliver(self, chunks: list[bytes]) -> None:
        if chunks and not self._closing:
            self._protocol.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def pause_reading(self) -> None:
        self._read_paused = True
        if self._reading and self._ready:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def resume_reading(self) -> None:
        if not self._read_paused:
            return
        self._read_paused = False
        if self._ready and not self._closing:
            self._start_reading()
            self._loop.call_soon(self._read_ready)

    def is_reading(self) -> bool:
        return self._ready and not self._read_paused and not self._closing

    # writing
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        self._buffer.append(data)
        self._buffer_bytes += len(data)
        if self._ready and not self._writing:
            self._write_ready()
        if not self._closed:
            self._check_pause()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def _write_ready(self) -> None:
        if self._read_wants_write:
            self._read_wants_write = False
            self._read_ready()
            if self._closed:
                return
        buf, send = self._buffer, self._sock.send
        try:
            while buf:
                if not self._retry and len(buf) > 1 and len(buf[0]) < JOIN_BYTES:
                    self._join_head()
                head = buf[0]
                sent = send(head)
                self._retry = False
                buf.popleft()
                self._buffer_bytes -= len(head)
                if sent < len(head):  # (not with OpenSSL's default, whole-buffer writes)
                    rest = memoryview(head)[sent:]
                    buf.appendleft(rest)
                    self._buffer_bytes += len(rest)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            self._retry = True  # OpenSSL wants the same buffer again
            self._watch_write()
            return
        except (ssl.SSLError, OSError) as e:
            self._force_close(e)
            return
        if self._writing and not self._read_wants_write:
            self._loop.remove_writer(self._fd)
            self._writing = False
        if self._paused and self._buffer_bytes <= self._low:
            self._paused = False
            self._protocol.resume_writing()
        if self._closing and not self._buffer and not self._shutting_down:
            self._shutdown()

    def _join_head(self) -> None:
        """Join the small buffers at the front into one (one SSL_write, fewer records)."""
        buf, parts, size = self._buffer, [], 0
        while buf and size + len(buf[0]) <= JOIN_BYTES:
            part = buf.popleft()
            parts.append(part)
            size += len(part)
        if not parts:
            return
        buf.appendleft(parts[0] if len(parts) == 1 else b"".join(parts))

    def _watch_write(self) -> None:
        if not self._writing and not self._closed:
            self._loop.add_writer(self._fd, self._write_ready)
            self._writing = True

    def _check_pause(self) -> None:
        if not self._paused and self._buffer_bytes > self._high:
            self._paused = True
            self._protocol.pause_writing()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        high = 64 * 1024 if high is None else high
        low = high // 4 if low is None else low
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._check_pause()

    def get_write_buffer_size(self) -> int:
        return self._buffer_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def can_write_eof(self) -> bool:
        return False

    # closing
    def is_closing(self) -> bool:
        return self._closing or self._closed

    def close(self) -> None:
        """Send what is buffered, then close_notify; the socket closes when the peer's
        close_notify (or EOF) comes, or SHUTDOWN_TIMEOUT_S later."""
        if self._closing or self._closed:
            return
        self._closing = True
        if not self._ready:
            self._force_close(None)
        elif not self._buffer:
            self._shutdown()

    def _shutdown(self) -> None:
        self._shutting_down = True
        try:
            self._sock.unwrap()  # sends close_notify; done if the peer's came already
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except (ssl.SSLError, OSError, ValueError):
            self._force_close(None)
            return
        else:
            self._force_close(None)
            return
        self._read_paused = False
        self._start_reading()
        self._timer = self._loop.call_later(SHUTDOWN_TIMEOUT_S, self._force_close, None)

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = self._closing = True
        self._unwatch()
        if self._timer is not None:
            self._timer.cancel()
        self._buffer.clear()
        self._buffer_bytes = 0
        if self._handshake is not None and not self._handshake.done():
            self._handshake.set_exception(ConnectionAbortedError("connection closed during "
                                                                 "the TLS handshake"))
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost,
                             exc if isinstance(exc, Exception) else None)

    # the rest of asyncio.Transport
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol


async def take_over(raw: asyncio.Transport, protocol: asyncio.Protocol, ctx: ssl.SSLContext,
                    *, server_side: bool, timeout_s: float) -> TlsSocketTransport:
    """A TLS transport for ``protocol`` on ``raw``'s connection (its socket, once its
    buffered writes are out), ready for :meth:`TlsSocketTransport.handshake`
    (``server_side``: this end is the TLS server). ``raw`` must have stopped reading, so
    that the handshake's bytes stay in the socket; from the return on, ``raw`` is closed
    without a word to ``protocol`` and the returned transport is ``protocol``'s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while raw.get_write_buffer_size() and not raw.is_closing():  # (the contact header)
        if loop.time() > deadline:
            raise asyncio.TimeoutError()
        await asyncio.sleep(0.005)
    if raw.is_closing():
        raise ConnectionResetError("connection closed before the TLS handshake")
    tsock = raw.get_extra_info("socket")
    sock = socket.socket(tsock.family, tsock.type, tsock.proto, os.dup(tsock.fileno()))
    sock.setblocking(False)
    try:
        ssock = ctx.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=False)
        transport = TlsSocketTransport(loop, ssock, protocol)
    except BaseException:
        sock.close()
        raise
    raw.set_protocol(_Discard())  # its connection_lost is not the protocol's any more
    raw.abort()  # (closes its descriptor; the socket lives on in ours)
    return transport
