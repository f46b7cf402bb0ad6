"""The bundle agent: the node shell around :mod:`netemu.dtn`'s state machines.

Channels (TCPCLv4, UDP, MTCP sockets), the persistent bundle store, the app socket and
its client, the agent's configuration and telemetry. Applications use
:class:`BpClient` (the node's app socket); the agent runs as
``netemu agent --node NAME --config FILE``.

The client is imported on first use (``from netemu.agent import BpClient``), so that
importing a light module of this package (the config, the command line) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netemu.agent.client import BpClient, BpError, Delivery

__all__ = ["BpClient", "BpError", "Delivery"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from netemu.agent import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
