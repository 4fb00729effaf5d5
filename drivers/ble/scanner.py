"""Passive BLE scanning for BTHome v2 advertisements -> Records.

``BthomeScanner`` reads :class:`Advertisement` values from an :class:`AdvertisementSource`
(the real one wraps bleak's ``BleakScanner``; tests feed captured bytes), keeps the devices
the configuration lists (by MAC address and/or local name), parses their BTHome service
data, drops repeated copies of a packet, and hands Records named ``{device}/{quantity}``
(stamped when the advertisement was received) to `sink`.

Passive scanning (no scan requests: less airtime, less battery drain on the sensors) on
BlueZ goes through the Advertisement Monitor API, which only reports advertisements that
match an "or pattern": here, service data that starts with the BTHome UUID. It needs BlueZ
≥ 5.56 with experimental features; ``mode="auto"`` falls back to active scanning when BlueZ
lacks it. When no BLE stack is there at all the scanner logs one clear error and returns,
so the gateway keeps polling everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud_bridge.senml import Record
from drivers.ble import BleUnavailable, as_unavailable
from drivers.ble.bthome import (
    BTHOME_SERVICE_UUID,
    BthomePacket,
    PacketDedup,
    ParseFailure,
    parse_service_data,
)

log = logging.getLogger(__name__)

__all__ = [
    "Advertisement",
    "AdvertisementSource",
    "BleBthomeTransportConfig",
    "BleScanConfig",
    "BleakAdvertisementSource",
    "BthomeDeviceConfig",
    "BthomeScanner",
    "DeviceCounters",
    "SeenDevice",
    "default_device_id",
]

ScanMode = Literal["passive", "active", "auto"]
_MAC_RE = r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"
_PASSIVE_UNSUPPORTED = "passive scanning"  # bleak's message when BlueZ lacks the monitor API


@dataclass(frozen=True, slots=True)
class Advertisement:
    address: str  # MAC on Linux (a per-host UUID on macOS)
    name: str | None
    rssi: int | None
    service_data: Mapping[str, bytes]  # 128-bit UUID (lower case) -> bytes after the UUID
    time: float  # when it was received, gateway clock (POSIX seconds)


class AdvertisementSource(Protocol):
    def advertisements(self) -> AsyncIterator[Advertisement]:
        """Advertisements until cancelled; raises BleUnavailable when scanning cannot start."""
        ...


# --- configuration --------------------------------------------------------------------------


class BthomeDeviceConfig(BaseModel):
    """One BTHome sensor: which advertiser it is, and the gateway's name for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,62}$")
    mac: str | None = Field(None, pattern=_MAC_RE)
    name: str | None = Field(None, min_length=1, description="advertised local name")
    update_time: float | None = Field(
        None, gt=0, description="SenML ut: the sensor's advertising period, if known"
    )

    @model_validator(mode="after")
    def _identified(self) -> BthomeDeviceConfig:
        if self.mac is None and self.name is None:
            raise ValueError("a BLE device needs `mac` or `name` (or both)")
        return self

    def matches(self, address: str, name: str | None) -> bool:
        if self.mac is not None and self.mac.upper() != address.upper():
            return False
        return self.name is None or self.name == name


