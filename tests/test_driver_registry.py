"""Driver discovery (folders, SENTRYLINE_DRIVER_PATH, entry points), errors, decoders,
the scaffold (which must pass the contract as written), `sentryline driver ...` and the
planner bench."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from typing import get_args

import pytest
import typer
from typer.testing import CliRunner

from bench.modbus_planner import format_table, planner_rows
from drivers.ble.profile import BleProfile
from drivers.cli import EXIT_FAILED, EXIT_USAGE, bench_app, driver_app
from drivers.coap.profile import CoapProfile
from drivers.contract import run_contract
from drivers.modbus.profile import DeviceProfile, available_profiles, hardware_dir, load_profile
from drivers.registry import (
    DRIVER_PATH_ENV,
    Family,
    RegistryError,
    builtin_dir,
    driver_transport,
    get_driver,
    list_drivers,
    load_driver,
    load_source_profile,
    profile_path,
    scan_drivers,
)
from drivers.scaffold import FAMILIES, ScaffoldError, scaffold_driver
from drivers.serial.profile import SerialLineProfile
from drivers.sim.scenario import load_scenario
from drivers.sim.source_scenario import SourceScenario
from provisioning.configfile import ConfigError

runner = CliRunner()


def cli() -> typer.Typer:
    """The sub-apps mounted the way provisioning/cli.py mounts them."""
    app = typer.Typer()
    app.add_typer(driver_app, name="driver")
    app.add_typer(bench_app, name="bench")
    return app


@pytest.fixture
def driver_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty SENTRYLINE_DRIVER_PATH directory for this test."""
    root = tmp_path / "drivers"
    root.mkdir()
    monkeypatch.setenv(DRIVER_PATH_ENV, str(root))
    return root


def copy_builtin(name: str, root: Path, new: str) -> Path:
    folder = root / new
    shutil.copytree(builtin_dir() / name, folder)
    for file in ("driver.yaml", "profile.yaml", "scenario.yaml"):
        path = folder / file
        path.write_text(path.read_text().replace(name, new))
    return folder


# --- discovery -------------------------------------------------------------------------------


def test_builtin_drivers_are_the_folders_of_hardware_sensors() -> None:
    drivers = list_drivers()
    assert [d.name for d in drivers] == sorted(d.name for d in drivers)
    for driver in drivers:
        assert driver.source == "built-in"
        assert driver.folder == builtin_dir() / driver.name
        assert driver.profile().name == driver.name
    transports = {d.name: d.transport for d in drivers}
    assert transports["water-level-radar"] == transports["rain-gauge"] == "modbus-rtu"
    assert transports["elevator-monitor"] == "modbus-tcp"


def test_manifest_families_are_the_profile_families() -> None:
    field = DeviceProfile.model_fields["family"].annotation
    assert get_args(Family) == get_args(field) == FAMILIES


def test_gas_detector_loads_by_name_flat_path_and_folder() -> None:
    by_name = load_profile("gas-detector")
    flat = load_profile(hardware_dir() / "sensors" / "gas-detector.yaml")
    folder = load_profile(builtin_dir() / "gas-detector")
    assert by_name == flat == folder == get_driver("gas-detector").profile()
    assert profile_path("gas-detector") == builtin_dir() / "gas-detector" / "profile.yaml"
    # the flat file stays for old configs and paths; it is the folder's profile, not a copy
    assert (builtin_dir() / "gas-detector.yaml").resolve() == profile_path("gas-detector")
    assert available_profiles().count("gas-detector") == 1


def test_every_driver_loads_by_name_for_scenarios_and_configs() -> None:
    for driver in list_drivers():
        assert load_source_profile(driver.name) == driver.profile()
        assert driver_transport(driver.name) == driver.transport
        if driver.is_modbus:
            assert load_profile(driver.name) == driver.profile()
    assert {"rain-gauge", "water-level-radar"} <= set(available_profiles())


