"""Shared bench plumbing: the machine line, reports, child processes, probes, devices.

Every bench prints the machine first (the figures are only comparable on the same one),
binds loopback only, and stops every process it started by PID in a ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from cloud_bridge.mqtt import BrokerSettings, telemetry_topic
from cloud_bridge.outbox import Outbox
from cloud_bridge.senml import Pack, Record, encode_pack
from cloud_bridge.uplink import Uplink
from gateway.config import UplinkConfig
from gateway.daemon import PackBuilder
from provisioning.localnet import Mosquitto as LocalMosquitto
from provisioning.localnet import free_port, stop_process, wait_for_port

REPO_ROOT = Path(__file__).resolve().parents[1]
GATEWAY = "gw-bench"
SITE = "site-bench"

# -- the machine ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Machine:
    cpu: str
    cores: int
    python: str
    sqlite: str
    load: float

    @property
    def line(self) -> str:
        return (
            f"machine: {self.cpu}, {self.cores} cores, Python {self.python},"
            f" SQLite {self.sqlite}, load average {self.load:.2f} at start"
        )


def machine() -> Machine:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return Machine(
        cpu=cpu,
        cores=os.cpu_count() or 1,
        python=platform.python_version(),
        sqlite=sqlite3.sqlite_version,
        load=os.getloadavg()[0],
    )


# -- reports -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One target of the issue: ``value`` compared with ``limit`` (``<=`` or ``>=``)."""

    name: str
    value: float | None
    limit: float
    op: str  # "<=", ">=" or "<"
    unit: str = ""

    @property
    def met(self) -> bool:
        if self.value is None or math.isnan(self.value):
            return False
        if self.op == "<=":
            return self.value <= self.limit
        if self.op == "<":
            return self.value < self.limit
        return self.value >= self.limit


@dataclass
class Report:
    """What a bench prints: the machine, its parameters, result rows and targets."""

    bench: str
    quick: bool
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: Machine = field(default_factory=machine)

    def begin(self, as_json: bool) -> None:
        """The machine line goes out first, before anything can fail."""
        quiet_logs()
        stop_on_sigterm()
        if not as_json:
            print(self.machine.line, flush=True)
            print(f"bench: {self.bench}{' (quick)' if self.quick else ''}", flush=True)

    def say(self, as_json: bool, text: str) -> None:
        if not as_json:
            print(text, flush=True)

    def as_dict(self) -> dict[str, Any]:
        return _finite(
            {
                "bench": self.bench,
                "quick": self.quick,
                "machine": self.machine.line,
                "params": self.params,
                "rows": self.rows,
                "targets": [
                    {
                        "name": t.name,
                        "value": t.value,
                        "limit": t.limit,
                        "op": t.op,
                        "unit": t.unit,
                        "met": t.met,
                    }
                    for t in self.targets
                ],
                "notes": self.notes,
            }
        )

    def emit(self, as_json: bool) -> None:
        if as_json:
            print(json.dumps(self.as_dict(), indent=1, default=_jsonable))
            return
        if self.params:
            print("params: " + ", ".join(f"{k}={v}" for k, v in self.params.items()))
        if self.rows:
            print(format_table(self.rows))
        for t in self.targets:
            value = "n/a" if t.value is None else f"{t.value:,.3f}".rstrip("0").rstrip(".")
            verdict = "MET" if t.met else "NOT MET"
            print(f"target: {t.name}: {value}{t.unit} (needs {t.op} {t.limit:g}{t.unit}) {verdict}")
        for note in self.notes:
            print(f"note: {note}")


