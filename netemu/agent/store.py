"""A node's persistent bundle store: SQLite in WAL mode for the index, payloads in files,
group commit.

Durability: every accepted bundle is written in a transaction, and the caller acks the
bundles of a batch only after :meth:`BundleStore.commit` returns. With WAL, COMMIT appends
the transaction to the ``-wal`` file with write(2) before it returns, so once ``commit()``
returns the data is in the kernel's page cache and survives ``kill -9`` of the process even
with ``synchronous=NORMAL``; what NORMAL gives up is durability across power loss or a
kernel crash (the WAL is fsynced only at checkpoints). ``synchronous=FULL`` fsyncs the WAL
at every commit and survives those too, at one fsync per commit (group commit makes that a
cost per batch, not per bundle).

Two defaults, on purpose. ``BundleStore(durability=...)`` defaults to ``"process"``
(WAL + NORMAL): it survives ``kill -9`` of the process, the failure an agent meets in an
emulation, and it is what tests, tools and simulators that open a store directly want (no
fsync per commit). The agent's configuration (``netemu.agent.config.AgentConfig``,
``durability:`` in an agent config) defaults to ``"disk"`` (WAL + FULL) and passes it
here: an agent is the thing that promises a bundle it acknowledged is not lost, and on a
real machine (not only in an emulation whose agents share one kernel) that promise must
hold across power loss or a kernel crash too. An agent config can choose ``process`` for
speed (docs/dtn-agent.md has both in the benchmark). Both are tested under ``kill -9``
(tests/unit/test_dtn_store.py).

Payloads are not SQLite BLOBs (a 1 KB blob costs its page twice in the WAL: once when
inserted, once when its row becomes a tombstone; that was half of the store's CPU):

- a bundle under ``file_threshold_bytes`` (64 KiB) is appended to the current *segment*,
  a file in ``<store>.segs/`` of up to ``segment_bytes`` (8 MiB); the row names the
  segment and the offset. One ``writev`` per :meth:`add_many`. (With ``disk``, an
  :meth:`add_many` of less than ``INLINE_BELOW_BYTES`` in a transaction that has not
  written to a segment yet keeps its payloads in the rows instead: a segment costs an
  fdatasync of its own per commit, ~0.3 ms of CPU here, which pays only from about 64
  bundles of 1 KB per commit on.) A segment no held bundle
  uses any more is unlinked after the commit that dropped the last one; a closed segment
  whose held bundles fill less than a quarter of it is compacted (its held bundles are
  copied to the current segment in the next commit), so long-held bundles do not pin
  whole segments.
- a larger bundle gets a file of its own in ``<store>.blobs/``. A dropped one is not
  unlinked but moved to ``<store>.free/`` (at most ``POOL_FILES``, ``POOL_BYTES``) and
  overwritten by the next large bundle: no block allocation or discard, and with
  ``disk`` its fdatasync is a pure data write (about half the time of a new file's).

Crash safety is the same as for rows: the payload bytes are written (write(2)) before
the row that names them is committed, so after ``kill -9`` a committed row always has
whole bytes. With ``durability="disk"`` the files written since the last commit are
fdatasync'ed and the directories with new names fsynced, in parallel threads and
concurrently with the COMMIT (which fsyncs the WAL): the device flushes overlap instead
of queueing; ``commit()`` returns when all are done. A power loss during that commit may
leave its rows on disk without their bytes, so each such row carries the CRC-32C of its
payload and the transaction records its first rowid (meta ``unsynced_from_rid``); at
open, rows from that one on whose bytes do not match are removed, as if that commit had
never happened (it did not return: nothing was acknowledged, the sender resends). Only
the last transaction can be torn: the next commit starts after this one returned. (A
commit that moves older rows' bytes, compaction, syncs them before the COMMIT instead.)
Files are unlinked or pooled only after the commit that drops their rows; a file without
a committed row (killed in between; the pool) is removed at the next open, and new bytes
never go into a segment written before the open. (Like SQLite's WAL, this assumes that
appending to a file does not damage its earlier, synced bytes on power loss.)

Deduplication: the store keeps every row's bundle ID (source, creation time, sequence, and
for fragments offset and length) in memory, loaded at open, and refuses a known one; the
table has no index on the ID (one writer, the node's agent; an index cost a third of an
insert). Delivered, forwarded and deleted bundles stay as tombstones (their bytes dropped)
until their expiry, so a copy that arrives again is recognised. Rows are updated by rowid.

Quota: ``max_bytes`` / ``max_bundles`` bound the bundles held (bytes not yet dropped); a
bundle that does not fit is refused (:data:`FULL`), never dropped silently: the agent core
sends a "deleted, depleted storage" status report for it.

Reserve: a store that fills its filesystem must still commit what frees space (an app's
acknowledgements, forwarded bundles' tombstones, deletions), or it can neither take a
bundle nor let one go. So :meth:`room_bytes` (what the agent core admits new bundles
against) is the quota left and also the filesystem's free space less ``reserve_bytes``
(8 MiB: the WAL grows up to ~4 MiB between checkpoints, and rows, status reports and a
batch's tombstones need pages too); and once free space is under ``ARM_RESERVE_BELOW``
reserves, a file of ``RESERVE_FILE_BYTES`` is kept allocated beside the store
(``<store>.reserve``; not before, so that a thousand stores of an emulation on a roomy
disk or tmpfs do not hold a gigabyte) for when something else fills the filesystem: a
write that fails for lack of space releases it, so the acknowledgements retried after that
failure commit, and it is taken again once the space is back.
Payload files pooled for reuse are released first when space runs low, and a sparse
segment is compacted only when its copy fits outside the reserve.

Errors: when a write or a commit fails (disk full, I/O error), the open transaction is
rolled back and the store reloads its state from the last commit before the exception
propagates, so it never commits half a batch later.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from crc32c import crc32c

from netemu.dtn.state import HELD_STATES, BundleState, StoredBundle
from netemu.errors import NetemuError

_HELD = "(data IS NOT NULL OR file IS NOT NULL)"  # SQL: the row still holds its bundle
FILE_THRESHOLD_BYTES = 64 * 1024  # bundles this large go to a payload file of their own
SEGMENT_BYTES = 8 * 1024 * 1024  # smaller ones are appended to segments of this size
_SEG_PREFIX = "seg-"
_IOV_MAX = 1024  # buffers per writev(2)
INLINE_BELOW_BYTES = 64 * 1024  # (disk) smaller add_many batches stay in the rows
POOL_FILES = 8  # dropped payload files kept for reuse (an overwrite syncs ~2x faster)
POOL_BYTES = 64 * 1024 * 1024

RESERVE_BYTES = 8 * 1024 * 1024  # free space new bundles may not take (see the module doc)
RESERVE_FILE_BYTES = 1024 * 1024  # kept allocated, released when a write finds no space
ARM_RESERVE_BELOW = 4  # the file is allocated once free space is under 4 reserves
FREE_CACHE_S = 0.2  # how long a statvfs answer far above the reserve is reused
_SQLITE_FULL = 13  # sqlite3 error code: "database or disk is full"

ADDED = "added"
DUPLICATE = "duplicate"
FULL = "full"


class StoreError(NetemuError):
    """The store cannot be opened or used (path, permissions, corruption)."""


# A rowid table without secondary indexes: inserts append, tombstones are updated by
# rowid, the ID map lives in memory; the rare scans (open, expiry sweeps) read it all.
# ``file``: payload file name (in <store>.blobs/, or with ``off`` a segment in
# <store>.segs/); ``data``: the bytes inline (in-memory stores, update_data).
_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    rid INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    state INTEGER NOT NULL,
    destination TEXT NOT NULL,
    size INTEGER NOT NULL,
    expiry_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    age_at_receipt_ms INTEGER NOT NULL DEFAULT 0,
    previous_hop TEXT,
    reason INTEGER,
    data BLOB,
    file TEXT,
    off INTEGER,
    crc INTEGER
);
"""
_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
_COLS = ("id, state, destination, size, expiry_ms, received_ms, age_at_receipt_ms, "
         "previous_hop, reason, data")
