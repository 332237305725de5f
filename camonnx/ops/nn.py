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
    """ONNX ConvTranspose, with ONNX Runtime's placement of the output window.

    The full transposed convolution has ``(i − 1)·s + (k − 1)·d + 1`` cells per axis, plus
    ``output_padding`` cells at the end that no input reaches (bias only). The output is that
    window cropped by ``pads`` (begin, end). With ``output_shape`` (or ``auto_pad=SAME_*``, whose
    target is ``i·s``) the total padding is ``full − target``: SAME_UPPER puts ``total//2`` at
    the begin, otherwise (NOTSET, SAME_LOWER) ``total − total//2``, as the ONNX spec states.
    Without ``output_shape``, SAME_UPPER puts ``total//2`` at the begin and SAME_LOWER the rest.
    A negative total from ``output_shape`` (a target larger than the full output, which ONNX
    Runtime allows within one stride) extends the end with bias-only cells; for SAME without
    ``output_shape`` ONNX Runtime clamps the total at 0 (output = full, not ``i·s``) and so does
    the mirror. torch's ``output_padding < stride`` limit is
    avoided by padding the bias-free result ourselves and adding the bias last.
    """
    n = w.dim() - 2
    group = int(node.attr("group", 1))
    kernel = list(w.shape[2:])
    strides = _ints(node, "strides", n, 1)
    dilations = _ints(node, "dilations", n, 1)
    output_padding = _ints(node, "output_padding", n, 0)
    in_sizes = list(x.shape[2:])
    full = [(i - 1) * s + (k - 1) * d + 1 + op
            for i, s, k, d, op in zip(in_sizes, strides, kernel, dilations, output_padding)]
    output_shape = node.attr("output_shape")
    auto_pad = node.attr("auto_pad", "NOTSET")
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if output_shape is not None:
            target = [int(v) for v in output_shape][-n:]
        else:  # ORT never extends a SAME output (kernel < stride): the total is at least 0
            target = [min(i * s, f) for i, s, f in zip(in_sizes, strides, full)]
        upper = auto_pad == "SAME_UPPER"
        begins, ends = [], []
        for f, t in zip(full, target):
            total = f - t
            if total < 0:
                begins.append(0)
                ends.append(total)
                continue
            first = total // 2 if upper else total - total // 2
            begins.append(first)
            ends.append(total - first)
    elif auto_pad == "VALID":
        begins, ends = [0] * n, [0] * n
    else:
        pads = _ints(node, "pads", 2 * n, 0)
        begins, ends = pads[:n], pads[n:]
    y = _CONV_T[n](x, w, None, strides, 0, 0, group, dilations)
    # F.pad crops with negative amounts: (−begin) at the front, (output_padding − end) at the back
    y = F.pad(y, _torch_pad([-v for v in begins] + [op - e for op, e in zip(output_padding, ends)]))
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * n)
    return y


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
    [c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉] clipped to the channels, as ONNX states (torch's own
    LRN centres even windows the other way)."""
    size = int(node.attr("size"))
    alpha = float(node.attr("alpha", 1e-4))
    beta = float(node.attr("beta", 0.75))
    bias = float(node.attr("bias", 1.0))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = (x * x).reshape(x.shape[0], 1, x.shape[1], -1)  # (N, 1, C, rest)
    sq = F.pad(sq, [0, 0, lo, hi])
    window_sum = F.avg_pool2d(sq, (size, 1), stride=1, divisor_override=1).reshape(x.shape)
    return x / (bias + alpha / size * window_sum) ** beta


def _check_pool(node: Node, constants) -> None:
    _check_auto_pad(node, constants)
    if node.op_type == "MaxPool" and len(node.outputs) > 1 and node.outputs[1]:
        raise node.unsupported("Indices output")
    if node.attr("kernel_shape") is None:
        raise node.unsupported("missing kernel_shape")


def _pool_geometry(node: Node, x):
    """Kernel, strides, dilations, ONNX pads, and the extra end padding that makes a floor-mode
    pool produce ONNX's output size.

    ONNX (and ONNX Runtime) output size per axis: ``⌊(i + pb + pe − ((k−1)·d + 1)) / s⌋ + 1``, or
    with ``ceil_mode`` the ceiling, minus one if that last window would start at or past
    ``i + pb`` (inside the end padding), as ORT and torch both drop such a window. The windows a
    ceil-mode output adds beyond the padded input read only "missing" cells (never counted).
    """
    kernel = [int(k) for k in node.attr("kernel_shape")]
    n = len(kernel)
    strides = _ints(node, "strides", n, 1)
    dilations = _ints(node, "dilations", n, 1)
    pads = _resolve_pads(node, x, kernel, strides, dilations)
    ceil_mode = bool(node.attr("ceil_mode", 0))
    extra = []
    for i, (size, k, s, d) in enumerate(zip(x.shape[2:], kernel, strides, dilations)):
        span = size + pads[i] + pads[i + n]
        reach = (k - 1) * d + 1
        out = (span - reach) // s + 1
        if ceil_mode:
            out = -(-(span - reach) // s) + 1
            if (out - 1) * s >= size + pads[i]:
                out -= 1
        extra.append(max((out - 1) * s + reach - span, 0))
    return kernel, strides, dilations, pads, extra


def _pool_pad(pads, extra) -> list[int]:
    n = len(extra)
    return _torch_pad(list(pads[:n]) + [e + x for e, x in zip(pads[n:], extra)])


@register("MaxPool", check=_check_pool)
def max_pool(node: Node, x):
    kernel, strides, dilations, pads, extra = _pool_geometry(node, x)
    if any(pads) or any(extra):
        x = F.pad(x, _pool_pad(pads, extra), value=float("-inf"))
    return _MAX_POOL[len(kernel)](x, kernel, strides, 0, dilations)


@register("AveragePool", check=_check_pool)
def average_pool(node: Node, x):
    """Window sum divided by the window's cells inside the padded input (count_include_pad=1)
    or inside the original input (count_include_pad=0), as ONNX Runtime counts them; cells that
    only ceil_mode adds are never counted. Dilations (opset 19) spread the window."""
    kernel, strides, dilations, pads, extra = _pool_geometry(node, x)
    n = len(kernel)
    if not any(pads) and not any(extra) and all(d == 1 for d in dilations):
        return _AVG_POOL[n](x, kernel, strides, 0)
    include_pad = bool(node.attr("count_include_pad", 0))
    ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    valid = F.pad(ones, _torch_pad(pads), value=1.0 if include_pad else 0.0)
    valid = F.pad(valid, _torch_pad([0] * n + list(extra)))
    padded = F.pad(x, _pool_pad(pads, extra))
    channels = x.shape[1]
    box = torch.ones((channels, 1) + tuple(kernel), dtype=x.dtype, device=x.device)
    sums = _CONV[n](padded, box, None, strides, 0, dilations, channels)
    counts = _CONV[n](valid, box[:1], None, strides, 0, dilations, 1)
    return sums / counts.clamp_min(1.0)


def _check_layer_norm(node: Node, constants) -> None:
    if int(node.attr("stash_type", 1)) != 1:  # ONNX Runtime implements no other either
        raise node.unsupported(f"stash_type={node.attr('stash_type')}")


@register("LayerNormalization", check=_check_layer_norm)
def layer_norm(node: Node, x, scale, bias=None):
    """``y = (x − μ) / √(σ² + ε) · scale + bias`` with μ and the biased variance σ² over the axes
    ``axis…rank−1`` (default −1), ``scale`` and the optional ``bias`` broadcast against ``x``.

    ``stash_type=1``: the statistics are computed in float32 at least (float16/bfloat16 inputs
    are upcast, ``y`` cast back), as ONNX Runtime does. The optional outputs Mean and InvStdDev
    keep the normalised axes as size 1 and have that computation type (ONNX Runtime returns
    them in float32 for a float64 input too; the mirror keeps float64 there, so that its float64
    twin stays float64 throughout)."""
    axis = int(node.attr("axis", -1))
    axis = axis + x.dim() if axis < 0 else axis
    dims = tuple(range(axis, x.dim()))
    compute = torch.promote_types(x.dtype, torch.float32)
    xc = x.to(compute)
    mean = xc.mean(dim=dims, keepdim=True)
    centred = xc - mean
    inv_std = torch.rsqrt((centred * centred).mean(dim=dims, keepdim=True)
                          + float(node.attr("epsilon", 1e-5)))
    y = centred * inv_std * scale.to(compute)
    if bias is not None:
        y = y + bias.to(compute)
    y = y.to(x.dtype)
    if len(node.outputs) > 1:
        return y, mean, inv_std
    return y


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
    """Inference: identity. The optional mask output follows ONNX Runtime, the runtime the mirror
    must agree with: before opset 12 ORT fills it with zeros (type T at opset < 10, bool after),
    from opset 12 with True (nothing dropped, as the ONNX reference does)."""
    if len(node.outputs) > 1 and node.outputs[1]:
        if node.opset >= 12:
            return x, torch.ones_like(x, dtype=torch.bool)
        return x, torch.zeros_like(x, dtype=torch.bool if node.opset >= 10 else x.dtype)
    return x
