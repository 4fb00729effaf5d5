"""The gateway's YAML configuration (one file per gateway), validated with pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cloud_bridge.mqtt import BrokerSettings
from drivers.modbus.profile import load_profile
from provisioning.configfile import ConfigError, load_yaml_model

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,62}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Location(_Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    description: str = ""


class ModbusTcpTransport(_Strict):
    type: Literal["modbus-tcp"]
    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65535)
    device_id: int = Field(1, ge=1, le=247, description="Modbus unit id (1-247)")
    timeout: float = Field(1.0, gt=0, le=30)


Transport = Annotated[ModbusTcpTransport, Field(discriminator="type")]


class DeviceConfig(_Strict):
    id: Identifier
    profile: str = Field(description="profile name under hardware/sensors/ or a path")
    transport: Transport
    poll_interval: float = Field(gt=0, le=86400, description="seconds between polls")
    asset: Identifier | None = None
    location: Location | None = None

    @field_validator("profile")
    @classmethod
    def _profile_loads(cls, name: str) -> str:
        # Fail at config time, pointing at this line, not later inside the running daemon.
        try:
            load_profile(name)
        except ConfigError as exc:
            raise ValueError(f"profile '{name}' cannot be loaded: {exc}") from None
        return name


class OutboxConfig(_Strict):
    path: Path = Path("outbox.db")
    max_bytes: int = Field(256 * 1024 * 1024, ge=64 * 1024)
    max_age_s: float | None = Field(None, gt=0)
    format: Literal["json", "cbor"] = "json"
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    max_file_bytes: int | None = Field(
        None, ge=256 * 1024, description="hard cap on the file (small partitions)"
    )


class UplinkConfig(_Strict):
    window: int = Field(64, ge=1, le=1024, description="packs in flight awaiting PUBACK")
    pack_max_records: int = Field(250, ge=1, le=5000)
    pack_max_delay_s: float = Field(0.05, gt=0, le=60)
    replay_rate_packs_s: float = Field(
        200, gt=0, description="backlog replay rate after an outage (live data goes first)"
    )
    confirm: Literal["central", "puback"] = Field(
        "central",
        description="delete a pack when central confirms it stored it (default), or on PUBACK",
    )
    confirm_timeout_s: float = Field(30, gt=0, description="re-send if unconfirmed this long")
    status_interval_s: float = Field(30, ge=1, le=3600, description="gateway status record")


class GatewayConfig(_Strict):
    site: Identifier
    gateway_id: Identifier
    broker: BrokerSettings = BrokerSettings()
    outbox: OutboxConfig = OutboxConfig()
    uplink: UplinkConfig = UplinkConfig()
    devices: list[DeviceConfig] = Field(min_length=1)

    @field_validator("devices")
    @classmethod
    def _unique_ids(cls, devices: list[DeviceConfig]) -> list[DeviceConfig]:
        seen: set[str] = set()
        for device in devices:
            if device.id in seen:
                raise ValueError(f"duplicate device id '{device.id}'")
            seen.add(device.id)
        return devices

    @model_validator(mode="after")
    def _no_shared_unit_ids(self) -> GatewayConfig:
        endpoints: dict[tuple[str, int, int], str] = {}
        for device in self.devices:
            t = device.transport
            key = (t.host, t.port, t.device_id)
            if key in endpoints:
                raise ValueError(
                    f"devices '{endpoints[key]}' and '{device.id}' share {t.host}:{t.port}"
                    f" unit id {t.device_id}"
                )
            endpoints[key] = device.id
        return self


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Load and validate; relative paths in the file are relative to the file."""
    config = load_yaml_model(path, GatewayConfig)
    base = Path(path).resolve().parent
    if not config.outbox.path.is_absolute():
        config.outbox.path = base / config.outbox.path
    return config
