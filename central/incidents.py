"""Incidents: warnings close in space and time, grouped under one id (CAP ``incidents``).

A new warning joins an incident when one of its members is close: the same asset, or assets
of the same site (or with no site) within ``radius_km`` of each other — same site with no
known positions also counts. In time, the incident must still be open, or have closed no
more than ``window_s`` (event time) before; a closed incident that is joined reopens. With
several candidates the most recently active one wins; incidents are never merged, because
the CAP messages already sent name the id they were given.

An incident's level is the highest level of its active members; its site is its first
member's.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from central.db import Database
from central.registry import AssetInfo
from central.rules.base import Level, level_rank


@dataclass(slots=True)
class Member:
    warning_id: str
    asset: str
    warning_type: str
    level: Level
    active: bool
    joined_event_time: float


@dataclass(slots=True)
class Incident:
    id: str
    site: str | None
    level: Level | None  # None once closed
    peak_level: Level
    active: bool
    opened_event_time: float
    last_event_time: float
    closed_event_time: float | None
    members: list[Member] = field(default_factory=list)


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine, mean Earth radius)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


def position(info: AssetInfo) -> tuple[float, float] | None:
    if info.lat is not None and info.lon is not None:
        return (info.lat, info.lon)
    if info.geometry:
        return (
            sum(p[0] for p in info.geometry) / len(info.geometry),
            sum(p[1] for p in info.geometry) / len(info.geometry),
        )
    return None


def close_in_space(a: AssetInfo, b: AssetInfo, radius_km: float) -> bool:
    if a.id == b.id:
        return True
    if a.site and b.site and a.site != b.site:
        return False
    pa, pb = position(a), position(b)
    if pa is not None and pb is not None:
        return distance_km(pa, pb) <= radius_km
    return a.site is not None and a.site == b.site


def _max_level(levels: list[Level]) -> Level | None:
    return max(levels, key=level_rank, default=None)


class IncidentTracker:
    def __init__(
        self,
        db: Database,
        asset_info: Callable[[str], AssetInfo],
        radius_km: float = 1.0,
        window_s: float = 1800.0,
    ) -> None:
        self.db = db
        self._asset_info = asset_info
        self.radius_km = radius_km
        self.window_s = window_s

    # -- lifecycle hooks (central/warnings.py)
    def on_raise(
        self, warning_id: str, asset: str, warning_type: str, level: Level, event_time: float
    ) -> str:
        """The incident a new warning belongs to (joined or opened)."""
        known = self.incident_of(warning_id)
        if known is not None:
            return known
        info = self._asset_info(asset)
        with self.db.transaction():
            incident = self._candidate(info, event_time)
            if incident is None:
                incident = Incident(
                    f"INC-{uuid.uuid4().hex[:12]}",
                    info.site,
                    level,
                    level,
                    True,
                    event_time,
                    event_time,
                    None,
                )
            incident.members.append(
                Member(warning_id, asset, warning_type, level, True, event_time)
            )
            self._settle(incident, event_time)
            self._save(incident)
        return incident.id

    def on_level(self, warning_id: str, level: Level, event_time: float) -> str | None:
        return self._change(warning_id, level, event_time)

    def on_clear(self, warning_id: str, event_time: float) -> str | None:
        return self._change(warning_id, None, event_time)

    def _change(self, warning_id: str, level: Level | None, event_time: float) -> str | None:
        incident_id = self.incident_of(warning_id)
        if incident_id is None:
            return None
        with self.db.transaction():
            incident = self.get(incident_id)
            assert incident is not None
            for member in incident.members:
                if member.warning_id == warning_id:
                    member.active = level is not None
                    if level is not None:
                        member.level = level
            self._settle(incident, event_time)
            self._save(incident)
        return incident_id

    def _settle(self, incident: Incident, event_time: float) -> None:
        active = [m.level for m in incident.members if m.active]
        incident.level = _max_level(active)
        incident.peak_level = _max_level([incident.peak_level, *active]) or incident.peak_level
        incident.last_event_time = max(incident.last_event_time, event_time)
        incident.active = bool(active)
        incident.closed_event_time = None if active else event_time

    def _candidate(self, info: AssetInfo, event_time: float) -> Incident | None:
        # One query for the open (or recently closed) incidents' member assets: this runs
        # for every new warning, so no query per incident.
        rows = self.db.execute(
            "SELECT i.id, m.asset FROM incidents i JOIN incident_members m ON m.incident = i.id"
            " WHERE i.active = 1 OR i.closed_event_time >= ?"
            " ORDER BY i.last_event_time DESC, i.id",
            (event_time - self.window_s,),
        ).fetchall()
        assets: dict[str, set[str]] = {}
        for incident_id, asset in rows:  # dicts keep the newest-first order
            assets.setdefault(incident_id, set()).add(asset)
        for incident_id, members in assets.items():
            if any(close_in_space(info, self._asset_info(a), self.radius_km) for a in members):
                return self.get(incident_id)
        return None

    def _save(self, incident: Incident) -> None:
        self.db.execute(
            "INSERT INTO incidents (id, site, level, peak_level, active, opened_event_time,"
            " last_event_time, closed_event_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET level = excluded.level,"
            " peak_level = excluded.peak_level, active = excluded.active,"
            " last_event_time = excluded.last_event_time,"
            " closed_event_time = excluded.closed_event_time",
            (
                incident.id,
                incident.site,
                incident.level,
                incident.peak_level,
                int(incident.active),
                incident.opened_event_time,
                incident.last_event_time,
                incident.closed_event_time,
            ),
        )
        self.db.executemany(
            "INSERT INTO incident_members (incident, warning_id, asset, warning_type, level,"
            " active, joined_event_time) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (incident, warning_id) DO UPDATE SET level = excluded.level,"
            " active = excluded.active",
            [
                (
                    incident.id,
                    m.warning_id,
                    m.asset,
                    m.warning_type,
                    m.level,
                    int(m.active),
                    m.joined_event_time,
                )
                for m in incident.members
            ],
        )

    # -- reads
    def incident_of(self, warning_id: str) -> str | None:
        row = self.db.execute(
            "SELECT incident FROM incident_members WHERE warning_id = ?", (warning_id,)
        ).fetchone()
        return row[0] if row else None

    def get(self, incident_id: str) -> Incident | None:
        return self._load([incident_id]).get(incident_id)

    def _load(self, ids: list[str]) -> dict[str, Incident]:
        """Incidents with their members, in two queries whatever their number."""
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        incidents = {
            row[0]: Incident(
                row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6], row[7], []
            )
            for row in self.db.execute(
                "SELECT id, site, level, peak_level, active, opened_event_time,"
                f" last_event_time, closed_event_time FROM incidents WHERE id IN ({marks})",
                ids,
            ).fetchall()
        }
        for m in self.db.execute(
            "SELECT incident, warning_id, asset, warning_type, level, active, joined_event_time"
            f" FROM incident_members WHERE incident IN ({marks})"
            " ORDER BY joined_event_time, warning_id",
            ids,
        ).fetchall():
            incident = incidents.get(m[0])
            if incident is not None:
                incident.members.append(Member(m[1], m[2], m[3], m[4], bool(m[5]), m[6]))
        return incidents

    def list(
        self, active: bool | None = None, site: str | None = None, limit: int = 1000
    ) -> list[Incident]:
        where, params = [], []
        if active is not None:
            where.append("active = ?")
            params.append(int(active))
        if site is not None:
            where.append("site = ?")
            params.append(site)
        sql = "SELECT id FROM incidents"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY last_event_time DESC, id LIMIT ?"
        ids = [r[0] for r in self.db.execute(sql, [*params, max(1, limit)]).fetchall()]
        loaded = self._load(ids)
        return [loaded[x] for x in ids if x in loaded]
