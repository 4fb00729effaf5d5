"""Line sensors: devices that talk on their own, one frame per reading, over a serial line.

A water-level radar sends ``$WL,<level>,<unit>``, a tipping-bucket rain gauge
``$RG,<tips>,<rate_mm_h>``; nobody polls them. ``LineSensor`` reads the port through the
event loop, decodes frames (framing.py), maps each frame to readings with a small table
of parsers, and hands Records named "{device}/{quantity}" to a sink, timestamped when the
bytes were read. A port that cannot be opened or that fails (USB adapter unplugged) is
retried every `reconnect_s`; every rejected byte and frame is counted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cloud_bridge.senml import Record
from drivers.serial import SerialPort, SerialSettings
from drivers.serial.framing import DecoderStats, NmeaDecoder, NmeaFrame

log = logging.getLogger(__name__)

__all__ = [
    "FrameDecoder",
    "LineSensor",
    "LineSensorCounters",
    "Reading",
    "SentenceMap",
    "default_sentences",
    "rain_gauge",
    "water_level",
]

Reading = tuple[str, float | int | bool | str, str | None]  # quantity, value, SenML unit
SentenceParser = Callable[[NmeaFrame], list[Reading]]

_METRES_PER = {"m": 1.0, "cm": 0.01, "mm": 0.001, "ft": 0.3048}


def _number(text: str, what: str) -> float:
    value = float(text)  # ValueError for "", "abc"
    if not math.isfinite(value):
        raise ValueError(f"{what} is not finite: {text!r}")
    return value


def water_level(frame: NmeaFrame) -> list[Reading]:
    """``$WL,<level>,<unit>`` -> level in metres (unit m, cm, mm or ft)."""
    if len(frame.fields) != 2:
        raise ValueError(f"WL needs level and unit, got {len(frame.fields)} fields")
    level, unit = frame.fields
    if unit not in _METRES_PER:
        raise ValueError(f"unknown level unit {unit!r}")
    return [("level", round(_number(level, "level") * _METRES_PER[unit], 9), "m")]


def rain_gauge(tip_mm: float = 0.2) -> SentenceParser:
    """``$RG,<tips>,<rate_mm_h>`` -> rain rate (mm/h) and accumulation (mm).

    `tips` is the gauge's cumulative bucket-tip counter; each tip is `tip_mm` of rain
    (0.2 mm is the common bucket size).
    """

    def parse(frame: NmeaFrame) -> list[Reading]:
        if len(frame.fields) != 2:
            raise ValueError(f"RG needs tips and rate, got {len(frame.fields)} fields")
        tips, rate = int(frame.fields[0]), _number(frame.fields[1], "rate")
        if tips < 0 or rate < 0:
            raise ValueError("tips and rate must not be negative")
        return [("rain", rate, "mm/h"), ("rain_acc", round(tips * tip_mm, 6), "mm")]

    return parse


def default_sentences(tip_mm: float = 0.2) -> dict[str, SentenceParser]:
    return {"WL": water_level, "RG": rain_gauge(tip_mm)}


class SentenceMap:
    """Frame -> readings by sentence id. Raises LookupError (no parser) or ValueError."""

    def __init__(self, parsers: Mapping[str, SentenceParser]) -> None:
        self.parsers = dict(parsers)

    def __call__(self, frame: NmeaFrame) -> list[Reading]:
        parser = self.parsers.get(frame.sentence)
        if parser is None:
            raise LookupError(frame.sentence)
        return parser(frame)


class FrameDecoder(Protocol):
    stats: DecoderStats

    def feed(self, data: bytes) -> list[Any]: ...


@dataclass
class LineSensorCounters:
    bytes: int = 0
    frames: int = 0
    records: int = 0
    unmapped: int = 0  # valid frames with no parser
    bad_fields: int = 0  # valid frames whose fields did not parse
    opens: int = 0
    open_failures: int = 0
    disconnects: int = 0


class LineSensor:
    def __init__(
        self,
        device: str,
        port_url: str,
        settings: SerialSettings,
        sink: Callable[[list[Record]], None],
        *,
        readings: Callable[[Any], list[Reading]] | None = None,
        decoder: FrameDecoder | None = None,
        clock: Callable[[], float] = time.time,
        reconnect_s: float = 1.0,
        update_time: float | None = None,
    ) -> None:
        self.device = device
        self.port_url = port_url
        self.settings = settings
        self.readings = readings if readings is not None else SentenceMap(default_sentences())
        self.decoder: FrameDecoder = decoder if decoder is not None else NmeaDecoder()
        self.reconnect_s = reconnect_s
        self.update_time = update_time  # SenML ut: the sensor's reporting period, if known
        self.counters = LineSensorCounters()
        self._sink = sink
        self._clock = clock

    @property
    def decoder_stats(self) -> DecoderStats:
        return self.decoder.stats

    def handle(self, data: bytes, read_time: float) -> list[Record]:
        """Bytes as read from the line -> Records (no I/O: the reader loop calls this)."""
        self.counters.bytes += len(data)
        records: list[Record] = []
        for frame in self.decoder.feed(data):
            self.counters.frames += 1
            try:
                readings = self.readings(frame)
            except LookupError:
                self.counters.unmapped += 1
                continue
            except ValueError as exc:
                self.counters.bad_fields += 1
                log.debug("%s: %s", self.device, exc)
                continue
            for quantity, value, unit in readings:
                records.append(
                    Record(
                        name=f"{self.device}/{quantity}",
                        time=read_time,
                        value=value,
                        unit=unit,
                        update_time=self.update_time,
                    )
                )
        self.counters.records += len(records)
        return records

    async def run(self) -> None:
        """Read forever (cancel to stop), reopening the port after failures."""
        failing = False  # log the first failure of a run, not every retry
        while True:
            port = SerialPort(self.port_url, self.settings)
            try:
                port.open()
            except (OSError, ValueError) as exc:
                self.counters.open_failures += 1
                if not failing:
                    log.warning("%s: cannot open %s: %s", self.device, self.port_url, exc)
                failing = True
                await asyncio.sleep(self.reconnect_s)
                continue
            failing = False
            self.counters.opens += 1
            try:
                await self._read(port)
            finally:
                port.close()
            self.counters.disconnects += 1
            log.warning("%s: %s failed: %s", self.device, self.port_url, port.error)
            await asyncio.sleep(self.reconnect_s)

    async def _read(self, port: SerialPort) -> None:
        while port.error is None:
            await port.wait(None)
            data = port.take()
            if data:
                records = self.handle(data, self._clock())
                if records:
                    self._sink(records)
