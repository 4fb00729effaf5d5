"""Serial line simulation: pty pairs, and a line sensor that writes NMEA-style sentences.

A pty is a real tty to the code under test (pyserial opens it like /dev/ttyUSB0), but the
kernel moves bytes between its ends instantly: no baud rate is enforced. Simulators here
therefore pace their own writes at the emulated line's character time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tty
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.serial import SerialSettings
from drivers.serial.framing import encode_nmea

__all__ = [
    "LineFaults",
    "LineSensorSimulator",
    "PtyPair",
    "Sentence",
    "rain_gauge",
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
