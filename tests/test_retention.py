"""Retention and downsampling on SQLite and on the real PostgreSQL (private schema)."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import pytest

from central.config import RetentionConfig
from central.retention import DAY_S, Retention
from central.store import Store
from cloud_bridge.senml import Pack, Record
from tests.pgschema import private_schema

NOW = 1_800_000_000.0
OLD = NOW - 40 * DAY_S  # past the 30-day raw retention


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = Store(tmp_path / "c.db")
        yield s
        s.close()
    else:
        with private_schema("retention") as url:
            s = Store(url)
            yield s
            s.close()


_seq = itertools.count()


def ingest(store: Store, gateway: str, records: list[Record]) -> None:
    for start in range(0, len(records), 200):
        pack = Pack(gateway, 1, next(_seq), tuple(records[start : start + 200]))
        store.ingest([pack], NOW)


def series(device: str, start: float, n: int, step: float) -> list[Record]:
    return [Record(f"{device}/ch4_lel", start + i * step, (i * 7 % 13) / 100) for i in range(n)]


def buckets(records: list[Record], width: int) -> dict[tuple[str, float], tuple]:
    acc: dict[tuple[str, float], list[float]] = defaultdict(list)
    for r in records:
        acc[r.device, math.floor(r.time / width) * width].append(r.value)  # type: ignore[arg-type]
    return {k: (len(v), min(v), max(v), pytest.approx(sum(v))) for k, v in acc.items()}


def stored(store: Store, table: str) -> dict[tuple[str, float], tuple]:
    rows = store.db.execute(f"SELECT device, bucket, n, vmin, vmax, vsum FROM {table}").fetchall()
    return {(d, float(b)): (int(n), lo, hi, total) for d, b, n, lo, hi, total in rows}


def count(store: Store, where: str = "") -> int:
    return store.db.execute(f"SELECT COUNT(*) FROM readings {where}").fetchone()[0]


def test_expired_readings_are_rolled_up_in_bounded_chunks_then_deleted(store):
    old = series("gas-1", OLD, 900, 7.0) + series("gas-2", OLD + 3, 400, 13.0)
    recent = series("gas-1", NOW - 3600, 50, 10.0)
    text = [Record("door-1/state", OLD + 5, "open")]  # not numeric: deleted, not aggregated
    ingest(store, "gw-1", old + recent + text)
    retention = Retention(store.db, RetentionConfig(chunk_rows=100), clock=lambda: NOW)

    report = retention.run()

    assert report.finished and report.raw_deleted == len(old) + len(text)
    assert report.chunks >= math.ceil(len(old) / 100)  # never all in one transaction
    assert count(store) == len(recent)
    assert count(store, f"WHERE t < {NOW - 30 * DAY_S}") == 0
    assert stored(store, "readings_1m") == buckets(old, 60)
    assert stored(store, "readings_1h") == buckets(old, 3600)
    assert retention.run().chunks == 0  # nothing left to do


def test_a_late_backlog_older_than_the_cutoff_is_folded_into_existing_buckets(store):
    first = series("gas-1", OLD, 120, 1.0)
    ingest(store, "gw-1", first)
    retention = Retention(store.db, RetentionConfig(chunk_rows=1000), clock=lambda: NOW)
    retention.run()
    late = [Record("gas-1/ch4_lel", OLD + 30.5 + i, 0.9 - i / 100) for i in range(5)]
    ingest(store, "gw-1", late)  # arrives after its buckets were rolled up
    retention.run()
    assert count(store) == 0
    assert stored(store, "readings_1m") == buckets(first + late, 60)
    assert stored(store, "readings_1h") == buckets(first + late, 3600)


def test_aggregates_expire_on_their_own_retention(store):
    ancient = series("gas-1", NOW - 500 * DAY_S, 120, 60.0)  # two hours of minutes
    ingest(store, "gw-1", ancient)
    config = RetentionConfig(minute_days=400, hour_days=None, chunk_rows=100)
    report = Retention(store.db, config, clock=lambda: NOW).run()
    assert report.raw_deleted == 120 and report.minute_deleted == 120
    assert report.hour_deleted == 0
    assert stored(store, "readings_1m") == {}
    assert stored(store, "readings_1h") == buckets(ancient, 3600)


def test_a_time_budget_stops_between_chunks_and_the_next_run_goes_on(store):
    ingest(store, "gw-1", series("gas-1", OLD, 600, 1.0))
    retention = Retention(store.db, RetentionConfig(chunk_rows=100), clock=lambda: NOW)
    first = retention.run(budget_s=0.0)
    assert not first.finished and first.chunks <= 1
    rest = retention.run()
    assert rest.finished and first.raw_deleted + rest.raw_deleted == 600
    assert count(store) == 0


def test_nothing_expires_without_retention(store):
    ingest(store, "gw-1", series("gas-1", OLD, 50, 1.0))
    config = RetentionConfig(raw_days=None, minute_days=None)
    assert Retention(store.db, config, clock=lambda: NOW).run().chunks == 0
    assert count(store) == 50


async def test_the_service_keeps_retention_in_the_background(tmp_path, mosquitto):
    """central's housekeeping task: expired readings are rolled up and deleted while the
    service runs (single mode: the one process is the leader)."""
    import asyncio
    import time

    from central.config import CentralConfig
    from central.service import CentralService
    from tests.test_e2e import running, wait_until

    config = CentralConfig.model_validate(
        {
            "broker": {"url": mosquitto.url},
            "storage": {"url": f"sqlite:///{tmp_path / 'central.db'}"},
            "http": {"port": 0},
            "client_id": "central-retention",
            "retention": {"raw_days": 30, "interval_s": 0.5, "chunk_rows": 100},
        }
    )
    central = CentralService(config)
    now = time.time()
    old = series("gas-1", now - 40 * DAY_S, 450, 7.0)
    recent = series("gas-1", now - 600, 20, 10.0)
    _seq_start = next(_seq)
    for i, chunk in enumerate((old[:200], old[200:], recent)):
        central.store.ingest([Pack("gw-1", 2, _seq_start + i, tuple(chunk))], now)
    async with running(central.run):
        await asyncio.wait_for(central.ready.wait(), 10)

        async def expired_gone() -> bool:
            return count(central.store, f"WHERE t < {now - 30 * DAY_S}") == 0

        await wait_until(expired_gone, 15, "retention to run")
        assert count(central.store) == len(recent)
        assert stored(central.store, "readings_1m") == buckets(old, 60)
        assert central.counters["retention_raw_deleted"] == len(old)
