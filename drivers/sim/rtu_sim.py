"""A scenario's devices as Modbus RTU slaves on one serial line (a pty pair).

The register values come from the TCP simulator's state engine (``ModbusSimulator``:
``set_time``, ``run``, silent faults from the scenario), so both transports show the same
device at the same scenario time; only the wire differs.

Line emulation (``line`` settings given): a pty delivers bytes instantly, so the slave
does the physics itself. A request whose first byte arrives at t occupied the line until
t + n * char_time; the slave answers t3.5 (its end-of-frame detection) plus `turnaround_s`
later, and writes its reply one character per char_time, each byte at the moment its stop
bit would end. The master therefore sees a reply no earlier than a real line could
deliver it, which is what makes the bench's "% of the theoretical limit" honest.

The slave runs in its own thread with blocking ``select``: sub-millisecond waits there are
precise (~0.1 ms), where an asyncio sleep rounds up to the next millisecond. It also
checks the master's manners: every gap the master leaves before a request is measured
against t3.5, and bytes arriving while the slave talks are counted as collisions.

Faults per unit (``sim.faults[unit] = RtuFault(...)``, changeable while running):
silent, slow (extra delay), crc (reply with a corrupted CRC), garbage (random bytes instead
of the reply), noise (random bytes, then the good reply), exception (an exception reply).
The scenario's own faults apply by themselves at the current scenario time: silent, and
the wire faults slow, garbage and dropout (a seeded share of requests unanswered), the
same ones the TCP simulator makes. A fault set in ``sim.faults`` wins over the scenario's.
"""

from __future__ import annotations

import logging
import os
import random
import select
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from drivers.modbus.profile import BIT_TABLES, DeviceProfile, Table
from drivers.modbus.rtu import (
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    crc_ok,
    encode_adu,
    pack_bits,
    silent_interval_s,
    unpack_bits,
)
from drivers.serial import SerialSettings
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.scenario import Scenario
from drivers.sim.serial_sim import PtyPair

log = logging.getLogger(__name__)

__all__ = ["RtuFault", "RtuSimStats", "RtuSimulator"]

FaultKind = Literal["silent", "slow", "crc", "garbage", "noise", "exception"]
_READ_TABLES: dict[int, Table] = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
_ILLEGAL_FUNCTION, _ILLEGAL_ADDRESS, _ILLEGAL_VALUE = 1, 2, 3
# An incomplete request is dropped after this much silence (a real slave uses t3.5; the
# floor keeps a loaded test machine from splitting one write into two "frames").
_DROP_AFTER_S = 0.05


@dataclass(frozen=True, slots=True)
class RtuFault:
    kind: FaultKind
    delay_s: float = 0.0  # slow: added to the turnaround
    code: int = 4  # exception: 4 = slave device failure
    length: int = 12  # garbage/noise: random bytes sent


@dataclass
class RtuSimStats:
    requests: int = 0  # well-formed requests seen (any unit)
    replies: dict[int, int] = field(default_factory=dict)  # per unit, faulty replies included
    ignored: int = 0  # requests for unknown or silent units
    bad_frames: int = 0  # CRC errors or incomplete requests
    collisions: int = 0  # master bytes that arrived while a slave was talking
    gaps: int = 0  # inter-frame gaps measured
    gap_violations: int = 0  # gaps shorter than t3.5
    min_gap_s: float = float("inf")


class _Stopped(Exception):
    pass


