"""Profiles of non-Modbus drivers (CoAP, serial line, BLE): loading through the registry,
errors at file:line, and the decoders each profile builds, fed real wire bytes."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import get_args

import cbor2
import pytest

from cloud_bridge.senml import Record
from drivers.ble.bthome import BTHOME_SERVICE_UUID
from drivers.ble.gatt import full_uuid
from drivers.ble.profile import BleProfile
from drivers.ble.scanner import Advertisement, BthomeScanner
from drivers.coap.payload import CF_SENML_CBOR, CF_SENML_JSON, DecodeContext, encode_frame_i16
from drivers.coap.profile import CoapProfile
from drivers.modbus.profile import DeviceProfile, load_profile
from drivers.registry import (
    DRIVER_PATH_ENV,
    PROFILE_MODELS,
    Family,
    Transport,
    driver_transport,
    get_driver,
    load_source_profile,
)
from drivers.serial.framing import encode_binary, encode_nmea
from drivers.serial.profile import SerialLineProfile
from drivers.source_profile import Family as SourceFamily
from provisioning.configfile import ConfigError

COAP = """\
name: cam
family: thermal
transport: coap
path: /thermal
mode: observe
accept: senml+cbor
names: {max: t_max}
frame: {name: frame, rows: 2, cols: 3, scale: 0.01}
points:
  - {name: t_max, unit: Cel, range: [-40, 300]}
  - {name: hot_px, unit: count, range: [0, 6]}
"""

COAP_PLAIN = """\
name: crack
family: displacement
transport: coap
path: /plain
payload: plain
plain:
  fields:
    - {pointer: /crack/mm, quantity: crack, unit: mm}
    - {pointer: /tilt/0, quantity: tilt_x, unit: rad}
points:
  - {name: crack, unit: mm, range: [0, 100]}
  - {name: tilt_x, unit: rad, range: [-0.2, 0.2]}
"""

SERIAL = """\
name: gauge
family: water
transport: serial-line
serial: {baudrate: 19200, parity: E}
update_time: 2
sentences:
  WL: {parser: water_level}
  RG: {parser: rain_gauge, tip_mm: 0.5}
  ST:
    count: 2
    fields:
      - {index: 0, quantity: battery_v, scale: 0.001}
      - {index: 1, quantity: fault, type: bool}
points:
  - {name: level, unit: m, range: [0, 30]}
  - {name: rain, unit: mm/h, range: [0, 300]}
  - {name: rain_acc, unit: mm, range: [0, 100000]}
  - {name: battery_v, unit: V, range: [0, 16]}
  - {name: fault, kind: bool}
"""

BTHOME = """\
name: tag
family: displacement
transport: ble-bthome
bthome:
  update_interval_s: 30
  local_name: TILT
  objects:
    rotation: {quantity: tilt_x, scale: 0.5}
    temperature: t_tag
points:
  - {name: tilt_x, unit: deg, range: [-90, 90]}
  - {name: t_tag, unit: Cel, range: [-40, 85]}
  - {name: battery, unit: "%EL", range: [0, 100]}
"""

GATT = """\
name: env
family: other
transport: ble-gatt
gatt:
  service: 181a
  standard: [2a6e]
  characteristics:
    - uuid: ff01
      format: "<hB"
      fields:
        - {quantity: strain, scale: 0.1, unit: "/"}
        - {quantity: battery, unit: "%EL"}
points:
  - {name: temperature, unit: Cel, range: [-40, 85]}
  - {name: strain, unit: "/", range: [-1000, 1000]}
  - {name: battery, unit: "%EL", range: [0, 100]}
