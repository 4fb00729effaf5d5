"""The one object the service talks to: CAP messages in, webhooks / SSE / Atom out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from central.db import Database
from central.delivery.atom import FeedItem
from central.delivery.hub import EventHub
from central.delivery.webhooks import RetryPolicy, WebhookStore, WebhookWorker
from central.warnings import IssuedMessage

log = logging.getLogger(__name__)

_WARNING_FIELDS = (
    "id",
    "asset",
    "type",
    "level",
    "active",
    "event_time",
    "updated_event_time",
    "cleared_event_time",
    "late",
)


class Delivery:
    """Feeds the event hub and the webhook queue from what the store holds.

    ``on_issued`` is called by the service after a batch's alerts are stored. Warning and
    gateway changes are found by comparing with the last snapshot (also every
    ``watch_interval_s``), so changes made elsewhere (an operator's acknowledgement through
    the API, a gateway's state message) reach SSE clients without those modules knowing.
    """

    def __init__(
        self,
        db: Database,
        hub: EventHub,
        asset_site: Callable[[str], str | None] = lambda asset: None,
        policy: RetryPolicy = RetryPolicy(),
        clock: Callable[[], float] = time.time,
        watch_interval_s: float = 1.0,
    ) -> None:
        self.db = db
        self.hub = hub
        self.webhooks = WebhookStore(db, asset_site, clock)
        self.worker = WebhookWorker(self.webhooks, policy, clock)
        self.watch_interval_s = watch_interval_s
        self._warnings = self._warning_snapshot()
        self._gateways = self._gateway_snapshot()
        # Alerts stored from now on are told (created_at, and the ids at that instant).
        self._alerts_since = clock()
        self._alerts_at_cursor: set[str] = set()

    # -- input -----------------------------------------------------------------------------
    def on_issued(self, messages: Sequence[IssuedMessage] = ()) -> None:
        """CAP messages were just stored: tell SSE clients now, queue webhook deliveries.

        What is told comes from the database (``messages`` only says "look now"), so the
        messages issued elsewhere (an operator's manual clear, another worker) go out too,
        at the latest with the next ``watch_interval_s`` tick.
        """
        self.refresh()
        if self.webhooks.enqueue_new_alerts():
            self.worker.wake()

    def refresh(self) -> None:
        """Publish new CAP messages and warning and gateway changes since the last look."""
        for row in self._new_alerts():
            self.hub.publish("alert", row)
        # The active warnings, and those active last time (to see them cleared): bounded by
        # what is going on now, not by the history in the table.
        warnings = self._warning_snapshot(self._warnings.keys())
        for wid, row in warnings.items():
            before = self._warnings.get(wid)
            if before != row:
                self.hub.publish("warning", row | {"change": _change(before, row)})
        self._warnings = {wid: row for wid, row in warnings.items() if row["active"]}
        gateways = self._gateway_snapshot()
        for gw, row in gateways.items():
            before = self._gateways.get(gw)
            if before is None or before["state"] != row["state"]:
                self.hub.publish("gateway", row)
        self._gateways = gateways

    def _new_alerts(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT identifier, msg_type, level, asset, warning_type, event_time, created_at,"
            " late FROM alerts WHERE created_at >= ? ORDER BY created_at, identifier",
            (self._alerts_since,),
        ).fetchall()
        fresh = [r for r in rows if r[0] not in self._alerts_at_cursor]
        if fresh:
            self._alerts_since = fresh[-1][6]
            self._alerts_at_cursor = {r[0] for r in rows if r[6] == self._alerts_since}
        return [
            {
                "identifier": r[0],
                "msgType": r[1],
                "level": r[2],
                "asset": r[3],
                "type": r[4],
                "event_time": r[5],
                "late": bool(r[7]),
            }
            for r in fresh
        ]

    # -- running ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """The webhook worker and the change watcher, until ``stop``."""
        if self.webhooks.enqueue_new_alerts():  # alerts stored just before a restart
            log.info("delivery: queued webhook deliveries for alerts stored before start")
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.worker.run(stop))
                tg.create_task(self._watch(stop))
        finally:
            self.hub.close()

    async def _watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.watch_interval_s):
                    await stop.wait()
            try:
                self.refresh()
                if self.webhooks.enqueue_new_alerts():
                    self.worker.wake()
            except Exception:  # a database hiccup must not end delivery; try again next tick
                log.exception("delivery: refresh failed")

    # -- output ----------------------------------------------------------------------------
    def feed_items(self, limit: int) -> list[FeedItem]:
        rows = self.db.execute(
            "SELECT identifier, sender, sent, xml FROM alerts"
            " ORDER BY created_at DESC, identifier DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [FeedItem(r[0], r[1], r[2], r[3].encode()) for r in rows]

    def stats(self) -> dict[str, Any]:
        return {
            "webhooks": self.webhooks.stats()
            | {"sent_ok": self.worker.sent_ok, "failed_attempts": self.worker.failed_attempts},
            "sse": {
                "clients": self.hub.clients,
                "events": self.hub.published,
                "dropped_clients": self.hub.dropped_clients,
            },
        }

    # -- snapshots -------------------------------------------------------------------------
    def _warning_snapshot(self, also: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
        """Active warnings, plus the ones named in ``also`` whatever their state."""
        acked = "acknowledged_at" in self.db.columns("warning_ops")
        ids = list(also)
        sql = (
            "SELECT w.id, w.asset, w.warning_type, w.level, w.active, w.raised_event_time,"
            " w.updated_event_time, w.cleared_event_time, w.late"
            + (", o.acknowledged_by, o.acknowledged_at" if acked else "")
            + " FROM warnings w"
            + (" LEFT JOIN warning_ops o ON o.warning_id = w.id" if acked else "")
            + " WHERE w.active = 1"
            + (f" OR w.id IN ({', '.join('?' * len(ids))})" if ids else "")
        )
        snapshot: dict[str, dict[str, Any]] = {}
        for r in self.db.execute(sql, ids).fetchall():
            row = dict(zip(_WARNING_FIELDS, r[:9], strict=True))
            row["active"], row["late"] = bool(row["active"]), bool(row["late"])
            row["acknowledged_by"] = r[9] if acked else None
            row["acknowledged_at"] = r[10] if acked else None
            snapshot[row["id"]] = row
        return snapshot

    def _gateway_snapshot(self) -> dict[str, dict[str, Any]]:
        return {
            r[0]: {"gateway": r[0], "site": r[1], "state": r[2], "last_seen": r[3]}
            for r in self.db.execute("SELECT gateway, site, state, last_seen FROM gateways")
        }


def _change(before: dict[str, Any] | None, row: dict[str, Any]) -> str:
    if before is None:
        return "new"
    if before["active"] and not row["active"]:
        return "cleared"
    if row["acknowledged_at"] and not before["acknowledged_at"]:
        return "acknowledged"
    return "updated"
