"""The operators of transformer and conv/attention hybrid exports against ONNX Runtime (the oracle).

Same method and tolerance as ``test_ops.py`` (whose graph builder and comparison this file uses):
each case is a hand-built ONNX graph ``x`` → Conv stem ``c`` (N, 4, H, W) → the op under test,
run through the mirror and ONNX Runtime, every output compared in shape, dtype and value
(1e-5 absolute + 1e-5 relative: float32 summation order only). The forms are those that torch's
two exporters write for torchvision's and timm's ViT, Swin, MaxViT, CoAtNet and EfficientFormer
(Einsum, Mod, GatherND, ScatterND, Attention, LayerNormalization, Softmax on token axes,
Equal/Where/Trilu), plus every other form of those operators ONNX Runtime runs. Forms ONNX
Runtime refuses but ONNX defines are checked against the ONNX reference implementation.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from camonnx.errors import UnsupportedModelError
from camonnx.graph import load_graph
from camonnx.mirror import Mirror
from camonnx.ops import OPS
from camonnx.ops.einsum import parse_equation
from test_ops import (B, C, F, F16, F64, I32, I64, IR, Case, arr, assert_matches_onnx_reference,
                      assert_matches_onnxruntime, assert_same, build, f32, i64, image, nd,
                      run_both)

# test_ops.IR stops at opset 22; Attention needs 23+ and float Mod with fmod=0 28.
for _opset in range(23, 29):
    IR.setdefault(_opset, helper.find_min_ir_version_for([helper.make_opsetid("", _opset)]))


#: Tiny graphs: one torch thread is ~100x faster than waking a pool per op on 2 cores.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


CASES: list[Case] = []
REFERENCE_CASES: list[Case] = []  # ONNX Runtime refuses these forms; the ONNX reference runs them


def case(id: str, opsets, nodes, outputs="y", inits=None, hw=(9, 11), into=None) -> None:
    if isinstance(outputs, str):
        outputs = {outputs: F}
    elif isinstance(outputs, (list, tuple)):
        outputs = {o: F for o in outputs}
    for opset in ([opsets] if isinstance(opsets, int) else opsets):
        (CASES if into is None else into).append(
            Case(f"{id}-op{opset}", opset, nodes, dict(outputs), dict(inits or {}), hw))


#: ``c`` (N, 4, H, W) → tokens ``t`` (N, H·W, 4), as a patch embedding's output is laid out.
TOKENS = [nd("Reshape", ["c", "tok_shape"], "t0"), nd("Transpose", ["t0"], "t", perm=[0, 2, 1])]
TOK = {"tok_shape": i64(0, C, -1)}
#: integers in [−8, 8] from the stem (its output is on a 1/128 grid, |c| ≲ 2)
INTS = [nd("Mul", ["c", "four"], "c4"), nd("Cast", ["c4"], "ci", to=I64)]
INT_INIT = {"four": f32(4.0)}

# --- Einsum -----------------------------------------------------------------------------------
_five_d = [nd("Reshape", ["c", "s5"], "a5"), nd("Sigmoid", ["a5"], "b5")]
_s5 = {"s5": i64(0, 2, 2, 9, 11)}  # (B, G, H, I, D) as MaxViT's partitioned attention
case("einsum-maxvit-qk", (12, 13, 17, 21),
     _five_d + [nd("Einsum", ["a5", "b5"], "y", equation="B G H I D, B G H J D -> B G H I J")],
     inits=_s5)
case("einsum-maxvit-av", (12, 17),
     _five_d + [nd("Einsum", ["a5", "b5"], "s", equation="B G H I D, B G H J D -> B G H I J"),
                nd("Einsum", ["s", "b5"], "y", equation="B G H I J, B G H J D -> B G H I D")],
     inits=_s5)
case("einsum-matmul-weight", (12, 21), [nd("Einsum", ["c", "w"], "y", equation="bchw,cd->bdhw")],
     inits={"w": arr((C, 3), 200)})
case("einsum-implicit-sorted-output", (12, 13),  # once-only labels b, d, h, w: output "bdhw"
     [nd("Einsum", ["c", "w"], "y", equation="bchw,cd")], inits={"w": arr((C, 3), 201)})
case("einsum-implicit-transpose", 12, [nd("Einsum", ["c"], "y", equation="dcba")])
case("einsum-ellipsis-leading", (12, 21),
     [nd("Einsum", ["c", "w"], "y", equation="...hw,wk->...hk")], inits={"w": arr((11, 3), 202)})
case("einsum-ellipsis-implicit", 12,  # ellipsis axes first, then "hk"
     [nd("Einsum", ["c", "w"], "y", equation="...hw,wk")], inits={"w": arr((11, 3), 203)})
case("einsum-ellipsis-trailing", 12,
     [nd("Einsum", ["c", "w"], "y", equation="bc...,cd->bd...")], inits={"w": arr((C, 2), 204)})
case("einsum-ellipsis-trailing-implicit", 12,  # "...bd": the ellipsis axes move to the front
     [nd("Einsum", ["c", "w"], "y", equation="bc...,cd")], inits={"w": arr((C, 2), 205)})
case("einsum-ellipsis-middle", 12,
     [nd("Einsum", ["c", "w"], "y", equation="b...w,wk->bk...")], inits={"w": arr((11, 2), 206)})
case("einsum-diagonal", (12, 13),
     [nd("Einsum", ["c"], "y0", equation="bcii->bci"), nd("Einsum", ["c"], "y1", equation="bcii")],
     ["y0", "y1"], hw=(6, 6))
case("einsum-full-sum-and-trace", 12,
     [nd("Einsum", ["c"], "y0", equation="bchw->"), nd("Einsum", ["c"], "y1", equation="bchw->b"),
      nd("Einsum", ["c", "c"], "y2", equation="bchw,bchw->bc")], ["y0", "y1", "y2"])
case("einsum-three-operands", (12, 21),
     [nd("Einsum", ["c", "w", "v"], "y", equation="bchw,cd,de->behw")],
     inits={"w": arr((C, 3), 207), "v": arr((3, 2), 208)})
case("einsum-outer", 12,
     [nd("ReduceMean", ["c"], "m", axes=[2, 3], keepdims=0),
      nd("Einsum", ["m", "m"], "y", equation="bc,bd->bcd")])
case("einsum-broadcast-size-1-label", 12,  # ONNX Runtime broadcasts a size-1 labelled axis
     [nd("Einsum", ["c", "w"], "y", equation="bchw,chw->bchw")], inits={"w": arr((1, 9, 11), 209)})
case("einsum-int64", (12, 13),
     INTS + [nd("Einsum", ["ci", "w"], "y", equation="bchw,cd->bdhw")], {"y": I64},
     inits={**INT_INIT, "w": np.arange(-4, 4, dtype=np.int64).reshape(C, 2)})
case("einsum-double", 12,
     [nd("Cast", ["c"], "cd", to=F64), nd("Einsum", ["cd", "cd"], "y", equation="bchw,bchv->bcwv")],
     {"y": F64})
case("einsum-uppercase-implicit", 12,  # ORT refuses upper-case labels in an implicit output
     [nd("Einsum", ["c", "w"], "y", equation="bChw,CD")], inits={"w": arr((C, 3), 210)},
     into=REFERENCE_CASES)

# --- Mod --------------------------------------------------------------------------------------
_divisors = i64(3, -3, 5, -2, 1, 7, -7, 4, -4, 2, 6)  # along W, never 0
for _fmod in (0, 1):
    case(f"mod-int64-fmod{_fmod}", (10, 13, 21),
         INTS + [nd("Mod", ["ci", "d"], "y", fmod=_fmod)], {"y": I64},
         inits={**INT_INIT, "d": _divisors})
    case(f"mod-int32-fmod{_fmod}", (10, 13),
         INTS + [nd("Cast", ["ci"], "c32", to=I32), nd("Mod", ["c32", "d"], "y", fmod=_fmod)],
         {"y": I32}, inits={**INT_INIT, "d": _divisors.astype(np.int32)})
    case(f"mod-int64-scalar-divisor-fmod{_fmod}", (10, 13),
         INTS + [nd("Mod", ["ci", "d"], "y", fmod=_fmod)], {"y": I64},
         inits={**INT_INIT, "d": np.array(-3, np.int64)})
_fdiv = f32(0.75, -0.75, 1.5, -0.4, 0.3, -2.0, 2.5, 0.125, -0.125, 1.0, -1.0)
case("mod-float-fmod1", (10, 13, 21), [nd("Mod", ["c", "d"], "y", fmod=1)], inits={"d": _fdiv})
case("mod-float-fmod0", 28, [nd("Mod", ["c", "d"], "y")], inits={"d": _fdiv})  # defined from 28
case("mod-float-fmod0-before-28", 13, [nd("Mod", ["c", "d"], "y")], inits={"d": _fdiv},
     into=REFERENCE_CASES)
case("mod-shape-arithmetic", (13, 17),  # Swin's/ViT's padding: (window − H mod window) mod window
     [nd("Shape", ["c"], "s"), nd("Mod", ["s", "win"], "r"), nd("Sub", ["win", "r"], "p"),
      nd("Mod", ["p", "win"], "y")], {"y": I64}, inits={"win": np.array(7, np.int64)})


def test_mod_zero_takes_the_divisors_sign():
    """fmod=0 on floats: a zero remainder is +0 or −0 as the divisor's sign (ONNX Runtime too)."""
    model = build([nd("Mod", ["c", "d"], "y")], {"y": F}, 28, {"d": _fdiv})
    ours, theirs = run_both(model)
    assert_same(ours, theirs)
    zeros = theirs["y"] == 0
    assert zeros.any()
    np.testing.assert_array_equal(np.signbit(ours["y"][zeros]), np.signbit(theirs["y"][zeros]))