def _finite(value: Any) -> Any:
    """Strict JSON: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {value!r}")


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return "" if value is None else str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` stops the processes it started."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def quiet_logs() -> None:
    """Warnings only; aiomqtt's "There are N pending publish calls" (one line per publish
    once more than 10 are in flight, and the uplink's window is 64) is silenced."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mqtt").setLevel(logging.ERROR)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--quick", action="store_true", help="a small run (< 20 s) for CI")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    return parser


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@contextlib.contextmanager
def workdir(keep: bool, prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"sentryline-{prefix}-"))
    try:
        yield path
    finally:
        if keep:
            print(f"kept working directory {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


# -- child processes -----------------------------------------------------------------------


def wait_port(port: int, timeout: float = 10.0) -> None:
    wait_for_port(port, timeout)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by named processes between ``start`` and ``stop``."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self._start: dict[str, float] = {}
        self._wall = 0.0
        self.used: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self._start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._wall = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._wall
        self.used = {name: cpu_seconds(pid) - self._start[name] for name, pid in self.pids.items()}
        # As a share of one core over the interval: 1.0 = one core busy all the time.
        return {name: used / wall for name, used in self.used.items()} if wall > 0 else {}


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


class Mosquitto(LocalMosquitto):
    """A private Mosquitto on a free loopback port, tuned as the benches need."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, max_inflight=1000)


class CentralProcess:
    """``python -m provisioning.cli central run`` on a fresh SQLite file (the other core)."""

    def __init__(self, workdir: Path, broker_url: str, *, batch_max: int | None = None) -> None:
        self.workdir = workdir
        self.db = workdir / "central.db"
        self.log = workdir / "central.log"
        self.http_port = free_port()
        self.config = workdir / "central.yaml"
        lines = [
            f"broker: {{url: '{broker_url}'}}",
            f"storage: {{url: 'sqlite:///{self.db}'}}",
            f"http: {{host: 127.0.0.1, port: {self.http_port}}}",
            f"client_id: bench-central-{os.getpid()}-{self.http_port}",
        ]
        if batch_max is not None:
            lines.append(f"ingest_batch_max: {batch_max}")
        self.config.write_text("\n".join(lines) + "\n")
        self.broker = BrokerSettings(url=broker_url)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> CentralProcess:
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
                    "warning",
                ],
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        return self

    async def ready(self, within_s: float = 30.0) -> None:
        """Central is up once a probe pack published to the broker is stored.

        Central subscribes only after its HTTP API is up, and a pack published before the
        subscription is lost (no session yet), so the probe is re-sent until it is seen.
        """
        deadline = time.monotonic() + within_s
        probe = Pack("bench-probe", 1, 0, (Record("probe/x", time.time(), 0.0),))
        topic = telemetry_topic(SITE, "bench-probe")
        async with aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=f"bench-probe-{os.getpid()}",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"central exited early:\n{_tail(self.log)}")
                await client.publish(topic, encode_pack(probe), qos=1)
                for _ in range(10):
                    await asyncio.sleep(0.05)
                    if self._probe_seen():
                        return
        raise RuntimeError(f"central not ready after {within_s}s:\n{_tail(self.log)}")

    def _probe_seen(self) -> bool:
        if not self.db.exists():
            return False
        try:
            with contextlib.closing(sqlite3.connect(self.db, timeout=1)) as db:
                row = db.execute(
                    "SELECT 1 FROM packs_seen WHERE gateway = 'bench-probe' LIMIT 1"
                ).fetchone()
            return row is not None
        except sqlite3.Error:
            return False

    def __exit__(self, *_: object) -> None:
        stop_process(self.proc, timeout=20)
        self.proc = None


# -- watching central's store --------------------------------------------------------------


class StoreWatcher:
    """Polls central's ``packs_seen`` from a thread: when each pack became visible (stored).

    A pack's readings and its ``packs_seen`` row commit in one transaction, so the first
    poll that sees the row bounds the commit time from above; the stamp is that poll's start
    time, so a latency is overestimated by at most one poll interval (plus a GIL wait).
    """

    def __init__(self, db: Path, gateway: str = GATEWAY, interval_s: float = 0.005) -> None:
        self.db = db
        self.gateway = gateway
        self.interval_s = interval_s
        self.visible: dict[tuple[int, int], float] = {}
        # central's own stamp when it took the pack's batch off MQTT (before decoding it)
        self.received: dict[tuple[int, int], float] = {}
        self.stored = 0  # readings of ``gateway`` stored so far
        self.packs = 0
        self._last_rowid = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-watcher", daemon=True)
        self._listeners: list[Callable[[int], None]] = []
        self.error: BaseException | None = None

    def start(self) -> StoreWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __enter__(self) -> StoreWatcher:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            with contextlib.closing(sqlite3.connect(self.db, timeout=5)) as db:
                while not self._stop.is_set():
                    self.poll(db)
                    self._stop.wait(self.interval_s)
        except BaseException as exc:  # reported by the bench, never swallowed
            self.error = exc

    def poll(self, db: sqlite3.Connection) -> None:
        started = time.time()
        rows = db.execute(
            "SELECT rowid, epoch, seq, n_records, received_at FROM packs_seen"
            " WHERE rowid > ? AND gateway = ?",
            (self._last_rowid, self.gateway),
        ).fetchall()
        if not rows:
            return
        for rowid, epoch, seq, n, received_at in rows:
            self.visible.setdefault((epoch, seq), started)
            self.received.setdefault((epoch, seq), received_at)
            self.stored += n
            self._last_rowid = max(self._last_rowid, rowid)
        self.packs += len(rows)

    async def wait_stored(self, count: int, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while self.stored < count and time.monotonic() < deadline:
            if self.error is not None:
                raise self.error
            await asyncio.sleep(0.02)
        return self.stored >= count


@dataclass(frozen=True, slots=True)
class StoreCheck:
    readings: int
    duplicate_readings: int  # the same (device, quantity, time) stored more than once
    duplicate_packs_dropped: int  # central's own dedup counter

    def complete(self, produced: int) -> bool:
        """Every produced reading stored, none twice."""
        return self.readings == produced and self.duplicate_readings == 0


def check_store(db: Path, gateway: str = GATEWAY) -> StoreCheck:
    """Counts from central's file after the run: stored rows and duplicates."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        (readings,) = conn.execute(
            "SELECT COUNT(*) FROM readings WHERE gateway = ?", (gateway,)
        ).fetchone()
        (dups,) = conn.execute(
            "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM readings"
            " WHERE gateway = ? GROUP BY device, quantity, t HAVING COUNT(*) > 1)",
            (gateway,),
        ).fetchone()
        (dropped,) = conn.execute(
            "SELECT COALESCE(SUM(duplicates), 0) FROM device_stats WHERE gateway = ?",
            (gateway,),
        ).fetchone()
    return StoreCheck(int(readings), int(dups), int(dropped))


