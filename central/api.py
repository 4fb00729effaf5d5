"""The central service's HTTP API (FastAPI). Everything is injected; no global state.

Roles (central/auth.py): viewers read, operators act on warnings, admins change the registry,
tokens and read the audit log. Other modules add their routers through ``routers=`` in
``create_app`` and guard them with ``Depends(require(role))``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from central.audit import AuditLog
from central.auth import Authenticator, Principal, Role, require
from central.config import AssetConfig, DeviceRef, Position
from central.incidents import Incident
from central.readings import MAX_BUCKETS, ReadingsQuery, query_readings
from central.registry import (
    AssetInfo,
    AssetRegistry,
    RegistryError,
    SiteInfo,
    asset_to_config,
)
from central.rules.base import level_rank
from central.store import Store
from central.warnings import WarningConflict, WarningManager, WarningNotFound

LevelName = Literal["blue", "yellow", "orange", "red"]
IdPath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,62}$")]
# Text from clients: anything but NUL (PostgreSQL text cannot hold or even compare it).
_NO_NUL = r"^[^\x00]*$"
Key = Annotated[str, Path(pattern=_NO_NUL, max_length=200)]
Filter = Annotated[str | None, Query(pattern=_NO_NUL, max_length=200)]
Series = Annotated[str, Query(pattern=_NO_NUL, max_length=200)]
Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- models


class AlertSummary(_Out):
    identifier: str
    sender: str
    sent: str
    msgType: str
    level: str
    asset: str
    type: str
    event_time: float
    late: bool


class WarningSummary(_Out):
    id: str
    asset: str
    type: str
    level: str
    active: bool
    event_time: float = Field(description="event time the condition was first met")
    cleared_event_time: float | None
    late: bool
    acknowledged: bool = False
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    assignee: str | None = None
    assigned_at: float | None = None
    cleared_by: str | None = Field(None, description="set when an operator cleared it by hand")
    incident: str | None = None


class AssignRequest(_In):
    assignee: str | None = Field(
        ...,
        max_length=200,
        pattern=_NO_NUL,
        description="who handles it; null removes the assignment",
    )


class ClearRequest(_In):
    reason: str = Field("", max_length=1000, pattern=_NO_NUL)


class ClearResponse(_Out):
    warning: WarningSummary
    cap_identifier: str = Field(description="the CAP Cancel issued")


class IncidentMember(_Out):
    warning_id: str
    asset: str
    type: str
    level: str
    active: bool
    joined_event_time: float


class IncidentOut(_Out):
    id: str
    site: str | None
    level: str | None = Field(description="highest level of the active members; null if closed")
    peak_level: str
    active: bool
    opened_event_time: float
    last_event_time: float
    closed_event_time: float | None
    members: list[IncidentMember]


class SiteBody(_In):
    name: str = Field("", max_length=200, pattern=_NO_NUL)
    meta: dict[str, Any] = Field(default_factory=dict)


class SiteOut(_Out):
    id: str
    name: str
    meta: dict[str, Any]
    assets: list[str]
    level: str | None = Field(description="highest level of its assets' active warnings")
    incidents: list[str] = Field(description="open incidents of the site")


class AssetBody(_In):
    """An asset without its id (the path names it)."""

    name: str = Field("", max_length=200, pattern=_NO_NUL)
    type: str = Field("generic", max_length=100, pattern=_NO_NUL)
    site: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,62}$")] | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    location: Position | None = None
    radius_km: float = Field(0.1, gt=0, le=100)
    geometry: list[Position] | None = Field(None, min_length=3)
    devices: list[DeviceRef] = Field(default_factory=list)


class AssetOut(_Out):
    id: str
    name: str
    type: str
    site: str | None
    meta: dict[str, Any]
    location: Position | None
    radius_km: float
    geometry: list[Position] | None
    devices: list[str]
    level: str | None = Field(description="highest level of its active warnings")


class BindingBody(_In):
    asset: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,62}$")]


class BindingOut(_Out):
    gateway: str
    device: str
    asset: str


class ReadingBucket(_Out):
    start: float = Field(description="bucket start (event time, epoch seconds)")
    min: float
    max: float
    avg: float
    count: int


class ReadingsOut(_Out):
    gateway: str
    device: str
    quantity: str
    start: float
    end: float
    step: float
    buckets: list[ReadingBucket]


class AuditOut(_Out):
    id: str
    at: float
    actor: str
    action: str
    target: str
    before: Any
    after: Any


class TokenBody(_In):
    name: str = Field(..., max_length=100, pattern=r"^[^\x00]*[^\x00\s][^\x00]*$")
    role: Role


class TokenOut(_Out):
    id: str
    name: str
    role: str
    created_at: float
    revoked_at: float | None


class TokenCreated(TokenOut):
    token: str = Field(description="shown once; only its hash is stored")


class Deleted(_Out):
    deleted: str


# --------------------------------------------------------------------------- the app


def create_app(
    store: Store,
    extra_stats: dict[str, Any] | None = None,
    *,
    registry: AssetRegistry,
    warnings: WarningManager,
    auth: Authenticator,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    app = FastAPI(
        title="Sentryline central fusion-and-warning service",
        version="0.2.0",
        description="Graded warnings (blue/yellow/orange/red) issued as CAP 1.2.",
    )
    app.state.auth = auth  # what central.auth.require checks against

    @app.middleware("http")
    async def refuse_nul_in_paths(request: Request, call_next):
        # A safety net for every router (typed parameters refuse NUL already): PostgreSQL
        # cannot even compare a NUL, so such a path must never reach a query.
        if "\x00" in request.url.path:
            problem = {
                "loc": ["path"],
                "msg": "NUL characters are not allowed",
                "type": "value_error",
            }
            return JSONResponse({"detail": [problem]}, status_code=422)
        return await call_next(request)

    audit: AuditLog = warnings.audit

    def asset_levels() -> dict[str, str]:
        levels: dict[str, str] = {}
        for row in warnings.active.values():
            if level_rank(row.level) > level_rank(levels.get(row.asset)):  # type: ignore[arg-type]
                levels[row.asset] = row.level
        return levels

    def asset_out(info: AssetInfo, levels: dict[str, str]) -> AssetOut:
        config = asset_to_config(info, registry.devices_of(info.id))
        return AssetOut(**config.model_dump(), level=levels.get(info.id))

    def site_out(site: SiteInfo, levels: dict[str, str], open_incidents: list[Incident]):
        assets = [a.id for a in registry.assets_of_site(site.id)]
        level = max((levels[a] for a in assets if a in levels), key=level_rank, default=None)  # type: ignore[arg-type]
        return SiteOut(
            id=site.id,
            name=site.name,
            meta=dict(site.meta),
            assets=assets,
            level=level,
            incidents=[i.id for i in open_incidents if i.site == site.id],
        )

    # -- alerts and warnings (viewer) ------------------------------------------------------
    @app.get("/api/v1/alerts", response_model=list[AlertSummary], tags=["warnings"])
    async def list_alerts(_: Viewer, limit: int = 1000) -> list[dict]:
        """Every CAP message issued, oldest first."""
        return store.list_alerts(max(1, min(limit, 10_000)))

    @app.get(
        "/api/v1/alerts/{identifier}.xml",
        response_class=Response,
        responses={200: {"content": {"application/cap+xml": {}}}, 404: {}},
        tags=["warnings"],
    )
    async def alert_xml(identifier: Key, _: Viewer) -> Response:
        """The CAP 1.2 document of one message."""
        xml = store.alert_xml(identifier)
        if xml is None:
            raise HTTPException(404, f"no alert '{identifier}'")
        return Response(xml, media_type="application/cap+xml")

    @app.get("/api/v1/warnings", response_model=list[WarningSummary], tags=["warnings"])
    async def list_warnings(
        _: Viewer,
        active: bool | None = None,
        asset: Filter = None,
        level: LevelName | None = None,
        type: Filter = None,
        limit: int = Query(10_000, ge=1, le=100_000),
    ) -> list[dict]:
        """Warnings (one active per asset and type at a time), oldest first, with their
        event times, operator state and incident."""
        return warnings.list(
            active=active, asset=asset, level=level, warning_type=type, limit=limit
        )

    @app.get(
        "/api/v1/warnings/{warning_id}",
        response_model=WarningSummary,
        responses={404: {}},
        tags=["warnings"],
    )
    async def get_warning(warning_id: Key, _: Viewer) -> dict:
        try:
            return warnings.find(warning_id)
        except WarningNotFound:
            raise HTTPException(404, f"no warning '{warning_id}'") from None

    # -- warning actions (operator) -----------------------------------------------------
    def act(action, warning_id: str):
        try:
            return action()
        except WarningNotFound:
            raise HTTPException(404, f"no warning '{warning_id}'") from None
        except WarningConflict as exc:
            raise HTTPException(409, str(exc)) from None

    @app.post(
        "/api/v1/warnings/{warning_id}/ack",
        response_model=WarningSummary,
        responses={404: {}, 409: {}},
        tags=["warnings"],
    )
    async def ack_warning(warning_id: Key, who: Operator) -> dict:
        """Acknowledge an active warning (idempotent; an escalation needs a new one)."""
        return act(lambda: warnings.acknowledge(warning_id, who.name), warning_id)

    @app.post(
        "/api/v1/warnings/{warning_id}/assign",
        response_model=WarningSummary,
        responses={404: {}, 409: {}},
        tags=["warnings"],
    )
    async def assign_warning(warning_id: Key, body: AssignRequest, who: Operator) -> dict:
        return act(lambda: warnings.assign(warning_id, body.assignee, who.name), warning_id)

    @app.post(
        "/api/v1/warnings/{warning_id}/clear",
        response_model=ClearResponse,
        responses={404: {}, 409: {}},
        tags=["warnings"],
    )
    async def clear_warning(warning_id: Key, body: ClearRequest, who: Operator) -> ClearResponse:
        """End an active warning by hand; issues a CAP Cancel."""
        message = act(lambda: warnings.clear(warning_id, who.name, body.reason), warning_id)
        return ClearResponse(
            warning=WarningSummary(**warnings.find(warning_id)), cap_identifier=message.identifier
        )

    # -- incidents (viewer) -------------------------------------------------------------
    def incident_out(incident: Incident) -> IncidentOut:
        return IncidentOut(
            id=incident.id,
            site=incident.site,
            level=incident.level,
            peak_level=incident.peak_level,
            active=incident.active,
            opened_event_time=incident.opened_event_time,
            last_event_time=incident.last_event_time,
            closed_event_time=incident.closed_event_time,
            members=[
                IncidentMember(
                    warning_id=m.warning_id,
                    asset=m.asset,
                    type=m.warning_type,
                    level=m.level,
                    active=m.active,
                    joined_event_time=m.joined_event_time,
                )
                for m in incident.members
            ],
        )

    @app.get("/api/v1/incidents", response_model=list[IncidentOut], tags=["incidents"])
    async def list_incidents(
        _: Viewer,
        active: bool | None = None,
        site: Filter = None,
        limit: int = Query(1000, ge=1, le=10_000),
    ) -> list[IncidentOut]:
        """Newest activity first."""
        return [incident_out(i) for i in warnings.incidents.list(active, site, limit)]

    @app.get(
        "/api/v1/incidents/{incident_id}",
        response_model=IncidentOut,
        responses={404: {}},
        tags=["incidents"],
    )
    async def get_incident(incident_id: Key, _: Viewer) -> IncidentOut:
        incident = warnings.incidents.get(incident_id)
        if incident is None:
            raise HTTPException(404, f"no incident '{incident_id}'")
        return incident_out(incident)

    # -- registry: reads (viewer), changes (admin) ----------------------------------------
    @app.get("/api/v1/sites", response_model=list[SiteOut], tags=["registry"])
    async def list_sites(_: Viewer) -> list[SiteOut]:
        levels, open_incidents = asset_levels(), warnings.incidents.list(active=True)
        return [site_out(s, levels, open_incidents) for s in registry.sites()]

    @app.get(
        "/api/v1/sites/{site_id}", response_model=SiteOut, responses={404: {}}, tags=["registry"]
    )
    async def get_site(site_id: Key, _: Viewer) -> SiteOut:
        site = registry.site(site_id)
        if site is None:
            raise HTTPException(404, f"no site '{site_id}'")
        return site_out(site, asset_levels(), warnings.incidents.list(active=True, site=site_id))

    @app.put("/api/v1/sites/{site_id}", response_model=SiteOut, tags=["registry"])
    async def put_site(site_id: IdPath, body: SiteBody, who: Admin) -> SiteOut:
        """Create or replace a site."""
        before = registry.site(site_id)
        site = SiteInfo(site_id, body.name or site_id, body.meta)
        registry.put_site(site)
        audit.record(who.name, "site.put", site_id, _site_dict(before), _site_dict(site))
        return site_out(site, asset_levels(), warnings.incidents.list(active=True, site=site_id))

    @app.delete(
        "/api/v1/sites/{site_id}",
        response_model=Deleted,
        responses={404: {}, 409: {}},
        tags=["registry"],
    )
    async def delete_site(site_id: Key, who: Admin) -> Deleted:
        before = registry.site(site_id)
        if before is None:
            raise HTTPException(404, f"no site '{site_id}'")
        try:
            registry.delete_site(site_id)
        except RegistryError as exc:
            raise HTTPException(409, str(exc)) from None
        audit.record(who.name, "site.delete", site_id, _site_dict(before), None)
        return Deleted(deleted=site_id)

    @app.get("/api/v1/assets", response_model=list[AssetOut], tags=["registry"])
    async def list_assets(_: Viewer, site: Filter = None, type: Filter = None) -> list[AssetOut]:
        levels = asset_levels()
        return [
            asset_out(a, levels)
            for a in registry.assets()
            if (site is None or a.site == site) and (type is None or a.type == type)
        ]

    @app.get(
        "/api/v1/assets/{asset_id}", response_model=AssetOut, responses={404: {}}, tags=["registry"]
    )
    async def get_asset(asset_id: Key, _: Viewer) -> AssetOut:
        if not registry.known(asset_id):
            raise HTTPException(404, f"no asset '{asset_id}'")
        return asset_out(registry.info(asset_id), asset_levels())

    @app.put(
        "/api/v1/assets/{asset_id}", response_model=AssetOut, responses={409: {}}, tags=["registry"]
    )
    async def put_asset(asset_id: IdPath, body: AssetBody, who: Admin) -> AssetOut:
        """Create or replace an asset; ``devices`` listed are bound to it (moved if bound
        elsewhere); bindings not listed are kept."""
        try:
            config = AssetConfig(id=asset_id, **body.model_dump())
        except ValidationError as exc:  # rules only the full asset model states
            raise RequestValidationError(exc.errors(include_url=False)) from None
        before = _asset_dict(registry, asset_id)
        try:
            registry.put_asset(config, source="api")
        except RegistryError as exc:
            raise HTTPException(409, str(exc)) from None
        audit.record(who.name, "asset.put", asset_id, before, _asset_dict(registry, asset_id))
        return asset_out(registry.info(asset_id), asset_levels())

    @app.delete(
        "/api/v1/assets/{asset_id}", response_model=Deleted, responses={404: {}}, tags=["registry"]
    )
    async def delete_asset(asset_id: Key, who: Admin) -> Deleted:
        """Remove an asset and its bindings (its warnings and CAP history stay)."""
        before = _asset_dict(registry, asset_id)
        if before is None:
            raise HTTPException(404, f"no asset '{asset_id}'")
        registry.delete_asset(asset_id)
        audit.record(who.name, "asset.delete", asset_id, before, None)
        return Deleted(deleted=asset_id)

    @app.get("/api/v1/bindings", response_model=list[BindingOut], tags=["registry"])
    async def list_bindings(_: Viewer, asset: Filter = None) -> list[BindingOut]:
        out = []
        for ref, bound in sorted(registry.bindings().items()):
            if asset is None or bound == asset:
                gateway, device = ref.split("/", 1)
                out.append(BindingOut(gateway=gateway, device=device, asset=bound))
        return out

    @app.put(
        "/api/v1/bindings/{gateway}/{device}",
        response_model=BindingOut,
        responses={409: {}},
        tags=["registry"],
    )
    async def put_binding(
        gateway: IdPath, device: IdPath, body: BindingBody, who: Admin
    ) -> BindingOut:
        """Bind a device to an asset (moves it if it was bound elsewhere)."""
        ref = f"{gateway}/{device}"
        before = registry.bindings().get(ref)
        try:
            registry.bind(gateway, device, body.asset)
        except RegistryError as exc:
            raise HTTPException(409, str(exc)) from None
        audit.record(who.name, "binding.put", ref, {"asset": before}, {"asset": body.asset})
        return BindingOut(gateway=gateway, device=device, asset=body.asset)

    @app.delete(
        "/api/v1/bindings/{gateway}/{device}",
        response_model=Deleted,
        responses={404: {}},
        tags=["registry"],
    )
    async def delete_binding(gateway: Key, device: Key, who: Admin) -> Deleted:
        ref = f"{gateway}/{device}"
        before = registry.bindings().get(ref)
        if before is None:
            raise HTTPException(404, f"'{ref}' is not bound")
        registry.unbind(gateway, device)
        audit.record(who.name, "binding.delete", ref, {"asset": before}, None)
        return Deleted(deleted=ref)

    # -- readings (viewer) --------------------------------------------------------------
    @app.get("/api/v1/readings", response_model=ReadingsOut, responses={422: {}}, tags=["readings"])
    async def readings(
        _: Viewer,
        gateway: Series,
        device: Series,
        quantity: Series,
        start: float | None = Query(None, description="epoch seconds; default end - 1 h"),
        end: float | None = Query(None, description="epoch seconds; default now"),
        step: float | None = Query(
            None, gt=0, description=f"bucket seconds; default (end - start) / {MAX_BUCKETS}"
        ),
    ) -> ReadingsOut:
        """Numeric readings of one series in [start, end), one min/max/avg/count per bucket;
        periods whose raw rows have expired come from the retained 1-minute / 1-hour
        aggregates (an aggregate counts in the bucket holding its start)."""
        stop = end if end is not None else time.time()
        begin = start if start is not None else stop - 3600.0
        try:
            q = ReadingsQuery.make(gateway, device, quantity, begin, stop, step)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        buckets = query_readings(store.db, q)
        return ReadingsOut(
            gateway=gateway,
            device=device,
            quantity=quantity,
            start=q.start,
            end=q.end,
            step=q.step,
            buckets=[ReadingBucket(**b) for b in buckets],
        )

    # -- audit and tokens (admin) -------------------------------------------------------
    @app.get("/api/v1/audit", response_model=list[AuditOut], tags=["admin"])
    async def audit_log(
        _: Admin,
        actor: Filter = None,
        action: Filter = None,
        target: Filter = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = Query(1000, ge=1, le=10_000),
    ) -> list[AuditOut]:
        """Newest first."""
        entries = audit.query(
            actor=actor, action=action, target=target, since=since, until=until, limit=limit
        )
        return [
            AuditOut(
                id=e.id,
                at=e.at,
                actor=e.actor,
                action=e.action,
                target=e.target,
                before=e.before,
                after=e.after,
            )
            for e in entries
        ]

    tokens = auth.tokens

    @app.get("/api/v1/tokens", response_model=list[TokenOut], tags=["admin"])
    async def list_tokens(_: Admin) -> list[TokenOut]:
        return [TokenOut(**_token_dict(t)) for t in tokens.list()]

    @app.post("/api/v1/tokens", response_model=TokenCreated, status_code=201, tags=["admin"])
    async def create_token(body: TokenBody, who: Admin) -> TokenCreated:
        """A new token; the response is the only place its value ever appears."""
        record, secret = tokens.create(body.name, body.role)
        audit.record(who.name, "token.create", record.id, None, _token_dict(record))
        return TokenCreated(**_token_dict(record), token=secret)

    @app.delete(
        "/api/v1/tokens/{token_id}",
        response_model=TokenOut,
        responses={404: {}},
        tags=["admin"],
    )
    async def revoke_token(token_id: Key, who: Admin) -> TokenOut:
        before = tokens.get(token_id)
        if before is None:
            raise HTTPException(404, f"no token '{token_id}'")
        tokens.revoke(token_id)
        after = tokens.get(token_id)
        assert after is not None
        audit.record(who.name, "token.revoke", token_id, _token_dict(before), _token_dict(after))
        return TokenOut(**_token_dict(after))

    # -- service -------------------------------------------------------------------------
    @app.get("/api/v1/stats", tags=["service"])
    async def stats(_: Viewer) -> dict[str, Any]:
        """Per gateway and device: received, stored, duplicates, rejected by reason."""
        return store.stats() | {"service": dict(extra_stats or {})}

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # Routers of other modules (delivery: Atom feed, webhooks, SSE; the dashboard) go here;
    # they guard themselves with Depends(central.auth.require(role)).
    for router in routers:
        app.include_router(router)

    return app


def _site_dict(site: SiteInfo | None) -> dict[str, Any] | None:
    return None if site is None else {"name": site.name, "meta": dict(site.meta)}


def _asset_dict(registry: AssetRegistry, asset: str) -> dict[str, Any] | None:
    if not registry.known(asset):
        return None
    config = asset_to_config(registry.info(asset), registry.devices_of(asset))
    return config.model_dump(mode="json")


def _token_dict(record) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "role": record.role,
        "created_at": record.created_at,
        "revoked_at": record.revoked_at,
    }
