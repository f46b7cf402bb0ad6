"""Socket options the agent and its client set on their connections."""

from __future__ import annotations

import asyncio
import socket

SEND_BUFFER_BYTES = 4 << 20


def big_send_buffer(transport: asyncio.BaseTransport) -> None:
    """A 4 MiB kernel send buffer (app socket, TCPCL sessions), so that sending a 1 MB
    bundle is one send(2): with the default (~200 KB) asyncio copies the rest into its own
    growing buffer, which cost ~3 ms per MB here. SO_SNDBUFFORCE (root) passes wmem_max."""
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
