"""The metric interface: what every faithfulness metric takes, returns, and shares.

A metric is one class with one job, :meth:`Metric.score`: given a :class:`MapBatch` (prepared
images x (N, C, H, W), their maps (L, N, H, W) at the model's input size, one target class per
image and the clean logits) it returns :class:`MetricScores`: ``scores`` (T, L, N), one per
trial, layer and image, and the named ``components`` they were computed from (for ROAD the
Δ per fraction of MoRF and LeRF; for deletion the probability after every step). A metric's
options are checked when it is made, before any pass runs.

**Seeds** come from ``(seed, trial, layer_ids[l], image_ids[n], …)``: the caller names its
layers and images (by default their positions in the batch), so a dataset audit that gives each
image its index in the dataset gets the same numbers however the images are split into batches.

**Cost.** Every metric forwards its perturbed images in batches of ``batch_size`` through
:meth:`camonnx.passes.PassEngine.forward` (:func:`forward_probabilities`) and records in
``timings`` the seconds spent in ``forward`` (with ``forward_images``, the number of images
forwarded) apart from its own work, so its overhead against the forward passes it needs is
``(total − forward) / forward``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from camonnx.errors import InputError


@dataclass
class MapBatch:
    """What a metric scores: maps of L layers for N images, and what the model makes of them.

    ``engine``: the explainer's :class:`~camonnx.passes.PassEngine`; ``x`` (N, C, H, W): the
    prepared images on the engine's device; ``maps`` (L, N, H, W) float32; ``classes`` (N,): the
    target class per image; ``logits`` (N, K): the clean images' logits; ``layer_ids`` (L,) and
    ``image_ids`` (N,): the identities the seeds derive from (default: positions)."""

    engine: Any
    x: torch.Tensor
    maps: np.ndarray
    classes: np.ndarray
    logits: np.ndarray
    layer_ids: np.ndarray = None  # type: ignore[assignment]
    image_ids: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.maps = np.asarray(self.maps, np.float32)
        if self.maps.ndim != 4:
            raise InputError(f"A metric scores maps of shape (layers, images, H, W); got "
                             f"{self.maps.shape}.")
        n_layers, n_images, h, w = self.maps.shape
        if tuple(self.x.shape[2:]) != (h, w) or self.x.shape[0] != n_images:
            raise InputError(f"The maps have shape {(n_images, h, w)} per layer but the prepared "
                             f"images are {tuple(self.x.shape)}: give one (H, W) map per image at "
                             f"the model's input size.")
        if not np.isfinite(self.maps).all():
            raise InputError("The maps hold NaN or infinite values; a faithfulness metric needs "
                             "finite relevance values.")
        self.classes = np.asarray(self.classes, np.int64).reshape(-1)
        self.logits = np.asarray(self.logits)
        if len(self.classes) != n_images:
            raise InputError(f"Give one target class per image: {n_images} images, "
                             f"{len(self.classes)} classes.")
        if ((self.classes < 0) | (self.classes >= self.logits.shape[1])).any():
            raise InputError(f"Target classes must lie in [0, {self.logits.shape[1] - 1}]; got "
                             f"{self.classes.tolist()}.")
        self.layer_ids = _ids(self.layer_ids, n_layers, "layer_ids")
        self.image_ids = _ids(self.image_ids, n_images, "image_ids")

    @property
    def base_probability(self) -> np.ndarray:
        """(N,) p_c(x): the softmax probability of each image's class on the clean image."""
        return softmax_at(self.logits, self.classes)


def _ids(ids, count: int, name: str) -> np.ndarray:
    if ids is None:
        return np.arange(count, dtype=np.int64)
    ids = np.asarray(ids, np.int64).reshape(-1)
    if len(ids) != count:
        raise InputError(f"{name} names {len(ids)} entries for {count}.")
    return ids


