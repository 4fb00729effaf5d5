"""The uplink against a real broker: confirmation modes, re-sends, replay order and marking."""

from __future__ import annotations

import asyncio
import json
import time

import aiomqtt

from cloud_bridge.mqtt import BrokerSettings, ack_topic, message_replayed, telemetry_topic
from cloud_bridge.outbox import PRIORITY_WARNING, Outbox
from cloud_bridge.senml import Record, decode_pack
from cloud_bridge.uplink import Uplink
from tests.test_e2e import running, wait_until


def records(n: int, base: float = 1.8e9) -> list[Record]:
    return [Record("d/x", base + i, float(i)) for i in range(n)]


async def collect(port: int, topic: str, got: list, ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.subscribe(topic, qos=1)
        ready.set()
        async for message in c.messages:
            got.append(message)


async def test_packs_wait_for_central_confirmation_and_are_resent(tmp_path, mosquitto):
    box = Outbox(tmp_path / "o.db", "gw-u1")
    box.append([records(3), records(3)])
    uplink = Uplink(
        box,
        BrokerSettings(url=mosquitto.url),
        site="s",
        gateway="gw-u1",
        confirm="central",
        confirm_timeout_s=1.0,
    )
    got: list = []
    ready = asyncio.Event()
    listener = asyncio.create_task(
        collect(mosquitto.port, telemetry_topic("s", "gw-u1"), got, ready)
    )
    await asyncio.wait_for(ready.wait(), 5)
    async with running(uplink.run):
        await wait_until(_async(lambda: len(got) >= 2), 5, "two packs on the wire")
        await asyncio.sleep(0.3)
        assert box.depth() == 2  # PUBACKed, but central has not confirmed: kept
        await wait_until(_async(lambda: len(got) >= 4), 5, "overdue packs sent again")
        keys = [decode_pack(bytes(m.payload)).key for m in got]
        assert keys[:2] == keys[2:4]  # the same sealed packs, same dedup keys
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as central:
            body = {"ep": box.epoch, "sq": [[0, 1]]}
            await central.publish(ack_topic("s", "gw-u1"), json.dumps(body).encode(), qos=1)
        await wait_until(_async(lambda: box.depth() == 0), 5, "confirmed packs deleted")
        assert uplink.counters.records_confirmed == 6
    listener.cancel()
    box.close()


async def test_puback_mode_deletes_on_puback(tmp_path, mosquitto):
    box = Outbox(tmp_path / "o.db", "gw-u2")
    box.append([records(2)])
    uplink = Uplink(
        box, BrokerSettings(url=mosquitto.url), site="s", gateway="gw-u2", confirm="puback"
    )
    async with running(uplink.run):
        await wait_until(_async(lambda: box.depth() == 0), 5, "deleted on PUBACK")
    assert box.stats().records_acked == 2
    box.close()


async def test_warnings_first_live_next_backlog_last_and_marked(tmp_path, mosquitto):
    box = Outbox(tmp_path / "o.db", "gw-u3")
    for i in range(20):  # the backlog: old telemetry
        box.append([records(1, 1.7e9 + i)])
    box.append([records(1, 1.7e9 + 100)], priority=PRIORITY_WARNING)
    uplink = Uplink(
        box,
        BrokerSettings(url=mosquitto.url),
        site="s",
        gateway="gw-u3",
        confirm="puback",
        replay_rate=10.0,
        window=4,
    )
    got: list = []
    ready = asyncio.Event()
    listener = asyncio.create_task(
        collect(mosquitto.port, telemetry_topic("s", "gw-u3"), got, ready)
    )
    await asyncio.wait_for(ready.wait(), 5)
    async with running(uplink.run):
        await wait_until(_async(lambda: uplink.connected.is_set()), 5, "connected")
        await asyncio.sleep(0.5)
        box.append([records(1, time.time())])  # live data, while the backlog replays
        await wait_until(_async(lambda: box.depth() == 0), 10, "everything sent")
    listener.cancel()
    times = [decode_pack(bytes(m.payload)).records[0].time for m in got]
    replayed = [message_replayed(m) for m in got]
    assert times[0] == 1.7e9 + 100  # the warning first
    live_at = times.index(max(times))
    assert live_at < 12, "live data must overtake the rate-limited backlog"
    assert not replayed[live_at]
    backlog = [t for t, r in zip(times, replayed, strict=True) if r and t < 1.7e9 + 100]
    assert backlog == sorted(backlog) and len(backlog) == 20  # in order, all marked
    box.close()


def _async(fn):
    async def predicate() -> bool:
        return bool(fn())

    return predicate


async def fake_central(port: int, site: str, gateway: str) -> None:
    """Confirms every telemetry pack it receives, as central does after committing."""
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.subscribe(telemetry_topic(site, gateway), qos=1)
        async for message in c.messages:
            pack = decode_pack(bytes(message.payload))
            body = {"ep": pack.epoch, "sq": [[pack.seq, pack.seq]]}
            await c.publish(ack_topic(site, gateway), json.dumps(body).encode(), qos=0)


async def test_packs_lost_before_central_subscribed_are_resent_and_confirmed(tmp_path, mosquitto):
    """The broker takes packs nobody is subscribed to yet and drops them. They must become
    overdue and go again: the self-clocking replay cap must not let them block themselves."""
    box = Outbox(tmp_path / "o.db", "gw-u4")
    for i in range(10):
        box.append([records(1, 1.7e9 + i)])
    uplink = Uplink(
        box,
        BrokerSettings(url=mosquitto.url),
        site="s",
        gateway="gw-u4",
        confirm="central",
        confirm_timeout_s=0.5,
        replay_unconfirmed_max=2,
    )
    async with running(uplink.run):
        await asyncio.sleep(1.5)  # packs go out into the void, and are kept
        assert box.depth() == 10
        central = asyncio.create_task(fake_central(mosquitto.port, "s", "gw-u4"))
        await wait_until(_async(lambda: box.depth() == 0), 15, "every pack confirmed")
        central.cancel()
    assert uplink.counters.records_confirmed == 10
    box.close()


def _async(fn):
    async def predicate() -> bool:
        return bool(fn())

    return predicate
