"""Poll → decode → normalize for one Modbus device, on a stable schedule."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cloud_bridge.senml import Record
from drivers.modbus.codec import CodecError, decode_request
from drivers.modbus.planner import ReadRequest, plan_reads
from drivers.modbus.profile import DeviceProfile, PointSpec
from drivers.modbus.transport import ModbusReadError, ModbusTcpEndpoint

log = logging.getLogger(__name__)

QUALITY_PASS = 1
QUALITY_FAIL = 4


@dataclass
class DeviceCounters:
    polls: int = 0
    polls_ok: int = 0
    readings: int = 0
    skipped_ticks: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def quality_of(point: PointSpec, value: object) -> int | None:
    """Gross-range check (QARTOD): numeric values outside the profile's range fail."""
    if point.range is None or isinstance(value, bool | str):
        return None
    low, high = point.range
    assert isinstance(value, int | float)
    return QUALITY_PASS if low <= value <= high and math.isfinite(value) else QUALITY_FAIL


class ModbusDevicePoller:
    def __init__(
        self,
        device_id: str,
        profile: DeviceProfile,
        endpoint: ModbusTcpEndpoint,
        unit_id: int,
        interval_s: float,
        sink: Callable[[list[Record]], None],
        clock: Callable[[], float] = time.time,
        clock_synced: Callable[[], bool] = lambda: True,
    ) -> None:
        self.device_id = device_id
        self.profile = profile
        self.endpoint = endpoint
        self.unit_id = unit_id
        self.interval_s = interval_s
        self.requests: list[ReadRequest] = plan_reads(profile)  # compiled once per config
        self._sink = sink
        self._clock = clock
        self._clock_synced = clock_synced
        self.counters = DeviceCounters()

    async def poll_once(self) -> list[Record]:
        """One poll cycle; raises ModbusReadError if any request fails (all-or-nothing)."""
        self.counters.polls += 1
        values: dict[str, object] = {}
        read_time = 0.0
        for request in self.requests:
            words = await self.endpoint.read(request, self.unit_id)
            read_time = self._clock()  # timestamp taken when the registers arrived
            try:
                values.update(decode_request(request, words))
            except CodecError as exc:
                raise ModbusReadError("decode", str(exc)) from None
        points = {p.name: p for p in self.profile.points}
        synced = self._clock_synced()
        records = []
        for name, value in values.items():
            point = points[name]
            records.append(
                Record(
                    name=f"{self.device_id}/{name}",
                    time=read_time,
                    value=value,  # type: ignore[arg-type]
                    unit=point.unit,
                    update_time=self.interval_s,
                    quality=quality_of(point, value),
                    clock_synced=synced,
                )
            )
        self.counters.polls_ok += 1
        self.counters.readings += len(records)
        return records

    async def run(self) -> None:
        """Poll forever on ticks start + k*interval; a late cycle skips ticks, never bunches."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            try:
                records = await self.poll_once()
            except ModbusReadError as exc:
                self.counters.count_error(exc.kind)
                log.warning("device %s: %s", self.device_id, exc)
            else:
                self._sink(records)
            tick += 1
            next_at = start + tick * self.interval_s
            now = loop.time()
            if now > next_at:
                missed = math.ceil((now - next_at) / self.interval_s)
                self.counters.skipped_ticks += missed
                tick += missed
                next_at = start + tick * self.interval_s
            await asyncio.sleep(next_at - now)
