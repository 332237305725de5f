"""Bad input gives a clear message and exit code 2 from the CLI, never a traceback."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from camonnx.cli import main
from camonnx.errors import CamonnxError, InputError
from camonnx.explainer import Explainer


def _save(tmp_path, nodes, inputs, outputs, inits=(), opset=13, name="m.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _conv_model(tmp_path, extra_nodes=(), out="y", out_shape=("N", 2), opset=13, name="m.onnx"):
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32) * 0.1, "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             *extra_nodes]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_shape))
    return _save(tmp_path, nodes, [x], [y], [w], opset, name)


def _cli_error(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def test_missing_file(tmp_path):
    out = _cli_error(["layers", str(tmp_path / "nope.onnx")])
    assert "does not exist" in out and "nope.onnx" in out


def test_not_onnx(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_text("this is a text file, not a protobuf")
    out = _cli_error(["layers", str(path)])
    assert "not a valid ONNX file" in out or "holds no ONNX graph" in out


def test_truncated_onnx(tmp_path, resnet18_onnx):
    data = resnet18_onnx.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 3])
    out = _cli_error(["layers", str(path)])
    assert "truncated.onnx" in out


def test_model_without_image_input(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    out = _cli_error(["layers", str(path)])
    assert "no 4-D image input" in out


def test_model_without_conv(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, 8])
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    out = _cli_error(["layers", str(path)])
    assert "no Conv node" in out


def test_unsupported_op_names_op_node_and_opset(tmp_path):
    path = _conv_model(tmp_path, [helper.make_node("Det", ["c"], ["y"], name="my_det")])
    out = _cli_error(["layers", str(path)])
    assert "Det" in out and "my_det" in out and "opset 13" in out


def test_unknown_layer_suggests_close_names(resnet18_onnx):
    explainer = Explainer(resnet18_onnx)
    with pytest.raises(InputError, match="Did you mean: /layer4/layer4.1/conv2/Conv"):
        explainer.layer("/layer4/layer4.1/conv2/Con")


def test_class_out_of_range_and_wrong_target_count(resnet18_onnx):
    explainer = Explainer(resnet18_onnx)
    x = np.zeros((2, 3, 32, 32), np.float32)
    with pytest.raises(InputError, match="out of range"):
        explainer.gradients(x, targets=1000)
    with pytest.raises(InputError, match="3 targets were given for a batch of 2"):
        explainer.gradients(x, targets=[1, 2, 3])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused_before_any_pass(resnet18_onnx, bad):
    import torch

    explainer = Explainer(resnet18_onnx)
    x = np.zeros((2, 3, 32, 32), np.float32)
    x[1, 2, 5, 7] = bad
    for images in (x, torch.from_numpy(x).requires_grad_(True)):
        with pytest.raises(InputError, match="NaN or infinite"):
            explainer.explain(images, progress=False)


def test_constant_image_gives_finite_gradients(resnet18_onnx):
    explainer = Explainer(resnet18_onnx)
    result = explainer.gradients(np.zeros((1, 3, 32, 32), np.float32))
    assert all(np.isfinite(g).all() for g in result.gradients.values())


def test_errors_are_value_errors():
    assert issubclass(CamonnxError, ValueError)
