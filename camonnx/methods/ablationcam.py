"""Ablation-CAM (Desai & Ramaswamy, 2020)."""

import torch
from tqdm.auto import tqdm

from camonnx.methods.base import CamMethod, Context, LayerData, register

EPS = 1e-7


@register
class AblationCAM(CamMethod):
    """w_k = (y − y_k) / (y + ε), ε = 1e-7, y_k the score with channel k of the tap zeroed;
    M = ReLU(Σ_k w_k A_k). Only the network after the tap is re-run
    (:meth:`camonnx.passes.PassEngine.from_tap`: the mirror overrides the tap and the per-image
    tensors the rest of the network reads from before it), batched over channels.

    y and the tap that is ablated come from the mirror's own clean forward, so y and y_k differ
    by the ablation only (A, which the weights multiply, is the explainer's ORT activation).

    The ablated channel is set to 0, as in the paper; pytorch-grad-cam instead writes the layer's
    minimum minus 1e7 where that minimum is not 0 (a far stronger intervention after layers with
    negative outputs), so its maps differ there on purpose."""

    name = "ablationcam"
    uses_gradients = False

    def weights(self, data: LayerData, ctx: Context) -> torch.Tensor:
        tap = ctx.engine.from_tap(ctx.x, data.layer.tensor)
        n, k = data.activations.shape[:2]
        weights = torch.empty((n, k), device=data.activations.device)
        bar = tqdm(total=n * k, desc=f"ablationcam {data.layer.name}", unit="channel",
                   disable=not ctx.progress, leave=False)
        for i in range(n):
            y = ctx.target.take([i])(tap.logits[i:i + 1]).float()
            scores = []
            for start in range(0, k, ctx.batch_size):
                channels = torch.arange(start, min(start + ctx.batch_size, k), device=weights.device)
                ablated = tap.value[i:i + 1].repeat(len(channels), 1, 1, 1)
                ablated[torch.arange(len(channels)), channels] = 0
                logits = tap.rerun(i, ablated)
                scores.append(ctx.target.take([i] * len(channels))(logits).float())
                bar.update(len(channels))
            weights[i] = (y - torch.cat(scores)) / (y + EPS)
        bar.close()
        return weights
