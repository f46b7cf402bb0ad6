"""Endpoint IDs of RFC 9171 section 4.2.5: the ``ipn`` and ``dtn`` URI schemes.

Text forms: ``ipn:NODE.SERVICE`` (``ipn:1.2``), ``dtn://node/demux`` and ``dtn:none``.
CBOR forms: ``[2, [node, service]]`` and ``[1, "//node/demux"]`` / ``[1, 0]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from netemu.dtn import cbor
from netemu.dtn.errors import BundleError

SCHEME_DTN = 1
SCHEME_IPN = 2
_U64 = 1 << 64
IpnSsp = tuple[int, int]
"""An ipn SSP: (node, service); ``cast`` to it where the scheme says ipn."""


@dataclass(frozen=True, slots=True)
class EID:
    """An endpoint ID. ``ssp`` is ``(node, service)`` for ipn, the text after ``dtn:``
    (``"//node/demux"``) for dtn, and ``0`` for ``dtn:none``."""

    scheme: int
    ssp: tuple[int, int] | str | int

    # --- constructors -------------------------------------------------------------
    @staticmethod
    def ipn(node: int, service: int = 0) -> EID:
        if not (0 <= node < _U64 and 0 <= service < _U64):
            raise BundleError(f"ipn:{node}.{service}: node and service numbers must be "
                              "unsigned 64-bit integers", field="eid")
        return EID(SCHEME_IPN, (node, service))

    @staticmethod
    def dtn(ssp: str) -> EID:
        """``EID.dtn("//node/demux")``; ``EID.dtn("none")`` is the null endpoint."""
        if ssp == "none":
            return NONE
        _check_dtn_ssp(ssp)
        return EID(SCHEME_DTN, ssp)

    @staticmethod
    def parse(text: str) -> EID:
        """Parse ``ipn:N.S``, ``dtn://node/demux`` or ``dtn:none``."""
        hit = _PARSED.get(text) if isinstance(text, str) else None
        if hit is not None:
            return hit
        eid = EID._parse(text)
        if len(_PARSED) < 4096:  # agents see few distinct endpoints; bound the cache
            _PARSED[text] = eid
        return eid

    @staticmethod
    def _parse(text: str) -> EID:
        if not isinstance(text, str):
            raise BundleError(f"endpoint ID must be text, got {type(text).__name__}",
                              field="eid")
        if text.startswith("ipn:"):
            node_s, dot, svc_s = text[4:].partition(".")
            if not dot or not node_s.isdigit() or not svc_s.isdigit():
                raise BundleError(f"{text!r}: an ipn endpoint ID is ipn:NODE.SERVICE with "
                                  "decimal numbers (e.g. ipn:1.2)", field="eid")
            return EID.ipn(int(node_s), int(svc_s))
        if text.startswith("dtn:"):
            return EID.dtn(text[4:])
        raise BundleError(f"{text!r}: unknown endpoint ID scheme (use ipn:N.S or "
                          "dtn://node/demux)", field="eid")

    # --- views --------------------------------------------------------------------
    @property
    def is_none(self) -> bool:
        return self.scheme == SCHEME_DTN and self.ssp == 0

    @property
    def node_name(self) -> str:
        """The node part: the ipn node number as text, or the dtn node name."""
        if self.scheme == SCHEME_IPN:
            return str(cast(IpnSsp, self.ssp)[0])
        if self.ssp == 0:
            return ""
        return str(self.ssp)[2:].split("/", 1)[0]

    @property
    def node_number(self) -> int | None:
        return cast(IpnSsp, self.ssp)[0] if self.scheme == SCHEME_IPN else None

    @property
    def service(self) -> int | str:
        if self.scheme == SCHEME_IPN:
            return cast(IpnSsp, self.ssp)[1]
        if self.ssp == 0:
            return ""
        return str(self.ssp)[2:].split("/", 1)[1]

    def node_id(self) -> EID:
        """The node ID of the node this endpoint sits on (ipn:N.0 or dtn://node/)."""
        if self.scheme == SCHEME_IPN:
            return EID(SCHEME_IPN, (cast(IpnSsp, self.ssp)[0], 0))
        if self.ssp == 0:
            return self
        return EID(SCHEME_DTN, f"//{self.node_name}/")

    def same_node(self, other: EID) -> bool:
        return self.node_id() == other.node_id()

    def __str__(self) -> str:
        if self.scheme == SCHEME_IPN:
            n, s = cast(IpnSsp, self.ssp)
            return f"ipn:{n}.{s}"
        if self.ssp == 0:
            return "dtn:none"
        return f"dtn:{self.ssp}"

    # --- CBOR ---------------------------------------------------------------------
    def to_cbor(self) -> bytes:
        hit = _CBOR.get(self)  # every bundle encodes its three EIDs: cache the few in use
        if hit is not None:
            return hit
        if self.scheme == SCHEME_IPN:
            n, s = cast(IpnSsp, self.ssp)
            out = b"\x82\x02\x82" + cbor.head(0, n) + cbor.head(0, s)
        elif self.ssp == 0:
            out = b"\x82\x01\x00"
        else:
            out = b"\x82\x01" + cbor.dumps(self.ssp)
        if len(_CBOR) < 4096:
            _CBOR[self] = out
        return out

    def to_obj(self) -> list[object]:
        if self.scheme == SCHEME_IPN:
            return [SCHEME_IPN, list(cast(IpnSsp, self.ssp))]
        return [SCHEME_DTN, self.ssp]

    @staticmethod
    def from_obj(obj: object, field: str = "eid") -> EID:
        """The EID of a decoded CBOR value, or a :class:`BundleError` naming ``field``."""
        if not isinstance(obj, list) or len(obj) != 2 or not isinstance(obj[0], int):
            raise BundleError("an endpoint ID is a 2-item array [scheme, ssp]", field=field)
        scheme, ssp = obj
        if scheme == SCHEME_IPN:
            if (not isinstance(ssp, list) or len(ssp) != 2
                    or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                               for x in ssp)):
                raise BundleError("an ipn endpoint ID's SSP is [node, service] with unsigned "
                                  "integers", field=field)
            return EID(SCHEME_IPN, (ssp[0], ssp[1]))
        if scheme == SCHEME_DTN:
            if ssp == 0 and not isinstance(ssp, bool):
                return NONE
            if not isinstance(ssp, str):
                raise BundleError("a dtn endpoint ID's SSP is a text string or 0 (dtn:none)",
                                  field=field)
            try:
                _check_dtn_ssp(ssp)
            except BundleError as e:
                raise e.within(field=field) from None
            return EID(SCHEME_DTN, ssp)
        raise BundleError(f"unknown endpoint ID scheme {scheme} (1 = dtn, 2 = ipn)",
                          field=field)

    @staticmethod
    def decode(data: bytes, pos: int, field: str = "eid") -> tuple[EID, int]:
        """Decode an EID at ``pos`` of ``data``: (EID, next position)."""
        # Fast path for the common ipn form.
        if data[pos:pos + 3] == b"\x82\x02\x82":
            n = data[pos + 3] if pos + 3 < len(data) else 0xFF
            s = data[pos + 4] if pos + 4 < len(data) else 0xFF
            if n < 24 and s < 24:
                return EID(SCHEME_IPN, (n, s)), pos + 5
            try:
                node, p = cbor.expect_uint(data, pos + 3, field)
                svc, p = cbor.expect_uint(data, p, field)
            except BundleError as e:
                raise e.within(field=field) from None
            return EID(SCHEME_IPN, (node, svc)), p
        try:
            obj, p = cbor.decode_item(data, pos, 1)
        except BundleError as e:
            raise e.within(field=field) from None
        try:
            return EID.from_obj(obj, field), p
        except BundleError as e:
            raise BundleError(e.reason, offset=pos, field=field) from None


def _check_dtn_ssp(ssp: str) -> None:
    if not ssp.startswith("//"):
        raise BundleError(f"dtn:{ssp}: a dtn endpoint ID is dtn://node/demux or dtn:none",
                          field="eid")
    node, slash, _demux = ssp[2:].partition("/")
    if not node or not slash:
        raise BundleError(f"dtn:{ssp}: a dtn endpoint ID needs a node name and a '/' after "
                          "it (dtn://node/ or dtn://node/demux)", field="eid")
    if any(not (0x21 <= ord(c) <= 0x7E) for c in ssp):
        raise BundleError(f"dtn:{ssp!r}: only visible ASCII characters are allowed in a dtn "
                          "endpoint ID", field="eid")


NONE = EID(SCHEME_DTN, 0)
_CBOR: dict[EID, bytes] = {}
_PARSED: dict[str, EID] = {}
