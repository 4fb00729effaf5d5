"""The gateway daemon: pollers → pack builder → outbox → uplink, under one TaskGroup.

Shutdown (SIGTERM) stops the pollers first, seals what they produced into the outbox, then
lets the uplink drain for up to ``drain_timeout_s``. Whatever is not acknowledged by then
stays in the outbox file and goes out on the next start: nothing is lost either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from cloud_bridge.outbox import Outbox
from cloud_bridge.senml import Record
from cloud_bridge.uplink import Uplink
from drivers.modbus.profile import load_profile
from drivers.modbus.transport import ModbusTcpEndpoint
from gateway.config import GatewayConfig
from gateway.poller import ModbusDevicePoller

log = logging.getLogger(__name__)


class PackBuilder:
    """Groups records into packs: sealed when full or when the oldest record waited enough."""

    def __init__(self, outbox: Outbox, max_records: int, max_delay_s: float) -> None:
        self.outbox = outbox
        self.max_records = max_records
        self.max_delay_s = max_delay_s
        self._pending: list[Record] = []
        self._since: float | None = None

    def add(self, records: list[Record]) -> None:
        if not self._pending:
            self._since = time.monotonic()
        self._pending.extend(records)
        if len(self._pending) >= self.max_records:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        batches = [
            self._pending[i : i + self.max_records]
            for i in range(0, len(self._pending), self.max_records)
        ]
        self._pending = []
        self._since = None
        self.outbox.append(batches)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.max_delay_s / 2)
            if self._since is not None and time.monotonic() - self._since >= self.max_delay_s:
                self.flush()


@dataclass
class GatewayRuntime:
    """What a running gateway exposes (for status, tests and the demo)."""

    outbox: Outbox
    uplink: Uplink
    pollers: list[ModbusDevicePoller]
    builder: PackBuilder


class GatewayDaemon:
    def __init__(self, config: GatewayConfig, *, drain_timeout_s: float = 10.0) -> None:
        self.config = config
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
        )
        builder = PackBuilder(outbox, cfg.uplink.pack_max_records, cfg.uplink.pack_max_delay_s)
        endpoints: dict[tuple[str, int], ModbusTcpEndpoint] = {}
        pollers = []
        for device in cfg.devices:
            t = device.transport
            endpoint = endpoints.get((t.host, t.port))
            if endpoint is None:
                endpoint = endpoints[(t.host, t.port)] = ModbusTcpEndpoint(
                    t.host, t.port, t.timeout
                )
            profile = load_profile(device.profile)
            pollers.append(
                ModbusDevicePoller(
                    device.id, profile, endpoint, t.device_id, device.poll_interval, builder.add
                )
            )

        def birth() -> dict[str, object]:
            return {
                "devices": [
                    {
                        "id": d.id,
                        "profile": d.profile,
                        "asset": d.asset,
                        "location": d.location.model_dump() if d.location else None,
                        "poll_interval": d.poll_interval,
                    }
                    for d in cfg.devices
                ]
            }

        uplink = Uplink(
            outbox,
            cfg.broker,
            site=cfg.site,
            gateway=cfg.gateway_id,
            window=cfg.uplink.window,
            birth=birth,
        )
        return GatewayRuntime(outbox, uplink, pollers, builder)

    async def run(self, stop: asyncio.Event) -> None:
        rt = self.runtime = self._build()
        uplink_stop = asyncio.Event()
        log.info(
            "gateway %s/%s: epoch %d, %d device(s), outbox %s",
            self.config.site,
            self.config.gateway_id,
            rt.outbox.epoch,
            len(rt.pollers),
            rt.outbox.path,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                uplink_task = tg.create_task(rt.uplink.run(uplink_stop))
                producers = [tg.create_task(p.run()) for p in rt.pollers]
                producers.append(tg.create_task(rt.builder.run()))
                self.ready.set()
                await stop.wait()
                for task in producers:
                    task.cancel()
                await asyncio.gather(*producers, return_exceptions=True)
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
            for endpoint in {p.endpoint for p in rt.pollers}:
                await endpoint.close()
            log.info("gateway stopped: %s", rt.outbox.stats().as_dict())
            rt.outbox.close()
