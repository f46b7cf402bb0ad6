"""The pipelined group commit (``durability: disk``): the store's commit runs in a thread,
and nothing is answered before it returns; what arrives meanwhile is the next batch.

One agent in this process (its neighbour never dialled), a real store, an app client on
its socket. The store's commit is held on a gate, so the test sees the window in which
an agent that acknowledged early would lose a bundle to a power cut."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from dtn_agent_harness import free_port, write_pair

from netemu.agent import BpClient
from netemu.agent.agent import Agent
from netemu.agent.config import AgentConfig
from netemu.agent.store import BundleStore
from netemu.dtn.bundle import Bundle, datetime_to_dtn_ms
from netemu.dtn.eid import EID


def test_sends_answered_only_after_the_commit_thread_returns(tmp_path):
    cfgs = write_pair(tmp_path, port_a=free_port(), port_b=free_port(), a_to_b="")
    cfg = AgentConfig.load(cfgs["A"], node="A")
    assert cfg.durability == "disk"  # the agent's default: the pipelined commit

    async def go(log) -> tuple[list[str], list[str]]:
        agent = Agent(cfg, log_stream=log)
        await agent.start()
        store = agent.core.store
        gate, entered = threading.Event(), threading.Event()
        real_commit = store.commit

        def held_commit() -> None:
            if threading.current_thread() is threading.main_thread():
                return real_commit()  # (the start-up tombstone sweep commits in the loop)
            entered.set()
            assert gate.wait(20), "test gate never opened"
            real_commit()

        bp = await BpClient.connect(cfg.app_socket, timeout_s=10)
        try:
            store.commit = held_commit  # type: ignore[method-assign]
            first = asyncio.ensure_future(bp.send("ipn:2.1", b"one"))
            assert await asyncio.to_thread(entered.wait, 10)
            # The loop is free while the commit runs: a second send gets in, and waits.
            second = asyncio.ensure_future(bp.send("ipn:2.1", b"two"))
            await asyncio.sleep(0.3)
            assert not first.done() and not second.done()
            assert agent.core._committing
            entered.clear()
            gate.set()  # the first commit returns; the second batch commits after it
            ids = [await asyncio.wait_for(first, 10), await asyncio.wait_for(second, 10)]
            store.commit = real_commit  # type: ignore[method-assign]
            status = await bp.status()
        finally:
            gate.set()
            await bp.close()
            await agent.shutdown()
        return ids, [status["store"]["held_bundles"]]

    with open(str(cfgs["A"]) + ".log", "w") as log:
        ids, held = asyncio.run(go(log))
    assert len(set(ids)) == 2 and held == [2]
    # Both are on disk, as the answers promised: a new process finds them.
    st = BundleStore(cfg.store)
    try:
        assert all(st.contains(i) for i in ids)
        assert st.held_bundles == 2
    finally:
        st.close()


def test_bundle_refused_on_a_store_error_is_stored_when_sent_again(tmp_path):
    """A write that fails (disk full) refuses the batch and the store rolls back; the core
    must not remember those bundles: the sender's retry of the same bundle is stored and
    acknowledged, not taken for a duplicate (which would acknowledge a bundle no one
    keeps)."""
    import errno
    from datetime import datetime, timezone


    cfgs = write_pair(tmp_path, port_a=free_port(), port_b=free_port(), b_to_a="")
    cfg = AgentConfig.load(cfgs["B"], node="B")
    wire = Bundle.new("ipn:1.1", "ipn:2.1", b"precious", lifetime_ms=3_600_000,
                      creation_ms=datetime_to_dtn_ms(datetime.now(timezone.utc)), seq=7)
    wire.set_previous_node(EID.ipn(1, 0))
    data = wire.encode()

    async def go(log) -> list[list[bool]]:
        agent = Agent(cfg, log_stream=log)
        await agent.start()
        core = agent.core
        real_add = core.store.add_many
        answers: list[list[bool]] = []

        def full_disk(rows):
            raise OSError(errno.ENOSPC, "No space left on device")

        async def receive() -> None:
            done = asyncio.get_running_loop().create_future()
            core.receive_many([(data, "A")], done.set_result)
            answers.append(await asyncio.wait_for(done, 10))

        try:
            core.store.add_many = full_disk  # type: ignore[method-assign]
            await receive()  # refused: the CL would not acknowledge it
            core.store.add_many = real_add  # type: ignore[method-assign]
            await receive()  # the sender's retry
        finally:
            await agent.shutdown()
        return answers

    with open(str(cfgs["B"]) + ".log", "w") as log:
        answers = asyncio.run(go(log))
    assert answers == [[False], [True]]
    st = BundleStore(cfg.store)
    try:
        assert st.contains(wire.id)  # acknowledged, so kept
        assert st.held_bundles == 1
    finally:
        st.close()
    log_text = Path(str(cfgs["B"]) + ".log").read_text()
    assert "core_reloaded" in log_text, "the core was not rebuilt from the store"
