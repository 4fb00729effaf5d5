"""Modbus RTU master against the RTU simulator over real pty pairs (no mocks)."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType

from drivers.modbus.codec import Value, decode_image, decode_request, encode_image
from drivers.modbus.planner import ReadRequest, plan_reads
from drivers.modbus.profile import load_profile
from drivers.modbus.rtu import (
    ModbusRtuEndpoint,
    ModbusRtuError,
    ReplyScanner,
    encode_adu,
    read_reply_size,
    silent_interval_s,
)
from drivers.modbus.transport import ModbusReadError
from drivers.serial import SerialSettings
from drivers.sim.rtu_sim import RtuFault, RtuSimulator
from drivers.sim.scenario import (
    DeviceSpec,
    Scenario,
    effective_time,
    load_scenario,
    sample_rng,
    values_at,
)
from provisioning.configfile import parse_yaml_model

# 8N2: eleven bits per character like the spec's default 8E1. Linux ptys cannot keep
# PARENB, and pyserial's reopen of a pty once opened with parity fails with EINVAL.
FAST = SerialSettings(115200, "N", 2)  # line emulated, but quick: timing is not the point
SLOW = SerialSettings(9600, "N", 2)
# Generous where the timeout is not the point: the simulator thread shares the GIL and
# the machine with the test, and a loaded CI box must not turn replies into timeouts.
TIMEOUT = 0.25


@asynccontextmanager
async def rtu(
    scenario: Scenario,
    line: SerialSettings | None = FAST,
    *,
    response_s: float = TIMEOUT,
    turnaround_s: float = 0.0,
    noise: bool = True,
    baudrate: int | None = None,
) -> AsyncIterator[tuple[RtuSimulator, ModbusRtuEndpoint]]:
    sim = RtuSimulator(scenario, line=line, turnaround_s=turnaround_s, noise=noise)
    path = sim.start()
    settings = line or FAST
    endpoint = ModbusRtuEndpoint(
        path,
        baudrate or settings.baudrate,
        settings.parity,
        settings.stopbits,
        timeout=response_s,
        turnaround_s=0.02,
    )
    try:
        yield sim, endpoint
    finally:
        await endpoint.close()
        sim.stop()
    assert sim.error is None, sim.error


async def read_device(endpoint: ModbusRtuEndpoint, spec: DeviceSpec) -> dict[str, Value]:
    values: dict[str, Value] = {}
    for request in plan_reads(spec.profile_model):
        values.update(decode_request(request, await endpoint.read(request, spec.device_id)))
    return values


def expected(spec: DeviceSpec, values: dict[str, Value]) -> dict[str, Value]:
    """What a master must decode: the scenario's values through encode/decode rounding."""
    image = encode_image(spec.profile_model.points, values)
    return decode_image(plan_reads(spec.profile_model), image)


TWO_DEVICES = """\
name: two
duration: 60
devices:
  - id: a
    profile: gas-detector
    device_id: 1
    values: {sensor_state: normal, co: 3.5}
    signals:
      ch4_lel: {baseline: 0.1, phases: [{at: 0, ramp_to: 0.5, over: 40}]}
    faults:
      - {at: 10, until: 20, kind: silent}
  - id: b
    profile: gas-detector
    device_id: 2
    values: {sensor_state: calibration, o2: 0.2}
"""


def two_devices() -> Scenario:
    return parse_yaml_model(TWO_DEVICES, Scenario, "two.yaml")


@functools.cache
def gas_request() -> ReadRequest:
    """The gas detector's one request (cached: parsing YAML costs more than a read)."""
    (request,) = plan_reads(load_profile("gas-detector"))
    return request


# --- frames and timing (pure) -----------------------------------------------------------------


def test_silent_interval_follows_the_spec() -> None:
    assert silent_interval_s(SerialSettings(9600, "E")) == pytest.approx(3.5 * 11 / 9600)
    assert silent_interval_s(SerialSettings(9600, "N")) == pytest.approx(3.5 * 10 / 9600)
    assert silent_interval_s(SerialSettings(19200, "E")) == pytest.approx(3.5 * 11 / 19200)
    assert silent_interval_s(SerialSettings(38400, "E")) == 0.00175  # fixed above 19200
    assert silent_interval_s(SerialSettings(115200, "N", 2)) == 0.00175


