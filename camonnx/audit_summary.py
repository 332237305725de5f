"""An audit's summary: per (metric, method, layer) over the images, with bootstrap confidence
intervals, the best layer, per-class tables and the failures (docs/audit.md#summary).

For one (metric, method, layer) and the images i = 1 … n scored there (status ok), with trial
scores s_{i,t}:

    v_i = mean_t s_{i,t}                 (trials averaged first: the image is the unit)
    mean = (1/n) Σ_i v_i,   std = sqrt((1/n) Σ_i (v_i − mean)²)

and the 95 % confidence interval of the mean is the percentile bootstrap over images: B = 2,000
resamples, each n indices drawn with replacement, all drawn at once as
``numpy.random.default_rng(key).integers(0, n, size=(B, n))`` with key = (seed, h(metric),
h(method), layer index, h(group)) (h: :func:`camonnx.audit_run.stable_hash`; group "all" or the
class label), and [lo, hi] = the 2.5 % and 97.5 % quantiles (numpy's linear rule) of the B
resampled means. The best layer of a method maximises the mean (minimises it for a metric
where lower is better); ``best_overlaps_runner_up`` says whether its interval meets the next
best layer's (when it does, the data do not single out one best layer).

Files (each atomic, :mod:`camonnx.writer`): ``summary.json`` (schema in docs/audit.md#summary),
``summary.csv`` (one row per metric, method, layer and class) and ``summary.png`` (one panel
per metric, one curve per method with its interval band, the best layer starred, as
:func:`camonnx.metrics.curve.plot_curves` draws them).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from camonnx.writer import write_file, write_text

RESAMPLES = 2000
CONFIDENCE = 0.95
ALL = "all"


def bootstrap_ci(values: np.ndarray, key: tuple[int, ...], resamples: int = RESAMPLES,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (n,), seeded by ``key``."""
    values = np.asarray(values, np.float64)
    index = np.random.default_rng(key).integers(0, len(values), size=(resamples, len(values)))
    means = values[index].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def group_key(seed: int, metric: str, method: str, layer_index: int, group: str) -> tuple[int, ...]:
    """The bootstrap seed of one (metric, method, layer, group)."""
    from camonnx.audit_run import stable_hash

    return (int(seed) & (2 ** 63 - 1), stable_hash(metric), stable_hash(method), int(layer_index),
            stable_hash(group))


@dataclass
class Stats:
    """n, mean, std and the interval of one (metric, method, layer, group); None values when
    no image was scored there."""

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None

    @classmethod
    def of(cls, values: list[float], key: tuple[int, ...]) -> "Stats":
        if not values:
            return cls(0, None, None, None, None)
        v = np.asarray(values, np.float64)
        lo, hi = bootstrap_ci(v, key)
        return cls(len(v), float(v.mean()), float(v.std()), lo, hi)


@dataclass
class AuditCurve:
    """One (metric, method) over the layers: overall and per class."""

    metric: str
    method: str
    higher_is_better: bool
    layer_indices: list[int]
    layers: list[str]
    stats: list[Stats]
    per_class: list[tuple[int | None, str, list[Stats]]] = field(default_factory=list)

    def ranking(self) -> list[int]:
        """Positions of the scored layers, best first."""
        scored = [i for i, s in enumerate(self.stats) if s.n > 0]
        sign = -1.0 if self.higher_is_better else 1.0
        return sorted(scored, key=lambda i: (sign * self.stats[i].mean, i))

    @property
    def best(self) -> int | None:
        ranked = self.ranking()
        return ranked[0] if ranked else None

    @property
    def runner_up(self) -> int | None:
        ranked = self.ranking()
        return ranked[1] if len(ranked) > 1 else None

    @property
    def overlaps(self) -> bool | None:
        """Whether the best layer's interval meets the runner-up's."""
        best, second = self.best, self.runner_up
        if best is None or second is None:
            return None
        a, b = self.stats[best], self.stats[second]
        return bool(a.ci_low <= b.ci_high and b.ci_low <= a.ci_high)

    def _layer(self, position: int | None) -> dict | None:
        if position is None:
            return None
        s = self.stats[position]
        return {"position": position, "layer_index": self.layer_indices[position],
                "layer": self.layers[position], "mean": s.mean, "ci_low": s.ci_low,
                "ci_high": s.ci_high}

    def to_dict(self) -> dict:
        def columns(stats: list[Stats]) -> dict:
            return {k: [getattr(s, k) for s in stats] for k in ("n", "mean", "std", "ci_low",
                                                                 "ci_high")}
        return {"metric": self.metric, "method": self.method,
                "higher_is_better": self.higher_is_better, "layer_indices": self.layer_indices,
                "layers": self.layers, **columns(self.stats), "best": self._layer(self.best),
                "runner_up": self._layer(self.runner_up),
                "best_overlaps_runner_up": self.overlaps,
                "per_class": [{"class": c, "label": label, **columns(stats)}
                              for c, label, stats in self.per_class]}


