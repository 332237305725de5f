"""Every method's map of an image is the same whatever the batch size and the image's position
in the batch (seeds come from the image's index in the call, never from the batch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camonnx.explainer import Explainer
from camonnx.methods import METHODS
from conftest import CHEAP_OPTIONS

#: batch 1 against batch 3: the same float32 computation except that conv/GEMM kernels may
#: tile a batch of 3 differently from 3 batches of 1 (summation order, ~1e-7 relative); maps are
#: min-max normalised to [0, 1], so 1e-4 absolute is ~1000× that rounding and far below any
#: seeding or indexing error (which moves a map by O(0.1)).
ATOL = 1e-4


@pytest.fixture(scope="module")
def explainer(resnet18_onnx):
    return Explainer(resnet18_onnx)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_maps_do_not_depend_on_the_batch(explainer, method):
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(11))
    options = CHEAP_OPTIONS.get(method, {})
    layers = [1, 6]  # 64- and 128-channel taps: score/ablation cost one forward per channel
    together = explainer.explain(x, method=method, layers=layers, targets=[1, 2, 3],
                                 batch_size=3, progress=False, **options)
    alone = explainer.explain(x, method=method, layers=layers, targets=[1, 2, 3],
                              batch_size=1, progress=False, **options)
    np.testing.assert_allclose(together.maps, alone.maps, atol=ATOL)


def test_randomcam_gives_each_image_its_own_weights(explainer):
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(12)).repeat(2, 1, 1, 1)
    maps = explainer.explain(x, method="randomcam", layers=[3], progress=False).maps[0]
    assert np.abs(maps[0] - maps[1]).max() > 0.05
    again = explainer.explain(x, method="randomcam", layers=[3], progress=False).maps[0]
    np.testing.assert_array_equal(maps, again)  # seeded: the same call gives the same maps
