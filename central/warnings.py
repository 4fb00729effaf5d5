"""Warning lifecycle: at most one active warning per (asset, type), told in CAP 1.2.

A new warning is a CAP ``Alert``; a level change is an ``Update`` whose ``references`` list
every earlier message of the warning; a clear is a ``Cancel`` referencing them all. Operators
acknowledge, assign and clear by hand (a manual clear is a ``Cancel`` too); every such change
goes to the audit log. Every warning belongs to an incident (central/incidents.py) whose id
each of its CAP messages carries in ``incidents``.
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from central.audit import AuditLog
from central.cap import (
    INTERNAL_PROFILE,
    CapArea,
    CapMessage,
    CapReference,
    format_cap_time,
    make_identifier,
    render_cap,
)
from central.config import CapConfig
from central.db import Database
from central.incidents import IncidentTracker
from central.registry import AssetInfo
from central.rules.base import Level, Transition, level_rank
from central.rules.catalog import event_name, instruction
from central.store import AlertRow, Store, WarningRow

__all__ = ["AssetInfo", "IssuedMessage", "WarningConflict", "WarningManager", "WarningNotFound"]

# Internal alarms about the monitoring itself, not the hazard: CAP says "Unknown" / "Assess".
INTERNAL_TYPES = frozenset({"sensor_fault", "sensor_offline"})
MANUAL_RULE_ID = "manual.clear"


class WarningNotFound(LookupError):
    pass


class WarningConflict(ValueError):
    """The action does not fit the warning's state (e.g. acknowledging a cleared one)."""


@dataclass(frozen=True, slots=True)
class IssuedMessage:
    identifier: str
    msg_type: str
    level: Level
    asset: str
    warning_type: str
    event_time: float
    xml: bytes
    incident: str | None = None


class OperatorState:
    """Acknowledgement, assignment and manual clear of warnings (table warning_ops); read
    back joined with the warnings in WarningManager._select."""

    _COLUMNS = ("acknowledged_by", "acknowledged_at", "assignee", "assigned_at", "cleared_by")

    def __init__(self, db: Database) -> None:
        self.db = db

    def set(self, warning_id: str, **values: Any) -> None:
        columns = list(values)
        if not columns or not set(columns) <= set(self._COLUMNS):
            raise ValueError(f"unknown operator columns {columns}")
        self.db.execute(
            f"INSERT INTO warning_ops (warning_id, {', '.join(columns)})"
            f" VALUES (?{', ?' * len(columns)}) ON CONFLICT (warning_id) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in columns),
            (warning_id, *values.values()),
        )


