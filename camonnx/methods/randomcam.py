"""Random-CAM: a sanity baseline with random channel weights."""

import torch

from camonnx.methods import CamMethod, Context, LayerData, register


@register
class RandomCAM(CamMethod):
    """w_k ~ U(−1, 1) from a generator seeded by (seed, layer index);  M = ReLU(Σ_k w_k A_k)."""

    name = "randomcam"
    uses_gradients = False

    def weights(self, data: LayerData, ctx: Context) -> torch.Tensor:
        n, k = data.activations.shape[:2]
        generator = torch.Generator().manual_seed(ctx.seed * 100_003 + data.layer.index)
        w = torch.rand((n, k), generator=generator, dtype=torch.float64) * 2 - 1
        return w.float().to(data.activations.device)