"""

CTX = DecodeContext("cam-1", 1_780_000_000.0)


def write(tmp_path: Path, text: str, name: str = "profile.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- loading ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "model", "transport"),
    [
        (COAP, CoapProfile, "coap"),
        (COAP_PLAIN, CoapProfile, "coap"),
        (SERIAL, SerialLineProfile, "serial-line"),
        (BTHOME, BleProfile, "ble-bthome"),
        (GATT, BleProfile, "ble-gatt"),
    ],
)
def test_load_source_profile_picks_the_model_of_the_transport(
    tmp_path: Path, text: str, model: type, transport: str
) -> None:
    path = write(tmp_path, text)
    profile = load_source_profile(path)
    assert type(profile) is model
    assert profile.transport == transport == driver_transport(path)
    assert load_source_profile(tmp_path) == profile  # a folder means its profile.yaml


def test_modbus_profiles_load_unchanged() -> None:
    gas = load_source_profile("gas-detector")
    assert isinstance(gas, DeviceProfile) and gas == load_profile("gas-detector")
    assert driver_transport("rain-gauge") == "modbus-rtu"


def test_every_transport_has_a_profile_model_and_families_agree() -> None:
    assert set(PROFILE_MODELS) == set(get_args(Transport))
    assert get_args(Family) == get_args(SourceFamily)


def test_a_path_driver_of_another_transport_loads_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "gauge"
    folder.mkdir()
    write(folder, SERIAL)
    write(folder, "name: s\nduration: 1\n", "scenario.yaml")
    write(folder, "# gauge\n", "README.md")
    manifest = (
        "name: gauge\nfamily: water\ntransport: serial-line\nversion: 0.1.0\ndescription: x\n"
    )
    write(folder, manifest, "driver.yaml")
    monkeypatch.setenv(DRIVER_PATH_ENV, str(tmp_path))
    driver = get_driver("gauge")
    assert driver.transport == "serial-line" and not driver.is_modbus
    assert isinstance(driver.profile(), SerialLineProfile)
    assert load_source_profile("gauge") == driver.profile()
    # the manifest and the profile must agree, reported at the profile's line
    write(folder, manifest.replace("serial-line", "coap"), "driver.yaml")
    with pytest.raises(ConfigError) as info:
        get_driver("gauge").profile()
    assert f"{folder / 'profile.yaml'}:3:12: transport: must be 'coap'" in str(info.value)


@pytest.mark.parametrize(
    ("text", "old", "new", "where"),
    [
        (COAP, "transport: coap", "transport: zigbee", ":3:12: transport: Input should be"),
        (COAP, "names: {max: t_max}", "names: {max: t_hot}", ":7:14: names.max: 't_hot' is not"),
        (COAP, "path: /thermal", "path: thermal", ":4:7: path: String should match"),
        (COAP, "{name: frame, rows: 2", "{name: t_max, rows: 2", ":8:15: frame.name: 't_max' is"),
        (COAP_PLAIN, "quantity: crack,", "quantity: gap,", ":8:38: plain.fields[0].quantity:"),
        (
            COAP_PLAIN,
            "payload: plain\n",
            "",
            ":6:3: plain: `plain:` applies to payload: plain only",
        ),
        (SERIAL, "RG: {parser", "rg: {parser", ":8:7: sentences.rg: a sentence id is"),
        (SERIAL, "unit: mm/h", "unit: mm", ":8:16: sentences.RG.parser: rain_gauge reports rain"),
        (
            SERIAL,
            "index: 1, quantity: fault",
            "index: 2, quantity: fault",
            ":10:5: sentences.ST: Value error, a field index is beyond count 2",
        ),
        (
            SERIAL,
            "quantity: battery_v,",
            "quantity: vbat,",
            ":12:30: sentences.ST.fields[0].quantity",
        ),
        (SERIAL, "parity: E", "parity: X", ":4:35: serial.parity: Input should be"),
        (BTHOME, "    temperature: t_tag", "    temprature: t_tag", ":5:3: bthome: Value error"),
        (BTHOME, "quantity: tilt_x,", "quantity: tilt,", ":8:15: bthome.objects.rotation:"),
        (GATT, "standard: [2a6e]", "standard: [2a00]", ":5:3: gatt: Value error, no standard"),
        (GATT, "{name: temperature,", "{name: t,", ":6:13: gatt.standard: 'temperature' is not"),
    ],
)
def test_profile_errors_point_at_file_line_and_field(
    tmp_path: Path, text: str, old: str, new: str, where: str
) -> None:
    assert old in text
    load_source_profile(write(tmp_path, text))  # as written, it loads
    path = write(tmp_path, text.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_source_profile(path)
    assert f"{path}{where}" in str(info.value), str(info.value)


def test_duplicate_points_and_points_with_units_they_cannot_have(tmp_path: Path) -> None:
    text = BTHOME + "  - {name: battery, kind: bool}\n"
    with pytest.raises(ConfigError, match=r":14:5: points\[3\]: Value error, a bool point"):
        load_source_profile(write(tmp_path, text.replace("kind: bool", "kind: bool, unit: V")))
    with pytest.raises(ConfigError, match=r":14:12: points\[3\].name: duplicate point name"):
        load_source_profile(write(tmp_path, text))


def test_an_unknown_name_lists_what_there_is() -> None:
    with pytest.raises(ConfigError, match=r"unknown device profile; available: .*gas-detector"):
        load_source_profile("no-such-device")


# --- what the profiles build ------------------------------------------------------------------


def test_coap_profile_decodes_senml_with_renames_and_the_frame(tmp_path: Path) -> None:
    profile = load_source_profile(write(tmp_path, COAP))
    assert isinstance(profile, CoapProfile)
    frame = [20.0, 21.5, 22.25, 20.0, 95.5, 21.0]
    pack = [
        {"bn": "urn:dev:x:", "n": "max", "u": "Cel", "v": 95.5},
        {"n": "hot_px", "u": "count", "v": 1},
        {"n": "frame", "vd": encode_frame_i16(frame)},
    ]
    wire = cbor2.dumps(
        [{{"bn": -2, "n": 0, "u": 1, "v": 2, "vd": 8}[k]: v for k, v in r.items()} for r in pack]
    )
    decoded = profile.decoder()(wire, CF_SENML_CBOR, CTX)
    assert [(r.name, r.value, r.unit) for r in decoded.records] == [
        ("cam-1/t_max", 95.5, "Cel"),
        ("cam-1/hot_px", 1, "count"),
    ]
    (blob,) = decoded.blobs
    assert blob.name == f"cam-1/{profile.frame_quantity}"
    assert profile.frame is not None
    assert profile.frame.decode(blob.data) == [frame[:3], frame[3:]]
    config = profile.transport_config(profile.resource_uri("127.0.0.1:5683"), timeout=2)
    assert (config.uri, config.mode, config.accept_format, config.timeout) == (
        "coap://127.0.0.1:5683/thermal",
        "observe",
        CF_SENML_CBOR,
        2,
    )


def test_coap_plain_profile_decodes_a_vendor_document(tmp_path: Path) -> None:
    profile = load_source_profile(write(tmp_path, COAP_PLAIN))
    assert isinstance(profile, CoapProfile)
    doc = json.dumps({"crack": {"mm": 0.42}, "tilt": [0.001, 0.002]}).encode()
    decoded = profile.decoder()(doc, 50, CTX)
    assert [(r.quantity, r.value, r.unit) for r in decoded.records] == [
        ("crack", 0.42, "mm"),
        ("tilt_x", 0.001, "rad"),
    ]
    # JSON SenML with a base64url frame works through the senml profile too
    senml = load_source_profile(write(tmp_path, COAP))
    assert isinstance(senml, CoapProfile)
    data = base64.urlsafe_b64encode(encode_frame_i16([1.0] * 6)).rstrip(b"=").decode()
    pack = json.dumps([{"n": "frame", "vd": data}]).encode()
    assert senml.decoder()(pack, CF_SENML_JSON, CTX).blobs[0].data == encode_frame_i16([1.0] * 6)


def test_serial_profile_reads_sentences_through_the_line_sensor_decoder(tmp_path: Path) -> None:
    profile = load_source_profile(write(tmp_path, SERIAL))
    assert isinstance(profile, SerialLineProfile)
    settings = profile.settings()
    assert (settings.baudrate, settings.parity, settings.stopbits, settings.bytesize) == (
        19200,
        "E",
        1,
        8,
    )
    decoder, readings = profile.frame_decoder(), profile.readings()
    wire = (
        encode_nmea("WL", ["123.4", "cm"])
        + b"noise"
        + encode_nmea("RG", ["10", "3.5"])
        + encode_nmea("ST", ["12650", "A"])
    )
    frames = decoder.feed(wire)
    got = [r for frame in frames for r in readings(frame)]
    assert got == [
        ("level", 1.234, "m"),
        ("rain", 3.5, "mm/h"),
        ("rain_acc", 5.0, "mm"),
        ("battery_v", 12.65, "V"),
        ("fault", True, None),
    ]
    assert decoder.stats.rejected_bytes == {"noise": 5}
    with pytest.raises(LookupError):
        readings(decoder.feed(encode_nmea("XX", ["1"]))[0])
    for bad in (["12.6"], ["abc", "A"], ["12", "maybe"]):
        with pytest.raises(ValueError):
            readings(decoder.feed(encode_nmea("ST", bad))[0])


def test_serial_binary_profile_unpacks_frames(tmp_path: Path) -> None:
    text = SERIAL.split("sentences:")[0].replace("update_time: 2\n", "") + (
        "framing: binary\nbinary:\n  format: '<hH'\n  fields:\n"
        "    - {quantity: level, scale: 0.001}\n    - {quantity: battery_v, scale: 0.001}\n"
        "points:\n  - {name: level, unit: m, range: [0, 30]}\n"
        "  - {name: battery_v, unit: V, range: [0, 16]}\n"
    )
    profile = load_source_profile(write(tmp_path, text))
    assert isinstance(profile, SerialLineProfile)
    decoder, readings = profile.frame_decoder(), profile.readings()
    (frame,) = decoder.feed(encode_binary(struct.pack("<hH", 2345, 12000)))
    assert readings(frame) == [("level", 2.345, "m"), ("battery_v", 12.0, "V")]
    (short,) = decoder.feed(encode_binary(b"\x01"))
    with pytest.raises(ValueError, match="1 bytes, 4 expected"):
        readings(short)


def test_bthome_profile_maps_scanner_records(tmp_path: Path) -> None:
    profile = load_source_profile(write(tmp_path, BTHOME))
    assert isinstance(profile, BleProfile) and profile.kind == "bthome"
    config = profile.device_config("tag-1")
    assert (config.id, config.name, config.mac, config.update_time) == ("tag-1", "TILT", None, 30)
    got: list[Record] = []
    scanner = BthomeScanner(_NoRadio(), got.extend, devices=[config])
    # packet id 7, rotation 12.4 deg, temperature 21.5 Cel, battery 88 %, a button press
    data = bytes.fromhex("40 00 07 3F 7C 00 02 66 08 01 58 3A 01".replace(" ", ""))
    adv = Advertisement("AA:BB:CC:DD:EE:01", "TILT", -70, {BTHOME_SERVICE_UUID: data}, 100.0)
    records = profile.map_records(scanner.handle(adv))
    assert [(r.name, r.value, r.unit, r.update_time) for r in records] == [
        ("tag-1/tilt_x", 6.2, "deg", 30),
        ("tag-1/t_tag", 21.5, "Cel", 30),
        ("tag-1/battery", 88, "%EL", 30),
    ]  # the button is no point of this profile: dropped


def test_gatt_profile_builds_the_subscriber_decoders(tmp_path: Path) -> None:
    profile = load_source_profile(write(tmp_path, GATT))
    assert isinstance(profile, BleProfile) and profile.kind == "gatt"
    decoders = profile.decoders()
    assert set(decoders) == {full_uuid("2a6e"), full_uuid("ff01")}
    assert decoders[full_uuid("ff01")](struct.pack("<hB", -25, 77)) == [
        ("strain", -2.5, "/"),
        ("battery", 77, "%EL"),
    ]
    assert profile.gatt_config("AA:BB:CC:DD:EE:FF").address == "AA:BB:CC:DD:EE:FF"
    with pytest.raises(ValueError, match="not BTHome"):
        profile.device_config("x")


class _NoRadio:
    """handle() is called directly; the scanner's source is never read here."""

    def advertisements(self):  # type: ignore[no-untyped-def]
        raise AssertionError("not used")
