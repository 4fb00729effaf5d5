"""`sentryline sim run` with devices of every transport, and the five-families scenario.

The simulator runs as its own process (as scripts and the demo run it) and is read over the
real protocols: Modbus TCP with pymodbus, Modbus RTU on its pty with the gateway's RTU
endpoint, CoAP GET and Observe with aiocoap, the serial line with the gateway's LineSensor.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from cloud_bridge.senml import Record
from drivers.ble.profile import BleProfile
from drivers.ble.scanner import BthomeScanner
from drivers.coap.client import CoapObserver, CoapPoller, open_context
from drivers.coap.payload import Blob
from drivers.coap.profile import CoapProfile
from drivers.contract import read_device
from drivers.modbus.planner import plan_reads
from drivers.modbus.profile import load_profile
from drivers.modbus.rtu import ModbusRtuEndpoint
from drivers.registry import load_source_profile
from drivers.serial import SerialSettings
from drivers.serial.line_sensor import LineSensor
from drivers.serial.profile import SerialLineProfile
from drivers.sim.mixed import MixedSimulator
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.source_scenario import (
    SimScenario,
    load_sim_scenario,
    sample_rng,
    values_at,
)
from provisioning.configfile import ConfigError, parse_yaml_model

REPO = Path(__file__).resolve().parents[1]


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


async def test_sim_run_serves_every_transport_of_five_families() -> None:
    proc = cli("run", "five-families", "--port", "0", "--speed", "4", "--loop", "--seed", "5")
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        ready = json.loads(line)
        assert ready["event"] == "ready" and ready["host"] == "127.0.0.1"
        assert ready["devices"] == [
            "tunnel-gas",
            "tower-lift",
            "rain-roof",
            "culvert-3",
            "wall-k12",
            "cam-plantroom",
        ]
        assert set(ready["coap"]) == {"wall-k12", "cam-plantroom"}
        assert ready["coap"]["cam-plantroom"].endswith("/thermal")
        async with asyncio.timeout(30):
            await _modbus_tcp(ready["port"])
            await _modbus_rtu(ready["modbus_rtu"])
            await _coap_get(ready["coap"]["wall-k12"])
            await _coap_observe(ready["coap"]["cam-plantroom"])
            await _serial(ready["serial"]["culvert-3"])
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(proc.communicate, timeout=10)
        assert proc.returncode == 0, err
        assert out == ""  # nothing after the ready line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _modbus_tcp(port: int) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    try:
        assert await client.connect()
        for unit in (1, 3):  # the gas detector and the lift
            response = await client.read_input_registers(0, count=4, device_id=unit)
            assert not response.isError(), (unit, response)
    finally:
        client.close()


async def _modbus_rtu(line: dict[str, object]) -> None:
    assert line["devices"] == {"rain-roof": 12}
    endpoint = ModbusRtuEndpoint(
        str(line["path"]),
        int(line["baudrate"]),
        "N",
        int(line["stopbits"]),
        1.0,  # type: ignore[call-overload]
    )
    try:
        values = await read_device(endpoint, plan_reads(load_profile("rain-gauge")), 12)
    finally:
        await endpoint.close()
    assert 0 <= float(values["rain"]) <= 60  # type: ignore[arg-type]


async def _coap_get(uri: str) -> None:
    profile = load_source_profile("crack-meter-coap")
    assert isinstance(profile, CoapProfile)
    records: list[Record] = []
    ctx = await open_context()
    try:
        poller = CoapPoller(
            "wall-k12",
            uri,
            1.0,
            records.extend,
            decoder=profile.decoder(),
            accept=profile.accept_format,
            context=ctx,
            timeout=2.0,
        )
        assert await poller.poll_once(ctx), poller.counters.last_error
    finally:
        await ctx.shutdown()
    got = {r.quantity: r for r in records}
    assert set(got) == set(profile.point_names)
    assert got["crack"].unit == "mm" and 0.4 < float(got["crack"].value) < 2.0  # type: ignore[arg-type]


async def _coap_observe(uri: str) -> None:
    profile = load_source_profile("thermal-camera")
    assert isinstance(profile, CoapProfile) and profile.frame is not None
    blobs: list[Blob] = []
    notified = asyncio.Event()

    def sink(_records: list[Record]) -> None:
        if len(blobs) >= 3:
            notified.set()

    ctx = await open_context()
    observer = CoapObserver(
        "cam",
        uri,
        sink,
        decoder=profile.decoder(),
        accept=profile.accept_format,
        context=ctx,
        blob_sink=blobs.extend,
    )
    task = asyncio.create_task(observer.observe_once(ctx))
    try:
        await asyncio.wait_for(notified.wait(), 10)  # the first response and 2 notifications
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await ctx.shutdown()
    assert observer.counters.registrations == 1 and observer.counters.notifications >= 2
    rows = profile.frame.decode(blobs[-1].data)
    assert (len(rows), len(rows[0])) == (24, 32)


async def _serial(line: dict[str, object]) -> None:
    profile = load_source_profile("water-level-serial")
    assert isinstance(profile, SerialLineProfile)
    records: list[Record] = []
    arrived = asyncio.Event()

    def sink(batch: list[Record]) -> None:
        records.extend(batch)
        if {"level", "rain", "rain_acc"} <= {r.quantity for r in records}:
            arrived.set()

    settings = SerialSettings(int(line["baudrate"]), "N", 1)  # type: ignore[call-overload]
    sensor = LineSensor(
        "culvert-3",
        str(line["path"]),
        settings,
        sink,
        readings=profile.readings(),
        decoder=profile.frame_decoder(),
    )
    task = asyncio.create_task(sensor.run())
    try:
        await asyncio.wait_for(arrived.wait(), 10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    level = next(r for r in records if r.quantity == "level")
    assert level.unit == "m" and 0.3 < float(level.value) < 1.9  # type: ignore[arg-type]
    assert sensor.decoder_stats.total_rejected_bytes == 0


def test_five_families_tells_each_story() -> None:
    """Every family's episode is in the scenario, at the times the header says."""
    scenario = load_sim_scenario("five-families")
    tcp, rtu = scenario.tcp, scenario.rtu
    assert tcp is not None and rtu is not None
    modbus = ModbusSimulator(tcp, seed=0, noise=False)
    gas = modbus.values(tcp.device("tunnel-gas"), 62.0)
    assert gas["alarm1"] is True and float(gas["ch4_lel"]) >= 0.25  # type: ignore[arg-type]
    lift = tcp.device("tower-lift")
    riding, jolt, stuck = (modbus.values(lift, t) for t in (20.0, 25.2, 60.0))
    assert float(riding["speed"]) == pytest.approx(1.6)  # type: ignore[arg-type]
    # A 1.75 g jolt over gravity, inside the accelerometer's ±30 m/s² (the quality check
    # would fail a reading at the register's limit, and the lift model would never see it).
    assert 25 < float(jolt["acc_z"]) <= 30  # type: ignore[arg-type]
    assert stuck["speed"] == 0 and stuck["in_zone"] is False and stuck["occupied"] is True
    assert stuck["alarm_btn"] is True and stuck["door_open"] is False
    rain = ModbusSimulator(rtu, seed=0, noise=False).values(rtu.device("rain-roof"), 30.0)
    assert float(rain["rain"]) >= 20  # type: ignore[arg-type]

    def source(device_id: str, t: float) -> dict[str, object]:
        device = next(d for d in scenario.sources if d.id == device_id)
        return values_at(device, t, sample_rng(0, device_id, t))  # type: ignore[return-value]

    assert float(source("culvert-3", 30.0)["rain"]) >= 20  # type: ignore[arg-type]
    assert source("culvert-3", 72.0)["fault"] is True
    assert float(source("wall-k12", 75.0)["crack"]) > 1.8  # type: ignore[arg-type]
    camera = [source("cam-plantroom", t) for t in (19.0, 50.0, 58.0, 85.0)]
    assert [float(c["t_max"]) >= 54 for c in camera] == [False, False, True, True]  # type: ignore[arg-type]
    assert 30 < float(camera[0]["t_max"]) < 36 and float(camera[3]["t_max"]) >= 100  # type: ignore[arg-type]


