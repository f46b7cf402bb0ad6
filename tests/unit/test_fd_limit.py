"""Open-file limits for constellation-sized runs: node hosts are sized so that each one's
nodes fit the limit a process may hold (netemu.runtime.fdlimit, the runner)."""

from __future__ import annotations

import resource

import pytest

from netemu.agent.nodehost import FDS_PER_NODE, FDS_RESERVE
from netemu.run import runner
from netemu.runtime.fdlimit import raise_fd_limit


def test_raising_the_limit_reports_the_limit_in_force():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert raise_fd_limit(soft) == soft  # already enough: unchanged
    try:
        got = raise_fd_limit(soft + 4096)
        assert got == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert got == soft + 4096 or got == hard  # as far as allowed, and says so
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(
            resource.RLIMIT_NOFILE)[1]))


@pytest.mark.parametrize("limit, agents, asked, hosts", [
    (20_000, 2_809, 2, 3),  # star-compute-2800 in a container with a fixed hard limit
    (20_000, 1_594, 2, 2),  # shell 1 fits two
    (1_048_576, 2_809, 2, 2),  # where the limit can be raised, one per CPU as asked
    (4_096, 1_000, 1, 7),
])
def test_node_hosts_are_added_until_each_ones_nodes_fit_the_open_file_limit(
        monkeypatch, limit, agents, asked, hosts):
    monkeypatch.setattr(runner, "raise_fd_limit", lambda want: min(want, limit))
    got, fd_limit = runner.hosts_within_fd_limit(agents, asked)
    assert got == hosts and fd_limit <= limit
    # every group the runner then makes (planes of 60 kept together) fits the limit
    nodes = [f"inf-{i // 60}-{i % 60}" for i in range(agents)]
    groups = runner.split_nodes(nodes, got, lambda n: n.split("-")[1])
    assert max(len(g) for g in groups) * FDS_PER_NODE + FDS_RESERVE <= limit
