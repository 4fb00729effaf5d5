"""The gateway's non-Modbus sources: one owner per endpoint, like one ModbusBus per line.

* :class:`~gateway.sources.coap.CoapSource`: one CoAP client context for every CoAP device,
  polling or observing each;
* :class:`~gateway.sources.serial_line.SerialLineSource`: one reader per serial port;
* :class:`~gateway.sources.ble.BleSource`: one scanner for every BTHome device, plus a GATT
  link per connected device.

Every source hands Records to the daemon's `sink` (the same one the Modbus buses use, so
whatever filters it applies cover every transport), stamps them from the gateway clock when
they are read, never raises into the daemon (each device runs under :func:`supervise`), and
reports per-device :class:`DeviceHealth` for the status records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Protocol

from cloud_bridge.senml import Record

log = logging.getLogger(__name__)

__all__ = ["Backoff", "DeviceHealth", "Sink", "Source", "mark_unsynced", "supervise"]

Sink = Callable[[list[Record]], None]


@dataclass
class DeviceHealth:
    """One device's counters as the gateway's status reports them, whatever its transport."""

    transport: str
    reads: int = 0  # responses, notifications, frames or advertisements that gave readings
    errors: int = 0  # every failure, of whatever kind (includes the two below)
    timeouts: int = 0  # no answer in time; for push devices: silence past the expected period
    unparsable: int = 0  # payloads or frames that made no reading
    garbage_bytes: int = 0  # serial lines: bytes outside any frame (line noise)
    state: str = "ok"  # ok, failing, unavailable
    last_error: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Source(Protocol):
    """What the daemon runs and asks for status."""

    name: str

    async def run(self) -> None:
        """Read until cancelled; never raises for device or transport failures."""
        ...

    def health(self) -> dict[str, DeviceHealth]: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """initial_s * factor**(attempt-1), at most max_s (attempt 1 is the first retry)."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0

    def delay_s(self, attempt: int) -> float:
        return min(self.max_s, self.initial_s * self.factor ** max(0, attempt - 1))


def mark_unsynced(records: list[Record], synced: bool) -> list[Record]:
    """Records stamped by a clock that is not synchronised say so (central corrects them)."""
    if synced:
        return records
    return [r if r.clock_synced is False else replace(r, clock_synced=False) for r in records]


async def supervise(
    what: str,
    run: Callable[[], Awaitable[None]],
    backoff: Backoff = Backoff(1.0, 2.0, 60.0),
    on_crash: Callable[[BaseException], None] | None = None,
) -> None:
    """Run `run()` again after anything it raises (a bug in a driver must cost that device,
    not the gateway); return when it returns. Cancellation passes through."""
    attempt = 0
    while True:
        try:
            await run()
            return
        except Exception as exc:
            attempt += 1
            if on_crash is not None:
                on_crash(exc)
            log.exception("%s failed unexpectedly; restarting (attempt %d)", what, attempt)
        await asyncio.sleep(backoff.delay_s(attempt))
