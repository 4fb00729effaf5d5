"""Synthetic lift-car accelerometer windows: jerk-limited rides, vibration modes, faults.

A window is 128 samples at 50 Hz (2.56 s) of car acceleration (x, y horizontal, z vertical,
m/s², gravity included on z as a MEMS sensor measures it) and car speed (m/s, signed).

Normal rides: an S-curve (jerk-limited) profile — rated speed 1.0–2.5 m/s, acceleration
0.5–1.0 m/s², jerk 0.8–1.6 m/s³ — over 1–12 floors of 3–4 m, or a car at rest (doors moving).
Vibration while moving: car sway modes (1–3 Hz), guide-roller rotation (v / πD, D 0.1–0.15 m),
rail-joint bumps every 5 m, motor/rope harmonics (10–25 Hz); healthy peak-to-peak stays below
the ride-comfort limits (~0.3 m/s² vertical, ~0.2 m/s² horizontal). Door operation at rest gives
short horizontal bumps. MEMS noise 0.005–0.02 m/s² RMS, mounting tilt leaks ±0.3 m/s² of gravity
into x/y.

Faults:
* abnormal vibration: a flat/worn guide roller (periodic impacts 0.2–1.5 m/s² at the roller
  frequency), a misaligned rail (sway 0.15–0.8 m/s² amplitude), or a gearbox/motor fault
  (vertical 10–25 Hz, 0.1–0.8 m/s²) — only while moving;
* sudden stop / shock: an emergency brake or safety-gear stop (deceleration 2–10 m/s² with an
  abrupt onset and 8–20 Hz ringing; speed falls to zero in v/a seconds) or a shock impulse
  (2–10 m/s², 20–100 ms, e.g. a car hit by a falling object or a buffer strike).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE_HZ = 50.0
N_SAMPLES = 128
CLASSES = ("normal", "vibration", "shock")
NORMAL, VIBRATION, SHOCK = range(3)
G = 9.81


@dataclass(frozen=True, slots=True)
class ElevatorSet:
    windows: np.ndarray  # (n, 128, 4) float32: acc_x, acc_y, acc_z (m/s²), speed (m/s)
    labels: np.ndarray  # (n,) int64


def s_curve(distance: float, v_max: float, a_max: float, j_max: float, dt: float) -> np.ndarray:
    """Acceleration samples of a jerk-limited point-to-point move (symmetric S-curve)."""
    # Reduce the peak speed/acceleration until the profile fits in the distance.
    for _ in range(60):
        a = min(a_max, np.sqrt(v_max * j_max))
        t_j = a / j_max
        t_a = max(v_max / a - t_j, 0.0)  # constant-acceleration phase
        d_acc = v_max * (t_a + 2 * t_j) / 2  # distance to reach v_max (and to stop)
        if 2 * d_acc <= distance:
            break
        v_max *= 0.9
    t_c = (distance - 2 * d_acc) / v_max
    phase = [(t_j, "up"), (t_a, "flat"), (t_j, "down"), (t_c, "cruise")]
    acc: list[float] = []
    a_now = 0.0
    for sign in (1.0, -1.0):
        seq = phase if sign > 0 else [(t_j, "up"), (t_a, "flat"), (t_j, "down")]
        for dur, kind in seq:
            for _ in range(round(dur / dt)):
                if kind == "up":
                    a_now += sign * j_max * dt
                elif kind == "down":
                    a_now -= sign * j_max * dt
                elif kind == "cruise":
                    a_now = 0.0
                acc.append(a_now)
    return np.asarray(acc, dtype=np.float64)


def _ride(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Vertical acceleration and speed for a ride padded with rest, at RATE_HZ."""
    dt = 1.0 / RATE_HZ
    floors = rng.integers(1, 13)
    acc = s_curve(
        floors * rng.uniform(3.0, 4.0),
        rng.uniform(1.0, 2.5),
        rng.uniform(0.5, 1.0),
        rng.uniform(0.8, 1.6),
        dt,
    )
    rest = np.zeros(int(rng.uniform(0.5, 3.0) * RATE_HZ))
    acc = np.concatenate([rest, acc, rest])
    speed = np.cumsum(acc) * dt
    direction = rng.choice([-1.0, 1.0])
    return acc * direction, speed * direction


