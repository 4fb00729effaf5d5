"""Many series, one warning: an asset's level for a warning type is its highest series level.

Rules run per series (one sensor channel), so two detectors on the same asset never mix
their persistence counters. This step folds their levels into the one warning the lifecycle
allows per (asset, type).

After a restart the persisted level of an active warning is held as a placeholder until
every series of that asset reporting since has had ``settle_samples`` samples to rebuild its
own state; then the placeholder goes and the fused level follows the live series (so a leak
that ended while central was down is cancelled, and one still going is kept).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from central.rules.base import Level, Transition, level_rank

_RESTORED = "<restored>"
_EMPTY: frozenset[str] = frozenset()


class AssetLevelFusion:
    def __init__(self, settle_samples: int = 3) -> None:
        self.settle_samples = settle_samples
        self._levels: dict[tuple[str, str], dict[str, Level]] = defaultdict(dict)
        self._fused: dict[tuple[str, str], Level | None] = {}
        self._seen: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        # asset -> warning types still held by a restored placeholder (cheap hot-path check)
        self._settling: dict[str, set[str]] = {}

    def restore(self, asset: str, warning_type: str, level: Level) -> None:
        key = (asset, warning_type)
        self._levels[key][_RESTORED] = level
        self._fused[key] = level
        self._settling.setdefault(asset, set()).add(warning_type)

    def settling(self, asset: str) -> frozenset[str] | set[str]:
        """Warning types of ``asset`` still held by a placeholder: feed every judged sample
        of the asset to them (``update`` with no transition) so that they settle."""
        return self._settling.get(asset) or _EMPTY

    def reseat(self) -> None:
        """The rules were rebuilt (a reload): hold each fused level as a placeholder until
        the new rules have seen ``settle_samples`` readings per series."""
        for (asset, warning_type), level in list(self._fused.items()):
            self._levels.pop((asset, warning_type), None)
            self._seen.pop((asset, warning_type), None)
            if level is not None:
                self.restore(asset, warning_type, level)

    def update(
        self, asset: str, warning_type: str, series: str, t: float, tr: Transition | None
    ) -> Transition | None:
        """Feed one judged sample of ``series`` (with its transition, if any)."""
        key = (asset, warning_type)
        levels = self._levels[key]
        if tr is not None:
            if tr.level is None:
                levels.pop(series, None)
            else:
                levels[series] = tr.level
        if _RESTORED in levels:
            seen = self._seen[key]
            seen[series] = seen.get(series, 0) + 1
            if min(seen.values()) >= self.settle_samples:
                del levels[_RESTORED]
                self._seen.pop(key, None)
                types = self._settling.get(asset)
                if types is not None:
                    types.discard(warning_type)
                    if not types:
                        del self._settling[asset]
        fused = max(levels.values(), key=level_rank, default=None)
        if fused == self._fused.get(key):
            return None
        self._fused[key] = fused
        if tr is not None:
            summary = tr.summary
            if fused != tr.level:
                summary += f"; {fused or 'no'} level still held by another sensor of the asset"
            return dataclasses.replace(tr, asset=asset, level=fused, summary=summary)
        return Transition(
            asset=asset,
            warning_type=warning_type,
            level=fused,
            event_time=t,
            rule_id="fusion.restored",
            summary="re-evaluated after a restart of the central service",
        )
