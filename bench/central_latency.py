"""Reading published → CAP published, idle and under a background of 10,000 readings/s.

``python -m bench.central_latency [--json] [--quick] [--rate R] [--duration S]
[--backends sqlite,postgresql] [--pg URL]``  (also ``sentryline bench central-latency``)

Central runs as its own process (``sentryline central run``) with a private Mosquitto. A
gateway-like publisher here sends, over MQTT 5 with QoS 1 as gateways do:

* background: ``--rate`` readings/s as SenML packs of 50 from 10 gateways (quiet values: a
  quarter of them CH4, which the rules judge);
* alarms: every ``--spacing`` s, a gas detector never seen before reports 55 %LEL in a pack
  of its own; one sample above orange raises a fresh CAP ``Alert`` for its asset.

An alarm's latency is (its CAP's arrival on ``sentryline/v1/alerts`` at a subscriber here)
− (the moment its pack was handed to the MQTT client); one clock. An alarm whose CAP never
arrives counts as infinitely late. Each scenario starts central afresh. Target: p99 ≤ 200 ms
under the background load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt

from bench.central_common import (
    PG_DEFAULT,
    SITE,
    CentralWorker,
    database_url,
    fleet_packs,
    pg_version,
)
from bench.common import Mosquitto, Report, Target, base_parser, percentile, workdir
from central.cap import parse_cap
from cloud_bridge.mqtt import ALERTS_TOPIC, telemetry_topic
from cloud_bridge.senml import Pack, Record, encode_pack

ALARM_GATEWAY = "gw-alarm"
ALARM_LEL = 0.55
PER_PACK = 50


class CapArrivals:
    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.ready = asyncio.Event()
        self._changed = asyncio.Event()

    async def wait_for(self, assets: set[str]) -> None:
        while not assets <= self.first.keys():
            self._changed.clear()
            await self._changed.wait()

    async def run(self, port: int) -> None:
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier=f"bench-caps-{os.getpid()}-{port}"
        ) as client:
            await client.subscribe(ALERTS_TOPIC, qos=1)
            self.ready.set()
            async for message in client.messages:
                arrived = time.time()
                cap = parse_cap(bytes(message.payload))  # type: ignore[arg-type]
                asset = cap["parameters"].get("ASSET_ID")
                if asset and cap["msgType"] == "Alert":
                    self.first.setdefault(asset, arrived)
                    self._changed.set()


async def background(
    client: aiomqtt.Client, rate: float, duration: float, stop: asyncio.Event
) -> int:
    """``rate`` readings/s in packs of 50 from 10 gateways, paced on the wall clock."""
    if rate <= 0:
        return 0
    n = int(rate * duration) + PER_PACK * 10
    packs = fleet_packs(n, gateways=10, devices=20, per_pack=PER_PACK, start=time.time())
    payloads = [(topic, encode_pack(pack)) for topic, pack in packs]
    interval = PER_PACK / rate
    started = time.monotonic()
    sent = 0
    for i, (topic, payload) in enumerate(payloads):
        if stop.is_set():
            break
        delay = started + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await client.publish(topic, payload, qos=1)
        sent += PER_PACK
    return sent


async def alarms(client: aiomqtt.Client, count: int, spacing: float, tag: str) -> dict[str, float]:
    sent: dict[str, float] = {}
    topic = telemetry_topic(SITE, ALARM_GATEWAY)
    for i in range(count):
        await asyncio.sleep(spacing)
        device = f"gas-{tag}-{i:04d}"
        pack = Pack(
            ALARM_GATEWAY, 1, i, (Record(f"{device}/ch4_lel", time.time(), ALARM_LEL, "/"),)
        )
        payload = encode_pack(pack)
        sent[f"{ALARM_GATEWAY}.{device}"] = time.time()
        await client.publish(topic, payload, qos=1)
    return sent


async def scenario(work: Path, name: str, storage_url: str, rate: float, args: Any) -> dict:
    with Mosquitto(work) as broker:
        extra = f"ingest_batch_max_bytes: {args.batch_bytes}\n" if args.batch_bytes else ""
        central = CentralWorker(
            work, f"central-{name}", broker.url, storage_url, extra=extra
        ).start()
        try:
            await central.subscribed()
            caps = CapArrivals()
            cap_task = asyncio.create_task(caps.run(broker.port))
            await asyncio.wait_for(caps.ready.wait(), 10)
            stop = asyncio.Event()
            async with (
                aiomqtt.Client(
                    "127.0.0.1",
                    broker.port,
                    identifier=f"bench-bg-{os.getpid()}-{broker.port}",
                    protocol=aiomqtt.ProtocolVersion.V5,
                    max_queued_outgoing_messages=100_000,
                ) as bg_client,
                aiomqtt.Client(
                    "127.0.0.1",
                    broker.port,
                    identifier=f"bench-alarm-{os.getpid()}-{broker.port}",
                    protocol=aiomqtt.ProtocolVersion.V5,
                ) as alarm_client,
            ):
                duration = args.alarms * args.spacing + 1.0
                started = time.monotonic()
                bg = asyncio.create_task(background(bg_client, rate, duration, stop))
                await asyncio.sleep(1.0 if rate else 0)  # the load is on before the first alarm
                sent = await alarms(alarm_client, args.alarms, args.spacing, name)
                stop.set()
                published = await bg
                elapsed = time.monotonic() - started
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await caps.wait_for(set(sent))
            cap_task.cancel()
            if cap_task.done() and not cap_task.cancelled() and cap_task.exception():
                raise RuntimeError(f"CAP subscriber failed: {cap_task.exception()!r}")
        finally:
            central.stop()
    missing = sorted(a for a in sent if a not in caps.first)
    if missing:
        print(f"{name}: no CAP heard for {missing}", file=sys.stderr)
    latencies = [
        (caps.first[asset] - at) * 1000 if asset in caps.first else math.inf
        for asset, at in sent.items()
    ]
    return {
        "scenario": name,
        "background readings/s": published / elapsed if rate else 0.0,
        "alarms": len(sent),
        "CAP received": sum(1 for a in sent if a in caps.first),
        "p50 ms": percentile(latencies, 50),
        "p99 ms": percentile(latencies, 99),
        "max ms": max(latencies) if latencies else math.nan,
    }


async def run(args: Any, report: Report) -> None:
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    with workdir(args.keep, "central-latency") as work:
        for backend in backends:
            if backend == "postgresql" and pg_version(args.pg).startswith("unavailable"):
                report.notes.append(f"PostgreSQL unavailable at {args.pg}: skipped")
                continue
            for load_name, rate in (("idle", 0.0), ("loaded", args.rate)):
                name = f"{backend}-{load_name}"
                with database_url(backend, work, args.pg, f"latency-{load_name}") as url:
                    row = await scenario(work, name, url, rate, args)
                report.rows.append(row)
                report.say(args.json, f"  done {name}")
                if load_name == "loaded":
                    report.targets.append(
                        Target(
                            f"reading → CAP p99 under {rate:,.0f} readings/s ({backend})",
                            row["p99 ms"],
                            200,
                            "<=",
                            " ms",
                        )
                    )


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--rate", type=float, default=10_000, help="background readings/s")
    parser.add_argument("--alarms", type=int, help="alarms per scenario")
    parser.add_argument("--spacing", type=float, default=0.25, help="seconds between alarms")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg", default=PG_DEFAULT, help="PostgreSQL server URL")
    parser.add_argument(
        "--batch-bytes", type=int, help="central's ingest_batch_max_bytes (default: its own)"
    )
    args = parser.parse_args(argv)
    if args.alarms is None:
        args.alarms = 20 if args.quick else 100
    report = Report("central_latency", args.quick)
    report.begin(args.json)
    # paho registers a writer on the background client's socket as it closes with publishes
    # just handed over; asyncio logs that harmless EBADF at teardown as an error.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    report.params = {
        "background_readings_s": args.rate,
        "readings_per_pack": PER_PACK,
        "alarms": args.alarms,
        "spacing_s": args.spacing,
        "central_batch_bytes": args.batch_bytes or "default (128 KiB)",
    }
    asyncio.run(run(args, report))
    report.notes.append(
        "latency = CAP Alert arrival at a subscriber − alarm pack handed to the MQTT client"
        " (one clock); central, Mosquitto and this publisher share the machine's cores"
    )
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
