"""ROAD (Rong et al., ICML 2022) as a metric: docs/metrics.md#road.

For a map M (H, W) of an image x with target class c, and each removal fraction q:

* **MoRF(q)** removes the k = round(q·H·W) most relevant pixels, **LeRF(q)** the k least relevant
  (exact counts, ties broken by a seeded permutation: :mod:`camonnx.road_masks`);
* the removed pixels are filled by noisy linear imputation (:mod:`camonnx.road_imputation`): the
  linear system "each removed pixel is the weighted mean of its 8 neighbours" solved exactly,
  plus N(0, 0.01²) in the model's input space at the removed pixels only;
* Δ(q) = p_c(imputed) − p_c(x), p = softmax probability;
* ROAD = (mean_q Δ_LeRF(q) − mean_q Δ_MoRF(q)) / 2. Higher is better: removing the pixels the map
  calls relevant should hurt the class more than removing those it calls irrelevant.

Components: ``morf`` and ``lerf`` (T, L, N, Q), the Δ per fraction.

**Batching.** The imputed images of all fractions, layers, images and trials are made and
forwarded chunk by chunk: ``batch_size`` masks per chunk (whole layer × image units of 2·Q
masks), imputed together by :func:`camonnx.road_imputation.solve` (on CPU one mask per core at a
time on a thread pool, on CUDA the whole chunk as one batch), then forwarded in batches of
``batch_size`` (:func:`camonnx.metrics.base.forward_probabilities`). Memory stays bounded for any
number of layers: only one chunk of imputed images exists at a time. A map's trials are
neighbours in the chunks, and a trial whose masks equal an earlier one's (any tie-free map:
only the tie-breaking differs between trials) reuses its noise-free solve; only the noise is
drawn anew. Seeds: the ranking of
unit (t, l, n) from ``(seed, t, layer_ids[l], image_ids[n], 0)``; the noise of trial t of image n
is one field from ``(seed, t, image_ids[n], 1)``, shared by the masks of every layer and fraction
(common random numbers: :func:`camonnx.road_imputation.add_noise`): the results depend on
neither ``batch_size`` nor the device.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from camonnx.metrics.base import (MapBatch, Metric, MetricScores, Timer, check_run_options,
                                  forward_probabilities, progress_bar, units)
from camonnx.road_masks import FRACTIONS, check_fractions, fraction_masks


class Road(Metric):
    """ROAD = (mean_q Δ_LeRF(q) − mean_q Δ_MoRF(q)) / 2, Δ(q) = p_c(imputed) − p_c(x).

    ``fractions``: the removal fractions q (default 0.2, 0.4, 0.6, 0.8); ``noise``: the
    imputation noise std in the model's input space (default 0.01); ``solver``: options of
    :func:`camonnx.road_imputation.solve` (tol, max_iter, backend, workers)."""

    name = "road"
    higher_is_better = True

    def __init__(self, fractions: Sequence[float] = FRACTIONS, noise: float | None = None,
                 solver: dict | None = None) -> None:
        from camonnx.road_imputation import NOISE_STD

        super().__init__()
        self.fractions = check_fractions(fractions)
        self.noise = NOISE_STD if noise is None else float(noise)
        self.solver = dict(solver or {})
        self.options = {"fractions": list(self.fractions), "noise": self.noise}

    def score(self, batch: MapBatch, *, trials: int = 1, seed: int = 0, batch_size: int = 64,
              progress: bool = True, desc: str | None = None) -> MetricScores:
        from camonnx.road_imputation import add_noise, solve

        check_run_options(trials, batch_size)
        x, maps, classes = batch.x, batch.maps, batch.classes
        n_layers, n_images, h, w = maps.shape
        seed_ = int(seed) & (2 ** 63 - 1)  # numpy seeds are non-negative
        q_count = len(self.fractions)
        per_unit = 2 * q_count
        timer = Timer("rank", "impute", "forward")
        base = batch.base_probability

        x_host = x.detach().float().contiguous().numpy() if x.device.type == "cpu" else None
        # a map's trials side by side, so that trials whose masks coincide share one solve
        todo = sorted(units(trials, n_layers, n_images), key=lambda u: (u[1], u[2], u[0]))
        units_per_chunk = max(1, batch_size // per_unit)
        morf = np.zeros((trials, n_layers, n_images, q_count))
        lerf = np.zeros_like(morf)
        iterations, converged = 0, True
        bar = progress_bar(len(todo) * per_unit, desc or "ROAD", progress)
        try:
            for first in range(0, len(todo), units_per_chunk):
                chunk = todo[first:first + units_per_chunk]
                keys = [(seed_, t, int(batch.layer_ids[l]), int(batch.image_ids[n]))
                        for t, l, n in chunk]
                with timer("rank"):
                    unit_masks = [fraction_masks(maps[l, n], key + (0,), self.fractions)
                                  for (t, l, n), key in zip(chunk, keys)]
                    owners = np.repeat([n for _, _, n in chunk], per_unit)
                    solved, rows = distinct_masks([n for _, _, n in chunk], unit_masks)
                with timer("impute"):
                    solve_owners = np.repeat([chunk[u][2] for u in solved], per_unit)
                    if x_host is not None:  # numpy gather: single-threaded, no torch parallel region
                        images = torch.from_numpy(x_host[solve_owners])
                    else:
                        images = x[torch.as_tensor(solve_owners, device=x.device)]
                    imputed, info = solve(images, torch.from_numpy(
                        np.concatenate([unit_masks[u] for u in solved])), **self.solver)
                    if len(solved) < len(chunk):  # each unit its own copy: the noise differs
                        imputed = imputed[torch.as_tensor(rows, device=imputed.device)]
                    add_noise(imputed, torch.from_numpy(np.concatenate(unit_masks)), self.noise,
                              [(seed_, t, int(batch.image_ids[n]), 1)
                               for t, _, n in chunk for _ in range(per_unit)])
                    iterations = max(iterations, info.iterations)
                    converged = converged and info.converged
                with timer("forward"):
                    probs = forward_probabilities(batch.engine, imputed, classes[owners],
                                                  batch_size, bar)
                deltas = (probs - base[owners]).reshape(len(chunk), 2, q_count)
                for (t, l, n), d in zip(chunk, deltas):
                    morf[t, l, n] = d[0]
                    lerf[t, l, n] = d[1]
        finally:
            bar.close()
        timer.seconds["forward_images"] = len(todo) * per_unit
        fractions = list(self.fractions)
        return MetricScores(self.name, combine(morf, lerf), {"morf": morf, "lerf": lerf}, base,
                            axes={"morf": ("fraction", fractions), "lerf": ("fraction", fractions)},
                            timings=timer.seconds,
                            info={"max_iterations": iterations, "converged": converged})


def distinct_masks(images: Sequence[int], unit_masks: Sequence[np.ndarray]) -> tuple[list[int], np.ndarray]:
    """Units whose (image, masks) pair came earlier in the chunk need no solve of their own: the
    noise-free imputation depends on nothing else (trials of a tie-free map rank its pixels
    alike). Returns the units to solve, and for every mask row of the chunk the row of the
    solved batch that holds its imputation."""
    first: dict[tuple[int, bytes], int] = {}
    solved: list[int] = []
    rows = []
    for u, (image, masks) in enumerate(zip(images, unit_masks)):
        slot = first.setdefault((image, np.packbits(masks).tobytes()), len(solved))
        if slot == len(solved):
            solved.append(u)
        rows.append(slot * len(masks) + np.arange(len(masks)))
    return solved, np.concatenate(rows)


def combine(morf: np.ndarray, lerf: np.ndarray) -> np.ndarray:
    """ROAD = (mean_q Δ_LeRF − mean_q Δ_MoRF) / 2 over the last axis."""
    return (lerf.mean(axis=-1) - morf.mean(axis=-1)) / 2
