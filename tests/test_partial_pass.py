"""The partial route: for deep taps, ONNX Runtime's activations and a mirror pass over the rest.

Oracle: the full route through the float64 twin of the mirror (:func:`camonnx.parity.float64_twin`:
the file's weights computed in float64). Both float32 routes are compared with it, relative to
each tensor's max; the partial route must be as close as the full one. Measured over input seeds
0–4 on these models (the last and third-last taps): activations ≤ 2.5e-6 and gradients ≤ 3.5e-7
of the max on either route (ORT's and the mirror's float32 roundings are of the same order), so
1e-4, which no wrong cut (a missing residual input, a gradient stopping at the wrong tensor)
would pass: those are O(1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camonnx.explainer import Explainer
from camonnx.parity import float64_twin

RTOL = 1e-4


@pytest.fixture(scope="module", params=["resnet18", "default"])
def explainer(request):
    if request.param == "default":
        return Explainer()
    return Explainer(request.getfixturevalue("resnet18_onnx"))


def _image(explainer: Explainer, seed: int) -> torch.Tensor:
    h, w = explainer.preprocess.size
    return torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _float64_full_route(explainer: Explainer, x: torch.Tensor, taps: list[str], classes):
    twin = float64_twin(explainer.mirror)
    xm = explainer.engine.to_model_layout(x).double().requires_grad_(True)
    logits_name = explainer.graph.logits
    values = twin(xm, taps + [logits_name])
    score = values[logits_name][torch.arange(x.shape[0]), torch.as_tensor(classes)].sum()
    grads = torch.autograd.grad(score, [values[t] for t in taps])
    return {t: values[t].detach().numpy() for t in taps}, {t: g.numpy() for t, g in zip(taps, grads)}


def _close(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / max(np.abs(want).max(), 1e-30))


def test_deep_layers_take_the_partial_route_and_all_layers_the_full_one(explainer):
    engine = explainer.engine
    deep = [explainer.layers[-1].tensor]
    assert engine.partial_route(deep, ()) is not None
    assert engine.partial_route([layer.tensor for layer in explainer.layers], ()) is None
    engine.partial_pass = False
    try:
        assert engine.partial_route(deep, ()) is None
    finally:
        engine.partial_pass = True


@pytest.mark.parametrize("seed", [0, 1])
def test_partial_route_equals_the_float64_full_route(explainer, seed):
    layers = [explainer.layers[-3], explainer.layers[-1]]
    taps = [layer.tensor for layer in layers]
    x = _image(explainer, seed)
    assert explainer.engine.partial_route(taps, ()) is not None
    classes = [7, 400]
    errors = {}
    for partial in (True, False):
        explainer.engine.partial_pass = partial
        try:
            logits, acts, grads = explainer.gradients(x, targets=classes,
                                                     layers=[layer.index for layer in layers])
        finally:
            explainer.engine.partial_pass = True
        exact_acts, exact_grads = _float64_full_route(explainer, x, taps, classes)
        errors[partial] = max(max(_close(acts[layer.name], exact_acts[layer.tensor]),
                                  _close(grads[layer.name], exact_grads[layer.tensor]))
                              for layer in layers)
    assert errors[True] <= RTOL and errors[False] <= RTOL, errors


def test_partial_route_maps_match_the_full_route_with_extrapolation(explainer):
    """Gradual Extrapolation reads earlier layers' activations: ONNX Runtime gives them."""
    x = _image(explainer, 3)
    maps = {}
    for partial in (True, False):
        explainer.engine.partial_pass = partial
        try:
            maps[partial] = explainer.explain(x, layers=[-1], extrapolate=True, targets=3,
                                              progress=False).maps
        finally:
            explainer.engine.partial_pass = True
    # [0, 1] maps; Gradual Extrapolation's final z-score amplifies float32 rounding: measured
    # ≤ 3.2e-5 apart over seeds 0–4 on both models, so 3e-4
    np.testing.assert_allclose(maps[True], maps[False], rtol=0, atol=3e-4)
