"""Webhooks: subscriptions, persisted outstanding deliveries, and the worker that sends them.

Every CAP message becomes one delivery row per matching subscription, in the database,
before anything is sent: a restart resumes where it stopped (rows still ``pending``). The
worker retries with exponential backoff and moves a delivery to ``dead`` after
``max_attempts``. Receivers deduplicate on the ``Idempotency-Key`` header (the delivery id):
a delivery whose success answer was lost is sent again with the same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import httpx

from central.db import Database
from central.delivery.signing import SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)

ALERT_CURSOR = "alerts"


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    url: str
    levels: tuple[str, ...] | None
    types: tuple[str, ...] | None
    sites: tuple[str, ...] | None
    active: bool
    created_at: float

    def matches(self, level: str, warning_type: str, site: str | None) -> bool:
        return (
            (self.levels is None or level in self.levels)
            and (self.types is None or warning_type in self.types)
            and (self.sites is None or site in self.sites)
        )

    def public(self) -> dict[str, Any]:
        """What the API shows (never the secret)."""
        return {
            "id": self.id,
            "url": self.url,
            "levels": list(self.levels) if self.levels is not None else None,
            "types": list(self.types) if self.types is not None else None,
            "sites": list(self.sites) if self.sites is not None else None,
            "active": self.active,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    id: str
    subscription: str
    url: str
    secret: str
    body: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay_s: float = 2.0
    max_delay_s: float = 600.0
    jitter: float = 0.2  # ± fraction, so that many failed receivers are not retried in step
    timeout_s: float = 10.0

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Wait after the ``attempts``-th failed attempt: base · 2^(attempts-1), capped."""
        delay = min(self.base_delay_s * 2 ** (attempts - 1), self.max_delay_s)
        return delay * (1 + self.jitter * rng.uniform(-1, 1))


