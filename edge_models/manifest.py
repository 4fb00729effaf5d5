"""The model manifest (edge_models/models/manifest.json) and its generator.

The manifest is the only thing that says which bytes are a model: name, version, sha256 and
size of every file (int8 .tflite, float32 .tflite, .onnx, accelerator variants, test vectors),
the input/output signature read from the int8 file itself, class labels and held-out metrics.
It is generated, never hand-edited: ``python -m edge_models.manifest build edge_models/models``
reads each ``<name>.meta.json`` written by training and introspects the model files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_models.backend import TensorSpec

MANIFEST_NAME = "manifest.json"
FORMAT = 1
_SHA_PATTERN = r"^[0-9a-f]{64}$"


class ManifestError(Exception):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileRef(_Strict):
    file: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")  # a name inside the manifest's folder
    sha256: str = Field(pattern=_SHA_PATTERN)
    size_bytes: int = Field(ge=0)


class TensorSig(_Strict):
    name: str
    shape: list[int]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    def to_spec(self) -> TensorSpec:
        return TensorSpec(self.name, tuple(self.shape), self.dtype, self.scale, self.zero_point)

    @classmethod
    def from_spec(cls, spec: TensorSpec) -> TensorSig:
        return cls(
            name=spec.name,
            shape=list(spec.shape),
            dtype=spec.dtype,
            scale=spec.scale,
            zero_point=spec.zero_point,
        )


class ModelEntry(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")  # the model kind
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    description: str = ""
    model: FileRef  # full-integer int8 .tflite
    float_model: FileRef | None = None  # float32 .tflite (benchmarks, int8-vs-float checks)
    onnx: FileRef | None = None  # float32 ONNX (GPU boards)
    variants: dict[str, FileRef] = {}  # model suffix ("_edgetpu") → compiled file
    inputs: list[TensorSig]
    outputs: list[TensorSig]
    labels: list[str] = []
    test_vectors: FileRef
    test_atol: float = Field(gt=0)  # int8 output tolerance (LSBs differ between kernels)
    float_atol: float = Field(0.02, gt=0)  # float backends against the float reference
    metrics: dict[str, Any] = {}
    trained: dict[str, Any] = {}

    def files(self) -> list[FileRef]:
        refs = [self.model, self.test_vectors, *self.variants.values()]
        refs += [r for r in (self.float_model, self.onnx) if r is not None]
        return refs

    def ref_for(self, filename: str) -> FileRef | None:
        return next((r for r in self.files() if r.file == filename), None)


class Manifest(_Strict):
    format: Literal[1] = FORMAT
    generated_by: str = "python -m edge_models.manifest build"
    models: list[ModelEntry]

    def entry(self, name: str) -> ModelEntry:
        for e in self.models:
            if e.name == name:
                return e
        raise ManifestError(f"no model '{name}' in the manifest")

    def entry_for_file(self, filename: str) -> ModelEntry:
        for e in self.models:
            if e.ref_for(filename) is not None:
                return e
        raise ManifestError(f"'{filename}' is not listed in the manifest")


def sha256_file(path: Path, chunk: int = 1 << 16) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_ref(path: Path) -> FileRef:
    return FileRef(file=path.name, sha256=sha256_file(path), size_bytes=path.stat().st_size)


def check_file(directory: Path, ref: FileRef) -> str | None:
    """None when the file exists with the listed size and sha256, else the problem."""
    path = directory / ref.file
    if not path.is_file():
        return f"{ref.file}: missing"
    if path.stat().st_size != ref.size_bytes:
        return f"{ref.file}: size {path.stat().st_size} != {ref.size_bytes} listed"
    actual = sha256_file(path)
    if actual != ref.sha256:
        return f"{ref.file}: sha256 {actual[:12]}… != {ref.sha256[:12]}… listed"
    return None


def load_manifest(path: Path) -> Manifest:
    try:
        return Manifest.model_validate_json(Path(path).read_bytes())
    except FileNotFoundError:
        raise ManifestError(f"{path}: not found") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"{path}: {where}: {first['msg']}") from None


def introspect(path: Path, input_names: tuple[str, ...]) -> tuple[list[TensorSig], list[TensorSig]]:
    """The input/output signature read from a .tflite file (reference CPU kernels)."""
    from edge_models.litert import LiteRTModel

    model = LiteRTModel(path, input_names=input_names)
    return (
        [TensorSig.from_spec(s) for s in model.inputs],
        [TensorSig.from_spec(s) for s in model.outputs],
    )


def entry_from_meta(meta_path: Path) -> ModelEntry:
    """One entry from ``<name>.meta.json`` (written by training) and the files beside it."""
    from edge_models.kinds import kind_for

    folder = meta_path.parent
    meta = json.loads(meta_path.read_text())
    kind = kind_for(meta["name"])
    model_path = folder / meta["model"]
    inputs, outputs = introspect(model_path, kind.input_names)

    def optional(key: str) -> FileRef | None:
        name = meta.get(key)
        return file_ref(folder / name) if name and (folder / name).is_file() else None

    variants = {
        suffix: file_ref(folder / name)
        for suffix, name in meta.get("variants", {}).items()
        if (folder / name).is_file()
    }
    return ModelEntry(
        name=meta["name"],
        version=meta["version"],
        description=meta.get("description", ""),
        model=file_ref(model_path),
        float_model=optional("float_model"),
        onnx=optional("onnx"),
        variants=variants,
        inputs=inputs,
        outputs=outputs,
        labels=list(kind.labels),
        test_vectors=file_ref(folder / meta["test_vectors"]),
        test_atol=meta["test_atol"],
        float_atol=meta.get("float_atol", 0.02),
        metrics=meta.get("metrics", {}),
        trained=meta.get("trained", {}),
    )


def build_manifest(folder: Path) -> Manifest:
    metas = sorted(Path(folder).glob("*.meta.json"))
    if not metas:
        raise ManifestError(f"{folder}: no *.meta.json (run `python -m edge_models.train all`)")
    return Manifest(models=[entry_from_meta(m) for m in metas])


def write_manifest(folder: Path) -> Path:
    manifest = build_manifest(folder)
    path = Path(folder) / MANIFEST_NAME
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def verify_folder(folder: Path) -> list[str]:
    manifest = load_manifest(Path(folder) / MANIFEST_NAME)
    return [
        f"{e.name}: {problem}"
        for e in manifest.models
        for ref in e.files()
        if (problem := check_file(Path(folder), ref))
    ]


def default_models_dir() -> Path:
    return Path(__file__).resolve().parent / "models"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_models.manifest")
    parser.add_argument("command", choices=["build", "verify"])
    parser.add_argument("folder", nargs="?", type=Path, default=default_models_dir())
    args = parser.parse_args(argv)
    if args.command == "build":
        print(write_manifest(args.folder))
        return 0
    problems = verify_folder(args.folder)
    for p in problems:
        print(p, file=sys.stderr)
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