# --- Trilu ------------------------------------------------------------------------------------
case("trilu-upper-default", (14, 21), [nd("Trilu", ["c"], "y")])
for _upper in (0, 1):
    for _k in (-2, 0, 3, 20):
        case(f"trilu-upper{_upper}-k{_k}", 14, [nd("Trilu", ["c", "k"], "y", upper=_upper)],
             inits={"k": np.array(_k, np.int64)})
case("trilu-int64", 14, INTS + [nd("Trilu", ["ci"], "y", upper=0)], {"y": I64}, inits=INT_INIT)
case("trilu-causal-mask", (14, 21),  # a causal mask as exporters build it: Trilu → Equal → Where
     [nd("ConstantOfShape", ["sq"], "ones", value=numpy_helper.from_array(f32(1.0), "v")),
      nd("Trilu", ["ones"], "tri", upper=0), nd("Equal", ["tri", "zero"], "masked"),
      nd("Where", ["masked", "ninf", "c"], "y")],
     inits={"sq": i64(9, 11), "zero": f32(0.0), "ninf": f32(-1e4)})

# --- GatherND / ScatterND -----------------------------------------------------------------------
_chw = [nd("Transpose", ["c"], "d", perm=[1, 2, 3, 0])]  # (4, 9, 11, N): no index reads the batch
case("gathernd-rows", (11, 12, 13),
     _chw + [nd("GatherND", ["d", "idx"], "y")], inits={"idx": i64(2, 0, -1, 1).reshape(4, 1)})
