"""ROAD (Rong et al., ICML 2022) and ybROAD (per-layer ROAD, Kaczmarek et al., 2023): docs/metrics.md#road.

The public entries. The score itself is the metric :class:`camonnx.metrics.road.Road`

    ROAD = (mean_q Δ_LeRF(q) − mean_q Δ_MoRF(q)) / 2,    Δ(q) = p_c(imputed) − p_c(x),

run through the metric interface (:mod:`camonnx.metrics.base`); the results and their CSV / JSON
/ plot writers are in :mod:`camonnx.road_report`.

* :func:`road_score`: ROAD of one given map per image;
* :func:`ybroad`: the curve of ROAD over every conv layer's map of one method (all maps from one
  :meth:`Explainer.explain`), with its maximum, the layer attaining it, and its mean; over T
  seeded trials and N images the curve is the mean and its band the standard deviation.

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
   here multigrid-preconditioned CG (≤ 1e-3 from the direct solution, measured ≤ 2.2e-4) on the CPU or GPU. Their
   fully removed image gives a singular system; here the per-channel mean. Their noise comes
   from torch's global RNG (reproducible only through ``torch.manual_seed``); here from
   one field ``numpy.random.default_rng((seed, trial, image, 1))`` per image and trial, shared by
   its masks (common random numbers across layers and fractions).
4. *Score.* Same Δ and the same (LeRF − MoRF) / 2 combination when their target is
   ``ClassifierOutputSoftmaxTarget(c)``; camonnx always uses the softmax probability (their
   target may also be the logit).
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from camonnx.errors import InputError
from camonnx.metrics.base import MapBatch, check_run_options, logits_of
from camonnx.metrics.evaluate import score_explanation
from camonnx.metrics.road import Road
from camonnx.road_masks import FRACTIONS, check_fractions
from camonnx.road_report import RoadScore, YbRoadResult

def road_score(explainer, images, maps, *, fractions: Sequence[float] = FRACTIONS, trials: int = 1,
               seed: int = 0, targets=None, batch_size: int = 64, progress: bool = True,
               noise: float | None = None, solver: dict | None = None) -> RoadScore:
    """ROAD of the given relevance maps (N, H, W) (one per image, at the model's input size) on
    ``images`` (anything :meth:`Explainer.prepare` takes). ``targets``: the class per image
    (None: the predicted class; an int: that class for all). ``noise``: the imputation noise std
    (default 0.01); ``solver``: options of :func:`camonnx.road_imputation.solve` (tol,
    max_iter, backend, workers); ``progress``: a progress bar. :func:`ybroad` takes the same."""
    from camonnx.targets import class_indices

    metric = Road(fractions, noise, solver)
    check_run_options(trials, batch_size)
    total = time.perf_counter()
    x, _ = explainer.prepare(images)
    maps = maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.shape != (x.shape[0],) + tuple(x.shape[2:]):
        raise InputError(f"road_score takes one map per image at the model's input size: "
                         f"{(x.shape[0],) + tuple(x.shape[2:])}, got {maps.shape}.")
    tick = time.perf_counter()
    logits = logits_of(explainer.engine, x)
    base_time = time.perf_counter() - tick
    classes = class_indices(targets, torch.from_numpy(logits))
    if classes is None:
        raise InputError("ROAD needs a class index per image (Δ is the softmax probability of the "
                         "target class); function targets are not supported.")
    batch = MapBatch(explainer.engine, x, maps[None], classes, logits)
    d = metric.score(batch, trials=trials, seed=seed, batch_size=batch_size, progress=progress)
    timings = dict(d.timings)
    timings["forward"] += base_time
    timings["forward_images"] += len(x)
    timings["total"] = time.perf_counter() - total
    morf, lerf = d.components["morf"], d.components["lerf"]
    return RoadScore(d.scores[:, 0], morf[:, 0], lerf[:, 0], metric.fractions, list(batch.classes),
                     d.base_probability, timings, d.info)


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
    metric = Road(fractions, noise, solver)
    check_run_options(trials, batch_size)
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
    if len(indices) != len(explanation.layers):  # the maps are not one per selected layer
        indices = list(range(len(explanation.layers)))
    curve, = score_explanation(explainer, x, explanation, [metric], trials=trials, seed=seed,
                               batch_size=batch_size, progress=progress, layer_indices=indices)
    timings = dict(curve.timings, explain=explain_time, total=time.perf_counter() - total)
    return YbRoadResult(
        method=explanation.method, model=str(explainer.model_path), layers=list(explanation.layers),
        fractions=metric.fractions, trials=trials, seed=seed, targets=list(explanation.targets),
        scores=curve.scores, morf=curve.components["morf"], lerf=curve.components["lerf"],
        base_probability=curve.base_probability, timings=timings, solver=curve.info,
        labels=curve.labels, layer_indices=indices,
        options={"normalize": explanation.normalize, "noise": metric.noise,
                 **{k: v for k, v in explain_options.items() if _jsonable(v)}})


def _jsonable(value) -> bool:
    import json

    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False
