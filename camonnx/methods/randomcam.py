"""Random-CAM: a sanity baseline with random channel weights."""

import numpy as np
import torch

from camonnx.methods.base import CamMethod, Context, LayerData, register


@register
class RandomCAM(CamMethod):
    """w_k ~ U(−1, 1);  M = ReLU(Σ_k w_k A_k).

    Each image's weights come from a generator seeded by (seed, layer index, the image's
    identity: its index among all the images of the call, or the ``image_ids`` given to
    explain), so a map depends neither on the batch size nor on the image's position inside a
    batch, and two images never share their weights."""

    name = "randomcam"
    uses_gradients = False

    def weights(self, data: LayerData, ctx: Context) -> torch.Tensor:
        k = data.activations.shape[1]
        rows = []
        for i in ctx.image_ids:
            seed = np.random.SeedSequence([ctx.seed, data.layer.index, i]).generate_state(1)[0]
            generator = torch.Generator().manual_seed(int(seed))
            rows.append(torch.rand(k, generator=generator, dtype=torch.float64) * 2 - 1)
        return torch.stack(rows).float().to(data.activations.device)