case("gathernd-pairs-negative", (11, 13),
     _chw + [nd("GatherND", ["d", "idx"], "y")],
     inits={"idx": i64(0, 8, -1, -9, 3, 4, 2, 0, 1, 1, 3, -2).reshape(2, 3, 2)})
case("gathernd-elements", 13,
     _chw + [nd("GatherND", ["d", "idx"], "y")],
     inits={"idx": i64(0, 0, 0, 3, 8, 10, -4, -9, -11).reshape(3, 3)})
case("gathernd-batch_dims1", (12, 13),
     _chw + [nd("GatherND", ["d", "idx"], "y", batch_dims=1)],
     inits={"idx": (np.arange(40, dtype=np.int64).reshape(4, 5, 2) % 9)})
case("gathernd-batch_dims2", 13,
     _chw + [nd("GatherND", ["d", "idx"], "y", batch_dims=2)],
     inits={"idx": (np.arange(36, dtype=np.int64).reshape(4, 9, 1) % 11 - 5)})
case("gathernd-relative-position-bias", 13,  # Swin v2/CoAtNet: a bias table read by index pairs
     [nd("GatherND", ["table", "idx"], "bias"), nd("ReduceMean", ["c"], "m", axes=[1]),
      nd("Add", ["m", "bias"], "y")],
     inits={"table": arr((5, 7, 11), 211),
            "idx": np.stack(np.meshgrid(np.arange(9) % 5, np.arange(9) % 7, indexing="ij"),
                            -1).astype(np.int64)})
_upd = [nd("Slice", ["d", "s0", "s1", "sax"], "u0"), nd("Reshape", ["u0", "us"], "u"),
        nd("Neg", ["u"], "upd")]  # (5, 11, N): rows 0..4 of channel 0, negated
_upd_init = {"s0": i64(0, 0), "s1": i64(1, 5), "sax": i64(0, 1), "us": i64(5, 11, -1)}
_pairs = i64(0, 0, 3, 8, -1, 2, 2, -9, 1, 4).reshape(5, 2)  # (C, H) pairs, distinct
case("scatternd-pairs", (11, 13), _chw + _upd + [nd("ScatterND", ["d", "idx", "upd"], "y")],
     inits={**_upd_init, "idx": _pairs})
