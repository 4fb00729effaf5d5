"""Markdown tables of the held-out metrics in the manifest (for the model cards).

python -m edge_models.report [thermal|elevator|water_level]
"""

from __future__ import annotations

import sys
from typing import Any

from edge_models.manifest import MANIFEST_NAME, ModelEntry, default_models_dir, load_manifest


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _confusion(m: dict[str, Any]) -> list[str]:
    labels = m["labels"]
    lines = [
        "| true \\ predicted | " + " | ".join(labels) + " | F1 |",
        "|---" * (len(labels) + 2) + "|",
    ]
    for label, row in zip(labels, m["confusion"], strict=True):
        cells = " | ".join(str(v) for v in row)
        lines.append(f"| {label} | {cells} | {m['f1'][label]:.3f} |")
    lines.append(f"\nAccuracy {_pct(m['accuracy'])}, macro F1 {m['macro_f1']:.3f} (n = {m['n']}).")
    return lines


def _alarm(title: str, c: dict[str, Any], unit: str) -> str:
    return (
        f"| {title} | {_pct(c['model_far'])} | {_pct(c['model_tpr'])} | "
        f"{c['baseline_threshold']:.3g} {unit} | {_pct(c['baseline_far'])} | "
        f"{_pct(c['baseline_tpr'])} |"
    )


def render(entry: ModelEntry) -> str:
    m8, m32 = entry.metrics["int8"], entry.metrics["float32"]
    agree = entry.metrics["int8_vs_float"]
    out = [f"### {entry.name} {entry.version} — held-out metrics (int8 model, LiteRT CPU)", ""]
    head = [
        "| comparison | model FAR | model detection | baseline threshold | baseline FAR | "
        "baseline detection |",
        "|---|---|---|---|---|---|",
    ]
    if entry.name == "thermal":
        out += [*_confusion(m8), "", *head]
        out.append(_alarm("alarm (hotspot or fire) vs max-T", m8["alarm_vs_max_temp"], "°C"))
        out.append(_alarm("alarm vs 2nd-hottest pixel", m8["alarm_vs_2nd_max_temp"], "°C"))
        out.append(_alarm("fire vs max-T", m8["fire_vs_max_temp"], "°C"))
        out.append(_alarm("fire vs 2nd-hottest pixel", m8["fire_vs_2nd_max_temp"], "°C"))
    elif entry.name == "elevator":
        out += [*_confusion(m8), "", *head]
        out.append(_alarm("anomaly (not normal) vs RMS", m8["anomaly_vs_rms"], "m/s²"))
    else:
        out += [
            "| forecaster | MAE all | MAE wet periods | 95th pct abs error |",
            "|---|---|---|---|",
        ]
        for k in ("model", "linear_extrapolation", "persistence"):
            out.append(
                f"| {k} | {100 * m8['mae_m'][k]:.1f} cm | {100 * m8['mae_wet_m'][k]:.1f} cm | "
                f"{100 * m8['p95_abs_err_m'][k]:.1f} cm |"
            )
        out += [f"\nn = {m8['n']} windows ({m8['n_wet']} wet).", "", *head]
        out.append(_alarm("rise ≥ 10 cm in 30 min vs linear", m8["rise_alarm_vs_linear"], "m"))
    out.append("")
    if entry.labels:
        out.append(
            f"int8 vs float32: same class on {_pct(agree['class_agreement'])} of the test set "
            f"(largest probability difference {agree['max_abs_prob_diff']:.2f}); float32 macro "
            f"F1 {m32['macro_f1']:.3f}."
        )
    else:
        out.append(
            f"int8 vs float32: mean |difference| {100 * agree['mean_abs_diff_m']:.2f} cm, "
            f"largest {100 * agree['max_abs_diff_m']:.1f} cm; float32 MAE "
            f"{100 * m32['mae_m']['model']:.1f} cm."
        )
    t = entry.trained
    out.append(
        f"Trained on {t['train_samples']} samples, {t['epochs']} epochs, seed {t['seed']}, "
        f"TensorFlow {t['tensorflow']}, {t['seconds']} s on 2 CPU cores; int8 file "
        f"{entry.model.size_bytes} bytes, sha256 `{entry.model.sha256[:16]}…`."
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    manifest = load_manifest(default_models_dir() / MANIFEST_NAME)
    for entry in manifest.models:
        if not args or entry.name in args:
            print(render(entry) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
