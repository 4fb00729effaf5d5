"""Trustworthy timestamps: the gateway clock, central's corrections and implausible times."""

from __future__ import annotations

import asyncio
import time

from central.config import CentralConfig
from central.ingest import AssetRegistry, Inbound, IngestPipeline
from central.rules.gas import GasCh4Rule
from central.service import CentralService
from central.store import Store
from central.timecheck import TIME_CORRECTED, TIME_IMPLAUSIBLE, TIME_OK, TIME_UNSYNCED
from central.warnings import WarningManager
from cloud_bridge.mqtt import telemetry_topic
from cloud_bridge.senml import Pack, Record, encode_pack
from drivers.sim.modbus_server import ModbusSimulator
from drivers.sim.scenario import load_scenario
from gateway.clock import GatewayClock, kernel_clock_synced
from gateway.daemon import GatewayDaemon, correction_records
from tests.test_e2e import central_config, gateway_config, running, wait_until


class FakeTime:
    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_790_000_000.0
        self.synced: bool | None = False


def make_clock(ft: FakeTime) -> GatewayClock:
    return GatewayClock(lambda: ft.synced, wall=lambda: ft.wall, mono=lambda: ft.mono)


def test_unsynced_clock_ignores_wall_jumps_and_reports_the_offset_on_sync():
    ft = FakeTime()
    clock = make_clock(ft)
    assert not clock.synced
    start = clock.now()
    ft.mono += 10
    ft.wall -= 3600  # someone sets the clock back an hour
    assert clock.check() is None
    assert clock.now() == start + 10  # monotonic: the jump does not reach the readings
    ft.mono += 5
    ft.wall += 7200 + 5  # and forward two hours
    assert clock.now() == start + 15
    ft.synced = True
    ft.wall = 1_790_000_000.0 + 42 + 15  # the true time: the clock had been 42 s slow
    correction = clock.check()
    assert correction is not None
    assert correction.offset_s == 42.0 and correction.unsynced_since == start
    assert clock.synced and clock.now() == ft.wall


def test_synced_clock_counts_steps_and_absorbs_drift():
    ft = FakeTime()
    ft.synced = True
    clock = make_clock(ft)
    ft.mono += 20
    ft.wall += 20.1  # drift within the threshold
    assert clock.check() is None and clock.steps == 0
    ft.mono += 20
    ft.wall += 20 - 30  # a 30 s step back
    assert clock.check() is None
    assert clock.steps == 1 and clock.largest_step_s == 30.0
    assert clock.now() == ft.wall


def test_unknown_sync_status_is_assumed_synchronised():
    clock = GatewayClock(lambda: None)
    assert clock.synced
    assert kernel_clock_synced() in (True, False, None)


def _pipeline(tmp_path):
    cfg = CentralConfig.model_validate({"assets": [{"id": "a", "devices": ["gw-1/gas-1"]}]})
    store = Store(tmp_path / "c.db")
    registry = AssetRegistry(cfg.assets, {})
    warnings = WarningManager(store, cfg.cap, registry.info)
    return store, IngestPipeline(store, registry, warnings, [GasCh4Rule(cfg.rules.gas_ch4)])


def _send(pipeline, seq: int, records, received_at: float) -> list:
    pack = Pack("gw-1", 1, seq, tuple(records))
    return pipeline.handle(
        [Inbound(telemetry_topic("s", "gw-1"), encode_pack(pack), None, received_at)]
    )


def test_corrections_apply_to_readings_stored_before_and_after_them(tmp_path):
    store, pipeline = _pipeline(tmp_path)
    now = time.time()
    wrong = now - 3600  # the gateway clock was an hour slow while unsynchronised

    def unsynced(i: int) -> Record:
        return Record("gas-1/co", wrong + i, 1.0, "ppm", 1.0, 1, clock_synced=False)

    _send(pipeline, 0, [unsynced(i) for i in range(5)], now)
    fix = correction_records(
        _Correction(3600.0, wrong),
        now + 10,  # stamped after the sync, true scale
    )
    _send(pipeline, 5, fix, now + 10)  # priority: overtakes the rest of the backlog
    _send(pipeline, 1, [unsynced(i) for i in range(5, 10)], now + 11)
    rows = store.db.execute(
        "SELECT t, tq FROM readings WHERE quantity = 'co' ORDER BY t"
    ).fetchall()
    assert len(rows) == 10
    assert all(tq == TIME_CORRECTED for _, tq in rows)
    assert [round(t - now) for t, _ in rows] == list(range(10))
    flags = store.stats()["gateways"]["gw-1"]["time_flags"]
    assert flags == {"corrected": 10}
    store.close()


