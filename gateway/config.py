"""The gateway's YAML configuration (one file per gateway), validated with pydantic."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cloud_bridge.mqtt import BrokerSettings
from drivers.modbus.profile import load_profile
from edge_models.boards import load_board
from edge_models.stage import ModelAttachment
from gateway.reporting import ReportingConfig
from provisioning.configfile import ConfigError, load_yaml_model

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,62}$")]


def _must_load(loader: Callable[[str], object], what: str, name: str) -> str:
    """Fail at config time, pointing at the config's line, not later inside the daemon."""
    try:
        loader(name)
    except ConfigError as exc:
        raise ValueError(f"{what} '{name}' cannot be loaded: {exc}") from None
    return name


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


class ModbusRtuTransport(_Strict):
    type: Literal["modbus-rtu"]
    port: str = Field(min_length=1, description="serial device (/dev/ttyUSB0) or pyserial URL")
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    device_id: int = Field(1, ge=1, le=247, description="Modbus unit id (1-247)")
    timeout: float = Field(1.0, gt=0, le=30)
    turnaround_s: float = Field(0.1, ge=0, le=5, description="broadcast turnaround delay")

    @property
    def line(self) -> tuple[str, int, str, int]:
        return (self.port, self.baudrate, self.parity, self.stopbits)


Transport = Annotated[ModbusTcpTransport | ModbusRtuTransport, Field(discriminator="type")]


def endpoint_key(transport: ModbusTcpTransport | ModbusRtuTransport) -> str:
    """One owner per TCP endpoint or serial port: devices with the same key share it."""
    if isinstance(transport, ModbusRtuTransport):
        return f"rtu:{transport.port}"
    return f"tcp:{transport.host}:{transport.port}"


class DeviceConfig(_Strict):
    id: Identifier
    profile: str = Field(description="profile name under hardware/sensors/ or a path")
    transport: Transport
    poll_interval: float = Field(gt=0, le=86400, description="seconds between polls")
    asset: Identifier | None = None
    location: Location | None = None
    model: ModelAttachment | None = Field(None, description="an edge model on these readings")
    reporting: ReportingConfig | None = Field(
        None, description="quality checks and report-by-exception (default: the gateway's)"
    )

    @field_validator("profile")
    @classmethod
    def _profile_loads(cls, name: str) -> str:
        return _must_load(load_profile, "profile", name)


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
    replay_unconfirmed_max: int = Field(
        16, ge=1, le=10_000, description="backlog packs in the pipe awaiting confirmation"
    )
    status_interval_s: float = Field(30, ge=1, le=3600, description="gateway status record")


class GatewayConfig(_Strict):
    site: Identifier
    gateway_id: Identifier
    broker: BrokerSettings = BrokerSettings()
    outbox: OutboxConfig = OutboxConfig()
    uplink: UplinkConfig = UplinkConfig()
    board: str = Field("x86", description="board profile under hardware/boards/ (edge models)")
    reporting: ReportingConfig = Field(
        default_factory=ReportingConfig, description="default reporting of every device"
    )
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

    @field_validator("board")
    @classmethod
    def _board_loads(cls, name: str) -> str:
        return _must_load(load_board, "board", name)

    @model_validator(mode="after")
    def _one_line_per_port_and_unique_unit_ids(self) -> GatewayConfig:
        units: dict[tuple[str, int], str] = {}
        lines: dict[str, tuple[str, tuple[str, int, str, int]]] = {}
        for device in self.devices:
            t = device.transport
            key = endpoint_key(t)
            if (key, t.device_id) in units:
                raise ValueError(
                    f"devices '{units[(key, t.device_id)]}' and '{device.id}' share {key}"
                    f" unit id {t.device_id}"
                )
            units[(key, t.device_id)] = device.id
            if isinstance(t, ModbusRtuTransport):
                first = lines.setdefault(key, (device.id, t.line))
                if first[1] != t.line:
                    raise ValueError(
                        f"devices '{first[0]}' and '{device.id}' are on {t.port} with different"
                        " baud rate, parity or stop bits: one RS-485 line has one setting"
                    )
        return self


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Load and validate; relative paths in the file are relative to the file."""
    config = load_yaml_model(path, GatewayConfig)
    base = Path(path).resolve().parent
    if not config.outbox.path.is_absolute():
        config.outbox.path = base / config.outbox.path
    return config
