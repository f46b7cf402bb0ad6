"""Node crashes in a run: the node's agent process is killed with SIGKILL at the fault's
start (its whole process group: the agent runs under ``ip netns exec``) and a new one is
started at its end; both are published as ``fault/<name>``."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from netemu.plan.faults import Fault
from netemu.run.runner import AgentProc, NodeCrashes


def _proc(tmp_path: Path, node: str) -> AgentProc:
    # a parent that waits on a child, like `ip netns exec ... python -m netemu agent`
    p = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run("
                          "[sys.executable, '-c', 'import time; time.sleep(60)'])"],
                         start_new_session=True)
    return AgentProc(f"the bundle agent of {node}", p, tmp_path / f"{node}.out", (node,))


def test_crash_kills_the_agent_group_and_restart_starts_a_new_one(tmp_path):
    published: list[tuple[str, dict]] = []

    class Pub:
        def publish(self, topic: str, payload: dict) -> None:
            published.append((topic, payload))

    crash = Fault("sat2-crash", "node_crash", ("sat-2",), 400.0, 440.0)
    agents = [_proc(tmp_path, "sat-1"), _proc(tmp_path, "sat-2")]
    old = agents[1].proc
    spawned: list[str] = []

    def spawn(node: str) -> AgentProc:
        spawned.append(node)
        return _proc(tmp_path, node)

    crashes = NodeCrashes([crash], agents, spawn, Pub(), echo=lambda s: None)
    try:
        assert crashes.next_s() == 400.0
        assert crashes.apply(399.9) == [] and old.poll() is None
        assert crashes.apply(400.0) == []
        assert old.returncode == -signal.SIGKILL and crashes.down == {1}
        # the whole group went: no process of that session is left
        left = subprocess.run(["pgrep", "-s", str(old.pid)], capture_output=True, text=True)
        assert left.stdout.strip() == ""
        assert agents[0].proc.poll() is None  # the other node's agent is untouched
        assert crashes.next_s() == 440.0
        assert crashes.apply(450.0) == [1] and spawned == ["sat-2"]
        assert agents[1].proc is not old and agents[1].proc.poll() is None
        assert crashes.down == set() and crashes.next_s() is None
        assert [(t, p["event"], p["t_s"], p["kind"]) for t, p in published] == [
            ("fault/sat2-crash", "started", 400.0, "node_crash"),
            ("fault/sat2-crash", "ended", 450.0, "node_crash")]
        assert published[0][1]["pid"] == old.pid != published[1][1]["pid"]
    finally:
        for a in agents:
            a.proc.kill()
            a.proc.wait()
            subprocess.run(["pkill", "-9", "-s", str(a.proc.pid)], check=False)
