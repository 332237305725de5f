"""Ablation-CAM (Desai & Ramaswamy, 2020)."""

import torch
from tqdm.auto import tqdm

from camonnx.methods import CamMethod, Context, LayerData, register

EPS = 1e-7


@register
class AblationCAM(CamMethod):
    """w_k = (y − y_k) / (y + ε), ε = 1e-7, y_k the score with channel k of the tap zeroed;
    M = ReLU(Σ_k w_k A_k). Only the network after the tap is re-run (the mirror overrides the tap
    and the tensors the rest of the network reads from before it), batched over channels.

    Only per-image data tensors of that frontier (floating point, batch-major) are copied once per
    ablated channel. Shape-like tensors (int64 shapes that a Flatten/Reshape reads from the input,
    say) are not overridden: the mirror recomputes them from the batched input, so they describe
    the batch of ablated copies rather than the clean batch.

    The ablated channel is set to 0, as in the paper; pytorch-grad-cam instead writes the layer's
    minimum minus 1e7 where that minimum is not 0 (a far stronger intervention after layers with
    negative outputs), so its maps differ there on purpose."""

    name = "ablationcam"
    uses_gradients = False

    def weights(self, data: LayerData, ctx: Context) -> torch.Tensor:
        explainer = ctx.explainer
        mirror, logits_name = explainer.mirror, explainer.graph.logits
        tensor = data.layer.tensor
        frontier = mirror.frontier(tensor)
        x_model = explainer.to_model_layout(ctx.x)
        with torch.no_grad():  # the mirror's own tap: y and y_k then differ by the ablation only
            clean = mirror(x_model, frontier + [tensor, logits_name])
        n, k = data.activations.shape[:2]
        frontier = [name for name in frontier if _per_image(clean[name], n)]
        weights = torch.empty((n, k), device=data.activations.device)
        bar = tqdm(total=n * k, desc=f"ablationcam {data.layer.name}", unit="channel",
                   disable=not ctx.progress, leave=False)
        for i in range(n):
            y = ctx.image_target(i, 1)(clean[logits_name][i:i + 1]).float()
            scores = []
            for start in range(0, k, ctx.batch_size):
                channels = torch.arange(start, min(start + ctx.batch_size, k), device=weights.device)
                ablated = clean[tensor][i:i + 1].repeat(len(channels), 1, 1, 1)
                ablated[torch.arange(len(channels)), channels] = 0
                overrides = {name: _expand(clean[name][i:i + 1], len(channels)) for name in frontier}
                overrides[tensor] = ablated
                with torch.no_grad():
                    logits = mirror(x_model[i:i + 1].expand(len(channels), *x_model.shape[1:]),
                                    [logits_name], overrides)[logits_name]
                scores.append(ctx.image_target(i, len(channels))(logits).float())
                bar.update(len(channels))
            weights[i] = (y - torch.cat(scores)) / (y + EPS)
        bar.close()
        return weights


def _per_image(value: torch.Tensor, batch: int) -> bool:
    """Whether ``value`` holds per-image data: floating point with the batch as first axis."""
    return value.is_floating_point() and value.dim() > 0 and value.shape[0] == batch


def _expand(value: torch.Tensor, copies: int) -> torch.Tensor:
    return value.expand(copies, *value.shape[1:])
