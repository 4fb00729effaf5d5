"""The driver contract, for every registered driver, and proof that each check can fail.

Parametrised over list_drivers(): a driver added as a folder under hardware/sensors, on
SENTRYLINE_DRIVER_PATH or by an installed package is tested here without touching this
file. A broken driver folder makes collection fail loudly (list_drivers is strict).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest

from drivers import contract
from drivers.ble.profile import BleProfile
from drivers.coap.profile import CoapProfile
from drivers.contract import (
    KNOWN_UNITS,
    ContractFailure,
    check_decoder,
    check_faults,
    check_manifest,
    check_plan,
    check_ranges,
    check_scenario,
    check_senml,
    check_wire,
    minimum_requests,
    mismatches,
    read_device,
    sample_times,
    serve,
)
from drivers.modbus.planner import ReadRequest, plan_reads
from drivers.modbus.profile import DeviceProfile
from drivers.registry import DRIVER_PATH_ENV, DriverInfo, get_driver, list_drivers
from drivers.serial.profile import SerialLineProfile
from drivers.sim import ble_sim, coap_sim, modbus_server, serial_sim
from drivers.sim.scenario import Scenario, load_scenario, silent_at, wire_fault_at
from drivers.sim.source_scenario import SourceScenario
from drivers.source_contract import serve_source
from provisioning.configfile import ConfigError, parse_yaml_model

DRIVERS = list_drivers()
MODBUS = [d for d in DRIVERS if d.is_modbus]
WIRE_BUDGET_S = 60  # a whole wire or fault check; each read has its own short timeout


@pytest.fixture(params=DRIVERS, ids=[d.name for d in DRIVERS])
def driver(request: pytest.FixtureRequest) -> DriverInfo:
    return request.param


@pytest.fixture(params=MODBUS, ids=[d.name for d in MODBUS])
def modbus_driver(request: pytest.FixtureRequest) -> DriverInfo:
    return request.param


def test_the_five_modbus_drivers_are_registered() -> None:
    names = {d.name for d in DRIVERS}
    assert {
        "gas-detector",
        "water-level-radar",
        "rain-gauge",
        "elevator-monitor",
        "displacement-monitor",
    } <= names
    assert {"gas", "water", "elevator", "displacement"} <= {d.family for d in DRIVERS}


# --- the contract, per driver ------------------------------------------------------------------


def test_manifest_and_profile_load(driver: DriverInfo) -> None:
    profile = check_manifest(driver)
    assert (profile.name, profile.family, profile.transport) == (
        driver.name,
        driver.family,
        driver.transport,
    )


def test_planner_reaches_the_minimum(modbus_driver: DriverInfo) -> None:
    profile = check_manifest(modbus_driver)
    assert isinstance(profile, DeviceProfile)
    plan = check_plan(profile)
    assert len(plan) == minimum_requests(profile) <= len(profile.points)


def test_points_are_senml(driver: DriverInfo) -> None:
    check_senml(check_manifest(driver))


def test_numeric_points_have_ranges_that_fit(driver: DriverInfo) -> None:
    check_ranges(check_manifest(driver))


def test_scenario_covers_the_profile(driver: DriverInfo) -> None:
    profile = check_manifest(driver)
    scenario = check_scenario(driver, profile)
    check_decoder(driver, profile, scenario)


async def test_values_read_back_over_the_wire(driver: DriverInfo) -> None:
    profile = check_manifest(driver)
    scenario = check_scenario(driver, profile)
    polls = await asyncio.wait_for(check_wire(driver, profile, scenario), WIRE_BUDGET_S)
    assert polls >= len(scenario.devices) * 4  # the sample times outside faults


async def test_faults_show_on_the_wire(driver: DriverInfo) -> None:
    profile = check_manifest(driver)
    scenario = check_scenario(driver, profile)
    seen = await asyncio.wait_for(check_faults(driver, profile, scenario), WIRE_BUDGET_S)
    assert seen == sum(len(d.faults) for d in scenario.devices) > 0


# --- the checks can fail ---------------------------------------------------------------------


def profile(points: list[dict[str, object]], **modbus: object) -> DeviceProfile:
    data = {"name": "t", "family": "other", "transport": "modbus-tcp", "modbus": modbus}
    return DeviceProfile.model_validate({**data, "points": points})


def test_minimum_requests_by_hand() -> None:
    regs = [{"name": f"p{i}", "table": "holding", "address": a} for i, a in enumerate([0, 3, 20])]
    assert minimum_requests(profile(regs, max_gap=2)) == 2  # 0 and 3 share (gap 2), 20 alone
    assert minimum_requests(profile(regs, max_gap=1)) == 3
    assert minimum_requests(profile(regs, max_gap=20)) == 1
    assert minimum_requests(profile(regs, max_gap=20, max_registers=4)) == 2
    assert minimum_requests(profile(regs, block_reads=False)) == 3
    bits = [{"name": f"b{i}", "table": "input", "address": 7, "bit": i} for i in range(3)]
    assert minimum_requests(profile(bits, block_reads=False)) == 1  # one register
    floats = [
        {"name": "f0", "table": "input", "address": 0, "type": "float64"},
        {"name": "f1", "table": "input", "address": 4, "type": "float64"},
        {"name": "c", "table": "coil", "address": 0},
    ]
    assert minimum_requests(profile(floats, max_registers=7)) == 3  # 8 registers > 7
    assert minimum_requests(profile(floats, max_registers=8)) == 2


def test_senml_check_rejects_bad_units_and_kinds() -> None:
    with pytest.raises(ContractFailure, match="'%LEL' is not a registered SenML unit"):
        check_senml(profile([{"name": "x", "table": "input", "address": 0, "unit": "%LEL"}]))
    with pytest.raises(ContractFailure, match="needs a unit"):
        check_senml(profile([{"name": "x", "table": "input", "address": 0}]))
    with pytest.raises(ContractFailure, match=r"level: the suggested name means 'm', got 'cm'"):
        check_senml(profile([{"name": "level", "table": "input", "address": 0, "unit": "cm"}]))
    with pytest.raises(ContractFailure, match="door_open: the suggested name means 'vb'"):
        check_senml(
            profile([{"name": "door_open", "table": "input", "address": 0, "unit": "count"}])
        )
    assert {"m", "mm/h", "m/s2", "rad", "Cel", "count", "/", "ppm"} <= KNOWN_UNITS


def test_range_check_rejects_missing_and_unencodable_ranges() -> None:
    with pytest.raises(ContractFailure, match="without range"):
        check_ranges(profile([{"name": "x", "table": "input", "address": 0, "unit": "m"}]))
    too_wide = {"name": "x", "table": "input", "address": 0, "scale": 0.1, "unit": "m"}
    with pytest.raises(ContractFailure, match=r"uint16 holds 0\.\.65535"):
        check_ranges(profile([{**too_wide, "range": [0, 10000]}]))  # raw 100000
    check_ranges(profile([{**too_wide, "range": [0, 6000]}]))


def test_mismatch_tolerance_is_the_encoding_rounding() -> None:
    p = profile(
        [
            {"name": "i", "table": "input", "address": 0, "scale": 0.1, "unit": "m"},
            {"name": "f", "table": "input", "address": 1, "type": "float32", "unit": "m"},
            {"name": "e", "table": "input", "address": 3, "enum": {0: "a", 1: "b"}},
        ]
    )
    assert mismatches(p, {"i": 1.2, "f": 1.0000001, "e": "b"}, {"i": 1.24, "f": 1.0, "e": 1}) == []
    wrong = mismatches(p, {"i": 1.2, "f": 1.001, "e": "a"}, {"i": 1.26, "f": 1.0, "e": "b"})
    assert [w.split(":")[0] for w in wrong] == ["i", "f", "e"]


def copy_driver(name: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> DriverInfo:
    """A registered copy of a built-in driver under another name, to break on purpose."""
    new = f"{name}-copy"
    folder = root / new
    shutil.copytree(get_driver(name).folder, folder)
    for file in ("driver.yaml", "profile.yaml", "scenario.yaml"):
        path = folder / file
        path.write_text(path.read_text().replace(name, new))
    monkeypatch.setenv(DRIVER_PATH_ENV, str(root))
    return get_driver(new)


async def test_wire_check_fails_when_the_registers_cannot_carry_the_scenario(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = copy_driver("gas-detector", tmp_path, monkeypatch)
    assert driver.source == "path"
    # ch4 in ppm squeezed into an int16 while the scenario's methane peaks at 45,000 ppm.
    text = driver.profile_path.read_text()
    driver.profile_path.write_text(
        text.replace("    type: uint32\n    word_order: big\n", "    type: int16\n")
    )
    scenario_text = driver.scenario_path.read_text()
    driver.scenario_path.write_text(scenario_text.replace("ramp_to: 0.30", "ramp_to: 0.90"))
    profile = check_manifest(driver)
    with pytest.raises(ContractFailure, match="int16 holds"):
        check_ranges(profile)
    scenario = check_scenario(driver, profile)
    with pytest.raises(ContractFailure, match=r"ch4: read 32767, scenario says 4"):
        await asyncio.wait_for(check_wire(driver, profile, scenario), WIRE_BUDGET_S)


async def test_fault_check_fails_when_a_fault_does_not_show(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver = get_driver("gas-detector")
    profile = check_manifest(driver)
    scenario = check_scenario(driver, profile)
    # A simulator that never falls silent: the device answers where the scenario says it
    # must not, and the check says so.
    monkeypatch.setattr(modbus_server, "silent_at", lambda _device, _t: False)
    with pytest.raises(ContractFailure, match=r"\(silent\): the device answered"):
        await asyncio.wait_for(check_faults(driver, profile, scenario), WIRE_BUDGET_S)


def test_plan_check_fails_on_a_plan_above_the_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    gas = check_manifest(get_driver("gas-detector"))
    assert isinstance(gas, DeviceProfile)
    check_plan(gas)

    def one_per_point(p: DeviceProfile) -> list[ReadRequest]:
        return [ReadRequest(x.table, x.address, x.register_count, (x,)) for x in p.points]

    monkeypatch.setattr(contract, "plan_reads", one_per_point)
    with pytest.raises(ContractFailure, match="9 requests planned, 1 are enough"):
        check_plan(gas)


def test_scenario_check_wants_every_point_and_this_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = copy_driver("water-level-radar", tmp_path, monkeypatch)
    text = driver.scenario_path.read_text()
    driver.scenario_path.write_text(text.replace("      fault: false\n", ""))
    with pytest.raises(ContractFailure, match=r"leaves \['fault'\] undefined"):
        check_scenario(driver, check_manifest(driver))
    other = "  - {id: other, profile: gas-detector, device_id: 9}\n"
    driver.scenario_path.write_text(text.replace("devices:\n", "devices:\n" + other))
    with pytest.raises(ContractFailure, match="device other uses profile 'gas-detector'"):
        check_scenario(driver, check_manifest(driver))


def test_manifest_check_reports_a_profile_that_disagrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = copy_driver("rain-gauge", tmp_path, monkeypatch)
    text = driver.profile_path.read_text()
    driver.profile_path.write_text(text.replace("family: water", "family: gas"))
    with pytest.raises(ContractFailure) as info:
        check_manifest(driver)
    message = str(info.value)
    assert f"{driver.profile_path}:" in message and "family: must be 'water'" in message


def test_sample_times_include_every_value_fault() -> None:
    scenario = get_driver("elevator-monitor").scenario()
    assert isinstance(scenario, Scenario)
    times = sample_times(scenario)
    for fault in scenario.devices[0].faults:
        if fault.kind in ("stuck", "spike"):
            assert any(fault.active(t) for t in times), fault
    assert times == sorted(times) and times[0] == 0.0


# --- scenario wire faults and the all-families scenario -----------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        "{at: 1, until: 2, kind: garbage}",
        "{at: 1, until: 2, kind: slow, delay: 0.2}",
        "{at: 1, until: 2, kind: dropout, rate: 0.5}",
    ],
)
def test_wire_faults_apply_to_tcp_devices_too(fault: str) -> None:
    # Both simulators act them out (tests/test_modbus_faults.py), so a modbus-tcp device
    # may carry them.
    text = (
        "name: w\nduration: 5\ndevices:\n  - id: g\n    profile: gas-detector\n"
        f"    device_id: 1\n    faults:\n      - {fault}\n"
    )
    scenario = parse_yaml_model(text, Scenario, "w.yaml")
    assert wire_fault_at(scenario.devices[0], 1.5) is not None


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("{at: 1, kind: slow}", "delay (seconds) goes with kind: slow"),
        ("{at: 1, kind: silent, delay: 1}", "delay (seconds) goes with kind: slow"),
        ("{at: 1, kind: garbage, point: level}", "hits the whole device"),
    ],
)
def test_wire_fault_fields(fault: str, message: str) -> None:
    text = (
        "name: w\nduration: 5\ndevices:\n  - id: r\n    profile: water-level-radar\n"
        f"    device_id: 1\n    faults:\n      - {fault}\n"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_yaml_model(text, Scenario, "w.yaml")


def test_wire_fault_at_follows_the_windows() -> None:
    scenario = get_driver("water-level-radar").scenario()
    assert isinstance(scenario, Scenario)
    device = scenario.devices[0]
    assert wire_fault_at(device, 10.0) is None
    garbage = wire_fault_at(device, 63.0)
    slow = wire_fault_at(device, 70.0)
    assert garbage is not None and garbage.kind == "garbage"
    assert slow is not None and (slow.kind, slow.delay) == ("slow", 0.3)
    assert wire_fault_at(device, 74.0) is None  # until is exclusive


async def test_the_lifeline_scenario_reads_back_over_one_tcp_server() -> None:
    scenario = load_scenario("urban-lifeline")
    async with serve(scenario, "modbus-tcp") as rig:
        for t in (0.0, 40.0, 62.0, 90.0):
            rig.set_time(t)
            for device in scenario.devices:
                if silent_at(device, t):
                    continue
                profile = device.profile_model
                got = await read_device(rig.endpoint, plan_reads(profile), device.device_id)
                assert mismatches(profile, got, rig.values(device, t)) == [], (t, device.id)
    # the story holds: the tunnel detector alarms at 62 s, the river is above 3.0 m at 90 s
    gas = rig.values(scenario.device("tunnel-gas"), 62.0)
    river = rig.values(scenario.device("river-bridge"), 90.0)
    assert gas["alarm1"] is True and gas["alarm2"] is False
    assert river["level_alarm"] is True


# --- the other transports: the checks can fail there too ----------------------------------------


def test_drivers_of_every_transport_run_the_contract() -> None:
    transports = {d.transport for d in DRIVERS}
    assert {"modbus-tcp", "modbus-rtu", "coap", "serial-line", "ble-bthome"} <= transports


async def test_coap_wire_check_fails_when_a_value_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    driver = get_driver("crack-meter-coap")
    profile = check_manifest(driver)
    scenario = check_scenario(driver, profile)
    real = coap_sim.ScenarioCoapDevice.reading

    def off_by_a_tenth(self: coap_sim.ScenarioCoapDevice, t: float):  # type: ignore[no-untyped-def]
        values, frame = real(self, t)
        return {**values, "crack": float(values["crack"]) + 0.1}, frame

    monkeypatch.setattr(coap_sim.ScenarioCoapDevice, "reading", off_by_a_tenth)
    with pytest.raises(ContractFailure, match=r"coap read-back:\n  t=0 wall-k12: crack: read "):
        await asyncio.wait_for(check_wire(driver, profile, scenario), WIRE_BUDGET_S)


async def test_coap_wire_check_compares_the_thermal_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    driver = get_driver("thermal-camera")
    profile = check_manifest(driver)
    scenario = check_scenario(driver, profile)
    real = coap_sim.encode_frame_i16

    def one_hot_pixel(values: list[float], scale: float = 0.01) -> bytes:
        return real([values[0] + 5.0, *values[1:]], scale)

    monkeypatch.setattr(coap_sim, "encode_frame_i16", one_hot_pixel)
    with pytest.raises(ContractFailure, match=r"frame: 1 pixels differ, first \(0, 0\)"):
        await asyncio.wait_for(check_wire(driver, profile, scenario), WIRE_BUDGET_S)


async def test_serial_wire_check_fails_when_a_sentence_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver = get_driver("water-level-serial")
    profile = check_manifest(driver)
    scenario = check_scenario(driver, profile)
    real = serial_sim.encode_frames

    def without_rain(profile: SerialLineProfile, values: dict[str, object]) -> list[bytes]:
        return [f for f in real(profile, values) if not f.startswith(b"$RG")]  # type: ignore[arg-type]

    monkeypatch.setattr(serial_sim, "encode_frames", without_rain)
    with pytest.raises(ContractFailure, match=r"culvert-3: rain: not read"):
        await asyncio.wait_for(check_wire(driver, profile, scenario), WIRE_BUDGET_S)


async def test_bthome_wire_check_fails_when_the_bytes_disagree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver = get_driver("ble-tilt-tag")
    profile = check_manifest(driver)
    scenario = check_scenario(driver, profile)
    real = ble_sim.encode_bthome

    def cooler(profile: BleProfile, values: dict[str, object], packet_id: int) -> bytes:
        shifted = {**values, "temperature": float(values["temperature"]) - 1.0}  # type: ignore[arg-type]
        return real(profile, shifted, packet_id)  # type: ignore[arg-type]

    monkeypatch.setattr(ble_sim, "encode_bthome", cooler)
    with pytest.raises(
        ContractFailure, match=r"t=0 bearing-p4: temperature: read 22\.93, scenario says 23\.93"
    ):
        await asyncio.wait_for(check_wire(driver, profile, scenario), WIRE_BUDGET_S)


@pytest.mark.parametrize(
    ("name", "module"),
    [("thermal-camera", coap_sim), ("water-level-serial", serial_sim), ("ble-tilt-tag", ble_sim)],
)
async def test_source_fault_check_fails_when_silence_does_not_show(
    name: str, module: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = get_driver(name)
    profile = check_manifest(driver)
    scenario = check_scenario(driver, profile)
    monkeypatch.setattr(module, "silent_at", lambda _device, _t: False)
    with pytest.raises(ContractFailure, match=r"\(silent\): \d+ readings came through"):
        await asyncio.wait_for(check_faults(driver, profile, scenario), WIRE_BUDGET_S)


async def test_the_thermal_scenario_tells_its_story_over_coap() -> None:
    """Person passing, hotspot, fire: what the gateway reads through CoAP at each stage."""
    driver = get_driver("thermal-camera")
    profile = driver.profile()
    scenario = driver.scenario()
    assert isinstance(profile, CoapProfile) and isinstance(scenario, SourceScenario)
    device = scenario.devices[0]
    seen: dict[float, dict[str, object]] = {}
    async with serve_source(scenario, profile) as rig:
        for t in (5.0, 19.0, 50.0, 58.0, 88.0):
            read = await rig.read(device, t)
            seen[t] = {r.quantity: r.value for r in read.records}
            assert len(read.blobs) == 1
    assert float(seen[5.0]["t_max"]) < 24 and seen[5.0]["hot_px"] == 0  # type: ignore[arg-type]
    person = seen[19.0]
    assert 30 < float(person["t_max"]) < 36 and int(person["hot_px"]) > 0  # type: ignore[arg-type]
    assert 40 < float(seen[50.0]["t_max"]) < 54  # type: ignore[arg-type]
    assert float(seen[58.0]["t_max"]) >= 54  # yellow: EN 54-5 A1 static response
    fire = seen[88.0]
    assert float(fire["t_max"]) >= 200 and int(fire["hot_px"]) > 50  # type: ignore[arg-type]
    assert abs(float(fire["t_bg"]) - 23) < 0.5  # the median stays the room  # type: ignore[arg-type]


GATT_PROFILE = """\
name: env-node
family: other
transport: ble-gatt
gatt:
  service: 181a
  standard: [2a6e, 2a19]
  characteristics:
    - uuid: ff01
      format: "<hB"
      fields:
        - {quantity: strain, scale: 0.1}
        - {quantity: door, scale: 1}
