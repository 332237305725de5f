"""Faithfulness metrics by name (formulas: docs/metrics.md; adding one:
docs/extending.md#add-a-metric).

Every metric scores the maps of many layers and images at once through one interface
(:class:`camonnx.metrics.base.Metric`): it takes a :class:`~camonnx.metrics.base.MapBatch` (the
prepared images, their maps (L, N, H, W), the target classes) and returns
:class:`~camonnx.metrics.base.MetricScores`: a score per trial, layer and image, with the
components it was made of. So every metric gives a curve over depth (ybROAD is ROAD's), and the
dataset audit runs any of them.

Importing this package is cheap: :data:`CATALOGUE` names every metric, the module that defines
it, and whether higher is better, so the command line can list metrics without torch. A new
metric is a new module plus one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from camonnx.errors import unknown_name_error

if TYPE_CHECKING:
    from camonnx.metrics.base import Metric


@dataclass(frozen=True)
class MetricEntry:
    """Where a metric lives (a module in camonnx.metrics), its class, whether a higher score is
    more faithful, and one line on what it measures."""

    module: str
    cls: str
    higher_is_better: bool
    summary: str


#: Every registered metric. A new metric is a new module plus one line here.
CATALOGUE: dict[str, MetricEntry] = {
    "deletion": MetricEntry("deletion", "Deletion", False,
                            "Deletion: AUC of p_c as the most relevant pixels are blurred away"),
    "drop": MetricEntry("drop", "Drop", False,
                        "Average Drop: max(0, p_c(x) − p_c(x ⊙ map)) / p_c(x), in %"),
    "increase": MetricEntry("drop", "Increase", True,
                            "Increase in Confidence: 100 · 1[p_c(x ⊙ map) > p_c(x)]"),
    "insertion": MetricEntry("insertion", "Insertion", True,
                             "Insertion: AUC of p_c as the most relevant pixels are restored "
                             "into a blurred copy"),
    "road": MetricEntry("road", "Road", True,
                        "ROAD: (mean Δ LeRF − mean Δ MoRF) / 2 under noisy linear imputation"),
}


def get_metric(name: str, **options: Any) -> Metric:
    """A metric instance by name, its options checked up front; an unknown name lists the known
    ones."""
    key = name.strip().lower()
    if key not in CATALOGUE:
        raise unknown_name_error("metric", name, CATALOGUE,
                                 f"Known metrics: {', '.join(sorted(CATALOGUE))}.")
    entry = CATALOGUE[key]
    cls = getattr(importlib.import_module(f"camonnx.metrics.{entry.module}"), entry.cls)
    return cls(**options)
