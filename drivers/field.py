"""Commissioning on site: read one Modbus device now, or find who answers on a line.

Both use the gateway's own endpoints (ModbusTcpEndpoint, ModbusRtuEndpoint), so what
works here works in the gateway. A scan probes each unit id with a one-register read
(FC3 at 0) and a short timeout: a normal reply and an exception reply both prove a device
is there (many devices have no holding register 0); a corrupt reply means something
answered that the line settings or a duplicate id garbled. Devices found are then asked
for Read Device Identification (FC43 / MEI 14, basic objects 0-2: vendor, product code,
revision) through a pymodbus client; many sensors do not implement it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from drivers.modbus.bus import gross_range_quality
from drivers.modbus.codec import CodecError, Value, decode_request
from drivers.modbus.planner import ReadRequest, plan_reads
from drivers.modbus.profile import DeviceProfile
from drivers.modbus.rtu import ModbusRtuEndpoint, ModbusRtuError, silent_interval_s
from drivers.modbus.transport import ModbusReadError, ModbusTcpEndpoint
from drivers.serial import Parity, SerialSettings

__all__ = [
    "FieldReading",
    "PortError",
    "ScanHit",
    "ScanPlan",
    "SerialLine",
    "TcpPort",
    "identify",
    "parse_bauds",
    "parse_ids",
    "parse_port",
    "plan_scan",
    "read_device",
    "scan",
]

# The probe: one holding register at 0. Any reply, normal or exception, proves presence.
PROBE = ReadRequest("holding", 0, 1, ())
_IDENTITY_OBJECTS = {0: "vendor", 1: "product_code", 2: "revision"}


class PortError(ValueError):
    """A port URL, id list or baud list that cannot be used."""


@dataclass(frozen=True, slots=True)
class TcpPort:
    host: str
    port: int = 502

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SerialLine:
    device: str  # a tty path or any pyserial URL (socket://, rfc2217://)
    baudrate: int = 9600
    parity: Parity = "E"  # the Modbus serial line default is 8E1
    stopbits: Literal[1, 2] = 1

    @property
    def label(self) -> str:
        return f"{self.device} {self.baudrate} 8{self.parity}{self.stopbits}"

    @property
    def settings(self) -> SerialSettings:
        return SerialSettings(self.baudrate, self.parity, self.stopbits)


Port = TcpPort | SerialLine


def parse_port(url: str) -> Port:
    """tcp://host[:port] | rtu:///dev/ttyUSB0?baud=9600&parity=E&stopbits=1 | /dev/ttyUSB0
    (or COM3, or a pyserial URL such as socket://host:port) with 9600 8E1 defaults."""
    text = url.strip()
    if not text:
        raise PortError("empty port")
    split = urlsplit(text)
    scheme = split.scheme.lower()
    if scheme == "tcp":
        if not split.hostname:
            raise PortError(f"{url}: tcp://host[:port] needs a host")
        try:
            port = split.port or 502
        except ValueError:
            raise PortError(f"{url}: the port must be 1-65535") from None
        if split.path not in ("", "/") or split.query:
            raise PortError(f"{url}: tcp://host[:port] takes no path or options")
        return TcpPort(split.hostname, port)
    if scheme == "rtu":
        device = split.netloc + split.path
        if not device:
            raise PortError(f"{url}: rtu:// needs a device, e.g. rtu:///dev/ttyUSB0?baud=9600")
        return _serial_options(SerialLine(device), split.query, url)
    # A device path, COM3, or a pyserial URL (socket://, rfc2217://): the 8E1 defaults.
    return SerialLine(text)


def _serial_options(line: SerialLine, query: str, url: str) -> SerialLine:
    try:
        options = {k: v[-1] for k, v in parse_qs(query, strict_parsing=bool(query)).items()}
    except ValueError:
        raise PortError(f"{url}: options are key=value joined by '&'") from None
    unknown = set(options) - {"baud", "parity", "stopbits"}
    if unknown:
        raise PortError(f"{url}: unknown option(s) {sorted(unknown)}; use baud, parity, stopbits")
    changes: dict[str, Any] = {}
    if "baud" in options:
        changes["baudrate"] = _baud(options["baud"], url)
    if "parity" in options:
        parity = options["parity"].upper()
        if parity not in ("N", "E", "O"):
            raise PortError(f"{url}: parity is N, E or O")
        changes["parity"] = parity
    if "stopbits" in options:
        if options["stopbits"] not in ("1", "2"):
            raise PortError(f"{url}: stopbits is 1 or 2")
        changes["stopbits"] = int(options["stopbits"])
    return replace(line, **changes)


def _baud(text: str, context: str) -> int:
    if not text.strip().isdigit() or not 300 <= int(text) <= 4_000_000:
        raise PortError(f"{context}: baud rate {text!r} is not a number from 300 to 4000000")
    return int(text)


def parse_bauds(text: str) -> list[int]:
    """'9600,19200' -> [9600, 19200] (order kept, duplicates dropped)."""
    bauds = [_baud(part, "--baud") for part in text.split(",") if part.strip()]
    if not bauds:
        raise PortError("--baud: give at least one baud rate")
    return list(dict.fromkeys(bauds))


def parse_ids(text: str) -> list[int]:
    """'1-247', '1,3,10-12' -> sorted unit ids, each 1-247 (0 is broadcast: no reply)."""
    ids: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise PortError(f"--ids: {part!r} is not N or N-M")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if not 1 <= low <= high <= 247:
            raise PortError(f"--ids: {part!r} must lie within 1-247, low to high")
        ids.update(range(low, high + 1))
    return sorted(ids)


def _endpoint(port: Port, timeout: float) -> ModbusTcpEndpoint | ModbusRtuEndpoint:
    if isinstance(port, TcpPort):
        return ModbusTcpEndpoint(port.host, port.port, timeout=timeout)
    return ModbusRtuEndpoint(port.device, port.baudrate, port.parity, port.stopbits, timeout)


# --- read ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldReading:
    values: dict[str, Value]
    requests: int
    elapsed_s: float

    def records(self, profile: DeviceProfile) -> list[dict[str, Any]]:
        """SenML-style records (n, v|vb|vs, u) with the gateway's range quality as q."""
        out: list[dict[str, Any]] = []
        for point in profile.points:
            value = self.values[point.name]
            record: dict[str, Any] = {"n": point.name}
            if isinstance(value, bool):
                record["vb"] = value
            elif isinstance(value, str):
                record["vs"] = value
            else:
                record["v"] = value
            if point.unit is not None:
                record["u"] = point.unit
            quality = gross_range_quality(point, value)
            if quality is not None:
                record["q"] = quality
            out.append(record)
        return out


async def read_device(
    port: Port, device_id: int, profile: DeviceProfile, reply_s: float = 1.0
) -> FieldReading:
    """Poll one device once with the profile's read plan; ModbusReadError on failure.

    `reply_s`: how long the device may take to answer each request."""
    _check_unit(port, device_id)
    plan = plan_reads(profile)
    endpoint = _endpoint(port, reply_s)
    values: dict[str, Value] = {}
    started = time.monotonic()
    try:
        for request in plan:
            words = await endpoint.read(request, device_id)
            try:
                values.update(decode_request(request, words))
            except CodecError as exc:
                raise ModbusReadError("decode", str(exc)) from None
    finally:
        await endpoint.close()
    return FieldReading(values, len(plan), time.monotonic() - started)


def _check_unit(port: Port, device_id: int) -> None:
    low, high = (0, 255) if isinstance(port, TcpPort) else (1, 247)
    if not low <= device_id <= high:
        raise PortError(f"--device-id {device_id}: a unit id is {low}-{high} on this port")


# --- scan ----------------------------------------------------------------------------------

Reply = Literal["data", "exception", "garbled"]


@dataclass
class ScanHit:
    device_id: int
    baud: int | None  # None on Modbus TCP
    reply: Reply
    detail: str = ""
    identity: dict[str, str] | None = None
    identity_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "baud": self.baud,
            "reply": self.reply,
            "detail": self.detail,
            "identity": self.identity,
            "identity_error": self.identity_error,
        }


