"""Mirror gradients against the original torch model.

The oracle comparison runs in float64 on both sides: the mirror as
``copy.deepcopy(explainer.mirror).double()`` (the file's float32 weights, computed in float64)
against ``copy.deepcopy(model).double()``. In float32 neither side is an oracle for the other: a
ReLU input or max-pool window within float32 rounding of a tie takes a different branch on each
side, and the float32 gradients of this very test then differ from the float64 ones by up to 0.12
of a tap's max (measured over input seeds 0–5). The model's BatchNorm is made exactly foldable
(:func:`conftest.dyadic_batchnorm`), so the file and the module compute the same function.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from camonnx.explainer import Explainer
from conftest import _torchvision, dyadic_batchnorm, export_legacy

CLASSES = [5, 500, 999]
#: float64 mirror against float64 torch, per tensor, relative to its max: float64 rounding through
#: 18 convs and back: measured ≤ 6e-15 here (seeds 0–5); 1e-6 leaves room for nothing but rounding.
RTOL64 = 1e-6
#: float32 public API (explainer.gradients) against the float64 torch model, forward tensors only:
#: measured over input seeds 0–5 on this model: logits ≤ 4.9e-7, activations ≤ 3.1e-6 of the
#: max, so 1e-5 of the max. (Float32 gradients have no such bound, see the module docstring;
#: they are checked against the mirror's own float32 autograd instead.)
RTOL32 = 1e-5


@pytest.fixture(scope="module")
def resnet18_exact(tmp_path_factory):
    """resnet18 (random weights, seed 0) with exactly foldable BatchNorm, and its export."""
    model = dyadic_batchnorm(_torchvision("resnet18"), seed=2)
    path = export_legacy(model, tmp_path_factory.mktemp("r18exact") / "resnet18.onnx")
    return model, Explainer(path)


def _relu_outputs_and_grads(model, x, classes):
    """Every nn.ReLU output in call order (= resnet18's distinct block taps) and ∂y/∂output."""
    outputs = []
    handles = [m.register_forward_hook(lambda m, i, o: outputs.append(o))
               for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    score = logits[torch.arange(len(classes)), torch.tensor(classes)].sum()
    grads = torch.autograd.grad(score, outputs)
    return logits.detach(), [o.detach() for o in outputs], [g.detach() for g in grads]


def _mirror_taps_and_grads(mirror, explainer, x, classes):
    """The mirror's logits, every tap and ∂y/∂tap (keyed by tap tensor), one forward + backward."""
    tensors = explainer.graph.tap_tensors
    values = mirror(explainer.to_model_layout(x).requires_grad_(True),
                    tensors + [explainer.graph.logits])
    logits = values[explainer.graph.logits]
    score = logits[torch.arange(len(classes)), torch.tensor(classes)].sum()
    grads = torch.autograd.grad(score, [values[t] for t in tensors])
    return (logits.detach(), {t: values[t].detach() for t in tensors},
            {t: g.detach() for t, g in zip(tensors, grads)})


def _assert_within(got, want, rtol: float, what: str) -> None:
    got, want = torch.as_tensor(got).double(), torch.as_tensor(want).double()
    scale = float(want.abs().max())
    err = float((got - want).abs().max())
    assert err <= rtol * scale, f"{what}: max error {err:.2e} = {err / scale:.1e} of the max"


def test_gradients_of_every_tap_equal_torch_hooks_in_float64(resnet18_exact):
    model, explainer = resnet18_exact
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    logits, acts, grads = _relu_outputs_and_grads(copy.deepcopy(model).double(), x, CLASSES)
    mirror = copy.deepcopy(explainer.mirror).double()
    our_logits, our_acts, our_grads = _mirror_taps_and_grads(mirror, explainer, x, CLASSES)
    tensors = explainer.graph.tap_tensors
    assert len(tensors) == len(acts) == 17
    _assert_within(our_logits, logits, RTOL64, "logits")
    for tensor, act, grad in zip(tensors, acts, grads):
        _assert_within(our_acts[tensor], act, RTOL64, f"activation {tensor}")
        assert float(grad.abs().max()) > 0
        _assert_within(our_grads[tensor], grad, RTOL64, f"gradient {tensor}")


def test_gradients_api_returns_each_layers_tap_and_its_gradient(resnet18_exact):
    """explainer.gradients (float32) names every layer's tap and gradient right: its activations
    and logits match the float64 torch model within float32 rounding (RTOL32), and its gradients
    are exactly the float32 mirror's own autograd of the targets' scores."""
    model, explainer = resnet18_exact
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    result = explainer.gradients(x, targets=CLASSES)
    logits, acts, _ = _relu_outputs_and_grads(copy.deepcopy(model).double(), x.double(), CLASSES)
    _, _, grads32 = _mirror_taps_and_grads(explainer.mirror, explainer, x, CLASSES)
    _assert_within(result.logits, logits, RTOL32, "logits")
    assert result.classes == CLASSES
    by_tensor = {tensor: act for tensor, act in zip(explainer.graph.tap_tensors, acts)}
    assert [layer.name for layer in explainer.layers] == list(result.gradients)
    for layer in explainer.layers:
        _assert_within(result.activations[layer.name], by_tensor[layer.tensor], RTOL32,
                       f"activation {layer.name}")
        np.testing.assert_array_equal(result.gradients[layer.name], grads32[layer.tensor].numpy())


def test_batch_with_different_targets_equals_images_alone(resnet18_onnx):
    explainer = Explainer(resnet18_onnx)
    x = torch.randn(4, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    classes = [1, 7, 42, 999]
    batched = explainer.gradients(x, targets=classes, layers=[0, -1], batch_size=3)
    for i, cls in enumerate(classes):
        alone = explainer.gradients(x[i:i + 1], targets=cls, layers=[0, -1])
        for name in alone.gradients:
            # the same float32 computation but for the conv kernels' batch-dependent summation
            # order: measured over input seeds 0–7: ≤ 1.3e-6 of the max, ≤ 0.04 of this
            # allowance (no ReLU took a different branch at these taps and this size)
            np.testing.assert_allclose(batched.gradients[name][i], alone.gradients[name][0],
                                       rtol=1e-4, atol=1e-6)


def test_default_target_is_the_argmax(resnet18_onnx):
    explainer = Explainer(resnet18_onnx)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    result = explainer.gradients(x, layers="suggested")
    assert result.classes == result.logits.argmax(1).tolist()


def test_gradients_and_gradients_tensors_unpack_in_the_same_order(resnet18_onnx):
    """Both unpack as (logits, activations, gradients): the numpy API keyed by layer name, the
    torch one by tap tensor, with the same values and the same resolved target."""
    explainer = Explainer(resnet18_onnx)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    layers = explainer.select_layers([0, -1])
    logits, acts, grads = explainer.gradients(x, targets=[3, 1, 4], layers=[0, -1], batch_size=2)
    logits_t, acts_t, grads_t = explainer.gradients_tensors(x, [3, 1, 4], layers, batch_size=2)
    np.testing.assert_array_equal(logits, logits_t.numpy())
    for layer in layers:
        np.testing.assert_array_equal(acts[layer.name], acts_t[layer.tensor].numpy())
        np.testing.assert_array_equal(grads[layer.name], grads_t[layer.tensor].numpy())
    result = explainer.gradients_tensors(x, None, layers, batch_size=2)
    assert result.classes == result.logits.argmax(1).tolist() == list(result.target.indices)