def test_existing_scenarios_stay_valid_and_mixed_ones_report_file_line() -> None:
    assert load_sim_scenario("gas-leak").device_ids() == ["gas-1", "gas-2"]
    assert load_sim_scenario("urban-lifeline").tcp is not None
    # a driver's own scenario of another transport is servable as it is
    camera = load_sim_scenario(REPO / "hardware/sensors/thermal-camera/scenario.yaml")
    assert camera.device_ids() == ["cam-plantroom"] and camera.tcp is None
    text = textwrap.dedent(
        """\
        name: mixed
        duration: 10
        devices:
          - {id: a, profile: gas-detector, device_id: 1}
        sources:
          - {id: a, profile: thermal-camera, frame: {background: {baseline: 20}}}
          - {id: b, profile: gas-detector}
          - id: c
            profile: water-level-serial
            signals: {depth: {baseline: 1}}
            faults: [{at: 1, until: 2, kind: slow, delay: 0.1}]
        """
    )
    with pytest.raises(ConfigError) as info:
        parse_yaml_model(text, SimScenario, "mixed.yaml")
    assert str(info.value).splitlines() == [
        "mixed.yaml:7:22: sources[1].profile: 'gas-detector' is a modbus-tcp driver: list it "
        "under devices (Modbus TCP) or rtu_devices (Modbus RTU) (got 'gas-detector')",
        "mixed.yaml:10:22: sources[2].signals.depth: profile 'water-level-serial' has no point "
        "'depth' (level, rain, rain_acc, battery_v, fault) (got 'depth')",
        "mixed.yaml:11:38: sources[2].faults[0].kind: a serial-line device cannot show a slow "
        "fault (it can: garbage, silent, spike, stuck) (got 'slow')",
    ]
    valid = "\n".join(text.splitlines()[:6]) + "\n"  # the duplicate id, nothing else wrong
    with pytest.raises(ConfigError) as info:
        parse_yaml_model(valid, SimScenario, "mixed.yaml")
    assert str(info.value) == "mixed.yaml:6:10: sources[0].id: duplicate id (devices[0]) (got 'a')"


