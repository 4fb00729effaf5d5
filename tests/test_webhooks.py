"""Webhooks against a real HTTP receiver on loopback, alerts from the real ingest pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest

from central.delivery import Delivery, EventHub, RetryPolicy
from central.delivery.signing import sign, verify
from tests.pgschema import private_schema
from tests.test_delivery_support import Central, eventually, receiver

FAST = RetryPolicy(max_attempts=4, base_delay_s=0.05, max_delay_s=0.5, jitter=0.0, timeout_s=2)
YELLOW = [0.30, 0.30, 0.30]  # two samples over 25 %LEL: a yellow gas warning


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """Where central keeps its tables: a SQLite file, or a private PostgreSQL schema."""
    if request.param == "sqlite":
        yield tmp_path / "c.db"
        return
    with private_schema("t_webhooks") as url:
        yield url


@contextlib.asynccontextmanager
async def running(delivery: Delivery):
    stop = asyncio.Event()
    task = asyncio.create_task(delivery.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def test_signature_verifies_only_the_signed_body_secret_and_recent_time():
    body = b'{"a":1}'
    header = sign("s3cret-s3cret-s3cret", body, now=1_800_000_000)
    assert header.startswith("t=1800000000,v1=")
    assert verify("s3cret-s3cret-s3cret", header, body, now=1_800_000_100)
    assert not verify("s3cret-s3cret-s3cret", header, body + b" ", now=1_800_000_100)
    assert not verify("another-secret-here", header, body, now=1_800_000_100)
    assert not verify("s3cret-s3cret-s3cret", header, body, now=1_800_000_000 + 301)
    assert not verify("s3cret-s3cret-s3cret", "v1=abc", body, now=1_800_000_000)
    t_forged = header.replace("t=1800000000", "t=1800000200")
    assert not verify("s3cret-s3cret-s3cret", t_forged, body, now=1_800_000_200)


async def test_delivery_is_retried_with_backoff_until_the_receiver_accepts(database):
    central = Central.open(database)
    delivery = Delivery(central.store.db, EventHub(), central.asset_site, FAST)
    async with receiver(lambda n: 503 if n <= 2 else 200) as rx:
        sub, secret = delivery.webhooks.add_subscription(rx.url)
        async with running(delivery):
            issued = central.gas("gas-1", YELLOW)
            assert [m.msg_type for m in issued] == ["Alert"]
            delivery.on_issued(issued)
            await eventually(lambda: len(rx.requests) >= 3, 10, "three attempts")
            await asyncio.sleep(0.3)  # nothing more comes once it was accepted
    assert len(rx.requests) == 3
    keys = {r.headers["idempotency-key"] for r in rx.requests}
    assert len(keys) == 1, "every attempt of one delivery carries the same idempotency key"
    for r in rx.requests:
        assert verify(secret, r.headers["x-sentryline-signature"], r.body)
        assert r.headers["content-type"] == "application/json"
    payload = json.loads(rx.requests[-1].body)
    assert payload["delivery"] == keys.pop()
    assert payload["alert"]["identifier"] == issued[0].identifier
    assert payload["alert"]["site"] == "site-north" and payload["alert"]["level"] == "yellow"
    assert payload["cap_xml"].encode() == central.store.alert_xml(issued[0].identifier)
    [row] = delivery.webhooks.deliveries()
    assert row["state"] == "delivered" and row["attempts"] == 3 and row["subscription"] == sub.id
    stats = delivery.stats()["webhooks"]
    assert stats["deliveries"]["delivered"] == 1 and stats["deliveries"]["dead"] == 0
    assert stats["failed_attempts"] == 2
    central.store.close()


def test_backoff_grows_exponentially_and_is_capped():
    import random

    policy = RetryPolicy(base_delay_s=2, max_delay_s=60, jitter=0.0)
    rng = random.Random(1)
    assert [policy.delay(n, rng) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    jittered = RetryPolicy(base_delay_s=2, max_delay_s=60, jitter=0.2)
    assert all(1.6 <= jittered.delay(1, rng) <= 2.4 for _ in range(100))


async def test_a_delivery_that_keeps_failing_becomes_a_dead_letter_and_can_be_retried(tmp_path):
    central = Central.open(tmp_path / "c.db")
    delivery = Delivery(central.store.db, EventHub(), central.asset_site, FAST)
    accept = False
    async with receiver(lambda n: 200 if accept else 500) as rx:
        delivery.webhooks.add_subscription(rx.url)
        async with running(delivery):
            delivery.on_issued(central.gas("gas-1", YELLOW))
            await eventually(
                lambda: delivery.stats()["webhooks"]["deliveries"]["dead"] == 1, 10, "dead letter"
            )
            assert len(rx.requests) == FAST.max_attempts
            [dead] = delivery.webhooks.deliveries("dead")
            assert dead["attempts"] == FAST.max_attempts and dead["last_error"] == "HTTP 500"
            accept = True
            assert delivery.webhooks.retry_dead(dead["id"])
            delivery.worker.wake()
            await eventually(
                lambda: delivery.stats()["webhooks"]["deliveries"]["delivered"] == 1, 10, "retry"
            )
    assert delivery.stats()["webhooks"]["deliveries"]["dead"] == 0
    central.store.close()


async def test_outstanding_deliveries_survive_a_restart(database):
    """The receiver is down; central stops; a new central on the same database delivers."""
    path = database
    central = Central.open(path)
    delivery = Delivery(central.store.db, EventHub(), central.asset_site, FAST)
    async with receiver(lambda n: 200) as probe:
        port = probe.port  # a port nobody listens on once the probe is closed
    _sub, secret = delivery.webhooks.add_subscription(f"http://127.0.0.1:{port}/hook")
    async with running(delivery):
        first = central.gas("gas-1", YELLOW)
        delivery.on_issued(first)
        await eventually(lambda: delivery.worker.failed_attempts >= 1, 10, "a refused attempt")
    # A second alert stored, then a "crash" before on_issued ran for it.
    second = central.gas("gas-1", [0.6, 0.6])
    assert [m.msg_type for m in second] == ["Update"]
    assert delivery.webhooks.stats()["deliveries"]["pending"] == 1
    central.store.close()

    central = Central.open(path)
    delivery = Delivery(central.store.db, EventHub(), central.asset_site, FAST)
    async with receiver(lambda n: 200, port=port) as rx, running(delivery):
        await eventually(lambda: len(rx.requests) >= 2, 10, "both deliveries after restart")
        await asyncio.sleep(0.3)
    identifiers = [json.loads(r.body)["alert"]["identifier"] for r in rx.requests]
    assert sorted(identifiers) == sorted([first[0].identifier, second[0].identifier])
    assert all(verify(secret, r.headers["x-sentryline-signature"], r.body) for r in rx.requests)
    assert delivery.webhooks.stats()["deliveries"] == {
        "pending": 0,
        "delivered": 2,
        "dead": 0,
        "cancelled": 0,
    }
    central.store.close()


@pytest.mark.parametrize(
    ("filters", "expected_assets"),
    [
        ({}, {"tunnel-a3", "bridge-2"}),
        ({"levels": ["red"]}, set()),
        ({"levels": ["yellow"], "sites": ["site-south"]}, {"bridge-2"}),
        ({"types": ["water_level"]}, set()),
        ({"types": ["gas_leak"], "sites": ["site-north"]}, {"tunnel-a3"}),
    ],
)
def test_subscription_filters_by_level_type_and_site(tmp_path, filters, expected_assets):
    central = Central.open(tmp_path / "c.db")
    delivery = Delivery(central.store.db, EventHub(), central.asset_site, FAST)
    delivery.webhooks.add_subscription("http://127.0.0.1:9/hook", **filters)
    delivery.on_issued(central.gas("gas-1", YELLOW) + central.gas("gas-3", YELLOW))
    rows = delivery.webhooks.deliveries()
    alerts = {r["identifier"]: r["asset"] for r in central.store.list_alerts()}
    assert {alerts[r["alert"]] for r in rows} == expected_assets
    central.store.close()


def test_alerts_before_a_subscription_existed_are_not_sent_to_it(tmp_path):
    central = Central.open(tmp_path / "c.db")
    delivery = Delivery(central.store.db, EventHub(), central.asset_site, FAST)
    delivery.on_issued(central.gas("gas-1", YELLOW))
    time.sleep(0.01)
    delivery.webhooks.add_subscription("http://127.0.0.1:9/hook")
    delivery.on_issued(central.gas("gas-3", YELLOW))
    assert len(delivery.webhooks.deliveries()) == 1
    central.store.close()
