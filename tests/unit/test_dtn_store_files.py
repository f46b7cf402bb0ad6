"""The bundle store's payload files: segments freed and compacted, kill -9 of a writer
that rotates and compacts, a torn last batch after power loss dropped (never acked), a
failed write rolled back, stores of the previous format opened, dropped files reused."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from netemu.agent.store import ADDED, DUPLICATE, BundleStore
from netemu.dtn.bundle import Bundle, decode_bundle
from netemu.dtn.state import BundleState


def _b(i: int, size: int = 500) -> Bundle:
    return Bundle.new("ipn:1.1", "ipn:2.1", b"%d:" % i + b"x" * size, lifetime_ms=10**9,
                      creation_ms=10_000 + i, seq=i)


def _row(b: Bundle, state: BundleState = BundleState.PENDING) -> tuple:
    return (b.id, b.encode(), "ipn:2.1", 10**12, 0, state, 0, None)


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))


def test_segments_are_freed_and_sparse_ones_compacted(tmp_path):
    path = tmp_path / "s.db"
    bundles = [_b(i) for i in range(80)]
    keep = {b.id for b in bundles[::10]}
    with BundleStore(path, segment_bytes=8192) as store:
        for i in range(0, 80, 10):
            store.add_many([_row(b) for b in bundles[i:i + 10]])
            store.commit()
        assert len(os.listdir(store.seg_dir)) >= 4
        store.drop_many([(b.id, BundleState.FORWARDED) for b in bundles if b.id not in keep])
        store.commit()  # sparse segments' held bundles copied to the current one
        store.commit()
        held = sum(len(b.encode()) for b in bundles if b.id in keep)
        assert store.held_bytes == held
        assert _dir_bytes(store.seg_dir) <= held + 2 * 8192  # + the last two segments
    with BundleStore(path) as store:
        rows = {r.id: r for r in store.by_state(BundleState.PENDING)}
        assert set(rows) == keep
        for bid, r in rows.items():
            assert decode_bundle(r.data).id == bid
        assert store.add_many([_row(bundles[1])]) == 0  # a tombstone: still a duplicate
        assert store.counts()["forwarded"] == 72


WRITER = textwrap.dedent("""
    import sys
    from netemu.dtn.bundle import Bundle
    from netemu.dtn.state import BundleState
    from netemu.agent.store import BundleStore
    store = BundleStore(sys.argv[1], durability=sys.argv[2], segment_bytes=16384)
    i, prev = 0, []
    while True:                       # until SIGKILL
        rows = []
        for _ in range(10):
            n = 70_000 if i % 7 == 0 else 300 + i % 50
            b = Bundle.new("ipn:1.1", "ipn:2.1", b"%d:" % i + b"p" * n, lifetime_ms=10**9,
                           creation_ms=1000 + i, seq=i)
            rows.append((b.id, b.encode(), "ipn:2.1", 10**12, i, BundleState.PENDING, 0, None))
            i += 1
        store.add_many(rows)
        drops = [(bid, BundleState.FORWARDED) for k, bid in enumerate(prev) if k % 5]
        store.drop_many(drops)
        store.commit()                # durable: only now report the batch
        sys.stdout.write("".join("H %s\\n" % r[0] for r in rows)
                         + "".join("D %s\\n" % d[0] for d in drops))
        sys.stdout.flush()
        prev = [r[0] for r in rows]
