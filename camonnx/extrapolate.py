"""Gradual Extrapolation (Szandała, 2021): sharpen a coarse map through the earlier layers.

docs/methods.md#gradual-extrapolation (differences from the reference:
docs/deviations.md#gradual-extrapolation). Steps are the tensors where the resolution changes between the explained layer and the
input: the block taps of strided convs and the outputs of strided MaxPool/AveragePool (exposed by
the prepared model), deepest first, then, with ``include_input`` (off by default), the input
image itself. At each step with activation E (K, h', w') whose size is larger than the
map's: S = ReLU(Σ_k E_k); if max(S) > 0: H ← resize_bilinear(H, h'×w') ⊙ S / max(S) (an image
whose S is all zero is only resized, so that the batch keeps one shape). Finally H is z-scored
(unbiased std), clipped to [−1, 1] and min-max normalised to [0, 1], at the input's resolution.

Everything comes from the activations of the forward pass that produced the maps: no extra
forward or backward. S/max(S) of a step is computed once and shared by every layer that passes
through it, and the layers that go through the same steps are stacked, so extrapolating all
layers costs one channel sum per step plus one fused resize-multiply launch per group of layers
and step, and a final z-score pass over the output (written once, finalised in place). The
result already spans [0, 1] per map (min 0 and max 1 exactly, or all zeros), so the explainer's
local or global normalisation leaves it unchanged and is not re-applied.

The input step multiplies by ReLU(Σ of the normalised input's channels), roughly where the image
is brighter than the ImageNet mean. On real photos with the pretrained default model it lowered
ROAD (faithfulness) below the plain map's (bench/bench_ge.py, bench/RESULTS.md), and on the
bundled cat it paints bright fur saturated red, while without it ROAD rose above the plain map's.
So it is off by default, a deliberate deviation from the reference, which always applies it.

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
                include_input: bool = False) -> torch.Tensor:
    """Extrapolated maps (L, N, H, W) in [0, 1] for the raw maps (N, h_l, w_l) of ``layers``.

    ``values`` holds the step tensors of the same forward (model layout NCHW, as taps are);
    ``x`` is the prepared NCHW input batch. Layers whose maps have one size and go through the
    same steps (typically a whole stage) are extrapolated together: their maps are stacked so that
    each step is one kernel launch for all of them, and the last step writes straight into the
    output, which is then finalised in place.
    """
    saliency: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def unit(tensor: str) -> tuple[torch.Tensor, torch.Tensor]:
        if tensor not in saliency:
            source = x if tensor == INPUT else values[tensor]
            saliency[tensor] = ge_saliency(source)
        return saliency[tensor]

    size = tuple(x.shape[2:])
    n_images = x.shape[0]
    out = torch.empty((len(layers), n_images) + size, dtype=torch.float32, device=x.device)
    all_steps = steps(graph)
    step_size = lambda tensor: tuple(unit(tensor)[0].shape[1:])  # noqa: E731
    groups: dict[tuple, list[int]] = {}
    for index, (h_map, layer) in enumerate(zip(raw, layers)):
        applied = tuple(_applied_steps(tuple(h_map.shape[1:]), layer, all_steps, include_input,
                                       step_size))
        groups.setdefault((tuple(h_map.shape[1:]), applied), []).append(index)
    for ((h, w), applied), indices in groups.items():
        g = len(indices)
        contiguous = indices == list(range(indices[0], indices[0] + g))
        target = (out[indices[0]:indices[0] + g].view(g * n_images, *size) if contiguous
                  else torch.empty((g * n_images,) + size, dtype=torch.float32, device=x.device))
        h_map = torch.stack([raw[i].float() for i in indices]).reshape(g * n_images, h, w)
        for position, tensor in enumerate(applied):
            last = position == len(applied) - 1 and step_size(tensor) == size
            h_map = ge_apply(h_map, *unit(tensor), out=target if last else None)
        if h_map.data_ptr() != target.data_ptr():
            upsample_layers([h_map], size, "none", out=target.view(1, g * n_images, *size))
        ge_finalize(target, out=target)
        if not contiguous:
            out[indices] = target.view(g, n_images, *size)
    return out


def _applied_steps(map_size: tuple[int, int], layer: Layer, all_steps: Sequence[Step],
                   include_input: bool, step_size) -> list[str]:
    """The steps a layer's map goes through, deepest first: those before the layer (then the
    input), each kept only if it is larger than the map at that point."""
    chain = [s.tensor for s in reversed(all_steps) if s.position < layer.position]
    if include_input:
        chain.append(INPUT)
    area, applied = map_size[0] * map_size[1], []
    for tensor in chain:
        h, w = step_size(tensor)
        if h * w > area:
            applied.append(tensor)
            area = h * w
    return applied


def save_comparisons(explanation, directory, layer: int = -1) -> list:
    """Write ``compare_imageNN_<layer>.png`` per image: the plain map of ``layer`` (bilinear,
    min-max) beside its extrapolated map, both over the image. Needs an extrapolated explanation
    (its ``raw`` maps give the plain ones without another pass). Returns the paths."""
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from camonnx.explanation import _slug
    from camonnx.render import overlay
    from camonnx.writer import write_file

    if explanation.extrapolation is None:
        raise ValueError("save_comparisons needs an explanation made with extrapolate=True")
    name = explanation.layers[layer]
    raw = torch.as_tensor(explanation.raw[layer])
    plain = upsample_layers([raw], explanation.maps.shape[2:], "local")[0].numpy()
    paths = []
    for i, image in enumerate(explanation.images):
        fig = Figure(figsize=(8, 4.4), dpi=100)
        FigureCanvasAgg(fig)  # drawn off-screen: the user's pyplot backend is left alone
        axes = fig.subplots(1, 2)
        for ax, map01, title in ((axes[0], plain[i], "plain"),
                                 (axes[1], explanation.maps[layer, i], "gradual extrapolation")):
            ax.imshow(overlay(image, map01))
            ax.set_title(title)
            ax.axis("off")
        fig.suptitle(f"{explanation.method} · {name} · {explanation.label(i)}", fontsize=10)
        fig.tight_layout()
        target = Path(directory) / f"compare_image{i:02d}_{_slug(name)}.png"
        write_file(target, lambda temporary: fig.savefig(temporary, format="png", dpi=100))
        paths.append(target)
    return paths
