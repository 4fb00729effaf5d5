"""The gateway's durable outbox: SQLite (WAL) holding sealed SenML packs until their PUBACK.

Why packs and not readings: the dedup key (gateway, epoch, seq) names a pack. Sealing the
pack at append time — records grouped, sequence assigned, bytes encoded — means a pack
re-sent after a crash or reconnect is byte-for-byte the same message, so central can drop it
as a duplicate. Each open of the outbox starts a new boot epoch, never used before by this
gateway (see ``_next_epoch``), so sequence numbers never collide across restarts, crashes
mid-epoch, or a corrupt file replaced by a fresh one.

Eviction policy (stated, counted): when the file's payload bytes exceed ``max_bytes``, the
oldest packs of the *lowest* priority go first (telemetry before events/warnings); packs older
than ``max_age_s`` expire. Nothing else ever deletes a pack except :meth:`Outbox.ack`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from cloud_bridge.senml import Pack, Record, WireFormat, encode_pack

log = logging.getLogger(__name__)

PRIORITY_TELEMETRY = 0
PRIORITY_EVENT = 5
PRIORITY_WARNING = 9

_SCHEMA = """
-- AUTOINCREMENT: an id is never reused, so a late PUBACK for an evicted pack can never
-- delete a newer pack that would otherwise have inherited its id.
CREATE TABLE IF NOT EXISTS packs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    epoch      INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    priority   INTEGER NOT NULL,
    created    REAL    NOT NULL,
    n_records  INTEGER NOT NULL,
    first_time REAL    NOT NULL,
    payload    BLOB    NOT NULL,
    UNIQUE (epoch, seq)
);
CREATE INDEX IF NOT EXISTS packs_evict ON packs (priority, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_COUNTERS = (
    "epoch",
    "packs_appended",
    "records_appended",
    "packs_acked",
    "records_acked",
    "packs_evicted",
    "records_evicted",
    # Of those, records evicted after they were published but before central confirmed them:
    # they may well have been stored (an eviction is a loss only for packs never sent).
    "records_evicted_sent",
    "packs_expired",
    "records_expired",
    "corrupt_files_moved_aside",
    "publish_latency_p99_us",  # a gauge, written by the gateway's housekeeping
)


class OutboxFull(Exception):
    """Even after evicting everything the policy allows, the new packs do not fit."""


def _is_disk_full(exc: sqlite3.OperationalError) -> bool:
    return "full" in str(exc).lower()  # SQLITE_FULL: "database or disk is full"


def _write_epoch_file(path: Path, epoch: int) -> None:
    tmp = path.with_name(f"{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write(f"{epoch}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _move_aside(path: Path, now: float) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            src.rename(Path(f"{target}{suffix}"))
    return target


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: int
    epoch: int
    seq: int
    priority: int
    created: float
    n_records: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutboxStats:
    epoch: int
    depth_packs: int
    depth_records: int
    payload_bytes: int
    file_bytes: int
    oldest_age_s: float | None
    packs_appended: int
    records_appended: int
    packs_acked: int
    records_acked: int
    packs_evicted: int
    records_evicted: int
    records_evicted_sent: int
    packs_expired: int
    records_expired: int
    corrupt_files_moved_aside: int
    publish_latency_p99_us: int

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


class Outbox:
    def __init__(
        self,
        path: str | Path,
        gateway: str,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        max_age_s: float | None = None,
        wire_format: WireFormat = "json",
        synchronous: str = "NORMAL",
        priority_synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
        new_epoch: bool = True,
        check_integrity: bool = True,
        max_file_bytes: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.gateway = gateway
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.wire_format: WireFormat = wire_format
        self.synchronous = synchronous
        self.priority_synchronous = priority_synchronous
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.moved_aside: Path | None = None
        self._db = self._connect()
        if check_integrity and not self._healthy():
            # Never silently reset: the damaged file is kept for inspection and reported.
            self._db.close()
            self.moved_aside = _move_aside(self.path, self._clock())
            log.error("outbox %s is corrupt; moved aside to %s", self.path, self.moved_aside)
            self._db = self._connect()
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(packs)")}
        if "sent_at" not in columns:
            # When the broker took the pack (PUBACK) but central has not yet confirmed it.
            self._db.execute("ALTER TABLE packs ADD COLUMN sent_at REAL")
        # peek()'s order, so it never sorts the whole backlog (30-50 ms per call at 1M).
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS packs_send ON packs (priority DESC, id, sent_at)"
        )
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS packs_unconfirmed ON packs (sent_at)"
            " WHERE sent_at IS NOT NULL"
        )
        if max_file_bytes is not None:
            # A hard cap on the file (SQLITE_FULL beyond it), as on a small dedicated partition.
            # The WAL is outside max_page_count: checkpoint early and truncate it, so the
            # pair stays near the cap (main file ≤ 7/8 of it, WAL ≈ 1/8).
            (page_size,) = self._db.execute("PRAGMA page_size").fetchone()
            pages = max(16, max_file_bytes // page_size)
            self._db.execute(f"PRAGMA max_page_count={pages * 7 // 8}")
            self._db.execute(f"PRAGMA wal_autocheckpoint={max(4, pages // 8)}")
            self._db.execute(f"PRAGMA journal_size_limit={max_file_bytes // 8}")
        with self._tx():
            for key in _COUNTERS:
                self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, 0)", (key,))
            if new_epoch:
                self._db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'epoch'", (self._next_epoch(),)
                )
            if self.moved_aside is not None:
                self._bump(corrupt_files_moved_aside=1)
        self.epoch = self._counter("epoch")
        if new_epoch:
            _write_epoch_file(self._epoch_file, self.epoch)
        row = self._db.execute(
            "SELECT COALESCE(MAX(seq) + 1, 0) FROM packs WHERE epoch = ?", (self.epoch,)
        ).fetchone()
        self._next_seq: int = row[0]
        self._payload_bytes: int = self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM packs"
        ).fetchone()[0]
        self._listeners: list[Callable[[], None]] = []

    @property
    def _epoch_file(self) -> Path:
        return self.path.with_name(f"{self.path.name}.epoch")

    def _next_epoch(self) -> int:
        """A boot epoch this gateway has never used, even if the outbox file was lost.

        (gateway, epoch, seq) is central's dedup key: a repeated epoch would make central drop
        new packs as duplicates. The file's counter, a sidecar file written atomically, and the
        clock in seconds (for when both are gone) each set a floor.
        """
        stored = self._counter("epoch")
        try:
            sidecar = int(self._epoch_file.read_text().strip() or 0)
        except (OSError, ValueError):
            sidecar = 0
        return max(stored + 1, sidecar + 1, int(self._clock()))

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.DatabaseError:
            pass  # not a database at all: _healthy() says so
        return db

    def _healthy(self) -> bool:
        try:
            (result,) = self._db.execute("PRAGMA quick_check").fetchone()
            return bool(result == "ok")
        except sqlite3.DatabaseError:
            return False

    # -- plumbing -----------------------------------------------------------------------
    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def _counter(self, key: str) -> int:
        return self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def _bump(self, **deltas: int) -> None:
        self._db.executemany(
            "UPDATE meta SET value = value + ? WHERE key = ?",
            [(delta, key) for key, delta in deltas.items() if delta],
        )

    def set_gauge(self, key: str, value: int) -> None:
        """Record a figure that `sentryline outbox stats` shows (e.g. publish latency)."""
        self._db.execute("UPDATE meta SET value = ? WHERE key = ?", (int(value), key))

    def add_listener(self, callback: Callable[[], None]) -> None:
        """``callback`` runs after every append (the uplink uses it to wake up)."""
        self._listeners.append(callback)

    # -- writing ------------------------------------------------------------------------
    def append(
        self, batches: Iterable[Sequence[Record]], priority: int = PRIORITY_TELEMETRY
    ) -> list[tuple[int, int]]:
        """Seal each batch of records into one pack and store them all in one transaction.

        Returns the (epoch, seq) of each pack. Eviction for the byte bound runs in the same
        transaction, so the file never stays above its bound.
        """
        now = self._clock()
        rows = []
        keys = []
        n_records = 0
        for records in batches:
            if not records:
                continue
            pack = Pack(self.gateway, self.epoch, self._next_seq, tuple(records))
            payload = encode_pack(pack, self.wire_format)
            first_time = min(r.time for r in records)
            rows.append(
                (self.epoch, self._next_seq, priority, now, len(records), first_time, payload)
            )
            keys.append((self.epoch, self._next_seq))
            self._next_seq += 1
            n_records += len(records)
        if not rows:
            return []
        try:
            self._insert(rows, n_records, priority)
        except sqlite3.OperationalError as exc:
            if not _is_disk_full(exc):
                self._next_seq -= len(rows)
                raise
            # The disk (or max_page_count) bound forces eviction, by the stated policy, in
            # growing rounds: freed payload bytes do not map 1:1 to free pages.
            room = max(needed_bytes := sum(len(r[-1]) for r in rows), self._payload_bytes // 16)
            while True:
                freed = self._evict_for_space(room, below=priority + 1)
                log.warning("outbox full: evicted %d bytes to make room", freed)
                try:
                    self._insert(rows, n_records, priority)
                    break
                except sqlite3.OperationalError as again:
                    if not _is_disk_full(again) or freed == 0:
                        self._next_seq -= len(rows)
                        if _is_disk_full(again):
                            raise OutboxFull(
                                f"outbox {self.path}: {needed_bytes} bytes do not fit even"
                                " after evicting everything the policy allows"
                            ) from None
                        raise
                room *= 2
        for callback in self._listeners:
            callback()
        return keys

    def _insert(self, rows: list[tuple], n_records: int, priority: int) -> None:
        payload_bytes = self._payload_bytes
        durable = priority > PRIORITY_TELEMETRY and self.priority_synchronous != self.synchronous
        if durable:  # events and warnings survive a power cut, not just a process crash
            self._db.execute(f"PRAGMA synchronous={self.priority_synchronous}")
        try:
            with self._tx():
                self._db.executemany(
                    "INSERT INTO packs (epoch, seq, priority, created, n_records, first_time,"
                    " payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._payload_bytes += sum(len(r[-1]) for r in rows)
                self._bump(packs_appended=len(rows), records_appended=n_records)
                if self._payload_bytes > self.max_bytes:
                    self._evict_down_to(self.max_bytes, below=None)
        except BaseException:
            # Rolled back (disk full, ...): the cached byte count must not keep the lost
            # packs, or every later eviction would delete more than needed.
            self._payload_bytes = payload_bytes
            raise
        finally:
            if durable:
                self._db.execute(f"PRAGMA synchronous={self.synchronous}")

    def _evict_for_space(self, nbytes: int, below: int | None) -> int:
        before = self._payload_bytes
        with self._tx():
            self._evict_down_to(max(0, self._payload_bytes - nbytes), below)
        return before - self._payload_bytes

    def _evict_down_to(self, target_bytes: int, below: int | None) -> None:
        """Evict oldest packs of the lowest priority first until at most ``target_bytes``.

        ``below``: only packs of a lower priority than this may go (None: any).
        """
        packs = records = records_sent = 0
        where = "" if below is None else f"WHERE priority < {int(below)}"
        while self._payload_bytes > target_bytes:
            victims = self._db.execute(
                f"SELECT id, n_records, LENGTH(payload), sent_at FROM packs {where}"
                " ORDER BY priority, id LIMIT 64"
            ).fetchall()
            if not victims:
                break
            chosen = []
            for pack_id, n, size, sent_at in victims:
                if self._payload_bytes <= target_bytes:
                    break
                chosen.append((pack_id,))
                self._payload_bytes -= size
                packs += 1
                records += n
                if sent_at is not None:
                    records_sent += n
            self._db.executemany("DELETE FROM packs WHERE id = ?", chosen)
        self._bump(packs_evicted=packs, records_evicted=records, records_evicted_sent=records_sent)

    def expire(self) -> int:
        """Drop packs older than ``max_age_s``; returns how many records expired."""
        if self.max_age_s is None:
            return 0
        cutoff = self._clock() - self.max_age_s
        with self._tx():
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(n_records), 0), COALESCE(SUM(LENGTH(payload)), 0)"
                " FROM packs WHERE created < ?",
                (cutoff,),
            ).fetchone()
            if row[0]:
                self._db.execute("DELETE FROM packs WHERE created < ?", (cutoff,))
                self._payload_bytes -= row[2]
                self._bump(packs_expired=row[0], records_expired=row[1])
        return int(row[1])

    # -- reading and acknowledging --------------------------------------------------------
    def peek(
        self,
        limit: int,
        exclude: Iterable[int] = (),
        *,
        min_priority: int | None = None,
        max_priority: int | None = None,
        after_id: int | None = None,
        upto_id: int | None = None,
        sent_before: float | None = None,
    ) -> list[OutboxEntry]:
        """The next packs to send: highest priority first, then oldest, within the filters.

        Packs already sent and awaiting central's confirmation are left out, unless they were
        sent before ``sent_before`` (their confirmation is overdue: send again).
        """
        if limit <= 0:
            return []
        excluded = tuple(exclude)
        clauses: list[str] = ["(sent_at IS NULL OR sent_at < ?)"]
        params: list[float] = [-1.0 if sent_before is None else sent_before]
        if excluded:
            clauses.append(f"id NOT IN ({','.join('?' * len(excluded))})")
            params.extend(excluded)
        for clause, value in (
            ("priority >= ?", min_priority),
            ("priority <= ?", max_priority),
            ("id > ?", after_id),
            ("id <= ?", upto_id),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            "SELECT id, epoch, seq, priority, created, n_records, payload FROM packs "
            f"{where} ORDER BY priority DESC, id LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [OutboxEntry(*row) for row in rows]

    def max_id(self) -> int:
        """The newest pack's id (0 when empty): the live/backlog boundary at a reconnect."""
        return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM packs").fetchone()[0])

    def mark_sent(self, ids: Sequence[int]) -> None:
        """The broker has these packs (PUBACK); keep them until central confirms."""
        if not ids:
            return
        rows = [(self._clock(), i) for i in ids]
        for _ in range(8):
            try:
                self._db.executemany("UPDATE packs SET sent_at = ? WHERE id = ?", rows)
                return
            except sqlite3.OperationalError as exc:
                # A full file: the grown rows need pages. Make room by the stated policy.
                if not _is_disk_full(exc) or not self._evict_for_space(
                    max(4096, self._payload_bytes // 16), below=None
                ):
                    raise

    def unconfirmed(self, sent_since: float | None = None) -> int:
        """Packs the broker has but central has not confirmed yet (sent since a time)."""
        return int(
            self._db.execute(
                "SELECT COUNT(*) FROM packs WHERE sent_at IS NOT NULL AND sent_at >= ?",
                (-1.0 if sent_since is None else sent_since,),
            ).fetchone()[0]
        )

    def unsend_all(self) -> int:
        """After a reconnect nothing the old connection sent is trusted to have arrived."""
        return self._db.execute(
            "UPDATE packs SET sent_at = NULL WHERE sent_at IS NOT NULL"
        ).rowcount

    def confirm(self, epoch: int, seq_ranges: Sequence[tuple[int, int]]) -> int:
        """Central stored these packs: delete them. Returns how many records that removed."""
        ids: list[int] = []
        for first, last in seq_ranges:
            ids += [
                row[0]
                for row in self._db.execute(
                    "SELECT id FROM packs WHERE epoch = ? AND seq BETWEEN ? AND ?",
                    (epoch, first, last),
                )
            ]
        return self.ack(ids)

    def ack(self, ids: Sequence[int]) -> int:
        """Delete packs whose PUBACK arrived. Returns how many records that removed."""
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        with self._tx():
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(n_records), 0), COALESCE(SUM(LENGTH(payload)), 0)"
                f" FROM packs WHERE id IN ({marks})",
                tuple(ids),
            ).fetchone()
            self._db.execute(f"DELETE FROM packs WHERE id IN ({marks})", tuple(ids))
            self._payload_bytes -= row[2]
            self._bump(packs_acked=row[0], records_acked=row[1])
        return int(row[1])

    def depth(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM packs").fetchone()[0]

    def stats(self) -> OutboxStats:
        depth_packs, depth_records, oldest = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(n_records), 0), MIN(created) FROM packs"
        ).fetchone()
        counters = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        file_bytes = sum(
            p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists()
        )
        return OutboxStats(
            epoch=self.epoch,
            depth_packs=depth_packs,
            depth_records=depth_records,
            payload_bytes=self._payload_bytes,
            file_bytes=file_bytes,
            oldest_age_s=None if oldest is None else max(0.0, self._clock() - oldest),
            **{k: counters.get(k, 0) for k in _COUNTERS if k != "epoch"},
        )

    def close(self) -> None:
        self._db.close()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on error (the connection is in autocommit)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
                return
            except BaseException:
                self._rollback()  # a failed COMMIT (disk full, I/O) can leave it open
                raise
        self._rollback()

    def _rollback(self) -> None:
        # SQLite may already have rolled back on its own (SQLITE_FULL, SQLITE_IOERR, ...):
        # a second ROLLBACK would fail and hide the original error.
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")


def open_readonly_stats(path: str | Path) -> OutboxStats:
    """Stats of an outbox file without starting a new epoch (for the CLI)."""
    if not Path(path).is_file():
        raise FileNotFoundError(path)
    box = Outbox(path, gateway="-", new_epoch=False, check_integrity=False)
    try:
        return box.stats()
    finally:
        box.close()
