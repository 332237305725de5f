"""Masking an image in the model's input space: the one rule shared by Average Drop / Increase in
Confidence (:mod:`camonnx.metrics.drop`) and RISE (:mod:`camonnx.methods.rise`)
(docs/metrics.md#masking).

The papers write x ⊙ m for an image x and a mask m ∈ [0, 1]^(H×W). camonnx applies it to the
prepared image, in the model's (normalised) input space, every channel alike:

    (x ⊙ m)[c, i, j] = x[c, i, j] · m[i, j]

so a masked-out pixel (m = 0) becomes 0 in the input space, which is the preprocessing's **mean
colour** ((v·scale − mean) / std = 0 ⇔ v·scale = mean): the ImageNet mean colour for
torchvision's recipe, mid-grey for a [−1, 1] (tf) model, the mean pixel for Caffe's. The papers
multiply the 0–1 image, whose masked pixels are black; the authors' RISE code, OpenVINO XAI's
RISE, pytorch-grad-cam's confidence metrics and camonnx's Score-CAM all multiply the normalised
tensor, as here (docs/deviations.md#masking).
"""

from __future__ import annotations

import torch


def masked(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """x ⊙ m: prepared images ``x`` (C, H, W) or (M, C, H, W) times masks (M, H, W) (or (H, W)),
    broadcast over the channels: (M, C, H, W)."""
    return x * masks.unsqueeze(-3).to(x.dtype)
