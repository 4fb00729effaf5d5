"""A CoAP device simulator: a real aiocoap server on loopback, for tests and demos.

Resources (content format by the request's Accept option: 110 SenML JSON by default, 112
SenML CBOR; the plain resource 50 JSON or 60 CBOR):

``/displacement``  GET. A crack/tilt/GNSS monitor: ``crack`` (mm), ``tilt_x``/``tilt_y``
    (rad), ``gnss_e``/``gnss_n``/``gnss_u`` (m), with an absolute base time ``bt`` (a
    logger with a GNSS-disciplined clock), base name ``urn:dev:sim:disp-1:``.
``/thermal``  GET + Observe, notifying every `notify_ms`. A 24×32 thermal array (MLX90640
    class): ``t_max`` and ``t_bg`` (Cel; t_bg is the median pixel), ``hot_px`` (count of
    pixels more than `hot_delta_k` above t_bg), and the frame itself in the same pack as
    ``frame`` with ``vd``: row-major little-endian int16 in 0.01 °C (1536 bytes; base64url
    in JSON, a byte string in CBOR; ``drivers.coap.payload.decode_frame_i16`` reads it). No
    times: the sensor has no clock, the receiver stamps. Max-Age = twice the period (≥ 1 s).
    The frame rides in the notification (about 2.2 kB, so CoAP block-wise transfer) rather
    than in a second resource so that summary and frame can never come from different frames.
``/plain``  GET. The displacement readings as a vendor-style document, not SenML:
    ``{"crack": {"mm": …}, "tilt": [x_rad, y_rad], "ts": <ms since epoch>}``.

Faults per resource (``set_fault``): ``garbage`` (2.05 with bytes that are not the format),
``silent`` (requests are never answered, no notifications), ``server_error`` (5.03; an
active observation receives a final 5.03 notification). ``restart()`` stops and starts the
server on the same port — observations are forgotten without telling anyone, like a device
reboot.

``ScenarioCoapDevice`` is the general form: one device of a scenario
(drivers/sim/source_scenario.py) as a CoAP server of its own, serving its profile's
resource path with values driven by the scenario's signals (and, for a thermal camera, its
frame scene) at the scenario time set with ``set_time`` or advanced by ``play``. The
payload is what the profile (drivers/coap/profile.py) reads back: SenML with the device's
own record names (the inverse of the profile's renames) and the frame as ``vd``, or the
plain document its pointers describe. Scenario faults: silent (no answer, no
notification), garbage, slow (the reply held back `delay` seconds), stuck and spike.

``python -m drivers.sim.coap_sim [--port 5683]`` runs the fixed models standalone and
prints one JSON "ready" line with the bound port.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import enum
import json
import math
import random
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiocoap
import aiocoap.resource
import cbor2

from drivers.coap.payload import (
    CF_CBOR,
    CF_JSON,
    CF_SENML_CBOR,
    CF_SENML_JSON,
    encode_frame_i16,
)
from drivers.coap.profile import CoapProfile
from drivers.modbus.codec import Value
from drivers.sim.source_scenario import (
    SourceDevice,
    effective_time,
    reading_at,
    sample_rng,
    silent_at,
    values_at,
    wire_fault_at,
)

__all__ = [
    "CoapSimulator",
    "DisplacementModel",
    "Fault",
    "ScenarioCoapDevice",
    "ThermalModel",
    "coap_tolerance",
]

ROWS, COLS = 24, 32
RESOURCES = ("displacement", "thermal", "plain")
GARBAGE = b"\xff\x00\x13not a pack\x00"
# SenML JSON label -> CBOR label (RFC 8428 Table 4) for the labels the simulator writes.
_CBOR_LABELS = {"bn": -2, "bt": -3, "n": 0, "u": 1, "v": 2, "vs": 3, "vb": 4, "vd": 8}


class Fault(enum.StrEnum):
    NONE = "none"
    GARBAGE = "garbage"
    SILENT = "silent"
    SERVER_ERROR = "server_error"


# --- device models --------------------------------------------------------------------------


@dataclass
class DisplacementModel:
    """A slowly opening crack on a slightly tilting wall; millimetre GNSS noise."""

    seed: int = 0
    crack_mm: float = 0.40
    crack_rate_mm: float = 0.001  # per reading
    _rng: random.Random = field(init=False, repr=False)
    _k: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def read(self) -> dict[str, tuple[float, str]]:
        rng, k = self._rng, self._k
        self._k += 1
        return {
            "crack": (round(self.crack_mm + k * self.crack_rate_mm + rng.gauss(0, 0.002), 4), "mm"),
            "tilt_x": (round(1.2e-4 + k * 1e-7 + rng.gauss(0, 5e-6), 8), "rad"),
            "tilt_y": (round(-3.0e-5 + rng.gauss(0, 5e-6), 8), "rad"),
            "gnss_e": (round(rng.gauss(0, 0.002), 5), "m"),
            "gnss_n": (round(rng.gauss(0, 0.002), 5), "m"),
            "gnss_u": (round(rng.gauss(0, 0.004), 5), "m"),
        }


@dataclass
class ThermalModel:
    """Ambient with a gentle gradient and sensor noise; optionally one hot spot."""

    seed: int = 0
    ambient_c: float = 21.0
    hotspot_c: float | None = None  # peak of a compact hot spot (e.g. 90 °C overheating joint)
    hot_delta_k: float = 10.0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def frame(self) -> list[float]:
        rng = self._rng
        cy, cx = ROWS * 0.6, COLS * 0.3
        values = []
        for r in range(ROWS):
            for c in range(COLS):
                t = self.ambient_c + 0.05 * (r - ROWS / 2) + rng.gauss(0, 0.2)
                if self.hotspot_c is not None:
                    d2 = (r - cy) ** 2 + (c - cx) ** 2
                    t += (self.hotspot_c - self.ambient_c) * math.exp(-d2 / (2 * 1.2**2))
                values.append(round(t, 2))
        return values

    def summary(self, frame: list[float]) -> tuple[float, float, int]:
        t_bg = statistics.median(frame)
        hot = sum(1 for t in frame if t > t_bg + self.hot_delta_k)
        return max(frame), round(t_bg, 2), hot


# --- encoding -------------------------------------------------------------------------------


def _senml(records: list[dict[str, Any]], cbor: bool) -> bytes:
    if cbor:
        return cbor2.dumps([{_CBOR_LABELS[k]: v for k, v in rec.items()} for rec in records])
    return json.dumps(records, separators=(",", ":")).encode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _wants_cbor(request: aiocoap.Message, cbor_format: int) -> bool:
    return request.opt.accept == cbor_format


# --- resources ------------------------------------------------------------------------------


class _SimResource(aiocoap.resource.ObservableResource):
    """Fault handling shared by every resource; subclasses build the healthy response."""

    def __init__(self, sim: CoapSimulator, name: str) -> None:
        super().__init__()
        self.sim = sim
        self.name = name

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        fault = self.sim.faults.get(self.name, Fault.NONE)
        if fault is Fault.SILENT:
            await self.sim.wait_unsilenced(self.name)  # never answers while silent
            fault = self.sim.faults.get(self.name, Fault.NONE)
        self.sim.served[self.name] = self.sim.served.get(self.name, 0) + 1
        if fault is Fault.SERVER_ERROR:
            return aiocoap.Message(code=aiocoap.SERVICE_UNAVAILABLE, payload=b"simulated fault")
        if fault is Fault.GARBAGE:
            fmt = CF_SENML_JSON if self.name != "plain" else CF_JSON
            return aiocoap.Message(payload=GARBAGE, content_format=fmt)
        return self.healthy(request)

    def healthy(self, request: aiocoap.Message) -> aiocoap.Message:
        raise NotImplementedError


class _Displacement(_SimResource):
    def healthy(self, request: aiocoap.Message) -> aiocoap.Message:
        readings = self.sim.displacement.read()
        records: list[dict[str, Any]] = []
        for name, (value, unit) in readings.items():
            rec: dict[str, Any] = {"n": name, "u": unit, "v": value}
            if not records:
                rec = {"bn": "urn:dev:sim:disp-1:", "bt": round(self.sim.clock(), 3), **rec}
            records.append(rec)
        cbor = _wants_cbor(request, CF_SENML_CBOR)
        return aiocoap.Message(
            payload=_senml(records, cbor),
            content_format=CF_SENML_CBOR if cbor else CF_SENML_JSON,
            max_age=10,
        )


class _Plain(_SimResource):
    def healthy(self, request: aiocoap.Message) -> aiocoap.Message:
        readings = self.sim.displacement.read()
        doc = {
            "crack": {"mm": readings["crack"][0]},
            "tilt": [readings["tilt_x"][0], readings["tilt_y"][0]],
            "ts": int(self.sim.clock() * 1000),
        }
        cbor = _wants_cbor(request, CF_CBOR)
        payload = cbor2.dumps(doc) if cbor else json.dumps(doc).encode()
        return aiocoap.Message(payload=payload, content_format=CF_CBOR if cbor else CF_JSON)


class _Thermal(_SimResource):
    def healthy(self, request: aiocoap.Message) -> aiocoap.Message:
        model = self.sim.thermal
        frame = model.frame()
        t_max, t_bg, hot = model.summary(frame)
        cbor = _wants_cbor(request, CF_SENML_CBOR)
        data = encode_frame_i16(frame)
        records: list[dict[str, Any]] = [
            {"bn": "urn:dev:sim:thermal-1:", "n": "t_max", "u": "Cel", "v": t_max},
            {"n": "t_bg", "u": "Cel", "v": t_bg},
            {"n": "hot_px", "u": "count", "v": hot},
            {"n": "frame", "vd": data if cbor else _b64url(data)},
        ]
        return aiocoap.Message(
            payload=_senml(records, cbor),
            content_format=CF_SENML_CBOR if cbor else CF_SENML_JSON,
            max_age=max(1, math.ceil(2 * self.sim.notify_ms / 1000)),
        )


# --- the server -----------------------------------------------------------------------------


class CoapSimulator:
    def __init__(
        self,
        *,
        notify_ms: int = 200,
        seed: int = 0,
        hotspot_c: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if notify_ms <= 0:
            raise ValueError("notify_ms must be positive")
        self.notify_ms = notify_ms
        self.clock = clock
        self.displacement = DisplacementModel(seed=seed)
        self.thermal = ThermalModel(seed=seed, hotspot_c=hotspot_c)
        self.faults: dict[str, Fault] = {}
        self.notifications = 0  # notification rounds triggered on /thermal
        self.served: dict[str, int] = {}  # responses rendered per resource, across restarts
        self.host = "127.0.0.1"
        self.port = 0
        self._resources: dict[str, _SimResource] = {}
        self._unsilenced: dict[str, asyncio.Event] = {}
        self._context: aiocoap.Context | None = None
        self._notifier: asyncio.Task[None] | None = None

    def uri(self, path: str) -> str:
        return f"coap://{self.host}:{self.port}/{path.lstrip('/')}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind (port 0: a free one) and serve; returns the bound port."""
        # Fresh resources per start: their observers are forgotten, as on a reboot.
        self._resources = {
            "displacement": _Displacement(self, "displacement"),
            "thermal": _Thermal(self, "thermal"),
            "plain": _Plain(self, "plain"),
        }
        site = aiocoap.resource.Site()
        for name, resource in self._resources.items():
            site.add_resource([name], resource)
        self._context = await aiocoap.Context.create_server_context(
            site, bind=(host, port), transports=["udp6"]
        )
        self.host = host
        self.port = _bound_port(self._context)
        self._notifier = asyncio.create_task(self._notify_loop(), name="coap-sim notifier")
        return self.port

    async def stop(self) -> None:
        if self._notifier is not None:
            self._notifier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._notifier
            self._notifier = None
        for event in self._unsilenced.values():
            event.set()  # release renders parked by a silent fault; their replies go nowhere
        if self._context is not None:
            await self._context.shutdown()
            self._context = None

    async def restart(self, downtime_s: float = 0.0) -> None:
        """A device reboot: same port, observations forgotten, nobody told."""
        port = self.port
        await self.stop()
        if downtime_s > 0:
            await asyncio.sleep(downtime_s)
        await self.start(self.host, port)

    def set_fault(self, resource: str, fault: Fault | str) -> None:
        if resource not in RESOURCES:
            raise KeyError(resource)
        fault = Fault(fault)
        self.faults[resource] = fault
        event = self._unsilenced.setdefault(resource, asyncio.Event())
        if fault is Fault.SILENT:
            event.clear()
        else:
            event.set()
        if fault is Fault.SERVER_ERROR and resource in self._resources:
            # An error notification ends every observation of the resource (RFC 7641 §3.2).
            self._resources[resource].updated_state(
                aiocoap.Message(code=aiocoap.SERVICE_UNAVAILABLE, payload=b"simulated fault")
            )

    async def wait_unsilenced(self, resource: str) -> None:
        await self._unsilenced.setdefault(resource, asyncio.Event()).wait()

    async def _notify_loop(self) -> None:
        thermal = self._resources["thermal"]  # this start's resource; a restart makes a new one
        while True:
            await asyncio.sleep(self.notify_ms / 1000)
            if self.faults.get("thermal", Fault.NONE) in (Fault.SILENT, Fault.SERVER_ERROR):
                continue
            self.notifications += 1
            thermal.updated_state()


