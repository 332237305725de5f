"""ONNX Runtime's two sessions of a model (camonnx/runtime.py): the prepared one, with every tap
exposed as an output, and the lean one, with only the class scores, which the metrics' forwards
use because ONNX Runtime may fuse and reuse what is not an output.

Oracle: the float64 mirror of the graph (``parity.float64_twin``), against which both sessions'
float32 logits must agree to the same tolerance; a model whose class output is (N, K, 1, 1)
(camonnx appends a Flatten) gives the same (N, K) scores from both sessions.
"""

from __future__ import annotations

import numpy as np
import torch

from camonnx import parity
from camonnx.explainer import Explainer
from test_class_output import squeezenet_like


def _prepared_logits(explainer: Explainer, x: torch.Tensor) -> np.ndarray:
    runtime, name = explainer.engine.runtime, explainer.graph.logits
    return runtime.session.run([name], {runtime.input_name: x.numpy()})[0]


def test_lean_session_serves_logits_only_forwards_and_agrees_with_float64(resnet18_onnx):
    """Relative to the largest float64 logit: float32 through 18 conv layers, measured at
    3.7e-7 for either session (and the two sessions bit-identical on this CPU); the tolerance
    1e-5 leaves room for other fusions and kernels on other CPUs, and the two sessions must
    also agree with each other within it."""
    explainer = Explainer(resnet18_onnx)
    runtime, logits_name = explainer.engine.runtime, explainer.graph.logits
    tap = explainer.layers[-1].tensor
    assert runtime.session_for([tap, logits_name]) is runtime.session   # taps: the prepared one
    lean = runtime.session_for([logits_name])
    assert lean is not runtime.session and runtime.session_for([logits_name]) is lean
    assert [o.name for o in lean.get_outputs()] == [logits_name]

    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    fast = explainer.engine.forward(x, [logits_name])[logits_name].numpy().astype(np.float64)
    prepared = _prepared_logits(explainer, x).astype(np.float64)
    exact = parity.float64_twin(explainer.mirror)(x.double(), [logits_name])[logits_name].numpy()
    scale = np.abs(exact).max()
    assert np.abs(fast - exact).max() <= 1e-5 * scale
    assert np.abs(prepared - exact).max() <= 1e-5 * scale
    assert np.abs(fast - prepared).max() <= 1e-5 * scale


def test_lean_session_flattens_a_4d_class_output(tmp_path):
    """(N, 10, 1, 1) scores: the lean model carries camonnx's Flatten too."""
    explainer = Explainer(squeezenet_like(tmp_path / "squeeze.onnx", flatten=False))
    name = explainer.graph.logits
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    fast = explainer.engine.forward(x, [name])[name].numpy()
    assert fast.shape == (2, 10)
    assert np.allclose(fast, _prepared_logits(explainer, x), rtol=1e-5, atol=1e-6)
