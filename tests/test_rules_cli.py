"""`sentryline rules test`: offline replay of recorded readings through the real pipeline."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from provisioning.cli import app

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LAYOUT = EXAMPLES / "readings-layout.yaml"


def run_json(*args: str) -> dict:
    result = runner.invoke(app, ["rules", "test", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_gas_example_confirms_caps_biogas_and_ignores_the_spike():
    doc = run_json("--readings", str(EXAMPLES / "readings-gas-leak.csv"), "--layout", str(LAYOUT))
    assert doc["readings"] == 120
    by_asset: dict[str, list] = {}
    for item in doc["issued"]:
        by_asset.setdefault(item["asset"], []).append((item["msgType"], item["level"]))
    assert by_asset["pit-7"][0] == ("Alert", "yellow")
    assert ("Update", "red") in by_asset["pit-7"]  # confirmed by pit 8, 60 m away
    assert by_asset["well-3"] == [("Alert", "yellow"), ("Cancel", "yellow")]  # biogas veto
    assert all(item["type"] == "gas_leak" for item in doc["issued"])  # the H2S spike: nothing
    assert doc["quality"]["spikes"] == 1
    red = next(i for i in doc["issued"] if i["level"] == "red")
    assert red["rule"] == "gas-ch4" and red["trigger"]["CONFIRMED"] == "TRUE"
    assert red["time"].endswith("Z")


def test_senml_packs_replay_lift_and_river():
    doc = run_json(
        "--readings", str(EXAMPLES / "readings-lift-river.json"), "--layout", str(LAYOUT)
    )
    kinds = [(i["asset"], i["type"], i["level"]) for i in doc["issued"] if i["msgType"] != "Cancel"]
    assert ("lift-b2", "lift_trapped", "red") in kinds
    assert ("station-nanfei", "river_flood", "orange") in kinds


def test_table_output_names_time_asset_type_level_rule_and_trigger(tmp_path):
    readings = tmp_path / "r.csv"
    readings.write_text(
        "time,device,quantity,value\n"
        "2027-01-15T08:00:00Z,gw/pit,h2s,8\n"
        "2027-01-15T08:00:10,gw/pit,h2s,8.5\n"  # no offset: UTC
    )
    layout = tmp_path / "layout.yaml"
    layout.write_text("assets:\n  - {id: pit, type: gas, devices: [gw/pit]}\n")
    result = runner.invoke(app, ["rules", "test", "-r", str(readings), "-l", str(layout)])
    assert result.exit_code == 0, result.output
    line = result.stdout.splitlines()[1]
    for part in (
        "2027-01-15T08:00:10Z",
        "pit",
        "h2s_exposure",
        "Alert",
        "yellow",
        "h2s",
        "H2S_PPM=8.50",
    ):
        assert part in line


def test_bad_readings_and_bad_layout_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,device,quantity,value\nyesterday,gw/pit,h2s,1\n")
    result = runner.invoke(app, ["rules", "test", "-r", str(bad)])
    assert result.exit_code == 2
    assert "bad.csv:2" in result.output and "yesterday" in result.output

    header = tmp_path / "header.csv"
    header.write_text("when,what\n1,2\n")
    result = runner.invoke(app, ["rules", "test", "-r", str(header)])
    assert result.exit_code == 2 and "header" in result.output

    layout = tmp_path / "layout.yaml"
    layout.write_text("assets:\n  - id: pit\n    radius_km: -1\n")
    result = runner.invoke(
        app, ["rules", "test", "-r", str(EXAMPLES / "readings-gas-leak.csv"), "-l", str(layout)]
    )
    assert result.exit_code == 2
    assert "layout.yaml:3:" in result.output and "radius_km" in result.output

    result = runner.invoke(app, ["rules", "test", "-r", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_operator_rules_dir_changes_the_outcome(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "gas.yaml").write_text(
        "type: gas\nrules:\n  - {kind: gas_ch4, confirm_within_m: null,"
        " red_requires_confirmation: false, sewer_veto: false}\n"
    )
    doc = run_json(
        "--readings",
        str(EXAMPLES / "readings-gas-leak.csv"),
        "--layout",
        str(LAYOUT),
        "--rules-dir",
        str(rules),
    )
    well = [(i["msgType"], i["level"]) for i in doc["issued"] if i["asset"] == "well-3"]
    assert ("Update", "red") in well  # no biogas veto any more
