"""Tombstones do not pile up: once a delivered / forwarded bundle's lifetime is over its
store row is swept (the agent does it every PURGE_EVERY_S and at start), while an
unexpired tombstone stays to catch duplicates. Two in-process agents on loopback."""

from __future__ import annotations

import asyncio

import pytest
from dtn_agent_harness import free_port, wait_for, write_pair

from netemu.agent import BpClient
from netemu.agent.agent import Agent
from netemu.agent.config import AgentConfig

pytestmark = pytest.mark.integration


def test_expired_tombstones_are_purged_and_live_ones_kept(tmp_path):
    cfgs = write_pair(tmp_path, port_a=free_port(), port_b=free_port())

    async def go():
        a = Agent(AgentConfig.load(cfgs["A"], node="A"))
        b = Agent(AgentConfig.load(cfgs["B"], node="B"))
        await b.start()
        await a.start()
        try:
            rx = await BpClient.connect(str(tmp_path / "B" / "bp.sock"), timeout_s=20)
            tx = await BpClient.connect(str(tmp_path / "A" / "bp.sock"), timeout_s=20)
            await rx.register("ipn:2.1")
            short = await tx.send("ipn:2.1", b"short", src="ipn:1.1", lifetime_s=1.0)
            long_ = await tx.send("ipn:2.1", b"long", src="ipn:1.1", lifetime_s=3600)
            got = {(await rx.recv(timeout_s=20)).id for _ in range(2)}
            assert got == {short, long_}

            def tombstones(agent: Agent) -> int:
                c = agent.core.store.counts()
                return c["forwarded"] + c["delivered"] + c["deleted"]
            await wait_for(lambda: tombstones(a) == 2 and tombstones(b) == 2, 20,
                           "both bundles forwarded by A and delivered on B")
            # After the short bundle's expiry: its tombstones go, the long one's stay.
            await asyncio.sleep(1.5)
            assert a.core.purge() == 1 and b.core.purge() == 1
            assert tombstones(a) == 1 and tombstones(b) == 1
            assert a.core.store.get(short) is None and a.core.store.get(long_) is not None
            st = await rx.status()
            assert st["store"]["tombstones_purged"] == 1
            # The surviving tombstone still stops a duplicate.
            assert long_ in b.core.bpa.known
            await tx.close()
            await rx.close()
        finally:
            for x in (a, b):
                await x.shutdown()

    asyncio.run(go())
