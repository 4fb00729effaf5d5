"""Time quality of a stored reading: central flags times it cannot trust, never drops them."""

from __future__ import annotations

from cloud_bridge.senml import Record

TIME_OK = 0
TIME_UNSYNCED = 1  # stamped while the gateway clock was unsynchronised; no correction yet
TIME_CORRECTED = 2  # was unsynchronised; the gateway's correction has been applied
TIME_IMPLAUSIBLE = 3  # before 2020 (an RTC reset to 1970, say) or in the future

EARLIEST_PLAUSIBLE = 1_577_836_800.0  # 2020-01-01T00:00:00Z
FUTURE_TOLERANCE_S = 600.0


def time_flag(record: Record, received_at: float) -> int:
    if record.time < EARLIEST_PLAUSIBLE or record.time > received_at + FUTURE_TOLERANCE_S:
        return TIME_IMPLAUSIBLE
    return TIME_OK if record.clock_synced else TIME_UNSYNCED
