"""Insertion (Petsiuk et al., BMVC 2018) as a metric: docs/metrics.md#insertion.

Starting from a blurred copy of the image (σ = 5 pixels), the most relevant pixels first, 224 a
step, are put back; p_k = softmax probability of the target after step k; the score is the
trapezoid area under p over the fraction of pixels inserted, f ∈ [0, 1]. **Higher is better**: a
faithful map names first the pixels that bring the class back. The shared steps are in
:mod:`camonnx.metrics.stepwise`.
"""

from __future__ import annotations

from camonnx.metrics.stepwise import Stepwise


class Insertion(Stepwise):
    """AUC_f p_c(blurred x with its f·H·W most relevant pixels restored), f from 0 to 1; higher
    is better."""

    name = "insertion"
    higher_is_better = True
    inserting = True
