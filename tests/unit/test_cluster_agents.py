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
                 "captures/s0_s3.pcap": b"pcap",
                 "../evil": b"x", "agents/../../evil2": b"x", "/abs": b"x",
                 "logs/other": b"x"})
    unpack_host_dir(data, run_dir, 1)
    assert (run_dir / "agents/s0/agent.jsonl").read_bytes() == b"{}\n"
    assert (run_dir / "agents/gsa/store.sqlite").read_bytes() == b"db"
    assert (run_dir / "captures/s0_s3.pcap").read_bytes() == b"pcap"
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


def test_a_hosts_agent_configs_are_a_local_runs(tmp_path: Path) -> None:
    """Its own nodes only; neighbours on the other host dialled at the shared layout's
    link addresses; the traffic flows; a certificate from the run's CA."""
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from netemu.emulator.layout import plan_layout
    from netemu.plan.contacts import Contact, ContactPlan, Node
    from netemu.run.cluster_agents import HostAgents

    names = ["s0", "s1", "s2"]
    contacts = [Contact(a, b, 0.0, 100.0, 1e8, 0.01, kind="isl")
                for x, y in zip(names, names[1:], strict=False) for a, b in ((x, y), (y, x))]
    plan = ContactPlan(datetime.now(timezone.utc),
                       {n: Node(n, i + 1, "satellite") for i, n in enumerate(names)}, contacts)
    lay = plan_layout(plan)
    ca = RunCA.create(tmp_path / "coordinator")
    cert, key = ca_pems(ca)
    settings = AgentSettings(routing={"algorithm": "cgr"}, broker={}, ca_pem=cert,
                             ca_key_pem=key, tls="required", window_start_s=0.0,
                             window_end_s=100.0, traffic_json='{"flows": []}')
    host = HostAgents(SimpleNamespace(layout=lay), plan, settings, tmp_path / "h1")
    configs = host.write_configs(["s2"])
    assert list(configs) == ["s2"]
    cfg = configs["s2"]
    s1_end = next(lay.endpoints[p.ep_a if p.a == "s1" else p.ep_b].addr for p in lay.periods
                  if {p.a, p.b} == {"s1", "s2"})
    assert [n.name for n in cfg.neighbours] == ["s1"]
    assert cfg.neighbours[0].links[0][2] == f"{s1_end}:4556"
    assert cfg.traffic == str(tmp_path / "h1/traffic.json")
    assert (tmp_path / "h1/traffic.json").read_text() == '{"flows": []}'
    assert cfg.tls == "required" and Path(cfg.tls_ca).read_text() == cert
    issued = x509.load_pem_x509_certificate(Path(cfg.tls_cert).read_bytes())
    issued.verify_directly_issued_by(ca.cert)
    assert (tmp_path / "h1/agents/s2/agent.json").exists()
    assert not (tmp_path / "h1/agents/s1").exists()
