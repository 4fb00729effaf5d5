"""BLE devices of a scenario as BTHome v2 advertisements or GATT notifications, synthesised
byte for byte.

No radio exists where the simulators run, so the radio is the one thing faked: a
:class:`SimulatedAdvertisementSource` implements the scanner's ``AdvertisementSource``
protocol and yields :class:`~drivers.ble.scanner.Advertisement` values whose service data
is what a real BTHome tag would put on the air (device information byte, packet id,
objects in ascending id order, little-endian values at the object's factor). Everything
after the source — parsing, dedup, mapping through the profile — is the real code.

Encoding is the inverse of the profile: a point's value goes back through the mapping's
scale/offset to the BTHome measurement it comes from (``rotation`` for tilt_x on the tilt
tag), then to that measurement's first object id in the BTHome table (0x3F rotation,
0x02 temperature, 0x01 battery). :func:`bthome_tolerance` is the rounding this costs.

Faults: silent (no advertisements), garbage (service data with a BTHome version the
parser refuses, plus random bytes: counted by the scanner, never fatal), stuck and spike
(through the scenario's values).

GATT sensors: :class:`GattPeripheral` packs each subscribed characteristic with its struct
format (the SIG ones with their standard layouts) and pushes it through a
:class:`SimulatedGattLink`, the ``GattLink`` the gateway's ``GattSubscriber`` drives; a
garbage fault sends notifications one byte short.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from drivers.ble.bthome import BTHOME_SERVICE_UUID, OBJECTS, ObjectSpec
from drivers.ble.gatt import full_uuid
from drivers.ble.profile import BleProfile, BthomeObject
from drivers.ble.scanner import Advertisement
from drivers.modbus.codec import Value
from drivers.sim.source_scenario import (
    SourceDevice,
    effective_time,
    sample_rng,
    silent_at,
    values_at,
    wire_fault_at,
)

__all__ = [
    "STANDARD_LAYOUTS",
    "BthomeAdvertiser",
    "BthomeEncodingError",
    "GattPeripheral",
    "SimulatedAdvertisementSource",
    "SimulatedGattLink",
    "bthome_objects",
    "bthome_tolerance",
    "encode_bthome",
    "encode_characteristic",
    "gatt_characteristics",
    "gatt_tolerance",
]

_INFO_V2 = 0x40  # version 2, not encrypted, not trigger-based, no MAC in the payload
_PACKET_ID = 0x00


class BthomeEncodingError(ValueError):
    """A value the BTHome object cannot carry (out of its integer range)."""


@dataclass(frozen=True, slots=True)
class _Target:
    point: str
    object_id: int
    spec: ObjectSpec
    mapping: BthomeObject
    order: int  # 1 for temperature, 2 for temperature_2, ...


def bthome_objects(profile: BleProfile) -> list[_Target]:
    """Per point, the BTHome object that carries it, in the order a tag sends them."""
    assert profile.bthome is not None
    by_point: dict[str, tuple[str, BthomeObject]] = {}
    for measurement in profile.bthome.objects:
        mapping = profile.bthome.mapping(measurement)
        assert mapping is not None
        by_point.setdefault(mapping.quantity, (measurement, mapping))
    targets: list[_Target] = []
    for point in profile.points:
        measurement, mapping = by_point.get(point.name, (point.name, BthomeObject(quantity="x")))
        base, _, suffix = measurement.rpartition("_")
        name, order = measurement, 1
        if base and suffix.isdigit() and _object_for(base, point.kind) is not None:
            name, order = base, int(suffix)  # temperature_2: the second temperature object
        found = _object_for(name, point.kind)
        if found is None:
            raise BthomeEncodingError(f"{point.name}: no BTHome object reports {name!r}")
        object_id, spec = found
        targets.append(_Target(point.name, object_id, spec, mapping, order))
    targets.sort(key=lambda x: (x.object_id, x.order))
    return targets


def _object_for(name: str, kind: str) -> tuple[int, ObjectSpec] | None:
    wanted = ("bool",) if kind == "bool" else ("uint", "sint")
    for object_id, spec in sorted(OBJECTS.items()):
        if spec.quantity == name and spec.kind in wanted:
            return object_id, spec
    return None


def bthome_tolerance(profile: BleProfile, point: str) -> float:
    """How far encoding moves a point's value: half a count of its object, scaled."""
    for target in bthome_objects(profile):
        if target.point == point:
            return abs(target.spec.factor * target.mapping.scale) / 2 * (1 + 1e-9) + 1e-9
    return 0.0


