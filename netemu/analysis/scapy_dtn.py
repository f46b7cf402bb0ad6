"""Scapy layers for TCPCLv4 (RFC 9174) and BPv7 (RFC 9171), bound to TCP port 4556.

    from scapy.all import rdpcap
    import netemu.analysis.scapy_dtn  # binds the layers
    for p in rdpcap("link.pcap"):
        if p.haslayer(TCPCLXferSegment) and p.haslayer(BPv7):
            print(p[BPv7].bundle_id)

One TCP segment may carry several TCPCL messages (each is dissected in turn) or part of
one; per-packet dissection decodes the messages that start at the segment's first byte.
For whole transfers across segments use :mod:`netemu.analysis.pcap`, which reassembles TCP
streams. A ``XFER_SEGMENT`` carrying a whole transfer (START and END both set) has its
data dissected as a :class:`BPv7` bundle, decoded with netemu's own BPv7 decoder (falling
back to plain CBOR when the bundle is not valid).
"""

from __future__ import annotations

from typing import Any

from scapy.fields import (
    ByteEnumField,
    ByteField,
    ConditionalField,
    FieldLenField,
    FlagsField,
    LongField,
    PacketLenField,
    ShortField,
    StrFixedLenField,
    StrLenField,
)
from scapy.layers.inet import TCP
from scapy.packet import Packet, Raw, bind_layers

TCPCL_PORT = 4556

MSG_TYPES = {
    0x01: "XFER_SEGMENT",
    0x02: "XFER_ACK",
    0x03: "XFER_REFUSE",
    0x04: "KEEPALIVE",
    0x05: "SESS_TERM",
    0x06: "MSG_REJECT",
    0x07: "SESS_INIT",
}
SEG_FLAGS = ["END", "START"]  # bit 0 = END, bit 1 = START (RFC 9174 §5.2.2)
TERM_REASONS = {0: "unknown", 1: "idle timeout", 2: "version mismatch", 3: "busy",
                4: "contact failure", 5: "resource exhaustion"}
REFUSE_REASONS = {0: "unknown", 1: "completed", 2: "no resources", 3: "retransmit",
                  4: "not acceptable", 5: "extension failure", 6: "session terminating"}
REJECT_REASONS = {1: "type unknown", 2: "unsupported", 3: "unexpected"}


def decode_bundle_summary(data: bytes) -> dict[str, Any]:
    """Identity and size of an encoded bundle: ``{"bundle_id", "source", "destination",
    "creation_ms", "sequence", "lifetime_ms", "size_bytes", "payload_len", "valid"}``.

    Uses netemu's BPv7 decoder (which checks CRCs); a bundle it refuses is read as plain
    CBOR (``valid`` False) so a capture of a broken sender still shows what was sent.
    """
    try:
        from netemu.dtn.bundle import decode_bundle

        b = decode_bundle(bytes(data))
        p = b.primary
        return {"bundle_id": b.id, "source": str(p.source), "destination": str(p.destination),
                "creation_ms": p.creation_ms, "sequence": p.sequence, "lifetime_ms": p.lifetime_ms,
                "size_bytes": len(data), "payload_len": len(b.payload), "valid": True}
    except Exception:  # noqa: BLE001 - fall back to a lenient CBOR read
        pass
    import cbor2

    try:
        blocks = cbor2.loads(bytes(data))
        prim = blocks[0]
        src, dst = _eid_text(prim[4]), _eid_text(prim[3])
        ts = prim[6]
        payload = next((b[4] for b in blocks[1:] if b and b[0] == 1), b"")
        return {"bundle_id": f"{src},{ts[0]},{ts[1]}", "source": src, "destination": dst,
                "creation_ms": ts[0], "sequence": ts[1], "lifetime_ms": prim[7],
                "size_bytes": len(data), "payload_len": len(payload), "valid": False}
    except Exception:  # noqa: BLE001
        return {"bundle_id": None, "size_bytes": len(data), "valid": False}


def _eid_text(eid: Any) -> str:
    try:
        scheme, ssp = eid
        if scheme == 2:
            return f"ipn:{ssp[0]}.{ssp[1]}"
        if scheme == 1:
            return "dtn:none" if ssp == 0 else f"dtn:{ssp}"
    except (TypeError, ValueError):
        pass
    return str(eid)


class BPv7(Packet):
    """A whole BPv7 bundle. ``bundle_id``, ``source``, ``destination`` and friends are
    read from the decoded primary block (see :func:`decode_bundle_summary`)."""

    name = "BPv7 bundle"
    fields_desc = [StrLenField("raw", b"", length_from=lambda p: len(p.original or b""))]

    def do_dissect(self, s: bytes) -> bytes:
        self.raw = bytes(s)
        self.info = decode_bundle_summary(self.raw)
        return b""

    def __getattr__(self, attr: str) -> Any:
        info = self.__dict__.get("info")
        if info is not None and attr in info:
            return info[attr]
        return super().__getattr__(attr)

    def mysummary(self) -> str:
        info = getattr(self, "info", {}) or {}
        return (f"BPv7 {info.get('bundle_id')} {info.get('source')} > {info.get('destination')} "
                f"{info.get('size_bytes')}B")


