"""Smooth Grad-CAM++ (Omeiza, Speakman, Cintas, Weldemariam, 2019; arXiv 1908.01224), docs/methods.md#smoothgradcampp.

Grad-CAM++'s weights with the gradient powers averaged over n noisy copies of the image:

    x_t = x + N(0, σ²),  σ = s · (max(x) − min(x)),  t = 1 … n        (camonnx.noise.NoiseTunnel)
    D1 = mean_t g_t,  D2 = mean_t g_t²,  D3 = mean_t g_t³,  g_t = ∂y(x_t)/∂A(x_t)
    α_kij = D2_kij / (2·D2_kij + S_k·D3_kij + ε),  ε = 1e-6,  S_k = Σ_ab A_kab   (α = 0 where the
            denominator is 0)
    w_k = Σ_{ij ∈ region} α_kij · ReLU(D1_kij)
    M = ReLU(Σ_{k ∈ channels} w_k A_k)

A is the *clean* image's activation. y is the target score of the clean image's target (for the
default target: the class predicted for the clean image, not each copy's argmax).

Computation (no loop over layers, docs/pipeline.md#passes). ``begin`` runs every noisy copy of the batch through the
engine's gradient pass (:meth:`camonnx.passes.PassEngine.gradient_pass`) in chunks of at most
``ctx.batch_size`` copies on a GPU, 8 on CPU (see ``CPU_COPIES_PER_PASS``; an image's copies may
span chunks), with one mirror forward and one ``torch.autograd.grad(score.sum(), taps)`` per
chunk for all requested taps at once: the input requires grad only so that the taps join the
autograd graph, and the backward stops at the shallowest requested tap. The pass hands each
chunk to a hook that accumulates it; per tap, Σ_t g, Σ_t g² and Σ_t g³ are accumulated per image in float64
(one pass over the gradients: :func:`camonnx.kernels.add_power_sums`, a CPU/CUDA kernel pair)
while that image's copies are in flight, and stored as float32 means D1, D2, D3 once its n copies
are done (the stored state is 3 tensors of the batch's activation size, like the activations +
gradients that gradient methods keep). α and w are computed in float64 per layer from D and A.

``uses_gradients = False``: the formula never uses the clean image's gradient, so the clean
forward + backward of the mirror that gradient methods pay would be wasted; ``explain`` takes A from
its plain ONNX Runtime forward instead (equal to the mirror's within the parity tolerance checked at
load), and the only backward passes are those over the noisy copies.

With n = 1 and s = 0 the single copy is the clean image, D1 = g, D2 = g², D3 = g³ (to float32
rounding), and the method is Grad-CAM++ (``tests/test_smooth.py`` checks all layers; the only
differences are float32 rounding: ORT-vs-mirror activations, batch-dependent conv summation, g³
rounded once instead of twice, α in float64; ~1e-6 of each map's scale).

Options (``explain(..., samples=, noise=, channels=, region=)``, validated with
:class:`~camonnx.errors.InputError` in ``begin`` before any noisy copy runs; only a region mask on a
layer's grid is checked once the first chunk's pass has given the taps' grids at this input size,
before any other chunk runs):

``samples`` (default 25)
    n, the number of noisy copies per image.
``noise`` (default 0.15)
    s, the noise level relative to each image's value range in the model's input space.
    The noise is seeded by ``explain``'s ``seed`` (see :mod:`camonnx.noise`: the draws depend on
    the seed and image shape only, so a map does not depend on the batch an image is in).
``channels`` (default: all)
    The feature-map subset k ∈ channels of M. One of: a list of channel indices applied to every
    explained layer (an index ≥ K of some layer is an error naming that layer and its K; negative
    indices are errors; duplicates are ignored); ``"topK"`` (e.g. ``"top5"``): per image and layer,
    the K channels with the largest weight w_k (all channels when the layer has ≤ K; ties are
    broken by ``torch.topk``); or a dict {layer name, tensor name or index: list | "topK" | None}
    for per-layer subsets (layers not named use all channels; naming a layer that is not being
    explained is an error).
``region`` (default: everywhere)
    The neuron subset: only positions (i, j) in the region contribute to w_k (S_k and the map M
    still span the whole layer). One region for the batch, given as either
    * a box ``(x0, y0, x1, y1)`` in input pixels, half-open: a point (x, y) is inside when
      x0 ≤ x < x1 and y0 ≤ y < y1 (pixel p covers [p, p+1), so an integer box selects the pixels
      ``[y0:y1, x0:x1]``). The box is clipped to the image; a box outside it is an error; or
    * a boolean mask (H, W) at the input's resolution, or (h, w) at the grid of one of the explained
      layers (0/1 numbers are accepted; an empty mask is an error).
    Mapping to each layer's h×w grid (exact, no interpolation): cell (i, j) of a layer is in the
    region when its centre in input coordinates, ((j + ½)·W/w, (i + ½)·H/h), falls inside the box
    or the mask (a mask of grid mh×mw covers cell r,c = [c·W/mw, (c+1)·W/mw) × [r·H/mh, (r+1)·H/mh);
    in integers, the mask cell is (((2i+1)·mh) // (2h), ((2j+1)·mw) // (2w))). A mask at a layer's
    own grid thus selects exactly its cells there, and a full-image region equals no region.
    A region smaller than a layer's cells can select no centre: that layer then gets the single
    cell containing the region's centre (the box centre; for a mask, its True pixel nearest the
    mask's centroid). For a box this is the same as "the cell containing the box centre is always
    in": along each axis, if that cell's centre is outside the box, no centre is inside.
    :func:`region_cells` exposes the rule.

Deviations of torchcam's ``SmoothGradCAMpp`` (torchcam 0.5.0, ``torchcam/methods/gradient.py``)
from the paper, which camonnx does not share:
* the noise is N(0, std²) with an absolute ``std`` (default 0.3) instead of σ = s·(max − min) of
  the image, and the default n is 4;
* the denominator of α uses Σ_ab A_kab·D3_kab (one number per channel) instead of S_k·D3_kij;
* ReLU(∂y/∂A) in w_k is taken from the *last* noisy copy's gradient, not D1 = mean_t g_t (its
  docstring documents a "personal correction" of the α numerator; the code's formula is the above);
* ε = 1e-8 is added to the denominator (no zero guard); no feature-map or neuron subsets;
* one forward and one backward per noisy copy (batch 1), per extractor.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from camonnx.errors import InputError
from camonnx.graph import Layer
from camonnx.kernels import add_power_sums
from camonnx.methods import CATALOGUE
from camonnx.methods.base import CamMethod, Context, LayerData, register
from camonnx.methods.gradcampp import plusplus_weights
from camonnx.noise import NoiseTunnel

if TYPE_CHECKING:
    from camonnx.passes import GradientChunk, PassEngine

_TOP = re.compile(r"^top-?(\d+)$", re.I)


# --------------------------------------------------------------------------------------------
# the formula
# --------------------------------------------------------------------------------------------
def smooth_weights(d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor, activations: torch.Tensor,
                   cells: torch.Tensor | None = None) -> torch.Tensor:
    """w (N, K) float64 from the averaged derivatives D1, D2, D3 and the clean activations A, all
    (N, K, h, w); ``cells`` (h, w) bool restricts the sum over ij to a region (D1, D2, D3 are set to
    0 outside it, so α = 0 and ReLU(D1) = 0 there: those positions add exactly nothing)."""
    d1, d2, d3, a = (t.double() for t in (d1, d2, d3, activations))
    if cells is not None:
        inside = cells.to(device=d1.device, dtype=torch.bool)
        d1, d2, d3 = (torch.where(inside, t, 0.0) for t in (d1, d2, d3))
    return plusplus_weights(d1, d2, d3, a)


# --------------------------------------------------------------------------------------------
# channels
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChannelSubset:
    """``indices`` (sorted, distinct) or ``top`` (k largest weights per image); neither: all."""

    indices: tuple[int, ...] | None = None
    top: int | None = None

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        """Weights (N, K) with the channels outside the subset set to 0."""
        keep = torch.zeros_like(w, dtype=torch.bool)
        if self.indices is not None:
            keep[:, list(self.indices)] = True
        elif self.top is not None and self.top < w.shape[1]:
            keep.scatter_(1, torch.topk(w, self.top, dim=1).indices, True)
        else:
            return w
        return torch.where(keep, w, torch.zeros_like(w))


def _channel_subset(value: Any, layer: Layer, source: str) -> ChannelSubset:
    if value is None:
        return ChannelSubset()
    if isinstance(value, str):
        match = _TOP.match(value.strip())
        if not match or int(match.group(1)) < 1:
            raise InputError(f"{source}: {value!r} is not a channel subset. Give channel indices, "
                             "or 'topK' (K ≥ 1, e.g. 'top5') for the K largest weights per image.")
        return ChannelSubset(top=int(match.group(1)))
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        value = value.reshape(-1).tolist() if value.ndim <= 1 else value
    if not isinstance(value, (list, tuple, range)) or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        raise InputError(f"{source}: channels must be a list of channel indices (integers), "
                         f"'topK', or a dict {{layer: indices}}; got {value!r}.")
    if len(value) == 0:
        raise InputError(f"{source}: the channel list is empty; give at least one channel index.")
    k = layer.channels
    for v in value:
        if v < 0:
            raise InputError(f"{source}: channel index {v} is negative; indices run 0–{k - 1}.")
        if k and v >= k:
            raise InputError(f"{source}: channel index {v} is out of range for layer "
                             f"{layer.name!r}, which has K={k} channels (indices 0–{k - 1}).")
    return ChannelSubset(indices=tuple(sorted({int(v) for v in value})))


def parse_channels(channels: Any, layers: list[Layer], engine: PassEngine) -> dict[str, ChannelSubset]:
    """The channel subset of every explained layer, validated (see the module docstring);
    ``engine`` looks up the layers a dict names."""
    if isinstance(channels, dict):
        by_index = {layer.index: layer for layer in layers}
        chosen: dict[str, ChannelSubset] = {layer.name: ChannelSubset() for layer in layers}
        for key, value in channels.items():
            layer = engine.layer(key)  # an unknown name is an InputError listing close names
            if layer.index not in by_index:
                raise InputError(f"channels names layer {layer.name!r}, which is not among the "
                                 "explained layers: add it to `layers` or drop it from `channels`.")
            chosen[layer.name] = _channel_subset(value, layer, f"channels[{key!r}]")
        return chosen
    return {layer.name: _channel_subset(channels, layer, "channels") for layer in layers}


# --------------------------------------------------------------------------------------------
# region
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Region:
    """A region of the input: a box (clipped, input pixels) or a boolean mask on an mh×mw grid
    that covers the H×W input (see the module docstring for the exact mapping)."""

    input_size: tuple[int, int]
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = field(default=None, compare=False)

    def cells(self, grid: tuple[int, int]) -> np.ndarray:
        """(h, w) bool: the layer cells whose centre falls in the region (≥ 1 cell)."""
        h, w = int(grid[0]), int(grid[1])
        H, W = self.input_size
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            cx = (2 * np.arange(w) + 1) * W / (2 * w)
            cy = (2 * np.arange(h) + 1) * H / (2 * h)
            inside = np.outer((y0 <= cy) & (cy < y1), (x0 <= cx) & (cx < x1))
            if not inside.any():
                i = min(int(math.floor((y0 + y1) / 2 * h / H)), h - 1)
                j = min(int(math.floor((x0 + x1) / 2 * w / W)), w - 1)
                inside[i, j] = True
            return inside
        mask = self.mask
        mh, mw = mask.shape
        rows = ((2 * np.arange(h) + 1) * mh) // (2 * h)
        cols = ((2 * np.arange(w) + 1) * mw) // (2 * w)
        inside = mask[np.ix_(rows, cols)].copy()
        if not inside.any():
            r, c = self.anchor()
            inside[((2 * r + 1) * h) // (2 * mh), ((2 * c + 1) * w) // (2 * mw)] = True
        return inside

    def anchor(self) -> tuple[int, int]:
        """The mask's True cell nearest its centroid (first in row-major order on ties)."""
        points = np.argwhere(self.mask)
        centroid = points.mean(axis=0)
        return tuple(int(v) for v in points[np.argmin(((points - centroid) ** 2).sum(axis=1))])

    def check_grids(self, grids: dict[str, tuple[int, int]]) -> None:
        """A mask must sit on the input's grid or on one of the explained layers' grids."""
        if self.mask is None:
            return
        shape = tuple(self.mask.shape)
        if shape != tuple(self.input_size) and shape not in set(grids.values()):
            sizes = sorted(set(grids.values()), reverse=True)
            raise InputError(
                f"The region mask has shape {shape}: give it at the input's resolution "
                f"{tuple(self.input_size)} or at an explained layer's grid "
                f"({', '.join(f'{h}×{w}' for h, w in sizes)}).")


