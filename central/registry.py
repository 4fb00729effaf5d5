"""The asset registry: sites, assets and device-to-asset bindings, kept in the database.

``RegistryStore`` is the data access (portable SQL over ``central.db``). ``AssetRegistry`` is
what ingest and the warning lifecycle ask — from an in-memory copy, so the ingest path never
queries the database per record. Every change made through it reloads the copy; a change
made by another process (``sentryline central assets import``) bumps ``registry_version``,
which the registry looks at no more often than every ``recheck_s`` seconds.

Config ``assets:`` seed the registry at start: an asset still marked ``source = config`` is
updated from the file; once edited over the API or imported, the database copy wins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from central.config import AssetConfig, Identifier, Position
from central.db import Database, open_database

Polygon = tuple[tuple[float, float], ...]


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
    geometry: Polygon | None = None  # polygon ring (lat, lon); wins over the circle in CAP


@dataclass(frozen=True, slots=True)
class SiteInfo:
    id: str
    name: str
    meta: Mapping[str, Any] = field(default_factory=dict)


class SiteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Identifier
    name: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)


class RegistryError(ValueError):
    """A registry change that cannot be made (unknown asset, conflicting binding, ...)."""


def asset_from_config(config: AssetConfig) -> AssetInfo:
    loc = config.location
    return AssetInfo(
        id=config.id,
        name=config.name or config.id,
        lat=loc.lat if loc else None,
        lon=loc.lon if loc else None,
        radius_km=config.radius_km,
        type=config.type,
        site=config.site,
        meta=dict(config.meta),
        geometry=tuple((p.lat, p.lon) for p in config.geometry) if config.geometry else None,
    )


def asset_to_config(info: AssetInfo, devices: Sequence[str] = ()) -> AssetConfig:
    return AssetConfig(
        id=info.id,
        name=info.name,
        type=info.type,
        site=info.site,
        meta=dict(info.meta),
        location=Position(lat=info.lat, lon=info.lon) if info.lat is not None else None,
        radius_km=info.radius_km,
        geometry=[Position(lat=a, lon=b) for a, b in info.geometry] if info.geometry else None,
        devices=list(devices),
    )


def split_ref(ref: str) -> tuple[str, str]:
    gateway, device = ref.split("/", 1)
    return gateway, device


# --------------------------------------------------------------------------- data access


class RegistryStore:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock

    # -- reads
    def sites(self) -> list[SiteInfo]:
        rows = self.db.execute("SELECT id, name, meta FROM sites ORDER BY id").fetchall()
        return [SiteInfo(r[0], r[1], json.loads(r[2])) for r in rows]

    def assets(self) -> list[AssetInfo]:
        rows = self.db.execute(
            "SELECT id, name, type, site, lat, lon, radius_km, geometry, meta FROM assets"
            " ORDER BY id"
        ).fetchall()
        return [
            AssetInfo(
                id=r[0],
                name=r[1],
                type=r[2],
                site=r[3],
                lat=r[4],
                lon=r[5],
                radius_km=r[6],
                geometry=tuple((p[0], p[1]) for p in json.loads(r[7])) if r[7] else None,
                meta=json.loads(r[8]),
            )
            for r in rows
        ]

    def source(self, asset: str) -> str | None:
        row = self.db.execute("SELECT source FROM assets WHERE id = ?", (asset,)).fetchone()
        return row[0] if row else None

    def bindings(self) -> dict[str, str]:
        rows = self.db.execute("SELECT gateway, device, asset FROM asset_bindings").fetchall()
        return {f"{g}/{d}": a for g, d, a in rows}

    def version(self) -> int:
        row = self.db.execute("SELECT version FROM registry_version WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    # -- writes (callers wrap several in db.transaction() where they belong together)
    def _bump(self) -> None:
        self.db.execute(
            "INSERT INTO registry_version (id, version) VALUES (1, 1) ON CONFLICT (id)"
            " DO UPDATE SET version = registry_version.version + 1"
        )

    def put_site(self, site: SiteInfo) -> None:
        self.db.execute(
            "INSERT INTO sites (id, name, meta, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, meta = excluded.meta,"
            " updated_at = excluded.updated_at",
            (site.id, site.name or site.id, json.dumps(dict(site.meta)), self._clock()),
        )
        self._bump()

    def ensure_site(self, site: str) -> None:
        self.db.execute(
            "INSERT INTO sites (id, name, meta, updated_at) VALUES (?, ?, '{}', ?)"
            " ON CONFLICT (id) DO NOTHING",
            (site, site, self._clock()),
        )

    def delete_site(self, site: str) -> bool:
        (n,) = self.db.execute("SELECT COUNT(*) FROM assets WHERE site = ?", (site,)).fetchone()
        if n:
            raise RegistryError(f"site '{site}' still has {n} asset(s)")
        gone = self.db.execute("DELETE FROM sites WHERE id = ?", (site,)).rowcount > 0
        self._bump()
        return gone

    def put_asset(self, asset: AssetInfo, source: str, only_if_source: str | None = None) -> bool:
        """Insert or replace; with ``only_if_source`` an existing row of another source is
        left alone (False)."""
        if asset.site:
            self.ensure_site(asset.site)
        sql = (
            "INSERT INTO assets (id, name, type, site, lat, lon, radius_km, geometry, meta,"
            " source, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, type = excluded.type,"
            " site = excluded.site, lat = excluded.lat, lon = excluded.lon,"
            " radius_km = excluded.radius_km, geometry = excluded.geometry,"
            " meta = excluded.meta, source = excluded.source, updated_at = excluded.updated_at"
        )
        params: list[Any] = [
            asset.id,
            asset.name or asset.id,
            asset.type,
            asset.site,
            asset.lat,
            asset.lon,
            asset.radius_km,
            json.dumps([list(p) for p in asset.geometry]) if asset.geometry else None,
            json.dumps(dict(asset.meta)),
            source,
            self._clock(),
        ]
        if only_if_source is not None:
            sql += " WHERE assets.source = ?"
            params.append(only_if_source)
        changed = self.db.execute(sql, params).rowcount > 0
        self._bump()
        return changed

    def delete_asset(self, asset: str) -> bool:
        self.db.execute("DELETE FROM asset_bindings WHERE asset = ?", (asset,))
        gone = self.db.execute("DELETE FROM assets WHERE id = ?", (asset,)).rowcount > 0
        self._bump()
        return gone

    def bind(self, gateway: str, device: str, asset: str) -> None:
        if self.source(asset) is None:
            raise RegistryError(f"no asset '{asset}'")
        self.db.execute(
            "INSERT INTO asset_bindings (gateway, device, asset) VALUES (?, ?, ?)"
            " ON CONFLICT (gateway, device) DO UPDATE SET asset = excluded.asset",
            (gateway, device, asset),
        )
        self._bump()

    def unbind(self, gateway: str, device: str) -> bool:
        gone = (
            self.db.execute(
                "DELETE FROM asset_bindings WHERE gateway = ? AND device = ?", (gateway, device)
            ).rowcount
            > 0
        )
        self._bump()
        return gone

    def seed(self, assets: Iterable[AssetConfig]) -> None:
        """Config assets: create, or update those never edited elsewhere."""
        with self.db.transaction():
            for config in assets:
                if self.put_asset(asset_from_config(config), "config", only_if_source="config"):
                    for ref in config.devices:
                        self.bind(*split_ref(ref), config.id)


# --------------------------------------------------------------------------- the registry


class AssetRegistry:
    """Which asset a device belongs to and what central knows about it.

    Bindings in the registry win; a gateway's birth message (devices with an ``asset``) fills
    in the rest, and an asset only a birth names gets its position from the birth.
    """

    def __init__(
        self,
        assets: Sequence[AssetConfig] = (),
        births: Mapping[str, dict] | None = None,
        db: Database | None = None,
        *,
        recheck_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # Without a database (unit tests, offline tools) the registry lives in memory.
        self.store = RegistryStore(db if db is not None else _memory_db())
        self._recheck_s = recheck_s
        self._monotonic = monotonic
        self._assets: dict[str, AssetInfo] = {}
        self._sites: dict[str, SiteInfo] = {}
        self._by_site: dict[str, list[AssetInfo]] = {}
        self._bindings: dict[str, str] = {}
        self._learned: dict[str, AssetInfo] = {}
        self._learned_bindings: dict[str, str] = {}
        self._version = -1
        self._checked_at = 0.0
        self.store.seed(assets)
        self.reload()
        for gateway, birth in (births or {}).items():
            self.learn_birth(gateway, birth)

    # -- cache
    def reload(self) -> None:
        self._version = self.store.version()
        self._assets = {a.id: a for a in self.store.assets()}
        self._by_site = {}
        for asset in self._assets.values():
            if asset.site is not None:
                self._by_site.setdefault(asset.site, []).append(asset)
        self._sites = {s.id: s for s in self.store.sites()}
        self._bindings = self.store.bindings()
        self._checked_at = self._monotonic()

    def _fresh(self) -> None:
        now = self._monotonic()
        if now - self._checked_at < self._recheck_s:
            return
        self._checked_at = now
        if self.store.version() != self._version:
            self.reload()

    # -- what ingest and the lifecycle ask
    def version(self) -> int:
        """Changes with every registry edit (this process's at once, others' within
        ``recheck_s``): callers rebuild what they derived from the registry when it moves.
        Answered from memory, like every lookup here."""
        self._fresh()
        return self._version

    def learn_birth(self, gateway: str, birth: dict) -> None:
        for device in birth.get("devices") or []:
            if not isinstance(device, dict) or not isinstance(device.get("id"), str):
                continue
            asset = device.get("asset")
            if not isinstance(asset, str):
                continue
            self._learned_bindings[f"{gateway}/{device['id']}"] = asset
            loc = device.get("location") if isinstance(device.get("location"), dict) else {}
            lat, lon = loc.get("lat"), loc.get("lon")
            if isinstance(lat, int | float) and isinstance(lon, int | float):
                self._learned[asset] = AssetInfo(asset, loc.get("description") or asset, lat, lon)

    def asset_for(self, gateway: str, device: str) -> str:
        self._fresh()
        ref = f"{gateway}/{device}"
        return self._bindings.get(ref) or self._learned_bindings.get(ref) or f"{gateway}.{device}"

    def info(self, asset: str) -> AssetInfo:
        self._fresh()
        return self._assets.get(asset) or self._learned.get(asset) or AssetInfo(asset, asset)

    def known(self, asset: str) -> bool:
        return asset in self._assets

    # -- listing (API)
    def assets(self) -> list[AssetInfo]:
        self._fresh()
        return list(self._assets.values())

    def sites(self) -> list[SiteInfo]:
        self._fresh()
        return list(self._sites.values())

    def site(self, site: str) -> SiteInfo | None:
        self._fresh()
        return self._sites.get(site)

    def assets_of_site(self, site: str) -> list[AssetInfo]:
        self._fresh()
        return self._by_site.get(site, [])

    def bindings(self) -> dict[str, str]:
        self._fresh()
        return dict(self._bindings)

    def devices_of(self, asset: str) -> list[str]:
        return sorted(ref for ref, a in self._bindings.items() if a == asset)

    # -- changes (API); each reloads the cache
    def put_site(self, site: SiteInfo) -> None:
        with self.store.db.transaction():
            self.store.put_site(site)
        self.reload()

    def delete_site(self, site: str) -> bool:
        with self.store.db.transaction():
            gone = self.store.delete_site(site)
        self.reload()
        return gone

    def put_asset(self, config: AssetConfig, source: str = "api") -> None:
        """Create or replace an asset; its ``devices`` (if any) are bound to it."""
        with self.store.db.transaction():
            self.store.put_asset(asset_from_config(config), source)
            for ref in config.devices:
                self.store.bind(*split_ref(ref), config.id)
        self.reload()

    def delete_asset(self, asset: str) -> bool:
        with self.store.db.transaction():
            gone = self.store.delete_asset(asset)
        self.reload()
        return gone

    def bind(self, gateway: str, device: str, asset: str) -> None:
        with self.store.db.transaction():
            self.store.bind(gateway, device, asset)
        self.reload()

    def unbind(self, gateway: str, device: str) -> bool:
        with self.store.db.transaction():
            gone = self.store.unbind(gateway, device)
        self.reload()
        return gone


def _memory_db() -> Database:
    from importlib import resources

    db = open_database("sqlite:///:memory:")
    db.script(resources.files("central").joinpath("schema_ops.sql").read_text())
    return db