def test_drivers_of_every_transport_are_built_in() -> None:
    transports = {d.name: (d.family, d.transport) for d in list_drivers()}
    assert transports["thermal-camera"] == ("thermal", "coap")
    assert transports["crack-meter-coap"] == ("displacement", "coap")
    assert transports["water-level-serial"] == ("water", "serial-line")
    assert transports["ble-tilt-tag"] == ("displacement", "ble-bthome")
    assert isinstance(get_driver("thermal-camera").profile(), CoapProfile)
    assert isinstance(get_driver("water-level-serial").profile(), SerialLineProfile)
    assert isinstance(get_driver("ble-tilt-tag").profile(), BleProfile)
    assert isinstance(get_driver("ble-tilt-tag").scenario(), SourceScenario)


def test_driver_own_test_file_is_found() -> None:
    rain = get_driver("rain-gauge")
    assert rain.test_path == rain.folder / "test_rain_gauge.py"
    assert get_driver("gas-detector").test_path is None


def test_path_drivers_are_registered_and_loaded_by_name(driver_path: Path) -> None:
    copy_builtin("water-level-radar", driver_path, "river-radar")
    driver = get_driver("river-radar")
    assert (driver.source, driver.folder) == ("path", driver_path / "river-radar")
    assert "river-radar" in [d.name for d in list_drivers()]
    assert load_profile("river-radar").name == "river-radar"
    assert driver.scenario().devices[0].profile == "river-radar"


def test_unknown_driver_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown driver; available: .*gas-detector"):
        get_driver("no-such-sensor")


# --- errors ----------------------------------------------------------------------------------


def test_manifest_errors_point_at_file_line_and_field(driver_path: Path) -> None:
    folder = copy_builtin("rain-gauge", driver_path, "bad-gauge")
    manifest = folder / "driver.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: one"))
    with pytest.raises(RegistryError) as info:
        list_drivers()
    text = str(info.value)
    assert f"{manifest}:4:10: version: String should match pattern" in text, text
    # the other drivers still load, and get_driver names the broken one's problem
    assert get_driver("gas-detector").name == "gas-detector"
    with pytest.raises(ConfigError, match="version"):
        get_driver("bad-gauge")


def test_manifest_name_must_be_the_folder_name(driver_path: Path) -> None:
    folder = copy_builtin("rain-gauge", driver_path, "gauge-b")
    (driver_path / "gauge-b").rename(driver_path / "gauge-c")
    with pytest.raises(ConfigError) as info:
        load_driver(driver_path / "gauge-c")
    assert str(info.value) == (
        f"{driver_path / 'gauge-c' / 'driver.yaml'}:1:7: name: "
        "must be 'gauge-c' (the folder's name) (got 'gauge-b')"
    )
    assert not folder.exists()


def test_a_driver_folder_needs_profile_scenario_and_readme(driver_path: Path) -> None:
    folder = copy_builtin("rain-gauge", driver_path, "gauge-d")
    (folder / "scenario.yaml").unlink()
    (folder / "README.md").unlink()
    with pytest.raises(ConfigError) as info:
        load_driver(folder)
    assert str(info.value).splitlines() == [
        f"{folder}: driver folder lacks scenario.yaml",
        f"{folder}: driver folder lacks README.md",
    ]
    (driver_path / "not-a-driver").mkdir()
    _, problems = scan_drivers()
    assert any("not-a-driver" in str(p) and "file not found" in str(p) for p in problems)


def test_duplicate_names_are_an_error(driver_path: Path) -> None:
    copy_builtin("gas-detector", driver_path, "gas-detector")
    with pytest.raises(RegistryError, match=r"already registered from .*hardware/sensors"):
        list_drivers()
    assert get_driver("gas-detector").source == "built-in"  # precedence: built-in first


def test_profile_that_disagrees_with_its_manifest(driver_path: Path) -> None:
    folder = copy_builtin("elevator-monitor", driver_path, "lift-b")
    profile = folder / "profile.yaml"
    text = profile.read_text()
    profile.write_text(text.replace("transport: modbus-tcp", "transport: modbus-rtu"))
    with pytest.raises(ConfigError) as info:
        get_driver("lift-b").profile()
    assert f"{profile}:11:12: transport: must be 'modbus-tcp'" in str(info.value)


# --- decoders --------------------------------------------------------------------------------

