"""The node host's pure parts (HOST.json, errors naming the node) and, in this process on
loopback, several nodes in one loop: they share one plan and one contact graph, deliver
bundles between them, and one node's crash leaves the others running."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from netemu.agent import BpClient
from netemu.agent.agent import PlanIndex
from netemu.agent.nodehost import HostConfig, NodeHost, main
from netemu.errors import InputError, NetemuError
from netemu.routing.cgr import ContactGraph


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


# --- HOST.json ------------------------------------------------------------------------


def test_host_config_reads_nodes_relative_to_the_file(tmp_path):
    host = _write(tmp_path / "host.json", json.dumps({"nodes": [
        {"config": "a.json", "netns": "/run/netns/a"},
        {"config": str(tmp_path / "b.json"), "netns": None},
        {"config": "c.yaml"}]}))
    cfg = HostConfig.load(host)
    assert [n.config for n in cfg.nodes] == [str(tmp_path / "a.json"),
                                             str(tmp_path / "b.json"),
                                             str(tmp_path / "c.yaml")]
    assert [n.netns for n in cfg.nodes] == ["/run/netns/a", None, None]
    assert "nodes[0]" in cfg.nodes[0].where and "host.json" in cfg.nodes[0].where


@pytest.mark.parametrize(("doc", "expect"), [
    ('{"nodez": []}', "unknown key 'nodez'; did you mean 'nodes'?"),
    ("{}", "missing required key 'nodes'"),
    ('{"nodes": []}', "nodes"),
    ('{"nodes": ["a.json"]}', "nodes[0]: expected {config: FILE"),
    ('{"nodes": [{"netns": null}]}', "nodes[0].config: missing required key 'config'"),
    ('{"nodes": [{"config": 3}]}', "nodes[0].config: expected text"),
    ('{"nodes": [{"config": "a.json", "ns": "x"}]}', "nodes[0].ns: unknown key 'ns'; expected one of: config, netns"),
    ('{"nodes": [{"config": "a.json", "netns": 4}]}', "nodes[0].netns: expected text"),
    ('{"nodes": [{"config": "a.json"}, {"config": "a.json"}]}',
     "nodes[1].config: config listed twice"),
    ("[1, 2]", "expected a mapping"),
])
def test_host_config_errors_name_the_file_and_field(tmp_path, doc, expect):
    host = _write(tmp_path / "host.json", doc)
    with pytest.raises(InputError) as e:
        HostConfig.load(host)
    assert expect in str(e.value)
    assert str(host) in str(e.value)


def test_host_config_file_missing_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        HostConfig.load(tmp_path / "nope.json")


# --- nodes in one loop (loopback, this process) ------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chain(tmp: Path, names: list[str]) -> Path:
    """Agent configs for a chain of nodes on loopback (plan: each link up for a day) and
    the HOST.json that serves them all."""
    epoch = datetime.now(timezone.utc) - timedelta(seconds=30)
    ports = {n: _free_port() for n in names}
    contacts = []
    for a, b in zip(names, names[1:], strict=False):
        for s, d in ((a, b), (b, a)):
            contacts.append({"from": s, "to": d, "start_s": 0, "end_s": 86400,
                             "rate_bps": 1e9, "owlt_s": 0.001})
    (tmp / "plan.json").write_text(json.dumps({
        "epoch": epoch.isoformat().replace("+00:00", "Z"),
        "nodes": {n: i + 1 for i, n in enumerate(names)}, "contacts": contacts}))
    entries = []
    for i, n in enumerate(names):
        peers = [names[j] for j in (i - 1, i + 1) if 0 <= j < len(names)]
        cfg = {"node": n, "ipn": i + 1,
               "listen": {"tcpcl": [f"127.0.0.1:{ports[n]}"], "udpcl": []},
               "app_socket": str(tmp / n / "bp.sock"), "store": str(tmp / n / "store.sqlite"),
               "contact_plan": "plan.json", "durability": "process",
               "neighbours": [{"name": p, "ipn": names.index(p) + 1,
                               "address": f"127.0.0.1:{ports[p]}"} for p in peers],
               "log": str(tmp / f"{n}.log")}
        (tmp / f"{n}.json").write_text(json.dumps(cfg))
        entries.append({"config": f"{n}.json", "netns": None})
    return _write(tmp / "host.json", json.dumps({"nodes": entries}))


def test_nodes_share_the_plan_deliver_and_survive_a_neighbours_crash(tmp_path):
    host_file = _chain(tmp_path, ["A", "B", "C"])

    async def go():
        host = NodeHost(HostConfig.load(host_file))
        run = asyncio.ensure_future(host.run())
        try:
            tx = await BpClient.connect(str(tmp_path / "A" / "bp.sock"), timeout_s=20)
            rx = await BpClient.connect(str(tmp_path / "C" / "bp.sock"), timeout_s=20)
            a, b, c = host.agents
            # one plan object, one contact graph, one plan index for every node
            assert a.plan is b.plan is c.plan and len(host.plans.plans) == 1
            assert (a.core.router.graph is b.core.router.graph is c.core.router.graph
                    is ContactGraph.for_plan(a.plan))
            assert a._plan_names is PlanIndex.for_plan(a.plan).names
            await rx.register("ipn:3.1")
            await tx.send_many([{"dst": "ipn:3.1", "payload": b"x%d" % i} for i in range(20)])
            got = sorted([(await rx.recv(timeout_s=20)).payload for _ in range(20)])
            assert got == sorted(b"x%d" % i for i in range(20))

            # B crashes in a task and in a callback: logged as B's, A and C go on
            async def boom():
                raise RuntimeError("node B task bug")

            b._spawn(boom())
            asyncio.get_running_loop().call_soon(b._end_check, "not a time")
            await asyncio.sleep(0.2)
            b_log = (tmp_path / "B.log").read_text()
            assert "node B task bug" in b_log and '"node_error"' in b_log
            await tx.send_many([{"dst": "ipn:3.1", "payload": b"after"}])
            assert (await rx.recv(timeout_s=20)).payload == b"after"
            await tx.close()
            await rx.close()
        finally:
            host.stop()
            await asyncio.wait_for(run, 20)
        for n in ("A", "B", "C"):
            log = (tmp_path / f"{n}.log").read_text()
            assert '"agent_stopped"' in log
            assert not (tmp_path / n / "bp.sock").exists()

    asyncio.run(asyncio.wait_for(go(), 60))


def test_bad_node_config_fails_the_start_naming_node_and_file(tmp_path, capsys):
    host_file = _chain(tmp_path, ["A", "B"])
    bad = json.loads((tmp_path / "B.json").read_text())
    bad["keepalive_s"] = "soon"
    (tmp_path / "B.json").write_text(json.dumps(bad))
    with pytest.raises(NetemuError) as e:
        asyncio.run(NodeHost(HostConfig.load(host_file)).run())
    msg = str(e.value)
    assert "nodes[1]" in msg and str(tmp_path / "B.json") in msg and "keepalive_s" in msg
    # the command says so and exits 2; node A (built first) is closed again
    assert main(["--config", str(host_file)]) == 2
    assert "B.json" in capsys.readouterr().err


def test_node_that_cannot_listen_fails_the_start(tmp_path):
    host_file = _chain(tmp_path, ["A", "B"])
    cfg = json.loads((tmp_path / "B.json").read_text())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg["listen"]["tcpcl"] = [f"127.0.0.1:{taken.getsockname()[1]}"]
        (tmp_path / "B.json").write_text(json.dumps(cfg))
        with pytest.raises(NetemuError, match=r"nodes\[1\].*B\.json.*cannot start"):
            asyncio.run(NodeHost(HostConfig.load(host_file)).run())
    assert '"agent_stopped"' in (tmp_path / "A.log").read_text()


def test_missing_namespace_fails_the_start(tmp_path):
    host_file = _chain(tmp_path, ["A"])
    doc = json.loads(host_file.read_text())
    doc["nodes"][0]["netns"] = str(tmp_path / "no-such-ns")
    host_file.write_text(json.dumps(doc))
    with pytest.raises(NetemuError, match="cannot open network namespace"):
        asyncio.run(NodeHost(HostConfig.load(host_file)).run())


# --- telemetry: one thread and connection for every node --------------------------------


class _FakeClient:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def is_connected(self) -> bool:
        return True

    def publish(self, topic: str, text: str, qos: int):
        self.sent.append((topic, json.loads(text)))
        return type("Info", (), {"rc": 0})()


def test_publisher_hub_sends_each_nodes_events_on_its_own_topic(tmp_path):
    from netemu.agent.telemetry import PublisherHub
    from netemu.runtime.telemetry import BrokerAccess

    access = BrokerAccess(str(tmp_path / "no-broker.sock"), "u", "p", "run1")
    hub = PublisherHub(access, queue_max=3)
    a, b = hub.publisher(access, "A"), hub.publisher(access, "B")
    a.emit({"event": "received", "n": 1})
    b.emit({"event": "forwarded", "n": 2})
    a.emit({"event": "delivered", "n": 3})
    b.emit({"event": "dropped when full"})
    client = _FakeClient()
    hub._drain(client)
    assert client.sent == [("netemu/run1/bundle/A", {"event": "received", "n": 1}),
                           ("netemu/run1/bundle/B", {"event": "forwarded", "n": 2}),
                           ("netemu/run1/bundle/A", {"event": "delivered", "n": 3})]
    assert (a.status()["published"], b.status()["published"]) == (2, 1)
    assert (a.status()["dropped"], b.status()["dropped"]) == (0, 1)
    # one thread for both; it stops with the last node (no broker here: it retries)
    a.start()
    b.start()
    assert hub._thread is not None and hub._thread.is_alive()
    a.stop(drain_s=0.1)
    assert hub._thread.is_alive()
    b.stop(drain_s=0.1)
    assert not hub._thread.is_alive()


def test_one_contact_graph_and_index_per_live_plan(tmp_path):
    import gc
    import weakref

    from netemu.agent import agent as agent_mod
    from netemu.agent.nodehost import PlanCache
    from netemu.routing import cgr

    _chain(tmp_path, ["A", "B"])
    plans = PlanCache()
    p1 = plans.load(str(tmp_path / "plan.json"))
    assert plans.load(str(tmp_path / "." / "plan.json")) is p1  # one per file
    g1 = ContactGraph.for_plan(p1)
    assert ContactGraph.for_plan(p1) is g1 and PlanIndex.for_plan(p1) is PlanIndex.for_plan(p1)
    p2 = PlanCache().load(str(tmp_path / "plan.json"))
    assert ContactGraph.for_plan(p2) is not g1
    gc.collect()  # plans other tests left for the collector go first
    held = (len(cgr._GRAPHS), len(agent_mod._PLAN_INDEXES))
    plan_ref = weakref.ref(p1)
    del p1, plans, g1
    gc.collect()
    assert plan_ref() is None  # the caches do not keep a plan alive
    assert (len(cgr._GRAPHS), len(agent_mod._PLAN_INDEXES)) == (held[0] - 1, held[1] - 1)
