"""CoAP devices: GET polling on a stable schedule, and Observe that keeps itself registered.

``CoapPoller`` GETs one resource every `interval_s` on a fixed grid (origin + k * interval;
a late poll skips ticks rather than bunching up, like the Modbus bus). ``CoapObserver``
registers an Observe (RFC 7641) and re-registers, with a bounded backoff, whenever the
observation ends: the server sent a final or error response, the network reported an error
(ICMP port unreachable while the device reboots), or — the case nobody reports — the device
rebooted *silently* and forgot us, which only shows as notifications that stop coming. A
notification is fresh for its Max-Age (default 60 s), so silence past Max-Age plus a grace
period means re-register (RFC 7641 §3.3.1).

Both hand Records to `sink` (and SenML `vd` blobs, such as a thermal frame, to `blob_sink`)
and never raise into the caller: timeouts, error codes and unparsable payloads are counted
per device by reason and logged once per run of failures. Cancel ``run()`` to stop.

One aiocoap client context (one UDP socket) can serve every device: pass `context`; without
one, each driver opens its own for the duration of ``run()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import aiocoap
import aiocoap.error
import aiocoap.interfaces
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloud_bridge.senml import Record
from drivers.coap.payload import (
    Blob,
    DecodeContext,
    Decoded,
    PayloadDecoder,
    PayloadError,
    PlainDecoder,
    PlainProfile,
    SenmlDecoder,
)

log = logging.getLogger(__name__)

__all__ = [
    "CoapCounters",
    "CoapObserver",
    "CoapPoller",
    "CoapRequestError",
    "CoapTransportConfig",
    "ReregisterBackoff",
    "check_uri",
    "decoder_for",
    "driver_for",
    "fetch",
    "open_context",
]

DEFAULT_MAX_AGE_S = 60.0  # RFC 7252 §5.10.5: Max-Age when the option is absent


class CoapRequestError(Exception):
    """A request that produced no usable response; `reason` is a stable counter key:
    timeout, network, client_error (4.xx), server_error (5.xx), unexpected_code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class CoapCounters:
    requests: int = 0  # GETs sent: polls and (re-)registrations
    ok: int = 0  # successful responses and notifications with a decodable payload
    notifications: int = 0  # Observe notifications after the registration's response
    records: int = 0
    blobs: int = 0
    blobs_dropped: int = 0  # vd values with no blob_sink to take them
    registrations: int = 0  # observations the server accepted
    silences: int = 0  # observations given up because notifications stopped coming
    skipped_ticks: int = 0  # poll ticks missed because a poll ran late
    late_max_s: float = 0.0
    consecutive_failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # reason -> count
    last_error: str = ""

    def count_error(self, reason: str, detail: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1
        self.last_error = f"{reason}: {detail}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ReregisterBackoff:
    """Delay before the n-th consecutive registration attempt after an observation ended:
    initial_s * factor**(n-1), at most max_s. It restarts after every accepted registration."""

    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.factor < 1 or self.max_s <= 0:
            raise ValueError("need initial_s >= 0, factor >= 1, max_s > 0")

    def delay_s(self, attempt: int) -> float:
        return min(self.max_s, self.initial_s * self.factor ** max(0, attempt - 1))


# --- configuration (the gateway's `transport:` block for a CoAP device) ---------------------


class CoapTransportConfig(BaseModel):
    """Suggested gateway-config shape for ``transport: {type: coap, ...}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["coap"]
    uri: str = Field(pattern=r"^coaps?(\+tcp)?://", description="coap://host[:port]/path")
    mode: Literal["poll", "observe"] = "poll"
    timeout: float = Field(5.0, gt=0, le=120, description="seconds to wait for a response")
    accept: Literal["senml+json", "senml+cbor"] | None = Field(
        None, description="ask for a SenML representation (Accept option)"
    )
    payload: Literal["senml", "plain"] = "senml"
    plain: PlainProfile | None = Field(None, description="field mapping when payload: plain")
    names: dict[str, str] = Field(
        default_factory=dict, description="SenML name -> quantity renames"
    )
    silence_s: float | None = Field(
        None, gt=0, description="observe: re-register after this much silence (default Max-Age+2)"
    )
    backoff_max_s: float = Field(60.0, gt=0, le=3600, description="observe: re-register cap")

    @model_validator(mode="after")
    def _consistent(self) -> CoapTransportConfig:
        if self.payload == "plain" and self.plain is None:
            raise ValueError("payload: plain needs a `plain:` field mapping")
        check_uri(self.uri)
        return self

    @property
    def accept_format(self) -> int | None:
        return {"senml+json": 110, "senml+cbor": 112}.get(self.accept or "")


def decoder_for(config: CoapTransportConfig) -> PayloadDecoder:
    if config.payload == "plain":
        assert config.plain is not None  # checked by the model
        return PlainDecoder(config.plain)
    return SenmlDecoder(config.names)


def driver_for(
    device: str,
    config: CoapTransportConfig,
    interval_s: float,
    sink: Callable[[list[Record]], None],
    *,
    context: aiocoap.Context | None = None,
    blob_sink: Callable[[list[Blob]], None] | None = None,
    clock: Callable[[], float] = time.time,
    clock_synced: Callable[[], bool] = lambda: True,
) -> CoapPoller | CoapObserver:
    """The driver a device's ``transport: {type: coap}`` block asks for (interval: poll only)."""
    common: dict[str, Any] = {
        "decoder": decoder_for(config),
        "timeout": config.timeout,
        "accept": config.accept_format,
        "context": context,
        "blob_sink": blob_sink,
        "clock": clock,
        "clock_synced": clock_synced,
    }
    if config.mode == "observe":
        backoff = ReregisterBackoff(max_s=config.backoff_max_s)
        return CoapObserver(
            device, config.uri, sink, backoff=backoff, silence_s=config.silence_s, **common
        )
    return CoapPoller(device, config.uri, interval_s, sink, **common)


# --- shared request plumbing ----------------------------------------------------------------


async def open_context() -> aiocoap.Context:
    """A client context (aiocoap's default transports; AIOCOAP_CLIENT_TRANSPORT overrides)."""
    return await aiocoap.Context.create_client_context()


@contextlib.asynccontextmanager
async def _context(shared: aiocoap.Context | None) -> AsyncIterator[aiocoap.Context]:
    if shared is not None:
        yield shared
        return
    ctx = await open_context()
    try:
        yield ctx
    finally:
        await ctx.shutdown()


_SCHEMES = frozenset({"coap", "coaps", "coap+tcp", "coaps+tcp", "coap+ws", "coaps+ws"})


def check_uri(uri: str) -> str:
    """`uri` if it is a usable CoAP URI, else ValueError: a configuration error must fail at
    start-up, not as an exception inside the polling loop."""
    scheme = uri.partition("://")[0].lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"not a CoAP URI (coap://host/path): {uri!r}")
    try:
        aiocoap.Message(code=aiocoap.GET, uri=uri)
    except ValueError as exc:  # aiocoap's IncompleteUrlError, MalformedUrlError
        raise ValueError(f"invalid CoAP URI {uri!r}: {exc}") from None
    return uri


