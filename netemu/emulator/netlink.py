"""A small rtnetlink client that batches: links up/down, addresses, routes, neighbours.

Why not pyroute2 here: bring-up and route installation send hundreds of thousands of
messages, and encoding each through a general library costs more than the kernel's work.
These few fixed message shapes are packed with :mod:`struct` and sent many to a
``send()``; the kernel processes a netlink batch synchronously inside the call, so when
``flush()`` returns every request has been applied and any error is already queued.
(pyroute2 is still used for tc filters, in :mod:`netemu.emulator.netem`.)
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import os
import socket
import struct

from netemu.errors import NetemuError

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR = 20
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29

IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU = 1, 3, 4
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 7, 9, 15
NDA_DST, NDA_LLADDR = 1, 2
NUD_PERMANENT = 0x80
RT_TABLE_MAIN = 254
RTPROT_NETEMU = 0x6E  # our own protocol number, so `ip route show proto 110` lists ours
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK, RT_SCOPE_HOST = 0, 253, 254
RTN_UNICAST = 1
RTNH_F_ONLINK = 0x4
NETLINK_CAP_ACK = 10
SOL_NETLINK = 270

_HDR = struct.Struct("=LHHLL")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")
_RTA = struct.Struct("=HH")
_I32 = struct.Struct("=i")


def _attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return _RTA.pack(n, kind) + data + b"\0" * ((4 - n % 4) % 4)


@functools.lru_cache(maxsize=1 << 16)
def _ip4(addr: str) -> bytes:
    return socket.inet_aton(addr)


def _ip(addr: str) -> tuple[int, bytes]:
    """(address family, packed address) of an IPv4 or IPv6 address."""
    if ":" in addr:
        return socket.AF_INET6, socket.inet_pton(socket.AF_INET6, addr)
    return socket.AF_INET, _ip4(addr)


@functools.lru_cache(maxsize=1 << 16)
def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


class NetlinkError(NetemuError):
    """A request the kernel refused; ``errno`` is its error number (as in OSError)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


