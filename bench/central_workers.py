"""One central worker vs two on PostgreSQL: throughput and correctness.

``python -m bench.central_workers [--json] [--quick] [--readings N] [--pg URL]``
(also ``sentryline bench central-workers``)

Each scenario starts afresh (Mosquitto, a private PostgreSQL schema, the workers as their own
processes): ``single`` is one process judging inline (``workers.mode: single``); ``shared
×1`` and ``shared ×2`` are one and two workers behind the MQTT 5 shared subscription with
the leader judging the pack queue. A publisher here sends a fleet's SenML packs (10
gateways, packs of 50, one gas leak per gateway) as fast as the broker takes them, one task
per gateway so each gateway's packs stay in order.

Throughput = readings / (first publish → last pack stored and judged). Correctness: stored
== published, no reading stored twice, every pack confirmed, and the CAP messages equal to
what one process judging the same packs in order issues (once each).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt

from bench.central_common import (
    PG_DEFAULT,
    SITE,
    CentralWorker,
    fleet_packs,
    pg_schema,
    pg_version,
)
from bench.common import Mosquitto, Report, Target, base_parser, workdir
from central.cap import parse_cap
from central.config import CentralConfig
from central.db import open_database
from central.ingest import Inbound
from central.service import CentralService
from cloud_bridge.mqtt import ALERTS_TOPIC, ack_topic
from cloud_bridge.senml import Pack, encode_pack


def reference(packs: list[tuple[str, Pack]]) -> Counter[tuple[str, str, str]]:
    """(asset, msgType, level) of every CAP one process issues judging the packs in order."""
    with tempfile.TemporaryDirectory() as tmp:
        config = CentralConfig.model_validate({"storage": {"url": f"sqlite:///{tmp}/ref.db"}})
        service = CentralService(config)
        issued: Counter[tuple[str, str, str]] = Counter()
        now = time.time()
        for topic, pack in packs:
            for m in service.pipeline.handle([Inbound(topic, encode_pack(pack), None, now)]):
                if m.warning_type == "gas_leak":
                    issued[m.asset, m.msg_type, m.level] += 1
        service.store.close()
    return issued


class Listener:
    def __init__(self) -> None:
        self.confirmed: set[tuple[str, int, int]] = set()
        self.caps: list[dict] = []

    async def run(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = bytes(message.payload)  # type: ignore[arg-type]
            if message.topic.matches(ALERTS_TOPIC):
                self.caps.append(parse_cap(payload))
                continue
            gateway = str(message.topic).split("/")[3]
            body = json.loads(payload)
            for first, last in body["sq"]:
                self.confirmed.update((gateway, body["ep"], s) for s in range(first, last + 1))


async def publish_all(port: int, tag: str, packs: list[tuple[str, Pack]]) -> None:
    by_gateway: dict[str, list[tuple[str, bytes]]] = {}
    for topic, pack in packs:
        by_gateway.setdefault(pack.gateway, []).append((topic, encode_pack(pack)))

    async def one_gateway(gateway: str, items: list[tuple[str, bytes]]) -> None:
        async with aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier=f"{tag}-{gateway}",
            protocol=aiomqtt.ProtocolVersion.V5,
            max_queued_outgoing_messages=len(items) + 10,
        ) as client:
            for topic, payload in items:
                await client.publish(topic, payload, qos=1)

    async with asyncio.TaskGroup() as tg:
        for gateway, items in by_gateway.items():
            tg.create_task(one_gateway(gateway, items))


def count(url: str, sql: str) -> int:
    db = open_database(url)
    try:
        return int(db.execute(sql).fetchone()[0])
    finally:
        db.close()


async def scenario(
    work: Path, name: str, n_workers: int, shared: bool, packs: list, expected: Counter, args: Any
) -> dict:
    total_packs = len(packs)
    readings = sum(len(p.records) for _, p in packs)
    gateways = sorted({p.gateway for _, p in packs})
    n_caps = sum(expected.values())
    group = f"bench{uuid.uuid4().hex[:6]}"
    with Mosquitto(work) as broker, pg_schema(args.pg, "workers") as url:
        # Every table once, before the workers start together.
        CentralService(CentralConfig.model_validate({"storage": {"url": url}})).store.close()
        workers = [
            CentralWorker(
                work, f"{name}-{i}", broker.url, url, shared_group=group if shared else None
            )
            for i in range(n_workers)
        ]
        listener = Listener()
        try:
            for w in workers:
                w.start()
            for w in workers:
                await w.subscribed()
            async with aiomqtt.Client(
                "127.0.0.1",
                broker.port,
                identifier=f"{group}-listener",
                protocol=aiomqtt.ProtocolVersion.V5,
            ) as client:
                for gateway in gateways:
                    await client.subscribe(ack_topic(SITE, gateway), qos=1)
                await client.subscribe(ALERTS_TOPIC, qos=1)
                listen = asyncio.create_task(listener.run(client))
                started = time.monotonic()
                await publish_all(broker.port, group, packs)
                published_s = time.monotonic() - started
                deadline = time.monotonic() + args.timeout
                db = open_database(url)
                try:
                    while time.monotonic() < deadline:
                        stored = int(db.execute("SELECT COUNT(*) FROM packs_seen").fetchone()[0])
                        queued = int(db.execute("SELECT COUNT(*) FROM pack_queue").fetchone()[0])
                        if stored >= total_packs and queued == 0 and len(listener.caps) >= n_caps:
                            break
                        await asyncio.sleep(0.05)
                    done_s = time.monotonic() - started
                    await asyncio.sleep(1.0)  # late confirmations and duplicates, if any
                    stored_readings = int(db.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
                    doubled = int(
                        db.execute(
                            "SELECT COUNT(*) FROM (SELECT gateway, device, quantity, t"
                            " FROM readings GROUP BY gateway, device, quantity, t"
                            " HAVING COUNT(*) > 1) d"
                        ).fetchone()[0]
                    )
                    alerts = db.execute(
                        "SELECT asset, msg_type, level FROM alerts WHERE warning_type = 'gas_leak'"
                    ).fetchall()
                finally:
                    db.close()
                listen.cancel()
        finally:
            for w in workers:
                w.stop()
    issued = Counter((a, m, lvl) for a, m, lvl in alerts)
    heard = Counter(cap["identifier"] for cap in listener.caps)
    return {
        "scenario": name,
        "workers": n_workers,
        "readings/s": readings / done_s,
        "publish s": published_s,
        "stored": stored_readings,
        "published": readings,
        "duplicates": doubled,
        "confirmed packs": len(listener.confirmed),
        "CAP issued": sum(issued.values()),
        "CAP expected": n_caps,
        "CAP as one process": issued == expected,
        "CAP heard twice": sum(1 for c in heard.values() if c > 1),
        "CAP heard": len(heard),
    }


async def run(args: Any, report: Report) -> None:
    with workdir(args.keep, "central-workers") as work:
        for name, n, shared in (
            ("single", 1, False),
            ("shared x1", 1, True),
            ("shared x2", 2, True),
        ):
            # Live data, made afresh for each scenario: 200 devices per gateway, event times
            # from now on (old ones would make every series look silent to the liveness
            # rules, and 2,000 offline warnings at once are another benchmark).
            packs = fleet_packs(
                args.readings, gateways=10, devices=200, per_pack=50, start=time.time() + 2
            )
            expected = reference(packs)
            row = await scenario(work, name.replace(" ", ""), n, shared, packs, expected, args)
            row["scenario"] = name
            report.rows.append(row)
            report.say(args.json, f"  done {name}")
    by_name = {r["scenario"]: r for r in report.rows}
    for row in report.rows:
        ok = (
            row["stored"] == row["published"]
            and row["duplicates"] == 0
            and row["confirmed packs"] * 50 == row["published"]
            and row["CAP as one process"]
            and row["CAP heard twice"] == 0
        )
        report.targets.append(
            Target(
                f"{row['scenario']}: stored once, confirmed, CAP as one process", float(ok), 1, ">="
            )
        )
    if "shared x1" in by_name and "shared x2" in by_name:
        ratio = by_name["shared x2"]["readings/s"] / by_name["shared x1"]["readings/s"]
        report.notes.append(
            f"two workers / one: {ratio:.2f} (the machine has {os.cpu_count()} cores, shared"
            " with Mosquitto, PostgreSQL and the publisher)"
        )
    report.notes.append("CAP compared: gas_leak warnings (liveness ones depend on wall-clock)")


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--readings", type=int, help="readings per scenario")
    parser.add_argument("--pg", default=PG_DEFAULT, help="PostgreSQL server URL")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait per scenario")
    args = parser.parse_args(argv)
    args.readings = args.readings or (20_000 if args.quick else 200_000)
    report = Report("central_workers", args.quick)
    report.begin(args.json)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # paho's EBADF at client close
    version = pg_version(args.pg)
    report.params = {"readings": args.readings, "readings_per_pack": 50, "postgresql": version}
    if version.startswith("unavailable"):
        report.notes.append(f"PostgreSQL {version} at {args.pg}: nothing to measure")
    else:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(args, report))
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
