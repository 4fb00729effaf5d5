"""Every CoAP device of a gateway over one aiocoap client context (one UDP socket).

Polled devices are read on their `poll_interval`; a device that fails is backed off
(interval * 2**(failures-1), at most the transport's `backoff_max_s`) and read on its
interval again once it answers. Observed devices keep themselves registered
(drivers.coap.client.CoapObserver: re-registration with backoff after silence, errors and
reboots). SenML `vd` blobs (a thermal frame) go to the device's frame handler, if it has one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiocoap

from drivers.coap.client import (
    CoapCounters,
    CoapObserver,
    CoapPoller,
    CoapTransportConfig,
    ReregisterBackoff,
    decoder_for,
    open_context,
)
from drivers.coap.payload import Blob, PayloadDecoder, PayloadError
from gateway.sources import Backoff, DeviceHealth, Sink, supervise

log = logging.getLogger(__name__)

__all__ = ["CoapDevice", "CoapSource", "FrameHandler"]

# Counter keys of CoapCounters.errors that are not about the payload.
_TIMEOUTS = frozenset({"timeout", "silence"})
_TRANSPORT = frozenset(
    {
        "network",
        "client_error",
        "server_error",
        "unexpected_code",
        "observation_ended",
        "not_observable",
    }
)

SHUTDOWN_LIMIT_S = 3.0

FrameHandler = Callable[[Blob], None]  # raises PayloadError for a frame it cannot use


@dataclass(frozen=True)
class CoapDevice:
    id: str
    transport: CoapTransportConfig
    poll_interval: float | None = None
    decoder: PayloadDecoder | None = None  # None: from the transport block
    frames: FrameHandler | None = None


class CoapSource:
    name = "coap"

    def __init__(
        self,
        devices: list[CoapDevice],
        sink: Sink,
        *,
        clock: Callable[[], float] = time.time,
        clock_synced: Callable[[], bool] = lambda: True,
    ) -> None:
        if not devices:
            raise ValueError("no CoAP devices")
        self.devices = {d.id: d for d in devices}
        self.sink = sink
        self.drivers: dict[str, CoapPoller | CoapObserver] = {}
        self.frame_errors: dict[str, int] = {d.id: 0 for d in devices}
        self.frames: dict[str, int] = {d.id: 0 for d in devices}
        self.crashes = 0
        self._clock = clock
        self._clock_synced = clock_synced

    def _driver(self, device: CoapDevice, ctx: aiocoap.Context) -> CoapPoller | CoapObserver:
        t = device.transport
        common = {
            "decoder": device.decoder if device.decoder is not None else decoder_for(t),
            "timeout": t.timeout,
            "accept": t.accept_format,
            "context": ctx,
            "blob_sink": self._blob_sink(device) if device.frames is not None else None,
            "clock": self._clock,
            "clock_synced": self._clock_synced,
        }
        if t.mode == "observe":
            return CoapObserver(
                device.id,
                t.uri,
                self.sink,
                backoff=ReregisterBackoff(max_s=t.backoff_max_s),
                silence_s=t.silence_s,
                **common,  # type: ignore[arg-type]
            )
        assert device.poll_interval is not None  # the config requires it for poll
        return CoapPoller(device.id, t.uri, device.poll_interval, self.sink, **common)  # type: ignore[arg-type]

    def _blob_sink(self, device: CoapDevice) -> Callable[[list[Blob]], None]:
        handler = device.frames
        assert handler is not None

        def take(blobs: list[Blob]) -> None:
            for blob in blobs:
                try:
                    handler(blob)
                except PayloadError as exc:
                    self.frame_errors[device.id] += 1
                    log.debug("coap %s: frame %s: %s", device.id, blob.name, exc)
                else:
                    self.frames[device.id] += 1

        return take

    async def run(self) -> None:
        ctx = await open_context()
        try:
            self.drivers = {d.id: self._driver(d, ctx) for d in self.devices.values()}
            async with asyncio.TaskGroup() as tg:
                for device_id, driver in self.drivers.items():
                    tg.create_task(
                        supervise(
                            f"coap {device_id}", self._runner(driver, ctx), on_crash=self._crashed
                        ),
                        name=f"coap {device_id}",
                    )
        finally:
            # Bounded: a shutdown must not hang on an exchange the device never finishes.
            try:
                async with asyncio.timeout(SHUTDOWN_LIMIT_S):
                    await ctx.shutdown()
            except TimeoutError:
                log.warning("coap: client context did not shut down in %g s", SHUTDOWN_LIMIT_S)

    def _crashed(self, _exc: BaseException) -> None:
        self.crashes += 1

    def _runner(self, driver: CoapPoller | CoapObserver, ctx: aiocoap.Context):  # type: ignore[no-untyped-def]
        if isinstance(driver, CoapObserver):
            return driver.run
        t = self.devices[driver.device].transport

        async def poll() -> None:
            await poll_with_backoff(
                driver,
                ctx,
                Backoff(driver.interval_s, 2.0, max(t.backoff_max_s, driver.interval_s)),
            )

        return poll

    def health(self) -> dict[str, DeviceHealth]:
        out: dict[str, DeviceHealth] = {}
        for device_id in self.devices:
            driver = self.drivers.get(device_id)
            if driver is None:
                out[device_id] = DeviceHealth("coap", state="starting")
                continue
            out[device_id] = self._health(device_id, driver.counters)
        return out

    def _health(self, device_id: str, c: CoapCounters) -> DeviceHealth:
        timeouts = sum(n for reason, n in c.errors.items() if reason in _TIMEOUTS)
        unparsable = sum(
            n for reason, n in c.errors.items() if reason not in _TIMEOUTS | _TRANSPORT
        )
        unparsable += self.frame_errors[device_id]
        return DeviceHealth(
            "coap",
            reads=c.ok,
            errors=sum(c.errors.values()) + self.frame_errors[device_id],
            timeouts=timeouts,
            unparsable=unparsable,
            state="failing" if c.consecutive_failures else "ok",
            last_error=c.last_error,
        )


async def poll_with_backoff(poller: CoapPoller, ctx: aiocoap.Context, backoff: Backoff) -> None:
    """GET on the grid start + k * interval; after failures, wait backoff.delay_s(failures)
    instead (a silent device is asked less and less often, up to the cap)."""
    loop = asyncio.get_running_loop()
    interval = poller.interval_s
    due = loop.time()
    while True:
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await poller.poll_once(ctx)
        failures = poller.counters.consecutive_failures
        due += backoff.delay_s(failures) if failures else interval
        now = loop.time()
        if due <= now:  # late (a slow response): skip ticks rather than bunch up
            skipped = int((now - due) // interval) + 1
            poller.counters.skipped_ticks += skipped
            due += skipped * interval