DECODER = """\
from collections.abc import Mapping


class Decoder:
    def __init__(self, profile):
        self.points = {p.name for p in profile.points}

    def decode(self, values: Mapping[str, object]) -> dict[str, object]:
        # The counter module reports rain in 0.1 mm/h; this firmware doubles it.
        return {**values, "rain": values["rain"] / 2}
"""


def test_a_folder_decoder_is_loaded_from_its_file(driver_path: Path) -> None:
    folder = copy_builtin("rain-gauge", driver_path, "gauge-dec")
    (folder / "decoder.py").write_text(DECODER)
    manifest = folder / "driver.yaml"
    manifest.write_text(manifest.read_text() + "decoder: decoder:Decoder\n")
    driver = get_driver("gauge-dec")
    decoder = driver.decoder(driver.profile())
    assert decoder is not None
    assert decoder.decode({"rain": 10.0, "tips": 3})["rain"] == 5.0
    results = asyncio.run(run_contract(driver))
    assert [r.name for r in results if not r.ok] == []


def test_decoder_problems_name_the_manifest(driver_path: Path) -> None:
    folder = copy_builtin("rain-gauge", driver_path, "gauge-bad")
    manifest = folder / "driver.yaml"
    manifest.write_text(manifest.read_text() + "decoder: decoder:Decoder\n")
    (folder / "decoder.py").write_text("raise RuntimeError('vendor SDK missing')\n")
    driver = get_driver("gauge-bad")
    with pytest.raises(ConfigError, match=r"decoder: cannot load decoder:Decoder: .*vendor SDK"):
        driver.decoder(driver.profile())
    (folder / "decoder.py").write_text("class Decoder:\n    def __init__(self, p): pass\n")
    with pytest.raises(ConfigError, match="has no decode"):
        driver.decoder(driver.profile())


# --- packages (entry points) -----------------------------------------------------------------


