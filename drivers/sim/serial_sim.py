"""Serial line simulation: pty pairs, and line sensors that write NMEA-style sentences.

``LineSensorSimulator`` writes generated sentences with faults every Nth sentence;
``ScenarioLineSimulator`` plays the serial-line devices of a scenario
(drivers/sim/source_scenario.py): at scenario time t each device writes, on its own pty,
the frames its profile (drivers/serial/profile.py) reads back into the scenario's values —
``$WL,1.234,m*HH`` for a built-in parser, fields by position for a declared sentence, a
struct-packed STX/LEN/CRC/ETX frame for binary framing. Faults: silent (nothing written),
garbage (line noise and a sentence with a wrong checksum), stuck and spike (in the values).

A pty is a real tty to the code under test (pyserial opens it like /dev/ttyUSB0), but the
kernel moves bytes between its ends instantly: no baud rate is enforced. Simulators here
therefore pace their own writes at the emulated line's character time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import struct
import tty
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.modbus.codec import Value
from drivers.serial import SerialSettings
from drivers.serial.framing import encode_binary, encode_nmea
from drivers.serial.profile import BinaryLayout, SentenceSpec, SerialLineProfile
from drivers.sim.source_scenario import (
    SourceDevice,
    effective_time,
    sample_rng,
    silent_at,
    values_at,
    wire_fault_at,
)

__all__ = [
    "LineFaults",
    "LineSensorSimulator",
    "PtyPair",
    "ScenarioLineSimulator",
    "Sentence",
    "encode_frames",
    "rain_gauge",
    "serial_tolerance",
    "water_level",
]

Sentence = tuple[str, list[str]]  # sentence id, fields


class PtyPair:
    """A pseudo-terminal: the simulator owns the master, the code under test opens `path`.

    The slave end is put in raw mode (no echo, no CR/LF translation) and kept open here, so
    the master never reads EIO while the client closes and reopens the port.
    """

    def __init__(self) -> None:
        self.master_fd, self.slave_fd = os.openpty()
        tty.setraw(self.slave_fd)
        self.path = os.ttyname(self.slave_fd)

    def close(self) -> None:
        for fd in (self.master_fd, self.slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def water_level(
    start_m: float = 1.0, step_m: float = 0.001, unit: str = "m"
) -> Callable[[int], Sentence]:
    """``$WL,<level>,<unit>``: a level that rises by `step_m` per sentence."""
    factor = {"m": 1.0, "cm": 100.0, "mm": 1000.0}[unit]

    def sentence(k: int) -> Sentence:
        return "WL", [f"{(start_m + k * step_m) * factor:.3f}", unit]

    return sentence


def rain_gauge(tips_per_sentence: int = 1, rate_mm_h: float = 2.4) -> Callable[[int], Sentence]:
    """``$RG,<tips>,<rate_mm_h>``: a cumulative tip counter and the current rain rate."""

    def sentence(k: int) -> Sentence:
        return "RG", [str(k * tips_per_sentence), f"{rate_mm_h + 0.1 * (k % 5):.1f}"]

    return sentence


@dataclass(frozen=True, slots=True)
class LineFaults:
    """Every Nth sentence (0 = never): garbage bytes before it, a wrong checksum, or cut
    short (the next sentence follows at once, as when a sensor resets mid-line)."""

    garbage_every: int = 0
    bad_checksum_every: int = 0
    truncate_every: int = 0
    garbage_bytes: tuple[int, int] = (1, 24)


@dataclass
class LineSimLog:
    intact: list[bytes] = field(default_factory=list)  # sentences sent whole, in order
    bad_checksum: int = 0
    truncated: int = 0
    garbage_bytes: int = 0
    dropped_bytes: int = 0  # nobody was reading and the pty buffer was full


class LineSensorSimulator:
    """Writes one sentence per `interval_s` to a pty; `settings` emulates the line speed."""

    def __init__(
        self,
        sentences: Callable[[int], Sentence],
        *,
        interval_s: float,
        settings: SerialSettings | None = None,
        faults: LineFaults = LineFaults(),
        seed: int = 0,
        max_chunk: int = 8,
    ) -> None:
        self.sentences = sentences
        self.interval_s = interval_s
        self.settings = settings
        self.faults = faults
        self.max_chunk = max_chunk
        self.log = LineSimLog()
        self._rng = random.Random(seed)
        self._pty: PtyPair | None = None

    def open(self) -> str:
        """Create the pty; returns the path a reader opens."""
        if self._pty is None:
            self._pty = PtyPair()
            os.set_blocking(self._pty.master_fd, False)
        return self._pty.path

    def close(self) -> None:
        if self._pty is not None:
            self._pty.close()
            self._pty = None

    def __enter__(self) -> LineSensorSimulator:
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    async def run(self, count: int | None = None) -> None:
        """Send `count` sentences (forever if None) on ticks start + k * interval_s."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        k = 0
        while count is None or k < count:
            await self._send(self._frame(k))
            k += 1
            await asyncio.sleep(max(0.0, start + k * self.interval_s - loop.time()))

    def _frame(self, k: int) -> bytes:
        n = k + 1  # fault counters are 1-based: every 3rd is k = 2, 5, ...
        sentence, fields = self.sentences(k)
        frame = encode_nmea(sentence, fields)
        out = b""
        if _every(self.faults.garbage_every, n):
            low, high = self.faults.garbage_bytes
            # '$' would start a (bogus) sentence: line noise rarely forms one, keep it out.
            garbage = bytes(self._rng.choice(_NOISE) for _ in range(self._rng.randint(low, high)))
            self.log.garbage_bytes += len(garbage)
            out += garbage
        if _every(self.faults.bad_checksum_every, n):
            star = frame.rindex(b"*")
            wrong = (int(frame[star + 1 : star + 3], 16) ^ 0x5A) & 0xFF
            self.log.bad_checksum += 1
            return out + frame[: star + 1] + b"%02X\r\n" % wrong
        if _every(self.faults.truncate_every, n):
            self.log.truncated += 1
            return out + frame[: self._rng.randint(2, len(frame) - 3)]
        self.log.intact.append(frame)
        return out + frame

    async def _send(self, data: bytes) -> None:
        assert self._pty is not None, "open() first"
        pos = 0
        while pos < len(data):
            chunk = data[pos : pos + self._rng.randint(1, self.max_chunk)]
            pos += len(chunk)
            try:
                os.write(self._pty.master_fd, chunk)
            except BlockingIOError:
                self.log.dropped_bytes += len(chunk)
            if self.settings is not None:
                await asyncio.sleep(self.settings.wire_time_s(len(chunk)))