for _red, _opsets in (("none", (16, 18)), ("add", (16, 18)), ("mul", (16, 18)), ("max", 18),
                      ("min", 18)):
    case(f"scatternd-pairs-{_red}", _opsets,
         _chw + _upd + [nd("ScatterND", ["d", "idx", "upd"], "y", reduction=_red)],
         inits={**_upd_init, "idx": _pairs})
for _red in ("add", "mul", "max", "min"):  # repeated indices: combined in turn
    case(f"scatternd-repeated-{_red}", 18,
         _chw + _upd + [nd("ScatterND", ["d", "idx", "upd"], "y", reduction=_red)],
         inits={**_upd_init, "idx": i64(1, 2, 1, 2, 3, 3, 1, 2, 3, 3).reshape(5, 2)})
case("scatternd-rows", (11, 13),
     _chw + [nd("Slice", ["d", "a", "b"], "rows"), nd("Sigmoid", ["rows"], "upd"),
             nd("ScatterND", ["d", "idx", "upd"], "y")],
     inits={"a": i64(0), "b": i64(2), "idx": i64(3, -4).reshape(2, 1)})
case("scatternd-mask-building", (13, 17),  # Swin's shifted-window mask: slices set to a count
     [nd("Shape", ["c"], "s"), nd("Slice", ["s", "two", "four"], "hw"),
      nd("ConstantOfShape", ["hw"], "zeros", value=numpy_helper.from_array(f32(0.0), "v")),
      nd("ScatterND", ["zeros", "idx", "cnt"], "mask"), nd("Add", ["c", "mask"], "y")],
     inits={"two": i64(2), "four": i64(4), "idx": i64(0, 1, 8, 4, 8, 10).reshape(3, 2),
            "cnt": f32(1.0, 2.0, 3.0)})

# --- Attention (opset 23+) --------------------------------------------------------------------
_A = (3, 5)  # 15 tokens
_qkv = TOKENS + [nd("MatMul", ["t", "wq"], "q3"), nd("MatMul", ["t", "wk"], "k3"),
                 nd("MatMul", ["t", "wv"], "v3")]
_heads = [nd("Reshape", ["q3", "hs"], "q_"), nd("Transpose", ["q_"], "q", perm=[0, 2, 1, 3]),
          nd("Reshape", ["k3", "hs"], "k_"), nd("Transpose", ["k_"], "k", perm=[0, 2, 1, 3]),
          nd("Reshape", ["v3", "hs"], "v_"), nd("Transpose", ["v_"], "v", perm=[0, 2, 1, 3])]
_qkv_init = {**TOK, "wq": arr((C, 8), 220), "wk": arr((C, 8), 221), "wv": arr((C, 8), 222),
             "hs": i64(0, 0, 2, 4)}
_mask_bool = np.random.default_rng(223).random((15, 15)) > 0.4
_mask_bool[0] = False  # one query sees no key: its output row is 0
_ATT = (23, 24)
case("attention-4d", _ATT, _qkv + _heads + [nd("Attention", ["q", "k", "v"], "y")],
     inits=_qkv_init, hw=_A)
case("attention-4d-scale-softcap", 23,
     _qkv + _heads + [nd("Attention", ["q", "k", "v"], "y", scale=0.7, softcap=2.0)],
     inits=_qkv_init, hw=_A)
case("attention-causal", _ATT, _qkv + _heads + [nd("Attention", ["q", "k", "v"], "y", is_causal=1)],
     inits=_qkv_init, hw=_A)
case("attention-float-mask", 23, _qkv + _heads + [nd("Attention", ["q", "k", "v", "m"], "y")],
     inits={**_qkv_init, "m": arr((1, 2, 15, 15), 224)}, hw=_A)
case("attention-bool-mask-causal", _ATT,
     _qkv + _heads + [nd("Attention", ["q", "k", "v", "m"], "y", is_causal=1)],
     inits={**_qkv_init, "m": _mask_bool}, hw=_A)
case("attention-float-mask-infinite-row", 23,
     _qkv + _heads + [nd("Attention", ["q", "k", "v", "m"], "y")],
     inits={**_qkv_init, "m": np.where(_mask_bool, 0.0, -np.inf).astype(np.float32)}, hw=_A)
case("attention-3d-heads", _ATT,
     _qkv + [nd("Attention", ["q3", "k3", "v3"], "y", q_num_heads=2, kv_num_heads=2)],
     inits=_qkv_init, hw=_A)
