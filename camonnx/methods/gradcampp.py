"""Grad-CAM++ (Chattopadhay et al., 2018)."""

import torch

from camonnx.methods.base import CamMethod, Context, LayerData, register

EPS = 1e-6


def plusplus_weights(d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor,
                     activations: torch.Tensor) -> torch.Tensor:
    """w_k = Σ_ij α_kij ReLU(D1_kij), α = D2 / (2·D2 + S_k·D3 + ε), S_k = Σ_ab A_kab, ε = 1e-6;
    α = 0 where the denominator is 0. Grad-CAM++ uses D1 = g, D2 = g², D3 = g³ (shared with
    Smooth Grad-CAM++, which averages them over noisy copies)."""
    s = activations.sum(dim=(2, 3), keepdim=True)
    denominator = 2 * d2 + s * d3 + EPS
    alpha = torch.where(denominator != 0, d2 / torch.where(denominator != 0, denominator, 1.0), 0.0)
    return (alpha * torch.relu(d1)).sum(dim=(2, 3))


@register
class GradCAMPlusPlus(CamMethod):
    """α_kij = g² / (2g² + S_k g³ + ε), ε = 1e-6, S_k = Σ_ab A_kab;
    w_k = Σ_ij α_kij ReLU(g_kij);  M = ReLU(Σ_k w_k A_k)."""

    name = "gradcam++"

    def weights(self, data: LayerData, ctx: Context) -> torch.Tensor:
        g = data.gradients
        g2 = g * g
        return plusplus_weights(g, g2, g2 * g, data.activations)
