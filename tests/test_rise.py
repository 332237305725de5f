"""RISE (docs/methods.md#rise): against a direct float64 implementation, seeded, independent of
batching, and finding the one region a toy model looks at.

The direct implementation draws the masks in the documented order from
``numpy.random.default_rng(seed)``, upsamples each grid with its own numpy bilinear sampling
(half-pixel centres, clamped edges), masks the image in float64 and scores it with the torch
model in float64. camonnx's side builds float32 masks and forwards through ONNX Runtime in
float32 (tolerance below, measured).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from camonnx.errors import InputError

from conftest import export_legacy
from test_metrics import SIZE, Tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return Tiny().eval()


@pytest.fixture(scope="module")
def explainer(tiny, tmp_path_factory):
    from camonnx.explainer import Explainer

    return Explainer(export_legacy(tiny, tmp_path_factory.mktemp("rise") / "tiny.onnx", size=SIZE))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))


def bilinear_axis(n_out: int, n_in: int):
    """Source indices and weights of half-pixel bilinear sampling along one axis, clamped."""
    src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    return i0, np.minimum(i0 + 1, n_in - 1), src - i0


def rise64(model, x: np.ndarray, score, masks: int, cells: int, keep: float, seed: int):
    """M[n] = Σ_i score_n(x_n ⊙ m_i)·m_i / (masks·keep), every step written out in float64."""
    n_images, _, h, w = x.shape
    rng = np.random.default_rng(seed)
    ch, cw = math.ceil(h / cells), math.ceil(w / cells)
    grids = (rng.random((masks, cells, cells)) < keep).astype(np.float64)
    dys, dxs = rng.integers(0, ch, masks), rng.integers(0, cw, masks)
    r0, r1, rl = bilinear_axis((cells + 1) * ch, cells)
    c0, c1, cl = bilinear_axis((cells + 1) * cw, cells)
    total = np.zeros((n_images, h, w))
    model.double()
    for grid, dy, dx in zip(grids, dys, dxs):
        rows = grid[r0] * (1 - rl)[:, None] + grid[r1] * rl[:, None]
        up = rows[:, c0] * (1 - cl)[None] + rows[:, c1] * cl[None]
        mask = up[dy:dy + h, dx:dx + w]
        with torch.no_grad():
            logits = model(torch.from_numpy(x * mask))
        for n in range(n_images):
            total[n] += score(logits, n) * mask
    model.float()
    return total / (masks * keep)


def test_rise_agrees_with_a_direct_loop_in_float64(tiny, explainer, images):
    """Raw maps within 1e-6 of the float64 loop (values ≈ 0.2; measured ≤ 1e-7: float32 masks and
    ORT's float32 forward), for the softmax probability of the predicted class and for a
    function target (its score: here the logit of class 3); 40 masks (not a multiple of the
    block), 3×3 cells on 32×32 (cells of 11 pixels, upsampled to 44 and cropped); the same map
    for every layer."""
    x64 = images.double().numpy()
    with torch.no_grad():
        classes = tiny(images).argmax(1).tolist()
    options = dict(method="rise", layers="all", normalize="none", masks=40, cells=3, keep=0.4,
                   seed=11, progress=False)
    ours = explainer.explain(images, **options)
    ref = rise64(tiny, x64, lambda z, n: float(torch.softmax(z[n], 0)[classes[n]]), 40, 3, 0.4, 11)
    assert ours.maps.shape == (2, 2, SIZE, SIZE)
    assert np.array_equal(ours.maps[0], ours.maps[1])
    assert np.abs(ours.maps[0] - ref).max() <= 1e-6
    assert ref.max() - ref.min() > 0.05  # the map has structure far above the tolerance

    logit = explainer.explain(images, targets=lambda z: z[:, 3], **options)
    ref = rise64(tiny, x64, lambda z, n: float(z[n, 3]), 40, 3, 0.4, 11)
    assert np.abs(logit.maps[0] - ref).max() <= 1e-6 * max(1.0, np.abs(ref).max())


def test_rise_is_seeded_and_independent_of_batching(explainer, images):
    """The same seed gives the same maps, another seed other maps; an image's map is
    bit-identical alone or in a batch, for any forward batch size."""
    run = lambda x, seed=2, batch_size=16: explainer.explain(  # noqa: E731
        x, method="rise", layers="suggested", normalize="none", masks=300, cells=4, seed=seed,
        batch_size=batch_size, progress=False).maps
    both = run(images)
    assert np.array_equal(both, run(images))
    assert not np.allclose(both, run(images, seed=3))
    assert np.array_equal(both[:, :1], run(images[:1], batch_size=50))
    assert np.array_equal(both[:, 1:], run(images[1:], batch_size=7))


class Region(torch.nn.Module):
    """Class scores that see only the box rows 8–15, columns 18–27: a positive 1×1 conv, ReLU,
    × the box, mean, then class 0 = +5·Σ, class 1 = −5·Σ, class 2 = 0."""

    BOX = (slice(8, 16), slice(18, 28))

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)
        self.fc = torch.nn.Linear(4, 3, bias=False)
        box = torch.zeros(1, 1, SIZE, SIZE)
        box[(..., *self.BOX)] = 1.0
        self.register_buffer("box", box)
        with torch.no_grad():
            self.conv.weight.fill_(1 / 3)
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[5.0] * 4, [-5.0] * 4, [0.0] * 4]))

    def forward(self, x):
        return self.fc((torch.relu(self.conv(x)) * self.box).mean(dim=(2, 3)))


def test_rise_map_is_highest_where_the_model_looks(tmp_path):
    """On a model whose class depends only on one box, the map's maximum lies in the box, and
    every pixel of the box scores above every pixel farther than one cell (8 px) from it
    (seeded: measured 0.573 for the box's lowest against 0.564 for the farthest's highest, whose
    mean is 0.530; the box's maximum is 0.609)."""
    from camonnx.explainer import Explainer

    explainer = Explainer(export_legacy(Region().eval(), tmp_path / "region.onnx", size=SIZE))
    x = 0.5 + 0.5 * torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    maps = explainer.explain(x, method="rise", layers="suggested", normalize="none", masks=500,
                             cells=4, seed=0, progress=False)
    assert maps.targets == [0]
    m = maps.maps[0, 0]
    inside = np.zeros((SIZE, SIZE), bool)
    inside[Region.BOX] = True
    far = np.ones((SIZE, SIZE), bool)
    far[0:24, 10:] = False  # the box grown by 8 px (clipped at the image's edge)
    assert inside[np.unravel_index(m.argmax(), m.shape)]
    assert m[inside].min() > m[far].max()


def test_rise_rejects_bad_options(explainer, images):
    for options, message in [({"masks": 0}, "masks"), ({"masks": 2.5}, "masks"),
                             ({"cells": 0}, "cells"), ({"cells": 33}, "smaller side"),
                             ({"keep": 0}, "keep"), ({"keep": 1.5}, "keep"),
                             ({"samples": 3}, "do not apply")]:
        with pytest.raises(InputError, match=message):
            explainer.explain(images[:1], method="rise", layers="suggested", progress=False,
                              **options)
