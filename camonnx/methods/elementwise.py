"""Element-wise Grad-CAM (pytorch-grad-cam's GradCAMElementWise)."""

import torch

from camonnx.methods.base import CamMethod, Context, LayerData, register


@register
class ElementwiseCAM(CamMethod):
    """M = ReLU(Σ_k ReLU(g_k ⊙ A_k))."""

    name = "elementwise"
    combine = "elementwise_relu"

    def weights(self, data: LayerData, ctx: Context) -> torch.Tensor:
        return data.gradients
