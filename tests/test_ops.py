"""Every operator of the torch mirror against ONNX Runtime (the oracle), per opset form (docs/pipeline.md#mirror).

Each case is a hand-built ONNX graph: the image ``x`` (dynamic batch, 3×H×W) → a small ``Conv``
stem (``c``, 4 channels, same size as the image) → the op under test → graph output(s). The graph
is checked with the ONNX checker, loaded with :func:`camonnx.graph.load_graph`, run through the
mirror and through ONNX Runtime, and every graph output is compared (shape, dtype and values).

Tolerance: 1e-5 absolute + 1e-5 relative. The graphs are tiny float32 computations whose only
legitimate difference is the order of float32 summations (ORT's and torch's kernels accumulate in
different orders), which stays far below that.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from camonnx.errors import UnsupportedModelError
from camonnx.graph import load_graph
from camonnx.mirror import Mirror
from camonnx.ops import OPS
from camonnx.runtime import OrtRuntime

ATOL = RTOL = 1e-5  # float32 summation-order differences only
F, I64, I32, B, F16, F64 = (TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32,
                            TensorProto.BOOL, TensorProto.FLOAT16, TensorProto.DOUBLE)
INT_MAX = np.iinfo(np.int64).max
#: Lowest IR version that carries each opset (a newer IR would be fine too; older ORTs want these).
IR = {7: 3, 8: 3, 9: 4, 10: 5, 11: 6, 12: 7, 13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9,
      20: 9, 21: 10, 22: 10}
C = 4  # channels of the stem's output ``c``


#: Tiny graphs: one torch thread is ~100x faster than waking a pool per op on 2 cores.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def arr(shape, seed=0, scale=0.5, dtype=np.float32) -> np.ndarray:
    return (_rng(seed).standard_normal(shape) * scale).astype(dtype)


def image(shape, seed=3) -> np.ndarray:
    """A random image on a 1/8 grid: with the stem's weights on a 1/16 grid every stem output is
    exact in float32 (whatever the summation order), so ORT and the mirror feed the op under
    test bit-identical inputs and discontinuous ops (casts, comparisons, nearest, argmax-like
    pools) cannot flip on a last-bit difference of the stem conv."""
    return np.clip(np.round(_rng(seed).standard_normal(shape) * 8) / 8, -2, 2).astype(np.float32)


def grid(shape, seed, scale=0.3) -> np.ndarray:
    return (np.round(_rng(seed).standard_normal(shape) * scale * 16) / 16).astype(np.float32)


def i64(*values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def f32(*values) -> np.ndarray:
    return np.array(values, dtype=np.float32)


_names = itertools.count()


def nd(op: str, inputs, outputs, domain: str | None = None, **attrs) -> onnx.NodeProto:
    """A node with a readable, unique name."""
    outputs = [outputs] if isinstance(outputs, str) else list(outputs)
    return helper.make_node(op, list(inputs), outputs, name=f"{op}_{next(_names)}",
                            domain=domain, **attrs)


@dataclass
class Case:
    id: str
    opset: int
    nodes: list
    outputs: dict  # name → ONNX elem type
    inits: dict = field(default_factory=dict)
    hw: tuple = (9, 11)


CASES: list[Case] = []


def case(id: str, opsets, nodes, outputs="y", inits=None, hw=(9, 11)) -> None:
    """Register ``nodes`` (reading the stem output ``c``) at each opset in ``opsets``."""
    if isinstance(outputs, str):
        outputs = {outputs: F}
    elif isinstance(outputs, (list, tuple)):
        outputs = {o: F for o in outputs}
    for opset in ([opsets] if isinstance(opsets, int) else opsets):
        CASES.append(Case(f"{id}-op{opset}", opset, nodes, dict(outputs), dict(inits or {}), hw))


def build(nodes, outputs: dict, opset: int, inits=None, hw=(9, 11), extra_opsets=(),
          shapes_from_ort=True):
    """x (N,3,H,W) → Conv stem → ``c`` (N,4,H,W) → nodes → outputs."""
    h, w = hw
    stem = nd("Conv", ["x", "w_stem", "b_stem"], "c", pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    initializers = [numpy_helper.from_array(grid((C, 3, 3, 3), 1, 0.3), "w_stem"),
                    numpy_helper.from_array(grid((C,), 2, 0.3), "b_stem")]
    for name, value in (inits or {}).items():
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
    inputs = [helper.make_tensor_value_info("x", F, ["N", 3, h, w])]
    if IR[opset] < 4:  # IR 3 lists every initializer among the graph inputs
        inputs += [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
                   for i in initializers]
    graph = helper.make_graph(
        [stem] + list(nodes), "op_test", inputs,
        [helper.make_tensor_value_info(name, t, None) for name, t in outputs.items()],
        initializers)
    imports = [helper.make_opsetid("", opset)]
    imports += [helper.make_opsetid(domain, version) for domain, version in extra_opsets]
    model = helper.make_model(graph, opset_imports=imports, ir_version=IR[opset])
    # The checker wants graph outputs with a shape: take it from ONNX shape inference.
    # Where inference cannot tell (data-dependent shapes), the rank ONNX Runtime produces.
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    missing = [o for o in model.graph.output if not o.type.tensor_type.HasField("shape")]
    if missing and not shapes_from_ort:  # only a rank-1 placeholder: the checker wants a shape
        for value_info in missing:
            value_info.type.tensor_type.shape.dim.add().dim_param = f"{value_info.name}_0"
    elif missing:
        session = ort.InferenceSession(model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        values = session.run([o.name for o in missing], {"x": image((1, 3, h, w))})
        for value_info, value in zip(missing, values):
            shape = value_info.type.tensor_type.shape
            for i in range(value.ndim):
                shape.dim.add().dim_param = f"{value_info.name}_{i}"
    return model


def run_both(model, hw=(9, 11), batch=2, seed=3):
    onnx.checker.check_model(model, full_check=True)
    graph = load_graph(model)
    mirror, runtime = Mirror(graph), OrtRuntime(graph, threads=1)
    x = image((batch, 3) + tuple(hw), seed)
    names = [o.name for o in model.graph.output]
    with torch.no_grad():
        ours = mirror(torch.from_numpy(x), names)
    theirs = runtime.run(x, names)
    return {n: ours[n].numpy() for n in names}, theirs


def assert_same(ours: dict, theirs: dict) -> None:
    for name, want in theirs.items():
        got = ours[name]
        assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != ORT {want.dtype}"
        assert got.shape == want.shape, f"{name}: shape {got.shape} != ORT {want.shape}"
        if want.dtype == np.bool_ or np.issubdtype(want.dtype, np.integer):
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=name)


def assert_matches_onnxruntime(spec: Case) -> None:
    """The case's graph gives the same outputs in the mirror as in ONNX Runtime."""
    model = build(spec.nodes, spec.outputs, spec.opset, spec.inits, spec.hw)
    assert_same(*run_both(model, spec.hw))


def assert_matches_onnx_reference(spec: Case) -> None:
    """The case's graph gives the same outputs in the mirror as in ONNX's reference evaluator
    (for op forms ONNX Runtime does not run)."""
    from onnx.reference import ReferenceEvaluator

    model = build(spec.nodes, spec.outputs, spec.opset, spec.inits, spec.hw, shapes_from_ort=False)
    onnx.checker.check_model(model)
    mirror = Mirror(load_graph(model))
    x = image((2, 3) + tuple(spec.hw))
    names = list(spec.outputs)
    want = dict(zip(names, ReferenceEvaluator(model).run(names, {"x": x})))
    with torch.no_grad():
        got = {n: v.numpy() for n, v in mirror(torch.from_numpy(x), names).items()}
    assert_same(got, want)


# ============================================================================================
# Cases
# ============================================================================================
ALL = (9, 11, 13, 17, 21)

# --- Conv -----------------------------------------------------------------------------------
case("conv-basic", ALL, [nd("Conv", ["c", "w", "b"], "y", pads=[1, 1, 1, 1])],
     inits={"w": arr((5, C, 3, 3), 10), "b": arr((5,), 11)})
case("conv-kernel_shape-attr", (9, 13), [nd("Conv", ["c", "w", "b"], "y", kernel_shape=[3, 2])],
     inits={"w": arr((5, C, 3, 2), 10), "b": arr((5,), 11)})
case("conv-nobias-stride2", (9, 13), [nd("Conv", ["c", "w"], "y", strides=[2, 2])],
     inits={"w": arr((5, C, 3, 3), 12)})
case("conv-1x1", 13, [nd("Conv", ["c", "w", "b"], "y")],
     inits={"w": arr((6, C, 1, 1), 12), "b": arr((6,), 13)})
case("conv-group2", (9, 13, 21), [nd("Conv", ["c", "w", "b"], "y", group=2, pads=[1, 0, 1, 0])],
     inits={"w": arr((6, 2, 3, 3), 14), "b": arr((6,), 15)})
case("conv-depthwise", (9, 13), [nd("Conv", ["c", "w", "b"], "y", group=C, pads=[1, 1, 1, 1])],
     inits={"w": arr((C, 1, 3, 3), 16), "b": arr((C,), 17)})
