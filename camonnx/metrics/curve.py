"""A metric over depth: one method's scores at every explained layer, and its files.

:class:`LayerCurve` is what every per-layer result shares (the curve, its spread, the best
layer); :class:`MetricCurve` is the result of :func:`camonnx.metrics.evaluate.evaluate` for one
(metric, method); ROAD's :class:`camonnx.road_report.YbRoadResult` is the same curve with ROAD's
own fields. For scores s (T, L, N) over trials, layers and images:

    curve[l] = mean_{t,n} s[t, l, n],    curve_std[l] = std_{t,n} s[t, l, n]

and the best layer is the argmax of the curve (argmin for a metric where lower is better, e.g.
deletion AUC). Files are written atomically (:mod:`camonnx.writer`); the plot is drawn on a
matplotlib ``Figure`` with its own Agg canvas.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from camonnx.errors import InputError
from camonnx.writer import write_file, write_text


class LayerCurve:
    """Curve summaries of ``scores`` (T, L, N) over ``layers`` (names) and ``layer_indices``
    (the model's indices); ``higher_is_better`` picks the best layer."""

    scores: np.ndarray
    layers: list[str]
    layer_indices: list[int]
    higher_is_better: bool = True

    @property
    def curve(self) -> np.ndarray:
        return self.scores.mean(axis=(0, 2))

    @property
    def curve_std(self) -> np.ndarray:
        return self.scores.std(axis=(0, 2))

    @property
    def best(self) -> int:
        """Position in ``layers`` of the best layer (the curve's max, or min when lower is
        better)."""
        return int(np.argmax(self.curve) if self.higher_is_better else np.argmin(self.curve))

    @property
    def best_index(self) -> int:
        """The model's layer index (as in ``camonnx layers``) of the best layer."""
        return int(self.layer_indices[self.best])

    @property
    def best_value(self) -> float:
        return float(self.curve[self.best])

    @property
    def best_layer(self) -> str:
        return self.layers[self.best]

    @property
    def mean(self) -> float:
        return float(self.curve.mean())


@dataclass
class MetricCurve(LayerCurve):
    """One metric of one method's maps at every explained layer.

    ``scores`` (T, L, N); ``components``: name → (T, L, N, …) (:class:`MetricScores`), with
    ``axes`` naming their last axis; ``targets`` / ``labels``: the class per image;
    ``timings``: the explanation's and the metric's seconds and ``forward_images``."""

    metric: str
    method: str
    model: str
    layers: list[str]
    layer_indices: list[int]
    scores: np.ndarray
    components: dict[str, np.ndarray]
    base_probability: np.ndarray
    targets: list[int]
    higher_is_better: bool = True
    axes: dict = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    trials: int = 1
    seed: int = 0
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    def summary(self) -> str:
        which = "max" if self.higher_is_better else "min"
        return (f"{self.metric} of {self.method}: {which} {self.best_value:+.4f} at layer "
                f"{self.best_index} ({self.best_layer}), mean {self.mean:+.4f} over "
                f"{len(self.layers)} layers, {self.scores.shape[2]} image(s), {self.trials} trial(s)")

    def timing_summary(self) -> str:
        t = self.timings
        forward = t.get("forward", 0.0)
        own = max(0.0, t.get("metric", 0.0) - forward)
        ratio = f", {own / forward:.2f}× the forwards" if forward > 0 else ""
        return (f"explain {t.get('explain', 0):.1f}s, {self.metric} {t.get('metric', 0):.1f}s of "
                f"which forward {forward:.1f}s ({t.get('forward_images', 0)} images){ratio}")

    def component_curves(self) -> dict[str, list]:
        """Each component averaged over trials and images: (L,) or (L, …)."""
        return {name: np.asarray(value).mean(axis=(0, 2)).tolist()
                for name, value in self.components.items()}

    def to_dict(self) -> dict:
        return {
            "metric": self.metric, "method": self.method, "model": self.model,
            "higher_is_better": self.higher_is_better,
            "layers": self.layers, "layer_indices": self.layer_indices,
            "trials": self.trials, "seed": self.seed,
            "targets": self.targets, "target_labels": self.labels,
            "curve": self.curve.tolist(), "curve_std": self.curve_std.tolist(),
            "best": self.best, "best_index": self.best_index, "best_layer": self.best_layer,
            "best_value": self.best_value, "mean": self.mean,
            "scores": self.scores.tolist(), "components": self.component_curves(),
            "axes": {k: [a, list(v)] for k, (a, v) in self.axes.items()},
            "base_probability": np.asarray(self.base_probability).tolist(),
            "timings": self.timings, "info": self.info, "options": self.options,
        }


def write_csv(results: Sequence[MetricCurve], path) -> Path:
    """One row per metric, method and layer: the curve value and its std."""
    import csv

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(["metric", "method", "layer_index", "layer", "mean", "std",
                          "higher_is_better"])
            for r in results:
                for i, name in enumerate(r.layers):
                    out.writerow([r.metric, r.method, r.layer_indices[i], name,
                                  f"{r.curve[i]:.6g}", f"{r.curve_std[i]:.6g}",
                                  int(r.higher_is_better)])

    return write_file(path, write)


def write_json(results: Sequence[MetricCurve], path) -> Path:
    """One object per (metric, method) (:meth:`MetricCurve.to_dict`), under ``"results"``."""
    return write_text(path, json.dumps({"results": [r.to_dict() for r in results]}, indent=1))


def layer_axis(ax, names: Sequence[str], numbers: Sequence[int], labels: bool = True) -> None:
    """The x axis every per-layer plot shares: one tick per layer (thinned to ≤ 40), labelled
    "index: name" (long names cut to their last 30 characters, rotated) when ``labels``, and a
    light grid."""
    n = len(names)
    ticks = np.arange(n)[::max(1, math.ceil(n / 40))]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{numbers[i]}: {names[i]}" if len(names[i]) <= 32
                        else f"{numbers[i]}: …{names[i][-30:]}" for i in ticks] if labels else [],
                       rotation=90, fontsize=6)
    if labels:
        ax.set_xlabel("layer (model index: name, topological order)")
    ax.grid(alpha=0.3)


