"""Scenarios: simulated devices and how their signals evolve over scenario time.

Everything here is pure: ``values_at(device, t, rng)`` is a function of its arguments, so a
simulator, a test and a notebook all agree on what a device reads at time t. Randomness
comes from a ``random.Random`` the caller passes; ``sample_rng`` derives one per device and
sample time, so set_time(t) gives the same registers however the clock got to t.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from drivers.modbus.codec import CodecError, Value, encode_point
from drivers.modbus.profile import (
    BIT_TABLES,
    NAME_PATTERN,
    DeviceProfile,
    PointSpec,
    hardware_dir,
    load_profile,
    raise_at,
)
from provisioning.configfile import ConfigError, ConfigProblem, load_yaml_model

__all__ = [
    "SPIKE_SECONDS",
    "WIRE_FAULTS",
    "Derive",
    "DeviceSpec",
    "FaultSpec",
    "Phase",
    "Scenario",
    "ScenarioClock",
    "SignalSpec",
    "available_scenarios",
    "effective_time",
    "load_scenario",
    "sample_rng",
    "scenario_dir",
    "silent_at",
    "values_at",
    "wire_fault_at",
]

# A spike without `until` lasts one typical poll period: one sample for a 0.5 s poller.
SPIKE_SECONDS = 0.5

_Problems = list[tuple[tuple[str | int, ...], str, Any]]

# Fault kinds that change the reply on the wire rather than the registers.
WIRE_FAULTS: frozenset[str] = frozenset({"slow", "garbage", "dropout"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Phase(_Strict):
    """One piece of a piecewise signal, starting at scenario second `at`.

    ramp_to + over: linear ramp from the current level; hold: keep the level (documents
    intent, and lets a scenario read like the incident it models); set: jump to a level.
    A phase that starts before the previous ramp ends starts from wherever that ramp got.
    """

    at: float = Field(ge=0)
    ramp_to: float | None = None
    over: float | None = Field(default=None, gt=0)
    hold: float | None = Field(default=None, gt=0)
    set: float | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        kinds = [k for k in ("ramp_to", "hold", "set") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a phase needs exactly one of ramp_to (with over), hold or set")
        if (self.ramp_to is None) != (self.over is None):
            raise ValueError("ramp_to and over go together (the ramp's target and duration)")
        return self

    def level(self, start_level: float, t: float) -> float:
        """Level at time t (>= at) given the level when this phase began."""
        if self.ramp_to is not None and self.over is not None:
            fraction = min(1.0, (t - self.at) / self.over)
            return start_level + (self.ramp_to - start_level) * fraction
        if self.set is not None:
            return self.set
        return start_level


class Derive(_Strict):
    """Follow another signal of the same device: source * scale + offset, or source >= above.

    `above` yields a bool: a detector's own alarm relay tracking its reading.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(alias="from")
    scale: float = 1.0
    offset: float = 0.0
    above: float | None = None


class SignalSpec(_Strict):
    baseline: float = 0.0
    noise: float = Field(default=0.0, ge=0)  # gaussian standard deviation, engineering units
    phases: list[Phase] = []
    derive: Derive | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.derive is not None and self.model_fields_set & {"baseline", "noise", "phases"}:
            raise ValueError("a derived signal takes no baseline, noise or phases")
        starts = [p.at for p in self.phases]
        if starts != sorted(starts):
            raise ValueError(f"phases must be in time order, got at = {starts}")
        return self

    def level(self, t: float) -> float:
        """Noise-free level of a piecewise signal at scenario time t."""
        level = self.baseline
        active: Phase | None = None
        for phase in self.phases:
            if phase.at > t:
                break
            # The previous phase ends where this one starts; its level there is our start.
            if active is not None:
                level = active.level(level, phase.at)
            active = phase
        return level if active is None else active.level(level, t)


class FaultSpec(_Strict):
    """stuck: registers freeze (one point if `point`, optionally at `value`, else the whole
    device); silent: the device stops answering; spike: `point` reads `value` briefly.

    Wire faults change the reply, not the registers; both simulators (TCP and RTU) make
    them: slow: every reply comes `delay` seconds late; garbage: random bytes instead of a
    reply; dropout: a share `rate` of the requests gets no reply at all (a flaky link).
    """

    at: float = Field(ge=0)
    until: float | None = None
    kind: Literal["stuck", "silent", "spike", "slow", "garbage", "dropout"]
    point: str | None = None
    value: Value | None = None
    delay: float | None = Field(default=None, gt=0, le=10)  # slow: seconds
    rate: float | None = Field(default=None, gt=0, le=1)  # dropout: share of requests lost

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.until is not None and self.until <= self.at:
            raise ValueError(f"until ({self.until}) must be after at ({self.at})")
        if self.kind == "spike" and (self.point is None or self.value is None):
            raise ValueError("a spike needs a point and the value it jumps to")
        if self.kind in WIRE_FAULTS | {"silent"} and (
            self.point is not None or self.value is not None
        ):
            raise ValueError(f"a {self.kind} fault hits the whole device: no point or value")
        if self.kind == "stuck" and self.value is not None and self.point is None:
            raise ValueError("stuck with a value needs the point it applies to")
        if (self.kind == "slow") != (self.delay is not None):
            raise ValueError("delay (seconds) goes with kind: slow, and only with it")
        if (self.kind == "dropout") != (self.rate is not None):
            raise ValueError("rate (0..1, share of requests lost) goes with kind: dropout only")
        return self

    @property
    def end(self) -> float:
        if self.until is not None:
            return self.until
        return self.at + SPIKE_SECONDS if self.kind == "spike" else math.inf

    def active(self, t: float) -> bool:
        return self.at <= t < self.end


