"""The gateway daemon: buses → (edge models) → pack builder → outbox → uplink, one TaskGroup.

Shutdown (SIGTERM) stops the pollers first, seals what they produced into the outbox, then
lets the uplink drain for up to ``drain_timeout_s``. Whatever is not acknowledged by then
stays in the outbox file and goes out on the next start: nothing is lost either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cloud_bridge.outbox import PRIORITY_EVENT, PRIORITY_TELEMETRY, Outbox, OutboxFull
from cloud_bridge.senml import Record
from cloud_bridge.uplink import Uplink
from drivers.modbus.bus import ModbusBus
from drivers.modbus.driver_decoder import DriverDecoders
from drivers.modbus.profile import DeviceProfile, load_profile
from drivers.modbus.rtu import ModbusRtuEndpoint
from drivers.modbus.transport import ModbusTcpEndpoint
from drivers.registry import SourceProfile
from edge_models.attachment import ModelAttachment
from gateway.clock import ClockCorrection, GatewayClock
from gateway.config import (
    GatewayConfig,
    ModbusRtuTransport,
    ModbusTcpTransport,
    endpoint_key,
    load_driver_profile,
)
from gateway.reporting import ReportFilter, profile_ranges
from gateway.sources import DeviceHealth, Source
from gateway.sources.ble import BleSource, LinkFactory, SourceFactory
from gateway.sources.build import SourceOptions, build_sources

if TYPE_CHECKING:  # the stage imports numpy; a gateway without models never loads it
    from edge_models.stage import EdgeStage

log = logging.getLogger(__name__)


class PackBuilder:
    """Groups records into packs: sealed when full or when the oldest record waited enough.

    If the outbox cannot take them (I/O error), records stay pending and are retried; the
    pending list is bounded and what it must drop is counted, never dropped silently.
    """

    def __init__(
        self,
        outbox: Outbox,
        max_records: int,
        max_delay_s: float,
        max_pending: int = 200_000,
    ) -> None:
        self.outbox = outbox
        self.max_records = max_records
        self.max_delay_s = max_delay_s
        self.max_pending = max_pending
        self._pending: list[Record] = []
        self._since: float | None = None
        self.append_errors = 0
        self.dropped_records = 0

    def add(self, records: list[Record]) -> None:
        if not self._pending:
            self._since = time.monotonic()
        self._pending.extend(records)
        if len(self._pending) >= self.max_records:
            self.flush()

    def flush(self, priority: int = PRIORITY_TELEMETRY) -> None:
        if not self._pending:
            return
        batches = [
            self._pending[i : i + self.max_records]
            for i in range(0, len(self._pending), self.max_records)
        ]
        try:
            self.outbox.append(batches, priority)
        except OutboxFull as exc:
            # Cannot fit even in an emptied file: keeping it would block everything behind it.
            self.dropped_records += len(self._pending)
            log.error("%s; %d record(s) dropped", exc, len(self._pending))
        except sqlite3.Error as exc:
            self.append_errors += 1
            overflow = len(self._pending) - self.max_pending
            if overflow > 0:
                del self._pending[:overflow]
                self.dropped_records += overflow
            log.error(
                "outbox append failed (%s); %d record(s) kept pending", exc, len(self._pending)
            )
            return
        self._pending = []
        self._since = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.max_delay_s / 2)
            if self._since is not None and time.monotonic() - self._since >= self.max_delay_s:
                self.flush()


def status_records(rt: GatewayRuntime, interval_s: float, now: float) -> list[Record]:
    """The gateway's own health as SenML records of the reserved device ``gateway``."""
    stats = rt.outbox.stats()
    latencies = sorted(rt.uplink.counters.latencies_s)
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else None
    values: list[tuple[str, float | None, str | None]] = [
        ("outbox_depth", stats.depth_records, "count"),
        ("outbox_packs", stats.depth_packs, "count"),
        ("outbox_oldest_age", stats.oldest_age_s, "s"),
        ("outbox_bytes", stats.file_bytes, "B"),
        ("records_evicted", stats.records_evicted, "count"),
        ("records_expired", stats.records_expired, "count"),
        ("records_dropped", rt.builder.dropped_records, "count"),
        ("publish_latency_p99", p99, "s"),
        ("uplink_connects", rt.uplink.counters.connects, "count"),
        (
            "poll_errors",
            sum(c.polls - c.ok for b in rt.buses for c in b.counters.values()),
            "count",
        ),
        (
            "devices_degraded",
            sum(c.degraded for b in rt.buses for c in b.counters.values()),
            "count",
        ),
    ]
    if rt.reporting is not None:
        counters = rt.reporting.counters
        values.append(("rbe_suppressed", counters.suppressed, "count"))
        values += [(f"quality_{check}", n, "count") for check, n in counters.flagged.items()]
    values += device_status_values(rt)
    return [
        Record(f"gateway/{name}", now, float(value), unit, interval_s)
        for name, value, unit in values
        if value is not None
    ]


