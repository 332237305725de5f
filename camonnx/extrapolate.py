"""Gradual Extrapolation (Szandała, 2021): sharpen a coarse map through the earlier layers.

SPEC §6. Steps are the tensors where the resolution changes between the explained layer and the
input: the block taps of strided convs and the outputs of strided MaxPool/AveragePool (exposed by
the prepared model), deepest first, then (``include_input``, default on as in the reference) the
input image itself. At each step with activation E (K, h', w') whose size is larger than the
map's: S = ReLU(Σ_k E_k); if max(S) > 0: H ← resize_bilinear(H, h'×w') ⊙ S / max(S) (an image
whose S is all zero is only resized, so that the batch keeps one shape). Finally H is z-scored
(unbiased std), clipped to [−1, 1] and min-max normalised to [0, 1], at the input's resolution.

Everything comes from the activations of the forward pass that produced the maps: no extra
forward or backward. S/max(S) of a step is computed once and shared by every layer that passes
through it, so extrapolating all layers costs one channel sum per step plus one fused
resize-multiply per layer and step.

Models whose first layers are not strided (VGG): a map already at the input's resolution has no
larger step, so it is only finalised; with ``include_input=False`` an explained layer below the
first strided step is finalised as it is, upsampled to the input size first if needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from camonnx.graph import Layer, ModelGraph
from camonnx.kernels import ge_apply, ge_finalize, ge_saliency, upsample_layers

INPUT = "__input__"


@dataclass(frozen=True)
class Step:
    """A Gradual Extrapolation step: a tensor at a higher resolution than the layers after it."""

    position: int  # node index in the graph: the step applies to layers after it
    tensor: str


def steps(graph: ModelGraph) -> list[Step]:
    """Every step of the model, in topological order (strided conv taps and strided pools)."""
    found = {layer.tensor: layer.position for layer in graph.layers if layer.strided}
    for position, tensor in graph.pool_steps:
        found.setdefault(tensor, position)
    return sorted((Step(p, t) for t, p in found.items()), key=lambda s: s.position)


def step_tensors(graph: ModelGraph) -> list[str]:
    return [step.tensor for step in steps(graph)]


def extrapolate(raw: Sequence[torch.Tensor], layers: Sequence[Layer], graph: ModelGraph,
                values: Mapping[str, torch.Tensor], x: torch.Tensor,
                include_input: bool = True) -> torch.Tensor:
    """Extrapolated maps (L, N, H, W) in [0, 1] for the raw maps (N, h_l, w_l) of ``layers``.

    ``values`` holds the step tensors of the same forward (model layout NCHW, as taps are);
    ``x`` is the prepared NCHW input batch.
    """
    all_steps = steps(graph)
    saliency: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def unit(tensor: str) -> tuple[torch.Tensor, torch.Tensor]:
        if tensor not in saliency:
            source = x if tensor == INPUT else values[tensor]
            saliency[tensor] = ge_saliency(source)
        return saliency[tensor]

    size = tuple(x.shape[2:])
    out = torch.empty((len(layers),) + (x.shape[0],) + size, dtype=torch.float32, device=x.device)
    for index, (h_map, layer) in enumerate(zip(raw, layers)):
        chain = [s.tensor for s in reversed(all_steps) if s.position < layer.position]
        if include_input:
            chain.append(INPUT)
        h_map = h_map.float()
        for tensor in chain:
            s_map, s_max = unit(tensor)
            if s_map.shape[1] * s_map.shape[2] <= h_map.shape[1] * h_map.shape[2]:
                continue  # not larger than the current map: skipped (SPEC §6)
            h_map = ge_apply(h_map, s_map, s_max)
        if tuple(h_map.shape[1:]) != size:
            h_map = upsample_layers([h_map], size, "none")[0]
        out[index] = ge_finalize(h_map)
    return out


def save_comparisons(explanation, directory, layer: int = -1) -> list:
    """Write ``compare_imageNN_<layer>.png`` per image: the plain map of ``layer`` (bilinear,
    min-max) beside its extrapolated map, both over the image. Needs an extrapolated explanation
    (its ``raw`` maps give the plain ones without another pass). Returns the paths."""
    import os
    import tempfile
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from camonnx.explanation import _slug
    from camonnx.render import overlay

    if not explanation.options.get("extrapolate"):
        raise ValueError("save_comparisons needs an explanation made with extrapolate=True")
    name = explanation.layers[layer]
    raw = torch.as_tensor(explanation.raw[layer])
    plain = upsample_layers([raw], explanation.maps.shape[2:], "local")[0].numpy()
    paths = []
    for i, image in enumerate(explanation.images):
        fig, axes = plt.subplots(1, 2, figsize=(8, 4.4))
        for ax, map01, title in ((axes[0], plain[i], "plain"),
                                 (axes[1], explanation.maps[layer, i], "gradual extrapolation")):
            ax.imshow(overlay(image, map01))
            ax.set_title(title)
            ax.axis("off")
        fig.suptitle(f"{explanation.method} · {name} · {explanation.label(i)}", fontsize=10)
        fig.tight_layout()
        target = Path(directory) / f"compare_image{i:02d}_{_slug(name)}.png"
        fd, tmp = tempfile.mkstemp(suffix=".png", dir=directory)
        os.close(fd)
        try:
            fig.savefig(tmp, dpi=100)
            os.replace(tmp, target)
        finally:
            plt.close(fig)
            if os.path.exists(tmp):
                os.unlink(tmp)
        paths.append(target)
    return paths
