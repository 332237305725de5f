"""CUDA twins (numba-cuda), imported lazily: only when a CUDA tensor (or the simulator) is used.

Each kernel has exactly the positional signature of its CPU twin in ``_cpu.py``; the dispatcher
always passes float32 C-contiguous arrays, int32 index tables and int64 scalars, so each kernel
compiles once (lazily, on first launch; ``cache=True`` keeps the compiled code on disk for later
processes, as on CPU).

Launch configurations (see ``grid_1d`` / ``grid_2d``), all grid-stride so any size is covered with
a bounded grid and no thread ever walks a whole image:

- weighted channel sums: blocks of 32 x 8 threads. ``threadIdx.x`` runs over 32 consecutive output
  pixels (coalesced reads of each channel plane), ``threadIdx.y`` over 8 slices of the channels; the
  8 partial sums meet in shared memory. Deep layers (7x7, K = 2048) thus get 8x more threads than
  one-thread-per-pixel, shallow ones (112x112, K = 64) stay coalesced. 1-D grid-stride over pixel
  tiles, at most 32 blocks per SM.
- everything per map (resizing, min/max, normalisation, GE): 2-D grid, blocks of 256 threads.
  ``x`` runs over the pixels of one map (at least 64 blocks per map when the map is that large,
  more when there are few maps, to fill ~32 blocks per SM: at most H*W / (64*256) iterations per
  thread, 16 for 512x512), ``y`` over the maps (layers x images, at most 65535 rows of blocks,
  grid-stride beyond). One launch covers every layer: layer l's map of
  image n is read from a packed buffer at ``offs[l] + n*h_l*w_l`` with its own index/weight tables.
- reductions (min/max, sums): a shared-memory tree per block, then one atomic per block and map.

Every kernel is launched on torch's current stream of the tensors' device, so it orders with the
torch work around it; no host synchronisation.
"""

from __future__ import annotations

import math

import numpy as np
from numba import config as _config
from numba import cuda, float32, float64

TPB = 256  # threads per block of the per-map kernels (power of two: tree reductions)
WS_X = 32  # weighted sums: pixels per block
WS_Y = 8  # weighted sums: channel slices per block
MIN_BLOCKS_PER_MAP = 64
MAX_GRID_Y = 65535
BLOCKS_PER_SM = 32

if getattr(_config, "ENABLE_CUDASIM", 0):
    # The simulator runs every CUDA thread as a Python thread: tiny blocks keep the tests fast, and
    # tiny grids make the small test shapes exercise both grid-stride loops (pixels and maps) and
    # the cross-iteration reuse of shared memory. The kernel code is the same.
    TPB = 16
    WS_X = 8
    WS_Y = 4
    MIN_BLOCKS_PER_MAP = 2
    MAX_GRID_Y = 3
    BLOCKS_PER_SM = 2

_SM_COUNT: dict[int, int] = {}


def _sm_count() -> int:
    dev = cuda.get_current_device()
    key = int(getattr(dev, "id", 0))
    if key not in _SM_COUNT:
        try:
            _SM_COUNT[key] = int(dev.MULTIPROCESSOR_COUNT)
        except Exception:  # the simulator has no attributes
            _SM_COUNT[key] = 1
    return _SM_COUNT[key]


def grid_1d(n_items: int, per_block: int) -> int:
    """Blocks for a 1-D grid-stride loop over ``n_items`` with ``per_block`` items per block."""
    need = max(1, math.ceil(n_items / per_block))
    return min(need, BLOCKS_PER_SM * _sm_count())


