"""Suite-wide guards.

Integration tests build real namespaces and need root; elsewhere they are skipped with
the reason. After the whole run, any network namespace or veth that the run left behind
fails the session: a leak in a test is a leak users would hit too.
"""

from __future__ import annotations

import os
import subprocess

import pytest


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _veths() -> set[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True
    ).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


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
    leaked_ns = sorted(_netns() - before_ns)
    leaked_veth = sorted(_veths() - before_veth)
    if leaked_ns or leaked_veth:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = f"tests leaked namespaces {leaked_ns[:10]} and veths {leaked_veth[:10]}"
        if reporter:
            reporter.write_line(f"ERROR: {msg}", red=True)
        session.exitstatus = 1