def _window(rng: np.random.Generator, label: int) -> np.ndarray:
    dt = 1.0 / RATE_HZ
    at_rest = label == NORMAL and rng.random() < 0.2
    if at_rest:
        a_z = np.zeros(N_SAMPLES * 2)
        v = np.zeros(N_SAMPLES * 2)
    else:
        a_z, v = _ride(rng)
        if len(a_z) < N_SAMPLES * 2:
            pad = N_SAMPLES * 2 - len(a_z)
            a_z, v = np.pad(a_z, (0, pad)), np.pad(v, (0, pad))
    n = len(a_z)
    t = np.arange(n) * dt
    speed_abs = np.abs(v)
    moving = speed_abs > 0.05
    ax = np.zeros(n)
    ay = np.zeros(n)
    az = a_z.copy()
    # Healthy vibration while moving (amplitudes scale with speed).
    for arr, amp in ((ax, 0.04), (ay, 0.04), (az, 0.05)):
        f = rng.uniform(1.0, 3.0)
        arr += rng.uniform(0.3, 1.0) * amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
        arr *= 0.3 + 0.7 * np.minimum(speed_abs / 1.5, 1.0)
    roller_d = rng.uniform(0.1, 0.15)
    roller_phase = np.cumsum(speed_abs) * dt / (np.pi * roller_d) * 2 * np.pi
    ax += 0.015 * np.sin(roller_phase) * moving
    ay += 0.015 * np.sin(roller_phase + 1.0) * moving
    az += rng.uniform(0.005, 0.03) * np.sin(2 * np.pi * rng.uniform(10, 25) * t) * moving
    travel = np.cumsum(speed_abs) * dt
    joints = np.flatnonzero(np.diff(np.floor(travel / 5.0)) > 0)  # rail joints every 5 m
    for j in joints:
        k = np.arange(j, min(j + 15, n))
        ring = np.exp(-(k - j) * dt * 25) * np.sin(2 * np.pi * 12 * (k - j) * dt)
        ax[k] += rng.uniform(0.02, 0.06) * ring
    if at_rest and rng.random() < 0.7:  # doors opening/closing: short horizontal bumps
        j = rng.integers(0, n - 25)
        k = np.arange(j, j + 25)
        ay[k] += (
            rng.uniform(0.05, 0.2)
            * np.exp(-(k - j) * dt * 15)
            * np.sin(2 * np.pi * 6 * (k - j) * dt)
        )

    if label == VIBRATION:
        fault = rng.integers(0, 3)
        if fault == 0:  # flat guide roller: impacts once per roller revolution
            hits = np.flatnonzero(np.diff(np.floor(roller_phase / (2 * np.pi))) > 0)
            amp = rng.uniform(0.2, 1.5)
            for j in hits:
                k = np.arange(j, min(j + 10, n))
                ring = np.exp(-(k - j) * dt * 40) * np.sin(2 * np.pi * 15 * (k - j) * dt)
                (ax if rng.random() < 0.5 else ay)[k] += amp * ring * moving[j]
        elif fault == 1:  # misaligned rail: strong low-frequency sway
            f = rng.uniform(1.0, 4.0)
            ax += rng.uniform(0.15, 0.8) * np.sin(2 * np.pi * f * t) * moving
            ay += rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * f * t + 1.3) * moving
        else:  # motor / gearbox
            f = rng.uniform(10.0, 25.0)
            az += rng.uniform(0.1, 0.8) * np.sin(2 * np.pi * f * t) * moving

    # Choose where the window sits; a shock is placed inside it.
    lo = 0 if at_rest else max(0, int(np.argmax(moving)) - N_SAMPLES // 2)
    hi = max(lo + 1, n - N_SAMPLES)
    start = int(rng.integers(lo, hi))
    sl = slice(start, start + N_SAMPLES)
    ax, ay, az, v = ax[sl].copy(), ay[sl].copy(), az[sl].copy(), v[sl].copy()

    if label == SHOCK:
        j = int(rng.integers(8, N_SAMPLES - 20))
        k = np.arange(j, N_SAMPLES)
        ring_f = rng.uniform(8.0, 20.0)
        ring = np.exp(-(k - j) * dt * rng.uniform(8, 20)) * np.sin(
            2 * np.pi * ring_f * (k - j) * dt
        )
        if rng.random() < 0.6 and abs(v[j]) > 0.3:  # emergency / safety-gear stop
            decel = rng.uniform(2.0, 10.0)
            v0 = v[j]
            stop_n = max(1, int(abs(v0) / decel * RATE_HZ))
            brake = np.zeros(len(k))
            brake[:stop_n] = -np.sign(v0) * decel
            az[k] = brake + decel * 0.5 * ring
            v[k] = np.clip(np.abs(v0) - decel * (k - j + 1) * dt, 0.0, None) * np.sign(v0)
            ax[k] += rng.uniform(0.2, 1.0) * decel * 0.2 * ring
        else:  # impact
            amp = rng.uniform(2.0, 10.0)
            width = int(rng.uniform(1, 5))
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            pulse = np.zeros(len(k))
            pulse[:width] = amp
            pulse += amp * 0.5 * ring
            ax[k] += direction[0] * pulse
            ay[k] += direction[1] * pulse
            az[k] += direction[2] * pulse

    tilt = rng.normal(0.0, 0.15, size=2)
    noise = rng.uniform(0.005, 0.02)
    out = np.stack(
        [
            ax + tilt[0] * G + rng.normal(0, noise, N_SAMPLES),
            ay + tilt[1] * G + rng.normal(0, noise, N_SAMPLES),
            az + G + rng.normal(0, noise, N_SAMPLES),
            v + rng.normal(0, 0.005, N_SAMPLES),
        ],
        axis=1,
    )
    return out.astype(np.float32)


def generate(n: int, seed: int, weights: tuple[float, ...] = (0.5, 0.25, 0.25)) -> ElevatorSet:
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(CLASSES), size=n, p=np.asarray(weights) / sum(weights))
    windows = [_window(rng, int(lbl)) for lbl in labels]
    arr = np.stack(windows) if windows else np.zeros((0, N_SAMPLES, 4), np.float32)
    return ElevatorSet(arr.astype(np.float32), labels.astype(np.int64))
