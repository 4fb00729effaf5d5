"""The central service's YAML configuration, validated with pydantic."""

from __future__ import annotations

import re
from datetime import timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cloud_bridge.mqtt import BrokerSettings
from provisioning.configfile import load_yaml_model

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,62}$")]
DeviceRef = Annotated[
    str, Field(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,62}/[a-z0-9][a-z0-9_.\-]{0,62}$")
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StorageConfig(_Strict):
    url: str = Field(
        "sqlite:///central.db",
        description="sqlite:///PATH (one process) or postgresql://USER@HOST:PORT/DB[?options]",
    )

    @field_validator("url")
    @classmethod
    def _supported(cls, url: str) -> str:
        if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("storage.url must be sqlite:///PATH or postgresql://…")
        if url.startswith("sqlite:///") and not url.removeprefix("sqlite:///"):
            raise ValueError("sqlite:/// needs a file path, e.g. sqlite:///central.db")
        return url

    @property
    def dialect(self) -> str:
        return "sqlite" if self.url.startswith("sqlite:///") else "postgresql"

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file (only meaningful when ``dialect`` is sqlite)."""
        return Path(self.url.removeprefix("sqlite:///"))


class RetentionConfig(_Strict):
    """How long readings are kept; the housekeeping task enforces it in bounded chunks."""

    raw_days: float | None = Field(
        30, gt=0, description="raw readings older (event time) are rolled up, then deleted"
    )
    minute_days: float | None = Field(400, gt=0, description="1-minute min/max/avg/count")
    hour_days: float | None = Field(None, gt=0, description="1-hour aggregates; none: forever")
    interval_s: float = Field(300, gt=0, description="how often housekeeping runs")
    chunk_rows: int = Field(20_000, ge=100, le=1_000_000, description="rows per transaction")


class WorkersConfig(_Strict):
    """One process (``single``) or several workers sharing the load (``shared``).

    ``shared`` needs PostgreSQL: every worker ingests its share of an MQTT 5 shared
    subscription (``$share/<group>/…``); one of them at a time (the leader, a PostgreSQL
    advisory lock) judges the rules in order and issues CAP (docs/deployment.md).
    """

    mode: Literal["single", "shared"] = "single"
    group: str = Field("sentryline-central", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    leader_lock_key: int = Field(0x5E47_1E00, description="PostgreSQL advisory lock key")
    leader_retry_s: float = Field(0.5, gt=0, le=30, description="followers try the lock this often")
    poll_s: float = Field(0.02, gt=0, le=5, description="the leader polls the pack queue")
    reorder_wait_s: float = Field(
        2.0,
        ge=0,
        le=120,
        description="longest hold of a pack whose predecessor is not stored yet (a worker that"
        " died with it in flight, or the first live pack after an outage)",
    )


class HttpConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class CapConfig(_Strict):
    sender: str = Field("sentryline@localhost", pattern=r"^[^\s,<&]+$")
    identifier_prefix: str = Field("central", pattern=r"^[A-Za-z0-9_.\-]{1,32}$")
    utc_offset: str = Field("+08:00", description="offset written in CAP times, e.g. +08:00")
    language: str = "en-US"

    @field_validator("utc_offset")
    @classmethod
    def _offset(cls, value: str) -> str:
        if not re.fullmatch(r"[+-](0\d|1[0-4]):[0-5]\d", value):
            raise ValueError("utc_offset must look like +08:00 or -05:00")
        return value

    @property
    def tz(self) -> timezone:
        sign = -1 if self.utc_offset[0] == "-" else 1
        hours, minutes = int(self.utc_offset[1:3]), int(self.utc_offset[4:6])
        return timezone(sign * timedelta(hours=hours, minutes=minutes))


class Position(_Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class AssetConfig(_Strict):
    id: Identifier
    name: str = ""
    type: str = "generic"
    site: Identifier | None = None
    meta: dict[str, Any] = Field(
        default_factory=dict,
        description="rule inputs: rated_speed_mps, warning_level_m, control_value_mm, context",
    )
    location: Position | None = None
    radius_km: float = Field(0.1, gt=0, le=100)
    geometry: list[Position] | None = Field(
        None,
        min_length=3,
        description="polygon ring (>= 3 lat/lon points) for assets with an extent; wins over"
        " location + radius_km in CAP areas",
    )
    devices: list[DeviceRef] = Field(
        default_factory=list, description="'gateway/device' references bound to this asset"
    )

    @field_validator("geometry")
    @classmethod
    def _a_real_polygon(cls, ring: list[Position] | None) -> list[Position] | None:
        # CAP needs a ring of >= 3 distinct points; checked here so no warning fails later.
        if ring is not None and len({(p.lat, p.lon) for p in ring}) < 3:
            raise ValueError("a polygon needs at least 3 distinct points")
        return ring


class AuthConfig(_Strict):
    """API access: every request needs a bearer token unless reads are opened to anonymous."""

    anonymous_role: Literal["none", "viewer"] = Field(
        "none", description="'viewer' lets requests without a token read (never write)"
    )


class GasRuleConfig(_Strict):
    """CH4 thresholds as LEL ratios (0.25 = 25 %LEL); defaults follow GB/T 50493-2019."""

    blue: float = Field(0.10, gt=0, lt=1)
    blue_hold_s: float = Field(300, ge=0)
    yellow: float = Field(0.25, gt=0, lt=1)
    yellow_samples: int = Field(2, ge=1)
    orange: float = Field(0.50, gt=0, lt=1)
    orange_samples: int = Field(1, ge=1)
    red_rising_samples: int = Field(2, ge=1, description="consecutive rises above orange")
    rise_epsilon: float = Field(0.002, ge=0, description="smallest step that counts as rising")
    hysteresis: float = Field(0.05, ge=0, lt=1, description="drop below threshold - this")
    clear_samples: int = Field(3, ge=1, description="samples below before stepping down")

    @model_validator(mode="after")
    def _ordered(self) -> GasRuleConfig:
        if not self.blue < self.yellow < self.orange:
            raise ValueError("thresholds must satisfy blue < yellow < orange")
        if self.yellow - self.hysteresis <= 0:
            raise ValueError("hysteresis must be smaller than the yellow threshold")
        return self


class RulesConfig(_Strict):
    gas_ch4: GasRuleConfig = GasRuleConfig()


class CentralConfig(_Strict):
    broker: BrokerSettings = BrokerSettings()
    storage: StorageConfig = StorageConfig()
    retention: RetentionConfig = RetentionConfig()
    workers: WorkersConfig = WorkersConfig()
    http: HttpConfig = HttpConfig()
    cap: CapConfig = CapConfig()
    assets: list[AssetConfig] = Field(default_factory=list)
    rules: RulesConfig = RulesConfig()
    rules_dir: Path | None = Field(
        None, description="operator rule sets, one <type>.yaml each (relative to this file)"
    )
    auth: AuthConfig = AuthConfig()
    client_id: str = Field("sentryline-central", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    ingest_batch_max: int = Field(512, ge=1, le=100_000)
    ingest_batch_wait_s: float = Field(0.01, ge=0, le=5)
    ingest_batch_max_bytes: int = Field(
        128 * 1024, ge=1024, description="≈ 1,500 readings of SenML JSON per transaction"
    )

    @model_validator(mode="after")
    def _workers_need_postgres(self) -> CentralConfig:
        if self.workers.mode == "shared" and self.storage.dialect != "postgresql":
            raise ValueError("workers.mode 'shared' needs storage.url postgresql://…")
        return self

    @model_validator(mode="after")
    def _unique(self) -> CentralConfig:
        seen: dict[str, str] = {}
        ids: set[str] = set()
        for asset in self.assets:
            if asset.id in ids:
                raise ValueError(f"duplicate asset id '{asset.id}'")
            ids.add(asset.id)
            for ref in asset.devices:
                if ref in seen:
                    raise ValueError(f"device '{ref}' bound to both '{seen[ref]}' and '{asset.id}'")
                seen[ref] = asset.id
        return self


def load_central_config(path: str | Path) -> CentralConfig:
    config = load_yaml_model(path, CentralConfig)
    sqlite_path = config.storage.sqlite_path
    if config.storage.dialect == "sqlite" and not sqlite_path.is_absolute():
        resolved = Path(path).resolve().parent / sqlite_path
        config.storage.url = f"sqlite:///{resolved}"
    if config.rules_dir is not None and not config.rules_dir.is_absolute():
        config.rules_dir = Path(path).resolve().parent / config.rules_dir
    return config