points:
  - {name: temperature, unit: Cel, range: [-40, 85]}
  - {name: battery, unit: "%EL", range: [0, 100]}
  - {name: strain, unit: "/", range: [-1000, 1000]}
  - {name: door, unit: count, range: [0, 255]}
"""

GATT_SCENARIO = """\
name: env-node-contract
duration: 60
devices:
  - id: env-1
    profile: env-node
    signals:
      temperature: {baseline: 21, noise: 0.1, phases: [{at: 10, ramp_to: 30, over: 30}]}
      battery: {baseline: 77}
      strain: {baseline: 12.3, noise: 0.5}
      door: {baseline: 3}
    faults:
      - {at: 20, kind: spike, point: temperature, value: 80}
      - {at: 45, until: 48, kind: silent}
      - {at: 50, until: 52, kind: garbage}
"""


def gatt_driver(root: Path, monkeypatch: pytest.MonkeyPatch) -> DriverInfo:
    folder = root / "env-node"
    folder.mkdir()
    (folder / "driver.yaml").write_text(
        "name: env-node\nfamily: other\ntransport: ble-gatt\nversion: 0.1.0\n"
        "description: An environmental node with a strain input, over GATT notifications.\n"
    )
    (folder / "profile.yaml").write_text(GATT_PROFILE)
    (folder / "scenario.yaml").write_text(GATT_SCENARIO)
    (folder / "README.md").write_text("# env-node\n")
    monkeypatch.setenv(DRIVER_PATH_ENV, str(root))
    return get_driver("env-node")


async def test_a_gatt_driver_runs_the_contract_over_the_simulated_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = gatt_driver(tmp_path, monkeypatch)
    results = await contract.run_contract(driver)
    assert [(r.name, r.ok) for r in results if not r.ok] == []
    assert [r.detail for r in results if r.name in ("wire", "faults")] == [
        "8 polls compared",
        "3 faults seen",
    ]
    # garbage that is not garbage: the check notices
    monkeypatch.setattr(ble_sim, "wire_fault_at", lambda _device, _t: None)
    profile = check_manifest(driver)
    scenario = check_scenario(driver, profile)
    with pytest.raises(ContractFailure, match=r"\(garbage\): 4 readings came through"):
        await asyncio.wait_for(check_faults(driver, profile, scenario), WIRE_BUDGET_S)


def source_driver(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    transport: str,
    profile: str,
    devices: str,
) -> DriverInfo:
    """A driver folder on SENTRYLINE_DRIVER_PATH made of a profile and scenario devices."""
    folder = root / name
    folder.mkdir()
    (folder / "driver.yaml").write_text(
        f"name: {name}\nfamily: other\ntransport: {transport}\nversion: 0.1.0\n"
        "description: A test driver.\n"
    )
    (folder / "profile.yaml").write_text(
        f"name: {name}\nfamily: other\ntransport: {transport}\n{profile}"
    )
    (folder / "scenario.yaml").write_text(
        f"name: {name}-contract\nduration: 40\ndevices:\n  - id: {name}-1\n"
        f"    profile: {name}\n{devices}"
    )
    (folder / "README.md").write_text(f"# {name}\n")
    monkeypatch.setenv(DRIVER_PATH_ENV, str(root))
    return get_driver(name)


PLAIN_COAP = """\
path: /v1/state
payload: plain
plain:
  time: /ts
  time_scale: 0.001
  fields:
    - {pointer: /crack/mm, quantity: crack, unit: mm}
    - {pointer: /tilt/1, quantity: tilt_y, unit: rad, scale: 0.001}
    - {pointer: /ok, quantity: ok}
