"""The central service process: MQTT ingest loop + HTTP API under one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from typing import Any

import aiomqtt
import uvicorn

from central.api import create_app
from central.auth import Authenticator, TokenStore
from central.config import CentralConfig
from central.dashboard import dashboard_router
from central.delivery import Delivery, EventHub, feeds_router, webhooks_router
from central.evaluator import QueueEvaluator
from central.ingest import Inbound, IngestPipeline
from central.leader import LeaderLock
from central.registry import AssetRegistry
from central.retention import Retention
from central.rules.gas import GasCh4Rule
from central.rules_api import rules_router
from central.store import QueueClaimLost, Store
from central.warnings import IssuedMessage, WarningManager
from cloud_bridge.mqtt import (
    ALERTS_TOPIC,
    STATE_FILTER,
    TELEMETRY_FILTER,
    ClientOptions,
    ack_topic,
    content_type_properties,
    make_client,
    message_content_type,
    message_replayed,
    paho_client,
    seq_ranges,
    set_no_delay,
)

log = logging.getLogger(__name__)
CAP_CONTENT_TYPE = "application/cap+xml"


class CentralService:
    def __init__(self, config: CentralConfig) -> None:
        self.config = config
        shared = config.workers.mode == "shared"
        self.store = Store(config.storage.url, queue_packs=shared)
        self.registry = AssetRegistry(config.assets, self.store.gateway_births(), db=self.store.db)
        self.warnings = WarningManager(self.store, config.cap, self.registry.info)
        self.pipeline = IngestPipeline(
            self.store,
            self.registry,
            self.warnings,
            [GasCh4Rule(config.rules.gas_ch4)],
            rules_dir=config.rules_dir,
        )
        # Several workers: this one only stores; the leader judges (central/evaluator.py).
        self.pipeline.evaluate_inline = not shared
        self.retention = Retention(self.store.db, config.retention)
        self.counters: dict[str, Any] = {"messages": 0, "batches": 0, "mqtt_connects": 0}
        self.counters["leader"] = not shared
        self.evaluator: QueueEvaluator | None = None
        self._client: aiomqtt.Client | None = None  # connected to the broker (for CAP)
        self._publishing = asyncio.Lock()  # one publisher of pending alerts at a time
        self.auth = Authenticator(TokenStore(self.store.db), config.auth.anonymous_role)
        self.delivery = Delivery(self.store.db, EventHub(), lambda a: self.registry.info(a).site)
        self.app = create_app(
            self.store,
            self.counters,
            registry=self.registry,
            warnings=self.warnings,
            auth=self.auth,
            routers=[
                feeds_router(self.delivery),
                webhooks_router(self.delivery),
                dashboard_router(self.store.db),
                rules_router(self.reload_rules),
            ],
        )
        self.ready = asyncio.Event()
        self.http_port: int | None = None

    def reload_rules(self) -> list[str]:
        """Re-read the rule sets (SIGHUP, or the admin API) in every pipeline that judges.

        Raises ConfigError (file:line field) and keeps the rules in force when a file is bad.
        """
        problems = self.pipeline.reload_rules()
        if self.evaluator is not None:
            problems += self.evaluator.pipeline.reload_rules()
        log.info("central: rules reloaded%s", f" ({len(problems)} problem(s))" if problems else "")
        for problem in problems:
            log.warning("central: rules: %s", problem)
        return problems

    async def run(self, stop: asyncio.Event) -> None:
        server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host=self.config.http.host,
                port=self.config.http.port,
                log_level="warning",
                lifespan="off",
            )
        )
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]

        async def serve_http() -> None:
            try:
                await server.serve()
            except SystemExit:  # uvicorn exits the process when it cannot bind
                raise RuntimeError(
                    f"cannot listen on {self.config.http.host}:{self.config.http.port}"
                    " (see the log above)"
                ) from None

        try:
            async with asyncio.TaskGroup() as tg:
                http = tg.create_task(serve_http())
                while not server.started:
                    if http.done():
                        break  # the TaskGroup raises its error
                    await asyncio.sleep(0.02)
                else:
                    self.http_port = server.servers[0].sockets[0].getsockname()[1]
                    # MQTT only once the API answers: `ready` means both are up.
                    mqtt = tg.create_task(self._mqtt_loop(stop))
                    if self.config.workers.mode == "shared":
                        chores = tg.create_task(self._lead_when_elected(stop))
                    else:
                        chores = tg.create_task(self._chores(self.pipeline, stop))
                    tg.create_task(self.delivery.run(stop))  # ends its streams on stop
                    await stop.wait()
                    server.should_exit = True
                    mqtt.cancel()
                    chores.cancel()
        finally:
            self.store.close()

    async def _mqtt_loop(self, stop: asyncio.Event) -> None:
        delay = 0.2
        # A persistent session: the broker queues QoS 1 packs while central is down.
        options = ClientOptions(
            identifier=self.config.client_id,
            clean_start=False,
            session_expiry_s=7 * 86400,
            max_inflight=256,
        )
        while not stop.is_set():
            try:
                client = make_client(self.config.broker, options)
                # PUBACK only after the batch is committed: a crash in between makes the
                # broker redeliver, and the (gateway, epoch, seq) key drops the repeat.
                paho_client(client).manual_ack_set(True)
                async with client:
                    self.counters["mqtt_connects"] += 1
                    set_no_delay(client)
                    await client.subscribe(self._telemetry_filter(), qos=1)
                    # Every worker sees every gateway's state (births bind devices to assets).
                    await client.subscribe(STATE_FILTER, qos=1)
                    self._client = client
                    log.info("central: subscribed (%s)", self._telemetry_filter())
                    if self.counters["leader"]:
                        await self._publish_pending(client)
                    self.ready.set()
                    delay = 0.2
                    await self._consume(client)
            except aiomqtt.MqttError as exc:
                self._client = None
                self.ready.clear()
                sleep = delay * random.uniform(0.5, 1.5)
                log.warning("central: broker connection lost (%s); retry in %.2fs", exc, sleep)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(sleep):
                        await stop.wait()
                delay = min(delay * 2, 5.0)  # one service, not a fleet: come back soon

    def _telemetry_filter(self) -> str:
        workers = self.config.workers
        if workers.mode == "shared":
            # MQTT 5 shared subscription: the broker hands each pack to one worker of the group.
            return f"$share/{workers.group}/{TELEMETRY_FILTER}"
        return TELEMETRY_FILTER

    def _evaluating_pipeline(self) -> IngestPipeline:
        """The leader's pipeline, built like ``self.pipeline`` but with rule state from
        scratch and warnings restored from the database (as after a restart)."""
        warnings = WarningManager(self.store, self.config.cap, self.registry.info)
        extra: dict[str, Any] = {}
        if getattr(self.pipeline, "rules_dir", None) is not None:
            extra["rules_dir"] = self.pipeline.rules_dir
        rules = [GasCh4Rule(self.config.rules.gas_ch4)]
        return IngestPipeline(self.store, self.registry, warnings, rules, **extra)

    async def _lead_when_elected(self, stop: asyncio.Event) -> None:
        """Several workers: try for the leader lock; while held, judge the queued packs,
        tick liveness and keep retention, then publish what that issued."""
        workers = self.config.workers
        lock = LeaderLock(self.config.storage.url, workers.leader_lock_key)
        try:
            while not stop.is_set():
                if not lock.try_acquire():
                    await asyncio.sleep(workers.leader_retry_s)
                    continue
                log.info("central: %s is the leader", self.config.client_id)
                term = self.store.begin_term()  # fences off any earlier leader's writes
                pipeline = self._evaluating_pipeline()
                self.evaluator = QueueEvaluator(
                    self.store, pipeline, reorder_wait_s=workers.reorder_wait_s, term=term
                )
                self.counters["leader"] = True
                try:
                    await self._publish_if_connected()  # what an earlier leader left
                    await self._chores(pipeline, stop, lock)
                except QueueClaimLost as exc:
                    log.warning("central: another leader judged packs first (%s)", exc)
                except Exception:
                    # Whatever failed was rolled back; step down, and (if elected again)
                    # start over from the database rather than from half-updated memory.
                    log.exception("central: leader chores failed; stepping down")
                    await asyncio.sleep(workers.leader_retry_s)
                finally:
                    self.counters["leader"] = False
                    self.evaluator = None
                    lock.release()
        finally:
            lock.release()

    async def _chores(
        self, pipeline: IngestPipeline, stop: asyncio.Event, lock: LeaderLock | None = None
    ) -> None:
        """The leader's periodic work (every process in single mode): judging queued packs
        (shared mode), the liveness tick every second, retention in bounded chunks."""
        poll_s = self.config.workers.poll_s
        next_tick = next_check = time.monotonic()
        # The first run soon after start-up, not in the middle of it.
        next_retention = time.monotonic() + min(5.0, self.config.retention.interval_s)
        while not stop.is_set():
            issued: list[IssuedMessage] = []
            busy = False
            if self.evaluator is not None:
                judged = self.evaluator.stats.judged_packs
                issued += self.evaluator.step()
                busy = self.evaluator.stats.judged_packs != judged
            mono = time.monotonic()
            if mono >= next_tick:
                next_tick = mono + 1.0
                if hasattr(pipeline, "tick"):
                    issued += self._tick(pipeline)
                # else: liveness (sensor_offline) comes with IngestPipeline.tick (rules).
            if issued:
                self.delivery.on_issued(issued)
                await self._publish_if_connected()
            if mono >= next_retention:
                next_retention = mono + self.config.retention.interval_s
                await self._retention()
            if lock is not None and mono >= next_check:
                next_check = mono + self.config.workers.leader_retry_s
                if not lock.check():
                    return
            if busy or issued:
                await asyncio.sleep(0)  # more may be queued: go on after letting ingest run
            else:
                await asyncio.sleep(poll_s if self.evaluator is not None else 1.0)

    def _tick(self, pipeline: IngestPipeline) -> list[IssuedMessage]:
        """Liveness on the wall clock; on a leader, fenced by its term like the evaluator."""
        term = self.evaluator.term if self.evaluator is not None else None
        if term is None:
            return pipeline.tick(time.time()) or []
        with self.store.db.transaction():
            self.store.check_term(term)
            return pipeline.tick(time.time()) or []

    async def _retention(self) -> None:
        now = time.time()
        while (done := self.retention.next_chunk(now)) is not None:
            self.counters[f"retention_{done[0]}_deleted"] = (
                self.counters.get(f"retention_{done[0]}_deleted", 0) + done[1]
            )
            await asyncio.sleep(0)  # ingest goes on between chunks

    async def _publish_if_connected(self) -> None:
        client = self._client
        if client is None:
            return  # published on the next connect
        with contextlib.suppress(aiomqtt.MqttError):
            await self._publish_pending(client)

    async def _consume(self, client: aiomqtt.Client) -> None:
        """Two lanes: live packs are committed (and warned about) before any backlog.

        Everything the client has queued is taken at once and sorted by the replayed mark;
        each round commits live packs first, else one bounded chunk of backlog. Memory stays
        bounded: nothing is PUBACKed before it is committed, so the broker's in-flight window
        caps what waits here.
        """
        messages = client.messages
        cfg = self.config
        live: deque[aiomqtt.Message] = deque()
        backlog: deque[aiomqtt.Message] = deque()

        def route(message: aiomqtt.Message) -> None:
            (backlog if message_replayed(message) else live).append(message)

        while True:
            if not live and not backlog:
                # Never cancel a pending anext(): aiomqtt may already have taken a message
                # off its queue for it, and that message would be lost.
                route(await anext(messages))
                if cfg.ingest_batch_wait_s and len(messages) < cfg.ingest_batch_max:
                    await asyncio.sleep(cfg.ingest_batch_wait_s)
            while len(messages):  # already queued: taking them does not wait
                route(await anext(messages))
            batch = _take(live or backlog, cfg.ingest_batch_max, cfg.ingest_batch_max_bytes)
            await self._ingest(client, batch)
            await asyncio.sleep(0)  # let the client read what arrived meanwhile

    async def _ingest(self, client: aiomqtt.Client, batch: list[aiomqtt.Message]) -> None:
        now = time.time()
        inbound = [
            Inbound(
                str(m.topic),
                _as_bytes(m.payload),
                message_content_type(m),
                now,
                replayed=message_replayed(m),
            )
            for m in batch
        ]
        issued = self.pipeline.handle(inbound)
        paho = paho_client(client)
        for m in batch:
            if m.qos > 0:
                paho.ack(m.mid, m.qos)
        if issued:  # warnings first: the gateways' confirmations can wait a moment
            self.delivery.on_issued(issued)
            await self._publish_pending(client)
        await self._confirm(client)
        self.counters["messages"] += len(batch)
        self.counters["batches"] += 1

    async def _confirm(self, client: aiomqtt.Client) -> None:
        """Tell each gateway which packs are committed, so it can delete them.

        QoS 0 is enough: a lost confirmation only means the pack is sent again and dropped
        here as a duplicate (and confirmed again).
        """
        for (site, gateway), by_epoch in self.pipeline.take_confirmations().items():
            for epoch, seqs in by_epoch.items():
                body = json.dumps({"ep": epoch, "sq": seq_ranges(seqs)}).encode()
                await client.publish(ack_topic(site, gateway), body, qos=0)

    async def _publish_pending(self, client: aiomqtt.Client) -> None:
        props = content_type_properties(self.config.broker, CAP_CONTENT_TYPE)
        async with self._publishing:
            for identifier, xml in self.store.unpublished_alerts():
                await client.publish(ALERTS_TOPIC, xml, qos=1, properties=props)
                self.store.mark_published([identifier])
                log.info("CAP %s published", identifier)


def _take(lane: deque[aiomqtt.Message], max_count: int, max_bytes: int) -> list[aiomqtt.Message]:
    """One transaction's worth: bounded in count and bytes (a huge one would hold the loop,
    and every live warning behind it, for seconds)."""
    batch = [lane.popleft()]
    size = len(batch[0].payload or b"")  # type: ignore[arg-type]
    while lane and len(batch) < max_count and size < max_bytes:
        message = lane.popleft()
        batch.append(message)
        size += len(message.payload or b"")  # type: ignore[arg-type]
    return batch


def _as_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return str(payload).encode()
