"""Open a LiteRT interpreter on the best accelerator the board offers, else on the CPU.

The board profile lists delegates in order of preference. Each is tried up to the point where
LiteRT accepts it — ``load_delegate`` must find the shared library and the interpreter must
allocate its tensors with the delegate applied; the first that works wins. Whatever fails is
kept in ``attempts`` (and logged), and the CPU is the last resort: XNNPACK (LiteRT's default
delegate for float and int8 kernels), then the plain reference kernels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_models.boards import AcceleratorSpec

log = logging.getLogger(__name__)

CPU_XNNPACK = "cpu-xnnpack"
CPU_REFERENCE = "cpu-reference"


@dataclass(frozen=True, slots=True)
class Attempt:
    backend: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class LiteRTApi:
    """The parts of ai_edge_litert (or tflite_runtime) we use; injected so tests can fake them."""

    interpreter: Callable[..., Any]
    load_delegate: Callable[..., Any]
    op_resolver: Any  # the OpResolverType enum

    @classmethod
    def default(cls) -> LiteRTApi:
        try:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType, load_delegate
        except ImportError:  # older images ship only tflite_runtime
            from tflite_runtime.interpreter import (  # type: ignore[no-redef]
                Interpreter,
                OpResolverType,
                load_delegate,
            )
        return cls(Interpreter, load_delegate, OpResolverType)


@dataclass(slots=True)
class OpenedInterpreter:
    interpreter: Any
    backend: str
    model_path: Path
    attempts: tuple[Attempt, ...]


def open_interpreter(
    model_path: Path,
    accelerators: Sequence[AcceleratorSpec],
    threads: int,
    api: LiteRTApi,
    variants: Mapping[str, Path] | None = None,
    batch: int = 1,
) -> OpenedInterpreter:
    """Try each accelerator, then XNNPACK, then reference kernels; never raises for a delegate.

    ``variants`` maps a model suffix ("_edgetpu") to a verified variant file. Raises only when
    even the CPU cannot run the model (a broken file), as a ``RuntimeError``.
    """
    attempts: list[Attempt] = []
    for accel in accelerators:
        path = model_path
        if accel.model_suffix:
            variant = (variants or {}).get(accel.model_suffix)
            if variant is None:
                attempts.append(
                    Attempt(accel.kind, False, f"no '{accel.model_suffix}' model variant listed")
                )
                continue
            path = variant
        try:
            delegate = api.load_delegate(accel.library, dict(accel.options))
        except (ValueError, OSError, RuntimeError) as exc:
            attempts.append(Attempt(accel.kind, False, f"{accel.library}: {_one_line(exc)}"))
            continue
        try:
            interp = api.interpreter(
                model_path=str(path), experimental_delegates=[delegate], num_threads=threads
            )
            _prepare(interp, batch)
        except (ValueError, RuntimeError) as exc:
            attempts.append(Attempt(accel.kind, False, f"rejected the model: {_one_line(exc)}"))
            continue
        attempts.append(Attempt(accel.kind, True, str(accel.library)))
        return _done(interp, accel.kind, path, attempts)

    cpu_kinds = (
        (CPU_XNNPACK, api.op_resolver.AUTO),
        (CPU_REFERENCE, api.op_resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
    )
    for backend, resolver in cpu_kinds:
        try:
            interp = api.interpreter(
                model_path=str(model_path),
                num_threads=threads,
                experimental_op_resolver_type=resolver,
            )
            _prepare(interp, batch)
        except (ValueError, RuntimeError) as exc:
            attempts.append(Attempt(backend, False, _one_line(exc)))
            continue
        attempts.append(Attempt(backend, True))
        return _done(interp, backend, model_path, attempts)
    raise RuntimeError(
        f"{model_path.name}: no backend can run it: "
        + "; ".join(f"{a.backend}: {a.detail}" for a in attempts)
    )


def _prepare(interp: Any, batch: int) -> None:
    if batch != 1:
        for detail in interp.get_input_details():
            shape = list(detail["shape"])
            shape[0] = batch
            interp.resize_tensor_input(detail["index"], shape, strict=True)
    interp.allocate_tensors()


def _done(interp: Any, backend: str, path: Path, attempts: list[Attempt]) -> OpenedInterpreter:
    failed = [a for a in attempts if not a.ok]
    if failed:
        log.warning(
            "%s: running on %s; unavailable: %s",
            path.name,
            backend,
            "; ".join(f"{a.backend} ({a.detail})" for a in failed),
        )
    else:
        log.info("%s: running on %s", path.name, backend)
    return OpenedInterpreter(interp, backend, path, tuple(attempts))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__
