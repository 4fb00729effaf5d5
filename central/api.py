"""The central service's HTTP API (FastAPI). The store is injected; no global state."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Response
from pydantic import BaseModel

from central.store import Store


class AlertSummary(BaseModel):
    identifier: str
    sender: str
    sent: str
    msgType: str
    level: str
    asset: str
    type: str
    event_time: float
    late: bool


class WarningSummary(BaseModel):
    id: str
    asset: str
    type: str
    level: str
    active: bool
    event_time: float
    cleared_event_time: float | None
    late: bool


def create_app(store: Store, extra_stats: dict[str, Any] | None = None) -> FastAPI:
    app = FastAPI(
        title="Sentryline central fusion-and-warning service",
        version="0.1.0",
        description="Graded warnings (blue/yellow/orange/red) issued as CAP 1.2.",
    )

    @app.get("/api/v1/alerts", response_model=list[AlertSummary])
    async def list_alerts(limit: int = 1000) -> list[dict]:
        """Every CAP message issued, oldest first."""
        return store.list_alerts(max(1, min(limit, 10_000)))

    @app.get(
        "/api/v1/alerts/{identifier}.xml",
        response_class=Response,
        responses={200: {"content": {"application/cap+xml": {}}}, 404: {}},
    )
    async def alert_xml(identifier: str) -> Response:
        """The CAP 1.2 document of one message."""
        xml = store.alert_xml(identifier)
        if xml is None:
            raise HTTPException(404, f"no alert '{identifier}'")
        return Response(xml, media_type="application/cap+xml")

    @app.get("/api/v1/warnings", response_model=list[WarningSummary])
    async def list_warnings() -> list[dict]:
        """Warnings (one per asset and type at a time) with their event times."""
        return store.list_warnings()

    @app.get("/api/v1/stats")
    async def stats() -> dict[str, Any]:
        """Per gateway and device: received, stored, duplicates, rejected by reason."""
        return store.stats() | {"service": dict(extra_stats or {})}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
