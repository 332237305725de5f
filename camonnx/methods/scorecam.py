"""Score-CAM (Wang et al., 2020)."""

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from camonnx.methods.base import CamMethod, Context, LayerData, register


def channel_masks(activations: torch.Tensor, size: tuple[int, int],
                  align_corners: bool = False) -> torch.Tensor:
    """Each A_k upsampled bilinearly to the input size and min-max normalised to [0, 1]
    (a constant channel gives an all-zero mask). Half-pixel centres by default (docs/deviations.md#scorecam-masks);
    ``align_corners=True`` reproduces pytorch-grad-cam's UpsamplingBilinear2d."""
    up = F.interpolate(activations.float(), size=size, mode="bilinear", align_corners=align_corners)
    flat = up.flatten(2)
    lo = flat.amin(dim=2, keepdim=True)
    span = flat.amax(dim=2, keepdim=True) - lo
    flat = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, 1.0), 0.0)
    return flat.reshape(up.shape)


@register
class ScoreCAM(CamMethod):
    """s_k = y(x ⊙ mask_k), mask_k = minmax(upsample(A_k)); w = softmax_k(s);
    M = ReLU(Σ_k w_k A_k). The K masked copies of each image run through ONNX Runtime in chunks
    of ``batch_size``."""

    name = "scorecam"
    uses_gradients = False
    option_names = frozenset({"scorecam_align_corners"})

    def weights(self, data: LayerData, ctx: Context) -> torch.Tensor:
        n, k = data.activations.shape[:2]
        size = tuple(ctx.x.shape[2:])
        align = bool(ctx.options.get("scorecam_align_corners", False))
        weights = torch.empty((n, k), device=data.activations.device)
        bar = tqdm(total=n * k, desc=f"scorecam {data.layer.name}", unit="mask",
                   disable=not ctx.progress, leave=False)
        for i in range(n):
            scores = []
            for start in range(0, k, ctx.batch_size):
                acts = data.activations[i:i + 1, start:start + ctx.batch_size]
                masks = channel_masks(acts, size, align)[0]  # (k', H, W)
                masked = ctx.x[i:i + 1] * masks.unsqueeze(1)
                scores.append(ctx.scores(masked, i))
                bar.update(masks.shape[0])
            weights[i] = torch.softmax(torch.cat(scores), dim=0)
        bar.close()
        return weights
