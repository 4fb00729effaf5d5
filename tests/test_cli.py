"""The `sentryline` CLI: config errors name file, line and field; exit codes; outbox stats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloud_bridge.outbox import Outbox
from cloud_bridge.senml import Record
from provisioning.cli import app

runner = CliRunner()

GOOD_GATEWAY = """\
site: site-a
gateway_id: gw-01
broker:
  url: mqtt://127.0.0.1:1883
outbox:
  path: outbox.db
devices:
  - id: gas-1
    profile: gas-detector
    transport: {type: modbus-tcp, host: 127.0.0.1, port: 5020, device_id: 1}
    poll_interval: 1.0
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_good_gateway_config_loads_with_paths_relative_to_the_file(tmp_path):
    from gateway.config import load_gateway_config

    cfg = load_gateway_config(write(tmp_path, "gw.yaml", GOOD_GATEWAY))
    assert cfg.outbox.path == tmp_path / "outbox.db"
    assert cfg.devices[0].transport.port == 5020


@pytest.mark.parametrize(
    ("replace", "line", "field", "words"),
    [
        ("poll_interval: 1.0", 11, "devices[0].poll_interval", "greater than 0"),
        ("profile: gas-detector", 9, "devices[0].profile", "no-such-profile"),
        ("gateway_id: gw-01", 2, "gateway_id", "pattern"),
        ("url: mqtt://127.0.0.1:1883", 4, "broker.url", "mqtt://host:port"),
    ],
)
def test_gateway_config_errors_point_at_file_line_field(tmp_path, replace, line, field, words):
    broken = {
        "poll_interval: 1.0": "poll_interval: -2",
        "profile: gas-detector": "profile: no-such-profile",
        "gateway_id: gw-01": "gateway_id: GW 01!",
        "url: mqtt://127.0.0.1:1883": "url: http://example",
    }[replace]
    path = write(tmp_path, "gw.yaml", GOOD_GATEWAY.replace(replace, broken))
    result = runner.invoke(app, ["gateway", "run", "--config", str(path)])
    assert result.exit_code == 2
    assert f"gw.yaml:{line}:" in result.output
    assert field in result.output
    assert words in result.output


def test_unknown_key_and_duplicate_device(tmp_path):
    text = GOOD_GATEWAY.replace("outbox:\n", "outbx:\n") + (
        "  - id: gas-1\n"
        "    profile: gas-detector\n"
        "    transport: {type: modbus-tcp, port: 5021}\n"
        "    poll_interval: 1.0\n"
    )
    path = write(tmp_path, "gw.yaml", text)
    result = runner.invoke(app, ["gateway", "run", "--config", str(path)])
    assert result.exit_code == 2
    assert "gw.yaml:5:" in result.output and "outbx" in result.output
    assert "duplicate device id 'gas-1'" in result.output


def test_central_config_errors(tmp_path):
    path = write(
        tmp_path,
        "central.yaml",
        """\
        storage:
          url: sqlite:///c.db
        rules:
          gas_ch4:
            yellow: 0.6
            orange: 0.5
        cap:
          utc_offset: "+8"
        """,
    )
    result = runner.invoke(app, ["central", "run", "--config", str(path)])
    assert result.exit_code == 2
    # A whole-block check points at the block's first line.
    assert "central.yaml:5:" in result.output and "blue < yellow < orange" in result.output
    assert "central.yaml:8:" in result.output and "cap.utc_offset" in result.output


def test_missing_config_file(tmp_path):
    result = runner.invoke(app, ["central", "run", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "nope.yaml" in result.output and "not found" in result.output


def test_outbox_stats_json_does_not_start_an_epoch(tmp_path):
    db = tmp_path / "o.db"
    box = Outbox(db, "gw-01")
    now = time.time()
    box.append([[Record("d/x", now, 1.0), Record("d/y", now, 2.0)], [Record("d/x", now, 3.0)]])
    epoch = box.epoch
    box.close()
    for _ in range(2):
        result = runner.invoke(app, ["outbox", "stats", "--db", str(db), "--json"])
        assert result.exit_code == 0, result.output
        figures = json.loads(result.output)
        assert figures["epoch"] == epoch
        assert figures["depth_packs"] == 2 and figures["depth_records"] == 3
        assert figures["records_appended"] == 3
        assert "publish_latency_p99_us" in figures and "oldest_age_s" in figures


def test_outbox_stats_missing_file(tmp_path):
    result = runner.invoke(app, ["outbox", "stats", "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 2 and "no outbox file" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["mosquitto", "amqtt"])
def test_demo_json_and_cap_files(tmp_path, assert_valid_cap, broker):
    """The demo as a user runs it: real processes, JSON summary, CAP files that validate."""
    out = tmp_path / "caps"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "provisioning.cli",
            "demo",
            "--json",
            "--speed",
            "4",
            "--out",
            str(out),
            "--broker",
            broker,
        ],
        capture_output=True,
        timeout=120,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    summary = json.loads(proc.stdout)
    readings = summary["readings"]
    assert readings["produced"] > 500
    assert readings["produced"] == readings["stored"]
    assert readings["duplicates"] == 0
    sequence = [(a["msgType"], a["level"]) for a in summary["alerts"]]
    assert sequence[:3] == [("Alert", "yellow"), ("Update", "orange"), ("Update", "red")]
    assert sequence[-1][0] == "Cancel"
    files = sorted(out.glob("*.xml"))
    assert {f.stem for f in files} == {a["identifier"] for a in summary["alerts"]}
    for f in files:
        assert_valid_cap(f.read_bytes())
    assert "nothing lost" in proc.stderr.decode()


@pytest.mark.slow
def test_demo_five_families(tmp_path, assert_valid_cap):
    """Every transport in one demo: what central stored per family, the thermal model's
    hotspot event at central, warnings as valid CAP, nothing lost."""
    out = tmp_path / "caps"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "provisioning.cli",
            "demo",
            "--scenario",
            "five-families",
            "--json",
            "--speed",
            "6",
            "--duration",
            "12",
            "--out",
            str(out),
        ],
        capture_output=True,
        timeout=150,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["readings"]["produced"] == summary["readings"]["stored"] > 1000
    families = summary["families"]
    assert set(families) == {"gas", "water", "rain", "elevator", "displacement", "thermal"}
    assert all(n > 0 for devices in families.values() for n in devices.values()), families
    hotspot = [e for e in summary["model_events"] if e["event"] == "thermal:hotspot"]
    assert hotspot and hotspot[0]["device"] == "cam-plantroom"
    assert hotspot[0]["model"].startswith("thermal@")
    assert summary["models"]["tower-lift"]["results"] > 0  # the lift model ran and reported
    assert summary["alerts"] and {f.stem for f in out.glob("*.xml")} == {
        a["identifier"] for a in summary["alerts"]
    }
    for f in out.glob("*.xml"):
        assert_valid_cap(f.read_bytes())
    assert "nothing lost" in proc.stderr.decode()


def test_example_configs_stay_valid():
    from central.config import load_central_config
    from gateway.config import load_gateway_config

    root = Path(__file__).resolve().parents[1] / "examples"
    gateway = load_gateway_config(root / "gateway.yaml")
    central = load_central_config(root / "central.yaml")
    bound = {ref for asset in central.assets for ref in asset.devices}
    assert {f"{gateway.gateway_id}/{d.id}" for d in gateway.devices} <= bound
