"""BTHome v2 advertisements (service data, 16-bit UUID 0xFCD2) -> measurements. Pure: no I/O.

Service data layout (the bytes after the UUID, as bleak's ``AdvertisementData.service_data``
gives them): one *device information* byte — bit 0 encrypted, bit 2 trigger-based (the
device only advertises on events), bits 5-7 the BTHome version (must be 2) — then objects,
each an object id followed by a value whose size the id alone defines (text and raw carry a
length byte). Integers are little-endian; value = raw * factor.

Because sizes are implied by the id, an unknown id means the rest cannot be split: parsing
stops there and the remainder is reported as unparsed, while everything before it is kept.
Encrypted advertisements (AES-CCM with a per-device bind key) are reported as unsupported.

Measurements are named and united the SenML way (Cel, %RH, hPa, lx, V, m/s2, deg, %EL for
battery level; percentages that are not RH or battery become ratios with unit ``/``); a
second object of the same kind in one advertisement is ``temperature_2`` and so on.

:func:`parse_service_data` never raises: any input yields a :class:`BthomePacket` or a
:class:`ParseFailure`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "BTHOME_SERVICE_UUID",
    "BTHOME_UUID16",
    "OBJECTS",
    "BthomePacket",
    "Measurement",
    "ObjectSpec",
    "PacketDedup",
    "ParseFailure",
    "parse_service_data",
]

BTHOME_UUID16 = 0xFCD2
BTHOME_SERVICE_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
BTHOME_VERSION = 2

Kind = Literal["uint", "sint", "bool", "button", "dimmer", "text", "raw", "packet_id"]
Value = float | int | bool | str


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    quantity: str
    size: int  # value bytes after the id; 0: a length byte follows the id (text, raw)
    kind: Kind = "uint"
    factor: float = 1.0
    unit: str | None = None


def _u(quantity: str, size: int, factor: float = 1.0, unit: str | None = None) -> ObjectSpec:
    return ObjectSpec(quantity, size, "uint", factor, unit)


def _s(quantity: str, size: int, factor: float = 1.0, unit: str | None = None) -> ObjectSpec:
    return ObjectSpec(quantity, size, "sint", factor, unit)


def _b(quantity: str) -> ObjectSpec:
    return ObjectSpec(quantity, 1, "bool")


_LB = 0.45359237  # kg per pound: SenML has kg, not lb
_M3H = 1 / 3600  # m3/h -> m3/s (the registered unit)

# Object ids of the BTHome v2 format (bthome.io/format): size, factor and unit as the format
# defines them, converted where SenML registers a different unit. Binary sensors are named
# for their "on" state (HA semantics: lock on = unlocked, safety on = unsafe).
OBJECTS: dict[int, ObjectSpec] = {
    0x00: ObjectSpec("packet_id", 1, "packet_id"),
    0x01: _u("battery", 1, 1, "%EL"),
    0x02: _s("temperature", 2, 0.01, "Cel"),
    0x03: _u("humidity", 2, 0.01, "%RH"),
    0x04: _u("pressure", 3, 0.01, "hPa"),
    0x05: _u("illuminance", 3, 0.01, "lx"),
    0x06: _u("mass", 2, 0.01, "kg"),
    0x07: _u("mass", 2, 0.01 * _LB, "kg"),
    0x08: _s("dew_point", 2, 0.01, "Cel"),
    0x09: _u("count", 1, 1, "count"),
    0x0A: _u("energy", 3, 0.001, "kWh"),
    0x0B: _u("power", 3, 0.01, "W"),
    0x0C: _u("voltage", 2, 0.001, "V"),
    0x0D: _u("pm2_5", 2, 1, "ug/m3"),
    0x0E: _u("pm10", 2, 1, "ug/m3"),
    0x0F: _b("binary"),
    0x10: _b("power_on"),
    0x11: _b("opening"),
    0x12: _u("co2", 2, 1, "ppm"),
    0x13: _u("tvoc", 2, 1, "ug/m3"),
    0x14: _u("moisture", 2, 0.0001, "/"),  # 0.01 % -> ratio
    0x15: _b("battery_low"),
    0x16: _b("battery_charging"),
    0x17: _b("co_detected"),
    0x18: _b("cold"),
    0x19: _b("connectivity"),
    0x1A: _b("door_open"),
    0x1B: _b("garage_door_open"),
    0x1C: _b("gas_detected"),
    0x1D: _b("heat"),
    0x1E: _b("light"),
    0x1F: _b("unlocked"),
    0x20: _b("wet"),
    0x21: _b("motion"),
    0x22: _b("moving"),
    0x23: _b("occupied"),
    0x24: _b("plugged"),
    0x25: _b("present"),
    0x26: _b("problem"),
    0x27: _b("running"),
    0x28: _b("unsafe"),
    0x29: _b("smoke"),
    0x2A: _b("sound"),
    0x2B: _b("tamper"),
    0x2C: _b("vibration"),
    0x2D: _b("window_open"),
    0x2E: _u("humidity", 1, 1, "%RH"),
    0x2F: _u("moisture", 1, 0.01, "/"),
    0x3A: ObjectSpec("button", 1, "button"),
    0x3C: ObjectSpec("dimmer", 2, "dimmer", 1, "count"),
    0x3D: _u("count", 2, 1, "count"),
    0x3E: _u("count", 4, 1, "count"),
    0x3F: _s("rotation", 2, 0.1, "deg"),
    0x40: _u("distance", 2, 0.001, "m"),  # mm -> m
    0x41: _u("distance", 2, 0.1, "m"),
    0x42: _u("duration", 3, 0.001, "s"),
    0x43: _u("current", 2, 0.001, "A"),
    0x44: _u("speed", 2, 0.01, "m/s"),
    0x45: _s("temperature", 2, 0.1, "Cel"),
    0x46: _u("uv_index", 1, 0.1),
    0x47: _u("volume", 2, 0.1, "l"),
    0x48: _u("volume", 2, 0.001, "l"),  # mL -> l
    0x49: _u("volume_flow", 2, 0.001 * _M3H, "m3/s"),
    0x4A: _u("voltage", 2, 0.1, "V"),
    0x4B: _u("gas", 3, 0.001, "m3"),
    0x4C: _u("gas", 4, 0.001, "m3"),
    0x4D: _u("energy", 4, 0.001, "kWh"),
    0x4E: _u("volume", 4, 0.001, "l"),
    0x4F: _u("water", 4, 0.001, "l"),
    0x50: _u("timestamp", 4, 1, "s"),  # the device's clock, POSIX seconds
    0x51: _u("acceleration", 2, 0.001, "m/s2"),
    0x52: _u("gyroscope", 2, 0.001, "deg/s"),  # no registered SenML unit for angular speed
    0x53: ObjectSpec("text", 0, "text"),
    0x54: ObjectSpec("raw", 0, "raw"),
    0x55: _u("volume_storage", 4, 0.001, "l"),
    0x56: _u("conductivity", 2, 1e-4, "S/m"),  # uS/cm -> S/m
    0x57: _s("temperature", 1, 1, "Cel"),
    0x58: _s("temperature", 1, 0.35, "Cel"),
    0x59: _s("count", 1, 1, "count"),
    0x5A: _s("count", 2, 1, "count"),
    0x5B: _s("count", 4, 1, "count"),
    0x5C: _s("power", 4, 0.01, "W"),
    0x5D: _s("current", 2, 0.001, "A"),
    0x5E: _u("direction", 2, 0.01, "deg"),
    0x5F: _u("precipitation", 2, 0.1, "mm"),
    0x60: _u("channel", 1),
    0x61: _u("rotational_speed", 2, 1, "1/min"),
    0x62: _s("speed", 4, 1e-6, "m/s"),
    0x63: _s("acceleration", 4, 1e-6, "m/s2"),
    0x64: _u("light_level", 1),
}

BUTTON_EVENTS = {
    0x00: None,  # no event on this button (keeps the numbering of multi-button devices)
    0x01: "press",
    0x02: "double_press",
    0x03: "triple_press",
    0x04: "long_press",
    0x05: "long_double_press",
    0x06: "long_triple_press",
    0x80: "hold_press",
}


@dataclass(frozen=True, slots=True)
class Measurement:
    quantity: str  # SenML-style name, suffixed _2, _3 … for repeats in one advertisement
    value: Value
    unit: str | None
    object_id: int


@dataclass(frozen=True, slots=True)
class BthomePacket:
    trigger_based: bool
    measurements: tuple[Measurement, ...]
    packet_id: int | None = None
    mac: str | None = None  # when the advertiser put one in the payload (device info bit 1)
    unparsed: bytes = b""  # bytes from the first object that could not be read
    problem: str | None = None  # "unknown_object" or "truncated" when unparsed is non-empty
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """Service data that yields nothing: `reason` is a stable counter key
    (empty, version, encrypted, truncated)."""

    reason: str
    detail: str
    trigger_based: bool = False


def parse_service_data(data: bytes) -> BthomePacket | ParseFailure:
    """BTHome v2 service data (without the UUID) -> packet; never raises."""
    if not data:
        return ParseFailure("empty", "no service data")
    info = data[0]
    trigger = bool(info & 0x04)
    version = info >> 5
    if version != BTHOME_VERSION:
        return ParseFailure("version", f"BTHome version {version}, not 2", trigger)
    if info & 0x01:
        return ParseFailure(
            "encrypted", "encrypted BTHome (bind key) is not supported: disable encryption"
        )
    pos, mac = 1, None
    if info & 0x02:
        # Bit 1 is reserved in the published format, but the reference receiver (bthome-ble,
        # Home Assistant) reads it as "MAC address follows, reversed": do the same, or those
        # six bytes would be misread as objects.
        if len(data) < 7:
            return ParseFailure("truncated", "MAC flag set but fewer than 6 bytes follow")
        mac = ":".join(f"{b:02X}" for b in reversed(data[1:7]))
        pos = 7
    return _objects(data, pos, trigger, mac)


def _objects(data: bytes, pos: int, trigger: bool, mac: str | None) -> BthomePacket:
    measurements: list[Measurement] = []
    seen: dict[str, int] = {}
    packet_id: int | None = None
    problem, detail = None, ""
    end = len(data)
    while pos < end:
        object_id = data[pos]
        spec = OBJECTS.get(object_id)
        if spec is None:
            problem, detail = "unknown_object", f"object id 0x{object_id:02X} at byte {pos}"
            break
        start = pos + 1
        size = spec.size
        if size == 0:
            if start >= end:
                problem, detail = "truncated", f"0x{object_id:02X} lacks its length byte"
                break
            size = data[start]
            start += 1
        stop = start + size
        if stop > end:
            problem, detail = "truncated", f"0x{object_id:02X} needs {size} bytes at {start}"
            break
        raw = data[start:stop]
        pos = stop
        if spec.kind == "packet_id":
            if packet_id is None:
                packet_id = raw[0]
            continue
        count = seen.get(spec.quantity, 0) + 1
        seen[spec.quantity] = count
        value = _value(spec, raw)
        if value is None:
            continue  # a button/dimmer slot with no event
        name = spec.quantity if count == 1 else f"{spec.quantity}_{count}"
        measurements.append(Measurement(name, value, spec.unit, object_id))
    return BthomePacket(
        trigger_based=trigger,
        measurements=tuple(measurements),
        packet_id=packet_id,
        mac=mac,
        unparsed=data[pos:] if problem else b"",
        problem=problem,
        detail=detail,
    )


def _value(spec: ObjectSpec, raw: bytes) -> Value | None:
    kind = spec.kind
    if kind == "bool":
        return raw[0] != 0
    if kind == "button":
        event = BUTTON_EVENTS.get(raw[0], f"event_0x{raw[0]:02X}")
        return event
    if kind == "dimmer":
        # event 1 = rotate left, 2 = rotate right; then the number of steps
        if raw[0] not in (1, 2) or raw[1] == 0:
            return None
        return -raw[1] if raw[0] == 1 else raw[1]
    if kind == "text":
        return raw.decode("utf-8", "replace")
    if kind == "raw":
        return raw.hex()
    number = int.from_bytes(raw, "little", signed=kind == "sint")
    if spec.factor == 1:
        return number
    # Round away binary noise (2500 * 0.01 = 25.000000000000004) at the factor's resolution.
    digits = max(0, math.ceil(-math.log10(spec.factor))) + 3
    return round(number * spec.factor, digits)


@dataclass
class PacketDedup:
    """Drops repeats of one device's advertisement.

    Devices re-advertise each packet several times (and BlueZ reports each copy); a new
    packet changes the packet id (0x00) and so the bytes. A repeat is the same service data
    as the last accepted packet, seen again within `window_s` of its previous sighting. A
    device that comes back after a longer gap (out of range, rebooted into the same id) is
    accepted, and so is the same data after `max_hold_s`, so that a device without packet
    ids whose readings do not change still shows it is alive. Different bytes under the same
    packet id (a stuck counter) are never swallowed.
    """

    window_s: float = 10.0
    max_hold_s: float = 300.0
    _last: bytes | None = field(default=None, init=False, repr=False)
    _accepted_at: float = field(default=0.0, init=False, repr=False)
    _seen_at: float = field(default=0.0, init=False, repr=False)

    def is_repeat(self, data: bytes, now: float) -> bool:
        repeat = (
            data == self._last
            and now - self._seen_at < self.window_s
            and now - self._accepted_at < self.max_hold_s
        )
        self._seen_at = now
        if not repeat:
            self._last = data
            self._accepted_at = now
        return repeat
