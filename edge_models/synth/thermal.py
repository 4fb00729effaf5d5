"""Synthetic MLX90640-class thermal frames (24×32 pixels, apparent temperature in °C).

Physics, simplified but with the right orders of magnitude:

* Background: ambient 0–35 °C, a smooth spatial gradient (walls, floor, sky), a few
  low-contrast structures (±3 K), a per-frame offset drift (±1 K, sensor self-heating),
  per-pixel noise σ 0.1–0.5 K (MLX90640 NETD at 1–8 Hz refresh) and a faint row pattern.
* Optics: every source is blurred by a Gaussian point-spread function (σ 0.5–1.0 px), so a
  sub-pixel source raises its neighbours; a dead/hot *pixel* does not (a confuser).
* Warm objects / people: body surface 30–34 °C (clothed people and animals), warm machinery
  35–55 °C; 2–16 px tall, contrast shrinks as the ambient approaches body temperature.
* Hotspots: compact sources (σ 0.6–2 px) whose apparent peak is 60–150 °C (overheating joints,
  motors, transformers).
* Fire: an irregular, vertically elongated cluster of blobs whose apparent peak is 150–300 °C
  (the MLX90640 range ends at 300 °C; growth stage sets its area, 3–80 px) with a warm plume
  (hot gases) above it.
* Confusers labelled background: large sunlit patches 35–65 °C with smooth edges, single bad
  pixels stuck hot.

Labels (priority fire > hotspot > warm > background) describe what a person looking at the
apparent-temperature image would call the scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROWS, COLS = 24, 32
CLASSES = ("background", "warm", "hotspot", "fire")
BACKGROUND, WARM, HOTSPOT, FIRE = range(4)

_YY, _XX = np.mgrid[0:ROWS, 0:COLS].astype(np.float32)


@dataclass(frozen=True, slots=True)
class ThermalSet:
    frames: np.ndarray  # (n, 24, 32) float32, °C
    labels: np.ndarray  # (n,) int64 class index


def _blob(cy: float, cx: float, sy: float, sx: float) -> np.ndarray:
    return np.exp(-0.5 * (((_YY - cy) / sy) ** 2 + ((_XX - cx) / sx) ** 2)).astype(np.float32)


def _background(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    ambient = rng.uniform(0.0, 35.0)
    gy, gx = rng.normal(0.0, 0.08, size=2)
    frame = ambient + gy * (_YY - ROWS / 2) + gx * (_XX - COLS / 2)
    for _ in range(rng.integers(0, 4)):  # doors, windows, furniture: low contrast
        r0, c0 = rng.integers(0, ROWS - 3), rng.integers(0, COLS - 3)
        h, w = rng.integers(3, 12), rng.integers(3, 14)
        frame[r0 : r0 + h, c0 : c0 + w] += rng.uniform(-3.0, 3.0)
    return frame.astype(np.float32), float(ambient)


def _sunlit_patch(rng: np.random.Generator, frame: np.ndarray) -> None:
    """A large, smooth warm area: sunlit asphalt, wall or roof (35–65 °C)."""
    temp = rng.uniform(35.0, 65.0)
    cy, cx = rng.uniform(0, ROWS), rng.uniform(0, COLS)
    sy, sx = rng.uniform(4.0, 10.0), rng.uniform(5.0, 14.0)
    mask = np.clip(1.6 * _blob(cy, cx, sy, sx), 0.0, 1.0)  # flat top, soft edges
    frame += mask * (temp - frame)


def _warm_object(rng: np.random.Generator, frame: np.ndarray, psf: float) -> None:
    person = rng.random() < 0.75
    temp = rng.uniform(30.0, 34.0) if person else rng.uniform(35.0, 55.0)
    height = rng.uniform(2.0, 16.0)
    width = height / rng.uniform(2.0, 3.5) if person else height * rng.uniform(0.5, 1.5)
    cy, cx = rng.uniform(height / 2, ROWS), rng.uniform(0, COLS)
    shape = _blob(cy, cx, max(height / 2.5, psf), max(width / 2.5, psf))
    mask = np.clip(1.8 * shape, 0.0, 1.0)
    frame += mask * (temp - frame)


def _hotspot(rng: np.random.Generator, frame: np.ndarray, psf: float) -> None:
    peak = rng.uniform(60.0, 150.0)
    s = rng.uniform(0.6, 2.0)
    mask = _blob(rng.uniform(0, ROWS), rng.uniform(0, COLS), max(s, psf), max(s, psf))
    frame += mask * (peak - frame)


def _fire(rng: np.random.Generator, frame: np.ndarray, psf: float) -> None:
    stage = rng.uniform(0.0, 1.0)  # growth: area grows with the stage
    peak = rng.uniform(150.0, 300.0)
    base_y, base_x = rng.uniform(ROWS * 0.4, ROWS), rng.uniform(2, COLS - 2)
    size = 1.0 + 4.0 * stage
    flame = np.zeros((ROWS, COLS), np.float32)
    for _ in range(rng.integers(3, 8)):  # flickering tongues, taller than wide
        cy = base_y - abs(rng.normal(0, size))
        cx = base_x + rng.normal(0, size * 0.6)
        flame = np.maximum(
            flame,
            rng.uniform(0.6, 1.0)
            * _blob(cy, cx, max(size * rng.uniform(0.4, 1.0), psf), max(size * 0.4, psf)),
        )
    flame /= flame.max()
    plume = _blob(base_y - 3 * size, base_x, 2.0 + 2 * size, 1.5 + size)  # hot gases above
    frame += plume * rng.uniform(10.0, 50.0)
    frame += flame * (peak - frame)


def render(rng: np.random.Generator, label: int) -> np.ndarray:
    """One frame of class ``label`` (°C, float32)."""
    frame, _ = _background(rng)
    psf = rng.uniform(0.5, 1.0)
    if rng.random() < 0.3:
        _sunlit_patch(rng, frame)
    if label == WARM or (label > WARM and rng.random() < 0.4):
        for _ in range(rng.integers(1, 4)):
            _warm_object(rng, frame, psf)
    if label == HOTSPOT or (label == FIRE and rng.random() < 0.2):
        for _ in range(rng.integers(1, 3)):
            _hotspot(rng, frame, psf)
    if label == FIRE:
        _fire(rng, frame, psf)
    if label != FIRE and rng.random() < 0.02:  # an unflagged stuck pixel: the optics do not blur it
        frame[rng.integers(0, ROWS), rng.integers(0, COLS)] = rng.uniform(60.0, 300.0)
    frame += rng.uniform(-1.0, 1.0)  # offset drift
    frame += rng.normal(0.0, 0.05) * (np.arange(ROWS, dtype=np.float32)[:, None] % 2)
    frame += rng.normal(0.0, rng.uniform(0.1, 0.5), size=frame.shape).astype(np.float32)
    return np.clip(frame, -40.0, 300.0).astype(np.float32)  # the sensor's range


def generate(
    n: int, seed: int, weights: tuple[float, ...] = (0.25, 0.25, 0.25, 0.25)
) -> ThermalSet:
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(CLASSES), size=n, p=np.asarray(weights) / sum(weights))
    frames = np.stack([render(rng, int(lbl)) for lbl in labels]) if n else np.zeros((0, ROWS, COLS))
    return ThermalSet(frames.astype(np.float32), labels.astype(np.int64))