def _bound_port(ctx: aiocoap.Context) -> int:
    # aiocoap has no public accessor for the bound address; the udp6 transport's socket
    # is the one place that knows which port "0" became.
    for interface in ctx.request_interfaces:
        transport = getattr(getattr(interface, "token_interface", None), "message_interface", None)
        sock = getattr(getattr(transport, "transport", None), "get_extra_info", lambda _: None)(
            "socket"
        )
        if sock is not None:
            return int(sock.getsockname()[1])
    raise RuntimeError("could not find the simulator's bound UDP port")


# --- scenario-driven devices ---------------------------------------------------------------


def coap_tolerance(profile: CoapProfile, point: str) -> float:
    """How far the payload moves a value: SenML and CBOR/JSON floats carry it exactly; a
    plain field's scale and offset cost float rounding only."""
    del profile, point
    return 1e-9


class _ScenarioResource(aiocoap.resource.ObservableResource):
    def __init__(self, device: ScenarioCoapDevice) -> None:
        super().__init__()
        self.device = device

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        device = self.device
        while silent_at(device.spec, device.time):
            await device.wait_unsilenced()  # never answers while silent
        fault = wire_fault_at(device.spec, device.time)
        device.served += 1
        if fault is not None and fault.kind == "slow" and fault.delay is not None:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.kind == "garbage":
            device.garbage_served += 1
            plain = device.profile.payload == "plain"
            return aiocoap.Message(
                payload=GARBAGE, content_format=CF_JSON if plain else CF_SENML_JSON
            )
        return device.render(request)


