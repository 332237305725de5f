"""Torch implementations of ONNX operators for the mirror, registered by op type.

Each operator is a function ``fn(node, *inputs) -> Tensor | tuple[Tensor, ...]`` where ``node`` is a
:class:`Node` (attributes already decoded, opset of the default domain) and ``inputs`` are torch
tensors in the node's input order (``None`` for an omitted optional input). An optional
``check(node, constants)`` runs at load time, before any compute, and raises
:class:`~camonnx.errors.UnsupportedModelError` for an attribute or input form the function does not
implement, so that an unsupported model fails up front instead of giving a wrong number.
``constants`` maps tensor names to numpy arrays of the initializers and Constant outputs known at
load time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from camonnx.errors import UnsupportedModelError


@dataclass(frozen=True)
class Node:
    """One ONNX node, decoded once at load time."""

    op_type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    opset: int = 13
    domain: str = ""

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def describe(self) -> str:
        return f"{self.op_type} node {self.name!r} (opset {self.opset})"

    def unsupported(self, what: str) -> UnsupportedModelError:
        return UnsupportedModelError(
            f"Unsupported {what} in {self.describe()}. camonnx's torch mirror cannot compute this "
            "model faithfully; re-export the model without it or open an issue with the model."
        )


OpFn = Callable[..., Any]
CheckFn = Callable[[Node, Mapping[str, np.ndarray]], None]


@dataclass(frozen=True)
class OpSpec:
    fn: OpFn
    check: CheckFn | None = None


OPS: dict[str, OpSpec] = {}


def register(*op_types: str, check: CheckFn | None = None) -> Callable[[OpFn], OpFn]:
    """Register ``fn`` as the torch implementation of the given ONNX op types."""

    def deco(fn: OpFn) -> OpFn:
        for op_type in op_types:
            OPS[op_type] = OpSpec(fn, check)
        return fn

    return deco


def lookup(node: Node, constants: Mapping[str, np.ndarray]) -> OpSpec:
    """The implementation of ``node``, after its load-time check; raise if unsupported."""
    if node.domain not in ("", "ai.onnx"):
        raise UnsupportedModelError(
            f"Unsupported operator {node.domain}.{node.op_type} in node {node.name!r} (model "
            f"opset {node.opset}): camonnx's mirror implements the standard ONNX domain only. "
            "Re-export without custom ops."
        )
    spec = OPS.get(node.op_type)
    if spec is None:
        raise UnsupportedModelError(
            f"Unsupported operator {node.op_type} in node {node.name!r} (opset {node.opset}). "
            f"camonnx's torch mirror implements: {', '.join(sorted(OPS))}."
        )
    if spec.check is not None:
        spec.check(node, constants)
    return spec


# Importing the modules registers their operators.
from camonnx.ops import attention, einsum, elementwise, indexing, nn, tensor  # noqa: E402,F401