case("conv-depthwise-multiplier2", 13, [nd("Conv", ["c", "w"], "y", group=C, strides=[2, 1])],
     inits={"w": arr((2 * C, 1, 3, 3), 16)})
case("conv-dilations", (9, 13),
     [nd("Conv", ["c", "w", "b"], "y", dilations=[2, 3], strides=[1, 2], pads=[2, 3, 2, 3])],
     inits={"w": arr((5, C, 3, 3), 18), "b": arr((5,), 19)})
case("conv-asymmetric-pads", (9, 13), [nd("Conv", ["c", "w", "b"], "y", pads=[0, 1, 2, 3])],
     inits={"w": arr((5, C, 3, 3), 20), "b": arr((5,), 21)})
for _ap in ("SAME_UPPER", "SAME_LOWER"):
    case(f"conv-{_ap}-even-kernel-stride", (9, 13, 21),
         [nd("Conv", ["c", "w", "b"], "y", auto_pad=_ap, strides=[2, 3], kernel_shape=[4, 2])],
         inits={"w": arr((5, C, 4, 2), 22), "b": arr((5,), 23)})
case("conv-VALID", (9, 13), [nd("Conv", ["c", "w", "b"], "y", auto_pad="VALID", strides=[2, 2])],
     inits={"w": arr((5, C, 3, 3), 24), "b": arr((5,), 25)})

# --- ConvTranspose --------------------------------------------------------------------------
case("convT-basic", ALL,
     [nd("ConvTranspose", ["c", "w", "b"], "y", strides=[2, 2], pads=[1, 1, 1, 1])],
     inits={"w": arr((C, 3, 3, 3), 30), "b": arr((3,), 31)})
case("convT-nobias-stride1", (9, 13), [nd("ConvTranspose", ["c", "w"], "y")],
     inits={"w": arr((C, 3, 2, 3), 30)})
case("convT-output_padding", (9, 13),
     [nd("ConvTranspose", ["c", "w", "b"], "y", strides=[2, 3], output_padding=[1, 2],
         pads=[1, 0, 0, 1])],
     inits={"w": arr((C, 3, 3, 3), 32), "b": arr((3,), 33)})
case("convT-group2", (9, 13),
     [nd("ConvTranspose", ["c", "w", "b"], "y", group=2, strides=[2, 2])],
     inits={"w": arr((C, 3, 3, 3), 34), "b": arr((6,), 35)})
case("convT-depthwise", 13,
     [nd("ConvTranspose", ["c", "w"], "y", group=C, strides=[2, 2], pads=[1, 1, 1, 1])],
     inits={"w": arr((C, 1, 4, 4), 34)})
case("convT-dilations", (9, 13),
     [nd("ConvTranspose", ["c", "w", "b"], "y", dilations=[2, 1], strides=[1, 2])],
     inits={"w": arr((C, 2, 3, 3), 36), "b": arr((2,), 37)})
case("convT-asymmetric-pads", 13,
     [nd("ConvTranspose", ["c", "w"], "y", strides=[2, 2], pads=[0, 1, 2, 0])],
     inits={"w": arr((C, 2, 3, 3), 38)})
case("convT-VALID", 13, [nd("ConvTranspose", ["c", "w"], "y", strides=[2, 2], auto_pad="VALID")],
     inits={"w": arr((C, 2, 3, 3), 38)})
case("convT-output_shape", (9, 13, 21),
     [nd("ConvTranspose", ["c", "w", "b"], "y", strides=[2, 2], output_shape=[18, 22])],
     inits={"w": arr((C, 3, 3, 3), 40), "b": arr((3,), 41)})
case("convT-output_shape-extra-output_padding", 13,
     [nd("ConvTranspose", ["c", "w"], "y", strides=[2, 2], output_shape=[17, 21],
         output_padding=[1, 1])],
     inits={"w": arr((C, 3, 3, 3), 40)})
case("convT-output_shape-beyond-full", 13,  # one row/column more than the full output: bias
     [nd("ConvTranspose", ["c", "w", "b"], "y", strides=[2, 2], output_shape=[20, 24])],
     inits={"w": arr((C, 3, 3, 3), 40), "b": arr((3,), 41)})
for _ap in ("SAME_UPPER", "SAME_LOWER"):
    case(f"convT-{_ap}-kernel-below-stride", 13,
         [nd("ConvTranspose", ["c", "w", "b"], "y", strides=[2, 3], auto_pad=_ap)],
         inits={"w": arr((C, 3, 1, 2), 44), "b": arr((3,), 45)})
    case(f"convT-{_ap}-output_shape", 13,
         [nd("ConvTranspose", ["c", "w"], "y", strides=[2, 2], auto_pad=_ap, output_shape=[17, 20])],
         inits={"w": arr((C, 3, 3, 3), 46)})
for _ap in ("SAME_UPPER", "SAME_LOWER"):
    case(f"convT-{_ap}", (9, 13, 21),
         [nd("ConvTranspose", ["c", "w", "b"], "y", strides=[2, 2], auto_pad=_ap)],
         inits={"w": arr((C, 3, 3, 4), 42), "b": arr((3,), 43)})

# --- normalisations ---------------------------------------------------------------------------
_bn = {"s": arr((C,), 50) + 1, "bb": arr((C,), 51), "m": arr((C,), 52),
       "v": np.abs(arr((C,), 53)) + 0.5}
case("batchnorm", (9, 14, 15, 21),
     [nd("BatchNormalization", ["c", "s", "bb", "m", "v"], "y", epsilon=1e-3)], inits=_bn)
case("batchnorm-default-eps", (9, 15), [nd("BatchNormalization", ["c", "s", "bb", "m", "v"], "y")],
     inits=_bn)
case("instancenorm", (9, 13, 21),
     [nd("InstanceNormalization", ["c", "s", "bb"], "y", epsilon=1e-3)],
     inits={"s": _bn["s"], "bb": _bn["bb"]})
for _size in (1, 3, 5):  # ONNX Runtime rejects even sizes: those are checked in REFERENCE_CASES
    case(f"lrn-size{_size}", (9, 13),
         [nd("LRN", ["c"], "y", size=_size, alpha=0.05, beta=0.7, bias=1.5)])
case("lrn-defaults", 13, [nd("LRN", ["c"], "y", size=3)])

# --- pooling --------------------------------------------------------------------------------
for _op in ("MaxPool", "AveragePool"):
    case(f"{_op}-k3s2", (9, 13, 21), [nd(_op, ["c"], "y", kernel_shape=[3, 3], strides=[2, 2])])
    case(f"{_op}-k2-default-stride", (9, 13), [nd(_op, ["c"], "y", kernel_shape=[2, 2])])
    case(f"{_op}-pads", (9, 13), [nd(_op, ["c"], "y", kernel_shape=[3, 3], strides=[2, 2],
                                     pads=[1, 1, 1, 1])])
    case(f"{_op}-asymmetric-pads", (9, 13), [nd(_op, ["c"], "y", kernel_shape=[3, 2],
                                                strides=[2, 1], pads=[0, 1, 2, 0])])
    case(f"{_op}-ceil", (10, 13, 21), [nd(_op, ["c"], "y", kernel_shape=[2, 2], strides=[2, 2],
                                          ceil_mode=1)])
    case(f"{_op}-ceil-pads", (11, 13, 21), [nd(_op, ["c"], "y", kernel_shape=[3, 3],
                                               strides=[2, 3], pads=[1, 0, 1, 2], ceil_mode=1)])
    # the last ceil-mode window starts in the end padding: ORT drops it (as torch does; ONNX
    # shape inference does not, so the declared output shape of this graph is one too large)
    case(f"{_op}-ceil-window-in-pad", (13, 21), [nd(_op, ["c"], "y", kernel_shape=[3, 3],
                                                    strides=[2, 2], pads=[0, 0, 2, 2],
                                                    ceil_mode=1)], hw=(10, 10))
    for _ap in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        case(f"{_op}-{_ap}", (9, 13), [nd(_op, ["c"], "y", kernel_shape=[2, 3], strides=[2, 2],
                                          auto_pad=_ap)])
for _cip in (0, 1):
    case(f"AveragePool-pads-count_include_pad{_cip}", (9, 13, 21),
         [nd("AveragePool", ["c"], "y", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 2, 1, 0],
             count_include_pad=_cip)])
    case(f"AveragePool-ceil-pads-count_include_pad{_cip}", (11, 19),
         [nd("AveragePool", ["c"], "y", kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 0],
             ceil_mode=1, count_include_pad=_cip)])
    case(f"AveragePool-SAME_UPPER-count_include_pad{_cip}", (11, 13),
         [nd("AveragePool", ["c"], "y", kernel_shape=[3, 4], strides=[2, 2],
             auto_pad="SAME_UPPER", count_include_pad=_cip)])
    case(f"AveragePool-dilations-count_include_pad{_cip}", (19, 21),
         [nd("AveragePool", ["c"], "y", kernel_shape=[2, 3], strides=[1, 2], dilations=[2, 2],
             pads=[1, 1, 0, 1], count_include_pad=_cip)])