_NOISE = bytes(b for b in range(256) if b != ord("$"))


def _every(n: int, k: int) -> bool:
    return n > 0 and k % n == 0


# --- scenario-driven line sensors ----------------------------------------------------------

# Text the built-in parsers read back: level with 3 decimals, rain rate with 1.
_LEVEL_DECIMALS, _RATE_DECIMALS = 3, 1


def serial_tolerance(profile: SerialLineProfile, point: str) -> float:
    """How far the text or binary encoding moves a point's value."""
    for spec in profile.sentences.values():
        if spec.parser == "water_level" and point == "level":
            return 0.5 * 10**-_LEVEL_DECIMALS * (1 + 1e-9)
        if spec.parser == "rain_gauge" and point == "rain":
            return 0.5 * 10**-_RATE_DECIMALS * (1 + 1e-9)
        if spec.parser == "rain_gauge" and point == "rain_acc":
            return spec.tip_mm / 2 * (1 + 1e-9)
        for field_spec in spec.fields:
            if field_spec.quantity == point and field_spec.type == "int":
                return abs(field_spec.scale) / 2 * (1 + 1e-9)
    if profile.binary is not None:
        for binary_field in profile.binary.fields:
            if binary_field.quantity == point:
                return abs(binary_field.scale) / 2 * (1 + 1e-9) + 1e-9
    return 1e-9  # floats written with repr() come back exactly, up to the scale's rounding


def encode_frames(profile: SerialLineProfile, values: dict[str, Value]) -> list[bytes]:
    """The frames one report of `values` takes (sentences lacking all their values are left
    out, as a gauge without a rain input sends no $RG)."""
    if profile.binary is not None:
        return [_binary_frame(profile.binary, values)]
    frames: list[bytes] = []
    for sentence, spec in profile.sentences.items():
        fields = _sentence_fields(spec, values)
        if fields is not None:
            frames.append(encode_nmea(sentence, fields))
    return frames


def _sentence_fields(spec: SentenceSpec, values: dict[str, Value]) -> list[str] | None:
    if spec.parser == "water_level":
        if "level" not in values:
            return None
        return [f"{float(values['level']):.{_LEVEL_DECIMALS}f}", "m"]
    if spec.parser == "rain_gauge":
        if "rain" not in values or "rain_acc" not in values:
            return None
        tips = max(0, round(float(values["rain_acc"]) / spec.tip_mm))
        return [str(tips), f"{max(0.0, float(values['rain'])):.{_RATE_DECIMALS}f}"]
    if not any(f.quantity in values for f in spec.fields):
        return None
    count = spec.count or max(f.index for f in spec.fields) + 1
    fields = [""] * count
    for field_spec in spec.fields:
        if field_spec.quantity not in values:
            continue
        value = values[field_spec.quantity]
        if field_spec.type == "bool":
            fields[field_spec.index] = "1" if value else "0"
        elif field_spec.type == "str":
            fields[field_spec.index] = str(value)
        else:
            raw = (float(value) - field_spec.offset) / field_spec.scale
            fields[field_spec.index] = str(round(raw)) if field_spec.type == "int" else repr(raw)
    return fields