class _Correction:
    def __init__(self, offset_s: float, unsynced_since: float) -> None:
        self.offset_s = offset_s
        self.unsynced_since = unsynced_since


def test_implausible_times_are_stored_flagged_and_never_judged(tmp_path):
    store, pipeline = _pipeline(tmp_path)
    now = time.time()
    rtc_reset = [
        Record("gas-1/ch4_lel", 946_684_800.0 + i, 0.9, "/", 1.0, 1)  # 2000-01-01
        for i in range(5)
    ]
    future = [Record("gas-1/ch4_lel", now + 7200 + i, 0.9, "/", 1.0, 1) for i in range(5)]
    assert _send(pipeline, 0, rtc_reset, now) == []
    assert _send(pipeline, 1, future, now) == []  # 90 %LEL, but not at a believable time
    ok = [Record("gas-1/ch4_lel", now - 5 + i, 0.02, "/", 1.0, 1) for i in range(3)]
    _send(pipeline, 2, ok, now)
    rows = dict(store.db.execute("SELECT tq, COUNT(*) FROM readings GROUP BY tq").fetchall())
    assert rows == {TIME_IMPLAUSIBLE: 10, TIME_OK: 3}
    assert store.stats()["gateways"]["gw-1"]["time_flags"] == {"implausible": 10}
    store.close()


def test_times_before_1978_are_relative_in_senml_and_rejected_without_a_receipt_time(tmp_path):
    # RFC 8428: a time below 2**28 is relative to "now". A gateway whose clock reads 1970 sends
    # such times by mistake; central cannot know "now" for a buffered pack, so it rejects and
    # counts it rather than storing a guess.
    store, pipeline = _pipeline(tmp_path)
    epoch_1970 = [Record("gas-1/co", 3600.0 + i, 1.0, "ppm", 1.0, 1) for i in range(3)]
    _send(pipeline, 0, epoch_1970, time.time())
    assert store.stats()["gateways"]["gw-1"]["rejected"] == {"relative_time": 1}
    store.close()


def test_a_gateway_clock_reading_before_2020_is_never_trusted():
    ft = FakeTime()
    ft.synced, ft.wall = True, 86_400.0  # the kernel claims sync, the RTC says 1970
    assert not make_clock(ft).synced


async def test_gateway_with_a_wrong_unsynced_clock_ends_up_with_true_times(tmp_path, mosquitto):
    """A gateway boots with its clock an hour slow and no NTP; NTP arrives; central ends up
    with every reading at its true time."""
    state = {"synced": False, "skew": -3600.0}
    clock = GatewayClock(lambda: state["synced"], wall=lambda: time.time() + state["skew"])
    central = CentralService(central_config(tmp_path, mosquitto.url, "central-time"))
    scenario = load_scenario("gas-leak")
    async with ModbusSimulator(scenario, seed=3) as sim, running(central.run):
        await asyncio.wait_for(central.ready.wait(), 10)
        port = await sim.start("127.0.0.1", 0)
        gateway = GatewayDaemon(gateway_config(tmp_path, mosquitto.url, port, 0.1), clock=clock)
        async with running(gateway.run):
            await asyncio.sleep(1.5)
            state["synced"], state["skew"] = True, 0.0  # chrony steps the clock
            await asyncio.sleep(2.5)
        store = central.store

        async def corrected() -> bool:
            flags = store.stats()["gateways"].get("gw-e2e", {}).get("time_flags", {})
            return flags.get("corrected", 0) > 0 and "unsynced" not in flags

        await wait_until(corrected, 10, "the correction to reach central")
        now = time.time()
        (oldest, newest) = store.db.execute(
            "SELECT MIN(t), MAX(t) FROM readings WHERE device LIKE 'gas-%'"
        ).fetchone()
        flags = dict(
            store.db.execute(
                "SELECT tq, COUNT(*) FROM readings WHERE device LIKE 'gas-%' GROUP BY tq"
            ).fetchall()
        )
    assert now - 30 < oldest <= newest <= now + 1  # no reading an hour in the past
    assert set(flags) == {TIME_OK, TIME_CORRECTED}
    assert TIME_UNSYNCED not in flags


def test_unsynced_mark_round_trips_and_is_omitted_when_synced():
    from cloud_bridge.senml import decode_pack

    recs = (Record("d/x", 1.8e9, 1.0, clock_synced=False), Record("d/y", 1.8e9, 2.0))
    pack = Pack("gw-1", 1, 1, recs)
    for fmt in ("json", "cbor"):
        assert decode_pack(encode_pack(pack, fmt)).records == recs
    assert encode_pack(pack).count(b'"cu"') == 1
