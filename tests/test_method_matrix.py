"""Every registered method on every kind of model: a deep and a shallow layer each.

Models: the default one (``Explainer()``: the bundled pretrained EfficientNet-Lite0, 224×224, on
the bundled cat photo) and two torchvision exports with dynamic height and width, run on one
small random image (resnet18: plain residual blocks; mobilenet_v3_small: depthwise convs,
squeeze-excitation and hard-swish). Each map must be finite, in [0, 1] (local normalisation), at
the image's H×W, and its raw map on the layer's own grid.

Methods that re-run the model once per channel (Score-CAM, Ablation-CAM) take taps with few
channels (see :func:`matrix_layers`), which keeps each call to a few dozen forwards; Smooth
Grad-CAM++ runs on 3 noisy copies.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from camonnx.explainer import Explainer
from camonnx.methods import METHODS
from camonnx.models import default_image
from conftest import CHEAP_OPTIONS, export_legacy

SIZE = 64  # the zoo exports' image size (their export has dynamic height and width)
PER_CHANNEL = {"scorecam", "ablationcam"}  # one forward per channel of the layer
FEW_CHANNELS = 64


def matrix_layers(explainer: Explainer, method: str) -> list:
    """A shallow and a deep tap: the first tap and the deepest with more than one spatial
    position; for per-channel methods, the tap with the fewest channels in the first third of
    the network and the deepest tap with at most FEW_CHANNELS channels."""
    layers = explainer.layers
    if method in PER_CHANNEL:
        shallow = min(layers[:max(1, len(layers) // 3)], key=lambda layer: layer.channels)
        deep = [layer for layer in layers if layer.channels <= FEW_CHANNELS][-1]
    else:
        shallow, deep = layers[0], explainer.suggested_layer
    assert deep.index > shallow.index
    return [shallow, deep]


def _mobilenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(weights=None).eval()


@pytest.fixture(scope="module", params=["default", "resnet18", "mobilenet_v3_small"])
def model(request, tmp_path_factory):
    """(explainer, image, the image's H×W), each model loaded once per test run."""
    if request.param == "default":
        explainer = Explainer()
        return explainer, [default_image()], explainer.preprocess.size
    if request.param == "resnet18":
        path = request.getfixturevalue("resnet18_onnx")
    else:
        path = export_legacy(_mobilenet(), tmp_path_factory.mktemp("mnv3") / "mobilenet.onnx",
                             size=SIZE, dynamic_size=True)
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5)) * 4 - 2
    return Explainer(path), image, (SIZE, SIZE)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_gives_finite_maps_at_the_image_size(model, method):
    explainer, image, size = model
    layers = matrix_layers(explainer, method)
    result = explainer.explain(image, method=method, layers=[layer.index for layer in layers],
                               progress=False, **CHEAP_OPTIONS.get(method, {}))
    assert result.layers == [layer.name for layer in layers]
    assert result.maps.shape == (2, 1, *size)
    assert np.isfinite(result.maps).all()
    assert result.maps.min() >= 0 and result.maps.max() <= 1
    assert set(result.maps.reshape(2, -1).max(1).tolist()) <= {0.0, 1.0}  # local min-max
    grids = explainer.activations(image, [layer.index for layer in layers])
    for raw, layer in zip(result.raw, layers):
        # RISE explains the output: its map is at the input's resolution for every layer
        native = size if method == "rise" else grids[layer.name].shape[2:]
        assert raw.shape == (1, *native) and np.isfinite(raw).all()