@dataclass
class MetricScores:
    """One metric's scores of a :class:`MapBatch`.

    ``scores`` (T, L, N); ``components``: name → array (T, L, N, …) (e.g. ROAD's ``morf`` and
    ``lerf`` (T, L, N, Q)); ``axes``: for components with a last axis, what it runs over (e.g.
    ``{"morf": ("fraction", [0.2, …])}``); ``base_probability`` (N,); ``timings``: seconds
    (``forward``, ``forward_images`` and the metric's own steps); ``info``: anything else worth
    recording (e.g. ROAD's solver convergence)."""

    metric: str
    scores: np.ndarray
    components: dict[str, np.ndarray]
    base_probability: np.ndarray
    axes: dict[str, tuple[str, list]] = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


class Metric(ABC):
    """A faithfulness metric. Subclasses set ``name``, ``higher_is_better``, check their options
    in ``__init__`` (an :class:`InputError` naming the bad one) and implement :meth:`score`.
    ``options`` holds the options as JSON-able values, for manifests and result files."""

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]

    def __init__(self) -> None:
        self.options: dict[str, Any] = {}

    @abstractmethod
    def score(self, batch: MapBatch, *, trials: int = 1, seed: int = 0, batch_size: int = 64,
              progress: bool = True, desc: str | None = None) -> MetricScores:
        """Scores (T, L, N) of ``batch``'s maps, their components, and the timings."""


def softmax_at(logits, classes: np.ndarray) -> np.ndarray:
    """Softmax probability of each row's class, p_c = exp(z_c) / Σ_k exp(z_k), in float64 on
    the host (numpy, not torch, whose parallel regions cost milliseconds each on a busy CPU)."""
    z = np.asarray(logits, np.float64).copy()
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[np.arange(len(classes)), classes] / e.sum(axis=1)


def logits_of(engine, x: torch.Tensor) -> np.ndarray:
    """The model's logits (N, K) of prepared images, one forward."""
    return engine.forward(x, [engine.logits_name])[engine.logits_name].detach().cpu().numpy()


def forward_probabilities(engine, images: torch.Tensor, classes: np.ndarray, batch_size: int,
                          bar: tqdm | None = None) -> np.ndarray:
    """p_c of each row of ``images`` (M, C, H, W) for its class ``classes[m]``, forwarded in
    batches of ``batch_size`` (the bar advances per image)."""
    probs = np.empty(len(images))
    for start in range(0, len(images), batch_size):
        part = slice(start, min(start + batch_size, len(images)))
        probs[part] = softmax_at(logits_of(engine, images[part]), classes[part])
        if bar is not None:
            bar.update(part.stop - part.start)
    return probs


class Timer:
    """Seconds per named step, summed: ``with timer("forward"): …``; ``timer.seconds`` is the
    dict that goes into :attr:`MetricScores.timings`."""

    def __init__(self, *names: str) -> None:
        self.seconds: dict[str, float] = {name: 0.0 for name in names}

    def __call__(self, name: str) -> "_Step":
        return _Step(self, name)


class _Step:
    def __init__(self, timer: Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        seconds = self.timer.seconds
        seconds[self.name] = seconds.get(self.name, 0.0) + time.perf_counter() - self.start


def progress_bar(total: int, desc: str, progress: bool) -> tqdm:
    """The metrics' progress bar: one tick per forwarded image."""
    return tqdm(total=total, desc=desc, unit="img", disable=not progress)


def check_run_options(trials: int, batch_size: int) -> None:
    """Refuse a non-positive trial count or batch size, naming it."""
    if not isinstance(trials, (int, np.integer)) or isinstance(trials, bool) or trials < 1:
        raise InputError(f"trials must be a positive integer, got {trials!r}.")
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}.")


def units(trials: int, layers: int, images: int) -> Iterable[tuple[int, int, int]]:
    """Every (trial, layer, image) position, trial-major: the order in which metrics work."""
    return [(t, l, n) for t in range(trials) for l in range(layers) for n in range(images)]