case("MaxPool-dilations", (10, 13, 21),
     [nd("MaxPool", ["c"], "y", kernel_shape=[2, 3], strides=[1, 2], dilations=[2, 2],
         pads=[1, 1, 0, 1])])
case("MaxPool-dilations-ceil", (11, 21),
     [nd("MaxPool", ["c"], "y", kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 1],
         ceil_mode=1)])
case("MaxPool-storage_order", 13,
     [nd("MaxPool", ["c"], "y", kernel_shape=[2, 2], strides=[2, 2], storage_order=1)])
for _op in ("GlobalAveragePool", "GlobalMaxPool"):
    case(_op, (9, 13, 21), [nd(_op, ["c"], "y")])

# --- dense ----------------------------------------------------------------------------------
_K = C * 9 * 11
_flat = nd("Flatten", ["c"], "f")
case("gemm-C-vector", (9, 11, 13, 21), [_flat, nd("Gemm", ["f", "B", "Cv"], "y")],
     inits={"B": arr((_K, 5), 60, 0.1), "Cv": arr((5,), 61)})
case("gemm-transB-alpha-beta", (9, 13),
     [_flat, nd("Gemm", ["f", "B", "Cv"], "y", transB=1, alpha=0.5, beta=2.0)],
     inits={"B": arr((5, _K), 62, 0.1), "Cv": arr((1, 5), 63)})
case("gemm-C-scalar", (9, 13), [_flat, nd("Gemm", ["f", "B", "Cv"], "y", beta=-1.5)],
     inits={"B": arr((_K, 5), 64, 0.1), "Cv": f32(0.25)})
case("gemm-no-C", (11, 13, 21), [_flat, nd("Gemm", ["f", "B"], "y", alpha=2.0)],
     inits={"B": arr((_K, 5), 65, 0.1)})
case("gemm-transA", (9, 13),
     [_flat, nd("Transpose", ["f"], "ft"), nd("Gemm", ["ft", "B", "Cv"], "y", transA=1)],
     inits={"B": arr((_K, 5), 66, 0.1), "Cv": arr((5,), 67)})
case("gemm-transA-transB", 13,
     [_flat, nd("Transpose", ["f"], "ft"),
      nd("Gemm", ["ft", "B", "Cv"], "y", transA=1, transB=1, alpha=0.7, beta=0.3)],
     inits={"B": arr((5, _K), 68, 0.1), "Cv": arr((1, 1), 69)})
case("matmul-2d", (9, 13), [_flat, nd("MatMul", ["f", "B"], "y")], inits={"B": arr((_K, 5), 70, 0.1)})
case("matmul-4d-by-2d", (9, 13), [nd("MatMul", ["c", "B"], "y")], inits={"B": arr((11, 7), 71)})
case("matmul-batched-broadcast", 13, [nd("MatMul", ["c", "B"], "y")],
     inits={"B": arr((C, 11, 3), 72)})
case("matmul-by-vector", 13, [nd("MatMul", ["c", "B"], "y")], inits={"B": arr((11,), 73)})
case("matmul-vector-by-4d", 13, [nd("MatMul", ["A", "c"], "y")], inits={"A": arr((9,), 74)})

# --- shape and data movement ----------------------------------------------------------------
case("concat-axis1", (9, 13), [nd("Relu", ["c"], "r"), nd("Concat", ["c", "r", "c"], "y", axis=1)])
case("concat-negative-axis", (11, 13, 21),
     [nd("Sigmoid", ["c"], "r"), nd("Concat", ["c", "r"], "y", axis=-1)])
case("concat-shapes", (9, 13), [nd("Shape", ["c"], "s"), nd("Concat", ["s", "k"], "y", axis=0)],
     {"y": I64}, inits={"k": i64(5, 7)})
for _axis in (0, 1, 2, 4):
    case(f"flatten-axis{_axis}", (9, 13), [nd("Flatten", ["c"], "y", axis=_axis)])
case("flatten-default", 9, [nd("Flatten", ["c"], "y")])
for _axis in (-1, -3):
    case(f"flatten-axis{_axis}", (11, 13, 21), [nd("Flatten", ["c"], "y", axis=_axis)])
for _i, _shape in enumerate([(0, -1), (0, 0, -1), (-1, 11), (0, 2, 2, 99), (0, 4, 9, 11, 1)]):
    case(f"reshape-{_i}", (9, 13, 21), [nd("Reshape", ["c", "shape"], "y")],
         inits={"shape": i64(*_shape)})
case("reshape-allowzero-no-zeros", (14, 21), [nd("Reshape", ["c", "shape"], "y", allowzero=1)],
     inits={"shape": i64(-1, 9, 11)})
case("reshape-allowzero-empty", (14, 21),
     [nd("Slice", ["c", "zero", "zero", "one"], "e"),  # (N, 0, 9, 11)
      nd("Reshape", ["e", "shape"], "y", allowzero=1)],
     inits={"zero": i64(0), "one": i64(1), "shape": i64(0, 9, 11)})
case("reshape-allowzero0-empty", (14, 21),
     [nd("Slice", ["c", "zero", "zero", "one"], "e"),
      nd("Reshape", ["e", "shape"], "y", allowzero=0)],
     inits={"zero": i64(0), "one": i64(1), "shape": i64(0, 0, 11, 9)})
case("reshape-dynamic-shape", (11, 13),
     [nd("Shape", ["c"], "s"), nd("Gather", ["s", "i0"], "n"),
      nd("Concat", ["n", "m1"], "shape", axis=0), nd("Reshape", ["c", "shape"], "y")],
     inits={"i0": i64(0), "m1": i64(-1)})
case("transpose-perm", (9, 13, 21), [nd("Transpose", ["c"], "y", perm=[0, 2, 3, 1])])
case("transpose-default", (9, 13), [nd("Transpose", ["c"], "y")])
case("shape", (9, 13), [nd("Shape", ["c"], "y")], {"y": I64})
for _i, (_start, _end) in enumerate([(1, None), (1, -1), (-2, None), (0, 10), (-10, 2), (3, 1)]):
    _attrs = {"start": _start} if _end is None else {"start": _start, "end": _end}
    case(f"shape-start-end-{_i}", (15, 21), [nd("Shape", ["c"], "y", **_attrs)], {"y": I64})
case("gather-axis1-matrix", (9, 13), [nd("Gather", ["c", "idx"], "y", axis=1)],
     inits={"idx": i64(0, 2, 3, 1).reshape(2, 2)})
case("gather-negative-indices", (11, 13, 21), [nd("Gather", ["c", "idx"], "y", axis=1)],
     inits={"idx": i64(-1, 0, -3)})
case("gather-scalar-index-negative-axis", (11, 13), [nd("Gather", ["c", "idx"], "y", axis=-1)],
     inits={"idx": np.array(-2, dtype=np.int64)})
case("gather-scalar-index-axis0", (9, 13), [nd("Gather", ["c", "idx"], "y", axis=0)],
     inits={"idx": np.array(1, dtype=np.int64)})
case("gather-int32-indices", 13, [nd("Gather", ["c", "idx"], "y", axis=2)],
     inits={"idx": np.array([8, 0, 3], dtype=np.int32)})
case("gather-shape", (9, 13), [nd("Shape", ["c"], "s"), nd("Gather", ["s", "idx"], "y")],
     {"y": I64}, inits={"idx": i64(3, 1)})
case("constant-value", (9, 13, 21),
     [nd("Constant", [], "k", value=numpy_helper.from_array(arr((C, 1, 1), 80), "kv")),
      nd("Mul", ["c", "k"], "y")])
case("constant-value_float", (12, 13, 21),
     [nd("Constant", [], "k", value_float=0.75), nd("Add", ["c", "k"], "y")])
case("constant-value_floats", (12, 13),
     [nd("Constant", [], "k", value_floats=list(map(float, arr((11,), 81)))),
      nd("Add", ["c", "k"], "y")])
case("constant-value_int", (12, 13),
     [nd("Constant", [], "k", value_int=2), nd("Gather", ["c", "k"], "y", axis=1),
      nd("Cast", ["k"], "y2", to=F)], ["y", "y2"])
case("constant-value_ints", (12, 13, 21),
     [nd("Constant", [], "k", value_ints=[0, -1, 11]), nd("Reshape", ["c", "k"], "y")])
case("constant-folded-output", 13,
     [nd("Constant", [], "k", value=numpy_helper.from_array(i64(2, 3), "kv")),
      nd("Identity", ["c"], "y")], {"y": F, "k": I64})
case("constantofshape-float", (9, 13, 21),
     [nd("Shape", ["c"], "s"),
      nd("ConstantOfShape", ["s"], "k", value=numpy_helper.from_array(f32(0.5), "v")),
      nd("Add", ["c", "k"], "y")])