@dataclass
class Latencies:
    """Per reading, in seconds: read → stored, split at central's receipt of its batch."""

    total: list[float] = field(default_factory=list)
    to_central: list[float] = field(default_factory=list)  # read → central took it off MQTT
    in_central: list[float] = field(default_factory=list)  # → committed (decode, store, rules)

    def summary(self) -> dict[str, float]:
        return {
            "p50 ms": percentile(self.total, 50) * 1000,
            "p99 ms": percentile(self.total, 99) * 1000,
            "max ms": max(self.total, default=math.nan) * 1000,
            "p99 to central ms": percentile(self.to_central, 99) * 1000,
            "p99 in central ms": percentile(self.in_central, 99) * 1000,
        }


def read_to_stored_latencies(db: Path, watcher: StoreWatcher, gateway: str = GATEWAY) -> Latencies:
    """Per reading: when its pack became visible at central minus its read time."""
    out = Latencies()
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        for epoch, seq, t in conn.execute(
            "SELECT epoch, seq, t FROM readings WHERE gateway = ?", (gateway,)
        ):
            seen = watcher.visible.get((epoch, seq))
            if seen is None:
                continue
            received = watcher.received[(epoch, seq)]
            out.total.append(seen - t)
            out.to_central.append(received - t)
            out.in_central.append(seen - received)
    return out


# -- simulated gas detectors ---------------------------------------------------------------

# The gas-detector profile's points as the poller emits them: name, unit, value, quality.
_GAS_POINTS: tuple[tuple[str, str | None, float | int | bool | str, int | None], ...] = (
    ("ch4_lel", "/", 0.021, 1),
    ("ch4", "ppm", 1050, 1),
    ("co", "ppm", 1.2, 1),
    ("h2s", "ppm", 0.0, 1),
    ("o2", "/", 0.2088, 1),
    ("fault", None, False, None),
    ("alarm1", None, False, None),
    ("alarm2", None, False, None),
    ("sensor_state", None, "normal", None),
)
READINGS_PER_POLL = len(_GAS_POINTS)


def gas_poll(
    device: str, t: float, interval_s: float, ch4_lel: float | None = None
) -> list[Record]:
    """One poll of a gas detector, shaped exactly as ``ModbusDevicePoller`` emits it."""
    records = [
        Record(f"{device}/{name}", t, value, unit, interval_s, quality)
        for name, unit, value, quality in _GAS_POINTS
    ]
    if ch4_lel is not None:
        records[0] = Record(f"{device}/ch4_lel", t, ch4_lel, "/", interval_s, 1)
    return records


def backlog_polls(
    readings: int, devices: int, interval_s: float, end: float
) -> Iterator[list[Record]]:
    """Polls of ``devices`` detectors every ``interval_s`` up to ``end``: an outage's data."""
    polls = math.ceil(readings / READINGS_PER_POLL)
    rounds = math.ceil(polls / devices)
    start = end - rounds * interval_s
    emitted = 0
    for k in range(rounds):
        t = start + k * interval_s
        for d in range(devices):
            if emitted >= readings:
                return
            poll = gas_poll(f"bk-{d}", t + d * 1e-4, interval_s)[: readings - emitted]
            emitted += len(poll)
            yield poll


