"""The bundle agent: the node shell around :mod:`netemu.dtn`'s state machines.

Channels (TCPCLv4, UDP, MTCP sockets), the persistent bundle store, the app socket and
its client, the agent's configuration and telemetry. Applications use
:class:`BpClient` (the node's app socket); the agent runs as
``netemu agent --node NAME --config FILE``.
"""

from netemu.agent.client import BpClient, BpError, Delivery

__all__ = ["BpClient", "BpError", "Delivery"]
