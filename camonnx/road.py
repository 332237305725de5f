"""ROAD (Rong et al., ICML 2022) and ybROAD (per-layer ROAD, Kaczmarek et al., 2023): docs/metrics.md#road.

One job: the score. Rank and mask (:mod:`camonnx.road_masks`), impute
(:mod:`camonnx.road_imputation`), forward, and combine the probabilities into ROAD; the results
and their CSV / JSON / plot writers are in :mod:`camonnx.road_report`.

For a map M (H, W) of an image x with target class c, and each removal fraction q:

* **MoRF(q)** removes the k = round(q·H·W) most relevant pixels, **LeRF(q)** the k least relevant
  (exact counts, ties broken by a seeded permutation: :mod:`camonnx.road_masks`);
* the removed pixels are filled by noisy linear imputation (:mod:`camonnx.road_imputation`): the
  linear system "each removed pixel is the weighted mean of its 8 neighbours" solved exactly,
  plus N(0, 0.01²) in the model's input space at the removed pixels only;
* Δ(q) = p_c(imputed) − p_c(x), p = softmax probability;
* ROAD = (mean_q Δ_LeRF(q) − mean_q Δ_MoRF(q)) / 2. Higher is better: removing the pixels the map
  calls relevant should hurt the class more than removing those it calls irrelevant.

ybROAD is the curve of ROAD over every conv layer's map of one method (all maps from one
:meth:`Explainer.explain`), with its maximum, the layer attaining it, and its mean; over T
seeded trials and N images the curve is the mean and its band the standard deviation.

**Batching.** The imputed images of all fractions, layers, images and trials are made and
forwarded chunk by chunk: ``batch_size`` masks per chunk (whole layer × image units of 2·Q
masks), imputed together by :func:`camonnx.road_imputation.solve` (on CPU one mask per core at a
time on a thread pool, on CUDA the whole chunk as one batch), then forwarded through
:meth:`camonnx.passes.PassEngine.forward` (ONNX Runtime, or the torch mirror on a GPU without
ORT's CUDA provider) in batches of ``batch_size``. Memory stays bounded for any number of layers: only one
chunk of imputed images exists at a time. The result's ``timings`` keep ranking, imputation
(solve + noise) and forward time apart; every seed is derived from (seed, trial, layer, image),
so results do not depend on ``batch_size`` or on the device.

**Differences from pytorch-grad-cam's ``ROADCombined``** (``pytorch_grad_cam/metrics/road.py`` and
``perturbation_confidence.py``, grad-cam 1.5), which tests/test_road.py compares against:

1. *Fractions.* There, ``percentiles=[20, 40, 60, 80]`` means thresholds at those percentiles
   of the map; MoRF at percentile p keeps ``cam < percentile_p`` and so removes the top
   (100 − p) %, LeRF likewise removes the bottom (100 − p) %: the same set of removal fractions
   {0.8, 0.6, 0.4, 0.2} as here (Δ averaged over them, so the order does not matter).
2. *Ranking.* There, a threshold from ``np.percentile`` (linear interpolation) and ``>=`` to it
   is removed: the count is only approximately q·H·W and all tied pixels go together (a flat
   map removes everything). Here: exact counts, seeded tie-breaking. On tie-free maps the two
   differ by at most one pixel per mask.
3. *Imputation.* The same linear system (same weights, same renormalisation at the border,
   same noise: 0.01 absolute, in the model's input space, added to the imputed pixels only).
   There: a LIL matrix built per image and mask and ``spsolve``d on the CPU, ~25-30× slower;
   here multigrid-preconditioned CG (≤ 1e-4 from the direct solution) on the CPU or GPU. Their
   fully removed image gives a singular system; here the per-channel mean. Their noise comes
   from torch's global RNG (reproducible only through ``torch.manual_seed``); here from
   ``numpy.random.default_rng((seed, trial, layer, image, 1, k))`` per mask.
4. *Score.* Same Δ and the same (LeRF − MoRF) / 2 combination when their target is
   ``ClassifierOutputSoftmaxTarget(c)``; camonnx always uses the softmax probability (their
   target may also be the logit).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from camonnx.errors import InputError
from camonnx.road_masks import FRACTIONS, check_fractions, relevance_rank, removal_masks
from camonnx.road_report import RoadScore, YbRoadResult


# ---------------------------------------------------------------------------------------------
# the engine: deltas for many maps of many images, chunk by chunk
# ---------------------------------------------------------------------------------------------

@dataclass
class _Deltas:
    morf: np.ndarray         # (T, L, N, Q)
    lerf: np.ndarray         # (T, L, N, Q)
    base: np.ndarray         # (N,) p_target(x)
    timings: dict
    solver: dict


def _logits(explainer, x: torch.Tensor) -> np.ndarray:
    engine = explainer.engine
    return engine.forward(x, [engine.logits_name])[engine.logits_name].detach().cpu().numpy()


def _probabilities(explainer, x: torch.Tensor, classes: np.ndarray, logits=None) -> np.ndarray:
    """Softmax probability of each image's class (float64, on the host: numpy, not torch,
    whose parallel regions cost milliseconds each on a busy CPU)."""
    if logits is None:
        logits = _logits(explainer, x)
    z = np.asarray(logits, np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[np.arange(len(classes)), classes] / e.sum(axis=1)


def _road_deltas(explainer, x: torch.Tensor, maps: np.ndarray, classes: Sequence[int],
                 fractions: tuple[float, ...], trials: int, seed: int, batch_size: int,
                 progress: bool, noise: float, solver_options: dict, desc: str = "ROAD",
                 logits: np.ndarray | None = None) -> _Deltas:
    """Δ_MoRF and Δ_LeRF for maps (L, N, H, W) of the prepared images x (N, C, H, W)
    (``logits``: the clean images' logits, when already computed)."""
    from camonnx.road_imputation import NOISE_STD, add_noise, solve

    noise = NOISE_STD if noise is None else float(noise)
    n_layers, n_images, h, w = maps.shape
    if tuple(x.shape[2:]) != (h, w) or x.shape[0] != n_images:
        raise InputError(f"The maps have shape {(n_images, h, w)} per layer but the prepared images "
                         f"are {tuple(x.shape)}: give one (H, W) map per image at the model's input size.")
    if not np.isfinite(maps).all():
        raise InputError("The maps hold NaN or infinite values; ROAD needs finite relevance values.")
    classes = np.asarray(classes, np.int64)
    seed_ = int(seed) & (2 ** 63 - 1)  # numpy seeds are non-negative
    q_count = len(fractions)
    per_unit = 2 * q_count
    timings = {"rank": 0.0, "impute": 0.0, "forward": 0.0}
    start = time.perf_counter()
    base = _probabilities(explainer, x, classes, logits)
    timings["forward"] += time.perf_counter() - start

    x_host = x.detach().float().contiguous().numpy() if x.device.type == "cpu" else None
    units = [(t, l, n) for t in range(trials) for l in range(n_layers) for n in range(n_images)]
    units_per_chunk = max(1, batch_size // per_unit)
    morf = np.zeros((trials, n_layers, n_images, q_count))
    lerf = np.zeros_like(morf)
    iterations, converged = 0, True
    bar = tqdm(total=len(units) * per_unit, desc=desc, unit="img", disable=not progress)
    try:
        for first in range(0, len(units), units_per_chunk):
            chunk = units[first:first + units_per_chunk]
            tick = time.perf_counter()
            masks = np.concatenate([removal_masks(relevance_rank(maps[l, n], (seed_, t, l, n, 0)),
                                                  fractions, (h, w)) for t, l, n in chunk])
            owners = np.repeat([n for _, _, n in chunk], per_unit)
            timings["rank"] += time.perf_counter() - tick

            tick = time.perf_counter()
            if x.device.type == "cpu":  # numpy gather: single-threaded, no torch parallel region
                images = torch.from_numpy(x_host[owners])
            else:
                images = x[torch.as_tensor(owners, device=x.device)]
            removed = torch.from_numpy(masks)
            imputed, info = solve(images, removed, **solver_options)
            seeds = [(seed_, t, l, n, 1, k) for t, l, n in chunk for k in range(per_unit)]
            add_noise(imputed, removed, noise, seeds)
            iterations, converged = max(iterations, info.iterations), converged and info.converged
            timings["impute"] += time.perf_counter() - tick

            tick = time.perf_counter()
            probs = np.empty(len(owners))
            for start in range(0, len(owners), batch_size):
                part = slice(start, min(start + batch_size, len(owners)))
                probs[part] = _probabilities(explainer, imputed[part], classes[owners[part]])
                bar.update(part.stop - part.start)
            timings["forward"] += time.perf_counter() - tick
            deltas = (probs - base[owners]).reshape(len(chunk), 2, q_count)
            for (t, l, n), d in zip(chunk, deltas):
                morf[t, l, n] = d[0]
                lerf[t, l, n] = d[1]
    finally:
        bar.close()
    timings["forward_images"] = len(units) * per_unit + n_images
    return _Deltas(morf, lerf, base, timings, {"max_iterations": iterations, "converged": converged})


def _combine(morf: np.ndarray, lerf: np.ndarray) -> np.ndarray:
    """ROAD = (mean_q Δ_LeRF − mean_q Δ_MoRF) / 2 over the last axis."""
    return (lerf.mean(axis=-1) - morf.mean(axis=-1)) / 2


def _check_common(trials: int, batch_size: int) -> None:
    if not isinstance(trials, (int, np.integer)) or trials < 1:
        raise InputError(f"trials must be a positive integer, got {trials!r}.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}.")


# ---------------------------------------------------------------------------------------------
# plain ROAD of given maps
# ---------------------------------------------------------------------------------------------

def road_score(explainer, images, maps, *, fractions: Sequence[float] = FRACTIONS, trials: int = 1,
               seed: int = 0, targets=None, batch_size: int = 64, progress: bool = True,
               noise: float | None = None, solver: dict | None = None) -> RoadScore:
    """ROAD of the given relevance maps (N, H, W) (one per image, at the model's input size) on
    ``images`` (anything :meth:`Explainer.prepare` takes). ``targets``: the class per image
    (None: the predicted class; an int: that class for all). ``noise``: the imputation noise std
    (default 0.01); ``solver``: options of :func:`camonnx.road_imputation.solve` (tol,
    max_iter, backend, workers); ``progress``: a progress bar. :func:`ybroad` takes the same."""
    from camonnx.targets import class_indices

    fractions = check_fractions(fractions)
    _check_common(trials, batch_size)
    total = time.perf_counter()
    x, _ = explainer.prepare(images)
    maps = maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.shape != (x.shape[0],) + tuple(x.shape[2:]):
        raise InputError(f"road_score takes one map per image at the model's input size: "
                         f"{(x.shape[0],) + tuple(x.shape[2:])}, got {maps.shape}.")
    tick = time.perf_counter()
    logits = _logits(explainer, x)
    base_time = time.perf_counter() - tick
    classes = class_indices(targets, torch.from_numpy(logits))
    if classes is None:
        raise InputError("ROAD needs a class index per image (Δ is the softmax probability of the "
                         "target class); function targets are not supported.")
    d = _road_deltas(explainer, x, maps.astype(np.float32)[None], classes, fractions, trials, seed,
                     batch_size, progress, noise, dict(solver or {}), logits=logits)
    d.timings["forward"] += base_time
    d.timings["total"] = time.perf_counter() - total
    return RoadScore(_combine(d.morf, d.lerf)[:, 0], d.morf[:, 0], d.lerf[:, 0], fractions,
                     list(classes), d.base, d.timings, d.solver)


# ---------------------------------------------------------------------------------------------
# ybROAD
# ---------------------------------------------------------------------------------------------

def ybroad(explainer, images, method: str = "gradcam", layers="all",
           fractions: Sequence[float] = FRACTIONS, trials: int = 1, seed: int = 0, targets=None,
           batch_size: int = 64, progress: bool = True, noise: float | None = None,
           solver: dict | None = None, **explain_options) -> YbRoadResult:
    """ybROAD: ROAD of ``method``'s map at every selected layer, for every image.

    One :meth:`Explainer.explain` gives every layer's map (``explain_options`` are passed on,
    e.g. ``extrapolate=True``; maps are ranked unnormalised unless ``normalize`` is given, which
    changes nothing but rounding); the target of each image is the explanation's class
    (``targets`` as in explain; function targets are refused). Then 2·len(fractions) imputed
    images per layer, image and trial are forwarded in batches of ``batch_size``. ``noise``: the
    imputation noise std (default 0.01); ``solver``: options of
    :func:`camonnx.road_imputation.solve` (tol, max_iter, backend, workers)."""
    fractions = check_fractions(fractions)
    _check_common(trials, batch_size)
    total = time.perf_counter()
    indices = [layer.index for layer in explainer.select_layers(layers)]
    normalize = explain_options.pop("normalize", "none")
    x, _ = explainer.prepare(images)  # once: the explanation and the imputations share it
    tick = time.perf_counter()
    explanation = explainer.explain(x, method=method, layers=layers, targets=targets,
                                    normalize=normalize, seed=seed, progress=progress,
                                    **explain_options)
    explain_time = time.perf_counter() - tick
    if explanation.targets is None:
        raise InputError("ybROAD needs a class index per image (Δ is the softmax probability of "
                         "the target class); function targets are not supported.")
    d = _road_deltas(explainer, x, explanation.maps, explanation.targets, fractions, trials, seed,
                     batch_size, progress, noise, dict(solver or {}), desc=f"ybROAD {explanation.method}")
    d.timings["explain"] = explain_time
    d.timings["total"] = time.perf_counter() - total
    return YbRoadResult(
        method=explanation.method, model=str(explainer.model_path), layers=list(explanation.layers),
        fractions=fractions, trials=trials, seed=seed, targets=list(explanation.targets),
        scores=_combine(d.morf, d.lerf), morf=d.morf, lerf=d.lerf, base_probability=d.base,
        timings=d.timings, solver=d.solver,
        labels=[explanation.label(i) for i in range(len(explanation.targets))],
        layer_indices=indices if len(indices) == len(explanation.layers) else [],
        options={"normalize": explanation.normalize, "noise": noise if noise is not None else 0.01,
                 **{k: v for k, v in explain_options.items() if _jsonable(v)}})


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
