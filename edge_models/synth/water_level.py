"""Synthetic urban-channel water level driven by rain: a rainfall-runoff simulation.

Per station (random parameters, so the model must read the catchment from the history):

* Rain: storm arrivals are Poisson (mean gap 0.5–3 days); a storm lasts 15 min–6 h with a
  triangular hyetograph (peak 5–90 mm/h) and multiplicative gamma noise per 5-min step; the
  tipping-bucket gauge quantises to 0.2 mm per step (2.4 mm/h).
* Losses: an initial abstraction (2–10 mm) that recovers between storms, then a runoff
  coefficient 0.3–0.9 (urban surfaces).
* Routing: a Nash cascade of two linear reservoirs, storage constant k 10–90 min each
  (unit-hydrograph peak at ~k, recession e^(−t/k)).
* Stage: a power-law rating curve h = h0 + c·Q^0.6, Q from effective rain × catchment area;
  baseflow with a diurnal cycle (±2 cm); occasional unforecastable upstream pump releases
  (a step of 5–30 cm lasting 0.5–3 h, no rain) as an honest confuser.
* Sensor: level noise σ 3–10 mm (radar or pressure probe).

Windows: 36 steps (3 h) of level and rain at 5-min steps → the level 6 steps (30 min) later.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP_S = 300.0
HISTORY = 36
HORIZON = 6


@dataclass(frozen=True, slots=True)
class WaterSet:
    level: np.ndarray  # (n, 36) float32, m
    rain: np.ndarray  # (n, 36) float32, mm/h
    target: np.ndarray  # (n,) float32, level (m) HORIZON steps after the last sample
    truth_now: np.ndarray  # (n,) float32, noise-free level at the last sample (for analysis)


def simulate(rng: np.random.Generator, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One station: (measured level m, gauge rain mm/h, true level m) at 5-min steps."""
    dt_h = STEP_S / 3600.0
    rain = np.zeros(steps)
    mean_gap = rng.uniform(0.5, 3.0) * 288  # steps
    i = int(rng.exponential(mean_gap / 3))
    while i < steps:
        dur = int(rng.uniform(3, 72))
        peak = rng.uniform(5.0, 90.0)
        tri = 1.0 - np.abs(np.linspace(-1, 1, dur)) * rng.uniform(0.6, 1.0)
        shape = np.roll(tri, int(rng.integers(-dur // 3, dur // 3 + 1)))
        noise = rng.gamma(4.0, 0.25, size=dur)
        seg = peak * shape * noise
        rain[i : i + dur] += seg[: max(0, min(dur, steps - i))]
        i += dur + int(rng.exponential(mean_gap))
    gauge = np.floor(rain * dt_h / 0.2) * 0.2 / dt_h  # tipping bucket 0.2 mm

    ia_max = rng.uniform(2.0, 10.0)
    coeff = rng.uniform(0.3, 0.9)
    k = rng.uniform(10.0, 90.0) / 5.0  # in steps
    area_km2 = rng.uniform(0.5, 5.0)
    rating_c = rng.uniform(0.15, 0.35)
    h0 = rng.uniform(0.2, 1.0)
    ia = ia_max
    s1 = s2 = 0.0
    q = np.zeros(steps)
    for t in range(steps):
        depth = rain[t] * dt_h  # mm this step
        take = min(ia, depth)
        ia = min(ia_max, ia - take + 0.02)  # abstraction recovers ~6 mm/day
        eff = (depth - take) * coeff
        inflow = eff / 1000.0 * area_km2 * 1e6 / STEP_S  # m³/s
        s1 += inflow - s1 / k
        s2 += s1 / k - s2 / k
        q[t] = s2 / k
    tday = np.arange(steps) * STEP_S / 86400.0
    base = 0.3 + 0.1 * np.sin(2 * np.pi * (tday - rng.uniform(0, 1)))  # m³/s, diurnal
    release = np.zeros(steps)
    for _ in range(rng.poisson(steps / 288 / 10)):  # ~one pump release per 10 days
        j = int(rng.integers(0, steps))
        release[j : j + int(rng.uniform(6, 36))] += rng.uniform(0.5, 3.0)
    true_level = h0 + rating_c * (q + base + release) ** 0.6
    measured = true_level + rng.normal(0.0, rng.uniform(0.003, 0.01), steps)
    return measured.astype(np.float32), gauge.astype(np.float32), true_level.astype(np.float32)


def generate(n: int, seed: int, stations: int = 8, days: float = 30.0) -> WaterSet:
    """``n`` windows drawn from ``stations`` simulated stations, half of them from wet periods."""
    rng = np.random.default_rng(seed)
    steps = int(days * 288)
    sims = [simulate(rng, steps) for _ in range(stations)]
    lv, rn, tg, tn = [], [], [], []
    for i in range(n):
        level, rain, truth = sims[i % stations]
        valid = np.arange(HISTORY - 1, steps - HORIZON)
        if i % 2:  # oversample windows with rain in the history or the level moving
            recent = np.convolve(rain, np.ones(HISTORY), "full")[:steps][valid]
            change = np.abs(truth[valid + HORIZON] - truth[valid])
            wet = valid[(recent > 0) | (change > 0.02)]
            valid = wet if len(wet) else valid
        end = int(rng.choice(valid))
        lv.append(level[end - HISTORY + 1 : end + 1])
        rn.append(rain[end - HISTORY + 1 : end + 1])
        tg.append(level[end + HORIZON])
        tn.append(truth[end])
    return WaterSet(
        np.asarray(lv, np.float32).reshape(n, HISTORY),
        np.asarray(rn, np.float32).reshape(n, HISTORY),
        np.asarray(tg, np.float32),
        np.asarray(tn, np.float32),
    )
