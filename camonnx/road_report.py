"""ROAD's results and their reports (docs/metrics.md#ybroad): the result types, CSV, JSON and the plot.

One job: hold what :func:`camonnx.road.road_score` and :func:`camonnx.ybroad` computed and write
it out. :class:`RoadScore` holds ROAD per trial and image, :class:`YbRoadResult` per trial, layer
and image, with

    ROAD = (mean_q Δ_LeRF(q) − mean_q Δ_MoRF(q)) / 2,    Δ(q) = p_c(imputed) − p_c(x),

and the summaries as properties: the ybROAD curve (the mean over trials and images per layer),
its standard deviation, its maximum, the layer attaining it, and its mean. Every file is written
atomically through :func:`camonnx.writer.write_file`; the plot is drawn on a matplotlib
``Figure`` with its own Agg canvas (no pyplot, so a notebook's backend is left alone).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from camonnx.errors import InputError
from camonnx.metrics.curve import LayerCurve, layer_axis
from camonnx.road_masks import FRACTIONS
from camonnx.writer import write_file, write_text


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


@dataclass
class YbRoadResult(LayerCurve):
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
    def morf_curve(self) -> np.ndarray:
        """(L, Q) mean Δ_MoRF(q) per layer."""
        return self.morf.mean(axis=(0, 2))

    @property
    def lerf_curve(self) -> np.ndarray:
        return self.lerf.mean(axis=(0, 2))

    # ROAD's names for the best layer of the curve (higher is better)
    @property
    def argmax(self) -> int:
        """Position of the maximum in ``layers`` (see ``max_index`` for the model's index)."""
        return self.best

    @property
    def max_index(self) -> int:
        """The model's layer index (as in ``camonnx layers``) of the maximum."""
        return self.best_index

    @property
    def max(self) -> float:
        return self.best_value

    @property
    def max_layer(self) -> str:
        return self.best_layer

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

    return write_file(path, write)


def write_json(results: Sequence[YbRoadResult], path) -> Path:
    """One object per method (:meth:`YbRoadResult.to_dict`), under ``"results"``."""
    doc = {"results": [r.to_dict() for r in results]}
    return write_text(path, json.dumps(doc, indent=1))


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
    layer_axis(ax, names, numbers)
    ax.set_ylabel("ROAD = (mean Δ LeRF − mean Δ MoRF) / 2")
    first = results[0]
    fractions = ", ".join(f"{q:g}" for q in first.fractions)
    ax.set_title(title or f"ybROAD — {Path(first.model).name}, {first.scores.shape[2]} image(s), "
                          f"{first.trials} trial(s), fractions {fractions}", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return write_file(path, lambda tmp: fig.savefig(tmp, format="png"))
