"""Warning lifecycle: at most one active warning per (asset, type), told in CAP 1.2.

A new warning is a CAP ``Alert``; a level change is an ``Update`` whose ``references`` list
every earlier message of the warning; a clear is a ``Cancel`` referencing them all.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from central.cap import (
    CapArea,
    CapMessage,
    CapReference,
    format_cap_time,
    make_identifier,
    render_cap,
)
from central.config import CapConfig
from central.rules.base import Level, Transition
from central.rules.catalog import event_name, instruction
from central.store import AlertRow, Store, WarningRow


@dataclass(frozen=True, slots=True)
class AssetInfo:
    id: str
    name: str
    lat: float | None = None
    lon: float | None = None
    radius_km: float = 0.1
    type: str = "generic"  # asset type: selects the rule set (central/rulesets/<type>.yaml)
    site: str | None = None
    # Per-asset rule inputs: rated speed, warning levels, control values, context, ...
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IssuedMessage:
    identifier: str
    msg_type: str
    level: Level
    asset: str
    warning_type: str
    event_time: float
    xml: bytes


class WarningManager:
    def __init__(
        self,
        store: Store,
        cap: CapConfig,
        asset_info: Callable[[str], AssetInfo],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.cap = cap
        self._asset_info = asset_info
        self._clock = clock
        self._serial = itertools.count(1)
        restored = store.active_warnings()
        self.active: dict[tuple[str, str], WarningRow] = {
            (w.asset, w.warning_type): w for w in restored if not w.late
        }
        # Warnings judged from a replayed backlog live beside the live ones, never mixed.
        self.late_active: dict[tuple[str, str], WarningRow] = {
            (w.asset, w.warning_type): w for w in restored if w.late
        }
        self.suppressed_late = 0

    def _when(self, seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, UTC).astimezone(self.cap.tz)

    def apply(self, tr: Transition) -> IssuedMessage | None:
        if tr.late:
            return self._apply_late(tr)
        key = (tr.asset, tr.warning_type)
        return self._step(self.active, key, tr)

    def _apply_late(self, tr: Transition) -> IssuedMessage | None:
        """A transition judged from backlog data (event time before the live stream).

        It becomes a late warning only if no live warning told the story already: none is
        active now (the same episode, still going) and none was active at that event time
        (a warning that has since cleared is never raised again from old data).
        """
        key = (tr.asset, tr.warning_type)
        if (
            key not in self.late_active
            and tr.level is not None
            and (
                key in self.active
                or self.store.live_warning_covered(tr.asset, tr.warning_type, tr.event_time)
            )
        ):
            self.suppressed_late += 1
            return None
        return self._step(self.late_active, key, tr)

    def _step(
        self, active: dict[tuple[str, str], WarningRow], key: tuple[str, str], tr: Transition
    ) -> IssuedMessage | None:
        current = active.get(key)
        if tr.level is None:
            if current is None:
                return None
            return self._issue("Cancel", current.level, tr, current)
        if current is None:
            return self._issue("Alert", tr.level, tr, None)
        if current.level == tr.level:
            return None
        return self._issue("Update", tr.level, tr, current)

    def _issue(
        self, msg_type: str, level: Level, tr: Transition, current: WarningRow | None
    ) -> IssuedMessage:
        now = self._clock()
        sent = self._when(now)
        identifier = make_identifier(self.cap.identifier_prefix, sent, next(self._serial))
        # The serial restarts with the process; a random tail keeps identifiers unique.
        identifier = f"{identifier}-{uuid.uuid4().hex[:6]}"
        chain = list(current.message_chain) if current else []
        info = self._asset_info(tr.asset)
        event = event_name(tr.warning_type)
        if msg_type == "Cancel":
            headline = f"{event} at {info.name}: cleared"
        else:
            headline = f"{level.upper()} warning: {event} at {info.name}"
        message = CapMessage(
            identifier=identifier,
            sender=self.cap.sender,
            sent=sent,
            msg_type=msg_type,  # type: ignore[arg-type]
            level=level,
            event=event,
            headline=headline,
            description=tr.summary,
            effective=self._when(tr.event_time),
            area=CapArea(info.name, info.lat, info.lon, info.radius_km),
            parameters=(
                ("RULE_ID", tr.rule_id),
                ("ASSET_ID", tr.asset),
                ("WARNING_TYPE", tr.warning_type),
                *((("LATE", "TRUE"),) if tr.late else ()),
                *sorted(tr.trigger.items()),
            ),
            references=tuple(CapReference(s, i, datetime.fromisoformat(t)) for s, i, t in chain),
            language=self.cap.language,
            instruction=None if msg_type == "Cancel" else instruction(tr.warning_type, level),
            note=_note(msg_type, tr),
        )
        xml = render_cap(message)
        chain.append((self.cap.sender, identifier, format_cap_time(sent)))
        warning = WarningRow(
            id=current.id if current else f"w-{uuid.uuid4().hex[:12]}",
            asset=tr.asset,
            warning_type=tr.warning_type,
            level=level,
            active=msg_type != "Cancel",
            raised_event_time=current.raised_event_time if current else tr.event_time,
            updated_event_time=tr.event_time,
            cleared_event_time=tr.event_time if msg_type == "Cancel" else None,
            message_chain=chain,
            late=tr.late,
        )
        self.store.save_alert(
            AlertRow(
                identifier,
                self.cap.sender,
                format_cap_time(sent),
                msg_type,
                level,
                tr.asset,
                tr.warning_type,
                tr.event_time,
                now,
                xml,
                tr.late,
            ),
            warning,
        )
        key = (tr.asset, tr.warning_type)
        active = self.late_active if tr.late else self.active
        if warning.active:
            active[key] = warning
        else:
            active.pop(key, None)
        return IssuedMessage(
            identifier, msg_type, level, tr.asset, tr.warning_type, tr.event_time, xml
        )


def _note(msg_type: str, tr: Transition) -> str | None:
    parts = []
    if tr.late:
        parts.append(
            "Late: judged from data recorded during an uplink outage and delivered afterwards;"
            " 'effective' is when the condition was met."
        )
    if msg_type == "Cancel":
        parts.append("Condition cleared.")
    return " ".join(parts) or None
