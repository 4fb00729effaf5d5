"""The simulator over real Modbus TCP: values, faults, the run loop and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from drivers.modbus.codec import Value, decode_image, decode_request, encode_image
from drivers.modbus.planner import ReadRequest, plan_reads
from drivers.modbus.profile import BIT_TABLES
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.scenario import (
    DeviceSpec,
    Scenario,
    effective_time,
    load_scenario,
    sample_rng,
    values_at,
)
from provisioning.configfile import parse_yaml_model

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 0.3  # client timeout for silent devices: keeps the suite fast


@asynccontextmanager
async def serving(sim: ModbusSimulator) -> AsyncIterator[AsyncModbusTcpClient]:
    """Start the simulator on a free loopback port and connect one client; always clean up."""
    port = await sim.start("127.0.0.1", 0)
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=TIMEOUT, retries=0)
    try:
        assert await client.connect()
        yield client
    finally:
        client.close()
        await sim.stop()


async def read(client: AsyncModbusTcpClient, request: ReadRequest, unit: int) -> dict[str, Value]:
    readers = {
        "coil": client.read_coils,
        "discrete": client.read_discrete_inputs,
        "holding": client.read_holding_registers,
        "input": client.read_input_registers,
    }
    response = await readers[request.table](request.address, count=request.count, device_id=unit)
    assert not response.isError(), response
    words = response.bits if request.table in BIT_TABLES else response.registers
    return decode_request(request, words)


async def read_device(client: AsyncModbusTcpClient, spec: DeviceSpec) -> dict[str, Value]:
    values: dict[str, Value] = {}
    for request in plan_reads(spec.profile_model):
        values.update(await read(client, request, spec.device_id))
    return values


def expected(spec: DeviceSpec, values: dict[str, Value]) -> dict[str, Value]:
    """What a gateway must decode: the scenario's values through encode/decode rounding."""
    image = encode_image(spec.profile_model.points, values)
    return decode_image(plan_reads(spec.profile_model), image)


# --- values over the wire ---------------------------------------------------------------------


@pytest.mark.parametrize("t", [0.0, 12.5, 25.0, 33.0, 44.0])
async def test_decoded_values_match_the_scenario(t: float) -> None:
    scenario = load_scenario("gas-leak")
    sim = ModbusSimulator(scenario, seed=7)
    async with serving(sim) as client:
        sim.set_time(t)
        for spec in scenario.devices:
            rng = sample_rng(7, spec.id, effective_time(spec, t))
            want = expected(spec, values_at(spec, t, rng))
            got = await read_device(client, spec)
            assert got == want
            # unset points (none here except the reserved register) read as raw 0
            assert set(got) == set(spec.profile_model.point_names)


async def test_noise_free_values_are_exact_scenario_values() -> None:
    scenario = load_scenario("gas-leak")
    sim = ModbusSimulator(scenario, noise=False)
    async with serving(sim) as client:
        sim.set_time(25.0)
        got = await read_device(client, scenario.device("gas-1"))
    assert got["ch4_lel"] == 0.62
    assert got["ch4"] == 31000
    assert got["co"] == 1.2
    assert got["o2"] == 0.2025
    assert (got["alarm1"], got["alarm2"], got["fault"]) == (True, True, False)
    assert got["sensor_state"] == "normal"


MIXED_PROFILE = """\
name: mixed
family: other
transport: modbus-tcp
points:
  - {name: pump, table: coil, address: 5}
  - {name: valve, table: coil, address: 20}
  - {name: door, table: discrete, address: 17}
  - {name: level, table: holding, address: 100, type: float32, word_order: little, unit: m}
  - {name: temp, table: holding, address: 110, type: int16, scale: 0.1, unit: Cel}
  - {name: mode, table: input, address: 3, type: uint16, enum: {0: auto, 1: manual}}
"""


async def test_every_table_over_the_wire(tmp_path: Path) -> None:
    profile = tmp_path / "mixed.yaml"
    profile.write_text(MIXED_PROFILE)
    scenario = parse_yaml_model(
        f"""\
name: mixed
duration: 10
devices:
  - id: m
    profile: {profile}
    device_id: 5
    values: {{pump: true, valve: false, door: true, mode: manual}}
    signals:
      level: {{baseline: 1.5, phases: [{{at: 0, ramp_to: 2.5, over: 10}}]}}
      temp: {{baseline: -12.3}}
""",
        Scenario,
    )
    spec = scenario.devices[0]
    assert len(plan_reads(spec.profile_model)) == 5
    sim = ModbusSimulator(scenario)
    async with serving(sim) as client:
        sim.set_time(5.0)
        got = await read_device(client, spec)
        assert got == {
            "pump": True,
            "valve": False,
            "door": True,
            "level": 2.0,
            "temp": -12.3,
            "mode": "manual",
        }
        assert got == expected(spec, values_at(spec, 5.0))


# --- faults over the wire ---------------------------------------------------------------------

