"""HiResCAM (Draelos & Carin, 2020)."""

import torch

from camonnx.methods.base import CamMethod, Context, LayerData, register


@register
class HiResCAM(CamMethod):
    """M = ReLU(Σ_k g_k ⊙ A_k)."""

    name = "hirescam"
    combine = "elementwise"

    def weights(self, data: LayerData, ctx: Context) -> torch.Tensor:
        return data.gradients