class DeviceSpec(_Strict):
    id: str = Field(pattern=NAME_PATTERN)  # the device name the gateway config refers to
    profile: str
    device_id: int = Field(ge=1, le=247)  # Modbus unit id; 0 is broadcast, 248+ reserved
    values: dict[str, Value] = {}
    signals: dict[str, SignalSpec] = {}
    faults: list[FaultSpec] = []

    _profile: DeviceProfile | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _check_against_profile(cls, data: Any, handler: Callable[[Any], DeviceSpec]) -> DeviceSpec:
        spec = handler(data)
        try:
            profile = load_profile(spec.profile)
        except ConfigError as exc:
            raise_at("DeviceSpec", [(("profile",), str(exc), spec.profile)])
        problems = _profile_problems(spec, profile)
        if problems:
            raise_at("DeviceSpec", problems)
        spec._profile = profile
        return spec

    @property
    def profile_model(self) -> DeviceProfile:
        if self._profile is None:  # model_construct() skips validation
            self._profile = load_profile(self.profile)
        return self._profile


def _profile_problems(spec: DeviceSpec, profile: DeviceProfile) -> _Problems:
    """Every name a scenario uses must be a point of the profile, with a fitting value."""
    points = {p.name: p for p in profile.points}
    known = ", ".join(points)
    problems: _Problems = []

    def unknown(loc: tuple[str | int, ...], name: str) -> None:
        problems.append((loc, f"profile {profile.name!r} has no point {name!r} ({known})", name))

    for name, value in spec.values.items():
        if name not in points:
            unknown(("values", name), name)
            continue
        if name in spec.signals:
            problems.append((("values", name), "also defined under signals", value))
        try:
            encode_point(points[name], value)
        except CodecError as exc:
            problems.append((("values", name), str(exc), value))
    for name, signal in spec.signals.items():
        if name not in points:
            unknown(("signals", name), name)
            continue
        point = points[name]
        derive = signal.derive
        wants_bool = derive is not None and derive.above is not None
        if wants_bool != _is_bool(point):
            what = "a bool point needs derive.above" if _is_bool(point) else "not a bool point"
            problems.append((("signals", name), what, name))
        elif point.enum is not None:
            problems.append((("signals", name), "enum points take constant values", name))
        if derive is None:
            continue
        source = spec.signals.get(derive.source)
        if source is None or source.derive is not None:
            problems.append(
                (
                    ("signals", name, "derive", "from"),
                    "must name a non-derived signal of this device",
                    derive.source,
                )
            )
    for index, fault in enumerate(spec.faults):
        if fault.point is not None and fault.point not in points:
            unknown(("faults", index, "point"), fault.point)
        elif fault.point is not None and fault.value is not None:
            try:
                encode_point(points[fault.point], fault.value)
            except CodecError as exc:
                problems.append((("faults", index, "value"), str(exc), fault.value))
    return problems


def _is_bool(point: PointSpec) -> bool:
    return point.table in BIT_TABLES or point.type == "bool"


class Scenario(_Strict):
    name: str
    description: str = ""
    duration: float = Field(gt=0)  # seconds of scenario time
    devices: list[DeviceSpec] = Field(min_length=1)

    @model_validator(mode="wrap")
    @classmethod
    def _unique(cls, data: Any, handler: Callable[[Any], Scenario]) -> Scenario:
        scenario = handler(data)
        problems: _Problems = []
        ids: dict[str, int] = {}
        units: dict[int, int] = {}
        for index, device in enumerate(scenario.devices):
            if device.id in ids:
                problems.append(
                    (
                        ("devices", index, "id"),
                        f"duplicate id (devices[{ids[device.id]}])",
                        device.id,
                    )
                )
            if device.device_id in units:
                problems.append(
                    (
                        ("devices", index, "device_id"),
                        f"unit id already used by devices[{units[device.device_id]}] "
                        "(all devices share one Modbus server)",
                        device.device_id,
                    )
                )
            ids.setdefault(device.id, index)
            units.setdefault(device.device_id, index)
        if problems:
            raise_at("Scenario", problems)
        return scenario

    def device(self, device_id: str) -> DeviceSpec:
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(device_id)