@dataclass
class ScanPlan:
    """What a scan will do, and roughly how long it takes."""

    port: Port
    ids: list[int]
    bauds: list[int | None] = field(default_factory=list)
    timeout: float = 0.1

    def seconds_per_baud(self) -> float:
        if isinstance(self.port, TcpPort):
            return len(self.ids) * self.timeout
        line = self.port.settings
        per_id = self.timeout + line.wire_time_s(8 + 7) + 2 * silent_interval_s(line)
        return len(self.ids) * per_id


def plan_scan(port: Port, ids: list[int], bauds: list[int] | None, timeout: float) -> ScanPlan:
    """Bauds apply to serial lines only (None: the port's own); TCP scans once."""
    if isinstance(port, TcpPort):
        return ScanPlan(port, ids, [None], timeout)
    return ScanPlan(port, ids, list(bauds or [port.baudrate]), timeout)


async def scan(
    plan: ScanPlan,
    *,
    identify_devices: bool = True,
    progress: Callable[[str], None] = lambda _line: None,
) -> list[ScanHit]:
    """Probe every id at every baud rate; ModbusReadError('connection') if the port fails."""
    hits: list[ScanHit] = []
    for baud in plan.bauds:
        port = plan.port
        if baud is not None and isinstance(port, SerialLine):
            port = replace(port, baudrate=baud)
        progress(
            f"scanning {port.label}: {len(plan.ids)} ids, timeout {plan.timeout:g} s, "
            f"about {plan.seconds_per_baud():.0f} s"
        )
        found = await _probe_all(port, plan.ids, plan.timeout, baud, progress)
        if identify_devices and found:
            await identify(port, found, max(plan.timeout * 4, 0.3))
        hits.extend(found)
    return hits


