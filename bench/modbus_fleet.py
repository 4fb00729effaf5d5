"""200 Modbus TCP devices polled by the real gateway process: its CPU and memory, every reading.

``python -m bench.modbus_fleet [--json] [--quick] [--devices 200] [--registers 10]
[--interval 1] [--duration 30] [--layout per-device|shared]``
(also ``sentryline bench modbus-fleet …``)

Processes, as deployed:

* the simulator (``python -m bench.modbus_fleet --serve-sim …``): pymodbus TCP servers with
  constant registers (values never change, so it spends nothing between requests).
  ``per-device`` (default): one server and port per device, so the gateway keeps one
  connection per device, as it would against 200 field devices with their own IP address
  (and as ThingsBoard's gateway connects per device). ``shared``: one server, 200 unit ids
  behind one connection (a Modbus TCP→RTU bridge);
* Mosquitto on a free loopback port;
* the gateway: ``python -m provisioning.cli gateway run --config …`` (product defaults,
  ``confirm: puback`` since no central runs here);
* this process: a counting subscriber on the gateway's telemetry topic.

Measured: the gateway's CPU (user + system from /proc/PID/stat over the steady window after
a warm-up, as % of one core) and its peak RSS (VmHWM). Baselines from the same run: the
simulator's CPU for the same load, and a naive poller (one pymodbus request per register,
nothing published) for the same devices over the same time.

Checked: every reading the gateway produced (its outbox's ``records_appended``) reached
the subscriber exactly once (packs deduplicated by (epoch, seq), duplicates counted); per
device, the readings arrive in whole polls (a multiple of --registers) and no read time
repeats within a series.

Targets: ≤ 10 % of one core and ≤ 80 MB RSS at 2,000 readings/s (200 × 10 at 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from bench.common import Report

# The heavy imports (bench.common pulls in the gateway) stay inside the functions: the
# `sentryline` CLI registers this bench's command and must not pay for them on every run.

TARGET_CPU_PCT = 10.0
TARGET_RSS_MB = 80.0
PROFILE_NAME = "fleet-meter"


# -- the device: a profile of N holding registers --------------------------------------------


def write_profile(path: Path, registers: int) -> Path:
    """A device model with `registers` uint16 holding registers at 0.. (one block read)."""
    lines = [
        f"name: {PROFILE_NAME}",
        "family: other",
        "transport: modbus-tcp",
        "description: bench meter, contiguous holding registers",
        "points:",
    ]
    for i in range(registers):
        lines += [
            f"  - name: r{i}",
            "    table: holding",
            f"    address: {i}",
            "    type: uint16",
            "    scale: 0.1",
            "    unit: V",
            "    range: [0, 6553.5]",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def scenario_yaml(profile: Path, units: list[int], registers: int) -> str:
    lines = ["name: fleet", "duration: 86400", "devices:"]
    for unit in units:
        values = ", ".join(f"r{i}: {(unit * 10 + i) % 6000 / 10}" for i in range(registers))
        lines += [
            f"  - id: m{unit}",
            f"    profile: {profile}",
            f"    device_id: {unit}",
            f"    values: {{{values}}}",
        ]
    return "\n".join(lines) + "\n"


# -- the simulator process ------------------------------------------------------------------


async def serve_simulators(profile: Path, devices: int, registers: int, layout: str) -> None:
    """Start the servers, print one JSON line with their ports, serve until SIGTERM."""
    import signal

    from drivers.sim.modbus_server import ModbusSimulator
    from drivers.sim.scenario import Scenario
    from provisioning.configfile import parse_yaml_model

    if layout == "shared":
        scenarios = [
            parse_yaml_model(
                scenario_yaml(profile, list(range(1, devices + 1)), registers), Scenario
            )
        ]
    else:
        one = parse_yaml_model(scenario_yaml(profile, [1], registers), Scenario)
        scenarios = [one] * devices  # the same device model and values behind every port
    sims = [ModbusSimulator(s, noise=False) for s in scenarios]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        ports = [await sim.start("127.0.0.1", 0) for sim in sims]
        sys.stdout.write(json.dumps({"ports": ports}) + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        for sim in sims:
            await sim.stop()


def start_simulator(
    work: Path, profile: Path, args: argparse.Namespace
) -> tuple[subprocess.Popen[bytes], list[int]]:
    from bench.common import REPO_ROOT, stop_process

    log = open(work / "sim.log", "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.modbus_fleet",
            "--serve-sim",
            str(profile),
            "--devices",
            str(args.devices),
            "--registers",
            str(args.registers),
            "--layout",
            args.layout,
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    log.close()
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        stop_process(proc)
        raise RuntimeError(f"simulator did not start: see {work / 'sim.log'}")
    return proc, list(json.loads(line)["ports"])


def device_endpoints(ports: list[int], devices: int, layout: str) -> list[tuple[int, int]]:
    """(port, unit id) of every device."""
    if layout == "shared":
        return [(ports[0], unit) for unit in range(1, devices + 1)]
    return [(port, 1) for port in ports]


# -- the gateway process --------------------------------------------------------------------


def write_gateway_config(
    path: Path, broker_url: str, profile: Path, endpoints: list[tuple[int, int]], interval: float
) -> Path:
    from bench.common import GATEWAY, SITE

    lines = [
        f"site: {SITE}",
        f"gateway_id: {GATEWAY}",
        f"broker: {{url: '{broker_url}'}}",
        f"outbox: {{path: '{path.parent / 'gw-outbox.db'}'}}",
        "uplink: {confirm: puback, status_interval_s: 5}",
        "devices:",
    ]
    for index, (port, unit) in enumerate(endpoints, 1):
        lines += [
            f"  - id: m{index}",
            f"    profile: {profile}",
            f"    transport: {{type: modbus-tcp, port: {port}, device_id: {unit}, timeout: 2}}",
            f"    poll_interval: {interval}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_gateway(work: Path, config: Path) -> subprocess.Popen[bytes]:
    from bench.common import REPO_ROOT

    log = open(work / "gateway.log", "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "provisioning.cli",
            "gateway",
            "run",
            "--config",
            str(config),
            "--log-level",
            "warning",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    return proc


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# -- the counting subscriber ----------------------------------------------------------------


@dataclass
class Tally:
    packs: set[tuple[int, int]] = field(default_factory=set)
    duplicate_packs: int = 0
    records: int = 0  # every record of every distinct pack, gateway status included
    per_device: Counter[str] = field(default_factory=Counter)
    times: dict[str, set[float]] = field(default_factory=lambda: defaultdict(set))
    repeated_times: int = 0  # a series' read time seen twice (across distinct packs)
    first_at: dict[str, float] = field(default_factory=dict)

    async def wait_for(self, records: int, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while self.records < records and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    @property
    def seq_gaps(self) -> int:
        """Packs missing between the first and last sequence number of each epoch."""
        by_epoch: dict[int, list[int]] = defaultdict(list)
        for epoch, seq in self.packs:
            by_epoch[epoch].append(seq)
        return sum(max(s) - min(s) + 1 - len(s) for s in by_epoch.values())

    def add(self, payload: bytes) -> None:
        from cloud_bridge.senml import decode_pack

        pack = decode_pack(payload)
        key = (pack.epoch, pack.seq)
        if key in self.packs:
            self.duplicate_packs += 1
            return
        self.packs.add(key)
        self.records += len(pack.records)
        now = time.monotonic()
        for record in pack.records:
            device = record.device
            if device == "gateway":
                continue
            self.per_device[device] += 1
            self.first_at.setdefault(device, now)
            seen = self.times[record.name]
            if record.time in seen:
                self.repeated_times += 1
            seen.add(record.time)


async def subscribe(broker_port: int, tally: Tally, ready: asyncio.Event) -> None:
    import aiomqtt

    from bench.common import GATEWAY, SITE
    from cloud_bridge.mqtt import telemetry_topic

    async with aiomqtt.Client(
        "127.0.0.1",
        broker_port,
        identifier=f"fleet-counter-{os.getpid()}",
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as client:
        await client.subscribe(telemetry_topic(SITE, GATEWAY), qos=1)
        ready.set()
        async for message in client.messages:
            tally.add(bytes(message.payload))  # type: ignore[arg-type]


# -- the naive baseline ---------------------------------------------------------------------


async def naive_poller(
    endpoints: list[tuple[int, int]], registers: int, interval: float, duration: float
) -> dict[str, float]:
    """One pymodbus request per register per device per interval, nothing decoded or sent:
    what a one-request-per-tag gateway spends on the wire alone (this process's CPU)."""
    from pymodbus.client import AsyncModbusTcpClient

    clients: dict[int, AsyncModbusTcpClient] = {}
    for port, _unit in endpoints:
        if port not in clients:
            clients[port] = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
            await clients[port].connect()
    locks = {port: asyncio.Lock() for port in clients}
    reads = errors = 0
    stop = asyncio.Event()  # pymodbus can swallow a cancellation: stop by flag first

    async def device(port: int, unit: int, phase: float) -> None:
        nonlocal reads, errors
        loop = asyncio.get_running_loop()
        start = loop.time() + phase
        tick = 0
        while not stop.is_set():
            await asyncio.sleep(max(0.0, start + tick * interval - loop.time()))
            tick += 1
            async with locks[port]:
                for address in range(registers):
                    try:
                        reply = await clients[port].read_holding_registers(
                            address, count=1, device_id=unit
                        )
                        reads += 1
                        errors += reply.isError()
                    except Exception:  # counted: the baseline must not stop on one
                        errors += 1

    tasks = [
        asyncio.create_task(device(port, unit, i * interval / len(endpoints)))
        for i, (port, unit) in enumerate(endpoints)
    ]
    cpu_start = time.process_time()
    wall_start = time.monotonic()
    await asyncio.sleep(duration)
    cpu = time.process_time() - cpu_start
    wall = time.monotonic() - wall_start
    counted = reads
    stop.set()
    _, pending = await asyncio.wait(tasks, timeout=5)
    for task in pending:
        task.cancel()
    await asyncio.wait(tasks, timeout=5)
    for client in clients.values():
        client.close()
    return {"cpu %": 100 * cpu / wall, "reads/s": counted / wall, "errors": errors}


# -- the run --------------------------------------------------------------------------------


async def fleet_run(work: Path, args: argparse.Namespace, report: Report) -> dict[str, Any]:
    from bench.common import CpuMeter, Mosquitto, stop_process
    from cloud_bridge.outbox import open_readonly_stats

    profile = write_profile(work / f"{PROFILE_NAME}.yaml", args.registers)
    sim, ports = start_simulator(work, profile, args)
    gateway: subprocess.Popen[bytes] | None = None
    try:
        endpoints = device_endpoints(ports, args.devices, args.layout)
        with Mosquitto(work) as broker:
            tally = Tally()
            ready = asyncio.Event()
            counter = asyncio.create_task(subscribe(broker.port, tally, ready))
            await asyncio.wait_for(ready.wait(), 10)
            config = write_gateway_config(
                work / "gateway.yaml", broker.url, profile, endpoints, args.interval
            )
            gateway = start_gateway(work, config)
            started = time.monotonic()
            # Warm-up: every device connected and delivering, then a little more.
            deadline = started + max(30.0, args.warmup * 4)
            while len(tally.per_device) < args.devices and time.monotonic() < deadline:
                if gateway.poll() is not None:
                    log = (work / "gateway.log").read_text(errors="replace").splitlines()
                    raise RuntimeError("gateway exited:\n" + "\n".join(log[-20:]))
                await asyncio.sleep(0.1)
            report.say(
                args.json, f"  all devices delivering after {time.monotonic() - started:.1f}s"
            )
            await asyncio.sleep(args.warmup)
            meter = CpuMeter(
                {
                    "gateway": gateway.pid,
                    "simulator": sim.pid,
                    "mosquitto": broker.proc.pid if broker.proc else None,
                }
            ).start()
            in_window_start = tally.records
            window_start = time.monotonic()
            await asyncio.sleep(args.duration)
            cpu = meter.stop()
            window = time.monotonic() - window_start
            in_window = tally.records - in_window_start
            rss = peak_rss_mb(gateway.pid)
            # Stop the gateway (it drains), then wait for what it produced to arrive.
            stop_process(gateway, timeout=30)
            exit_code = gateway.returncode
            produced = open_readonly_stats(work / "gw-outbox.db").records_appended
            await tally.wait_for(produced, within_s=15)
            await asyncio.sleep(0.3)  # anything past `produced` would be a duplicate
            counter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await counter
            naive: dict[str, float] = {}
            if args.naive_duration > 0:
                report.say(args.json, "  naive poller (one request per register) ...")
                naive = await naive_poller(
                    endpoints, args.registers, args.interval, args.naive_duration
                )
    finally:
        stop_process(gateway, timeout=30)
        stop_process(sim)
    readings = sum(tally.per_device.values())
    whole_polls = all(n % args.registers == 0 for n in tally.per_device.values())
    return {
        "layout": args.layout,
        "devices": args.devices,
        "offered/s": args.devices * args.registers / args.interval,
        "received/s": in_window / window,
        "produced": produced,
        "delivered": tally.records,
        "readings": readings,
        "devices seen": len(tally.per_device),
        "min per device": min(tally.per_device.values(), default=0),
        "whole polls": whole_polls,
        "duplicate packs": tally.duplicate_packs,
        "pack seq gaps": tally.seq_gaps,
        "repeated times": tally.repeated_times,
        "gateway exit": exit_code,
        "gateway cpu %": 100 * cpu.get("gateway", float("nan")),
        "gateway peak rss MB": rss,
        "simulator cpu %": 100 * cpu.get("simulator", float("nan")),
        "mosquitto cpu %": 100 * cpu.get("mosquitto", float("nan")),
        "naive cpu %": naive.get("cpu %"),
        "naive reads/s": naive.get("reads/s"),
        "naive errors": naive.get("errors"),
        "window s": window,
    }


def _targets(report: Report, row: dict[str, Any]) -> None:
    from bench.common import Target

    complete = (
        row["delivered"] == row["produced"]
        and row["repeated times"] == 0
        and row["pack seq gaps"] == 0
        and row["whole polls"]
    )
    report.targets += [
        Target("gateway CPU, % of one core", row["gateway cpu %"], TARGET_CPU_PCT, "<=", " %"),
        Target("gateway peak RSS", row["gateway peak rss MB"], TARGET_RSS_MB, "<=", " MB"),
        Target(
            "delivered / produced (every reading once)",
            100 * row["delivered"] / row["produced"] if row["produced"] and complete else 0.0,
            100,
            ">=",
            " %",
        ),
    ]


def parser() -> argparse.ArgumentParser:
    from bench.common import base_parser

    p = base_parser(__doc__ or "")
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--registers", type=int, default=10)
    p.add_argument("--interval", type=float, default=1.0, help="poll interval, seconds")
    p.add_argument("--duration", type=float, help="steady window, seconds (default 30)")
    p.add_argument("--warmup", type=float, help="seconds after every device delivers")
    p.add_argument("--layout", choices=("per-device", "shared"), default="per-device")
    p.add_argument("--naive-duration", type=float, help="naive poller baseline, seconds (0: skip)")
    p.add_argument("--serve-sim", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.serve_sim is not None:
        asyncio.run(serve_simulators(args.serve_sim, args.devices, args.registers, args.layout))
        return 0
    if not 1 <= args.registers <= 120:
        raise SystemExit("--registers must be 1..120 (one block read)")
    if args.layout == "shared" and not 1 <= args.devices <= 247:
        raise SystemExit("--layout shared holds at most 247 unit ids")
    from bench.common import Report, workdir

    quick = args.quick
    args.duration = args.duration or (3.0 if quick else 30.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 5.0)
    if args.naive_duration is None:
        args.naive_duration = 2.0 if quick else 10.0
    report = Report("modbus_fleet", quick)
    report.begin(args.json)
    report.params = {
        "devices": args.devices,
        "registers": args.registers,
        "interval_s": args.interval,
        "duration_s": args.duration,
        "layout": args.layout,
        "gateway": "subprocess `gateway run`, product defaults, confirm: puback",
    }
    report.say(
        args.json,
        f"  {args.devices} devices x {args.registers} registers every {args.interval}s"
        f" ({args.layout}), {args.duration}s steady window ...",
    )
    with workdir(args.keep, "modbus-fleet") as work:
        row = asyncio.run(fleet_run(work, args, report))
    report.rows.append(row)
    _targets(report, row)
    report.notes.append(
        "CPU: user+system from /proc/PID/stat over the steady window, % of one core;"
        " RSS: VmHWM; naive: one pymodbus request per register, nothing decoded or sent"
    )
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def cli(
    devices: int = typer.Option(200, min=1, help="simulated Modbus TCP devices"),
    registers: int = typer.Option(10, min=1, max=120, help="holding registers per device"),
    interval: float = typer.Option(1.0, min=0.01, help="poll interval, seconds"),
    duration: float | None = typer.Option(None, min=1, help="steady window s (default 30)"),
    layout: str = typer.Option("per-device", help="per-device (one port each) or shared"),
    naive_duration: float | None = typer.Option(
        None, min=0, help="naive poller baseline s (default 10; 0: skip)"
    ),
    as_json: bool = typer.Option(False, "--json", help="one JSON document on stdout"),
    quick: bool = typer.Option(False, "--quick", help="a small run for CI"),
    keep: bool = typer.Option(False, "--keep", help="keep the working directory"),
) -> None:
    """The real gateway process polling a fleet of simulated Modbus TCP devices: its CPU and
    peak RSS, and every reading delivered once through Mosquitto."""
    argv = [
        *("--devices", str(devices), "--registers", str(registers)),
        *("--interval", str(interval), "--layout", layout),
        *(["--duration", str(duration)] if duration is not None else []),
        *(["--naive-duration", str(naive_duration)] if naive_duration is not None else []),
        *(["--json"] if as_json else []),
        *(["--quick"] if quick else []),
        *(["--keep"] if keep else []),
    ]
    raise typer.Exit(main(argv))
