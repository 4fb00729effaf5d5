"""The bus arbiter over a real pty: schedules, per-slave degradation, recovery, counters."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest

from cloud_bridge.senml import Record
from drivers.modbus.bus import (
    QUALITY_FAIL,
    QUALITY_PASS,
    BackoffPolicy,
    ModbusBus,
    gross_range_quality,
    point_records,
)
from drivers.modbus.profile import DeviceProfile, PointSpec, load_profile
from drivers.modbus.rtu import ModbusRtuEndpoint, silent_interval_s
from drivers.modbus.transport import ModbusTcpEndpoint
from drivers.serial import SerialSettings
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.rtu_sim import RtuFault, RtuSimulator
from drivers.sim.scenario import Scenario, load_scenario
from provisioning.configfile import parse_yaml_model

SLOW = SerialSettings(9600, "N", 2)  # 11 bits per character, like 8E1 (see test_modbus_rtu)
FAST = SerialSettings(115200, "N", 2)


def detectors(n: int) -> Scenario:
    devices = "".join(
        f"  - {{id: gas-{i}, profile: gas-detector, device_id: {i}, "
        f"values: {{ch4_lel: 0.0{i}, sensor_state: normal}}}}\n"
        for i in range(1, n + 1)
    )
    return parse_yaml_model(f"name: line\nduration: 60\ndevices:\n{devices}", Scenario)


@contextmanager
def rtu_line(scenario: Scenario, line: SerialSettings) -> Iterator[RtuSimulator]:
    sim = RtuSimulator(scenario, line=line)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()
    assert sim.error is None, sim.error


@asynccontextmanager
async def running(bus: ModbusBus) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(bus.run())
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def gas_bus(
    sim: RtuSimulator,
    line: SerialSettings,
    interval_s: float,
    records: list[Record],
    *,
    response_s: float = 0.1,
    backoff: BackoffPolicy = BackoffPolicy(),
) -> tuple[ModbusBus, ModbusRtuEndpoint]:
    endpoint = ModbusRtuEndpoint(
        sim.path, line.baudrate, line.parity, line.stopbits, timeout=response_s
    )
    bus = ModbusBus(endpoint, records.extend, backoff=backoff)
    profile = load_profile("gas-detector")
    for unit in sorted(sim.model.devices):
        bus.add_device(f"gas-{unit}", profile, unit, interval_s)
    return bus, endpoint


# --- the dead slave ---------------------------------------------------------------------------


async def test_a_dead_slave_costs_one_timeout_per_probe_and_comes_back_when_healed() -> None:
    line, response_s, interval = SLOW, 0.15, 0.4
    records: list[Record] = []
    with rtu_line(detectors(4), line) as sim:
        sim.faults[4] = RtuFault("silent")
        bus, endpoint = gas_bus(
            sim,
            line,
            interval,
            records,
            response_s=response_s,
            backoff=BackoffPolicy(failures_to_degrade=2, factor=2.0, max_s=0.8),
        )
        async with running(bus):
            await asyncio.sleep(2.5)
            dead = bus.counters["gas-4"]
            assert dead.degraded and dead.backoff_s == 0.8
            assert dead.timeouts == dead.polls
            # Polled at ~0.3 and ~0.7 s (2 failures: degraded), then probed at +0.8 s:
            # at most 4 attempts in 2.5 s where an undegraded poller makes 6 or 7.
            assert 3 <= dead.polls <= 4
            assert endpoint.counters[4].timeouts == dead.polls

            t35 = silent_interval_s(line)
            poll_s = line.wire_time_s(8 + 23) + 2 * t35  # one healthy gas-detector poll
            probe_s = line.wire_time_s(8) + response_s + line.wire_time_s(23) + t35
            for name in ("gas-1", "gas-2", "gas-3"):
                healthy = bus.counters[name]
                assert healthy.polls == healthy.ok >= 6  # ticks at phase + k * 0.4 s
                assert healthy.skipped_ticks == 0
                assert not healthy.degraded
                # Late by at most one probe and one neighbour's poll, never by more.
                assert healthy.late_max_s <= probe_s + poll_s + 0.03, name

            healed_at = time.time()
            del sim.faults[4]
            await asyncio.sleep(0.8 + interval + 0.2)  # the longest backoff, then its poll
            assert not dead.degraded
            assert dead.recoveries == 1 and dead.ok >= 1 and dead.backoff_s == 0.0
            assert any(r.device == "gas-4" and r.time >= healed_at for r in records)
            assert all(not c.degraded for c in bus.counters.values())
    gas4 = [r for r in records if r.name == "gas-4/ch4_lel"]
    assert gas4 and all(r.value == 0.04 for r in gas4)


async def test_an_overloaded_bus_skips_ticks_fairly_instead_of_bunching() -> None:
    # Two slaves asking for a poll every 50 ms on a line that needs ~44 ms per poll.
    records: list[Record] = []
    with rtu_line(detectors(2), SLOW) as sim:
        bus, _endpoint = gas_bus(sim, SLOW, 0.05, records, response_s=0.5)
        async with running(bus):
            await asyncio.sleep(0.9)
    a, b = bus.counters["gas-1"], bus.counters["gas-2"]
    assert a.skipped_ticks > 0 and b.skipped_ticks > 0
    assert abs(a.polls - b.polls) <= 1  # neither slave starves the other
    line_limit = 0.9 / (SLOW.wire_time_s(8 + 23) + 2 * silent_interval_s(SLOW))
    assert a.polls + b.polls <= math.ceil(line_limit)
    assert a.ok == a.polls and b.ok == b.polls


@pytest.mark.parametrize(
    ("fault", "counter"),
    [
        (RtuFault("crc"), "crc"),
        (RtuFault("exception", code=4), "exceptions"),
        (RtuFault("garbage", length=5), "garbage"),
    ],
)
async def test_failures_are_counted_by_reason_and_degrade_only_that_slave(
    fault: RtuFault, counter: str
) -> None:
    records: list[Record] = []
    with rtu_line(detectors(2), FAST) as sim:
        sim.faults[2] = fault
        bus, _endpoint = gas_bus(
            sim,
            FAST,
            0.05,
            records,
            response_s=0.25,  # not the point here: no spurious timeouts on a busy machine
            backoff=BackoffPolicy(failures_to_degrade=2, factor=40),  # then 2 s of quiet
        )
        bad, good = bus.counters["gas-2"], bus.counters["gas-1"]
        async with running(bus):
            deadline = time.monotonic() + 3
            while not (bad.degraded and good.ok >= 4):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
    assert bad.polls == getattr(bad, counter) == 2  # degraded after the second failure
    assert bad.degraded and bad.ok == 0 and bad.readings == 0
    assert counter.rstrip("s") in bad.last_error
    assert good.ok == good.polls and not good.degraded
    assert {r.device for r in records} == {"gas-1"}


# --- records and the interface ----------------------------------------------------------------


def test_point_records_normalise_like_the_poller() -> None:
    profile = load_profile("gas-detector")
    points = {p.name: p for p in profile.points}
    values = {"ch4_lel": 1.2, "co": 3.5, "alarm1": True, "sensor_state": "normal"}
    records = point_records("gas-7", points, values, 1.7e9, 0.5)
    by_name = {r.name: r for r in records}
    assert by_name["gas-7/ch4_lel"] == Record("gas-7/ch4_lel", 1.7e9, 1.2, "/", 0.5, QUALITY_FAIL)
    assert by_name["gas-7/co"].quality == QUALITY_PASS and by_name["gas-7/co"].unit == "ppm"
    assert by_name["gas-7/alarm1"].quality is None  # bools and enums have no range
    assert by_name["gas-7/sensor_state"].value == "normal"


def test_gross_range_quality_rejects_nan() -> None:
    point = PointSpec(name="x", table="holding", address=0, type="float32", range=(0, 1))
    assert gross_range_quality(point, float("nan")) == QUALITY_FAIL
    assert gross_range_quality(point, 0.5) == QUALITY_PASS


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = BackoffPolicy(failures_to_degrade=2, factor=2.0, max_s=5.0)
    assert [policy.delay_s(1.0, n) for n in (2, 3, 4, 5)] == [2.0, 4.0, 5.0, 5.0]
    with pytest.raises(ValueError):
        BackoffPolicy(failures_to_degrade=0)


def test_a_bus_refuses_duplicate_names_and_unit_ids() -> None:
    bus = ModbusBus(ModbusRtuEndpoint("/nonexistent"), lambda records: None)
    profile: DeviceProfile = load_profile("gas-detector")
    bus.add_device("a", profile, 1, 1.0)
    with pytest.raises(ValueError, match="already"):
        bus.add_device("a", profile, 2, 1.0)
    with pytest.raises(ValueError, match="unit id 1"):
        bus.add_device("b", profile, 1, 1.0)


async def test_the_bus_drives_a_tcp_endpoint_too() -> None:
    scenario = load_scenario("gas-leak")
    sim = ModbusSimulator(scenario, noise=False)
    port = await sim.start("127.0.0.1", 0)
    endpoint = ModbusTcpEndpoint("127.0.0.1", port, timeout=0.5)
    try:
        bus = ModbusBus(endpoint, lambda records: None, clock=lambda: 1.7e9)
        bus.add_device("gas-2", load_profile("gas-detector"), 2, 1.0)
        records = await bus.poll("gas-2")
    finally:
        await endpoint.close()
        await sim.stop()
    assert {r.name for r in records} >= {"gas-2/ch4_lel", "gas-2/o2", "gas-2/sensor_state"}
    assert all(r.time == 1.7e9 and r.update_time == 1.0 for r in records)
