"""Readings of one series, downsampled into time buckets (min / max / avg / count).

One GROUP BY over the ``readings`` index (gateway, device, quantity, t). The bucket number is
the only dialect-specific part: SQLite truncates a cast toward zero (and ``t >= start``
keeps it non-negative, so that is a floor), PostgreSQL rounds a cast, so it uses FLOOR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from central.db import Database

MAX_BUCKETS = 2000


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
    pg = db.dialect == "postgresql"
    bucket = "FLOOR((t - ?) / ?)" if pg else "CAST((t - ?) / ? AS INTEGER)"
    rows = db.execute(
        f"SELECT {bucket} AS b, MIN(v), MAX(v), AVG(v), COUNT(v) FROM readings"
        " WHERE gateway = ? AND device = ? AND quantity = ? AND t >= ? AND t < ?"
        " AND v IS NOT NULL GROUP BY 1 ORDER BY 1",
        (q.start, q.step, q.gateway, q.device, q.quantity, q.start, q.end),
    ).fetchall()
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