def encode_bthome(profile: BleProfile, values: dict[str, Value], packet_id: int) -> bytes:
    """Service data (after the UUID) of one advertisement carrying `values`."""
    out = bytearray((_INFO_V2, _PACKET_ID, packet_id & 0xFF))
    for target in bthome_objects(profile):
        if target.point not in values:
            continue
        value = values[target.point]
        spec = target.spec
        out.append(target.object_id)
        if spec.kind == "bool":
            out.append(1 if value else 0)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BthomeEncodingError(f"{target.point}: {value!r} is not a number")
        measured = (value - target.mapping.offset) / target.mapping.scale
        raw = round(measured / spec.factor)
        signed = spec.kind == "sint"
        bits = 8 * spec.size
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        if not low <= raw <= high:
            raise BthomeEncodingError(
                f"{target.point}={value!r} needs raw {raw}, object 0x{target.object_id:02X} "
                f"holds {low}..{high}"
            )
        out += raw.to_bytes(spec.size, "little", signed=signed)
    return bytes(out)


class BthomeAdvertiser:
    """One simulated tag: what it advertises at scenario time t (None: nothing)."""

    def __init__(self, device: SourceDevice, *, seed: int = 0, fault_seed: int = 0) -> None:
        profile = device.profile_model
        if not isinstance(profile, BleProfile) or profile.bthome is None:
            raise ValueError(f"{device.id}: {device.profile} is not a BTHome driver")
        self.device = device
        self.profile = profile
        self.seed = seed
        self.packet_id = 0
        self._rng = random.Random(fault_seed)

    def values(self, t: float) -> dict[str, Value]:
        rng = sample_rng(self.seed, self.device.id, effective_time(self.device, t))
        return values_at(self.device, t, rng)

    def service_data(self, t: float) -> bytes | None:
        if silent_at(self.device, t):
            return None
        fault = wire_fault_at(self.device, t)
        if fault is not None and fault.kind == "garbage":
            # Version bits 0b111: the parser must refuse it (counted, not fatal).
            noise = bytes(self._rng.randrange(256) for _ in range(self._rng.randint(0, 12)))
            return bytes((0xE0,)) + noise
        self.packet_id = (self.packet_id + 1) % 256  # a new packet: a new id, so not a repeat
        return encode_bthome(self.profile, self.values(t), self.packet_id)

    def advertisement(self, t: float, when: float) -> Advertisement | None:
        data = self.service_data(t)
        if data is None:
            return None
        name = self.profile.bthome.local_name if self.profile.bthome else None
        return Advertisement(self.device.address, name, -67, {BTHOME_SERVICE_UUID: data}, when)


class SimulatedAdvertisementSource:
    """The radio: an AdvertisementSource fed by :meth:`publish` (or by :meth:`play`)."""

    def __init__(self, queue_size: int = 1024) -> None:
        self._queue: asyncio.Queue[Advertisement] = asyncio.Queue(queue_size)
        self.published = 0
        self.dropped = 0

    def publish(self, advertisement: Advertisement) -> None:
        try:
            self._queue.put_nowait(advertisement)
            self.published += 1
        except asyncio.QueueFull:
            self.dropped += 1

    async def advertisements(self) -> AsyncIterator[Advertisement]:
        while True:
            yield await self._queue.get()

    async def play(
        self,
        advertisers: Sequence[BthomeAdvertiser],
        duration: float,
        *,
        speed: float = 1.0,
        loop: bool = False,
    ) -> None:
        """Advertise every device every `interval` scenario seconds until the end."""
        event_loop = asyncio.get_running_loop()
        start = event_loop.time()
        due = {id(a): 0.0 for a in advertisers}
        while True:
            elapsed = (event_loop.time() - start) * speed
            if not loop and elapsed >= duration:
                return
            t = elapsed % duration if loop else elapsed
            for advertiser in advertisers:
                if elapsed >= due[id(advertiser)]:
                    due[id(advertiser)] = elapsed + advertiser.device.interval
                    adv = advertiser.advertisement(t, time.time())
                    if adv is not None:
                        self.publish(adv)
            next_due = min(due.values())
            await asyncio.sleep(max(0.005, (next_due - elapsed) / speed))


# --- GATT ------------------------------------------------------------------------------------

# The SIG characteristics drivers.ble.gatt.STANDARD decodes, as (struct format, scale): the
# simulator packs with these, the gateway unpacks with STANDARD's decoders.
STANDARD_LAYOUTS: dict[str, tuple[str, str, float]] = {
    full_uuid("2a6e"): ("<h", "temperature", 0.01),
    full_uuid("2a6f"): ("<H", "humidity", 0.01),
    full_uuid("2a6d"): ("<I", "pressure", 0.001),
    full_uuid("2a19"): ("<B", "battery", 1.0),
}


@dataclass(frozen=True, slots=True)
class _Characteristic:
    uuid: str
    format: str
    fields: tuple[tuple[str, float, float], ...]  # quantity, scale, offset


