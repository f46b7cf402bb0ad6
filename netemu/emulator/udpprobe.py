"""A probe flow's two ends, run inside hosts: UDP datagrams at a fixed rate.

    python -m netemu.emulator.udpprobe send DST PORT INTERVAL_S LOG   # DST IPv4 or IPv6
    python -m netemu.emulator.udpprobe recv PORT LOG [ipv6]

Each end writes ``<seq> <scenario time>`` per datagram sent or received (the clock from
the ``NETEMU_*`` variables the emulator sets), line-buffered so that nothing is lost when
the emulation kills it at the end.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import time

from netemu.runtime.clock import ScenarioClock

_SEQ = struct.Struct("!Q")
SIZE = 64


def send(dst: str, port: int, interval_s: float, log: str) -> None:
    clock = ScenarioClock.from_env()
    s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
    pad = bytes(SIZE - _SEQ.size)
    t0 = time.monotonic()
    seq = 0
    with open(log, "a", buffering=1) as f:
        while True:
            with contextlib.suppress(OSError):  # no route now: lost, as it would be
                s.sendto(_SEQ.pack(seq) + pad, (dst, port))
            f.write(f"{seq} {clock.now_s():.4f}\n")
            seq += 1
            time.sleep(max(0.0, t0 + seq * interval_s - time.monotonic()))


def recv(port: int, log: str, ipv6: bool = False) -> None:
    clock = ScenarioClock.from_env()
    s = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("::" if ipv6 else "0.0.0.0", port))
    with open(log, "a", buffering=1) as f:
        while True:
            data = s.recv(2048)
            if len(data) >= _SEQ.size:
                f.write(f"{_SEQ.unpack_from(data)[0]} {clock.now_s():.4f}\n")


def main(argv: list[str]) -> int:
    if len(argv) == 5 and argv[0] == "send":
        send(argv[1], int(argv[2]), float(argv[3]), argv[4])
    elif len(argv) in (3, 4) and argv[0] == "recv" and argv[3:] in ([], ["ipv6"]):
        recv(int(argv[1]), argv[2], ipv6=len(argv) == 4)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
