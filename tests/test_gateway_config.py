"""The gateway config's transport union: every transport parses, mistakes point at
file:line field, and the config keeps one owner per serial port and per BLE identity."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from drivers.coap.client import CoapTransportConfig
from gateway.config import (
    BleGattTransport,
    SerialLineTransport,
    effective_coap,
    load_driver_profile,
    load_gateway_config,
)
from provisioning.configfile import ConfigError

REPO = Path(__file__).resolve().parents[1]

HEAD = """\
site: site-a
gateway_id: gw-01
outbox:
  path: outbox.db
devices:
"""

EVERY_TRANSPORT = (
    HEAD
    + """\
  - id: gas-1
    profile: gas-detector
    transport: {type: modbus-tcp, port: 5020}
    poll_interval: 1
  - id: cam-1
    profile: thermal-camera
    transport: {type: coap, uri: "coap://127.0.0.1:5683/thermal"}
    model: {model: thermal}
  - id: crack-1
    transport: {type: coap, uri: "coap://127.0.0.1:5683/displacement", accept: senml+cbor}
    poll_interval: 5
  - id: wl-1
    profile: water-level-serial
    transport: {type: serial-line, port: /dev/ttyUSB3, baudrate: 4800}
  - id: tag-1
    profile: ble-tilt-tag
    transport: {type: ble-bthome, mac: "A4:C1:38:00:00:01"}
  - id: env-1
    transport: {type: ble-gatt, address: "C0:FF:EE:00:00:01", standard: [2a6e, 2a19]}
ble: {adapter: hci1, scan_mode: passive}
"""
)


def load(tmp_path: Path, text: str):
    path = tmp_path / "gw.yaml"
    path.write_text(textwrap.dedent(text))
    return load_gateway_config(path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return str(caught.value).splitlines()


def test_every_transport_parses_and_the_profile_fills_in(tmp_path):
    cfg = load(tmp_path, EVERY_TRANSPORT)
    kinds = [d.transport.type for d in cfg.devices]
    assert kinds == ["modbus-tcp", "coap", "coap", "serial-line", "ble-bthome", "ble-gatt"]
    assert cfg.ble.adapter == "hci1" and cfg.ble.scan_mode == "passive"
    cam = cfg.devices[1]
    # No mode in the device's block: the driver's (observe), so no poll_interval is needed.
    assert cam.poll_interval is None
    assert isinstance(cam.transport, CoapTransportConfig)
    effective = effective_coap(cam.transport, load_driver_profile("thermal-camera"))
    assert effective.mode == "observe" and effective.accept == "senml+cbor"
    assert effective.uri == "coap://127.0.0.1:5683/thermal"
    # What the device sets explicitly wins over the driver.
    wl = cfg.devices[3].transport
    assert isinstance(wl, SerialLineTransport) and wl.baudrate == 4800
    assert "baudrate" in wl.model_fields_set and "parity" not in wl.model_fields_set
    env = cfg.devices[5].transport
    assert isinstance(env, BleGattTransport)
    assert env.driver_config() is not None and len(env.driver_config().decoders()) == 2


def test_the_examples_are_valid():
    for path in sorted((REPO / "examples").glob("gateway*.yaml")):
        assert load_gateway_config(path).devices, path


@pytest.mark.parametrize(
    ("device", "line", "field", "words"),
    [
        (  # a Modbus register map on a CoAP device
            '  - id: x\n    profile: gas-detector\n    transport: {type: coap, uri: "coap://h/x"}\n'
            "    poll_interval: 1\n",
            7,
            "devices[0].profile",
            "speaks modbus-tcp, but this device's transport is coap",
        ),
        (  # a serial driver on a BLE device
            "  - id: x\n    profile: water-level-serial\n"
            '    transport: {type: ble-bthome, mac: "A4:C1:38:00:00:01"}\n',
            7,
            "devices[0].profile",
            "speaks serial-line, but this device's transport is ble-bthome",
        ),
        (
            "  - id: x\n    transport: {type: modbus-tcp, port: 502}\n    poll_interval: 1\n",
            6,
            "devices[0].profile",
            "a Modbus device needs a profile",
        ),
        (  # polled CoAP without an interval
            '  - id: x\n    transport: {type: coap, uri: "coap://h/x"}\n',
            6,
            "devices[0].poll_interval",
            "polled",
        ),
        (
            "  - id: x\n    profile: no-such-driver\n"
            "    transport: {type: serial-line, port: /dev/x}\n",
            7,
            "devices[0].profile",
            "no-such-driver",
        ),
        (  # frames come only from CoAP
            "  - id: x\n    transport: {type: serial-line, port: /dev/x}\n"
            "    model: {model: thermal}\n",
            8,
            "devices[0].model.model",
            "takes whole frames",
        ),
        (
            '  - id: x\n    transport: {type: coap, uri: "http://h/x"}\n    poll_interval: 1\n',
            7,
            "devices[0].transport.uri",
            "should match pattern",
        ),
        (
            '  - id: x\n    transport: {type: ble-gatt, address: "C0:FF:EE:00:00:01"}\n',
            7,
            "devices[0].transport",
            "list `standard` UUIDs",
        ),
        (
            "  - id: x\n    transport: {type: zigbee, port: 1}\n",
            7,
            "devices[0].transport",
            "zigbee",
        ),
    ],
)
def test_mistakes_point_at_file_line_field(tmp_path, device, line, field, words):
    found = problems(tmp_path, HEAD + device)
    assert any(f"gw.yaml:{line}:" in p and field in p and words in p for p in found), found


def test_a_line_sensor_port_has_one_owner(tmp_path):
    text = HEAD + (
        "  - id: wl-1\n    transport: {type: serial-line, port: /dev/ttyUSB0}\n"
        "  - id: gas-1\n    profile: gas-detector\n"
        "    transport: {type: modbus-rtu, port: /dev/ttyUSB0}\n    poll_interval: 1\n"
    )
    assert any("'wl-1' and 'gas-1' both use /dev/ttyUSB0" in p for p in problems(tmp_path, text))


def test_one_ble_identity_is_one_device(tmp_path):
    text = HEAD + (
        '  - id: a\n    transport: {type: ble-bthome, mac: "a4:c1:38:00:00:01"}\n'
        '  - id: b\n    transport: {type: ble-bthome, mac: "A4:C1:38:00:00:01"}\n'
    )
    assert any("'a' and 'b' are both A4:C1:38:00:00:01" in p for p in problems(tmp_path, text))


def test_gateway_check_shows_how_each_device_is_read(tmp_path):
    import json

    from typer.testing import CliRunner

    from provisioning.cli import app

    runner = CliRunner()
    path = tmp_path / "gw.yaml"
    path.write_text(EVERY_TRANSPORT)
    result = runner.invoke(app, ["gateway", "check", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.output)}
    assert rows["cam-1"]["reads"] == "observe" and rows["cam-1"]["model"] == "thermal"
    assert rows["crack-1"]["reads"] == "poll 5 s"
    assert rows["wl-1"]["where"] == "/dev/ttyUSB3" and rows["tag-1"]["reads"] == "advertisements"
    path.write_text(EVERY_TRANSPORT.replace("profile: ble-tilt-tag", "profile: gas-detector"))
    result = runner.invoke(app, ["gateway", "check", "--config", str(path)])
    assert result.exit_code == 2 and "gw.yaml:21:" in result.output
