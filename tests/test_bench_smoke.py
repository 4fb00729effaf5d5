"""Every benchmark still runs: each one with --quick, in its own process.

No timing assertions here: performance lives in the benchmarks (bench/README.md), never in
timed unit tests. This only keeps the benches working as the code under them changes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHES = ("outbox_append", "backlog_drain", "end_to_end", "live_under_backlog")
MACHINE_LINE = re.compile(r"^machine: .+, \d+ cores, Python [\d.]+, SQLite [\d.]+, ")
FIGURE = re.compile(r"^target: .+: -?[\d,.]+ ?\S* \(needs ", re.MULTILINE)


def run_bench(name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--quick", *extra],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("name", BENCHES)
def test_bench_quick_run_prints_machine_and_figures(name: str) -> None:
    result = run_bench(name)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    first = result.stdout.splitlines()[0]
    assert MACHINE_LINE.match(first), first
    assert FIGURE.search(result.stdout), result.stdout[-2000:]


def test_bench_json_output() -> None:
    result = run_bench("outbox_append", "--json", "--readings", "2000")
    assert result.returncode == 0, result.stderr[-4000:]
    doc = json.loads(result.stdout)
    assert MACHINE_LINE.match(doc["machine"])
    assert doc["rows"] and all(row["outbox/s"] > 0 for row in doc["rows"])
    assert all(isinstance(t["value"], float) for t in doc["targets"])


def test_modbus_fleet_bench_delivers_every_reading_once() -> None:
    """`sentryline bench modbus-fleet`: the real gateway process, a few devices, JSON out."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "provisioning.cli",
            "bench",
            "modbus-fleet",
            "--quick",
            "--devices",
            "5",
            "--registers",
            "4",
            "--naive-duration",
            "1",
            "--json",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    doc = json.loads(result.stdout)
    assert MACHINE_LINE.match(doc["machine"])
    (row,) = doc["rows"]
    assert row["produced"] > 0 and row["delivered"] == row["produced"]
    assert row["devices seen"] == 5 and row["whole polls"] is True
    assert row["duplicate packs"] == 0 and row["repeated times"] == 0
    assert row["pack seq gaps"] == 0
    assert row["gateway exit"] == 0
    for figure in ("gateway cpu %", "gateway peak rss MB", "simulator cpu %", "naive cpu %"):
        assert isinstance(row[figure], float), figure
    names = {t["name"] for t in doc["targets"]}
    assert any("CPU" in n for n in names) and any("RSS" in n for n in names)