def _message(uri: str, accept: int | None, observe: bool) -> aiocoap.Message:
    msg = aiocoap.Message(code=aiocoap.GET, uri=uri)
    if observe:
        msg.opt.observe = 0
    if accept is not None:
        msg.opt.accept = accept
    return msg


def _check(response: aiocoap.Message) -> aiocoap.Message:
    code = response.code
    if code.is_successful():
        return response
    reason = {4: "client_error", 5: "server_error"}.get(code.class_, "unexpected_code")
    text = response.payload[:80].decode("utf-8", "replace")  # diagnostic payload, if any
    raise CoapRequestError(reason, f"{code.dotted} {code.name_printable} {text}".rstrip())


async def _first_response(request: aiocoap.interfaces.Request, limit_s: float) -> aiocoap.Message:
    try:
        async with asyncio.timeout(limit_s):
            return await request.response
    except TimeoutError:
        raise CoapRequestError("timeout", f"no response within {limit_s:g} s") from None
    except aiocoap.error.Error as exc:
        # NetworkError (ICMP unreachable, DNS), RequestTimedOut, LibraryShutdown, ...
        raise CoapRequestError("network", _describe(exc)) from None


async def fetch(
    ctx: aiocoap.Context, uri: str, *, limit_s: float, accept: int | None = None
) -> aiocoap.Message:
    """One GET; the 2.xx response, or CoapRequestError."""
    response = await _first_response(ctx.request(_message(uri, accept, observe=False)), limit_s)
    return _check(response)


