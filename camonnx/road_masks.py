"""Which pixels ROAD removes (docs/metrics.md#ranking): the removal fractions, the exact tie-safe
ranking of a map's pixels and the MoRF / LeRF masks it gives.

For a map M (H, W) and a removal fraction q, **MoRF(q)** removes the k = round(q·H·W) most
relevant pixels, **LeRF(q)** the k least relevant.

**Exact, tie-safe ranking.** Pixels are ranked by relevance with a stable sort after a seeded
random permutation: ties (flat maps, saturated regions, a constant map) are broken uniformly at
random and reproducibly, exactly as an infinitesimal seeded jitter would, and exactly k pixels
are removed for every q. (The common implementation thresholds at a percentile and removes
every pixel ≥ the threshold: a constant map then removes *all* pixels at every q.) ``round`` is
Python's (half to even); one ranking serves all fractions, so the MoRF masks are nested, and
MoRF(q) and LeRF(1 − q) are complements.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from camonnx.errors import InputError

#: ROAD's removal fractions (docs/metrics.md#road).
FRACTIONS = (0.2, 0.4, 0.6, 0.8)

def check_fractions(fractions) -> tuple[float, ...]:
    """The fractions as floats in (0, 1]; an :class:`InputError` otherwise."""
    try:
        values = tuple(float(q) for q in fractions)
    except (TypeError, ValueError):
        raise InputError(f"fractions must be numbers in (0, 1], got {fractions!r}.") from None
    if not values:
        raise InputError("Give at least one removal fraction, e.g. 0.2,0.4,0.6,0.8.")
    bad = [q for q in values if not (math.isfinite(q) and 0 < q <= 1)]
    if bad:
        raise InputError(f"Removal fractions must lie in (0, 1]; got {bad[0]}.")
    return values


def removal_count(q: float, pixels: int) -> int:
    """k = round(q · pixels): how many pixels a fraction q removes (Python's round)."""
    return int(round(q * pixels))


def relevance_rank(relevance: np.ndarray, seed) -> np.ndarray:
    """Rank of every pixel of one map (H, W) by relevance, 0 = most relevant, as a flat int
    array. Ties are broken by a random permutation from ``numpy.random.default_rng(seed)``
    followed by a stable sort: uniformly random among tied pixels, reproducible, and exact
    (no floating-point jitter that could reorder values that merely lie close)."""
    flat = np.asarray(relevance, np.float64).ravel()
    n = flat.size
    perm = np.random.default_rng(seed).permutation(n)
    order = perm[np.argsort(-flat[perm], kind="stable")]
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    return rank


def removal_masks(rank: np.ndarray, fractions: Sequence[float], shape: tuple[int, int]) -> np.ndarray:
    """(2Q, H, W) bool removed-pixel masks from a rank: MoRF for each fraction (the k most
    relevant), then LeRF for each fraction (the k least relevant), k = round(q·H·W)."""
    h, w = shape
    n = h * w
    masks = np.empty((2 * len(fractions), h, w), bool)
    for i, q in enumerate(fractions):
        k = removal_count(q, n)
        masks[i] = (rank < k).reshape(h, w)
        masks[len(fractions) + i] = (rank >= n - k).reshape(h, w)
    return masks