""")


@pytest.mark.parametrize("durability", ["disk", "process"])
def test_kill_9_of_a_writer_that_rotates_and_compacts_segments(tmp_path, durability):
    path = tmp_path / "store.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), durability],
                            stdout=subprocess.PIPE, text=True)
    held: set[str] = set()
    dropped: set[str] = set()
    try:
        while len(held) + len(dropped) < 600:
            line = proc.stdout.readline()
            assert line, "writer died early"
            kind, bid = line.split()
            if kind == "H":
                held.add(bid)
            else:
                held.discard(bid)
                dropped.add(bid)
        os.kill(proc.pid, signal.SIGKILL)   # mid-stream: it is writing the next batch
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    with BundleStore(path) as store:
        for bid in held:
            row = store.get(bid)
            assert row is not None, f"acknowledged {bid} lost"
            if row.state is not BundleState.PENDING:  # dropped by a commit we did not read
                assert row.state is BundleState.FORWARDED and row.data is None
        pending = list(store.by_state(BundleState.PENDING))
        assert store.held_bundles == len(pending) >= len(held) // 5
        for r in pending:
            assert decode_bundle(r.data).id == r.id
        for bid in dropped:
            assert store.contains(bid) and store.get(bid).data is None


def test_torn_last_batch_after_power_loss_is_removed_at_open(tmp_path):
    """With ``disk`` the payload files are synced concurrently with the COMMIT: after a
    power loss in that commit (it never returned, nothing was acked) the last batch's
    rows may name bytes that are not on disk; those rows go, earlier ones stay."""
    path = tmp_path / "s.db"
    first = [_b(i) for i in range(5)] + [_b(5, 100_000)]
    last = [_b(i) for i in range(6, 11)] + [_b(11, 100_000)]
    store = BundleStore(path, durability="disk")
    store.add_many([_row(b) for b in first])
    store.commit()
    seg_sizes = {n: os.path.getsize(os.path.join(store.seg_dir, n))
                 for n in os.listdir(store.seg_dir)}
    blobs = set(os.listdir(store.blob_dir))
    store.add_many([_row(b) for b in last])
    store.commit()
    store.close()
    # What the disk holds if the last batch's payload writes were lost:
    for n in os.listdir(path.parent / "s.db.segs"):
        os.truncate(path.parent / "s.db.segs" / n, seg_sizes.get(n, 0))
    for n in set(os.listdir(path.parent / "s.db.blobs")) - blobs:
        os.truncate(path.parent / "s.db.blobs" / n, 0)
    with BundleStore(path, durability="disk") as again:
        for b in first:
            assert decode_bundle(again.get(b.id).data).id == b.id
        for b in last:
            assert not again.contains(b.id)     # as if never received: a resend is taken
        assert again.add_many([_row(b) for b in last]) == len(last)
        again.commit()
        assert again.held_bundles == 12
        assert len(os.listdir(again.blob_dir)) == 2


def test_failed_write_rolls_back_to_the_last_commit(tmp_path, monkeypatch):
    path = tmp_path / "s.db"
    b0, b1 = _b(0), _b(1)
    with BundleStore(path) as store:
        store.add_many([_row(b0)])
        store.commit()

        def full(fd, bufs):
            raise OSError(errno.ENOSPC, "No space left on device")

        with monkeypatch.context() as m:
            m.setattr(os, "writev", full)
            store.drop_many([(b0.id, BundleState.FORWARDED)])
            with pytest.raises(OSError):
                store.add_many([_row(b1)])
        assert not store.contains(b1.id)           # not half a batch
        assert store.get(b0.id).data is not None   # the drop went with the batch
        assert store.held_bundles == 1
        assert store.add(b1.id, b1.encode(), destination="ipn:2.1", expiry_ms=10**12,
                         received_ms=0) == ADDED
    with BundleStore(path) as store:
        assert store.held_bundles == 2
        assert decode_bundle(store.get(b1.id).data).id == b1.id


def test_store_of_the_previous_format_opens(tmp_path):
    """Rows inline, ID primary key, state index, no ``file`` column (the first store
    format): rebuilt at open, rows and tombstones kept."""
    path = tmp_path / "old.db"
    held, gone = _b(0), _b(1)
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE bundles (id TEXT PRIMARY KEY, state INTEGER NOT NULL,
            destination TEXT NOT NULL, size INTEGER NOT NULL, expiry_ms INTEGER NOT NULL,
            received_ms INTEGER NOT NULL, age_at_receipt_ms INTEGER NOT NULL DEFAULT 0,
            previous_hop TEXT, reason INTEGER, data BLOB);
        CREATE INDEX bundles_state ON bundles(state, destination);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """)
    db.execute("INSERT INTO bundles VALUES (?, 2, 'ipn:2.1', ?, ?, 5, 0, NULL, NULL, ?)",
               (held.id, len(held.encode()), 10**12, held.encode()))
    db.execute("INSERT INTO bundles VALUES (?, 4, 'ipn:2.1', 0, ?, 6, 0, NULL, NULL, NULL)",
               (gone.id, 10**12))
    db.execute("INSERT INTO meta VALUES ('seq', '7')")
    db.commit()
    db.close()
    with BundleStore(path) as store:
        assert store.held_bundles == 1 and store.meta_get("seq") == "7"
        assert [r.id for r in store.by_state(BundleState.LOCAL)] == [held.id]
        assert store.add(gone.id, gone.encode(), destination="ipn:2.1", expiry_ms=1,
                         received_ms=0) == DUPLICATE
        store.add_many([_row(_b(2))])
        store.drop_many([(held.id, BundleState.DELIVERED)])
    with BundleStore(path) as store:
        assert store.held_bundles == 1 and store.counts()["delivered"] == 2