class _Delivery:
    """Response -> Records/blobs -> sinks, with counting; shared by poller and observer."""

    def __init__(
        self,
        device: str,
        decoder: PayloadDecoder,
        sink: Callable[[list[Record]], None],
        blob_sink: Callable[[list[Blob]], None] | None,
        clock: Callable[[], float],
        clock_synced: Callable[[], bool],
        counters: CoapCounters,
    ) -> None:
        self.device = device
        self.decoder = decoder
        self._sink = sink
        self._blob_sink = blob_sink
        self._clock = clock
        self._clock_synced = clock_synced
        self.counters = counters
        self._failing = False  # log the first failure of a run of failures, not each one

    def decode(self, response: aiocoap.Message, update_time: float | None) -> Decoded:
        ctx = DecodeContext(self.device, self._clock(), update_time, self._clock_synced())
        return self.decoder(response.payload, response.opt.content_format, ctx)

    def deliver(self, response: aiocoap.Message, update_time: float | None) -> bool:
        """Decode and hand over; False (counted, logged) when the payload is unusable."""
        try:
            decoded = self.decode(response, update_time)
        except PayloadError as exc:
            self.failed(exc.reason, exc.detail)
            return False
        self.counters.ok += 1
        self.counters.consecutive_failures = 0
        if self._failing:
            log.info("coap %s: readings again", self.device)
            self._failing = False
        if decoded.records:
            self.counters.records += len(decoded.records)
            self._sink(decoded.records)
        if decoded.blobs:
            if self._blob_sink is None:
                self.counters.blobs_dropped += len(decoded.blobs)
            else:
                self.counters.blobs += len(decoded.blobs)
                self._blob_sink(decoded.blobs)
        return True

    def failed(self, reason: str, detail: str) -> None:
        self.counters.count_error(reason, detail)
        self.counters.consecutive_failures += 1
        if not self._failing:
            log.warning("coap %s: %s: %s", self.device, reason, detail)
            self._failing = True
        else:
            log.debug("coap %s: %s: %s", self.device, reason, detail)


# --- GET polling ----------------------------------------------------------------------------


class CoapPoller:
    def __init__(
        self,
        device: str,
        uri: str,
        interval_s: float,
        sink: Callable[[list[Record]], None],
        *,
        decoder: PayloadDecoder | None = None,
        timeout: float = 5.0,
        accept: int | None = None,
        context: aiocoap.Context | None = None,
        blob_sink: Callable[[list[Blob]], None] | None = None,
        phase_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        clock_synced: Callable[[], bool] = lambda: True,
    ) -> None:
        if interval_s <= 0 or timeout <= 0:
            raise ValueError("interval_s and timeout must be positive")
        self.device = device
        self.uri = check_uri(uri)
        self.interval_s = interval_s
        self.timeout = timeout
        self.accept = accept
        self.phase_s = phase_s
        self.counters = CoapCounters()
        self._context = context
        self._delivery = _Delivery(
            device,
            decoder if decoder is not None else SenmlDecoder(),
            sink,
            blob_sink,
            clock,
            clock_synced,
            self.counters,
        )

    async def poll_once(self, ctx: aiocoap.Context) -> bool:
        """One GET, decoded and delivered; False when it failed (counted)."""
        self.counters.requests += 1
        try:
            response = await fetch(ctx, self.uri, limit_s=self.timeout, accept=self.accept)
        except CoapRequestError as exc:
            self._delivery.failed(exc.reason, exc.detail)
            return False
        return self._delivery.deliver(response, self.interval_s)

    async def run(self) -> None:
        """Poll forever on the grid origin + phase + k * interval (cancel to stop)."""
        async with _context(self._context) as ctx:
            loop = asyncio.get_running_loop()
            origin = loop.time() + self.phase_s
            tick = 0
            while True:
                due = origin + tick * self.interval_s
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.counters.late_max_s = max(self.counters.late_max_s, loop.time() - due)
                await self.poll_once(ctx)
                # The first grid tick after now: ticks that passed meanwhile are skipped.
                next_tick = max(math.floor((loop.time() - origin) / self.interval_s) + 1, tick + 1)
                self.counters.skipped_ticks += next_tick - tick - 1
                tick = next_tick


# --- Observe --------------------------------------------------------------------------------


