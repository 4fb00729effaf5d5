"""Bluetooth LE: one scanner for every BTHome device, one GATT link per connected device.

BLE is optional. When the host has no adapter, no BlueZ or no D-Bus, the drivers would each
log their own error; here the first BleUnavailable from any of them ends the whole BLE
session instead, the gateway logs ONE line saying why and which devices are not read,
reports it in its status, and looks again every `retry_s` (quietly, unless the reason
changes or BLE comes back). Every other source keeps running throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from drivers.ble import BleUnavailable
from drivers.ble.gatt import BleakGattLink, BleGattTransportConfig, GattLink, GattSubscriber
from drivers.ble.scanner import (
    Advertisement,
    AdvertisementSource,
    BleakAdvertisementSource,
    BthomeDeviceConfig,
    BthomeScanner,
)
from gateway.sources import DeviceHealth, Sink, supervise

log = logging.getLogger(__name__)

__all__ = ["BleSource", "GattDevice", "LinkFactory", "SourceFactory"]

SourceFactory = Callable[[], AdvertisementSource]
LinkFactory = Callable[[BleGattTransportConfig], GattLink]


@dataclass(frozen=True)
class GattDevice:
    id: str
    transport: BleGattTransportConfig
    update_time: float | None = None


class BleSource:
    name = "ble"

    def __init__(
        self,
        bthome: list[BthomeDeviceConfig],
        gatt: list[GattDevice],
        sink: Sink,
        *,
        adapter: str | None = None,
        scan_mode: str = "auto",
        dedup_window_s: float = 10.0,
        retry_s: float = 60.0,
        source_factory: SourceFactory | None = None,
        link_factory: LinkFactory | None = None,
        clock: Callable[[], float] = time.time,
        clock_synced: Callable[[], bool] = lambda: True,
    ) -> None:
        if not bthome and not gatt:
            raise ValueError("no BLE devices")
        self.retry_s = retry_s
        self.unavailable: str | None = None  # why BLE is not read now (None: it is, or may be)
        self.state = "unknown"  # available once an advertisement or a connection proves it
        self.outages = 0
        self._report: asyncio.Future[BleUnavailable] | None = None
        self._ids = [d.id for d in bthome] + [d.id for d in gatt]

        def default_source() -> AdvertisementSource:
            return BleakAdvertisementSource(adapter=adapter, mode=scan_mode, clock=clock)  # type: ignore[arg-type]

        def default_link(t: BleGattTransportConfig) -> GattLink:
            return BleakGattLink(t.address, adapter=adapter, timeout_s=t.timeout)

        make_source = source_factory or default_source
        make_link = link_factory or default_link
        self.scanner = (
            BthomeScanner(
                _Gate(make_source(), self),
                sink,
                devices=bthome,
                dedup_window_s=dedup_window_s,
                clock_synced=clock_synced,
            )
            if bthome
            else None
        )
        self.subscribers = [
            GattSubscriber(
                d.id,
                _GatedLink(make_link(d.transport), self),
                d.transport.decoders(),
                sink,
                update_time=d.update_time,
                clock=clock,
                clock_synced=clock_synced,
            )
            for d in gatt
        ]

    # --- the gates report here -------------------------------------------------------------

    def stack_missing(self, exc: BleUnavailable) -> None:
        if self._report is not None and not self._report.done():
            self._report.set_result(exc)

    def stack_works(self) -> None:
        self.state = "available"
        if self.unavailable is not None:
            log.info("BLE available again: reading %s", ", ".join(self._ids))
            self.unavailable = None

    # --- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            exc = await self._session()
            reason = str(exc)
            if reason != self.unavailable:
                self.outages += 1
                log.error(
                    "BLE unavailable: %s; not reading %s (retry every %g s); every other"
                    " device keeps polling",
                    reason,
                    ", ".join(self._ids),
                    self.retry_s,
                )
            else:
                log.debug("BLE still unavailable: %s", reason)
            self.unavailable = reason
            self.state = "unavailable"
            await asyncio.sleep(self.retry_s)

    async def _session(self) -> BleUnavailable:
        """Run every BLE driver until one finds no BLE stack; return what it found."""
        report: asyncio.Future[BleUnavailable] = asyncio.get_running_loop().create_future()
        self._report = report
        tasks: list[asyncio.Task[None]] = []
        if self.scanner is not None:
            tasks.append(asyncio.create_task(supervise("ble scanner", self.scanner.run)))
        for sub in self.subscribers:
            tasks.append(asyncio.create_task(supervise(f"gatt {sub.device}", sub.run)))
        try:
            return await report
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._report = None

    def health(self) -> dict[str, DeviceHealth]:
        state = "unavailable" if self.unavailable is not None else "ok"
        last = f"unavailable: {self.unavailable}" if self.unavailable else ""
        out: dict[str, DeviceHealth] = {}
        if self.scanner is not None:
            for config in self.scanner.devices or []:
                c = self.scanner.counters.get(config.id)
                errors = sum(c.errors.values()) if c else 0
                out[config.id] = DeviceHealth(
                    "ble-bthome",
                    reads=c.packets if c else 0,
                    errors=errors,
                    unparsable=errors,
                    state=state,
                    last_error=last or (c.last_error if c else ""),
                )
        for sub in self.subscribers:
            g = sub.counters
            decode = g.errors.get("decode", 0) + g.errors.get("unknown_uuid", 0)
            out[sub.device] = DeviceHealth(
                "ble-gatt",
                reads=g.notifications - decode,
                errors=sum(g.errors.values()),
                unparsable=decode,
                state=state
                if state != "ok"
                else ("ok" if g.connects > g.disconnects else "failing"),
                last_error=last or g.last_error,
            )
        return out


class _Gate:
    """The advertisement source, with 'no BLE here' reported to the owner instead of to the
    scanner (which would log its own line and stop)."""

    def __init__(self, inner: AdvertisementSource, owner: BleSource) -> None:
        self.inner = inner
        self.owner = owner

    async def advertisements(self) -> AsyncIterator[Advertisement]:
        stream = self.inner.advertisements()
        try:
            while True:
                try:
                    adv = await anext(stream)
                except StopAsyncIteration:
                    return
                except BleUnavailable as exc:
                    self.owner.stack_missing(exc)
                    await asyncio.Event().wait()  # parked until the owner ends the session
                self.owner.stack_works()
                yield adv
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


class _GatedLink:
    def __init__(self, inner: GattLink, owner: BleSource) -> None:
        self.inner = inner
        self.owner = owner

    async def connect(self, on_disconnect: Callable[[], None]) -> None:
        try:
            await self.inner.connect(on_disconnect)
        except BleUnavailable as exc:
            self.owner.stack_missing(exc)
            await asyncio.Event().wait()
        self.owner.stack_works()

    async def start_notify(self, uuid: str, callback: Callable[[bytes], None]) -> None:
        try:
            await self.inner.start_notify(uuid, callback)
        except BleUnavailable as exc:
            self.owner.stack_missing(exc)
            await asyncio.Event().wait()

    async def disconnect(self) -> None:
        await self.inner.disconnect()
