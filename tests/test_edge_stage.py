"""The inference stage: off-loop inference, records and events, faults, swap and rollback."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cloud_bridge.outbox import PRIORITY_EVENT, PRIORITY_TELEMETRY
from cloud_bridge.senml import DEVICE_RE, NAME_RE, Record
from edge_models.boards import load_board
from edge_models.manifest import MANIFEST_NAME, default_models_dir, file_ref
from edge_models.stage import EdgeStage, ModelAttachment
from edge_models.synth import elevator as synth_elevator
from edge_models.synth import thermal as synth_thermal
from edge_models.synth import water_level as synth_water
from edge_models.verify import open_model

pytest.importorskip("ai_edge_litert")

BOARD = load_board("x86")


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[list[Record], int]] = []
        self.threads: set[int] = set()

    def __call__(self, records: list[Record], priority: int) -> None:
        self.threads.add(threading.get_ident())
        self.calls.append((records, priority))

    def values(self, quantity: str) -> list[object]:
        return [r.value for recs, _ in self.calls for r in recs if r.quantity == quantity]

    def records(self) -> list[Record]:
        return [r for recs, _ in self.calls for r in recs]


async def until(predicate, limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def frames_of(label: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([synth_thermal.render(rng, label) for _ in range(n)])


@pytest.fixture
def models(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    shutil.copytree(default_models_dir(), folder)
    return folder


async def test_inference_runs_off_the_loop_and_the_loop_keeps_ticking():
    sink = Sink()
    run_threads: set[int] = set()

    def slow_opener(path, kind, board, variants):
        model = open_model(path, kind, board, variants)
        real_run = model.run

        def run(*inputs):
            run_threads.add(threading.get_ident())
            time.sleep(0.02)  # a slow accelerator: 20 ms per frame
            return real_run(*inputs)

        model.run = run
        return model

    spec = ModelAttachment(model="thermal", report_every=0)
    stage = EdgeStage(spec, BOARD, sink, opener=slow_opener)
    async with stage:
        assert (await stage.wait_ready()).state == "ready"
        frames = frames_of(synth_thermal.FIRE, 15, 3)
        gaps: list[float] = []

        async def ticker() -> None:
            last = time.perf_counter()
            for _ in range(60):
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        t0 = time.time()
        started = time.perf_counter()
        for i, frame in enumerate(frames):
            stage.submit_frame("cam-1", t0 + i, frame)
        submit_s = time.perf_counter() - started
        await tick
        await until(lambda: stage.counters.inferences == 15)
    loop_thread = threading.get_ident()
    assert submit_s < 0.01  # 15 frames queued, none run here
    assert max(gaps) < 0.05, f"the loop stalled for {max(gaps) * 1000:.0f} ms"
    assert run_threads and loop_thread not in run_threads
    assert sink.threads == {loop_thread}  # emit() is always called on the loop
    events = sink.values("event")
    assert events == ["thermal:fire"]  # persistence 2, raised once
    event_call = next(c for c in sink.calls if any(r.quantity == "event" for r in c[0]))
    assert event_call[1] == PRIORITY_EVENT
    assert {r.quantity for r in event_call[0]} >= {"event", "event_model", "fire_prob"}
    assert sink.values("event_model") == ["thermal@1.0.0"]
    assert len(sink.values("fire_prob")) == 15
    assert min(sink.values("fire_prob")[1:]) > 0.5
    for rec in sink.records():
        assert NAME_RE.match(rec.name) and DEVICE_RE.match(rec.device)


async def test_events_clear_and_telemetry_is_rate_limited():
    sink = Sink()
    spec = ModelAttachment(model="thermal", report_every=5.0, persistence=2)
    async with EdgeStage(spec, BOARD, sink) as stage:
        await stage.wait_ready()
        frames = np.concatenate(
            [frames_of(synth_thermal.HOTSPOT, 3, 1), frames_of(synth_thermal.BACKGROUND, 3, 2)]
        )
        for i, frame in enumerate(frames):
            stage.submit_frame("cam-2", 1_700_000_000.0 + i, frame)
        await until(lambda: stage.counters.inferences == 6)
        await asyncio.sleep(0.05)
    assert sink.values("event") == ["thermal:hotspot", "thermal:clear"]
    telemetry = [c for c in sink.calls if c[1] == PRIORITY_TELEMETRY]
    # 6 frames 1 s apart, report_every 5 s: t=0 reported, the two events carry their own.
    assert len(telemetry) == 1


async def test_a_worker_that_falls_behind_drops_the_oldest_work():
    sink = Sink()

    def slow_opener(path, kind, board, variants):
        model = open_model(path, kind, board, variants)
        real_run = model.run
        model.run = lambda *x: (time.sleep(0.01), real_run(*x))[1]
        return model

    spec = ModelAttachment(model="thermal", report_every=0)
    async with EdgeStage(spec, BOARD, sink, opener=slow_opener, queue_size=4) as stage:
        await stage.wait_ready()
        frame = frames_of(synth_thermal.BACKGROUND, 1, 4)[0]
        for i in range(40):
            stage.submit_frame("cam", 1000.0 + i, frame)
        await until(lambda: stage.counters.inferences + stage.counters.dropped == 40)
        await asyncio.sleep(0.05)
    assert stage.counters.dropped >= 30
    times = sorted({r.time for r in sink.records() if r.quantity == "fire_prob"})
    assert times[-1] == 1039.0  # the newest frame is never the one dropped


async def test_bad_frames_are_counted_not_raised():
    sink = Sink()
    async with EdgeStage(ModelAttachment(model="thermal"), BOARD, sink) as stage:
        await stage.wait_ready()
        stage.submit_frame("cam", 1.0, np.zeros((10, 10)))
        bad = np.full((24, 32), 20.0)
        bad[0, 0] = np.nan
        stage.submit_frame("cam", 2.0, bad)
    assert stage.counters.bad_frames == 2
    assert stage.counters.inferences == 0


async def test_a_model_that_fails_to_load_reports_a_fault(models: Path):
    (models / "thermal.tflite").write_bytes(b"garbage")
    sink = Sink()
    stage = EdgeStage(ModelAttachment(model="thermal"), BOARD, sink, models_dir=models)
    async with stage:
        status = await stage.wait_ready()
        stage.submit_frame("cam", 1.0, np.full((24, 32), 20.0))
        await asyncio.sleep(0.05)
    assert status.state == "fault" and status.fault.startswith("sha256: thermal.tflite")
    assert stage.counters.load_failures == 1
    assert stage.counters.skipped_no_model == 1
    faults = [r for r in sink.records() if r.name == "edge-thermal/model_status"]
    assert len(faults) == 1 and str(faults[0].value).startswith("fault:sha256")
    assert sink.calls[0][1] == PRIORITY_EVENT


async def test_a_pinned_version_that_is_not_shipped_is_a_fault():
    sink = Sink()
    stage = EdgeStage(ModelAttachment(model="elevator", version="9.9.9"), BOARD, sink)
    async with stage:
        status = await stage.wait_ready()
    assert status.state == "fault" and status.fault.startswith("version")


def _release(models: Path, tmp_path: Path, version: str, tamper=None) -> Path:
    """A 'new version' folder: copied models, a bumped manifest; ``tamper`` edits it."""
    new = tmp_path / f"release-{version}"
    shutil.copytree(models, new)
    manifest = json.loads((new / MANIFEST_NAME).read_text())
    for entry in manifest["models"]:
        entry["version"] = version
    if tamper:
        tamper(new, manifest)
    (new / MANIFEST_NAME).write_text(json.dumps(manifest))
    return new / "thermal.tflite"


async def test_swap_checks_and_switches_without_restart(models: Path, tmp_path: Path):
    sink = Sink()
    stage = EdgeStage(ModelAttachment(model="thermal"), BOARD, sink, models_dir=models)
    async with stage:
        await stage.wait_ready()
        result = await stage.swap(_release(models, tmp_path, "1.1.0"))
        assert result.ok and result.model == "thermal@1.1.0"
        stage.submit_frame("cam", 10.0, frames_of(synth_thermal.FIRE, 1, 5)[0])
        await until(lambda: stage.counters.inferences == 1)
    assert stage.status.model == "thermal@1.1.0"
    assert "ok:1.1.0" in sink.values("model_swap")


def _corrupt(folder: Path, manifest: dict) -> None:
    path = folder / "thermal.tflite"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))


def _missigned(folder: Path, manifest: dict) -> None:
    """The elevator network under the thermal name, with hashes that match: the signature
    check must catch it."""
    shutil.copy(folder / "elevator.tflite", folder / "thermal.tflite")
    entry = next(e for e in manifest["models"] if e["name"] == "thermal")
    entry["model"] = file_ref(folder / "thermal.tflite").model_dump()


def _wrong_vectors(folder: Path, manifest: dict) -> None:
    with np.load(folder / "thermal.testvec.npz") as v:
        data = dict(v)
    data["out0"] = data["out0"][:, ::-1].copy()  # expected classes reversed
    with open(folder / "thermal.testvec.npz", "wb") as fh:
        np.savez(fh, **data)
    entry = next(e for e in manifest["models"] if e["name"] == "thermal")
    entry["test_vectors"] = file_ref(folder / "thermal.testvec.npz").model_dump()


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [(_corrupt, "sha256"), (_missigned, "signature"), (_wrong_vectors, "smoke")],
)
async def test_a_bad_candidate_is_rejected_and_the_old_model_keeps_running(
    models: Path, tmp_path: Path, tamper, reason
):
    sink = Sink()
    stage = EdgeStage(ModelAttachment(model="thermal"), BOARD, sink, models_dir=models)
    async with stage:
        await stage.wait_ready()
        result = await stage.swap(_release(models, tmp_path, "1.1.0", tamper))
        stage.submit_frame("cam", 10.0, frames_of(synth_thermal.FIRE, 1, 5)[0])
        await until(lambda: stage.counters.inferences == 1)
    assert not result.ok and result.reason == reason, result
    assert result.model == "thermal@1.0.0" == stage.status.model
    assert stage.counters.swaps_rejected == 1 and stage.counters.swaps == 0
    assert any(str(v).startswith(f"rejected:{reason}") for v in sink.values("model_swap"))


async def test_a_new_model_failing_on_probation_is_rolled_back(models: Path, tmp_path: Path):
    sink = Sink()

    def flaky_opener(path, kind, board, variants):
        model = open_model(path, kind, board, variants)
        if "release" not in str(path):
            return model
        real_run, calls = model.run, [0]

        def run(*inputs):
            calls[0] += 1
            if calls[0] > 8:  # passes the 8 smoke vectors, then the accelerator hangs up
                raise RuntimeError("delegate lost the device")
            return real_run(*inputs)

        model.run = run
        return model

    stage = EdgeStage(
        ModelAttachment(model="thermal", report_every=0),
        BOARD,
        sink,
        models_dir=models,
        opener=flaky_opener,
    )
    async with stage:
        await stage.wait_ready()
        result = await stage.swap(_release(models, tmp_path, "1.1.0"))
        assert result.ok
        for i, frame in enumerate(frames_of(synth_thermal.FIRE, 3, 9)):
            stage.submit_frame("cam", 100.0 + i, frame)
        await until(lambda: stage.counters.inferences == 2)
    assert stage.counters.rollbacks == 1 and stage.counters.inference_errors == 1
    assert stage.status.model == "thermal@1.0.0"
    assert "rolled_back:1.1.0->1.0.0" in sink.values("model_swap")


async def test_elevator_windows_are_built_from_polled_records():
    data = synth_elevator.generate(40, seed=77, weights=(0, 0, 1))  # shocks
    window = data.windows[0]
    sink = Sink()
    spec = ModelAttachment(model="elevator", inputs={"acc_z": "az"}, report_every=0)
    async with EdgeStage(spec, BOARD, sink, devices={"lift-3"}) as stage:
        await stage.wait_ready()
        t0 = 1_700_000_000.0
        names = ("acc_x", "acc_y", "az", "speed")
        for i, row in enumerate(window):
            t = t0 + i / 50.0
            stage.submit(
                [Record(f"lift-3/{q}", t, float(v)) for q, v in zip(names, row, strict=True)]
                + [Record(f"lift-9/{q}", t, 0.0) for q in names]  # not attached: ignored
            )
        await until(lambda: stage.counters.inferences >= 1)
        await asyncio.sleep(0.05)
    assert stage.counters.readings == 128 * 4
    assert stage.counters.uncovered == 0
    assert sink.values("event")[0] == "elevator:shock"
    assert sink.values("ride_class")[0] == "shock"


async def test_water_level_forecast_from_polled_records():
    sink = Sink()
    spec = ModelAttachment(model="water_level", report_every=0)
    level, rain, _ = synth_water.simulate(np.random.default_rng(5), 600)
    async with EdgeStage(spec, BOARD, sink, queue_size=1024) as stage:
        await stage.wait_ready()
        t0 = 1_700_000_000.0
        for i in range(len(level)):
            t = t0 + 300.0 * i
            stage.submit(
                [
                    Record("gauge-7/level", t, float(level[i]), "m"),
                    Record("gauge-7/rain", t, float(rain[i]), "mm/h"),
                ]
            )
        await until(lambda: stage.counters.inferences == len(level) - 35)
    assert stage.counters.dropped == 0 and stage.counters.uncovered == 0
    forecasts = sink.values("level_30min")
    assert len(forecasts) == stage.counters.inferences
    # Each forecast is for the level 6 steps after its window's end.
    first = 35  # the first full 36-sample window ends at index 35
    predicted = np.asarray(forecasts[: len(level) - first - 6], float)
    actual = level[first + 6 : first + 6 + len(predicted)]
    assert np.mean(np.abs(predicted - actual)) < 0.1


async def test_attachment_validation():
    with pytest.raises(ValueError, match="not channels"):
        ModelAttachment(model="elevator", inputs={"acc_w": "x"})
    with pytest.raises(ValueError, match="shorter"):
        ModelAttachment(model="water_level", window=600)
    with pytest.raises(ValueError):
        ModelAttachment(model="thermal", colour="red")


async def test_a_faulted_stage_recovers_by_swapping_in_a_good_model(models: Path, tmp_path: Path):
    good = _release(models, tmp_path, "1.0.1")
    (models / "thermal.tflite").write_bytes(b"garbage")
    sink = Sink()
    stage = EdgeStage(ModelAttachment(model="thermal"), BOARD, sink, models_dir=models)
    async with stage:
        assert (await stage.wait_ready()).state == "fault"
        result = await stage.swap(good)
        assert stage.status.state == "ready"
        stage.submit_frame("cam", 1.0, frames_of(synth_thermal.FIRE, 1, 2)[0])
        await until(lambda: stage.counters.inferences == 1)
    assert result.ok and stage.status.model == "thermal@1.0.1"


async def test_an_onnx_board_runs_the_onnx_twin_on_cpu_here():
    pytest.importorskip("onnxruntime")
    from edge_models.onnx_backend import gpu_providers_available

    if gpu_providers_available():
        pytest.skip("a GPU is present: the CPU fallback is not what runs")
    sink = Sink()
    stage = EdgeStage(ModelAttachment(model="thermal"), load_board("jetson-orin-nano"), sink)
    async with stage:
        status = await stage.wait_ready()
        stage.submit_frame("cam", 1.0, frames_of(synth_thermal.FIRE, 1, 2)[0])
        await until(lambda: stage.counters.inferences == 1)
    assert status.state == "ready" and status.backend == "onnx-cpu"
    assert sink.values("model_backend") == ["onnx-cpu"]
    assert sink.values("thermal_class") == ["fire"]
