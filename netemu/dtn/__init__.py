"""The DTN bundle agent: BPv7, convergence layers (TCPCLv4, UDP, MTCP), store, app interface.

Applications use :class:`BpClient` (the node's app socket); the agent itself runs as
``netemu agent --node NAME --config FILE``.
"""

from netemu.dtn.client import BpClient, BpError, Delivery

__all__ = ["BpClient", "BpError", "Delivery"]
