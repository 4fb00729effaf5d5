"""Gateway board profiles (hardware/boards/*.yaml): which inference runtime and accelerator.

A profile says what the board *may* offer; the runtime still tries it and falls back to the
CPU when the delegate library or the execution provider is missing (see delegates.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from provisioning.configfile import ConfigError, ConfigProblem, load_yaml_model

__all__ = ["AcceleratorSpec", "BoardProfile", "InferenceSettings", "OnnxProvider", "load_board"]

AcceleratorKind = Literal["gpu", "vx", "edgetpu", "external"]

# The library each kind of LiteRT delegate usually ships as (override with `library:`).
DEFAULT_LIBRARIES: dict[str, str] = {
    "gpu": "libtensorflowlite_gpu_delegate.so",
    "vx": "libvx_delegate.so",  # NXP eIQ / TIM-VX (i.MX 8M Plus NPU)
    "edgetpu": "libedgetpu.so.1",  # Coral Edge TPU runtime
}
ONNX_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "OpenVINOExecutionProvider",
    "CPUExecutionProvider",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AcceleratorSpec(_Strict):
    """One LiteRT delegate to try, in the order listed; the CPU is always the last resort."""

    kind: AcceleratorKind
    library: str | None = Field(None, description="shared library passed to load_delegate")
    options: dict[str, str | int | float | bool] = {}
    model_suffix: str | None = Field(
        None, description="load '<name><suffix>.tflite' instead (Edge TPU compiled models)"
    )

    @model_validator(mode="after")
    def _defaults(self) -> AcceleratorSpec:
        if self.library is None:
            if self.kind == "external":
                raise ValueError("an 'external' delegate needs 'library'")
            object.__setattr__(self, "library", DEFAULT_LIBRARIES[self.kind])
        if self.model_suffix is None and self.kind == "edgetpu":
            object.__setattr__(self, "model_suffix", "_edgetpu")
        return self

    @property
    def label(self) -> str:
        return f"{self.kind} ({self.library})"


class OnnxProvider(_Strict):
    name: Literal[
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "OpenVINOExecutionProvider",
        "CPUExecutionProvider",
    ]
    options: dict[str, str | int | float | bool] = {}


class InferenceSettings(_Strict):
    runtime: Literal["litert", "onnx"] = "litert"
    threads: int = Field(1, ge=1, le=64, description="inference threads per model")
    accelerators: list[AcceleratorSpec] = []
    onnx_providers: list[OnnxProvider] = []
    budget_ms: float = Field(50.0, gt=0, le=10_000, description="per-inference time budget")


class BoardProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,62}$")
    description: str = ""
    arch: Literal["aarch64", "armv7l", "x86_64"]
    cpu: str = ""
    cpu_cores: int = Field(ge=1, le=256)
    memory_mb: int = Field(ge=64)
    inference: InferenceSettings = InferenceSettings()

    @model_validator(mode="wrap")
    @classmethod
    def _consistent(cls, data: Any, handler: ModelWrapValidatorHandler[BoardProfile]) -> Any:
        board = handler(data)
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        inf = board.inference
        if inf.threads > board.cpu_cores:
            problems.append(
                (
                    ("inference", "threads"),
                    f"{inf.threads} threads on a {board.cpu_cores}-core board",
                    inf.threads,
                )
            )
        if inf.runtime == "onnx" and inf.accelerators:
            problems.append(
                (("inference", "accelerators"), "LiteRT delegates need runtime: litert", None)
            )
        if inf.runtime == "litert" and inf.onnx_providers:
            problems.append(
                (("inference", "onnx_providers"), "execution providers need runtime: onnx", None)
            )
        if problems:
            raise ValidationError.from_exception_data(
                cls.__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("board_error", msg), loc=loc, input=value
                    )
                    for loc, msg, value in problems
                ],
            )
        return board


def boards_dir() -> Path:
    """The repository's hardware/boards/ folder."""
    return Path(__file__).resolve().parents[1] / "hardware" / "boards"


def load_board(name_or_path: str | Path) -> BoardProfile:
    """A board profile by path, or by name from hardware/boards/{name}.yaml (ConfigError)."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or "/" in text:
        return load_yaml_model(name_or_path, BoardProfile)
    path = boards_dir() / f"{text}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in boards_dir().glob("*.yaml"))) or "none"
        raise ConfigError(text, [ConfigProblem(None, None, "", f"unknown board; known: {names}")])
    return load_yaml_model(path, BoardProfile)
