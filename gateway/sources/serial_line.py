"""One serial port, one talking sensor (``$WL,1.234,m*5A``): open, read, decode, reopen.

Decoding is drivers.serial.line_sensor.LineSensor's (frames, sentence map, counters); this
owner adds what a gateway needs around it: reopening with a growing backoff when the port
cannot be opened or goes away (a USB adapter unplugged), a silence watchdog (a sensor that
stops talking is counted, not just missed), gateway-clock stamps with the clock's sync state,
and health for the status records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from drivers.serial import SerialPort, SerialSettings
from drivers.serial.line_sensor import LineSensor, SentenceMap, default_sentences
from gateway.sources import Backoff, DeviceHealth, Sink, mark_unsynced

log = logging.getLogger(__name__)

__all__ = ["SerialLineSource"]


class SerialLineSource:
    def __init__(
        self,
        device: str,
        port_url: str,
        settings: SerialSettings,
        sink: Sink,
        *,
        readings: Callable[..., list] | None = None,  # type: ignore[type-arg]
        decoder: object | None = None,
        clock: Callable[[], float] = time.time,
        clock_synced: Callable[[], bool] = lambda: True,
        backoff: Backoff = Backoff(0.5, 2.0, 30.0),
        silence_s: float | None = None,
        update_time: float | None = None,
    ) -> None:
        self.name = f"serial {port_url}"
        self.device = device
        self.port_url = port_url
        self.settings = settings
        self.backoff = backoff
        self.silence_s = silence_s
        self.sensor = LineSensor(
            device,
            port_url,
            settings,
            sink,
            readings=readings if readings is not None else SentenceMap(default_sentences()),
            decoder=decoder,  # type: ignore[arg-type]
            clock=clock,
            update_time=update_time,
        )
        self.silences = 0
        self.last_error = ""
        self.connected = False
        self.silent = False  # connected, but no frame for silence_s
        self._sink = sink
        self._clock = clock
        self._clock_synced = clock_synced

    async def run(self) -> None:
        attempt = 0
        failing = False  # log the first failure of a run of failures, not every retry
        counters = self.sensor.counters
        while True:
            port = SerialPort(self.port_url, self.settings)
            try:
                port.open()
            except (OSError, ValueError) as exc:
                counters.open_failures += 1
                self.last_error = f"open: {exc}"
                if not failing:
                    log.warning("serial %s: cannot open %s: %s", self.device, self.port_url, exc)
                    failing = True
                attempt += 1
                await asyncio.sleep(self.backoff.delay_s(attempt))
                continue
            if failing:
                log.info("serial %s: %s open again", self.device, self.port_url)
            failing, attempt = False, 0
            counters.opens += 1
            self.connected = True
            try:
                await self._read(port)
            finally:
                self.connected = False
                port.close()
            counters.disconnects += 1
            self.last_error = f"disconnected: {port.error}"
            log.warning("serial %s: %s failed: %s", self.device, self.port_url, port.error)
            failing = True
            attempt += 1
            await asyncio.sleep(self.backoff.delay_s(attempt))

    async def _read(self, port: SerialPort) -> None:
        quiet_since = time.monotonic()
        self.silent = False
        while port.error is None:
            got = await port.wait(self.silence_s)
            if not got:
                if port.error is not None:
                    return
                if self.silence_s is not None and time.monotonic() - quiet_since >= self.silence_s:
                    self.silences += 1
                    quiet_since = time.monotonic()
                    self.last_error = f"silence: no frame for {self.silence_s:g} s"
                    if not self.silent:
                        log.warning("serial %s: %s", self.device, self.last_error)
                        self.silent = True
                continue
            frames_before = self.sensor.counters.frames
            records = self.sensor.handle(port.take(), self._clock())
            if self.sensor.counters.frames != frames_before:
                quiet_since = time.monotonic()
                if self.silent:
                    log.info("serial %s: frames again", self.device)
                    self.silent = False
            if records:
                self._sink(mark_unsynced(records, self._clock_synced()))

    def health(self) -> dict[str, DeviceHealth]:
        c = self.sensor.counters
        stats = self.sensor.decoder_stats
        unparsable = sum(stats.rejected_frames.values()) + c.bad_fields + c.unmapped
        reads = c.frames - c.bad_fields - c.unmapped
        errors = unparsable + c.open_failures + c.disconnects + self.silences
        state = "ok" if self.connected and not self.silent else "failing"
        return {
            self.device: DeviceHealth(
                "serial-line",
                reads=reads,
                errors=errors,
                timeouts=self.silences,
                unparsable=unparsable,
                garbage_bytes=stats.rejected_bytes.get("noise", 0),
                state=state,
                last_error=self.last_error,
            )
        }
