"""Scenarios of devices that are not Modbus (CoAP, serial line, BLE), and mixed scenarios.

A non-Modbus driver's ``scenario.yaml`` is a :class:`SourceScenario`: the same signal
language as Modbus scenarios (``drivers.sim.scenario``: baseline, noise, phases, derive,
faults), but devices name the driver's *points* rather than registers, report every
``interval`` seconds on their own transport, and a frame-carrying device (the thermal
camera) plays a ``frame:`` scene — a background plus warm blobs that move, grow and heat
up — from which its summary points (t_max, t_bg, hot_px) are computed, as the device does::

    name: thermal-camera-contract
    duration: 90
    devices:
      - id: cam-1
        profile: thermal-camera
        interval: 1                  # seconds between notifications / sentences / adverts
        frame:
          background: {baseline: 21, phases: [{at: 60, ramp_to: 24, over: 30}]}
          pixel_noise: 0.25          # Cel, per pixel
          blobs:
            - {at: 15, until: 30, center: [14, -3], to: [14, 35], peak: {baseline: 33},
               radius: {baseline: 2.2}}            # a person walking through
        faults:
          - {at: 40, until: 44, kind: silent}
          - {at: 70, until: 72, kind: garbage}

Everything here is pure (values are a function of device, time and the caller's rng), so
the simulators (coap_sim, serial_sim, ble_sim), the contract tests and notebooks agree.

:class:`SimScenario` is what ``sentryline sim run`` reads: the Modbus scenario format
(``devices:`` on one Modbus TCP server, unchanged, so every existing file stays valid),
plus ``rtu_devices:`` (Modbus devices on one RTU line, a pty) and ``sources:`` (devices of
the other transports, as above).
"""

from __future__ import annotations

import hashlib
import math
import random
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from drivers.modbus.codec import Value
from drivers.modbus.profile import NAME_PATTERN, DeviceProfile, raise_at
from drivers.registry import (
    MODBUS_TRANSPORTS,
    SourceProfile,
    driver_transport,
    load_source_profile,
)
from drivers.sim.scenario import (  # the fault helpers are shared with Modbus scenarios
    DeviceSpec,
    FaultSpec,
    Scenario,
    SignalSpec,
    available_scenarios,
    effective_time,
    sample_rng,
    scenario_dir,
    silent_at,
)
from drivers.source_profile import SourcePoint
from provisioning.configfile import ConfigError, ConfigProblem, load_yaml_model

__all__ = [
    "FRAME_SUMMARY",
    "TRANSPORT_FAULTS",
    "FrameBlob",
    "FrameScene",
    "SimScenario",
    "SourceDevice",
    "SourceScenario",
    "device_mac",
    "effective_time",
    "frame_at",
    "load_sim_scenario",
    "reading_at",
    "sample_rng",
    "silent_at",
    "summarise_frame",
    "values_at",
    "wire_fault_at",
]

