"""Fault injection with real processes: kill the broker, the gateway, central; fill the disk;
corrupt the outbox. Every run prints produced, stored, duplicates dropped and evicted, and
checks: stored == produced - evicted - expired, evictions only where a bound forced them,
no reading stored twice.

    python -m bench.chaos            # the long form: every scenario, several minutes
    python -m bench.chaos --quick    # what CI runs (tests/test_faults.py uses the same rig)

"Produced" means appended to the gateway's outbox (sealed in a committed transaction);
readings still in the gateway's memory (≤ one pack delay, 50 ms) when it is SIGKILLed were
never produced in that sense.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from provisioning.localnet import Mosquitto, free_port, stop_process, wait_for_port

SITE, GATEWAY = "chaos-site", "gw-chaos"


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except sqlite3.OperationalError:
            pass  # a database file caught mid-restart (no -shm yet): look again
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


@dataclass
class Report:
    scenario: str
    produced: int = 0
    stored: int = 0
    duplicates_dropped: int = 0
    evicted: int = 0
    evicted_sent: int = 0  # of `evicted`: published before eviction, so possibly stored
    expired: int = 0
    lost_to_corruption: int = 0
    stored_twice: int = 0
    faults_injected: int = 0
    seconds: float = 0.0
    max_time_error_s: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class ChaosRig:
    """Real processes on loopback, each started and stopped (by PID) by this rig alone."""

    def __init__(
        self, workdir: Path, poll_interval: float = 0.05, max_file_bytes: int | None = None
    ) -> None:
        self.workdir = workdir
        self.broker = Mosquitto(workdir, persistence=True)
        self.broker_port = self.broker.port
        self.sim_port = free_port()
        self.http_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.outbox = workdir / "outbox.db"
        self.central_db = workdir / "central.db"
        self.before_corruption: dict[str, int] | None = None
        self._write_configs(poll_interval, max_file_bytes)

    # -- configuration -------------------------------------------------------------------
    def _write_configs(self, poll: float, max_file_bytes: int | None) -> None:
        url = self.broker.url
        central = {
            "broker": {"url": url},
            "storage": {"url": f"sqlite:///{self.central_db}"},
            "http": {"port": self.http_port},
            "client_id": "central-chaos",
        }
        outbox: dict[str, object] = {"path": str(self.outbox)}
        if max_file_bytes:
            outbox["max_file_bytes"] = max_file_bytes
        gateway = {
            "site": SITE,
            "gateway_id": GATEWAY,
            "broker": {"url": url},
            "outbox": outbox,
            "uplink": {"confirm_timeout_s": 3, "status_interval_s": 2},
            "devices": [
                {
                    "id": f"gas-{unit}",
                    "profile": "gas-detector",
                    "transport": {
                        "type": "modbus-tcp",
                        "port": self.sim_port,
                        "device_id": unit,
                        "timeout": 0.5,
                    },
                    "poll_interval": poll,
                }
                for unit in (1, 2)
            ],
        }
        (self.workdir / "central.yaml").write_text(yaml.safe_dump(central))
        (self.workdir / "gateway.yaml").write_text(yaml.safe_dump(gateway))

    # -- processes -----------------------------------------------------------------------
    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=None if env is None else os.environ | env,
        )

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "provisioning.cli", *args]

    def start_broker(self) -> None:
        self.broker.start()
        self.procs["broker"] = self.broker.proc  # type: ignore[assignment]

    def start_central(self) -> None:
        self._start(
            "central",
            self._cli(
                "central",
                "run",
                "--config",
                str(self.workdir / "central.yaml"),
                "--log-level",
                "warning",
            ),
        )
        wait_for_port(self.http_port, 20)

    def start_sim(self) -> None:
        self._start(
            "sim",
            self._cli(
                "sim", "run", "gas-leak", "--port", str(self.sim_port), "--loop", "--speed", "2"
            ),
        )
        wait_for_port(self.sim_port)

    def start_gateway(self, env: dict[str, str] | None = None) -> None:
        self._start(
            "gateway",
            self._cli(
                "gateway",
                "run",
                "--config",
                str(self.workdir / "gateway.yaml"),
                "--log-level",
                "warning",
            ),
            env,
        )

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 30) -> int:
        return stop_process(self.procs.pop(name), sig, timeout) or 0

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM, 10)

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    # -- observation ---------------------------------------------------------------------
    def outbox_counters(self) -> dict[str, int]:
        with contextlib.closing(_ro(self.outbox)) as db:
            return dict(db.execute("SELECT key, value FROM meta").fetchall())

    def outbox_depth(self) -> int:
        with contextlib.closing(_ro(self.outbox)) as db:
            return int(db.execute("SELECT COALESCE(SUM(n_records), 0) FROM packs").fetchone()[0])

    def stored(self) -> int:
        if not self.central_db.exists():
            return 0
        with contextlib.closing(_ro(self.central_db)) as db:
            return int(db.execute("SELECT COUNT(*) FROM readings").fetchone()[0])

    def corrupt_outbox(self) -> None:
        """Overwrite the body of the (stopped) gateway's outbox with garbage.

        What it had produced, and what it still held undelivered, is noted first: afterwards
        the file cannot be read, and that is the point.
        """
        counters = self.outbox_counters()
        counters["undelivered"] = self.outbox_depth()
        self.before_corruption = counters
        for suffix in ("-wal", "-shm"):
            Path(f"{self.outbox}{suffix}").unlink(missing_ok=True)
        data = bytearray(self.outbox.read_bytes())
        data[100:] = b"\xde\xad\xbe\xef" * ((len(data) - 100) // 4 + 1)
        self.outbox.write_bytes(bytes(data[: len(self.outbox.read_bytes())]))

    def report(self, scenario: str, started: float, faults: int, eviction_expected: bool) -> Report:
        r = Report(scenario, faults_injected=faults, seconds=time.monotonic() - started)
        with contextlib.closing(_ro(self.outbox)) as db:
            counters = dict(db.execute("SELECT key, value FROM meta").fetchall())
            depth = db.execute("SELECT COALESCE(SUM(n_records), 0) FROM packs").fetchone()[0]
        r.produced = counters.get("records_appended", 0)
        r.evicted = counters.get("records_evicted", 0)
        r.evicted_sent = counters.get("records_evicted_sent", 0)
        r.expired = counters.get("records_expired", 0)
        if depth:
            r.problems.append(f"{depth} record(s) still in the outbox at the end")
        old = self.before_corruption
        if old is not None:
            # The fresh file's first epoch is above every epoch of the corrupt one.
            with contextlib.closing(_ro(self.central_db)) as db:
                stored_old = db.execute(
                    "SELECT COUNT(*) FROM readings WHERE epoch <= ?",
                    (old["epoch"],),
                ).fetchone()[0]
            r.produced += old.get("records_appended", 0)
            r.evicted += old.get("records_evicted", 0)
            r.expired += old.get("records_expired", 0)
            r.lost_to_corruption = (
                old.get("records_appended", 0)
                - old.get("records_evicted", 0)
                - old.get("records_expired", 0)
                - stored_old
            )
            if not 0 <= r.lost_to_corruption <= old["undelivered"]:
                r.problems.append(
                    f"{r.lost_to_corruption} lost with the corrupt file, but it only held"
                    f" {old['undelivered']} undelivered"
                )
        with contextlib.closing(_ro(self.central_db)) as db:
            r.stored = db.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
            r.duplicates_dropped = db.execute(
                "SELECT COALESCE(SUM(duplicates), 0) FROM device_stats"
            ).fetchone()[0]
            r.stored_twice = db.execute(
                "SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM readings"
                " GROUP BY gateway, epoch, seq, device, quantity, t) WHERE n > 1"
            ).fetchone()[0]
        expected = r.produced - r.evicted - r.expired - r.lost_to_corruption
        # A pack evicted after it was published (central had not confirmed it yet) may have
        # been stored: between the two bounds, nothing unaccounted for.
        if not expected <= r.stored <= expected + r.evicted_sent:
            r.problems.append(
                f"stored {r.stored} != produced - evicted - expired"
                f" - lost to corruption = {expected} (+ up to {r.evicted_sent} evicted"
                " after sending)"
            )
        if r.stored_twice:
            r.problems.append(f"{r.stored_twice} reading(s) stored twice")
        if r.evicted and not eviction_expected:
            r.problems.append(f"{r.evicted} evicted although no bound was reached")
        if r.produced == 0:
            r.problems.append("nothing was produced")
        return r


# -- scenarios ---------------------------------------------------------------------------
def _settle(rig: ChaosRig, timeout: float = 60) -> None:
    """Stop producing, let the gateway deliver everything, then stop it cleanly."""
    rig.kill("sim", signal.SIGTERM)
    wait_for(lambda: rig.outbox_depth() == 0, timeout, "the outbox to drain")
    rig.kill("gateway", signal.SIGTERM)
    wait_for(lambda: rig.stored() > 0, 10, "anything stored")


def _running_rig(workdir: Path, **kwargs: object) -> ChaosRig:
    rig = ChaosRig(workdir, **kwargs)  # type: ignore[arg-type]
    rig.start_broker()
    rig.start_central()
    rig.start_sim()
    rig.start_gateway()
    return rig


def scenario_kills(workdir: Path, process: str, rounds: int, gap: float, down: float) -> Report:
    """SIGKILL one process every ``gap`` seconds, restart it ``down`` seconds later.

    broker: whatever it held in memory is gone; gateway: mid-publish; central: between
    receipt and commit, somewhere.
    """
    rig, started = _running_rig(workdir), time.monotonic()
    restart = {
        "broker": rig.start_broker,
        "gateway": rig.start_gateway,
        "central": rig.start_central,
    }[process]
    try:
        # Warm up first: on a loaded machine a gateway killed every `gap` seconds might never
        # get past its start-up, and a run that produced nothing proves nothing.
        wait_for(lambda: rig.stored() > 0, 60, "the first reading stored")
        for _ in range(rounds):
            time.sleep(gap)
            rig.kill(process)
            time.sleep(down)
            restart()
        time.sleep(gap)
        _settle(rig)
        return rig.report(f"{process} SIGKILL + restart", started, rounds, False)
    finally:
        rig.stop_all()


def scenario_disk_full(workdir: Path, outage: float) -> Report:
    """The broker is down long enough for the capped outbox file to fill and evict."""
    rig = ChaosRig(workdir, poll_interval=0.02, max_file_bytes=512 * 1024)
    started = time.monotonic()
    try:
        rig.start_central()
        rig.start_sim()
        rig.start_gateway()  # no broker yet: everything stays in the 512 KiB outbox
        time.sleep(outage)
        # A loaded machine polls more slowly: keep the broker away until the cap has bitten
        # (bounded), so the scenario proves what it says rather than racing the clock.
        deadline = time.monotonic() + 3 * outage
        evicted_during_outage = rig.outbox_counters().get("records_evicted", 0)
        while not evicted_during_outage and time.monotonic() < deadline:
            time.sleep(0.5)
            evicted_during_outage = rig.outbox_counters().get("records_evicted", 0)
        rig.start_broker()
        time.sleep(2)
        _settle(rig)
        report = rig.report("outbox file full (512 KiB cap)", started, 1, True)
        if not evicted_during_outage:
            report.problems.append("the cap was never reached: the scenario proved nothing")
        return report
    finally:
        rig.stop_all()


def scenario_corrupt_outbox(workdir: Path, gap: float) -> Report:
    rig, started = _running_rig(workdir), time.monotonic()
    try:
        time.sleep(gap)
        rig.kill("broker")  # so that the outbox holds undelivered packs
        time.sleep(gap)
        rig.kill("gateway", signal.SIGTERM)
        rig.corrupt_outbox()
        rig.start_gateway()  # must move the file aside, report it and carry on
        rig.start_broker()
        time.sleep(gap)
        wait_for(
            lambda: bool(list(workdir.glob("outbox.db.corrupt-*"))),
            10,
            "the corrupt file moved aside",
        )
        if not rig.alive("gateway"):
            raise RuntimeError("the gateway died on a corrupt outbox")
        _settle(rig)
        report = rig.report("corrupted outbox file", started, 1, False)
        moved = rig.outbox_counters().get("corrupt_files_moved_aside", 0)
        if moved != 1:
            report.problems.append(f"corrupt_files_moved_aside = {moved}, expected 1")
        return report
    finally:
        rig.stop_all()


def _faketime_lib() -> Path | None:
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    return found[0] if found else None


def scenario_clock_jumps(workdir: Path, rounds: int, gap: float) -> Report:
    """The gateway's wall clock jumps back and forward (libfaketime, this process only)."""
    lib = _faketime_lib()
    if lib is None:
        raise RuntimeError("libfaketime is needed for this scenario (apt-get install libfaketime)")
    offset = workdir / "faketime"
    offset.write_text("+0\n")
    env = {
        "LD_PRELOAD": str(lib),
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    rig = ChaosRig(workdir)
    started = time.monotonic()
    try:
        rig.start_broker()
        rig.start_central()
        rig.start_sim()
        rig.start_gateway(env)
        for i in range(rounds):
            time.sleep(gap)
            offset.write_text("-3600\n" if i % 2 == 0 else "+7200\n")
        time.sleep(gap)
        _settle(rig)
        report = rig.report("gateway clock jumps ±1-2 h", started, rounds, False)
        with contextlib.closing(_ro(rig.central_db)) as db:
            # How far stored reading times are from when central received them: an hour-sized
            # error means the jumps reached the readings.
            (worst,) = db.execute(
                "SELECT MAX(ABS(r.t - p.received_at)) FROM readings r JOIN packs_seen p"
                " ON r.gateway = p.gateway AND r.epoch = p.epoch AND r.seq = p.seq"
                " WHERE r.device LIKE 'gas-%'"
            ).fetchone()
        report.max_time_error_s = round(worst or 0.0, 1)
        return report
    finally:
        rig.stop_all()


SCENARIOS: dict[str, Callable[[Path, bool], Report]] = {
    "broker": lambda d, q: scenario_kills(d, "broker", 2 if q else 8, *((2, 1) if q else (4, 2))),
    "gateway": lambda d, q: scenario_kills(d, "gateway", 2 if q else 8, 2 if q else 4, 0),
    "central": lambda d, q: scenario_kills(d, "central", 2 if q else 6, *((2, 1) if q else (4, 2))),
    "disk_full": lambda d, q: scenario_disk_full(d, 10.0 if q else 30.0),
    "corrupt": lambda d, q: scenario_corrupt_outbox(d, 2.0 if q else 4.0),
    "clock": lambda d, q: scenario_clock_jumps(d, 2 if q else 8, 2.0 if q else 4.0),
}


def run(name: str, quick: bool) -> Report:
    workdir = Path(tempfile.mkdtemp(prefix=f"sentryline-chaos-{name}-"))
    try:
        return SCENARIOS[name](workdir, quick)
    except RuntimeError as exc:
        return Report(name, problems=[str(exc)])
    finally:
        if not os.environ.get("CHAOS_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the short CI form")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()
    print(f"machine: {machine()}", file=sys.stderr)
    reports = [run(name, args.quick) for name in args.scenarios]
    if args.json:
        print(json.dumps([asdict(r) | {"ok": r.ok} for r in reports], indent=1))
    else:
        print(
            f"{'scenario':34} {'faults':>6} {'produced':>9} {'stored':>9} {'dups':>6}"
            f" {'evicted':>8} {'lost':>5} {'twice':>5}  result"
        )
        for r in reports:
            print(
                f"{r.scenario:34} {r.faults_injected:6} {r.produced:9} {r.stored:9}"
                f" {r.duplicates_dropped:6} {r.evicted:8} {r.lost_to_corruption:5}"
                f" {r.stored_twice:5}  {'ok' if r.ok else '; '.join(r.problems)}"
            )
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    raise SystemExit(main())