TWO_DEVICES = """\
name: faults
duration: 40
devices:
  - id: a
    profile: gas-detector
    device_id: 1
    values: {sensor_state: normal}
    signals:
      ch4_lel: {baseline: 0.1, phases: [{at: 0, ramp_to: 0.5, over: 40}]}
    faults:
      - {at: 10, until: 20, kind: silent}
      - {at: 25, until: 30, kind: stuck}
  - id: b
    profile: gas-detector
    device_id: 2
    values: {sensor_state: calibration, o2: 0.2}
"""


def two_devices() -> Scenario:
    return parse_yaml_model(TWO_DEVICES, Scenario, "faults.yaml")


async def test_silent_device_times_out_while_others_answer() -> None:
    scenario = two_devices()
    a, b = scenario.devices
    (request,) = plan_reads(a.profile_model)
    sim = ModbusSimulator(scenario)
    async with serving(sim) as client:
        sim.set_time(15.0)
        started = time.monotonic()
        with pytest.raises(ModbusIOException):
            await read(client, request, a.device_id)
        assert time.monotonic() - started >= TIMEOUT * 0.9  # a real timeout, not an error reply
        assert (await read(client, request, b.device_id))["sensor_state"] == "calibration"
        sim.set_time(21.0)  # the fault ends: the device answers again on the same connection
        assert (await read(client, request, a.device_id))["ch4_lel"] == 0.31  # 0.1 + 0.4 * 21 / 40


async def test_unknown_unit_id_times_out() -> None:
    sim = ModbusSimulator(two_devices())
    async with serving(sim) as client:
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=9, device_id=9)
        assert not (await client.read_input_registers(0, count=9, device_id=2)).isError()


async def test_stuck_device_freezes_registers() -> None:
    scenario = two_devices()
    sim = ModbusSimulator(scenario)
    async with serving(sim) as client:
        sim.set_time(25.0)
        frozen = (await client.read_input_registers(0, count=9, device_id=1)).registers
        sim.set_time(29.5)
        assert (await client.read_input_registers(0, count=9, device_id=1)).registers == frozen
        sim.set_time(30.0)
        assert (await client.read_input_registers(0, count=9, device_id=1)).registers != frozen


async def test_outside_the_map_is_an_illegal_address() -> None:
    sim = ModbusSimulator(two_devices())
    async with serving(sim) as client:
        response = await client.read_input_registers(0, count=10, device_id=1)
        assert response.isError()
        response = await client.read_holding_registers(0, count=1, device_id=1)
        assert response.isError()


# --- run loop ---------------------------------------------------------------------------------


async def test_run_advances_time_and_stops_at_duration() -> None:
    scenario = load_scenario("gas-leak")
    sim = ModbusSimulator(scenario, noise=False)
    (request,) = plan_reads(scenario.device("gas-1").profile_model)
    async with serving(sim) as client:
        runner = asyncio.create_task(sim.run(speed=45.0))  # 45 s of scenario in 1 s
        seen: list[float] = []
        while not runner.done():
            seen.append(float((await read(client, request, 1))["ch4_lel"]))
            await asyncio.sleep(0.02)
        await runner
        assert sim.time == scenario.duration
        assert max(seen) == pytest.approx(0.62, abs=0.01)
        assert seen[-1] == pytest.approx(0.02)


async def test_run_loop_wraps_until_cancelled() -> None:
    scenario = parse_yaml_model(
        "name: short\nduration: 1\ndevices:\n  - {id: a, profile: gas-detector, device_id: 1}\n",
        Scenario,
    )
    sim = ModbusSimulator(scenario)
    runner = asyncio.create_task(sim.run(speed=10.0, loop=True))
    await asyncio.sleep(0.3)  # three scenario durations
    assert not runner.done()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert sim.time is not None and 0 <= sim.time < 1


async def test_port_in_use_is_an_os_error() -> None:
    sim = ModbusSimulator(two_devices())
    port = await sim.start()
    try:
        with pytest.raises(OSError, match="cannot listen"):
            await ModbusSimulator(two_devices()).start("127.0.0.1", port)
    finally:
        await sim.stop()


# --- CLI --------------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "drivers.sim.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_cli_prints_ready_serves_and_stops_on_sigterm() -> None:
    proc = cli("run", "gas-leak", "--port", "0", "--loop", "--seed", "3")
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 10)
        ready = json.loads(line)
        assert ready == {
            "event": "ready",
            "host": "127.0.0.1",
            "port": ready["port"],
            "devices": ["gas-1", "gas-2"],
        }
        client = AsyncModbusTcpClient("127.0.0.1", port=ready["port"], timeout=2, retries=0)
        try:
            assert await client.connect()
            response = await client.read_input_registers(0, count=9, device_id=2)
            assert not response.isError()
        finally:
            client.close()
        proc.send_signal(signal.SIGTERM)
        out, _err = await asyncio.to_thread(proc.communicate, timeout=10)
        assert proc.returncode == 0
        assert out == ""  # nothing after the ready line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_config_error_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent(TWO_DEVICES).replace("sensor_state: normal", "sensor_state: x"))
    proc = cli("run", str(bad), "--port", "0")
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert out == ""
    assert f"{bad}:7:" in err and "devices[0].values.sensor_state" in err


def test_cli_port_in_use_exits_1() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = cli("run", "gas-leak", "--port", str(port))
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1, err
    assert out == ""
    assert "cannot listen" in err