def device_health(rt: GatewayRuntime) -> dict[str, DeviceHealth]:
    """Every device's counters, whatever its transport (Modbus buses and the sources)."""
    out: dict[str, DeviceHealth] = {}
    for bus in rt.buses:
        for name, c in bus.counters.items():
            out[name] = DeviceHealth(
                "modbus",
                reads=c.ok,
                errors=c.polls - c.ok,
                timeouts=c.timeouts,
                unparsable=c.crc + c.garbage + c.decode,
                state="degraded" if c.degraded else ("failing" if c.consecutive_failures else "ok"),
                last_error=c.last_error,
            )
    for source in rt.sources:
        out.update(source.health())
    return out


def device_status_values(rt: GatewayRuntime) -> list[tuple[str, float | None, str | None]]:
    """Per device ``errors.<id>``, ``timeouts.<id>``, ``unparsable.<id>`` (first time and on
    change); the sum over devices and BLE availability every time."""
    values: list[tuple[str, float | None, str | None]] = []
    health = device_health(rt)
    sent = rt.device_counters_sent
    for device, h in sorted(health.items()):
        for name, count in (
            (f"errors.{device}", h.errors),
            (f"timeouts.{device}", h.timeouts),
            (f"unparsable.{device}", h.unparsable),
        ):
            if sent.get(name) != count:  # first status: all of them, then only changes
                sent[name] = count
                values.append((name, count, "count"))
    values.append(("source_errors", sum(h.errors for h in health.values()), "count"))
    for source in rt.sources:
        if isinstance(source, BleSource):
            values.append(("ble_available", float(source.unavailable is None), None))
    return values


def correction_records(correction: ClockCorrection, now: float) -> list[Record]:
    """Tell central how far off the readings stamped while unsynchronised were."""
    return [
        Record("gateway/clock_offset", now, correction.offset_s, "s"),
        Record("gateway/clock_unsynced_since", now, correction.unsynced_since, "s"),
    ]


async def housekeeping(
    rt: GatewayRuntime, clock: GatewayClock, status_interval_s: float, tick_s: float = 1.0
) -> None:
    """Follow the clock; expire over-age packs and publish the gateway's status, periodically."""
    next_status = time.monotonic() + status_interval_s
    while True:
        await asyncio.sleep(tick_s)
        correction = clock.check()
        if correction is not None:
            rt.outbox.append([correction_records(correction, clock.now())], PRIORITY_EVENT)
        if time.monotonic() < next_status:
            continue
        next_status += status_interval_s
        expired = rt.outbox.expire()
        if expired:
            log.warning("outbox: %d record(s) expired (older than the age bound)", expired)
        records = status_records(rt, status_interval_s, clock.now())
        latency = next((r.value for r in records if r.quantity == "publish_latency_p99"), None)
        if isinstance(latency, float):
            rt.outbox.set_gauge("publish_latency_p99_us", round(latency * 1e6))
        records += [
            Record("gateway/clock_synced", clock.now(), clock.synced, None, status_interval_s),
            Record(
                "gateway/clock_steps", clock.now(), float(clock.steps), "count", status_interval_s
            ),
        ]
        rt.outbox.append([records], PRIORITY_EVENT)


