"""The shipped models and their manifest: hashes, sizes, signatures, and the generator."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_models.kinds import KINDS
from edge_models.manifest import (
    MANIFEST_NAME,
    build_manifest,
    check_file,
    default_models_dir,
    load_manifest,
    verify_folder,
)

pytest.importorskip("ai_edge_litert")

MODELS = default_models_dir()
MAX_BYTES = 100 * 1024


def test_every_kind_ships_a_small_int8_model_listed_in_the_manifest():
    manifest = load_manifest(MODELS / MANIFEST_NAME)
    assert sorted(e.name for e in manifest.models) == sorted(KINDS)
    for entry in manifest.models:
        assert entry.model.size_bytes <= MAX_BYTES, entry.model
        assert all(s.dtype == "int8" for s in entry.inputs + entry.outputs)
        assert tuple(tuple(s.shape) for s in entry.inputs) == KINDS[entry.name].input_shapes
        assert entry.onnx is not None and entry.float_model is not None
        assert entry.metrics["int8"]["n"] > 0


def test_manifest_matches_the_files():
    assert verify_folder(MODELS) == []


def test_generator_reproduces_the_committed_manifest():
    committed = json.loads((MODELS / MANIFEST_NAME).read_text())
    assert build_manifest(MODELS).model_dump(mode="json") == committed


def test_a_changed_byte_is_caught(tmp_path: Path):
    folder = tmp_path / "models"
    shutil.copytree(MODELS, folder)
    entry = load_manifest(folder / MANIFEST_NAME).entry("thermal")
    path = folder / entry.model.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    problem = check_file(folder, entry.model)
    assert problem is not None and "sha256" in problem
    assert any("thermal.tflite" in p for p in verify_folder(folder))


def test_a_missing_or_truncated_file_is_caught(tmp_path: Path):
    folder = tmp_path / "models"
    shutil.copytree(MODELS, folder)
    entry = load_manifest(folder / MANIFEST_NAME).entry("elevator")
    (folder / entry.test_vectors.file).unlink()
    (folder / entry.model.file).write_bytes(b"short")
    problems = verify_folder(folder)
    assert any("missing" in p for p in problems)
    assert any("size" in p for p in problems)
