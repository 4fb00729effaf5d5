"""BLE scanner and GATT subscriber up to the radio boundary.

No Bluetooth radio (nor BlueZ) exists where these tests run, so the radio is faked at the
adapter protocols: an AdvertisementSource fed captured BTHome advertisements, a fake bleak
scanner/client behind the real bleak adapters, and a GattLink. What a missing BLE stack
looks like is tested against real bleak with the D-Bus system bus pointed at nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from cloud_bridge.senml import Record
from drivers.ble import BleUnavailable
from drivers.ble.bthome import BTHOME_SERVICE_UUID
from drivers.ble.cli import EXIT_NO_BLE, make_app
from drivers.ble.gatt import (
    STANDARD,
    BleakGattLink,
    BleGattTransportConfig,
    CharacteristicConfig,
    GattError,
    GattSubscriber,
    ReconnectBackoff,
    full_uuid,
)
from drivers.ble.scanner import (
    Advertisement,
    BleakAdvertisementSource,
    BleBthomeTransportConfig,
    BthomeDeviceConfig,
    BthomeScanner,
)

THERMO = "A4:C1:38:12:34:56"
BUTTON = "3C:2E:F5:AA:BB:01"
OTHER = "D0:3E:7D:00:00:09"
T0 = 1_780_000_000.0


def adv(
    address: str, hexdata: str, t: float, name: str | None = None, rssi: int = -60
) -> Advertisement:
    return Advertisement(address, name, rssi, {BTHOME_SERVICE_UUID: bytes.fromhex(hexdata)}, t)


class FakeSource:
    """Captured advertisements, then silence until cancelled (like a quiet radio)."""

    def __init__(self, adverts: list[Advertisement], fail: BaseException | None = None) -> None:
        self.adverts = adverts
        self.fail = fail
        self.closed = False

    async def advertisements(self) -> AsyncIterator[Advertisement]:
        if self.fail is not None:
            raise self.fail
        try:
            for item in self.adverts:
                yield item
            await asyncio.Event().wait()
        finally:
            self.closed = True


DEVICES = [
    BthomeDeviceConfig(id="thermo-lobby", mac=THERMO, update_time=60),
    BthomeDeviceConfig(id="alarm-btn-3", name="SBBT-002C"),
]


# --- scanner: filtering, naming, repeats, problems --------------------------------------------


def test_listed_devices_become_records_and_others_are_ignored() -> None:
    scanner = BthomeScanner(FakeSource([]), lambda _r: None, devices=DEVICES)
    records = scanner.handle(adv(THERMO.lower(), "40 0093 0157 0238FF 03A023", T0))
    assert records == [
        Record("thermo-lobby/battery", T0, 87, "%EL", 60),
        Record("thermo-lobby/temperature", T0, -2.0, "Cel", 60),
        Record("thermo-lobby/humidity", T0, 91.2, "%RH", 60),
    ]
    button = scanner.handle(adv(BUTTON, "44 0021 0164 3A01", T0 + 1, name="SBBT-002C"))
    assert [(r.name, r.value) for r in button] == [
        ("alarm-btn-3/battery", 100),
        ("alarm-btn-3/button", "press"),
    ]
    assert scanner.handle(adv(OTHER, "40 02C409", T0 + 2)) == []
    assert scanner.handle(adv(BUTTON, "44 0022 3A01", T0 + 3, name="other-name")) == []
    assert scanner.ignored == 2
    # Advertisements without BTHome service data are not BTHome at all: not even counted.
    scanner.handle(
        Advertisement(THERMO, None, -50, {"0000181a-0000-1000-8000-00805f9b34fb": b"\x01"}, T0)
    )
    assert scanner.counters["thermo-lobby"].adverts == 1


def test_repeated_advertisements_of_one_packet_give_one_set_of_records() -> None:
    scanner = BthomeScanner(FakeSource([]), lambda _r: None, devices=DEVICES)
    got = []
    for i in range(5):  # the sensor repeats packet 0x10 every second
        got += scanner.handle(adv(THERMO, "40 0010 02C409", T0 + i))
    got += scanner.handle(adv(THERMO, "40 0011 02C409", T0 + 5))
    assert [r.time for r in got] == [T0, T0 + 5]
    counters = scanner.counters["thermo-lobby"]
    assert (counters.adverts, counters.packets, counters.repeats) == (6, 2, 4)


def test_encrypted_and_partial_packets_are_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scanner = BthomeScanner(FakeSource([]), lambda _r: None)  # every advertiser
    caplog.set_level(logging.WARNING, "drivers.ble.scanner")
    for i in range(3):
        assert scanner.handle(adv(THERMO, f"41 a47e1c3d9a 7856341{i} d2c1b0a9", T0 + i)) == []
    partial = scanner.handle(adv(OTHER, "40 02C409 301234 03BF13", T0))
    assert [(r.name, r.value) for r in partial] == [("ble-d03e7d000009/temperature", 25.0)]
    enc = scanner.counters["ble-a4c138123456"]
    assert enc.errors == {"encrypted": 3} and enc.records == 0
    part = scanner.counters["ble-d03e7d000009"]
    assert part.partial == 1 and part.errors == {"unknown_object": 1}
    warnings = [r.getMessage() for r in caplog.records]
    assert len([w for w in warnings if "encrypted" in w]) == 1
    assert scanner.seen[THERMO].problem == "encrypted"


async def test_the_run_loop_feeds_the_sink_and_stops_the_radio_when_cancelled() -> None:
    source = FakeSource(
        [
            adv(THERMO, "40 0001 02C409", T0),
            adv(THERMO, "40 0001 02C409", T0 + 1),
            adv(THERMO, "40 0002 02C509", T0 + 2),
        ]
    )
    batches: list[list[Record]] = []
    scanner = BthomeScanner(source, batches.append, devices=DEVICES)
    task = asyncio.create_task(scanner.run())
    await asyncio.sleep(0.05)
    assert [[(r.name, r.value) for r in b] for b in batches] == [
        [("thermo-lobby/temperature", 25.0)],
        [("thermo-lobby/temperature", 25.01)],
    ]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert source.closed


async def test_without_ble_the_scanner_reports_once_and_the_gateway_keeps_polling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, "drivers.ble.scanner")
    scanner = BthomeScanner(FakeSource([], fail=BleUnavailable("no adapter")), lambda _r: None)
    polls = 0

    async def other_driver() -> None:
        nonlocal polls
        while True:
            polls += 1
            await asyncio.sleep(0.01)

    poller = asyncio.create_task(other_driver())
    await asyncio.wait_for(scanner.run(), 1.0)  # returns instead of raising or hanging
    await asyncio.sleep(0.1)
    assert scanner.unavailable is not None and "no adapter" in str(scanner.unavailable)
    assert not poller.done() and polls > 5
    poller.cancel()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "no adapter" in errors[0].getMessage()


def test_a_device_needs_a_mac_or_a_name() -> None:
    with pytest.raises(ValueError, match="mac"):
        BthomeDeviceConfig(id="x")
    with pytest.raises(ValueError):
        BthomeDeviceConfig(id="x", mac="A4:C1:38:12:34")


# --- the bleak adapter, with bleak's scanner faked or its D-Bus missing ------------------------


class FakeBleakScanner:
    """Stands in for bleak.BleakScanner: same constructor keywords, scripted start()."""

    def __init__(self, start_error: BaseException | None, kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs
        self.start_error = start_error
        self.stopped = False

    async def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error
        callback = self.kwargs["detection_callback"]
        device = SimpleNamespace(address=THERMO, name=None)
        data = SimpleNamespace(
            local_name="ATC_123456",
            rssi=-71,
            service_data={BTHOME_SERVICE_UUID.upper(): bytearray.fromhex("40 0005 02C409")},
        )
        asyncio.get_running_loop().call_soon(callback, device, data)

    async def stop(self) -> None:
        self.stopped = True


class FakeBleak:
    """The scanner factory: records every scanner made and its keyword arguments."""

    def __init__(self, start_error: Callable[[str], BaseException | None]) -> None:
        self.start_error = start_error
        self.made: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> FakeBleakScanner:
        self.made.append(kwargs)
        return FakeBleakScanner(self.start_error(kwargs["scanning_mode"]), kwargs)


async def test_passive_scanning_asks_bluez_for_the_bthome_or_pattern() -> None:
    from bleak.args.bluez import OrPattern
    from bleak.assigned_numbers import AdvertisementDataType

    fake = FakeBleak(lambda _mode: None)
    source = BleakAdvertisementSource(mode="passive", adapter="hci1", scanner_factory=fake)
    stream = source.advertisements()
    item = await asyncio.wait_for(anext(stream), 1.0)
    await stream.aclose()
    (kwargs,) = fake.made
    assert kwargs["scanning_mode"] == "passive"
    assert kwargs["bluez"] == {
        "adapter": "hci1",
        "or_patterns": [OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xd2\xfc")],
    }
    assert item.address == THERMO and item.name == "ATC_123456" and item.rssi == -71
    assert item.service_data == {BTHOME_SERVICE_UUID: bytes.fromhex("40 0005 02C409")}


async def test_auto_mode_falls_back_to_active_when_bluez_cannot_scan_passively() -> None:
    from bleak.exc import BleakError

    def start_error(mode: str) -> BaseException | None:
        if mode == "passive":
            return BleakError(
                "passive scanning on Linux requires BlueZ >= 5.56 with --experimental enabled"
            )
        return None

    fake = FakeBleak(start_error)
    source = BleakAdvertisementSource(mode="auto", scanner_factory=fake)
    batches: list[list[Record]] = []
    scanner = BthomeScanner(source, batches.append)
    task = asyncio.create_task(scanner.run())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [k["scanning_mode"] for k in fake.made] == ["passive", "active"]
    assert source.active_mode == "active"
    assert [(r.name, r.value) for b in batches for r in b] == [
        ("ble-a4c138123456/temperature", 25.0)
    ]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (FileNotFoundError(2, "No such file or directory"), "no D-Bus system bus"),
        ("dbus-service-unknown", "BlueZ (bluetoothd) is not running"),
        ("not-available", "no usable Bluetooth adapter"),
        ("adapter-missing", "adapter 'hci7' not found"),
    ],
)
async def test_every_no_ble_failure_becomes_ble_unavailable(error: object, expected: str) -> None:
    from bleak.exc import (
        BleakBluetoothNotAvailableError,
        BleakBluetoothNotAvailableReason,
        BleakDBusError,
        BleakError,
    )

    exc = {
        "dbus-service-unknown": BleakDBusError("org.freedesktop.DBus.Error.ServiceUnknown", []),
        "not-available": BleakBluetoothNotAvailableError(
            "No Bluetooth adapters found.", BleakBluetoothNotAvailableReason.NO_BLUETOOTH
        ),
        "adapter-missing": BleakError("adapter 'hci7' not found"),
    }.get(error, error)  # type: ignore[call-overload]
    fake = FakeBleak(lambda _mode: exc)
    source = BleakAdvertisementSource(mode="auto", scanner_factory=fake)
    with pytest.raises(BleUnavailable, match=expected.replace("(", r"\(").replace(")", r"\)")):
        await anext(source.advertisements())
    assert len(fake.made) == 1  # no pointless active retry without a stack


@pytest.mark.skipif(sys.platform != "linux", reason="bleak's BlueZ backend is Linux-only")
async def test_real_bleak_without_a_system_bus_is_ble_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Point D-Bus at nothing: bleak raises a bare FileNotFoundError, whatever the host has.
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/sentryline-test-bus")
    scanner = BthomeScanner(BleakAdvertisementSource(mode="passive"), lambda _r: None)
    await asyncio.wait_for(scanner.run(), 5.0)
    assert isinstance(scanner.unavailable, BleUnavailable)
    assert "D-Bus" in str(scanner.unavailable)
    link = BleakGattLink(THERMO, timeout_s=2)
    with pytest.raises(BleUnavailable, match="D-Bus"):
        await asyncio.wait_for(link.connect(lambda: None), 5.0)


# --- CLI --------------------------------------------------------------------------------------


def test_cli_scan_lists_devices_heard() -> None:
    adverts = [
        adv(THERMO, "40 0093 0157 02C409", time.time(), name="ATC_123456", rssi=-58),
        adv(BUTTON, "44 0021 3A01", time.time(), name="SBBT-002C", rssi=-80),
    ]
    app = make_app(lambda _adapter, _mode: FakeSource(adverts))
    result = CliRunner().invoke(app, ["scan", "--seconds", "0.2", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["address"] for d in lines] == [THERMO, BUTTON]  # strongest first
    assert lines[0]["values"]["temperature"] == {"value": 25.0, "unit": "Cel"}
    assert lines[1]["trigger_based"] is True and lines[1]["values"]["button"]["value"] == "press"
    plain = CliRunner().invoke(app, ["scan", "--seconds", "0.2"])
    assert "temperature=25.0 Cel" in plain.stdout


def test_cli_scan_without_ble_prints_one_line_and_exits_3() -> None:
    app = make_app(
        lambda _adapter, _mode: FakeSource([], fail=BleUnavailable("no D-Bus system bus"))
    )
    result = CliRunner().invoke(app, ["scan", "--seconds", "5"])
    assert result.exit_code == EXIT_NO_BLE
    assert result.stderr.strip().splitlines() == ["ble scan: no D-Bus system bus"]
    assert result.stdout == ""


# --- GATT -------------------------------------------------------------------------------------


class FakeLink:
    """A peripheral: connects per `script` (None = ok, or the exception to raise)."""

    def __init__(self, script: list[BaseException | None]) -> None:
        self.script = script
        self.callbacks: dict[str, Callable[[bytes], None]] = {}
        self.drop: Callable[[], None] | None = None
        self.connects = 0
        self.disconnects = 0

    async def connect(self, on_disconnect: Callable[[], None]) -> None:
        self.connects += 1
        step = self.script.pop(0) if self.script else None
        if step is not None:
            raise step
        self.drop = on_disconnect

    async def start_notify(self, uuid: str, callback: Callable[[bytes], None]) -> None:
        self.callbacks[uuid] = callback

    async def disconnect(self) -> None:
        self.disconnects += 1


async def test_gatt_notifications_become_records_and_the_link_comes_back() -> None:
    link = FakeLink([GattError("device not found"), None, None])
    batches: list[list[Record]] = []
    humidity_temp = CharacteristicConfig(
        uuid="0000ffe1-0000-1000-8000-00805f9b34fb",
        format="<hH",
        fields=[
            {"quantity": "temperature", "unit": "Cel", "scale": 0.01},
            {"quantity": "humidity", "unit": "%RH", "scale": 0.01},
        ],
    )
    decoders = {"2a19": STANDARD[full_uuid("2a19")], humidity_temp.uuid: humidity_temp.decoder()}
    sub = GattSubscriber(
        "cabinet-7",
        link,
        decoders,
        batches.append,
        backoff=ReconnectBackoff(initial_s=0.01, max_s=0.02),
        clock=lambda: T0,
    )
    task = asyncio.create_task(sub.run())
    for _ in range(100):
        if len(link.callbacks) == 2:
            break
        await asyncio.sleep(0.01)
    assert sub.counters.connect_failures == 1 and sub.counters.connects == 1
    link.callbacks[full_uuid("2a19")](b"\x5a")
    link.callbacks[humidity_temp.uuid](bytes.fromhex("1009 a00f"))  # 23.20 °C, 40.00 %RH
    link.callbacks[humidity_temp.uuid](b"\x01")  # short notification: counted, not raised
    assert batches == [
        [Record("cabinet-7/battery", T0, 90, "%EL")],
        [
            Record("cabinet-7/temperature", T0, 23.2, "Cel"),
            Record("cabinet-7/humidity", T0, 40.0, "%RH"),
        ],
    ]
    assert sub.counters.errors == {"connect": 1, "decode": 1}
    assert link.drop is not None
    link.drop()  # the peripheral goes away; the subscriber reconnects and re-subscribes
    link.callbacks.clear()
    for _ in range(100):
        if len(link.callbacks) == 2:
            break
        await asyncio.sleep(0.01)
    assert sub.counters.disconnects == 1 and sub.counters.connects == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_gatt_without_ble_reports_once_and_returns() -> None:
    link = FakeLink([BleUnavailable("no D-Bus system bus")])
    sub = GattSubscriber("cabinet-7", link, {"2a6e": STANDARD[full_uuid("2a6e")]}, lambda _r: None)
    await asyncio.wait_for(sub.run(), 1.0)
    assert sub.unavailable is not None and link.connects == 1


def test_standard_environmental_sensing_decoders() -> None:
    assert STANDARD[full_uuid("2a6e")](b"\x0a\x09") == [("temperature", 23.14, "Cel")]
    assert STANDARD[full_uuid("2a6e")](b"\x38\xff") == [("temperature", -2.0, "Cel")]
    assert STANDARD[full_uuid("2a6f")](b"\xa0\x0f") == [("humidity", 40.0, "%RH")]
    assert STANDARD[full_uuid("2a6d")]((1013250).to_bytes(4, "little")) == [
        ("pressure", 1013.25, "hPa")
    ]
    with pytest.raises(ValueError):
        STANDARD[full_uuid("2a6e")](b"\x0a")
    with pytest.raises(ValueError, match="struct format"):
        CharacteristicConfig(uuid="ffe1", format="<q?Z", fields=[{"quantity": "x"}])


def test_gateway_config_shapes_for_ble_transports() -> None:
    bthome = BleBthomeTransportConfig(type="ble-bthome", mac=THERMO)
    assert bthome.device("thermo-lobby", 60).matches(THERMO.lower(), None)
    with pytest.raises(ValueError, match="mac"):
        BleBthomeTransportConfig(type="ble-bthome")
    gatt = BleGattTransportConfig(
        type="ble-gatt",
        address=THERMO,
        standard=("2a6e", "0x2A19"),
        characteristics=[
            {"uuid": "ffe1", "format": "<H", "fields": [{"quantity": "co2", "unit": "ppm"}]}
        ],
    )
    decoders = gatt.decoders()
    assert set(decoders) == {full_uuid("2a6e"), full_uuid("2a19"), full_uuid("ffe1")}
    assert decoders[full_uuid("ffe1")](b"\xe2\x04") == [("co2", 1250, "ppm")]
    with pytest.raises(ValueError, match="no standard decoder"):
        BleGattTransportConfig(type="ble-gatt", address=THERMO, standard=("2a00",))
    with pytest.raises(ValueError, match="subscribe"):
        BleGattTransportConfig(type="ble-gatt", address=THERMO)
