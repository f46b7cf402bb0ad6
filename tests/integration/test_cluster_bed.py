"""The multi-host test bed (cluster_bed.Bed): three "hosts", each a namespace on a bridge
running a Ray node, form one Ray cluster; a task placed on each host runs in that host's
namespace; and nothing is left afterwards, also when the test body fails."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from cluster_bed import Bed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

if shutil.which("ip") is None:
    pytest.skip("needs iproute2", allow_module_level=True)
pytest.importorskip("ray")

# Where each node's task runs: the underlay address of the namespace it finds itself in.
PROBE = """
import json, ray, subprocess
ray.init(address="auto", logging_level="ERROR")
@ray.remote(num_cpus=1)
def where():
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "eth0"],
                         capture_output=True, text=True).stdout
    return out.split()[3].split("/")[0]
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On
nodes = {n["NodeManagerAddress"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}
print(json.dumps({a: ray.get(where.options(scheduling_strategy=On(i, soft=False)).remote())
                  for a, i in nodes.items()}))
"""


def test_three_hosts_form_one_cluster_and_leave_nothing() -> None:
    with Bed(3) as bed:
        p = bed.run([sys.executable, "-c", PROBE], timeout=120)
        assert p.returncode == 0, p.stderr[-2000:]
        placed = json.loads(p.stdout.strip().splitlines()[-1])
        addrs = [h.addr for h in bed.hosts]
        # each node is one host, and its tasks run in that host's namespace
        assert placed == {a: a for a in addrs}
    assert bed.leftovers() == []


def test_nothing_left_when_the_test_body_fails() -> None:
    with pytest.raises(RuntimeError, match="test body failed"), Bed(2) as bed:
        assert bed.pids()  # the Ray nodes are running
        raise RuntimeError("test body failed")
    assert bed.leftovers() == []
