"""A driver folder's decoder.py applied by the gateway's Modbus path (bus → records → MQTT).

The driver lives in a temporary SENTRYLINE_DRIVER_PATH folder: a copy of gas-detector whose
decoder recalibrates `co` and withholds `h2s`, served by a real pymodbus simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import aiomqtt
import pytest

from cloud_bridge.mqtt import telemetry_topic
from cloud_bridge.senml import Record, decode_pack
from drivers.modbus.bus import ModbusBus
from drivers.modbus.driver_decoder import DriverDecoders
from drivers.modbus.profile import load_profile
from drivers.modbus.transport import ModbusTcpEndpoint
from drivers.registry import DRIVER_PATH_ENV, builtin_dir
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.scenario import Scenario
from gateway.config import GatewayConfig
from gateway.daemon import GatewayDaemon
from provisioning.configfile import ConfigError, parse_yaml_model

DRIVER = "gas-calibrated"
DECODER = """
from drivers.modbus.profile import DeviceProfile


class Decoder:
    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile

    def decode(self, values):
        out = {k: v for k, v in values.items() if k != "h2s"}  # withheld
        out["co"] = values["co"] * 2 + 1  # a calibration the register map cannot express
        return out
"""
BROKEN = """
class Decoder:
    def __init__(self, profile) -> None:
        pass

    def decode(self, values):
        raise ValueError("vendor format changed")
"""
SCENARIO = f"""
name: decoded
duration: 600
devices:
  - id: gas-1
    profile: {DRIVER}
    device_id: 1
    values: {{co: 12, h2s: 3, ch4_lel: 0.02, sensor_state: normal}}
"""


def make_driver(root: Path, decoder: str, name: str = DRIVER) -> Path:
    folder = root / name
    shutil.copytree(builtin_dir() / "gas-detector", folder)
    for file in ("driver.yaml", "profile.yaml", "scenario.yaml"):
        path = folder / file
        path.write_text(path.read_text().replace("gas-detector", name))
    manifest = folder / "driver.yaml"
    manifest.write_text(manifest.read_text() + "decoder: decoder:Decoder\n")
    (folder / "decoder.py").write_text(decoder)
    return folder


@pytest.fixture
def driver_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "drivers"
    root.mkdir()
    monkeypatch.setenv(DRIVER_PATH_ENV, str(root))
    return root


@contextlib.asynccontextmanager
async def simulator():  # type: ignore[no-untyped-def]
    async with ModbusSimulator(parse_yaml_model(SCENARIO, Scenario), noise=False) as sim:
        yield await sim.start("127.0.0.1", 0)


async def test_the_bus_publishes_what_the_decoder_returns(driver_path: Path) -> None:
    make_driver(driver_path, DECODER)
    profile = load_profile(DRIVER)
    decoder = DriverDecoders().for_device(DRIVER, profile)
    assert decoder is not None
    async with simulator() as port:
        endpoint = ModbusTcpEndpoint("127.0.0.1", port, timeout=1.0)
        bus = ModbusBus(endpoint, lambda _records: None)
        bus.add_device("gas-1", profile, 1, 1.0, decoder=decoder)
        plain = ModbusBus(endpoint, lambda _records: None)
        plain.add_device("gas-1", profile, 1, 1.0)
        try:
            decoded = {r.quantity: r for r in await bus.poll("gas-1")}
            raw = {r.quantity: r for r in await plain.poll("gas-1")}
        finally:
            await endpoint.close()
    assert raw["co"].value == 12 and raw["h2s"].value == 3
    assert decoded["co"].value == 25 and "h2s" not in decoded
    assert decoded["co"].unit == raw["co"].unit and decoded["co"].quality == 1  # range applies
    assert set(decoded) == set(raw) - {"h2s"}


async def test_a_failing_decoder_fails_that_poll_only(driver_path: Path) -> None:
    make_driver(driver_path, BROKEN)
    profile = load_profile(DRIVER)
    records: list[Record] = []
    async with simulator() as port:
        endpoint = ModbusTcpEndpoint("127.0.0.1", port, timeout=1.0)
        bus = ModbusBus(endpoint, records.extend)
        counters = bus.add_device(
            "gas-1", profile, 1, 0.05, decoder=DriverDecoders().for_device(DRIVER, profile)
        )
        task = asyncio.create_task(bus.run())
        try:
            async with asyncio.timeout(10):
                while counters.polls < 3:  # noqa: ASYNC110 - failed polls signal nothing
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await endpoint.close()
    assert records == [] and counters.decode == counters.polls >= 3
    assert "vendor format changed" in counters.last_error


def test_profiles_without_a_driver_decoder_get_none(tmp_path: Path, driver_path: Path) -> None:
    decoders = DriverDecoders()
    assert decoders.for_device("gas-detector", load_profile("gas-detector")) is None
    flat = tmp_path / "flat.yaml"
    flat.write_text((builtin_dir() / "gas-detector" / "profile.yaml").read_text())
    assert decoders.for_device(str(flat), load_profile(flat)) is None
    folder = make_driver(driver_path, DECODER, "gas-by-path")
    assert decoders.for_device(str(folder), load_profile(folder)) is not None
    assert decoders.for_device(str(folder / "profile.yaml"), load_profile(folder)) is not None


def test_a_decoder_that_cannot_load_is_a_config_error(driver_path: Path) -> None:
    make_driver(driver_path, "this is not python")
    with pytest.raises(ConfigError, match="cannot load decoder:Decoder"):
        DriverDecoders().for_device(DRIVER, load_profile(DRIVER))


async def test_the_gateway_publishes_decoded_values(
    driver_path: Path, tmp_path: Path, mosquitto
) -> None:
    make_driver(driver_path, DECODER)
    received: list[Record] = []
    async with simulator() as port:
        config = GatewayConfig.model_validate(
            {
                "site": "site-dec",
                "gateway_id": "gw-dec",
                "broker": {"url": mosquitto.url},
                "outbox": {"path": str(tmp_path / "outbox.db")},
                "uplink": {"confirm": "puback"},
                "devices": [
                    {
                        "id": "gas-1",
                        "profile": DRIVER,
                        "transport": {"type": "modbus-tcp", "port": port, "device_id": 1},
                        "poll_interval": 0.1,
                    }
                ],
            }
        )
        daemon = GatewayDaemon(config)
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="dec-sub") as client:
            await client.subscribe(telemetry_topic("site-dec", "gw-dec"), qos=1)
            stop = asyncio.Event()
            gateway = asyncio.create_task(daemon.run(stop))
            try:
                async with asyncio.timeout(15):
                    async for message in client.messages:
                        pack = decode_pack(bytes(message.payload))  # type: ignore[arg-type]
                        received += [r for r in pack.records if r.device == "gas-1"]
                        if len(received) >= 16:
                            break
            finally:
                stop.set()
                await asyncio.wait_for(gateway, 20)
    co = {r.value for r in received if r.quantity == "co"}
    assert co == {25} and not any(r.quantity == "h2s" for r in received)
