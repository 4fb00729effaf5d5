"""Trustworthy timestamps on a gateway whose wall clock may be wrong or may jump.

Readings are stamped as ``anchor_wall + (monotonic - anchor_mono)``: between anchors the
time cannot jump, whatever happens to the wall clock. While the clock is synchronised the
anchor follows the wall clock (small drifts are absorbed, steps are counted). While it is
not, the anchor is frozen, the records are marked unsynchronised, and when sync arrives the
gateway knows exactly how wrong they were: one offset, since they all ran on the monotonic
clock. That offset goes to central as a correction for the affected packs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

TIME_ERROR = 5  # adjtimex() return value while the kernel clock is unsynchronised
# A wall clock before this is an RTC that lost its time, whatever the sync source claims.
EARLIEST_PLAUSIBLE = 1_577_836_800.0  # 2020-01-01T00:00:00Z


def kernel_clock_synced() -> bool | None:
    """The kernel's view (set by chrony, ntpd or systemd-timesyncd); None if unknown."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex; modes = 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    return None if state < 0 else state != TIME_ERROR


@dataclass(frozen=True, slots=True)
class ClockCorrection:
    """Readings stamped while unsynchronised were ``offset_s`` seconds off."""

    offset_s: float
    unsynced_since: float  # gateway time (as stamped) when the unsynchronised period began


class GatewayClock:
    def __init__(
        self,
        sync_source: Callable[[], bool | None] = kernel_clock_synced,
        *,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        step_threshold_s: float = 0.5,
        resync_interval_s: float = 10.0,
    ) -> None:
        self._sync_source = sync_source
        self._wall = wall
        self._mono = mono
        self.step_threshold_s = step_threshold_s
        self.resync_interval_s = resync_interval_s
        self._anchor_wall = wall()
        self._anchor_mono = mono()
        self._checked_mono = self._anchor_mono
        status = self._status()
        # Unknown (no adjtimex: containers, other OSes) is treated as synchronised, and said.
        self.synced = status is not False
        self._unsynced_since: float | None = None if self.synced else self._anchor_wall
        self.steps = 0
        self.largest_step_s = 0.0
        if status is None:
            log.info("clock sync status unknown; timestamps assumed synchronised")

    def _status(self) -> bool | None:
        if self._wall() < EARLIEST_PLAUSIBLE:
            return False
        return self._sync_source()

    def now(self) -> float:
        """The time to stamp a reading with."""
        return self._anchor_wall + (self._mono() - self._anchor_mono)

    def check(self) -> ClockCorrection | None:
        """Follow the wall clock; call it every few seconds. Returns a correction on sync."""
        mono = self._mono()
        if mono - self._checked_mono < self.resync_interval_s and self.synced:
            return None
        self._checked_mono = mono
        now_synced = self._status() is not False
        if not now_synced:
            if self.synced:
                log.warning("clock lost synchronisation; readings are marked unsynchronised")
                self._unsynced_since = self.now()
            self.synced = False
            return None  # anchor frozen: monotonic time only
        wall = self._wall()
        drift = wall - self.now()
        correction = None
        if not self.synced:
            correction = ClockCorrection(drift, self._unsynced_since or self._anchor_wall)
            log.warning("clock synchronised; unsynchronised readings were %.3f s off", drift)
            self._unsynced_since = None
        elif abs(drift) > self.step_threshold_s:
            # A step of a synchronised clock: NTP correcting it, or someone setting it.
            self.steps += 1
            self.largest_step_s = max(self.largest_step_s, abs(drift))
            log.warning("wall clock stepped by %.3f s", drift)
        self.synced = True
        self._anchor_wall, self._anchor_mono = wall, mono
        return correction