def parse_region(region: Any, input_size: tuple[int, int]) -> Region | None:
    """A validated :class:`Region` (see the module docstring), or None for no region."""
    if region is None:
        return None
    H, W = int(input_size[0]), int(input_size[1])
    if isinstance(region, torch.Tensor):
        region = region.detach().cpu().numpy()
    if isinstance(region, str):
        raise InputError(f"region must be a box (x0, y0, x1, y1) or a boolean mask, got {region!r}.")
    try:
        array = np.asarray(region)
    except (ValueError, TypeError):
        array = np.asarray(region, dtype=object)
    if array.ndim == 1 and array.shape[0] == 4:
        if array.dtype == bool or not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                          for v in array.tolist()):
            raise InputError(f"A region box is four numbers (x0, y0, x1, y1) in input pixels, "
                             f"got {region!r}.")
        x0, y0, x1, y1 = (float(v) for v in array.tolist())
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise InputError(f"The region box {region!r} holds a NaN or infinite coordinate.")
        if not (x0 < x1 and y0 < y1):
            raise InputError(f"The region box (x0, y0, x1, y1) = {(x0, y0, x1, y1)} is empty: it "
                             "needs x0 < x1 and y0 < y1 (input pixels, half-open).")
        clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(W)), min(y1, float(H)))
        if not (clipped[0] < clipped[2] and clipped[1] < clipped[3]):
            raise InputError(f"The region box {(x0, y0, x1, y1)} lies outside the {W}×{H} input "
                             "(x from 0 to width, y from 0 to height, in pixels).")
        return Region((H, W), box=clipped)
    if array.ndim != 2:
        raise InputError(f"region must be a box (x0, y0, x1, y1) or one boolean mask (rows, cols) "
                         f"for the batch; got an array of shape {array.shape}.")
    if array.dtype != bool:
        if array.dtype.kind not in "iuf" or not np.isin(array, (0, 1)).all():
            raise InputError("A region mask must be boolean (or hold only 0 and 1).")
        array = array.astype(bool)
    if not array.any():
        raise InputError("The region mask is empty (no True cell): it must select at least one "
                         "position.")
    return Region((H, W), mask=np.ascontiguousarray(array))


