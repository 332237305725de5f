"""RISE, Randomized Input Sampling for Explanation (Petsiuk, Das & Saenko, BMVC 2018):
docs/methods.md#rise.

A black-box method: the map is the average of random masks, each weighted by how much of the
target's probability the image keeps when seen through it.

    grid_i ~ Bernoulli(keep)^(s×s)                         i = 1 … N_masks, s = ``cells``
    m_i    = crop_{H×W at (dy_i, dx_i)}( bilinear_{(s+1)·ch × (s+1)·cw}(grid_i) )
             ch = ⌈H/s⌉, cw = ⌈W/s⌉, dy_i ∈ [0, ch), dx_i ∈ [0, cw) uniform integers
    M      = Σ_i p_c(x ⊙ m_i) · m_i / (N_masks · keep)

x ⊙ m is :func:`camonnx.masking.masked` (a masked-out pixel takes the preprocessing's mean
colour); p_c is the softmax probability of the target class (for a function target, its score
of the logits). Dividing by N·keep makes M the expected score given that the pixel is kept,
E[p_c(x ⊙ m) | m(pixel) = 1]·(its mask value), the paper's normalisation; it does not change the
ranking. The bilinear upsampling uses half-pixel centres with clamped edges
(``F.interpolate(mode="bilinear", align_corners=False)``).

**Masks** are drawn once per call from ``numpy.random.default_rng(seed)``, in this order: the N
grids (``rng.random((N, s, s)) < keep``), then the N vertical shifts, then the N horizontal
shifts (``rng.integers(0, ch, N)``, ``rng.integers(0, cw, N)``); every image gets the same
masks, so a map does not depend on the batch its image is in. They are built on the explainer's
device ``MASK_BLOCK`` at a time, the masked images forwarded through the engine (ONNX Runtime,
or the mirror on a GPU without its CUDA provider) in batches of ``ctx.batch_size``, and each
block's Σ p·m added in float64: the block size is fixed, so the map does not depend on
``batch_size`` either.

**Layers.** RISE explains the output, not a layer: ``begin`` computes one map per image, and it
is returned for every selected layer (the explanation keeps its (L, N, H, W) shape; its curve
over depth is flat). Ask for ``layers="suggested"`` to compute it once and keep one copy.

Options (``explain(..., masks=, cells=, keep=)``, checked before any masked image runs):
``masks`` N (default 5000), ``cells`` s (default 8), ``keep`` (default 0.5) — OpenVINO XAI's
RISE defaults.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from camonnx.errors import InputError
from camonnx.graph import Layer
from camonnx.masking import masked
from camonnx.methods.base import CamMethod, Context, LayerData, register

#: Masks built at a time, and the grouping of the float64 sum (fixed: batch_size changes nothing).
MASK_BLOCK = 256


def draw_masks(count: int, cells: int, keep: float, size: tuple[int, int], seed: int):
    """The N low-resolution grids (N, s, s) bool and the crop offsets (N, 2) (dy, dx), in the
    documented draw order from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(int(seed) & (2 ** 63 - 1))
    cell_h, cell_w = (math.ceil(side / cells) for side in size)
    grids = rng.random((count, cells, cells)) < keep
    shifts = np.stack([rng.integers(0, cell_h, count), rng.integers(0, cell_w, count)], axis=1)
    return grids, shifts


def upsampled_masks(grids: np.ndarray, shifts: np.ndarray, size: tuple[int, int],
                    device: torch.device) -> torch.Tensor:
    """The masks m_i (B, H, W) float32: each grid upsampled bilinearly to (s+1)·cell and cropped
    to H × W at its offset."""
    h, w = size
    cells = grids.shape[1]
    cell_h, cell_w = math.ceil(h / cells), math.ceil(w / cells)
    grid = torch.from_numpy(grids).to(device, torch.float32).unsqueeze(1)
    up = F.interpolate(grid, size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear",
                       align_corners=False)[:, 0]
    return torch.stack([up[i, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(shifts.tolist())])


def check_options(masks, cells, keep, size: tuple[int, int]) -> tuple[int, int, float]:
    """The options as (int, int, float); an :class:`InputError` naming a bad one."""
    def count(name: str, value, top: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1 \
                or (top is not None and value > top):
            limit = f" and at most {top} (the image's smaller side)" if top else ""
            raise InputError(f"RISE option {name} must be a positive integer{limit}, "
                             f"got {value!r}.")
        return int(value)

    masks, cells = count("masks", masks), count("cells", cells, min(size))
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise InputError(f"RISE option keep (the probability that a cell is kept) must lie in "
                         f"(0, 1], got {keep!r}.")
    return masks, cells, float(keep)


def saliency(ctx: Context, masks: int, cells: int, keep: float) -> torch.Tensor:
    """M (N, H, W) float32 of every image of ``ctx.x``: Σ_i p_c(x ⊙ m_i)·m_i / (N·keep)."""
    x, engine = ctx.x, ctx.engine
    n_images = x.shape[0]
    size = tuple(x.shape[2:])
    grids, shifts = draw_masks(masks, cells, keep, size, ctx.seed)
    name = engine.logits_name
    total = torch.zeros((n_images, *size), dtype=torch.float64, device=x.device)
    bar = tqdm(total=masks * n_images, desc="rise", unit="img", disable=not ctx.progress,
               leave=False)
    for first in range(0, masks, MASK_BLOCK):
        block = upsampled_masks(grids[first:first + MASK_BLOCK], shifts[first:first + MASK_BLOCK],
                                size, x.device)
        count = block.shape[0]
        scores = torch.empty((n_images, count), dtype=torch.float64, device=x.device)
        flat = scores.view(-1)  # row r: image r // count seen through mask r % count
        for start in range(0, n_images * count, ctx.batch_size):
            rows = torch.arange(start, min(start + ctx.batch_size, n_images * count),
                                device=x.device)
            owners = rows // count
            logits = engine.forward(masked(x[owners], block[rows % count]), [name])[name]
            flat[rows] = target_probability(ctx, logits, owners.tolist())
            bar.update(len(rows))
        flat_block = block.double().flatten(1)
        for n in range(n_images):  # one product per image: the same rounding in any batch
            total[n] += (scores[n] @ flat_block).view(size)
    bar.close()
    return (total / (masks * keep)).float()


def target_probability(ctx: Context, logits: torch.Tensor, owners: list[int]) -> torch.Tensor:
    """p_c of each row's logits for its image's target class, in float64 (a function target:
    its score)."""
    target = ctx.target.take(owners)
    classes = target.classes(logits)
    if classes is None:
        return target(logits).detach().double()
    index = torch.as_tensor(classes, device=logits.device).reshape(-1, 1)
    return torch.softmax(logits.detach().double(), dim=1).gather(1, index).squeeze(1)


@register
class RISE(CamMethod):
    """M = Σ_i p_c(x ⊙ m_i)·m_i / (N·keep) over N random upsampled binary masks m_i; the same
    map for every selected layer."""

    name = "rise"
    uses_gradients = False
    option_names = frozenset({"masks", "cells", "keep"})

    def begin(self, ctx: Context, layers: list[Layer]) -> None:
        from camonnx.methods import CATALOGUE

        defaults = CATALOGUE[self.name].defaults
        options = {key: ctx.options.get(key, defaults[key]) for key in ("masks", "cells", "keep")}
        self.map = saliency(ctx, *check_options(size=tuple(ctx.x.shape[2:]), **options))

    def raw_map(self, data: LayerData, ctx: Context) -> torch.Tensor:
        return self.map
