"""A certificate authority per run: every node's agent gets a certificate bound to its
node ID, so TCPCL sessions over TLS (RFC 9174 §4.4) prove who is at the other end.

The node ID goes in the subjectAltName as RFC 9174 §4.4.1 puts it, an ``otherName`` of
type ``id-on-bundleEID`` (an IA5String, ``ipn:N.0``), and as a URI as well (what the
protocol's drafts used, and what ``openssl x509 -text`` prints readably). Keys are EC
P-256: fast to make for a thousand nodes, and small. The CA's key stays in the run
directory; each node's key is readable by root only.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from netemu.agent.config import AgentConfig
from netemu.agent.tls import ID_ON_BUNDLE_EID, ia5_der

RUN_TLS_MODE = "required"
"""TLS in scenario runs: every agent of a run has a certificate from the run's CA, so
nothing legitimate is lost by requiring it, and only then does a session prove which
node is at the other end (``optional`` would let a peer that does not offer TLS in on
its word). docs/security.md."""


def run_tls_mode(captures_links: bool) -> str:
    """The agents' ``tls`` in a run: required, unless the scenario captures links, whose
    pcaps exist to show the bundles (decoded as BPv7 in the report and in Wireshark),
    which TLS would hide; then off, and the node-ID checks alone guard the sessions."""
    return "off" if captures_links else RUN_TLS_MODE
VALID_DAYS = 30  # a run's certificates outlive any run, and not by years
# RFC 9174 4.4.2.1: id-kp-bundleSecurity, for certificates that authenticate a node ID
ID_KP_BUNDLE_SECURITY = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.35")


@dataclass(frozen=True)
class NodeCredentials:
    """Where one node's TLS files are (what its agent config names)."""

    ca: Path
    cert: Path
    key: Path


class RunCA:
    """The run's CA: :meth:`create` once, :meth:`issue` per node."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate,
                 ca_path: Path) -> None:
        self.key = key
        self.cert = cert
        self.ca_path = ca_path

    @classmethod
    def create(cls, directory: Path, name: str = "netemu run") -> RunCA:
        """A new CA, its certificate written to ``directory/ca.pem`` and its key to
        ``directory/ca.key`` (mode 0600)."""
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        ca_path = directory / "ca.pem"
        ca_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(directory / "ca.key", key)
        return cls(key, cert, ca_path)

    def issue(self, node: str, node_id: str, directory: Path) -> NodeCredentials:
        """A certificate for ``node`` bound to ``node_id`` (``ipn:N.0``), written with its
        key to ``directory/tls.pem`` and ``directory/tls.key`` (mode 0600)."""
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
                .add_extension(x509.SubjectAlternativeName([
                    x509.OtherName(ID_ON_BUNDLE_EID, ia5_der(node_id)),
                    x509.UniformResourceIdentifier(node_id),
                ]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=True, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([
                    ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH,
                    ID_KP_BUNDLE_SECURITY]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()), critical=False)
                .sign(self.key, hashes.SHA256()))
        cert_path = directory / "tls.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path = directory / "tls.key"
        _write_private(key_path, key)
        return NodeCredentials(self.ca_path, cert_path, key_path)


def secure_run_agent(ca: RunCA, cfg: AgentConfig, directory: Path,
                     mode: str = RUN_TLS_MODE) -> AgentConfig:
    """Give the agent of ``cfg`` its certificate (files in ``directory``) and TLS settings."""
    creds = ca.issue(cfg.node, cfg.node_eid, directory)
    cfg.tls, cfg.tls_ca, cfg.tls_cert, cfg.tls_key = (mode, str(creds.ca), str(creds.cert),
                                                      str(creds.key))
    return cfg


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
