"""The gateway speaks CoAP, serial line and BLE beside Modbus: real simulators, real broker,
real central; the only stand-in is the BLE radio (a fake AdvertisementSource), because no
radio exists here.

* CoAP: two real aiocoap simulators (poll and Observe, SenML JSON and CBOR; one serves
  garbage and silence);
* serial: a pty pair with a line sensor that sends garbage between sentences;
* BLE: BTHome advertisements from a fake radio; and, with the real bleak and no reachable
  D-Bus, BLE unavailable: one log line, status says so, everything else keeps polling.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from central.service import CentralService
from cloud_bridge.senml import Record
from drivers.ble import BleUnavailable
from drivers.ble.bthome import BTHOME_SERVICE_UUID
from drivers.ble.gatt import BleGattTransportConfig
from drivers.ble.scanner import Advertisement
from drivers.coap.client import CoapTransportConfig
from drivers.serial import SerialSettings
from drivers.sim.coap_sim import CoapSimulator, Fault
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.scenario import load_scenario
from drivers.sim.serial_sim import LineFaults, LineSensorSimulator, water_level
from gateway.config import GatewayConfig
from gateway.daemon import GatewayDaemon, device_status_values
from gateway.sources.ble import BleSource, GattDevice
from gateway.sources.serial_line import SerialLineSource
from tests.test_e2e import central_config, running, wait_until

THERMO = "A4:C1:38:12:34:56"


class FakeRadio:
    """BTHome v2 advertisements of one thermometer every `period_s` (packet id counts up,
    temperature 21.00 + k/100 °C), then whatever the gateway's scanner makes of them."""

    def __init__(self, period_s: float = 0.1) -> None:
        self.period_s = period_s
        self.sent = 0

    async def advertisements(self) -> AsyncIterator[Advertisement]:
        while True:
            k = self.sent
            temp = (2100 + k).to_bytes(2, "little", signed=True)
            data = bytes([0x40, 0x00, k & 0xFF, 0x02]) + temp
            self.sent += 1
            yield Advertisement(THERMO, "thermo", -60, {BTHOME_SERVICE_UUID: data}, time.time())
            await asyncio.sleep(self.period_s)


def stored(central: CentralService, device: str, quantity: str) -> int:
    return central.store.db.execute(
        "SELECT COUNT(*) FROM readings WHERE device = ? AND quantity = ?", (device, quantity)
    ).fetchone()[0]


def gateway_doc(tmp_path: Path, broker_url: str, devices: list[dict]) -> dict:
    return {
        "site": "site-src",
        "gateway_id": "gw-src",
        "broker": {"url": broker_url},
        "outbox": {"path": str(tmp_path / "outbox.db")},
        "uplink": {"status_interval_s": 1},
        "devices": devices,
    }


