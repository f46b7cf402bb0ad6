"""A receiver whose store fills its filesystem: it refuses new bundles before the disk is
full, so its app's acknowledgements and its tombstones still commit; the sender backs off
instead of having every bundle refused every second; the node resumes by itself when space
returns; nothing is delivered twice, even after a restart. Real agents, real small
filesystems (tmpfs mounted for the test, unmounted even when it fails)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from dtn_agent_harness import AgentProc, free_port, wait_for, write_pair  # noqa: E402

from netemu.agent import BpClient  # noqa: E402
from netemu.agent.store import RESERVE_FILE_BYTES, BundleStore  # noqa: E402
from netemu.dtn.state import BundleState  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture
def store_full_fs(tmp_path):
    """A directory on a 16 MiB tmpfs of its own (a random mount point under tmp_path)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mnt = tmp_path / f"fs-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs",
                        str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _events(log: Path, name: str) -> list[dict]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            e = json.loads(line)
            if e.get("event") == name:
                out.append(e)
    return out


def _fill(path: Path, leave_bytes: int) -> None:
    """Write a ballast file until the filesystem has ``leave_bytes`` free."""
    st = os.statvfs(path.parent)
    size = max(0, st.f_bavail * st.f_frsize - leave_bytes)
    with open(path, "wb") as f:
        f.write(bytes(size))


def test_full_store_refuses_early_commits_acks_and_resumes_without_duplicates(
        tmp_path, store_full_fs):
    n, size = 600, 20_000  # 12 MB for a store with about 7 MB usable (16 MiB less 8 MiB)
    cfgs = write_pair(tmp_path, port_a=free_port(), port_b=free_port())
    cfg_b = json.loads(cfgs["B"].read_text())
    cfg_b["store"] = str(store_full_fs / "store.sqlite")
    cfgs["B"].write_text(json.dumps(cfg_b))
    a, b = AgentProc("A", cfgs["A"]), AgentProc("B", cfgs["B"])
    log_a, log_b = tmp_path / "A.log", tmp_path / "B.log"

    async def go() -> None:
        b.start()
        a.start()
        tx = await BpClient.connect(str(tmp_path / "A" / "bp.sock"), timeout_s=30)
        for i in range(0, n, 20):
            await tx.send_many([{"dst": "ipn:2.1", "src": "ipn:1.1",
                                 "payload": b"%06d" % j + bytes(size - 6)}
                                for j in range(i, min(i + 20, n))])
        # No app on B yet: its store fills, then it refuses, and A holds back.
        await wait_for(lambda: _events(log_a, "neighbour_full"), 60, "A to back off")
        await asyncio.sleep(1)  # the bundles in flight when B filled come back refused
        burst = len(_events(log_a, "transfer_refused"))
        await asyncio.sleep(4)
        refused_while_full = len(_events(log_a, "transfer_refused")) - burst
        rx = await BpClient.connect(str(tmp_path / "B" / "bp.sock"), timeout_s=30)
        assert (await rx.status())["store"]["full"]
        assert (await tx.status())["backed_off"]["B"]["held"] > 0
        await rx.register("ipn:2.1")
        got: list[bytes] = []
        while len(set(got)) < n:  # the acks free the store; A's bundles come on
            got.append((await rx.recv(timeout_s=60)).payload[:6])
        assert len(got) == n and rx.duplicates_dropped == 0, "a bundle came twice"
        assert sorted(got) == [b"%06d" % j for j in range(n)]
        await asyncio.sleep(1)  # the last acks reach B's store
        await rx.close()
        await tx.close()
        # Every acknowledgement was committed: a restarted B delivers nothing again.
        b.stop()
        b.start()
        rx = await BpClient.connect(str(tmp_path / "B" / "bp.sock"), timeout_s=30)
        await rx.register("ipn:2.1")
        with pytest.raises(asyncio.TimeoutError):
            again = await rx.recv(timeout_s=3)
            raise AssertionError(f"{again.payload[:6]!r} delivered again after a restart")
        await rx.close()
        # Back-pressure: a probe now and then while B was full (1, 2, 4 s apart), not
        # every held bundle every second (before: thousands of refusals in seconds).
        assert refused_while_full <= 4, refused_while_full

    try:
        asyncio.run(go())
    finally:
        a.stop()
        b.stop()
    assert _events(log_b, "store_full"), "B never reported its store full"
    assert not _events(log_b, "store_error"), _events(log_b, "store_error")[:3]
    assert not _events(log_b, "core_reloaded")