points:
  - {name: crack, unit: mm, range: [0, 100]}
  - {name: tilt_y, unit: rad, range: [-0.2, 0.2]}
  - {name: ok, kind: bool}
"""

BINARY_SERIAL = """\
framing: binary
serial: {baudrate: 115200}
binary:
  format: "<hHB"
  fields:
    - {quantity: level, scale: 0.001}
    - {quantity: battery_v, scale: 0.001}
    - {quantity: code, scale: 1}
points:
  - {name: level, unit: m, range: [0, 30]}
  - {name: battery_v, unit: V, range: [0, 16]}
  - {name: code, unit: count, range: [0, 255]}
"""

SIGNALS = """\
    signals:
      {a}: {{baseline: {x}, noise: {n}, phases: [{{at: 10, ramp_to: {y}, over: 20}}]}}
      {b}: {{baseline: {z}, noise: {m}}}
    faults:
      - {{at: 15, kind: spike, point: {a}, value: {y}}}
      - {{at: 25, until: 28, kind: silent}}
      - {{at: 30, until: 32, kind: garbage}}
      - {{at: 33, until: 36, kind: stuck}}
"""


@pytest.mark.parametrize(
    ("transport", "profile", "devices"),
    [
        (
            "coap",
            PLAIN_COAP,
            "    values: {ok: true}\n"
            + SIGNALS.format(a="crack", x=0.4, y=1.2, n=0.002, b="tilt_y", z=0.001, m=0.0001),
        ),
        (
            "serial-line",
            BINARY_SERIAL,
            "    interval: 0.5\n    values: {code: 7}\n"
            + SIGNALS.format(a="level", x=1.2, y=2.5, n=0.004, b="battery_v", z=12.4, m=0.02),
        ),
    ],
    ids=["coap-plain", "serial-binary"],
)
async def test_plain_coap_and_binary_serial_drivers_run_the_contract(
    transport: str, profile: str, devices: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = source_driver(tmp_path, monkeypatch, "probe", transport, profile, devices)
    results = await contract.run_contract(driver)
    assert [(r.name, r.detail) for r in results if not r.ok] == []
    assert [r.detail for r in results if r.name == "faults"] == ["4 faults seen"]
    wire = next(r.detail for r in results if r.name == "wire")
    assert int(wire.split()[0]) >= 6, wire  # every readable sample time was compared
