"""Score explanations with any metrics: every method's maps at every selected layer.

:func:`evaluate` prepares the images once, explains them once per method (every selected layer
from one pass), forwards the clean images once for the base probabilities, and hands the same
maps to each metric (:class:`camonnx.metrics.base.Metric`). :func:`score_explanation` does the
last two steps for an :class:`~camonnx.explanation.Explanation` already made.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from camonnx.errors import InputError
from camonnx.metrics import CATALOGUE, get_metric
from camonnx.metrics.base import MapBatch, Metric, check_run_options, logits_of
from camonnx.metrics.curve import MetricCurve


def _as_metrics(metrics) -> list[Metric]:
    if isinstance(metrics, (str, Metric)):
        metrics = [metrics]
    chosen = [get_metric(m) if isinstance(m, str) else m for m in metrics]
    if not chosen:
        raise InputError(f"Give at least one metric: {', '.join(sorted(CATALOGUE))}.")
    return chosen


def score_explanation(explainer, x: torch.Tensor, explanation, metrics, *, trials: int = 1,
                      seed: int = 0, batch_size: int = 64, progress: bool = True,
                      layer_indices: Sequence[int] | None = None,
                      layer_ids: Sequence[int] | None = None,
                      image_ids: Sequence[int] | None = None,
                      logits: np.ndarray | None = None) -> list[MetricCurve]:
    """Each metric's scores of ``explanation``'s maps of the prepared images ``x``, one
    :class:`MetricCurve` per metric. ``layer_indices``: the model's index of each explained
    layer, for the results (default: positions); ``layer_ids`` and ``image_ids``: each layer's
    and image's identity for the seeds (default: positions; the audit gives the model's layer
    index and the image's index in the dataset); ``logits``: the clean images' logits when already
    computed (else one forward)."""
    check_run_options(trials, batch_size)
    if explanation.targets is None:
        raise InputError("Faithfulness metrics need a class index per image (they score the "
                         "softmax probability of the target class); function targets are not "
                         "supported.")
    chosen = _as_metrics(metrics)
    tick = time.perf_counter()
    if logits is None:
        logits = logits_of(explainer.engine, x)
    base_seconds = time.perf_counter() - tick
    layers = list(explanation.layers)
    indices = list(layer_indices) if layer_indices is not None else list(range(len(layers)))
    batch = MapBatch(explainer.engine, x, explanation.maps, explanation.targets, logits,
                     layer_ids=layer_ids, image_ids=image_ids)
    curves = []
    for metric in chosen:
        tick = time.perf_counter()
        result = metric.score(batch, trials=trials, seed=seed, batch_size=batch_size,
                              progress=progress, desc=f"{metric.name} {explanation.method}")
        timings = dict(result.timings)
        timings["forward"] = timings.get("forward", 0.0) + base_seconds
        timings["forward_images"] = timings.get("forward_images", 0) + len(x)
        timings["metric"] = time.perf_counter() - tick + base_seconds
        curves.append(MetricCurve(
            metric=metric.name, method=explanation.method, model=str(explainer.model_path),
            layers=layers, layer_indices=indices, scores=result.scores,
            components=result.components, base_probability=result.base_probability,
            targets=list(explanation.targets), higher_is_better=metric.higher_is_better,
            axes=result.axes, labels=[explanation.label(i) for i in range(len(explanation.targets))],
            trials=trials, seed=seed, timings=timings, info=result.info,
            options={**metric.options, "normalize": explanation.normalize}))
    return curves


def evaluate(explainer, images, metrics: str | Metric | Sequence[str | Metric] = "road",
             methods: str | Sequence[str] = "gradcam", layers="all", *, trials: int = 1,
             seed: int = 0, targets=None, batch_size: int = 64, progress: bool = True,
             **explain_options) -> list[MetricCurve]:
    """Faithfulness of each method's map at every selected layer, by each metric: one
    :class:`MetricCurve` per (method, metric), methods outermost.

    ``metrics``: names from :data:`camonnx.metrics.CATALOGUE` or :class:`Metric` objects (made
    with their options, e.g. ``get_metric("deletion", pixels_per_step=112)``);
    ``explain_options`` go to :meth:`Explainer.explain` (e.g. ``extrapolate=True``; maps are
    scored unnormalised unless ``normalize`` is given). Targets as in explain (function targets
    are refused)."""
    check_run_options(trials, batch_size)
    chosen = _as_metrics(metrics)
    methods = [methods] if isinstance(methods, str) else list(dict.fromkeys(methods))
    indices = [layer.index for layer in explainer.select_layers(layers)]
    normalize = explain_options.pop("normalize", "none")
    x, _ = explainer.prepare(images)
    logits = logits_of(explainer.engine, x)
    curves: list[MetricCurve] = []
    for method in methods:
        tick = time.perf_counter()
        explanation = explainer.explain(x, method=method, layers=layers, targets=targets,
                                        normalize=normalize, seed=seed, progress=progress,
                                        **explain_options)
        explain_seconds = time.perf_counter() - tick
        for curve in score_explanation(explainer, x, explanation, chosen, trials=trials,
                                       seed=seed, batch_size=batch_size, progress=progress,
                                       layer_indices=indices, logits=logits):
            curve.timings["explain"] = explain_seconds
            curves.append(curve)
    return curves
