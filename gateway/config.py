"""The gateway's YAML configuration (one file per gateway), validated with pydantic."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from cloud_bridge.mqtt import BrokerSettings
from drivers.ble.gatt import STANDARD, BleGattTransportConfig, CharacteristicConfig, full_uuid
from drivers.ble.scanner import BleBthomeTransportConfig
from drivers.coap.client import CoapTransportConfig
from drivers.registry import SourceProfile
from edge_models.attachment import ModelAttachment
from edge_models.boards import load_board
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


class SerialLineTransport(_Strict):
    """A sensor that talks on its own over a serial line (``$WL,1.234,m*5A``)."""

    type: Literal["serial-line"]
    port: str = Field(min_length=1, description="serial device (/dev/ttyUSB0) or pyserial URL")
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    tip_mm: float = Field(
        0.2, gt=0, le=10, description="without a profile: rain gauge mm per bucket tip"
    )
    silence_s: float | None = Field(
        None, gt=0, le=86400, description="count a timeout after this long without a frame"
    )
    backoff_max_s: float = Field(30.0, gt=0, le=3600, description="reopen backoff cap")


class BleGattTransport(_Strict):
    """A connected BLE peripheral; what to subscribe to comes from the profile, or from
    `standard`/`characteristics` here (which win)."""

    type: Literal["ble-gatt"]
    address: str = Field(pattern=r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
    standard: tuple[str, ...] = Field((), description="SIG characteristics: 2a6e, 2a6f, ...")
    characteristics: tuple[CharacteristicConfig, ...] = ()
    timeout: float = Field(20.0, gt=0, le=120, description="connect timeout, seconds")

    @field_validator("standard")
    @classmethod
    def _known(cls, uuids: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [u for u in uuids if full_uuid(u) not in STANDARD]
        if unknown:
            raise ValueError(f"no standard decoder for {unknown}; use `characteristics`")
        return uuids

    def driver_config(self) -> BleGattTransportConfig | None:
        """The driver's block, or None when this one lists nothing to read."""
        if not self.standard and not self.characteristics:
            return None
        return BleGattTransportConfig.model_validate(self.model_dump())


ModbusTransport = ModbusTcpTransport | ModbusRtuTransport
Transport = Annotated[
    ModbusTcpTransport
    | ModbusRtuTransport
    | CoapTransportConfig
    | SerialLineTransport
    | BleBthomeTransportConfig
    | BleGattTransport,
    Field(discriminator="type"),
]
# Transports whose devices are read on a schedule (the others talk on their own).
_POLLED = ("modbus-tcp", "modbus-rtu")


def endpoint_key(transport: ModbusTcpTransport | ModbusRtuTransport) -> str:
    """One owner per TCP endpoint or serial port: devices with the same key share it."""
    if isinstance(transport, ModbusRtuTransport):
        return f"rtu:{transport.port}"
    return f"tcp:{transport.host}:{transport.port}"


def transport_family(transport_type: str) -> str:
    """Driver and device agree when their families match: a Modbus register map serves TCP
    and RTU alike; every other transport is its own family."""
    return "modbus" if transport_type.startswith("modbus-") else transport_type


def load_driver_profile(name: str) -> SourceProfile:
    """The driver's profile (a Modbus register map, or a CoAP/serial/BLE profile)."""
    from drivers.registry import load_source_profile

    return load_source_profile(name)


def effective_coap(transport: CoapTransportConfig, profile: object) -> CoapTransportConfig:
    """The CoAP block a device runs with: the driver profile's mode and payload mapping,
    overridden by whatever the device's own block sets explicitly."""
    from drivers.coap.profile import CoapProfile

    if not isinstance(profile, CoapProfile):
        return transport
    explicit = {k: getattr(transport, k) for k in transport.model_fields_set - {"type", "uri"}}
    return profile.transport_config(transport.uri, **explicit)