case("attention-3d-grouped-query", 23,
     _qkv + [nd("MatMul", ["t", "wk2"], "k2"), nd("MatMul", ["t", "wv2"], "v2"),
             nd("Attention", ["q3", "k2", "v2"], "y", q_num_heads=4, kv_num_heads=2)],
     inits={**_qkv_init, "wk2": arr((C, 4), 225), "wv2": arr((C, 6), 226)}, hw=_A)
case("attention-4d-grouped-query-cross", 23,  # 2 key/value heads over 5 pooled tokens
     _qkv + [nd("Reshape", ["q3", "h4"], "q4_"), nd("Transpose", ["q4_"], "q4", perm=[0, 2, 1, 3]),
             nd("AveragePool", ["c"], "cp", kernel_shape=[3, 1]),
             nd("Reshape", ["cp", "tok_shape"], "p0"), nd("Transpose", ["p0"], "p", perm=[0, 2, 1]),
             nd("MatMul", ["p", "wk4"], "pk"), nd("Reshape", ["pk", "h2"], "pk_"),
             nd("Transpose", ["pk_"], "kk", perm=[0, 2, 1, 3]),
             nd("Attention", ["q4", "kk", "kk"], "y", is_causal=1)],
     inits={**_qkv_init, "h4": i64(0, 0, 4, 2), "h2": i64(0, 0, 2, 2), "wk4": arr((C, 4), 228)},
     hw=_A)
case("attention-softmax_precision", 23,
     _qkv + _heads + [nd("Attention", ["q", "k", "v"], "y", softmax_precision=1)],
     inits=_qkv_init, hw=_A)
# the exporters' decomposed attention: Q·Kᵀ (·scale or Q, K each ·√scale), + bias, Softmax, ·V
for _opset in (13, 17, 20):
    case("attention-decomposed", _opset,
         _qkv + _heads + [
             nd("Transpose", ["k"], "kt", perm=[0, 1, 3, 2]), nd("Mul", ["q", "rs"], "qs"),
             nd("Mul", ["kt", "rs"], "kts"), nd("MatMul", ["qs", "kts"], "s"),
             nd("Add", ["s", "bias"], "sb"), nd("Softmax", ["sb"], "a", axis=-1),
             nd("MatMul", ["a", "v"], "o"), nd("Transpose", ["o"], "o2", perm=[0, 2, 1, 3]),
             nd("Reshape", ["o2", "merge"], "y")],
         inits={**_qkv_init, "rs": f32(0.5 ** 0.5), "bias": arr((2, 15, 15), 227),
                "merge": i64(0, 0, 8)}, hw=_A)

# --- LayerNormalization -----------------------------------------------------------------------
_ln = {"s11": arr((11,), 230) + 1, "b11": arr((11,), 231)}
case("layernorm-tokens", (17, 21), TOKENS + [nd("LayerNormalization", ["t", "s4", "b4"], "y")],
     inits={**TOK, "s4": arr((C,), 232) + 1, "b4": arr((C,), 233)})
_normalised = {-1: (11,), 3: (11,), -2: (9, 11), 2: (9, 11), 1: (C, 9, 11), 0: (1, C, 9, 11)}
for _axis, _shape in _normalised.items():  # axis 0 normalises over the batch too
    case(f"layernorm-axis{_axis}", 17,
         [nd("LayerNormalization", ["c", "s", "b"], "y", axis=_axis, epsilon=1e-3)],
         inits={"s": arr(_shape, 234) + 1, "b": arr(_shape, 235)})
case("layernorm-no-bias-default-eps", (17, 21), [nd("LayerNormalization", ["c", "s11"], "y")],
     inits=_ln)
case("layernorm-broadcast-scale", 17,  # scale (1, 11) against the normalised shape (9, 11)
     [nd("LayerNormalization", ["c", "s", "b11"], "y", axis=2)],
     inits={"s": arr((1, 11), 236) + 1, "b11": _ln["b11"]})
case("layernorm-stash_type1-outputs", (17, 21),
     [nd("LayerNormalization", ["c", "s11", "b11"], ["y", "mean", "inv"], axis=-1,
         stash_type=1)], ["y", "mean", "inv"], inits=_ln)
case("layernorm-skipped-mean-output", 17,
     [nd("LayerNormalization", ["c", "s11", "b11"], ["y", "", "inv"])], ["y", "inv"], inits=_ln)
