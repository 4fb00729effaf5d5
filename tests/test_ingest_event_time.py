"""Rules on event time: a backlog replayed after live data is judged when it happened.

Driven through the real ingest pipeline and SQLite store (no broker needed: the pipeline is
transport-free). Live-first replay means packs with newer readings arrive before older ones.
"""

from __future__ import annotations

import itertools

import pytest

from central.cap import parse_cap
from central.config import CentralConfig
from central.ingest import AssetRegistry, Inbound, IngestPipeline
from central.rules.gas import GasCh4Rule
from central.store import Store
from central.warnings import WarningManager
from cloud_bridge.mqtt import telemetry_topic
from cloud_bridge.senml import Pack, Record, encode_pack

T0 = 1_800_000_000.0
TOPIC = telemetry_topic("s", "gw-1")


class Harness:
    def __init__(self, tmp_path) -> None:
        self.cfg = CentralConfig.model_validate(
            {
                "assets": [
                    {
                        "id": "tunnel",
                        "devices": ["gw-1/gas-1"],
                        "location": {"lat": 31.8, "lon": 117.2},
                    }
                ]
            }
        )
        self.tmp_path = tmp_path
        self.seq = itertools.count()
        self.open()

    def open(self) -> None:
        self.store = Store(self.tmp_path / "c.db")
        registry = AssetRegistry(self.cfg.assets, {})
        self.warnings = WarningManager(self.store, self.cfg.cap, registry.info)
        self.pipeline = IngestPipeline(
            self.store, registry, self.warnings, [GasCh4Rule(self.cfg.rules.gas_ch4)]
        )

    def send(self, start: float, values: list[float], replayed: bool = False) -> list:
        records = tuple(
            Record("gas-1/ch4_lel", start + i, v, "/", 1.0, 1) for i, v in enumerate(values)
        )
        pack = Pack("gw-1", 1, next(self.seq), records)
        msg = Inbound(TOPIC, encode_pack(pack), None, T0 + 10_000, replayed=replayed)
        return self.pipeline.handle([msg])


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    h.store.close()


LEAK = [0.3, 0.35, 0.55, 0.6, 0.65, 0.4, 0.3, 0.1, 0.05, 0.02, 0.02, 0.02]


def test_episode_entirely_inside_an_outage_is_issued_late(harness, assert_valid_cap):
    assert harness.send(T0 + 1000, [0.02] * 5) == []  # live data after the outage
    issued = harness.send(T0 + 100, [0.02] * 5 + LEAK + [0.02] * 5, replayed=True)
    kinds = [(m.msg_type, m.level) for m in issued]
    assert kinds[0] == ("Alert", "yellow") and kinds[-1][0] == "Cancel"
    assert ("Update", "red") in kinds
    for message in issued:
        assert_valid_cap(message.xml)
        cap = parse_cap(message.xml)
        assert cap["parameters"]["LATE"] == "TRUE"
    alert = harness.store.list_alerts()[0]
    assert alert["late"] is True
    assert alert["event_time"] == T0 + 100 + 5 + 1  # the second sample ≥ 25 %LEL
    warning = harness.store.list_warnings()[0]
    assert warning["late"] and not warning["active"]
    # The live warning state was never touched.
    assert harness.warnings.active == {}


def test_backlog_never_reraises_a_warning_that_has_since_cleared(harness):
    # Live: the leak is seen and raised before the outage.
    issued = harness.send(T0, [0.3, 0.35, 0.4])
    assert [(m.msg_type, m.level) for m in issued] == [("Alert", "yellow")]
    # After the outage, live data is clean: the live warning clears on its own data.
    issued = harness.send(T0 + 100, [0.02] * 4)
    assert [m.msg_type for m in issued] == ["Cancel"]
    # Then the backlog arrives: high until t=50, clean after. It must not raise anything.
    issued = harness.send(T0 + 3, [0.4] * 47 + [0.02] * 50, replayed=True)
    assert issued == []
    assert harness.warnings.suppressed_late >= 1
    assert len(harness.store.list_alerts()) == 2


def test_backlog_of_an_ongoing_episode_is_merged_into_the_live_warning(harness):
    harness.send(T0, [0.02] * 3)
    # Live after the outage: the leak is already under way.
    issued = harness.send(T0 + 200, [0.3, 0.3, 0.3])
    assert [(m.msg_type, m.level) for m in issued] == [("Alert", "yellow")]
    # The backlog shows how it started; it is the same episode: no second warning.
    assert harness.send(T0 + 3, [0.02] * 100 + [0.3] * 97, replayed=True) == []
    assert [a["msgType"] for a in harness.store.list_alerts()] == ["Alert"]


def test_replayed_flag_is_stored(harness):
    harness.send(T0, [0.02], replayed=True)
    row = harness.store.db.execute("SELECT replayed FROM packs_seen").fetchone()
    assert row == (1,)


def test_active_warning_survives_a_central_restart_and_clears_on_live_data(harness):
    issued = harness.send(T0, [0.3, 0.35])
    assert [m.msg_type for m in issued] == ["Alert"]
    harness.store.close()
    harness.open()  # restart: state from the database only
    assert harness.send(T0 + 10, [0.3]) == []  # still yellow: nothing new to say
    issued = harness.send(T0 + 11, [0.02] * 5)
    assert [m.msg_type for m in issued] == ["Cancel"]
    cancel = parse_cap(issued[0].xml)
    first = harness.store.list_alerts()[0]["identifier"]
    assert [ref[1] for ref in cancel["references"]] == [first]