def _as_list(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(json.loads(value))


class WebhookStore:
    """The delivery tables (central/schema_delivery.sql) through central/db.py."""

    def __init__(
        self,
        db: Database,
        asset_site: Callable[[str], str | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self._asset_site = asset_site
        self._clock = clock
        schema = resources.files("central").joinpath("schema_delivery.sql").read_text()
        if db.dialect == "postgresql":
            with db.transaction():
                # Workers starting together: concurrent CREATE … IF NOT EXISTS can collide.
                db.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('sentryline.delivery'),"
                    " hashtext(current_schema()))"
                )
                db.script(schema)
        else:
            db.script(schema)  # executescript commits by itself on SQLite
        # Deliveries start with the alerts issued after the first start, not the history.
        self.db.execute(
            "INSERT INTO delivery_cursor (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (ALERT_CURSOR, clock()),
        )

    # -- subscriptions ---------------------------------------------------------------------
    def add_subscription(
        self,
        url: str,
        secret: str | None = None,
        levels: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        sites: Sequence[str] | None = None,
    ) -> tuple[Subscription, str]:
        """A new subscription and its secret (generated when not given; shown once)."""
        secret = secret or secrets.token_urlsafe(32)
        sub_id = f"wh-{uuid.uuid4().hex[:12]}"
        now = self._clock()

        def enc(values: Sequence[str] | None) -> str | None:
            return None if values is None else json.dumps(sorted(set(values)))

        self.db.execute(
            "INSERT INTO webhook_subscriptions (id, url, secret, levels, types, sites, active,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?)",
            (sub_id, url, secret, enc(levels), enc(types), enc(sites), now),
        )
        sub = self.subscription(sub_id)
        assert sub is not None
        return sub, secret

    def subscriptions(self, active_only: bool = False) -> list[Subscription]:
        sql = (
            "SELECT id, url, levels, types, sites, active, created_at FROM webhook_subscriptions"
            + (" WHERE active = 1" if active_only else "")
            + " ORDER BY created_at"
        )
        return [
            Subscription(
                r[0], r[1], _as_list(r[2]), _as_list(r[3]), _as_list(r[4]), bool(r[5]), r[6]
            )
            for r in self.db.execute(sql).fetchall()
        ]

    def subscription(self, sub_id: str) -> Subscription | None:
        return next((s for s in self.subscriptions() if s.id == sub_id), None)

    def remove_subscription(self, sub_id: str) -> bool:
        """Deactivate (kept for the deliveries that name it); pending ones are not sent."""
        with self.db.transaction():
            found = self.db.execute(
                "UPDATE webhook_subscriptions SET active = 0 WHERE id = ? AND active = 1",
                (sub_id,),
            ).rowcount
            self.db.execute(
                "UPDATE webhook_deliveries SET state = 'cancelled', finished_at = ?"
                " WHERE subscription = ? AND state = 'pending'",
                (self._clock(), sub_id),
            )
        return found > 0

    # -- deliveries ------------------------------------------------------------------------
    def enqueue_new_alerts(self) -> int:
        """Turn alerts stored since the cursor into delivery rows; returns how many.

        Idempotent (one row per subscription and alert), so running it after every batch
        and once at start-up also covers alerts stored just before a crash.
        """
        created = 0
        with self.db.transaction():
            row = self.db.execute(
                "SELECT value FROM delivery_cursor WHERE name = ?", (ALERT_CURSOR,)
            ).fetchone()
            cursor = row[0] if row else 0.0
            alerts = self.db.execute(
                "SELECT identifier, sender, sent, msg_type, level, asset, warning_type,"
                " event_time, created_at, xml, late FROM alerts WHERE created_at >= ?"
                " ORDER BY created_at, identifier",
                (cursor,),
            ).fetchall()
            if not alerts:
                return 0
            subs = self.subscriptions(active_only=True)
            now = self._clock()
            for a in alerts:
                site = self._asset_site(a[5])
                for sub in subs:
                    if sub.created_at > a[8] or not sub.matches(a[4], a[6], site):
                        continue
                    delivery_id = f"d-{uuid.uuid4().hex}"
                    body = _body(delivery_id, a, site)
                    created += self.db.execute(
                        "INSERT INTO webhook_deliveries (id, subscription, alert, body, state,"
                        " attempts, next_attempt_at, created_at) VALUES (?, ?, ?, ?, 'pending',"
                        " 0, ?, ?) ON CONFLICT (subscription, alert) DO NOTHING",
                        (delivery_id, sub.id, a[0], body, now, now),
                    ).rowcount
            latest = max(a[8] for a in alerts)
            self.db.execute(  # never backwards (another worker may have gone further)
                "UPDATE delivery_cursor SET value = ? WHERE name = ? AND value < ?",
                (latest, ALERT_CURSOR, latest),
            )
        return created

    def claim_due(self, now: float, limit: int, lease_s: float) -> list[PendingDelivery]:
        """Due deliveries, each claimed for ``lease_s`` (its next attempt moved past the
        lease), so that several central workers never send the same one at once; a worker
        that dies mid-attempt leaves it due again when the lease ends."""
        claimed = []
        for d in self._due(now, limit):
            won = self.db.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = ?"
                " WHERE id = ? AND state = 'pending' AND next_attempt_at <= ?",
                (now + lease_s, d.id, now),
            ).rowcount
            if won:
                claimed.append(d)
        return claimed

    def _due(self, now: float, limit: int) -> list[PendingDelivery]:
        rows = self.db.execute(
            "SELECT d.id, d.subscription, s.url, s.secret, d.body, d.attempts"
            " FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription"
            " WHERE d.state = 'pending' AND d.next_attempt_at <= ?"
            " ORDER BY d.next_attempt_at, d.created_at LIMIT ?",
            (now, limit),
        ).fetchall()
        return [PendingDelivery(r[0], r[1], r[2], r[3], r[4].encode(), r[5]) for r in rows]

    def next_due_at(self) -> float | None:
        row = self.db.execute(
            "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE state = 'pending'"
        ).fetchone()
        return row[0] if row else None

    def mark_delivered(self, delivery_id: str) -> None:
        self.db.execute(
            "UPDATE webhook_deliveries SET state = 'delivered', attempts = attempts + 1,"
            " finished_at = ?, last_error = NULL WHERE id = ? AND state = 'pending'",
            (self._clock(), delivery_id),
        )

    def mark_failed(self, delivery_id: str, error: str, retry_at: float | None) -> None:
        """One more failed attempt; ``retry_at`` None: no more tries (dead letter)."""
        if retry_at is None:
            self.db.execute(
                "UPDATE webhook_deliveries SET state = 'dead', attempts = attempts + 1,"
                " last_error = ?, finished_at = ? WHERE id = ? AND state = 'pending'",
                (error[:500], self._clock(), delivery_id),
            )
        else:
            self.db.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = ? WHERE id = ? AND state = 'pending'",
                (error[:500], retry_at, delivery_id),
            )

    def retry_dead(self, delivery_id: str) -> bool:
        """An operator sends a dead letter again (attempts start over)."""
        return (
            self.db.execute(
                "UPDATE webhook_deliveries SET state = 'pending', attempts = 0,"
                " next_attempt_at = ?, finished_at = NULL WHERE id = ? AND state = 'dead'",
                (self._clock(), delivery_id),
            ).rowcount
            > 0
        )

    def deliveries(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        where, params = ("WHERE state = ?", [state]) if state else ("", [])
        rows = self.db.execute(
            "SELECT id, subscription, alert, state, attempts, next_attempt_at, last_error,"
            f" created_at, finished_at FROM webhook_deliveries {where}"
            " ORDER BY created_at DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        keys = (
            "id",
            "subscription",
            "alert",
            "state",
            "attempts",
            "next_attempt_at",
            "last_error",
            "created_at",
            "finished_at",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def stats(self) -> dict[str, Any]:
        counts = {"pending": 0, "delivered": 0, "dead": 0, "cancelled": 0}
        attempts = 0
        for state, n, tries in self.db.execute(
            "SELECT state, COUNT(*), SUM(attempts) FROM webhook_deliveries GROUP BY state"
        ):
            counts[state] = n
            attempts += tries or 0
        (n_subs,) = self.db.execute(
            "SELECT COUNT(*) FROM webhook_subscriptions WHERE active = 1"
        ).fetchone()
        return {"subscriptions": n_subs, "deliveries": counts, "attempts": attempts}


def _body(delivery_id: str, a: Sequence[Any], site: str | None) -> str:
    return json.dumps(
        {
            "delivery": delivery_id,
            "event": "cap",
            "alert": {
                "identifier": a[0],
                "sender": a[1],
                "sent": a[2],
                "msgType": a[3],
                "level": a[4],
                "asset": a[5],
                "type": a[6],
                "site": site,
                "event_time": a[7],
                "late": bool(a[10]),
            },
            "cap_xml": a[9],
        },
        separators=(",", ":"),
    )


class WebhookWorker:
    """Sends due deliveries; sleeps until the next one is due or new ones are queued."""

    def __init__(
        self,
        store: WebhookStore,
        policy: RetryPolicy = RetryPolicy(),
        clock: Callable[[], float] = time.time,
        concurrency: int = 16,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self._clock = clock
        self._concurrency = concurrency
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self.sent_ok = 0
        self.failed_attempts = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        limits = httpx.Limits(max_connections=self._concurrency)
        timeout = httpx.Timeout(self.policy.timeout_s)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
            while not stop.is_set():
                self._wake.clear()
                lease = self.policy.timeout_s + 5.0
                due = self.store.claim_due(self._clock(), self._concurrency, lease)
                if due:
                    await asyncio.gather(*(self._attempt(client, d) for d in due))
                    continue
                next_at = self.store.next_due_at()
                wait = 5.0 if next_at is None else max(0.01, min(5.0, next_at - self._clock()))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await _first(self._wake, stop)

    async def _attempt(self, client: httpx.AsyncClient, d: PendingDelivery) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "sentryline-central",
            "Idempotency-Key": d.id,
            "X-Sentryline-Delivery": d.id,
            "X-Sentryline-Event": "cap",
            SIGNATURE_HEADER: sign(d.secret, d.body, self._clock()),
        }
        try:
            response = await client.post(d.url, content=d.body, headers=headers)
            error = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
        if error is None:
            self.store.mark_delivered(d.id)
            self.sent_ok += 1
            return
        self.failed_attempts += 1
        attempts = d.attempts + 1
        if attempts >= self.policy.max_attempts:
            self.store.mark_failed(d.id, error, None)
            log.warning("webhook delivery %s dead after %d attempts: %s", d.id, attempts, error)
        else:
            retry_at = self._clock() + self.policy.delay(attempts, self._rng)
            self.store.mark_failed(d.id, error, retry_at)


async def _first(*events: asyncio.Event) -> None:
    """Return when any of the events is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