def test_adu_matches_the_spec_example() -> None:
    # Modbus over Serial Line, CRC example: 01 03 00 00 00 01 -> CRC 84 0A (low byte first)
    assert encode_adu(1, bytes.fromhex("0300000001")) == bytes.fromhex("010300000001840A")
    assert read_reply_size("holding", 125) == 255  # the largest RTU ADU is 256 bytes
    assert read_reply_size("coil", 9) == 7


def reply(unit: int, data: bytes) -> bytes:
    return encode_adu(unit, bytes((3, len(data))) + data)


def test_reply_scanner_skips_noise_and_other_units() -> None:
    good = reply(7, b"\x00\x2a")
    stale = reply(5, b"\x00\x01")  # a late reply from a slave that timed out before
    scanner = ReplyScanner(bytes((7, 3, 2)), 7)
    stream = b"\x00\xff\x07" + stale + good + b"\x99"
    assert scanner.scan(stream[:10]) is None  # incremental: nothing complete yet
    assert scanner.scan(stream) == good
    assert scanner.pos == 3 + len(stale)
    assert scanner.bad_crc == 0


def test_reply_scanner_finds_a_good_reply_after_a_corrupt_one() -> None:
    good = reply(7, b"\x00\x2a")
    corrupt = good[:-1] + bytes((good[-1] ^ 1,))
    scanner = ReplyScanner(bytes((7, 3, 2)), 7)
    assert scanner.scan(corrupt) is None and scanner.bad_crc == 1
    assert scanner.scan(corrupt + good) == good


def test_reply_scanner_final_scan_finds_an_exception_inside_a_false_start() -> None:
    exception = encode_adu(7, b"\x83\x02")
    scanner = ReplyScanner(bytes((7, 3, 4)), 9)
    stream = b"\x07\x03\x04" + exception  # a false header claiming 9 bytes swallows it
    assert scanner.scan(stream) is None  # could still be completed by more bytes
    assert scanner.scan(stream, final=True) == exception


# --- reads over the pty -----------------------------------------------------------------------

MIXED_PROFILE = """\
name: mixed
family: other
transport: modbus-rtu
points:
  - {name: pump, table: coil, address: 5}
  - {name: valve, table: coil, address: 20}
  - {name: door, table: discrete, address: 17}
  - {name: level, table: holding, address: 100, type: float32, word_order: little, unit: m}
  - {name: temp, table: holding, address: 110, type: int16, scale: 0.1, unit: Cel}
  - {name: flow, table: input, address: 0, type: uint32, unit: l/s}
  - {name: alarm, table: input, address: 2, bit: 3}
  - {name: mode, table: input, address: 3, type: uint16, enum: {0: auto, 1: manual}}
"""


def mixed_scenario(tmp_path: Path) -> Scenario:
    profile = tmp_path / "mixed.yaml"
    profile.write_text(MIXED_PROFILE)
    return parse_yaml_model(
        f"""\
name: mixed
duration: 10
devices:
  - id: m
    profile: {profile}
    device_id: 5
    values: {{pump: true, valve: false, door: true, mode: manual, alarm: true, flow: 70000}}
    signals:
      level: {{baseline: 1.5, phases: [{{at: 0, ramp_to: 2.5, over: 10}}]}}
      temp: {{baseline: -12.3}}
""",
        Scenario,
    )


async def test_every_table_through_planner_and_codec(tmp_path: Path) -> None:
    scenario = mixed_scenario(tmp_path)
    spec = scenario.devices[0]
    tables = {r.table for r in plan_reads(spec.profile_model)}
    assert tables == {"coil", "discrete", "holding", "input"}
    async with rtu(scenario) as (sim, endpoint):
        sim.set_time(5.0)
        got = await read_device(endpoint, spec)
    assert got == {
        "pump": True,
        "valve": False,
        "door": True,
        "level": 2.0,
        "temp": -12.3,
        "flow": 70000,
        "alarm": True,
        "mode": "manual",
    }
    assert got == expected(spec, values_at(spec, 5.0))
    assert endpoint.counters[5].ok == len(plan_reads(spec.profile_model))


@pytest.mark.parametrize("t", [0.0, 25.0, 33.0])
async def test_scenario_values_over_rtu_match_the_tcp_simulators_model(t: float) -> None:
    scenario = load_scenario("gas-leak")
    async with rtu(scenario) as (sim, endpoint):
        sim.set_time(t)
        for spec in scenario.devices:
            rng = sample_rng(0, spec.id, effective_time(spec, t))
            assert await read_device(endpoint, spec) == expected(spec, values_at(spec, t, rng))


