"""Suite-wide guards.

Integration tests build real namespaces and need root; elsewhere they are skipped with
the reason. After the whole run, any network namespace or veth that the run left behind
fails the session: a leak in a test is a leak users would hit too. Namespaces of an
emulation that another, live process owns (a demo running beside the tests on a developer
machine) are not this session's and are left out.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import settings

# tests/vm runs inside the VM that `scripts/dev test-vm` boots (run by `scripts/dev test`),
# not in the host's pytest
collect_ignore = [] if os.environ.get("NETEMU_IN_VM") == "1" else ["vm"]

# In CI the property-based tests draw the same examples on every run (a failure found by
# exploring locally becomes a test case; CI does not turn red on a new random draw).
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _veths() -> set[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True
    ).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


def _foreign_live_namespaces() -> set[str]:
    """Namespaces of emulation runs owned by a live process outside this session."""
    from netemu.emulator.registry import list_runs, run_namespaces

    out: set[str] = set()
    for info in list_runs():
        pid = info.meta.get("pid")
        if info.owner_alive and pid and not _descends_from(int(pid), os.getpid()):
            out.update(run_namespaces(info.run))
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration test: needs root to build network namespaces")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._netemu_before = (_netns(), _veths())  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before_ns, before_veth = session.config._netemu_before  # type: ignore[attr-defined]
    leaked_ns = sorted(_netns() - before_ns - _foreign_live_namespaces())
    leaked_veth = sorted(_veths() - before_veth)
    if leaked_ns or leaked_veth:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = f"tests leaked namespaces {leaked_ns[:10]} and veths {leaked_veth[:10]}"
        if reporter:
            reporter.write_line(f"ERROR: {msg}", red=True)
        session.exitstatus = 1