case("layernorm-float16", (17, 21),  # statistics in float32, y in float16
     [nd("Cast", ["c"], "h", to=F16), nd("Cast", ["s11"], "sh", to=F16),
      nd("LayerNormalization", ["h", "sh"], ["y", "mean", "inv"])],
     {"y": F16, "mean": F, "inv": F}, inits=_ln)
case("layernorm-double", 17,
     [nd("Cast", ["c"], "cd", to=F64), nd("Cast", ["s11"], "sd", to=F64),
      nd("LayerNormalization", ["cd", "sd"], "y")], {"y": F64}, inits=_ln)

# --- Softmax / LogSoftmax on token axes ---------------------------------------------------------
_five = [nd("Reshape", ["c", "s5"], "a5")]
for _op in ("Softmax", "LogSoftmax"):
    for _axis in (-1, 1, 2, 0):
        case(f"{_op}-tokens-axis{_axis}", (11, 13, 21), TOKENS + [nd(_op, ["t"], "y", axis=_axis)],
             inits=TOK)
    case(f"{_op}-tokens-default-axis", (11, 13), TOKENS + [nd(_op, ["t"], "y")], inits=TOK)
    for _axis in (2, -2, 4):
        case(f"{_op}-5d-axis{_axis}", (11, 13), _five + [nd(_op, ["a5"], "y", axis=_axis)],
             inits=_s5)

# --- Gelu / Erf, Equal / Where as exports use them ------------------------------------------------
case("gelu-erf-form", (13, 17),  # the legacy exporter's GELU: x·½·(1 + erf(x/√2))
     [nd("Div", ["c", "sqrt2"], "z"), nd("Erf", ["z"], "e"), nd("Add", ["e", "one"], "e1"),
      nd("Mul", ["c", "e1"], "g"), nd("Mul", ["g", "half"], "y")],
     inits={"sqrt2": f32(1.4142135), "one": f32(1.0), "half": f32(0.5)})
case("gelu-tanh-tokens", (20, 21), TOKENS + [nd("Gelu", ["t"], "y", approximate="tanh")], inits=TOK)
case("where-three-way-broadcast", (9, 13, 17),
     [nd("Greater", ["row", "zero"], "m"), nd("ReduceMean", ["c"], "cm", axes=[3]),
      nd("Where", ["m", "cm", "s"], "y")],
     inits={"row": arr((11,), 240), "zero": f32(0.0), "s": np.array(-1.5, np.float32)})
case("where-int64-shape-pattern", (11, 13, 17),  # Expand's shape: Where(Equal(s, −1), 1, s)
     [nd("Shape", ["c"], "s0"), nd("Concat", ["s0", "neg1"], "s", axis=0),
      nd("Equal", ["s", "neg1"], "eq"), nd("Where", ["eq", "one", "s"], "y")], {"y": I64},
     inits={"neg1": i64(-1), "one": i64(1)})
case("equal-bool-and-not", (11, 13),
     [nd("Greater", ["c", "zero"], "p"), nd("Less", ["c", "half"], "q"),
      nd("Equal", ["p", "q"], "e"), nd("Not", ["e"], "y")], {"y": B},
     inits={"zero": f32(0.0), "half": f32(0.5)})
case("equal-int-broadcast", (11, 13, 21),
     INTS + [nd("Equal", ["ci", "k"], "y")], {"y": B},
     inits={**INT_INIT, "k": i64(0, 1, -1, 2, -2, 3, -3, 0, 1, 4, -4)})


# ============================================================================================
# Tests
# ============================================================================================

CASE_IDS = [c.id for c in CASES]
assert len(CASE_IDS) == len(set(CASE_IDS)), "duplicate case ids"


@pytest.mark.parametrize("spec", CASES, ids=CASE_IDS)
def test_op_matches_onnxruntime(spec: Case):
    assert_matches_onnxruntime(spec)


@pytest.mark.parametrize("spec", REFERENCE_CASES, ids=[c.id for c in REFERENCE_CASES])
def test_op_matches_onnx_reference(spec: Case):
    assert_matches_onnx_reference(spec)


NEW_OPS = {"Attention", "Einsum", "GatherND", "Mod", "ScatterND", "Trilu"}


def test_every_new_op_is_covered():
    covered = {n.op_type for c in CASES + REFERENCE_CASES for n in c.nodes}
    assert NEW_OPS <= set(OPS) and NEW_OPS <= covered


# ============================================================================================
# Unsupported forms fail at Mirror(g) time, naming op type, node and opset
# ============================================================================================