def test_space_taken_by_another_writer_then_returned(tmp_path, store_full_fs):
    """Something else fills the filesystem: B refuses, A backs off; the space comes back
    and the bundles arrive by themselves."""
    cfgs = write_pair(tmp_path, port_a=free_port(), port_b=free_port())
    cfg_b = json.loads(cfgs["B"].read_text())
    cfg_b["store"] = str(store_full_fs / "store.sqlite")
    cfg_b["store_reserve_bytes"] = 4 << 20
    cfgs["B"].write_text(json.dumps(cfg_b))
    a, b = AgentProc("A", cfgs["A"]), AgentProc("B", cfgs["B"])
    log_a, log_b = tmp_path / "A.log", tmp_path / "B.log"
    ballast = store_full_fs / "ballast"

    async def go() -> None:
        b.start()
        a.start()
        rx = await BpClient.connect(str(tmp_path / "B" / "bp.sock"), timeout_s=30)
        await rx.register("ipn:2.1")
        tx = await BpClient.connect(str(tmp_path / "A" / "bp.sock"), timeout_s=30)
        await wait_for(lambda: os.path.exists(cfg_b["store"] + ".reserve"), 30, "B's store")
        _fill(ballast, 2 << 20)  # less free than the reserve
        await tx.send_many([{"dst": "ipn:2.1", "src": "ipn:1.1", "payload": b"%06d" % j}
                            for j in range(50)])
        await wait_for(lambda: _events(log_a, "neighbour_full"), 60, "A to back off")
        assert "B" in (await tx.status())["backed_off"]
        ballast.unlink()
        got = {(await rx.recv(timeout_s=60)).payload for _ in range(50)}
        assert got == {b"%06d" % j for j in range(50)}
        assert rx.duplicates_dropped == 0
        await rx.close()
        await tx.close()

    try:
        asyncio.run(go())
    finally:
        a.stop()
        b.stop()
    assert _events(log_b, "store_full") and _events(log_b, "store_space")
    assert _events(log_a, "neighbour_resumed")
    assert not _events(log_b, "store_error")


def test_no_space_left_releases_the_reserve_so_drops_commit(store_full_fs):
    """The filesystem is filled to the last byte behind the store's back: a write fails,
    the store releases its reserve file, and the drops that free space commit."""
    path = store_full_fs / "s.db"
    st = BundleStore(path, durability="disk", reserve_bytes=4 << 20)
    try:
        rows = [(f"ipn:1.1-{i}-0", bytes(10_000), "ipn:2.1", 10**12, 0,
                 BundleState.PENDING, 0, None) for i in range(200)]
        st.add_many(rows)
        st.commit()
        assert 0 < st.room_bytes() < (16 - 4) << 20  # under 4 reserves free: armed
        assert os.path.getsize(str(path) + ".reserve") == RESERVE_FILE_BYTES
        _fill(store_full_fs / "ballast", 0)
        with pytest.raises(OSError) as e:
            st.add_many([(f"ipn:1.1-x{i}-0", bytes(30_000), "ipn:2.1", 10**12, 0,
                          BundleState.PENDING, 0, None) for i in range(200)])
            st.commit()
        assert e.value.errno == errno.ENOSPC
        assert st.reserve_released == 1 and not os.path.exists(str(path) + ".reserve")
        assert st.room_bytes() == 0
        st.drop_many([(r[0], BundleState.DELIVERED) for r in rows])
        st.commit()  # commits in the space the reserve gave back
        assert st.held_bundles == 0
    finally:
        st.close()
    again = BundleStore(path)
    try:
        assert again.held_bundles == 0 and again.counts()["delivered"] == 200
    finally:
        again.close()


def test_an_apps_ack_in_a_failed_batch_still_commits(tmp_path):
    """A batch fails for lack of space while it carries an app's acknowledgement: the
    bundle received in it is refused (its sender retries), but the acknowledgement is
    replayed on the rebuilt core and committed, so the bundle is not delivered again."""
    from datetime import datetime, timezone

    from netemu.agent.agent import Agent
    from netemu.agent.config import AgentConfig
    from netemu.dtn import bpa
    from netemu.dtn.bundle import Bundle, datetime_to_dtn_ms
    from netemu.dtn.eid import EID

    cfgs = write_pair(tmp_path, port_a=free_port(), port_b=free_port(), b_to_a="")
    cfg = AgentConfig.load(cfgs["B"], node="B")
    now_ms = datetime_to_dtn_ms(datetime.now(timezone.utc))

    def wire(seq: int) -> tuple[str, bytes]:
        b = Bundle.new("ipn:1.1", "ipn:2.1", b"p%d" % seq, lifetime_ms=3_600_000,
                       creation_ms=now_ms, seq=seq)
        b.set_previous_node(EID.ipn(1, 0))
        return b.id, b.encode()

    first, data1 = wire(1)
    second, data2 = wire(2)

    async def go(log) -> list[list[bool]]:
        agent = Agent(cfg, log_stream=log)
        await agent.start()
        core = agent.core
        real_add = core.store.add_many
        answers: list[list[bool]] = []

        def full_once(rows):
            core.store.add_many = real_add  # type: ignore[method-assign]
            raise OSError(errno.ENOSPC, "No space left on device")

        async def receive(data: bytes) -> None:
            done = asyncio.get_running_loop().create_future()
            core.receive_many([(data, "A")], done.set_result)
            answers.append(await asyncio.wait_for(done, 10))

        try:
            await receive(data1)  # stored, waiting for an app on ipn:2.1
            core.store.add_many = full_once  # type: ignore[method-assign]
            # The app's acknowledgement of the first and the second bundle: one batch.
            core._events.append((bpa.AppDelivered(first, core.now_ms()), None))
            await receive(data2)
            await wait_for(lambda: core.store.get(first).state.name == "DELIVERED", 10,
                           "the replayed acknowledgement to commit")
        finally:
            await agent.shutdown()
        return answers

    with open(str(cfgs["B"]) + ".log", "w") as log:
        answers = asyncio.run(go(log))
    assert answers == [[True], [False]]
    st = BundleStore(cfg.store)
    try:
        assert st.get(first).state == BundleState.DELIVERED
        assert not st.contains(second) and st.held_bundles == 0
    finally:
        st.close()