async def test_ble_devices_advertise_in_process_through_the_simulated_radio(tmp_path: Path) -> None:
    path = tmp_path / "ble.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: tags
            duration: 30
            sources:
              - id: tag-1
                profile: ble-tilt-tag
                interval: 0.2
                signals:
                  tilt_x: {baseline: 0.01}
                  tilt_y: {baseline: -0.02}
                  temperature: {baseline: 21.5}
                  battery: {baseline: 90}
            """
        )
    )
    sim = MixedSimulator(load_sim_scenario(path))
    profile = load_source_profile("ble-tilt-tag")
    assert isinstance(profile, BleProfile)
    records: list[Record] = []
    got_two = asyncio.Event()

    def sink(batch: list[Record]) -> None:
        records.extend(profile.map_records(batch))
        if len(records) >= 8:
            got_two.set()

    device = sim.ble["tag-1"].device
    scanner = BthomeScanner(
        sim.ble_source, sink, devices=[profile.device_config("tag-1", mac=device.address)]
    )
    await sim.start()
    try:
        async with asyncio.TaskGroup() as group:
            runner = group.create_task(sim.run(speed=1.0))
            scanning = group.create_task(scanner.run())
            await asyncio.wait_for(got_two.wait(), 5)
            runner.cancel()
            scanning.cancel()
    finally:
        await sim.stop()
    values = {r.quantity: r.value for r in records[:4]}
    assert values["temperature"] == 21.5 and values["battery"] == 90
    assert values["tilt_x"] == pytest.approx(0.01, abs=0.0009)  # 0.1 deg resolution
    assert scanner.counters["tag-1"].packets >= 2 and scanner.counters["tag-1"].errors == {}
