"""LayerCAM (Jiang et al., 2021)."""

import torch

from camonnx.methods.base import CamMethod, Context, LayerData, register


@register
class LayerCAM(CamMethod):
    """M = ReLU(Σ_k ReLU(g_k) ⊙ A_k)."""

    name = "layercam"
    combine = "elementwise"

    def weights(self, data: LayerData, ctx: Context) -> torch.Tensor:
        return torch.relu(data.gradients)