@dataclass
class AuditSummary:
    """What :func:`camonnx.audit_run.audit` returns: the curves and the failures of the whole run."""

    model: str
    model_sha256: str
    dataset: str
    images: int
    scored: int
    failures: list[dict]
    trials: int
    seed: int
    target: str
    curves: list[AuditCurve]

    @property
    def failed(self) -> int:
        return len(self.failures)

    def curve(self, metric: str, method: str) -> AuditCurve:
        return next(c for c in self.curves if c.metric == metric and c.method == method)

    def to_dict(self) -> dict:
        return {"kind": "camonnx-audit-summary", "format": 1, "model": self.model,
                "model_sha256": self.model_sha256, "dataset": self.dataset,
                "images": self.images, "scored": self.scored, "failed": self.failed,
                "failures": self.failures, "trials": self.trials, "seed": self.seed,
                "target": self.target,
                "bootstrap": {"resamples": RESAMPLES, "confidence": CONFIDENCE,
                              "method": "percentile", "unit": "image (trials averaged first)"},
                "curves": [c.to_dict() for c in self.curves]}

    def text(self) -> str:
        """One line per (metric, method): the best layer, its interval, and whether the
        runner-up's interval overlaps it."""
        lines = [f"{self.scored} of {self.images} image(s) scored, {self.failed} failed, "
                 f"{self.trials} trial(s); 95% bootstrap CI over images"]
        for c in self.curves:
            best, second = c._layer(c.best), c._layer(c.runner_up)
            if best is None:
                lines.append(f"{c.metric} of {c.method}: no image scored")
                continue
            line = (f"{c.metric} of {c.method}: best layer {best['layer_index']} "
                    f"({best['layer']}) {best['mean']:+.4f} [{best['ci_low']:+.4f}, "
                    f"{best['ci_high']:+.4f}]")
            if second is not None:
                line += (f"; runner-up {second['layer_index']} {second['mean']:+.4f}, CIs "
                         f"{'overlap' if c.overlaps else 'apart'}")
            lines.append(line)
        return "\n".join(lines)

    def write(self, out: str | Path) -> list[Path]:
        out = Path(out)
        return [write_text(out / "summary.json", json.dumps(_finite(self.to_dict()), indent=1)),
                write_csv(self, out / "summary.csv"), plot(self, out / "summary.png")]