case("constantofshape-default", (9, 13), [nd("Shape", ["c"], "s"), nd("ConstantOfShape", ["s"], "y")])
case("constantofshape-int64", (9, 13),
     [nd("Shape", ["c"], "s"),
      nd("ConstantOfShape", ["s"], "y", value=numpy_helper.from_array(i64(3), "v"))], {"y": I64})
case("constantofshape-constant-shape", 13,
     [nd("ConstantOfShape", ["s"], "k", value=numpy_helper.from_array(f32(2.0), "v")),
      nd("Mul", ["c", "k"], "y")], inits={"s": i64(1, 11)})
for _opset in (9, 13, 19, 21):
    case("cast-float-int64-float", _opset,
         [nd("Mul", ["c", "three"], "c3"), nd("Cast", ["c3"], "yi", to=I64),
          nd("Cast", ["yi"], "y", to=F)], {"y": F, "yi": I64}, inits={"three": f32(3.0)})
    case("cast-bool", _opset,
         [nd("Cast", ["c"], "yb", to=B), nd("Cast", ["yb"], "y", to=F)], {"y": F, "yb": B})
    case("cast-int32-float16-double", _opset,
         [nd("Cast", ["c"], "yi", to=I32), nd("Cast", ["c"], "yh", to=F16),
          nd("Cast", ["c"], "yd", to=F64)], {"yi": I32, "yh": F16, "yd": F64})
case("expand-channels", (9, 13),
     [nd("ReduceMean", ["c"], "m", axes=[1]), nd("Expand", ["m", "shape"], "y")],
     inits={"shape": i64(1, C, 1, 1)})
case("expand-to-dynamic-shape", (9, 13, 21),
     [nd("Shape", ["c"], "s"), nd("Expand", ["k", "s"], "y")], inits={"k": arr((C, 1, 1), 82)})
case("expand-lower-rank-shape", 13, [nd("Expand", ["c", "shape"], "y")], inits={"shape": i64(1, 11)})
case("expand-add-dims", 13, [nd("Expand", ["c", "shape"], "y")], inits={"shape": i64(3, 1, 1, 1, 1)})
case("tile", (9, 13, 21), [nd("Tile", ["c", "rep"], "y")], inits={"rep": i64(1, 2, 1, 3)})
case("range-int-dynamic", (11, 13, 21),
     [nd("Shape", ["c"], "s"), nd("Gather", ["s", "i3"], "lim"),
      nd("Range", ["zero", "lim", "two"], "y")], {"y": I64},
     inits={"i3": np.array(3, np.int64), "zero": np.array(0, np.int64),
            "two": np.array(2, np.int64)})
case("range-float", (11, 13),
     [nd("Range", ["a", "b", "d"], "r"), nd("Add", ["c", "r"], "y")],
     inits={"a": np.array(0.5, np.float32), "b": np.array(4.7, np.float32),
            "d": np.array(0.4, np.float32)})
case("range-negative-delta", (11, 13),
     [nd("Shape", ["c"], "s"), nd("Gather", ["s", "i3"], "start"),
      nd("Range", ["start", "lim", "d"], "y")], {"y": I64},
     inits={"i3": np.array(3, np.int64), "lim": np.array(1, np.int64),
            "d": np.array(-3, np.int64)})
case("range-empty", 13,
     [nd("Shape", ["c"], "s"), nd("Gather", ["s", "i3"], "lim"),
      nd("Range", ["lim", "zero", "two"], "y")], {"y": I64},
     inits={"i3": np.array(3, np.int64), "zero": np.array(0, np.int64),
            "two": np.array(2, np.int64)})
case("where-greater", (9, 13, 21),
     [nd("Greater", ["c", "zero"], "m"), nd("Mul", ["c", "tenth"], "ct"),
      nd("Where", ["m", "c", "ct"], "y")], inits={"zero": f32(0.0), "tenth": f32(0.1)})
case("where-broadcast", (9, 13),
     [nd("Greater", ["c", "zero"], "m"), nd("Where", ["m", "s", "row"], "y")],
     inits={"zero": f32(0.0), "s": np.array(2.5, np.float32), "row": arr((11,), 83)})
case("equal-int", (9, 13),
     [nd("Mul", ["c", "two"], "c2"), nd("Cast", ["c2"], "ci", to=I64),
      nd("Equal", ["ci", "zero"], "y"), nd("Cast", ["y"], "yf", to=F)], {"y": B, "yf": F},
     inits={"two": f32(2.0), "zero": np.array(0, np.int64)})
case("equal-float", (11, 13, 21),
     [nd("Relu", ["c"], "r"), nd("Equal", ["c", "r"], "m"), nd("Where", ["m", "c", "zero"], "y")],
     {"y": F, "m": B}, inits={"zero": f32(0.0)})
case("identity", (9, 13, 21), [nd("Identity", ["c"], "y")])

# --- elementwise arithmetic -----------------------------------------------------------------
_bc = {"vc": arr((C, 1, 1), 90), "vw": arr((11,), 91), "s1": f32(0.3),
       "sc": np.array(-0.7, np.float32), "pos": np.abs(arr((C, 1, 1), 92)) + 0.5}
for _op in ("Sum", "Mean", "Max", "Min"):
    case(f"{_op}-one-input", (9, 13), [nd(_op, ["c"], "y")])
    case(f"{_op}-two", (9, 13, 21), [nd("Relu", ["c"], "r"), nd(_op, ["c", "r"], "y")])
    case(f"{_op}-four-broadcast", (9, 13, 21), [nd(_op, ["c", "vc", "vw", "sc"], "y")], inits=_bc)
for _op in ("Add", "Sub", "Mul", "Div"):
    for _other in ("vc", "vw", "s1", "sc"):
        case(f"{_op}-{_other}", (9, 13), [nd(_op, ["c", _other], "y")], inits=_bc)
    # a denominator away from 0 (1/c would amplify the stem's rounding)
    case(f"{_op}-reversed", (9, 14),
         [nd("Abs", ["c"], "a"), nd("Add", ["a", "half"], "d"),
          nd(_op, ["vw", "d"], "y0"), nd(_op, ["d", "d"], "y1")],
         ["y0", "y1"], inits={"vw": arr((11,), 93), "half": f32(0.5)})
case("div-int", (9, 13),
     [nd("Mul", ["c", "ten"], "c10"), nd("Cast", ["c10"], "ci", to=I64),
      nd("Div", ["ci", "three"], "y")], {"y": I64},
     inits={"ten": f32(10.0), "three": np.array(3, np.int64)})
case("pow-float", (9, 13, 15),
     [nd("Sigmoid", ["c"], "s"), nd("Pow", ["s", "e"], "y0"), nd("Pow", ["c", "two"], "y1"),
      nd("Pow", ["pos", "c"], "y2")],
     ["y0", "y1", "y2"], inits={"e": f32(2.5), "two": f32(2.0), "pos": _bc["pos"]})
case("pow-int-exponent", (12, 13, 21), [nd("Pow", ["c", "e"], "y")], inits={"e": np.array(3, np.int64)})
case("pow-int-base", (12, 13),
     [nd("Mul", ["c", "k"], "ck"), nd("Cast", ["ck"], "ci", to=I64),
      nd("Abs", ["ci"], "ca"), nd("Pow", ["ca", "e"], "y0"), nd("Pow", ["ci", "two"], "y1")],
     {"y0": I64, "y1": I64},
     inits={"k": f32(4.0), "e": f32(1.5), "two": np.array(2, np.int64)})

# --- activations ----------------------------------------------------------------------------
for _op, _attrs in [("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("Softplus", {}),
                    ("LeakyRelu", {}), ("LeakyRelu", {"alpha": 0.3}), ("Elu", {}),
                    ("Elu", {"alpha": 0.6}), ("Selu", {}), ("Selu", {"alpha": 1.2, "gamma": 0.9}),
                    ("HardSigmoid", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4})]:
    _sfx = "-".join(f"{k}{v}" for k, v in _attrs.items())
    case(f"{_op}{'-' + _sfx if _sfx else ''}", (9, 13, 21), [nd(_op, ["c"], "y", **_attrs)])
case("Softplus-large", 13, [nd("Mul", ["c", "k"], "ck"), nd("Softplus", ["ck"], "y")],
     inits={"k": f32(30.0)})
case("HardSwish", (14, 21), [nd("Mul", ["c", "k"], "ck"), nd("HardSwish", ["ck"], "y")],
     inits={"k": f32(5.0)})
for _approx in (None, "none", "tanh"):
    _attrs = {} if _approx is None else {"approximate": _approx}
    case(f"Gelu-{_approx}", (20, 21), [nd("Gelu", ["c"], "y", **_attrs)])
case("PRelu-per-channel", (9, 13, 21), [nd("PRelu", ["c", "slope"], "y")],
     inits={"slope": arr((C, 1, 1), 100)})
case("PRelu-scalar", (9, 13), [nd("PRelu", ["c", "slope"], "y")], inits={"slope": f32(0.25)})
case("PRelu-last-axis", (9, 13), [nd("PRelu", ["c", "slope"], "y")],
     inits={"slope": arr((11,), 101)})
