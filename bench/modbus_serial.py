"""Modbus RTU throughput on an emulated serial line, against the line's theoretical limit.

    python bench/modbus_serial.py [--json] [--quick] [--seconds 2] [--turnaround-ms 20]
    (or python -m bench.modbus_serial)

The RTU simulator sits on one end of a pty and behaves like a slave on a real line: the
request occupies the line for its wire time, the slave answers t3.5 + turnaround later
and emits its reply one character per character time (see drivers/sim/rtu_sim.py). The
master is the gateway's ModbusRtuEndpoint, which keeps t3.5 of silence before each request.

Theoretical time of one transaction, for the same frames:

    (request bytes + reply bytes) * 11 bits / baud      # 8E1 or 8N2: 1+8+1+1 bits per char
    + 2 * t3.5                                           # silence after request and reply
    + device turnaround

(8N1 would be 10 bits per character. The Modbus spec requires 11; the pty runs 8N2,
because Linux ptys refuse parity. Same timing as 8E1.)

The simulator runs in a child process (its own interpreter, like a real device has its own
CPU), so the figures measure the master alone, not the two competing for one GIL.

Rows "read N" time back-to-back reads of N holding registers from one slave; rows "bus"
run the ModbusBus arbiter over 4 gas detectors asking for more than the line can carry,
so the figure includes scheduling, decoding and Record building.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Report, Target, base_parser
from drivers.modbus.bus import ModbusBus
from drivers.modbus.planner import ReadRequest, plan_reads
from drivers.modbus.profile import load_profile
from drivers.modbus.rtu import ModbusRtuEndpoint, read_reply_size, silent_interval_s
from drivers.serial import SerialSettings
from drivers.sim.rtu_sim import RtuSimStats, RtuSimulator
from drivers.sim.scenario import Scenario
from provisioning.configfile import parse_yaml_model

REQUEST_BYTES = 8  # unit, function, address, count, CRC


@dataclass
class Row:
    baud: int
    mode: str
    registers_per_request: int
    transactions: int
    seconds: float
    theory_ms: float  # one transaction on the line
    measured_ms: float
    registers_per_s: float
    limit_registers_per_s: float
    ratio: float
    master_cpu_pct: float  # CPU of the gateway side (the simulator is another process)


def theory_s(line: SerialSettings, reply_bytes: int, turnaround_s: float) -> float:
    return (
        line.wire_time_s(REQUEST_BYTES + reply_bytes) + 2 * silent_interval_s(line) + (turnaround_s)
    )


def holding_profile(folder: Path, count: int) -> Path:
    points = "".join(f"  - {{name: r{i}, table: holding, address: {i}}}\n" for i in range(count))
    path = folder / f"block{count}.yaml"
    path.write_text(
        f"name: block{count}\nfamily: other\ntransport: modbus-rtu\n"
        f"modbus: {{max_registers: 125, max_gap: 0}}\npoints:\n{points}"
    )
    return path


def scenario(devices: list[tuple[str, str, int]]) -> Scenario:
    lines = "".join(f"  - {{id: {d}, profile: {p}, device_id: {u}}}\n" for d, p, u in devices)
    return parse_yaml_model(f"name: bench\nduration: 3600\ndevices:\n{lines}", Scenario)


@contextmanager
def device_process(make: Callable[[], RtuSimulator]) -> Iterator[tuple[str, list[RtuSimStats]]]:
    """Run the simulator made by `make` in a forked child; yields its port path and a list
    that holds the child's final stats once the block exits."""
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(
        target=_serve_device, args=(make, child), daemon=True
    )
    process.start()
    stats: list[RtuSimStats] = []
    try:
        yield parent.recv(), stats
    finally:
        parent.send("stop")
        if parent.poll(10):
            stats.append(parent.recv())
        process.join(10)


def _serve_device(make: Callable[[], RtuSimulator], conn: Connection) -> None:
    sim = make()
    conn.send(sim.start())
    conn.recv()
    sim.stop()
    conn.send(sim.stats)


async def bench_reads(
    line: SerialSettings, profile: Path, count: int, seconds: float, turnaround_s: float
) -> Row:
    def make() -> RtuSimulator:
        return RtuSimulator(
            scenario([("dev", str(profile), 1)]), line=line, turnaround_s=turnaround_s
        )

    request = ReadRequest("holding", 0, count, ())
    with device_process(make) as (path, sim_stats):
        endpoint = ModbusRtuEndpoint(path, line.baudrate, line.parity, line.stopbits, timeout=0.5)
        try:
            await endpoint.read(request, 1)  # open the port
            n, started, cpu = 0, time.perf_counter(), time.process_time()
            while (elapsed := time.perf_counter() - started) < seconds:
                await endpoint.read(request, 1)
                n += 1
            cpu = time.process_time() - cpu
        finally:
            await endpoint.close()
    _check_line(sim_stats, endpoint.counters[1].ok == n + 1)
    limit = theory_s(line, read_reply_size("holding", count), turnaround_s)
    return _row(line, f"read {count}", count, n, elapsed, limit, cpu)