def _finite(value):
    """JSON without NaN: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def summarise(table, manifest: dict) -> AuditSummary:
    """The :class:`AuditSummary` of an audit's rows (:meth:`camonnx.audit_store.Store.read`)
    and its manifest."""
    options = manifest["options"]
    seed = int(options["seed"])
    columns = {} if table is None else {
        name: table.column(name).to_pylist()
        for name in ("image_id", "path", "label", "label_name", "method", "layer_index",
                     "metric", "score", "status", "reason")}
    n_rows = len(columns.get("image_id", []))
    trial_scores: dict[tuple, list[float]] = defaultdict(list)  # (metric, method, layer, image)
    image_class: dict[int, tuple[int | None, str | None]] = {}
    failures: dict[int, dict] = {}
    scored: set[int] = set()
    for r in range(n_rows):
        image = columns["image_id"][r]
        image_class[image] = (columns["label"][r], columns["label_name"][r])
        if columns["status"][r] == "ok":
            scored.add(image)
            trial_scores[(columns["metric"][r], columns["method"][r], columns["layer_index"][r],
                          image)].append(columns["score"][r])
        elif image not in failures:
            failures[image] = {"image_id": image, "path": columns["path"][r],
                               "reason": columns["reason"][r]}
    per_image: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for (metric, method, layer, image), scores in sorted(trial_scores.items()):
        per_image[(metric, method, layer)].append((image, float(np.mean(scores))))
    classes = sorted({c for c in image_class.values() if c[1] is not None},
                     key=lambda c: (c[0] is None, c[0] if c[0] is not None else 0, c[1]))
    curves = []
    for metric in options["metrics"]:
        for method in options["methods"]:
            stats, by_class = [], {c: [] for c in classes}
            for layer in options["layers"]:
                values = per_image.get((metric, method, layer), [])
                stats.append(Stats.of([v for _, v in values],
                                      group_key(seed, metric, method, layer, ALL)))
                for c in classes:
                    mine = [v for image, v in values if image_class[image] == c]
                    by_class[c].append(Stats.of(mine, group_key(seed, metric, method, layer,
                                                                c[1])))
            curves.append(AuditCurve(
                metric, method, bool(options["higher_is_better"][metric]),
                list(options["layers"]), list(options["layer_names"]), stats,
                [(c[0], c[1], by_class[c]) for c in classes]))
    return AuditSummary(
        model=manifest["model"]["path"], model_sha256=manifest["model"]["sha256"],
        dataset=manifest["dataset"]["source"], images=int(manifest["dataset"]["images"]),
        scored=len(scored), failures=[failures[i] for i in sorted(failures)],
        trials=int(options["trials"]), seed=seed, target=options["target"], curves=curves)


def write_csv(summary: AuditSummary, path) -> Path:
    """One row per metric, method, layer and class ("all" first)."""
    import csv

    def cell(v) -> str:
        return "" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(["metric", "method", "layer_index", "layer", "class", "n", "mean",
                          "std", "ci_low", "ci_high", "best"])
            for c in summary.curves:
                groups = [(ALL, c.stats)] + [(label, stats) for _, label, stats in c.per_class]
                for name, stats in groups:
                    for i, s in enumerate(stats):
                        best = int(name == ALL and i == c.best)
                        out.writerow([c.metric, c.method, c.layer_indices[i], c.layers[i], name,
                                      s.n] + [cell(getattr(s, k)) for k in
                                              ("mean", "std", "ci_low", "ci_high")] + [best])

    return write_file(path, write)


def plot(summary: AuditSummary, path) -> Path:
    """One panel per metric, one curve per method over the layers with its 95 % interval band
    and the best layer starred (:func:`camonnx.metrics.curve.plot_panels`)."""
    from camonnx.metrics.curve import PanelCurve, plot_panels

    def values(c, key):
        return np.array([np.nan if getattr(s, key) is None else getattr(s, key) for s in c.stats])

    curves = []
    for c in summary.curves:
        best = c._layer(c.best)
        label = c.method if best is None else \
            f"{c.method} (best {best['mean']:+.3f} at layer {best['layer_index']})"
        curves.append(PanelCurve(c.metric, label, values(c, "mean"), c.higher_is_better,
                                 None if best is None else c.best, values(c, "ci_low"),
                                 values(c, "ci_high")))
    first = summary.curves[0]
    return plot_panels(curves, first.layers, first.layer_indices,
                       f"Audit — {Path(summary.model).name}, {summary.scored} of "
                       f"{summary.images} image(s) ({summary.failed} failed), {summary.trials} "
                       "trial(s); band: 95% bootstrap CI of the mean over images", path)