class TCPCLContactHeader(Packet):
    """The 6-byte contact header each side sends first: ``dtn!``, version, flags."""

    name = "TCPCLv4 Contact Header"
    fields_desc = [
        StrFixedLenField("magic", b"dtn!", 4),
        ByteField("version", 4),
        FlagsField("flags", 0, 8, ["CAN_TLS"]),
    ]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return TCPCL if payload else Raw


class TCPCL(Packet):
    """A TCPCLv4 message; dissection dispatches on the type byte."""

    name = "TCPCLv4"
    fields_desc = [ByteEnumField("type", 0, MSG_TYPES)]

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kw: Any) -> type[Packet]:
        if _pkt:
            if _pkt[:4] == b"dtn!":
                return TCPCLContactHeader
            return _BY_TYPE.get(_pkt[0], Raw)
        return cls

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return TCPCL if payload else Raw


class TCPCLSessInit(TCPCL):
    name = "TCPCLv4 SESS_INIT"
    fields_desc = [
        ByteEnumField("type", 0x07, MSG_TYPES),
        ShortField("keepalive_s", 0),
        LongField("segment_mru", 0),
        LongField("transfer_mru", 0),
        FieldLenField("node_id_len", None, length_of="node_id", fmt="!H"),
        StrLenField("node_id", b"", length_from=lambda p: p.node_id_len),
        FieldLenField("ext_len", None, length_of="ext", fmt="!I"),
        StrLenField("ext", b"", length_from=lambda p: p.ext_len),
    ]


class TCPCLXferSegment(TCPCL):
    """A transfer segment. When it carries a whole transfer (START and END set), ``data``
    is dissected as a :class:`BPv7` bundle (``pkt[BPv7]``); otherwise it is raw bytes."""

    name = "TCPCLv4 XFER_SEGMENT"
    fields_desc = [
        ByteEnumField("type", 0x01, MSG_TYPES),
        FlagsField("flags", 0, 8, SEG_FLAGS),
        LongField("transfer_id", 0),
        ConditionalField(FieldLenField("ext_len", None, length_of="ext", fmt="!I"),
                         lambda p: bool(int(p.flags) & 0x02)),
        ConditionalField(StrLenField("ext", b"", length_from=lambda p: p.ext_len),
                         lambda p: bool(int(p.flags) & 0x02)),
        LongField("data_len", None),  # type: ignore[arg-type]  # scapy: None = computed at build
        ConditionalField(PacketLenField("bundle", None, BPv7, length_from=lambda p: p.data_len),  # type: ignore[arg-type]  # scapy: no default packet
                         lambda p: (int(p.flags) & 0x03) == 0x03),
        ConditionalField(StrLenField("data", b"", length_from=lambda p: p.data_len),
                         lambda p: (int(p.flags) & 0x03) != 0x03),
    ]

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.data_len is None:  # fill in the length of what follows the header
            head = 10 + (4 + len(self.ext or b"") if int(self.flags) & 0x02 else 0)
            n = len(pkt) - head - 8
            pkt = pkt[:head] + n.to_bytes(8, "big") + pkt[head + 8 :]
        return pkt + pay

    def mysummary(self) -> str:
        return self.sprintf("TCPCL XFER_SEGMENT %flags% id=%transfer_id% len=%data_len%")


class TCPCLXferAck(TCPCL):
    name = "TCPCLv4 XFER_ACK"
    fields_desc = [
        ByteEnumField("type", 0x02, MSG_TYPES),
        FlagsField("flags", 0, 8, SEG_FLAGS),
        LongField("transfer_id", 0),
        LongField("ack_len", 0),
    ]


class TCPCLXferRefuse(TCPCL):
    name = "TCPCLv4 XFER_REFUSE"
    fields_desc = [
        ByteEnumField("type", 0x03, MSG_TYPES),
        ByteEnumField("reason", 0, REFUSE_REASONS),
        LongField("transfer_id", 0),
    ]


class TCPCLKeepalive(TCPCL):
    name = "TCPCLv4 KEEPALIVE"
    fields_desc = [ByteEnumField("type", 0x04, MSG_TYPES)]


class TCPCLSessTerm(TCPCL):
    name = "TCPCLv4 SESS_TERM"
    fields_desc = [
        ByteEnumField("type", 0x05, MSG_TYPES),
        FlagsField("flags", 0, 8, ["REPLY"]),
        ByteEnumField("reason", 0, TERM_REASONS),
    ]


class TCPCLMsgReject(TCPCL):
    name = "TCPCLv4 MSG_REJECT"
    fields_desc = [
        ByteEnumField("type", 0x06, MSG_TYPES),
        ByteEnumField("reason", 0, REJECT_REASONS),
        ByteField("rejected_type", 0),
    ]


_BY_TYPE: dict[int, type[Packet]] = {
    0x01: TCPCLXferSegment,
    0x02: TCPCLXferAck,
    0x03: TCPCLXferRefuse,
    0x04: TCPCLKeepalive,
    0x05: TCPCLSessTerm,
    0x06: TCPCLMsgReject,
    0x07: TCPCLSessInit,
}


bind_layers(TCP, TCPCL, dport=TCPCL_PORT)
bind_layers(TCP, TCPCL, sport=TCPCL_PORT)
