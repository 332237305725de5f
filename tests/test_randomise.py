"""Parameter layers of an ONNX graph and their seeded randomisation (camonnx/randomise.py).

A small graph built with onnx.helper holds every case the module handles: a Conv followed by a
BatchNormalization, a weight read through Identity and a bias through Cast (float16), one
initializer shared by two Convs, a weight in a Constant node, a MatMul + Add and a Gemm. The
randomised models are loaded as Explainers, so the mirror/ONNX Runtime parity check at load runs
on the new weights.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from camonnx.errors import InputError
from camonnx.explainer import Explainer
from camonnx.randomise import Randomiser, load_like, parameter_layers, write_model


def _init(name, shape, rng, dtype=np.float32, scale=0.5, offset=0.0):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale + offset).astype(dtype), name)


def build_model() -> onnx.ModelProto:
    """x (N, 3, 16, 16) → conv0 + BN → relu → conv1 (W via Identity, B via Cast f16) → relu →
    conv2 (W shared) → relu → conv3 (W shared) → relu → conv4 (W in a Constant node) → pool →
    flatten → MatMul + Add → Gemm → logits (N, 3)."""
    rng = np.random.default_rng(0)
    inits = [
        _init("W0", (4, 3, 3, 3), rng), _init("B0", (4,), rng, scale=0.1),
        _init("bn_scale", (4,), rng, scale=0.2, offset=1.0), _init("bn_shift", (4,), rng, scale=0.1),
        _init("bn_mean", (4,), rng, scale=0.1),
        numpy_helper.from_array(np.full(4, 1.5, np.float32), "bn_var"),
        _init("W1_store", (4, 4, 3, 3), rng, scale=0.3), _init("B1_half", (4,), rng, np.float16, 0.1),
        _init("W_shared", (4, 4, 3, 3), rng, scale=0.3),
        _init("Wm", (4, 5), rng), _init("bm", (5,), rng, scale=0.1),
        _init("Wg", (3, 5), rng), _init("bg", (3,), rng, scale=0.1),
    ]
    w4 = numpy_helper.from_array((rng.standard_normal((4, 4, 1, 1)) * 0.4).astype(np.float32), "W4v")
    conv = lambda name, x, w, y, b=None: helper.make_node(  # noqa: E731
        "Conv", [x, w] + ([b] if b else []), [y], name=name,
        pads=[0, 0, 0, 0] if name == "conv4" else [1, 1, 1, 1])
    nodes = [
        conv("conv0", "x", "W0", "c0", "B0"),
        helper.make_node("BatchNormalization", ["c0", "bn_scale", "bn_shift", "bn_mean", "bn_var"],
                         ["n0"], name="bn0"),
        helper.make_node("Relu", ["n0"], ["r0"], name="relu0"),
        helper.make_node("Identity", ["W1_store"], ["W1"], name="id_w1"),
        helper.make_node("Cast", ["B1_half"], ["B1"], name="cast_b1", to=TensorProto.FLOAT),
        conv("conv1", "r0", "W1", "c1", "B1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        conv("conv2", "r1", "W_shared", "c2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        conv("conv3", "r2", "W_shared", "c3"),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("Constant", [], ["W4"], name="const_w4", value=w4),
        conv("conv4", "r3", "W4", "c4"),
        helper.make_node("GlobalAveragePool", ["c4"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
        helper.make_node("MatMul", ["f", "Wm"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "bm"], ["h"], name="add"),
        helper.make_node("Gemm", ["h", "Wg", "bg"], ["logits"], name="gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


#: Per parameter layer (bottom first): name and its (role, source) pairs.
EXPECTED = [
    ("conv0", [("weight", "W0"), ("bias", "B0"), ("bn_scale", "bn_scale"), ("bn_shift", "bn_shift")]),
    ("conv1", [("weight", "W1_store"), ("bias", "B1_half")]),
    ("conv2", [("weight", "W_shared")]),
    ("conv3", [("weight", "W_shared")]),
    ("conv4", [("weight", "W4")]),
    ("matmul", [("weight", "Wm"), ("bias", "bm")]),
    ("gemm", [("weight", "Wg"), ("bias", "bg")]),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save_model(build_model(), str(path))
    return path


@pytest.fixture(scope="module")
def tiny_explainer(tiny):
    return Explainer(tiny, preprocess="torchvision")


def _stored(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _inputs(model: onnx.ModelProto) -> dict[str, list[str]]:
    return {node.name: list(node.input) for node in model.graph.node}


def test_parameter_layers_found_in_topological_order():
    layers = parameter_layers(build_model())
    assert [(l.name, [(t.role, t.source) for t in l.tensors]) for l in layers] == EXPECTED
    assert [l.index for l in layers] == list(range(len(EXPECTED)))
    assert [l.position for l in layers] == sorted(l.position for l in layers)
    shared = {t.source: t.exclusive for l in layers for t in l.tensors}
    assert shared["W_shared"] is False and shared["W0"] is True and shared["W1_store"] is True
    rules = {t.role: t.rule for l in layers for t in l.tensors}
    assert rules == {"weight": "normal", "bias": "permutation", "bn_scale": "permutation",
                     "bn_shift": "permutation"}


@pytest.mark.parametrize("depth", [1, 3, 4, 7])
def test_cascade_changes_exactly_the_top_layers(depth):
    model = build_model()
    randomiser = Randomiser(model, seed=3)
    top = randomiser.layers[-depth:]
    randomised = randomiser.randomised(top)
    before, after = _stored(model), _stored(randomised)
    wired = _inputs(randomised)
    in_place = {t.source for l in top for t in l.tensors if t.exclusive}
    copies = {f"W_shared/camonnx_randomised_{l.index}" for l in top if l.name in ("conv2", "conv3")}
    assert set(after) == set(before) | copies
    for name, value in before.items():
        assert after[name].dtype == value.dtype and after[name].shape == value.shape
        assert np.array_equal(after[name], value) == (name not in in_place), name
    for name in copies:  # the shared weight: a private copy for the randomised conv only
        assert after[name].shape == before["W_shared"].shape
        assert not np.array_equal(after[name], before["W_shared"])
    for conv in ("conv2", "conv3"):
        index = [l.name for l in randomiser.layers].index(conv)
        randomised = conv in {l.name for l in top}
        expected = f"W_shared/camonnx_randomised_{index}" if randomised else "W_shared"
        assert wired[conv][1] == expected
    # the running statistics of BatchNorm are never touched
    assert np.array_equal(after["bn_mean"], before["bn_mean"])
    assert np.array_equal(after["bn_var"], before["bn_var"])


def test_seeded_and_the_same_draw_at_every_depth():
    model = build_model()
    a = Randomiser(model, seed=5).randomised(Randomiser(model).layers)
    b = Randomiser(model, seed=5).randomised(Randomiser(model).layers)
    c = Randomiser(model, seed=6).randomised(Randomiser(model).layers)
    assert a.SerializeToString() == b.SerializeToString()
    assert not np.array_equal(_stored(a)["Wg"], _stored(c)["Wg"])
    # a layer's draw does not depend on which other layers are randomised with it
    randomiser = Randomiser(model, seed=5)
    alone = _stored(Randomiser(model, seed=5).randomised([randomiser.layers[-1]]))
    assert np.array_equal(alone["Wg"], _stored(a)["Wg"])


def test_rules_keep_scale_and_values():
    """Permutations keep the exact multiset of values; normal draws keep the RMS. The tolerance
    is the RMS estimate's sampling error: for n i.i.d. normal values the relative error of the
    sample RMS has a standard deviation of 1/√(2n), that of the sample mean r/√n; 5 of those
    bound them (the largest deviations measured over the default model's 50 weight tensors,
    288 to 1.28 M values, with this seed: 2.9 and 2.3 standard deviations)."""
    from camonnx.models import default_model

    model = onnx.load(str(default_model()))
    randomiser = Randomiser(model, seed=0)
    after = _stored(randomiser.randomised(randomiser.layers))
    before = _stored(model)
    checked = 0
    for layer in randomiser.layers:
        for t in layer.tensors:
            old, new = before[t.source].astype(np.float64), after[t.source].astype(np.float64)
            assert new.shape == old.shape
            if t.rule == "permutation":
                assert np.array_equal(np.sort(new.ravel()), np.sort(old.ravel()))
                continue
            rms_old, rms_new = np.sqrt(np.mean(old ** 2)), np.sqrt(np.mean(new ** 2))
            assert abs(rms_new / rms_old - 1) < 5 / np.sqrt(2 * old.size), (t.source, old.size)
            assert abs(new.mean()) < 5 * rms_old / np.sqrt(old.size)  # zero mean
            checked += 1
    assert checked == len(randomiser.layers)


def test_shared_tensor_behind_a_cast(tmp_path):
    """B1_half (float16) also becomes conv2's bias through a second Cast: randomising conv1
    gives conv1 a private float32 copy (the permuted values, cast as before) and leaves
    B1_half, and conv2, as they were."""
    model = build_model()
    graph = model.graph
    graph.node.insert(0, helper.make_node("Cast", ["B1_half"], ["B1b"], name="cast_b1b",
                                          to=TensorProto.FLOAT))
    next(n for n in graph.node if n.name == "conv2").input.append("B1b")
    randomiser = Randomiser(model, seed=2)
    conv1 = next(l for l in randomiser.layers if l.name == "conv1")
    bias = next(t for t in conv1.tensors if t.role == "bias")
    assert bias.source == "B1_half" and not bias.exclusive and bias.casts == (TensorProto.FLOAT,)
    randomised = randomiser.randomised([conv1])
    wired, after = _inputs(randomised), _stored(randomised)
    name = f"B1/camonnx_randomised_{conv1.index}"
    assert wired["conv1"][2] == name and wired["conv2"][2] == "B1b"
    original = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "B1_half"))
    assert np.array_equal(after["B1_half"], original)
    assert after[name].dtype == np.float32
    assert np.array_equal(np.sort(after[name]), np.sort(original.astype(np.float32)))
    assert not np.array_equal(after[name], original.astype(np.float32))
    path = write_model(randomised, tmp_path / "shared.onnx")
    assert Explainer(path, preprocess="torchvision").parity_report is not None


def test_randomised_model_loads_with_parity(tiny_explainer, tmp_path):
    randomiser = Randomiser(tiny_explainer.graph.model, seed=0)
    path = write_model(randomiser.randomised(randomiser.layers), tmp_path / "random.onnx")
    randomised = load_like(tiny_explainer, path)
    assert randomised.parity_report is not None  # the mirror was checked against ONNX Runtime
    assert randomised.preprocess == tiny_explainer.preprocess
    assert [l.name for l in randomised.layers] == [l.name for l in tiny_explainer.layers]
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    import torch
    assert not np.allclose(randomised.logits(torch.from_numpy(x)),
                           tiny_explainer.logits(torch.from_numpy(x)))


def test_external_data(tmp_path):
    model = build_model()
    source = tmp_path / "external.onnx"
    import copy

    onnx.save_model(copy.deepcopy(model), str(source), save_as_external_data=True,
                    all_tensors_to_one_file=True,
                    location="external.onnx.data", size_threshold=0)
    lazy = onnx.load(str(source), load_external_data=False)
    with pytest.raises(InputError, match="external data"):
        Randomiser(lazy)
    randomiser = Randomiser(lazy, seed=1, base_dir=tmp_path)
    expected = Randomiser(model, seed=1)
    randomised = randomiser.randomised(randomiser.layers)
    loaded, direct = _stored(randomised), _stored(expected.randomised(expected.layers))
    assert loaded.keys() == direct.keys()
    assert all(np.array_equal(loaded[k], direct[k]) for k in loaded)
    out = write_model(randomised, tmp_path / "out" / "random.onnx", external_above=0)
    assert (tmp_path / "out" / "random.onnx.data").is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["random.onnx", "random.onnx.data"]
    reloaded = Explainer(out, preprocess="torchvision")
    assert reloaded.parity_report is not None
    assert np.array_equal(_stored(reloaded.graph.model)["Wg"], _stored(randomised)["Wg"])


def test_dequantized_weight_refused():
    model = build_model()
    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(np.ones((3, 5), np.int8), "Wq"),
                              numpy_helper.from_array(np.float32(0.1), "q_scale")])
    graph.node.insert(0, helper.make_node("DequantizeLinear", ["Wq", "q_scale"], ["Wdq"], name="dq"))
    next(n for n in graph.node if n.name == "gemm").input[1] = "Wdq"
    with pytest.raises(InputError, match="quantised"):
        parameter_layers(model)


def test_computed_weight_refused():
    model = build_model()
    graph = model.graph
    graph.node.insert(0, helper.make_node("Neg", ["W0"], ["W0neg"], name="neg"))
    next(n for n in graph.node if n.name == "conv0").input[1] = "W0neg"
    with pytest.raises(InputError, match="computed by the Neg node 'neg'"):
        parameter_layers(model)


def test_no_parameter_layer():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("MatMul", ["y", "y"], ["z"])],
        "none", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3, 4, 4])])
    with pytest.raises(InputError, match="no parameter layer"):
        parameter_layers(helper.make_model(graph))