case("clip-attrs", 9, [nd("Clip", ["c"], "y", min=-0.5, max=0.6)])
case("clip-attr-min-only", 9, [nd("Clip", ["c"], "y", min=-0.2)])
case("clip-attr-none", 9, [nd("Clip", ["c"], "y")])
case("clip-inputs", (11, 13, 21), [nd("Clip", ["c", "lo", "hi"], "y")],
     inits={"lo": np.array(-0.5, np.float32), "hi": np.array(0.6, np.float32)})
case("clip-input-max-only", (11, 13), [nd("Clip", ["c", "", "hi"], "y")],
     inits={"hi": np.array(0.3, np.float32)})
case("clip-input-min-only", (11, 13), [nd("Clip", ["c", "lo"], "y")],
     inits={"lo": np.array(0.0, np.float32)})
case("clip-input-none", (11, 13), [nd("Clip", ["c"], "y")])
case("clip-min-above-max", (11, 13), [nd("Clip", ["c", "lo", "hi"], "y")],
     inits={"lo": np.array(0.5, np.float32), "hi": np.array(-0.5, np.float32)})
case("clip-relu6-dynamic-bound", 13,
     [nd("ReduceMean", ["c"], "m", keepdims=0), nd("Clip", ["c", "m", "six"], "y")],
     inits={"six": np.array(6.0, np.float32)})

# --- Pad ------------------------------------------------------------------------------------
for _mode in ("constant", "reflect", "edge"):
    case(f"pad-attr-{_mode}", (9, 10), [nd("Pad", ["c"], "y", mode=_mode,
                                           pads=[0, 0, 1, 2, 0, 0, 2, 1])])
    case(f"pad-input-{_mode}", (11, 13, 18, 21), [nd("Pad", ["c", "pads"], "y", mode=_mode)],
         inits={"pads": i64(0, 0, 2, 1, 0, 0, 1, 3)})
    case(f"pad-axes-{_mode}", (18, 21), [nd("Pad", ["c", "pads", "", "axes"], "y", mode=_mode)],
         inits={"pads": i64(2, 0, 1, 3), "axes": i64(-1, 2)})
case("pad-attr-value", 9, [nd("Pad", ["c"], "y", pads=[0, 1, 1, 0, 0, 2, 0, 1], value=0.5)])
case("pad-attr-negative", 9, [nd("Pad", ["c"], "y", pads=[0, 0, -1, 2, 0, 0, 1, -3])])
case("pad-input-value", (11, 13, 21), [nd("Pad", ["c", "pads", "v"], "y")],
     inits={"pads": i64(0, 1, 1, 0, 0, 2, 0, 1), "v": np.array(-0.75, np.float32)})
case("pad-input-negative", (11, 13), [nd("Pad", ["c", "pads"], "y")],
     inits={"pads": i64(0, 0, -2, 1, 0, 0, 1, -1)})
case("pad-dynamic-pads", 13,
     [nd("Shape", ["c"], "s"), nd("Slice", ["s", "a", "b"], "p4"),
      nd("Concat", ["z2", "p4", "z2", "p4"], "pads", axis=0),
      nd("Div", ["pads", "four"], "pads4"), nd("Pad", ["c", "pads4"], "y", mode="edge")],
     inits={"a": i64(2), "b": i64(4), "z2": i64(0, 0), "four": i64(4)})
case("pad-wrap", (19, 21), [nd("Pad", ["c", "pads"], "y", mode="wrap")],
     inits={"pads": i64(0, 0, 2, 1, 0, 0, 1, 3)})
case("pad-wrap-axes", (19, 21), [nd("Pad", ["c", "pads", "", "axes"], "y", mode="wrap")],
     inits={"pads": i64(1, 4, 2, 0), "axes": i64(3, 2)})

# --- Split, Slice, Squeeze, Unsqueeze -------------------------------------------------------
case("split-attr", (9, 11), [nd("Split", ["c"], ["y0", "y1"], axis=1, split=[1, 3])], ["y0", "y1"])
case("split-attr-equal", (9, 11), [nd("Split", ["c"], ["y0", "y1"], axis=1)], ["y0", "y1"])
case("split-attr-negative-axis", 11, [nd("Split", ["c"], ["y0", "y1", "y2"], axis=-1,
                                         split=[5, 2, 4])], ["y0", "y1", "y2"])
case("split-input", (13, 18, 21), [nd("Split", ["c", "sp"], ["y0", "y1"], axis=3)], ["y0", "y1"],
     inits={"sp": i64(5, 6)})
case("split-input-equal", 13, [nd("Split", ["c"], ["y0", "y1", "y2"], axis=2)],
     ["y0", "y1", "y2"])
case("split-num_outputs-uneven", (18, 21),
     [nd("Split", ["c"], ["y0", "y1", "y2"], axis=-1, num_outputs=3)], ["y0", "y1", "y2"])
case("split-num_outputs-even", (18, 21), [nd("Split", ["c"], ["y0", "y1"], axis=1, num_outputs=2)],
     ["y0", "y1"])
case("split-num_outputs-4-of-9", 18,
     [nd("Split", ["c"], ["y0", "y1", "y2", "y3"], axis=2, num_outputs=4)],
     ["y0", "y1", "y2", "y3"])
case("slice-attrs", 9, [nd("Slice", ["c"], "y", starts=[1, 0], ends=[3, 1000], axes=[1, 3])])
case("slice-attrs-no-axes-negative", 9,
     [nd("Slice", ["c"], "y", starts=[0, -3, -100], ends=[INT_MAX, -1, 5])])
case("slice-attrs-clamp", 9, [nd("Slice", ["c"], "y", starts=[2, 20], ends=[-1, 30], axes=[2, 3])])
_slice_cases = [
    ("steps", (0, -1), (INT_MAX, -INT_MAX), (2, 3), (2, -1)),
    ("neg-step-out-of-range-start", (100, 7), (-100, 0), (3, 2), (-2, -3)),
    ("neg-step-very-negative-start", (-100, -1), (-200, -200), (3, 2), (-1, -1)),
    ("neg-step-end-minus1", (5, 8), (-1, -1), (3, 2), (-1, -1)),
    ("neg-axes", (1, -4), (-1, 100), (-1, -2), (1, 1)),
    ("empty", (5, 0), (2, 4), (3, 1), (1, 1)),
    ("step3", (1,), (INT_MAX,), (3,), (3,)),
]
for _id, _st, _en, _ax, _sp in _slice_cases:
    case(f"slice-{_id}", (10, 13, 21), [nd("Slice", ["c", "st", "en", "ax", "sp"], "y")],
         inits={"st": i64(*_st), "en": i64(*_en), "ax": i64(*_ax), "sp": i64(*_sp)})
case("slice-no-axes-no-steps", (10, 13), [nd("Slice", ["c", "st", "en"], "y")],
     inits={"st": i64(0, 1, -5), "en": i64(1, 3, -2)})
case("slice-steps-omitted-axes-given", (10, 13), [nd("Slice", ["c", "st", "en", "ax"], "y")],
     inits={"st": i64(-5), "en": i64(-2), "ax": i64(-1)})
case("slice-int32", 13, [nd("Slice", ["c", "st", "en", "ax", "sp"], "y")],
     inits={"st": np.array([-1], np.int32), "en": np.array([-12], np.int32),
            "ax": np.array([3], np.int32), "sp": np.array([-2], np.int32)})
case("slice-dynamic", 13,
     [nd("Shape", ["c"], "s"), nd("Slice", ["s", "a", "b"], "hw"),  # [H, W]
      nd("Div", ["hw", "two"], "half"), nd("Slice", ["c", "half", "hw", "ax"], "y")],
     inits={"a": i64(2), "b": i64(4), "two": i64(2), "ax": i64(2, 3)})
_pool11 = nd("ReduceMean", ["c"], "m", axes=[2, 3])  # (N, C, 1, 1), attr form valid to opset 17
case("squeeze-attr", (9, 11), [_pool11, nd("Squeeze", ["m"], "y", axes=[2, 3])])
case("squeeze-attr-negative", 11, [_pool11, nd("Squeeze", ["m"], "y", axes=[-1])])
case("squeeze-input", (13, 17), [_pool11, nd("Squeeze", ["m", "ax"], "y")], inits={"ax": i64(3, -2)})
case("squeeze-all", (9, 13, 17), [_pool11, nd("Squeeze", ["m"], "y")])
case("squeeze-empty-axes-input", 13, [_pool11, nd("Squeeze", ["m", "ax"], "y")],
     inits={"ax": np.zeros((0,), np.int64)})
case("squeeze-input-21", 21,
     [nd("ReduceMean", ["c", "ax"], "m"), nd("Squeeze", ["m", "ax"], "y")], inits={"ax": i64(2, 3)})
