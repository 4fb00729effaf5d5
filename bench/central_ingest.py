"""Central ingest throughput: decode → store → rules, SQLite and PostgreSQL, vs raw inserts.

``python -m bench.central_ingest [--json] [--quick] [--readings N] [--backends sqlite,postgresql]
[--pg URL] [--profile]``  (also ``sentryline bench central-ingest``)

The real pipeline of a single-process central (``CentralService(config).pipeline.handle``,
the path its MQTT loop calls) takes a fleet's SenML JSON packs in batches bounded as the
service bounds them (512 messages, 128 KiB) and is timed from the first batch to the last
commit. No broker: this isolates central's own cost per reading.

Baseline, same run, same backend: raw ``executemany`` of the very same reading rows into a
bare ``readings`` table with the same indexes, one transaction per batch — what storing
alone costs with nothing decoded, deduplicated, counted or judged.

Targets: ≥ 30,000 readings/s on SQLite, ≥ 15,000/s on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import sys
import time

from bench.central_common import PG_DEFAULT, database_url, fleet_packs, pg_version, wire_batches
from bench.common import Report, Target, base_parser, workdir
from central.config import CentralConfig
from central.db import open_database
from central.ingest import Inbound
from central.service import CentralService
from cloud_bridge.senml import Pack

TARGETS = {"sqlite": 30_000, "postgresql": 15_000}
COLUMNS = (
    "gateway",
    "device",
    "quantity",
    "t",
    "v",
    "vs",
    "vb",
    "unit",
    "ut",
    "q",
    "epoch",
    "seq",
    "tq",
)
ROW_SQL = (
    "INSERT INTO readings (gateway, device, quantity, t, v, vs, vb, unit, ut, q, epoch, seq, tq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def pipeline_run(url: str, batches: list, profile: bool) -> tuple[float, dict, str]:
    config = CentralConfig.model_validate({"storage": {"url": url}})
    service = CentralService(config)
    pipeline = service.pipeline
    profiler = cProfile.Profile() if profile else None
    issued = 0
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    for batch in batches:
        now = time.time()
        issued += len(
            pipeline.handle([Inbound(topic, payload, None, now) for topic, payload in batch])
        )
        pipeline.take_confirmations()
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    stats = service.store.stats()["totals"]
    service.store.close()
    text = ""
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        text = out.getvalue()
    return elapsed, {"stored": stats["stored"], "issued": issued}, text


def rows_of(pack: Pack) -> list[tuple]:
    rows = []
    for r in pack.records:
        rows.append(
            (
                pack.gateway,
                r.device,
                r.quantity,
                r.time,
                r.value,
                None,
                None,
                r.unit,
                r.update_time,
                r.quality,
                pack.epoch,
                pack.seq,
                0,
            )
        )
    return rows


def baseline_run(url: str, row_batches: list[list[tuple]], copy: bool = False) -> float:
    """Raw executemany (or, on PostgreSQL, COPY) into a bare readings table with the same
    columns and indexes as central's."""
    db = open_database(url)
    db.script(
        "CREATE TABLE readings (gateway TEXT NOT NULL, device TEXT NOT NULL,"
        " quantity TEXT NOT NULL, t DOUBLE PRECISION NOT NULL, v DOUBLE PRECISION, vs TEXT,"
        " vb INTEGER, unit TEXT,"
        " ut DOUBLE PRECISION, q INTEGER, epoch BIGINT NOT NULL, seq BIGINT NOT NULL,"
        " tq INTEGER NOT NULL DEFAULT 0);"
        "CREATE INDEX readings_by_series ON readings (gateway, device, quantity, t);"
        "CREATE INDEX readings_by_time ON readings (t);"
    )
    started = time.perf_counter()
    for rows in row_batches:
        with db.transaction():
            if copy:
                db.copy_rows("readings", COLUMNS, rows)  # type: ignore[attr-defined]
            else:
                db.executemany(ROW_SQL, rows)
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--readings", type=int, help="readings per run")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg", default=PG_DEFAULT, help="PostgreSQL server URL")
    parser.add_argument("--repeats", type=int, help="best of this many runs")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    args = parser.parse_args(argv)
    report = Report("central_ingest", args.quick)
    report.begin(args.json)
    n = args.readings or (20_000 if args.quick else 200_000)
    repeats = args.repeats or (1 if args.quick else 3)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    packs = fleet_packs(n)
    batches = wire_batches(packs)
    row_batches: list[list[tuple]] = []
    i = 0
    for batch in batches:
        rows: list[tuple] = []
        for _ in batch:
            rows += rows_of(packs[i][1])
            i += 1
        row_batches.append(rows)
    readings = sum(len(p.records) for _, p in packs)
    version = pg_version(args.pg) if "postgresql" in backends else "-"
    report.params = {
        "readings": readings,
        "packs": len(packs),
        "records_per_pack": 50,
        "batches": len(batches),
        "best_of": repeats,
        "postgresql": version,
    }
    with workdir(args.keep, "central-ingest") as work:
        for backend in backends:
            if backend == "postgresql" and version.startswith("unavailable"):
                report.notes.append(f"PostgreSQL {version} at {args.pg}: skipped")
                continue
            best_pipe = best_raw = best_copy = float("inf")
            result: dict = {}
            for rep in range(repeats):
                with database_url(backend, work, args.pg, f"ingest-{rep}") as url:
                    elapsed, result, profile = pipeline_run(url, batches, args.profile and rep == 0)
                    best_pipe = min(best_pipe, elapsed)
                    if profile:
                        report.notes.append(f"profile ({backend}):\n{profile}")
                with database_url(backend, work, args.pg, f"raw-{rep}") as url:
                    best_raw = min(best_raw, baseline_run(url, row_batches))
                if backend == "postgresql":
                    with database_url(backend, work, args.pg, f"copy-{rep}") as url:
                        best_copy = min(best_copy, baseline_run(url, row_batches, copy=True))
                for p in work.glob("*.db*"):
                    with contextlib.suppress(OSError):
                        p.unlink()
            if result.get("stored") != readings:
                report.notes.append(f"{backend}: stored {result.get('stored')} of {readings}!")
            rate, raw_rate = readings / best_pipe, readings / best_raw
            report.rows.append(
                {
                    "backend": backend,
                    "pipeline/s": rate,
                    "raw executemany/s": raw_rate,
                    "pipeline/raw": rate / raw_rate,
                    "raw COPY/s": readings / best_copy if backend == "postgresql" else None,
                    "pipeline/COPY": rate * best_copy / readings
                    if backend == "postgresql"
                    else None,
                    "stored": result.get("stored"),
                    "CAP issued": result.get("issued"),
                }
            )
            report.targets.append(
                Target(f"central ingest + rules on {backend}", rate, TARGETS[backend], ">=", "/s")
            )
            report.say(args.json, f"  done {backend}")
    report.notes.append(
        "pipeline = decode SenML JSON, dedup (packs_seen), store readings, device stats, judge"
        " the rules (a quarter of the readings are CH4), issue CAP; single process, no broker"
    )
    report.notes.append(
        "baseline = executemany of the same rows into a bare readings table with the same two"
        " indexes, one transaction per batch (nothing decoded, deduplicated or judged);"
        " on PostgreSQL also raw COPY, the way central writes readings there"
    )
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
