"""A node's persistent bundle store: SQLite in WAL mode, group commit.

Durability: every accepted bundle is written in a transaction, and the caller acks the
bundles of a batch only after :meth:`BundleStore.commit` returns. With WAL, COMMIT appends
the transaction to the ``-wal`` file with write(2) before it returns, so once ``commit()``
returns the data is in the kernel's page cache and survives ``kill -9`` of the process even
with ``synchronous=NORMAL``; what NORMAL gives up is durability across power loss or a
kernel crash (the WAL is fsynced only at checkpoints). ``synchronous=FULL`` fsyncs the WAL
at every commit and survives those too, at one fsync per commit (about 4 ms on this
project's machines; group commit makes that a cost per batch, not per bundle).

The default is ``durability="process"`` (WAL + NORMAL): it survives ``kill -9`` of the
agent, which is the failure issue 4 asks about, and every agent of an emulation shares one
kernel, whose crash ends the emulation anyway. ``durability="disk"`` (WAL + FULL) is there
for agents that must survive power loss. Both are tested under ``kill -9``
(tests/unit/test_dtn_store.py).

Deduplication: the primary key is the bundle ID (source, creation time, sequence, and for
fragments offset and length). Delivered, forwarded and deleted bundles stay as tombstones
(their bytes dropped) until their expiry, so a copy that arrives again is recognised.

Quota: ``max_bytes`` / ``max_bundles`` bound the bundles held (bytes not yet dropped); a
bundle that does not fit is refused (:data:`FULL`), never dropped silently: the agent core
sends a "deleted, depleted storage" status report for it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from netemu.errors import NetemuError


class State(IntEnum):
    """Where a stored bundle stands."""

    PENDING = 1     # waiting to be forwarded
    LOCAL = 2       # for a local endpoint, waiting for the application to take it
    FORWARDED = 3   # handed on (tombstone unless kept for more copies)
    DELIVERED = 4   # taken by the application (tombstone)
    DELETED = 5     # deleted with a reason (tombstone)


HELD_STATES = (State.PENDING, State.LOCAL)

ADDED = "added"
DUPLICATE = "duplicate"
FULL = "full"


class StoreError(NetemuError):
    """The store cannot be opened or used (path, permissions, corruption)."""


@dataclass(frozen=True)
class StoredBundle:
    """One row of the store, as the agent core restores it."""

    id: str
    state: State
    destination: str
    data: bytes | None
    size: int
    expiry_ms: int
    received_ms: int
    age_at_receipt_ms: int
    previous_hop: str | None
    reason: int | None = None


# A rowid table (1 KB rows in a WITHOUT ROWID table cost 3x more to insert), indexed by
# ID (dedupe) and state; expiry sweeps are rare and scan.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
    id TEXT PRIMARY KEY,
    state INTEGER NOT NULL,
    destination TEXT NOT NULL,
    size INTEGER NOT NULL,
    expiry_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    age_at_receipt_ms INTEGER NOT NULL DEFAULT 0,
    previous_hop TEXT,
    reason INTEGER,
    data BLOB
);
CREATE INDEX IF NOT EXISTS bundles_state ON bundles(state, destination);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


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
    ) -> None:
        if durability not in ("disk", "process"):
            raise StoreError(f"durability must be 'disk' (synchronous=FULL) or 'process' "
                             f"(synchronous=NORMAL), not {durability!r}")
        self.path = str(path)
        self.max_bytes = max_bytes
        self.max_bundles = max_bundles
        self._lock = threading.Lock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=" + ("FULL" if durability == "disk"
                                                      else "NORMAL"))
            self._db.execute("PRAGMA temp_store=MEMORY")
            self._db.executescript(_SCHEMA)
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM bundles WHERE data IS NOT NULL"
            ).fetchone()
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"{self.path}: cannot open bundle store: {e}") from None
        self.held_bundles, self.held_bytes = int(row[0]), int(row[1])
        self._in_tx = False

    # --- transactions ---------------------------------------------------------------
    def _begin(self) -> None:
        if not self._in_tx:
            self._db.execute("BEGIN")
            self._in_tx = True

    def commit(self) -> None:
        """Make every write since the last commit durable (see the module doc)."""
        with self._lock:
            if self._in_tx:
                self._db.execute("COMMIT")
                self._in_tx = False

    def close(self) -> None:
        self.commit()
        self._db.close()

    def __enter__(self) -> BundleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writes ---------------------------------------------------------------------
    def fits(self, size: int) -> bool:
        if self.max_bytes is not None and self.held_bytes + size > self.max_bytes:
            return False
        return self.max_bundles is None or self.held_bundles + 1 <= self.max_bundles

    def add(
        self,
        bundle_id: str,
        data: bytes,
        *,
        destination: str,
        expiry_ms: int,
        received_ms: int,
        state: State = State.PENDING,
        age_at_receipt_ms: int = 0,
        previous_hop: str | None = None,
    ) -> str:
        """Stage a bundle: :data:`ADDED`, :data:`DUPLICATE` (its ID is known, as a held
        bundle or a tombstone) or :data:`FULL` (quota; nothing written). Durable after
        :meth:`commit`."""
        size = len(data)
        with self._lock:
            if not self.fits(size):
                if self._exists(bundle_id):
                    return DUPLICATE
                return FULL
            self._begin()
            cur = self._db.execute(
                "INSERT OR IGNORE INTO bundles (id, state, destination, size, expiry_ms, "
                "received_ms, age_at_receipt_ms, previous_hop, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (bundle_id, int(state), destination, size, expiry_ms, received_ms,
                 age_at_receipt_ms, previous_hop, data))
            if cur.rowcount == 0:
                return DUPLICATE
            self.held_bundles += 1
            self.held_bytes += size
            return ADDED

    def add_many(self, rows: list[tuple]) -> int:
        """Stage many bundles at once (the fast path of group commit; ~20% cheaper than
        :meth:`add` per bundle). Each row is ``(bundle_id, data, destination, expiry_ms,
        received_ms, state, age_at_receipt_ms, previous_hop)``. The caller has checked
        quota (:meth:`fits`) and duplicates (the agent core knows every ID); a duplicate
        is still ignored here. Returns the number of rows written."""
        if not rows:
            return 0
        with self._lock:
            self._begin()
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO bundles (id, state, destination, size, expiry_ms, "
                "received_ms, age_at_receipt_ms, previous_hop, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r[0], int(r[5]), r[2], len(r[1]), r[3], r[4], r[6], r[7], r[1])
                 for r in rows])
            n = self._db.total_changes - before
            if n == len(rows):
                self.held_bundles += n
                self.held_bytes += sum(len(r[1]) for r in rows)
            else:  # some were duplicates: recount exactly
                row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM bundles "
                                       "WHERE data IS NOT NULL").fetchone()
                self.held_bundles, self.held_bytes = int(row[0]), int(row[1])
            return n

    def _exists(self, bundle_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM bundles WHERE id = ?",
                                (bundle_id,)).fetchone() is not None

    def contains(self, bundle_id: str) -> bool:
        with self._lock:
            return self._exists(bundle_id)

    def set_state(self, bundle_id: str, state: State, *, reason: int | None = None,
                  keep_data: bool | None = None) -> bool:
        """Move a bundle to ``state``. Leaving the held states drops its bytes (the row
        stays as a tombstone for deduplication) unless ``keep_data``. False if unknown."""
        if keep_data is None:
            keep_data = state in HELD_STATES
        with self._lock:
            row = self._db.execute("SELECT size, data IS NOT NULL FROM bundles WHERE id = ?",
                                   (bundle_id,)).fetchone()
            if row is None:
                return False
            self._begin()
            if keep_data:
                self._db.execute("UPDATE bundles SET state = ?, reason = ? WHERE id = ?",
                                 (int(state), reason, bundle_id))
            else:
                self._db.execute("UPDATE bundles SET state = ?, reason = ?, data = NULL "
                                 "WHERE id = ?", (int(state), reason, bundle_id))
                if row[1]:
                    self.held_bundles -= 1
                    self.held_bytes -= int(row[0])
            return True

    def update_data(self, bundle_id: str, data: bytes) -> None:
        """Replace a held bundle's bytes (e.g. after decrypting a BCB)."""
        with self._lock:
            row = self._db.execute("SELECT size FROM bundles WHERE id = ? AND data IS NOT NULL",
                                   (bundle_id,)).fetchone()
            if row is None:
                return
            self._begin()
            self._db.execute("UPDATE bundles SET data = ?, size = ? WHERE id = ?",
                             (data, len(data), bundle_id))
            self.held_bytes += len(data) - int(row[0])

    def purge_tombstones(self, now_ms: int) -> int:
        """Forget tombstones whose bundle has expired (no valid copy can come again)."""
        with self._lock:
            self._begin()
            cur = self._db.execute("DELETE FROM bundles WHERE data IS NULL AND expiry_ms <= ?",
                                   (now_ms,))
            return cur.rowcount

    # --- reads ----------------------------------------------------------------------
    def get(self, bundle_id: str) -> StoredBundle | None:
        with self._lock:
            row = self._db.execute(_SELECT + " WHERE id = ?", (bundle_id,)).fetchone()
        return None if row is None else _row(row)

    def by_state(self, *states: State, destination: str | None = None) -> Iterator[StoredBundle]:
        """Bundles in any of ``states`` (index scan), optionally for one destination."""
        marks = ",".join("?" * len(states))
        q = _SELECT + f" WHERE state IN ({marks})"
        args: list[object] = [int(s) for s in states]
        if destination is not None:
            q += " AND destination = ?"
            args.append(destination)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY received_ms, id", args).fetchall()
        return (_row(r) for r in rows)

    def expired(self, now_ms: int) -> list[str]:
        """IDs of held bundles whose lifetime has run out at ``now_ms``."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                "SELECT id FROM bundles WHERE expiry_ms <= ? AND data IS NOT NULL",
                (now_ms,))]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM bundles GROUP BY state")
            out = {s.name.lower(): 0 for s in State}
            for st, n in rows:
                out[State(st).name.lower()] = n
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
           "age_at_receipt_ms, previous_hop, reason FROM bundles")


def _row(r: tuple) -> StoredBundle:
    return StoredBundle(r[0], State(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9])
