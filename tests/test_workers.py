"""Two central worker processes, one PostgreSQL schema, a real Mosquitto, the leader killed.

``sentryline central run`` twice in ``workers.mode: shared``: Mosquitto round-robins the
gateways' packs over both (``$share/<group>/…``). A gateway-like publisher here sends three
gateways' SenML packs with two gas leaks each, re-sends what is not confirmed (as the
gateway's outbox does), and listens to ``sentryline/v1/alerts``. Mid-run the leader gets
SIGKILL and is started again. Then: every reading stored exactly once, every pack
confirmed, and each warning's CAP messages issued once each, in the order a single process
judging the same packs in order issues them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from pathlib import Path

import aiomqtt
import pytest

from bench.central_common import CentralWorker
from central.cap import parse_cap
from central.config import CentralConfig, load_central_config
from central.ingest import AssetRegistry, Inbound, IngestPipeline
from central.rules.gas import GasCh4Rule
from central.service import CentralService
from central.store import Store
from central.warnings import WarningManager
from cloud_bridge.mqtt import ALERTS_TOPIC, ack_topic, telemetry_topic
from cloud_bridge.senml import Pack, Record, encode_pack
from provisioning.localnet import wait_for_port
from tests.pgschema import private_schema

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
SITE = "site-w"
GATEWAYS = ("gw-a", "gw-b", "gw-c")
EPISODE = [0.3] * 3 + [0.6] * 3 + [0.3] * 4 + [0.02] * 6  # Alert, Update, Update, Cancel
PROFILE = [0.02] * 4 + EPISODE + [0.02] * 12 + EPISODE + [0.02] * 4
KILL_AT = 4 + len(EPISODE) + 4  # in the quiet stretch between the two leaks
OTHERS = 9  # other readings per pack beside the gas sample
# Event time from now on: the readings are live (nothing here is old enough to look offline).
T0 = time.time()


def gateway_packs(gateway: str) -> list[Pack]:
    packs = []
    for seq, lel in enumerate(PROFILE):
        t = T0 + seq
        others = [
            Record(f"env-{i}/temperature", t, 20.0 + i + seq / 100, "Cel") for i in range(OTHERS)
        ]
        records = (Record("gas-1/ch4_lel", t, lel, "/"), *others)
        packs.append(Pack(gateway, 1, seq, records))
    return packs


def reference(tmp_path: Path) -> dict[str, list[tuple[str, str]]]:
    """One process judging every gateway's packs in order: what the workers must match."""
    cfg = CentralConfig()
    store = Store(tmp_path / "reference.db")
    registry = AssetRegistry([], {})
    warnings = WarningManager(store, cfg.cap, registry.info)
    pipeline = IngestPipeline(store, registry, warnings, [GasCh4Rule(cfg.rules.gas_ch4)])
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for gateway in GATEWAYS:
        for pack in gateway_packs(gateway):
            msg = Inbound(telemetry_topic(SITE, gateway), encode_pack(pack), None, time.time())
            for m in pipeline.handle([msg]):
                if m.warning_type == "gas_leak":
                    out[m.asset].append((m.msg_type, m.level))
    store.close()
    return dict(out)


