"""Edge-model benchmark: latency, batched throughput, int8 vs float32, size and memory.

    python bench/edge_models.py [--json] [--quick] [--calls N]

Latency is per call on one thread pinned to one core, *including* the caller's float→int8
input quantisation and output dequantisation (``LiteRTModel.run``); ``invoke`` is the
interpreter alone. Throughput runs a batch of 64 in one invoke. Extra RSS is measured in a
fresh subprocess: after importing numpy + LiteRT, then after loading all three models and
running each once. ONNX Runtime GPU figures appear only where a GPU provider exists.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_models.kinds import KINDS
from edge_models.litert import LiteRTModel
from edge_models.manifest import MANIFEST_NAME, default_models_dir, load_manifest

MODELS = default_models_dir()
TARGET_THERMAL_US = 50.0
TARGET_FILE_BYTES = 100 * 1024
TARGET_EXTRA_RSS_MB = 30.0
BATCH = 64


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import ai_edge_litert

    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "ai_edge_litert": getattr(ai_edge_litert, "__version__", "?"),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def _inputs(model: LiteRTModel, batch: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(20.0, 5.0, (batch, *s.shape[1:])).astype(np.float32) for s in model.inputs]


def _latency_us(fn, args, calls: int) -> tuple[float, float]:
    for _ in range(min(200, calls)):
        fn(*args)
    times = np.empty(calls)
    for i in range(calls):
        t = time.perf_counter_ns()
        fn(*args)
        times[i] = time.perf_counter_ns() - t
    return float(np.percentile(times, 50) / 1e3), float(np.percentile(times, 99) / 1e3)


def _throughput(path: Path, names: tuple[str, ...], seconds: float = 0.5) -> float:
    model = LiteRTModel(path, input_names=names, batch=BATCH)
    x = _inputs(model, BATCH)
    model.run(*x)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.run(*x)
        n += BATCH
    return n / (time.perf_counter() - start)


def bench_litert(name: str, calls: int) -> dict[str, Any]:
    kind = KINDS[name]
    out: dict[str, Any] = {}
    for variant, suffix in (("int8", ".tflite"), ("float32", ".f32.tflite")):
        path = MODELS / f"{name}{suffix}"
        model = LiteRTModel(path, threads=1, input_names=kind.input_names)
        x = _inputs(model)
        p50, p99 = _latency_us(model.run, x, calls)
        raw = [np.zeros(s.shape, np.dtype(s.dtype)) for s in model.inputs]
        i50, _ = _latency_us(model.run_raw, raw, calls)
        out[variant] = {
            "backend": model.backend,
            "file_bytes": path.stat().st_size,
            "p50_us": round(p50, 1),
            "p99_us": round(p99, 1),
            "invoke_p50_us": round(i50, 1),
            f"batch{BATCH}_per_s": round(_throughput(path, kind.input_names)),
        }
    out["int8_over_float32_p50"] = round(out["int8"]["p50_us"] / out["float32"]["p50_us"], 2)
    out["int8_over_float32_throughput"] = round(
        out["int8"][f"batch{BATCH}_per_s"] / out["float32"][f"batch{BATCH}_per_s"], 2
    )
    return out


def bench_onnx(name: str, calls: int) -> dict[str, Any]:
    try:
        import onnxruntime as ort

        from edge_models.boards import OnnxProvider
        from edge_models.onnx_backend import OnnxModel, gpu_providers_available
    except ImportError:
        return {"cpu": "skipped: onnxruntime not installed", "gpu": "skipped: no GPU"}
    kind = KINDS[name]
    path = MODELS / f"{name}.onnx"
    result: dict[str, Any] = {}
    cpu = OnnxModel(path, threads=1, input_names=kind.input_names)
    p50, p99 = _latency_us(cpu.run, _inputs(cpu), calls)  # type: ignore[arg-type]
    result["cpu"] = {"p50_us": round(p50, 1), "p99_us": round(p99, 1)}
    gpus = gpu_providers_available(ort)
    if not gpus:
        result["gpu"] = "skipped: no GPU"
        return result
    gpu = OnnxModel(path, providers=[OnnxProvider(name=gpus[0])], input_names=kind.input_names)
    p50, p99 = _latency_us(gpu.run, _inputs(gpu), calls)  # type: ignore[arg-type]
    result["gpu"] = {"provider": gpu.backend, "p50_us": round(p50, 1), "p99_us": round(p99, 1)}
    return result


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def rss_child() -> None:
    """Runs in a fresh interpreter: RSS at start, after imports, after loading all models."""
    start = _rss_mb()
    import ai_edge_litert.interpreter  # noqa: F401

    imported = _rss_mb()
    models = [
        LiteRTModel(MODELS / f"{name}.tflite", input_names=kind.input_names)
        for name, kind in KINDS.items()
    ]
    for m in models:
        m.run(*_inputs(m))
    loaded = _rss_mb()
    print(json.dumps({"start_mb": start, "after_import_mb": imported, "after_load_mb": loaded}))


def measure_rss() -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--rss-child"], capture_output=True, text=True, timeout=60
    )
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    data["import_mb"] = round(data["after_import_mb"] - data["start_mb"], 1)
    data["models_mb"] = round(data["after_load_mb"] - data["after_import_mb"], 1)
    return data


def _target(name: str, value: float, limit: float, unit: str) -> dict[str, Any]:
    return {"name": name, "value": value, "limit": limit, "unit": unit, "met": value <= limit}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="300 calls per figure (smoke)")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child()
        return 0
    if args.quick:
        args.calls = 300
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    manifest = load_manifest(MODELS / MANIFEST_NAME)
    report: dict[str, Any] = {"machine": machine(), "models": {}}
    for entry in manifest.models:
        report["models"][entry.name] = {
            "version": entry.version,
            "litert": bench_litert(entry.name, args.calls),
            "onnx": bench_onnx(entry.name, args.calls // 3),
        }
    report["rss"] = measure_rss()
    thermal = report["models"]["thermal"]["litert"]["int8"]
    largest = max(m["litert"]["int8"]["file_bytes"] for m in report["models"].values())
    report["targets"] = [
        _target(
            "thermal int8 p50 per frame, 1 core, incl. quantisation",
            thermal["p50_us"],
            TARGET_THERMAL_US,
            " µs",
        ),
        _target("largest int8 model file", largest / 1024, TARGET_FILE_BYTES / 1024, " KB"),
        _target(
            "extra RSS, all three models loaded",
            report["rss"]["models_mb"],
            TARGET_EXTRA_RSS_MB,
            " MB",
        ),
    ]
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    m = report["machine"]
    print(
        f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
        f"LiteRT {m['ai_edge_litert']}, onnxruntime {m['onnxruntime']}"
    )
    print("latency: 1 thread pinned to 1 core, incl. input quantisation; batch of 64 per invoke")
    head = f"{'model':12} {'type':8} {'backend':12} {'bytes':>7} {'p50 µs':>8} {'p99 µs':>8}"
    print(head + f" {'invoke µs':>9} {'batch/s':>9}")
    for name, r in report["models"].items():
        for variant in ("int8", "float32"):
            v = r["litert"][variant]
            print(
                f"{name:12} {variant:8} {v['backend']:12} {v['file_bytes']:>7} "
                f"{v['p50_us']:>8.1f} {v['p99_us']:>8.1f} {v['invoke_p50_us']:>9.1f} "
                f"{v[f'batch{BATCH}_per_s']:>9}"
            )
        lt = r["litert"]
        print(
            f"{'':12} int8/float32: latency ×{lt['int8_over_float32_p50']}, "
            f"throughput ×{lt['int8_over_float32_throughput']}"
        )
        onnx = r["onnx"]
        cpu = (
            onnx["cpu"]
            if isinstance(onnx["cpu"], str)
            else (f"p50 {onnx['cpu']['p50_us']} µs, p99 {onnx['cpu']['p99_us']} µs")
        )
        gpu = (
            onnx["gpu"]
            if isinstance(onnx["gpu"], str)
            else (f"{onnx['gpu']['provider']} p50 {onnx['gpu']['p50_us']} µs")
        )
        print(f"{'':12} onnxruntime float32 CPU: {cpu}; GPU: {gpu}")
    rss = report["rss"]
    print(
        f"RSS (fresh process): +{rss['import_mb']} MB importing numpy+LiteRT, "
        f"+{rss['models_mb']} MB for all three models loaded and run once"
    )
    for t in report["targets"]:
        verdict = "MET" if t["met"] else "NOT MET"
        print(
            f"target: {t['name']}: {t['value']:,.1f}{t['unit']} "
            f"(needs <= {t['limit']:g}{t['unit']}) {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