case("unsqueeze-attr", 9, [nd("Unsqueeze", ["c"], "y", axes=[1])])
case("unsqueeze-attr-multi", 9, [nd("Unsqueeze", ["c"], "y", axes=[5, 0])])
case("unsqueeze-attr-negative", 11, [nd("Unsqueeze", ["c"], "y", axes=[0, -1])])
case("unsqueeze-input", (13, 21), [nd("Unsqueeze", ["c", "ax"], "y")], inits={"ax": i64(-1, 1)})
case("unsqueeze-scalar", 13,
     [nd("Shape", ["c"], "s"), nd("Gather", ["s", "i"], "n"), nd("Unsqueeze", ["n", "ax"], "y")],
     {"y": I64}, inits={"i": np.array(3, np.int64), "ax": i64(0)})

# --- reductions -----------------------------------------------------------------------------
_REDUCE_OPS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2")
# ReduceProd reads values in [0.9, 1.1] (products of up to 396 factors stay well-scaled).
_near1 = [nd("Sigmoid", ["c"], "sg"), nd("Mul", ["sg", "p2"], "sg2"), nd("Add", ["sg2", "p9"], "v")]
_near1_init = {"p2": f32(0.2), "p9": f32(0.9)}
for _op in _REDUCE_OPS:
    since = 13 if _op == "ReduceSum" else 18
    attr_opsets = [o for o in (9, 11, 13, 17) if o < since]
    src = "v" if _op == "ReduceProd" else "c"
    pre = _near1 if _op == "ReduceProd" else []
    for _axes, _kd in [([2, 3], 1), ([1], 0), (None, 0), (None, 1), ([-1], 1), ([0, 2], 0)]:
        _attrs = {"keepdims": _kd} if _axes is None else {"axes": _axes, "keepdims": _kd}
        _opsets = [o for o in attr_opsets if not (_axes and min(_axes) < 0 and o < 11)]
        case(f"{_op}-attr-axes{_axes}-keepdims{_kd}", _opsets, pre + [nd(_op, [src], "y", **_attrs)],
             inits=_near1_init)
        _in = [src] if _axes is None else [src, "ax"]
        _ax = {} if _axes is None else {"ax": i64(*_axes)}
        case(f"{_op}-input-axes{_axes}-keepdims{_kd}", (since, 21),
             pre + [nd(_op, _in, "y", keepdims=_kd)], inits={**_near1_init, **_ax})
    case(f"{_op}-noop_with_empty_axes", (since, 21),
         pre + [nd(_op, [src], "y", noop_with_empty_axes=1)], inits=_near1_init)
    case(f"{_op}-empty-axes-input", (since, 21),
         pre + [nd(_op, [src, "ax"], "y", keepdims=0)],
         inits={**_near1_init, "ax": np.zeros((0,), np.int64)})
    case(f"{_op}-empty-axes-input-noop", (since, 21),
         pre + [nd(_op, [src, "ax"], "y", noop_with_empty_axes=1)],
         inits={**_near1_init, "ax": np.zeros((0,), np.int64)})

# --- Softmax / LogSoftmax -------------------------------------------------------------------
for _op in ("Softmax", "LogSoftmax"):
    case(f"{_op}-4d-axis1-coerced", (9, 11), [nd(_op, ["c"], "y", axis=1)])
    case(f"{_op}-4d-default-axis-coerced", (9, 11), [nd(_op, ["c"], "y")])
    case(f"{_op}-4d-axis2-coerced", (9, 11), [nd(_op, ["c"], "y", axis=2)])
    case(f"{_op}-4d-axis0-coerced", (9, 11), [nd(_op, ["c"], "y", axis=0)])
    case(f"{_op}-4d-axis-neg1-coerced", 11, [nd(_op, ["c"], "y", axis=-1)])
    case(f"{_op}-4d-axis1", (13, 21), [nd(_op, ["c"], "y", axis=1)])
    case(f"{_op}-4d-default-axis", (13, 21), [nd(_op, ["c"], "y")])
    case(f"{_op}-4d-axis-neg3", (13, 21), [nd(_op, ["c"], "y", axis=-3)])
    case(f"{_op}-2d", (9, 11, 13, 21), [_flat, nd(_op, ["f"], "y", axis=1)])
case("softmax-logits-output", 13,
     [_flat, nd("MatMul", ["f", "B"], "logits"), nd("Softmax", ["logits"], "y")],
     inits={"B": arr((_K, 5), 110, 0.1)})

# --- Dropout --------------------------------------------------------------------------------
case("dropout-ratio-attr", (9, 10, 11), [nd("Dropout", ["c"], "y", ratio=0.3)])
case("dropout-mask-opset9", 9, [nd("Dropout", ["c"], ["y", "mask"], ratio=0.3)], {"y": F, "mask": F})
case("dropout-mask-bool", (10, 11), [nd("Dropout", ["c"], ["y", "mask"])], {"y": F, "mask": B})
case("dropout-inputs", (12, 13, 21),
     [nd("Dropout", ["c", "ratio", "tm"], ["y", "mask"])], {"y": F, "mask": B},
     inits={"ratio": np.array(0.3, np.float32), "tm": np.array(False)})
case("dropout-ratio-only", (12, 13), [nd("Dropout", ["c", "ratio"], "y")],
     inits={"ratio": np.array(0.5, np.float32)})
case("dropout-no-inputs", (13, 21), [nd("Dropout", ["c"], "y")])

# --- Resize / Upsample ----------------------------------------------------------------------
_up = f32(1, 1, 1.7, 2.3)
_down = f32(1, 1, 0.6, 0.45)
_int2 = f32(1, 1, 2, 2)
for _mode in ("nearest", "linear"):
    for _n, _sc in (("x2", _int2), ("up", _up), ("down", _down), ("w-only", f32(1, 1, 1, 1.5))):
        case(f"resize10-{_mode}-{_n}", 10, [nd("Resize", ["c", "sc"], "y", mode=_mode)],
             inits={"sc": _sc})
        if _n != "down":  # Upsample requires scales ≥ 1
            case(f"upsample9-{_mode}-{_n}", 9, [nd("Upsample", ["c", "sc"], "y", mode=_mode)],
                 inits={"sc": _sc})
for _mode in ("nearest", "linear"):
    case(f"upsample7-attr-{_mode}", (7, 8),
         [nd("Upsample", ["c"], "y", mode=_mode, scales=[1.0, 1.0, 1.7, 2.0])])
_COORDS = ("half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel")
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
_empty = np.zeros((0,), np.float32)
for _coord in _COORDS:
    for _n, _sc in (("up", _up), ("down", _down), ("x2", _int2)):
        for _nm in _NEAREST:
            case(f"resize-nearest-{_coord}-{_nm}-{_n}", (11, 13),
                 [nd("Resize", ["c", "roi", "sc"], "y", mode="nearest",
                     coordinate_transformation_mode=_coord, nearest_mode=_nm)],
                 inits={"roi": _empty, "sc": _sc})
        case(f"resize-linear-{_coord}-{_n}", (11, 13, 18),
             [nd("Resize", ["c", "roi", "sc"], "y", mode="linear",
                 coordinate_transformation_mode=_coord)], inits={"roi": _empty, "sc": _sc})
        case(f"resize-cubic-{_coord}-{_n}", (11, 13, 18),
             [nd("Resize", ["c", "roi", "sc"], "y", mode="cubic",
                 coordinate_transformation_mode=_coord)], inits={"roi": _empty, "sc": _sc})
    case(f"resize-cubic-a-0.5-{_coord}", (11, 19),
         [nd("Resize", ["c", "roi", "sc"], "y", mode="cubic", cubic_coeff_a=-0.5,
             coordinate_transformation_mode=_coord)], inits={"roi": _empty, "sc": _up})
    case(f"resize-sizes-linear-{_coord}", 11,
         [nd("Resize", ["c", "roi", "sc", "sz"], "y", mode="linear",
             coordinate_transformation_mode=_coord)],
         inits={"roi": _empty, "sc": _empty, "sz": i64(2, C, 14, 5)})
    case(f"resize-sizes-nearest-{_coord}", (13, 19),
         [nd("Resize", ["c", "", "", "sz"], "y", mode="nearest",
             coordinate_transformation_mode=_coord)], inits={"sz": i64(2, C, 1, 20)})
    case(f"resize-sizes-cubic-{_coord}", (13, 18),
         [nd("Resize", ["c", "", "", "sz"], "y", mode="cubic",
             coordinate_transformation_mode=_coord)], inits={"sz": i64(2, C, 16, 7)})
case("resize-default-mode", (11, 13), [nd("Resize", ["c", "roi", "sc"], "y")],
     inits={"roi": _empty, "sc": _up})
case("resize-scale-near-1", 13,
     [nd("Resize", ["c", "", "sc"], "y", mode="linear")], inits={"sc": f32(1, 1, 1.05, 1.0)})
case("resize-sizes-same", 13, [nd("Resize", ["c", "", "", "sz"], "y", mode="linear",
                                  coordinate_transformation_mode="align_corners")],
     inits={"sz": i64(2, C, 9, 11)})
