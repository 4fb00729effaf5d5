"""Modbus RTU master: one owner per serial port, one transaction at a time.

Own framing over pyserial rather than pymodbus's AsyncModbusSerialClient, because:

* CRC errors must be counted per slave. pymodbus's RTU framer drops a frame whose CRC
  fails (it logs "possible garbage") and the request then ends as "No response" — a bad
  cable and a dead slave look the same. Here a reply with a bad CRC is a ``crc`` error.
* The reply is found by what it must look like: the request fixes the reply's first
  bytes (unit, function, byte count — or the whole echo for writes) and its length, so
  noise before it, and a late reply from a slave that timed out earlier, are skipped and
  counted instead of failing the transaction, and a complete reply is returned the moment
  its last byte arrives (no waiting for the 3.5-character silence to end a frame).
* Timing is explicit: the line must be quiet for t3.5 before a request (from the last
  byte either side sent), and the response timeout starts when the request has left the
  wire, plus the reply's own wire time, so one ``timeout`` fits every frame size.

The frame helpers at the top are pure and shared with the RTU simulator. Ports are opened
exclusively (flock), so a second master on the same tty is refused, not interleaved.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from drivers.modbus.planner import FUNCTION_CODES, ReadRequest
from drivers.modbus.profile import BIT_TABLES, Table
from drivers.modbus.transport import ErrorKind, ModbusReadError
from drivers.serial import Parity, SerialPort, SerialSettings
from drivers.serial.framing import crc16_modbus

__all__ = [
    "MAX_READ_BITS",
    "MAX_READ_REGISTERS",
    "ModbusRtuEndpoint",
    "ModbusRtuError",
    "ReplyScanner",
    "RtuCounters",
    "encode_adu",
    "pack_bits",
    "read_reply_size",
    "silent_interval_s",
    "unpack_bits",
]

MAX_READ_REGISTERS = 125  # FC3/FC4: 250 data bytes fit a 256-byte ADU
MAX_READ_BITS = 2000  # FC1/FC2
MAX_WRITE_REGISTERS = 123  # FC16
MAX_WRITE_BITS = 1968  # FC15
_T35_FIXED_S = 0.00175  # Modbus over Serial Line 2.5.1.1: fixed above 19200 baud

RtuReason = Literal["timeout", "crc", "garbage", "exception", "connection"]
_KIND_OF: dict[RtuReason, ErrorKind] = {
    "timeout": "timeout",
    "crc": "decode",
    "garbage": "decode",
    "exception": "exception",
    "connection": "connection",
}


# --- frames (pure) ------------------------------------------------------------------------


def silent_interval_s(settings: SerialSettings) -> float:
    """t3.5, the silence that separates frames: 3.5 characters, 1.75 ms above 19200 baud."""
    if settings.baudrate > 19200:
        return _T35_FIXED_S
    return 3.5 * settings.char_time_s


def encode_adu(unit: int, pdu: bytes) -> bytes:
    """Unit id + PDU + CRC-16/MODBUS, low byte first."""
    adu = bytes((unit,)) + pdu
    return adu + crc16_modbus(adu).to_bytes(2, "little")


def crc_ok(frame: bytes | bytearray) -> bool:
    return len(frame) >= 4 and crc16_modbus(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def read_reply_size(table: Table, count: int) -> int:
    """Bytes of a normal reply to a read: unit, function, byte count, data, CRC."""
    return 5 + _data_bytes(table, count)


def _data_bytes(table: Table, count: int) -> int:
    return (count + 7) // 8 if table in BIT_TABLES else 2 * count


def pack_bits(bits: Sequence[bool]) -> bytes:
    """Coils/discrete inputs on the wire: bit 0 of byte 0 is the first address."""
    out = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def unpack_bits(data: bytes, count: int) -> list[bool]:
    return [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]


class ReplyScanner:
    """Finds the reply to one request in whatever the line delivered.

    A candidate starts where the bytes match the reply's known prefix (or the unit's
    exception reply) and is accepted when its CRC holds. Bytes before it are noise; a
    candidate with a bad CRC gives up one byte and the scan goes on. Incremental: call
    ``scan`` with the growing buffer; ``final=True`` skips candidates still incomplete
    (used once no more bytes are coming).
    """

    def __init__(self, prefix: bytes, size: int) -> None:
        self.prefix = prefix
        self.size = size
        self.exception_prefix = bytes((prefix[0], prefix[1] | 0x80))
        self.pos = 0  # bytes ruled out so far
        self.bad_crc = 0

    def scan(self, buffer: bytes | bytearray, final: bool = False) -> bytes | None:
        while self.pos < len(buffer):
            size = self._candidate(buffer, self.pos)
            if size is None or (final and (size == 0 or self.pos + size > len(buffer))):
                self.pos += 1
                continue
            if size == 0 or self.pos + size > len(buffer):
                return None  # a candidate that needs more bytes
            frame = bytes(buffer[self.pos : self.pos + size])
            if crc_ok(frame):
                return frame
            self.bad_crc += 1
            self.pos += 1
        return None

    def _candidate(self, buffer: bytes | bytearray, pos: int) -> int | None:
        """Size of the candidate frame at pos, 0 if undecided yet, None if not one."""
        available = len(buffer) - pos
        if buffer[pos] != self.prefix[0]:
            return None
        if available < 2:
            return 0
        if buffer[pos + 1] == self.exception_prefix[1]:
            return 5
        n = min(len(self.prefix), available)
        if buffer[pos : pos + n] != self.prefix[:n]:
            return None
        return 0 if n < len(self.prefix) else self.size


# --- errors and counters ------------------------------------------------------------------


class ModbusRtuError(ModbusReadError):
    """A failed RTU transaction. ``kind`` is the transport-independent class the gateway
    counts (timeout|exception|connection|decode); ``reason`` says what the line did."""

    def __init__(self, reason: RtuReason, detail: str, exception_code: int | None = None) -> None:
        kind = _KIND_OF[reason]
        super().__init__(kind, detail)
        if reason != kind:  # "decode (crc): ...": the log line says what the line did
            self.args = (f"{kind} ({reason}): {detail}",)
        self.reason: RtuReason = reason
        self.exception_code = exception_code


@dataclass
class RtuCounters:
    """Per slave (unit id). ``noise_bytes``: bytes skipped before a good reply."""

    requests: int = 0
    ok: int = 0
    timeouts: int = 0
    crc: int = 0
    exceptions: int = 0
    garbage: int = 0
    connection: int = 0
    noise_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def count(self, reason: RtuReason) -> None:
        name = _COUNTER_OF[reason]
        setattr(self, name, getattr(self, name) + 1)


_COUNTER_OF: dict[RtuReason, str] = {
    "timeout": "timeouts",
    "crc": "crc",
    "garbage": "garbage",
    "exception": "exceptions",
    "connection": "connection",
}


@dataclass(frozen=True, slots=True)
class _Transaction:
    unit: int
    request: bytes  # the whole ADU
    reply_prefix: bytes  # what a normal reply must start with
    reply_size: int  # and its length


# --- the endpoint -------------------------------------------------------------------------


class ModbusRtuEndpoint:
    """The master on one serial port; the same ``read`` interface as ModbusTcpEndpoint.

    ``timeout``: how long a slave may take to start its reply once the request has left
    the wire (the reply's own wire time is added per request). ``turnaround_s``: the
    broadcast turnaround delay — after a write to unit 0 nobody answers, and the line is
    left quiet this long so every slave can act before the next request (spec: 100-200 ms).
    Modbus RTU's default framing is 8E1 (11 bits per character); 8N1 is common in the field.
    """

    def __init__(
        self,
        port_url: str,
        baudrate: int = 9600,
        parity: Parity = "E",
        stopbits: Literal[1, 2] = 1,
        timeout: float = 1.0,
        turnaround_s: float = 0.1,
    ) -> None:
        if timeout <= 0 or turnaround_s < 0:
            raise ValueError("timeout must be > 0 and turnaround_s >= 0")
        self.port_url = port_url
        self.settings = SerialSettings(baudrate, parity, stopbits)
        self.timeout = timeout
        self.turnaround_s = turnaround_s
        self.t35_s = silent_interval_s(self.settings)
        # After a bad CRC, how long the line must stay quiet before giving up on a good
        # reply still following. A floor, because USB adapters deliver in bursts.
        self.settle_s = max(4 * self.t35_s, 0.01)
        self.counters: dict[int, RtuCounters] = {}
        self.stale_bytes = 0  # bytes found on the line before a request (late replies)
        self._port: SerialPort | None = None
        self._lock = asyncio.Lock()
        self._busy_until = 0.0  # loop time our last request finished leaving the wire

    @property
    def label(self) -> str:
        return self.port_url

    def counters_for(self, unit: int) -> RtuCounters:
        return self.counters.setdefault(unit, RtuCounters())

    # -- public operations ------------------------------------------------------------------

    async def read(self, request: ReadRequest, device_id: int) -> list[int] | list[bool]:
        table, count = request.table, request.count
        limit = MAX_READ_BITS if table in BIT_TABLES else MAX_READ_REGISTERS
        if not 1 <= count <= limit or not 0 <= request.address <= 0xFFFF:
            raise ValueError(f"cannot read {count} {table} values at {request.address}")
        if not 1 <= device_id <= 247:
            raise ValueError(f"reads need a unit id 1-247, not {device_id}")
        fc = FUNCTION_CODES[table]
        data_bytes = _data_bytes(table, count)
        tx = _Transaction(
            device_id,
            encode_adu(device_id, struct.pack(">BHH", fc, request.address, count)),
            bytes((device_id, fc, data_bytes)),
            5 + data_bytes,
        )
        frame = await self._run(tx)
        data = frame[3:-2]
        if table in BIT_TABLES:
            return unpack_bits(data, count)
        return list(struct.unpack(f">{count}H", data))

    async def write_coil(self, address: int, value: bool, device_id: int) -> None:
        """FC5. Unit 0 broadcasts (no reply; waits turnaround_s)."""
        _check_word(address)
        await self._write(device_id, struct.pack(">BHH", 5, address, 0xFF00 if value else 0))

    async def write_register(self, address: int, value: int, device_id: int) -> None:
        """FC6."""
        _check_word(address)
        _check_word(value)
        await self._write(device_id, struct.pack(">BHH", 6, address, value))

    async def write_coils(self, address: int, values: Sequence[bool], device_id: int) -> None:
        """FC15."""
        _check_word(address)
        if not 1 <= len(values) <= MAX_WRITE_BITS:
            raise ValueError(f"FC15 writes 1-{MAX_WRITE_BITS} coils, not {len(values)}")
        data = pack_bits(values)
        pdu = struct.pack(">BHHB", 15, address, len(values), len(data)) + data
        await self._write(device_id, pdu)

    async def write_registers(self, address: int, values: Sequence[int], device_id: int) -> None:
        """FC16."""
        _check_word(address)
        if not 1 <= len(values) <= MAX_WRITE_REGISTERS:
            raise ValueError(f"FC16 writes 1-{MAX_WRITE_REGISTERS} registers, not {len(values)}")
        for value in values:
            _check_word(value)
        n = len(values)
        pdu = struct.pack(f">BHHB{n}H", 16, address, n, 2 * n, *values)
        await self._write(device_id, pdu)

    async def close(self) -> None:
        async with self._lock:
            if self._port is not None:
                self._port.close()
                self._port = None

    # -- transactions -----------------------------------------------------------------------

    async def _write(self, device_id: int, pdu: bytes) -> None:
        if not 0 <= device_id <= 247:
            raise ValueError(f"unit id must be 0 (broadcast) or 1-247, not {device_id}")
        request = encode_adu(device_id, pdu)
        # Every write reply echoes the request's first six bytes (address and value/count).
        await self._run(_Transaction(device_id, request, request[:6], 8))

    async def _run(self, tx: _Transaction) -> bytes:
        counters = self.counters_for(tx.unit)
        counters.requests += 1
        async with self._lock:
            try:
                frame, noise = await self._transact(tx)
            except ModbusRtuError as exc:
                counters.count(exc.reason)
                raise
        counters.noise_bytes += noise
        if frame and frame[1] & 0x80:
            counters.exceptions += 1
            code = frame[2]
            raise ModbusRtuError(
                "exception", f"unit {tx.unit} at {self.label}: exception code {code}", code
            )
        counters.ok += 1
        return frame

    def _open_port(self) -> SerialPort:
        if self._port is not None and self._port.is_open:
            return self._port
        if self._port is not None:
            self._port.close()
            self._port = None
        port = SerialPort(self.port_url, self.settings)
        try:
            port.open()
        except (OSError, ValueError) as exc:
            raise ModbusRtuError("connection", f"cannot open {self.label}: {exc}") from None
        self._port = port
        return port

    async def _transact(self, tx: _Transaction) -> tuple[bytes, int]:
        """Send one request and return (reply frame, noise bytes skipped before it)."""
        port = self._open_port()
        loop = asyncio.get_running_loop()
        await self._quiet_line(port, loop)
        self.stale_bytes += len(port.take())
        try:
            port.write(tx.request)
        except OSError as exc:
            port.close()
            raise ModbusRtuError("connection", f"write to {self.label}: {exc}") from None
        wire = self.settings.wire_time_s
        self._busy_until = loop.time() + wire(len(tx.request))
        if tx.unit == 0:
            await asyncio.sleep(self._busy_until - loop.time() + self.turnaround_s)
            return b"", 0

        deadline = self._busy_until + self.timeout + wire(tx.reply_size)
        scanner = ReplyScanner(tx.reply_prefix, tx.reply_size)
        received = bytearray()
        while True:
            received += port.take()
            frame = scanner.scan(received)
            if frame is not None:
                return frame, scanner.pos
            if port.error is not None:
                port.close()
                raise ModbusRtuError("connection", f"read from {self.label}: {port.error}")
            now = loop.time()
            if now >= deadline:
                break
            wait = deadline - now
            if scanner.bad_crc and scanner.pos >= len(received):
                # A corrupt reply and nothing pending: give up once the line is quiet,
                # not at the deadline (a CRC error should not cost a whole timeout).
                settled = port.last_rx + self.settle_s
                if now >= settled:
                    break
                wait = min(wait, settled - now)
            await port.wait(wait)

        frame = scanner.scan(received, final=True)
        if frame is not None:
            return frame, scanner.pos
        where = f"unit {tx.unit} at {self.label}"
        if scanner.bad_crc:
            raise ModbusRtuError("crc", f"{where}: reply failed its CRC")
        if received:
            raise ModbusRtuError("garbage", f"{where}: {len(received)} bytes, no valid reply")
        raise ModbusRtuError("timeout", f"{where}: no reply")

    async def _quiet_line(self, port: SerialPort, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until neither side has sent anything for t3.5 (bounded by the timeout: a
        babbling slave must not block the master forever)."""
        limit = loop.time() + self.timeout
        while True:
            quiet_at = max(self._busy_until, port.last_rx) + self.t35_s
            now = loop.time()
            if now >= quiet_at or now >= limit:
                return
            await asyncio.sleep(quiet_at - now)


def _check_word(value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{value} is not a 16-bit address or register value (0..65535)")
