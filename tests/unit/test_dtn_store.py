"""The bundle store: survives kill -9 of its writer, dedupes, refuses when full,
finds expired bundles, keeps states across reopening."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from netemu.agent.store import ADDED, DUPLICATE, FULL, BundleStore, StoreError
from netemu.dtn.bundle import Bundle, decode_bundle
from netemu.dtn.state import BundleState

WRITER = textwrap.dedent("""
    import sys
    from netemu.dtn.bundle import Bundle
    from netemu.agent.store import BundleStore
    store = BundleStore(sys.argv[1], durability=sys.argv[2])
    i = 0
    while True:                       # until SIGKILL
        batch = []
        for _ in range(25):
            b = Bundle.new("ipn:1.1", "ipn:2.1", b"payload %d " % i * int(sys.argv[3]),
                           lifetime_ms=10**9, creation_ms=1000 + i, seq=i)
            store.add(b.id, b.encode(), destination="ipn:2.1", expiry_ms=10**12,
                      received_ms=i)
            batch.append(b.id)
            i += 1
        store.commit()                # durable: only now acknowledge the batch
        sys.stdout.write("".join(x + "\\n" for x in batch))
        sys.stdout.flush()
""")


@pytest.mark.parametrize("durability,repeat", [("disk", 40), ("process", 40),
                                               ("disk", 8000), ("process", 8000)])
def test_survives_kill_9_of_the_writer(tmp_path, durability, repeat):
    """Small bundles (rows) and ~100 KB bundles (payload files beside the index)."""
    path = tmp_path / "store.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), durability, str(repeat)],
                            stdout=subprocess.PIPE, text=True)
    acked: list[str] = []
    want = 500 if repeat < 1000 else 150
    try:
        while len(acked) < want:
            line = proc.stdout.readline()
            assert line, "writer died early"
            acked.append(line.strip())
        os.kill(proc.pid, signal.SIGKILL)   # mid-stream: it is writing the next batch
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    with BundleStore(path) as store:
        for bid in acked:
            row = store.get(bid)
            assert row is not None, f"acknowledged bundle {bid} lost"
            assert decode_bundle(row.data).id == bid
        assert store.held_bundles >= len(acked)


def _b(i: int, size: int = 100) -> Bundle:
    return Bundle.new("ipn:1.1", "ipn:2.1", b"x" * size, lifetime_ms=1000,
                      creation_ms=10_000 + i, seq=i)


def _add(store: BundleStore, b: Bundle, **kw) -> str:
    return store.add(b.id, b.encode(), destination=str(b.destination),
                     expiry_ms=b.expiry_ms(), received_ms=0, **kw)


def test_dedupe_by_id_including_tombstones(tmp_path):
    with BundleStore(tmp_path / "s.db") as store:
        b = _b(1)
        assert _add(store, b) == ADDED
        assert _add(store, b) == DUPLICATE
        store.set_state(b.id, BundleState.DELIVERED)
        store.commit()
        assert store.get(b.id).data is None           # bytes dropped, ID kept
        assert _add(store, b) == DUPLICATE             # the app gets it once
        assert store.counts()["delivered"] == 1


def test_full_store_refuses_and_frees_space(tmp_path):
    size = len(_b(0).encode())
    with BundleStore(tmp_path / "s.db", max_bytes=2 * size) as store:
        assert _add(store, _b(0)) == ADDED
        assert _add(store, _b(1)) == ADDED
        assert _add(store, _b(2)) == FULL
        assert not store.contains(_b(2).id)
        assert _add(store, _b(1)) == DUPLICATE         # a known one is not "full"
        store.set_state(_b(0).id, BundleState.FORWARDED)
        assert _add(store, _b(2)) == ADDED
    with BundleStore(tmp_path / "c.db", max_bundles=1) as store:
        assert [_add(store, _b(i)) for i in range(2)] == [ADDED, FULL]


def test_expiry_and_tombstone_purge(tmp_path):
    with BundleStore(tmp_path / "s.db") as store:
        for i in range(3):
            _add(store, _b(i))                          # expiry 11_000 + i
        assert store.expired(11_000) == [_b(0).id]
        assert sorted(store.expired(11_002)) == sorted(_b(i).id for i in range(3))
        store.set_state(_b(0).id, BundleState.DELETED, reason=1)
        assert store.purge_tombstones(11_000) == 1
        assert not store.contains(_b(0).id)
        assert store.contains(_b(1).id)


def test_states_and_counts_survive_reopen(tmp_path):
    path = tmp_path / "s.db"
    with BundleStore(path) as store:
        _add(store, _b(0))
        _add(store, _b(1), state=BundleState.LOCAL)
        _add(store, _b(2))
        store.set_state(_b(2).id, BundleState.FORWARDED)
        store.meta_set("seq", "42")
    with BundleStore(path) as store:
        assert [r.id for r in store.by_state(BundleState.PENDING)] == [_b(0).id]
        assert [r.id for r in store.by_state(BundleState.LOCAL, destination="ipn:2.1")] == [_b(1).id]
        assert store.counts()["forwarded"] == 1
        assert store.held_bundles == 2
        assert store.meta_get("seq") == "42"


def test_uncommitted_writes_are_not_acknowledged_state(tmp_path):
    path = tmp_path / "s.db"
    store = BundleStore(path)
    _add(store, _b(0))
    store.commit()
    _add(store, _b(1))                                  # never committed
    store._db.close()                                   # crash without commit
    with BundleStore(path) as again:
        assert again.contains(_b(0).id) and not again.contains(_b(1).id)


def test_unusable_path_is_a_clear_error(tmp_path):
    bad = tmp_path / "file"
    bad.write_text("not a directory")
    with pytest.raises(StoreError) as e:
        BundleStore(bad / "store.db")
    assert "store.db" in str(e.value)


def test_large_payloads_live_in_files_dropped_after_commit(tmp_path):
    path = tmp_path / "s.db"
    big = Bundle.new("ipn:1.1", "ipn:2.1", b"L" * 200_000, lifetime_ms=10**9,
                     creation_ms=1000, seq=1)
    small = _b(0)
    with BundleStore(path) as store:
        assert store.add_many([(big.id, big.encode(), "ipn:2.1", 10**12, 0, BundleState.PENDING,
                                0, None)]) == 1
        _add(store, small)
        store.commit()
        files = os.listdir(store.blob_dir)
        assert len(files) == 1  # only the large one
        assert store.held_bytes == len(big.encode()) + len(small.encode())
        assert decode_bundle(store.get(big.id).data).payload == b"L" * 200_000
    with BundleStore(path) as store:  # reopened: held from the file
        assert store.held_bundles == 2
        rows = {r.id: r for r in store.by_state(BundleState.PENDING)}
        assert decode_bundle(rows[big.id].data).id == big.id
        store.drop_many([(big.id, BundleState.FORWARDED)])
        assert len(os.listdir(store.blob_dir)) == 1  # not before the commit
        store.commit()
        assert os.listdir(store.blob_dir) == []
        assert store.get(big.id).data is None and store.contains(big.id)  # tombstone
        assert store.held_bundles == 1 and store.held_bytes == len(small.encode())
        assert store.add(big.id, big.encode(), destination="ipn:2.1", expiry_ms=1,
                         received_ms=0) == DUPLICATE


def test_orphan_payload_file_is_removed_at_open(tmp_path):
    """A file written for a row whose commit never happened (kill -9 in between)."""
    path = tmp_path / "s.db"
    big = Bundle.new("ipn:1.1", "ipn:2.1", b"L" * 100_000, lifetime_ms=10**9,
                     creation_ms=1000, seq=1)
    store = BundleStore(path)
    store.add(big.id, big.encode(), destination="ipn:2.1", expiry_ms=10**12, received_ms=0)
    assert len(os.listdir(store.blob_dir)) == 1
    store._db.execute("ROLLBACK")  # what a crash before COMMIT leaves
    store._db.close()
    with BundleStore(path) as again:
        assert again.held_bundles == 0 and again.get(big.id) is None
        assert os.listdir(again.blob_dir) == []


def test_room_is_the_quota_and_the_free_space_less_the_reserve(tmp_path):
    """What new bundles may take: the quota left, and the filesystem's free space less
    the reserve; on a roomy filesystem no reserve file is allocated (a thousand stores of
    an emulation would hold a gigabyte)."""
    from netemu.agent.store import ARM_RESERVE_BELOW, RESERVE_BYTES

    st = BundleStore(tmp_path / "s.db", max_bytes=10_000)
    try:
        free = st.fs_free_bytes()
        assert free is not None
        if free < ARM_RESERVE_BELOW * RESERVE_BYTES:
            pytest.skip("the test directory's filesystem is nearly full")
        assert not os.path.exists(st.reserve_path)
        assert st.room_bytes() == 10_000
        st.add("a", b"x" * 4000, destination="ipn:2.1", expiry_ms=10**12, received_ms=0)
        assert st.room_bytes() == 6_000
        st.max_bytes = None
        assert 0 < st.room_bytes() <= st.fs_free_bytes() - RESERVE_BYTES
    finally:
        st.close()
    assert BundleStore(":memory:").room_bytes() is None
