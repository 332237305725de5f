"""XGrad-CAM (Fu et al., 2020)."""

import torch

from camonnx.methods.base import CamMethod, Context, LayerData, register

EPS = 1e-7


@register
class XGradCAM(CamMethod):
    """w_k = Σ_ij g_kij A_kij / (Σ_ij A_kij + ε), ε = 1e-7;  M = ReLU(Σ_k w_k A_k)."""

    name = "xgradcam"

    def weights(self, data: LayerData, ctx: Context) -> torch.Tensor:
        a, g = data.activations, data.gradients
        return (g * a).sum(dim=(2, 3)) / (a.sum(dim=(2, 3)) + EPS)