class BleBthomeTransportConfig(BaseModel):
    """Suggested gateway-config shape for ``transport: {type: ble-bthome, mac: …}``; every
    such device is served by the one scanner of the ``ble:`` block."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["ble-bthome"]
    mac: str | None = Field(None, pattern=_MAC_RE)
    name: str | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _identified(self) -> BleBthomeTransportConfig:
        if self.mac is None and self.name is None:
            raise ValueError("a BLE device needs `mac` or `name` (or both)")
        return self

    def device(self, device_id: str, update_time: float | None = None) -> BthomeDeviceConfig:
        return BthomeDeviceConfig(
            id=device_id, mac=self.mac, name=self.name, update_time=update_time
        )


class BleScanConfig(BaseModel):
    """Suggested gateway-config block ``ble:`` (one scanner per adapter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    adapter: str | None = Field(None, pattern=r"^hci[0-9]+$", description="default: first")
    mode: ScanMode = "auto"
    dedup_window_s: float = Field(10.0, gt=0, le=3600)
    max_hold_s: float = Field(300.0, gt=0, le=86400)


def default_device_id(address: str) -> str:
    """A device id for an unlisted advertiser (``ble-a4c138123456``), e.g. for `scan`."""
    return "ble-" + re.sub(r"[^0-9a-z]", "", address.lower())[:58]


# --- counters and what was seen -------------------------------------------------------------


@dataclass
class DeviceCounters:
    adverts: int = 0  # BTHome advertisements from this device
    packets: int = 0  # accepted (not a repeat) and parsed
    repeats: int = 0
    records: int = 0
    partial: int = 0  # packets with an unparsable tail (unknown object id, truncated)
    errors: dict[str, int] = field(default_factory=dict)  # encrypted, version, empty, ...
    last_error: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class SeenDevice:
    address: str
    name: str | None
    rssi: int | None
    last_time: float
    device: str
    values: dict[str, tuple[Any, str | None]] = field(default_factory=dict)
    trigger_based: bool = False
    problem: str = ""


# --- the scanner ----------------------------------------------------------------------------


class BthomeScanner:
    def __init__(
        self,
        source: AdvertisementSource,
        sink: Callable[[list[Record]], None],
        *,
        devices: Sequence[BthomeDeviceConfig] | None = None,
        dedup_window_s: float = 10.0,
        max_hold_s: float = 300.0,
        clock_synced: Callable[[], bool] = lambda: True,
    ) -> None:
        """`devices` None: accept every BTHome advertiser (named by default_device_id)."""
        self.source = source
        self.devices = list(devices) if devices is not None else None
        self.dedup_window_s = dedup_window_s
        self.max_hold_s = max_hold_s
        self.counters: dict[str, DeviceCounters] = {}
        self.seen: dict[str, SeenDevice] = {}  # by address
        self.ignored = 0  # BTHome advertisements from devices not in `devices`
        self.unavailable: BleUnavailable | None = None
        self._sink = sink
        self._clock_synced = clock_synced
        self._dedup: dict[str, PacketDedup] = {}
        self._warned: set[tuple[str, str]] = set()

    def _device_for(self, adv: Advertisement) -> tuple[str, float | None] | None:
        if self.devices is None:
            return default_device_id(adv.address), None
        for config in self.devices:
            if config.matches(adv.address, adv.name):
                return config.id, config.update_time
        return None

    def handle(self, adv: Advertisement) -> list[Record]:
        """One advertisement -> Records (no I/O; the run loop and tests call this)."""
        data = _bthome_data(adv.service_data)
        if data is None:
            return []
        target = self._device_for(adv)
        if target is None:
            self.ignored += 1
            return []
        device, update_time = target
        counters = self.counters.setdefault(device, DeviceCounters())
        counters.adverts += 1
        seen = self.seen.setdefault(
            adv.address, SeenDevice(adv.address, adv.name, adv.rssi, adv.time, device)
        )
        seen.name, seen.rssi, seen.last_time = adv.name or seen.name, adv.rssi, adv.time

        # Per advertiser, not per configured device: a name can match several of them.
        dedup = self._dedup.setdefault(
            adv.address.upper(), PacketDedup(self.dedup_window_s, self.max_hold_s)
        )
        if dedup.is_repeat(data, adv.time):
            counters.repeats += 1
            return []
        packet = parse_service_data(data)
        if isinstance(packet, ParseFailure):
            self._count(device, counters, packet.reason, packet.detail)
            seen.problem = packet.reason
            return []
        counters.packets += 1
        if packet.problem is not None:
            counters.partial += 1
            self._count(device, counters, packet.problem, f"{packet.detail}: {data.hex()}")
        seen.trigger_based = packet.trigger_based
        seen.problem = packet.problem or ""
        records = self._records(device, packet, adv.time, update_time)
        for rec in records:
            seen.values[rec.quantity] = (rec.value, rec.unit)
        counters.records += len(records)
        return records

    def _records(
        self, device: str, packet: BthomePacket, when: float, update_time: float | None
    ) -> list[Record]:
        synced = self._clock_synced()
        return [
            Record(f"{device}/{m.quantity}", when, m.value, m.unit, update_time, None, synced)
            for m in packet.measurements
        ]

    def _count(self, device: str, counters: DeviceCounters, reason: str, detail: str) -> None:
        counters.errors[reason] = counters.errors.get(reason, 0) + 1
        counters.last_error = f"{reason}: {detail}"
        # Once per device and reason: an encrypted sensor advertises every second.
        if (device, reason) not in self._warned:
            self._warned.add((device, reason))
            log.warning("ble %s: %s: %s", device, reason, detail)

    async def run(self) -> None:
        """Scan until cancelled; without a BLE stack, log once and return."""
        stream = self.source.advertisements()
        try:
            async for adv in stream:
                records = self.handle(adv)
                if records:
                    self._sink(records)
        except BleUnavailable as exc:
            self.unavailable = exc
            log.error("BLE scanning disabled: %s (other devices keep polling)", exc)
        finally:
            # Close the generator now (it stops the radio scan), not whenever the loop's
            # async-generator finaliser gets to it.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()


def _bthome_data(service_data: Mapping[str, bytes]) -> bytes | None:
    data = service_data.get(BTHOME_SERVICE_UUID)
    if data is None:  # some stacks report upper-case UUIDs
        for uuid, value in service_data.items():
            if uuid.lower() == BTHOME_SERVICE_UUID:
                return bytes(value)
        return None
    return bytes(data)


# --- the real source: bleak -----------------------------------------------------------------


class _Scanner(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


ScannerFactory = Callable[..., _Scanner]


class BleakAdvertisementSource:
    """Advertisements from bleak's BleakScanner (BlueZ on Linux).

    `scanner_factory` defaults to ``bleak.BleakScanner`` and is called with the keyword
    arguments ``detection_callback``, ``scanning_mode`` and ``bluez``; it is a parameter so
    that the error mapping can be tested without a radio.
    """

    def __init__(
        self,
        *,
        adapter: str | None = None,
        mode: ScanMode = "auto",
        queue_size: int = 1024,
        clock: Callable[[], float] = time.time,
        scanner_factory: ScannerFactory | None = None,
    ) -> None:
        self.adapter = adapter
        self.mode = mode
        self.queue_size = queue_size
        self.dropped = 0  # advertisements dropped because the consumer fell behind
        self.active_mode = ""  # the mode scanning actually started in
        self._clock = clock
        self._factory = scanner_factory

    async def advertisements(self) -> AsyncIterator[Advertisement]:
        queue: asyncio.Queue[Advertisement] = asyncio.Queue(self.queue_size)

        def on_advert(device: Any, adv: Any) -> None:
            item = Advertisement(
                address=device.address,
                name=adv.local_name or getattr(device, "name", None),
                rssi=adv.rssi,
                service_data={k.lower(): bytes(v) for k, v in adv.service_data.items()},
                time=self._clock(),
            )
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                self.dropped += 1

        scanner = await self._start(on_advert)
        try:
            while True:
                yield await queue.get()
        finally:
            with contextlib.suppress(Exception):
                await scanner.stop()

    async def _start(self, on_advert: Callable[[Any, Any], None]) -> _Scanner:
        modes: list[Literal["passive", "active"]] = (
            ["passive", "active"] if self.mode == "auto" else [self.mode]
        )
        for index, mode in enumerate(modes):
            try:
                scanner = self._make(on_advert, mode)
                await scanner.start()
            except Exception as exc:
                last = index == len(modes) - 1
                if not last and _PASSIVE_UNSUPPORTED in str(exc):
                    log.warning("BLE: %s; falling back to active scanning", exc)
                    continue
                unavailable = as_unavailable(exc)
                if unavailable is None:
                    raise
                raise unavailable from exc
            self.active_mode = mode
            return scanner
        raise BleUnavailable("no scanning mode could start")  # unreachable: modes non-empty

    def _make(self, on_advert: Callable[[Any, Any], None], mode: str) -> _Scanner:
        factory = self._factory
        bluez: dict[str, Any] = {}
        if self.adapter is not None:
            bluez["adapter"] = self.adapter
        try:
            if factory is None:
                from bleak import BleakScanner

                factory = BleakScanner
            if mode == "passive":
                from bleak.args.bluez import OrPattern
                from bleak.assigned_numbers import AdvertisementDataType

                # Service data AD structure starting with the UUID 0xFCD2, little-endian.
                bluez["or_patterns"] = [
                    OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xd2\xfc")
                ]
        except ImportError as exc:
            raise BleUnavailable(f"bleak is not installed ({exc})") from None
        return factory(detection_callback=on_advert, scanning_mode=mode, bluez=bluez)
