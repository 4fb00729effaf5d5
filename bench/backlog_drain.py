"""Drain an outage's backlog: 1,000,000 readings from the outbox into central's store.

``python -m bench.backlog_drain [--json] [--quick] [--readings N] [--replay-rate PACKS_S]``

The outbox is filled as a gateway's would be after an outage (gas-detector polls, packs of
250 records, one pack per append). Then Mosquitto (own process) and central (own process,
``python -m provisioning.cli central run``, so it has the other core as in production)
start, and an Uplink in this process drains the outbox. The clock runs from the uplink's
start until central has committed the last reading (a watcher polls central's
``packs_seen``); the store is then checked: rows stored == readings produced, and no
reading stored twice. Target: ≤ 60 s for 1,000,000 readings.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from bench.common import (
    CentralProcess,
    CpuMeter,
    Mosquitto,
    Report,
    StoreWatcher,
    Target,
    base_parser,
    check_store,
    fill_outbox,
    make_gateway,
    running_uplink,
    workdir,
)
from gateway.config import UplinkConfig


async def drain(args, report: Report) -> None:
    n: int = args.readings
    with workdir(args.keep, "backlog-drain") as work:
        gw = make_gateway(work / "outbox.db", "mqtt://127.0.0.1:1", replay_rate=args.replay_rate)
        started = time.perf_counter()
        fill_outbox(gw.outbox, n)
        fill_s = time.perf_counter() - started
        stats = gw.outbox.stats()
        report.say(
            args.json,
            f"  outbox filled: {stats.depth_records:,} readings in {stats.depth_packs:,} packs,"
            f" {stats.file_bytes / 1e6:.1f} MB, {fill_s:.1f} s",
        )
        with Mosquitto(work) as broker, CentralProcess(work, broker.url) as central:
            await central.ready()
            gw = make_gateway(
                work / "outbox.db", broker.url, replay_rate=args.replay_rate, outbox=gw.outbox
            )
            meter = CpuMeter(
                {
                    "bench (uplink)": os.getpid(),
                    "central": central.proc.pid if central.proc else None,
                    "mosquitto": broker.proc.pid if broker.proc else None,
                }
            )
            with StoreWatcher(central.db, interval_s=0.02) as watcher:
                meter.start()
                t0 = time.monotonic()
                progress: list[tuple[float, int]] = []
                async with running_uplink(gw.uplink):
                    deadline = t0 + args.limit
                    next_print = t0 + 5
                    while watcher.stored < n and time.monotonic() < deadline:
                        await asyncio.sleep(0.02)
                        if watcher.error is not None:
                            raise watcher.error
                        now = time.monotonic()
                        if now >= next_print:
                            progress.append((now - t0, watcher.stored))
                            report.say(
                                args.json,
                                f"  {now - t0:5.1f} s: {watcher.stored:,} stored,"
                                f" outbox {gw.outbox.depth():,} packs",
                            )
                            next_print += 5
                    elapsed = time.monotonic() - t0
                    cpu = meter.stop()
                    drained = watcher.stored >= n
            check = check_store(central.db)
    produced = stats.records_appended
    rate = watcher.stored / elapsed if elapsed else 0.0
    report.rows.append(
        {
            "readings": n,
            "packs": stats.depth_packs,
            "drained": drained,
            "time s": elapsed,
            "readings/s": rate,
            "stored": check.readings,
            "produced": produced,
            "dup stored": check.duplicate_readings,
            "dup packs dropped": check.duplicate_packs_dropped,
        }
    )
    for name, share in cpu.items():
        report.notes.append(f"CPU during the drain: {name} {share:.2f} of a core")
    report.notes.append(f"outbox fill (1 pack of 250 per append): {n / fill_s:,.0f} readings/s")
    complete = check.complete(produced)
    report.notes.append(
        f"stored == produced and no duplicates: {complete}"
        f" ({check.readings:,} stored, {produced:,} produced)"
    )
    scale = 1_000_000 / n
    report.targets.append(
        Target(
            "1,000,000-reading backlog drained into central"
            + ("" if n == 1_000_000 else f" (extrapolated from {n:,})"),
            elapsed * scale if drained and complete else None,
            60,
            "<=",
            " s",
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--readings", type=int, help="backlog size (default 1,000,000)")
    parser.add_argument(
        "--replay-rate",
        type=float,
        default=1e6,
        help="uplink replay rate in packs/s (product default"
        f" {UplinkConfig().replay_rate_packs_s:g}; default here: unbounded)",
    )
    args = parser.parse_args(argv)
    args.readings = args.readings or (30_000 if args.quick else 1_000_000)
    args.limit = 12.0 if args.quick else 150.0
    report = Report("backlog_drain", args.quick)
    report.begin(args.json)
    report.params = {
        "readings": args.readings,
        "records_per_pack": UplinkConfig().pack_max_records,
        "window": UplinkConfig().window,
        "replay_rate_packs_s": args.replay_rate,
        "central": "subprocess",
    }
    asyncio.run(drain(args, report))
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