for _m in ("nearest", "linear", "cubic"):
    case(f"resize-half_pixel_symmetric-{_m}", (19, 21),
         [nd("Resize", ["c", "", "sc"], "y", mode=_m,
             coordinate_transformation_mode="half_pixel_symmetric")], inits={"sc": _up})
    case(f"resize-half_pixel_symmetric-down-{_m}", 19,
         [nd("Resize", ["c", "", "sc"], "y", mode=_m,
             coordinate_transformation_mode="half_pixel_symmetric")], inits={"sc": _down})
    case(f"resize-axes-scales-{_m}", (18, 21),
         [nd("Resize", ["c", "", "sc"], "y", mode=_m, axes=[2, 3])], inits={"sc": f32(1.5, 0.7)})
    case(f"resize-axes-negative-sizes-{_m}", (18, 21),
         [nd("Resize", ["c", "", "", "sz"], "y", mode=_m, axes=[-1])], inits={"sz": i64(17)})
    for _pol in ("stretch", "not_larger", "not_smaller"):
        case(f"resize-keep_aspect_ratio-{_pol}-{_m}", (18, 21),
             [nd("Resize", ["c", "", "", "sz"], "y", mode=_m, axes=[2, 3],
                 keep_aspect_ratio_policy=_pol)], inits={"sz": i64(13, 30)})
case("resize-exclude_outside-0", 13,
     [nd("Resize", ["c", "", "sc"], "y", mode="cubic", exclude_outside=0)], inits={"sc": _up})


def test_stem_output_is_bit_identical():
    """The premise of :func:`image`: ORT and the mirror agree exactly on ``c``."""
    ours, theirs = run_both(build([nd("Identity", ["c"], "y")], {"y": F}, 13))
    assert np.abs(theirs["y"]).max() > 1
    np.testing.assert_array_equal(ours["y"], theirs["y"])


# --- more Pad / Resize forms -------------------------------------------------------------------
for _mode in ("reflect", "edge", "wrap"):
    case(f"pad-negative-{_mode}", (19, 21), [nd("Pad", ["c", "pads"], "y", mode=_mode)],
         inits={"pads": i64(0, 0, 2, -1, 0, 0, -1, 2)})
case("pad-reflect-channels", (11, 13), [nd("Pad", ["c", "pads"], "y", mode="reflect")],
     inits={"pads": i64(0, 2, 0, 1, 0, 3, 1, 0)})
case("pad-edge-channels-attr", 9, [nd("Pad", ["c"], "y", mode="edge", pads=[0, 1, 0, 0, 0, 2, 1, 1])])
case("resize-scale-near-1-one-axis", 13,
     [nd("Resize", ["c", "", "sc"], "y", mode="linear")], inits={"sc": f32(1, 1, 1.05, 1.5)})
case("resize-scale-near-1-one-axis-cubic", 13,
     [nd("Resize", ["c", "", "sc"], "y", mode="cubic")], inits={"sc": f32(1, 1, 1.05, 1.5)})
for _coord in _COORDS + ("half_pixel_symmetric",):
    case(f"resize-to-one-pixel-{_coord}", 19,
         [nd("Resize", ["c", "", "", "sz"], "y", mode="linear", coordinate_transformation_mode=_coord)],
         inits={"sz": i64(2, C, 1, 5)})
for _nm in _NEAREST:
    case(f"resize-tf_half_pixel_for_nn-{_nm}", 11,
         [nd("Resize", ["c", "roi", "sc"], "y", mode="nearest", nearest_mode=_nm,
             coordinate_transformation_mode="tf_half_pixel_for_nn")],
         inits={"roi": _empty, "sc": _up})
case("resize-channels-too", 13, [nd("Resize", ["c", "", "sc"], "y", mode="nearest")],
     inits={"sc": f32(1, 2, 1.5, 1)})

# --- other registered operators -------------------------------------------------------------
_pos = [nd("Abs", ["c"], "a"), nd("Add", ["a", "tenth"], "p")]  # p > 0
for _op in ("Neg", "Abs", "Floor", "Ceil", "Sign", "Erf", "Softsign", "Sin", "Cos", "Exp"):
    case(f"{_op}", (9, 13), [nd(_op, ["c"], "y")])
for _op in ("Sqrt", "Log", "Reciprocal"):
    case(f"{_op}", (9, 13), _pos + [nd(_op, ["p"], "y")], inits={"tenth": f32(0.1)})
case("Round-ties", (11, 13), [nd("Mul", ["c", "k"], "ck"), nd("Round", ["ck"], "y")],
     inits={"k": f32(64.0)})  # c is on a 1/128 grid: c·64 has many exact .5 ties
case("Celu", (12, 13), [nd("Celu", ["c"], "y", alpha=0.7)])
case("Mish", (18, 21), [nd("Mish", ["c"], "y")])
case("ThresholdedRelu", (10, 13), [nd("ThresholdedRelu", ["c"], "y", alpha=0.3)])
for _op in ("Less", "Greater"):
    case(f"{_op}", (9, 13), [nd(_op, ["c", "vw"], "y")], {"y": B}, inits={"vw": arr((11,), 140)})
for _op in ("LessOrEqual", "GreaterOrEqual"):
    case(f"{_op}", (12, 13), [nd("Relu", ["c"], "r"), nd(_op, ["c", "r"], "y")], {"y": B})
for _op in ("And", "Or", "Xor"):
    case(f"{_op}", (9, 13),
         [nd("Greater", ["c", "z"], "a"), nd("Less", ["c", "h"], "b"), nd(_op, ["a", "b"], "m"),
          nd("Not", ["m"], "y")], {"y": B}, inits={"z": f32(0.0), "h": f32(0.5)})
case("CastLike", (15, 21), [nd("Mul", ["c", "k"], "ck"), nd("CastLike", ["ck", "i"], "y")],
     {"y": I64}, inits={"k": f32(4.0), "i": i64(1)})
case("Size", (9, 13, 21), [nd("Size", ["c"], "y")], {"y": I64})
case("GatherElements", (11, 13),
     [nd("GatherElements", ["c", "idx"], "y", axis=3)],
     inits={"idx": np.tile(i64(0, -1, 5, 10, 3), (2, C, 9, 1))})
for _op in ("ArgMax", "ArgMin"):
    case(f"{_op}", (9, 13), [nd(_op, ["c"], "y", axis=1)], {"y": I64})
    case(f"{_op}-keepdims0-neg-axis", (11, 13), [nd(_op, ["c"], "y", axis=-1, keepdims=0)], {"y": I64})
    # the stem's 1/128 grid makes ties: select_last_index is exercised
    case(f"{_op}-select_last_index-ties", (12, 13),
         [nd("Mul", ["c", "k"], "ck"), nd("Floor", ["ck"], "f"),
          nd(_op, ["f"], "y", axis=3, select_last_index=1)], {"y": I64}, inits={"k": f32(2.0)})
for _op in ("ReduceL1", "ReduceSumSquare", "ReduceLogSumExp"):
    case(f"{_op}-attr", (11, 13), [nd(_op, ["c"], "y", axes=[1, 3], keepdims=0)])
    case(f"{_op}-input", 18, [nd(_op, ["c", "ax"], "y")], inits={"ax": i64(-2)})
    case(f"{_op}-noop", 18, [nd(_op, ["c"], "y", noop_with_empty_axes=1)])
case("LayerNormalization", (17, 21),
     [nd("LayerNormalization", ["c", "s", "bb"], "y", axis=1, epsilon=1e-3)],
     inits={"s": arr((C, 9, 11), 141), "bb": arr((C, 9, 11), 142)})
case("LayerNormalization-last-axis-broadcast-scale", 17,
     [nd("LayerNormalization", ["c", "s"], ["y", "mean", "inv"])], ["y", "mean", "inv"],
     inits={"s": arr((11,), 143)})

# Forms ONNX Runtime refuses to run but the ONNX spec defines: checked against the ONNX
# reference implementation instead (same tolerance).
REFERENCE_CASES: list[Case] = []
_n_before = len(CASES)
for _ap in ("SAME_UPPER", "SAME_LOWER"):
    case(f"conv-{_ap}-dilated", 13,
         [nd("Conv", ["c", "w"], "y", auto_pad=_ap, dilations=[2, 2], strides=[1, 2])],
         inits={"w": arr((5, C, 3, 2), 22)})
REFERENCE_CASES, CASES[_n_before:] = CASES[_n_before:], []


@pytest.mark.parametrize("spec", REFERENCE_CASES, ids=[c.id for c in REFERENCE_CASES])
def test_op_matches_onnx_reference(spec: Case):
    assert_matches_onnx_reference(spec)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_lrn_matches_the_onnx_formula(size):
    """ONNX Runtime rejects even sizes and the ONNX reference LRN loops over the batch instead
    of the channels, so the spec's formula itself is the oracle: the window of channel c is
    [c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉] clipped to the channels."""
    alpha, beta, bias = 0.05, 0.7, 1.5
    model = build([nd("LRN", ["c"], "y", size=size, alpha=alpha, beta=beta, bias=bias)],
                  {"y": F}, 13)
    mirror = Mirror(load_graph(model))
    with torch.no_grad():
        out = mirror(torch.from_numpy(image((2, 3, 9, 11))), ["c", "y"])
    c, y = out["c"].double().numpy(), out["y"].numpy()
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    want = np.empty_like(c)
    for k in range(C):
        square_sum = (c[:, max(0, k - lo):min(C, k + hi + 1)] ** 2).sum(axis=1)
        want[:, k] = c[:, k] / (bias + alpha / size * square_sum) ** beta
    np.testing.assert_allclose(y, want, atol=ATOL, rtol=RTOL)


