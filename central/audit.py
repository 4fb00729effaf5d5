"""The audit log: who changed what, when, with the state before and after."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from central.db import Database


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: str
    at: float
    actor: str
    action: str  # e.g. "warning.ack", "asset.put", "token.revoke"
    target: str
    before: Any
    after: Any


class AuditLog:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock
        self._serial = itertools.count()

    def record(self, actor: str, action: str, target: str, before: Any, after: Any) -> AuditEntry:
        """Append one entry (inside the caller's transaction, if there is one)."""
        at = self._clock()
        # Time, then this process's serial: entries of one clock tick keep their order.
        ident = f"{int(at * 1e6):016d}-{next(self._serial):08d}-{uuid.uuid4().hex[:6]}"
        entry = AuditEntry(ident, at, actor, action, target, before, after)
        self.db.execute(
            "INSERT INTO audit_log (id, at_time, actor, action, target, before_state, after_state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                entry.id,
                at,
                actor,
                action,
                target,
                None if before is None else json.dumps(before, sort_keys=True, default=str),
                None if after is None else json.dumps(after, sort_keys=True, default=str),
            ),
        )
        return entry

    def query(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[AuditEntry]:
        """Newest first."""
        where, params = [], []
        for column, value in (("actor", actor), ("action", action), ("target", target)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("at_time >= ?")
            params.append(since)
        if until is not None:
            where.append("at_time <= ?")
            params.append(until)
        sql = "SELECT id, at_time, actor, action, target, before_state, after_state FROM audit_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self.db.execute(sql, [*params, max(1, limit)]).fetchall()
        return [
            AuditEntry(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                None if r[5] is None else json.loads(r[5]),
                None if r[6] is None else json.loads(r[6]),
            )
            for r in rows
        ]
