"""Asset registry: DB-backed on SQLite and PostgreSQL, seeded from config, cached for ingest,
imported from YAML/CSV with errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from central.config import AssetConfig, CentralConfig
from central.registry import AssetInfo, AssetRegistry, RegistryError, RegistryStore, SiteInfo
from central.registry_import import apply_import, plan_import, read_registry_file
from provisioning.cli import app as cli_app
from provisioning.configfile import ConfigError
from tests.opsdb import BACKENDS, open_backend

CONFIG_ASSETS = CentralConfig.model_validate(
    {
        "assets": [
            {
                "id": "tunnel-a3",
                "name": "Tunnel A3",
                "type": "utility-tunnel",
                "site": "hefei-east",
                "location": {"lat": 31.82, "lon": 117.22},
                "radius_km": 0.2,
                "meta": {"control_value_mm": 30},
                "devices": ["gw-1/gas-1", "gw-1/gas-2"],
            },
            {
                "id": "slope-7",
                "geometry": [
                    {"lat": 31.8, "lon": 117.2},
                    {"lat": 31.81, "lon": 117.2},
                    {"lat": 31.81, "lon": 117.21},
                ],
            },
        ]
    }
).assets


@pytest.fixture(params=BACKENDS)
def ops_db(request, tmp_path):
    yield from open_backend(request.param, tmp_path)


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_config_seeds_the_database_and_answers_from_memory(ops_db):
    registry = AssetRegistry(CONFIG_ASSETS, {}, db=ops_db)
    assert registry.asset_for("gw-1", "gas-2") == "tunnel-a3"
    assert registry.asset_for("gw-1", "other") == "gw-1.other"
    info = registry.info("tunnel-a3")
    assert (info.name, info.type, info.site, info.lat, info.radius_km) == (
        "Tunnel A3",
        "utility-tunnel",
        "hefei-east",
        31.82,
        0.2,
    )
    assert info.meta == {"control_value_mm": 30}
    assert registry.info("slope-7").geometry == ((31.8, 117.2), (31.81, 117.2), (31.81, 117.21))
    # Stored: a second registry on the same database knows it without the config.
    again = AssetRegistry([], {}, db=ops_db)
    assert again.info("tunnel-a3") == info
    assert [s.id for s in again.sites()] == ["hefei-east"]  # created for the asset


def test_config_updates_its_own_assets_but_not_edited_ones(ops_db):
    AssetRegistry(CONFIG_ASSETS, {}, db=ops_db)
    edited = AssetRegistry([], {}, db=ops_db)
    edited.put_asset(AssetConfig(id="slope-7", name="Edited over the API"))
    changed = [a.model_copy(update={"name": "Renamed in config"}) for a in CONFIG_ASSETS]
    registry = AssetRegistry(changed, {}, db=ops_db)
    assert registry.info("tunnel-a3").name == "Renamed in config"
    assert registry.info("slope-7").name == "Edited over the API"


def test_ingest_lookups_do_not_query_the_database(ops_db):
    """The cache answers; only the version check (every recheck_s) touches the database."""
    ticker = Ticker()
    registry = AssetRegistry(CONFIG_ASSETS, {}, db=ops_db, monotonic=ticker)
    calls = []
    real = ops_db.execute

    class Counting:
        def __getattr__(self, name):
            return getattr(ops_db, name)

        def execute(self, sql, params=()):
            calls.append(sql)
            return real(sql, params)

    registry.store.db = Counting()  # type: ignore[assignment]
    for _ in range(1000):
        registry.asset_for("gw-1", "gas-1")
        registry.info("tunnel-a3")
    assert calls == []
    ticker.now += 10
    registry.asset_for("gw-1", "gas-1")
    assert len(calls) == 1 and "registry_version" in calls[0]


def test_a_change_by_another_process_is_seen_after_the_recheck(ops_db):
    ticker = Ticker()
    registry = AssetRegistry(CONFIG_ASSETS, {}, db=ops_db, monotonic=ticker, recheck_s=5)
    other = RegistryStore(ops_db)  # e.g. `sentryline central assets import`
    other.put_asset(AssetInfo("lift-2", "Lift 2", type="elevator"), "import")
    other.bind("gw-1", "lift-2", "lift-2")
    assert registry.asset_for("gw-1", "lift-2") == "gw-1.lift-2"  # not yet
    seen = registry.version()
    ticker.now += 5
    assert registry.version() != seen
    assert registry.asset_for("gw-1", "lift-2") == "lift-2"
    assert registry.info("lift-2").type == "elevator"


def test_changes_through_the_registry_apply_at_once(ops_db):
    registry = AssetRegistry(CONFIG_ASSETS, {}, db=ops_db, recheck_s=3600)
    before = registry.version()
    registry.put_asset(AssetConfig(id="lift-2", site="tower-1", devices=["gw-2/lift"]))
    assert registry.version() != before  # what ingest watches to rebuild its rules
    assert registry.asset_for("gw-2", "lift") == "lift-2"
    registry.bind("gw-2", "lift", "tunnel-a3")  # moved
    assert registry.asset_for("gw-2", "lift") == "tunnel-a3"
    assert registry.unbind("gw-2", "lift") is True
    assert registry.unbind("gw-2", "lift") is False
    with pytest.raises(RegistryError, match="no asset"):
        registry.bind("gw-2", "lift", "nope")
    with pytest.raises(RegistryError, match="still has 1 asset"):
        registry.delete_site("tower-1")
    assert registry.delete_asset("lift-2") is True
    assert registry.delete_site("tower-1") is True
    assert registry.site("tower-1") is None
    registry.put_site(SiteInfo("tower-1", "Tower 1", {"floors": 30}))
    assert registry.site("tower-1") == SiteInfo("tower-1", "Tower 1", {"floors": 30})


def test_deleting_an_asset_drops_its_bindings(ops_db):
    registry = AssetRegistry(CONFIG_ASSETS, {}, db=ops_db)
    assert registry.delete_asset("tunnel-a3")
    assert registry.asset_for("gw-1", "gas-1") == "gw-1.gas-1"
    assert registry.bindings() == {}


def test_birth_fills_in_what_the_registry_does_not_know():
    registry = AssetRegistry(CONFIG_ASSETS, {})  # no database: in memory
    birth = {
        "devices": [
            {"id": "gas-1", "asset": "from-birth"},  # the registry's binding wins
            {"id": "w-9", "asset": "well-9", "location": {"lat": 1.5, "lon": 2.5}},
        ]
    }
    registry.learn_birth("gw-1", birth)
    assert registry.asset_for("gw-1", "gas-1") == "tunnel-a3"
    assert registry.asset_for("gw-1", "w-9") == "well-9"
    assert (registry.info("well-9").lat, registry.info("well-9").lon) == (1.5, 2.5)


# --------------------------------------------------------------------------- import


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD_YAML = """\
sites:
  - {id: tower-1, name: Tower 1}
