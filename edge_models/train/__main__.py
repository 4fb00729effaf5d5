"""``python -m edge_models.train {all,thermal,elevator,water_level} [--out DIR] [--seed N]``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _fixed_hash_seed() -> None:
    """tf2onnx names nodes in set-iteration order: pin the hash seed so .onnx files are
    byte-identical between runs (the .tflite files are reproducible either way)."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "edge_models.train", *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        _fixed_hash_seed()
    from edge_models.manifest import default_models_dir, write_manifest
    from edge_models.train.pipeline import RECIPES, train_one

    parser = argparse.ArgumentParser(prog="python -m edge_models.train")
    parser.add_argument("model", choices=["all", *RECIPES])
    parser.add_argument("--out", type=Path, default=default_models_dir())
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="fraction of the data set sizes (quick runs)"
    )
    args = parser.parse_args(argv)
    names = list(RECIPES) if args.model == "all" else [args.model]
    for name in names:
        meta = train_one(name, args.out, seed=args.seed, scale=args.scale)
        print(json.dumps({"model": name, **meta["metrics"]["int8_vs_float"]}), flush=True)
    print(write_manifest(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