class ScenarioCoapDevice:
    """One CoAP device of a scenario, on a UDP port of its own (port 0: a free one)."""

    def __init__(
        self, spec: SourceDevice, *, seed: int = 0, clock: Callable[[], float] = time.time
    ) -> None:
        profile = spec.profile_model
        if not isinstance(profile, CoapProfile):
            raise ValueError(f"{spec.id}: {spec.profile} is not a CoAP driver")
        self.spec = spec
        self.profile = profile
        self.seed = seed
        self.clock = clock
        self.time = 0.0
        self.served = 0  # responses rendered (first responses and notifications)
        self.garbage_served = 0
        self.notifications = 0
        self.host = "127.0.0.1"
        self.port = 0
        # Device-native SenML names: the inverse of the profile's renames.
        self._senml_names = {quantity: name for name, quantity in profile.names.items()}
        self._resource: _ScenarioResource | None = None
        self._context: aiocoap.Context | None = None
        self._unsilenced = asyncio.Event()

    @property
    def uri(self) -> str:
        return self.profile.resource_uri(f"{self.host}:{self.port}")

    def values(self, t: float) -> dict[str, Value]:
        rng = sample_rng(self.seed, self.spec.id, effective_time(self.spec, t))
        return values_at(self.spec, t, rng)

    def reading(self, t: float) -> tuple[dict[str, Value], list[float] | None]:
        """Values and frame at t: one draw of noise, so the summary fits the frame."""
        rng = sample_rng(self.seed, self.spec.id, effective_time(self.spec, t))
        return reading_at(self.spec, t, rng)

    def set_time(self, t: float) -> None:
        self.time = t
        if silent_at(self.spec, t):
            self._unsilenced.clear()
        else:
            self._unsilenced.set()

    async def wait_unsilenced(self) -> None:
        await self._unsilenced.wait()

    def notify(self) -> None:
        """Push the current reading to every observer (not while silent)."""
        if self._resource is None or silent_at(self.spec, self.time):
            return
        self.notifications += 1
        self._resource.updated_state()

    def render(self, request: aiocoap.Message) -> aiocoap.Message:
        values, frame = self.reading(self.time)
        max_age = max(1, math.ceil(2 * self.spec.interval))
        if self.profile.payload == "plain":
            return self._render_plain(request, values, max_age)
        records: list[dict[str, Any]] = []
        for point in self.profile.points:
            if point.name not in values:
                continue
            value = values[point.name]
            label = "vb" if isinstance(value, bool) else "vs" if isinstance(value, str) else "v"
            record: dict[str, Any] = {"n": self._senml_names.get(point.name, point.name)}
            if point.unit is not None:
                record["u"] = point.unit
            record[label] = value
            records.append(record)
        cbor = _wants_cbor(request, CF_SENML_CBOR)
        frame_spec = self.profile.frame
        if frame_spec is not None and frame is not None:
            data = encode_frame_i16(frame, frame_spec.scale)
            records.append({"n": frame_spec.name, "vd": data if cbor else _b64url(data)})
        head: dict[str, Any] = {"bn": f"urn:dev:sim:{self.spec.id}:"}
        if self.profile.mode == "poll":
            head["bt"] = round(self.clock(), 3)  # a logger with a clock stamps its readings
        records[0] = {**head, **records[0]}
        return aiocoap.Message(
            payload=_senml(records, cbor),
            content_format=CF_SENML_CBOR if cbor else CF_SENML_JSON,
            max_age=max_age,
        )

    def _render_plain(
        self, request: aiocoap.Message, values: dict[str, Value], max_age: int
    ) -> aiocoap.Message:
        plain = self.profile.plain
        assert plain is not None
        doc: dict[str, Any] = {}
        for spec in plain.fields:
            if spec.quantity not in values:
                continue
            value = values[spec.quantity]
            if not isinstance(value, bool | str):
                value = (value - spec.offset) / spec.scale
            _put(doc, spec.pointer, value)
        if plain.time is not None:
            _put(doc, plain.time, round(self.clock() / plain.time_scale))
        cbor = plain.format == "cbor" or (plain.format == "auto" and _wants_cbor(request, CF_CBOR))
        payload = cbor2.dumps(doc) if cbor else json.dumps(doc).encode()
        return aiocoap.Message(
            payload=payload, content_format=CF_CBOR if cbor else CF_JSON, max_age=max_age
        )

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._resource = _ScenarioResource(self)
        site = aiocoap.resource.Site()
        site.add_resource([p for p in self.profile.path.split("/") if p], self._resource)
        self.set_time(self.time)
        self._context = await aiocoap.Context.create_server_context(
            site, bind=(host, port), transports=["udp6"]
        )
        self.host = host
        self.port = _bound_port(self._context)
        return self.port

    async def stop(self) -> None:
        self._unsilenced.set()  # release renders parked by a silent fault
        if self._context is not None:
            await self._context.shutdown()
            self._context = None
        self._resource = None

    async def play(self, duration: float, *, speed: float = 1.0, loop: bool = False) -> None:
        """Advance scenario time; observers get a notification every `interval` seconds."""
        event_loop = asyncio.get_running_loop()
        start = event_loop.time()
        next_report = 0.0
        while True:
            elapsed = (event_loop.time() - start) * speed
            if not loop and elapsed >= duration:
                self.set_time(duration)
                return
            self.set_time(elapsed % duration if loop else elapsed)
            if elapsed >= next_report:
                next_report = elapsed + self.spec.interval
                if self.profile.mode == "observe":
                    self.notify()
            await asyncio.sleep(min(0.1, max(0.005, (next_report - elapsed) / speed)))


