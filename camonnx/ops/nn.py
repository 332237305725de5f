"""Neural-network ONNX operators: convolutions, normalisations, pools, dense layers, dropout."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from camonnx.ops import Node, register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _ints(node: Node, key: str, n: int, default: int) -> list[int]:
    value = node.attr(key)
    return [default] * n if value is None else [int(v) for v in value]


def _same_pads(in_sizes, kernel, strides, dilations, upper: bool) -> list[int]:
    """ONNX ``auto_pad=SAME_UPPER/SAME_LOWER`` pads, in ONNX order (begins…, ends…)."""
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return begins + ends


def _resolve_pads(node: Node, x, kernel, strides, dilations) -> list[int]:
    n = len(kernel)
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(x.shape[2:], kernel, strides, dilations, auto_pad == "SAME_UPPER")
    if auto_pad == "VALID":
        return [0] * (2 * n)
    return _ints(node, "pads", 2 * n, 0)


def _torch_pad(pads: Sequence[int]) -> list[int]:
    """ONNX (b1, b2, …, e1, e2, …) → torch F.pad order (last dim first: b_n, e_n, …)."""
    n = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(n)):
        out += [pads[i], pads[i + n]]
    return out


def _check_auto_pad(node: Node, constants) -> None:
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise node.unsupported(f"auto_pad={auto_pad!r}")


@register("Conv", check=_check_auto_pad)
def conv(node: Node, x, w, b=None):
    n = w.dim() - 2
    kernel = list(w.shape[2:])
    strides = _ints(node, "strides", n, 1)
    dilations = _ints(node, "dilations", n, 1)
    pads = _resolve_pads(node, x, kernel, strides, dilations)
    begins, ends = pads[:n], pads[n:]
    if begins == ends:
        padding = begins
    else:
        x = F.pad(x, _torch_pad(pads))
        padding = [0] * n
    return _CONV[n](x, w, b, strides, padding, dilations, int(node.attr("group", 1)))


@register("ConvTranspose", check=_check_auto_pad)
def conv_transpose(node: Node, x, w, b=None):
    n = w.dim() - 2
    group = int(node.attr("group", 1))
    kernel = list(w.shape[2:])
    strides = _ints(node, "strides", n, 1)
    dilations = _ints(node, "dilations", n, 1)
    output_padding = _ints(node, "output_padding", n, 0)
    in_sizes = list(x.shape[2:])
    full = [(i - 1) * s + ((k - 1) * d + 1) + op
            for i, s, k, d, op in zip(in_sizes, strides, kernel, dilations, output_padding)]
    output_shape = node.attr("output_shape")
    auto_pad = node.attr("auto_pad", "NOTSET")
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = ([int(v) for v in output_shape][-n:] if output_shape is not None
                  else [i * s for i, s in zip(in_sizes, strides)])
        begins, ends = [], []
        for f, t in zip(full, target):
            total = f - t
            # ONNX: SAME_UPPER (the default when output_shape is given) puts the extra at the end.
            first = total // 2 if auto_pad != "SAME_LOWER" else total - total // 2
            begins.append(first)
            ends.append(total - first)
    elif auto_pad == "VALID":
        begins, ends = [0] * n, [0] * n
    else:
        pads = _ints(node, "pads", 2 * n, 0)
        begins, ends = pads[:n], pads[n:]
    y = _CONV_T[n](x, w, b, strides, 0, output_padding, group, dilations)
    slices = [slice(None), slice(None)]
    for size, bgn, end in zip(y.shape[2:], begins, ends):
        slices.append(slice(bgn, size - end))
    return y[tuple(slices)]


def _check_batch_norm(node: Node, constants) -> None:
    if node.attr("training_mode", 0):
        raise node.unsupported("training_mode=1")
    if sum(1 for o in node.outputs if o) > 1:
        raise node.unsupported("running-statistics outputs (training mode)")
    if node.opset < 9 and node.attr("spatial", 1) != 1:
        raise node.unsupported("spatial=0")


@register("BatchNormalization", check=_check_batch_norm)
def batch_norm(node: Node, x, scale, bias, mean, var):
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, float(node.attr("epsilon", 1e-5)))


@register("InstanceNormalization")
def instance_norm(node: Node, x, scale, bias):
    return F.instance_norm(x, weight=scale, bias=bias, eps=float(node.attr("epsilon", 1e-5)))


@register("LRN")
def lrn(node: Node, x):
    """y = x / (bias + alpha/size · Σ_{c' in window} x_{c'}²)^beta, window
    [c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉] as ONNX states (torch's own LRN centres even windows
    the other way)."""
    size = int(node.attr("size"))
    alpha = float(node.attr("alpha", 1e-4))
    beta = float(node.attr("beta", 0.75))
    bias = float(node.attr("bias", 1.0))
    sq = (x * x).unsqueeze(1)  # (N, 1, C, …)
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    pad = [0, 0] * (x.dim() - 2) + [lo, hi]
    sq = F.pad(sq, pad)
    window_sum = F.avg_pool3d(sq.flatten(3), (size, 1, 1), stride=1).reshape(x.shape) * size
    return x / (bias + alpha / size * window_sum) ** beta


def _check_pool(node: Node, constants) -> None:
    _check_auto_pad(node, constants)
    if node.op_type == "MaxPool" and len(node.outputs) > 1 and node.outputs[1]:
        raise node.unsupported("Indices output")
    if node.op_type == "AveragePool" and any(d != 1 for d in node.attr("dilations", [1])):
        raise node.unsupported("dilations")


def _pool_geometry(node: Node, x):
    kernel = [int(k) for k in node.attr("kernel_shape")]
    n = len(kernel)
    strides = _ints(node, "strides", n, 1)
    dilations = _ints(node, "dilations", n, 1)
    pads = _resolve_pads(node, x, kernel, strides, dilations)
    return kernel, strides, dilations, pads, bool(node.attr("ceil_mode", 0))


@register("MaxPool", check=_check_pool)
def max_pool(node: Node, x):
    kernel, strides, dilations, pads, ceil_mode = _pool_geometry(node, x)
    n = len(kernel)
    if any(pads):
        x = F.pad(x, _torch_pad(pads), value=float("-inf"))
    return _MAX_POOL[n](x, kernel, strides, 0, dilations, ceil_mode=ceil_mode)


@register("AveragePool", check=_check_pool)
def average_pool(node: Node, x):
    """Window sum divided by the window's cells inside the padded input (count_include_pad=1)
    or inside the original input (count_include_pad=0), as ONNX Runtime counts them."""
    kernel, strides, _, pads, ceil_mode = _pool_geometry(node, x)
    n = len(kernel)
    include_pad = bool(node.attr("count_include_pad", 0))
    if not any(pads) and not ceil_mode:
        return _AVG_POOL[n](x, kernel, strides, 0)
    tp = _torch_pad(pads)
    padded = F.pad(x, tp)
    ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    valid = F.pad(ones, tp, value=1.0 if include_pad else 0.0)
    sums = _window_sum(padded, kernel, strides, ceil_mode)
    counts = _window_sum(valid, kernel, strides, ceil_mode)
    return sums / counts.clamp_min(1.0)


def _window_sum(x, kernel, strides, ceil_mode):
    """Exact window sums (partial ceil-mode windows sum only the cells that exist)."""
    if x.dim() == 3:
        return _window_sum(x.unsqueeze(2), [1] + list(kernel), [1] + list(strides), ceil_mode).squeeze(2)
    pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
    return pool(x, kernel, strides, 0, ceil_mode=ceil_mode, divisor_override=1)


@register("GlobalAveragePool")
def global_average_pool(node: Node, x):
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@register("GlobalMaxPool")
def global_max_pool(node: Node, x):
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


@register("Gemm")
def gemm(node: Node, a, b, c=None):
    if node.attr("transA", 0):
        a = a.t()
    if node.attr("transB", 0):
        b = b.t()
    y = torch.matmul(a, b)
    alpha = float(node.attr("alpha", 1.0))
    if alpha != 1.0:
        y = alpha * y
    if c is not None:
        beta = float(node.attr("beta", 1.0))
        y = y + (beta * c if beta != 1.0 else c)
    return y


@register("MatMul")
def matmul(node: Node, a, b):
    return torch.matmul(a, b)


def _check_dropout(node: Node, constants) -> None:
    if node.opset >= 12 and len(node.inputs) > 2 and node.inputs[2]:
        mode = constants.get(node.inputs[2])
        if mode is None or bool(mode):
            raise node.unsupported("training_mode input that is not a constant False")


@register("Dropout", check=_check_dropout)
def dropout(node: Node, x, *_):
    """Inference: identity; the optional mask output is all ones (nothing dropped)."""
    if len(node.outputs) > 1 and node.outputs[1]:
        return x, torch.ones_like(x, dtype=torch.bool)
    return x
