"""TCPCLv4 (RFC 9174) as a pure state machine: bytes in → events out, commands in → bytes out.

No sockets and no clock live here (the h11 pattern): the agent feeds received bytes to
:meth:`Session.receive_data`, acts on the returned events, and writes whatever
:meth:`Session.data_to_send` hands back. Timers (keepalive, idle timeout) belong to the
caller, which reads the negotiated :attr:`Session.keepalive_s`.

What is implemented: the contact header (``dtn!``, version 4, ``CAN_TLS`` when the
caller offers TLS), SESS_INIT with keepalive / segment-MRU / transfer-MRU negotiation and
session extension items, XFER_SEGMENT with START/END flags and the transfer-length
extension, XFER_ACK, XFER_REFUSE, KEEPALIVE, SESS_TERM and MSG_REJECT.

TLS (RFC 9174 §4.4): when both contact headers carry ``CAN_TLS`` the session reports
:class:`TlsNegotiated` and waits; the caller runs the TLS handshake on its socket (the
active side is the TLS client) and calls :meth:`Session.tls_established`, after which
SESS_INIT goes over TLS. A session made with ``tls_required`` ends with SESS_TERM
(Contact Failure) when the peer does not offer TLS.

Whom to talk to is the caller's policy, given as ``check_peer``: it sees the peer's node
ID from SESS_INIT and may refuse it, and then the session ends with SESS_TERM (Contact
Failure) before a single transfer is accepted or sent (:class:`TcpclRefused`).

Memory: a session holds at most one incoming transfer, of at most ``transfer_mru``
bytes; an :class:`RxBudget` shared by the sessions of one node bounds their sum, and a
transfer that would overrun it is refused (NO_RESOURCES) and its bytes dropped.

Acknowledgement policy: intermediate segments are acknowledged at once; the ACK of the
final segment (which tells the sender the bundle is safe) is sent only when the caller
says so with :meth:`Session.ack_transfer`, after the bundle is on disk, or the transfer
is refused with :meth:`Session.refuse_transfer`.

TCPCL has no resumption of a transfer across sessions: a transfer cut by a lost
connection is re-sent whole on the next session, and the receiving agent drops the
duplicate by bundle identity.

Malformed input raises :class:`TcpclError` (a clear message naming the message type and
the field); before raising, the session queues the SESS_TERM or MSG_REJECT the RFC asks
for, so the caller should flush :meth:`Session.data_to_send` and then close.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from netemu.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

MAGIC = b"dtn!"
VERSION = 4
CONTACT_HEADER_LEN = 6
DEFAULT_PORT = 4556

# Contact header flags
FLAG_CAN_TLS = 0x01

# Message type codes (RFC 9174 §9.5)
XFER_SEGMENT = 0x01
XFER_ACK = 0x02
XFER_REFUSE = 0x03
KEEPALIVE = 0x04
SESS_TERM = 0x05
MSG_REJECT = 0x06
SESS_INIT = 0x07

MESSAGE_NAMES = {
    XFER_SEGMENT: "XFER_SEGMENT",
    XFER_ACK: "XFER_ACK",
    XFER_REFUSE: "XFER_REFUSE",
    KEEPALIVE: "KEEPALIVE",
    SESS_TERM: "SESS_TERM",
    MSG_REJECT: "MSG_REJECT",
    SESS_INIT: "SESS_INIT",
}

# XFER_SEGMENT / XFER_ACK flags
SEG_END = 0x01
SEG_START = 0x02

# SESS_TERM flags
TERM_REPLY = 0x01

# Extension item flags and types
EXT_CRITICAL = 0x01
XFER_EXT_TRANSFER_LENGTH = 0x0001

U64_MAX = 2**64 - 1

# Fast-path layouts: a single-segment XFER_SEGMENT header without extension items (type,
# flags, id, ext-list length 0, data length), as this side sends it: RFC 9174 section
# 5.2.5.1 says a transfer in one segment SHOULD NOT carry the transfer-length extension;
# the same carrying it (ext-list length 13, item flags, item type, item length, total
# length, data length), as some peers send it; and an XFER_ACK.
_ONE_SEGMENT_BARE = struct.Struct("!BBQIQ")
_ONE_SEGMENT = struct.Struct("!BBQIBHHQQ")
_ACK = struct.Struct("!BBQQ")
_ACK_BODY = struct.Struct("!BQQ")


def _one_segment(buf: bytearray, off: int) -> tuple[int, int, int] | None:
    """(transfer ID, data length, header length) of the single-segment XFER_SEGMENT at
    ``off`` (flags checked by the caller) when it has no extension item or only a
    transfer-length item equal to its data length; None for anything else (the general
    parser takes it) or when the header is incomplete."""
    _, _, tid, elen, dlen = _ONE_SEGMENT_BARE.unpack_from(buf, off)
    if elen == 0:
        return tid, dlen, _ONE_SEGMENT_BARE.size
    if elen != 13 or len(buf) - off < _ONE_SEGMENT.size:
        return None
    (_, _, _, _, iflags, itype, ilen, total, dlen) = _ONE_SEGMENT.unpack_from(buf, off)
    if itype == XFER_EXT_TRANSFER_LENGTH and ilen == 8 and not iflags & ~EXT_CRITICAL \
            and total == dlen:
        return tid, dlen, _ONE_SEGMENT.size
    return None


class RefuseReason(enum.IntEnum):
    """XFER_REFUSE reason codes (RFC 9174 §5.2.4)."""

    UNKNOWN = 0x00
    COMPLETED = 0x01
    NO_RESOURCES = 0x02
    RETRANSMIT = 0x03
    NOT_ACCEPTABLE = 0x04
    EXTENSION_FAILURE = 0x05
    SESSION_TERMINATING = 0x06


class TermReason(enum.IntEnum):
    """SESS_TERM reason codes (RFC 9174 §6.1)."""

    UNKNOWN = 0x00
    IDLE_TIMEOUT = 0x01
    VERSION_MISMATCH = 0x02
    BUSY = 0x03
    CONTACT_FAILURE = 0x04
    RESOURCE_EXHAUSTION = 0x05


class RejectReason(enum.IntEnum):
    """MSG_REJECT reason codes (RFC 9174 §5.1.1)."""

    TYPE_UNKNOWN = 0x01
    UNSUPPORTED = 0x02
    UNEXPECTED = 0x03


def _reason(enum_cls: type[enum.IntEnum], code: int) -> enum.IntEnum | int:
    """Map a wire reason code to its enum member; unknown codes stay plain ints."""
    try:
        return enum_cls(code)
    except ValueError:
        return code


class TcpclError(ProtocolError):
    """A TCPCLv4 protocol violation or malformed message; the text says what and where.
    Raised as :class:`TcpclRemoteError` (the peer's) or :class:`TcpclLocalError` (ours)."""


class TcpclRemoteError(TcpclError, RemoteProtocolError):
    """The peer broke TCPCLv4: a malformed message, or one its session state forbids."""


class TcpclLocalError(TcpclError, LocalProtocolError):
    """This side asked the session for something TCPCLv4 does not allow now."""


class TcpclRefused(TcpclRemoteError):
    """The peer is not one this side talks to: TLS required but not offered, or its node
    ID refused by ``check_peer``. SESS_TERM (Contact Failure) is queued; flush, close."""


class RxBudget:
    """Bytes of incoming transfers in progress, shared by the sessions of one node, with
    a ceiling: what peers can make the node hold before their bundles are complete."""

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes < 0:
            raise ValueError(f"limit_bytes {limit_bytes} < 0")
        self.limit_bytes = limit_bytes
        self.used_bytes = 0

    def take(self, n: int) -> bool:
        """Reserve ``n`` more bytes; False (nothing reserved) when over the limit."""
        if self.used_bytes + n > self.limit_bytes:
            return False
        self.used_bytes += n
        return True

    def release(self, n: int) -> None:
        self.used_bytes -= n
        assert self.used_bytes >= 0, "released more than was taken"


# ------------------------------------------------------------------------------------
# Messages: plain values with encode(); decode_message() is the inverse.


@dataclass(frozen=True)
class ContactHeader:
    flags: int = 0
    version: int = VERSION

    def encode(self) -> bytes:
        return MAGIC + bytes((self.version, self.flags))


@dataclass(frozen=True)
class ExtensionItem:
    """A session or transfer extension item: ``critical`` flag, 16-bit type, raw value."""

    type: int
    value: bytes
    critical: bool = False

    def encode(self) -> bytes:
        return (
            struct.pack("!BHH", EXT_CRITICAL if self.critical else 0, self.type, len(self.value))
            + self.value
        )


def _encode_items(items: tuple[ExtensionItem, ...]) -> bytes:
    body = b"".join(i.encode() for i in items)
    return struct.pack("!I", len(body)) + body


def _decode_items(data: bytes | memoryview, where: str) -> tuple[ExtensionItem, ...]:
    items: list[ExtensionItem] = []
    off = 0
    n = len(data)
    while off < n:
        if n - off < 5:
            raise TcpclRemoteError(
                f"{where}: extension item header truncated ({n - off} bytes left, need 5)"
            )
        flags, typ, length = struct.unpack_from("!BHH", data, off)
        off += 5
        if n - off < length:
            raise TcpclRemoteError(
                f"{where}: extension item type {typ} declares {length} bytes, "
                f"only {n - off} left in the item list"
            )
        items.append(ExtensionItem(typ, bytes(data[off : off + length]), bool(flags & EXT_CRITICAL)))
        off += length
    return tuple(items)


@dataclass(frozen=True)
class SessInit:
    keepalive_s: int
    segment_mru: int
    transfer_mru: int
    node_id: str
    extensions: tuple[ExtensionItem, ...] = ()

    def encode(self) -> bytes:
        nid = self.node_id.encode()
        return (
            struct.pack("!BHQQH", SESS_INIT, self.keepalive_s, self.segment_mru,
                        self.transfer_mru, len(nid))
            + nid
            + _encode_items(self.extensions)
        )


@dataclass(frozen=True)
class XferSegment:
    flags: int
    transfer_id: int
    data: bytes | memoryview
    extensions: tuple[ExtensionItem, ...] = ()

    def header(self) -> bytes:
        """Everything up to the data (so large data can be written without a copy)."""
        head = struct.pack("!BBQ", XFER_SEGMENT, self.flags, self.transfer_id)
        if self.flags & SEG_START:
            head += _encode_items(self.extensions)
        return head + struct.pack("!Q", len(self.data))

    def encode(self) -> bytes:
        return self.header() + bytes(self.data)

    @property
    def transfer_length(self) -> int | None:
        for item in self.extensions:
            if item.type == XFER_EXT_TRANSFER_LENGTH and len(item.value) == 8:
                return int.from_bytes(item.value, "big")
        return None


@dataclass(frozen=True)
class XferAck:
    flags: int
    transfer_id: int
    length: int

    def encode(self) -> bytes:
        return struct.pack("!BBQQ", XFER_ACK, self.flags, self.transfer_id, self.length)


@dataclass(frozen=True)
class XferRefuse:
    reason: int
    transfer_id: int

    def encode(self) -> bytes:
        return struct.pack("!BBQ", XFER_REFUSE, self.reason, self.transfer_id)


@dataclass(frozen=True)
class Keepalive:
    def encode(self) -> bytes:
        return bytes((KEEPALIVE,))


@dataclass(frozen=True)
class SessTerm:
    flags: int
    reason: int

    def encode(self) -> bytes:
        return struct.pack("!BBB", SESS_TERM, self.flags, self.reason)


@dataclass(frozen=True)
class MsgReject:
    reason: int
    rejected_type: int

    def encode(self) -> bytes:
        return struct.pack("!BBB", MSG_REJECT, self.reason, self.rejected_type)


Message = SessInit | XferSegment | XferAck | XferRefuse | Keepalive | SessTerm | MsgReject


class UnknownMessageType(TcpclRemoteError):
    """A message header with a type code this version does not define."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"unknown message type 0x{code:02x}: cannot find its length, "
                         "the stream cannot continue")


def decode_contact_header(data: bytes | memoryview) -> ContactHeader:
    """Decode the 6-byte contact header; raise :class:`TcpclError` when it is not one."""
    if len(data) < CONTACT_HEADER_LEN:
        raise TcpclRemoteError(f"contact header: need 6 bytes, got {len(data)}")
    if bytes(data[:4]) != MAGIC:
        raise TcpclRemoteError(f"contact header: magic is {bytes(data[:4])!r}, expected b'dtn!' "
                               "(peer is not speaking TCPCL)")
    return ContactHeader(version=data[4], flags=data[5])


def decode_message(
    buf: bytes | bytearray | memoryview, offset: int = 0, *, max_node_id: int = 1 << 16,
    max_ext_bytes: int = 1 << 20,
) -> tuple[Message, int] | None:
    """Decode one message at ``buf[offset:]``.

    Returns ``(message, end_offset)``, or None when more bytes are needed. Raises
    :class:`TcpclError` (or :class:`UnknownMessageType`) for malformed input. XFER_SEGMENT
    data is returned as a memoryview into ``buf`` (copy it before mutating ``buf``).
    """
    n = len(buf)
    if offset >= n:
        return None
    typ = buf[offset]
    if typ == XFER_SEGMENT:
        if n - offset < 10:
            return None
        flags, tid = struct.unpack_from("!BQ", buf, offset + 1)
        if flags & ~(SEG_START | SEG_END):
            raise TcpclRemoteError(f"XFER_SEGMENT transfer {tid}: reserved flag bits set (0x{flags:02x})")
        p = offset + 10
        exts: tuple[ExtensionItem, ...] = ()
        if flags & SEG_START:
            if n - p < 4:
                return None
            (elen,) = struct.unpack_from("!I", buf, p)
            if elen > max_ext_bytes:
                raise TcpclRemoteError(f"XFER_SEGMENT transfer {tid}: transfer extension items "
                                       f"length {elen} exceeds limit {max_ext_bytes}")
            p += 4
            if n - p < elen:
                return None
            exts = _decode_items(memoryview(buf)[p : p + elen], f"XFER_SEGMENT transfer {tid}")
            p += elen
        if n - p < 8:
            return None
        (dlen,) = struct.unpack_from("!Q", buf, p)
        p += 8
        if n - p < dlen:
            return None
        return XferSegment(flags, tid, memoryview(buf)[p : p + dlen], exts), p + dlen
    if typ == XFER_ACK:
        if n - offset < 18:
            return None
        flags, tid, length = struct.unpack_from("!BQQ", buf, offset + 1)
        if flags & ~(SEG_START | SEG_END):
            raise TcpclRemoteError(f"XFER_ACK transfer {tid}: reserved flag bits set (0x{flags:02x})")
        return XferAck(flags, tid, length), offset + 18
    if typ == XFER_REFUSE:
        if n - offset < 10:
            return None
        reason, tid = struct.unpack_from("!BQ", buf, offset + 1)
        return XferRefuse(reason, tid), offset + 10
    if typ == KEEPALIVE:
        return Keepalive(), offset + 1
    if typ == SESS_TERM:
        if n - offset < 3:
            return None
        flags, reason = struct.unpack_from("!BB", buf, offset + 1)
        if flags & ~TERM_REPLY:
            raise TcpclRemoteError(f"SESS_TERM: reserved flag bits set (0x{flags:02x})")
        return SessTerm(flags, reason), offset + 3
    if typ == MSG_REJECT:
        if n - offset < 3:
            return None
        reason, rtype = struct.unpack_from("!BB", buf, offset + 1)
        return MsgReject(reason, rtype), offset + 3
    if typ == SESS_INIT:
        if n - offset < 21:
            return None
        ka, smru, tmru, nlen = struct.unpack_from("!HQQH", buf, offset + 1)
        if nlen > max_node_id:
            raise TcpclRemoteError(f"SESS_INIT: node ID length {nlen} exceeds limit {max_node_id}")
        p = offset + 21
        if n - p < nlen + 4:
            return None
        try:
            node_id = bytes(buf[p : p + nlen]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise TcpclRemoteError(f"SESS_INIT: node ID is not valid UTF-8 ({e.reason} at byte {e.start})") from None
        p += nlen
        (elen,) = struct.unpack_from("!I", buf, p)
        if elen > max_ext_bytes:
            raise TcpclRemoteError(f"SESS_INIT: session extension items length {elen} exceeds limit "
                                   f"{max_ext_bytes}")
        p += 4
        if n - p < elen:
            return None
        exts = _decode_items(memoryview(buf)[p : p + elen], "SESS_INIT")
        if smru == 0:
            raise TcpclRemoteError("SESS_INIT: segment MRU is 0 (peer could receive nothing)")
        return SessInit(ka, smru, tmru, node_id, exts), p + elen
    raise UnknownMessageType(typ)


def transfer_length_item(total: int) -> ExtensionItem:
    """The transfer-length extension (RFC 9174 §4.2.1) for a START segment."""
    return ExtensionItem(XFER_EXT_TRANSFER_LENGTH, total.to_bytes(8, "big"), critical=False)


# ------------------------------------------------------------------------------------
# Events the session reports.


@dataclass(frozen=True)
class ContactHeaderReceived:
    version: int
    can_tls: bool


@dataclass(frozen=True)
class TlsNegotiated:
    """Both sides offered TLS: run the handshake now (``server_side`` for the passive
    side), feed nothing more until it is done, then call :meth:`Session.tls_established`."""

    server_side: bool


@dataclass(frozen=True)
class SessionStarted:
    """Both SESS_INITs exchanged: transfers may flow.

    ``keepalive_s`` is the negotiated interval (0: no keepalives); ``peer_segment_mru``
    and ``peer_transfer_mru`` bound what this side may send.
    """

    peer_node_id: str
    keepalive_s: int
    peer_segment_mru: int
    peer_transfer_mru: int


@dataclass(frozen=True)
class TransferReceived:
    """A whole bundle arrived. Call ack_transfer() once stored (or refuse_transfer())."""

    transfer_id: int
    data: bytes


@dataclass(frozen=True)
class TransferProgress:
    """The peer acknowledged ``acked_bytes`` of transfer ``transfer_id`` (not complete)."""

    transfer_id: int
    acked_bytes: int


@dataclass(frozen=True)
class TransferCompleted:
    """The peer acknowledged the full length of a transfer: the bundle is on its side."""

    transfer_id: int
    length: int


@dataclass(frozen=True)
class TransferRefused:
    """The peer refused transfer ``transfer_id`` (or it was aborted by session end)."""

    transfer_id: int
    reason: RefuseReason | int


@dataclass(frozen=True)
class KeepaliveReceived:
    pass


@dataclass(frozen=True)
class SessionTerminating:
    """A SESS_TERM was received (``by_peer``) or sent; no new transfers may start."""

    reason: TermReason | int
    by_peer: bool


@dataclass(frozen=True)
class SessionClosed:
    """Both SESS_TERMs exchanged and no transfer in flight: close the connection.

    ``unacked`` are this side's transfer IDs that never got a full acknowledgement; the
    caller must send those bundles again on another session.
    """

    unacked: tuple[int, ...] = ()


@dataclass(frozen=True)
class MessageRejected:
    reason: RejectReason | int
    rejected_type: int


Event = (
    ContactHeaderReceived | TlsNegotiated | SessionStarted | TransferReceived | TransferProgress
    | TransferCompleted | TransferRefused | KeepaliveReceived | SessionTerminating
    | SessionClosed | MessageRejected
)


class Role(enum.Enum):
    ACTIVE = "active"  # opened the TCP connection, sends the contact header first
    PASSIVE = "passive"


class SessionState(enum.Enum):
    """Where a TCPCL session stands (:attr:`Session.state`)."""

    CONTACT = "contact"  # waiting for the peer's contact header
    TLS = "tls"  # both offered TLS: the caller runs the handshake
    INIT = "init"  # contact headers done, waiting for peer SESS_INIT
    ESTABLISHED = "established"
    ENDING = "ending"  # SESS_TERM sent or received, finishing transfers
    CLOSED = "closed"
    ERROR = "error"


@dataclass
class _InTransfer:
    """An incoming transfer being received: its data kept as the pieces that came (one
    copy at the end, and no buffer regrown, and copied, as it fills: a growing buffer
    of megabytes leaves the allocator holding about twice what it holds)."""

    transfer_id: int
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    total: int | None = None
    refused: bool = False

    def add(self, data: bytes | bytearray | memoryview) -> None:
        self.chunks.append(bytes(data))
        self.size += len(data)

    def drop(self) -> None:
        self.chunks = []
        self.size = 0

    def value(self) -> bytes:
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)


@dataclass
class _OutTransfer:
    transfer_id: int
    length: int
    acked: int = 0


class Session:
    """One TCPCLv4 session, either side.

    ``node_id`` is this node's ID for SESS_INIT (an ``ipn:N.0`` or ``dtn://name/`` node
    ID); ``segment_mru``/``transfer_mru`` are the largest segment and bundle this side
    accepts (bytes); ``keepalive_s`` is the interval this side proposes (0 disables).
    ``can_tls`` sets CAN_TLS in the contact header; ``tls_required`` refuses a peer that
    does not. ``check_peer(node_id)`` returns why the peer is refused, or None.
    ``rx_budget`` bounds the incoming bytes held by all sessions that share it.
    """

    def __init__(
        self,
        role: Role,
        node_id: str,
        *,
        keepalive_s: int = 30,
        segment_mru: int = 16 * 1024 * 1024,
        transfer_mru: int = 1 << 32,
        max_segment_out: int = 16 * 1024 * 1024,
        can_tls: bool = False,
        tls_required: bool = False,
        check_peer: Callable[[str], str | None] | None = None,
        rx_budget: RxBudget | None = None,
    ) -> None:
        if not 0 <= keepalive_s <= 0xFFFF:
            raise ValueError(f"keepalive_s {keepalive_s} outside 0..65535")
        if tls_required and not can_tls:
            raise ValueError("tls_required needs can_tls")
        self.role = role
        self.can_tls = can_tls
        self.tls_required = tls_required
        self.tls = False  # TLS negotiated (and, after tls_established, running)
        self.check_peer = check_peer
        self.rx_budget = rx_budget
        self._held = 0  # bytes of the incoming transfer reserved in rx_budget
        self.rx_data_bytes = 0  # XFER_SEGMENT data bytes received (a progress mark)
        self.node_id = node_id
        self.local_keepalive_s = keepalive_s
        self.segment_mru = segment_mru
        self.transfer_mru = transfer_mru
        self.max_segment_out = max_segment_out
        self.state = SessionState.CONTACT
        self.peer_node_id: str | None = None
        self.keepalive_s = 0
        self.peer_segment_mru = 0
        self.peer_transfer_mru = 0
        self.peer_can_tls = False
        self._buf = bytearray()
        self._out: list[bytes | bytearray | memoryview] = []
        self._next_tid = 0
        self._out_transfers: dict[int, _OutTransfer] = {}
        self._in: _InTransfer | None = None
        self._awaiting_ack: dict[int, int] = {}  # received transfers waiting for final ACK
        self._awaiting_first: dict[int, int] = {}  # ...of those, the single-segment ones
        self._last_in_tid = -1
        self._sent_init = False
        self._sent_term = False
        self._got_term = False
        self._term_reason: int = TermReason.UNKNOWN
        # Streaming state for a large XFER_SEGMENT: bytes of data still to come.
        self._seg_left = 0
        self._seg_flags = 0
        if role is Role.ACTIVE:
            self._out.append(self._contact_header())

    def _contact_header(self) -> bytes:
        return ContactHeader(flags=FLAG_CAN_TLS if self.can_tls else 0).encode()

    # --- output ----------------------------------------------------------------------

    def data_to_send(self) -> list[bytes | bytearray | memoryview]:
        """Buffers to write, in order (hand them to ``transport.writelines``)."""
        out, self._out = self._out, []
        return out

    @property
    def established(self) -> bool:
        return self.state is SessionState.ESTABLISHED

    @property
    def can_send(self) -> bool:
        """Whether a new transfer may start now."""
        return self.state is SessionState.ESTABLISHED and not self._sent_term and not self._got_term

    @property
    def in_flight(self) -> int:
        """Transfers sent and not yet fully acknowledged."""
        return len(self._out_transfers)

    @property
    def receiving(self) -> bool:
        """Whether an incoming transfer has started and not ended."""
        return self._in is not None

    @property
    def rx_held_bytes(self) -> int:
        """Bytes of the unfinished incoming transfer this session holds."""
        return self._in.size if self._in is not None else 0

    def _send_init(self) -> None:
        self._out.append(
            SessInit(self.local_keepalive_s, self.segment_mru, self.transfer_mru,
                     self.node_id).encode()
        )
        self._sent_init = True

    # --- commands --------------------------------------------------------------------

    def tls_established(self) -> None:
        """The caller's TLS handshake is done: SESS_INIT (from the active side) follows,
        and every byte from now on is the TLS layer's plaintext."""
        if self.state is not SessionState.TLS:
            raise TcpclLocalError(f"no TLS handshake pending in session state {self.state.value}")
        self.state = SessionState.INIT
        if self.role is Role.ACTIVE:
            self._send_init()

    def send_transfer(self, bundle: bytes | bytearray | memoryview) -> int:
        """Queue ``bundle`` as one transfer, segmented to the peer's segment MRU.

        Returns the transfer ID. Raises :class:`TcpclError` if the session cannot send or
        the bundle exceeds the peer's transfer MRU.
        """
        if not self.can_send:
            raise TcpclLocalError(f"cannot start a transfer in session state {self.state.value}"
                                  + (" (terminating)" if self.state is SessionState.ESTABLISHED else ""))
        total = len(bundle)
        if total > self.peer_transfer_mru:
            raise TcpclLocalError(f"bundle of {total} bytes exceeds the peer's transfer MRU "
                                  f"{self.peer_transfer_mru}")
        tid = self._next_tid
        self._next_tid += 1
        self._out_transfers[tid] = _OutTransfer(tid, total)
        seg_max = max(1, min(self.peer_segment_mru, self.max_segment_out))
        out = self._out
        if total <= seg_max:
            # One segment (the common case): no transfer-length item (RFC 9174 5.2.5.1).
            out.append(_ONE_SEGMENT_BARE.pack(XFER_SEGMENT, SEG_START | SEG_END, tid, 0,
                                              total))
            if total:
                out.append(bundle)
            return tid
        view = memoryview(bundle)
        off = 0
        first = True
        while True:
            chunk = view[off : off + seg_max]
            off += len(chunk)
            flags = (SEG_START if first else 0) | (SEG_END if off >= total else 0)
            exts = (transfer_length_item(total),) if first else ()
            seg = XferSegment(flags, tid, chunk, exts)
            out.append(seg.header())
            if len(chunk):
                out.append(chunk)
            first = False
            if off >= total:
                break
        return tid

    def ack_transfer(self, transfer_id: int) -> None:
        """Send the final XFER_ACK of a received transfer (after storing the bundle)."""
        length = self._awaiting_ack.pop(transfer_id, None)
        if length is None:
            raise TcpclLocalError(f"transfer {transfer_id} is not awaiting an acknowledgement")
        if self.state in (SessionState.CLOSED, SessionState.ERROR):
            return
        flags = SEG_END
        if self._awaiting_first.pop(transfer_id, None) is not None:
            flags |= SEG_START
        self._out.append(_ACK.pack(XFER_ACK, flags, transfer_id, length))
        if self.state is SessionState.ENDING:
            self._maybe_closed_after_term()

    def refuse_transfer(self, transfer_id: int, reason: RefuseReason) -> None:
        """Refuse a received (or still arriving) transfer, e.g. store full."""
        self._awaiting_ack.pop(transfer_id, None)
        self._awaiting_first.pop(transfer_id, None)
        if self._in is not None and self._in.transfer_id == transfer_id:
            self._in.refused = True
            self._in.drop()
            self._release_held()
        if self.state not in (SessionState.CLOSED, SessionState.ERROR):
            self._out.append(XferRefuse(int(reason), transfer_id).encode())
        self._maybe_closed_after_term()

    def send_keepalive(self) -> None:
        if self.state in (SessionState.ESTABLISHED, SessionState.ENDING):
            self._out.append(Keepalive().encode())

    def terminate(self, reason: TermReason = TermReason.UNKNOWN) -> list[Event]:
        """Start an orderly close (SESS_TERM). Returns events (e.g. SessionClosed)."""
        if self.state in (SessionState.CLOSED, SessionState.ERROR):
            return []
        events: list[Event] = []
        if self.state is SessionState.CONTACT or self.state is SessionState.TLS:
            # No contact header exchange yet, or the TLS handshake under way (a SESS_TERM
            # in the clear would be garbage to it): nothing to say, just close.
            self.state = SessionState.CLOSED
            return [SessionClosed(tuple(self._out_transfers))]
        if not self._sent_term:
            self._out.append(SessTerm(TERM_REPLY if self._got_term else 0, int(reason)).encode())
            self._sent_term = True
            self._term_reason = int(reason)
            if self.state is SessionState.ESTABLISHED:
                self.state = SessionState.ENDING
                events.append(SessionTerminating(_reason(TermReason, int(reason)), by_peer=False))
            elif self.state in (SessionState.CONTACT, SessionState.INIT):
                self.state = SessionState.ENDING
        events.extend(self._maybe_closed_after_term())
        return events

    def connection_lost(self) -> list[Event]:
        """The TCP connection is gone; returns SessionClosed with every unacknowledged transfer."""
        if self.state is SessionState.CLOSED:
            return []
        self.state = SessionState.CLOSED
        self._release_held()
        self._in = None
        unacked = tuple(self._out_transfers)
        self._out_transfers.clear()
        return [SessionClosed(unacked)]

    # --- input -----------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes read from the connection; returns the events they complete."""
        if self.state is SessionState.ERROR:
            raise TcpclLocalError("session already failed; no more input is accepted")
        if self.state is SessionState.CLOSED:
            return []
        events: list[Event] = []
        if self._seg_left:
            data = self._feed_segment_data(data, events)
            if not data:
                return events
        buf = self._buf
        buf += data
        off = 0
        try:
            while True:
                if self.state is SessionState.ESTABLISHED:
                    off = self._receive_run(buf, off, events)
                if self.state is SessionState.CONTACT:
                    if len(buf) - off < CONTACT_HEADER_LEN:
                        break
                    ch = decode_contact_header(memoryview(buf)[off : off + CONTACT_HEADER_LEN])
                    off += CONTACT_HEADER_LEN
                    self.peer_can_tls = bool(ch.flags & FLAG_CAN_TLS)
                    events.append(ContactHeaderReceived(ch.version, self.peer_can_tls))
                    if ch.version != VERSION:
                        # RFC 9174 4.3: the passive entity sends its contact header and
                        # ends the session with "Version mismatch" (the active one may
                        # then retry with an older version); an active entity answered
                        # with another version just closes the connection.
                        if self.role is Role.PASSIVE:
                            self._out.append(self._contact_header())
                            self._out.append(SessTerm(0, int(TermReason.VERSION_MISMATCH)).encode())
                            self._sent_term = True
                        self._fail(TermReason.VERSION_MISMATCH)
                        raise TcpclRemoteError(f"contact header: peer speaks TCPCL version {ch.version}, "
                                               f"this side only version {VERSION}")
                    if self.role is Role.PASSIVE:
                        self._out.append(self._contact_header())
                    self.state = SessionState.INIT
                    if self.can_tls and self.peer_can_tls:
                        # RFC 9174 4.4: TLS right after the contact headers, before SESS_INIT
                        self.state = SessionState.TLS
                        self.tls = True
                        if len(buf) > off:
                            self._fail(TermReason.CONTACT_FAILURE)
                            raise TcpclRemoteError(
                                f"contact header: {len(buf) - off} bytes in the clear after "
                                "it, where the TLS handshake must start")
                        events.append(TlsNegotiated(server_side=self.role is Role.PASSIVE))
                        break
                    if self.tls_required:
                        self._fail(TermReason.CONTACT_FAILURE)
                        raise TcpclRefused("contact header: the peer does not offer TLS "
                                           "(CAN_TLS unset) and this side requires it")
                    if self.role is Role.ACTIVE:
                        self._send_init()  # active side sends SESS_INIT first
                    continue
                if self.state is SessionState.TLS:
                    if len(buf) > off:
                        self._fail(TermReason.CONTACT_FAILURE)
                        raise TcpclRemoteError("bytes in the clear during the TLS handshake")
                    break
                if self.state in (SessionState.CLOSED, SessionState.ERROR):
                    break
                typ = buf[off] if off < len(buf) else -1
                if (typ == XFER_ACK and self.state is not SessionState.INIT
                        and len(buf) - off >= 18):
                    flags, tid, length = _ACK_BODY.unpack_from(buf, off + 1)
                    if flags & ~(SEG_START | SEG_END):
                        raise TcpclRemoteError(f"XFER_ACK transfer {tid}: reserved flag bits set "
                                               f"(0x{flags:02x})")
                    off += 18
                    self._acked(flags, tid, length, events)
                    continue
                if (typ == XFER_SEGMENT and self._in is None
                        and len(buf) - off >= _ONE_SEGMENT_BARE.size
                        and buf[off + 1] == SEG_START | SEG_END
                        and self.state is SessionState.ESTABLISHED):
                    # A whole bundle in one segment, with no extension item or only the
                    # transfer-length one.
                    hdr = _one_segment(buf, off)
                    if (hdr is not None and hdr[1] <= self.segment_mru
                            and hdr[1] <= self.transfer_mru
                            and len(buf) - off - hdr[2] >= hdr[1]):
                        tid, dlen, size = hdr
                        self._check_new_tid(tid)
                        start = off + size
                        off = start + dlen
                        self._awaiting_ack[tid] = dlen
                        self._awaiting_first[tid] = dlen
                        events.append(TransferReceived(tid, bytes(buf[start:off])))
                        continue
                if typ == XFER_SEGMENT:
                    got = self._segment_header(buf, off, events)
                    if got is None:
                        break
                    off = got
                    if self._seg_left:
                        # Stream the remaining segment data straight into the transfer.
                        rest = buf[off:]
                        del buf[:]
                        off = 0
                        leftover = self._feed_segment_data(rest, events)
                        if leftover:
                            buf += leftover
                            continue
                        break
                    continue
                try:
                    got2 = decode_message(buf, off)
                except UnknownMessageType as e:
                    self._out.append(MsgReject(RejectReason.TYPE_UNKNOWN, e.code).encode())
                    self._fail(TermReason.UNKNOWN)
                    raise
                if got2 is None:
                    break
                msg, off = got2
                self._handle(msg, events)
        except TcpclError:
            if self.state is not SessionState.ERROR:
                self._fail(TermReason.UNKNOWN)
            self._buf = bytearray()  # views may live on in the traceback: don't resize
            raise
        if off:
            del buf[:off]
        return events

    def _receive_run(self, buf: bytearray, off: int, events: list[Event]) -> int:
        """In ESTABLISHED: consume a run of the two messages a busy session is made of,
        XFER_ACKs and bundles in one segment with only the transfer-length item, with the
        same checks and events as the general loop of :meth:`receive_data`, which takes
        over at anything else (and at an incomplete message). Returns the new offset."""
        n = len(buf)
        out_transfers = self._out_transfers
        ack_unpack, one_segment = _ACK_BODY.unpack_from, _one_segment
        one_seg = SEG_START | SEG_END
        while off < n:
            typ = buf[off]
            if typ == XFER_ACK:
                if n - off < 18:
                    break
                flags, tid, length = ack_unpack(buf, off + 1)
                if flags & ~one_seg:
                    raise TcpclRemoteError(f"XFER_ACK transfer {tid}: reserved flag bits set "
                                           f"(0x{flags:02x})")
                off += 18
                t = out_transfers.get(tid)
                if t is None:
                    continue  # late ACK for a finished/refused transfer: harmless
                if length > t.length or not flags & SEG_END or length != t.length:
                    self._acked(flags, tid, length, events)  # progress, or an error
                    continue
                del out_transfers[tid]
                t.acked = length
                events.append(TransferCompleted(tid, length))
                continue
            if (typ != XFER_SEGMENT or self._in is not None or n - off < 22
                    or buf[off + 1] != one_seg):
                break
            hdr = one_segment(buf, off)
            if hdr is None:
                break
            tid, dlen, seg_size = hdr
            if dlen > self.segment_mru or dlen > self.transfer_mru or n - off - seg_size < dlen:
                break
            self._check_new_tid(tid)
            start = off + seg_size
            off = start + dlen
            self._awaiting_ack[tid] = dlen
            self._awaiting_first[tid] = dlen
            events.append(TransferReceived(tid, bytes(buf[start:off])))
        return off

    def _segment_header(self, buf: bytearray, off: int, events: list[Event]) -> int | None:
        """Parse an XFER_SEGMENT header at ``off``; start streaming its data. Returns the
        offset after the header, or None when the header is incomplete."""
        n = len(buf)
        if n - off < 10:
            return None
        flags, tid = struct.unpack_from("!BQ", buf, off + 1)
        where = f"XFER_SEGMENT transfer {tid}"
        if flags & ~(SEG_START | SEG_END):
            raise TcpclRemoteError(f"{where}: reserved flag bits set (0x{flags:02x})")
        p = off + 10
        exts: tuple[ExtensionItem, ...] = ()
        if flags & SEG_START:
            if n - p < 4:
                return None
            (elen,) = struct.unpack_from("!I", buf, p)
            if elen > 1 << 20:
                raise TcpclRemoteError(f"{where}: transfer extension items length {elen} too large")
            if n - p - 4 < elen:
                return None
            with memoryview(buf) as mv:
                exts = _decode_items(mv[p + 4 : p + 4 + elen], where)
            p += 4 + elen
        if n - p < 8:
            return None
        (dlen,) = struct.unpack_from("!Q", buf, p)
        p += 8
        if self.state is not SessionState.ESTABLISHED and self.state is not SessionState.ENDING:
            self._reject_unexpected(XFER_SEGMENT, f"{where} before the session was established")
        if dlen > self.segment_mru:
            self._fail(TermReason.RESOURCE_EXHAUSTION)
            raise TcpclRemoteError(f"{where}: segment of {dlen} bytes exceeds this side's segment MRU "
                                   f"{self.segment_mru}")
        cur = self._in
        if flags & SEG_START:
            if cur is not None:
                raise TcpclRemoteError(f"{where}: START while transfer {cur.transfer_id} is unfinished")
            self._check_new_tid(tid)
            cur = self._in = _InTransfer(tid)
            for item in exts:
                if item.type == XFER_EXT_TRANSFER_LENGTH:
                    if len(item.value) != 8:
                        raise TcpclRemoteError(f"{where}: transfer length extension has "
                                               f"{len(item.value)} bytes, expected 8")
                    cur.total = int.from_bytes(item.value, "big")
                elif item.critical:
                    cur.refused = True
                    self._out.append(XferRefuse(RefuseReason.EXTENSION_FAILURE, tid).encode())
            if not cur.refused and cur.total is not None and cur.total > self.transfer_mru:
                cur.refused = True
                self._out.append(XferRefuse(RefuseReason.NO_RESOURCES, tid).encode())
            if not cur.refused and self.state is SessionState.ENDING:
                # RFC 9174 6.1: no new transfers once the session is terminating.
                cur.refused = True
                self._out.append(XferRefuse(RefuseReason.SESSION_TERMINATING, tid).encode())
        else:
            if cur is None or cur.transfer_id != tid:
                raise TcpclRemoteError(f"{where}: segment without START for a transfer not in progress")
        if not cur.refused and cur.size + dlen > self.transfer_mru:
            self._drop_in(cur, RefuseReason.NO_RESOURCES)
        self._seg_flags = flags
        self._seg_left = dlen
        if dlen == 0:
            self._segment_done(events)
        return p

    def _feed_segment_data(self, data: bytes | bytearray | memoryview,
                           events: list[Event]) -> memoryview:
        """Append up to ``_seg_left`` bytes to the current transfer; return the rest."""
        mv = data if isinstance(data, memoryview) else memoryview(data)
        take = min(self._seg_left, len(mv))
        self.rx_data_bytes += take
        cur = self._in
        assert cur is not None
        if not cur.refused:
            budget = self.rx_budget
            if budget is None:
                cur.add(mv[:take])
            elif budget.take(take):
                self._held += take
                cur.add(mv[:take])
            else:  # the node holds all it may of unfinished transfers
                self._drop_in(cur, RefuseReason.NO_RESOURCES)
        self._seg_left -= take
        if self._seg_left == 0:
            self._segment_done(events)
        return mv[take:]

    def _segment_done(self, events: list[Event]) -> None:
        cur = self._in
        assert cur is not None
        flags = self._seg_flags
        got = cur.size
        if flags & SEG_END:
            self._in = None
            self._release_held()
            if cur.refused:
                return
            if cur.total is not None and cur.total != got:
                self._fail(TermReason.UNKNOWN)
                raise TcpclRemoteError(f"XFER_SEGMENT transfer {cur.transfer_id}: END after {got} bytes "
                                       f"but the transfer length extension said {cur.total}")
            self._awaiting_ack[cur.transfer_id] = got
            if flags & SEG_START:
                self._awaiting_first[cur.transfer_id] = got
            events.append(TransferReceived(cur.transfer_id, cur.value()))
        elif not cur.refused:
            self._out.append(XferAck(flags, cur.transfer_id, got).encode())

    def _drop_in(self, cur: _InTransfer, reason: RefuseReason) -> None:
        """Refuse the incoming transfer ``cur`` and let go of its bytes (the rest of it is
        read and discarded)."""
        cur.refused = True
        cur.drop()
        self._release_held()
        self._out.append(XferRefuse(reason, cur.transfer_id).encode())

    def _release_held(self) -> None:
        if self._held:
            assert self.rx_budget is not None
            self.rx_budget.release(self._held)
            self._held = 0

    def _reject_unexpected(self, typ: int, what: str) -> None:
        state = self.state
        self._out.append(MsgReject(RejectReason.UNEXPECTED, typ).encode())
        self._fail(TermReason.UNKNOWN)
        raise TcpclRemoteError(f"{what}: unexpected in state {state.value}")

    def _fail(self, reason: TermReason) -> None:
        self._release_held()
        if self._in is not None:
            self._in.drop()
        if not self._sent_term and self.state not in (SessionState.CONTACT, SessionState.ERROR, SessionState.CLOSED):
            self._out.append(SessTerm(0, int(reason)).encode())
            self._sent_term = True
        self.state = SessionState.ERROR

    def _handle(self, msg: Message, events: list[Event]) -> None:
        if isinstance(msg, SessInit):
            if self.state is SessionState.ENDING and self.peer_node_id is None:
                return  # we ended the session before it started; its SESS_INIT crossed ours
            if self.state is not SessionState.INIT:
                self._reject_unexpected(SESS_INIT, "SESS_INIT")
            for item in msg.extensions:
                if item.critical:
                    self._fail(TermReason.CONTACT_FAILURE)
                    raise TcpclRemoteError(f"SESS_INIT: unknown critical session extension type "
                                           f"{item.type}")
            why = self.check_peer(msg.node_id) if self.check_peer is not None else None
            if why is not None:
                self._fail(TermReason.CONTACT_FAILURE)
                raise TcpclRefused(f"SESS_INIT: peer node ID {msg.node_id!r} refused: {why}")
            if self.role is Role.PASSIVE:
                self._send_init()
            self.peer_node_id = msg.node_id
            self.keepalive_s = min(self.local_keepalive_s, msg.keepalive_s)
            self.peer_segment_mru = msg.segment_mru
            self.peer_transfer_mru = msg.transfer_mru
            self.state = SessionState.ESTABLISHED
            events.append(SessionStarted(msg.node_id, self.keepalive_s, msg.segment_mru,
                                         msg.transfer_mru))
            return
        if self.state is SessionState.INIT:
            if isinstance(msg, SessTerm):
                self._got_term = True
                self.state = SessionState.CLOSED
                events.append(SessionTerminating(_reason(TermReason, msg.reason), by_peer=True))
                events.append(SessionClosed(tuple(self._out_transfers)))
                return
            self._reject_unexpected(_type_of(msg), f"{MESSAGE_NAMES[_type_of(msg)]}")
        if isinstance(msg, XferAck):
            self._acked(msg.flags, msg.transfer_id, msg.length, events)
        elif isinstance(msg, XferRefuse):
            if self._out_transfers.pop(msg.transfer_id, None) is not None:
                events.append(TransferRefused(msg.transfer_id, _reason(RefuseReason, msg.reason)))
                events.extend(self._maybe_closed_after_term())
        elif isinstance(msg, Keepalive):
            events.append(KeepaliveReceived())
        elif isinstance(msg, SessTerm):
            if self._got_term:
                return
            self._got_term = True
            events.append(SessionTerminating(_reason(TermReason, msg.reason), by_peer=True))
            if not self._sent_term:
                self._out.append(SessTerm(TERM_REPLY, msg.reason).encode())
                self._sent_term = True
            self.state = SessionState.ENDING
            events.extend(self._maybe_closed_after_term())
        elif isinstance(msg, MsgReject):
            events.append(MessageRejected(_reason(RejectReason, msg.reason), msg.rejected_type))

    def _check_new_tid(self, tid: int) -> None:
        if tid <= self._last_in_tid:
            self._fail(TermReason.UNKNOWN)
            raise TcpclRemoteError(f"XFER_SEGMENT transfer {tid}: transfer ID not above the previous "
                                   f"one ({self._last_in_tid}); RFC 9174 5.2.2 makes them increase")
        self._last_in_tid = tid

    def _acked(self, flags: int, tid: int, length: int, events: list[Event]) -> None:
        t = self._out_transfers.get(tid)
        if t is None:
            return  # late ACK for a finished/refused transfer: harmless
        if length > t.length:
            self._fail(TermReason.UNKNOWN)
            raise TcpclRemoteError(f"XFER_ACK transfer {tid}: acknowledges {length} bytes of a "
                                   f"{t.length}-byte transfer")
        if length > t.acked:
            t.acked = length
        if flags & SEG_END and t.acked == t.length:
            del self._out_transfers[tid]
            events.append(TransferCompleted(tid, t.length))
            if self.state is SessionState.ENDING:
                events.extend(self._maybe_closed_after_term())
        else:
            events.append(TransferProgress(tid, t.acked))

    def _maybe_closed_after_term(self) -> list[Event]:
        """After SESS_TERM both ways, close once no transfer is in either direction."""
        if (self.state is SessionState.ENDING and self._sent_term and self._got_term
                and not self._out_transfers and self._in is None and not self._awaiting_ack):
            self.state = SessionState.CLOSED
            return [SessionClosed(())]
        return []


def _type_of(msg: Message) -> int:
    return {
        SessInit: SESS_INIT, XferSegment: XFER_SEGMENT, XferAck: XFER_ACK,
        XferRefuse: XFER_REFUSE, Keepalive: KEEPALIVE, SessTerm: SESS_TERM,
        MsgReject: MSG_REJECT,
    }[type(msg)]


__all__ = [
    "DEFAULT_PORT", "Session", "Role", "SessionState", "TcpclError", "TcpclLocalError",
    "TcpclRefused", "RxBudget", "TlsNegotiated",
    "TcpclRemoteError", "UnknownMessageType",
    "RefuseReason", "TermReason", "RejectReason", "decode_message", "decode_contact_header",
    "ContactHeader", "SessInit", "XferSegment", "XferAck", "XferRefuse", "Keepalive",
    "SessTerm", "MsgReject", "ExtensionItem", "ContactHeaderReceived", "SessionStarted",
    "TransferReceived", "TransferProgress", "TransferCompleted", "TransferRefused",
    "KeepaliveReceived", "SessionTerminating", "SessionClosed", "MessageRejected",
]
