"""GATT notifications -> Records, for BLE sensors that do not advertise their readings.

A connection costs the sensor battery and holds one of the adapter's few connection slots,
so prefer advertisements (BTHome) where a sensor offers them. Where it does not,
``GattSubscriber`` connects, subscribes to the configured characteristics, turns every
notification into Records through a decoder per characteristic, and reconnects with a
bounded backoff when the link drops. The radio sits behind :class:`GattLink` (the real one
wraps bleak's ``BleakClient``), so everything above it is tested without one.

Decoders are declarative (``struct`` format + per-field quantity, scale, unit); the common
Environmental Sensing and Battery characteristics come predefined in :data:`STANDARD`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cloud_bridge.senml import Record
from drivers.ble import BleUnavailable, as_unavailable

log = logging.getLogger(__name__)

__all__ = [
    "STANDARD",
    "BleGattTransportConfig",
    "BleakGattLink",
    "CharacteristicConfig",
    "FieldSpec",
    "GattCounters",
    "GattError",
    "GattLink",
    "GattSubscriber",
    "ReconnectBackoff",
    "full_uuid",
    "struct_decoder",
]

Reading = tuple[str, float | int | bool | str, str | None]  # quantity, value, SenML unit
CharDecoder = Callable[[bytes], list[Reading]]


class GattError(Exception):
    """A connection or subscription failure of this device (retried with backoff)."""


class GattLink(Protocol):
    """The radio boundary: one peripheral."""

    async def connect(self, on_disconnect: Callable[[], None]) -> None:
        """Connect; `on_disconnect` is called once when the link drops afterwards.
        Raises GattError (device problem) or BleUnavailable (no BLE stack)."""
        ...

    async def start_notify(self, uuid: str, callback: Callable[[bytes], None]) -> None: ...

    async def disconnect(self) -> None: ...


def full_uuid(uuid: str) -> str:
    """``2a6e`` / ``0x2A6E`` -> ``00002a6e-0000-1000-8000-00805f9b34fb`` (the SIG base UUID)."""
    text = uuid.lower().removeprefix("0x")
    if len(text) == 4:
        return f"0000{text}-0000-1000-8000-00805f9b34fb"
    if len(text) == 8:
        return f"{text}-0000-1000-8000-00805f9b34fb"
    return text


# --- declarative decoders -------------------------------------------------------------------


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    quantity: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0


class CharacteristicConfig(BaseModel):
    """One characteristic: its UUID, a ``struct`` format (little-endian: ``<hH``), fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uuid: str = Field(min_length=4)
    format: str = Field(min_length=2, description="struct format, e.g. '<hH'")
    fields: tuple[FieldSpec, ...] = Field(min_length=1)

    @field_validator("format")
    @classmethod
    def _valid_format(cls, fmt: str) -> str:
        try:
            struct.calcsize(fmt)
        except struct.error as exc:
            raise ValueError(f"invalid struct format {fmt!r}: {exc}") from None
        return fmt

    def decoder(self) -> CharDecoder:
        return struct_decoder(self.format, self.fields)


def struct_decoder(fmt: str, fields: Sequence[FieldSpec]) -> CharDecoder:
    """Unpack with `fmt`; value i = raw_i * scale + offset. Raises ValueError on a bad size."""
    layout = struct.Struct(fmt)

    def decode(data: bytes) -> list[Reading]:
        try:
            raw = layout.unpack(data[: layout.size])
        except struct.error as exc:
            raise ValueError(f"{len(data)} bytes for {fmt!r}: {exc}") from None
        readings: list[Reading] = []
        for spec, value in zip(fields, raw, strict=False):
            number = value * spec.scale + spec.offset
            if not math.isfinite(number):
                raise ValueError(f"{spec.quantity} is not finite")
            readings.append((spec.quantity, round(number, 9), spec.unit))
        return readings

    return decode


# Bluetooth SIG characteristics (GATT Specification Supplement).
STANDARD: dict[str, CharDecoder] = {
    full_uuid("2a6e"): struct_decoder(
        "<h", [FieldSpec(quantity="temperature", unit="Cel", scale=0.01)]
    ),
    full_uuid("2a6f"): struct_decoder(
        "<H", [FieldSpec(quantity="humidity", unit="%RH", scale=0.01)]
    ),
    # 0.1 Pa -> hPa
    full_uuid("2a6d"): struct_decoder(
        "<I", [FieldSpec(quantity="pressure", unit="hPa", scale=0.001)]
    ),
    full_uuid("2a19"): struct_decoder("<B", [FieldSpec(quantity="battery", unit="%EL")]),
}