def grid_2d(pixels: int, maps: int) -> tuple[int, int]:
    """(blocks over the pixels of a map, blocks over maps) for the per-map kernels.

    ``y``: one row of blocks per map, up to 65535 (grid-stride beyond). ``x``: at least
    ``MIN_BLOCKS_PER_MAP`` blocks per map (so a thread visits at most pixels / (64*256) pixels:
    16 for 512x512), more when there are few maps, to fill ~32 blocks per SM overall; never more
    than one thread per pixel.
    """
    gy = max(1, min(maps, MAX_GRID_Y))
    fill = math.ceil(BLOCKS_PER_SM * _sm_count() / gy)
    gx = max(1, min(math.ceil(pixels / TPB), max(MIN_BLOCKS_PER_MAP, fill)))
    return gx, gy


# --------------------------------------------------------------------------------------------
# device helpers
# --------------------------------------------------------------------------------------------
@cuda.jit(device=True)
def _bilinear(src, base, w, yi, yl, xi, xl, l, i, j):
    """Resized value at (i, j) of the map at flat ``base`` (width ``w``), layer-l tables.
    Lerp form ``a + lam*(b - a)``, x then y, as the CPU twin (see ``_tables``; the GPU may fuse
    multiply-adds: ~1 ulp apart, and still exact on constant regions)."""
    r0 = base + yi[l, i, 0] * w
    r1 = base + yi[l, i, 1] * w
    x0 = xi[l, j, 0]
    x1 = xi[l, j, 1]
    lx = xl[l, j]
    a = src[r0 + x0]
    t0 = a + lx * (src[r0 + x1] - a)
    c = src[r1 + x0]
    t1 = c + lx * (src[r1 + x1] - c)
    return t0 + yl[l, i] * (t1 - t0)


@cuda.jit(device=True)
def _block_minmax(smn, smx, tid):
    """Tree-reduce smn/smx (TPB entries) into entry 0. All threads of the block must call it."""
    s = TPB // 2
    while s > 0:
        cuda.syncthreads()
        if tid < s:
            if smn[tid + s] < smn[tid]:
                smn[tid] = smn[tid + s]
            if smx[tid + s] > smx[tid]:
                smx[tid] = smx[tid + s]
        s //= 2
    cuda.syncthreads()


# --------------------------------------------------------------------------------------------
# 1. weighted channel sums
# --------------------------------------------------------------------------------------------
@cuda.jit(device=True)
def _wsum_store(part, acc, tx, ty, t, total, P, w, relu_out, out):
    """End of a weighted-sum tile: the WS_Y channel slices' float64 partial sums of pixel ``t``
    meet in shared memory, row 0 adds them, applies the outer ReLU and writes the pixel. All
    threads of the block must call it (it synchronises)."""
    part[ty, tx] = acc
    cuda.syncthreads()
    if ty == 0 and t < total:
        for y in range(1, WS_Y):
            acc += part[y, tx]
        v = float32(acc)
        if relu_out != 0 and v < 0:
            v = float32(0.0)
        n = t // P
        p = t - n * P
        i = p // w
        out[n, i, p - i * w] = v
    cuda.syncthreads()