def test_dropped_payload_files_are_reused_and_not_kept_across_open(tmp_path):
    path = tmp_path / "s.db"
    big = [_b(i, 200_000) for i in range(3)]
    with BundleStore(path, durability="disk") as store:
        store.add_many([_row(big[0])])
        store.commit()
        store.drop_many([(big[0].id, BundleState.FORWARDED)])
        store.commit()
        assert os.listdir(store.blob_dir) == []
        store.add_many([_row(big[1])])   # overwrites the dropped file (no allocation)
        store.commit()
        assert os.listdir(store.free_dir) == []
        assert decode_bundle(store.get(big[1].id).data).id == big[1].id
        store.add_many([_row(big[2])])
        store.drop_many([(big[1].id, BundleState.FORWARDED)])
        store.commit()
        assert len(os.listdir(store.free_dir)) == 1
    with BundleStore(path) as store:  # a file without a committed row: removed at open
        assert os.listdir(store.free_dir) == []
        assert [r.id for r in store.by_state(BundleState.PENDING)] == [big[2].id]
        assert decode_bundle(store.get(big[2].id).data).id == big[2].id


def test_staged_bundle_reads_back_before_commit(tmp_path):
    with BundleStore(tmp_path / "s.db") as store:
        b = _b(0)
        store.add_many([_row(b)])
        assert store.get(b.id).data == b.encode()


def test_drop_many_with_mixed_states_unknown_ids_and_more_than_one_chunk(tmp_path):
    path = tmp_path / "s.db"
    bundles = [_b(i, 50) for i in range(300)]
    with BundleStore(path) as store:
        store.add_many([_row(b) for b in bundles])
        store.commit()
        store.drop_many([(b.id, BundleState.DELIVERED if i % 3 else BundleState.FORWARDED)
                         for i, b in enumerate(bundles[:290])] + [("ipn:9.9,1,1", BundleState.DELIVERED)])
        store.commit()
        assert store.held_bundles == 10
    with BundleStore(path) as store:
        assert store.counts() == {"pending": 10, "local": 0, "forwarded": 97,
                                  "delivered": 193, "deleted": 0, "fragment": 0}
        assert store.held_bundles == 10 and not store.contains("ipn:9.9,1,1")
        assert sorted(r.id for r in store.by_state(BundleState.PENDING)) == sorted(
            b.id for b in bundles[290:])


@pytest.mark.parametrize("durability", ["disk", "process"])
def test_a_store_is_dirty_from_a_write_until_its_commit(tmp_path, durability):
    """A clean store's commit is skipped by the agent (no commit thread): every kind of
    write must make it dirty until the commit that makes it durable."""
    with BundleStore(tmp_path / "s.db", durability=durability) as store:
        assert not store.dirty()
        b = _b(0)
        store.add_many([_row(b)])
        assert store.dirty()
        store.commit()
        assert not store.dirty()
        store.set_state(b.id, BundleState.FORWARDED)
        assert store.dirty()
        store.commit()
        assert not store.dirty()