def _put(doc: dict[str, Any], pointer: str, value: Any) -> None:
    """Set `value` at a JSON pointer (or top-level key), creating objects and arrays."""
    if not pointer.startswith("/"):
        doc[pointer] = value
        return
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]
    node: Any = doc
    for token, following in zip(tokens, [*tokens[1:], None], strict=True):
        if following is None:
            _assign(node, token, value)
            return
        child = _child(node, token)
        if child is None:
            child = [] if following.isdigit() else {}
            _assign(node, token, child)
        node = child


def _child(node: Any, token: str) -> Any:
    if isinstance(node, list):
        index = int(token)
        return node[index] if index < len(node) else None
    return node.get(token)


def _assign(node: Any, token: str, value: Any) -> None:
    if isinstance(node, list):
        index = int(token)
        node.extend([None] * (index + 1 - len(node)))
        node[index] = value
    else:
        node[token] = value


# --- standalone -----------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    sim = CoapSimulator(notify_ms=args.notify_ms, seed=args.seed, hotspot_c=args.hotspot_c)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = await sim.start(args.host, args.port)
    try:
        ready = {
            "event": "ready",
            "host": args.host,
            "port": port,
            "resources": [sim.uri(p) for p in RESOURCES],
        }
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Simulated CoAP displacement/thermal device")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5683, help="UDP port; 0 picks a free one")
    parser.add_argument("--notify-ms", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hotspot-c", type=float, default=None, help="add a hot spot (°C)")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