# Points a frame-carrying device computes from its frame rather than from signals.
FRAME_SUMMARY: frozenset[str] = frozenset({"t_max", "t_bg", "hot_px"})
# The fault kinds each transport's simulator can show (slow: a CoAP reply held back).
TRANSPORT_FAULTS: dict[str, frozenset[str]] = {
    "coap": frozenset({"stuck", "silent", "spike", "slow", "garbage"}),
    "serial-line": frozenset({"stuck", "silent", "spike", "garbage"}),
    "ble-bthome": frozenset({"stuck", "silent", "spike", "garbage"}),
    "ble-gatt": frozenset({"stuck", "silent", "spike", "garbage"}),
}
_WIRE = frozenset({"slow", "garbage"})
_Problems = list[tuple[tuple[str | int, ...], str, Any]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FrameBlob(_Strict):
    """A warm object in the frame from `at` until `until`: a gaussian of `peak` Cel at its
    centre and `radius` pixels (sigma), moving linearly from `center` to `to` (row, col;
    may start or end outside the frame)."""

    at: float = Field(ge=0)
    until: float | None = None
    center: tuple[float, float]
    to: tuple[float, float] | None = None
    peak: SignalSpec
    radius: SignalSpec = SignalSpec(baseline=1.5)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.until is not None and self.until <= self.at:
            raise ValueError(f"until ({self.until}) must be after at ({self.at})")
        if self.to is not None and self.until is None:
            raise ValueError("a moving blob (to) needs until: it moves from at to until")
        if self.peak.derive is not None or self.radius.derive is not None:
            raise ValueError("peak and radius are plain signals (no derive)")
        return self

    def active(self, t: float) -> bool:
        return self.at <= t and (self.until is None or t < self.until)

    def position(self, t: float) -> tuple[float, float]:
        if self.to is None or self.until is None:
            return self.center
        fraction = min(1.0, max(0.0, (t - self.at) / (self.until - self.at)))
        return (
            self.center[0] + (self.to[0] - self.center[0]) * fraction,
            self.center[1] + (self.to[1] - self.center[1]) * fraction,
        )


class FrameScene(_Strict):
    background: SignalSpec
    gradient: float = 0.05  # K per row: a ceiling is warmer than a floor
    pixel_noise: float = Field(0.2, ge=0)  # Cel, gaussian per pixel
    hot_delta_k: float = Field(10.0, gt=0)  # hot_px: pixels this far above the background
    blobs: list[FrameBlob] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.background.derive is not None:
            raise ValueError("the background is a plain signal (no derive)")
        return self


class SourceDevice(_Strict):
    id: str = Field(pattern=NAME_PATTERN)
    profile: str
    interval: float = Field(1.0, gt=0, le=3600)  # seconds between reports
    mac: str | None = Field(None, pattern=r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")  # BLE only
    values: dict[str, Value] = Field(default_factory=dict)
    signals: dict[str, SignalSpec] = Field(default_factory=dict)
    frame: FrameScene | None = None
    faults: list[FaultSpec] = Field(default_factory=list)

    _profile: SourceProfile | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _check_against_profile(
        cls, data: Any, handler: Callable[[Any], SourceDevice]
    ) -> SourceDevice:
        spec = handler(data)
        try:
            profile = load_source_profile(spec.profile)
        except ConfigError as exc:
            raise_at("SourceDevice", [(("profile",), str(exc), spec.profile)])
        problems = _profile_problems(spec, profile)
        if problems:
            raise_at("SourceDevice", problems)
        spec._profile = profile
        return spec

    @property
    def profile_model(self) -> SourceProfile:
        if self._profile is None:
            self._profile = load_source_profile(self.profile)
        return self._profile

    @property
    def transport(self) -> str:
        return self.profile_model.transport

    @property
    def points(self) -> dict[str, SourcePoint]:
        profile = self.profile_model
        assert not isinstance(profile, DeviceProfile)
        return {p.name: p for p in profile.points}

    @property
    def address(self) -> str:
        """The BLE address the simulated device advertises from."""
        return self.mac or device_mac(self.id)


def device_mac(device_id: str) -> str:
    """A stable, locally administered MAC for a simulated BLE device."""
    digest = bytearray(hashlib.sha256(device_id.encode()).digest()[:6])
    digest[0] = (digest[0] | 0x02) & 0xFE  # locally administered, unicast
    return ":".join(f"{b:02X}" for b in digest)


def _profile_problems(spec: SourceDevice, profile: SourceProfile) -> _Problems:
    problems: _Problems = []
    if isinstance(profile, DeviceProfile):
        return [
            (
                ("profile",),
                f"{profile.name!r} is a {profile.transport} driver: list it under devices "
                "(Modbus TCP) or rtu_devices (Modbus RTU)",
                spec.profile,
            )
        ]
    points = {p.name: p for p in profile.points}
    known = ", ".join(points)
    frame_spec = getattr(profile, "frame", None)
    computed = FRAME_SUMMARY & set(points) if spec.frame is not None else frozenset()
    if spec.frame is not None and frame_spec is None:
        problems.append((("frame",), f"profile {profile.name!r} carries no frame", None))
    if spec.mac is not None and not profile.transport.startswith("ble-"):
        problems.append((("mac",), "mac applies to BLE devices only", spec.mac))

    def check_name(loc: tuple[str | int, ...], name: str) -> SourcePoint | None:
        if name not in points:
            problems.append(
                (loc, f"profile {profile.name!r} has no point {name!r} ({known})", name)
            )
            return None
        if name in computed:
            problems.append((loc, "computed from the frame: define it through frame:", name))
            return None
        return points[name]

    for name, value in spec.values.items():
        point = check_name(("values", name), name)
        if point is None:
            continue
        if name in spec.signals:
            problems.append((("values", name), "also defined under signals", value))
        wrong = _value_problem(point, value)
        if wrong:
            problems.append((("values", name), wrong, value))
    for name, signal in spec.signals.items():
        point = check_name(("signals", name), name)
        if point is None:
            continue
        wants_bool = signal.derive is not None and signal.derive.above is not None
        if point.kind == "string":
            problems.append((("signals", name), "string points take constant values", name))
        elif wants_bool != (point.kind == "bool"):
            what = "a bool point needs derive.above" if point.kind == "bool" else "not a bool point"
            problems.append((("signals", name), what, name))
        derive = signal.derive
        if derive is not None:
            source = spec.signals.get(derive.source)
            if source is None or source.derive is not None:
                problems.append(
                    (
                        ("signals", name, "derive", "from"),
                        "must name a non-derived signal of this device",
                        derive.source,
                    )
                )
    allowed = TRANSPORT_FAULTS.get(profile.transport, frozenset())
    for index, fault in enumerate(spec.faults):
        if fault.kind not in allowed:
            problems.append(
                (
                    ("faults", index, "kind"),
                    f"a {profile.transport} device cannot show a {fault.kind} fault "
                    f"(it can: {', '.join(sorted(allowed))})",
                    fault.kind,
                )
            )
        if fault.point is not None:
            point = check_name(("faults", index, "point"), fault.point)
            if point is not None and fault.value is not None:
                wrong = _value_problem(point, fault.value)
                if wrong:
                    problems.append((("faults", index, "value"), wrong, fault.value))
    return problems


def _value_problem(point: SourcePoint, value: Value) -> str | None:
    if point.kind == "bool":
        return None if isinstance(value, bool) else "a bool point takes true or false"
    if point.kind == "string":
        return None if isinstance(value, str) else "a string point takes text"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "a number point takes a number"
    return None


class SourceScenario(_Strict):
    name: str
    description: str = ""
    duration: float = Field(gt=0)
    devices: list[SourceDevice] = Field(min_length=1)

    @model_validator(mode="wrap")
    @classmethod
    def _unique(cls, data: Any, handler: Callable[[Any], SourceScenario]) -> SourceScenario:
        scenario = handler(data)
        problems = _duplicate_ids([d.id for d in scenario.devices], ("devices",))
        if problems:
            raise_at("SourceScenario", problems)
        return scenario

    def device(self, device_id: str) -> SourceDevice:
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(device_id)


def _duplicate_ids(ids: list[str], where: tuple[str, ...]) -> _Problems:
    seen: dict[str, int] = {}
    problems: _Problems = []
    for index, device_id in enumerate(ids):
        if device_id in seen:
            problems.append(
                ((*where, index, "id"), f"duplicate id ({where[-1]}[{seen[device_id]}])", device_id)
            )
        seen.setdefault(device_id, index)
    return problems


# --- evaluation ------------------------------------------------------------------------------


def wire_fault_at(device: SourceDevice, t: float) -> FaultSpec | None:
    return next((f for f in device.faults if f.kind in _WIRE and f.active(t)), None)


def values_at(device: SourceDevice, t: float, rng: random.Random | None = None) -> dict[str, Value]:
    """Every point's value at scenario time t (frame summaries included).

    Numbers are clamped to the point's range, except spikes (meant to be implausible).
    """
    return reading_at(device, t, rng)[0]


def reading_at(
    device: SourceDevice, t: float, rng: random.Random | None = None
) -> tuple[dict[str, Value], list[float] | None]:
    """(values, frame) at t from one draw of noise: the frame the summary was computed
    from, as the device sends them together. The frame is None without a frame scene."""
    values, frame = _base_values(device, effective_time(device, t), rng)
    for fault in device.faults:
        if not fault.active(t) or fault.point is None:
            continue
        if fault.kind == "spike" and fault.value is not None:
            values[fault.point] = fault.value
        elif fault.kind == "stuck":
            frozen = fault.value
            if frozen is None:
                frozen = _base_values(device, fault.at, None)[0].get(fault.point)
            if frozen is not None:
                values[fault.point] = frozen
    return values, frame


def frame_at(
    device: SourceDevice, t: float, rng: random.Random | None = None
) -> list[float] | None:
    """The device's frame at t, row-major, quantised to the profile's scale (what the
    wire carries), or None for a device without a frame. A stuck device repeats the frame
    of the moment it stuck."""
    scene = device.frame
    frame_spec = getattr(device.profile_model, "frame", None)
    if scene is None or frame_spec is None:
        return None
    t = effective_time(device, t)
    rows, cols, scale = frame_spec.rows, frame_spec.cols, frame_spec.scale
    background = scene.background.level(t)
    blobs = [
        (*blob.position(t), blob.peak.level(t) - background, max(blob.radius.level(t), 0.1))
        for blob in scene.blobs
        if blob.active(t)
    ]
    pixels: list[float] = []
    for r in range(rows):
        base = background + scene.gradient * (r - rows / 2)
        for c in range(cols):
            value = base
            for row, col, height, radius in blobs:
                d2 = (r - row) ** 2 + (c - col) ** 2
                value += height * math.exp(-d2 / (2 * radius * radius))
            if rng is not None and scene.pixel_noise > 0:
                value += rng.gauss(0.0, scene.pixel_noise)
            pixels.append(_quantise(value, scale))
    return pixels


def summarise_frame(frame: list[float], hot_delta_k: float, scale: float) -> dict[str, Value]:
    """t_max, t_bg (the median pixel) and hot_px, the way the camera computes them."""
    t_bg = _quantise(statistics.median(frame), scale)
    return {
        "t_max": max(frame),
        "t_bg": t_bg,
        "hot_px": sum(1 for v in frame if v > t_bg + hot_delta_k),
    }


def _quantise(value: float, scale: float) -> float:
    limit = 32767 * scale  # the int16 frame encoding
    value = min(max(value, -limit - scale), limit)
    return round(round(value / scale) * scale, 6)


def _base_values(
    device: SourceDevice, t: float, rng: random.Random | None
) -> tuple[dict[str, Value], list[float] | None]:
    points = device.points
    values: dict[str, Value] = {}
    for name, value in device.values.items():
        values[name] = _clamp(points[name], value)
    for name, signal in device.signals.items():
        if signal.derive is None:
            level = signal.level(t)
            if rng is not None and signal.noise > 0:
                level += rng.gauss(0.0, signal.noise)
            values[name] = _clamp(points[name], level)
    for name, signal in device.signals.items():
        derive = signal.derive
        if derive is None:
            continue
        source = float(values[derive.source])
        if derive.above is not None:
            values[name] = source >= derive.above
        else:
            values[name] = _clamp(points[name], source * derive.scale + derive.offset)
    frame = frame_at(device, t, rng) if device.frame is not None else None
    frame_spec = getattr(device.profile_model, "frame", None)
    if frame is not None and frame_spec is not None and device.frame is not None:
        summary = summarise_frame(frame, device.frame.hot_delta_k, frame_spec.scale)
        values.update({k: v for k, v in summary.items() if k in points})
    return values, frame


def _clamp(point: SourcePoint, value: Value) -> Value:
    if point.range is None or isinstance(value, bool | str):
        return value
    low, high = point.range
    return min(max(value, low), high)


# --- mixed scenarios (sentryline sim run) ----------------------------------------------------


class SimScenario(_Strict):
    """Devices of every transport: Modbus TCP (``devices``, the classic format), Modbus RTU
    on one line (``rtu_devices``) and the others (``sources``)."""

    name: str
    description: str = ""
    duration: float = Field(gt=0)
    devices: list[DeviceSpec] = Field(default_factory=list)
    rtu_devices: list[DeviceSpec] = Field(default_factory=list)
    sources: list[SourceDevice] = Field(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _check(cls, data: Any, handler: Callable[[Any], SimScenario]) -> SimScenario:
        scenario = handler(data)
        problems: _Problems = []
        if not (scenario.devices or scenario.rtu_devices or scenario.sources):
            problems.append((("devices",), "list at least one device", []))
        ids: dict[str, tuple[str, int]] = {}
        for group in ("devices", "rtu_devices", "sources"):
            for index, device in enumerate(getattr(scenario, group)):
                if device.id in ids:
                    other = f"{ids[device.id][0]}[{ids[device.id][1]}]"
                    problems.append(((group, index, "id"), f"duplicate id ({other})", device.id))
                ids.setdefault(device.id, (group, index))
        for group in ("devices", "rtu_devices"):
            units: dict[int, int] = {}
            for index, device in enumerate(getattr(scenario, group)):
                if device.device_id in units:
                    problems.append(
                        (
                            (group, index, "device_id"),
                            f"unit id already used by {group}[{units[device.device_id]}]",
                            device.device_id,
                        )
                    )
                units.setdefault(device.device_id, index)
        if problems:
            raise_at("SimScenario", problems)
        return scenario

    def _modbus(self, devices: list[DeviceSpec], suffix: str) -> Scenario | None:
        if not devices:
            return None
        return Scenario(
            name=f"{self.name}{suffix}",
            description=self.description,
            duration=self.duration,
            devices=devices,
        )

    @property
    def tcp(self) -> Scenario | None:
        """The Modbus TCP part as a classic Scenario (None if there is none)."""
        return self._modbus(self.devices, "")

    @property
    def rtu(self) -> Scenario | None:
        return self._modbus(self.rtu_devices, "-rtu")

    @property
    def source(self) -> SourceScenario | None:
        if not self.sources:
            return None
        return SourceScenario(
            name=self.name,
            description=self.description,
            duration=self.duration,
            devices=self.sources,
        )

    def device_ids(self) -> list[str]:
        return [d.id for d in (*self.devices, *self.rtu_devices, *self.sources)]


def load_sim_scenario(path_or_name: str | Path) -> SimScenario:
    """A scenario file (any transport mix) by .yaml path or by name in hardware/scenarios.

    A driver's own scenario.yaml of another transport (a SourceScenario: its `devices` are
    CoAP, serial-line or BLE devices) loads too, as the `sources` of a SimScenario.
    """
    text = str(path_or_name)
    if isinstance(path_or_name, Path) or text.endswith((".yaml", ".yml")) or "/" in text:
        path = Path(text)
    else:
        path = scenario_dir() / f"{text}.yaml"
        if not path.is_file():
            names = ", ".join(available_scenarios()) or "none"
            raise ConfigError(
                text, [ConfigProblem(None, None, "", f"unknown scenario; available: {names}")]
            )
    if _lists_source_devices(path):
        source = load_yaml_model(path, SourceScenario)
        return SimScenario(
            name=source.name,
            description=source.description,
            duration=source.duration,
            sources=source.devices,
        )
    return load_yaml_model(path, SimScenario)


class _Peek(BaseModel):
    model_config = ConfigDict(extra="allow")

    devices: list[dict[str, Any]] = Field(default_factory=list)


def _lists_source_devices(path: Path) -> bool:
    """True when the file's `devices` are of a non-Modbus driver (a SourceScenario)."""
    try:
        peek = load_yaml_model(path, _Peek)
        profile = peek.devices[0].get("profile") if peek.devices else None
        return isinstance(profile, str) and driver_transport(profile) not in MODBUS_TRANSPORTS
    except ConfigError:
        return False  # the full load reports what is wrong, at its line
