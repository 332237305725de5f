"""Eigen-Grad-CAM: Eigen-CAM on the gradient-weighted activations."""

import torch

from camonnx.methods.base import CamMethod, Context, LayerData, register
from camonnx.methods.eigencam import principal_projection


@register
class EigenGradCAM(CamMethod):
    """M = eigencam(g ⊙ A)."""

    name = "eigengradcam"

    def raw_map(self, data: LayerData, ctx: Context) -> torch.Tensor:
        return principal_projection(data.gradients * data.activations)
