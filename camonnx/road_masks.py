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
    keys = rank_keys(relevance, seed)
    if keys is None:
        return rank_by_sort(relevance, seed)
    rank = np.empty(keys.size, np.int64)
    rank[np.argsort(keys)] = np.arange(keys.size)   # unique keys: any sort gives the same order
    return rank


def rank_by_sort(relevance: np.ndarray, seed) -> np.ndarray:
    """:func:`relevance_rank` by its definition, for any map: the seeded permutation, then a
    stable sort of the permuted values (descending)."""
    flat = np.asarray(relevance, np.float64).ravel()
    n = flat.size
    perm = np.random.default_rng(seed).permutation(n)
    rank = np.empty(n, np.int64)
    rank[perm[np.argsort(-flat[perm], kind="stable")]] = np.arange(n)
    return rank


def rank_keys(relevance: np.ndarray, seed) -> np.ndarray | None:
    """Unique uint64 keys, ascending in :func:`relevance_rank`'s order, for a map whose values
    are finite float32 numbers (every map camonnx makes); None for any other map (float64
    values that float32 would round, NaN, inf), which then takes the sort path.

    Key of pixel p = (its value's bits mapped so that unsigned order = descending value) · 2³²
    + (p's position in the seeded permutation). The permutation position is exactly how the
    stable sort of the permuted map orders ties, so the order -- and every mask -- is the same
    as the sort path's, bit for bit; but the keys let the masks come from a selection
    (``np.partition``, O(n)) instead of a sort."""
    flat = np.asarray(relevance).ravel()
    single = flat.astype(np.float32)
    if flat.dtype != np.float32 and not np.array_equal(single, flat):
        return None
    if not np.isfinite(single).all():
        return None
    n = single.size
    if n >= 2 ** 32:
        return None
    bits = (single + np.float32(0.0)).view(np.uint32)   # + 0.0: −0.0 ties with 0.0
    # non-negative values: flip the magnitude bits (larger value -> smaller key); negative
    # values: their bits already grow with the magnitude, and they sort after every positive
    descending = np.where(bits >> np.uint32(31), bits, bits ^ np.uint32(0x7FFFFFFF))
    position = np.empty(n, np.uint64)
    position[np.random.default_rng(seed).permutation(n)] = np.arange(n, dtype=np.uint64)
    return (descending.astype(np.uint64) << np.uint64(32)) | position


def fraction_masks(relevance: np.ndarray, seed, fractions: Sequence[float]) -> np.ndarray:
    """``removal_masks(relevance_rank(relevance, seed), fractions, relevance.shape)``, by
    selection on :func:`rank_keys` when the map allows (2-3× faster: ROAD needs the 2·Q
    thresholds, not the whole order)."""
    relevance = np.asarray(relevance)
    keys = rank_keys(relevance, seed)
    if keys is None:
        return removal_masks(relevance_rank(relevance, seed), fractions, relevance.shape)
    n = keys.size
    counts = [removal_count(q, n) for q in fractions]
    kth = sorted({k - 1 for k in counts if k > 0} | {n - k for k in counts if k > 0})
    picked = np.partition(keys, kth) if kth else keys
    masks = np.empty((2 * len(fractions),) + relevance.shape, bool)
    for i, k in enumerate(counts):
        if k == 0:
            masks[i] = masks[len(fractions) + i] = False
            continue
        masks[i] = (keys <= picked[k - 1]).reshape(relevance.shape)                # k most relevant
        masks[len(fractions) + i] = (keys >= picked[n - k]).reshape(relevance.shape)  # k least
    return masks


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
