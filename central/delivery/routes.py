"""HTTP surface of delivery: the Atom feed, the event stream, webhook administration.

Each router declares its role (central/auth.py ``require``): reading feeds and events
needs a viewer, administering webhooks an admin. EventSource cannot set headers, so the
event stream takes ``?access_token=`` (accepted on GET only).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from pydantic import AnyHttpUrl, BaseModel, Field

from central.auth import require
from central.delivery.atom import ATOM_MEDIA_TYPE, render_feed
from central.delivery.delivery import Delivery
from central.delivery.sse import EventStream

LevelName = Literal["blue", "yellow", "orange", "red"]


class WebhookCreate(BaseModel):
    url: AnyHttpUrl
    secret: str | None = Field(
        None, min_length=16, max_length=256, description="HMAC key; generated when omitted"
    )
    levels: list[LevelName] | None = Field(None, description="only these levels; all if omitted")
    types: list[str] | None = Field(None, description="only these warning types")
    sites: list[str] | None = Field(None, description="only assets of these sites")


class WebhookCreated(BaseModel):
    id: str
    url: str
    secret: str = Field(description="shown once: keep it to verify signatures")
    levels: list[str] | None
    types: list[str] | None
    sites: list[str] | None
    active: bool
    created_at: float


def feeds_router(
    delivery: Delivery, keepalive_s: float = 15.0, send_timeout_s: float = 10.0
) -> APIRouter:
    """``GET /api/v1/alerts.atom`` and ``GET /api/v1/events`` (read-only: viewer)."""
    router = APIRouter(tags=["delivery"], dependencies=[Depends(require("viewer"))])

    @router.get(
        "/api/v1/alerts.atom",
        response_class=Response,
        responses={200: {"content": {ATOM_MEDIA_TYPE: {}}}},
    )
    async def alerts_atom(request: Request, limit: int = Query(100, ge=1, le=1000)) -> Response:
        """Atom index of the latest CAP messages, newest first; each links its CAP XML."""
        base = str(request.base_url).rstrip("/")
        body = render_feed(
            delivery.feed_items(limit),
            self_url=f"{base}/api/v1/alerts.atom",
            cap_url=base + "/api/v1/alerts/{identifier}.xml",
        )
        return Response(body, media_type=ATOM_MEDIA_TYPE)

    @router.get(
        "/api/v1/events",
        response_class=Response,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def events(
        last_event_id: str | None = Header(None, alias="Last-Event-ID"),
        since: str | None = Query(None, description="resume after this event id"),
    ) -> EventStream:
        """Server-sent events: ``warning``, ``alert``, ``gateway`` (and ``reset`` when a
        resumption id is unknown: reload from the REST API)."""
        return EventStream(delivery.hub, last_event_id or since, keepalive_s, send_timeout_s)

    return router


def webhooks_router(delivery: Delivery) -> APIRouter:
    """Webhook subscriptions and the delivery queue (administration: admin)."""
    router = APIRouter(
        prefix="/api/v1/webhooks", tags=["delivery"], dependencies=[Depends(require("admin"))]
    )
    store = delivery.webhooks

    @router.post("", status_code=201, response_model=WebhookCreated)
    async def create(body: WebhookCreate) -> dict[str, Any]:
        sub, secret = store.add_subscription(
            str(body.url), body.secret, body.levels, body.types, body.sites
        )
        return sub.public() | {"secret": secret}

    @router.get("")
    async def list_subscriptions() -> list[dict[str, Any]]:
        return [s.public() for s in store.subscriptions()]

    @router.delete("/{sub_id}", status_code=204)
    async def remove(sub_id: str) -> Response:
        if not store.remove_subscription(sub_id):
            raise HTTPException(404, f"no active webhook '{sub_id}'")
        return Response(status_code=204)

    @router.get("/deliveries")
    async def deliveries(
        state: Literal["pending", "delivered", "dead", "cancelled"] | None = None,
        limit: int = Query(100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        return store.deliveries(state, limit)

    @router.post("/deliveries/{delivery_id}/retry", status_code=202)
    async def retry(delivery_id: str) -> dict[str, str]:
        if not store.retry_dead(delivery_id):
            raise HTTPException(404, f"no dead delivery '{delivery_id}'")
        delivery.worker.wake()
        return {"id": delivery_id, "state": "pending"}

    @router.get("/stats")
    async def stats() -> dict[str, Any]:
        """Deliveries by state (dead letters included), attempts, SSE clients."""
        return delivery.stats()

    return router
