"""Eigen-CAM (Muhammad & Yeasin, 2020)."""

import torch

from camonnx.methods.base import CamMethod, Context, LayerData, register


def principal_projection(features: torch.Tensor) -> torch.Tensor:
    """Projection of (N, K, h, w) features on their first principal component, ReLU'd: rows = the
    hw positions, columns = the K channels, each column centred; M = ReLU(X v₁) with v₁ the first
    right singular vector.

    The SVD leaves v₁'s sign arbitrary (reference code does not fix it). The obvious rule, a
    positive projection sum, decides nothing: a projection of centred columns always sums to
    zero (Σ_rows X = 0). Deliberate deviation (docs/deviations.md#eigencam-sign): the sign is chosen so
    that the projection correlates positively with the feature mass at each position,
    Σ_ij (X v₁)_ij · Σ_k F_kij > 0 — the principal direction points towards where the features
    are strong.
    """
    n, k, h, w = features.shape
    x = features.reshape(n, k, h * w).transpose(1, 2).double()  # (N, hw, K)
    x = x - x.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    projection = x @ vh[:, 0, :].unsqueeze(-1)  # (N, hw, 1)
    mass = features.double().sum(dim=1).reshape(n, h * w, 1)
    sign = torch.where((projection * mass).sum(dim=(1, 2), keepdim=True) < 0, -1.0, 1.0)
    return torch.relu(sign * projection).reshape(n, h, w).float()


@register
class EigenCAM(CamMethod):
    """M = ReLU(X v₁), X = A as (hw × K) with centred columns, v₁ its first right singular vector."""

    name = "eigencam"
    uses_gradients = False

    def raw_map(self, data: LayerData, ctx: Context) -> torch.Tensor:
        return principal_projection(data.activations)