class RtuSimulator:
    """Serve `scenario` as RTU slaves on a pty; `line=None` disables line emulation."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int = 0,
        noise: bool = True,
        line: SerialSettings | None = SerialSettings(9600, "E"),
        turnaround_s: float = 0.0,
        fault_seed: int = 0,
    ) -> None:
        self.model = ModbusSimulator(scenario, seed=seed, noise=noise)
        self.line = line
        self.turnaround_s = turnaround_s
        self.t35_s = silent_interval_s(line) if line is not None else 0.0
        self.faults: dict[int, RtuFault] = {}
        self.stats = RtuSimStats()
        self.error: BaseException | None = None  # what ended the thread, if not stop()
        self._spans = {unit: _spans(image.profile) for unit, image in self.model.devices.items()}
        self._written: dict[int, dict[Table, dict[int, int | bool]]] = {}
        self._rng = random.Random(fault_seed)
        self._pty: PtyPair | None = None
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._rx = bytearray()
        self._rx_start = 0.0  # when the first byte of the pending request arrived
        self._rx_last = 0.0
        self._line_busy_until = 0.0

    @property
    def path(self) -> str:
        if self._pty is None:
            raise RuntimeError("simulator not started")
        return self._pty.path

    # -- scenario time (delegated to the shared state engine) -------------------------------

    def set_time(self, t: float) -> None:
        self.model.set_time(t)

    async def run(self, speed: float = 1.0, loop: bool = False) -> None:
        await self.model.run(speed, loop)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> str:
        """Open the pty and serve in a background thread; returns the port path."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        if self.model.time is None:
            self.model.set_time(0.0)
        self._pty = PtyPair()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="rtu-sim", daemon=True)
        self._thread.start()
        return self._pty.path

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            os.write(self._wake_w, b"x")
            thread.join(5)
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
        if self._pty is not None:
            self._pty.close()
            self._pty = None

    def __enter__(self) -> RtuSimulator:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- the slave thread -------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while True:
                timeout = None
                if self._rx:
                    timeout = max(0.0, self._rx_last + max(self.t35_s, _DROP_AFTER_S) - _now())
                if not self._wait_readable(timeout):
                    self._end_of_silence()
                    continue
                self._receive()
                self._process()
        except _Stopped:
            return
        except BaseException as exc:  # surfaced via .error: a test must not hang on it
            log.exception("RTU simulator failed")
            self.error = exc

    def _wait_readable(self, timeout: float | None) -> bool:
        """Block until the master wrote (True) or `timeout` passed (False)."""
        assert self._pty is not None
        ready, _, _ = select.select([self._wake_r, self._pty.master_fd], [], [], timeout)
        if self._wake_r in ready:
            raise _Stopped
        return bool(ready)

    def _receive(self) -> None:
        assert self._pty is not None
        data = os.read(self._pty.master_fd, 4096)
        now = _now()
        if not self._rx:
            self._rx_start = now
            self._check_gap(now)
        self._rx += data
        self._rx_last = now

    def _check_gap(self, now: float) -> None:
        if self._line_busy_until <= 0:
            return
        gap = now - self._line_busy_until
        self.stats.gaps += 1
        self.stats.min_gap_s = min(self.stats.min_gap_s, gap)
        if gap < self.t35_s:
            self.stats.gap_violations += 1

    def _end_of_silence(self) -> None:
        """The line went quiet with bytes pending: a frame of a function whose length we
        cannot tell (answered: illegal function) or an incomplete one (dropped)."""
        frame, self._rx = bytes(self._rx), bytearray()
        if crc_ok(frame):
            self._handle(frame, self._rx_start)
        else:
            self.stats.bad_frames += 1

    def _process(self) -> None:
        while self._rx:
            size = _request_size(self._rx)
            if size is None or len(self._rx) < size:
                return  # wait for more bytes, or for the silence that ends the frame
            frame = bytes(self._rx[:size])
            del self._rx[:size]
            start = self._rx_start
            self._rx_start = self._rx_last
            if not crc_ok(frame):
                # Resynchronise like a slave: drop what we have, wait for the next silence.
                self.stats.bad_frames += 1
                self._rx.clear()
                return
            self._handle(frame, start)

    def _handle(self, frame: bytes, start: float) -> None:
        request_end = start + (self.line.wire_time_s(len(frame)) if self.line else 0.0)
        self._line_busy_until = max(self._line_busy_until, request_end)
        self.stats.requests += 1
        unit = frame[0]
        if unit == 0:
            for target in self.model.devices:
                self._respond(target, frame[1:-2])  # broadcast: act, never answer
            return
        fault = self.faults.get(unit) or self._scenario_fault(unit)
        if (
            unit not in self.model.devices
            or unit in self.model.silent_units
            or (fault is not None and fault.kind == "silent")
        ):
            self.stats.ignored += 1
            return
        reply = encode_adu(unit, self._respond(unit, frame[1:-2]))
        delay = 0.0
        if fault is not None:
            reply, delay = self._apply_fault(fault, unit, frame[1], reply)
        self.stats.replies[unit] = self.stats.replies.get(unit, 0) + 1
        self._transmit(reply, request_end + self.t35_s + self.turnaround_s + delay)

    def _scenario_fault(self, unit: int) -> RtuFault | None:
        """The scenario's wire fault on `unit` now, as the fault this slave acts out."""
        spec = self.model.wire_faults.get(unit)
        if spec is None:
            return None
        if spec.kind == "slow" and spec.delay is not None:
            return RtuFault("slow", delay_s=spec.delay)
        if spec.kind == "garbage":
            return RtuFault("garbage")
        if spec.kind == "dropout":
            return RtuFault("silent") if self.model.drops(unit) else None
        return None

    def _apply_fault(
        self, fault: RtuFault, unit: int, function: int, reply: bytes
    ) -> tuple[bytes, float]:
        noise = bytes(self._rng.randrange(256) for _ in range(fault.length))
        if fault.kind == "slow":
            return reply, fault.delay_s
        if fault.kind == "crc":
            return reply[:-1] + bytes((reply[-1] ^ 0xFF,)), 0.0
        if fault.kind == "garbage":
            return noise, 0.0
        if fault.kind == "noise":
            return noise + reply, 0.0
        if fault.kind == "exception":
            return encode_adu(unit, bytes((function | 0x80, fault.code))), 0.0
        return reply, 0.0

    def _transmit(self, reply: bytes, start: float) -> None:
        """Write `reply` as the line would deliver it: byte k when its stop bit ends."""
        assert self._pty is not None
        char = self.line.char_time_s if self.line else 0.0
        sent = 0
        while sent < len(reply):
            due = start + (sent + 1) * char
            self._sleep_until(due)
            # Catch up in one write if we woke late: the average rate stays exact.
            ready = len(reply) if char == 0 else min(len(reply), int((_now() - start) / char))
            ready = max(ready, sent + 1)
            os.write(self._pty.master_fd, reply[sent:ready])
            sent = ready
        self._line_busy_until = start + len(reply) * char

    def _sleep_until(self, when: float) -> None:
        """Wait precisely; a master that writes meanwhile is colliding with this slave."""
        while (remaining := when - _now()) > 0:
            if self._wait_readable(remaining):
                self.stats.collisions += 1
                self._receive()

    # -- the slave's registers -------------------------------------------------------------

    def _respond(self, unit: int, pdu: bytes) -> bytes:
        """The reply PDU (normal or exception) to one request PDU."""
        function = pdu[0]
        try:
            if function in _READ_TABLES:
                return self._read(unit, _READ_TABLES[function], pdu)
            if function in (5, 6, 15, 16):
                self._write(unit, pdu)
                return pdu[:5]  # the echo: function, address, value/quantity
        except _ExceptionReply as exc:
            return bytes((function | 0x80, exc.code))
        return bytes((function | 0x80, _ILLEGAL_FUNCTION))

    def _read(self, unit: int, table: Table, pdu: bytes) -> bytes:
        if len(pdu) != 5:
            raise _ExceptionReply(_ILLEGAL_VALUE)
        address, count = struct.unpack(">HH", pdu[1:5])
        limit = MAX_READ_BITS if table in BIT_TABLES else MAX_READ_REGISTERS
        if not 1 <= count <= limit:
            raise _ExceptionReply(_ILLEGAL_VALUE)
        self._check_span(unit, table, address, count)
        values = [self._value(unit, table, a) for a in range(address, address + count)]
        if table in BIT_TABLES:
            data = pack_bits([bool(v) for v in values])
        else:
            data = struct.pack(f">{count}H", *(int(v) for v in values))
        return bytes((pdu[0], len(data))) + data

    def _write(self, unit: int, pdu: bytes) -> None:
        function = pdu[0]
        address, value = struct.unpack(">HH", pdu[1:5])
        updates: dict[int, int | bool]
        if function == 5:
            if value not in (0, 0xFF00):
                raise _ExceptionReply(_ILLEGAL_VALUE)
            table: Table = "coil"
            updates = {address: value == 0xFF00}
        elif function == 6:
            table, updates = "holding", {address: value}
        else:
            count, n_bytes, data = value, pdu[5] if len(pdu) > 5 else -1, pdu[6:]
            expected = (count + 7) // 8 if function == 15 else 2 * count
            if count < 1 or n_bytes != expected or len(data) != expected:
                raise _ExceptionReply(_ILLEGAL_VALUE)
            if function == 15:
                table = "coil"
                bits = unpack_bits(data, count)
                updates = {address + i: bit for i, bit in enumerate(bits)}
            else:
                table = "holding"
                words = struct.unpack(f">{count}H", data)
                updates = {address + i: word for i, word in enumerate(words)}
        self._check_span(unit, table, address, len(updates))
        self._written.setdefault(unit, {}).setdefault(table, {}).update(updates)

    def _check_span(self, unit: int, table: Table, address: int, count: int) -> None:
        span = self._spans[unit].get(table)
        if span is None or address < span[0] or address + count > span[1]:
            raise _ExceptionReply(_ILLEGAL_ADDRESS)

    def _value(self, unit: int, table: Table, address: int) -> int | bool:
        written = self._written.get(unit, {}).get(table, {})
        if address in written:
            return written[address]  # what the master wrote sticks over the scenario
        return self.model.devices[unit].tables.get(table, {}).get(address, 0)


class _ExceptionReply(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _spans(profile: DeviceProfile) -> dict[Table, tuple[int, int]]:
    """Readable address range per table: the profile's span, like the TCP simulator (an
    unused bit table reads 16 False bits at 0, an unused register table has none)."""
    spans: dict[Table, tuple[int, int]] = {}
    tables: tuple[Table, ...] = ("coil", "discrete", "holding", "input")
    for table in tables:
        points = [p for p in profile.points if p.table == table]
        if points:
            spans[table] = (min(p.address for p in points), max(p.end for p in points))
        elif table in BIT_TABLES:
            spans[table] = (0, 16)
    return spans


def _request_size(rx: bytearray) -> int | None:
    """Length of the request at the start of rx, None if it cannot be told (yet)."""
    if len(rx) < 2:
        return None
    function = rx[1]
    if 1 <= function <= 6:
        return 8
    if function in (15, 16):
        return 9 + rx[6] if len(rx) >= 7 else None
    return None  # unknown function: the silence after it ends the frame


def _now() -> float:
    return time.monotonic()
