"""Retention and downsampling: raw readings expire, their 1-minute and 1-hour aggregates stay.

Each raw reading is folded into its ``readings_1m`` and ``readings_1h`` buckets (count, min,
max, sum: avg = sum / count) in the same transaction that deletes it, so a reading counts
exactly once whenever it arrives (a backlog older than the cutoff is folded in on the next
run). Work goes in chunks of at most ``chunk_rows`` rows per transaction, oldest first, so
ingest never waits behind one giant delete. Portable SQL; the two dialect differences
(bucket arithmetic, two-argument min/max) are chosen once in ``__init__``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from central.config import RetentionConfig
from central.db import Database

DAY_S = 86_400.0
AGGREGATES = (("readings_1m", 60), ("readings_1h", 3600))


@dataclass
class RetentionReport:
    raw_deleted: int = 0
    minute_deleted: int = 0
    hour_deleted: int = 0
    chunks: int = 0
    finished: bool = True  # False: stopped at the time budget, more is left
    seconds: float = 0.0


class Retention:
    def __init__(
        self, db: Database, config: RetentionConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.config = config
        self.clock = clock
        sqlite = db.dialect == "sqlite"
        least, greatest = ("MIN", "MAX") if sqlite else ("LEAST", "GREATEST")

        def bucket(width: int) -> str:
            # floor(t / w) * w; SQLite has no floor() in every build, and t is positive here.
            if sqlite:
                return f"CAST(t / {width} AS INTEGER) * {width}"
            return f"floor(t / {width}) * {width}"

        self._fold = [
            (
                f"INSERT INTO {table} (gateway, device, quantity, bucket, n, vmin, vmax, vsum)"
                f" SELECT gateway, device, quantity, {bucket(width)} AS b, COUNT(*), MIN(v),"
                " MAX(v), SUM(v) FROM readings WHERE t <= ? AND v IS NOT NULL"
                f" GROUP BY gateway, device, quantity, b"
                " ON CONFLICT (gateway, device, quantity, bucket) DO UPDATE SET"
                f" n = {table}.n + excluded.n,"
                f" vmin = {least}({table}.vmin, excluded.vmin),"
                f" vmax = {greatest}({table}.vmax, excluded.vmax),"
                f" vsum = {table}.vsum + excluded.vsum"
            )
            for table, width in AGGREGATES
        ]

    def _chunk_end(self, table: str, column: str, cutoff: float) -> float | None:
        """The last ``column`` value of the next chunk (inclusive), or None if nothing is due.

        Rows sharing that value are all taken, so a chunk may exceed ``chunk_rows`` by ties.
        """
        n = self.config.chunk_rows
        row = self.db.execute(
            f"SELECT {column} FROM {table} WHERE {column} < ? ORDER BY {column} LIMIT 1 OFFSET ?",
            (cutoff, n - 1),
        ).fetchone()
        if row is not None:
            return float(row[0])
        row = self.db.execute(
            f"SELECT MAX({column}) FROM {table} WHERE {column} < ?", (cutoff,)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def raw_chunk(self, now: float) -> int:
        """Fold one chunk of expired raw readings into the aggregates and delete it."""
        if self.config.raw_days is None:
            return 0
        end = self._chunk_end("readings", "t", now - self.config.raw_days * DAY_S)
        if end is None:
            return 0
        with self.db.transaction():
            for statement in self._fold:
                self.db.execute(statement, (end,))
            return self.db.execute("DELETE FROM readings WHERE t <= ?", (end,)).rowcount

    def aggregate_chunk(self, table: str, days: float | None, now: float) -> int:
        if days is None:
            return 0
        end = self._chunk_end(table, "bucket", now - days * DAY_S)
        if end is None:
            return 0
        with self.db.transaction():
            return self.db.execute(f"DELETE FROM {table} WHERE bucket <= ?", (end,)).rowcount

    def next_chunk(self, now: float) -> tuple[str, int] | None:
        """One bounded transaction of the first step with work due: (step, rows deleted);
        None once nothing is due. The service yields to its event loop between calls."""
        c = self.config
        for name, step in (
            ("raw", lambda: self.raw_chunk(now)),
            ("minute", lambda: self.aggregate_chunk("readings_1m", c.minute_days, now)),
            ("hour", lambda: self.aggregate_chunk("readings_1h", c.hour_days, now)),
        ):
            deleted = step()
            if deleted:
                return name, deleted
        return None

    def run(self, budget_s: float | None = None) -> RetentionReport:
        """Chunks until nothing is due, or until ``budget_s`` is spent."""
        started = time.monotonic()
        now = self.clock()
        report = RetentionReport()
        while True:
            if budget_s is not None and time.monotonic() - started > budget_s:
                report.finished = False
                break
            done = self.next_chunk(now)
            if done is None:
                break
            name, deleted = done
            setattr(report, f"{name}_deleted", getattr(report, f"{name}_deleted") + deleted)
            report.chunks += 1
        report.seconds = time.monotonic() - started
        return report
