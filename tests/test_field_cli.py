"""`sentryline sensor modbus read|scan` against real simulators: Modbus TCP on loopback and
Modbus RTU on a pty. The CLI runs its own event loop, so the TCP simulator runs on a loop
in a background thread and the RTU simulator in its own thread, as in the field."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import pytest
import typer
from pymodbus import ModbusDeviceIdentification
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from typer.testing import CliRunner

from drivers.cli import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, sensor_app
from drivers.contract import mismatches
from drivers.field import (
    PortError,
    SerialLine,
    TcpPort,
    parse_bauds,
    parse_ids,
    parse_port,
)
from drivers.modbus.profile import load_profile
from drivers.serial import SerialSettings
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.rtu_sim import RtuFault, RtuSimulator
from drivers.sim.scenario import Scenario, load_scenario
from provisioning.configfile import parse_yaml_model

T = TypeVar("T")
runner = CliRunner()
LINE = SerialSettings(115200, "N", 2)  # ptys refuse parity; 8N2 has 8E1's timing
SEED = 5


def cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(sensor_app, name="sensor")
    return app


def invoke(*args: str) -> Any:
    return runner.invoke(cli(), ["sensor", "modbus", *args])


@contextmanager
def background_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sim-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def run_in(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(10)


@contextmanager
def tcp_sim(scenario: Scenario, t: float) -> Iterator[tuple[ModbusSimulator, str]]:
    with background_loop() as loop:
        sim = ModbusSimulator(scenario, seed=SEED)
        sim.set_time(t)
        port = run_in(loop, sim.start("127.0.0.1", 0))
        try:
            yield sim, f"tcp://127.0.0.1:{port}"
        finally:
            run_in(loop, sim.stop())


@contextmanager
def rtu_sim(scenario: Scenario, t: float) -> Iterator[tuple[RtuSimulator, str]]:
    sim = RtuSimulator(scenario, seed=SEED, line=LINE)
    sim.set_time(t)
    path = sim.start()
    try:
        yield sim, f"rtu://{path}?baud=115200&parity=N&stopbits=2"
    finally:
        sim.stop()
    assert sim.error is None, sim.error


# --- parsing (pure) ----------------------------------------------------------------------------


def test_port_urls() -> None:
    assert parse_port("tcp://10.0.0.5:5020") == TcpPort("10.0.0.5", 5020)
    assert parse_port("tcp://plc.local") == TcpPort("plc.local", 502)
    assert parse_port("tcp://[::1]:1502").label == "tcp://[::1]:1502"
    assert parse_port("/dev/ttyUSB0") == SerialLine("/dev/ttyUSB0", 9600, "E", 1)
    assert parse_port("COM3") == SerialLine("COM3")
    assert parse_port("rtu:///dev/ttyUSB0?baud=19200&parity=n&stopbits=2") == SerialLine(
        "/dev/ttyUSB0", 19200, "N", 2
    )
    assert parse_port("socket://10.0.0.9:4001") == SerialLine("socket://10.0.0.9:4001")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("tcp://", "needs a host"),
        ("tcp://host:99999", "1-65535"),
        ("tcp://host:502/x", "no path"),
        ("rtu://", "needs a device"),
        ("rtu:///dev/ttyS0?speed=9600", "unknown option"),
        ("rtu:///dev/ttyS0?baud=fast", "baud rate 'fast'"),
        ("rtu:///dev/ttyS0?parity=X", "parity is N, E or O"),
        ("rtu:///dev/ttyS0?stopbits=3", "stopbits is 1 or 2"),
    ],
)
def test_bad_port_urls(url: str, message: str) -> None:
    with pytest.raises(PortError, match=message):
        parse_port(url)


def test_ids_and_bauds() -> None:
    assert parse_ids("1-3,7,5-5") == [1, 2, 3, 5, 7]
    assert parse_ids("1-247")[-1] == 247
    for bad in ("0-5", "1-248", "5-2", "a", "1,,2"):
        with pytest.raises(PortError):
            parse_ids(bad)
    assert parse_bauds("9600, 19200,9600") == [9600, 19200]
    with pytest.raises(PortError):
        parse_bauds("9600,abc")


# --- read --------------------------------------------------------------------------------------


def test_read_tcp_json_matches_the_scenario() -> None:
    scenario = load_scenario("urban-lifeline")
    with tcp_sim(scenario, 62.0) as (sim, url):
        result = invoke(
            "read", "--port", url, "--device-id", "3", "--profile", "elevator-monitor", "--json"
        )
        want = sim.values(scenario.device("garage-lift"), 62.0)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["device_id"], data["profile"], data["requests"]) == (3, "elevator-monitor", 2)
    records = {r["n"]: r for r in data["records"]}
    got = {n: r.get("v", r.get("vb", r.get("vs"))) for n, r in records.items()}
    assert mismatches(load_profile("elevator-monitor"), got, want) == []
    assert records["mode"] == {"n": "mode", "vs": "fire"}
    assert records["door_open"] == {"n": "door_open", "vb": True}
    assert records["speed"]["u"] == "m/s" and records["speed"]["q"] == 1
    assert "12 points in 2 requests" in result.stderr


def test_read_table_flags_out_of_range_values() -> None:
    spike = parse_yaml_model(
        "name: s\nduration: 9\ndevices:\n  - id: g\n    profile: gas-detector\n"
        "    device_id: 2\n    values: {h2s: 1.5, co: 2.0, sensor_state: normal}\n"
        "    faults: [{at: 0, until: 9, kind: spike, point: h2s, value: 250}]\n",
        Scenario,
    )
    with tcp_sim(spike, 1.0) as (_sim, url):  # 250 ppm H2S: above the cell's 0..200 span
        result = invoke("read", "--port", url, "--device-id", "2", "--profile", "gas-detector")
    assert result.exit_code == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert rows["point"] == ["value", "unit", "quality"]
    assert rows["h2s"] == ["250.0", "ppm", "OUT", "OF", "RANGE"]
    assert rows["co"] == ["2.0", "ppm", "ok"]
    assert rows["sensor_state"] == ["normal"]
    assert rows["alarm1"] == ["False"]


def test_read_rtu_over_a_pty() -> None:
    driver_scenario = load_scenario("urban-lifeline")
    with rtu_sim(driver_scenario, 30.0) as (sim, url):
        result = invoke(
            "read", "--port", url, "--device-id", "11", "--profile", "rain-gauge", "--json"
        )
        want = sim.model.values(driver_scenario.device("rain-north"), 30.0)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["requests"] == 5  # block reads off: one request per value
    got = {r["n"]: r.get("v", r.get("vb")) for r in data["records"]}
    assert mismatches(load_profile("rain-gauge"), got, want) == []
    assert data["port"].endswith("115200 8N2")


def test_read_errors_and_exit_codes() -> None:
    scenario = load_scenario("urban-lifeline")
    with tcp_sim(scenario, 72.0) as (_sim, url):  # rain-north is silent from 70 to 75
        silent = invoke(
            "read",
            "--port",
            url,
            "--device-id",
            "11",
            "--profile",
            "rain-gauge",
            "--timeout",
            "0.2",
        )
        unknown = invoke("read", "--port", url, "--device-id", "1", "--profile", "nope")
    assert silent.exit_code == EXIT_FAILED and silent.stdout == ""
    assert "read failed: timeout" in silent.stderr
    assert unknown.exit_code == EXIT_USAGE and "unknown device profile" in unknown.stderr
    bad_url = invoke("read", "--port", "tcp://", "--device-id", "1", "--profile", "gas-detector")
    assert bad_url.exit_code == EXIT_USAGE and "needs a host" in bad_url.stderr
    bad_unit = invoke(
        "read", "--port", "/dev/null", "--device-id", "248", "--profile", "gas-detector"
    )
    assert bad_unit.exit_code == EXIT_USAGE and "1-247" in bad_unit.stderr
    no_port = invoke(
        "read", "--port", "/dev/no-such-tty", "--device-id", "1", "--profile", "gas-detector"
    )
    assert no_port.exit_code == EXIT_FAILED and "connection" in no_port.stderr


# --- scan --------------------------------------------------------------------------------------


def test_scan_tcp_finds_every_unit_and_asks_for_identification() -> None:
    scenario = load_scenario("urban-lifeline")  # units 1, 3, 7, 11, 21
    with tcp_sim(scenario, 10.0) as (_sim, url):
        args = ["--ids", "1-12", "--timeout", "0.1", "--baud", "9600", "--json"]
        result = invoke("scan", "--port", url, *args)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    found = {d["device_id"]: d for d in data["devices"]}
    assert sorted(found) == [1, 3, 7, 11]
    # gas-detector and elevator-monitor have no holding registers: the exception still counts
    assert (found[1]["reply"], found[3]["reply"], found[7]["reply"]) == (
        "exception",
        "exception",
        "data",
    )
    assert all(d["baud"] is None for d in found.values())
    assert found[7]["identity_error"] == "FC43/MEI14 answered without objects 0-2"
    assert "scanning tcp://127.0.0.1" in result.stderr and "4 device(s) answered" in result.stderr
    assert "--baud applies to serial lines only" in result.stderr


def test_scan_reads_device_identification() -> None:
    identity = ModbusDeviceIdentification(
        info_name={"VendorName": "Acme", "ProductCode": "RL-80", "MajorMinorRevision": "2.4.1"}
    )
    device = SimDevice(5, simdata=[SimData(0, values=[0] * 4, datatype=DataType.REGISTERS)])

    async def start() -> ModbusTcpServer:  # pymodbus binds its transport to the running loop
        server = ModbusTcpServer([device], address=("127.0.0.1", 0), identity=identity)
        await server.serve_forever(background=True)
        return server

    with background_loop() as loop:
        server = run_in(loop, start())
        try:
            port = cast(asyncio.Server, server.transport).sockets[0].getsockname()[1]
            result = invoke("scan", "--port", f"tcp://127.0.0.1:{port}", "--ids", "5")
        finally:
            run_in(loop, server.shutdown())
    assert result.exit_code == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.split() == ["baud", "id", "reply", "vendor", "product", "revision", "note"]
    assert row.split() == ["-", "5", "data", "Acme", "RL-80", "2.4.1"]


def test_scan_rtu_at_two_baud_rates() -> None:
    scenario = parse_yaml_model(
        "name: line\nduration: 9\ndevices:\n"
        "  - {id: gas, profile: gas-detector, device_id: 2, values: {sensor_state: normal}}\n"
        "  - {id: river, profile: water-level-radar, device_id: 7, values: {level: 1.5}}\n"
        "  - {id: rain, profile: rain-gauge, device_id: 9, values: {rain: 0}}\n",
        Scenario,
    )
    with rtu_sim(scenario, 1.0) as (sim, url):
        sim.faults[9] = RtuFault("garbage")
        result = invoke(
            "scan",
            "--port",
            url,
            "--baud",
            "9600,19200",
            "--ids",
            "1-8,9",
            "--timeout",
            "0.05",
            "--json",
        )
    assert result.exit_code == 0, result.stderr
    devices = json.loads(result.stdout)["devices"]
    seen = [(d["baud"], d["device_id"], d["reply"]) for d in devices]
    expected = [(2, "exception"), (7, "data"), (9, "garbled")]
    assert seen == [(b, i, r) for b in (9600, 19200) for i, r in expected]
    exception = next(d for d in devices if d["device_id"] == 2)
    assert exception["detail"] == "exception code 2"  # illegal data address: no holding table
    # The RTU simulator does not implement FC43: an exception reply, reported, not fatal.
    assert exception["identity_error"] == "not supported (exception code 1)"
    assert (
        "scanning" in result.stderr and "9600 8N2" in result.stderr and "19200 8N2" in result.stderr
    )


def test_scan_with_nobody_there_exits_3_and_a_dead_port_exits_1() -> None:
    scenario = load_scenario("urban-lifeline")
    with rtu_sim(scenario, 1.0) as (_sim, url):
        empty = invoke("scan", "--port", url, "--ids", "100-104", "--timeout", "0.02")
    assert empty.exit_code == EXIT_NOT_FOUND and empty.stdout == ""
    assert "0 device(s) answered" in empty.stderr
    dead = invoke("scan", "--port", "/dev/no-such-tty", "--ids", "1")
    assert dead.exit_code == EXIT_FAILED and "scan failed: connection" in dead.stderr
    usage = invoke("scan", "--port", "/dev/ttyS0", "--ids", "0-3")
    assert usage.exit_code == EXIT_USAGE and "1-247" in usage.stderr