@dataclass
class SourceStats:
    polls: int = 0
    readings: int = 0
    late_s: float = 0.0  # the worst time the source fell behind its schedule


async def synthetic_devices(
    sink: Callable[[list[Record]], None],
    rate: float,
    duration_s: float,
    interval_s: float = 1.0,
    prefix: str = "gas",
    tick_s: float = 0.002,
) -> SourceStats:
    """Offer ``rate`` readings/s as polls of ``rate / 9 * interval_s`` detectors.

    Each poll is stamped with the wall time at which it is handed to ``sink`` (the read
    time, as a real poller stamps it when the registers arrive). Polls due while the loop
    was busy are emitted as soon as it is free, each with its own (later) read time.
    """
    stats = SourceStats()
    polls_per_s = rate / READINGS_PER_POLL
    devices = max(1, round(polls_per_s * interval_s))
    names = [f"{prefix}-{i}" for i in range(devices)]
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        elapsed = loop.time() - start
        if elapsed >= duration_s:
            break
        due = int(elapsed * polls_per_s) - stats.polls
        if due > 0:
            stats.late_s = max(stats.late_s, due / polls_per_s)
        _emit(sink, names, interval_s, due, stats)
        await asyncio.sleep(tick_s)
    # The schedule's last polls, so that exactly rate × duration readings are offered.
    _emit(sink, names, interval_s, round(duration_s * polls_per_s) - stats.polls, stats)
    return stats


def _emit(
    sink: Callable[[list[Record]], None],
    names: list[str],
    interval_s: float,
    count: int,
    stats: SourceStats,
) -> None:
    for _ in range(count):
        poll = gas_poll(names[stats.polls % len(names)], time.time(), interval_s)
        sink(poll)
        stats.polls += 1
        stats.readings += len(poll)


# -- the gateway side ----------------------------------------------------------------------


@dataclass
class Gateway:
    """Outbox → PackBuilder → Uplink wired as ``GatewayDaemon._build`` does, minus pollers."""

    outbox: Outbox
    builder: PackBuilder
    uplink: Uplink


def make_gateway(
    outbox_path: Path,
    broker_url: str,
    *,
    replay_rate: float | None = None,
    outbox: Outbox | None = None,
    max_bytes: int = 1024 * 1024 * 1024,
) -> Gateway:
    defaults = UplinkConfig()
    box = outbox or Outbox(outbox_path, GATEWAY, max_bytes=max_bytes)
    builder = PackBuilder(box, defaults.pack_max_records, defaults.pack_max_delay_s)
    uplink = Uplink(
        box,
        BrokerSettings(url=broker_url),
        site=SITE,
        gateway=GATEWAY,
        window=defaults.window,
        replay_rate=replay_rate if replay_rate is not None else defaults.replay_rate_packs_s,
    )
    return Gateway(box, builder, uplink)


def fill_outbox(outbox: Outbox, readings: int, devices: int = 100, interval_s: float = 1.0) -> int:
    """An outage's backlog, appended as the PackBuilder would (packs of 250 records)."""
    per_pack = UplinkConfig().pack_max_records
    pending: list[Record] = []
    for poll in backlog_polls(readings, devices, interval_s, end=time.time() - 60):
        pending.extend(poll)
        if len(pending) >= per_pack:
            outbox.append([pending[:per_pack]])
            pending = pending[per_pack:]
    if pending:
        outbox.append([pending])
    return readings


@contextlib.asynccontextmanager
async def running_uplink(uplink: Uplink) -> Any:
    """Run the uplink; on exit stop it and let it drain, then make sure the task is done."""
    stop = asyncio.Event()
    task = asyncio.create_task(uplink.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait({task}, timeout=60)
        await cancel_all(task)


async def cancel_all(*tasks: asyncio.Task[Any]) -> list[str]:
    """Cancel and reap; returns the names of tasks that would not stop (to report).

    Python 3.11's ``asyncio.wait_for`` swallows a cancellation that arrives as its inner
    wait completes, so a task can need more than one ``cancel()``.
    """
    stuck = []
    for task in tasks:
        for _ in range(20):
            if task.done():
                break
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        if not task.done():
            stuck.append(task.get_coro().__qualname__)
        if task.done() and not task.cancelled():
            with contextlib.suppress(Exception):
                task.result()
    return stuck