@dataclass
class PanelCurve:
    """One line of a per-layer plot: ``values`` (L,) with an optional band [``low``, ``high``],
    the ``best`` position starred (None: none), in the panel of ``metric``."""

    metric: str
    label: str
    values: np.ndarray
    higher_is_better: bool
    best: int | None = None
    low: np.ndarray | None = None
    high: np.ndarray | None = None


def plot_panels(curves: Sequence[PanelCurve], names: Sequence[str], numbers: Sequence[int],
                title: str, path) -> Path:
    """One panel per metric, its curves over the layer index with their bands and best layers
    starred, the layer axis of :func:`layer_axis` under the last panel. PNG via matplotlib's Agg
    backend (a ``Figure`` with its own canvas: no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = list(dict.fromkeys(c.metric for c in curves))
    n = len(names)
    fig = Figure(figsize=(min(max(8.0, 0.22 * n), 24.0), 3.6 * len(metrics) + 1.6), dpi=110)
    FigureCanvasAgg(fig)
    for row, metric in enumerate(metrics):
        ax = fig.add_subplot(len(metrics), 1, row + 1)
        panel = [c for c in curves if c.metric == metric]
        for c in panel:
            idx = np.arange(len(c.values))
            line, = ax.plot(idx, c.values, marker=".", label=c.label)
            if c.low is not None and c.high is not None:
                ax.fill_between(idx, c.low, c.high, color=line.get_color(), alpha=0.15, linewidth=0)
            if c.best is not None:
                ax.plot([c.best], [c.values[c.best]], marker="*", markersize=13,
                        color=line.get_color(), markeredgecolor="black", linestyle="none")
        better = "higher" if panel[0].higher_is_better else "lower"
        ax.set_ylabel(f"{metric} ({better} is better)", fontsize=8)
        layer_axis(ax, names, numbers, labels=row == len(metrics) - 1)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return write_file(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_curves(results: Sequence[MetricCurve], path, title: str | None = None) -> Path:
    """One panel per metric, one curve per method over the layer index (± std band when there
    are several images or trials), the best layer starred (:func:`plot_panels`)."""
    if not results:
        raise InputError("Nothing to plot: no metric results.")
    longest = max(results, key=lambda r: len(r.layers))
    spread = lambda r: r.scores.shape[0] * r.scores.shape[2] > 1  # noqa: E731
    curves = [PanelCurve(r.metric, f"{r.method} (best {r.best_value:+.3f} at layer {r.best_index})",
                         r.curve, r.higher_is_better, r.best,
                         r.curve - r.curve_std if spread(r) else None,
                         r.curve + r.curve_std if spread(r) else None) for r in results]
    first = results[0]
    return plot_panels(curves, longest.layers, longest.layer_indices,
                       title or f"Faithfulness per layer — {Path(first.model).name}, "
                                f"{first.scores.shape[2]} image(s), {first.trials} trial(s)", path)