async def test_pymodbus_client_reads_the_simulator_and_the_port_has_one_owner() -> None:
    """Interop: a third-party RTU master understands the simulator (and so its framing,
    which the endpoint shares). While it holds the port, the endpoint is refused: two
    masters on one tty would each get half of the bytes."""
    sim = RtuSimulator(two_devices(), line=FAST, noise=False)
    mine = ModbusRtuEndpoint(sim.start(), 115200, "N", 2, timeout=1)
    client = AsyncModbusSerialClient(
        sim.path, framer=FramerType.RTU, baudrate=115200, stopbits=2, timeout=1, retries=0
    )
    try:
        assert await client.connect()
        response = await client.read_input_registers(0, count=9, device_id=2)
        assert not response.isError()
        values = decode_request(gas_request(), response.registers)
        assert values["sensor_state"] == "calibration" and values["o2"] == 0.2
        refused = await client.write_register(0, 7, device_id=2)  # it has no holding registers
        assert refused.isError() and refused.exception_code == 2
        with pytest.raises(ModbusReadError, match="connection"):
            await mine.read(gas_request(), 2)
        client.close()
        assert await mine.read(gas_request(), 2) == response.registers
    finally:
        client.close()
        await mine.close()
        sim.stop()


async def test_emulated_9600_baud_read_takes_the_line_time() -> None:
    """The simulator must not beat physics: a read costs the wire time of request and
    reply, two t3.5 silences and the device turnaround (the bench relies on this)."""
    line = SLOW
    async with rtu(two_devices(), line, turnaround_s=0.01, response_s=0.2) as (sim, endpoint):
        await endpoint.read(gas_request(), 1)  # open the port, settle
        started = time.monotonic()
        for _ in range(5):
            await endpoint.read(gas_request(), 1)
        per_read = (time.monotonic() - started) / 5
    theory = line.wire_time_s(8 + 23) + 2 * silent_interval_s(line) + 0.01
    assert theory * 0.99 <= per_read <= theory + 0.02
    assert sim.stats.gap_violations == 0
    assert sim.stats.min_gap_s >= silent_interval_s(line)


async def test_the_simulator_notices_a_master_that_skips_the_silence() -> None:
    # The gap check that the previous test relies on is not vacuous.
    async with rtu(two_devices(), SLOW) as (sim, endpoint):
        endpoint.t35_s = 0.0
        for _ in range(10):
            await endpoint.read(gas_request(), 2)
    assert sim.stats.gaps == 9
    assert sim.stats.gap_violations >= 1  # not all 9: a loaded machine is slow by itself
    assert sim.stats.min_gap_s < silent_interval_s(SLOW) / 2


# --- errors, counted per device ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "kind", "reason", "counter"),
    [
        (RtuFault("silent"), "timeout", "timeout", "timeouts"),
        (RtuFault("crc"), "decode", "crc", "crc"),
        (RtuFault("garbage", length=9), "decode", "garbage", "garbage"),
        (RtuFault("exception", code=6), "exception", "exception", "exceptions"),
    ],
)
async def test_faults_are_classified_and_counted_per_device(
    fault: RtuFault, kind: str, reason: str, counter: str
) -> None:
    async with rtu(two_devices()) as (sim, endpoint):
        sim.faults[1] = fault
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(ModbusReadError) as caught:
                await endpoint.read(gas_request(), 1)
            elapsed = time.monotonic() - started
            assert caught.value.kind == kind
            assert isinstance(caught.value, ModbusRtuError) and caught.value.reason == reason
            # the neighbour on the same line is unaffected
            assert len(await endpoint.read(gas_request(), 2)) == 9
        if reason == "crc":
            assert elapsed < TIMEOUT  # a CRC error does not cost a whole timeout
        if reason == "exception":
            assert caught.value.exception_code == 6
    bad, good = endpoint.counters[1].as_dict(), endpoint.counters[2].as_dict()
    assert bad["requests"] == 2 and bad[counter] == 2 and bad["ok"] == 0
    assert sum(v for k, v in bad.items() if k not in ("requests", counter, "noise_bytes")) == 0
    assert good["requests"] == good["ok"] == 2


async def test_noise_before_a_reply_is_skipped_and_counted() -> None:
    async with rtu(two_devices()) as (sim, endpoint):
        sim.faults[1] = RtuFault("noise", length=15)
        words = await endpoint.read(gas_request(), 1)
    assert len(words) == 9
    assert endpoint.counters[1].ok == 1
    assert endpoint.counters[1].noise_bytes >= 1  # up to 15: a noise byte may match unit 1


