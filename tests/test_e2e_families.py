"""Every sensor family end to end: simulator → gateway → Mosquitto → central, in one run.

One gateway reads, at once:

* gas and water level (radar) over Modbus RTU on one pty line (the urban-lifeline scenario's
  tunnel gas detector, unit 1, and river gauge, unit 7);
* rain, the garage lift and the slope's displacement monitor over Modbus TCP (same scenario);
* water level and rain as ASCII sentences on a second pty (water-level-serial driver);
* displacement over CoAP (crack-meter-coap driver, polled, SenML CBOR);
* a thermal camera over CoAP Observe (thermal-camera driver) with the thermal model
  attached: a 90 °C hot spot in its frames becomes a model event stored at central, with
  the model's name and version;
* a BLE tilt tag (ble-tilt-tag driver) through a fake radio: the one stand-in, because no
  radio exists here.

Central is the real service on SQLite; every family must land as stored readings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from central.service import CentralService
from drivers.ble.bthome import BTHOME_SERVICE_UUID
from drivers.ble.scanner import Advertisement
from drivers.serial import SerialSettings
from drivers.sim.coap_sim import CoapSimulator
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.rtu_sim import RtuSimulator
from drivers.sim.scenario import load_scenario
from drivers.sim.serial_sim import LineSensorSimulator, water_level
from gateway.config import GatewayConfig
from gateway.daemon import GatewayDaemon
from tests.test_e2e import central_config, running, wait_until

pytestmark = pytest.mark.slow

TAG = "A4:C1:38:5E:00:01"
SPEED = 4.0  # scenario seconds per second


class TiltTagRadio:
    """A BTHome v2 tilt tag: rotation 1.5° and -0.5° (0.1° steps), 19.5 °C, battery 93 %."""

    def __init__(self, period_s: float = 0.1) -> None:
        self.period_s = period_s
        self.sent = 0

    async def advertisements(self) -> AsyncIterator[Advertisement]:
        while True:
            data = bytes([0x40, 0x00, self.sent & 0xFF, 0x01, 93])
            data += bytes([0x02]) + (1950).to_bytes(2, "little", signed=True)
            data += bytes([0x3F]) + (15).to_bytes(2, "little", signed=True)
            data += bytes([0x3F]) + (-5).to_bytes(2, "little", signed=True)
            self.sent += 1
            yield Advertisement(TAG, "TILT", -70, {BTHOME_SERVICE_UUID: data}, time.time())
            await asyncio.sleep(self.period_s)


def device(id_: str, profile: str | None, transport: dict, poll: float | None = None) -> dict:
    doc: dict = {"id": id_, "transport": transport}
    if profile is not None:
        doc["profile"] = profile
    if poll is not None:
        doc["poll_interval"] = poll
    return doc


async def test_every_family_lands_at_central(tmp_path, mosquitto):
    scenario = load_scenario("urban-lifeline")
    rtu = RtuSimulator(scenario, seed=7, line=SerialSettings(115200, "N", 1))
    rtu_port = rtu.start()
    rtu.set_time(40.0)  # mid-storm: rain, rising river, methane building
    line = LineSensorSimulator(water_level(2.4), interval_s=0.1, seed=7)
    serial_port = line.open()
    coap = CoapSimulator(notify_ms=150, seed=7, hotspot_c=90.0)
    await coap.start("127.0.0.1", 0)
    rtu_line = {"type": "modbus-rtu", "port": rtu_port, "baudrate": 115200, "parity": "N"}
    central = CentralService(central_config(tmp_path, mosquitto.url, "central-families"))
    feeding = asyncio.create_task(line.run())
    try:
        async with ModbusSimulator(scenario, seed=7) as tcp, running(central.run):
            tcp_port = await tcp.start("127.0.0.1", 0)
            tcp.set_time(40.0)
            tcp_sim = {"type": "modbus-tcp", "port": tcp_port, "timeout": 0.5}
            devices = [
                device("tunnel-gas", "gas-detector", rtu_line | {"device_id": 1}, 0.2),
                device("river-radar", "water-level-radar", rtu_line | {"device_id": 7}, 0.2),
                device("rain-north", "rain-gauge", tcp_sim | {"device_id": 11}, 0.2),
                device("garage-lift", "elevator-monitor", tcp_sim | {"device_id": 3}, 0.2),
                device("slope-modbus", "displacement-monitor", tcp_sim | {"device_id": 21}, 0.2),
                device(
                    "river-serial",
                    "water-level-serial",
                    {"type": "serial-line", "port": serial_port},
                ),
                device(
                    "slope-coap",
                    "crack-meter-coap",
                    {"type": "coap", "uri": coap.uri("displacement"), "timeout": 1},
                    0.2,
                ),
                device(
                    "substation-cam",
                    "thermal-camera",
                    {"type": "coap", "uri": coap.uri("thermal"), "timeout": 2},
                )
                | {"model": {"model": "thermal", "report_every": 0}},
                device("wall-tag", "ble-tilt-tag", {"type": "ble-bthome", "mac": TAG}),
            ]
            cfg = GatewayConfig.model_validate(
                {
                    "site": "district-7",
                    "gateway_id": "gw-families",
                    "broker": {"url": mosquitto.url},
                    "outbox": {"path": str(tmp_path / "outbox.db")},
                    "devices": devices,
                }
            )
            radio = TiltTagRadio()
            gateway = GatewayDaemon(cfg, ble_source=lambda: radio)
            await asyncio.wait_for(central.ready.wait(), 10)
            playing = [
                asyncio.create_task(tcp.run(speed=SPEED)),
                asyncio.create_task(rtu.run(speed=SPEED)),
            ]
            wanted = {
                ("tunnel-gas", "ch4_lel"): "gas, Modbus RTU",
                ("river-radar", "level"): "water level, Modbus RTU",
                ("river-serial", "level"): "water level, serial ASCII",
                ("rain-north", "rain"): "rain, Modbus TCP",
                ("garage-lift", "speed"): "elevator, Modbus TCP",
                ("slope-modbus", "crack"): "displacement, Modbus TCP",
                ("slope-coap", "crack"): "displacement, CoAP",
                ("substation-cam", "t_max"): "thermal, CoAP Observe",
                ("substation-cam", "event"): "thermal model event",
                ("wall-tag", "tilt_x"): "BLE tilt tag",
            }

            def count(device_id: str, quantity: str) -> int:
                return central.store.db.execute(
                    "SELECT COUNT(*) FROM readings WHERE gateway = 'gw-families'"
                    " AND device = ? AND quantity = ?",
                    (device_id, quantity),
                ).fetchone()[0]

            try:
                async with running(gateway.run):

                    async def all_families() -> bool:
                        return all(count(d, q) >= 1 for d, q in wanted)

                    try:
                        await wait_until(all_families, 30, "every family at central")
                    except AssertionError:
                        missing = [wanted[k] for k in wanted if count(*k) == 0]
                        raise AssertionError(f"nothing stored for: {missing}") from None
                    health = {k: v for s in gateway.runtime.sources for k, v in s.health().items()}
            finally:
                for task in playing:
                    task.cancel()
            db = central.store.db
            events = db.execute(
                "SELECT t, vs FROM readings WHERE device = 'substation-cam' AND quantity = 'event'"
            ).fetchall()
            models = db.execute(
                "SELECT t, vs FROM readings WHERE device = 'substation-cam'"
                " AND quantity = 'event_model'"
            ).fetchall()
            tilt = db.execute(
                "SELECT v, unit FROM readings WHERE device = 'wall-tag' AND quantity = 'tilt_x'"
            ).fetchone()
            serial_units = db.execute(
                "SELECT DISTINCT unit FROM readings WHERE device = 'river-serial'"
                " AND quantity = 'level'"
            ).fetchall()
            births = central.store.gateway_births()
    finally:
        feeding.cancel()
        line.close()
        rtu.stop()
        await coap.stop()

    assert [vs for _, vs in events][:1] == ["thermal:hotspot"]
    assert models and models[0][1].startswith("thermal@")  # name and version, same time
    assert {t for t, _ in events} <= {t for t, _ in models}
    assert tilt[0] == pytest.approx(1.5 * 3.141592653589793 / 180) and tilt[1] == "rad"
    assert serial_units == [("m",)]
    assert health["substation-cam"].reads >= 2 and health["substation-cam"].errors == 0
    assert health["wall-tag"].reads >= 1
    transports = {d["id"]: d["transport"] for d in births["gw-families"]["devices"]}
    assert transports["wall-tag"] == "ble-bthome" and transports["slope-coap"] == "coap"
