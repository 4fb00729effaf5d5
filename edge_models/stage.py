"""The gateway's inference stage: readings in, model records and events out, off the loop.

One :class:`EdgeStage` serves one model attachment (a device profile's ``model:`` block) for
every device that uses it. On the event loop it only files readings into per-device windows
and queues work (``submit``, ``submit_frame``: non-blocking, O(readings)). A worker thread
owns the model: it resamples windows, runs inference, applies persistence, and hands records
back to the loop with ``call_soon_threadsafe`` → ``emit(records, priority)``.

Records (``{device}/{quantity}``, event time = the end of the window):

* telemetry (PRIORITY_TELEMETRY), at most one set per ``report_every`` seconds per device —
  thermal ``fire_prob``, ``hotspot_prob`` (/), ``thermal_class`` (vs); elevator
  ``vib_anomaly`` (/), ``ride_class`` (vs); water level ``level_30min``, ``level_rise_30min`` (m);
* events (PRIORITY_EVENT) when an alarm class persists for ``persistence`` results, or clears:
  ``{device}/event`` = ``"thermal:fire"`` / ``"thermal:clear"`` with ``{device}/event_model`` =
  ``"thermal@1.0.0"`` at the same time, plus that result's telemetry;
* stage status (PRIORITY_EVENT) under ``{stage name}/…`` (default ``edge-{model}``):
  ``model_status`` = ``"ok"`` or ``"fault:<reason>: <detail>"``, ``model`` = ``"thermal@1.0.0"``,
  ``model_backend`` = ``"cpu-xnnpack"``/``"vx"``/…, ``model_swap`` =
  ``"ok:1.1.0"``/``"rejected:<reason>: <detail>"``/``"rolled_back:1.1.0->1.0.0"``.

Nothing here raises into the caller once constructed: load failures, bad frames, inference
errors and rejected swaps become counters, status records and log lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from cloud_bridge.outbox import PRIORITY_EVENT, PRIORITY_TELEMETRY
from cloud_bridge.senml import Record
from edge_models.attachment import ModelAttachment
from edge_models.boards import BoardProfile
from edge_models.kinds import Inference
from edge_models.manifest import MANIFEST_NAME, ManifestError, default_models_dir, load_manifest
from edge_models.verify import (
    CandidateRejected,
    LoadedModel,
    ModelOpener,
    file_for_board,
    load_checked,
    open_model,
)
from edge_models.windows import DeviceWindow, Snapshot, resample

log = logging.getLogger(__name__)

Emit = Callable[[list[Record], int], None]
_MAX_DETAIL = 120


@dataclass
class StageCounters:
    readings: int = 0  # readings filed into windows
    frames: int = 0  # inference jobs queued
    inferences: int = 0
    dropped: int = 0  # jobs dropped because the worker fell behind (oldest first)
    uncovered: int = 0  # windows with gaps or too little history
    bad_frames: int = 0  # submit_frame() with the wrong shape or non-finite values
    over_budget: int = 0  # inferences slower than the board's budget_ms
    inference_errors: int = 0
    skipped_no_model: int = 0
    load_failures: int = 0
    swaps: int = 0
    swaps_rejected: int = 0
    rollbacks: int = 0
    events: int = 0
    emit_failures: int = 0


@dataclass(frozen=True, slots=True)
class StageStatus:
    state: Literal["idle", "loading", "ready", "fault", "stopped"]
    model: str | None = None  # "thermal@1.0.0"
    backend: str | None = None
    fault: str | None = None


@dataclass(frozen=True, slots=True)
class SwapResult:
    ok: bool
    reason: str  # "ok", "rolled_back", or a CandidateRejected reason, or "timeout"
    detail: str = ""
    model: str | None = None  # what runs after the swap


@dataclass(slots=True)
class _Job:
    device: str
    t: float
    frame: np.ndarray | None = None
    snapshot: Snapshot | None = None


@dataclass(slots=True)
class _Install:
    loaded: LoadedModel
    done: Callable[[SwapResult], None]


@dataclass(slots=True)
class _AlarmState:
    active: str | None = None
    streak_label: str | None = None
    streak: int = 0
    last_report: float = -np.inf


@dataclass(slots=True)
class _Running:
    loaded: LoadedModel
    previous: LoadedModel | None = None
    probation_left: int = 0


class EdgeStage:
    def __init__(
        self,
        spec: ModelAttachment,
        board: BoardProfile,
        emit: Emit,
        *,
        models_dir: Path | None = None,
        name: str | None = None,
        opener: ModelOpener = open_model,
        queue_size: int = 64,
        probation: int = 20,
        devices: Collection[str] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.spec = spec
        self.kind = spec.kind
        self.board = board
        self.name = name or f"edge-{spec.model}"
        self.models_dir = Path(models_dir) if models_dir else default_models_dir()
        self.counters = StageCounters()
        self._emit = emit
        self._opener = opener
        self._probation = probation
        self._clock = clock
        self._every = self.kind.default_every_s if spec.every is None else spec.every
        self._persistence = spec.persistence or self.kind.default_persistence
        self._needed_s = (self.kind.window_samples - 1) * self.kind.period_s
        self._span = spec.window or self._needed_s * 1.1 + 2 * self.kind.period_s
        self._max_gap = spec.max_gap or max(3 * self.kind.period_s, 1e-9)
        self._channel_of = {spec.inputs.get(c, c): c for c in self.kind.channels}
        self._devices = frozenset(devices) if devices is not None else None
        self._windows: dict[str, DeviceWindow] = {}
        self._last_queued: dict[str, float] = {}
        self._jobs: deque[_Job] = deque(maxlen=queue_size)
        self._control: deque[_Install | str] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._status = StageStatus("idle")
        self._status_changed: asyncio.Event | None = None
        self._running: _Running | None = None  # worker thread only
        self._alarms: dict[str, _AlarmState] = {}  # worker thread only

    # --- lifecycle (event loop) -------------------------------------------------------

    def start(self) -> None:
        """Start the worker; the model loads there (watch ``status`` / ``wait_ready``)."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._status_changed = asyncio.Event()
        self._status = StageStatus("loading")
        self._control.append("load")
        self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
        self._thread.start()
        self._wake.set()

    async def stop(self, limit_s: float = 2.0) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        self._wake.set()
        await asyncio.to_thread(self._thread.join, limit_s)
        if self._thread.is_alive():
            log.warning("%s: worker still busy after %.1f s; left as a daemon", self.name, limit_s)
        self._thread = None
        self._status = StageStatus("stopped", self._status.model, self._status.backend)

    async def __aenter__(self) -> EdgeStage:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def status(self) -> StageStatus:
        return self._status

    @property
    def backend(self) -> str | None:
        """What runs the model now ("cpu-xnnpack", "vx", "edgetpu", "onnx-cuda", …)."""
        return self._status.backend

    async def wait_ready(self, limit_s: float = 10.0) -> StageStatus:
        """Wait until the first load finished (ready or fault), at most ``limit_s`` seconds."""
        deadline = asyncio.get_running_loop().time() + limit_s
        while self._status.state == "loading" and self._status_changed is not None:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            self._status_changed.clear()
            try:
                await asyncio.wait_for(self._status_changed.wait(), remaining)
            except TimeoutError:
                break
        return self._status

    # --- input (event loop, non-blocking) ---------------------------------------------

    def submit(self, records: list[Record]) -> None:
        """File readings into per-device windows; queue an inference when one is due."""
        if not self.kind.channels:
            return  # frame kinds (thermal) take submit_frame()
        touched: set[str] = set()
        for rec in records:
            device, _, quantity = rec.name.rpartition("/")
            channel = self._channel_of.get(quantity)
            if channel is None or isinstance(rec.value, str | bool) or rec.quality == 4:
                continue
            if self._devices is not None and device not in self._devices:
                continue
            window = self._windows.get(device)
            if window is None:
                window = self._windows[device] = DeviceWindow(
                    self.kind.channels, self._max_samples(), self._span
                )
            window.add(channel, rec.time, float(rec.value))
            self.counters.readings += 1
            touched.add(device)
        for device in touched:
            window = self._windows[device]
            end = window.end_time()
            if end is None or not window.covers(self._needed_s) or not self._due(device, end):
                continue
            snap = window.snapshot()
            if snap is not None:
                self._enqueue(_Job(device, end, snapshot=snap))

    def submit_frame(self, device: str, t: float, frame: np.ndarray) -> None:
        """One complete model input: a 24×32 thermal frame in °C, a 128×4 lift window, or a
        36×2 level (m) / rain (mm/h) history. Copied, validated by shape, never blocks."""
        if self._devices is not None and device not in self._devices:
            return
        arr = np.asarray(frame, np.float32)
        shape = self.kind.frame_shape()
        if arr.size != int(np.prod(shape)) or not np.all(np.isfinite(arr)):
            self.counters.bad_frames += 1
            return
        if not self._due(device, t):
            return
        self._enqueue(_Job(device, t, frame=arr.reshape(shape).copy()))

    def _max_samples(self) -> int:
        return max(4 * self.kind.window_samples, 64)

    def _due(self, device: str, t: float) -> bool:
        last = self._last_queued.get(device)
        if last is not None and t - last < self._every:
            return False
        self._last_queued[device] = t
        return True

    def _enqueue(self, job: _Job) -> None:
        if len(self._jobs) == self._jobs.maxlen:
            self.counters.dropped += 1  # deque drops the oldest
        self._jobs.append(job)
        self.counters.frames += 1
        self._wake.set()

    # --- model swap (event loop) ------------------------------------------------------

    async def swap(self, path: str | Path, limit_s: float = 30.0) -> SwapResult:
        """Check a new model file (manifest beside it) and switch to it without a restart.

        Rejected candidates leave the running model in place; a candidate that fails during
        its first ``probation`` inferences is rolled back to the previous model.
        """
        loop = asyncio.get_running_loop()
        try:
            loaded = await asyncio.wait_for(
                asyncio.to_thread(
                    load_checked, Path(path), self.kind, self.board, opener=self._opener
                ),
                limit_s,
            )
        except CandidateRejected as exc:
            return self._rejected(exc.reason, exc.detail)
        except TimeoutError:
            return self._rejected("timeout", f"check took longer than {limit_s:g} s")
        if self._thread is None:
            return self._rejected("stopped", "the stage is not running")
        done: asyncio.Future[SwapResult] = loop.create_future()

        def finish(result: SwapResult) -> None:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(result))

        self._control.append(_Install(loaded, finish))
        self._wake.set()
        try:
            return await asyncio.wait_for(done, limit_s)
        except TimeoutError:
            return SwapResult(False, "timeout", "worker did not install it in time")

    def _rejected(self, reason: str, detail: str) -> SwapResult:
        self.counters.swaps_rejected += 1
        log.warning("%s: model swap rejected (%s): %s", self.name, reason, detail)
        self._status_records(model_swap=f"rejected:{reason}: {detail}"[:_MAX_DETAIL])
        return SwapResult(False, reason, detail, self._status.model)

    # --- worker thread ----------------------------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            while not self._stopping.is_set():
                try:
                    if self._control:
                        self._handle_control(self._control.popleft())
                    elif self._jobs:
                        self._infer(self._jobs.popleft())
                    else:
                        break
                except Exception:  # a bug in one job must not end the worker
                    self.counters.inference_errors += 1
                    log.exception("%s: worker job failed", self.name)

    def _handle_control(self, item: _Install | str) -> None:
        if item == "load":
            self._load_initial()
        elif isinstance(item, _Install):
            self._install(item)

    def _load_initial(self) -> None:
        try:
            manifest = load_manifest(self.models_dir / MANIFEST_NAME)
            entry = manifest.entry(self.kind.name)
            path = self.models_dir / file_for_board(entry, self.board).file
            loaded = load_checked(
                path, self.kind, self.board, version=self.spec.version, opener=self._opener
            )
        except CandidateRejected as exc:
            self._fault(exc.reason, exc.detail)
            return
        except ManifestError as exc:
            self._fault("manifest", str(exc))
            return
        except Exception as exc:  # a bug must not kill the worker silently
            self._fault("load", f"{type(exc).__name__}: {exc}")
            return
        self._running = _Running(loaded)
        self._set_status(StageStatus("ready", loaded.label, loaded.model.backend))
        log.info("%s: %s running on %s", self.name, loaded.label, loaded.model.backend)
        self._status_records(
            model_status="ok", model=loaded.label, model_backend=loaded.model.backend
        )

    def _fault(self, reason: str, detail: str) -> None:
        self.counters.load_failures += 1
        text = f"{reason}: {' '.join(detail.split())}"[:_MAX_DETAIL]
        log.error("%s: model not loaded: %s", self.name, text)
        self._set_status(StageStatus("fault", fault=text))
        self._status_records(model_status=f"fault:{text}")

    def _install(self, item: _Install) -> None:
        new = item.loaded
        previous = self._running.loaded if self._running else None
        self._running = _Running(new, previous, self._probation)
        self.counters.swaps += 1
        self._set_status(StageStatus("ready", new.label, new.model.backend))
        log.info("%s: swapped to %s on %s", self.name, new.label, new.model.backend)
        self._status_records(
            model_status="ok",
            model=new.label,
            model_backend=new.model.backend,
            model_swap=f"ok:{new.entry.version}",
        )
        item.done(SwapResult(True, "ok", "", new.label))

    def _rollback(self, error: str) -> None:
        running = self._running
        assert running is not None and running.previous is not None
        bad, good = running.loaded, running.previous
        self._running = _Running(good)
        self.counters.rollbacks += 1
        log.error(
            "%s: %s failed on probation (%s); back to %s", self.name, bad.label, error, good.label
        )
        self._set_status(StageStatus("ready", good.label, good.model.backend))
        self._status_records(
            model_status="ok",
            model=good.label,
            model_backend=good.model.backend,
            model_swap=f"rolled_back:{bad.entry.version}->{good.entry.version}",
        )

    def _infer(self, job: _Job) -> None:
        running = self._running
        if running is None:
            self.counters.skipped_no_model += 1
            return
        frame = job.frame
        if frame is None:
            assert job.snapshot is not None
            frame = resample(
                job.snapshot, self.kind.window_samples, self.kind.period_s, self._max_gap
            )
            if frame is None:
                self.counters.uncovered += 1
                return
        started = self._clock()
        try:
            outputs = running.loaded.model.run(*self.kind.preprocess(frame))
            if not all(np.all(np.isfinite(o)) for o in outputs):
                raise FloatingPointError("non-finite model output")
            result = self.kind.interpret(outputs, frame, self.spec.threshold)
        except Exception as exc:
            self.counters.inference_errors += 1
            if running.previous is not None and running.probation_left > 0:
                self._rollback(f"{type(exc).__name__}: {exc}")
            else:
                log.warning("%s: inference failed for %s: %s", self.name, job.device, exc)
            return
        elapsed_ms = (self._clock() - started) * 1000.0
        self.counters.inferences += 1
        if elapsed_ms > self.board.inference.budget_ms:
            self.counters.over_budget += 1
        if running.probation_left > 0:
            running.probation_left -= 1
            if running.probation_left == 0:
                running.previous = None  # the new model has proven itself
        self._publish(job.device, job.t, result, running.loaded.label)

    def _publish(self, device: str, t: float, result: Inference, label: str) -> None:
        state = self._alarms.setdefault(device, _AlarmState())
        if result.alarm == state.streak_label:
            state.streak += 1
        else:
            state.streak_label, state.streak = result.alarm, 1
        event: str | None = None
        if result.alarm is not None and state.streak >= self._persistence:
            if state.active != result.alarm:
                event = f"{self.kind.name}:{result.alarm}"
                state.active = result.alarm
        elif (
            result.alarm is None and state.active is not None and state.streak >= self._persistence
        ):
            event = f"{self.kind.name}:clear"
            state.active = None
        telemetry = [Record(f"{device}/{r.quantity}", t, r.value, r.unit) for r in result.records]
        if event is not None:
            self.counters.events += 1
            state.last_report = t
            events = [
                Record(f"{device}/event", t, event),
                Record(f"{device}/event_model", t, label),
            ]
            self._send(events + telemetry, PRIORITY_EVENT)
        elif t - state.last_report >= self.spec.report_every:
            state.last_report = t
            self._send(telemetry, PRIORITY_TELEMETRY)

    # --- output (any thread → loop) ---------------------------------------------------

    def _status_records(self, **values: str) -> None:
        t = time.time()
        self._send([Record(f"{self.name}/{k}", t, v) for k, v in values.items()], PRIORITY_EVENT)

    def _send(self, records: list[Record], priority: int) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self.counters.emit_failures += 1
            return
        try:
            loop.call_soon_threadsafe(self._deliver, records, priority)
        except RuntimeError:  # loop closed between the check and the call
            self.counters.emit_failures += 1

    def _deliver(self, records: list[Record], priority: int) -> None:
        try:
            self._emit(records, priority)
        except Exception:
            self.counters.emit_failures += 1
            log.exception("%s: emit callback failed", self.name)

    def _set_status(self, status: StageStatus) -> None:
        self._status = status
        loop, changed = self._loop, self._status_changed
        if loop is not None and changed is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(changed.set)

    def counters_dict(self) -> dict[str, int]:
        return asdict(self.counters)


__all__ = ["EdgeStage", "Emit", "ModelAttachment", "StageCounters", "StageStatus", "SwapResult"]
