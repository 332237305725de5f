"""The sanity checks' result and its reports (docs/sanity.md#reading): CSV, JSON and the plot.

One job: hold what :func:`camonnx.sanity_checks.sanity` measured and write it out. With S steps
(randomisation depths), L layers and N images, ``similarity[metric][method]`` is (S, L, N);
``mean`` averages over the images, ``curve`` / ``curve_std`` over layers and images (what the
plot shows). Every file goes through :func:`camonnx.writer.write_file`; the plot is drawn on a
matplotlib ``Figure`` with its own Agg canvas (no pyplot), as the ROAD report's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from camonnx.similarity import METRICS
from camonnx.writer import write_file, write_text

_TITLES = {"spearman": "Spearman rank correlation", "ssim": "SSIM (maps min-max'd to [0, 1])",
           "hog": "Pearson correlation of HOG features"}


@dataclass
class SanityResult:
    """The model-parameter randomisation test (and random-logit test) of some methods.

    ``steps``: the depth of each step; ``randomised``: per step, the names of the parameter
    layers randomised; ``similarity[metric][method]``: (S, L, N); ``random_logit``: None, or
    {"classes", "class_labels", "similarity": {metric: {method: (L, N)}}}."""

    model: str
    mode: str
    seed: int
    methods: list[str]
    layers: list[str]
    layer_indices: list[int]
    targets: list[int]
    target_labels: list[str]
    parameter_layers: list[dict]
    steps: list[int]
    randomised: list[list[str]]
    similarity: dict[str, dict[str, np.ndarray]]
    random_logit: dict | None = None
    timings: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)

    @property
    def step_labels(self) -> list[str]:
        """Per step: "original", else the parameter layer randomised last (cascading: the model
        is random from the logits down to it; independent: only it)."""
        return [names[0] if names else "original" for names in self.randomised]

    @property
    def mean(self) -> dict[str, dict[str, np.ndarray]]:
        """{metric: {method: (S, L)}}: the mean over images."""
        return {k: {m: v.mean(axis=2) for m, v in by.items()} for k, by in self.similarity.items()}

    @property
    def curve(self) -> dict[str, dict[str, np.ndarray]]:
        """{metric: {method: (S,)}}: the mean over layers and images."""
        return {k: {m: v.mean(axis=(1, 2)) for m, v in by.items()} for k, by in self.similarity.items()}

    @property
    def curve_std(self) -> dict[str, dict[str, np.ndarray]]:
        return {k: {m: v.std(axis=(1, 2)) for m, v in by.items()} for k, by in self.similarity.items()}

    def random_logit_mean(self) -> dict[str, dict[str, float]] | None:
        """{metric: {method: mean over layers and images}} of the random-logit test."""
        if self.random_logit is None:
            return None
        return {k: {m: float(v.mean()) for m, v in by.items()}
                for k, by in self.random_logit["similarity"].items()}

    def summary(self) -> str:
        """Per method: each measure at depth 0 and at the deepest step, and the random-logit
        test's means."""
        lines = [f"MPRT ({self.mode}) on {Path(self.model).name}: {len(self.parameter_layers)} "
                 f"parameter layers, depths {', '.join(map(str, self.steps))}; "
                 f"{len(self.layers)} layer(s), {len(self.targets)} image(s)"]
        curve, logit = self.curve, self.random_logit_mean()
        for m in self.methods:
            parts = [f"{k} {curve[k][m][0]:.3f} → {curve[k][m][-1]:.3f}" for k in METRICS]
            line = f"  {m}: {', '.join(parts)} (depth {self.steps[0]} → {self.steps[-1]})"
            if logit is not None:
                line += "; random logit: " + ", ".join(f"{k} {logit[k][m]:.3f}" for k in METRICS)
            lines.append(line)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        as_lists = lambda d: {k: {m: np.asarray(v).tolist() for m, v in by.items()}  # noqa: E731
                              for k, by in d.items()}
        logit = None
        if self.random_logit is not None:
            logit = {"classes": list(self.random_logit["classes"]),
                     "class_labels": list(self.random_logit["class_labels"]),
                     "similarity": as_lists(self.random_logit["similarity"]),
                     "mean": self.random_logit_mean()}
        return {
            "kind": "sanity", "model": self.model, "mode": self.mode, "seed": self.seed,
            "methods": self.methods, "metrics": list(METRICS), "layers": self.layers,
            "layer_indices": self.layer_indices, "targets": self.targets,
            "target_labels": self.target_labels, "parameter_layers": self.parameter_layers,
            "steps": self.steps, "step_labels": self.step_labels, "randomised": self.randomised,
            "similarity": as_lists(self.similarity), "mean": as_lists(self.mean),
            "curve": as_lists(self.curve), "curve_std": as_lists(self.curve_std),
            "random_logit": logit, "timings": self.timings, "options": self.options,
        }

    def write_json(self, path) -> Path:
        return write_text(path, json.dumps(self.to_dict(), indent=1))

    def write_csv(self, path) -> Path:
        """One row per test, method, step and layer: mean and std over images of each measure
        (random-logit rows leave the step columns empty)."""
        import csv

        def rows():
            for m in self.methods:
                for s, depth in enumerate(self.steps):
                    for i, layer in enumerate(self.layers):
                        values = [self.similarity[k][m][s, i] for k in METRICS]
                        yield ["mprt", m, depth, self.step_labels[s], self.layer_indices[i],
                               layer, values]
                if self.random_logit is not None:
                    for i, layer in enumerate(self.layers):
                        values = [self.random_logit["similarity"][k][m][i] for k in METRICS]
                        yield ["random_logit", m, "", "", self.layer_indices[i], layer, values]

        def write(tmp):
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                out = csv.writer(fh)
                out.writerow(["test", "method", "depth", "randomised_down_to", "layer_index", "layer"]
                             + [f"{k}_{s}" for k in METRICS for s in ("mean", "std")])
                for *head, values in rows():
                    out.writerow(head + [f"{f(v):.6g}" for v in values for f in (np.mean, np.std)])

        return write_file(path, write)

    def plot(self, path, title: str | None = None) -> Path:
        """One panel per measure: the similarity over the randomisation depth per method (mean
        over layers and images, ± std band), the random-logit mean as a dashed line in the
        method's colour; x ticks name the parameter layer randomised last. PNG (Agg)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        n = len(self.steps)
        fig = Figure(figsize=(min(max(12.0, 0.9 * n * len(METRICS)), 30.0), 5.5), dpi=110)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(METRICS), sharey=True)
        x = np.arange(n)
        curve, band, logit = self.curve, self.curve_std, self.random_logit_mean()
        labels = [f"{d}: {name if len(name) <= 30 else '…' + name[-28:]}"
                  for d, name in zip(self.steps, self.step_labels)]
        for ax, metric in zip(axes, METRICS):
            for m in self.methods:
                line, = ax.plot(x, curve[metric][m], marker=".", label=m)
                ax.fill_between(x, curve[metric][m] - band[metric][m],
                                curve[metric][m] + band[metric][m], color=line.get_color(),
                                alpha=0.12, linewidth=0)
                if logit is not None:
                    ax.axhline(logit[metric][m], color=line.get_color(), linestyle="--",
                               linewidth=0.9)
            ax.axhline(0.0, color="grey", linewidth=0.6)
            ax.set_xticks(x)
            ax.set_xticklabels(labels, rotation=90, fontsize=6)
            ax.set_title(_TITLES[metric], fontsize=9)
            ax.set_xlabel("randomised down to (depth: parameter layer)" if self.mode == "cascading"
                          else "randomised alone (depth: parameter layer)", fontsize=8)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("similarity to the original model's map")
        axes[0].legend(fontsize=8, loc="best", title="dashed: random logit" if logit else None,
                       title_fontsize=7)
        fig.suptitle(title or f"Model-parameter randomisation ({self.mode}) — "
                              f"{Path(self.model).name}, {len(self.targets)} image(s), "
                              f"layer(s) {', '.join(self.layers[:3])}"
                              f"{' …' if len(self.layers) > 3 else ''}", fontsize=9)
        fig.tight_layout()
        return write_file(path, lambda tmp: fig.savefig(tmp, format="png"))