def _binary_frame(layout: BinaryLayout, values: dict[str, Value]) -> bytes:
    codes = [c for c in layout.format[1:] if not c.isdigit()]
    raws: list[int | float] = []
    for code, field_spec in zip(codes, layout.fields, strict=False):
        raw = (float(values.get(field_spec.quantity, 0.0)) - field_spec.offset) / field_spec.scale
        raws.append(raw if code in "efd" else round(raw))
    raws += [0] * (len(codes) - len(raws))
    return encode_binary(struct.pack(layout.format, *raws))


class ScenarioLineSimulator:
    """Every serial-line device of a scenario on a pty of its own."""

    def __init__(
        self,
        devices: list[SourceDevice],
        *,
        seed: int = 0,
        fault_seed: int = 0,
        max_chunk: int = 16,
        pace: bool = False,
    ) -> None:
        self.devices = devices
        self.seed = seed
        self.max_chunk = max_chunk
        self.pace = pace  # write at the device's line speed (a pty has none of its own)
        self.sent: dict[str, int] = {d.id: 0 for d in devices}  # frames written per device
        self.dropped_bytes = 0
        self._profiles: dict[str, SerialLineProfile] = {}
        for device in devices:
            profile = device.profile_model
            if not isinstance(profile, SerialLineProfile):
                raise ValueError(f"{device.id}: {device.profile} is not a serial-line driver")
            self._profiles[device.id] = profile
        self._rng = random.Random(fault_seed)
        self._ptys: dict[str, PtyPair] = {}

    def open(self) -> dict[str, str]:
        """Create the ptys; device id -> the path a reader opens."""
        for device in self.devices:
            if device.id not in self._ptys:
                pty = PtyPair()
                os.set_blocking(pty.master_fd, False)
                self._ptys[device.id] = pty
        return self.paths

    @property
    def paths(self) -> dict[str, str]:
        return {device_id: pty.path for device_id, pty in self._ptys.items()}

    def settings(self, device_id: str) -> SerialSettings:
        """The device's line settings per its profile (what a reader should open with)."""
        return self._profiles[device_id].settings()

    def close(self) -> None:
        for pty in self._ptys.values():
            pty.close()
        self._ptys.clear()

    def values(self, device: SourceDevice, t: float) -> dict[str, Value]:
        rng = sample_rng(self.seed, device.id, effective_time(device, t))
        return values_at(device, t, rng)

    def wire_bytes(self, device: SourceDevice, t: float) -> bytes:
        """What `device` writes for its report at scenario time t."""
        if silent_at(device, t):
            return b""
        frames = encode_frames(self._profiles[device.id], self.values(device, t))
        fault = wire_fault_at(device, t)
        if fault is not None and fault.kind == "garbage":
            noise = bytes(self._rng.choice(_NOISE) for _ in range(self._rng.randint(4, 24)))
            # Line noise, then each frame with its checksum (or CRC) corrupted.
            return noise + b"".join(_corrupt(frame) for frame in frames)
        self.sent[device.id] += len(frames)
        return b"".join(frames)

    async def report(self, t: float, device_ids: set[str] | None = None) -> None:
        """Every (or the named) device writes its report for scenario time t."""
        for device in self.devices:
            if device_ids is None or device.id in device_ids:
                await self._write(device, self.wire_bytes(device, t))

    async def play(self, duration: float, *, speed: float = 1.0, loop: bool = False) -> None:
        """Report every device every `interval` scenario seconds until the end."""
        event_loop = asyncio.get_running_loop()
        start = event_loop.time()
        due = {d.id: 0.0 for d in self.devices}
        while True:
            elapsed = (event_loop.time() - start) * speed
            if not loop and elapsed >= duration:
                return
            t = elapsed % duration if loop else elapsed
            ready = {device_id for device_id, when in due.items() if elapsed >= when}
            for device in self.devices:
                if device.id in ready:
                    due[device.id] = elapsed + device.interval
            await self.report(t, ready)
            await asyncio.sleep(max(0.005, (min(due.values()) - elapsed) / speed))

    async def _write(self, device: SourceDevice, data: bytes) -> None:
        pty = self._ptys.get(device.id)
        if pty is None or not data:
            return
        settings = self._profiles[device.id].settings() if self.pace else None
        pos = 0
        while pos < len(data):
            chunk = data[pos : pos + self._rng.randint(1, self.max_chunk)]
            pos += len(chunk)
            try:
                os.write(pty.master_fd, chunk)
            except BlockingIOError:
                self.dropped_bytes += len(chunk)  # nobody reads and the pty buffer is full
            if settings is not None:
                await asyncio.sleep(settings.wire_time_s(len(chunk)))


def _corrupt(frame: bytes) -> bytes:
    if frame.startswith(b"$"):
        star = frame.rindex(b"*")
        wrong = (int(frame[star + 1 : star + 3], 16) ^ 0x5A) & 0xFF
        return frame[: star + 1] + b"%02X\r\n" % wrong
    return frame[:-3] + bytes((frame[-3] ^ 0xFF,)) + frame[-2:]  # flip a CRC byte