@pytest.mark.slow
async def test_coap_serial_and_ble_devices_reach_central(tmp_path, mosquitto):
    good, bad = CoapSimulator(notify_ms=200, seed=1), CoapSimulator(notify_ms=200, seed=2)
    await good.start("127.0.0.1", 0)
    await bad.start("127.0.0.1", 0)
    bad.set_fault("displacement", Fault.GARBAGE)
    bad.set_fault("plain", Fault.SILENT)
    bad.set_fault("thermal", Fault.SILENT)
    line = LineSensorSimulator(
        water_level(), interval_s=0.1, faults=LineFaults(garbage_every=2), seed=3
    )
    port = line.open()
    coap = {"type": "coap", "timeout": 0.5}
    devices = [
        {"id": "disp-json", "transport": coap | {"uri": good.uri("displacement")}},
        {
            "id": "disp-cbor",
            "transport": coap | {"uri": good.uri("displacement"), "accept": "senml+cbor"},
        },
        {
            "id": "cam-json",
            "transport": coap | {"uri": good.uri("thermal"), "mode": "observe"},
        },
        {
            "id": "cam-cbor",
            "transport": coap
            | {"uri": good.uri("thermal"), "mode": "observe", "accept": "senml+cbor"},
        },
        {"id": "coap-garbage", "transport": coap | {"uri": bad.uri("displacement")}},
        {"id": "coap-silent", "transport": coap | {"uri": bad.uri("plain")}},
        {
            "id": "cam-silent",
            "transport": coap | {"uri": bad.uri("thermal"), "mode": "observe"},
        },
        {"id": "wl-serial", "transport": {"type": "serial-line", "port": port}},
        {"id": "ble-thermo", "transport": {"type": "ble-bthome", "mac": THERMO}},
    ]
    for device in devices:
        if device["transport"]["type"] == "coap":
            device["poll_interval"] = 0.2
    cfg = GatewayConfig.model_validate(gateway_doc(tmp_path, mosquitto.url, devices))
    radio = FakeRadio()
    gateway = GatewayDaemon(cfg, ble_source=lambda: radio)
    central = CentralService(central_config(tmp_path, mosquitto.url, "central-src-1"))
    feeding = asyncio.create_task(line.run())
    try:
        async with running(central.run):
            await asyncio.wait_for(central.ready.wait(), 10)
            async with running(gateway.run):
                wanted = [
                    ("disp-json", "crack"),
                    ("disp-cbor", "crack"),
                    ("cam-json", "t_max"),
                    ("cam-cbor", "hot_px"),
                    ("wl-serial", "level"),
                    ("ble-thermo", "temperature"),
                ]

                async def all_arrived() -> bool:
                    return all(stored(central, d, q) >= 3 for d, q in wanted)

                await wait_until(all_arrived, 20, f"readings of {wanted}")

                async def failures_reported() -> bool:
                    status = central.store.stats()["gateways"]["gw-src"].get("status", {})
                    return (
                        status.get("unparsable.coap-garbage", 0) >= 1
                        and status.get("timeouts.coap-silent", 0) >= 1
                        and status.get("timeouts.cam-silent", 0) >= 1
                    )

                await wait_until(failures_reported, 20, "failures in the gateway's status")
                health = {k: v for s in gateway.runtime.sources for k, v in s.health().items()}
                status = central.store.stats()["gateways"]["gw-src"]["status"]
            garbage_rows = stored(central, "coap-garbage", "crack")
            levels = central.store.db.execute(
                "SELECT v FROM readings WHERE device = 'wl-serial' AND quantity = 'level'"
            ).fetchall()
    finally:
        feeding.cancel()
        line.close()
        await good.stop()
        await bad.stop()

    # Good devices: readings with the gateway's names, stamped at read time.
    assert health["disp-json"].reads >= 3 and health["disp-json"].errors == 0
    assert health["cam-cbor"].reads >= 3 and health["cam-cbor"].state == "ok"
    # Faulty ones: counted by kind, no readings, nothing else held up.
    assert health["coap-garbage"].unparsable >= 1 and health["coap-garbage"].reads == 0
    assert garbage_rows == 0
    assert health["coap-silent"].timeouts >= 1 and health["coap-silent"].state == "failing"
    assert health["cam-silent"].timeouts >= 1 and health["cam-silent"].reads == 0
    # Garbage on the serial line: counted, and every intact sentence still read.
    assert health["wl-serial"].garbage_bytes > 0
    assert health["wl-serial"].reads >= 3
    assert levels and all(
        1.0 <= v <= 2.0 for (v,) in levels
    )  # the simulator's ramp, nothing made up
    assert health["ble-thermo"].reads >= 3
    assert status["source_errors"] >= 3 and status["ble_available"] == 1.0


async def test_a_serial_port_that_disappears_is_reopened(tmp_path):
    """The port is a symlink (like /dev/serial/by-id/...): the sensor's pty goes away, the
    source counts the disconnect and retries with backoff; a new pty behind the same name
    is picked up and readings resume."""
    link = tmp_path / "ttyWL"
    got: list[float] = []
    first = LineSensorSimulator(water_level(1.0), interval_s=0.05)
    os.symlink(first.open(), link)
    source = SerialLineSource(
        "wl",
        str(link),
        SerialSettings(),
        lambda records: got.extend(r.value for r in records),
        silence_s=0.5,
    )
    task = asyncio.create_task(source.run())
    feeding = asyncio.create_task(first.run())
    try:
        await wait_until(_true(lambda: len(got) >= 3), 10, "first readings")
        feeding.cancel()
        first.close()  # the adapter is unplugged: EIO, then the path is gone
        link.unlink()
        await wait_until(_true(lambda: source.sensor.counters.disconnects >= 1), 10, "loss seen")
        await wait_until(_true(lambda: source.sensor.counters.open_failures >= 2), 10, "retries")
        before = len(got)
        second = LineSensorSimulator(water_level(5.0), interval_s=0.05)
        os.symlink(second.open(), link)
        feeding = asyncio.create_task(second.run())
        await wait_until(_true(lambda: len(got) >= before + 3), 15, "readings after replug")
        health = source.health()["wl"]
    finally:
        feeding.cancel()
        task.cancel()
        await asyncio.gather(task, feeding, return_exceptions=True)
    assert got[-1] >= 5.0  # from the new sensor
    assert health.errors >= 3 and health.state == "ok"
    assert source.sensor.counters.opens == 2


