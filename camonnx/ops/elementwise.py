"""Elementwise ONNX operators: arithmetic, comparisons and activations."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from camonnx.ops import Node, register


def _float_default(node: Node, key: str, default: float) -> float:
    return float(node.attr(key, default))


# --- arithmetic ------------------------------------------------------------------------------

@register("Add")
def add(node: Node, a, b):
    return a + b


@register("Sub")
def sub(node: Node, a, b):
    return a - b


@register("Mul")
def mul(node: Node, a, b):
    return a * b


@register("Div")
def div(node: Node, a, b):
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


@register("Pow")
def pow_(node: Node, a, b):
    """Pow; the result has the base's type. An integer base with a float exponent is computed in
    float64 and truncated toward zero, as ONNX Runtime does (``static_cast<T>(std::pow(…))``)."""
    if b.dtype == a.dtype:
        return torch.pow(a, b)
    if not a.is_floating_point() and b.is_floating_point():
        return torch.pow(a.double(), b.double()).to(a.dtype)
    return torch.pow(a, b.to(a.dtype))


def _check_mod(node: Node, constants) -> None:
    if int(node.attr("fmod", 0)) not in (0, 1):
        raise node.unsupported(f"fmod={node.attr('fmod')}")


@register("Mod", check=_check_mod)
def mod(node: Node, a, b):
    """Remainder of ``a / b``. ``fmod=1``: ``a − trunc(a/b)·b`` (C's fmod), with the sign of the
    dividend; ``fmod=0``: ``a − ⌊a/b⌋·b``, with the sign of the divisor (Python's ``%``), a zero
    result included (+0 or −0 as the divisor's sign). Floats with ``fmod=0`` are defined from
    opset 28 (ONNX Runtime refuses them before); the mirror computes that definition at any
    opset, as the ONNX reference implementation does."""
    if int(node.attr("fmod", 0)):
        return torch.fmod(a, b)
    out = torch.remainder(a, b)
    if out.is_floating_point():
        out = torch.where(out == 0, torch.copysign(torch.zeros_like(out), b), out)
    return out


@register("Sum")
def sum_(node: Node, *xs):
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


@register("Mean")
def mean_(node: Node, *xs):
    return sum_(node, *xs) / len(xs)


@register("Max")
def max_(node: Node, *xs):
    out = xs[0]
    for x in xs[1:]:
        out = torch.maximum(out, x)
    return out


@register("Min")
def min_(node: Node, *xs):
    out = xs[0]
    for x in xs[1:]:
        out = torch.minimum(out, x)
    return out


_UNARY = {
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Sqrt": torch.sqrt,
    "Exp": torch.exp,
    "Log": torch.log,
    "Reciprocal": torch.reciprocal,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Erf": torch.erf,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Relu": torch.relu,
    "Softsign": F.softsign,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Not": torch.logical_not,
    "Sign": torch.sign,
}


def _unary(fn):
    return lambda node, x: fn(x)


for _name, _fn in _UNARY.items():
    register(_name)(_unary(_fn))


@register("Round")
def round_(node: Node, x):
    return torch.round(x)  # round half to even, as ONNX specifies


_COMPARE = {
    "Equal": torch.eq,
    "Less": torch.lt,
    "LessOrEqual": torch.le,
    "Greater": torch.gt,
    "GreaterOrEqual": torch.ge,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
}


def _binary(fn):
    return lambda node, a, b: fn(a, b)


for _name, _fn in _COMPARE.items():
    register(_name)(_binary(_fn))


@register("Where")
def where(node: Node, cond, a, b):
    return torch.where(cond.bool(), a, b)


# --- activations -----------------------------------------------------------------------------

@register("LeakyRelu")
def leaky_relu(node: Node, x):
    return F.leaky_relu(x, _float_default(node, "alpha", 0.01))


@register("PRelu")
def prelu(node: Node, x, slope):
    return torch.where(x < 0, slope * x, x)


@register("Elu")
def elu(node: Node, x):
    return F.elu(x, _float_default(node, "alpha", 1.0))


@register("Selu")
def selu(node: Node, x):
    alpha = _float_default(node, "alpha", 1.67326319217681884765625)
    gamma = _float_default(node, "gamma", 1.05070102214813232421875)
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


@register("Celu")
def celu(node: Node, x):
    return F.celu(x, _float_default(node, "alpha", 1.0))


@register("Softplus")
def softplus(node: Node, x):
    return F.softplus(x)


@register("HardSigmoid")
def hard_sigmoid(node: Node, x):
    alpha = _float_default(node, "alpha", 0.2)
    beta = _float_default(node, "beta", 0.5)
    return torch.clamp(alpha * x + beta, 0.0, 1.0)


@register("HardSwish")
def hard_swish(node: Node, x):
    return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


@register("Mish")
def mish(node: Node, x):
    return x * torch.tanh(F.softplus(x))


def _check_gelu(node: Node, constants) -> None:
    if node.attr("approximate", "none") not in ("none", "tanh"):
        raise node.unsupported(f"approximate={node.attr('approximate')!r}")


@register("Gelu", check=_check_gelu)
def gelu(node: Node, x):
    return F.gelu(x, approximate=node.attr("approximate", "none"))


@register("ThresholdedRelu")
def thresholded_relu(node: Node, x):
    alpha = _float_default(node, "alpha", 1.0)
    return torch.where(x > alpha, x, torch.zeros_like(x))


@register("Clip")
def clip(node: Node, x, lo=None, hi=None):
    if node.opset < 11:
        lo = node.attr("min", -math.inf)
        hi = node.attr("max", math.inf)
        return torch.clamp(x, float(lo), float(hi))
    if lo is not None:
        x = torch.maximum(x, lo.to(x.dtype))
    if hi is not None:
        x = torch.minimum(x, hi.to(x.dtype))
    return x


def _coerced_softmax(node: Node, x, fn):
    """Softmax/LogSoftmax; before opset 13 the input is coerced to 2-D at ``axis`` (default 1)."""
    if node.opset >= 13:
        return fn(x, dim=int(node.attr("axis", -1)))
    axis = int(node.attr("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    shape = x.shape
    flat = x.reshape(int(math.prod(shape[:axis])), -1)
    return fn(flat, dim=1).reshape(shape)


@register("Softmax")
def softmax(node: Node, x):
    return _coerced_softmax(node, x, torch.softmax)


@register("LogSoftmax")
def log_softmax(node: Node, x):
    return _coerced_softmax(node, x, torch.log_softmax)