@dataclass
class GatewayRuntime:
    """What a running gateway exposes (for status, tests and the demo)."""

    outbox: Outbox
    uplink: Uplink
    buses: list[ModbusBus]
    builder: PackBuilder
    stages: list[EdgeStage]
    reporting: ReportFilter | None = None
    sources: list[Source] = field(default_factory=list)  # CoAP, serial-line, BLE
    # Per-device counters as last published: only changes are sent again (central keeps the
    # latest value), so 200 healthy devices do not add 600 records to every status.
    device_counters_sent: dict[str, float] = field(default_factory=dict)


class GatewayDaemon:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        drain_timeout_s: float = 10.0,
        clock: GatewayClock | None = None,
        ble_source: SourceFactory | None = None,
        gatt_link: LinkFactory | None = None,
    ) -> None:
        """`ble_source`, `gatt_link`: the radio (default: bleak); tests pass a fake one."""
        self.config = config
        self.clock = clock or GatewayClock()
        self._ble_source = ble_source
        self._gatt_link = gatt_link
        self.drain_timeout_s = drain_timeout_s
        self.runtime: GatewayRuntime | None = None
        self.ready = asyncio.Event()

    def _build(self) -> GatewayRuntime:
        cfg = self.config
        outbox = Outbox(
            cfg.outbox.path,
            cfg.gateway_id,
            max_bytes=cfg.outbox.max_bytes,
            max_age_s=cfg.outbox.max_age_s,
            wire_format=cfg.outbox.format,
            synchronous=cfg.outbox.synchronous,
            max_file_bytes=cfg.outbox.max_file_bytes,
        )
        builder = PackBuilder(outbox, cfg.uplink.pack_max_records, cfg.uplink.pack_max_delay_s)
        stages = self._edge_stages(outbox, builder)

        # Quality checks and report-by-exception on every source's records; the edge
        # stages still see every reading (flagged), the outbox only what is reported.
        ranges: dict[str, tuple[float, float]] = {}
        profiles: dict[str, DeviceProfile] = {}  # parsed once, shared by the model's devices
        source_profiles: dict[str, SourceProfile] = {}
        for d in cfg.devices:
            if d.profile is None:
                continue
            if d.transport.type.startswith("modbus-"):
                if d.profile not in profiles:
                    profiles[d.profile] = load_profile(d.profile)
                ranges.update(profile_ranges(d.id, profiles[d.profile]))
            else:  # CoAP, serial line, BLE: the driver profile's points
                if d.profile not in source_profiles:
                    source_profiles[d.profile] = load_driver_profile(d.profile)
                ranges.update(profile_ranges(d.id, source_profiles[d.profile]))
        reporting = ReportFilter(
            cfg.reporting,
            {d.id: d.reporting for d in cfg.devices if d.reporting is not None},
            ranges,
        )

        def sink(records: list[Record]) -> None:
            checked, reported = reporting.process(records)
            if reported:
                builder.add(reported)
            for stage in stages:
                stage.submit(checked)

        # One owner (endpoint + bus scheduler) per TCP endpoint or serial port.
        buses: dict[str, ModbusBus] = {}
        decoders = DriverDecoders()
        for device in cfg.devices:
            t = device.transport
            if not isinstance(t, ModbusTcpTransport | ModbusRtuTransport):
                continue  # the sources below
            key = endpoint_key(t)
            if key not in buses:
                endpoint: ModbusTcpEndpoint | ModbusRtuEndpoint
                if isinstance(t, ModbusRtuTransport):
                    endpoint = ModbusRtuEndpoint(
                        t.port, t.baudrate, t.parity, t.stopbits, t.timeout, t.turnaround_s
                    )
                else:
                    endpoint = ModbusTcpEndpoint(t.host, t.port, t.timeout)
                buses[key] = ModbusBus(
                    endpoint,
                    sink,
                    clock=self.clock.now,
                    clock_synced=lambda: self.clock.synced,
                )
            assert device.profile is not None and device.poll_interval is not None  # config
            profile = profiles[device.profile]
            buses[key].add_device(
                device.id,
                profile,
                t.device_id,
                device.poll_interval,
                decoder=decoders.for_device(device.profile, profile),  # driver's decoder.py
            )
        # One owner per CoAP context, serial port and BLE radio; the same sink.
        sources = build_sources(
            cfg,
            sink,
            stages,
            SourceOptions(
                self.clock.now, lambda: self.clock.synced, self._ble_source, self._gatt_link
            ),
        )

        def birth() -> dict[str, object]:
            doc: dict[str, object] = {
                "devices": [
                    {
                        "id": d.id,
                        "profile": d.profile,
                        "transport": d.transport.type,
                        "asset": d.asset,
                        "location": d.location.model_dump() if d.location else None,
                        "poll_interval": d.poll_interval,
                    }
                    for d in cfg.devices
                ]
            }
            for source in sources:
                if isinstance(source, BleSource):  # as known at this (re)connection
                    doc["ble"] = {"state": source.state, "reason": source.unavailable}
            return doc

        uplink = Uplink(
            outbox,
            cfg.broker,
            site=cfg.site,
            gateway=cfg.gateway_id,
            window=cfg.uplink.window,
            replay_rate=cfg.uplink.replay_rate_packs_s,
            confirm=cfg.uplink.confirm,
            confirm_timeout_s=cfg.uplink.confirm_timeout_s,
            replay_unconfirmed_max=cfg.uplink.replay_unconfirmed_max,
            birth=birth,
        )
        return GatewayRuntime(
            outbox, uplink, list(buses.values()), builder, stages, reporting, sources
        )

    def _edge_stages(self, outbox: Outbox, builder: PackBuilder) -> list[EdgeStage]:
        """One inference stage per distinct model attachment, shared by its devices."""
        groups: dict[str, tuple[ModelAttachment, set[str]]] = {}
        for device in self.config.devices:
            if device.model is not None:
                key = device.model.model_dump_json()
                groups.setdefault(key, (device.model, set()))[1].add(device.id)
        if not groups:
            return []
        from edge_models.boards import load_board
        from edge_models.stage import EdgeStage

        board = load_board(self.config.board)

        def emit(records: list[Record], priority: int) -> None:  # called on the loop
            if priority == PRIORITY_TELEMETRY:
                builder.add(records)
            else:
                outbox.append([records], priority)

        return [EdgeStage(spec, board, emit, devices=ids) for spec, ids in groups.values()]

    async def run(self, stop: asyncio.Event) -> None:
        rt = self.runtime = self._build()
        uplink_stop = asyncio.Event()
        log.info(
            "gateway %s/%s: epoch %d, %d device(s), outbox %s",
            self.config.site,
            self.config.gateway_id,
            rt.outbox.epoch,
            len(self.config.devices),
            rt.outbox.path,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                uplink_task = tg.create_task(rt.uplink.run(uplink_stop))
                producers = [tg.create_task(bus.run()) for bus in rt.buses]
                producers += [tg.create_task(source.run()) for source in rt.sources]
                for stage in rt.stages:
                    stage.start()  # a model that fails to load reports it; polling goes on
                producers.append(tg.create_task(rt.builder.run()))
                producers.append(
                    tg.create_task(
                        housekeeping(rt, self.clock, self.config.uplink.status_interval_s)
                    )
                )
                self.ready.set()
                await stop.wait()
                for task in producers:
                    task.cancel()
                await asyncio.gather(*producers, return_exceptions=True)
                for stage in rt.stages:
                    await stage.stop()
                rt.builder.flush()
                uplink_stop.set()
                try:
                    await asyncio.wait_for(asyncio.shield(uplink_task), self.drain_timeout_s)
                except TimeoutError:
                    log.warning("drain timed out; %d pack(s) stay in the outbox", rt.outbox.depth())
                    uplink_task.cancel()
        finally:
            with contextlib.suppress(Exception):
                rt.builder.flush()
            for bus in rt.buses:
                await bus.endpoint.close()
            log.info("gateway stopped: %s", rt.outbox.stats().as_dict())
            rt.outbox.close()
