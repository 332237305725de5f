"""Bilinear source-index / weight tables (torch ``align_corners=False`` semantics).

For one axis resized from ``n_in`` to ``n_out`` samples, torch's ``upsample_bilinear2d`` computes,
in float32 (its ``opmath`` type for float32 data; ``compute_source_index_and_lambda``)::

    scale = n_in / n_out
    src   = max(scale * (dst + 0.5) - 0.5, 0)     # clamped at 0 below
    i0    = min(floor(src), n_in - 1);  i1 = i0 + (1 if i0 < n_in - 1 else 0)
    lam1  = clip(src - i0, 0, 1)
    (n_in == n_out: i0 = i1 = dst, lam1 = 0, an exact copy)

The tables hold ``(i0, i1)`` as int32 and ``lam1`` as float32, computed once per
``(n_in, n_out)`` and cached; the kernels only gather and blend.

Deliberate deviation in the blend: the kernels use the lerp form ``a + lam1*(b - a)`` (x first,
then y, as torch: height is the outer interpolation) instead of torch's ``lam0*a + lam1*b``. The
two agree to float32 rounding (~1 ulp), but the lerp form keeps a constant region *exactly*
constant (``b - a == 0``), e.g. a 1x1 map or a constant map resized to 224x224. With torch's form
such a map picks up last-ulp noise at some pixels, and min-max normalisation would blow that noise
up to [0, 1] instead of giving the zeros that a constant map must give.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=512)
def axis_table(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(idx (n_out, 2) int32, lam1 (n_out,) float32)`` for one resized axis.

    The arrays are cached and shared: callers must not write to them.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"bilinear axis sizes must be >= 1, got {n_in} -> {n_out}")
    f32 = np.float32
    if n_in == n_out:
        i0 = np.arange(n_out, dtype=np.int32)
        idx = np.ascontiguousarray(np.stack([i0, i0], axis=1))
        return idx, np.zeros(n_out, f32)
    scale = f32(n_in) / f32(n_out)  # float32 division, as torch's area_pixel_compute_scale
    dst = np.arange(n_out, dtype=f32)
    src = scale * (dst + f32(0.5)) - f32(0.5)
    src = np.maximum(src, f32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1).astype(np.int32)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0).astype(np.int32)
    lam1 = np.clip(src - i0.astype(f32), f32(0.0), f32(1.0)).astype(f32)
    idx = np.ascontiguousarray(np.stack([i0, i1], axis=1), dtype=np.int32)
    return idx, np.ascontiguousarray(lam1, dtype=f32)


@lru_cache(maxsize=128)
def layer_tables(sizes: tuple[tuple[int, int], ...], out_h: int, out_w: int):
    """Packed tables for many layers resized to one ``(out_h, out_w)``.

    Returns ``(yi (L, H, 2) int32, yl (L, H) float32, xi (L, W, 2) int32, xl (L, W) float32)``
    (indices and ``lam1`` weights), numpy arrays cached on the tuple of input sizes (a network's
    tap sizes repeat from call to call). Shared: never write to them.
    """
    yi = np.empty((len(sizes), out_h, 2), np.int32)
    yl = np.empty((len(sizes), out_h), np.float32)
    xi = np.empty((len(sizes), out_w, 2), np.int32)
    xl = np.empty((len(sizes), out_w), np.float32)
    for l, (h, w) in enumerate(sizes):
        yi[l], yl[l] = axis_table(h, out_h)
        xi[l], xl[l] = axis_table(w, out_w)
    return yi, yl, xi, xl
