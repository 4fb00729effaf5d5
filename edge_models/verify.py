"""Check a model file before it is used: manifest entry, sha256, signature, smoke inference.

Every model the stage runs — the one it starts with and every later version given to
``swap`` — passes through :func:`load_checked`. A failure raises :class:`CandidateRejected`
with a short stable ``reason`` (manifest, kind, version, sha256, load, signature, smoke).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_models.backend import InferenceModel
from edge_models.boards import BoardProfile
from edge_models.kinds import ModelKind
from edge_models.manifest import (
    MANIFEST_NAME,
    FileRef,
    ManifestError,
    ModelEntry,
    check_file,
    load_manifest,
)

ModelOpener = Callable[[Path, ModelKind, BoardProfile, Mapping[str, Path]], InferenceModel]


class CandidateRejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class LoadedModel:
    entry: ModelEntry
    model: InferenceModel
    path: Path

    @property
    def label(self) -> str:
        return f"{self.entry.name}@{self.entry.version}"


def open_model(
    path: Path, kind: ModelKind, board: BoardProfile, variants: Mapping[str, Path]
) -> InferenceModel:
    """The default opener: ONNX Runtime for .onnx files, LiteRT (with delegates) otherwise."""
    inf = board.inference
    if path.suffix == ".onnx":
        from edge_models.onnx_backend import OnnxModel

        return OnnxModel(
            path, providers=inf.onnx_providers, threads=inf.threads, input_names=kind.input_names
        )
    from edge_models.litert import LiteRTModel

    return LiteRTModel(
        path,
        threads=inf.threads,
        accelerators=inf.accelerators,
        variants=variants,
        input_names=kind.input_names,
    )


def file_for_board(entry: ModelEntry, board: BoardProfile) -> FileRef:
    if board.inference.runtime == "onnx" and entry.onnx is not None:
        return entry.onnx
    return entry.model


def load_checked(
    path: Path,
    kind: ModelKind,
    board: BoardProfile,
    *,
    version: str | None = None,
    opener: ModelOpener = open_model,
) -> LoadedModel:
    path = Path(path)
    folder = path.parent
    try:
        manifest = load_manifest(folder / MANIFEST_NAME)
        entry = manifest.entry_for_file(path.name)
    except ManifestError as exc:
        raise CandidateRejected("manifest", str(exc)) from None
    if entry.name != kind.name:
        raise CandidateRejected("kind", f"{path.name} is a '{entry.name}' model, not '{kind.name}'")
    if version is not None and entry.version != version:
        raise CandidateRejected("version", f"{entry.name}@{entry.version}, pinned {version}")
    ref = entry.ref_for(path.name)
    assert ref is not None  # entry_for_file found it
    for r in (ref, entry.test_vectors):
        if problem := check_file(folder, r):
            raise CandidateRejected("sha256", problem)
    variants = {
        suffix: folder / r.file
        for suffix, r in entry.variants.items()
        if check_file(folder, r) is None  # an unverified variant is simply not offered
    }
    try:
        model = opener(path, kind, board, variants)
    except Exception as exc:  # any failure to open is a rejection, never a crash
        raise CandidateRejected("load", f"{path.name}: {exc}") from None
    _check_signature(model, entry, kind, is_int8_file=ref == entry.model)
    _smoke(model, entry, folder, is_int8_file=ref == entry.model)
    return LoadedModel(entry, model, path)


def _check_signature(
    model: InferenceModel, entry: ModelEntry, kind: ModelKind, is_int8_file: bool
) -> None:
    shapes_in = tuple(s.shape for s in model.inputs)
    shapes_out = tuple(s.shape for s in model.outputs)
    if shapes_in != kind.input_shapes or shapes_out != kind.output_shapes:
        raise CandidateRejected(
            "signature",
            f"shapes in {shapes_in} out {shapes_out}; "
            f"'{kind.name}' needs in {kind.input_shapes} out {kind.output_shapes}",
        )
    if is_int8_file:
        declared = [s.to_spec() for s in entry.inputs], [s.to_spec() for s in entry.outputs]
        actual = list(model.inputs), list(model.outputs)
        if [(s.shape, s.dtype, s.scale, s.zero_point) for s in declared[0] + declared[1]] != [
            (s.shape, s.dtype, s.scale, s.zero_point) for s in actual[0] + actual[1]
        ]:
            raise CandidateRejected("signature", "tensors differ from the manifest's signature")


def _smoke(model: InferenceModel, entry: ModelEntry, folder: Path, is_int8_file: bool) -> None:
    with np.load(folder / entry.test_vectors.file, allow_pickle=False) as vectors:
        inputs = [vectors[f"in{k}"] for k in range(len(model.inputs))]
        expected = vectors["out0"] if is_int8_file else vectors["fout0"]
    atol = entry.test_atol if is_int8_file else entry.float_atol
    try:
        got = np.concatenate(
            [model.run(*[x[i : i + 1] for x in inputs])[0] for i in range(len(expected))]
        )
    except Exception as exc:
        raise CandidateRejected("smoke", f"inference failed on the test vectors: {exc}") from None
    got = got.reshape(expected.shape)
    if not np.all(np.isfinite(got)):
        raise CandidateRejected("smoke", "non-finite outputs on the test vectors")
    worst = float(np.max(np.abs(got - expected)))
    if worst > atol:
        raise CandidateRejected("smoke", f"test-vector outputs off by {worst:.4g} > {atol:.4g}")
    if entry.labels and not np.array_equal(got.argmax(1), expected.argmax(1)):
        raise CandidateRejected("smoke", "test-vector classes differ")
