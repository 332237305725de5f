"""ROAD (Rong et al., ICML 2022) and ybROAD (per-layer ROAD, Kaczmarek et al., 2023): docs/metrics.md#road.

For a map M (H, W) of an image x with target class c, and each removal fraction q:

* **MoRF(q)** removes the k = round(q·H·W) most relevant pixels, **LeRF(q)** the k least relevant;
* the removed pixels are filled by noisy linear imputation (:mod:`camonnx.road_impute`): the
  linear system "each removed pixel is the weighted mean of its 8 neighbours" solved exactly,
  plus N(0, 0.01²) in the model's input space at the removed pixels only;
* Δ(q) = p_c(imputed) − p_c(x), p = softmax probability;
* ROAD = (mean_q Δ_LeRF(q) − mean_q Δ_MoRF(q)) / 2. Higher is better: removing the pixels the map
  calls relevant should hurt the class more than removing those it calls irrelevant.

ybROAD is the curve of ROAD over every conv layer's map of one method (all maps from one
:meth:`Explainer.explain`), with its maximum, the layer attaining it, and its mean; over T
seeded trials and N images the curve is the mean and its band the standard deviation.

**Exact, tie-safe ranking.** Pixels are ranked by relevance with a stable sort after a seeded
random permutation: ties (flat maps, saturated regions, a constant map) are broken uniformly at
random and reproducibly, exactly as an infinitesimal seeded jitter would, and exactly k pixels
are removed for every q. (The common implementation thresholds at a percentile and removes
every pixel ≥ the threshold: a constant map then removes *all* pixels at every q.) ``round`` is
Python's (half to even); one ranking serves all fractions, so the MoRF masks are nested, and
MoRF(q) and LeRF(1 − q) are complements.

**Batching.** The imputed images of all fractions, layers, images and trials are made and
forwarded chunk by chunk: ``batch_size`` masks per chunk (whole layer × image units of 2·Q
masks), imputed together by :func:`camonnx.road_impute.solve` (on CPU one mask per core at a
time on a thread pool, on CUDA the whole chunk as one batch), then forwarded through
:meth:`Explainer.forward` (ONNX Runtime, or the torch mirror on a GPU without ORT's CUDA
provider) in batches of ``batch_size``. Memory stays bounded for any number of layers: only one
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
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from camonnx.errors import InputError

#: ROAD's removal fractions (docs/metrics.md#road).
FRACTIONS = (0.2, 0.4, 0.6, 0.8)


# ---------------------------------------------------------------------------------------------
# ranking and masks
# ---------------------------------------------------------------------------------------------

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
    return explainer.forward(x, [explainer.graph.logits])[explainer.graph.logits].detach().cpu().numpy()


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
    from camonnx.road_impute import NOISE_STD, add_noise, solve

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

@dataclass
class RoadScore:
    """ROAD of one map per image. ``scores`` (T, N) per trial and image; ``morf``/``lerf``
    (T, N, Q) the deltas Δ(q); ``score`` (N,) the mean over trials; ``mean`` over everything."""

    scores: np.ndarray
    morf: np.ndarray
    lerf: np.ndarray
    fractions: tuple[float, ...]
    targets: list[int]
    base_probability: np.ndarray
    timings: dict = field(default_factory=dict)
    solver: dict = field(default_factory=dict)

    @property
    def score(self) -> np.ndarray:
        return self.scores.mean(axis=0)

    @property
    def mean(self) -> float:
        return float(self.scores.mean())

    @property
    def std(self) -> float:
        return float(self.scores.std())


def road_score(explainer, images, maps, *, fractions: Sequence[float] = FRACTIONS, trials: int = 1,
               seed: int = 0, targets=None, batch_size: int = 64, progress: bool = False,
               noise: float | None = None, **solver_options) -> RoadScore:
    """ROAD of the given relevance maps (N, H, W) (one per image, at the model's input size) on
    ``images`` (anything :meth:`Explainer.prepare` takes). ``targets``: the class per image
    (None: the predicted class; an int: that class for all). ``noise``: the imputation noise std
    (default 0.01). ``solver_options`` go to :func:`camonnx.road_impute.solve` (tol, backend, …)."""
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
                     batch_size, progress, noise, solver_options, logits=logits)
    d.timings["forward"] += base_time
    d.timings["total"] = time.perf_counter() - total
    return RoadScore(_combine(d.morf, d.lerf)[:, 0], d.morf[:, 0], d.lerf[:, 0], fractions,
                     list(classes), d.base, d.timings, d.solver)


# ---------------------------------------------------------------------------------------------
# ybROAD
# ---------------------------------------------------------------------------------------------

@dataclass
class YbRoadResult:
    """ybROAD of one method: ROAD of every explained layer's map.

    ``scores`` (T, L, N): ROAD per trial, layer and image; ``morf``/``lerf`` (T, L, N, Q): the
    deltas Δ(q); ``curve``/``curve_std`` (L,): mean and standard deviation over trials and
    images; ``max``, ``argmax`` (layer index), ``max_layer`` (its name), ``mean`` (of the curve).
    ``timings``: seconds spent explaining, ranking, imputing and in forward passes (and
    ``forward_images``, the number of images forwarded)."""

    method: str
    model: str
    layers: list[str]
    fractions: tuple[float, ...]
    trials: int
    seed: int
    targets: list[int]
    scores: np.ndarray
    morf: np.ndarray
    lerf: np.ndarray
    base_probability: np.ndarray
    timings: dict = field(default_factory=dict)
    solver: dict = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    layer_indices: list[int] = field(default_factory=list)

    def __post_init__(self):
        if not self.layer_indices:
            self.layer_indices = list(range(len(self.layers)))

    @property
    def curve(self) -> np.ndarray:
        return self.scores.mean(axis=(0, 2))

    @property
    def curve_std(self) -> np.ndarray:
        return self.scores.std(axis=(0, 2))

    @property
    def morf_curve(self) -> np.ndarray:
        """(L, Q) mean Δ_MoRF(q) per layer."""
        return self.morf.mean(axis=(0, 2))

    @property
    def lerf_curve(self) -> np.ndarray:
        return self.lerf.mean(axis=(0, 2))

    @property
    def argmax(self) -> int:
        """Position of the maximum in ``layers`` (see ``max_index`` for the model's index)."""
        return int(np.argmax(self.curve))

    @property
    def max_index(self) -> int:
        """The model's layer index (as in ``camonnx layers``) of the maximum."""
        return int(self.layer_indices[self.argmax])

    @property
    def max(self) -> float:
        return float(self.curve[self.argmax])

    @property
    def max_layer(self) -> str:
        return self.layers[self.argmax]

    @property
    def mean(self) -> float:
        return float(self.curve.mean())

    def summary(self) -> str:
        n_images = self.scores.shape[2]
        return (f"{self.method}: max ybROAD {self.max:+.4f} at layer {self.max_index} "
                f"({self.max_layer}), mean {self.mean:+.4f} over {len(self.layers)} layers, "
                f"{n_images} image(s), {self.trials} trial(s)")

    def timing_summary(self) -> str:
        t = self.timings
        return (f"explain {t.get('explain', 0):.1f}s, rank {t.get('rank', 0):.1f}s, imputation "
                f"{t.get('impute', 0):.1f}s, forward {t.get('forward', 0):.1f}s "
                f"({t.get('forward_images', 0)} images), total {t.get('total', 0):.1f}s")

    def to_dict(self) -> dict:
        return {
            "method": self.method, "model": self.model, "layers": self.layers,
            "layer_indices": self.layer_indices,
            "fractions": list(self.fractions), "trials": self.trials, "seed": self.seed,
            "targets": self.targets, "target_labels": self.labels,
            "curve": self.curve.tolist(), "curve_std": self.curve_std.tolist(),
            "max": self.max, "argmax": self.argmax, "max_index": self.max_index,
            "max_layer": self.max_layer, "mean": self.mean,
            "morf_curve": self.morf_curve.tolist(), "lerf_curve": self.lerf_curve.tolist(),
            "scores": self.scores.tolist(), "base_probability": self.base_probability.tolist(),
            "timings": self.timings, "solver": self.solver, "options": self.options,
        }

    def to_csv(self, path) -> Path:
        return write_csv([self], path)

    def to_json(self, path) -> Path:
        return write_json([self], path)

    def plot(self, path, title: str | None = None) -> Path:
        return plot_curves([self], path, title=title)


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
    :func:`camonnx.road_impute.solve` (tol, max_iter, backend, workers)."""
    fractions = check_fractions(fractions)
    _check_common(trials, batch_size)
    total = time.perf_counter()
    indices = [layer.index for layer in explainer.select_layers(layers)]
    normalize = explain_options.pop("normalize", "none")
    tick = time.perf_counter()
    explanation = explainer.explain(images, method=method, layers=layers, targets=targets,
                                    normalize=normalize, seed=seed, progress=progress,
                                    **explain_options)
    explain_time = time.perf_counter() - tick
    if explanation.targets is None:
        raise InputError("ybROAD needs a class index per image (Δ is the softmax probability of "
                         "the target class); function targets are not supported.")
    x, _ = explainer.prepare(images)
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
        options={"normalize": normalize, "noise": noise if noise is not None else 0.01,
                 **{k: v for k, v in explain_options.items() if _jsonable(v)}})


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# writers (atomic: a temporary file beside the target, then os.replace)
# ---------------------------------------------------------------------------------------------

def _atomic(path, write) -> Path:
    """Run ``write(temp_path)`` then move the temp file onto ``path``; nothing is left at
    ``path`` (or beside it) if writing fails."""
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=parent)
    except OSError as exc:
        raise InputError(f"Cannot write {target}: {exc.strerror or exc}. Choose a writable "
                         "location.") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_csv(results: Sequence[YbRoadResult], path) -> Path:
    """One row per method and layer: the curve, its std, and the mean Δ per fraction."""
    import csv

    fractions = results[0].fractions if results else FRACTIONS

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(["method", "layer_index", "layer", "road_mean", "road_std"]
                         + [f"morf_{q:g}" for q in fractions] + [f"lerf_{q:g}" for q in fractions])
            for r in results:
                for i, name in enumerate(r.layers):
                    out.writerow([r.method, r.layer_indices[i], name, f"{r.curve[i]:.6g}",
                                  f"{r.curve_std[i]:.6g}"]
                                 + [f"{v:.6g}" for v in r.morf_curve[i]]
                                 + [f"{v:.6g}" for v in r.lerf_curve[i]])

    return _atomic(path, write)


def write_json(results: Sequence[YbRoadResult], path) -> Path:
    """One object per method (:meth:`YbRoadResult.to_dict`), under ``"results"``."""
    doc = {"results": [r.to_dict() for r in results]}

    def write(tmp):
        Path(tmp).write_text(json.dumps(doc, indent=1), encoding="utf-8")

    return _atomic(path, write)


def plot_curves(results: Sequence[YbRoadResult], path, title: str | None = None) -> Path:
    """ybROAD curves over the layer index (one per method, ± std band), each maximum marked,
    layer names as rotated ticks (thinned to ≤ 40 labels). PNG via matplotlib's Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not results:
        raise InputError("Nothing to plot: no ybROAD results.")
    longest = max(results, key=lambda r: len(r.layers))
    names, numbers = longest.layers, longest.layer_indices
    n = len(names)
    fig = Figure(figsize=(min(max(8.0, 0.22 * n), 24.0), 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    idx_all = np.arange(n)
    for r in results:
        idx = np.arange(len(r.layers))
        line, = ax.plot(idx, r.curve, marker=".", label=f"{r.method} (max {r.max:+.3f} at layer "
                                                        f"{r.max_index}, mean {r.mean:+.3f})")
        if r.scores.shape[0] * r.scores.shape[2] > 1:
            ax.fill_between(idx, r.curve - r.curve_std, r.curve + r.curve_std,
                            color=line.get_color(), alpha=0.15, linewidth=0)
        ax.plot([r.argmax], [r.max], marker="*", markersize=14, color=line.get_color(),
                markeredgecolor="black", linestyle="none")
        ax.annotate(r.max_layer, (r.argmax, r.max), textcoords="offset points", xytext=(6, 6),
                    fontsize=7)
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    step = max(1, math.ceil(n / 40))
    ticks = idx_all[::step]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{numbers[i]}: {names[i]}" if len(names[i]) <= 32
                        else f"{numbers[i]}: …{names[i][-30:]}" for i in ticks], rotation=90, fontsize=6)
    ax.set_xlabel("layer (model index: name, topological order)")
    ax.set_ylabel("ROAD = (mean Δ LeRF − mean Δ MoRF) / 2")
    first = results[0]
    fractions = ", ".join(f"{q:g}" for q in first.fractions)
    ax.set_title(title or f"ybROAD — {Path(first.model).name}, {first.scores.shape[2]} image(s), "
                          f"{first.trials} trial(s), fractions {fractions}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