async def test_scenario_silence_times_out_and_heals() -> None:
    async with rtu(two_devices()) as (sim, endpoint):
        sim.set_time(15.0)
        with pytest.raises(ModbusReadError, match="timeout"):
            await endpoint.read(gas_request(), 1)
        sim.set_time(21.0)
        assert len(await endpoint.read(gas_request(), 1)) == 9
    assert endpoint.counters[1].timeouts == 1 and endpoint.counters[1].ok == 1


async def test_a_late_reply_does_not_poison_the_next_transaction() -> None:
    async with rtu(two_devices()) as (sim, endpoint):
        sim.faults[1] = RtuFault("slow", delay_s=TIMEOUT + 0.1)  # after the master gave up
        with pytest.raises(ModbusReadError, match="timeout"):
            await endpoint.read(gas_request(), 1)
        values = decode_request(gas_request(), await endpoint.read(gas_request(), 2))
        assert values["sensor_state"] == "calibration"
        values = decode_request(gas_request(), await endpoint.read(gas_request(), 2))
        assert values["sensor_state"] == "calibration"
    late = endpoint.stale_bytes + endpoint.counters[2].noise_bytes
    assert late == 23  # unit 1's whole late reply was seen and set aside


async def test_missing_port_is_a_connection_error(tmp_path: Path) -> None:
    endpoint = ModbusRtuEndpoint(str(tmp_path / "ttyUSB9"), timeout=0.05)
    with pytest.raises(ModbusReadError) as caught:
        await endpoint.read(gas_request(), 1)
    assert caught.value.kind == "connection"
    assert endpoint.counters[1].connection == 1


async def test_simulator_gone_is_a_connection_error() -> None:
    async with rtu(two_devices()) as (sim, endpoint):
        await endpoint.read(gas_request(), 1)
        sim.stop()
        with pytest.raises(ModbusReadError) as caught:
            for _ in range(2):  # the hang-up may only show on the next request
                await endpoint.read(gas_request(), 1)
        assert caught.value.kind in ("connection", "timeout")
        assert endpoint.counters[1].connection >= 1


async def test_invalid_requests_are_programming_errors() -> None:
    endpoint = ModbusRtuEndpoint("/nonexistent/tty")
    with pytest.raises(ValueError):
        await endpoint.read(ReadRequest("holding", 0, 126, ()), 1)  # over the FC3 limit
    with pytest.raises(ValueError):
        await endpoint.read(gas_request(), 0)  # a read cannot be broadcast
    with pytest.raises(ValueError):
        await endpoint.write_register(0, 70000, 1)
    with pytest.raises(ValueError):
        await endpoint.write_registers(0, [], 1)
    assert endpoint.counters == {}  # refused before anything went on the wire


# --- writes -----------------------------------------------------------------------------------


async def test_writes_of_every_kind_read_back(tmp_path: Path) -> None:
    scenario = mixed_scenario(tmp_path)
    async with rtu(scenario) as (_sim, endpoint):
        await endpoint.write_coil(5, False, 5)
        await endpoint.write_coils(19, [True, True], 5)  # 19 is inside the coil span 5..20
        await endpoint.write_register(110, 0xFFFF, 5)  # int16 -1 -> -0.1 Cel
        await endpoint.write_registers(100, [0, 0x4020], 5)  # float32 2.5, low word first
        coils = await endpoint.read(ReadRequest("coil", 5, 16, ()), 5)
        holding = await endpoint.read(ReadRequest("holding", 100, 11, ()), 5)
        with pytest.raises(ModbusReadError) as caught:
            await endpoint.write_register(500, 1, 5)  # outside the device's map
    assert coils[0] is False and coils[14:16] == [True, True]
    assert holding[0:2] == [0, 0x4020] and holding[10] == 0xFFFF
    assert isinstance(caught.value, ModbusRtuError) and caught.value.exception_code == 2
    assert endpoint.counters[5].exceptions == 1


async def test_broadcast_write_reaches_every_unit_and_waits_the_turnaround() -> None:
    profile_points = two_devices().devices[0].profile_model.points
    assert not any(p.table == "coil" for p in profile_points)  # unused coil table: 0..15
    async with rtu(two_devices()) as (_sim, endpoint):
        started = time.monotonic()
        await endpoint.write_coil(3, True, 0)
        assert time.monotonic() - started >= endpoint.turnaround_s
        for unit in (1, 2):
            assert (await endpoint.read(ReadRequest("coil", 0, 8, ()), unit))[3] is True
    assert endpoint.counters[0].requests == 1
