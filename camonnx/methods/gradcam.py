"""Grad-CAM (Selvaraju et al., 2017)."""

import torch

from camonnx.methods.base import CamMethod, Context, LayerData, register


@register
class GradCAM(CamMethod):
    """w_k = mean_ij g_kij;  M = ReLU(Σ_k w_k A_k)."""

    name = "gradcam"

    def weights(self, data: LayerData, ctx: Context) -> torch.Tensor:
        return data.gradients.mean(dim=(2, 3))