_HEAD = ("rid", "id", "state", "destination", "size", "expiry_ms", "received_ms",
         "age_at_receipt_ms")
_TAILS = {"file": ("file", "off"), "crc": ("file", "off", "crc"), "inline": ("data",)}
# (has previous_hop, where the bytes are) -> INSERT without the columns left NULL
_INSERTS = {(p, k): "INSERT INTO bundles ({}) VALUES ({})".format(
    ", ".join(c), ", ".join("?" * len(c)))
    for p in (0, 1) for k, t in _TAILS.items()
    for c in [_HEAD + (("previous_hop",) if p else ()) + t]}
_DROP_IN = {n: "UPDATE bundles SET state = ?, data = NULL, file = NULL, off = NULL WHERE "
            f"rid IN ({','.join('?' * n)})" for n in (1, 8, 32, 256)}
_DROP_IN_MAX = 256
_PAD = [0] * _DROP_IN_MAX  # rowid 0: never used (rowids start at 1)
_TAIL = "unsynced_from_rid"  # meta key: rows from this rowid on may name unsynced bytes


class BundleStore:
    """Persistent bundle store of one node (one writer: the node's agent).

    Writes are staged in an open transaction and made durable by :meth:`commit` (group
    commit: accept a batch, commit once, then acknowledge the batch).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int | None = None,
        max_bundles: int | None = None,
        durability: str = "process",
        file_threshold_bytes: int | None = FILE_THRESHOLD_BYTES,
        segment_bytes: int | None = SEGMENT_BYTES,
        sync_pool: Executor | None = None,
        reserve_bytes: int = RESERVE_BYTES,
    ) -> None:
        if durability not in ("disk", "process"):
            raise StoreError(f"durability must be 'disk' (synchronous=FULL) or 'process' "
                             f"(synchronous=NORMAL), not {durability!r}")
        self.path = str(path)
        self.max_bytes = max_bytes
        self.max_bundles = max_bundles
        self.durability = durability
        self._disk = durability == "disk"
        self._lock = threading.Lock()
        on_disk = self.path != ":memory:"
        # Payloads of at least file_threshold bytes: a file each; smaller: segments.
        self.file_threshold = file_threshold_bytes if on_disk else None
        self.segment_bytes = segment_bytes if on_disk else None
        self.blob_dir = self.path + ".blobs"
        self.seg_dir = self.path + ".segs"
        self.free_dir = self.path + ".free"
        self._pool_files: list[tuple[str, int]] = []  # (path in free_dir, size)
        # fdatasync threads (disk); a node host passes one pool shared by its stores
        self._pool: Executor | None = sync_pool
        self._own_pool = sync_pool is None
        self._in_tx = False
        # Free space kept out of reach of new bundles, and the file that holds part of it.
        self.reserve_bytes = max(0, reserve_bytes) if on_disk else 0
        self._dir = os.path.dirname(os.path.abspath(path)) if on_disk else ""
        self._free_cache: tuple[float, int, int] = (-math.inf, 0, 0)
        self.reserve_path = self.path + ".reserve"
        self.reserve_released = 0  # times a full filesystem made the store release it
        self._low_space = False  # (room_bytes) free space under twice the reserve
        self._seg_fd = -1
        self._sync_fds: list[int] = []  # (disk) files written since the last commit
        try:
            if on_disk:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=" + ("FULL" if self._disk else "NORMAL"))
            self._db.execute("PRAGMA temp_store=MEMORY")
            self._schema()
            self._verify_tail()
            self._load()
            if self.reserve_bytes and (self.fs_free_bytes() or 0) < (
                    ARM_RESERVE_BELOW * self.reserve_bytes):
                self._hold_reserve()
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"{self.path}: cannot open bundle store: {e}") from None

    # --- open -------------------------------------------------------------------------
    def _schema(self) -> None:
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(bundles)")}
        if cols and "rid" not in cols:  # a store from before segments: rebuild the table
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(_TABLE.format(name="bundles_v2"))
            sel = _COLS + (", file" if "file" in cols else ", NULL")
            self._db.execute(f"INSERT INTO bundles_v2 ({_COLS}, file) SELECT {sel} "
                             "FROM bundles ORDER BY rowid")
            self._db.execute("DROP TABLE bundles")
            self._db.execute("ALTER TABLE bundles_v2 RENAME TO bundles")
            self._db.execute("COMMIT")
        elif cols and "crc" not in cols:
            self._db.execute("ALTER TABLE bundles ADD COLUMN crc INTEGER")
        self._db.executescript(_TABLE.format(name="bundles") + _META)

    def _verify_tail(self) -> None:
        """Rows of the last transaction that wrote payload files (``disk``: their files
        are synced concurrently with the COMMIT): a row whose bytes did not reach the
        disk before a power loss is removed, as if its commit never happened (it did
        not return, so nothing was acknowledged)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (_TAIL,)).fetchone()
        if row is None:
            return
        bad = []
        fds: dict[str, int] = {}
        try:
            for rid, size, name, off, crc in self._db.execute(
                    "SELECT rid, size, file, off, crc FROM bundles WHERE rid >= ? AND "
                    "file IS NOT NULL AND crc IS NOT NULL", (int(row[0]),)).fetchall():
                data = self._read(name, off, size, fds)
                if data is None or crc32c(data) != crc:
                    bad.append((rid,))
        finally:
            for fd in fds.values():
                os.close(fd)
        if bad:  # (the mark stays: the next transaction with files replaces it)
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM bundles WHERE rid = ?", bad)
            self._db.execute("COMMIT")

    def _load(self) -> None:
        """(Re)build the in-memory state from the committed rows; remove orphan files;
        new segment bytes go to a segment no earlier session wrote."""
        self._close_files()
        # ID -> rowid of every row (dedupe); held ID -> (size, rowid, where the bytes are:
        # None inline, int segment number, str own file name).
        ids: dict[str, int] = {}
        held: dict[str, tuple[int, int, int | str | None]] = {}
        seg_live: dict[int, list[int]] = {}  # segment -> [held bundles, held bytes]
        held_bytes = 0
        for rid, bid, size, has, name in self._db.execute(
                f"SELECT rid, id, size, {_HELD}, file FROM bundles"):
            ids[bid] = rid
            if not has:
                continue
            loc: int | str | None = name
            if name is not None and name.startswith(_SEG_PREFIX):
                loc = int(name[len(_SEG_PREFIX):], 16)
                sl = seg_live.setdefault(loc, [0, 0])
                sl[0] += 1
                sl[1] += size
            held[bid] = (size, rid, loc)
            held_bytes += size
        self._ids = ids
        self._held = held
        self._seg_live = seg_live
        self.held_bytes = held_bytes
        self._next_rid = 1 + (self._db.execute("SELECT max(rid) FROM bundles").fetchone()[0]
                              or 0)
        self._unlink: list[str] = []  # segments freed, removed after the commit
        self._tx_rid: int | None = None  # (disk) first rowid of this transaction's files
        self._compacted = False
        self._freed: list[str] = []  # payload files of dropped rows: pool or unlink
        self._dir_dirty: set[str] = set()  # (disk) directories with new names: fsync
        # Orphans: files no committed row names (the writer died before its commit).
        own = {os.path.basename(v[2]) for v in held.values() if isinstance(v[2], str)}
        self._pool_files = []
        self._pool_bytes = 0
        for d, keep in ((self.blob_dir, own),
                        (self.seg_dir, {_seg_name(n) for n in seg_live}),
                        (self.free_dir, set())):
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(d):
                    if name not in keep:
                        with contextlib.suppress(OSError):
                            os.unlink(os.path.join(d, name))
        # Segments: sizes (for compaction) and the next number.
        self._seg_size: dict[int, int] = {}
        for n in seg_live:
            try:
                self._seg_size[n] = os.path.getsize(self._seg_path(n))
            except OSError:
                self._seg_size[n] = 0
        names = os.listdir(self.seg_dir) if os.path.isdir(self.seg_dir) else []
        self._seg = 1 + max([n for n in seg_live] + [  # current one (created on first use)
            int(x[len(_SEG_PREFIX):], 16) for x in names if _is_seg_name(x)], default=0)
        self._seg_off = 0
        self._sparse = {n for n, sl in seg_live.items()
                        if sl[1] * 4 < self._seg_size[n]}

    # --- space ------------------------------------------------------------------------
    def fs_free_bytes(self) -> int | None:
        """Bytes free on the store's filesystem for this process (None: in memory). Asked
        before every batch: while far above the reserve the answer is reused for
        FREE_CACHE_S (a node host's thousand stores asked statvfs thousands of times a
        second); near it, asked afresh."""
        if self.path == ":memory:":
            return None
        now = time.monotonic()
        cached_at, free, held = self._free_cache
        if (now - cached_at < FREE_CACHE_S and free > ARM_RESERVE_BELOW * self.reserve_bytes
                and abs(self.held_bytes - held) < self.reserve_bytes):
            return free  # (nor has this store written a reserve's worth since)
        st = os.statvfs(self._dir)
        free = st.f_bavail * st.f_frsize
        self._free_cache = (now, free, self.held_bytes)
        return free

    def room_bytes(self) -> int | None:
        """Bytes new bundles may still take: the quota left and, on disk, the free space
        less the reserve (None: no bound). Low on space, pooled payload files are released
        first; with space back, the reserve file is taken again."""
        with self._lock:
            room = None if self.max_bytes is None else self.max_bytes - self.held_bytes
            if self.reserve_bytes:
                free = self.fs_free_bytes() or 0
                if free < 2 * self.reserve_bytes and self._pool_files:
                    self._drain_pool()
                    free = self.fs_free_bytes() or 0
                if (self.reserve_bytes + RESERVE_FILE_BYTES <= free
                        < ARM_RESERVE_BELOW * self.reserve_bytes and self._hold_reserve()):
                    free = self.fs_free_bytes() or 0
                self._low_space = free < 2 * self.reserve_bytes
                disk_room = free - self.reserve_bytes
                room = disk_room if room is None else min(room, disk_room)
            return None if room is None else max(0, room)

    def _hold_reserve(self) -> bool:
        """Allocate the reserve file (what a full filesystem has left of it); False when
        it was whole already."""
        if not self.reserve_bytes or self.path == ":memory:":
            return False
        size = min(RESERVE_FILE_BYTES, self.reserve_bytes)
        with contextlib.suppress(FileNotFoundError):
            if os.path.getsize(self.reserve_path) >= size:
                return False
        fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            if e.errno != errno.ENOSPC:  # (no fallocate here: zeros do the same)
                with contextlib.suppress(OSError):
                    _write_all(fd, [bytes(size)])
        finally:
            os.close(fd)
        return True

    def _release_reserve(self) -> None:
        """A write found no space: free the reserve file for the retries of what frees
        space (acknowledgements, tombstones), which must commit."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.reserve_path)
            self.reserve_released += 1
        self._free_cache = (-math.inf, 0, 0)  # the filesystem is full: ask afresh
        self._drain_pool()

    def _drain_pool(self) -> None:
        for p, _ in self._pool_files:
            with contextlib.suppress(OSError):
                os.unlink(p)
        self._pool_files = []
        self._pool_bytes = 0

    def _compaction_fits(self) -> bool:
        """Compaction copies held bytes before it frees their segments: only with room
        for the copy outside the reserve (a full store must still commit its drops)."""
        if not self.reserve_bytes:
            return True
        moved = sum(self._seg_live[n][1] for n in self._sparse if n in self._seg_live)
        return (self.fs_free_bytes() or 0) - self.reserve_bytes > 2 * moved

    @property
    def held_bundles(self) -> int:
        return len(self._held)

    def _seg_path(self, n: int) -> str:
        return os.path.join(self.seg_dir, _seg_name(n))

    def _file_path(self, name: str) -> str:
        return name if os.sep in name else os.path.join(self.blob_dir, name)

    # --- payload files ----------------------------------------------------------------
    def _write_file(self, data: bytes) -> str:
        """A payload file of its own; (disk) kept open for the fdatasync at commit."""
        if self.blob_dir not in self._dir_dirty:
            self._mkdir(self.blob_dir)
        name = secrets.token_hex(12)
        path = os.path.join(self.blob_dir, name)
        if self._pool_files:  # overwrite a dropped one: no allocation, no discard
            old, old_size = self._pool_files.pop()
            self._pool_bytes -= old_size
            os.rename(old, path)
            fd = os.open(path, os.O_WRONLY)
            if old_size > 2 * len(data):
                os.ftruncate(fd, len(data))
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, [data])
        except BaseException:
            os.close(fd)
            raise
        if self._disk:
            self._sync_fds.append(fd)
        else:
            os.close(fd)
        return name

    def _mkdir(self, path: str) -> None:
        """A payload directory, to be fsynced at commit (new names in it), and its parent
        too if it is new."""
        if not os.path.isdir(path):
            os.makedirs(path, exist_ok=True)
            self._dir_dirty.add(os.path.dirname(os.path.abspath(path)))
        self._dir_dirty.add(path)

    def _seg_append(self, bufs: list[bytes]) -> None:
        """Append to the current segment (offsets were assigned by the caller)."""
        if self._seg_fd < 0:
            if self.seg_dir not in self._dir_dirty:
                self._mkdir(self.seg_dir)
            self._seg_fd = os.open(self._seg_path(self._seg), os.O_WRONLY | os.O_CREAT
                                   | os.O_EXCL | os.O_APPEND, 0o600)
        _write_all(self._seg_fd, bufs)
        if self._disk and (not self._sync_fds or self._sync_fds[0] != self._seg_fd):
            self._sync_fds.insert(0, self._seg_fd)

    def _seg_rotate(self) -> None:
        """Close the current segment (full); the next bytes start a new one."""
        n = self._seg
        self._seg_size[n] = self._seg_off
        if self._seg_fd >= 0:
            if self._sync_fds and self._sync_fds[0] == self._seg_fd:
                self._sync_fds[0] = os.dup(self._seg_fd)  # still to be synced at commit
            os.close(self._seg_fd)
            self._seg_fd = -1
        self._seg += 1
        self._seg_off = 0
        sl = self._seg_live.get(n)
        if sl is None or sl[0] == 0:
            self._seg_live.pop(n, None)
            self._seg_size.pop(n, None)
            self._unlink.append(self._seg_path(n))
        elif sl[1] * 4 < self._seg_size[n]:
            self._sparse.add(n)

    def _close_files(self) -> None:
        for fd in self._sync_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._sync_fds = []
        if self._seg_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._seg_fd)
            self._seg_fd = -1

    def _sync_commit(self) -> None:
        """(disk) fdatasync the files written since the last commit and fsync the
        directories that got new names, all in parallel threads (the kernel merges the
        device flushes), together with the COMMIT when the rows that name new bytes are
        marked for :meth:`_verify_tail`, else before it (compaction moved older rows)."""
        seg_fd = self._seg_fd
        fds = self._sync_fds
        self._sync_fds = []
        jobs: list[tuple[Callable[[Any], None], Any]] = (
            [(os.fdatasync, fd) for fd in fds] + [(_fsync_dir, d) for d in self._dir_dirty])
        self._dir_dirty.clear()
        together = self._in_tx and not self._compacted
        if together and self._tx_rid is not None:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             (_TAIL, str(self._tx_rid)))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="store-sync")
        futs = [self._pool.submit(fn, arg) for fn, arg in jobs]
        err: BaseException | None = None
        try:
            if not together:
                for f in futs:
                    f.result()
            if self._in_tx:
                self._db.execute("COMMIT")
                self._in_tx = False
        finally:
            for f in futs:
                e = f.exception()
                err = err or e
            for fd in fds:
                if fd != seg_fd:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        if err is not None:
            raise err

    # --- transactions ---------------------------------------------------------------
    def _begin(self) -> None:
        if not self._in_tx:
            self._db.execute("BEGIN")
            self._in_tx = True

    def _abort(self, e: BaseException | None = None) -> None:
        """A write failed: back to the last commit, in the database and in memory (and,
        for lack of space, the reserve file released for the retries)."""
        if e is not None and _is_no_space(e):
            with contextlib.suppress(OSError):
                self._release_reserve()
        with contextlib.suppress(sqlite3.Error):
            if self._in_tx or self._db.in_transaction:
                self._db.execute("ROLLBACK")
        self._in_tx = False
        with contextlib.suppress(sqlite3.Error, OSError):
            self._load()

    def dirty(self) -> bool:
        """Whether :meth:`commit` has work to do (writes, files or directories to sync,
        files to unlink, segments to compact): a clean commit needs no commit thread."""
        with self._lock:
            return bool(self._in_tx or self._sync_fds or self._dir_dirty or self._unlink
                        or self._sparse or self._db.in_transaction)

    def commit(self) -> None:
        """Make every write since the last commit durable (see the module doc)."""
        with self._lock:
            try:
                if self._sparse and self._compaction_fits():
                    self._compact()
                if self._disk and (self._sync_fds or self._dir_dirty):
                    self._sync_commit()
                else:
                    self._dir_dirty.clear()
                    if self._in_tx:
                        self._db.execute("COMMIT")
                        self._in_tx = False
                self._tx_rid = None
                self._compacted = False
            except BaseException as e:
                self._abort(e)
                raise
            if self._unlink:
                for p in self._unlink:
                    with contextlib.suppress(OSError):
                        os.unlink(p)
                self._unlink = []
            if self._freed:
                self._recycle()

    def _recycle(self) -> None:
        """Payload files of committed drops: into the pool (bounded), else unlinked."""
        for p in self._freed:
            with contextlib.suppress(OSError):
                if len(self._pool_files) < POOL_FILES:
                    size = os.stat(p).st_size
                    if self._pool_bytes + size <= POOL_BYTES:
                        if not self._pool_files:
                            os.makedirs(self.free_dir, exist_ok=True)
                        q = os.path.join(self.free_dir, os.path.basename(p))
                        os.rename(p, q)
                        self._pool_files.append((q, size))
                        self._pool_bytes += size
                        continue
                os.unlink(p)
        self._freed = []

    def close(self) -> None:
        self.commit()
        self._close_files()
        if self._pool is not None and self._own_pool:
            self._pool.shutdown()
            self._pool = None
        self._db.close()

    def __enter__(self) -> BundleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writes ---------------------------------------------------------------------
    def fits(self, size: int) -> bool:
        if self.max_bytes is not None and self.held_bytes + size > self.max_bytes:
            return False
        return self.max_bundles is None or len(self._held) + 1 <= self.max_bundles

    def add(
        self,
        bundle_id: str,
        data: bytes,
        *,
        destination: str,
        expiry_ms: int,
        received_ms: int,
        state: BundleState = BundleState.PENDING,
        age_at_receipt_ms: int = 0,
        previous_hop: str | None = None,
    ) -> str:
        """Stage a bundle: :data:`ADDED`, :data:`DUPLICATE` (its ID is known, as a held
        bundle or a tombstone) or :data:`FULL` (quota; nothing written). Durable after
        :meth:`commit`."""
        if bundle_id in self._ids:
            return DUPLICATE
        if not self.fits(len(data)):
            return FULL
        self.add_many([(bundle_id, data, destination, expiry_ms, received_ms, state,
                        age_at_receipt_ms, previous_hop)])
        return ADDED

    def add_many(self, rows: list[tuple]) -> int:
        """Stage many bundles at once (the fast path of group commit). Each row is
        ``(bundle_id, data, destination, expiry_ms, received_ms, state,
        age_at_receipt_ms, previous_hop)``. The caller has checked quota (:meth:`fits`)
        and duplicates (the agent core knows every ID); a known ID is still ignored here.
        Returns the number of rows written."""
        if not rows:
            return 0
        with self._lock:
            try:
                return self._add_many(rows)
            except BaseException as e:
                self._abort(e)
                raise

    def _add_many(self, rows: list[tuple]) -> int:
        self._begin()
        ids = self._ids
        held = self._held
        big = self.file_threshold
        seg_max = self.segment_bytes
        disk = self._disk
        if (disk and seg_max is not None and self._seg_fd not in self._sync_fds
                and sum(len(r[1]) for r in rows) < INLINE_BELOW_BYTES):
            seg_max = None  # a few small ones: in the rows, no second fsync for them
        if self._tx_rid is None and (big is not None or seg_max is not None):
            self._tx_rid = self._next_rid
        # Rows by statement: [without previous_hop, with it]; bytes in a segment or a file
        # of their own, or inline. (Every None bound costs sqlite3 ~1 µs: an adapter lookup.)
        files: tuple[list[tuple], list[tuple]] = ([], [])
        inline: tuple[list[tuple], list[tuple]] = ([], [])
        bufs: list[bytes] = []
        rid = self._next_rid
        seg = self._seg
        seg_name = _seg_name(seg)
        off = self._seg_off
        seg_n = seg_bytes = 0  # bundles, bytes added to segment ``seg``
        added = 0  # bytes of this call
        for r in rows:
            bid = r[0]
            if bid in ids:
                continue
            data = r[1]
            size = len(data)
            prev = r[7]
            if prev is None:
                head: tuple = (rid, bid, int(r[5]), r[2], size, r[3], r[4], r[6])
            else:
                head = (rid, bid, int(r[5]), r[2], size, r[3], r[4], r[6], prev)
            if big is not None and size >= big:
                name = self._write_file(data)
                files[prev is not None].append(
                    head + (name, 0, crc32c(data)) if disk else head + (name, 0))
                held[bid] = (size, rid, name)
            elif seg_max is not None:
                if off and off + size > seg_max:  # full: the bytes so far, then a new one
                    self._seg_append(bufs)
                    self._seg_count(seg, seg_n, seg_bytes)
                    bufs = []
                    seg_n = seg_bytes = 0
                    self._seg_off = off
                    self._seg_rotate()
                    seg = self._seg
                    seg_name = _seg_name(seg)
                    off = 0
                seg_n += 1
                seg_bytes += size
                bufs.append(data)
                files[prev is not None].append(
                    head + (seg_name, off, crc32c(data)) if disk else head + (seg_name, off))
                held[bid] = (size, rid, seg)
                off += size
            else:
                inline[prev is not None].append(head + (data,))
                held[bid] = (size, rid, None)
            ids[bid] = rid
            rid += 1
            added += size
        if bufs:
            self._seg_append(bufs)
            self._seg_count(seg, seg_n, seg_bytes)
        self._seg_off = off
        self._next_rid = rid
        self.held_bytes += added
        kind = "crc" if disk else "file"
        n = 0
        for has_prev in (0, 1):
            if files[has_prev]:
                self._db.executemany(_INSERTS[has_prev, kind], files[has_prev])
                n += len(files[has_prev])
            if inline[has_prev]:
                self._db.executemany(_INSERTS[has_prev, "inline"], inline[has_prev])
                n += len(inline[has_prev])
        return n

    def _seg_count(self, seg: int, n: int, size: int) -> None:
        sl = self._seg_live.get(seg)
        if sl is None:
            self._seg_live[seg] = [n, size]
        else:
            sl[0] += n
            sl[1] += size

    def contains(self, bundle_id: str) -> bool:
        return bundle_id in self._ids

    def set_state(self, bundle_id: str, state: BundleState, *, reason: int | None = None,
                  keep_data: bool | None = None) -> bool:
        """Move a bundle to ``state``. Leaving the held states drops its bytes (the row
        stays as a tombstone for deduplication) unless ``keep_data``. False if unknown."""
        if keep_data is None:
            keep_data = state in HELD_STATES
        with self._lock:
            rid = self._ids.get(bundle_id)
            if rid is None:
                return False
            try:
                self._begin()
                q = "UPDATE bundles SET state = ?, reason = " + ("NULL" if reason is None
                                                                else str(int(reason)))
                if keep_data:
                    self._db.execute(q + " WHERE rid = ?", (int(state), rid))
                else:
                    self._db.execute(q + ", data = NULL, file = NULL, off = NULL WHERE rid = ?",
                                     (int(state), rid))
                    h = self._held.pop(bundle_id, None)
                    if h is not None:
                        self._free(h)
            except BaseException as e:
                self._abort(e)
                raise
            return True

    def _free(self, h: tuple[int, int, int | str | None]) -> None:
        """A held bundle's bytes are no longer needed (after this transaction commits)."""
        size, _, loc = h
        self.held_bytes -= size
        if loc is None:
            return
        if type(loc) is int:
            sl = self._seg_live[loc]
            sl[0] -= 1
            sl[1] -= size
            if loc == self._seg:
                if sl[0] == 0 and self._low_space and self._seg_off:
                    self._seg_rotate()  # (short of space: its dead bytes go at the commit)
            else:
                if sl[0] == 0:
                    del self._seg_live[loc]
                    self._seg_size.pop(loc, None)
                    self._sparse.discard(loc)
                    self._unlink.append(self._seg_path(loc))
                elif sl[1] * 4 < self._seg_size.get(loc, 0):
                    self._sparse.add(loc)
        else:  # (a payload file's name; mypy does not narrow on type() is)
            self._freed.append(self._file_path(loc))  # type: ignore[arg-type]

    def drop_many(self, items: list[tuple[str, BundleState]]) -> None:
        """Move many bundles to a tombstone state (FORWARDED, DELIVERED) at once: one
        UPDATE per state and up to 256 rowids (``rid IN (...)``: less than half the CPU
        of an executemany by rowid), no read; their bytes (segment space or payload
        file) are freed after the commit."""
        if not items:
            return
        with self._lock:
            try:
                self._begin()
                ids = self._ids
                held = self._held
                by_state: dict[int, list[int]] = {}
                for bid, st in items:
                    rid = ids.get(bid)
                    if rid is None:
                        continue
                    rids = by_state.get(st)
                    if rids is None:
                        rids = by_state[st] = []
                    rids.append(rid)
                    h = held.pop(bid, None)
                    if h is not None:
                        self._free(h)
                for state, rids in by_state.items():
                    self._drop_rids(int(state), rids)  # (an IntEnum binds ~1 µs slower)
            except BaseException as e:
                self._abort(e)
                raise

    def _drop_rids(self, state: int, rids: list[int]) -> None:
        ex = self._db.execute
        for i in range(0, len(rids), _DROP_IN_MAX):
            chunk = rids[i:i + _DROP_IN_MAX]
            n = next(k for k in _DROP_IN if k >= len(chunk))  # few distinct statements
            ex(_DROP_IN[n], [state, *chunk, *_PAD[:n - len(chunk)]])

    def update_data(self, bundle_id: str, data: bytes) -> None:
        """Replace a held bundle's bytes (e.g. after decrypting a BCB); kept inline."""
        with self._lock:
            h = self._held.get(bundle_id)
            if h is None:
                return
            try:
                self._begin()
                self._db.execute("UPDATE bundles SET data = ?, size = ?, file = NULL, "
                                 "off = NULL WHERE rid = ?", (data, len(data), h[1]))
                self._free(h)
                self._held[bundle_id] = (len(data), h[1], None)
                self.held_bytes += len(data)
            except BaseException as e:
                self._abort(e)
                raise

    def purge_tombstones(self, now_ms: int) -> int:
        """Forget tombstones whose bundle has expired (no valid copy can come again)."""
        with self._lock:
            try:
                self._begin()
                where = f"WHERE NOT {_HELD} AND expiry_ms <= ?"
                gone = [r[0] for r in self._db.execute(f"SELECT id FROM bundles {where}",
                                                       (now_ms,))]
                if gone:
                    self._db.execute(f"DELETE FROM bundles {where}", (now_ms,))
                    for bid in gone:
                        self._ids.pop(bid, None)
                return len(gone)
            except BaseException as e:
                self._abort(e)
                raise

    def _compact(self) -> None:
        """Copy the held bundles of sparse closed segments to the current one (rows
        updated in this transaction); the old segments go after the commit."""
        # Not the segment just closed: the bundles of the last batches in it are usually
        # about to be dropped anyway.
        sparse = {n for n in self._sparse if n < self._seg - 1}
        if not sparse:
            return
        self._sparse -= sparse
        moved = [(bid, h) for bid, h in self._held.items() if h[2] in sparse]
        if not moved:
            return
        self._begin()
        self._compacted = True
        fds: dict[int, int] = {}
        try:
            for i in range(0, len(moved), 256):
                chunk = moved[i:i + 256]
                bufs = []
                for _, (size, rid, loc) in chunk:
                    assert isinstance(loc, int)  # (a segment: the moved are in sparse ones)
                    fd = fds.get(loc)
                    if fd is None:
                        fd = fds[loc] = os.open(self._seg_path(loc), os.O_RDONLY)
                    bufs.append(_pread_all(fd, size, self._off(rid)))
                if self._seg_off and self._seg_off + sum(map(len, bufs)) > (
                        self.segment_bytes or 0):
                    self._seg_rotate()
                seg, off = self._seg, self._seg_off
                name = _seg_name(seg)
                params = []
                for (bid, (size, rid, loc)), _b in zip(chunk, bufs, strict=True):
                    params.append((name, off, rid))
                    self._free((size, rid, loc))
                    self.held_bytes += size
                    sl = self._seg_live.setdefault(seg, [0, 0])
                    sl[0] += 1
                    sl[1] += size
                    self._held[bid] = (size, rid, seg)
                    off += size
                self._seg_append(bufs)
                self._seg_off = off
                self._db.executemany("UPDATE bundles SET file = ?, off = ? WHERE rid = ?",
                                     params)
        finally:
            for fd in fds.values():
                os.close(fd)

    def _off(self, rid: int) -> int:
        return self._db.execute("SELECT off FROM bundles WHERE rid = ?", (rid,)).fetchone()[0]

    # --- reads ----------------------------------------------------------------------
    def get(self, bundle_id: str) -> StoredBundle | None:
        with self._lock:
            rid = self._ids.get(bundle_id)
            if rid is None:
                return None
            row = self._db.execute(_SELECT + " WHERE rid = ?", (rid,)).fetchone()
            return None if row is None else self._row(row, {})

    def by_state(self, *states: BundleState, destination: str | None = None) -> Iterator[StoredBundle]:
        """Bundles in any of ``states`` (a scan; the agent reads them all at start),
        optionally for one destination."""
        marks = ",".join("?" * len(states))
        q = _SELECT + f" WHERE state IN ({marks})"
        args: list[object] = [int(s) for s in states]
        if destination is not None:
            q += " AND destination = ?"
            args.append(destination)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY received_ms, id", args).fetchall()
            fds: dict[str, int] = {}
            try:
                out = [self._row(r, fds) for r in rows]
            finally:
                for fd in fds.values():
                    os.close(fd)
        return iter(out)

    def _row(self, r: tuple, fds: dict[str, int]) -> StoredBundle:
        data = r[3] if r[10] is None else self._read(r[10], r[11], r[4], fds)
        return StoredBundle(r[0], BundleState(r[1]), r[2], data, r[4], r[5], r[6], r[7], r[8], r[9])

    def _read(self, name: str, off: int | None, size: int, fds: dict[str, int]) -> bytes | None:
        """A payload's bytes from its segment or file; None if missing or short."""
        if name.startswith(_SEG_PREFIX) and off is not None:
            p = os.path.join(self.seg_dir, name)
        else:
            p = self._file_path(name)
            off = 0
        try:
            fd = fds.get(p)
            if fd is None:
                fd = fds[p] = os.open(p, os.O_RDONLY)
            data = _pread_all(fd, size, off)
        except OSError:
            return None
        return data if len(data) == size else None

    def expired(self, now_ms: int) -> list[str]:
        """IDs of held bundles whose lifetime has run out at ``now_ms``."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                f"SELECT id FROM bundles WHERE expiry_ms <= ? AND {_HELD}",
                (now_ms,))]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM bundles GROUP BY state")
            out = {s.name.lower(): 0 for s in BundleState}
            for st, n in rows:
                out[BundleState(st).name.lower()] = n
        return out

    def meta_get(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def meta_set(self, key: str, value: str) -> None:
        with self._lock:
            self._begin()
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             (key, value))


_SELECT = ("SELECT id, state, destination, data, size, expiry_ms, received_ms, "
           "age_at_receipt_ms, previous_hop, reason, file, off FROM bundles")


def _is_no_space(e: BaseException) -> bool:
    """A failure for lack of space (the filesystem's, or a quota's)?"""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(e, sqlite3.Error):
        return (getattr(e, "sqlite_errorcode", None) == _SQLITE_FULL
                or "disk is full" in str(e))
    return False


def _is_seg_name(name: str) -> bool:
    try:
        return name.startswith(_SEG_PREFIX) and int(name[len(_SEG_PREFIX):], 16) >= 0
    except ValueError:
        return False


def _seg_name(n: int) -> str:
    return f"{_SEG_PREFIX}{n:08x}"


def _write_all(fd: int, bufs: list[bytes]) -> None:
    """writev(2) all of ``bufs`` (a short write finishes with write(2))."""
    for i in range(0, len(bufs), _IOV_MAX):
        chunk = bufs[i:i + _IOV_MAX]
        want = sum(map(len, chunk))
        n = os.writev(fd, chunk)
        if n < want:
            view = memoryview(b"".join(chunk))[n:]
            while view:
                view = view[os.write(fd, view):]


def _pread_all(fd: int, size: int, off: int) -> bytes:
    data = os.pread(fd, size, off)
    while len(data) < size:
        more = os.pread(fd, size - len(data), off + len(data))
        if not more:
            break
        data += more
    return data


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
