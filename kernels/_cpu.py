"""CPU twins: ``numba.njit(parallel=True, cache=True, fastmath=False)`` (+ ``error_model="numpy"``:
IEEE division, no per-element zero checks, so the loops vectorise).

Every kernel here has exactly the positional signature of its CUDA twin in ``_cuda.py`` and is
always called with the same argument types (float32 C-contiguous arrays, int32 index tables,
int64 scalars), so each compiles once, and ``cache=True`` makes later processes load the machine
code from numba's cache instead of paying the JIT again. Each kernel has one ``prange`` (one
parallel region per call); the per-map reductions after it are serial and tiny.

Parallel decomposition: work items are (map, chunk of output rows) for the resampling kernels and
(image, chunk of the flattened plane) for the channel sums, at least ``_MIN_ITEMS`` of them when
the output allows it, so a batch of one image with one layer still spreads over the cores, and many
layers x images give plenty of items. Each item allocates only a small scratch.

Bilinear resampling is separable: the source rows a chunk needs are first interpolated along x into
``hx``, then every output row blends two ``hx`` rows: torch's order (height is the outer
interpolation), and a contiguous, vectorisable inner loop. Blends use the lerp form
``a + lam1*(b - a)`` (see ``_tables``: equal to torch's ``lam0*a + lam1*b`` up to rounding, and
exact on constant regions).

Normalised resampling never re-reads the output: a first pass computes each map's min/max from the
(cheap, cache-resident) interpolation without writing, a second pass recomputes the identical values
and writes them already normalised, so the output memory is written exactly once. The min/max pass
only evaluates the first and last output row of each run of rows that share their two source rows
(exact, see ``ups_minmax``): upscaling 7 -> 224 evaluates 1/16 of the rows.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_OPTS = dict(parallel=True, cache=True, fastmath=False, nogil=True, error_model="numpy")

# Target output pixels per work item (rows * W): large enough to amortise the per-item scratch,
# small enough to balance many threads.
_ITEM_PIXELS = 16384
# Minimum number of work items (when the output allows it): 4 per thread on 16 cores. A constant,
# not numba.get_num_threads(): that reads a ctypes global, which would disable the on-disk cache.
_MIN_ITEMS = 64
# Pixels per work item of the channel sums (float64 accumulator: 16 KiB).
_PLANE_CHUNK = 2048


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _row_chunks(n_rows, n_cols, n_maps):
    """Rows per chunk and chunk count for a (n_maps, n_rows, n_cols) output."""
    rpc = max(1, min(n_rows, _ITEM_PIXELS // max(n_cols, 1)))
    while rpc > 1 and n_maps * ((n_rows + rpc - 1) // rpc) < _MIN_ITEMS:
        rpc = (rpc + 1) // 2
    n_chunks = (n_rows + rpc - 1) // rpc
    return rpc, n_chunks


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _interp_rows(src, base, w, s0, ns, xi, xl, hx):
    """hx[s, j] = x-interpolation of source row s0+s (map starting at flat offset ``base``)."""
    n_out = hx.shape[1]
    for s in range(ns):
        rb = base + (s0 + s) * w
        for j in range(n_out):
            a = src[rb + xi[j, 0]]
            hx[s, j] = a + xl[j] * (src[rb + xi[j, 1]] - a)


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _row_minmax(ha, hb, lam, lo, hi):
    """min/max of ha + lam*(hb - ha) folded into (lo, hi); 4 independent accumulators (without
    fastmath, min/max reductions do not vectorise: this breaks the dependency chain instead)."""
    n = ha.shape[0]
    lo0 = lo1 = lo2 = lo3 = lo
    hi0 = hi1 = hi2 = hi3 = hi
    j = 0
    while j + 4 <= n:
        v0 = ha[j] + lam * (hb[j] - ha[j])
        v1 = ha[j + 1] + lam * (hb[j + 1] - ha[j + 1])
        v2 = ha[j + 2] + lam * (hb[j + 2] - ha[j + 2])
        v3 = ha[j + 3] + lam * (hb[j + 3] - ha[j + 3])
        lo0 = v0 if v0 < lo0 else lo0
        lo1 = v1 if v1 < lo1 else lo1
        lo2 = v2 if v2 < lo2 else lo2
        lo3 = v3 if v3 < lo3 else lo3
        hi0 = v0 if v0 > hi0 else hi0
        hi1 = v1 if v1 > hi1 else hi1
        hi2 = v2 if v2 > hi2 else hi2
        hi3 = v3 if v3 > hi3 else hi3
        j += 4
    while j < n:
        v0 = ha[j] + lam * (hb[j] - ha[j])
        lo0 = v0 if v0 < lo0 else lo0
        hi0 = v0 if v0 > hi0 else hi0
        j += 1
    lo0 = lo1 if lo1 < lo0 else lo0
    lo2 = lo3 if lo3 < lo2 else lo2
    hi0 = hi1 if hi1 > hi0 else hi0
    hi2 = hi3 if hi3 > hi2 else hi2
    return (lo2 if lo2 < lo0 else lo0), (hi2 if hi2 > hi0 else hi0)


# --------------------------------------------------------------------------------------------
# 1. weighted channel sums
# --------------------------------------------------------------------------------------------
@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _plane_chunks(P, N):
    """Pixels per chunk and chunk count for N planes of P pixels (channel-sum kernels): chunks
    of <= _PLANE_CHUNK pixels, so the float64 accumulator stays in L1, and >= _MIN_ITEMS items
    as long as chunks keep >= 1024 pixels (shorter inner loops cost more than idle cores)."""
    cp = max(1, min(P, _PLANE_CHUNK))
    while cp > 1024 and N * ((P + cp - 1) // cp) < _MIN_ITEMS:
        cp = (cp + 1) // 2
    return cp, (P + cp - 1) // cp


@njit(**_OPTS)
def wsum_channel(acts, weights, relu_out, out):
    """out[n] = Σ_k weights[n,k]·acts[n,k], then ReLU if relu_out. Groups of 4 channels are summed
    in float32, the groups accumulated in float64."""
    N, K, h, w = acts.shape
    P = h * w
    A = acts.reshape(N, K, P)
    O = out.reshape(N, P)
    cp, C = _plane_chunks(P, N)
    for it in prange(N * C):
        n = it // C
        p0 = (it - n * C) * cp
        m = min(P, p0 + cp) - p0
        acc = np.zeros(m, np.float64)
        k = 0
        while k + 4 <= K:
            # Four channels per sweep (a quarter of the accumulator traffic), their products and
            # 4-term sum in float32 (8-wide SIMD), then accumulated in float64.
            w0 = weights[n, k]
            w1 = weights[n, k + 1]
            w2 = weights[n, k + 2]
            w3 = weights[n, k + 3]
            a0 = A[n, k, p0:p0 + m]
            a1 = A[n, k + 1, p0:p0 + m]
            a2 = A[n, k + 2, p0:p0 + m]
            a3 = A[n, k + 3, p0:p0 + m]
            for p in range(m):
                acc[p] += np.float64((w0 * a0[p] + w1 * a1[p]) + (w2 * a2[p] + w3 * a3[p]))
            k += 4
        while k < K:
            wk = np.float64(weights[n, k])
            a = A[n, k, p0:p0 + m]
            for p in range(m):
                acc[p] += wk * a[p]
            k += 1
        for p in range(m):
            v = np.float32(acc[p])
            if relu_out != 0 and v < 0:
                v = np.float32(0.0)
            O[n, p0 + p] = v


@njit(**_OPTS)
def wsum_elementwise(acts, weights, relu_inner, relu_out, out):
    """out = Σ_k W⊙A, or Σ_k ReLU(W⊙A) if relu_inner (float64 sums); then ReLU if relu_out."""
    N, K, h, w = acts.shape
    P = h * w
    A = acts.reshape(N, K, P)
    Wt = weights.reshape(N, K, P)
    O = out.reshape(N, P)
    cp, C = _plane_chunks(P, N)
    for it in prange(N * C):
        n = it // C
        p0 = (it - n * C) * cp
        m = min(P, p0 + cp) - p0
        acc = np.zeros(m, np.float64)
        k = 0
        while k + 2 <= K:  # two channels per sweep: half the accumulator traffic
            a0 = A[n, k, p0:p0 + m]
            g0 = Wt[n, k, p0:p0 + m]
            a1 = A[n, k + 1, p0:p0 + m]
            g1 = Wt[n, k + 1, p0:p0 + m]
            if relu_inner != 0:
                for p in range(m):
                    acc[p] += (max(np.float64(g0[p]) * a0[p], 0.0)
                               + max(np.float64(g1[p]) * a1[p], 0.0))
            else:
                for p in range(m):
                    acc[p] += np.float64(g0[p]) * a0[p] + np.float64(g1[p]) * a1[p]
            k += 2
        if k < K:
            a = A[n, k, p0:p0 + m]
            g = Wt[n, k, p0:p0 + m]
            if relu_inner != 0:
                for p in range(m):
                    acc[p] += max(np.float64(g[p]) * a[p], 0.0)
            else:
                for p in range(m):
                    acc[p] += np.float64(g[p]) * a[p]
        for p in range(m):
            v = np.float32(acc[p])
            if relu_out != 0 and v < 0:
                v = np.float32(0.0)
            O[n, p0 + p] = v


# --------------------------------------------------------------------------------------------
# 2. many layers' maps -> one (L, N, H, W) buffer, fused with min-max normalisation
# --------------------------------------------------------------------------------------------
@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _ups_item(it, C, N, rpc, H, offs, hs, ws, yi):
    """Work item ``it`` of the upsampling kernels (C row chunks per map, maps layer-major):
    (layer, image, first and end output rows, flat offset and width of the source map, first
    source row and number of source rows the chunk reads)."""
    m = it // C
    c = it - m * C
    l = m // N
    n = m - l * N
    r0 = c * rpc
    r1 = min(H, r0 + rpc)
    w = ws[l]
    base = offs[l] + n * hs[l] * w
    s0 = yi[l, r0, 0]
    return l, n, r0, r1, base, w, s0, yi[l, r1 - 1, 1] - s0 + 1


@njit(**_OPTS)
def ups_minmax(packed, offs, hs, ws, yi, yl, xi, xl, mn, mx):
    """mn[l,n], mx[l,n] = min/max of layer l's map of image n bilinearly resized to (H, W).

    ``packed`` holds every layer's (N, h_l, w_l) map flattened, layer l starting at ``offs[l]``.
    Nothing is written to an output: the values are recomputed by ``ups_write``.
    """
    L, N = mn.shape
    H = yi.shape[1]
    W = xi.shape[1]
    rpc, C = _row_chunks(H, W, L * N)
    n_items = L * N * C
    pmn = np.empty(n_items, np.float32)
    pmx = np.empty(n_items, np.float32)
    for it in prange(n_items):
        l, n, r0, r1, base, w, s0, ns = _ups_item(it, C, N, rpc, H, offs, hs, ws, yi)
        hx = np.empty((ns, W), np.float32)
        _interp_rows(packed, base, w, s0, ns, xi[l], xl[l], hx)
        lo = np.float32(np.inf)
        hi = np.float32(-np.inf)
        for i in range(r0, r1):
            a = yi[l, i, 0]
            if r0 < i < r1 - 1 and yi[l, i - 1, 0] == a and yi[l, i + 1, 0] == a:
                # Interior row of a run of output rows between the same two source rows: per
                # column, v = ha + lam*(hb - ha) is monotone in lam (also after float rounding,
                # which is monotone), and lam grows along the run, so the run's first and last
                # rows hold its min and max exactly. Upscaling by r skips ~(r-2)/r of the rows.
                continue
            lo, hi = _row_minmax(hx[a - s0], hx[yi[l, i, 1] - s0], yl[l, i], lo, hi)
        pmn[it] = lo
        pmx[it] = hi
    for m in range(L * N):  # serial: tiny, and one parallel region per call
        l = m // N
        n = m - l * N
        lo = pmn[m * C]
        hi = pmx[m * C]
        for c in range(1, C):
            lo = min(lo, pmn[m * C + c])
            hi = max(hi, pmx[m * C + c])
        mn[l, n] = lo
        mx[l, n] = hi


@njit(**_OPTS)
def ups_write(packed, offs, hs, ws, yi, yl, xi, xl, lo, rng, do_norm, out):
    """out[l,n] = bilinear resize of layer l's map of image n; if do_norm: (v-lo)/rng clipped to
    [0,1], or 0 where rng <= 0 (constant map)."""
    L, N, H, W = out.shape
    rpc, C = _row_chunks(H, W, L * N)
    n_items = L * N * C
    for it in prange(n_items):
        l, n, r0, r1, base, w, s0, ns = _ups_item(it, C, N, rpc, H, offs, hs, ws, yi)
        lo_ = lo[l, n]
        rng_ = rng[l, n]
        if do_norm != 0 and not (rng_ > 0):
            for i in range(r0, r1):
                for j in range(W):
                    out[l, n, i, j] = np.float32(0.0)
            continue
        hx = np.empty((ns, W), np.float32)
        _interp_rows(packed, base, w, s0, ns, xi[l], xl[l], hx)
        for i in range(r0, r1):
            a = yi[l, i, 0] - s0
            b = yi[l, i, 1] - s0
            lb = yl[l, i]
            orow = out[l, n, i]
            if do_norm != 0:
                for j in range(W):
                    v = ((hx[a, j] + lb * (hx[b, j] - hx[a, j])) - lo_) / rng_
                    orow[j] = min(max(v, np.float32(0.0)), np.float32(1.0))
            else:
                for j in range(W):
                    orow[j] = hx[a, j] + lb * (hx[b, j] - hx[a, j])


# --------------------------------------------------------------------------------------------
# normalisation of an existing (M, P) buffer (M maps of P pixels)
# --------------------------------------------------------------------------------------------
@njit(**_OPTS)
def maps_minmax(buf, mn, mx):
    """mn[m], mx[m] = min/max over buf[m, :]."""
    M, P = buf.shape
    cp, C = _row_chunks(P, 1, M)
    n_items = M * C
    pmn = np.empty(n_items, np.float32)
    pmx = np.empty(n_items, np.float32)
    for it in prange(n_items):
        m = it // C
        c = it - m * C
        p0 = c * cp
        p1 = min(P, p0 + cp)
        lo = np.float32(np.inf)
        hi = np.float32(-np.inf)
        for p in range(p0, p1):
            v = buf[m, p]
            lo = min(lo, v)
            hi = max(hi, v)
        pmn[it] = lo
        pmx[it] = hi
    for m in range(M):  # serial: tiny, and one parallel region per call
        lo = pmn[m * C]
        hi = pmx[m * C]
        for c in range(1, C):
            lo = min(lo, pmn[m * C + c])
            hi = max(hi, pmx[m * C + c])
        mn[m] = lo
        mx[m] = hi


@njit(**_OPTS)
def maps_scale(buf, lo, rng):
    """In place: buf[m] = clip((buf[m]-lo[m])/rng[m], 0, 1), or 0 where rng[m] <= 0."""
    M, P = buf.shape
    cp, C = _row_chunks(P, 1, M)
    for it in prange(M * C):
        m = it // C
        c = it - m * C
        p0 = c * cp
        p1 = min(P, p0 + cp)
        lo_ = lo[m]
        rng_ = rng[m]
        if rng_ > 0:
            for p in range(p0, p1):
                v = (buf[m, p] - lo_) / rng_
                buf[m, p] = min(max(v, np.float32(0.0)), np.float32(1.0))
        else:
            for p in range(p0, p1):
                buf[m, p] = np.float32(0.0)


# --------------------------------------------------------------------------------------------
# 3. Gradual Extrapolation
# --------------------------------------------------------------------------------------------
@njit(**_OPTS)
def ge_chansum(E, S, smax):
    """S[n] = ReLU(Σ_k E[n,k]) (float64 accumulation); smax[n] = max(S[n]) (>= 0)."""
    N, K, h, w = E.shape
    P = h * w
    A = E.reshape(N, K, P)
    Sf = S.reshape(N, P)
    cp, C = _plane_chunks(P, N)
    pmx = np.zeros(N * C, np.float32)
    for it in prange(N * C):
        n = it // C
        p0 = (it - n * C) * cp
        m = min(P, p0 + cp) - p0
        acc = np.zeros(m, np.float64)
        k = 0
        while k + 4 <= K:  # four channels per sweep: a quarter of the accumulator traffic
            a0 = A[n, k, p0:p0 + m]
            a1 = A[n, k + 1, p0:p0 + m]
            a2 = A[n, k + 2, p0:p0 + m]
            a3 = A[n, k + 3, p0:p0 + m]
            for p in range(m):
                acc[p] += (np.float64(a0[p]) + a1[p]) + (np.float64(a2[p]) + a3[p])
            k += 4
        while k < K:
            a = A[n, k, p0:p0 + m]
            for p in range(m):
                acc[p] += a[p]
            k += 1
        hi = np.float32(0.0)
        for p in range(m):
            v = np.float32(acc[p])
            if not (v > 0):
                v = np.float32(0.0)
            Sf[n, p0 + p] = v
            hi = max(hi, v)
        pmx[it] = hi
    for n in range(N):
        hi = np.float32(0.0)
        for c in range(C):
            hi = max(hi, pmx[n * C + c])
        smax[n] = hi


@njit(**_OPTS)
def ge_resize_mul(Hm, S, smax, yi, yl, xi, xl, out):
    """out[n] = resize(Hm[n] -> S's size) ⊙ (S[m]/smax[m]) if smax[m] > 0 else resize(Hm[n]),
    m = n mod len(S): Hm may stack several layers' maps of the same images along its first axis.

    ``yi, yl, xi, xl`` are (1, h', 2) / (1, w', 2) tables (the layer axis of ``ups_*`` of size 1).
    """
    N, h, w = Hm.shape
    NS = S.shape[0]
    H2 = S.shape[1]
    W2 = S.shape[2]
    rpc, C = _row_chunks(H2, W2, N)
    flat = Hm.reshape(N * h * w)
    for it in prange(N * C):
        n = it // C
        c = it - n * C
        r0 = c * rpc
        r1 = min(H2, r0 + rpc)
        s0 = yi[0, r0, 0]
        ns = yi[0, r1 - 1, 1] - s0 + 1
        hx = np.empty((ns, W2), np.float32)
        _interp_rows(flat, n * h * w, w, s0, ns, xi[0], xl[0], hx)
        m = n % NS
        sm = smax[m]
        for i in range(r0, r1):
            a = yi[0, i, 0] - s0
            b = yi[0, i, 1] - s0
            lb = yl[0, i]
            if sm > 0:
                for j in range(W2):
                    out[n, i, j] = (hx[a, j] + lb * (hx[b, j] - hx[a, j])) * (S[m, i, j] / sm)
            else:
                for j in range(W2):
                    out[n, i, j] = hx[a, j] + lb * (hx[b, j] - hx[a, j])


@njit(**_OPTS)
def ge_stats(Hm, stats):
    """stats[n, :4] = (Σd, Σd², min, max) over image n, d = x - stats[n, 4] (shifted sums, float64;
    the caller puts the shift, Hm[n, 0], in stats[n, 4] so that ge_final may then work in place)."""
    N, P = Hm.shape
    cp, C = _row_chunks(P, 1, N)
    part = np.empty((N * C, 4), np.float64)
    for it in prange(N * C):
        n = it // C
        c = it - n * C
        p0 = c * cp
        p1 = min(P, p0 + cp)
        shift = stats[n, 4]
        s1 = 0.0
        s2 = 0.0
        lo = np.float32(np.inf)
        hi = np.float32(-np.inf)
        for p in range(p0, p1):
            x = Hm[n, p]
            d = np.float64(x) - shift
            s1 += d
            s2 += d * d
            lo = min(lo, x)
            hi = max(hi, x)
        part[it, 0] = s1
        part[it, 1] = s2
        part[it, 2] = lo
        part[it, 3] = hi
    for n in range(N):
        s1 = 0.0
        s2 = 0.0
        lo = np.inf
        hi = -np.inf
        for c in range(C):
            s1 += part[n * C + c, 0]
            s2 += part[n * C + c, 1]
            lo = min(lo, part[n * C + c, 2])
            hi = max(hi, part[n * C + c, 3])
        stats[n, 0] = s1
        stats[n, 1] = s2
        stats[n, 2] = lo
        stats[n, 3] = hi


@njit(cache=True, fastmath=False, nogil=True, error_model="numpy")
def _ge_params(x0, s1, s2, P, lo, hi):
    """(mean, std, cmin, cmax, ok) in float32 from ge_stats' shifted sums; mirrors _cuda."""
    mean64 = np.float64(x0) + s1 / P
    var = 0.0
    if P > 1:
        var = (s2 - s1 * s1 / P) / (P - 1)
    if var < 0:
        var = 0.0
    mean = np.float32(mean64)
    std = np.float32(np.sqrt(var))
    if not (std > 0):
        return mean, std, np.float32(0), np.float32(0), False
    cmin = min(max((np.float32(lo) - mean) / std, np.float32(-1.0)), np.float32(1.0))
    cmax = min(max((np.float32(hi) - mean) / std, np.float32(-1.0)), np.float32(1.0))
    return mean, std, cmin, cmax, cmax > cmin


@njit(**_OPTS)
def ge_final(Hm, stats, out):
    """out[n] = minmax01(clip((Hm[n]-mean)/std, -1, 1)); zeros where std == 0 or constant."""
    N, P = Hm.shape
    cp, C = _row_chunks(P, 1, N)
    for it in prange(N * C):
        n = it // C
        c = it - n * C
        p0 = c * cp
        p1 = min(P, p0 + cp)
        mean, std, cmin, cmax, ok = _ge_params(stats[n, 4], stats[n, 0], stats[n, 1], P,
                                               stats[n, 2], stats[n, 3])
        if not ok:
            for p in range(p0, p1):
                out[n, p] = np.float32(0.0)
            continue
        crng = cmax - cmin
        for p in range(p0, p1):
            z = (Hm[n, p] - mean) / std
            z = min(max(z, np.float32(-1.0)), np.float32(1.0))
            v = (z - cmin) / crng
            out[n, p] = min(max(v, np.float32(0.0)), np.float32(1.0))


# --------------------------------------------------------------------------------------------
# power sums (Smooth Grad-CAM++ derivatives, docs/methods.md#smoothgradcampp)
# --------------------------------------------------------------------------------------------
_POWER_BLOCK = 8192  # columns per parallel work item


@njit(**_OPTS)
def power_sums(g, s1, s2, s3):
    """s_p[j] += Σ_t g[t, j]^p, p = 1, 2, 3: float32 (m, L) in, float64 (L,) sums, one pass over
    g with no temporaries; parallel over blocks of columns, each block reading its rows in order."""
    m, size = g.shape
    for item in prange((size + _POWER_BLOCK - 1) // _POWER_BLOCK):
        lo = item * _POWER_BLOCK
        hi = min(lo + _POWER_BLOCK, size)
        for t in range(m):
            for j in range(lo, hi):
                v = np.float64(g[t, j])
                v2 = v * v
                s1[j] += v
                s2[j] += v2
                s3[j] += v2 * v