async def bench_bus(line: SerialSettings, seconds: float, turnaround_s: float) -> Row:
    units = [1, 2, 3, 4]

    def make() -> RtuSimulator:
        devices = [(f"gas-{u}", "gas-detector", u) for u in units]
        return RtuSimulator(scenario(devices), line=line, turnaround_s=turnaround_s)

    profile = load_profile("gas-detector")
    (request,) = plan_reads(profile)
    with device_process(make) as (path, sim_stats):
        endpoint = ModbusRtuEndpoint(path, line.baudrate, line.parity, line.stopbits, timeout=0.5)
        done: list[float] = []  # completion time of every poll
        bus = ModbusBus(endpoint, lambda records: done.append(time.perf_counter()))
        for unit in units:
            bus.add_device(f"gas-{unit}", profile, unit, interval_s=0.01)  # more than fits
        task = asyncio.create_task(bus.run())
        cpu = time.process_time()
        await asyncio.sleep(seconds)
        cpu = time.process_time() - cpu
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await endpoint.close()
    # From the first completed poll to the last: no port opening, no poll cut by cancel.
    polls, elapsed = len(done) - 1, done[-1] - done[0]
    _check_line(sim_stats, all(c.polls == c.ok for c in bus.counters.values()))
    limit = theory_s(line, read_reply_size(request.table, request.count), turnaround_s)
    return _row(line, "bus 4 slaves", request.count, polls, elapsed, limit, cpu / seconds * elapsed)


def _check_line(sim_stats: list[RtuSimStats], all_ok: bool) -> None:
    # A figure only counts if the master kept the line's rules and nothing failed.
    if not sim_stats or sim_stats[0].gap_violations or sim_stats[0].bad_frames or not all_ok:
        raise RuntimeError(f"line errors: {sim_stats}")


def _row(
    line: SerialSettings, mode: str, count: int, n: int, elapsed: float, limit: float, cpu: float
) -> Row:
    measured = elapsed / n
    return Row(
        baud=line.baudrate,
        mode=mode,
        registers_per_request=count,
        transactions=n,
        seconds=round(elapsed, 3),
        theory_ms=round(limit * 1000, 3),
        measured_ms=round(measured * 1000, 3),
        registers_per_s=round(count / measured, 1),
        limit_registers_per_s=round(count / limit, 1),
        ratio=round(limit / measured, 4),
        master_cpu_pct=round(100 * cpu / elapsed, 1),
    )


async def run(seconds: float, turnaround_s: float, bauds: list[int]) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for baud in bauds:
            line = SerialSettings(baud, "N", 2)
            for count in (1, 10, 60, 125):
                profile = holding_profile(Path(folder), count)
                rows.append(await bench_reads(line, profile, count, seconds, turnaround_s))
            rows.append(await bench_bus(line, seconds, turnaround_s))
    return rows


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=2.0, help="per row (default 2)")
    parser.add_argument("--turnaround-ms", type=float, default=20.0, help="device turnaround")
    parser.add_argument("--baud", type=int, action="append", help="repeatable; 9600 and 19200")
    args = parser.parse_args()
    seconds = 0.5 if args.quick else args.seconds
    bauds = args.baud or [9600, 19200]
    report = Report("modbus_serial", args.quick)
    report.begin(args.json)
    report.params = {
        "line": "8N2 on a pty, 11 bits/char (timing of 8E1)",
        "turnaround_ms": args.turnaround_ms,
        "seconds_per_row": seconds,
    }
    rows = asyncio.run(run(seconds, args.turnaround_ms / 1000, bauds))
    for row in rows:
        report.rows.append(asdict(row))
        report.targets.append(
            Target(
                f"{row.mode} @ {row.baud} baud, of the line limit", row.ratio * 100, 90, ">=", "%"
            )
        )
    report.notes.append(
        "limit = (request + reply bytes) * 11 / baud + 2 * t3.5 + turnaround, per transaction;"
        " the simulator runs in a child process and enforces that timing"
    )
    report.emit(args.json)


if __name__ == "__main__":
    main()