_att_in = _qkv + _heads
UNSUPPORTED = [
    ("einsum-bad-label", 12, [nd("Einsum", ["c"], "y", equation="bc1w->bcw")], {}, "Einsum"),
    ("einsum-two-arrows", 12, [nd("Einsum", ["c"], "y", equation="bchw->b->c")], {}, "Einsum"),
    ("einsum-term-count", 12, [nd("Einsum", ["c", "c"], "y", equation="bchw->bc")], {}, "Einsum"),
    ("einsum-unknown-output-label", 12, [nd("Einsum", ["c"], "y", equation="bchw->bz")], {},
     "Einsum"),
    ("einsum-repeated-output-label", 12, [nd("Einsum", ["c"], "y", equation="bchw->bb")], {},
     "Einsum"),
    ("mod-fmod2", 13, [nd("Mod", ["c", "c"], "y", fmod=2)], {}, "Mod"),
    ("scatternd-reduction-too-new", 16,
     [nd("ScatterND", ["c", "idx", "c"], "y", reduction="max")], {"idx": i64(0).reshape(1, 1)},
     "ScatterND"),
    ("layernorm-stash_type0", 17, [nd("LayerNormalization", ["c", "s11"], "y", stash_type=0)],
     _ln, "LayerNormalization"),
    ("gelu-unknown-approximate", 20, [nd("Gelu", ["c"], "y", approximate="fast")], {}, "Gelu"),
    ("attention-past-key", 23,
     _att_in + [nd("Attention", ["q", "k", "v", "", "k", "v"], "y")], _qkv_init, "Attention"),
    ("attention-present-outputs", 23,
     _att_in + [nd("Attention", ["q", "k", "v"], ["y", "pk", "pv"])], _qkv_init, "Attention"),
    ("attention-qk-output", 23,
     _att_in + [nd("Attention", ["q", "k", "v"], ["y", "", "", "qk"])], _qkv_init, "Attention"),
    ("attention-sliding-window", 25,
     _att_in + [nd("Attention", ["q", "k", "v"], "y", left_window_size=2)], _qkv_init,
     "Attention"),
]


@pytest.mark.parametrize("id_,opset,nodes,inits,op", UNSUPPORTED, ids=[u[0] for u in UNSUPPORTED])
def test_unsupported_form_fails_at_load(id_, opset, nodes, inits, op):
    model = build(nodes, {"y": F}, opset, inits, hw=_A, shapes_from_ort=False)
    with pytest.raises(UnsupportedModelError) as info:
        Mirror(load_graph(model))
    message = str(info.value)
    node = next(n for n in nodes if n.op_type == op)
    assert op in message and repr(node.name) in message and f"opset {opset}" in message, message


@pytest.mark.parametrize("equation", ["...c...->c", "b.c->b", "b..c->b", "bc->...b", "b c-d"])
def test_malformed_einsum_equation_is_refused(equation):
    """Checked on the parser itself: ONNX's shape inference loops forever on stray dots, so these
    cannot go through a graph."""
    with pytest.raises(ValueError):
        parse_equation(equation)


def test_einsum_implicit_output_order():
    """Ellipsis axes first, then once-only labels in ASCII order (upper case first)."""
    assert parse_equation("bChw,CD").output == "Dbhw"
    assert parse_equation("ij...,jk").output == "...ik"
    assert parse_equation("ii").output == ""
    assert parse_equation(" a b , b c ").torch_form() == "ab,bc->ac"


@pytest.mark.parametrize("id_,opset,nodes,inits", [
    ("scatternd-repeated-none", 16,
     _chw + _upd + [nd("ScatterND", ["d", "idx", "upd"], "y")],
     {**_upd_init, "idx": i64(1, 2, 1, 2, 3, 3, 1, 2, 3, 3).reshape(5, 2)}),
    ("gathernd-out-of-range", 13, _chw + [nd("GatherND", ["d", "idx"], "y")],
     {"idx": i64(4).reshape(1, 1)}),
    ("gathernd-below-range", 13, _chw + [nd("GatherND", ["d", "idx"], "y")],
     {"idx": i64(-5).reshape(1, 1)}),
    ("attention-mask-shorter-than-keys", 24,
     _att_in + [nd("Attention", ["q", "k", "v", "m"], "y")], {**_qkv_init, "m": arr((15, 3), 229)}),
    ("attention-mask-broadcast-over-keys", 24,
     _att_in + [nd("Attention", ["q", "k", "v", "m"], "y")], {**_qkv_init, "m": arr((15, 1), 229)}),
], ids=lambda v: v if isinstance(v, str) else "")
def test_undefined_inputs_fail_at_run(id_, opset, nodes, inits):
    """Repeated ScatterND indices without a reduction (undefined in ONNX), indices out of range
    and attention masks not as long as the keys (errors in ONNX Runtime) are refused with an
    error naming the node, never a number."""
    hw = _A if any(n.op_type == "Attention" for n in nodes) else (9, 11)
    model = build(nodes, {"y": F}, opset, inits, hw=hw, shapes_from_ort=False)
    mirror = Mirror(load_graph(model))
    node = next(n for n in nodes if n.op_type in ("ScatterND", "GatherND", "Attention"))
    with pytest.raises(UnsupportedModelError, match=repr(node.name)), torch.no_grad():
        mirror(torch.from_numpy(image((2, 3) + hw)), ["y"])