class BleGattTransportConfig(BaseModel):
    """Suggested gateway-config shape for ``transport: {type: ble-gatt, address: …}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["ble-gatt"]
    address: str = Field(pattern=r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
    standard: tuple[str, ...] = Field((), description="SIG characteristics: 2a6e, 2a6f, …")
    characteristics: tuple[CharacteristicConfig, ...] = ()
    timeout: float = Field(20.0, gt=0, le=120, description="connect timeout, seconds")

    @model_validator(mode="after")
    def _something_to_read(self) -> BleGattTransportConfig:
        unknown = [u for u in self.standard if full_uuid(u) not in STANDARD]
        if unknown:
            raise ValueError(f"no standard decoder for {unknown}; use `characteristics`")
        if not self.standard and not self.characteristics:
            raise ValueError("list `standard` UUIDs and/or `characteristics` to subscribe to")
        return self

    def decoders(self) -> dict[str, CharDecoder]:
        out = {full_uuid(u): STANDARD[full_uuid(u)] for u in self.standard}
        out.update({full_uuid(c.uuid): c.decoder() for c in self.characteristics})
        return out


# --- the subscriber -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReconnectBackoff:
    initial_s: float = 2.0
    factor: float = 2.0
    max_s: float = 120.0

    def delay_s(self, attempt: int) -> float:
        return min(self.max_s, self.initial_s * self.factor ** max(0, attempt - 1))


@dataclass
class GattCounters:
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    notifications: int = 0
    records: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # decode, unknown_uuid, connect, ...
    last_error: str = ""

    def count_error(self, reason: str, detail: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1
        self.last_error = f"{reason}: {detail}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class GattSubscriber:
    def __init__(
        self,
        device: str,
        link: GattLink,
        decoders: Mapping[str, CharDecoder],
        sink: Callable[[list[Record]], None],
        *,
        backoff: ReconnectBackoff = ReconnectBackoff(),
        update_time: float | None = None,
        clock: Callable[[], float] = time.time,
        clock_synced: Callable[[], bool] = lambda: True,
    ) -> None:
        if not decoders:
            raise ValueError("subscribe to at least one characteristic")
        self.device = device
        self.link = link
        self.decoders = {full_uuid(uuid): decoder for uuid, decoder in decoders.items()}
        self.backoff = backoff
        self.update_time = update_time
        self.counters = GattCounters()
        self.unavailable: BleUnavailable | None = None
        self._sink = sink
        self._clock = clock
        self._clock_synced = clock_synced

    def handle(self, uuid: str, data: bytes) -> list[Record]:
        """One notification -> Records (decode errors counted, never raised)."""
        self.counters.notifications += 1
        decoder = self.decoders.get(full_uuid(uuid))
        if decoder is None:
            self.counters.count_error("unknown_uuid", uuid)
            return []
        try:
            readings = decoder(bytes(data))
        except ValueError as exc:
            self.counters.count_error("decode", f"{uuid}: {exc}")
            log.debug("gatt %s: %s", self.device, exc)
            return []
        when, synced = self._clock(), self._clock_synced()
        records = [
            Record(f"{self.device}/{q}", when, v, u, self.update_time, None, synced)
            for q, v, u in readings
        ]
        self.counters.records += len(records)
        return records

    async def run(self) -> None:
        """Stay subscribed until cancelled; without a BLE stack, log once and return."""
        attempt = 0
        while True:
            try:
                await self._session()
                attempt = 0  # the link was up: reconnect quickly
            except BleUnavailable as exc:
                self.unavailable = exc
                log.error(
                    "gatt %s: BLE unavailable: %s (other devices keep polling)", self.device, exc
                )
                return
            except GattError as exc:
                self.counters.connect_failures += 1
                self.counters.count_error("connect", str(exc))
                if attempt == 0:
                    log.warning("gatt %s: %s", self.device, exc)
            attempt += 1
            await asyncio.sleep(self.backoff.delay_s(attempt))

    async def _session(self) -> None:
        dropped = asyncio.Event()
        await self.link.connect(dropped.set)
        self.counters.connects += 1
        try:
            for uuid in self.decoders:
                await self.link.start_notify(uuid, self._callback(uuid))
            await dropped.wait()
            self.counters.disconnects += 1
            log.info("gatt %s: disconnected", self.device)
        finally:
            with contextlib.suppress(Exception):
                await self.link.disconnect()

    def _callback(self, uuid: str) -> Callable[[bytes], None]:
        def on_notify(data: bytes) -> None:
            records = self.handle(uuid, data)
            if records:
                self._sink(records)

        return on_notify


# --- the real link: bleak -------------------------------------------------------------------


class BleakGattLink:
    """GattLink over bleak's BleakClient; `client_factory` defaults to ``bleak.BleakClient``."""

    def __init__(
        self,
        address: str,
        *,
        adapter: str | None = None,
        timeout_s: float = 20.0,
        client_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.address = address
        self.adapter = adapter
        self.timeout_s = timeout_s
        self._factory = client_factory
        self._client: Any = None

    async def connect(self, on_disconnect: Callable[[], None]) -> None:
        factory = self._factory
        if factory is None:
            try:
                from bleak import BleakClient
            except ImportError as exc:
                raise BleUnavailable(f"bleak is not installed ({exc})") from None
            factory = BleakClient
        bluez = {"adapter": self.adapter} if self.adapter else {}
        self._client = factory(
            self.address,
            disconnected_callback=lambda _client: on_disconnect(),
            timeout=self.timeout_s,
            bluez=bluez,
        )
        try:
            await self._client.connect()
        except Exception as exc:
            unavailable = as_unavailable(exc, any_bleak_error=False)
            if unavailable is not None:
                raise unavailable from exc
            raise GattError(f"connect to {self.address}: {exc or type(exc).__name__}") from exc

    async def start_notify(self, uuid: str, callback: Callable[[bytes], None]) -> None:
        try:
            await self._client.start_notify(uuid, lambda _char, data: callback(bytes(data)))
        except Exception as exc:
            unavailable = as_unavailable(exc, any_bleak_error=False)
            if unavailable is not None:
                raise unavailable from exc
            raise GattError(f"subscribe {uuid}: {exc or type(exc).__name__}") from exc

    async def disconnect(self) -> None:
        if self._client is not None:
            await self._client.disconnect()
