"""The class output of any shape, several outputs, NHWC tensors as-is, and Ablation-CAM on a
graph whose flatten reads its shape from the input — each rebuilt from a hand-made ONNX graph.

Oracles: ONNX Runtime on the original file (the logits camonnx reports are the model's own
output, flattened), and the same network ending in an explicit Flatten (the (N, C) form that
camonnx handled before): the maps and gradients of the two must be identical, since the only
difference is a reshape of the class vector.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from camonnx.cli import main
from camonnx.errors import InputError, ModelLoadError
from camonnx.explainer import Explainer

F = TensorProto.FLOAT
CLASSES = 10


def _init(name: str, shape, seed: int, scale: float = 0.3) -> onnx.TensorProto:
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * scale
    return numpy_helper.from_array(values, name)


def _save(graph: onnx.GraphProto, path, opset: int = 13) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _trunk(nodes: list, inits: list, source: str = "x") -> str:
    """Conv(3→8, stride 2) → Relu → Conv(8→10) → Relu; returns the last tensor (N, 10, h, w)."""
    inits += [_init("w1", (8, 3, 3, 3), 1), _init("w2", (CLASSES, 8, 3, 3), 2)]
    nodes += [helper.make_node("Conv", [source, "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2],
                               name="conv1"),
              helper.make_node("Relu", ["c1"], ["r1"]),
              helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
              helper.make_node("Relu", ["c2"], ["r2"])]
    return "r2"


def squeezenet_like(path, flatten: bool, opset: int = 13) -> str:
    """An ONNX-zoo SqueezeNet-style head: GlobalAveragePool → Softmax with no Flatten, so the
    output is (N, 10, 1, 1); with ``flatten`` the same network ends in (N, 10)."""
    nodes, inits = [], []
    last = _trunk(nodes, inits)
    nodes.append(helper.make_node("GlobalAveragePool", [last], ["pooled"]))
    out_shape = ["N", CLASSES, 1, 1]
    if flatten:
        nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], axis=1))
        last, out_shape = "flat", ["N", CLASSES]
    else:
        last = "pooled"
    nodes.append(helper.make_node("Softmax", [last], ["prob"], axis=1))
    graph = helper.make_graph(nodes, "squeeze", [helper.make_tensor_value_info("x", F, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("prob", F, out_shape)], inits)
    return _save(graph, path, opset)


def keras_like(path) -> str:
    """A tf2onnx-style NHWC model whose head is a 1×1 conv: input (N, 32, 32, 3), Transpose to
    NCHW, the trunk, a global pool, the 1×1 conv classifier, Transpose back: output (N, 1, 1, 10)."""
    nodes = [helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2])]
    inits: list = []
    last = _trunk(nodes, inits, "x_nchw")
    inits.append(_init("head", (CLASSES, CLASSES, 1, 1), 3))
    nodes += [helper.make_node("GlobalAveragePool", [last], ["pooled"]),
              helper.make_node("Conv", ["pooled", "head"], ["scores"], name="head"),
              helper.make_node("Transpose", ["scores"], ["scores_nhwc"], perm=[0, 2, 3, 1])]
    graph = helper.make_graph(nodes, "keras", [helper.make_tensor_value_info("x", F, ["N", 32, 32, 3])],
                              [helper.make_tensor_value_info("scores_nhwc", F, ["N", 1, 1, CLASSES])], inits)
    return _save(graph, path)


def two_outputs(path, first: str) -> str:
    """Outputs: a feature map (N, 10, 16, 16) and logits (N, 10) and auxiliary logits (N, 10),
    in the order named by ``first`` ("features" or "logits")."""
    nodes, inits = [], []
    last = _trunk(nodes, inits)
    inits.append(_init("aux_scale", (1,), 4))
    nodes += [helper.make_node("GlobalAveragePool", [last], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["logits"], axis=1),
              helper.make_node("Mul", ["logits", "aux_scale"], ["aux"])]
    outputs = {"features": helper.make_tensor_value_info(last, F, ["N", CLASSES, 16, 16]),
               "logits": helper.make_tensor_value_info("logits", F, ["N", CLASSES]),
               "aux": helper.make_tensor_value_info("aux", F, ["N", CLASSES])}
    order = ["features", "logits", "aux"] if first == "features" else ["logits", "aux", "features"]
    graph = helper.make_graph(nodes, "multi", [helper.make_tensor_value_info("x", F, ["N", 3, 32, 32])],
                              [outputs[k] for k in order], inits)
    return _save(graph, path)


def _images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("opset", [9, 13])
def test_4d_logits_explain_like_their_flattened_twin(tmp_path, opset):
    four_d = Explainer(squeezenet_like(tmp_path / "4d.onnx", flatten=False, opset=opset))
    flat = Explainer(squeezenet_like(tmp_path / "2d.onnx", flatten=True, opset=opset))
    x = _images()
    session = ort.InferenceSession(str(tmp_path / "4d.onnx"), providers=["CPUExecutionProvider"])
    logits = four_d.logits(x)
    assert logits.shape == (2, CLASSES)
    # the logits are the pre-Softmax tensor: their softmax (float64) is ORT's (N, 10, 1, 1)
    # float32 output, within ORT's float32 rounding (measured ≤ 1.6e-7 per element, seeds 0–5)
    probs = session.run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(probs.reshape(2, CLASSES),
                               torch.softmax(torch.from_numpy(logits).double(), 1).numpy(),
                               rtol=1e-6, atol=0)
    for method in ("gradcam", "scorecam"):
        a = four_d.explain(x, method=method, targets=[3, 7], progress=False)
        b = flat.explain(x, method=method, targets=[3, 7], progress=False)
        assert a.targets == [3, 7] and a.maps.shape == (2, 2, 32, 32)
        np.testing.assert_array_equal(a.maps, b.maps)  # identical but for a reshape
    grads = four_d.gradients(x)
    assert grads.classes == logits.argmax(1).tolist()


def test_class_index_out_of_range_names_the_classes(tmp_path):
    explainer = Explainer(squeezenet_like(tmp_path / "m.onnx", flatten=False))
    with pytest.raises(InputError, match="10 classes"):
        explainer.explain(_images(1), targets=10, progress=False)


def test_nhwc_model_takes_its_own_layout_and_nchw(tmp_path):
    explainer = Explainer(keras_like(tmp_path / "keras.onnx"))
    assert explainer.graph.input.layout == "NHWC"
    x = _images(2, seed=1)
    session = ort.InferenceSession(str(tmp_path / "keras.onnx"), providers=["CPUExecutionProvider"])
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    reference = session.run(None, {"x": nhwc.numpy()})[0].reshape(2, CLASSES)
    np.testing.assert_array_equal(explainer.logits(nhwc), reference)  # (N, 1, 1, C) → (N, C)
    np.testing.assert_array_equal(explainer.logits(nhwc.numpy()), reference)
    as_nhwc = explainer.explain(nhwc, layers="all", progress=False)
    as_nchw = explainer.explain(x, layers="all", progress=False)
    assert as_nhwc.maps.shape == (3, 2, 32, 32)  # 3 convs (the 1×1 head too), at the image's H×W
    np.testing.assert_array_equal(as_nhwc.maps, as_nchw.maps)
    np.testing.assert_array_equal(explainer.logits(x[0].permute(1, 2, 0)), reference[:1])
    with pytest.raises(InputError, match="expects"):
        explainer.logits(torch.zeros(1, 3, 20, 20))  # neither layout fits a 32×32 model


def test_first_class_output_is_chosen_and_output_overrides(tmp_path, caplog):
    path = two_outputs(tmp_path / "features_first.onnx", first="features")
    with caplog.at_level(logging.WARNING, logger="camonnx"):
        explainer = Explainer(path)
    assert explainer.graph.output == "logits"  # the feature map is not a class vector
    assert "explaining 'logits'" in caplog.text and "output=NAME" in caplog.text
    aux = Explainer(path, output="aux")
    assert aux.graph.output == "aux"
    x = _images(1)
    scale = float(numpy_helper.to_array(onnx.load(path).graph.initializer[-1])[0])
    # ORT's float32 product against the float64 one: one rounding (measured ≤ 4.1e-8, seeds 0–5)
    np.testing.assert_allclose(aux.logits(x), explainer.logits(x).astype(np.float64) * scale,
                               rtol=1e-6)
    with pytest.raises(InputError, match="Unknown output 'logit'.*Did you mean: logits"):
        Explainer(path, output="logit")
    with pytest.raises(ModelLoadError, match=r"'r2' has shape \(N, 10, 16, 16\)"):
        Explainer(path, output="r2")


def test_no_class_output_is_a_clear_error(tmp_path):
    nodes, inits = [], []
    last = _trunk(nodes, inits)
    graph = helper.make_graph(nodes, "features", [helper.make_tensor_value_info("x", F, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info(last, F, ["N", CLASSES, 16, 16])], inits)
    path = _save(graph, tmp_path / "features.onnx")
    with pytest.raises(ModelLoadError, match=r"No output .* 'r2' \(N, 10, 16, 16\)"):
        Explainer(path)
    result = CliRunner().invoke(main, ["layers", path])
    assert result.exit_code == 2
    assert result.output.count("Error:") == 1 and "Traceback" not in result.output


def flatten_reads_input_shape(path) -> str:
    """PyTorch's ``x.view(x.size(0), -1)`` as the legacy exporter writes it: the Reshape's
    target shape is Concat(Shape(input)[0], -1), an int64 tensor computed from the input."""
    nodes, inits = [], []
    last = _trunk(nodes, inits)
    inits += [numpy_helper.from_array(np.array([0], np.int64), "zero"),
              numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
              _init("fc", (CLASSES * 16 * 16, 4), 5, 0.05)]
    nodes += [helper.make_node("Shape", ["x"], ["x_shape"]),
              helper.make_node("Gather", ["x_shape", "zero"], ["batch"], axis=0),
              helper.make_node("Concat", ["batch", "minus_one"], ["target_shape"], axis=0),
              helper.make_node("Reshape", [last, "target_shape"], ["flat"]),
              helper.make_node("MatMul", ["flat", "fc"], ["logits"])]
    graph = helper.make_graph(nodes, "reshape", [helper.make_tensor_value_info("x", F, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", F, ["N", 4])], inits)
    return _save(graph, path)


def test_ablationcam_when_the_flatten_reads_its_shape_from_the_input(tmp_path):
    explainer = Explainer(flatten_reads_input_shape(tmp_path / "reshape.onnx"))
    assert "target_shape" in explainer.mirror.frontier(explainer.layers[0].tensor)
    x = _images(2, seed=2)
    result = explainer.explain(x, method="ablationcam", targets=[1, 2], normalize="none",
                               progress=False)
    assert np.isfinite(result.maps).all() and result.maps.shape == (2, 2, 32, 32)
    # Direct oracle for one channel of the last layer: y − y_k from ORT with the tap's channel
    # zeroed is what the weights are built from (w_k = (y − y_k) / (y + ε)), so the raw map is
    # ReLU(Σ_k w_k A_k) computed here in float64 from ORT's own numbers.
    layer = explainer.layers[-1]
    acts = explainer.activations(x, [layer.index])[layer.name].astype(np.float64)
    fc = numpy_helper.to_array(onnx.load(str(tmp_path / "reshape.onnx")).graph.initializer[-1])
    fc = fc.astype(np.float64)
    raw = []
    for i, c in enumerate([1, 2]):
        y = acts[i].reshape(-1) @ fc[:, c]
        weights = []
        for k in range(acts.shape[1]):
            ablated = acts[i].copy()
            ablated[k] = 0
            weights.append((y - ablated.reshape(-1) @ fc[:, c]) / (y + 1e-7))
        raw.append(np.maximum(np.tensordot(np.array(weights), acts[i], axes=1), 0))
    # float32 pipeline against the float64 formula: the head is one MatMul (K·h·w = 2560 terms)
    # and w_k = (y − y_k)/y divides a float32 difference of nearly equal scores; measured over
    # input seeds 0–5: ≤ 2.4e-5 of the map's max (this seed), so 1e-4
    for got, want in zip(result.raw[-1], raw):
        np.testing.assert_allclose(got, want, atol=1e-4 * want.max())