# --- evaluation -------------------------------------------------------------------------


class FaultyDevice(Protocol):
    """Any simulated device with scenario faults (Modbus here, CoAP/serial/BLE in
    source_scenario): the fault helpers below serve both."""

    @property
    def faults(self) -> Sequence[FaultSpec]: ...


def sample_rng(seed: int, device_id: str, t: float) -> random.Random:
    """A generator for one device at one sample time: noise depends on (seed, device, t) only."""
    return random.Random(f"{seed}/{device_id}/{t:.6f}")


def effective_time(device: FaultyDevice, t: float) -> float:
    """The time the device's registers show: a whole-device stuck fault freezes them at `at`."""
    for fault in device.faults:
        if fault.kind == "stuck" and fault.point is None and fault.active(t):
            return fault.at
    return t


def silent_at(device: FaultyDevice, t: float) -> bool:
    return any(f.kind == "silent" and f.active(t) for f in device.faults)


def wire_fault_at(device: DeviceSpec, t: float) -> FaultSpec | None:
    """The wire fault (slow, garbage, dropout) active at t, if any; the first listed wins."""
    return next((f for f in device.faults if f.kind in WIRE_FAULTS and f.active(t)), None)


def values_at(device: DeviceSpec, t: float, rng: random.Random | None = None) -> dict[str, Value]:
    """Engineering values of every point the scenario defines, at scenario time t.

    Noise is drawn from `rng` (None: noise-free). Numeric values are clamped to the point's
    plausible range, except spikes: a spike is meant to be implausible.
    """
    profile = device.profile_model
    values = _base_values(device, profile, effective_time(device, t), rng)
    for fault in device.faults:
        if not fault.active(t) or fault.point is None:
            continue
        if fault.kind == "spike" and fault.value is not None:
            values[fault.point] = fault.value
        elif fault.kind == "stuck":
            frozen = fault.value
            if frozen is None:
                frozen = _base_values(device, profile, fault.at, None).get(fault.point)
            if frozen is not None:
                values[fault.point] = frozen
    return values


def _base_values(
    device: DeviceSpec, profile: DeviceProfile, t: float, rng: random.Random | None
) -> dict[str, Value]:
    values: dict[str, Value] = {}
    for name, value in device.values.items():
        values[name] = _clamp(profile.point(name), value)
    # Sources first, in file order, so the noise sequence is stable for a given rng.
    for name, signal in device.signals.items():
        if signal.derive is None:
            level = signal.level(t)
            if rng is not None and signal.noise > 0:
                level += rng.gauss(0.0, signal.noise)
            values[name] = _clamp(profile.point(name), level)
    for name, signal in device.signals.items():
        derive = signal.derive
        if derive is None:
            continue
        source = float(values[derive.source])
        if derive.above is not None:
            values[name] = source >= derive.above
        else:
            values[name] = _clamp(profile.point(name), source * derive.scale + derive.offset)
    return values


def _clamp(point: PointSpec, value: Value) -> Value:
    if point.range is None or isinstance(value, bool | str):
        return value
    low, high = point.range
    return min(max(value, low), high)


class ScenarioClock:
    """Wall clock -> scenario time, at `speed` times real time, wrapping when `loop`.

    Pure: the caller passes the wall time, so tests need no sleeping.
    """

    def __init__(self, duration: float, start: float, speed: float = 1.0, loop: bool = False):
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.duration = duration
        self.start = start
        self.speed = speed
        self.loop = loop

    def at(self, now: float) -> float | None:
        """Scenario time at wall time `now`; None once a non-looping scenario has ended."""
        elapsed = max(0.0, now - self.start) * self.speed
        if self.loop:
            return elapsed % self.duration
        return elapsed if elapsed < self.duration else None


# --- loading ----------------------------------------------------------------------------


def scenario_dir() -> Path:
    return hardware_dir() / "scenarios"


def available_scenarios() -> list[str]:
    return sorted(p.stem for p in scenario_dir().glob("*.yaml"))


def load_scenario(path_or_name: str | Path) -> Scenario:
    """Load a scenario from a .yaml path, or by name from hardware/scenarios/{name}.yaml."""
    text = str(path_or_name)
    if isinstance(path_or_name, Path) or text.endswith((".yaml", ".yml")) or "/" in text:
        return load_yaml_model(text, Scenario)
    path = scenario_dir() / f"{text}.yaml"
    if not path.is_file():
        names = ", ".join(available_scenarios()) or "none"
        raise ConfigError(
            text, [ConfigProblem(None, None, "", f"unknown scenario; available: {names}")]
        )
    return load_yaml_model(path, Scenario)
