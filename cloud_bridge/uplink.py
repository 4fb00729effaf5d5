"""Drains the outbox to the broker: QoS 1, a window of packs in flight, end-to-end confirmed.

aiomqtt has no automatic reconnect, so :meth:`Uplink.run` owns the connect loop, with
jittered exponential backoff. A pack never leaves the outbox before ``client.publish``
returned, which for QoS 1 means the broker's PUBACK arrived. With ``confirm="central"``
(the default) that only marks it sent: it is deleted when central confirms it stored it, on
``sentryline/v1/{site}/{gateway}/ack``, because a PUBACK is the broker's word and a broker
that crashes loses what it had not delivered. Sent packs whose confirmation is overdue, and
all of them after a reconnect, are sent again; central drops the duplicates by their
(gateway, epoch, seq) key. ``confirm="puback"`` deletes on PUBACK (brokers you trust to
persist, or no central confirmations).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import aiomqtt

from cloud_bridge.mqtt import (
    BrokerSettings,
    ClientOptions,
    ack_topic,
    content_type_properties,
    is_connected,
    make_client,
    set_no_delay,
    state_topic,
    telemetry_topic,
)
from cloud_bridge.outbox import PRIORITY_TELEMETRY, Outbox, OutboxEntry
from cloud_bridge.senml import CONTENT_TYPES

log = logging.getLogger(__name__)


@dataclass
class UplinkCounters:
    connects: int = 0
    connect_failures: int = 0
    packs_published: int = 0
    packs_replayed: int = 0
    records_confirmed: int = 0
    bad_confirmations: int = 0
    outbox_errors: int = 0
    publish_failures: int = 0
    latencies_s: list[float] = field(default_factory=list)

    def record_latency(self, seconds: float) -> None:
        self.latencies_s.append(seconds)
        if len(self.latencies_s) > 1024:
            del self.latencies_s[:512]


class Uplink:
    def __init__(
        self,
        outbox: Outbox,
        broker: BrokerSettings,
        *,
        site: str,
        gateway: str,
        window: int = 64,
        birth: Callable[[], dict[str, object]] | None = None,
        replay_rate: float = 200.0,
        confirm: Literal["central", "puback"] = "central",
        confirm_timeout_s: float = 30.0,
        replay_unconfirmed_max: int = 16,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.outbox = outbox
        self.broker = broker
        self.site = site
        self.gateway = gateway
        self.window = window
        self.replay_rate = replay_rate
        self.confirm = confirm
        self.confirm_timeout_s = confirm_timeout_s
        self.replay_unconfirmed_max = replay_unconfirmed_max
        self._ack_topic = ack_topic(site, gateway)
        self._birth = birth or (lambda: {})
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._wake = asyncio.Event()
        outbox.add_listener(self._wake.set)
        self.counters = UplinkCounters()
        self.connected = asyncio.Event()
        self._topic = telemetry_topic(site, gateway)
        self._state_topic = state_topic(site, gateway)
        self._props = content_type_properties(broker, CONTENT_TYPES[outbox.wire_format])
        # Backlog packs say so in an MQTT 5 user property: the sealed bytes (and their dedup
        # key) stay exactly as appended.
        self._replay_props = content_type_properties(
            broker, CONTENT_TYPES[outbox.wire_format], replayed=True
        )

    def _state_payload(self, state: str) -> bytes:
        body = {"state": state, "gateway": self.gateway, "site": self.site, "time": time.time()}
        if state == "online":
            body |= {"epoch": self.outbox.epoch, **self._birth()}
        return json.dumps(body).encode()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep connected and draining until ``stop`` is set (then drain what is left)."""
        delay = self._backoff_initial
        will = aiomqtt.Will(self._state_topic, self._state_payload("offline"), qos=1, retain=True)
        options = ClientOptions(
            identifier=f"sl-gw-{self.gateway}", will=will, max_inflight=self.window
        )
        while True:
            try:
                client = make_client(self.broker, options)
                # aiomqtt warns above 10 pending publishes; a full window is normal here.
                client.pending_calls_threshold = self.window * 2
                async with client:
                    set_no_delay(client)
                    self.counters.connects += 1
                    delay = self._backoff_initial
                    await client.publish(
                        self._state_topic, self._state_payload("online"), qos=1, retain=True
                    )
                    if self.confirm == "central":
                        await client.subscribe(self._ack_topic, qos=1)
                        # Whatever the last connection sent may have died with it (a broker
                        # crash loses what it had not delivered): send it all again.
                        self.outbox.unsend_all()
                    self.connected.set()
                    log.info("uplink connected to %s", self.broker.url)
                    # Not a TaskGroup: the pump's MqttError must reach the reconnect loop
                    # unwrapped; the listener just ends with the connection.
                    listener = asyncio.create_task(self._confirmations(client))
                    try:
                        await self._pump(client, stop)
                    finally:
                        listener.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await listener
                    # Clean shutdown: say so on the state topic; the will is not sent then.
                    await client.publish(
                        self._state_topic, self._state_payload("offline"), qos=1, retain=True
                    )
                    return
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                self.counters.connect_failures += 1
                if stop.is_set():
                    log.warning("uplink stopping while disconnected: %s", exc)
                    return
                sleep = delay * random.uniform(0.5, 1.5)  # jitter: gateways must not stampede
                log.warning("uplink disconnected (%s); retrying in %.2fs", exc, sleep)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(sleep):
                        await stop.wait()
                delay = min(delay * 2, self._backoff_max)

    async def _confirmations(self, client: aiomqtt.Client) -> None:
        """Central's confirmations of stored packs: only now are they deleted."""
        with contextlib.suppress(aiomqtt.MqttError):  # disconnected: the pump notices too
            await self._listen(client)

    async def _listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                body = json.loads(message.payload)  # type: ignore[arg-type]
                epoch = body["ep"]
                ranges = [(int(a), int(b)) for a, b in body["sq"]]
                if not isinstance(epoch, int):
                    raise TypeError("ep must be an integer")
            except (ValueError, KeyError, TypeError) as exc:
                self.counters.bad_confirmations += 1
                log.warning("ignoring a malformed confirmation: %s", exc)
                continue
            try:
                self.counters.records_confirmed += self.outbox.confirm(epoch, ranges)
            except sqlite3.Error as exc:
                self.counters.outbox_errors += 1
                log.error("outbox delete failed (%s); the packs are confirmed again later", exc)
            self._wake.set()

    def _sent_before(self) -> float | None:
        if self.confirm != "central":
            return None
        return time.time() - self.confirm_timeout_s

    def _select(
        self,
        free: int,
        exclude: dict[int, asyncio.Task[None]],
        backlog_upto: int,
        bucket: _TokenBucket,
        draining: bool,
    ) -> list[tuple[OutboxEntry, bool]]:
        """What to send next: events and warnings, then live telemetry, then the backlog.

        The backlog is what the outbox held when this connection came up; it goes oldest
        first, at ``replay_rate`` packs/s so live data and warnings are never queued behind
        it (except when draining at shutdown, when speed is all that matters).
        """
        sent_before = self._sent_before()
        picked = [
            (e, e.id <= backlog_upto)
            for e in self.outbox.peek(
                free, exclude, min_priority=PRIORITY_TELEMETRY + 1, sent_before=sent_before
            )
        ]
        picked += [
            (e, False)
            for e in self.outbox.peek(
                free - len(picked),
                exclude,
                max_priority=PRIORITY_TELEMETRY,
                after_id=backlog_upto,
                sent_before=sent_before,
            )
        ]
        room = free - len(picked)
        allowed = room if draining else min(room, bucket.available())
        if self.confirm == "central" and not draining:
            # Self-clocking replay: no more backlog in the pipe than central has confirmed,
            # so live packs never queue behind a backlog central cannot ingest fast enough.
            # Overdue packs (presumed lost) do not count: they must be able to go again.
            in_pipe = self.outbox.unconfirmed(sent_since=sent_before)
            allowed = min(allowed, self.replay_unconfirmed_max - in_pipe)
        if allowed > 0:
            replay = self.outbox.peek(
                allowed,
                exclude,
                max_priority=PRIORITY_TELEMETRY,
                upto_id=backlog_upto,
                sent_before=sent_before,
            )
            bucket.take(len(replay))
            picked += [(e, True) for e in replay]
        return picked

    async def _pump(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Publish until stop is set and the outbox is empty; raise MqttError on failure."""
        in_flight: dict[int, asyncio.Task[None]] = {}
        acked: list[int] = []
        failure: list[BaseException] = []
        backlog_upto = self.outbox.max_id()
        bucket = _TokenBucket(self.replay_rate, burst=self.window)

        async def publish_one(entry: OutboxEntry, replayed: bool) -> None:
            started = time.monotonic()
            try:
                props = self._replay_props if replayed else self._props
                await client.publish(self._topic, entry.payload, qos=1, properties=props)
            except aiomqtt.MqttError as exc:
                self.counters.publish_failures += 1
                failure.append(exc)
            else:
                self.counters.packs_published += 1
                self.counters.packs_replayed += replayed
                self.counters.record_latency(time.monotonic() - started)
                acked.append(entry.id)
            finally:
                in_flight.pop(entry.id, None)
                self._wake.set()

        try:
            while True:
                # Clear before looking: a completion after this point wakes the wait below.
                self._wake.clear()
                if acked:
                    batch, acked[:] = list(acked), []
                    try:
                        if self.confirm == "central":
                            self.outbox.mark_sent(batch)
                        else:
                            self.outbox.ack(batch)
                    except sqlite3.Error as exc:
                        # Never die on the outbox: the packs stay and are sent again.
                        self.counters.outbox_errors += 1
                        log.error("outbox update failed (%s); packs will be re-sent", exc)
                if failure:
                    raise failure[0]
                free = self.window - len(in_flight)
                picked = self._select(free, in_flight, backlog_upto, bucket, stop.is_set())
                for entry, replayed in picked:
                    in_flight[entry.id] = asyncio.create_task(publish_one(entry, replayed))
                if not picked and not in_flight and stop.is_set() and not self.outbox.depth():
                    return
                if not picked:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(bucket.wait_hint(0.2)):
                            await self._wake.wait()
                # aiomqtt leaves pending publishes waiting for their timeout after the
                # connection drops; notice the drop ourselves and reconnect at once.
                if not is_connected(client):
                    raise aiomqtt.MqttError("connection to the broker lost")
        finally:
            for task in in_flight.values():
                task.cancel()
            if acked:
                if self.confirm == "central":
                    self.outbox.mark_sent(list(acked))
                else:
                    self.outbox.ack(list(acked))


class _TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._at = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def available(self) -> int:
        self._refill()
        return int(self._tokens)

    def take(self, n: int) -> None:
        self._tokens -= n

    def wait_hint(self, ceiling: float) -> float:
        """How long until one more token (bounded), so a rate-limited replay wakes in time."""
        self._refill()
        if self._tokens >= 1:
            return ceiling
        return min(ceiling, max(0.001, (1 - self._tokens) / self.rate))