class DeviceConfig(_Strict):
    id: Identifier
    profile: str | None = Field(
        None, description="driver name under hardware/sensors/ or a path (Modbus: required)"
    )
    transport: Transport
    poll_interval: float | None = Field(
        None, gt=0, le=86400, description="seconds between polls (Modbus, CoAP poll: required)"
    )
    asset: Identifier | None = None
    location: Location | None = None
    model: ModelAttachment | None = Field(None, description="an edge model on these readings")
    reporting: ReportingConfig | None = Field(
        None, description="quality checks and report-by-exception (default: the gateway's)"
    )

    @model_validator(mode="wrap")
    @classmethod
    def _fits_its_transport(
        cls, data: object, handler: Callable[[object], DeviceConfig]
    ) -> DeviceConfig:
        device = handler(data)
        problems = device._transport_problems()
        if problems:
            # At the offending field's line (a plain ValueError would point at the device).
            raise ValidationError.from_exception_data(
                "DeviceConfig",
                [
                    InitErrorDetails(
                        # "missing" makes the loader name the absent key, not its parent.
                        type=PydanticCustomError("missing" if value is None else "device", msg),
                        loc=loc,
                        input=value,
                    )
                    for loc, msg, value in problems
                ],
            )
        return device

    def _transport_problems(self) -> list[tuple[tuple[str | int, ...], str, object]]:
        kind = self.transport.type
        problems: list[tuple[tuple[str | int, ...], str, object]] = []
        profile: object = None
        if self.profile is None:
            if kind in _POLLED:
                problems.append((("profile",), "a Modbus device needs a profile", None))
        else:
            try:
                profile = load_driver_profile(self.profile)
                driver_kind = str(getattr(profile, "transport", ""))
            except ConfigError as exc:
                problems.append(
                    (
                        ("profile",),
                        f"profile '{self.profile}' cannot be loaded: {exc}",
                        self.profile,
                    )
                )
            else:
                if transport_family(driver_kind) != transport_family(kind):
                    problems.append(
                        (
                            ("profile",),
                            f"driver '{self.profile}' speaks {driver_kind}, but this device's"
                            f" transport is {kind}",
                            self.profile,
                        )
                    )
        needs_interval = kind in _POLLED or (
            isinstance(self.transport, CoapTransportConfig)
            and effective_coap(self.transport, profile).mode == "poll"
        )
        if (
            isinstance(self.transport, BleGattTransport)
            and self.profile is None
            and self.transport.driver_config() is None
        ):
            problems.append(
                (
                    ("transport",),
                    "without a profile, list `standard` UUIDs and/or `characteristics`",
                    {},
                )
            )
        if needs_interval and self.poll_interval is None:
            problems.append((("poll_interval",), f"a {kind} device is polled: set it", None))
        takes_frames = self.model is not None and not self.model.kind.channels
        if takes_frames and not isinstance(self.transport, CoapTransportConfig):
            assert self.model is not None
            problems.append(
                (
                    ("model", "model"),
                    f"'{self.model.model}' takes whole frames, which only a coap device"
                    " delivers (SenML vd)",
                    self.model.model,
                )
            )
        return problems


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


class BleSettings(_Strict):
    """The gateway's one BLE scanner (every ble-bthome device) and its GATT links."""

    adapter: str | None = Field(None, pattern=r"^hci[0-9]+$", description="default: the first")
    scan_mode: Literal["passive", "active", "auto"] = Field(
        "auto", description="passive needs BlueZ >= 5.56 experimental; auto falls back"
    )
    dedup_window_s: float = Field(10.0, gt=0, le=3600)
    retry_s: float = Field(60.0, gt=0, le=3600, description="look for a BLE stack again")


class GatewayConfig(_Strict):
    site: Identifier
    gateway_id: Identifier
    broker: BrokerSettings = BrokerSettings()
    outbox: OutboxConfig = OutboxConfig()
    uplink: UplinkConfig = UplinkConfig()
    ble: BleSettings = BleSettings()
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
            if not isinstance(t, ModbusTcpTransport | ModbusRtuTransport):
                continue
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

    @model_validator(mode="after")
    def _one_owner_per_port_and_radio_identity(self) -> GatewayConfig:
        """A serial port has one owner (a Modbus line or one line sensor); a BLE advertiser or
        GATT peripheral is one device."""
        owners: dict[str, tuple[str, str]] = {}  # port -> (device, transport type)
        radios: dict[str, str] = {}
        for device in self.devices:
            t = device.transport
            if isinstance(t, SerialLineTransport | ModbusRtuTransport):
                first = owners.setdefault(t.port, (device.id, t.type))
                if first[0] != device.id and "serial-line" in (first[1], t.type):
                    raise ValueError(
                        f"devices '{first[0]}' and '{device.id}' both use {t.port}: a line"
                        " sensor's port has one owner"
                    )
            identity = None
            if isinstance(t, BleBthomeTransportConfig) and t.mac is not None:
                identity = t.mac.upper()
            elif isinstance(t, BleGattTransport):
                identity = t.address.upper()
            if identity is not None:
                other = radios.setdefault(identity, device.id)
                if other != device.id:
                    raise ValueError(f"devices '{other}' and '{device.id}' are both {identity}")
        return self


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """Load and validate; relative paths in the file are relative to the file."""
    config = load_yaml_model(path, GatewayConfig)
    base = Path(path).resolve().parent
    if not config.outbox.path.is_absolute():
        config.outbox.path = base / config.outbox.path
    return config
