"""Serves the dashboard's files and the two small reads only the dashboard needs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, RedirectResponse

from central.auth import Principal, require
from central.db import Database

STATIC = Path(__file__).parent / "static"
_MEDIA = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
Viewer = Annotated[Principal, Depends(require("viewer"))]


def dashboard_router(db: Database) -> APIRouter:
    """``/dashboard`` (public files: the page asks for a token and calls the API with it),
    ``GET /api/v1/session`` (who the token is) and ``GET /api/v1/series`` (what can be
    charted)."""
    router = APIRouter(tags=["dashboard"])
    # Only the files shipped beside this module, by exact name: no path is ever joined.
    files = {p.name: p for p in STATIC.iterdir() if p.suffix in _MEDIA}

    @router.get("/dashboard", include_in_schema=False)
    async def dashboard_root() -> RedirectResponse:
        return RedirectResponse("/dashboard/", status_code=307)

    @router.get("/dashboard/", include_in_schema=False)
    async def dashboard_index() -> FileResponse:
        return _file(files, "index.html")

    @router.get("/dashboard/{name}", include_in_schema=False)
    async def dashboard_file(name: str) -> FileResponse:
        return _file(files, name)

    @router.get("/api/v1/session")
    async def session(who: Viewer) -> dict[str, str]:
        """The caller's name and role (the dashboard shows actions by role)."""
        return {"name": who.name, "role": who.role}

    @router.get("/api/v1/series")
    async def series(_: Viewer, limit: int = Query(500, ge=1, le=5000)) -> list[dict[str, Any]]:
        """Every (gateway, device, quantity) with readings, for chart pickers."""
        return list_series(db, limit)

    return router


def _file(files: dict[str, Path], name: str) -> FileResponse:
    path = files.get(name)
    if path is None:
        raise HTTPException(404, f"no dashboard file '{name}'")
    return FileResponse(path, media_type=_MEDIA[path.suffix], headers={"Cache-Control": "no-cache"})


def list_series(db: Database, limit: int) -> list[dict[str, Any]]:
    """Distinct series by index seeks (one per series), never a scan of the readings."""
    out: list[dict[str, Any]] = []
    devices = db.execute(
        "SELECT gateway, device FROM device_stats ORDER BY gateway, device"
    ).fetchall()
    for gateway, device in devices:
        quantity = ""
        while len(out) < limit:
            row = db.execute(
                "SELECT MIN(quantity) FROM readings WHERE gateway = ? AND device = ?"
                " AND quantity > ?",
                (gateway, device, quantity),
            ).fetchone()
            if row is None or row[0] is None:
                break
            quantity = row[0]
            out.append({"gateway": gateway, "device": device, "quantity": quantity})
    return out