# ============================================================================================
# Gradients: autograd through the mirror against central finite differences (float64)
# ============================================================================================

_GRAD_GRAPHS = {
    "einsum-trilu": (14, _five_d + [
        nd("Einsum", ["a5", "b5"], "s", equation="B G H I D, B G H J D -> B G H I J"),
        nd("Trilu", ["s"], "st", upper=0),
        nd("Einsum", ["st", "b5"], "y", equation="bghij,bghjd->bghid")],
        {"s5": i64(0, 2, 2, 3, 5)}),
    "attention": (23, _qkv + _heads + [nd("Attention", ["q", "k", "v", "m"], "y", is_causal=1,
                                          softcap=3.0)], {**_qkv_init, "m": arr((15, 15), 250)}),
    "attention-masked-row": (24, _qkv + _heads + [nd("Attention", ["q", "k", "v", "m"], "y")],
                             {**_qkv_init, "m": _mask_bool}),  # query 0 sees no key: no NaN
    "gather-scatter": (18, _chw + _upd + [
        nd("ScatterND", ["d", "idx", "upd"], "sc", reduction="mul"),
        nd("ScatterND", ["sc", "idx", "upd"], "sa", reduction="add"),
        nd("GatherND", ["sa", "gidx"], "y", batch_dims=1)],
        {**_upd_init, "us": i64(3, 5, -1), "s1": i64(1, 3),
         "idx": i64(0, 0, 1, 2, 3, 1).reshape(3, 2),
         "gidx": (np.arange(24, dtype=np.int64).reshape(4, 3, 2) % 3)}),
    "layernorm-softmax-mod": (17, TOKENS + [
        nd("LayerNormalization", ["t", "s4", "b4"], "ln"), nd("Softmax", ["ln"], "sm", axis=1),
        nd("Mod", ["ln", "d"], "y", fmod=1)],
        {**TOK, "s4": arr((C,), 251) + 1, "b4": arr((C,), 252), "d": f32(0.7, -0.9, 1.1, -1.3)}),
}


@pytest.mark.parametrize("kind", list(_GRAD_GRAPHS))
def test_gradient_matches_finite_differences(kind):
    opset, nodes, inits = _GRAD_GRAPHS[kind]
    model = build(nodes, {"y": F}, opset, inits, hw=_A)
    onnx.checker.check_model(model, full_check=True)
    mirror = Mirror(load_graph(model)).double()
    x = torch.from_numpy(arr((2, 3) + _A, 7, 1.0)).double()
    with torch.no_grad():
        c0 = mirror(x, ["c"])["c"]
        weights = torch.from_numpy(arr(tuple(mirror(x, ["y"])["y"].shape), 8, 1.0)).double()

    def score(c: torch.Tensor) -> torch.Tensor:
        return (mirror(x, ["y"], overrides={"c": c})["y"] * weights).sum()

    c = c0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(score(c), [c])
    assert grad.dtype == torch.float64 and grad.abs().max() > 0
    h = 1e-6
    numeric = torch.zeros_like(c0).view(-1)
    with torch.no_grad():
        for i in range(c0.numel()):
            e = torch.zeros_like(c0).view(-1)
            e[i] = h
            e = e.view_as(c0)
            numeric[i] = (score(c0 + e) - score(c0 - e)) / (2 * h)
    # 1e-6 of the gradient's scale: float64 central differences of smooth (or, for Mod and
    # Trilu, piecewise-linear away from their jumps) functions err by O(h²) ≈ 1e-12.
    np.testing.assert_allclose(numeric.view_as(c0).numpy(), grad.numpy(),
                               atol=1e-6 * float(grad.abs().max()), rtol=1e-6)
