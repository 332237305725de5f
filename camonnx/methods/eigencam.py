"""Eigen-CAM (Muhammad & Yeasin, 2020)."""

import torch

from camonnx.methods import CamMethod, Context, LayerData, register


def principal_projection(features: torch.Tensor) -> torch.Tensor:
    """Projection of (N, K, h, w) features on their first principal component, ReLU'd: rows = the
    hw positions, columns = the K channels, each column centred; M = ReLU(X v₁) with v₁ the first
    right singular vector, its sign chosen so that Σ X v₁ > 0 (the SVD leaves the sign arbitrary;
    reference code does not fix it)."""
    n, k, h, w = features.shape
    x = features.reshape(n, k, h * w).transpose(1, 2).double()  # (N, hw, K)
    x = x - x.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    projection = x @ vh[:, 0, :].unsqueeze(-1)  # (N, hw, 1)
    sign = torch.where(projection.sum(dim=(1, 2), keepdim=True) < 0, -1.0, 1.0)
    return torch.relu(sign * projection).reshape(n, h, w).float()


@register
class EigenCAM(CamMethod):
    """M = ReLU(X v₁), X = A as (hw × K) with centred columns, v₁ its first right singular vector."""

    name = "eigencam"
    uses_gradients = False

    def raw_map(self, data: LayerData, ctx: Context) -> torch.Tensor:
        return principal_projection(data.activations)