class CoapObserver:
    def __init__(
        self,
        device: str,
        uri: str,
        sink: Callable[[list[Record]], None],
        *,
        decoder: PayloadDecoder | None = None,
        timeout: float = 5.0,
        accept: int | None = None,
        context: aiocoap.Context | None = None,
        blob_sink: Callable[[list[Blob]], None] | None = None,
        backoff: ReregisterBackoff = ReregisterBackoff(),
        silence_s: float | None = None,
        silence_grace_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        clock_synced: Callable[[], bool] = lambda: True,
    ) -> None:
        if timeout <= 0 or (silence_s is not None and silence_s <= 0):
            raise ValueError("timeout and silence_s must be positive")
        self.device = device
        self.uri = check_uri(uri)
        self.timeout = timeout
        self.accept = accept
        self.backoff = backoff
        self.silence_s = silence_s  # fixed silence limit; None: Max-Age + silence_grace_s
        self.silence_grace_s = silence_grace_s
        self.counters = CoapCounters()
        self._context = context
        self._delivery = _Delivery(
            device,
            decoder if decoder is not None else SenmlDecoder(),
            sink,
            blob_sink,
            clock,
            clock_synced,
            self.counters,
        )

    async def run(self) -> None:
        """Observe forever, re-registering after every end (cancel to stop)."""
        async with _context(self._context) as ctx:
            attempt = 0
            while True:
                if await self.observe_once(ctx):
                    attempt = 0  # it was healthy: come back quickly, the device is likely up
                attempt += 1
                await asyncio.sleep(self.backoff.delay_s(attempt))

    async def observe_once(self, ctx: aiocoap.Context) -> bool:
        """One registration and its notifications until the observation ends.

        True when the server accepted the observation (the next attempt starts the backoff
        afresh), False when the registration itself failed.
        """
        self.counters.requests += 1
        request = ctx.request(_message(self.uri, self.accept, observe=True))
        try:
            try:
                first = _check(await _first_response(request, self.timeout))
            except CoapRequestError as exc:
                self._delivery.failed(exc.reason, exc.detail)
                return False
            self._delivery.deliver(first, _max_age(first))
            if first.opt.observe is None:
                # The value is good but the resource is not observable (or the server
                # declined): retrying on the backoff keeps it read, slowly.
                self._delivery.failed("not_observable", f"{self.uri} answered without Observe")
                return False
            self.counters.registrations += 1
            await self._notifications(request, _max_age(first))
            return True
        finally:
            # Stop interest: the next notification for this token is answered with RST,
            # which makes the server drop the observation (RFC 7641 §3.6).
            if request.observation is not None and not request.observation.cancelled:
                request.observation.cancel()
            if not request.response.done():
                request.response.cancel()

    async def _notifications(
        self, request: aiocoap.interfaces.Request, max_age: float | None
    ) -> None:
        notifications = aiter(request.observation)
        while True:
            limit = self._silence_limit(max_age)
            try:
                async with asyncio.timeout(limit):
                    notification = await anext(notifications)
            except StopAsyncIteration:
                # The server ended it (a final response); re-register like after a reboot.
                self.counters.count_error("observation_ended", self.uri)
                log.info("coap %s: observation of %s ended by the server", self.device, self.uri)
                return
            except TimeoutError:
                self.counters.silences += 1
                self._delivery.failed("silence", f"no notification for {limit:g} s")
                return
            except aiocoap.error.Error as exc:
                self._delivery.failed("network", _describe(exc))
                return
            self.counters.notifications += 1
            try:
                response = _check(notification)
            except CoapRequestError as exc:
                # An error notification is final (RFC 7641 §3.2); StopAsyncIteration follows.
                self._delivery.failed(exc.reason, exc.detail)
                continue
            max_age = _max_age(response)
            self._delivery.deliver(response, max_age)

    def _silence_limit(self, max_age: float | None) -> float:
        if self.silence_s is not None:
            return self.silence_s
        return (DEFAULT_MAX_AGE_S if max_age is None else max_age) + self.silence_grace_s


def _describe(exc: BaseException) -> str:
    # aiocoap's NetworkError prints only its class name; the OS error behind it (ECONNREFUSED:
    # nothing listens on that port) is what a field engineer needs to see.
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or (exc.args[0] if exc.args else None)
    return f"{text} ({cause})" if cause is not None and str(cause) not in text else text


def _max_age(response: aiocoap.Message) -> float | None:
    value = response.opt.max_age
    return None if value is None else float(value)
