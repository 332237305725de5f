"""How alike two saliency maps are: the similarity measures of the sanity checks (docs/sanity.md#measures).

One job: numbers for pairs of maps, one at a time or stacked (layers, images, H, W). Each map is
first taken in absolute value, |M| (Adebayo et al.'s "absolute" variant). camonnx's maps for a
class target are non-negative, raw or normalised (the CAM methods end in a ReLU,
docs/methods.md), so the absolute and the signed map coincide and one value is reported. With
a and b the two maps,

* **spearman**: Spearman's rank correlation of the H·W values, ρ = Pearson(rank(a), rank(b))
  with tied values sharing their mean rank (``scipy.stats.spearmanr``);
* **ssim**: the structural similarity of the maps min-max'd to [0, 1] (``minmax``), with
  data range 1 (``skimage.metrics.structural_similarity``, 7×7 uniform window, K1 = 0.01,
  K2 = 0.03): the mean over windows of
  (2 μ_a μ_b + C1)(2 σ_ab + C2) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2)), C1 = K1², C2 = K2²;
* **hog**: Pearson's correlation r = Σ (u − ū)(v − v̄) / √(Σ (u − ū)² Σ (v − v̄)²) of the
  histograms of oriented gradients u = HOG(minmax(a)), v = HOG(minmax(b))
  (``skimage.feature.hog``: 9 orientations, 8×8-pixel cells, 3×3-cell blocks, L2-Hys).

**Constant maps.** A correlation with a zero-variance map is undefined; here two identical maps
score 1 on every measure (SSIM gives 1 there too), and otherwise a map (or HOG vector) with
zero variance scores a correlation of 0: no evidence of similarity. Never NaN. Maps must be
finite; ``minmax`` of a constant map is all zeros, as camonnx's own normalisation does.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from camonnx.errors import InputError

METRICS = ("spearman", "ssim", "hog")
#: skimage's HOG defaults, fixed here (they enter the reported numbers).
HOG_OPTIONS = {"orientations": 9, "pixels_per_cell": (8, 8), "cells_per_block": (3, 3),
               "block_norm": "L2-Hys"}
_SSIM_WINDOW = 7


def _as_map(a) -> np.ndarray:
    a = np.abs(np.asarray(a, dtype=np.float64))
    if a.ndim != 2:
        raise InputError(f"A saliency map is 2-D (H, W); got shape {a.shape}.")
    if not np.isfinite(a).all():
        raise InputError("The map holds NaN or infinite values; similarities need finite maps.")
    return a


def minmax(a) -> np.ndarray:
    """|a| mapped to [0, 1] by its own min and max (float64); a constant map becomes zeros."""
    a = _as_map(a)
    low, span = a.min(), a.max() - a.min()
    return (a - low) / span if span > 0 else np.zeros_like(a)


def pearson(u, v) -> float:
    """Pearson's r of two equally long vectors in float64; 1 for identical vectors, 0 where
    either has zero variance (otherwise undefined)."""
    u, v = np.asarray(u, np.float64).ravel(), np.asarray(v, np.float64).ravel()
    if np.array_equal(u, v):
        return 1.0
    du, dv = u - u.mean(), v - v.mean()
    norm = np.sqrt(np.dot(du, du) * np.dot(dv, dv))
    return float(np.clip(np.dot(du, dv) / norm, -1.0, 1.0)) if norm > 0 else 0.0


def spearman(a, b) -> float:
    """Spearman's ρ of |a| and |b| over all pixels (module docstring)."""
    from scipy.stats import spearmanr

    a, b = _pair(a, b)
    if np.array_equal(a, b):
        return 1.0
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel())[0])


def ssim(a, b) -> float:
    """SSIM of minmax(a) and minmax(b), data range 1 (module docstring)."""
    from skimage.metrics import structural_similarity

    a, b = _pair(a, b)
    a, b = minmax(a), minmax(b)
    if np.array_equal(a, b):
        return 1.0
    side = min(a.shape)
    window = min(_SSIM_WINDOW, side if side % 2 else side - 1)
    if window < 3:
        raise InputError(f"SSIM needs maps of at least 3×3 pixels; got {a.shape}.")
    return float(structural_similarity(a, b, data_range=1.0, win_size=window))


def hog_features(a) -> np.ndarray:
    """HOG(minmax(a)) as one float64 vector (:data:`HOG_OPTIONS`)."""
    from skimage.feature import hog

    a = minmax(a)
    cell, block = HOG_OPTIONS["pixels_per_cell"][0], HOG_OPTIONS["cells_per_block"][0]
    if min(a.shape) < cell * block:
        raise InputError(f"HOG needs maps of at least {cell * block}×{cell * block} pixels; "
                         f"got {a.shape}.")
    return hog(a, feature_vector=True, **HOG_OPTIONS).astype(np.float64)


def hog_pearson(a, b) -> float:
    """Pearson's r of the HOG features of minmax(a) and minmax(b) (module docstring)."""
    return _hog_r(*_pair(a, b))


def _hog_r(a: np.ndarray, b: np.ndarray, features_a: np.ndarray | None = None) -> float:
    if np.array_equal(minmax(a), minmax(b)):
        return 1.0
    return pearson(hog_features(a) if features_a is None else features_a, hog_features(b))


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_map(a), _as_map(b)
    if a.shape != b.shape:
        raise InputError(f"Two maps to compare must have one shape; got {a.shape} and {b.shape}.")
    return a, b


class Reference:
    """A stack of maps (..., H, W) that other stacks of the same shape are compared with, its
    HOG features computed once (the sanity checks compare one original with many)."""

    def __init__(self, maps):
        self.maps = np.asarray(maps)
        if self.maps.ndim < 2:
            raise InputError(f"Maps are (..., H, W); got shape {self.maps.shape}.")
        self._hog: list[np.ndarray] | None = None

    def compare(self, maps, metrics: Sequence[str] = METRICS) -> dict[str, np.ndarray]:
        """{metric: similarity of each pair of maps}, shaped like the maps without (H, W)."""
        maps = np.asarray(maps)
        if maps.shape != self.maps.shape:
            raise InputError(f"Maps of shape {maps.shape} cannot be compared with the reference "
                             f"maps of shape {self.maps.shape}.")
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise InputError(f"Unknown similarity {unknown[0]!r}: use {', '.join(METRICS)}.")
        ref = self.maps.reshape(-1, *maps.shape[-2:])
        other = maps.reshape(-1, *maps.shape[-2:])
        out = {}
        for metric in metrics:
            if metric == "hog":
                if self._hog is None:
                    self._hog = [hog_features(r) for r in ref]
                values = [_hog_r(r, o, h) for r, o, h in zip(ref, other, self._hog)]
            else:
                fn = spearman if metric == "spearman" else ssim
                values = [fn(r, o) for r, o in zip(ref, other)]
            out[metric] = np.asarray(values, np.float64).reshape(maps.shape[:-2])
        return out


def similarities(a, b, metrics: Sequence[str] = METRICS) -> dict[str, np.ndarray]:
    """{metric: similarity} of two stacks of maps of one shape (..., H, W)."""
    return Reference(a).compare(b, metrics)
