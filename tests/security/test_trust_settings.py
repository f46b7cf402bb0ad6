"""The run's certificates and the agent settings that decide whom it trusts and how much
a peer can make it hold."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest
from cryptography import x509

from netemu.agent.config import AgentConfig
from netemu.agent.tls import ID_ON_BUNDLE_EID, TlsContexts, _ia5, cert_node_ids, ia5_der
from netemu.errors import InputError, NetemuError
from netemu.run.pki import RunCA, run_tls_mode, secure_run_agent


def test_a_node_certificate_names_its_node_id_as_rfc_9174_says(tmp_path):
    ca = RunCA.create(tmp_path / "pki")
    creds = ca.issue("sat7", "ipn:7.0", tmp_path / "sat7")
    cert = x509.load_pem_x509_certificate(creds.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    other = san.get_values_for_type(x509.OtherName)
    assert [o.type_id for o in other] == [ID_ON_BUNDLE_EID]
    assert other[0].value == b"\x16\x07ipn:7.0"  # IA5String, as RFC 9174 appendix C
    assert cert_node_ids(cert) == {"ipn:7.0"}
    assert cert.issuer == ca.cert.subject
    assert stat.S_IMODE(os.stat(creds.key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "pki" / "ca.key").st_mode) == 0o600


def test_long_node_ids_encode_in_der_long_form():
    text = "dtn://" + "n" * 200 + "/"
    der = ia5_der(text)
    assert der[:3] == bytes((0x16, 0x81, len(text)))
    assert _ia5(der) == text and _ia5(der[:-1]) is None and _ia5(b"\x0c\x01a") is None


def test_run_agents_require_tls_with_their_own_certificate(tmp_path):
    ca = RunCA.create(tmp_path / "pki")
    cfg = secure_run_agent(ca, AgentConfig(node="gs1", ipn=10, app_socket=str(tmp_path / "s")),
                           tmp_path / "gs1")
    assert cfg.tls == "required"
    back = AgentConfig.from_obj(cfg.to_obj())  # what the runner writes, read back
    assert (back.tls, back.tls_cert, back.tls_key) == ("required", cfg.tls_cert, cfg.tls_key)
    ctx = TlsContexts.of(back)
    assert ctx is not None and ctx.required


def _base(**extra):
    return {"node": "A", "ipn": 1, "app_socket": "/tmp/x/bp.sock", **extra}


def test_defaults_bound_what_a_peer_can_make_the_agent_hold():
    cfg = AgentConfig.from_obj(_base())
    assert cfg.transfer_mru == 16 * 1024 * 1024
    assert cfg.rx_in_progress_max_bytes == 4 * cfg.transfer_mru
    assert cfg.tls == "off" and cfg.accept_unknown_peers is False
    assert cfg.transfer_stall_s == 30.0


@pytest.mark.parametrize("extra, words", [
    ({"tls": "required"}, "tls: required needs tls_ca, tls_cert, tls_key"),
    ({"tls": "optional", "tls_ca": "ca.pem"}, "needs tls_cert, tls_key"),
    ({"tls": "mandatory"}, "'mandatory' is not allowed"),
    ({"accept_unknown_peers": "yes"}, "expected true or false"),
    ({"rx_in_progress_max_bytes": 1}, "must be ≥ 64"),
    ({"transfer_stall_s": 0}, "transfer_stall_s"),
])
def test_bad_trust_settings_name_the_field(extra, words):
    with pytest.raises(InputError, match=words):
        AgentConfig.from_obj(_base(**extra))


def test_yaml_bare_off_means_tls_off(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("node: A\nipn: 1\napp_socket: /tmp/x/bp.sock\ntls: off\n")
    assert AgentConfig.load(p).tls == "off"


def test_missing_certificate_files_are_an_error_naming_them(tmp_path):
    cfg = AgentConfig.from_obj(_base(tls="required", tls_ca=str(tmp_path / "ca.pem"),
                                     tls_cert=str(tmp_path / "n.pem"),
                                     tls_key=str(tmp_path / "n.key")))
    with pytest.raises(NetemuError, match="tls_ca .*ca.pem"):
        TlsContexts.of(cfg)


def test_runs_require_tls_unless_they_capture_links():
    assert run_tls_mode(captures_links=False) == "required"
    assert run_tls_mode(captures_links=True) == "off"  # the pcaps must show the bundles


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_certificate_profile_agrees_with_openssl(tmp_path):
    """The node-ID name is the one other stacks write and read: openssl prints ours as
    the id-on-bundleEID otherName, and a certificate made the way HDTN's documentation
    says (``otherName:1.3.6.1.5.5.7.8.11;IA5:ipn:10.0``) names ipn:10.0 to us."""
    ca = RunCA.create(tmp_path / "pki")
    creds = ca.issue("gs", "ipn:10.0", tmp_path / "gs")
    text = subprocess.run(["openssl", "x509", "-in", str(creds.cert), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "1.3.6.1.5.5.7.8.11" in text and "ipn:10.0" in text
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem"),
         "-days", "1", "-subj", "/CN=hdtn-style",
         "-addext", "subjectAltName = otherName:1.3.6.1.5.5.7.8.11;IA5:ipn:10.0"],
        capture_output=True, check=True)
    cert = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    assert cert_node_ids(cert) == {"ipn:10.0"}