class Netlink:
    """One rtnetlink socket (in whichever namespace it was opened in) with a send queue.

    Requests are queued by the ``*_`` methods and applied by :meth:`flush`, which raises
    :class:`NetlinkError` for the first failed request unless its errno was declared
    ignorable when queued.
    """

    def __init__(self, *, label: str = "") -> None:
        self.label = label
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_ROUTE)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE
        self.sock.bind((0, 0))
        self._seq = 0
        self._queue: list[bytes] = []
        self._what: dict[int, tuple[str, tuple[int, ...]]] = {}
        self.sent = 0

    def close(self) -> None:
        self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    # --- queueing ------------------------------------------------------------------

    def _push(self, mtype: int, flags: int, body: bytes, what: str, ignore: tuple[int, ...]) -> None:
        self._seq += 1
        self._queue.append(_HDR.pack(16 + len(body), mtype, flags | NLM_F_REQUEST, self._seq, 0)
                           + body)
        self._what[self._seq] = (what, ignore)

    def request(self, mtype: int, flags: int, body: bytes, what: str, *,
                ignore: tuple[int, ...] = ()) -> None:
        """Queue any request: message type, flags (NLM_F_REQUEST is added), the body
        after the netlink header; ``what`` names it in an error."""
        self._push(mtype, flags, body, what, ignore)

    def link_set(self, ifindex: int, *, up: bool | None = None, mtu: int | None = None) -> None:
        flags = change = 0
        if up is not None:
            change = IFF_UP
            flags = IFF_UP if up else 0
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, ifindex, flags, change)
        if mtu is not None:
            body += _attr(IFLA_MTU, struct.pack("=I", mtu))
        self._push(RTM_NEWLINK, 0, body, f"link {ifindex} up={up}", ())

    def addr_add(self, ifindex: int, addr: str, prefixlen: int = 32, *,
                 peer: str | None = None) -> None:
        family, packed = _ip(addr)
        body = _IFADDR.pack(family, prefixlen, 0, RT_SCOPE_UNIVERSE, ifindex)
        body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, _ip(peer or addr)[1])
        self._push(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, body,
                   f"addr {addr}/{prefixlen} dev {ifindex}", (errno.EEXIST,))

    def route_replace(self, dst: str, prefixlen: int, *, oif: int, gateway: str | None = None,
                      src: str | None = None) -> None:
        """``ip route replace DST/LEN [via GW onlink] dev OIF [src SRC] proto 110``."""
        scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        body = _RTMSG.pack(socket.AF_INET, prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_NETEMU, scope,
                           RTN_UNICAST, RTNH_F_ONLINK if gateway else 0)
        body += _attr(RTA_DST, _ip4(dst)) + _attr(RTA_OIF, struct.pack("=i", oif))
        if gateway:
            body += _attr(RTA_GATEWAY, _ip4(gateway))
        if src:
            body += _attr(RTA_PREFSRC, _ip4(src))
        self._push(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body, f"route {dst}/{prefixlen}",
                   ())

    def route_del(self, dst: str, prefixlen: int) -> None:
        body = _RTMSG.pack(socket.AF_INET, prefixlen, 0, 0, RT_TABLE_MAIN, 0, 0, 0, 0)
        body += _attr(RTA_DST, _ip4(dst))
        self._push(RTM_DELROUTE, 0, body, f"route del {dst}/{prefixlen}", (errno.ESRCH,))

    def neigh_replace(self, ifindex: int, addr: str, mac: str) -> None:
        body = _NDMSG.pack(socket.AF_INET, ifindex, NUD_PERMANENT, 0, 0)
        body += _attr(NDA_DST, _ip4(addr)) + _attr(NDA_LLADDR, mac_bytes(mac))
        self._push(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body, f"neigh {addr} dev {ifindex}",
                   ())

    def neigh_del(self, ifindex: int, addr: str) -> None:
        body = _NDMSG.pack(socket.AF_INET, ifindex, 0, 0, 0) + _attr(NDA_DST, _ip4(addr))
        self._push(RTM_DELNEIGH, 0, body, f"neigh del {addr} dev {ifindex}", (errno.ENOENT,))

    @property
    def pending(self) -> int:
        return len(self._queue)

    # --- sending -------------------------------------------------------------------

    def flush(self) -> int:
        """Apply every queued request; returns how many were sent."""
        queue, self._queue = self._queue, []
        n = len(queue)
        chunk: list[bytes] = []
        size = 0
        first_error: tuple[str, int] | None = None
        for msg in queue:
            chunk.append(msg)
            size += len(msg)
            if size > 48_000:
                first_error = self._send(b"".join(chunk)) or first_error
                chunk, size = [], 0
        if chunk:
            first_error = self._send(b"".join(chunk)) or first_error
        self._what.clear()
        self.sent += n
        if first_error:
            raise NetlinkError(*first_error)
        return n

    def _send(self, data: bytes) -> tuple[str, int] | None:
        self.sock.send(data)
        return self._drain_errors()

    def _drain_errors(self) -> tuple[str, int] | None:
        """The first failed request since the last call (its description, errno), if any."""
        first = None
        while True:
            try:
                data = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return first
            off = 0
            while off + 16 <= len(data):
                ln, mtype, _flags, seq, _pid = _HDR.unpack_from(data, off)
                if mtype == NLMSG_ERROR:
                    (code,) = _I32.unpack_from(data, off + 16)
                    what, ignore = self._what.get(seq, ("?", ()))
                    if code and -code not in ignore and first is None:
                        first = (f"{self.label}: {what}: {os.strerror(-code)}", -code)
                off += (ln + 3) & ~3
                if ln == 0:
                    break

    def send_raw(self, block: bytes, msg_size: int, *, ignore: tuple[int, ...] = ()) -> int:
        """Send a block of ready-made messages of ``msg_size`` bytes each; returns how many
        failed (errno not in ``ignore``)."""
        failed = 0
        step = max(1, 60_000 // msg_size) * msg_size
        for off in range(0, len(block), step):
            self.sock.send(block[off:off + step])
            failed += self._count_errors(ignore)
        self.sent += len(block) // msg_size
        return failed

    def _count_errors(self, ignore: tuple[int, ...]) -> int:
        n = 0
        while True:
            try:
                data = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return n
            off = 0
            while off + 20 <= len(data):
                ln, mtype = _HDR.unpack_from(data, off)[:2]
                if mtype == NLMSG_ERROR:
                    (code,) = _I32.unpack_from(data, off + 16)
                    if code and -code not in ignore:
                        n += 1
                off += (ln + 3) & ~3
                if ln == 0:
                    break

    # --- queries -------------------------------------------------------------------

    def links(self) -> dict[str, int]:
        """Interface name → ifindex, in this socket's namespace."""
        self._seq += 1
        seq = self._seq
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        self.sock.send(_HDR.pack(16 + len(body), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
                       + body)
        out: dict[str, int] = {}
        while True:
            data = self.sock.recv(1 << 20)
            off = 0
            while off + 16 <= len(data):
                ln, mtype, _f, mseq, _p = _HDR.unpack_from(data, off)
                if mtype == NLMSG_DONE and mseq == seq:
                    return out
                if mtype == NLMSG_ERROR:
                    (code,) = _I32.unpack_from(data, off + 16)
                    raise NetlinkError(f"{self.label}: link dump: {os.strerror(-code)}", -code)
                if mtype == RTM_NEWLINK:
                    _fam, _type, index, _flags, _chg = _IFINFO.unpack_from(data, off + 16)
                    a = off + 16 + _IFINFO.size
                    end = off + ln
                    while a + 4 <= end:
                        alen, atype = _RTA.unpack_from(data, a)
                        if alen < 4:
                            break
                        if atype == IFLA_IFNAME:
                            out[data[a + 4:a + alen].rstrip(b"\0").decode()] = index
                        a += (alen + 3) & ~3
                off += (ln + 3) & ~3
                if ln == 0:
                    break


    def route_get(self, dst: str) -> tuple[str | None, int] | None:
        """The kernel's choice for ``dst`` (``ip route get``; IPv4 or IPv6): (gateway or
        None for a direct route, output ifindex); None when there is no route."""
        self._seq += 1
        seq = self._seq
        family, packed = _ip(dst)
        body = _RTMSG.pack(family, len(packed) * 8, 0, 0, 0, 0, 0, 0, 0) + _attr(RTA_DST,
                                                                              packed)
        self.sock.send(_HDR.pack(16 + len(body), RTM_GETROUTE, NLM_F_REQUEST, seq, 0) + body)
        while True:
            data = self.sock.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                ln, mtype, _f, mseq, _p = _HDR.unpack_from(data, off)
                if mseq == seq and mtype == NLMSG_ERROR:
                    return None  # ENETUNREACH, EHOSTUNREACH, ...
                if mseq == seq and mtype == RTM_NEWROUTE:
                    gw: str | None = None
                    oif = 0
                    for atype, val in _attrs(data, off + 16 + _RTMSG.size, off + ln):
                        if atype == RTA_GATEWAY:
                            gw = socket.inet_ntop(family, val)
                        elif atype == RTA_OIF:
                            (oif,) = _I32.unpack(val)
                    return gw, oif
                off += (ln + 3) & ~3
                if ln == 0:
                    break

    def route_count(self, family: int = socket.AF_INET) -> int:
        """IPv4 (or ``family``'s) routes in the main table of this socket's namespace."""
        self._seq += 1
        seq = self._seq
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        self.sock.send(_HDR.pack(16 + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP,
                                 seq, 0) + body)
        n = 0
        while True:
            data = self.sock.recv(1 << 20)
            off = 0
            while off + 16 <= len(data):
                ln, mtype, _f, mseq, _p = _HDR.unpack_from(data, off)
                if mtype == NLMSG_DONE and mseq == seq:
                    return n
                if mtype == NLMSG_ERROR and mseq == seq:
                    (code,) = _I32.unpack_from(data, off + 16)
                    raise NetlinkError(f"{self.label}: route dump: {os.strerror(-code)}", -code)
                if mtype == RTM_NEWROUTE and mseq == seq and data[off + 16 + 4] == RT_TABLE_MAIN:
                    n += 1
                off += (ln + 3) & ~3
                if ln == 0:
                    break


def _attrs(data: bytes, a: int, end: int) -> list[tuple[int, bytes]]:
    out = []
    while a + 4 <= end:
        alen, atype = _RTA.unpack_from(data, a)
        if alen < 4:
            break
        out.append((atype, data[a + 4:a + alen]))
        a += (alen + 3) & ~3
    return out


def ip_str(addr: int) -> str:
    return str(ipaddress.IPv4Address(addr))
