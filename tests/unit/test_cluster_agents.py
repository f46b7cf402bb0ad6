"""What crosses Ray for a cluster run's agents: the settings every host is told, the CA
each host issues its nodes' certificates from, and the packed agent files that come back
into the coordinator's run directory."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from cryptography import x509

from netemu.run.cluster_agents import AgentSettings, ca_pems, load_ca, unpack_host_dir
from netemu.run.pki import RunCA


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_hosts_files_land_as_a_local_runs_and_nothing_outside(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    data = _tar({"agents/s0/agent.jsonl": b"{}\n", "agents/gsa/store.sqlite": b"db",
                 "hosts/host-0.json": b"{}", "hosts/host-0.out": b"ok",
                 "../evil": b"x", "agents/../../evil2": b"x", "/abs": b"x",
                 "logs/other": b"x"})
    unpack_host_dir(data, run_dir, 1)
    assert (run_dir / "agents/s0/agent.jsonl").read_bytes() == b"{}\n"
    assert (run_dir / "agents/gsa/store.sqlite").read_bytes() == b"db"
    assert (run_dir / "hosts/h1/host-0.json").exists()  # per host: host-0 is on each
    assert not (run_dir / "hosts/host-0.json").exists()
    assert not (tmp_path / "evil").exists() and not (tmp_path / "evil2").exists()
    assert not (run_dir / "logs").exists()


def test_the_nodes_unpacked_are_named(tmp_path: Path) -> None:
    src = tmp_path / "host"
    for node in ("s0", "gsa"):
        (src / "agents" / node).mkdir(parents=True)
        (src / "agents" / node / "agent.jsonl").write_text("{}\n")
    (src / "agents" / "pki").mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "agents", arcname="agents")
    assert unpack_host_dir(buf.getvalue(), tmp_path / "run", 0) == ["gsa", "s0"]


def test_every_host_issues_certificates_from_the_runs_one_ca(tmp_path: Path) -> None:
    ca = RunCA.create(tmp_path / "coordinator")
    cert, key = ca_pems(ca)
    settings = AgentSettings(routing={"algorithm": "cgr"}, broker={}, ca_pem=cert,
                             ca_key_pem=key, tls="required", window_start_s=0.0,
                             window_end_s=10.0)
    back = AgentSettings.from_obj(settings.to_obj())
    host_ca = load_ca(back.ca_pem, back.ca_key_pem, tmp_path / "host")
    creds = host_ca.issue("s1", "ipn:2.0", tmp_path / "host" / "s1")
    issued = x509.load_pem_x509_certificate(creds.cert.read_bytes())
    issued.verify_directly_issued_by(ca.cert)  # raises if another CA signed it
    assert creds.ca.read_text() == cert
