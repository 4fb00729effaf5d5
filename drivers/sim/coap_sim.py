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

``python -m drivers.sim.coap_sim [--port 5683]`` runs it standalone and prints one JSON
"ready" line with the bound port.
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

__all__ = ["CoapSimulator", "DisplacementModel", "Fault", "ThermalModel"]

ROWS, COLS = 24, 32
RESOURCES = ("displacement", "thermal", "plain")
GARBAGE = b"\xff\x00\x13not a pack\x00"
# SenML JSON label -> CBOR label (RFC 8428 Table 4) for the labels the simulator writes.
_CBOR_LABELS = {"bn": -2, "bt": -3, "n": 0, "u": 1, "v": 2, "vd": 8}


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
