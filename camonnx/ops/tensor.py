"""Shape and data-movement ONNX operators: reshape, slice, pad, resize, reductions, constants."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from camonnx.ops import Node, register

_ONNX_TO_TORCH = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32,
    7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16,
}


def _ints(t) -> list[int]:
    return [int(v) for v in (t.tolist() if isinstance(t, torch.Tensor) else t)]


def _axes(node: Node, x, axes_input=None, attr: str = "axes") -> list[int] | None:
    """Axes from the attribute (older opsets) or the input (newer), normalised to ≥ 0."""
    axes = node.attr(attr) if axes_input is None else _ints(axes_input)
    if axes is None:
        return None
    return [a + x.dim() if a < 0 else a for a in (int(a) for a in axes)]


# --- identity, constants, casts --------------------------------------------------------------

@register("Identity")
def identity(node: Node, x):
    return x


_CONSTANT_KEYS = ("value", "value_float", "value_floats", "value_int", "value_ints")


def _check_constant(node: Node, constants) -> None:
    if not any(key in node.attrs for key in _CONSTANT_KEYS):
        found = ", ".join(node.attrs) or "no attribute"
        raise node.unsupported(f"Constant with {found} (only numeric value attributes)")
    value = node.attrs.get("value")
    if value is not None and np.asarray(value).dtype.kind not in "biuf":
        raise node.unsupported(f"Constant of dtype {np.asarray(value).dtype}")


@register("Constant", check=_check_constant)
def constant(node: Node):
    for key in _CONSTANT_KEYS:
        if key in node.attrs:
            value = np.asarray(node.attrs[key])
            if key.startswith("value_int"):
                value = value.astype(np.int64)
            elif key.startswith("value_float"):
                value = value.astype(np.float32)
            return torch.from_numpy(np.array(value))
    raise node.unsupported("Constant without a value attribute")


@register("ConstantOfShape")
def constant_of_shape(node: Node, shape):
    value = node.attrs.get("value")
    fill = torch.from_numpy(np.array(value)).reshape(()) if value is not None else torch.tensor(0.0)
    return fill.expand(_ints(shape)).clone().to(shape.device)


def _check_cast(node: Node, constants) -> None:
    to = int(node.attr("to", 0))
    if to not in _ONNX_TO_TORCH:
        raise node.unsupported(f"cast to ONNX type {to} ({_type_name(to)})")


def _type_name(to: int) -> str:
    try:
        import onnx

        return onnx.TensorProto.DataType.Name(to)
    except Exception:
        return "unknown"


@register("Cast", check=_check_cast)
def cast(node: Node, x):
    """Cast; float → int truncates toward zero and float → bool is ``x != 0``, as in ONNX."""
    return x.to(_ONNX_TO_TORCH[int(node.attr("to"))])


@register("CastLike")
def cast_like(node: Node, x, like):
    return x.to(like.dtype)


@register("Shape")
def shape(node: Node, x):
    dims = list(x.shape)
    start, end = node.attr("start", 0), node.attr("end")
    return torch.tensor(dims[start:end], dtype=torch.int64, device=x.device)


@register("Size")
def size(node: Node, x):
    return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


# --- reshaping -------------------------------------------------------------------------------

@register("Flatten")
def flatten(node: Node, x):
    axis = int(node.attr("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(int(math.prod(x.shape[:axis])), int(math.prod(x.shape[axis:])))


@register("Reshape")
def reshape(node: Node, x, shape_t=None):
    target = _ints(shape_t) if shape_t is not None else [int(v) for v in node.attr("shape")]
    if not node.attr("allowzero", 0):
        target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
    return x.reshape(target)


@register("Transpose")
def transpose(node: Node, x):
    perm = node.attr("perm")
    perm = list(reversed(range(x.dim()))) if perm is None else [int(p) for p in perm]
    return x.permute(perm)


@register("Squeeze")
def squeeze(node: Node, x, axes_t=None):
    """Squeeze the given axes; no axes (omitted, or an empty axes input as ONNX Runtime reads
    it) squeezes every size-1 axis."""
    axes = _axes(node, x, axes_t)
    if not axes:
        return x.squeeze()
    return x.squeeze(tuple(axes))


@register("Unsqueeze")
def unsqueeze(node: Node, x, axes_t=None):
    axes = node.attr("axes") if axes_t is None else _ints(axes_t)
    rank = x.dim() + len(axes)
    for axis in sorted(a + rank if a < 0 else a for a in axes):
        x = x.unsqueeze(axis)
    return x


@register("Concat")
def concat(node: Node, *xs):
    xs = [x for x in xs if x is not None and (x.dim() != 1 or x.numel() > 0 or len(xs) == 1)]
    return torch.cat(xs, dim=int(node.attr("axis")))


@register("Split")
def split(node: Node, x, split_t=None):
    axis = int(node.attr("axis", 0))
    parts = len(node.outputs)
    sizes = _ints(split_t) if split_t is not None else node.attr("split")
    if sizes is None:
        total = x.shape[axis]
        if node.attr("num_outputs") is not None:
            chunk = -(-total // parts)
            sizes = [min(chunk, total - i * chunk) for i in range(parts)]
        else:
            sizes = [total // parts] * parts
    return tuple(torch.split(x, [int(s) for s in sizes], dim=axis))


@register("Expand")
def expand(node: Node, x, shape_t):
    target = torch.broadcast_shapes(tuple(x.shape), tuple(_ints(shape_t)))
    return x.expand(target)


@register("Tile")
def tile(node: Node, x, repeats):
    return x.repeat(_ints(repeats))


@register("Range")
def range_(node: Node, start, limit, delta):
    """``max(⌈(limit − start) / delta⌉, 0)`` values (an empty range is not an error). ONNX's
    function body accumulates ``v += delta`` in the input type, as ONNX Runtime does: a float
    range is a cumulative sum in its dtype, not ``start + i·delta``."""
    count = max(int(math.ceil((limit - start).item() / delta.item())), 0)
    if count == 0:
        return torch.zeros(0, dtype=start.dtype, device=start.device)
    if not start.is_floating_point():
        return torch.arange(count, dtype=start.dtype, device=start.device) * delta + start
    steps = delta.reshape(1).expand(count).clone()
    steps[0] = start
    return torch.cumsum(steps, 0)


@register("Trilu")
def trilu(node: Node, x, k=None):
    """Keep the upper (``upper=1``, default) or lower triangle of the last two axes: the cells
    ``(i, j)`` with ``j − i ≥ k`` or ``j − i ≤ k`` (``k`` from the optional input, default 0);
    the rest become 0."""
    diagonal = int(k.item()) if k is not None else 0
    if int(node.attr("upper", 1)):
        return torch.triu(x, diagonal)
    return torch.tril(x, diagonal)


@register("Gather")
def gather(node: Node, x, indices):
    axis = int(node.attr("axis", 0))
    axis = axis + x.dim() if axis < 0 else axis
    idx = indices.long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    flat = x.index_select(axis, idx.reshape(-1).to(x.device))
    return flat.reshape(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1:]))


@register("GatherElements")
def gather_elements(node: Node, x, indices):
    axis = int(node.attr("axis", 0))
    idx = indices.long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    return torch.gather(x, axis, idx)


def _check_slice(node: Node, constants) -> None:
    if node.opset < 10 and "starts" not in node.attrs:
        raise node.unsupported("Slice without starts")


@register("Slice", check=_check_slice)
def slice_(node: Node, x, starts=None, ends=None, axes=None, steps=None):
    if node.opset < 10:
        starts, ends, axes = node.attr("starts"), node.attr("ends"), node.attr("axes")
        steps = None
    starts, ends = _ints(starts), _ints(ends)
    axes = list(range(len(starts))) if axes is None else _ints(axes)
    steps = [1] * len(starts) if steps is None else _ints(steps)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = axis + x.dim() if axis < 0 else axis
        dim = x.shape[axis]
        idx = _slice_indices(start, end, step, dim)
        if step == 1:
            x = x.narrow(axis, idx[0], len(idx)) if idx else x.narrow(axis, 0, 0)
        else:
            x = x.index_select(axis, torch.tensor(idx, dtype=torch.long, device=x.device))
    return x


def _slice_indices(start: int, end: int, step: int, dim: int) -> list[int]:
    """The indices ONNX Slice selects. Negative starts/ends count from the end; then for a
    positive step start and end are clamped to [0, dim], for a negative step start to
    [0, dim − 1] and end to [−1, dim − 1] (−1 meaning "through index 0")."""
    if step == 0:
        raise ValueError("Slice step 0")
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return list(range(start, end, step))


def _check_pad(node: Node, constants) -> None:
    mode = node.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise node.unsupported(f"Pad mode {mode!r}")


@register("Pad", check=_check_pad)
def pad(node: Node, x, pads_t=None, value_t=None, axes_t=None):
    mode = node.attr("mode", "constant")
    if node.opset < 11:
        pads = [int(p) for p in node.attr("pads", node.attr("paddings"))]
        value = float(node.attr("value", 0.0))
    else:
        pads = _ints(pads_t)
        value = value_t.item() if value_t is not None and value_t.numel() else 0.0
    rank = x.dim()
    axes = list(range(rank)) if axes_t is None else [a + rank if a < 0 else a for a in _ints(axes_t)]
    n = len(axes)
    begins, ends = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        begins[axis], ends[axis] = pads[i], pads[i + n]
    torch_pads: list[int] = []
    for axis in reversed(range(rank)):
        torch_pads += [begins[axis], ends[axis]]
    if mode == "constant":
        return F.pad(x, torch_pads, value=value)
    # torch's reflect/replicate/circular pad only the trailing dims: pad one axis at a time
    torch_mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode]
    for axis in range(rank):
        if begins[axis] or ends[axis]:
            moved = x.movedim(axis, -1)
            flat = moved.reshape(-1, 1, moved.shape[-1])
            flat = F.pad(flat, [begins[axis], ends[axis]], mode=torch_mode)
            x = flat.reshape(tuple(moved.shape[:-1]) + (flat.shape[-1],)).movedim(-1, axis)
    return x


# --- reductions ------------------------------------------------------------------------------

_REDUCE = {
    "ReduceMean": lambda x, d, k: x.mean(dim=d, keepdim=k),
    "ReduceSum": lambda x, d, k: x.sum(dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: x.amax(dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: x.amin(dim=d, keepdim=k),
    "ReduceProd": lambda x, d, k: _prod(x, d, k),
    "ReduceL1": lambda x, d, k: x.abs().sum(dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: (x * x).sum(dim=d, keepdim=k).sqrt(),
    "ReduceSumSquare": lambda x, d, k: (x * x).sum(dim=d, keepdim=k),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
}
# Opset from which each reduction takes its axes as an input instead of an attribute.
_AXES_INPUT_SINCE = {"ReduceSum": 13}


def _prod(x, dims, keepdim):
    for d in sorted(dims, reverse=True):
        x = x.prod(dim=d, keepdim=keepdim)
    return x


#: Each reduction over an empty set of axes (``noop_with_empty_axes=1``): its elementwise part
#: alone, as ONNX Runtime computes it (ReduceL2 → |x|, ReduceSumSquare → x², …).
_REDUCE_NOTHING = {
    "ReduceL1": torch.abs,
    "ReduceL2": torch.abs,
    "ReduceSumSquare": lambda x: x * x,
}


def _reduce(node: Node, x, axes_t=None):
    """Reductions. Axes come from the attribute before opset 18 (ReduceSum: 13) and from the
    optional input after. No axes (omitted or empty) reduces every axis, unless
    ``noop_with_empty_axes=1`` (input form only), which reduces none."""
    since = _AXES_INPUT_SINCE.get(node.op_type, 18)
    axes = _axes(node, x, axes_t if node.opset >= since else None)
    keepdims = bool(node.attr("keepdims", 1))
    if not axes:
        if node.opset >= since and node.attr("noop_with_empty_axes", 0):
            return _REDUCE_NOTHING.get(node.op_type, lambda v: v)(x)
        axes = list(range(x.dim()))
    return _REDUCE[node.op_type](x, tuple(axes), keepdims)


for _name in _REDUCE:
    register(_name)(_reduce)


def _arg(node: Node, x, fn):
    axis = int(node.attr("axis", 0))
    keepdims = bool(node.attr("keepdims", 1))
    if node.attr("select_last_index", 0):
        flipped = x.flip(axis)
        idx = x.shape[axis] - 1 - fn(flipped, dim=axis, keepdim=keepdims)
    else:
        idx = fn(x, dim=axis, keepdim=keepdims)
    return idx.to(torch.int64)


@register("ArgMax")
def argmax(node: Node, x):
    return _arg(node, x, torch.argmax)


@register("ArgMin")
def argmin(node: Node, x):
    return _arg(node, x, torch.argmin)


# --- Resize / Upsample -----------------------------------------------------------------------

_COORD_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                "half_pixel_symmetric", "tf_half_pixel_for_nn")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _check_resize(node: Node, constants) -> None:
    mode = node.attr("mode", "nearest")
    legacy = node.op_type == "Upsample" or node.opset < 11
    if mode not in (("nearest", "linear", "bilinear") if legacy else ("nearest", "linear", "cubic")):
        raise node.unsupported(f"{node.op_type} mode {mode!r}")
    coord = node.attr("coordinate_transformation_mode", "half_pixel")
    if not legacy and coord not in _COORD_MODES:
        raise node.unsupported(f"coordinate_transformation_mode={coord!r}")
    if node.attr("nearest_mode", "round_prefer_floor") not in _NEAREST_MODES:
        raise node.unsupported(f"nearest_mode={node.attr('nearest_mode')!r}")
    if node.attr("antialias", 0):
        raise node.unsupported("antialias=1")
    if node.attr("exclude_outside", 0):
        raise node.unsupported("exclude_outside=1")
    if node.op_type == "Upsample":
        scales = node.attr("scales")
        if scales is None and len(node.inputs) > 1:
            scales = constants.get(node.inputs[1])
        if scales is not None and any(float(v) < 1 for v in np.asarray(scales).reshape(-1)):
            raise node.unsupported("Upsample scale < 1 (the ONNX spec requires scales ≥ 1)")
    if node.attr("keep_aspect_ratio_policy", "stretch") not in ("stretch", "not_larger",
                                                                 "not_smaller"):
        raise node.unsupported(f"keep_aspect_ratio_policy={node.attr('keep_aspect_ratio_policy')!r}")


def _source_coords(out_size: int, in_size: int, scale: float, coord: str) -> torch.Tensor:
    """Input coordinate of each output index, per ONNX Resize's coordinate_transformation_mode.

    Computed in float32 with ONNX Runtime's operation order: nearest-neighbour picks depend on
    the last bit (e.g. 11.5 / 2.3f lands just above 5, not on it), so float64 would pick other
    pixels than the runtime the mirror must agree with. Returned as float64 (exactly)."""
    o = torch.arange(out_size, dtype=torch.float32)
    s = torch.tensor(scale, dtype=torch.float32)
    if coord in ("half_pixel", "pytorch_half_pixel"):
        if coord == "pytorch_half_pixel" and out_size <= 1:
            return torch.zeros(out_size, dtype=torch.float64)
        src = (o + 0.5) / s - 0.5
    elif coord == "align_corners":
        if out_size <= 1:
            return torch.zeros(out_size, dtype=torch.float64)
        src = o * float(in_size - 1) / float(out_size - 1)
    elif coord == "half_pixel_symmetric":
        adjustment = torch.tensor(float(out_size), dtype=torch.float32) / (s * float(in_size))
        offset = float(in_size) / 2 * (1 - adjustment)
        src = offset + (o + 0.5) / s - 0.5
    elif coord == "tf_half_pixel_for_nn":
        src = (o + 0.5) / s
    else:  # asymmetric
        src = o / s
    return src.double()


def _taps(src: torch.Tensor, in_size: int, mode: str, nearest_mode: str, cubic_a: float,
          down: bool):
    """Per output index: the input indices it reads and their weights."""
    if mode == "nearest":
        if nearest_mode == "simple":  # Upsample and Resize-10 in ONNX Runtime
            idx = src.ceil() if down else src.trunc()
        elif nearest_mode == "round_prefer_floor":
            idx = torch.where(src == src.floor() + 0.5, src.floor(), src.round())
        elif nearest_mode == "round_prefer_ceil":
            idx = torch.where(src == src.floor() + 0.5, src.ceil(), src.round())
        elif nearest_mode == "floor":
            idx = src.floor()
        else:
            idx = src.ceil()
        idx = idx.clamp(0, in_size - 1).long().unsqueeze(1)
        return idx, torch.ones_like(idx, dtype=torch.float64)
    if mode == "cubic":
        base = src.floor()
        t = (src - base).unsqueeze(1)
        offsets = torch.tensor([-1.0, 0.0, 1.0, 2.0], dtype=torch.float64)
        dist = (t - offsets).abs()
        a = cubic_a
        near = ((a + 2) * dist - (a + 3)) * dist * dist + 1
        far = ((a * dist - 5 * a) * dist + 8 * a) * dist - 4 * a
        weights = torch.where(dist <= 1, near, far)
        idx = (base.unsqueeze(1) + offsets).clamp(0, in_size - 1).long()
        return idx, weights
    src = src.clamp(0, in_size - 1)
    lo = src.floor()
    frac = (src - lo).unsqueeze(1)
    lo = lo.long()
    hi = (lo + 1).clamp(max=in_size - 1)
    return torch.stack([lo, hi], 1), torch.cat([1 - frac, frac], 1)


def _resize_axis(x, axis: int, out_size: int, scale: float, coord: str, mode: str,
                 nearest_mode: str, cubic_a: float):
    in_size = x.shape[axis]
    src = _source_coords(out_size, in_size, scale, coord)
    idx, weights = _taps(src, in_size, mode, nearest_mode, cubic_a, scale < 1)
    picked = x.index_select(axis, idx.reshape(-1).to(x.device))
    shape = list(x.shape)
    shape[axis:axis + 1] = [out_size, idx.shape[1]]
    picked = picked.reshape(shape)
    if idx.shape[1] == 1:
        return picked.squeeze(axis + 1)
    w_shape = [1] * len(shape)
    w_shape[axis], w_shape[axis + 1] = out_size, idx.shape[1]
    w = weights.reshape(w_shape).to(dtype=x.dtype, device=x.device)
    return (picked * w).sum(dim=axis + 1)


def _f32(v: float) -> float:
    return float(np.float32(v))


def _resize(node: Node, x, scales: list[float] | None, sizes: list[int] | None, coord: str,
            nearest_mode: str):
    """Separable resize, one axis at a time (exact for nearest/linear/cubic: ONNX's N-D
    interpolation is the tensor product of 1-D ones). Output sizes and the scales used in the
    coordinate transform follow ONNX Runtime: ``⌊in·scale⌋`` for given scales; for given sizes
    the scale is ``size / in`` in float32, and with ``keep_aspect_ratio_policy`` one scale
    (the min or max of those) for all axes and sizes ``round(scale·in)``. When the output shape
    equals the input's, ONNX Runtime returns the input unchanged even if a scale is not 1
    (e.g. 1.05 on 9 pixels): so does the mirror."""
    mode = {"bilinear": "linear"}.get(node.attr("mode", "nearest"), node.attr("mode", "nearest"))
    cubic_a = float(node.attr("cubic_coeff_a", -0.75))
    rank = x.dim()
    axes = node.attr("axes")
    axes = list(range(rank)) if axes is None else [int(a) + rank if a < 0 else int(a) for a in axes]
    if sizes is not None:
        policy = node.attr("keep_aspect_ratio_policy", "stretch")
        ratios = [_f32(_f32(sizes[i]) / _f32(x.shape[a])) for i, a in enumerate(axes)]
        if policy != "stretch":
            r = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [r] * len(axes)
            sizes = [int(math.floor(_f32(r * x.shape[a]) + 0.5)) for a in axes]
        full_scales = dict(zip(axes, ratios))
        full_sizes = dict(zip(axes, sizes))
    else:
        if len(scales) != len(axes):
            raise ValueError(f"{len(scales)} scales for a rank-{rank} input")
        full_scales = {a: _f32(s) for a, s in zip(axes, scales)}
        full_sizes = {a: int(math.floor(_f32(x.shape[a] * s))) for a, s in full_scales.items()}
    if all(full_sizes[a] == x.shape[a] for a in axes):
        return x  # ONNX Runtime copies the input whenever the output shape equals it
    for axis in axes:
        if full_scales[axis] != 1.0 or full_sizes[axis] != x.shape[axis]:
            x = _resize_axis(x, axis, full_sizes[axis], full_scales[axis], coord, mode,
                             nearest_mode, cubic_a)
    return x


@register("Resize", check=_check_resize)
def resize(node: Node, x, roi=None, scales_t=None, sizes_t=None):
    """Resize-10 is (X, scales) with asymmetric coordinates and ONNX Runtime's legacy nearest
    rule (see :func:`upsample`); Resize-11+ is (X, roi, scales, sizes)."""
    if node.opset < 11:
        return upsample(node, x, roi)
    coord = node.attr("coordinate_transformation_mode", "half_pixel")
    sizes = _ints(sizes_t) if sizes_t is not None and sizes_t.numel() else None
    scales = ([float(s) for s in scales_t.tolist()]
              if scales_t is not None and scales_t.numel() else None)
    return _resize(node, x, scales, sizes, coord,
                   node.attr("nearest_mode", "round_prefer_floor"))


@register("Upsample", check=_check_resize)
def upsample(node: Node, x, scales_t=None):
    """Upsample (opset 7–9; Resize-10 alike): asymmetric coordinates ``o / scale``; nearest
    takes ``trunc`` of that when upsampling an axis and ``ceil`` when downsampling it, as ONNX
    Runtime does for these opsets (its "simple" nearest mode); linear clamps to the edge."""
    scales = node.attr("scales") if scales_t is None else scales_t.tolist()
    return _resize(node, x, [float(s) for s in scales], None, "asymmetric", "simple")
