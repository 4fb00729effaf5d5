"""Readings of one series, downsampled into time buckets (min / max / avg / count).

Three sources, each counting every reading once (central/retention.py folds a raw reading
into ``readings_1m`` and ``readings_1h`` in the transaction that deletes it): the raw rows
still kept, the 1-minute aggregates of expired raw rows, and — only for hours before the
series' oldest 1-minute row, whose minutes have expired too — the 1-hour aggregates. (An
hour that the minute data only partly covers is served from the minutes alone.) An
aggregate lands in the requested bucket that holds its start.

The bucket number is the only dialect-specific part: SQLite truncates a cast toward zero
(``t >= start`` keeps it non-negative, so that is a floor), PostgreSQL rounds a cast, so it
uses FLOOR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from central.db import Database

MAX_BUCKETS = 2000
_SERIES = "gateway = ? AND device = ? AND quantity = ?"


@dataclass(frozen=True, slots=True)
class ReadingsQuery:
    gateway: str
    device: str
    quantity: str
    start: float
    end: float
    step: float

    @classmethod
    def make(
        cls,
        gateway: str,
        device: str,
        quantity: str,
        start: float,
        end: float,
        step: float | None = None,
    ) -> ReadingsQuery:
        if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
            raise ValueError(f"need finite start < end, got start={start} end={end}")
        span = end - start
        if step is None:
            step = span / MAX_BUCKETS
        if not math.isfinite(step) or step <= 0:
            raise ValueError(f"step must be a positive number of seconds, got {step}")
        if span / step > MAX_BUCKETS:
            raise ValueError(
                f"{span / step:.0f} buckets requested; at most {MAX_BUCKETS}"
                f" (use step >= {span / MAX_BUCKETS:g})"
            )
        return cls(gateway, device, quantity, float(start), float(end), float(step))


def query_readings(db: Database, q: ReadingsQuery) -> list[dict]:
    """Buckets that hold at least one numeric reading, in time order."""

    def bucket(column: str) -> str:
        if db.dialect == "postgresql":
            return f"FLOOR(({column} - ?) / ?)"
        return f"CAST(({column} - ?) / ? AS INTEGER)"

    series = (q.gateway, q.device, q.quantity)
    at = (q.start, q.step)
    sql = (
        "SELECT b, MIN(lo), MAX(hi), SUM(s) / SUM(n), SUM(n) FROM ("
        f" SELECT {bucket('t')} AS b, v AS lo, v AS hi, v AS s, 1 AS n FROM readings"
        f" WHERE {_SERIES} AND t >= ? AND t < ? AND v IS NOT NULL"
        " UNION ALL"
        f" SELECT {bucket('bucket')} AS b, vmin, vmax, vsum, n FROM readings_1m"
        f" WHERE {_SERIES} AND bucket >= ? AND bucket < ?"
        " UNION ALL"
        f" SELECT {bucket('bucket')} AS b, vmin, vmax, vsum, n FROM readings_1h"
        f" WHERE {_SERIES} AND bucket >= ? AND bucket < ? AND bucket + 3600 <= COALESCE("
        f"  (SELECT MIN(bucket) FROM readings_1m WHERE {_SERIES}), ?)"
        ") x GROUP BY b ORDER BY b"
    )
    params = (
        *at,
        *series,
        q.start,
        q.end,
        *at,
        *series,
        q.start,
        q.end,
        *at,
        *series,
        q.start,
        q.end,
        *series,
        q.end + 3600,  # no minute data at all: every hour in range counts
    )
    rows = db.execute(sql, params).fetchall()
    return [
        {
            "start": q.start + int(b) * q.step,
            "min": float(lo),
            "max": float(hi),
            "avg": float(avg),
            "count": int(n),
        }
        for b, lo, hi, avg, n in rows
    ]
