"""Plumbing shared by the central benches: databases, a fleet's packs, batching as central does.

PostgreSQL runs go into a private schema (``bench_<pid>_<random>``) of the server given by
``--pg`` (default the local test server) and drop it afterwards; SQLite runs use a file in
the bench's working directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

from cloud_bridge.mqtt import telemetry_topic
from cloud_bridge.senml import Pack, Record, encode_pack
from provisioning.localnet import free_port, stop_process

REPO_ROOT = Path(__file__).resolve().parents[1]

PG_DEFAULT = os.environ.get("SENTRYLINE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
SITE = "site-bench"
QUANTITIES = ("ch4_lel", "temperature", "humidity", "co_ppm")


def schema_url(server: str, schema: str) -> str:
    sep = "&" if "?" in server else "?"
    return f"{server}{sep}options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def pg_schema(server: str, prefix: str = "bench") -> Iterator[str]:
    """A fresh schema on ``server``: yields its URL, drops it (and everything in it) after."""
    import psycopg

    schema = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema_url(server, schema)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def database_url(backend: str, work: Path, pg_server: str, name: str) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{work / f'{name}.db'}"
    else:
        with pg_schema(pg_server, prefix=name.replace("-", "_")) as url:
            yield url


def pg_version(server: str) -> str:
    try:
        import psycopg

        with psycopg.connect(server, autocommit=True, connect_timeout=3) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])
    except Exception as exc:  # the bench says so and goes on with SQLite
        return f"unavailable ({type(exc).__name__})"


def fleet_packs(
    n_readings: int,
    gateways: int = 10,
    devices: int = 20,
    per_pack: int = 50,
    start: float | None = None,
    seed: int = 7,
) -> list[tuple[str, Pack]]:
    """(topic, pack) for ``n_readings`` readings of a fleet, each gateway's packs in order.

    Each device reports one quantity once a second (a quarter of them CH4, which the gas
    rule judges; quiet values, with one leak per gateway so warnings are issued too).
    """
    rng = random.Random(seed)
    per_gateway = n_readings // gateways
    # Recent event times (central never judges readings from the future).
    start = start if start is not None else time.time() - per_gateway // devices - 60
    out: list[tuple[str, Pack]] = []
    packs_by_gateway: list[list[Pack]] = []
    for g in range(gateways):
        gateway = f"gw-{g:03d}"
        records: list[Record] = []
        span = max(per_gateway // devices, 3)
        leak_device = rng.randrange(devices // 4) * 4  # a CH4 device
        for i in range(per_gateway):
            d = i % devices
            t = start + i // devices
            quantity = QUANTITIES[d % len(QUANTITIES)]
            if quantity == "ch4_lel":
                leaking = d == leak_device and span / 3 <= t - start < span * 2 / 3
                value = 0.3 if leaking else round(rng.uniform(0.0, 0.04), 4)
                unit = "/"
            else:
                value = round(rng.uniform(10, 30), 2)
                unit = "Cel" if quantity == "temperature" else None
            records.append(Record(f"dev-{d:03d}/{quantity}", t, value, unit))
        packs = [
            Pack(gateway, 1, seq, tuple(records[i : i + per_pack]))
            for seq, i in enumerate(range(0, len(records), per_pack))
        ]
        packs_by_gateway.append(packs)
    # Interleave the gateways as a broker would deliver them.
    for step in range(max(len(p) for p in packs_by_gateway)):
        for packs in packs_by_gateway:
            if step < len(packs):
                out.append((telemetry_topic(SITE, packs[step].gateway), packs[step]))
    return out


def wire_batches(
    packs: list[tuple[str, Pack]], max_count: int = 512, max_bytes: int = 128 * 1024
) -> list[list[tuple[str, bytes]]]:
    """(topic, SenML JSON) messages in batches bounded as central bounds its transactions."""
    batches: list[list[tuple[str, bytes]]] = []
    batch: list[tuple[str, bytes]] = []
    size = 0
    for topic, pack in packs:
        payload = encode_pack(pack)
        batch.append((topic, payload))
        size += len(payload)
        if len(batch) >= max_count or size >= max_bytes:
            batches.append(batch)
            batch, size = [], 0
    if batch:
        batches.append(batch)
    return batches


class CentralWorker:
    """``sentryline central run`` as its own process on a given storage URL (one worker of
    several when ``shared``); stopped by PID."""

    def __init__(
        self,
        work: Path,
        name: str,
        broker_url: str,
        storage_url: str,
        *,
        shared_group: str | None = None,
        reorder_wait_s: float | None = None,
        extra: str = "",
    ) -> None:
        self.name = name
        self.log = work / f"{name}.log"
        self.config = work / f"{name}.yaml"
        self.http_port = free_port()
        lines = [
            f"broker: {{url: '{broker_url}'}}",
            f"storage: {{url: '{storage_url}'}}",
            f"http: {{host: 127.0.0.1, port: {self.http_port}}}",
            f"client_id: bench-{name}-{os.getpid()}-{self.http_port}",
        ]
        if shared_group:
            reorder = "" if reorder_wait_s is None else f", reorder_wait_s: {reorder_wait_s}"
            lines.append(f"workers: {{mode: shared, group: {shared_group}{reorder}}}")
        self.config.write_text("\n".join(lines) + "\n" + extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self._subscribed_before = 0

    def start(self) -> CentralWorker:
        self._subscribed_before = self.log_text().count("central: subscribed")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "provisioning.cli",
                    "central",
                    "run",
                    "--config",
                    str(self.config),
                    "--log-level",
                    "info",
                ],
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def subscribed(self, within_s: float = 60.0) -> None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.log_text().count("central: subscribed") > self._subscribed_before:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_text()[-3000:]}")
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} not subscribed after {within_s}s")

    @property
    def is_leader(self) -> bool:
        return "is the leader" in self.log_text()

    def kill(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)
        self.proc = None


# -- `sentryline bench central-…` ----------------------------------------------------------
# Every option goes through to the bench's own parser; the bench (and central with it) is
# imported only when the command runs, so `sentryline` itself starts fast.
CLI_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _command(module: str, doc: str) -> Callable[[typer.Context], None]:
    def command(ctx: typer.Context) -> None:
        raise typer.Exit(importlib.import_module(f"bench.{module}").main(ctx.args))

    command.__doc__ = f"{doc}\n\nOptions as for ``python -m bench.{module} --help``."
    return command


ingest_cli = _command(
    "central_ingest", "Central ingest + rules readings/s, SQLite and PostgreSQL, vs raw inserts."
)
latency_cli = _command(
    "central_latency", "Reading published → CAP heard, idle and under 10,000 readings/s."
)
workers_cli = _command(
    "central_workers", "One central worker vs two on PostgreSQL: throughput and correctness."
)
