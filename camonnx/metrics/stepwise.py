"""Deletion and insertion (Petsiuk et al., BMVC 2018): what they share (docs/metrics.md#deletion).

For a map M (H, W) of an image x with target class c:

* **order**: the pixels ranked by M, most relevant first, exactly and with seeded tie-breaking
  (:func:`camonnx.road_masks.relevance_rank`, seed ``(seed, t, layer_ids[l], image_ids[n], 0)``,
  the same ranking ROAD uses);
* **steps**: after step k = 0 … K the c_k = min(k·s, H·W) first pixels of the order are changed,
  s = ``pixels_per_step`` (K = ⌈H·W / s⌉; the last step may change fewer than s);
* **substrate**: a blurred copy of x, a Gaussian of σ = ``blur`` pixels (default 5) truncated at
  ⌈3σ⌉, per channel in the model's input space, borders reflected (:func:`blurred`);
* **deletion**: image k is x with its c_k first pixels replaced by the substrate (k = 0: x, k = K:
  the substrate); **insertion**: the substrate with the c_k first pixels of x put back;
* p_k = softmax probability of c for image k, and the score is its area under the curve over
  the fraction of changed pixels f_k = c_k / (H·W) ∈ [0, 1], by the trapezoid rule
  (:func:`auc`): AUC = Σ_k (f_{k+1} − f_k)·(p_k + p_{k+1}) / 2.

Lower deletion AUC and higher insertion AUC are better. Component ``probability`` (T, L, N, K+1),
its axis ``("fraction", [f_0, …, f_K])``.

**Batching.** The (trial, layer, image, step) images are made and forwarded ``batch_size`` at a
time through :func:`camonnx.metrics.base.forward_probabilities`; only one batch of perturbed
images exists at a time, so memory stays bounded for any number of layers and steps. Seeds
depend on (seed, trial, layer, image) only: the results do not depend on ``batch_size``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch

from camonnx.errors import InputError
from camonnx.metrics.base import (MapBatch, Metric, MetricScores, Timer, check_run_options,
                                  forward_probabilities, progress_bar, units)
from camonnx.road_masks import relevance_rank

#: Default step: 224 pixels, one image row's worth at 224 × 224, i.e. 224 steps there.
PIXELS_PER_STEP = 224
#: Default σ of the substrate's Gaussian blur, in pixels of the model's input (the authors' 5).
BLUR_SIGMA = 5.0


def step_counts(pixels: int, per_step: int) -> np.ndarray:
    """c_k = min(k·per_step, pixels), k = 0 … ⌈pixels / per_step⌉: pixels changed after step k."""
    steps = math.ceil(pixels / per_step)
    return np.minimum(np.arange(steps + 1, dtype=np.int64) * per_step, pixels)


def auc(curve: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Trapezoid area under ``curve`` (…, K+1) over ``fractions`` (K+1,), on the last axis:
    Σ_k (f_{k+1} − f_k)·(p_k + p_{k+1}) / 2."""
    widths = np.diff(np.asarray(fractions, np.float64))
    return ((curve[..., 1:] + curve[..., :-1]) / 2 * widths).sum(axis=-1)


def blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) blurred per channel by a Gaussian of σ = ``sigma`` pixels
    truncated at radius ⌈3σ⌉ (weights renormalised to sum 1), borders reflected (d c b a | a b c
    d), computed in float64 by scipy and returned in x's dtype and device."""
    from scipy.ndimage import gaussian_filter

    values = x.detach().to("cpu", torch.float64).numpy()
    out = gaussian_filter(values, sigma=(0, 0, sigma, sigma), mode="reflect",
                          radius=(0, 0, math.ceil(3 * sigma), math.ceil(3 * sigma)))
    return torch.from_numpy(out).to(x.device, x.dtype)


