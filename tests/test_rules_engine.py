"""The rule engine: quality first, liveness, lanes, rules as data, reload, tick.

``Harness`` (used by every tests/test_rules_*.py) drives the real engine and the real
asset-level fusion with crafted event-time series; the pipeline tests use a real SQLite store.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.config import CentralConfig
from central.fusion import AssetLevelFusion
from central.ingest import Inbound, IngestPipeline
from central.registry import AssetInfo, AssetRegistry
from central.rules.engine import RuleEngine
from central.rules.machine import Debounce, LevelState
from central.rules.spec import RuleBook, load_rulebook
from central.store import Store
from central.warnings import WarningManager
from cloud_bridge.mqtt import telemetry_topic
from cloud_bridge.senml import Pack, Record, encode_pack
from provisioning.configfile import ConfigError

T0 = 1_800_000_000.0


class Harness:
    """Devices are bound to the asset of the same name unless ``bindings`` say otherwise."""

    def __init__(
        self,
        *assets: AssetInfo,
        bindings: dict[str, str] | None = None,
        book: RuleBook | None = None,
    ) -> None:
        self.infos = {a.id: a for a in assets}
        self.bindings = bindings or {}
        self.engine = RuleEngine(
            book or load_rulebook(),
            lambda gw, dev: self.bindings.get(dev, dev),
            lambda a: self.infos.get(a) or AssetInfo(a, a),
        )
        self.fusion = AssetLevelFusion()
        self.late_fusion = AssetLevelFusion()
        self.events: list[tuple[float, str, str, str | None]] = []
        self.transitions: list = []

    def send(
        self,
        device: str,
        quantity: str,
        t: float,
        value: float | bool | str,
        *,
        gw: str = "gw",
        q: int | None = None,
        ut: float | None = None,
    ) -> str:
        record = Record(f"{device}/{quantity}", t, value, None, ut, q)
        lane, asset, transitions = self.engine.judge(gw, record)
        fusion = self.late_fusion if lane == "late" else self.fusion
        for tr in transitions:
            self._fuse(fusion, asset, tr)
        return lane

    def _fuse(self, fusion: AssetLevelFusion, asset: str, tr) -> None:
        fused = fusion.update(asset, tr.warning_type, tr.asset, tr.event_time, tr)
        if fused is not None:
            self.transitions.append(fused)
            self.events.append((fused.event_time, asset, fused.warning_type, fused.level))

    def series(self, device: str, quantity: str, start: float, values, dt: float = 1.0, **kw):
        for i, v in enumerate(values):
            self.send(device, quantity, start + i * dt, v, **kw)

    def progress(self) -> None:
        for asset, tr in self.engine.check_progress():
            self._fuse(self.fusion, asset, tr)

    def levels(self, warning_type: str, asset: str | None = None) -> list[str | None]:
        return [lvl for _, a, w, lvl in self.events if w == warning_type and (asset in (None, a))]


def gas_asset(name: str = "g1", **meta) -> AssetInfo:
    return AssetInfo(name, name, 31.80, 117.20, type="gas", meta=meta)


# --- quality first ------------------------------------------------------------------------


def test_out_of_range_raises_sensor_fault_and_is_not_judged_then_clears():
    h = Harness(gas_asset())
    h.series("g1", "ch4_lel", T0, [0.02, 1.7, 1.8, 1.9])
    assert h.levels("sensor_fault") == ["blue"]
    assert h.levels("gas_leak") == []  # 170 %LEL is a broken sensor, not a leak
    h.series("g1", "ch4_lel", T0 + 10, [0.02, 0.02, 0.02])
    assert h.levels("sensor_fault") == ["blue", None]
    fault = h.transitions[0]
    assert fault.rule_id == "quality.range" and fault.trigger["SERIES"] == "gw/g1/ch4_lel"


def test_a_single_spike_is_dropped_but_a_real_step_is_judged():
    h = Harness(gas_asset())
    h.series("g1", "h2s", T0, [0.4, 0.4, 180.0, 0.4, 0.4, 0.4])  # EMI from a pump starting
    assert h.events == []
    assert h.engine.counters["spikes"] == 1
    h.series("g1", "h2s", T0 + 100, [0.4, 40.0, 40.0, 40.0])  # stays up: a real rise
    assert h.levels("h2s_exposure") == ["orange"]  # 40 ppm ≥ 14: orange after two samples


def test_a_stuck_sensor_raises_sensor_fault():
    book = RuleBook(
        [_parse("type: gas\nquality:\n  co: {flat_s: 600}\nrules:\n  - kind: co_dose\n")]
    )
    h = Harness(gas_asset(), book=book)
    h.series("g1", "co", T0, [4.0] * 20, dt=60)  # a drying cell: the same value for 20 min
    assert h.levels("sensor_fault") == ["blue"]
    assert h.transitions[0].rule_id == "quality.flat_line"
    h.series("g1", "co", T0 + 1300, [2.4, 2.6, 2.5, 2.7])
    assert h.levels("sensor_fault") == ["blue", None]


def test_gateway_quality_fail_is_not_judged_and_suspect_caps_at_blue():
    h = Harness(gas_asset())
    h.series("g1", "h2s", T0, [30.0] * 5, q=4)
    assert h.events == [] and h.engine.counters["skipped_quality"] == 5
    h.series("g1", "h2s", T0 + 10, [30.0] * 5, q=3)
    assert h.levels("h2s_exposure") == ["blue"]
    h.series("g1", "h2s", T0 + 20, [30.0] * 2, q=1)  # trusted again: the full level
    assert h.levels("h2s_exposure") == ["blue", "orange"]


# --- liveness -----------------------------------------------------------------------------


def test_silent_series_goes_offline_on_its_gateways_event_time_and_comes_back():
    h = Harness(gas_asset("g1"), gas_asset("g2"))
    for i in range(5):
        h.send("g1", "ch4_lel", T0 + i * 10, 0.01, ut=10)
        h.send("g2", "ch4_lel", T0 + i * 10, 0.01, ut=10)
    h.progress()
    for i in range(5, 8):  # g2 falls silent; g1 keeps the gateway's event time moving
        h.send("g1", "ch4_lel", T0 + i * 10, 0.01, ut=10)
        h.progress()
    assert [(a, lvl) for _, a, w, lvl in h.events if w == "sensor_offline"] == [("g2", "blue")]
    offline = h.transitions[-1]
    assert offline.event_time == T0 + 60  # first progress beyond 1.5 × ut after T0 + 40
    assert offline.rule_id == "liveness.event_time"
    h.send("g2", "ch4_lel", T0 + 80, 0.01, ut=10)
    assert h.levels("sensor_offline", "g2") == ["blue", None]


def test_without_ut_three_missed_reports_count():
    h = Harness(gas_asset("g1"), gas_asset("g2"))
    for i in range(6):
        h.send("g1", "ch4_lel", T0 + i * 20, 0.01)
        h.send("g2", "ch4_lel", T0 + i * 20, 0.01)
    h.series("g1", "ch4_lel", T0 + 120, [0.01] * 3, dt=20)
    h.progress()
    assert h.levels("sensor_offline") == []  # 40 s of silence < 3 × 20 s
    h.series("g1", "ch4_lel", T0 + 180, [0.01], dt=20)
    h.progress()
    assert h.levels("sensor_offline", "g2") == ["blue"]


def test_tick_uses_the_wall_clock_and_spares_gateways_that_said_offline():
    h = Harness(gas_asset("g1"))
    h.series("g1", "ch4_lel", T0, [0.01] * 3, dt=10, ut=10)
    assert h.engine.tick(T0 + 30) == []
    h.engine.set_gateway_state("gw", "offline")
    assert h.engine.tick(T0 + 100) == []
    h.engine.set_gateway_state("gw", "online")
    [(asset, tr)] = h.engine.tick(T0 + 100)
    assert asset == "g1" and tr.warning_type == "sensor_offline" and tr.level == "blue"
    assert tr.rule_id == "liveness.wall_clock"
    assert h.engine.tick(T0 + 101) == []  # said once


def test_tick_spares_a_gateway_whose_every_series_went_quiet_at_once():
    """A gateway power cut is not N sensor faults: one silent series among live ones is."""
    h = Harness(gas_asset("g1"), gas_asset("g2"))
    for i in range(3):
        h.send("g1", "ch4_lel", T0 + i * 10, 0.01, ut=10)
        h.send("g2", "ch4_lel", T0 + i * 10, 0.01, ut=10)
    assert h.engine.tick(T0 + 200) == []  # both overdue together: the gateway went quiet
    assert h.engine.gateway_silent == {"gw"}
    h.send("g1", "ch4_lel", T0 + 200, 0.01, ut=10)  # back, but only one of its sensors
    [(asset, tr)] = h.engine.tick(T0 + 205)
    assert (asset, tr.warning_type, tr.rule_id) == ("g2", "sensor_offline", "liveness.wall_clock")
    assert h.engine.gateway_silent == set()


# --- lanes --------------------------------------------------------------------------------


def test_late_data_is_judged_at_its_event_time_in_its_own_lane():
    h = Harness(gas_asset())
    assert h.send("g1", "h2s", T0 + 1000, 0.3) == "live"
    lanes = {h.send("g1", "h2s", T0 + i, v) for i, v in enumerate([0.3, 9.0, 9.5, 9.6])}
    assert lanes == {"late"}
    late = [tr for tr in h.transitions if tr.late]
    assert [tr.level for tr in late] == ["yellow"]
    assert late[0].event_time == T0 + 2  # the second sample ≥ 7 ppm, when it happened
    assert h.send("g1", "h2s", T0 + 1, 20.0) == "skipped"  # older than both lanes
    assert h.send("g1", "h2s", T0 + 1001, 0.3) == "live"  # the live lane never saw it
    assert not [tr for tr in h.transitions if not tr.late]


# --- rules as data ------------------------------------------------------------------------


def _parse(text: str):
    from central.rules.spec import RuleSetFile
    from provisioning.configfile import parse_yaml_model

    return parse_yaml_model(text, RuleSetFile, "test.yaml")


def test_every_shipped_rule_set_loads_and_serves_its_types():
    book = load_rulebook()
    for asset_type in (
        "gas",
        "utility-tunnel",
        "water-level",
        "rain-gauge",
        "elevator",
        "displacement",
        "slope",
        "thermal",
        "generic",
    ):
        assert book.for_type(asset_type).rules, asset_type
    assert book.for_type("no-such-type").type == "generic"
    assert book.for_type("utility-tunnel").type == "generic"  # the demo's CH4 as it was
    assert book.for_type("valve-pit").type == "gas"


def test_bad_rule_set_points_at_file_line_and_field(tmp_path: Path):
    (tmp_path / "gas.yaml").write_text(
        "type: gas\nrules:\n  - kind: toxic_threshold\n    levels: {yellow: 14, orange: 7}\n"
        "  - kind: co_dose\n    recovery_min: -1\n  - kind: no_such_rule\n"
    )
    with pytest.raises(ConfigError) as err:
        load_rulebook(tmp_path)
    text = str(err.value)
    assert "gas.yaml:4:" in text and "must not decrease" in text
    assert "gas.yaml:6:" in text and "recovery_min" in text
    assert "gas.yaml:7:" in text and "no_such_rule" in text


def test_operator_set_replaces_the_shipped_one_and_meta_overrides_a_rule(tmp_path: Path):
    (tmp_path / "gas.yaml").write_text(
        "type: gas\nrules:\n  - kind: toxic_threshold\n    id: h2s\n"
        "    levels: {yellow: 3.0, orange: 6.0}\n"
    )
    book = load_rulebook(tmp_path)
    h = Harness(
        gas_asset("g1"), gas_asset("g2", rules={"h2s": {"levels": {"yellow": 1.0}}}), book=book
    )
    h.series("g1", "h2s", T0, [4.0, 4.0])
    h.series("g2", "h2s", T0, [1.5, 1.5])
    assert h.levels("h2s_exposure", "g1") == ["yellow"]
    assert h.levels("h2s_exposure", "g2") == ["yellow"]
    h.series("g1", "co", T0, [400.0] * 10, dt=60)  # no CO rule in the operator's set
    assert h.levels("co_exposure") == []


def test_a_bad_meta_override_keeps_the_defaults_and_is_reported():
    h = Harness(gas_asset("g1", rules={"h2s": {"levels": {"yellow": "lots"}}}))
    h.series("g1", "h2s", T0, [8.0, 8.0])
    assert h.levels("h2s_exposure") == ["yellow"]
    assert any("meta.rules.h2s" in p and "g1" in p for p in h.engine.problems)


# --- the pipeline: tick and reload ----------------------------------------------------------


class Pipeline:
    def __init__(self, tmp_path: Path, rules_dir: Path | None = None) -> None:
        cfg = CentralConfig.model_validate(
            {
                "assets": [
                    {
                        "id": "pit",
                        "type": "gas",
                        "devices": ["gw-1/gas-1"],
                        "location": {"lat": 31.8, "lon": 117.2},
                    },
                ]
            }
        )
        self.store = Store(tmp_path / "c.db")
        registry = AssetRegistry(cfg.assets, {})
        warnings = WarningManager(self.store, cfg.cap, registry.info)
        self.pipeline = IngestPipeline(self.store, registry, warnings, rules_dir=rules_dir)
        self.seq = itertools.count()

    def send(self, start: float, quantity: str, values, ut: float = 1.0) -> list:
        records = tuple(
            Record(f"gas-1/{quantity}", start + i, v, None, ut, 1) for i, v in enumerate(values)
        )
        pack = Pack("gw-1", 1, next(self.seq), records)
        topic = telemetry_topic("s", "gw-1")
        return self.pipeline.handle([Inbound(topic, encode_pack(pack), None, start + 100)])


def test_pipeline_tick_issues_and_clears_sensor_offline(tmp_path):
    p = Pipeline(tmp_path)
    assert p.send(T0, "ch4_lel", [0.01] * 3) == []
    assert p.pipeline.tick(T0 + 3) == []
    [offline] = p.pipeline.tick(T0 + 30)
    assert (offline.msg_type, offline.warning_type, offline.level) == (
        "Alert",
        "sensor_offline",
        "blue",
    )
    assert p.pipeline.tick(T0 + 31) == []
    [back] = p.send(T0 + 40, "ch4_lel", [0.01])
    assert (back.msg_type, back.warning_type) == ("Cancel", "sensor_offline")
    p.store.close()


def test_reload_rules_applies_new_thresholds_and_keeps_active_warnings(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "gas.yaml").write_text(
        "type: gas\nrules:\n  - {kind: toxic_threshold, id: h2s, levels: {yellow: 7, orange: 14}}\n"
    )
    p = Pipeline(tmp_path, rules)
    issued = p.send(T0, "h2s", [8.0, 8.0])
    assert [(m.msg_type, m.level) for m in issued] == [("Alert", "yellow")]
    (rules / "gas.yaml").write_text("type: gas\nrules:\n  - {kind: toxic_threshold, id: h2s,\n")
    with pytest.raises(ConfigError):
        p.pipeline.reload_rules()  # a broken file: the rules in force stay
    assert p.send(T0 + 2, "h2s", [8.0]) == []
    (rules / "gas.yaml").write_text(
        "type: gas\nrules:\n  - {kind: toxic_threshold, id: h2s, levels: {yellow: 2, orange: 5}}\n"
    )
    assert p.pipeline.reload_rules() == []
    issued = p.send(T0 + 3, "h2s", [8.0, 8.0, 8.0])  # 8 ppm is orange under the new set
    assert [(m.msg_type, m.level) for m in issued] == [("Update", "orange")]
    issued = p.send(T0 + 10, "h2s", [0.5] * 4)
    assert [m.msg_type for m in issued] == ["Cancel"]
    p.store.close()


def test_a_gateway_birth_keeps_the_rules_state_of_an_ongoing_warning(tmp_path):
    import json

    from cloud_bridge.mqtt import state_topic

    p = Pipeline(tmp_path)
    issued = p.send(T0, "h2s", [8.0, 8.0])
    assert [(m.msg_type, m.level) for m in issued] == [("Alert", "yellow")]
    birth = {"state": "online", "epoch": 2, "devices": [{"id": "gas-1", "asset": "pit"}]}
    msg = Inbound(state_topic("s", "gw-1"), json.dumps(birth).encode(), None, T0 + 3)
    assert p.pipeline.handle([msg]) == []
    # The rule still knows it is yellow: one reading at 6.5 ppm (inside the hysteresis)
    # says nothing, and three clean ones cancel the warning it raised.
    assert p.send(T0 + 4, "h2s", [6.5]) == []
    issued = p.send(T0 + 5, "h2s", [0.5] * 3)
    assert [m.msg_type for m in issued] == ["Cancel"]
    p.store.close()


def test_gateway_offline_state_silences_wall_clock_liveness(tmp_path):
    import json

    from cloud_bridge.mqtt import state_topic

    p = Pipeline(tmp_path)
    p.send(T0, "ch4_lel", [0.01] * 3)
    bye = Inbound(state_topic("s", "gw-1"), json.dumps({"state": "offline"}).encode(), None, T0 + 4)
    p.pipeline.handle([bye])
    assert p.pipeline.tick(T0 + 600) == []  # the gateway is down, not its sensors
    p.store.close()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)), max_size=120),
    st.integers(1, 3),
    st.integers(1, 3),
)
def test_level_machine_never_exceeds_its_inputs_or_cap(steps, raise_samples, clear_samples):
    machine = Debounce(raise_samples, 0.0, clear_samples)
    state = LevelState()
    previous = 0
    for i, (enter, hold, cap) in enumerate(steps):
        changed = machine.step(state, float(i), enter, hold, cap)
        assert state.emitted == min(state.level, cap)
        assert changed == (state.emitted != previous)
        assert state.level <= max(e for e, _, _ in steps[: i + 1])  # no level nobody entered
        previous = state.emitted