CASE_IDS = [c.id for c in CASES]
assert len(CASE_IDS) == len(set(CASE_IDS)), "duplicate case ids"


@pytest.mark.parametrize("spec", CASES, ids=CASE_IDS)
def test_op_matches_onnxruntime(spec: Case):
    assert_matches_onnxruntime(spec)


def test_every_listed_op_is_covered():
    listed = """Conv ConvTranspose BatchNormalization InstanceNormalization LRN MaxPool AveragePool
        GlobalAveragePool GlobalMaxPool Gemm MatMul Concat Flatten Reshape Transpose Shape Gather
        Constant ConstantOfShape Cast Expand Tile Range Where Equal Identity Sum Mean Max Min Add
        Sub Mul Div Pow Relu LeakyRelu PRelu Clip Sigmoid HardSigmoid HardSwish Tanh Elu Selu
        Softplus Gelu Pad Split Slice Squeeze Unsqueeze ReduceMean ReduceSum ReduceMax ReduceMin
        ReduceProd ReduceL2 Resize Upsample Softmax LogSoftmax Dropout""".split()
    covered = {n.op_type for c in CASES for n in c.nodes}
    assert not set(listed) - covered
    newer = {"Attention", "Einsum", "GatherND", "Mod", "ScatterND", "Trilu"}  # test_ops_transformer.py
    assert not set(OPS) - covered - newer, "every registered operator has a case"


# ============================================================================================
# Unsupported forms fail at Mirror(g) time, naming op type, node and opset
# ============================================================================================

UNSUPPORTED = [
    ("com.microsoft-op", 13,
     [nd("Flatten", ["c"], "f"), nd("FusedGemm", ["f", "B"], "y", domain="com.microsoft")],
     {"B": arr((_K, 5), 130)}, [("com.microsoft", 1)], "FusedGemm"),
    ("NonMaxSuppression", 13,
     [nd("Flatten", ["c"], "f", axis=2), nd("Slice", ["f", "z", "four", "one"], "boxes"),
      nd("NonMaxSuppression", ["boxes", "f"], "sel"), nd("Cast", ["sel"], "y", to=F)],
     {"z": i64(0), "four": i64(4), "one": i64(1)}, [], "NonMaxSuppression"),
    ("resize-antialias", 18,
     [nd("Resize", ["c", "", "sc"], "y", mode="linear", antialias=1)], {"sc": _down}, [],
     "Resize"),
    ("resize-tf_crop_and_resize", 13,
     [nd("Resize", ["c", "roi", "sc"], "y", mode="linear",
         coordinate_transformation_mode="tf_crop_and_resize")],
     {"roi": f32(0, 0, 0.1, 0.2, 1, 1, 0.8, 0.9), "sc": _up}, [], "Resize"),
    ("resize-exclude_outside", 13,
     [nd("Resize", ["c", "", "sc"], "y", mode="cubic", exclude_outside=1)], {"sc": _up}, [],
     "Resize"),
    ("maxpool-indices", 13,
     [nd("MaxPool", ["c"], ["y", "idx"], kernel_shape=[2, 2])], {}, [], "MaxPool"),
    ("batchnorm-training", 15,
     [nd("BatchNormalization", ["c", "s", "bb", "m", "v"], ["y", "rm", "rv"], training_mode=1)],
     _bn, [], "BatchNormalization"),
    ("batchnorm-running-stats-opset9", 9,
     [nd("BatchNormalization", ["c", "s", "bb", "m", "v"], ["y", "rm", "rv", "sm", "sv"])],
     _bn, [], "BatchNormalization"),
    ("resize10-cubic", 10, [nd("Resize", ["c", "sc"], "y", mode="cubic")], {"sc": _up}, [],
     "Resize"),
    ("upsample-downscale", 9, [nd("Upsample", ["c", "sc"], "y")], {"sc": _down}, [], "Upsample"),
    ("conv-unknown-auto_pad", 13,
     [nd("Conv", ["c", "w"], "y", auto_pad="FANCY")], {"w": arr((2, C, 1, 1), 131)}, [], "Conv"),
    ("dropout-training", 13,
     [nd("Dropout", ["c", "r", "tm"], "y")],
     {"r": np.array(0.5, np.float32), "tm": np.array(True)}, [], "Dropout"),
]


@pytest.mark.parametrize("id_,opset,nodes,inits,extra,op", UNSUPPORTED,
                         ids=[u[0] for u in UNSUPPORTED])
def test_unsupported_op_fails_at_load(id_, opset, nodes, inits, extra, op):
    model = build(nodes, {"y": F}, opset, inits, extra_opsets=extra, shapes_from_ort=False)
    graph = load_graph(model)
    with pytest.raises(UnsupportedModelError) as info:
        Mirror(graph)
    message = str(info.value)
    node = next(n for n in nodes if n.op_type == op)
    assert op in message and repr(node.name) in message and f"opset {opset}" in message, message


# ============================================================================================
# Gradients: autograd through the mirror against central finite differences (float64)
# ============================================================================================

def _grad_model(kind: str) -> tuple[onnx.ModelProto, str, str]:
    """x → Conv stem (c) → chain → Gemm → y (N, 5); returns (model, tap, output)."""
    if kind == "relu":
        chain = [nd("Relu", ["c"], "a")]
    elif kind == "clip":
        chain = [nd("Clip", ["c", "lo", "hi"], "a")]
    elif kind == "smooth":
        chain = [nd("Sigmoid", ["c"], "s"), nd("Mul", ["c", "s"], "sw"),
                 nd("BatchNormalization", ["sw", "bs", "bb", "bm", "bv"], "a")]
    else:  # a mixed bag of data-movement ops
        chain = [nd("Pad", ["c", "pads"], "p", mode="reflect"),
                 nd("MaxPool", ["p"], "mp", kernel_shape=[2, 2], strides=[1, 1]),
                 nd("Resize", ["mp", "", "sc"], "rs", mode="cubic"),
                 nd("Slice", ["rs", "st", "en", "ax", "sp"], "sl"),
                 nd("Concat", ["sl", "sl"], "a", axis=1)]
    nodes = chain + [
        nd("AveragePool", ["a"], "ap", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        nd("Flatten", ["ap"], "f"),
        nd("Gemm", ["f", "B", "Cv"], "y", transB=1),
    ]
    inits = {"lo": np.array(-0.3, np.float32), "hi": np.array(0.4, np.float32),
             "bs": _bn["s"], "bb": _bn["bb"], "bm": _bn["m"], "bv": _bn["v"],
             "pads": i64(0, 0, 1, 2, 0, 0, 2, 1), "sc": f32(1, 1, 1.6, 1.3),
             "st": i64(-1, 0), "en": i64(-INT_MAX, 100), "ax": i64(3, 2), "sp": i64(-2, 1)}
    head = Mirror(load_graph(build(nodes[:-1], {"f": F}, 13, inits, hw=(5, 7))))
    with torch.no_grad():
        width = head(torch.zeros(1, 3, 5, 7), ["f"])["f"].shape[1]
    inits.update(B=arr((5, width), 120, 0.3), Cv=arr((5,), 121))
    return build(nodes, {"y": F}, 13, inits, hw=(5, 7)), "c", "y"


@pytest.mark.parametrize("kind", ["relu", "clip", "smooth", "movement"])
def test_gradient_matches_finite_differences(kind):
    model, tap, out = _grad_model(kind)
    onnx.checker.check_model(model, full_check=True)
    mirror = Mirror(load_graph(model)).double()
    x = torch.from_numpy(arr((2, 3, 5, 7), 5, 1.0)).double()
    weights = torch.from_numpy(arr((2, 5), 6, 1.0)).double()

    def score(a: torch.Tensor) -> torch.Tensor:
        return (mirror(x, [out], overrides={tap: a})[out] * weights).sum()

    with torch.no_grad():
        a0 = mirror(x, [tap])[tap]
    a = a0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(score(a), [a])
    assert grad.dtype == torch.float64 and grad.abs().max() > 0
    h = 1e-6
    numeric = torch.zeros_like(a0)
    with torch.no_grad():
        flat = numeric.view(-1)
        for i in range(a0.numel()):
            e = torch.zeros_like(a0).view(-1)
            e[i] = h
            e = e.view_as(a0)
            flat[i] = (score(a0 + e) - score(a0 - e)) / (2 * h)
    # 1e-6 relative to the gradient's scale: central differences in float64 (piecewise-linear
    # chains are exact up to rounding; smooth ones have an O(h²) ≈ 1e-12 truncation error).
    np.testing.assert_allclose(numeric.numpy(), grad.numpy(),
                               atol=1e-6 * float(grad.abs().max()), rtol=1e-6)