def install_fake_package(site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What `pip install acme-sentryline-flow` leaves behind: a package that is a driver
    folder, and dist-info declaring the entry point."""
    package = site / "acme_flow"
    shutil.copytree(builtin_dir() / "water-level-radar", package)
    for file in ("driver.yaml", "profile.yaml", "scenario.yaml"):
        path = package / file
        path.write_text(path.read_text().replace("water-level-radar", "acme-flow"))
    (package / "__init__.py").write_text('"""Acme flow gauge driver for Sentryline."""\n')
    (package / "decoder.py").write_text(
        "from acme_flow.units import HALF\n\n\nclass Decoder:\n"
        "    def __init__(self, profile):\n        pass\n\n"
        "    def decode(self, values):\n        return dict(values)\n"
    )
    (package / "units.py").write_text("HALF = 0.5\n")
    manifest = package / "driver.yaml"
    manifest.write_text(manifest.read_text() + "decoder: decoder:Decoder\n")
    dist = site / "acme_sentryline_flow-2.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: acme-sentryline-flow\nVersion: 2.1.0\n"
    )
    (dist / "entry_points.txt").write_text("[sentryline.drivers]\nacme-flow = acme_flow\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "acme_flow", raising=False)
    return package


def test_an_installed_package_registers_through_the_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = install_fake_package(tmp_path, monkeypatch)
    driver = get_driver("acme-flow")
    assert (driver.source, driver.package, driver.folder) == (
        "package",
        "acme-sentryline-flow",
        package,
    )
    assert load_profile("acme-flow").name == "acme-flow"  # scenarios and configs find it
    assert driver.decoder(driver.profile()) is not None  # imported as acme_flow.decoder
    results = asyncio.run(run_contract(driver))
    assert [(r.name, r.ok) for r in results if not r.ok] == []
    listed = json.loads(runner.invoke(cli(), ["driver", "list", "--json"]).stdout)
    entry = next(d for d in listed if d["name"] == "acme-flow")
    assert (entry["source"], entry["package"]) == ("package", "acme-sentryline-flow")
    table = runner.invoke(cli(), ["driver", "list"]).stdout.splitlines()
    row = "acme-flow water modbus-rtu 1.0.0 package (acme-sentryline-flow)"
    assert row.split() in [line.split() for line in table]


def test_a_broken_entry_point_is_reported_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = tmp_path / "broken_drv-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-drv\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sentryline.drivers]\nbroken = no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    drivers, problems = scan_drivers()
    assert "gas-detector" in [d.name for d in drivers]
    assert [str(p) for p in problems] == [
        "entry point broken = no_such_module_xyz (sentryline.drivers): cannot load: "
        "ModuleNotFoundError(\"No module named 'no_such_module_xyz'\")"
    ]
    result = runner.invoke(cli(), ["driver", "list"])
    assert result.exit_code == EXIT_USAGE
    assert "gas-detector" in result.stdout and "no_such_module_xyz" in result.stderr


# --- scaffold --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "transport"),
    [(f, "modbus-tcp") for f in FAMILIES]
    + [("water", "modbus-rtu")]
    + [("thermal", "coap"), ("displacement", "coap"), ("water", "serial-line")]
    + [("gas", "serial-line"), ("other", "ble-bthome"), ("displacement", "ble-bthome")]
    + [("other", "ble-gatt")],
)
def test_scaffold_passes_the_contract_unchanged(
    family: str, transport: str, driver_path: Path
) -> None:
    folder = scaffold_driver(f"new-{family}", driver_path, family, transport)
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "driver.yaml",
        "profile.yaml",
        "scenario.yaml",
    ]
    driver = get_driver(f"new-{family}")
    assert (driver.family, driver.transport, driver.source) == (family, transport, "path")
    assert len(driver.profile().points) == 2
    results = asyncio.run(run_contract(driver))
    assert [(r.name, r.ok, r.detail) for r in results if not r.ok] == []
    plan = ["plan"] if driver.is_modbus else []  # only a register map has a read plan
    assert [r.name for r in results] == [
        "manifest",
        *plan,
        "senml",
        "ranges",
        "scenario",
        "decoder",
        "wire",
        "faults",
    ]


def test_scaffold_refuses_bad_names_and_never_overwrites(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="lower-case"):
        scaffold_driver("Water_Level", tmp_path)
    with pytest.raises(ScaffoldError, match="family 'weather'"):
        scaffold_driver("x", tmp_path, family="weather")
    folder = scaffold_driver("x", tmp_path)
    (folder / "profile.yaml").write_text("mine")
    with pytest.raises(ScaffoldError, match="already exists"):
        scaffold_driver("x", tmp_path)
    assert (folder / "profile.yaml").read_text() == "mine"


def test_cli_driver_new_of_another_transport_passes_check(driver_path: Path) -> None:
    args = ["driver", "new", "river-gauge", "--family", "water", "--transport", "serial-line"]
    result = runner.invoke(cli(), [*args, "--dir", str(driver_path)])
    assert result.exit_code == 0, result.stderr
    checked = runner.invoke(cli(), ["driver", "check", "river-gauge"])
    assert checked.exit_code == 0, checked.stdout
    lines = [line.split()[:2] for line in checked.stdout.splitlines()]
    assert lines == [
        ["ok", "manifest"],
        ["ok", "senml"],
        ["ok", "ranges"],
        ["ok", "scenario"],
        ["ok", "decoder"],
        ["ok", "wire"],
        ["ok", "faults"],
    ]
    listed = json.loads(runner.invoke(cli(), ["driver", "list", "--json"]).stdout)
    entry = next(d for d in listed if d["name"] == "river-gauge")
    assert (entry["family"], entry["transport"], entry["source"]) == (
        "water",
        "serial-line",
        "path",
    )


def test_cli_driver_new_prints_the_folder(driver_path: Path) -> None:
    args = ["driver", "new", "tunnel-co2", "--family", "gas", "--dir", str(driver_path)]
    result = runner.invoke(cli(), args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{driver_path / 'tunnel-co2'}\n"
    assert "sentryline driver check tunnel-co2" in result.stderr
    again = runner.invoke(cli(), args)
    assert again.exit_code == EXIT_FAILED and "already exists" in again.stderr
    bad = runner.invoke(cli(), ["driver", "new", "Bad Name", "--dir", str(driver_path)])
    assert bad.exit_code == EXIT_USAGE and bad.stdout == ""
    checked = runner.invoke(cli(), ["driver", "check", "tunnel-co2", "--json"])
    assert checked.exit_code == 0, checked.stdout
    assert all(item["ok"] for item in json.loads(checked.stdout))


def test_cli_driver_list_and_check() -> None:
    result = runner.invoke(cli(), ["driver", "list"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "family", "transport", "version", "source"]
    assert any(
        line.split()[:5] == ["rain-gauge", "water", "modbus-rtu", "1.0.0", "built-in"]
        for line in lines
    )
    assert any(
        line.split()[:5] == ["thermal-camera", "thermal", "coap", "1.0.0", "built-in"]
        for line in lines
    )
    listed = json.loads(runner.invoke(cli(), ["driver", "list", "--json"]).stdout)
    assert {d["name"] for d in listed} >= {"gas-detector", "elevator-monitor"}
    transports = {d["name"]: (d["family"], d["transport"]) for d in listed}
    assert transports["ble-tilt-tag"] == ("displacement", "ble-bthome")
    assert transports["water-level-serial"] == ("water", "serial-line")
    checked = runner.invoke(cli(), ["driver", "check", "elevator-monitor"])
    assert checked.exit_code == 0, checked.stdout
    assert [line.split()[:2] for line in checked.stdout.splitlines()][-2:] == [
        ["ok", "wire"],
        ["ok", "faults"],
    ]
    missing = runner.invoke(cli(), ["driver", "check", "nope"])
    assert missing.exit_code == EXIT_USAGE and "unknown driver" in missing.stderr


def test_cli_driver_check_fails_a_broken_driver(driver_path: Path) -> None:
    folder = copy_builtin("gas-detector", driver_path, "gas-broken")
    profile = folder / "profile.yaml"
    profile.write_text(profile.read_text().replace("unit: ppm\n    range: [0, 1000]", "unit: ppm"))
    result = runner.invoke(cli(), ["driver", "check", "gas-broken"])
    assert result.exit_code == EXIT_FAILED
    assert "FAIL  ranges    ranges: co: numeric point without range" in result.stdout


# --- scenarios and the bench -----------------------------------------------------------------


def test_the_lifeline_scenario_has_every_modbus_family() -> None:
    scenario = load_scenario("urban-lifeline")
    families = {device.profile_model.family for device in scenario.devices}
    assert families == {"gas", "water", "elevator", "displacement"}  # thermal is CoAP
    assert {device.profile for device in scenario.devices} == {
        "gas-detector",
        "water-level-radar",
        "rain-gauge",
        "elevator-monitor",
        "displacement-monitor",
    }


def test_planner_bench_rows() -> None:
    modbus = [d.profile() for d in list_drivers() if d.is_modbus]
    rows = {r.name: r for r in planner_rows(p for p in modbus if isinstance(p, DeviceProfile))}
    gas = rows["gas-detector"]
    assert (gas.requests_planned, gas.requests_naive, gas.registers, gas.registers_read) == (
        1,
        9,
        8,
        9,
    )
    assert (
        rows["displacement-monitor"].requests_planned,
        rows["displacement-monitor"].requests_naive,
    ) == (2, 11)
    assert rows["rain-gauge"].requests_planned == rows["rain-gauge"].requests_naive == 5
    assert all(r.minimal for r in rows.values())
    table = format_table(list(rows.values()))
    assert table.splitlines()[-1].split()[:3] == ["total", "11", "44"]


def test_cli_bench_modbus_planner_json() -> None:
    result = runner.invoke(cli(), ["bench", "modbus-planner", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["bench"] == "modbus_planner"
    by_name = {row["name"]: row for row in data["rows"]}
    assert by_name["water-level-radar"] == {
        "name": "water-level-radar",
        "transport": "modbus-rtu",
        "points": 7,
        "registers": 7,
        "registers_read": 11,
        "requests_planned": 1,
        "requests_naive": 7,
        "requests_minimum": 1,
        "minimal": True,
    }
