"""Per-device reading windows: bounded buffers per quantity, resampled onto the model's grid."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Copies of the recent readings of each channel, taken on the event loop (cheap)."""

    series: tuple[tuple[np.ndarray, np.ndarray], ...]  # per channel: (times, values)
    end: float  # the window ends here (the newest time every channel has reached)


class DeviceWindow:
    """Recent (time, value) readings of one device's channels, bounded in count and age."""

    def __init__(self, channels: tuple[str, ...], max_samples: int, span_s: float) -> None:
        self.channels = channels
        self.span_s = span_s
        self._times = {c: deque[float](maxlen=max_samples) for c in channels}
        self._values = {c: deque[float](maxlen=max_samples) for c in channels}
        self.out_of_order = 0

    def add(self, channel: str, t: float, value: float) -> None:
        times = self._times[channel]
        if times and t <= times[-1]:
            self.out_of_order += 1  # late or duplicate reading: the window only moves forward
            return
        times.append(t)
        self._values[channel].append(value)
        while times and times[0] < t - self.span_s:
            times.popleft()
            self._values[channel].popleft()

    def end_time(self) -> float | None:
        """The newest time that every channel has reached, or None while one is empty."""
        lasts = [self._times[c][-1] for c in self.channels if self._times[c]]
        return min(lasts) if len(lasts) == len(self.channels) else None

    def covers(self, seconds: float) -> bool:
        """Every channel holds readings spanning ``seconds`` up to :meth:`end_time`."""
        end = self.end_time()
        if end is None:
            return False
        start = max(self._times[c][0] for c in self.channels)
        return end - start >= seconds - 1e-3  # float times near 1.7e9 s carry ~0.2 µs of noise

    def snapshot(self) -> Snapshot | None:
        end = self.end_time()
        if end is None:
            return None
        return Snapshot(
            tuple(
                (np.fromiter(self._times[c], float), np.fromiter(self._values[c], float))
                for c in self.channels
            ),
            end,
        )


def resample(snap: Snapshot, n: int, period_s: float, max_gap_s: float) -> np.ndarray | None:
    """Linear interpolation onto ``n`` samples ending at ``snap.end``; None if not covered.

    Not covered: a channel starts after the grid does (more than half a period late), or has
    a gap wider than ``max_gap_s`` inside the window.
    """
    grid = snap.end - period_s * np.arange(n - 1, -1, -1, dtype=float)
    out = np.empty((n, len(snap.series)), np.float32)
    for k, (times, values) in enumerate(snap.series):
        if len(times) < 2 or times[0] > grid[0] + period_s / 2:
            return None
        inside = times[times >= grid[0] - max_gap_s]
        if len(inside) < 2 or np.max(np.diff(inside)) > max_gap_s:
            return None
        out[:, k] = np.interp(grid, times, values)
    return out
