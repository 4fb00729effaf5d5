"""Serial lines: character timing, and a pyserial port read through the asyncio event loop.

The port is read with ``loop.add_reader`` on its file descriptor rather than a thread per
port: a gateway with several RS-485 adapters then needs no threads, and the reader callback
timestamps bytes on the loop's clock, the clock the Modbus inter-frame silence is kept on.
Any pyserial URL with a file descriptor works (a tty, a pty, ``socket://``, ``rfc2217://``).
Ports are opened exclusively (flock): one owner per port.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import serial

__all__ = ["Parity", "SerialPort", "SerialSettings"]

Parity = Literal["N", "E", "O"]


@dataclass(frozen=True, slots=True)
class SerialSettings:
    baudrate: int = 9600
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8

    def __post_init__(self) -> None:
        if self.baudrate <= 0:
            raise ValueError(f"baudrate must be positive, got {self.baudrate}")

    @property
    def bits_per_char(self) -> int:
        """Bits one character occupies on the wire: start + data + parity + stop."""
        return 1 + self.bytesize + (self.parity != "N") + self.stopbits

    @property
    def char_time_s(self) -> float:
        return self.bits_per_char / self.baudrate

    def wire_time_s(self, n_bytes: int) -> float:
        """Time n back-to-back characters occupy the line."""
        return n_bytes * self.char_time_s


class SerialPort:
    """One open serial port: writes go straight out, reads accumulate in a buffer.

    Not thread-safe; one owner (a Modbus endpoint, a line-sensor reader) per port.
    """

    def __init__(self, url: str, settings: SerialSettings) -> None:
        self.url = url
        self.settings = settings
        self.error: Exception | None = None  # the read error that closed the port
        self.last_rx = 0.0  # loop time the last bytes arrived
        self._serial: serial.SerialBase | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self.error is None

    def open(self) -> None:
        """Open the port and start reading; raises OSError (incl. SerialException) if it cannot."""
        if self._serial is not None:
            raise RuntimeError(f"{self.url} is already open")
        loop = asyncio.get_running_loop()
        port = serial.serial_for_url(
            self.url,
            baudrate=self.settings.baudrate,
            parity=self.settings.parity,
            stopbits=self.settings.stopbits,
            bytesize=self.settings.bytesize,
            timeout=0,  # reads return what is there: the event loop does the waiting
            exclusive=True,  # flock: a second owner (another gateway, a stray terminal) is
            # refused instead of silently stealing half the replies
        )
        try:
            loop.add_reader(port.fileno(), self._on_readable)
        except Exception:
            port.close()
            raise
        self._serial, self._loop, self.error = port, loop, None
        self._buffer.clear()

    def close(self) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        if self._loop is not None and self.error is None:
            self._loop.remove_reader(port.fileno())
        port.close()
        self._wake()

    def write(self, data: bytes) -> None:
        if self._serial is None or self.error is not None:
            raise serial.SerialException(f"{self.url} is not open")
        self._serial.write(data)

    def take(self) -> bytes:
        """Everything received since the last take/discard."""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def wait(self, max_s: float | None) -> bool:
        """Wait until bytes are buffered, the port fails, or `max_s` pass; True if bytes.

        A timer rather than asyncio.timeout: this is called once per received chunk, and a
        bare future + call_later is the cheapest wait the loop offers."""
        if not self._buffer and self.error is None and self._serial is not None:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiter = waiter
            timer = loop.call_later(max_s, _resolve, waiter) if max_s is not None else None
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        return bool(self._buffer)

    def _on_readable(self) -> None:
        assert self._serial is not None and self._loop is not None
        try:
            data = self._serial.read(4096)
        except (serial.SerialException, OSError) as exc:
            # EIO on a pty whose other end closed, a USB adapter unplugged: stop reading,
            # or the loop would spin on a descriptor that is forever "readable".
            self.error = exc
            self._loop.remove_reader(self._serial.fileno())
        else:
            if not data:
                return
            self._buffer += data
            self.last_rx = self._loop.time()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