class Publisher:
    """Gateway-like: QoS 1 packs, confirmations on the ack topics, re-send when overdue."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.confirmed: set[tuple[str, int, int]] = set()
        self.sent_at: dict[tuple[str, int, int], float] = {}
        self.payloads: dict[tuple[str, int, int], bytes] = {}
        self.resent = 0
        self.caps: list[dict] = []

    async def listen(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = bytes(message.payload)  # type: ignore[arg-type]
            if message.topic.matches(ALERTS_TOPIC):
                cap = parse_cap(payload)
                self.caps.append(cap)
                continue
            gateway = str(message.topic).split("/")[3]
            body = json.loads(payload)
            for first, last in body["sq"]:
                for seq in range(first, last + 1):
                    self.confirmed.add((gateway, body["ep"], seq))

    async def publish(self, client: aiomqtt.Client, pack: Pack) -> None:
        payload = encode_pack(pack)
        self.payloads[pack.key] = payload
        self.sent_at[pack.key] = time.monotonic()
        await client.publish(telemetry_topic(SITE, pack.gateway), payload, qos=1)

    async def resend_overdue(self, client: aiomqtt.Client, after_s: float) -> None:
        now = time.monotonic()
        for key, sent in list(self.sent_at.items()):
            if key not in self.confirmed and now - sent > after_s:
                self.resent += 1
                self.sent_at[key] = now
                await client.publish(telemetry_topic(SITE, key[0]), self.payloads[key], qos=1)


async def wait_for(predicate, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_two_workers_share_the_load_and_survive_a_killed_leader(tmp_path, mosquitto):
    expected = reference(tmp_path)
    assert len(expected) == len(GATEWAYS)
    assert all(
        [k for k, _ in v] == ["Alert", "Update", "Update", "Cancel"] * 2 for v in expected.values()
    )
    group = f"w{uuid.uuid4().hex[:8]}"
    with private_schema("workers") as db_url:
        workers = [
            CentralWorker(tmp_path, n, mosquitto.url, db_url, shared_group=group, reorder_wait_s=60)
            for n in ("one", "two")
        ]
        # Every table once, before two processes start together.
        CentralService(load_central_config(workers[0].config)).store.close()
        db = Store(db_url)
        try:
            for w in workers:
                w.start()
            for w in workers:
                await w.subscribed()
                wait_for_port(w.http_port, 10)
            publisher = Publisher(mosquitto.port)
            async with aiomqtt.Client(
                "127.0.0.1",
                mosquitto.port,
                identifier=f"{group}-gateways",
                protocol=aiomqtt.ProtocolVersion.V5,
            ) as client:
                for gateway in GATEWAYS:
                    await client.subscribe(ack_topic(SITE, gateway), qos=1)
                await client.subscribe(ALERTS_TOPIC, qos=1)
                listener = asyncio.create_task(publisher.listen(client))
                packs = {g: gateway_packs(g) for g in GATEWAYS}
                killed = None
                for step in range(len(PROFILE)):
                    for gateway in GATEWAYS:
                        await publisher.publish(client, packs[gateway][step])
                    if step == KILL_AT:
                        leaders = [w for w in workers if "is the leader" in w.log_text()]
                        assert len(leaders) == 1, [w.log_text()[-2000:] for w in workers]
                        killed = leaders[0]
                        killed.kill()  # mid-run, with packs in flight to it
                    if step == KILL_AT + 8:
                        assert killed is not None
                        killed.start()
                    await publisher.resend_overdue(client, after_s=3.0)
                    await asyncio.sleep(0.1)
                assert killed is not None
                await killed.subscribed()
                total = len(GATEWAYS) * len(PROFILE)

                async def all_confirmed() -> None:
                    deadline = time.monotonic() + 60
                    while len(publisher.confirmed) < total:
                        assert time.monotonic() < deadline, "packs left unconfirmed"
                        await publisher.resend_overdue(client, after_s=3.0)
                        await asyncio.sleep(0.2)

                await all_confirmed()
                n_alerts = sum(len(v) for v in expected.values())
                await wait_for(
                    lambda: len(publisher.caps) >= n_alerts and db.queue_depth() == 0,
                    60,
                    "every CAP message",
                )
                await asyncio.sleep(1.0)  # a duplicate, if any, would arrive meanwhile
                listener.cancel()

            # Every reading stored exactly once.
            n_packs = db.db.execute(
                "SELECT COUNT(*) FROM packs_seen WHERE gateway LIKE 'gw-%'"
            ).fetchone()[0]
            assert n_packs == total
            rows = db.db.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
            assert rows == total * (1 + OTHERS)
            doubled = db.db.execute(
                "SELECT COUNT(*) FROM (SELECT gateway, device, quantity, t FROM readings"
                " GROUP BY gateway, device, quantity, t HAVING COUNT(*) > 1) d"
            ).fetchone()[0]
            assert doubled == 0
            # Each warning's messages once each, in the single-process order.
            stored: dict[str, list[tuple[str, str]]] = defaultdict(list)
            for alert in db.list_alerts():
                if alert["type"] == "gas_leak":
                    stored[alert["asset"]].append((alert["msgType"], alert["level"]))
            assert stored == expected
            heard: dict[str, list[tuple[str, str]]] = defaultdict(list)
            identifiers = [cap["identifier"] for cap in publisher.caps]
            assert len(identifiers) == len(set(identifiers))  # none published twice
            assert set(identifiers) == {a["identifier"] for a in db.list_alerts()}
            for cap in publisher.caps:
                params = cap["parameters"]
                if params["WARNING_TYPE"] != "gas_leak":
                    continue
                heard[params["ASSET_ID"]].append((cap["msgType"], cap["level"]))
            assert [len(v) for v in heard.values()] == [len(v) for v in expected.values()]
            assert heard == expected  # and heard in that order
            # Both shared the ingest; the survivor took over as leader.
            survivor = next(w for w in workers if w is not killed)
            assert "is the leader" in survivor.log_text()
            print(f"re-sent {publisher.resent} packs; CAP messages {len(identifiers)}")
        finally:
            for w in workers:
                w.stop()
            db.close()
