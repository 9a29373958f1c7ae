"""Pure functions of the combine stage: standardised rewards, the dials, weight interpolation, and the
Pareto front and hypervolume of a set of (helpful accuracy, harmless accuracy) points."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch


def standardiser(reference: np.ndarray) -> tuple[float, float]:
    """(mean, SD) of a judge's rewards on reference replies (`combine`: the chosen and rejected replies
    of the mixed RM's training pairs), so that z(r) = (r - mean) / SD puts every judge on one scale."""
    reference = np.asarray(reference, dtype=np.float64)
    sd = float(reference.std())
    if not np.isfinite(sd) or sd == 0:
        raise ValueError("standardiser: the reference rewards have no spread")
    return float(reference.mean()), sd


def standardise(r: np.ndarray, stats: tuple[float, float]) -> np.ndarray:
    """z(r) = (r - mean) / SD with `stats` from `standardiser`; any shape."""
    return (np.asarray(r, dtype=np.float64) - stats[0]) / stats[1]


def dial(z_helpful: np.ndarray, z_harmless: np.ndarray, w: float | np.ndarray) -> np.ndarray:
    """r_w = w z_helpful + (1 - w) z_harmless. `w` is a number in [0, 1] (the fixed dial) or an array
    broadcasting against the rewards (the gated dial: one weight per prompt, [N])."""
    w = np.asarray(w, dtype=np.float64)
    return w * np.asarray(z_helpful) + (1.0 - w) * np.asarray(z_harmless)


def interpolate_state(
    helpful: Mapping[str, torch.Tensor], harmless: Mapping[str, torch.Tensor], lam: float
) -> dict[str, torch.Tensor]:
    """theta(lambda) = lambda theta_helpful + (1 - lambda) theta_harmless, entry by entry.

    Both state dicts must have the same keys and shapes (two RMs of one architecture). An entry equal
    in both (a frozen layer, a shared buffer) is copied as it is, so its bytes do not change by
    rounding; other floating tensors are interpolated in float32 and cast back; other non-float
    entries must be equal."""
    if set(helpful) != set(harmless):
        raise ValueError(
            f"interpolate_state: the two state dicts differ in keys ({sorted(set(helpful) ^ set(harmless))[:3]})"
        )
    out = {}
    for key, a in helpful.items():
        b = harmless[key]
        if a.shape != b.shape:
            raise ValueError(
                f"interpolate_state: {key} is {list(a.shape)} in one and {list(b.shape)} in the other"
            )
        if torch.equal(a, b):
            out[key] = a.clone()
        elif a.is_floating_point():
            out[key] = (lam * a.float() + (1.0 - lam) * b.float()).to(a.dtype)
        else:
            raise ValueError(f"interpolate_state: non-float entry {key} differs between the two models")
    return out


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """[M] bool: point i is Pareto-optimal, i.e. no other point is at least as good on both axes and
    better on one. points: [M, 2] (higher is better on both)."""
    p = np.asarray(points, dtype=np.float64)
    keep = np.ones(len(p), dtype=bool)
    for i in range(len(p)):
        ge = (p >= p[i]).all(axis=1)
        gt = (p > p[i]).any(axis=1)
        keep[i] = not (ge & gt).any()
    return keep


def hypervolume(points: np.ndarray, ref: tuple[float, float] = (0.5, 0.5)) -> float:
    """Area of the region above `ref` that some point dominates: the union over points (x, y) of the
    rectangles [ref_x, x] x [ref_y, y]. points: [M, 2]; points below `ref` on an axis add nothing."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    p = p[(p[:, 0] > ref[0]) & (p[:, 1] > ref[1])]
    if len(p) == 0:
        return 0.0
    p = p[np.argsort(-p[:, 0])]  # sweep from the right: each point adds the strip above the best y so far
    area, top = 0.0, ref[1]
    for x, y in p:
        if y > top:
            area += (x - ref[0]) * (y - top)
            top = y
    return float(area)
