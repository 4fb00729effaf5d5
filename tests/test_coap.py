"""CoAP drivers against a real aiocoap server (the simulator) on 127.0.0.1, plus the
device-SenML and plain-profile decoders on their own.

Every test starts its own simulator on a free UDP port and stops it, and every driver task
is cancelled on the way out, so nothing outlives a test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cloud_bridge.senml import Record
from drivers.coap.cli import EXIT_REQUEST, app
from drivers.coap.client import (
    CoapObserver,
    CoapPoller,
    CoapTransportConfig,
    ReregisterBackoff,
    decoder_for,
    driver_for,
    open_context,
)
from drivers.coap.payload import (
    Blob,
    DecodeContext,
    Decoded,
    FieldMap,
    PayloadError,
    PlainDecoder,
    PlainProfile,
    SenmlDecoder,
    decode_frame_i16,
)
from drivers.sim.coap_sim import CoapSimulator, Fault

DISPLACEMENT = {"crack", "tilt_x", "tilt_y", "gnss_e", "gnss_n", "gnss_u"}
FAST = ReregisterBackoff(initial_s=0.05, factor=2.0, max_s=0.2)
NOW = 1_780_000_000.0


@asynccontextmanager
async def simulator(**kwargs: Any) -> AsyncIterator[CoapSimulator]:
    sim = CoapSimulator(**kwargs)
    await sim.start("127.0.0.1", 0)
    try:
        yield sim
    finally:
        await sim.stop()


@asynccontextmanager
async def running(*drivers: CoapPoller | CoapObserver) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(d.run()) for d in drivers]
    try:
        yield
        for task in tasks:
            assert not task.done(), task  # drivers never end (or raise) on their own
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with pytest.raises(asyncio.CancelledError):
                await task


async def wait_for(condition: Callable[[], bool], limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def by_quantity(records: list[Record]) -> dict[str, Record]:
    return {r.quantity: r for r in records}


# --- GET polling ------------------------------------------------------------------------------


@pytest.mark.parametrize("accept", [None, 112])
async def test_polling_senml_keeps_the_devices_absolute_time(accept: int | None) -> None:
    # The simulated logger's clock runs an hour behind: its absolute bt must be kept, not
    # replaced by the receive time.
    async with simulator(clock=lambda: time.time() - 3600) as sim:
        batches: list[list[Record]] = []
        formats: list[int | None] = []
        senml = SenmlDecoder()

        def spying(payload: bytes, cf: int | None, ctx: DecodeContext) -> Decoded:
            formats.append(cf)
            return senml(payload, cf, ctx)

        poller = CoapPoller(
            "disp-1", sim.uri("displacement"), 0.1, batches.append, decoder=spying, accept=accept
        )
        async with running(poller):
            await wait_for(lambda: len(batches) >= 3)
        assert set(formats) == {accept or 110}
        first = by_quantity(batches[0])
        assert set(first) == DISPLACEMENT
        assert first["crack"].name == "disp-1/crack" and first["crack"].unit == "mm"
        assert first["tilt_x"].unit == "rad" and first["gnss_u"].unit == "m"
        assert abs(first["crack"].value - 0.40) < 0.02
        assert abs(first["crack"].time - (time.time() - 3600)) < 5
        assert first["crack"].update_time == 0.1  # the polling interval
        assert poller.counters.errors == {}


async def test_polling_keeps_a_stable_grid() -> None:
    async with simulator() as sim:
        starts: list[float] = []
        senml = SenmlDecoder()

        def slow(payload: bytes, cf: int | None, ctx: DecodeContext) -> Decoded:
            starts.append(time.monotonic() - 0.001)  # ~ when the GET went out (loopback)
            time.sleep(0.04)  # a slow poll: a sleep-after-poll loop would drift 0.4 tick/poll
            return senml(payload, cf, ctx)

        poller = CoapPoller("disp-1", sim.uri("displacement"), 0.1, lambda _r: None, decoder=slow)
        async with running(poller):
            await wait_for(lambda: len(starts) >= 6)
        # Polls start on the grid t0 + k * 0.1 s whatever each one took: no drift, no bunching.
        offsets = [(t - starts[0]) / 0.1 for t in starts]
        assert all(abs(k - round(k)) < 0.3 for k in offsets), offsets
        assert [round(k) for k in offsets] == sorted({round(k) for k in offsets})
        assert poller.counters.late_max_s < 0.1


async def test_plain_json_and_cbor_by_profile() -> None:
    profile = PlainProfile(
        fields=(
            FieldMap(pointer="/crack/mm", quantity="crack", unit="mm"),
            FieldMap(pointer="/tilt/0", quantity="tilt_x", unit="rad"),
            FieldMap(pointer="/tilt/1", quantity="tilt_y", unit="rad"),
            FieldMap(pointer="/missing", quantity="absent"),
        ),
        time="ts",
        time_scale=0.001,
    )
    async with simulator(clock=lambda: NOW) as sim:
        batches: list[list[Record]] = []
        json_poller = CoapPoller(
            "plain-1", sim.uri("plain"), 0.1, batches.append, decoder=PlainDecoder(profile)
        )
        cbor_poller = CoapPoller(
            "plain-2",
            sim.uri("plain"),
            0.1,
            batches.append,
            decoder=PlainDecoder(profile),
            accept=60,
        )
        async with running(json_poller, cbor_poller):
            await wait_for(lambda: {b[0].device for b in batches} == {"plain-1", "plain-2"})
    for batch in batches:
        got = by_quantity(batch)
        assert set(got) == {"crack", "tilt_x", "tilt_y"}  # absent fields are skipped
        assert got["crack"].time == NOW  # the document's own timestamp (ms -> s)
        assert got["tilt_x"].unit == "rad" and isinstance(got["tilt_y"].value, float)


async def test_a_silent_device_times_out_and_garbage_and_5xx_are_counted_not_raised() -> None:
    async with simulator() as sim:
        batches: list[list[Record]] = []
        poller = CoapPoller("disp-1", sim.uri("displacement"), 0.05, batches.append, timeout=0.2)
        async with running(poller):
            await wait_for(lambda: len(batches) >= 1)
            sim.set_fault("displacement", Fault.GARBAGE)
            await wait_for(lambda: poller.counters.errors.get("malformed", 0) >= 2)
            sim.set_fault("displacement", Fault.SERVER_ERROR)
            await wait_for(lambda: poller.counters.errors.get("server_error", 0) >= 2)
            sim.set_fault("displacement", Fault.SILENT)
            await wait_for(lambda: poller.counters.errors.get("timeout", 0) >= 1)
            sim.set_fault("displacement", Fault.NONE)
            healthy = len(batches)
            await wait_for(lambda: len(batches) >= healthy + 2)
        assert "5.03" in poller.counters.last_error or poller.counters.errors["server_error"]
        assert set(poller.counters.errors) == {"malformed", "server_error", "timeout"}
        assert poller.counters.consecutive_failures == 0


# --- Observe ----------------------------------------------------------------------------------


async def test_observe_delivers_notifications_with_the_thermal_frame() -> None:
    async with simulator(notify_ms=50, hotspot_c=95.0) as sim:
        batches: list[list[Record]] = []
        blobs: list[Blob] = []
        observer = CoapObserver(
            "thermal-1", sim.uri("thermal"), batches.append, blob_sink=blobs.extend, backoff=FAST
        )
        before = time.time()
        async with running(observer):
            await wait_for(lambda: len(blobs) >= 5)
        assert observer.counters.registrations == 1
        assert observer.counters.notifications >= 4
        got = by_quantity(batches[-1])
        assert set(got) == {"t_max", "t_bg", "hot_px"}
        assert got["t_max"].unit == "Cel" and got["hot_px"].unit == "count"
        assert 80 < got["t_max"].value < 100 and 19 < got["t_bg"].value < 23
        assert got["hot_px"].value > 0
        assert (
            before <= got["t_max"].time <= time.time()
        )  # no times in the pack: stamped on receipt
        assert got["t_max"].update_time == 1.0  # Max-Age of the notification
        frame = decode_frame_i16(blobs[-1].data, 24, 32)
        assert blobs[-1].name == "thermal-1/frame"
        assert max(max(row) for row in frame) == pytest.approx(got["t_max"].value, abs=0.01)


async def test_observe_in_cbor() -> None:
    async with simulator(notify_ms=50) as sim:
        batches: list[list[Record]] = []
        blobs: list[Blob] = []
        observer = CoapObserver(
            "thermal-1", sim.uri("thermal"), batches.append, blob_sink=blobs.extend, accept=112
        )
        async with running(observer):
            await wait_for(lambda: len(blobs) >= 3)
        assert len(blobs[0].data) == 24 * 32 * 2
        assert set(by_quantity(batches[0])) == {"t_max", "t_bg", "hot_px"}


async def test_observe_reregisters_after_a_silent_device_reboot() -> None:
    # Restarted on the same port with nothing sent in between: no ICMP, no error, just
    # no more notifications. Only the silence watchdog can notice.
    async with simulator(notify_ms=50) as sim:
        batches: list[list[Record]] = []
        observer = CoapObserver(
            "thermal-1", sim.uri("thermal"), batches.append, backoff=FAST, silence_s=0.3
        )
        async with running(observer):
            await wait_for(lambda: len(batches) >= 3)
            await sim.restart()
            rebooted = time.time()
            await wait_for(lambda: observer.counters.registrations == 2)
            await wait_for(lambda: batches[-1][0].time > rebooted + 0.3)
        assert observer.counters.silences == 1
        assert observer.counters.errors == {"silence": 1}


async def test_observe_reregisters_with_backoff_while_the_server_is_down() -> None:
    async with simulator(notify_ms=50) as sim:
        batches: list[list[Record]] = []
        observer = CoapObserver(
            "thermal-1", sim.uri("thermal"), batches.append, backoff=FAST, silence_s=0.3
        )
        async with running(observer):
            await wait_for(lambda: len(batches) >= 2)
            port = sim.port
            await sim.stop()
            await asyncio.sleep(0.8)  # registration attempts meet ICMP port unreachable
            await sim.start("127.0.0.1", port)
            back = time.time()
            await wait_for(lambda: bool(batches) and batches[-1][0].time > back)
        errors = observer.counters.errors
        assert observer.counters.registrations == 2
        assert errors.get("network", 0) >= 2  # retried during the outage …
        assert observer.counters.requests <= 2 + 8  # … but on a backoff, not in a loop


async def test_observe_counts_garbage_and_survives_a_5xx_that_ends_the_observation() -> None:
    async with simulator(notify_ms=50) as sim:
        batches: list[list[Record]] = []
        observer = CoapObserver("thermal-1", sim.uri("thermal"), batches.append, backoff=FAST)
        async with running(observer):
            await wait_for(lambda: len(batches) >= 2)
            sim.set_fault("thermal", Fault.GARBAGE)
            await wait_for(lambda: observer.counters.errors.get("malformed", 0) >= 3)
            assert observer.counters.registrations == 1  # garbage does not end an observation
            sim.set_fault("thermal", Fault.SERVER_ERROR)
            await wait_for(lambda: observer.counters.errors.get("server_error", 0) >= 3)
            sim.set_fault("thermal", Fault.NONE)
            healthy = len(batches)
            await wait_for(lambda: len(batches) >= healthy + 3)
        errors = observer.counters.errors
        assert errors["observation_ended"] == 1
        assert observer.counters.registrations == 2


async def test_one_shared_context_serves_several_drivers() -> None:
    async with simulator(notify_ms=50) as sim:
        ctx = await open_context()
        try:
            got: list[Record] = []
            poller = CoapPoller("disp-1", sim.uri("displacement"), 0.05, got.extend, context=ctx)
            observer = CoapObserver("thermal-1", sim.uri("thermal"), got.extend, context=ctx)
            async with running(poller, observer):
                await wait_for(lambda: {r.device for r in got} == {"disp-1", "thermal-1"})
            assert observer.counters.blobs_dropped >= 1  # no blob_sink: counted, not lost silently
        finally:
            await ctx.shutdown()


# --- CLI --------------------------------------------------------------------------------------


async def test_cli_get_and_observe_print_records() -> None:
    async with simulator(notify_ms=50) as sim:
        runner = CliRunner()
        got = await asyncio.to_thread(
            runner.invoke, app, ["get", sim.uri("displacement"), "--json", "--device", "d1"]
        )
        assert got.exit_code == 0, got.output
        lines = [json.loads(line) for line in got.stdout.splitlines()]
        assert {line["name"] for line in lines} == {f"d1/{q}" for q in DISPLACEMENT}
        watched = await asyncio.to_thread(
            runner.invoke, app, ["observe", sim.uri("thermal"), "--count", "3", "--seconds", "5"]
        )
        assert watched.exit_code == 0, watched.output
        assert watched.stdout.count("coap/t_max") == 3
        assert watched.stdout.count("coap/frame  <1536 bytes>") == 3
        sim.set_fault("displacement", Fault.SERVER_ERROR)
        failed = await asyncio.to_thread(runner.invoke, app, ["get", sim.uri("displacement")])
        assert failed.exit_code == EXIT_REQUEST
        assert "5.03" in failed.stderr and failed.stdout == ""


# --- the device-SenML decoder on its own ------------------------------------------------------


def decode(pack: Any, cf: int | None = 110, **ctx: Any) -> Decoded:
    payload = pack if isinstance(pack, bytes) else json.dumps(pack).encode()
    return SenmlDecoder()(payload, cf, DecodeContext("dev", ctx.pop("now", NOW), **ctx))


def test_base_fields_resolve_and_relative_times_count_from_receipt() -> None:
    out = decode(
        [
            {"bn": "urn:dev:ow:10e2073a01080063:", "bt": -10, "bu": "Cel", "n": "temp", "v": 21.5},
            {"n": "temp", "t": 5, "v": 21.7},
            {"n": "door_open", "vb": True, "u": "/"},
            {"bn": "urn:dev:ow:10e2073a01080063:lvl", "bv": 1.0, "v": 0.25, "u": "m"},
            {"n": "", "v": 0.5, "ut": 30},
        ]
    )
    assert [(r.name, r.time, r.value, r.unit, r.update_time) for r in out.records] == [
        ("dev/temp", NOW - 10, 21.5, "Cel", None),
        ("dev/temp", NOW - 5, 21.7, "Cel", None),
        ("dev/door_open", NOW - 10, True, "/", None),
        ("dev/lvl", NOW - 10, 1.25, "m", None),
        ("dev/lvl", NOW - 10, 1.5, "Cel", 30.0),  # base unit and base value still apply
    ]


def test_absolute_times_are_kept_and_milliseconds_rejected() -> None:
    out = decode([{"bn": "d:", "bt": 1.7e9, "n": "x", "v": 1, "t": 2}])
    assert out.records[0].time == 1.7e9 + 2
    with pytest.raises(PayloadError) as err:
        decode([{"bn": "d:", "bt": 1.7e12, "n": "x", "v": 1}])
    assert err.value.reason == "time_in_ms"


def test_unsynced_gateway_clock_marks_only_receipt_stamped_records() -> None:
    out = decode([{"n": "a", "v": 1}, {"n": "b", "v": 2, "t": 1.7e9}], clock_synced=False)
    assert [r.clock_synced for r in out.records] == [False, True]


def test_cbor_labels_vd_sum_and_names() -> None:
    frame = bytes(range(8))
    pack = cbor2.dumps(
        [
            {-2: "urn:dev:mac:0024befffe804ff1:", 0: "3303/0/5700", 2: 22.5, 1: "Cel"},
            {0: "frame", 8: frame},
            {0: "rain", 1: "mm/h", 2: 3.2, 5: 41.5},
            {0: "mode", 3: "armed", "q": 1},  # an unknown plain label is ignored
        ]
    )
    out = decode(pack, cf=112)
    assert [(r.name, r.value, r.unit) for r in out.records] == [
        ("dev/3303_0_5700", 22.5, "Cel"),
        ("dev/rain", 3.2, "mm/h"),
        ("dev/rain_sum", 41.5, None),
        ("dev/mode", "armed", None),
    ]
    assert out.blobs == [Blob("dev/frame", NOW, frame)]
    b64 = base64.urlsafe_b64encode(frame).rstrip(b"=").decode()
    assert decode([{"n": "frame", "vd": b64}]).blobs[0].data == frame


def test_names_come_from_the_base_name_when_n_is_absent_and_can_be_renamed() -> None:
    assert decode([{"bn": "urn:dev:ow:10e2073a:temp", "v": 1}]).records[0].name == "dev/temp"
    renamed = SenmlDecoder({"urn:dev:x:5700": "temperature"})(
        b'[{"bn":"urn:dev:x:","n":"5700","v":1}]', 110, DecodeContext("dev", NOW)
    )
    assert renamed.records[0].name == "dev/temperature"


@pytest.mark.parametrize(
    ("payload", "cf", "reason"),
    [
        (b"\xff\x00garbage", 110, "malformed"),
        (b"", 110, "malformed"),
        (b"{}", 110, "not_senml"),
        (b"[]", 110, "not_senml"),
        (b"[1,2]", 110, "not_senml"),
        (b'[{"n":"x","v":"1"}]', 110, "wrong_type"),
        (b'[{"n":"x","v":1,"vs":"a"}]', 110, "wrong_type"),
        (b'[{"n":"bad name","v":1}]', 110, "bad_name"),
        (b'[{"n":"x","v":1,"crit_":1}]', 110, "must_understand"),
        (b'[{"n":"x","v":1}]', 41, "content_format"),  # application/xml
        (b'[{"bn":"x","bt":1e400}]', 110, "wrong_type"),
        (b'[{"n":"x","vb":1}]', 110, "wrong_type"),
        (b'[{"n":"x","vd":"***"}]', 110, "wrong_type"),
    ],
)
def test_unusable_packs_raise_payload_error_with_a_reason(
    payload: bytes, cf: int, reason: str
) -> None:
    with pytest.raises(PayloadError) as err:
        decode(payload, cf)
    assert err.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=80), cf=st.sampled_from([None, 0, 50, 60, 110, 112]))
def test_arbitrary_bytes_never_raise_anything_but_payload_error(
    payload: bytes, cf: int | None
) -> None:
    try:
        out = decode(payload, cf)
    except PayloadError:
        return
    assert out.records or out.blobs


senml_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=5),
    st.booleans(),
    st.binary(max_size=4),
    st.none(),
)
senml_items = st.dictionaries(
    st.sampled_from(
        ["bn", "bt", "bu", "bv", "bs", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut", "x_"]
    ),
    senml_values,
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(pack=st.lists(senml_items, max_size=4), cbor=st.booleans())
def test_arbitrary_senml_shaped_packs_never_raise_anything_but_payload_error(
    pack: list[dict[str, Any]], cbor: bool
) -> None:
    payload = cbor2.dumps(pack) if cbor else json.dumps(pack, default=lambda b: b.hex()).encode()
    try:
        out = decode(payload, 112 if cbor else 110)
    except PayloadError:
        return
    for rec in out.records:
        assert rec.name.startswith("dev/") and math.isfinite(rec.time)
        assert not isinstance(rec.value, float) or math.isfinite(rec.value)


def test_plain_profile_errors() -> None:
    profile = PlainProfile(fields=(FieldMap(pointer="/a", quantity="a", scale=2.0),))
    decoder = PlainDecoder(profile)
    ctx = DecodeContext("dev", NOW)
    assert decoder(b'{"a": 2}', 50, ctx).records == [Record("dev/a", NOW, 4.0, None)]
    with pytest.raises(PayloadError, match="no_fields"):
        decoder(b'{"b": 2}', 50, ctx)
    with pytest.raises(PayloadError, match="wrong_type"):
        decoder(b'{"a": "x"}', 50, ctx)
    assert decoder(cbor2.dumps({"a": 1}), None, ctx).records[0].value == 2.0  # sniffed CBOR


def test_transport_config_shape() -> None:
    config = CoapTransportConfig.model_validate(
        {
            "type": "coap",
            "uri": "coap://10.0.3.17/displacement",
            "mode": "poll",
            "payload": "plain",
            "plain": {"fields": [{"pointer": "/crack/mm", "quantity": "crack", "unit": "mm"}]},
        }
    )
    assert isinstance(decoder_for(config), PlainDecoder)
    with pytest.raises(ValueError, match="plain"):
        CoapTransportConfig.model_validate(
            {"type": "coap", "uri": "coap://h/x", "payload": "plain"}
        )
    with pytest.raises(ValueError):
        CoapTransportConfig.model_validate({"type": "coap", "uri": "http://h/x"})


def test_a_bad_uri_fails_at_construction_not_inside_the_loop() -> None:
    for uri in ("http://host/x", "coap:///x", "not a uri"):
        with pytest.raises(ValueError, match="URI"):
            CoapPoller("d", uri, 1.0, lambda _r: None)
        with pytest.raises(ValueError, match="URI"):
            CoapObserver("d", uri, lambda _r: None)
    result = CliRunner().invoke(app, ["get", "http://host/x"])
    assert result.exit_code == 2 and "not a CoAP URI" in result.stderr


async def test_driver_for_builds_what_the_config_asks_for() -> None:
    async with simulator(notify_ms=50) as sim:
        observe = CoapTransportConfig(
            type="coap", uri=sim.uri("thermal"), mode="observe", accept="senml+cbor", silence_s=2
        )
        poll = CoapTransportConfig(type="coap", uri=sim.uri("displacement"), timeout=1)
        got: list[Record] = []
        observer = driver_for("thermal-1", observe, 10.0, got.extend)
        poller = driver_for("disp-1", poll, 0.05, got.extend)
        assert isinstance(observer, CoapObserver) and observer.accept == 112
        assert isinstance(poller, CoapPoller) and poller.interval_s == 0.05
        async with running(observer, poller):
            await wait_for(lambda: {r.device for r in got} == {"disp-1", "thermal-1"})
