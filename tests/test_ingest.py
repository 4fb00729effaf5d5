"""Ingest bookkeeping: what central confirms back to gateways."""

from __future__ import annotations

import json

from central.config import CentralConfig
from central.ingest import AssetRegistry, Inbound, IngestPipeline
from central.rules.gas import GasCh4Rule
from central.store import Store
from central.warnings import WarningManager
from cloud_bridge.mqtt import telemetry_topic
from cloud_bridge.senml import Pack, Record, encode_pack


def pipeline(tmp_path) -> tuple[Store, IngestPipeline]:
    cfg = CentralConfig()
    store = Store(tmp_path / "c.db")
    registry = AssetRegistry([], {})
    warnings = WarningManager(store, cfg.cap, registry.info)
    return store, IngestPipeline(store, registry, warnings, [GasCh4Rule(cfg.rules.gas_ch4)])


def test_stored_duplicate_and_unstorable_packs_are_all_confirmed(tmp_path):
    store, ingest = pipeline(tmp_path)
    topic = telemetry_topic("site-a", "gw-1")
    good = Pack("gw-1", 7, 1, (Record("d/x", 1.79e9, 1.0),))
    bad = json.dumps(
        [
            {
                "bn": "urn:dev:sentryline:gw-1:",
                "gw": "gw-1",
                "ep": 7,
                "sq": 2,
                "n": "d/x",
                "v": "not a number",
            }
        ]
    ).encode()
    anonymous = json.dumps([{"n": "d/x", "v": 1.0}]).encode()  # no identity: cannot confirm
    now = 1.79e9 + 10
    ingest.handle([Inbound(topic, encode_pack(good), None, now)])
    ingest.handle(
        [
            Inbound(topic, encode_pack(good), None, now),  # a duplicate
            Inbound(topic, bad, None, now),
            Inbound(topic, anonymous, None, now),
        ]
    )
    confirmed = ingest.take_confirmations()
    assert {k: {e: sorted(s) for e, s in v.items()} for k, v in confirmed.items()} == {
        ("site-a", "gw-1"): {7: [1, 1, 2]}
    }
    assert ingest.take_confirmations() == {}
    assert store.stats()["gateways"]["gw-1"]["rejected"] == {"wrong_type": 1, "missing_field": 1}
    store.close()