def region_cells(region: Any, input_size: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """The (h, w) cells of a layer grid that ``region`` selects (the rule of the module docstring)."""
    parsed = parse_region(region, input_size)
    if parsed is None:
        return np.ones(tuple(grid), dtype=bool)
    return parsed.cells(grid)


# --------------------------------------------------------------------------------------------
# the method
# --------------------------------------------------------------------------------------------
@dataclass
class _State:
    """What ``begin`` leaves in ``ctx.smooth`` for the per-layer weights."""

    channels: dict[str, ChannelSubset]
    means: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # tap → D1, D2, D3
    cells: dict[str, torch.Tensor | None]  # tap → (h, w) bool, None: the whole layer


def _runs(rows: list[int]) -> list[tuple[int, int, int]]:
    """(image, start, stop) of each run of equal consecutive entries."""
    runs, start = [], 0
    for k in range(1, len(rows) + 1):
        if k == len(rows) or rows[k] != rows[start]:
            runs.append((rows[start], start, k))
            start = k
    return runs


# Noisy copies per mirror forward + backward on CPU. Measured on ResNet-50 (2-core CPU, 25
# copies): passes of 8 copies cost ~40 % less per copy than one pass of 25 (a smaller batch's
# activations stay in cache; batch 25 is 144 ms per copy, 4–8 copies ~100 ms) and hold a third of
# the autograd memory. A GPU takes ``ctx.batch_size`` copies per pass.
CPU_COPIES_PER_PASS = 8


def _pieces(n_images: int, samples: int, chunk: int) -> int:
    per_piece = max(1, chunk // samples)
    return sum(math.ceil(min(per_piece, n_images - first) * samples / chunk)
               for first in range(0, n_images, per_piece))


@register
class SmoothGradCAMPlusPlus(CamMethod):
    """Smooth Grad-CAM++: Grad-CAM++ with D1, D2, D3 averaged over noisy copies (module docstring)."""

    name = "smoothgradcam++"
    uses_gradients = False  # A from ORT's clean forward; gradients only on the noisy copies
    option_names = frozenset({"samples", "noise", "channels", "region"})

    def begin(self, ctx: Context, layers: list[Layer]) -> None:
        options = ctx.options
        defaults = CATALOGUE[self.name].defaults
        tunnel = NoiseTunnel(options.get("samples", defaults["samples"]),
                             options.get("noise", defaults["noise"]), ctx.seed)
        channels = parse_channels(options.get("channels"), layers, ctx.engine)
        region = parse_region(options.get("region"), tuple(ctx.x.shape[2:]))
        ctx.smooth = self._noisy_pass(ctx, layers, tunnel, region, channels)

    def _noisy_pass(self, ctx: Context, layers: list[Layer], tunnel: NoiseTunnel,
                    region: Region | None, channels: dict[str, ChannelSubset]) -> _State:
        engine = ctx.engine
        names = list(dict.fromkeys(layer.tensor for layer in layers))
        n_images, samples = ctx.x.shape[0], tunnel.samples
        chunk = engine.chunk_size(min(ctx.batch_size, CPU_COPIES_PER_PASS)
                                  if ctx.x.device.type == "cpu" else ctx.batch_size)
        means: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        cells: dict[str, torch.Tensor | None] = {}
        open_sums: dict[int, dict[str, list[torch.Tensor]]] = {}
        counts = [0] * n_images
        bar = tqdm(total=_pieces(n_images, samples, chunk), desc="smoothgradcam++ noisy copies",
                   unit="chunk", leave=False, disable=not ctx.progress)

        def accumulate(part: GradientChunk) -> None:
            if not means:  # first chunk: the taps' grids are known, check the region on them
                grids = {name: tuple(part.values[name].shape[2:]) for name in names}
                if region is not None:
                    region.check_grids(grids)
                for name in names:
                    tap = part.values[name]
                    shape = (n_images, *tap.shape[1:])
                    means[name] = tuple(torch.empty(shape, dtype=torch.float32, device=tap.device)
                                        for _ in range(3))
                    cells[name] = (None if region is None else
                                   torch.from_numpy(region.cells(grids[name])).to(tap.device))
            runs = _runs(part.rows)
            for name in names:
                tap, g = part.values[name], part.gradients[name]
                for image, start, stop in runs:
                    sums = open_sums.setdefault(image, {}).get(name)
                    if sums is None:
                        sums = open_sums[image][name] = [
                            torch.zeros(tap[0].numel(), dtype=torch.float64, device=tap.device)
                            for _ in range(3)]
                    add_power_sums(g[start:stop], sums)
            for image, start, stop in runs:
                counts[image] += stop - start
                if counts[image] == samples:  # all copies of this image are in: store the means
                    for name, sums in open_sums.pop(image).items():
                        for target, total in zip(means[name], sums):
                            target[image] = (total / samples).reshape(target.shape[1:])
            bar.update(1)

        engine.gradient_pass(tunnel.chunks(ctx.x, chunk), ctx.target, names, accumulate)
        bar.close()
        return _State(channels, means, cells)

    def weights(self, data: LayerData, ctx: Context) -> torch.Tensor:
        state: _State | None = getattr(ctx, "smooth", None)
        if state is None or data.layer.tensor not in state.means:
            raise RuntimeError("smoothgradcam++: begin(ctx, layers) must run (with this layer) "
                               "before the per-layer weights")
        d1, d2, d3 = state.means[data.layer.tensor]
        w = smooth_weights(d1, d2, d3, data.activations, state.cells[data.layer.tensor])
        subset = state.channels.get(data.layer.name, ChannelSubset())
        return subset.apply(w)