class WarningManager:
    def __init__(
        self,
        store: Store,
        cap: CapConfig,
        asset_info: Callable[[str], AssetInfo],
        clock: Callable[[], float] = time.time,
        *,
        incidents: IncidentTracker | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.store = store
        self.cap = cap
        self._asset_info = asset_info
        self._clock = clock
        self._serial = itertools.count(1)
        self.incidents = incidents or IncidentTracker(store.db, asset_info)
        self.audit = audit or AuditLog(store.db, clock)
        self.operator = OperatorState(store.db)
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

    # -- from the rules ------------------------------------------------------------------
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
        if current is not None and not self._still_active(current.id):
            # Cleared by an operator through another worker (shared mode): this process's
            # copy is stale; the stored row decides, so nothing is updated or cancelled twice.
            del active[key]
            current = None
        if tr.level is None:
            if current is None:
                return None
            return self._issue("Cancel", current.level, tr, current)  # type: ignore[arg-type]
        if current is None:
            return self._issue("Alert", tr.level, tr, None)
        if current.level == tr.level:
            return None
        return self._issue("Update", tr.level, tr, current)

    def _still_active(self, warning_id: str) -> bool:
        """One primary-key read per level change (rare next to readings)."""
        row = self.store.db.execute(
            "SELECT active FROM warnings WHERE id = ?", (warning_id,)
        ).fetchone()
        return row is None or bool(row[0])  # not stored yet: this process just raised it

    # -- from operators ------------------------------------------------------------------
    def find(self, warning_id: str) -> dict[str, Any]:
        """One warning as the API shows it; WarningNotFound if there is none."""
        found = self._select("w.id = ?", [warning_id], 1)
        if not found:
            raise WarningNotFound(warning_id)
        return found[0]

    def list(
        self,
        *,
        active: bool | None = None,
        asset: str | None = None,
        level: str | None = None,
        warning_type: str | None = None,
        limit: int = 100_000,
    ) -> list[dict[str, Any]]:
        """Oldest first (by the event time each was raised)."""
        where, params = [], []
        for column, value in (
            ("w.active", None if active is None else int(active)),
            ("w.asset", asset),
            ("w.level", level),
            ("w.warning_type", warning_type),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        return self._select(" AND ".join(where) or "1 = 1", params, limit)

    def _select(self, where: str, params: list[Any], limit: int) -> list[dict[str, Any]]:
        """Warnings with their operator state and incident: one query, filtered in SQL."""
        rows = self.store.db.execute(
            "SELECT w.id, w.asset, w.warning_type, w.level, w.active, w.raised_event_time,"
            " w.cleared_event_time, w.late, o.acknowledged_by, o.acknowledged_at, o.assignee,"
            " o.assigned_at, o.cleared_by, m.incident FROM warnings w"
            " LEFT JOIN warning_ops o ON o.warning_id = w.id"
            " LEFT JOIN incident_members m ON m.warning_id = w.id"
            f" WHERE {where} ORDER BY w.raised_event_time, w.id LIMIT ?",
            [*params, max(1, limit)],
        ).fetchall()
        return [
            {
                "id": r[0],
                "asset": r[1],
                "type": r[2],
                "level": r[3],
                "active": bool(r[4]),
                "event_time": r[5],
                "cleared_event_time": r[6],
                "late": bool(r[7]),
                "acknowledged": r[8] is not None,
                "acknowledged_by": r[8],
                "acknowledged_at": r[9],
                "assignee": r[10],
                "assigned_at": r[11],
                "cleared_by": r[12],
                "incident": r[13],
            }
            for r in rows
        ]

    def acknowledge(self, warning_id: str, actor: str) -> dict[str, Any]:
        """Idempotent: acknowledging an acknowledged warning changes nothing."""
        before = self.find(warning_id)
        if not before["active"]:
            raise WarningConflict(f"warning '{warning_id}' is cleared")
        if before["acknowledged"]:
            return before
        with self.store.db.transaction():
            self.operator.set(warning_id, acknowledged_by=actor, acknowledged_at=self._clock())
            after = self.find(warning_id)
            self.audit.record(actor, "warning.ack", warning_id, _ops_view(before), _ops_view(after))
        return after

    def assign(self, warning_id: str, assignee: str | None, actor: str) -> dict[str, Any]:
        before = self.find(warning_id)
        if not before["active"]:
            raise WarningConflict(f"warning '{warning_id}' is cleared")
        if before["assignee"] == assignee:
            return before
        with self.store.db.transaction():
            self.operator.set(warning_id, assignee=assignee, assigned_at=self._clock())
            after = self.find(warning_id)
            self.audit.record(
                actor, "warning.assign", warning_id, _ops_view(before), _ops_view(after)
            )
        return after

    def clear(self, warning_id: str, actor: str, reason: str = "") -> IssuedMessage:
        """End an active warning by hand: a CAP Cancel naming who cleared it and why."""
        before = self.find(warning_id)
        # The stored row, not this process's copy: its message chain is the one to cancel.
        current = next((w for w in self.store.active_warnings() if w.id == warning_id), None)
        if current is None or not before["active"]:
            raise WarningConflict(f"warning '{warning_id}' is not active")
        summary = f"Cleared manually by {actor}" + (f": {reason}" if reason else "")
        tr = Transition(
            asset=current.asset,
            warning_type=current.warning_type,
            level=None,
            event_time=self._clock(),
            rule_id=MANUAL_RULE_ID,
            trigger={"CLEARED_BY": actor},
            summary=summary,
            late=current.late,
        )
        with self.store.db.transaction():
            self.operator.set(warning_id, cleared_by=actor)
            message = self._issue("Cancel", current.level, tr, current)  # type: ignore[arg-type]
            after = self.find(warning_id)
            self.audit.record(
                actor,
                "warning.clear",
                warning_id,
                _ops_view(before),
                _ops_view(after) | {"reason": reason, "cap": message.identifier},
            )
        return message

    # -- issuing -------------------------------------------------------------------------
    def _incident(
        self,
        msg_type: str,
        warning_id: str,
        level: Level,
        tr: Transition,
        current: WarningRow | None,
    ) -> str | None:
        if msg_type == "Cancel":
            return self.incidents.on_clear(warning_id, tr.event_time)
        if current is not None:
            joined = self.incidents.on_level(warning_id, level, tr.event_time)
            if joined is not None:
                return joined
        # New, or active since before incidents were kept: it joins (or opens) one now.
        return self.incidents.on_raise(warning_id, tr.asset, tr.warning_type, level, tr.event_time)

    def _issue(
        self, msg_type: str, level: Level, tr: Transition, current: WarningRow | None
    ) -> IssuedMessage:
        now = self._clock()
        sent = self._when(now)
        identifier = make_identifier(self.cap.identifier_prefix, sent, next(self._serial))
        # The serial restarts with the process; a random tail keeps identifiers unique.
        identifier = f"{identifier}-{uuid.uuid4().hex[:6]}"
        warning_id = current.id if current else f"w-{uuid.uuid4().hex[:12]}"
        chain = list(current.message_chain) if current else []
        info = self._asset_info(tr.asset)
        event = event_name(tr.warning_type)
        if msg_type == "Cancel":
            headline = f"{event} at {info.name}: cleared"
        else:
            headline = f"{level.upper()} warning: {event} at {info.name}"
        trigger = dict(tr.trigger)
        onset = _onset(tr, trigger)
        internal = tr.warning_type in INTERNAL_TYPES
        severity, urgency, certainty, response = INTERNAL_PROFILE if internal else (None,) * 4
        with self.store.db.transaction():
            incident = self._incident(msg_type, warning_id, level, tr, current)
            message = CapMessage(
                identifier=identifier,
                sender=self.cap.sender,
                sent=sent,
                msg_type=msg_type,  # type: ignore[arg-type]
                level=level,
                event=event,
                headline=headline,
                description=tr.summary or headline,
                effective=self._when(tr.event_time),
                onset=self._when(onset) if onset is not None else None,
                area=_area(info),
                parameters=(
                    ("RULE_ID", tr.rule_id),
                    ("ASSET_ID", tr.asset),
                    ("WARNING_TYPE", tr.warning_type),
                    *((("SITE_ID", info.site),) if info.site else ()),
                    *((("LATE", "TRUE"),) if tr.late else ()),
                    *sorted((str(k), str(v)) for k, v in trigger.items()),
                ),
                references=tuple(
                    CapReference(s, i, datetime.fromisoformat(t)) for s, i, t in chain
                ),
                incidents=incident,
                language=self.cap.language,
                instruction=None if msg_type == "Cancel" else instruction(tr.warning_type, level),
                note=_note(msg_type, tr),
                severity=severity,
                urgency=urgency,
                certainty=certainty or getattr(tr, "certainty", None),
                response_type=response,
            )
            xml = render_cap(message)
            chain.append((self.cap.sender, identifier, format_cap_time(sent)))
            warning = WarningRow(
                id=warning_id,
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
            if current is not None and level_rank(level) > level_rank(current.level):  # type: ignore[arg-type]
                # An escalation needs a fresh acknowledgement.
                self.operator.set(warning_id, acknowledged_by=None, acknowledged_at=None)
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
            identifier, msg_type, level, tr.asset, tr.warning_type, tr.event_time, xml, incident
        )


def _valid_point(lat: float | None, lon: float | None) -> bool:
    return (
        lat is not None
        and lon is not None
        and math.isfinite(lat)
        and math.isfinite(lon)
        and -90 <= lat <= 90
        and -180 <= lon <= 180
    )


def _area(info: AssetInfo) -> CapArea:
    """The asset's polygon, else its circle; a position a gateway's birth got wrong is left
    out rather than making the warning unsendable."""
    ring = info.geometry
    if ring and len(set(ring)) >= 3 and all(_valid_point(lat, lon) for lat, lon in ring):
        return CapArea(info.name, polygon=ring)
    if _valid_point(info.lat, info.lon) and math.isfinite(info.radius_km) and info.radius_km >= 0:
        return CapArea(info.name, info.lat, info.lon, info.radius_km)
    return CapArea(info.name)


def _onset(tr: Transition, trigger: dict[str, Any]) -> float | None:
    """A predicted time of the hazard (epoch seconds): Transition.onset, or trigger 'onset'."""
    value = getattr(tr, "onset", None)
    raw = trigger.pop("onset", None)
    if value is None and raw is not None:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            trigger["onset"] = raw  # not a time: keep it as a plain parameter
    return value


def _ops_view(warning: dict[str, Any]) -> dict[str, Any]:
    keys = ("level", "active", "acknowledged_by", "assignee", "cleared_by")
    return {k: warning.get(k) for k in keys}


def _note(msg_type: str, tr: Transition) -> str | None:
    parts = []
    if tr.late:
        parts.append(
            "Late: judged from data recorded during an uplink outage and delivered afterwards;"
            " 'effective' is when the condition was met."
        )
    if tr.rule_id == MANUAL_RULE_ID:
        parts.append(f"{tr.summary}.")
    elif msg_type == "Cancel":
        parts.append("Condition cleared.")
    return " ".join(parts) or None
