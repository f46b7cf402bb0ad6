"""TLS for TCPCLv4 sessions (RFC 9174 §4.4): the agent's SSL contexts, and the node IDs a
peer's certificate vouches for.

Both sides present a certificate and check the other's against the configured CA (the
run's CA in an emulation, :mod:`netemu.run.pki`). Who the peer *is* comes from its
certificate, not from DNS names: RFC 9174 §4.4.1 puts the node ID in a subjectAltName
``otherName`` of type ``id-on-bundleEID``; the URI form of its drafts is read too. The
session then accepts the peer only if the node ID of its SESS_INIT is one of those.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from cryptography import x509

from netemu.agent.config import AgentConfig
from netemu.errors import NetemuError

ID_ON_BUNDLE_EID = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.11")
HANDSHAKE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class TlsContexts:
    """The server-side (passive) and client-side (active) contexts of one node."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    required: bool

    @classmethod
    def of(cls, cfg: AgentConfig) -> TlsContexts | None:
        """The node's contexts, None when its config says ``tls: off``; an unreadable or
        mismatched file is a :class:`NetemuError` naming it."""
        if cfg.tls == "off":
            return None
        return cls(_context(cfg, ssl.Purpose.CLIENT_AUTH),
                   _context(cfg, ssl.Purpose.SERVER_AUTH), cfg.tls == "required")


def _context(cfg: AgentConfig, purpose: ssl.Purpose) -> ssl.SSLContext:
    # (not create_default_context: it loads the system's CA store, ~70 ms and ~0.8 MB per
    # context, and the run's CA is the only one that may vouch for a node)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH
                         else ssl.PROTOCOL_TLS_CLIENT)
    # RFC 9174 4.4: TLS 1.3 or later. The peer is named by node ID, not host name.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED  # both sides show a certificate
    try:
        ctx.load_verify_locations(cafile=cfg.tls_ca)
    except (OSError, ssl.SSLError) as e:
        raise NetemuError(f"agent {cfg.node}: tls_ca {cfg.tls_ca}: cannot load the CA "
                          f"certificate: {e} (config {cfg.source})") from None
    try:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise NetemuError(f"agent {cfg.node}: tls_cert {cfg.tls_cert} / tls_key {cfg.tls_key}:"
                          f" cannot load this node's certificate and key: {e} "
                          f"(config {cfg.source})") from None
    return ctx


def peer_node_ids(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> frozenset[str]:
    """The node IDs the peer's (already verified) certificate names."""
    if ssl_object is None:
        return frozenset()
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return frozenset()
    return cert_node_ids(x509.load_der_x509_certificate(der))


def cert_node_ids(cert: x509.Certificate) -> frozenset[str]:
    """``id-on-bundleEID`` otherNames and URI names of ``cert``'s subjectAltName."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    ids = set(san.get_values_for_type(x509.UniformResourceIdentifier))
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id == ID_ON_BUNDLE_EID:
            text = _ia5(other.value)
            if text is not None:
                ids.add(text)
    return frozenset(ids)


def ia5_der(text: str) -> bytes:
    """``text`` as a DER IA5String (the value of an ``id-on-bundleEID`` otherName)."""
    raw = text.encode("ascii")
    n = len(raw)
    if n < 0x80:
        head = bytes((0x16, n))
    else:
        size = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes((0x16, 0x80 | len(size))) + size
    return head + raw


def _ia5(der: bytes) -> str | None:
    """The text of a DER IA5String, None when ``der`` is not one."""
    if len(der) < 2 or der[0] != 0x16:
        return None
    n, p = der[1], 2
    if n & 0x80:
        k = n & 0x7F
        n, p = int.from_bytes(der[2 : 2 + k], "big"), 2 + k
    body = der[p : p + n]
    if len(body) != n or p + n != len(der):
        return None
    try:
        return body.decode("ascii")
    except UnicodeDecodeError:
        return None
