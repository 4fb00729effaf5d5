"""Line sensors end to end over a real pty: simulator -> pyserial -> frames -> Records."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from cloud_bridge.senml import Record
from drivers.serial import SerialSettings
from drivers.serial.framing import (
    BinaryDecoder,
    BinaryFrame,
    NmeaFrame,
    encode_binary,
    encode_nmea,
)
from drivers.serial.line_sensor import (
    LineSensor,
    Reading,
    SentenceMap,
    default_sentences,
    rain_gauge,
    water_level,
)
from drivers.sim.serial_sim import LineFaults, LineSensorSimulator
from drivers.sim.serial_sim import rain_gauge as rain_sentences
from drivers.sim.serial_sim import water_level as level_sentences

LINE = SerialSettings(9600, "N")


@asynccontextmanager
async def reading(sensor: LineSensor) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(sensor.run())
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def wait_for(condition: Callable[[], bool], limit_s: float = 3.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- end to end -------------------------------------------------------------------------------


async def test_water_level_sentences_become_records_over_a_pty() -> None:
    records: list[Record] = []
    sim = LineSensorSimulator(
        level_sentences(start_m=1.5, step_m=0.01, unit="cm"), interval_s=0.02, settings=LINE
    )
    with sim:
        sensor = LineSensor("wl-3", sim.open(), LINE, records.extend, update_time=0.02)
        async with reading(sensor):
            await asyncio.sleep(0.05)  # the reader has the port open before the first byte
            started = time.time()
            await sim.run(count=20)
            await wait_for(lambda: len(records) == 20)
            finished = time.time()
    assert [r.name for r in records] == ["wl-3/level"] * 20
    assert [r.value for r in records] == [pytest.approx(1.5 + 0.01 * k) for k in range(20)]
    assert {r.unit for r in records} == {"m"} and {r.update_time for r in records} == {0.02}
    times = [r.time for r in records]
    assert started <= times[0] and times == sorted(times) and times[-1] <= finished
    assert times[-1] - times[0] >= 19 * 0.02 * 0.9  # stamped at read time, not in a batch
    assert sensor.counters.frames == 20 and sensor.decoder_stats.rejected_frames == {}


async def test_a_noisy_line_loses_exactly_the_damaged_sentences() -> None:
    records: list[Record] = []
    faults = LineFaults(garbage_every=2, bad_checksum_every=5, truncate_every=7)
    sim = LineSensorSimulator(rain_sentences(), interval_s=0.005, faults=faults, seed=3)
    with sim:
        sensor = LineSensor("rg-1", sim.open(), LINE, records.extend)
        async with reading(sensor):
            await asyncio.sleep(0.05)
            await sim.run(count=60)
            intact = len(sim.log.intact)
            await wait_for(lambda: sensor.counters.frames == intact)
            await asyncio.sleep(0.05)  # nothing more is coming
    stats = sensor.decoder_stats
    assert sim.log.bad_checksum == 12 and sim.log.truncated == 7 and sim.log.garbage_bytes > 0
    # Sentence 35 is sent with a bad checksum rather than cut: 60 - 12 - 7 arrive intact.
    assert sensor.counters.frames == intact == 41
    # Every damaged sentence is rejected exactly once. A cut one is "truncated" when the
    # next '$' comes first, or a bad line when noise with a newline follows it.
    assert sum(stats.rejected_frames.values()) == 12 + 7
    assert stats.rejected_frames["checksum"] >= 12
    assert stats.rejected_bytes["noise"] > 0
    tips = [r.value for r in records if r.name == "rg-1/rain_acc"]
    assert len(tips) == intact and tips == sorted(tips)  # cumulative, in order, none invented


async def test_the_reader_retries_a_missing_port_and_survives_a_hang_up(tmp_path: Path) -> None:
    missing = LineSensor("x", str(tmp_path / "ttyUSB0"), LINE, lambda r: None, reconnect_s=0.02)
    async with reading(missing):
        await wait_for(lambda: missing.counters.open_failures >= 3)
    assert missing.counters.opens == 0

    records: list[Record] = []
    sim = LineSensorSimulator(level_sentences(), interval_s=0.01)
    sensor = LineSensor("wl", sim.open(), LINE, records.extend, reconnect_s=0.02)
    async with reading(sensor):
        await asyncio.sleep(0.05)
        await sim.run(count=3)
        await wait_for(lambda: len(records) == 3)
        sim.close()  # the USB adapter is pulled
        await wait_for(lambda: sensor.counters.disconnects == 1)
    assert sensor.counters.opens == 1


# --- mapping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "metres"),
    [
        (("1.234", "m"), 1.234),
        (("123.4", "cm"), 1.234),
        (("1234", "mm"), 1.234),
        (("10", "ft"), 3.048),
    ],
)
def test_water_level_converts_to_metres(fields: tuple[str, str], metres: float) -> None:
    assert water_level(NmeaFrame("WL", fields)) == [("level", pytest.approx(metres), "m")]


def test_rain_gauge_reports_rate_and_accumulation() -> None:
    parse = rain_gauge(tip_mm=0.2)
    assert parse(NmeaFrame("RG", ("37", "2.5"))) == [
        ("rain", 2.5, "mm/h"),
        ("rain_acc", 7.4, "mm"),
    ]


@pytest.mark.parametrize(
    "frame",
    [
        NmeaFrame("WL", ("1.2",)),
        NmeaFrame("WL", ("abc", "m")),
        NmeaFrame("WL", ("nan", "m")),
        NmeaFrame("WL", ("1", "furlong")),
        NmeaFrame("RG", ("-1", "0")),
        NmeaFrame("RG", ("1.5", "0")),
    ],
)
def test_bad_fields_are_counted_not_raised(frame: NmeaFrame) -> None:
    sensor = LineSensor("s", "unused", LINE, lambda r: None)
    assert sensor.handle(encode_nmea(frame.sentence, list(frame.fields)), 1.7e9) == []
    assert sensor.counters.bad_fields == 1 and sensor.counters.frames == 1


def test_unmapped_sentences_are_counted() -> None:
    sensor = LineSensor("s", "unused", LINE, lambda r: None, readings=SentenceMap({}))
    assert sensor.handle(encode_nmea("WL", ["1.0", "m"]), 1.7e9) == []
    assert sensor.counters.unmapped == 1 and sensor.counters.frames == 1


def test_binary_frames_with_a_custom_mapping() -> None:
    def temperature(frame: BinaryFrame) -> list[Reading]:
        raw = int.from_bytes(frame.payload, "big", signed=True)
        return [("temperature", raw / 10, "Cel")]

    sensor = LineSensor(
        "t-1", "unused", LINE, lambda r: None, readings=temperature, decoder=BinaryDecoder(8)
    )
    data = b"\xff" + encode_binary((-123).to_bytes(2, "big", signed=True)) + b"\x02"
    (record,) = sensor.handle(data, 1.7e9)
    assert record == Record("t-1/temperature", 1.7e9, -12.3, "Cel")
    assert default_sentences().keys() == {"WL", "RG"}
