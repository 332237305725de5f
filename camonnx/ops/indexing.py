"""ONNX GatherND and ScatterND: reading and writing slices addressed by index tuples.

Both address ``data`` by the last axis of ``indices``: a row ``(i_1, …, i_k)`` of it names the
slice ``data[i_1, …, i_k, ...]`` (after GatherND's ``batch_dims`` leading axes, which ``data`` and
``indices`` share). Negative indices count from the end; any index outside ``[−s, s − 1]`` is an
error, as in ONNX Runtime. Each tuple is turned into one linear index over the addressed axes, so
both ops become a single gather or scatter over one axis, which autograd differentiates.
"""

from __future__ import annotations

import math

import torch

from camonnx.ops import Node, register


def _linear_index(node: Node, indices: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``Σ_j i_j · Π_{l>j} dims_l`` over the last axis of ``indices`` (negatives wrapped)."""
    idx = indices.long()
    sizes = torch.tensor(dims, dtype=torch.long, device=idx.device)
    bad = (idx < -sizes) | (idx >= sizes)
    if bool(bad.any()):
        raise ValueError(f"{node.op_type} index {int(idx[bad][0])} out of range for axes of "
                         f"sizes {list(dims)} (an invalid model or input)")
    idx = torch.where(idx < 0, idx + sizes, idx)
    strides = [math.prod(dims[j + 1:]) for j in range(len(dims))]
    return (idx * torch.tensor(strides, dtype=torch.long, device=idx.device)).sum(-1)


@register("GatherND")
def gather_nd(node: Node, data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``y[b, m] = data[b, (*indices[b, m])]``; shape ``indices.shape[:-1] + data.shape[b+k:]``
    for ``b = batch_dims`` and ``k = indices.shape[-1]``."""
    b = int(node.attr("batch_dims", 0))
    k = indices.shape[-1]
    if b >= min(data.dim(), indices.dim()) or k > data.dim() - b or \
            tuple(indices.shape[:b]) != tuple(data.shape[:b]):
        raise ValueError(f"GatherND of data {tuple(data.shape)} by indices {tuple(indices.shape)} "
                         f"with batch_dims={b}: the shapes do not fit")
    batch, dims, tail = data.shape[:b], tuple(data.shape[b:b + k]), tuple(data.shape[b + k:])
    n_batch = math.prod(batch)
    lin = _linear_index(node, indices, dims).reshape(n_batch, -1)
    flat = data.reshape((n_batch, math.prod(dims)) + tail)
    rows = torch.arange(n_batch, device=data.device).unsqueeze(1)
    return flat[rows, lin].reshape(tuple(indices.shape[:-1]) + tail)


_SCATTER_REDUCTIONS = {"none": 11, "add": 16, "mul": 16, "max": 18, "min": 18}
_SCATTER_REDUCE = {"mul": "prod", "max": "amax", "min": "amin"}


def _check_scatter_nd(node: Node, constants) -> None:
    reduction = node.attr("reduction", "none")
    if node.opset < _SCATTER_REDUCTIONS.get(reduction, 10 ** 9):
        raise node.unsupported(f"reduction={reduction!r}")


@register("ScatterND", check=_check_scatter_nd)
def scatter_nd(node: Node, data: torch.Tensor, indices: torch.Tensor,
               updates: torch.Tensor) -> torch.Tensor:
    """A copy of ``data`` with ``y[(*indices[m])] = updates[m]`` (``reduction='none'``), or that
    slice combined with the update by ``+``, ``·``, max or min (in index order; for ``none``
    repeated indices are refused, ONNX leaves their result undefined)."""
    k = indices.shape[-1]
    dims, tail = tuple(data.shape[:k]), tuple(data.shape[k:])
    if k > data.dim() or tuple(updates.shape) != tuple(indices.shape[:-1]) + tail:
        raise ValueError(f"ScatterND of updates {tuple(updates.shape)} into data "
                         f"{tuple(data.shape)} by indices {tuple(indices.shape)}: the shapes do "
                         "not fit")
    lin = _linear_index(node, indices, dims).reshape(-1)
    flat = data.reshape((math.prod(dims),) + tail)
    rows = updates.reshape((-1,) + tail)
    reduction = node.attr("reduction", "none")
    if reduction == "none":
        if lin.unique().numel() != lin.numel():
            raise ValueError("ScatterND with reduction='none' and repeated indices (ONNX leaves "
                             "the result undefined)")
        out = flat.index_put((lin,), rows)
    elif reduction == "add":
        out = flat.index_add(0, lin, rows)
    else:
        where = lin.reshape((-1,) + (1,) * len(tail)).expand(rows.shape)
        out = flat.scatter_reduce(0, where, rows, _SCATTER_REDUCE[reduction], include_self=True)
    return out.reshape(data.shape)
