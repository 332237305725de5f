"""Mirror gradients against the original torch model (SPEC §3)."""

from __future__ import annotations

import numpy as np
import torch

from camonnx.explainer import Explainer


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


def test_gradients_of_every_tap_equal_torch_hooks(resnet18, resnet18_onnx):
    explainer = Explainer(resnet18_onnx)
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    classes = [5, 500, 999]
    result = explainer.gradients(x, targets=classes)
    logits, acts, grads = _relu_outputs_and_grads(resnet18, x, classes)
    tensors = explainer.graph.tap_tensors
    assert len(tensors) == len(acts) == 17
    np.testing.assert_allclose(result.logits, logits.numpy(), atol=1e-4)
    by_tensor = {layer.tensor: layer.name for layer in explainer.layers}
    for tensor, act, grad in zip(tensors, acts, grads):
        name = by_tensor[tensor]
        # ≤1e-4 relative to each tensor's scale: float32 through up to 18 convs and back
        np.testing.assert_allclose(result.activations[name], act.numpy(),
                                   atol=1e-5 * float(act.abs().max()))
        np.testing.assert_allclose(result.gradients[name], grad.numpy(),
                                   atol=1e-4 * float(grad.abs().max()))


def test_batch_with_different_targets_equals_images_alone(resnet18_onnx):
    explainer = Explainer(resnet18_onnx)
    x = torch.randn(4, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    classes = [1, 7, 42, 999]
    batched = explainer.gradients(x, targets=classes, layers=[0, -1], batch_size=3)
    for i, cls in enumerate(classes):
        alone = explainer.gradients(x[i:i + 1], targets=cls, layers=[0, -1])
        for name in alone.gradients:
            np.testing.assert_allclose(batched.gradients[name][i], alone.gradients[name][0],
                                       rtol=1e-4, atol=1e-6)


def test_default_target_is_the_argmax(resnet18_onnx):
    explainer = Explainer(resnet18_onnx)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    result = explainer.gradients(x, layers="suggested")
    assert result.classes == result.logits.argmax(1).tolist()