def gatt_characteristics(profile: BleProfile) -> list[_Characteristic]:
    """Every characteristic the profile subscribes to, with how to pack it."""
    assert profile.gatt is not None
    out: list[_Characteristic] = []
    for uuid in profile.gatt.standard:
        fmt, quantity, scale = STANDARD_LAYOUTS[full_uuid(uuid)]
        out.append(_Characteristic(full_uuid(uuid), fmt, ((quantity, scale, 0.0),)))
    for char in profile.gatt.characteristics:
        fields = tuple((f.quantity, f.scale, f.offset) for f in char.fields)
        out.append(_Characteristic(full_uuid(char.uuid), char.format, fields))
    return out


def gatt_tolerance(profile: BleProfile, point: str) -> float:
    for char in gatt_characteristics(profile):
        for code, (quantity, scale, _offset) in zip(_codes(char.format), char.fields, strict=False):
            if quantity == point:
                exact = code in "efd"
                return (1e-6 * abs(scale) if exact else abs(scale) / 2) * (1 + 1e-9) + 1e-9
    return 0.0


def encode_characteristic(char: _Characteristic, values: dict[str, Value]) -> bytes | None:
    """One notification of `char` carrying `values` (None: it carries none of them)."""
    if not any(quantity in values for quantity, _, _ in char.fields):
        return None
    raws: list[int | float] = []
    codes = _codes(char.format)
    for code, (quantity, scale, offset) in zip(codes, char.fields, strict=False):
        value = values.get(quantity, offset)
        if isinstance(value, bool | str):
            raise BthomeEncodingError(f"{quantity}: a characteristic field is a number")
        raw = (float(value) - offset) / scale
        raws.append(raw if code in "efd" else round(raw))
    raws += [0] * (len(codes) - len(raws))
    try:
        return struct.pack(char.format, *raws)
    except struct.error as exc:
        raise BthomeEncodingError(f"{char.uuid}: {exc}") from None


def _codes(fmt: str) -> list[str]:
    codes: list[str] = []
    count = ""
    for c in fmt[1:] if fmt[:1] in "<>!=@" else fmt:
        if c.isdigit():
            count += c
            continue
        codes += [c] * (int(count) if count and c not in "sp" else 1)
        count = ""
    return [c for c in codes if c != "x"]


class SimulatedGattLink:
    """The radio for one GATT peripheral: a GattLink the gateway's GattSubscriber drives,
    with notifications pushed by :class:`GattPeripheral`."""

    def __init__(self) -> None:
        self.connected = False
        self.callbacks: dict[str, Callable[[bytes], None]] = {}
        self.subscribed = asyncio.Event()  # set at every subscription
        self._on_disconnect: Callable[[], None] | None = None

    async def connect(self, on_disconnect: Callable[[], None]) -> None:
        self.connected, self._on_disconnect = True, on_disconnect

    async def start_notify(self, uuid: str, callback: Callable[[bytes], None]) -> None:
        self.callbacks[full_uuid(uuid)] = callback
        self.subscribed.set()

    async def disconnect(self) -> None:
        self.connected = False
        self.callbacks.clear()

    def drop(self) -> None:
        """The peripheral went out of range: the link reports a disconnection."""
        if self.connected and self._on_disconnect is not None:
            self.connected = False
            self._on_disconnect()

    def notify(self, uuid: str, data: bytes) -> bool:
        callback = self.callbacks.get(full_uuid(uuid))
        if callback is None:
            return False
        callback(data)
        return True


class GattPeripheral:
    """One simulated GATT sensor: what it notifies at scenario time t."""

    def __init__(self, device: SourceDevice, *, seed: int = 0, fault_seed: int = 0) -> None:
        profile = device.profile_model
        if not isinstance(profile, BleProfile) or profile.gatt is None:
            raise ValueError(f"{device.id}: {device.profile} is not a GATT driver")
        self.device = device
        self.profile = profile
        self.seed = seed
        self.link = SimulatedGattLink()
        self.characteristics = gatt_characteristics(profile)
        self._rng = random.Random(fault_seed)

    def values(self, t: float) -> dict[str, Value]:
        rng = sample_rng(self.seed, self.device.id, effective_time(self.device, t))
        return values_at(self.device, t, rng)

    async def wait_subscribed(self) -> None:
        """Until the gateway side has subscribed to every characteristic."""
        while len(self.link.callbacks) < len(self.characteristics):
            self.link.subscribed.clear()
            await self.link.subscribed.wait()

    def notify(self, t: float) -> int:
        """Send every characteristic's notification for time t; returns how many went out."""
        if silent_at(self.device, t):
            return 0
        fault = wire_fault_at(self.device, t)
        values = self.values(t)
        sent = 0
        for char in self.characteristics:
            data = encode_characteristic(char, values)
            if data is None:
                continue
            if fault is not None and fault.kind == "garbage":
                data = data[:-1] if len(data) > 1 else b""  # a short read: the decoder refuses
            sent += self.link.notify(char.uuid, data)
        return sent