@cuda.jit(cache=True)
def wsum_channel(acts, weights, relu_out, out):
    N, K, h, w = acts.shape
    P = h * w
    total = N * P
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    part = cuda.shared.array((WS_Y, WS_X), float64)
    for tile in range(cuda.blockIdx.x, (total + WS_X - 1) // WS_X, cuda.gridDim.x):
        t = tile * WS_X + tx
        acc = float64(0.0)
        if t < total:
            n = t // P
            p = t - n * P
            i = p // w
            j = p - i * w
            for k in range(ty, K, WS_Y):
                acc += float64(weights[n, k]) * float64(acts[n, k, i, j])
        _wsum_store(part, acc, tx, ty, t, total, P, w, relu_out, out)


@cuda.jit(cache=True)
def wsum_elementwise(acts, weights, relu_inner, relu_out, out):
    N, K, h, w = acts.shape
    P = h * w
    total = N * P
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    part = cuda.shared.array((WS_Y, WS_X), float64)
    for tile in range(cuda.blockIdx.x, (total + WS_X - 1) // WS_X, cuda.gridDim.x):
        t = tile * WS_X + tx
        acc = float64(0.0)
        if t < total:
            n = t // P
            p = t - n * P
            i = p // w
            j = p - i * w
            for k in range(ty, K, WS_Y):
                prod = float64(weights[n, k, i, j]) * float64(acts[n, k, i, j])
                if relu_inner == 0 or prod > 0:
                    acc += prod
        _wsum_store(part, acc, tx, ty, t, total, P, w, relu_out, out)


# --------------------------------------------------------------------------------------------
# 2. many layers' maps -> one (L, N, H, W) buffer
# --------------------------------------------------------------------------------------------
@cuda.jit(cache=True)
def ups_minmax(packed, offs, hs, ws, yi, yl, xi, xl, mn, mx):
    """Atomically lowers mn[l,n] / raises mx[l,n] (initialised to +inf / -inf by the caller)."""
    L, N = mn.shape
    H = yi.shape[1]
    W = xi.shape[1]
    P = H * W
    tid = cuda.threadIdx.x
    smn = cuda.shared.array(TPB, float32)
    smx = cuda.shared.array(TPB, float32)
    for m in range(cuda.blockIdx.y, L * N, cuda.gridDim.y):
        l = m // N
        n = m - l * N
        w = ws[l]
        base = offs[l] + n * hs[l] * w
        lo = float32(np.inf)
        hi = float32(-np.inf)
        for p in range(cuda.blockIdx.x * TPB + tid, P, cuda.gridDim.x * TPB):
            i = p // W
            v = _bilinear(packed, base, w, yi, yl, xi, xl, l, i, p - i * W)
            lo = min(lo, v)
            hi = max(hi, v)
        smn[tid] = lo
        smx[tid] = hi
        _block_minmax(smn, smx, tid)
        if tid == 0:
            cuda.atomic.min(mn, (l, n), smn[0])
            cuda.atomic.max(mx, (l, n), smx[0])


@cuda.jit(cache=True)
def ups_write(packed, offs, hs, ws, yi, yl, xi, xl, lo, rng, do_norm, out):
    L, N, H, W = out.shape
    P = H * W
    for m in range(cuda.blockIdx.y, L * N, cuda.gridDim.y):
        l = m // N
        n = m - l * N
        w = ws[l]
        base = offs[l] + n * hs[l] * w
        lo_ = lo[l, n]
        rng_ = rng[l, n]
        for p in range(cuda.blockIdx.x * TPB + cuda.threadIdx.x, P, cuda.gridDim.x * TPB):
            i = p // W
            j = p - i * W
            if do_norm != 0:
                if rng_ > 0:
                    v = (_bilinear(packed, base, w, yi, yl, xi, xl, l, i, j) - lo_) / rng_
                    out[l, n, i, j] = min(max(v, float32(0.0)), float32(1.0))
                else:
                    out[l, n, i, j] = float32(0.0)
            else:
                out[l, n, i, j] = _bilinear(packed, base, w, yi, yl, xi, xl, l, i, j)


# --------------------------------------------------------------------------------------------
# normalisation of an existing (M, P) buffer
# --------------------------------------------------------------------------------------------
@cuda.jit(cache=True)
def maps_minmax(buf, mn, mx):
    M, P = buf.shape
    tid = cuda.threadIdx.x
    smn = cuda.shared.array(TPB, float32)
    smx = cuda.shared.array(TPB, float32)
    for m in range(cuda.blockIdx.y, M, cuda.gridDim.y):
        lo = float32(np.inf)
        hi = float32(-np.inf)
        for p in range(cuda.blockIdx.x * TPB + tid, P, cuda.gridDim.x * TPB):
            v = buf[m, p]
            lo = min(lo, v)
            hi = max(hi, v)
        smn[tid] = lo
        smx[tid] = hi
        _block_minmax(smn, smx, tid)
        if tid == 0:
            cuda.atomic.min(mn, m, smn[0])
            cuda.atomic.max(mx, m, smx[0])


@cuda.jit(cache=True)
def maps_scale(buf, lo, rng):
    M, P = buf.shape
    for m in range(cuda.blockIdx.y, M, cuda.gridDim.y):
        lo_ = lo[m]
        rng_ = rng[m]
        for p in range(cuda.blockIdx.x * TPB + cuda.threadIdx.x, P, cuda.gridDim.x * TPB):
            if rng_ > 0:
                v = (buf[m, p] - lo_) / rng_
                buf[m, p] = min(max(v, float32(0.0)), float32(1.0))
            else:
                buf[m, p] = float32(0.0)


# --------------------------------------------------------------------------------------------
# 3. Gradual Extrapolation
# --------------------------------------------------------------------------------------------
@cuda.jit(cache=True)
def ge_chansum(E, S, smax):
    """S = ReLU(Σ_k E); atomically raises smax[n] (initialised to 0 by the caller)."""
    N, K, h, w = E.shape
    P = h * w
    tid = cuda.threadIdx.x
    smx = cuda.shared.array(TPB, float32)
    for n in range(cuda.blockIdx.y, N, cuda.gridDim.y):
        hi = float32(0.0)
        for p in range(cuda.blockIdx.x * TPB + tid, P, cuda.gridDim.x * TPB):
            i = p // w
            j = p - i * w
            acc = float64(0.0)
            for k in range(K):
                acc += float64(E[n, k, i, j])
            v = float32(acc)
            if not (v > 0):
                v = float32(0.0)
            S[n, i, j] = v
            hi = max(hi, v)
        smx[tid] = hi
        s = TPB // 2
        while s > 0:
            cuda.syncthreads()
            if tid < s and smx[tid + s] > smx[tid]:
                smx[tid] = smx[tid + s]
            s //= 2
        cuda.syncthreads()
        if tid == 0:
            cuda.atomic.max(smax, n, smx[0])
        cuda.syncthreads()


@cuda.jit(cache=True)
def ge_resize_mul(Hm, S, smax, yi, yl, xi, xl, out):
    N, h, w = Hm.shape
    NS = S.shape[0]
    H2 = S.shape[1]
    W2 = S.shape[2]
    P = H2 * W2
    for n in range(cuda.blockIdx.y, N, cuda.gridDim.y):
        m = n % NS
        sm = smax[m]
        for p in range(cuda.blockIdx.x * TPB + cuda.threadIdx.x, P, cuda.gridDim.x * TPB):
            i = p // W2
            j = p - i * W2
            y0 = yi[0, i, 0]
            y1 = yi[0, i, 1]
            x0 = xi[0, j, 0]
            x1 = xi[0, j, 1]
            lx = xl[0, j]
            a = Hm[n, y0, x0]
            t0 = a + lx * (Hm[n, y0, x1] - a)
            c = Hm[n, y1, x0]
            t1 = c + lx * (Hm[n, y1, x1] - c)
            v = t0 + yl[0, i] * (t1 - t0)
            if sm > 0:
                v = v * (S[m, i, j] / sm)
            out[n, i, j] = v


@cuda.jit(cache=True)
def ge_stats(Hm, stats):
    """Atomically accumulates (Σd, Σd², min, max), d = x - stats[n, 4]; caller initialises
    stats[:, :2] = 0, stats[:, 2] = +inf, stats[:, 3] = -inf and stats[:, 4] = Hm[:, 0] (the
    shift, kept apart so that ge_final may write over Hm)."""
    N, P = Hm.shape
    tid = cuda.threadIdx.x
    s1a = cuda.shared.array(TPB, float64)
    s2a = cuda.shared.array(TPB, float64)
    smn = cuda.shared.array(TPB, float32)
    smx = cuda.shared.array(TPB, float32)
    for n in range(cuda.blockIdx.y, N, cuda.gridDim.y):
        shift = stats[n, 4]
        s1 = float64(0.0)
        s2 = float64(0.0)
        lo = float32(np.inf)
        hi = float32(-np.inf)
        for p in range(cuda.blockIdx.x * TPB + tid, P, cuda.gridDim.x * TPB):
            x = Hm[n, p]
            d = float64(x) - shift
            s1 += d
            s2 += d * d
            lo = min(lo, x)
            hi = max(hi, x)
        s1a[tid] = s1
        s2a[tid] = s2
        smn[tid] = lo
        smx[tid] = hi
        s = TPB // 2
        while s > 0:
            cuda.syncthreads()
            if tid < s:
                s1a[tid] += s1a[tid + s]
                s2a[tid] += s2a[tid + s]
                if smn[tid + s] < smn[tid]:
                    smn[tid] = smn[tid + s]
                if smx[tid + s] > smx[tid]:
                    smx[tid] = smx[tid + s]
            s //= 2
        cuda.syncthreads()
        if tid == 0:
            cuda.atomic.add(stats, (n, 0), s1a[0])
            cuda.atomic.add(stats, (n, 1), s2a[0])
            cuda.atomic.min(stats, (n, 2), float64(smn[0]))
            cuda.atomic.max(stats, (n, 3), float64(smx[0]))
        cuda.syncthreads()


@cuda.jit(device=True)
def _ge_params(x0, s1, s2, P, lo, hi):
    """(mean, std, cmin, cmax, ok) in float32; mirrors _cpu._ge_params."""
    mean64 = float64(x0) + s1 / P
    var = float64(0.0)
    if P > 1:
        var = (s2 - s1 * s1 / P) / (P - 1)
    if var < 0:
        var = float64(0.0)
    mean = float32(mean64)
    std = float32(math.sqrt(var))
    if not (std > 0):
        return mean, std, float32(0.0), float32(0.0), False
    cmin = min(max((float32(lo) - mean) / std, float32(-1.0)), float32(1.0))
    cmax = min(max((float32(hi) - mean) / std, float32(-1.0)), float32(1.0))
    return mean, std, cmin, cmax, cmax > cmin


@cuda.jit(cache=True)
def ge_final(Hm, stats, out):
    N, P = Hm.shape
    for n in range(cuda.blockIdx.y, N, cuda.gridDim.y):
        mean, std, cmin, cmax, ok = _ge_params(stats[n, 4], stats[n, 0], stats[n, 1], P,
                                               stats[n, 2], stats[n, 3])
        crng = cmax - cmin
        for p in range(cuda.blockIdx.x * TPB + cuda.threadIdx.x, P, cuda.gridDim.x * TPB):
            if ok:
                z = (Hm[n, p] - mean) / std
                z = min(max(z, float32(-1.0)), float32(1.0))
                v = (z - cmin) / crng
                out[n, p] = min(max(v, float32(0.0)), float32(1.0))
            else:
                out[n, p] = float32(0.0)


# --------------------------------------------------------------------------------------------
# power sums (Smooth Grad-CAM++ derivatives)
# --------------------------------------------------------------------------------------------
@cuda.jit(cache=True)
def power_sums(g, s1, s2, s3):
    """s_p[j] += Σ_t g[t, j]^p. 1-D grid-stride over the columns j, one thread owning a column
    (no atomics), reading its rows in order: consecutive threads read consecutive j (coalesced)."""
    m, size = g.shape
    for j in range(cuda.blockIdx.x * TPB + cuda.threadIdx.x, size, cuda.gridDim.x * TPB):
        a1 = s1[j]
        a2 = s2[j]
        a3 = s3[j]
        for t in range(m):
            v = float64(g[t, j])
            v2 = v * v
            a1 += v
            a2 += v2
            a3 += v2 * v
        s1[j] = a1
        s2[j] = a2
        s3[j] = a3

