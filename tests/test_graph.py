"""Taps, exposure and mirror parity on real torchvision exports (docs/pipeline.md).

Oracle: the torch model in float64 (``copy.deepcopy(model).double()`` on a float64 copy of the
input). ONNX Runtime and the explainer's float32 passes are compared with it within float32
rounding, relative to each tensor's max (:data:`RTOL32`).
"""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch

from camonnx.explainer import Explainer
from camonnx.graph import load_graph

#: float32 (ONNX Runtime or the mirror) against the float64 torch model, relative to the max:
#: measured over input seeds 0–4: resnet50's last block ≤ 1.05e-6; resnet18's logits ≤ 7.4e-7
#: at 64×64 and ≤ 4.9e-7 at 224×224 (ORT and mirror alike), so 1e-5 of the max.
RTOL32 = 1e-5


def float64_run(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """The model's output in float64 (on a float64 copy of the model and of ``x``)."""
    with torch.no_grad():
        return copy.deepcopy(model).double()(x.double()).numpy()


def assert_close_to(got, want: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0,
                               atol=RTOL32 * float(np.abs(want).max()))


def test_resnet50_has_53_taps_and_block_tap_equals_forward_hook(resnet50, resnet50_onnx):
    explainer = Explainer(resnet50_onnx)
    assert len(explainer.layers) == 53
    last = explainer.layer("/layer4/layer4.2/conv3/Conv")
    assert last.ops == ("Conv", "Add", "Relu") and last.shape == (2048, 7, 7) and last.stride == 32
    assert explainer.suggested_layer.tensor == last.tensor

    seen = {}
    model = copy.deepcopy(resnet50).double()
    handle = model.layer4[-1].register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(x.double())
    handle.remove()
    ours = explainer.activations(x, layers=[last.name])[last.name]
    assert_close_to(ours, seen["out"].numpy())


def test_exposing_taps_does_not_change_logits(resnet50_onnx):
    graph = load_graph(resnet50_onnx)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    plain = ort.InferenceSession(str(resnet50_onnx), providers=["CPUExecutionProvider"])
    exposed = ort.InferenceSession(graph.prepared.SerializeToString(), providers=["CPUExecutionProvider"])
    # the logits, every distinct tap, and the strided pools (Gradual Extrapolation steps)
    assert len(exposed.get_outputs()) == 1 + len(graph.tap_tensors) + len(graph.pool_steps)
    np.testing.assert_array_equal(plain.run(None, {"input": x})[0],
                                  exposed.run(["logits"], {"input": x})[0])


def test_conv_taps_are_raw_conv_outputs(resnet18_onnx):
    block = load_graph(resnet18_onnx)
    conv = load_graph(resnet18_onnx, tap="conv")
    assert [l.name for l in block.layers] == [l.name for l in conv.layers]
    assert all(l.ops == ("Conv",) for l in conv.layers)
    assert len(set(l.tensor for l in conv.layers)) == 20  # no sharing: one tensor per conv
    assert len(block.tap_tensors) == 17  # downsample convs share their block's output


def test_trailing_softmax_is_detected_and_logits_are_pre_softmax(resnet18, tmp_path):
    from conftest import export_legacy

    wrapped = torch.nn.Sequential(resnet18, torch.nn.Softmax(dim=1)).eval()
    path = export_legacy(wrapped, tmp_path / "softmax.onnx")
    explainer = Explainer(path)
    assert explainer.graph.softmax == "Softmax"
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    logits = explainer.forward(x, [explainer.graph.logits])[explainer.graph.logits]
    assert_close_to(logits.numpy(), float64_run(resnet18, x))


def test_fixed_batch_model_runs_image_by_image(resnet18, tmp_path):
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(resnet18, (torch.randn(1, 3, 64, 64),), str(path), dynamo=False,
                      input_names=["input"], output_names=["logits"], opset_version=13)
    explainer = Explainer(path)
    assert explainer.graph.input.fixed_batch and explainer.preprocess.size == (64, 64)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    result = explainer.gradients(x, targets=[1, 2, 3])
    assert_close_to(result.logits, float64_run(resnet18, x))
    assert result.classes == [1, 2, 3]


def test_nhwc_model_layout_is_detected(resnet18, tmp_path):
    class NHWC(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = resnet18

        def forward(self, x):
            return self.net(x.permute(0, 3, 1, 2))

    path = tmp_path / "nhwc.onnx"
    torch.onnx.export(NHWC().eval(), (torch.randn(1, 64, 64, 3),), str(path), dynamo=False,
                      input_names=["input"], output_names=["logits"], opset_version=13,
                      dynamic_axes={"input": {0: "N"}})
    explainer = Explainer(path)
    assert explainer.graph.input.layout == "NHWC" and explainer.preprocess.size == (64, 64)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    logits = explainer.forward(x, [explainer.graph.logits])[explainer.graph.logits]
    assert_close_to(logits.numpy(), float64_run(resnet18, x))
    assert explainer.layers[0].shape == (64, 32, 32)