class Stepwise(Metric):
    """Deletion / insertion: AUC over f ∈ [0, 1] of p_c after changing the f·H·W most relevant
    pixels, 224 pixels a step (``pixels_per_step``), the substrate a Gaussian blur of σ = ``blur``
    pixels. Subclasses set ``name``, ``higher_is_better`` and ``inserting``."""

    #: False: pixels go from x to the substrate (deletion); True: from the substrate to x.
    inserting: ClassVar[bool]

    def __init__(self, pixels_per_step: int = PIXELS_PER_STEP, blur: float = BLUR_SIGMA) -> None:
        super().__init__()
        if isinstance(pixels_per_step, bool) or not isinstance(pixels_per_step, (int, np.integer)) \
                or pixels_per_step < 1:
            raise InputError(f"pixels_per_step must be a positive integer (pixels changed per "
                             f"step, e.g. 224), got {pixels_per_step!r}.")
        if isinstance(blur, bool) or not isinstance(blur, (int, float)) or not math.isfinite(blur) \
                or blur <= 0:
            raise InputError(f"blur must be a positive number (the substrate's Gaussian σ in "
                             f"pixels, e.g. 5), got {blur!r}.")
        self.pixels_per_step = int(pixels_per_step)
        self.blur = float(blur)
        self.options = {"pixels_per_step": self.pixels_per_step, "blur": self.blur}

    def score(self, batch: MapBatch, *, trials: int = 1, seed: int = 0, batch_size: int = 64,
              progress: bool = True, desc: str | None = None) -> MetricScores:
        check_run_options(trials, batch_size)
        x, maps, classes = batch.x, batch.maps, batch.classes
        n_layers, n_images, h, w = maps.shape
        counts = step_counts(h * w, self.pixels_per_step)
        steps = len(counts)
        seed_ = int(seed) & (2 ** 63 - 1)  # numpy seeds are non-negative
        timer = Timer("rank", "perturb", "forward")
        with timer("perturb"):
            substrate = blurred(x, self.blur)
        todo = units(trials, n_layers, n_images)
        probability = np.empty((trials, n_layers, n_images, steps))
        flat = probability.reshape(-1)  # row u·steps + k: unit u = (t, l, n), step k
        total = len(todo) * steps
        ranks: dict[int, np.ndarray] = {}
        bar = progress_bar(total, desc or self.name, progress)
        try:
            for start in range(0, total, batch_size):
                rows = np.arange(start, min(start + batch_size, total))
                unit, step = np.divmod(rows, steps)
                with timer("rank"):  # only the units of this batch are kept
                    ranks = {u: ranks[u] if u in ranks else self._rank(batch, todo[u], seed_)
                             for u in np.unique(unit).tolist()}
                    changed = np.stack([ranks[u] for u in unit.tolist()]) < counts[step][:, None]
                with timer("perturb"):
                    owners = np.array([todo[u][2] for u in unit.tolist()])
                    index = torch.as_tensor(owners, device=x.device)
                    change = torch.from_numpy(changed.reshape(-1, 1, h, w)).to(x.device)
                    before, after = (substrate, x) if self.inserting else (x, substrate)
                    images = torch.where(change, after[index], before[index])
                with timer("forward"):
                    flat[rows] = forward_probabilities(batch.engine, images, classes[owners],
                                                       batch_size, bar)
        finally:
            bar.close()
        timer.seconds["forward_images"] = total
        fractions = counts / (h * w)
        return MetricScores(self.name, auc(probability, fractions), {"probability": probability},
                            batch.base_probability,
                            axes={"probability": ("fraction", fractions.tolist())},
                            timings=timer.seconds, info={"steps": steps - 1})

    @staticmethod
    def _rank(batch: MapBatch, unit: tuple[int, int, int], seed: int) -> np.ndarray:
        t, l, n = unit
        return relevance_rank(batch.maps[l, n],
                              (seed, t, int(batch.layer_ids[l]), int(batch.image_ids[n]), 0))
