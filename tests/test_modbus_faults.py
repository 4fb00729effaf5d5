"""Scenario faults over both wires: the same YAML fault makes the same trouble on Modbus TCP
(a real pymodbus server, read by a real pymodbus client) and on RTU (a pty pair).

Nothing is set per step: the simulators act out the scenario's fault windows by themselves
once their scenario time is inside them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from drivers.modbus.codec import Value, decode_request
from drivers.modbus.planner import plan_reads
from drivers.modbus.rtu import ModbusRtuEndpoint
from drivers.modbus.transport import ModbusReadError, ModbusTcpEndpoint
from drivers.serial import SerialSettings
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.rtu_sim import RtuSimulator
from drivers.sim.scenario import Scenario
from provisioning.configfile import parse_yaml_model

FAST = SerialSettings(115200, "N", 2)
TIMEOUT = 0.5  # generous: a loaded box must not turn replies into timeouts
SLOW_DELAY = 0.25

SCENARIO = f"""
name: faults
duration: 100
devices:
  - {{id: good, profile: gas-detector, device_id: 1, values: {{co: 7, sensor_state: normal}}}}
  - id: bad
    profile: gas-detector
    device_id: 2
    values: {{ch4_lel: 0.05, co: 5, sensor_state: normal}}
    faults:
      - {{at: 10, until: 20, kind: stuck, point: ch4_lel, value: 0.33}}
      - {{at: 20, until: 30, kind: spike, point: co, value: 999}}
      - {{at: 30, until: 40, kind: silent}}
      - {{at: 40, until: 50, kind: garbage}}
      - {{at: 50, until: 60, kind: slow, delay: {SLOW_DELAY}}}
      - {{at: 60, until: 70, kind: dropout, rate: 1.0}}
      - {{at: 70, until: 80, kind: dropout, rate: 0.5}}
"""


@dataclass
class Rig:
    read: Callable[[int], object]  # unit -> awaitable of decoded values
    set_time: Callable[[float], None]


@asynccontextmanager
async def wire(transport: str) -> AsyncIterator[Rig]:
    scenario = parse_yaml_model(SCENARIO, Scenario)
    plan = plan_reads(scenario.devices[0].profile_model)
    endpoint: ModbusTcpEndpoint | ModbusRtuEndpoint

    async def read(unit: int) -> dict[str, Value]:
        values: dict[str, Value] = {}
        for request in plan:
            values.update(decode_request(request, await endpoint.read(request, unit)))
        return values

    if transport == "tcp":
        sim = ModbusSimulator(scenario, noise=False, fault_seed=1)
        port = await sim.start("127.0.0.1", 0)
        endpoint = ModbusTcpEndpoint("127.0.0.1", port, timeout=TIMEOUT)
        try:
            yield Rig(read, sim.set_time)
        finally:
            await endpoint.close()
            await sim.stop()
        return
    rtu = RtuSimulator(scenario, noise=False, line=FAST, fault_seed=1)
    path = rtu.start()
    endpoint = ModbusRtuEndpoint(path, FAST.baudrate, FAST.parity, FAST.stopbits, TIMEOUT, 0.02)
    try:
        yield Rig(read, rtu.set_time)
    finally:
        await endpoint.close()
        rtu.stop()
    assert rtu.error is None, rtu.error


TRANSPORTS = pytest.mark.parametrize("transport", ["tcp", "rtu"])


@TRANSPORTS
async def test_stuck_and_spike_show_in_the_registers(transport: str) -> None:
    async with wire(transport) as rig:
        rig.set_time(5.0)
        assert (await rig.read(2))["ch4_lel"] == 0.05
        rig.set_time(15.0)
        assert (await rig.read(2))["ch4_lel"] == 0.33
        rig.set_time(25.0)
        assert (await rig.read(2))["co"] == 999
        rig.set_time(35.0)  # back to normal for the points, silent for the device
        with pytest.raises(ModbusReadError, match="timeout"):
            await rig.read(2)


@TRANSPORTS
async def test_garbage_fails_the_read_and_the_line_recovers(transport: str) -> None:
    async with wire(transport) as rig:
        rig.set_time(45.0)
        with pytest.raises(ModbusReadError):
            await rig.read(2)
        assert (await rig.read(1))["co"] == 7  # the neighbour still reads
        rig.set_time(85.0)
        assert (await rig.read(2))["co"] == 5


@TRANSPORTS
async def test_slow_slave_answers_late_and_its_neighbour_on_time(transport: str) -> None:
    async with wire(transport) as rig:
        rig.set_time(55.0)
        started = time.monotonic()
        assert (await rig.read(2))["co"] == 5
        slow = time.monotonic() - started
        started = time.monotonic()
        assert (await rig.read(1))["co"] == 7
        fast = time.monotonic() - started
    requests = len(plan_reads(parse_yaml_model(SCENARIO, Scenario).devices[0].profile_model))
    assert slow >= SLOW_DELAY * requests
    assert fast < slow


@TRANSPORTS
async def test_dropout_loses_a_seeded_share_of_requests(transport: str) -> None:
    async with wire(transport) as rig:
        rig.set_time(65.0)
        with pytest.raises(ModbusReadError, match="timeout"):
            await rig.read(2)
        rig.set_time(75.0)
        outcomes = []
        for _ in range(10):
            try:
                await rig.read(2)
                outcomes.append(True)
            except ModbusReadError as exc:
                assert exc.kind == "timeout"
                outcomes.append(False)
        assert any(outcomes) and not all(outcomes)  # rate 0.5: some lost, some through


def test_wire_faults_are_accepted_for_tcp_devices_and_validated() -> None:
    scenario = parse_yaml_model(SCENARIO, Scenario)
    assert scenario.devices[1].profile_model.transport == "modbus-tcp"
    bad = SCENARIO.replace("kind: dropout, rate: 1.0", "kind: dropout")
    with pytest.raises(Exception, match="rate"):
        parse_yaml_model(bad, Scenario)