async def _probe_all(
    port: Port, ids: list[int], reply_s: float, baud: int | None, progress: Callable[[str], None]
) -> list[ScanHit]:
    endpoint = _endpoint(port, reply_s)
    found: list[ScanHit] = []
    try:
        for unit in ids:
            hit = await _probe(endpoint, unit, baud)
            if hit is not None:
                progress(f"  id {unit}: {hit.reply}{f' ({hit.detail})' if hit.detail else ''}")
                found.append(hit)
    finally:
        await endpoint.close()
    return found


async def _probe(
    endpoint: ModbusTcpEndpoint | ModbusRtuEndpoint, unit: int, baud: int | None
) -> ScanHit | None:
    try:
        await endpoint.read(PROBE, unit)
    except ModbusRtuError as exc:
        if exc.reason == "exception":
            return ScanHit(unit, baud, "exception", f"exception code {exc.exception_code}")
        if exc.reason in ("crc", "garbage"):
            return ScanHit(unit, baud, "garbled", f"{exc.reason}: wrong settings or duplicate id?")
        if exc.reason == "connection":
            raise
        return None
    except ModbusReadError as exc:
        if exc.kind == "exception":
            return ScanHit(unit, baud, "exception", str(exc).split(": ", 1)[-1])
        if exc.kind == "decode":
            return ScanHit(unit, baud, "garbled", str(exc))
        if exc.kind == "connection":
            raise
        return None
    return ScanHit(unit, baud, "data")


async def identify(port: Port, hits: list[ScanHit], reply_s: float) -> None:
    """Fill in identity (or identity_error) of each hit with FC43/MEI14 basic objects."""
    client: AsyncModbusTcpClient | AsyncModbusSerialClient
    if isinstance(port, TcpPort):
        client = AsyncModbusTcpClient(port.host, port=port.port, timeout=reply_s, retries=0)
    else:
        client = AsyncModbusSerialClient(
            port.device,
            framer=FramerType.RTU,
            baudrate=port.baudrate,
            parity=port.parity,
            stopbits=port.stopbits,
            bytesize=8,
            timeout=reply_s,
            retries=0,
        )
    try:
        connected = await asyncio.wait_for(client.connect(), reply_s * 4)
    except (TimeoutError, OSError, ModbusException) as exc:
        connected, reason = False, str(exc) or "timed out"
    else:
        reason = "cannot connect"
    if not connected:
        for hit in hits:
            hit.identity_error = f"identification skipped: {reason}"
        client.close()
        return
    try:
        for hit in hits:
            await _identify_one(client, hit, reply_s)
    finally:
        client.close()


async def _identify_one(
    client: AsyncModbusTcpClient | AsyncModbusSerialClient, hit: ScanHit, reply_s: float
) -> None:
    try:
        response = await asyncio.wait_for(
            client.read_device_information(read_code=1, object_id=0, device_id=hit.device_id),
            reply_s * 2,
        )
    except (TimeoutError, ModbusException):
        hit.identity_error = "no reply to FC43/MEI14"
        return
    if response.isError():
        code = getattr(response, "exception_code", "?")
        hit.identity_error = f"not supported (exception code {code})"
        return
    identity = _identity(getattr(response, "information", {}) or {})
    if identity:
        hit.identity = identity
    else:
        hit.identity_error = "FC43/MEI14 answered without objects 0-2"


def _identity(information: Mapping[int, Any]) -> dict[str, str]:
    identity: dict[str, str] = {}
    for object_id, key in _IDENTITY_OBJECTS.items():
        raw = information.get(object_id)
        if isinstance(raw, list):  # pymodbus lists repeated objects
            raw = b"".join(raw)
        if isinstance(raw, bytes | bytearray):
            identity[key] = bytes(raw).decode("utf-8", errors="replace")
        elif raw is not None:
            identity[key] = str(raw)
    return identity
