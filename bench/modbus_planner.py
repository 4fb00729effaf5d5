"""The read planner per driver profile: requests per poll against one request per tag.

    python -m bench.modbus_planner [--json]     (or: sentryline bench modbus-planner)

For every registered driver's profile: the registers (and bits) its points occupy, the
registers the plan reads (gaps read through included), the requests the planner sends,
the requests a one-request-per-tag gateway sends (the peers' default), and whether the
plan is the minimum the device's limits (max_gap, max_registers, block_reads) allow,
computed independently by dynamic programming (drivers.contract.minimum_requests).

Deterministic: no timing, no machine dependence; the figures change only with profiles.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.contract import minimum_requests
from drivers.modbus.planner import naive_request_count, plan_reads
from drivers.modbus.profile import DeviceProfile
from drivers.registry import list_drivers

__all__ = ["PlannerRow", "driver_profiles", "format_table", "main", "planner_rows"]


@dataclass(frozen=True, slots=True)
class PlannerRow:
    name: str
    transport: str
    points: int
    registers: int  # distinct registers and bits the points occupy
    registers_read: int  # what the plan reads, gaps included
    requests_planned: int
    requests_naive: int  # one request per point
    requests_minimum: int
    minimal: bool


def planner_row(profile: DeviceProfile) -> PlannerRow:
    plan = plan_reads(profile)
    occupied = {(p.table, a) for p in profile.points for a in range(p.address, p.end)}
    minimum = minimum_requests(profile)
    return PlannerRow(
        name=profile.name,
        transport=profile.transport,
        points=len(profile.points),
        registers=len(occupied),
        registers_read=sum(r.count for r in plan),
        requests_planned=len(plan),
        requests_naive=naive_request_count(profile),
        requests_minimum=minimum,
        minimal=len(plan) == minimum,
    )


def planner_rows(profiles: Iterable[DeviceProfile]) -> list[PlannerRow]:
    return [planner_row(p) for p in profiles]


def driver_profiles() -> list[DeviceProfile]:
    """Every Modbus driver's register map (CoAP, serial and BLE drivers have none)."""
    return [driver.profile() for driver in list_drivers() if driver.is_modbus]


def format_table(rows: Sequence[PlannerRow]) -> str:
    header = (
        "profile",
        "transport",
        "points",
        "regs",
        "read",
        "planned",
        "naive",
        "min",
        "minimal",
    )
    lines = [header]
    for r in rows:
        lines.append(
            (
                r.name,
                r.transport,
                str(r.points),
                str(r.registers),
                str(r.registers_read),
                str(r.requests_planned),
                str(r.requests_naive),
                str(r.requests_minimum),
                "yes" if r.minimal else "NO",
            )
        )
    planned = sum(r.requests_planned for r in rows)
    naive = sum(r.requests_naive for r in rows)
    lines.append(("total", "", "", "", "", str(planned), str(naive), "", ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def rows_json(rows: Sequence[PlannerRow]) -> str:
    return json.dumps({"bench": "modbus_planner", "rows": [asdict(r) for r in rows]}, indent=2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="JSON on stdout")
    args = parser.parse_args(argv)
    rows = planner_rows(driver_profiles())
    print(rows_json(rows) if args.json else format_table(rows))
    return 0 if all(r.minimal for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