assets:
  - id: lift-1
    type: elevator
    site: tower-1
    location: {lat: 31.8, lon: 117.2}
    meta: {rated_speed_mps: 1.75}
    devices: [gw-2/lift-1]
  - id: gallery-b
    devices: [gw-1/gas-1]
"""


def test_yaml_import_plans_then_applies_all_of_it(ops_db, tmp_path):
    store = RegistryStore(ops_db)
    AssetRegistry(CONFIG_ASSETS, {}, db=ops_db)
    data = read_registry_file(write(tmp_path, "reg.yaml", GOOD_YAML))
    plan = plan_import(store, data)
    assert plan.created == ["lift-1", "gallery-b"]
    assert plan.rebound == ["gw-1/gas-1: tunnel-a3 -> gallery-b"]
    assert store.bindings()["gw-1/gas-1"] == "tunnel-a3"  # planning writes nothing
    apply_import(store, plan)
    assert store.bindings()["gw-1/gas-1"] == "gallery-b"
    assert {s.id: s.name for s in store.sites()}["tower-1"] == "Tower 1"
    assert plan_import(store, data).unchanged == ["lift-1", "gallery-b"]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (GOOD_YAML.replace("lat: 31.8", "lat: 95"), "reg.yaml:7:21: assets[0].location.lat"),
        (
            GOOD_YAML.replace("type: elevator", "type: elevator\n    colour: red"),
            "reg.yaml:6:5: assets[0].colour",
        ),
        (GOOD_YAML.replace("gw-1/gas-1", "gw-2/lift-1"), "assets[1].devices: 'gw-2/lift-1'"),
        (GOOD_YAML.replace("id: gallery-b", "id: lift-1"), "assets[1].id: duplicate id"),
    ],
)
def test_yaml_import_errors_say_where(tmp_path, text, where):
    with pytest.raises(ConfigError) as caught:
        read_registry_file(write(tmp_path, "reg.yaml", text))
    assert where in str(caught.value)


GOOD_CSV = """\
id,name,type,site,lat,lon,radius_km,devices,geometry,meta.rated_speed_mps,meta.note
lift-1,Lift 1,elevator,tower-1,31.8,117.2,0.05,gw-2/lift-1,,1.75,
slope-7,Slope,landslide,,,,,gw-3/gnss-1 gw-3/gnss-2,31.8 117.2; 31.81 117.2; 31.81 117.21,,steep
"""


def test_csv_import(ops_db, tmp_path):
    store = RegistryStore(ops_db)
    data = read_registry_file(write(tmp_path, "reg.csv", GOOD_CSV))
    apply_import(store, plan_import(store, data))
    assets = {a.id: a for a in store.assets()}
    assert assets["lift-1"].meta == {"rated_speed_mps": 1.75}
    assert (assets["lift-1"].lat, assets["lift-1"].radius_km) == (31.8, 0.05)
    assert assets["slope-7"].geometry == ((31.8, 117.2), (31.81, 117.2), (31.81, 117.21))
    assert assets["slope-7"].meta == {"note": "steep"}
    assert store.bindings() == {
        "gw-2/lift-1": "lift-1",
        "gw-3/gnss-1": "slope-7",
        "gw-3/gnss-2": "slope-7",
    }


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (("31.8,117.2,0.05", "95,117.2,0.05"), "reg.csv:2: row 2, column lat:"),
        (("31.8,117.2,0.05", "31.8,,0.05"), "row 2, column lon: lat and lon go together"),
        (("0.05,gw-2", "-1,gw-2"), "row 2, column radius_km"),
        (("gw-3/gnss-1", "bad ref"), "row 3, column devices"),
        (("31.81 117.21,", "31.81,"), "row 3, column geometry"),
        (("slope-7,", "lift-1,"), "reg.csv:3: row 3, column id: duplicate id 'lift-1'"),
        (("meta.note\n", "meta.note,colour\n"), "reg.csv:1: header: unknown column"),
    ],
)
def test_csv_import_errors_name_row_and_column(tmp_path, change, where):
    with pytest.raises(ConfigError) as caught:
        read_registry_file(write(tmp_path, "reg.csv", GOOD_CSV.replace(*change)))
    assert where in str(caught.value)


def test_cli_import_dry_run_writes_nothing_then_imports(tmp_path):
    config = write(tmp_path, "central.yaml", "storage: {url: 'sqlite:///central.db'}\n")
    reg = write(tmp_path, "reg.yaml", GOOD_YAML)
    runner = CliRunner()
    args = ["central", "assets", "import", str(reg), "--config", str(config)]
    dry = runner.invoke(cli_app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "2 new" in dry.output and "nothing written" in dry.output
    listed = runner.invoke(cli_app, ["central", "assets", "list", "--config", str(config)])
    assert listed.output == ""
    done = runner.invoke(cli_app, args)
    assert done.exit_code == 0, done.output
    listed = runner.invoke(cli_app, ["central", "assets", "list", "--config", str(config)])
    assert "lift-1\ttower-1\televator\tgw-2/lift-1" in listed.output
    bad = write(tmp_path, "bad.yaml", GOOD_YAML.replace("lat: 31.8", "lat: 95"))
    failed = runner.invoke(cli_app, ["central", "assets", "import", str(bad), "-c", str(config)])
    assert failed.exit_code == 2
    assert "bad.yaml:7:" in failed.output