@pytest.mark.slow
async def test_no_ble_stack_one_line_and_everything_else_polls(
    tmp_path, mosquitto, monkeypatch, caplog
):
    """Real bleak with no reachable D-Bus system bus (as on this machine, or any host
    without BlueZ): a BTHome and a GATT device are configured next to a Modbus and a CoAP
    device. The gateway logs one line, reports BLE unavailable, and polls the others."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-such-bus")
    coap_sim = CoapSimulator(seed=4)
    await coap_sim.start("127.0.0.1", 0)
    devices = [
        {
            "id": "gas-1",
            "profile": "gas-detector",
            "transport": {"type": "modbus-tcp", "port": 0, "device_id": 1, "timeout": 0.5},
            "poll_interval": 0.1,
        },
        {
            "id": "disp-1",
            "transport": {"type": "coap", "uri": coap_sim.uri("displacement"), "timeout": 0.5},
            "poll_interval": 0.1,
        },
        {"id": "tag-1", "transport": {"type": "ble-bthome", "mac": THERMO}},
        {
            "id": "env-1",
            "transport": {"type": "ble-gatt", "address": "C0:FF:EE:00:00:01", "standard": ["2a6e"]},
        },
    ]
    caplog.set_level(logging.INFO)
    try:
        async with ModbusSimulator(load_scenario("gas-leak"), seed=4) as modbus:
            devices[0]["transport"]["port"] = await modbus.start("127.0.0.1", 0)
            doc = gateway_doc(tmp_path, mosquitto.url, devices)
            doc["uplink"]["confirm"] = "puback"  # no central in this test
            gateway = GatewayDaemon(GatewayConfig.model_validate(doc))
            async with running(gateway.run):
                await asyncio.wait_for(gateway.ready.wait(), 10)
                rt = gateway.runtime

                def polled() -> bool:
                    health = {k: v for s in rt.sources for k, v in s.health().items()}
                    gas = next(iter(rt.buses)).counters["gas-1"]
                    return gas.ok >= 5 and health["disp-1"].reads >= 5

                await wait_until(_true(polled), 15, "Modbus and CoAP polled")
                ble = next(s for s in rt.sources if s.name == "ble")
                await wait_until(_true(lambda: ble.unavailable is not None), 10, "BLE verdict")
                health = {k: v for s in rt.sources for k, v in s.health().items()}
                status = {name: value for name, value, _ in device_status_values(rt)}
                status = rt.device_counters_sent | status  # counters go out when they change
                again = [name for name, _, _ in device_status_values(rt) if "." in name]
    finally:
        await coap_sim.stop()
    lines = [r for r in caplog.records if "BLE" in r.getMessage() and r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    text = lines[0].getMessage()
    assert "D-Bus" in text and "tag-1" in text and "env-1" in text
    assert health["tag-1"].state == health["env-1"].state == "unavailable"
    assert status["ble_available"] == 0.0 and status["errors.gas-1"] == 0
    assert again == []  # unchanged per-device counters are not repeated
    assert not [
        r for r in caplog.records if r.name.startswith("drivers.ble") and r.levelno >= logging.ERROR
    ]


def _true(fn):
    async def predicate() -> bool:
        return bool(fn())

    return predicate


async def test_a_silent_coap_device_is_backed_off_and_read_again_when_it_answers():
    """Polled every 0.1 s; silent, it is asked after 0.1, 0.2, 0.4, 0.8, 0.8 ... s (plus the
    timeout each), not every 0.1 s; once it answers, the interval is back."""
    from drivers.coap.client import CoapPoller, open_context
    from gateway.sources import Backoff
    from gateway.sources.coap import poll_with_backoff

    sim = CoapSimulator(seed=5)
    await sim.start("127.0.0.1", 0)
    sim.set_fault("displacement", Fault.SILENT)
    got: list[object] = []
    ctx = await open_context()
    poller = CoapPoller("d", sim.uri("displacement"), 0.1, got.extend, timeout=0.1, context=ctx)
    task = asyncio.create_task(poll_with_backoff(poller, ctx, Backoff(0.1, 2.0, 0.8)))
    try:
        await asyncio.sleep(3.0)
        silent_requests = poller.counters.requests
        sim.set_fault("displacement", Fault.NONE)
        await wait_until(_true(lambda: len(got) > 0), 5, "readings after the silence")
        answered_at = poller.counters.ok
        await asyncio.sleep(1.0)
        healthy = poller.counters.ok - answered_at
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ctx.shutdown()
        await sim.stop()
    # Without backoff: 3 s / (0.1 + 0.1 timeout) = 15 requests; with it, about 6.
    assert 4 <= silent_requests <= 8
    assert poller.counters.errors["timeout"] == silent_requests
    assert healthy >= 7  # ~10 in 1 s at 0.1 s: the interval is back


class FakeLink:
    """One GATT peripheral behind a radio that is missing until `stack_up` is set."""

    def __init__(self) -> None:
        self.stack_up = False
        self.callbacks: dict[str, Callable[[bytes], None]] = {}

    async def connect(self, on_disconnect: Callable[[], None]) -> None:
        if not self.stack_up:
            raise BleUnavailable("BlueZ (bluetoothd) is not running on the system bus")

    async def start_notify(self, uuid: str, callback: Callable[[bytes], None]) -> None:
        self.callbacks[uuid] = callback

    async def disconnect(self) -> None:
        self.callbacks.clear()


async def test_ble_gone_then_back_one_line_each_way(caplog):
    """Two GATT devices, no BLE stack: one ERROR line for both, state 'unavailable', quiet
    retries; when the stack comes back the devices are subscribed and read."""
    links = {"C0:FF:EE:00:00:01": FakeLink(), "C0:FF:EE:00:00:02": FakeLink()}
    batches: list[list[Record]] = []
    ble = BleSource(
        [],
        [
            GattDevice(
                f"env-{n}", BleGattTransportConfig(type="ble-gatt", address=a, standard=("2a6e",))
            )
            for n, a in enumerate(links, 1)
        ],
        batches.append,
        retry_s=0.2,
        link_factory=lambda t: links[t.address],
        clock=lambda: 1_780_000_000.0,
    )
    caplog.set_level(logging.DEBUG)
    task = asyncio.create_task(ble.run())
    try:
        await wait_until(_true(lambda: ble.unavailable is not None), 5, "BLE verdict")
        await asyncio.sleep(0.7)  # a few quiet retries
        assert {h.state for h in ble.health().values()} == {"unavailable"}
        assert ble.state == "unavailable"
        for link in links.values():
            link.stack_up = True
        await wait_until(
            _true(lambda: all(len(lk.callbacks) == 1 for lk in links.values())), 5, "subscribed"
        )
        for link in links.values():
            next(iter(link.callbacks.values()))(bytes.fromhex("1009"))  # 23.20 °C
        health = ble.health()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and "BlueZ (bluetoothd) is not running" in errors[0], errors
    assert any("BLE available again" in r.getMessage() for r in caplog.records)
    assert ble.outages == 1 and ble.unavailable is None and ble.state == "available"
    assert sorted(r.name for b in batches for r in b) == ["env-1/temperature", "env-2/temperature"]
    assert health["env-1"].state == "ok" and health["env-1"].reads == 1


async def test_readings_are_stamped_by_the_gateway_clock_with_its_sync_state():
    """Serial frames and a CoAP pack without times take the gateway clock's time when read,
    and say the clock was not synchronised (central corrects them once it is)."""
    from gateway.sources.coap import CoapDevice, CoapSource

    now = 1_780_000_123.5
    got: list[Record] = []
    line = LineSensorSimulator(water_level(), interval_s=0.05)
    serial = SerialLineSource(
        "wl",
        line.open(),
        SerialSettings(),
        got.extend,
        clock=lambda: now,
        clock_synced=lambda: False,
    )
    sim = CoapSimulator(notify_ms=100, seed=6)
    await sim.start("127.0.0.1", 0)
    cam = CoapTransportConfig(type="coap", uri=sim.uri("thermal"), timeout=1.0)
    coap = CoapSource(
        [CoapDevice("cam", cam, 0.1)], got.extend, clock=lambda: now, clock_synced=lambda: False
    )
    tasks = [asyncio.create_task(t) for t in (serial.run(), coap.run(), line.run())]
    try:
        await wait_until(
            _true(lambda: {r.device for r in got} == {"wl", "cam"}), 10, "both sources read"
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        line.close()
        await sim.stop()
    assert {r.time for r in got} == {now}
    assert not any(r.clock_synced for r in got)
