"""Bundle Protocol v7 as pure protocol logic: bundles, CBOR, CRCs, EIDs, BPSec, status
reports, the BPA core state machine and the convergence-layer state machines (TCPCLv4,
UDP, MTCP).

Nothing here opens a socket, reads a clock or touches a file: :mod:`netemu.agent` is the
asyncio shell that feeds these state machines real sockets and the scenario clock.
"""
