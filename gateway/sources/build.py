"""Gateway config -> the non-Modbus sources: one owner per endpoint, decoding per driver.

A device's `profile` (drivers.registry.load_source_profile) says how its payload reads:
CoapProfile (mode, SenML renames or a plain mapping, the frame in `vd`), SerialLineProfile
(framing, sentence map, line defaults) or BleProfile (BTHome object mapping, GATT
characteristics). What the device's `transport:` block sets explicitly wins; without a
profile the transport block alone decides (SenML as sent; $WL/$RG sentences; raw BTHome).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloud_bridge.senml import Record
from drivers.ble.profile import BleProfile
from drivers.ble.scanner import BleBthomeTransportConfig, BthomeDeviceConfig
from drivers.coap.client import CoapTransportConfig, decoder_for
from drivers.coap.payload import Blob, PayloadError, decode_frame_i16
from drivers.coap.profile import CoapProfile
from drivers.serial import SerialSettings
from drivers.serial.line_sensor import SentenceMap, default_sentences
from drivers.serial.profile import SerialLineProfile
from gateway.config import (
    BleGattTransport,
    DeviceConfig,
    GatewayConfig,
    SerialLineTransport,
    effective_coap,
    load_driver_profile,
)
from gateway.sources import Backoff, Sink, Source
from gateway.sources.ble import BleSource, GattDevice, LinkFactory, SourceFactory
from gateway.sources.coap import CoapDevice, CoapSource
from gateway.sources.serial_line import SerialLineSource

if TYPE_CHECKING:  # numpy comes with it; only gateways with models load it
    from edge_models.stage import EdgeStage

log = logging.getLogger(__name__)

__all__ = ["SourceOptions", "build_sources", "describe_devices", "frame_handler"]


@dataclass(frozen=True)
class SourceOptions:
    """What cannot come from the config: the radio (tests inject a fake one) and the clock."""

    clock: Callable[[], float]
    clock_synced: Callable[[], bool]
    ble_source: SourceFactory | None = None
    gatt_link: LinkFactory | None = None


def _profile(device: DeviceConfig) -> object:
    return load_driver_profile(device.profile) if device.profile is not None else None


def frame_handler(
    device_id: str, stages: Sequence[EdgeStage], profile: CoapProfile | None
) -> Callable[[Blob], None] | None:
    """Blob -> the frame models attached to `device_id`; None if the device has none.

    Decodes the frame by the profile's FrameSpec (default: int16 LE in 0.01, the model's
    shape); raises PayloadError for a blob of the wrong size (counted by the CoAP source)."""
    # Frame kinds (thermal); submit_frame ignores devices a stage does not serve.
    targets = [s for s in stages if not s.kind.channels]
    if not targets:
        return None
    spec = profile.frame if profile is not None else None
    frame_name = profile.frame_quantity if profile is not None else None

    import numpy as np  # only a gateway with a frame model gets here

    def handle(blob: Blob) -> None:
        if frame_name is not None and blob.name.rpartition("/")[2] != frame_name:
            return  # another blob of the pack (not the frame)
        for stage in targets:
            rows, cols = stage.kind.frame_shape()
            if spec is not None:
                values = spec.decode(blob.data)
            else:
                values = decode_frame_i16(blob.data, rows, cols)
            frame = np.asarray(values, np.float32)
            if frame.shape != (rows, cols):
                raise PayloadError("wrong_type", f"frame {frame.shape} is not {rows}x{cols}")
            stage.submit_frame(device_id, blob.time, frame)

    return handle


def build_sources(
    cfg: GatewayConfig,
    sink: Sink,
    stages: Sequence[EdgeStage],
    options: SourceOptions,
) -> list[Source]:
    """Every non-Modbus source of the config (Modbus devices run under ModbusBus)."""
    coap: list[CoapDevice] = []
    serial: list[Source] = []
    bthome: list[BthomeDeviceConfig] = []
    mappers: dict[str, Callable[[list[Record]], list[Record]]] = {}
    gatt: list[GattDevice] = []
    for device in cfg.devices:
        t = device.transport
        if isinstance(t, CoapTransportConfig):
            profile = _profile(device)
            coap_profile = profile if isinstance(profile, CoapProfile) else None
            effective = effective_coap(t, profile)
            takes_frames = device.model is not None and not device.model.kind.channels
            coap.append(
                CoapDevice(
                    device.id,
                    effective,
                    device.poll_interval,
                    decoder_for(effective),
                    frame_handler(device.id, stages, coap_profile) if takes_frames else None,
                )
            )
        elif isinstance(t, SerialLineTransport):
            serial.append(_serial_source(device, t, _profile(device), sink, options))
        elif isinstance(t, BleBthomeTransportConfig):
            profile = _profile(device)
            if isinstance(profile, BleProfile):
                bthome.append(profile.device_config(device.id, mac=t.mac, name=t.name))
                mappers[device.id] = profile.map_records
            else:
                bthome.append(t.device(device.id, update_time=device.poll_interval))
        elif isinstance(t, BleGattTransport):
            gatt.append(_gatt_device(device, t, _profile(device)))
    sources: list[Source] = []
    if coap:
        sources.append(
            CoapSource(coap, sink, clock=options.clock, clock_synced=options.clock_synced)
        )
    sources += serial
    if bthome or gatt:
        sources.append(
            BleSource(
                bthome,
                gatt,
                _mapped(sink, mappers) if mappers else sink,
                adapter=cfg.ble.adapter,
                scan_mode=cfg.ble.scan_mode,
                dedup_window_s=cfg.ble.dedup_window_s,
                retry_s=cfg.ble.retry_s,
                source_factory=options.ble_source,
                link_factory=options.gatt_link,
                clock=options.clock,
                clock_synced=options.clock_synced,
            )
        )
    return sources


def describe_devices(cfg: GatewayConfig) -> list[dict[str, str | None]]:
    """How each device will be read: transport, driver, poll/observe/push, where, model."""
    rows: list[dict[str, str | None]] = []
    for device in cfg.devices:
        t = device.transport
        reads = f"poll {device.poll_interval:g} s" if device.poll_interval else "push"
        where: str
        if isinstance(t, CoapTransportConfig):
            effective = effective_coap(t, _profile(device))
            where = effective.uri
            if effective.mode == "observe":
                reads = "observe"
        elif isinstance(t, BleBthomeTransportConfig):
            where = t.mac or f"name {t.name}"
            reads = "advertisements"
        elif isinstance(t, BleGattTransport):
            where, reads = t.address, "notifications"
        elif hasattr(t, "host"):
            where = f"{t.host}:{t.port} unit {t.device_id}"  # type: ignore[union-attr]
        else:
            where = t.port  # type: ignore[union-attr]
            if hasattr(t, "device_id"):
                where += f" unit {t.device_id}"  # type: ignore[union-attr]
        rows.append(
            {
                "id": device.id,
                "transport": t.type,
                "driver": device.profile,
                "reads": reads,
                "where": where,
                "model": device.model.model if device.model is not None else None,
            }
        )
    return rows


def _serial_source(
    device: DeviceConfig,
    t: SerialLineTransport,
    profile: object,
    sink: Sink,
    options: SourceOptions,
) -> SerialLineSource:
    explicit = t.model_fields_set
    if isinstance(profile, SerialLineProfile):
        base = profile.serial
        settings = SerialSettings(
            t.baudrate if "baudrate" in explicit else base.baudrate,
            t.parity if "parity" in explicit else base.parity,
            t.stopbits if "stopbits" in explicit else base.stopbits,
            t.bytesize if "bytesize" in explicit else base.bytesize,
        )
        readings = profile.readings()
        decoder: object = profile.frame_decoder()
        update_time = profile.update_time or device.poll_interval
    else:
        settings = SerialSettings(t.baudrate, t.parity, t.stopbits, t.bytesize)
        readings = SentenceMap(default_sentences(t.tip_mm))
        decoder = None
        update_time = device.poll_interval
    silence = t.silence_s
    if silence is None and update_time is not None:
        silence = max(5.0, 3 * update_time)  # three missed frames: the sensor went quiet
    return SerialLineSource(
        device.id,
        t.port,
        settings,
        sink,
        readings=readings,
        decoder=decoder,
        clock=options.clock,
        clock_synced=options.clock_synced,
        backoff=Backoff(0.5, 2.0, t.backoff_max_s),
        silence_s=silence,
        update_time=update_time,
    )


def _gatt_device(device: DeviceConfig, t: BleGattTransport, profile: object) -> GattDevice:
    own = t.driver_config()
    if own is None:
        if not isinstance(profile, BleProfile):  # the config check makes this unreachable
            raise ValueError(f"{device.id}: nothing to subscribe to")
        own = profile.gatt_config(t.address, timeout=t.timeout)
    return GattDevice(device.id, own, device.poll_interval)


def _mapped(sink: Sink, mappers: dict[str, Callable[[list[Record]], list[Record]]]) -> Sink:
    """BTHome measurements -> each device's profile quantities, then the gateway's sink."""

    def deliver(records: list[Record]) -> None:
        out: list[Record] = []
        by_device: dict[str, list[Record]] = {}
        for record in records:
            by_device.setdefault(record.device, []).append(record)
        for device, group in by_device.items():
            mapper = mappers.get(device)
            out += mapper(group) if mapper is not None else group
        if out:
            sink(out)

    return deliver
