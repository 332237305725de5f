"""Average Drop and Increase in Confidence (Chattopadhay et al., WACV 2018) as metrics:
docs/metrics.md#drop.

For a map M (H, W) of an image x with target class c:

* M̂ = (M − min M) / (max M − min M) ∈ [0, 1], per map at H × W (a constant map gives M̂ = 0);
* x′ = x ⊙ M̂ in the model's input space (:func:`camonnx.masking.masked`: a pixel of weight 0
  takes the preprocessing's mean colour);
* p = p_c(x), p′ = p_c(x′), softmax probabilities;
* **drop** (lower is better): drop_n = max(0, p − p′) / p · 100 (0 when p = 0: nothing to drop);
  over a data set, Average Drop = mean_n drop_n;
* **increase** (higher is better): 100 · 1[p′ > p]; over a data set, Increase in Confidence =
  its mean, the percentage of images whose confidence rose.

The two share one pass (one masked image per layer and image, forwarded ``batch_size`` at a
time); each is its own metric so that each has one score and one direction. Neither is random:
every trial gives the same scores (computed once, repeated over the T trials). Components:
``probability`` p′ (T, L, N) for both, and ``increase`` 1[p′ > p] (T, L, N) for drop.
"""

from __future__ import annotations

import numpy as np
import torch

from camonnx.masking import masked
from camonnx.metrics.base import (MapBatch, Metric, MetricScores, Timer, check_run_options,
                                  forward_probabilities, progress_bar)


def unit_range(maps: np.ndarray) -> np.ndarray:
    """Each map of ``maps`` (…, H, W) min-max scaled to [0, 1] in float64; a constant map → 0."""
    values = np.asarray(maps, np.float64)
    low = values.min(axis=(-2, -1), keepdims=True)
    span = values.max(axis=(-2, -1), keepdims=True) - low
    return np.where(span > 0, (values - low) / np.where(span > 0, span, 1.0), 0.0)


def masked_probability(batch: MapBatch, batch_size: int, progress: bool, desc: str,
                       timer: Timer) -> np.ndarray:
    """p_c(x ⊙ M̂) (L, N) for every layer's map of every image, ``batch_size`` images at a time."""
    x, maps = batch.x, batch.maps
    n_layers, n_images = maps.shape[:2]
    pairs = [(l, n) for l in range(n_layers) for n in range(n_images)]
    out = np.empty(len(pairs))
    bar = progress_bar(len(pairs), desc, progress)
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            owners = np.array([n for _, n in chunk])
            with timer("mask"):
                weights = unit_range(np.stack([maps[l, n] for l, n in chunk]))
                images = masked(x[torch.as_tensor(owners, device=x.device)],
                                torch.from_numpy(weights).to(x.device, x.dtype))
            with timer("forward"):
                out[start:start + len(chunk)] = forward_probabilities(
                    batch.engine, images, batch.classes[owners], batch_size, bar)
    finally:
        bar.close()
    timer.seconds["forward_images"] = len(pairs)
    return out.reshape(n_layers, n_images)


class _ConfidenceChange(Metric):
    """The shared pass of drop and increase: p′ = p_c(x ⊙ M̂) per layer and image."""

    def score(self, batch: MapBatch, *, trials: int = 1, seed: int = 0, batch_size: int = 64,
              progress: bool = True, desc: str | None = None) -> MetricScores:
        check_run_options(trials, batch_size)
        timer = Timer("mask", "forward")
        after = masked_probability(batch, batch_size, progress, desc or self.name, timer)
        before = batch.base_probability
        rose = (after > before).astype(np.float64)
        safe = np.where(before > 0, before, 1.0)
        drop = np.where(before > 0, np.maximum(0.0, before - after) / safe, 0.0) * 100
        repeat = lambda a: np.repeat(a[None], trials, axis=0)  # noqa: E731  deterministic trials
        scores, components = self._scores(repeat(drop), repeat(rose), repeat(after))
        return MetricScores(self.name, scores, components, before, timings=timer.seconds)


class Drop(_ConfidenceChange):
    """drop_n = max(0, p − p′) / p · 100, p′ = p_c(x ⊙ minmax(M)); lower is better."""

    name = "drop"
    higher_is_better = False

    @staticmethod
    def _scores(drop, rose, after):
        return drop, {"probability": after, "increase": rose}


class Increase(_ConfidenceChange):
    """100 · 1[p_c(x ⊙ minmax(M)) > p_c(x)]; higher is better."""

    name = "increase"
    higher_is_better = True

    @staticmethod
    def _scores(drop, rose, after):
        return 100 * rose, {"probability": after}
