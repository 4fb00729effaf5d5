"""Drains the outbox to the broker: QoS 1, a window of packs in flight, delete on PUBACK.

aiomqtt has no automatic reconnect, so :meth:`Uplink.run` owns the connect loop, with
jittered exponential backoff. A pack is acknowledged in the outbox only after
``client.publish`` returned, which for QoS 1 means the broker's PUBACK arrived; anything in
flight when the connection drops stays in the outbox and is sent again (central drops the
duplicate by its (gateway, epoch, seq) key).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiomqtt

from cloud_bridge.mqtt import (
    BrokerSettings,
    ClientOptions,
    content_type_properties,
    make_client,
    state_topic,
    telemetry_topic,
)
from cloud_bridge.outbox import Outbox, OutboxEntry
from cloud_bridge.senml import CONTENT_TYPES

log = logging.getLogger(__name__)


@dataclass
class UplinkCounters:
    connects: int = 0
    connect_failures: int = 0
    packs_published: int = 0
    publish_failures: int = 0
    last_latency_s: float | None = None
    latencies_s: list[float] = field(default_factory=list)

    def record_latency(self, seconds: float) -> None:
        self.last_latency_s = seconds
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
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.outbox = outbox
        self.broker = broker
        self.site = site
        self.gateway = gateway
        self.window = window
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
                async with make_client(self.broker, options) as client:
                    self.counters.connects += 1
                    delay = self._backoff_initial
                    await client.publish(
                        self._state_topic, self._state_payload("online"), qos=1, retain=True
                    )
                    self.connected.set()
                    log.info("uplink connected to %s", self.broker.url)
                    await self._pump(client, stop)
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
                    await asyncio.wait_for(stop.wait(), sleep)
                delay = min(delay * 2, self._backoff_max)

    async def _pump(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Publish until stop is set and the outbox is empty; raise MqttError on failure."""
        in_flight: dict[int, asyncio.Task[None]] = {}
        acked: list[int] = []
        failure: list[BaseException] = []
        slots = asyncio.Semaphore(self.window)

        async def publish_one(entry: OutboxEntry) -> None:
            started = time.monotonic()
            try:
                await client.publish(self._topic, entry.payload, qos=1, properties=self._props)
            except aiomqtt.MqttError as exc:
                self.counters.publish_failures += 1
                failure.append(exc)
            else:
                self.counters.packs_published += 1
                self.counters.record_latency(time.monotonic() - started)
                acked.append(entry.id)
            finally:
                slots.release()
                in_flight.pop(entry.id, None)
                self._wake.set()

        try:
            while True:
                # Clear before looking: a completion after this point wakes the wait below.
                self._wake.clear()
                if acked:
                    batch, acked[:] = list(acked), []
                    self.outbox.ack(batch)
                if failure:
                    raise failure[0]
                free = self.window - len(in_flight)
                entries = self.outbox.peek(free, exclude=in_flight) if free else []
                for entry in entries:
                    await slots.acquire()
                    in_flight[entry.id] = asyncio.create_task(publish_one(entry))
                if not entries and not in_flight and stop.is_set():
                    return
                if not entries:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 0.2)
                # aiomqtt leaves pending publishes waiting for their timeout after the
                # connection drops; notice the drop ourselves and reconnect at once.
                if not _is_connected(client):
                    raise aiomqtt.MqttError("connection to the broker lost")
        finally:
            for task in in_flight.values():
                task.cancel()
            if acked:
                self.outbox.ack(list(acked))


def _is_connected(client: aiomqtt.Client) -> bool:
    paho = getattr(client, "_client", None)  # aiomqtt exposes no public connection state
    return paho is None or bool(paho.is_connected())
