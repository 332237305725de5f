"""Deletion (Petsiuk et al., BMVC 2018) as a metric: docs/metrics.md#deletion.

The most relevant pixels first, 224 a step, are replaced by a blurred copy of the image (σ = 5
pixels); p_k = softmax probability of the target after step k; the score is the trapezoid area
under p over the fraction of pixels removed, f ∈ [0, 1]. **Lower is better**: a faithful map
names first the pixels whose removal makes the class probability collapse. The shared steps are
in :mod:`camonnx.metrics.stepwise`.
"""

from __future__ import annotations

from camonnx.metrics.stepwise import Stepwise


class Deletion(Stepwise):
    """AUC_f p_c(x with its f·H·W most relevant pixels blurred), f from 0 to 1; lower is better."""

    name = "deletion"
    higher_is_better = False
    inserting = False
