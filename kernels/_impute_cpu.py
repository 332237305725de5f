"""CPU kernels of ROAD's imputation solver (:mod:`camonnx.road_imputation`): one job, the
solver's stencil and vector operations on float32 C-contiguous numpy arrays.

Serial ``numba.njit(cache=True, nogil=True, error_model="numpy")`` kernels: the solver runs one
mask per thread on its own pool (:func:`camonnx.road_imputation.solve`), so the kernels release
the GIL and never open a parallel region. Why not ``parallel=True`` like ``_cpu.py``: a solve
makes ~200 kernel calls per mask, and on a loaded machine each OpenMP parallel region (numba's or
torch's) was measured at ~8-12 ms of thread wake-up, more than the work; the pool pays that once
per solve. On CPU, torch's depthwise conv2d runs ~50-100 ns per element against ~1-2 for these
stencils.

What they compute (B masks, C channels, h×w grid; docs/metrics.md#solver):

* :func:`k_fine`: the fine level A u = m ⊙ (s ⊙ u − W ∗ u) (m the removed mask, s the
  neighbour-weight sums, W the constant 3×3 weights 1/6 edge, 1/12 diagonal, zero outside the
  image); :func:`k_stencil`: a variable Galerkin 9-point stencil S. Both in three modes:
  0: out = A u; 1: out = b − A u; 2: out = u + ω D⁻¹ (b − A u) (a Jacobi sweep);
* :func:`k_true_residual`: m ⊙ (W ∗ y − s ⊙ y) accumulated in float64 (at CG's start);
* :func:`k_restrict` (Pᵀ) and :func:`k_prolong_add` (u += active ⊙ P e): bilinear transfer
  between levels; :func:`k_galerkin_stencil`: the Galerkin stencil and its l1-Jacobi diagonal
  read off the coloured probes; :func:`k_coarsen`, :func:`k_spans`: a coarse level's active
  points and every level's active column spans;
* :func:`k_scale`, :func:`k_dot`, :func:`k_error_dot`, :func:`k_update`, :func:`k_direction`:
  the CG vector operations; :func:`k_dense`, :func:`k_ldl_inverse`: the coarsest level's exact
  solve; :func:`k_compose`: x ⊙ (1 − m) + u; :func:`k_add_noise`: the imputation noise.

Every kernel with an ``rng`` argument (B, h, 2) touches only each row's active column span
[first, last + 1) (:func:`camonnx.road_multigrid.active_ranges`): every solver vector is zero
off the active set, so the rest is never read or written.

No CUDA twin: on a GPU the solver runs as torch tensor operations on the whole batch
(:class:`camonnx.road_backends.TorchOps`), which is fast there; these kernels are the CPU
backend (:class:`camonnx.road_backends.NumbaOps`); on a GPU the noise is one torch
``addcmul_`` of the fields copied over once.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_NB = dict(cache=True, fastmath=False, nogil=True, error_model="numpy")
#: Span loops index with unsigned integers (``j = _U(j0) + _U(t)``): a signed index that may be
#: zero keeps numba's negative-index wrap-around test in the loop, which then does not
#: vectorise (measured 5× slower for k_prolong_add, 4.5× for k_update).
_U = np.uint64
_ONE = np.uint64(1)


#: The fine level's neighbour weights (docs/metrics.md#imputation): edge 1/6, diagonal 1/12.
E = np.float32(1.0 / 6.0)
D = np.float32(1.0 / 12.0)

# How the kernels are written (each choice measured on 224² ROAD masks, one thread):
# * Element access by 4-D index (``u[bi, c, i, j]``), never through per-row views: creating a
#   row view costs NRT reference counting on every row and channel, which made the stencils
#   3× slower (1.6 against 0.5 ns per element for k_fine). Span loops use unsigned indices
#   (``_U``, above).
# * Inner loops are written ``for t in range(n): j = lo + t`` with ``lo >= 1`` visible to LLVM:
#   numba's ``range(lo, hi)`` with a run-time start does not vectorise, and an index that might
#   be negative keeps numba's wrap-around test in the loop (no vectorisation: 6.5 ns per element).
# * The stencils run every row through one vectorised loop over its interior columns, the
#   neighbour rows clamped into the image (``im``, ``ip``) and zeroed by 0/1 flags on the first
#   and last rows; only the first and last columns are done apart, by the same expression with
#   clamped columns. The mode (A u, b − A u, Jacobi sweep) is branched on once per row, so the
#   three loops repeat one expression on purpose: each stays branch-free.
# * k_fine is k_stencil with the fine level's constant weights and the mask and neighbour sums
#   in place of 9 stored stencil planes: the most-called operator reads 3 arrays instead of 9.
#   k_true_residual is the same stencil again, accumulated in float64.
# * k_error_dot fuses the stopping test (a count of points above tol) and the dot product r·z
#   into one pass over z and r.
# * Every ``rng`` kernel opens with the same span loop (``for bi``, ``for i``, ``j0, j1 =
#   rng[bi, i]``): a shared iterator would need a function argument or a generator, which numba
#   does not inline into a vectorised loop.


@njit(**_NB, inline="always")
def _row(rng, bi, i, h, w):
    """Row i's active span [j0, j1), its neighbour rows clamped into the image (im, ip) and the
    interior part [lo, hi) of the span (columns 1 … w − 2, so that j ± 1 needs no test)."""
    j0 = rng[bi, i, 0]
    j1 = rng[bi, i, 1]
    lo = max(j0, 1)
    return j0, j1, max(i - 1, 0), min(i + 1, h - 1), lo, max(min(j1, w - 1), lo)


@njit(**_NB, inline="always")
def _wsum(u, bi, c, i, j, im, ip, fu, fd, jm, jp, fl, fr):
    """W ∗ u at (i, j) with neighbour rows im, ip and columns jm, jp clamped into the image and
    the flags fu, fd, fl, fr (1.0 or 0.0) zeroing the neighbours that lie outside."""
    return (E * (fu * u[bi, c, im, j] + fd * u[bi, c, ip, j] + fl * u[bi, c, i, jm] + fr * u[bi, c, i, jp])
            + D * (fu * (fl * u[bi, c, im, jm] + fr * u[bi, c, im, jp])
                   + fd * (fl * u[bi, c, ip, jm] + fr * u[bi, c, ip, jp])))


@njit(**_NB, inline="always")
def _finish(out, u, b, dinv, bi, c, i, j, acc, mode, om):
    """Write one pixel of a stencil kernel from acc = (A u)[p]: mode 0: A u; 1: b − A u; 2: u + ω D⁻¹ (b − A u)."""
    if mode == 0:
        out[bi, c, i, j] = acc
    elif mode == 1:
        out[bi, c, i, j] = b[bi, c, i, j] - acc
    else:
        out[bi, c, i, j] = u[bi, c, i, j] + om * dinv[bi, 0, i, j] * (b[bi, c, i, j] - acc)


@njit(**_NB)
def k_fine(m, s, u, b, dinv, out, mode, omega, rng):
    """The fine level's A u = m ⊙ (s ⊙ u − W ∗ u), zero outside the image, on the active
    spans; modes as :func:`k_stencil`. m, dinv (B, 1, h, w); s (h, w)."""
    nb, nc, h, w = u.shape
    om = np.float32(omega)
    one = np.float32(1.0)
    for bi in range(nb):
        for i in range(h):
            j0, j1, im, ip, lo, hi = _row(rng, bi, i, h, w)
            if j0 >= j1:
                continue
            fu = np.float32(i > 0)
            fd = np.float32(i < h - 1)
            for c in range(nc):
                if mode == 0:
                    for t in range(hi - lo):
                        j = lo + t
                        out[bi, c, i, j] = m[bi, 0, i, j] * (s[i, j] * u[bi, c, i, j]
                                                             - _wsum(u, bi, c, i, j, im, ip, fu, fd, j - 1, j + 1, one, one))
                elif mode == 1:
                    for t in range(hi - lo):
                        j = lo + t
                        out[bi, c, i, j] = b[bi, c, i, j] - m[bi, 0, i, j] * (
                            s[i, j] * u[bi, c, i, j] - _wsum(u, bi, c, i, j, im, ip, fu, fd, j - 1, j + 1, one, one))
                else:
                    for t in range(hi - lo):
                        j = lo + t
                        acc = m[bi, 0, i, j] * (s[i, j] * u[bi, c, i, j]
                                                - _wsum(u, bi, c, i, j, im, ip, fu, fd, j - 1, j + 1, one, one))
                        out[bi, c, i, j] = u[bi, c, i, j] + om * dinv[bi, 0, i, j] * (b[bi, c, i, j] - acc)
                for k in range(2):  # the first and last columns
                    j = 0 if k == 0 else w - 1
                    if j0 <= j < j1 and (k == 0 or w > 1):
                        jm = max(j - 1, 0)
                        jp = min(j + 1, w - 1)
                        acc = m[bi, 0, i, j] * (s[i, j] * u[bi, c, i, j] - _wsum(
                            u, bi, c, i, j, im, ip, fu, fd, jm, jp, np.float32(j > 0), np.float32(j < w - 1)))
                        _finish(out, u, b, dinv, bi, c, i, j, acc, mode, om)


@njit(**_NB, inline="always")
def _sten(S, u, bi, c, i, j, im, ip, jm, jp):
    """Σ_k S_k u(p + offset_k) at p = (i, j), neighbour rows and columns clamped (S is zero
    toward outside neighbours, so a clamped value is multiplied by 0)."""
    return (S[bi, 0, i, j] * u[bi, c, im, jm] + S[bi, 1, i, j] * u[bi, c, im, j] + S[bi, 2, i, j] * u[bi, c, im, jp]
            + S[bi, 3, i, j] * u[bi, c, i, jm] + S[bi, 4, i, j] * u[bi, c, i, j] + S[bi, 5, i, j] * u[bi, c, i, jp]
            + S[bi, 6, i, j] * u[bi, c, ip, jm] + S[bi, 7, i, j] * u[bi, c, ip, j] + S[bi, 8, i, j] * u[bi, c, ip, jp])


@njit(**_NB)
def k_stencil(S, u, b, dinv, out, mode, omega, rng):
    """A variable 9-point stencil S (B, 9, h, w) on the active spans ``rng`` (B, h, 2).
    mode 0: out = A u; 1: out = b − A u; 2: out = u + ω D⁻¹ (b − A u)."""
    nb, nc, h, w = u.shape
    om = np.float32(omega)
    for bi in range(nb):
        for i in range(h):
            j0, j1, im, ip, lo, hi = _row(rng, bi, i, h, w)
            if j0 >= j1:
                continue
            for c in range(nc):
                if mode == 0:
                    for t in range(hi - lo):
                        j = lo + t
                        out[bi, c, i, j] = _sten(S, u, bi, c, i, j, im, ip, j - 1, j + 1)
                elif mode == 1:
                    for t in range(hi - lo):
                        j = lo + t
                        out[bi, c, i, j] = b[bi, c, i, j] - _sten(S, u, bi, c, i, j, im, ip, j - 1, j + 1)
                else:
                    for t in range(hi - lo):
                        j = lo + t
                        acc = _sten(S, u, bi, c, i, j, im, ip, j - 1, j + 1)
                        out[bi, c, i, j] = u[bi, c, i, j] + om * dinv[bi, 0, i, j] * (b[bi, c, i, j] - acc)
                for k in range(2):  # the first and last columns
                    j = 0 if k == 0 else w - 1
                    if j0 <= j < j1 and (k == 0 or w > 1):
                        acc = _sten(S, u, bi, c, i, j, im, ip, max(j - 1, 0), min(j + 1, w - 1))
                        _finish(out, u, b, dinv, bi, c, i, j, acc, mode, om)


@njit(**_NB, inline="always")
def _wsum64(y, bi, c, i, j, im, ip, fu, fd, jm, jp, fl, fr):
    """:func:`_wsum` accumulated in float64."""
    e = 1.0 / 6.0
    d = 1.0 / 12.0
    return (e * (fu * np.float64(y[bi, c, im, j]) + fd * np.float64(y[bi, c, ip, j])
                 + fl * np.float64(y[bi, c, i, jm]) + fr * np.float64(y[bi, c, i, jp]))
            + d * (fu * (fl * np.float64(y[bi, c, im, jm]) + fr * np.float64(y[bi, c, im, jp]))
                   + fd * (fl * np.float64(y[bi, c, ip, jm]) + fr * np.float64(y[bi, c, ip, jp]))))


@njit(**_NB)
def k_true_residual(m, s, y, out, rng):
    """out = m ⊙ (W ∗ y − s ⊙ y) on the active spans, accumulated in float64 (y: the full
    imputed image; zero outside the image)."""
    nb, nc, h, w = y.shape
    for bi in range(nb):
        for i in range(h):
            j0, j1, im, ip, lo, hi = _row(rng, bi, i, h, w)
            if j0 >= j1:
                continue
            fu = np.float64(i > 0)
            fd = np.float64(i < h - 1)
            for c in range(nc):
                for t in range(hi - lo):
                    j = lo + t
                    out[bi, c, i, j] = np.float32(m[bi, 0, i, j] * (
                        _wsum64(y, bi, c, i, j, im, ip, fu, fd, j - 1, j + 1, 1.0, 1.0)
                        - np.float64(s[i, j]) * np.float64(y[bi, c, i, j])))
                for k in range(2):
                    j = 0 if k == 0 else w - 1
                    if j0 <= j < j1 and (k == 0 or w > 1):
                        out[bi, c, i, j] = np.float32(m[bi, 0, i, j] * (
                            _wsum64(y, bi, c, i, j, im, ip, fu, fd, max(j - 1, 0), min(j + 1, w - 1),
                                    np.float64(j > 0), np.float64(j < w - 1))
                            - np.float64(s[i, j]) * np.float64(y[bi, c, i, j])))


@njit(**_NB)
def k_restrict(r, out, rng):
    """out = Pᵀ r on the coarse active spans: out[q] = Σ_{|a|,|b| ≤ 1} w_a w_b r[2q + (a, b)],
    w_0 = 1, w_±1 = 1/2, except that on an even-sized axis the last fine row (column) counts
    fully toward the last coarse one (the transpose of k_prolong_add). Separable: the three
    fine rows are first combined into ``v`` (vectorised), then v is pooled along the row."""
    nb, nc, h, w = r.shape
    hc, wc = out.shape[2], out.shape[3]
    half = np.float32(0.5)
    v = np.zeros(w + 2, np.float32)  # v[j + 1] = combined fine column j; v[0] = v[w + 1] = 0
    last_w = np.float32(1.0) if w % 2 == 0 else half
    for bi in range(nb):
        for qi in range(hc):
            j0 = rng[bi, qi, 0]
            j1 = rng[bi, qi, 1]
            if j0 >= j1:
                continue
            f0 = max(2 * j0 - 1, 0)
            f1 = min(2 * j1, w)  # fine columns [f0, f1) are needed
            i = 2 * qi
            il = max(i - 1, 0)
            wlow = half if i - 1 >= 0 else np.float32(0.0)
            ihigh = min(i + 1, h - 1)
            whigh = np.float32(0.0)
            if i + 1 < h:
                whigh = np.float32(1.0) if (i + 1 == h - 1 and h % 2 == 0) else half
            for c in range(nc):
                for t in range(_U(f1 - f0)):
                    j = _U(f0) + _U(t)
                    v[j + _ONE] = r[bi, c, i, j] + wlow * r[bi, c, il, j] + whigh * r[bi, c, ihigh, j]
                for t in range(_U(j1 - j0)):
                    qj = _U(j0) + _U(t)
                    k = qj + qj
                    out[bi, c, qi, qj] = v[k + _ONE] + half * v[k] + half * v[k + _ONE + _ONE]
                if j1 == wc and w % 2 == 0:  # the last fine column counts fully
                    out[bi, c, qi, wc - 1] += (last_w - half) * v[w]


@njit(**_NB)
def k_prolong_add(e, active, u, rng):
    """u += active ⊙ P e on the fine active spans (bilinear; the last row/column of an
    even-sized axis copies the last coarse one). Separable: the two coarse rows are first
    blended into ``v`` (vectorised), then interpolated along the row."""
    nb, nc, h, w = u.shape
    hc, wc = e.shape[2], e.shape[3]
    half = np.float32(0.5)
    v = np.zeros(wc + 1, np.float32)
    for bi in range(nb):
        for i in range(h):
            j0 = rng[bi, i, 0]
            j1 = rng[bi, i, 1]
            if j0 >= j1:
                continue
            i0 = i // 2
            if i % 2 == 0:
                i1, wi0, wi1 = i0, np.float32(1.0), np.float32(0.0)
            elif i0 + 1 < hc:
                i1, wi0, wi1 = i0 + 1, half, half
            else:
                i1, wi0, wi1 = i0, np.float32(1.0), np.float32(0.0)
            c0 = _U(j0 // 2)
            c1 = _U(min((j1 - 1) // 2 + 2, wc))  # coarse columns [c0, c1) are needed
            p0 = _U((j0 + 1) // 2)
            p1 = _U(j1 // 2)
            for c in range(nc):
                for t in range(c1 - c0):
                    jc = c0 + _U(t)
                    v[jc] = wi0 * e[bi, c, i0, jc] + wi1 * e[bi, c, i1, jc]
                v[wc] = v[wc - 1]  # past the last coarse column: copy (even-sized axis)
                # fine columns in (even, odd) pairs 2jc, 2jc + 1; a lone odd first and a lone
                # even last column apart (a branch-free loop: 1.0 against 1.4 ns per element)
                if j0 % 2 == 1:
                    jc = j0 // 2
                    u[bi, c, i, j0] += active[bi, 0, i, j0] * half * (v[jc] + v[jc + 1])
                for t in range(p1 - p0):
                    jc = p0 + _U(t)
                    j = jc + jc
                    u[bi, c, i, j] += active[bi, 0, i, j] * v[jc]
                    u[bi, c, i, j + _ONE] += active[bi, 0, i, j + _ONE] * half * (v[jc] + v[jc + _ONE])
                if j1 % 2 == 1 and (j1 - 1) // 2 >= p1:
                    u[bi, c, i, j1 - 1] += active[bi, 0, i, j1 - 1] * v[(j1 - 1) // 2]


@njit(**_NB)
def k_scale(dinv, b, omega, out, rng):
    """out = ω D⁻¹ b on the active spans."""
    nb, nc, h, w = b.shape
    om = np.float32(omega)
    for bi in range(nb):
        for i in range(h):
            j0 = rng[bi, i, 0]
            j1 = rng[bi, i, 1]
            for c in range(nc):
                for t in range(_U(j1 - j0)):
                    j = _U(j0) + _U(t)
                    out[bi, c, i, j] = om * dinv[bi, 0, i, j] * b[bi, c, i, j]


@njit(cache=True, fastmath={"reassoc", "contract"}, nogil=True, error_model="numpy")
def k_dot(a, b, out, rng):
    """out[b, c] = Σ a·b over the active spans (float64 accumulation)."""
    nb, nc, h, w = a.shape
    for bi in range(nb):
        for c in range(nc):
            acc = 0.0
            for i in range(h):
                j0 = rng[bi, i, 0]
                j1 = rng[bi, i, 1]
                part = 0.0
                for t in range(_U(j1 - j0)):
                    j = _U(j0) + _U(t)
                    part += np.float64(a[bi, c, i, j]) * np.float64(b[bi, c, i, j])
                acc += part
            out[bi, c] = acc


@njit(cache=True, fastmath={"reassoc", "contract"}, nogil=True, error_model="numpy")
def k_error_dot(z, r, dinv, tol, over, dot, rng):
    """over[b, c] = how many active points have |z| > tol or |dinv ⊙ r| > tol, and dot[b, c] =
    Σ r·z (float64 accumulation), in one pass over z and r. A count, not the max-norm: a max
    reduction does not vectorise (numba keeps Python's NaN-aware max), a sum of comparisons
    does (3.5× faster); :func:`k_error_max` gives the max-norm once, at the end."""
    nb, nc, h, w = z.shape
    tl = np.float32(tol)
    for bi in range(nb):
        for c in range(nc):
            count = 0
            acc = 0.0
            for i in range(h):
                j0 = _U(rng[bi, i, 0])
                n = _U(rng[bi, i, 1]) - j0
                part = 0
                sub = 0.0
                for t in range(n):
                    j = j0 + _U(t)
                    zj = z[bi, c, i, j]
                    rj = r[bi, c, i, j]
                    part += (abs(zj) > tl) | (abs(dinv[bi, 0, i, j] * rj) > tl)
                    sub += np.float64(zj) * np.float64(rj)
                count += part
                acc += sub
            over[bi, c] = count
            dot[bi, c] = acc


@njit(**_NB)
def k_error_max(z, r, dinv, err, rng):
    """err[b, c] = max over the active spans of max(|z|, |dinv ⊙ r|)."""
    nb, nc, h, w = z.shape
    for bi in range(nb):
        for c in range(nc):
            mx = np.float32(0.0)
            for i in range(h):
                for j in range(rng[bi, i, 0], rng[bi, i, 1]):
                    mx = max(mx, max(abs(z[bi, c, i, j]), abs(dinv[bi, 0, i, j] * r[bi, c, i, j])))
            err[bi, c] = mx


@njit(**_NB)
def k_update(x, r, p, q, alpha, rng):
    """x += α p; r −= α q on the active spans (α per (B, C))."""
    nb, nc, h, w = x.shape
    for bi in range(nb):
        for c in range(nc):
            al = np.float32(alpha[bi, c])
            if al == 0:
                continue
            for i in range(h):
                j0 = rng[bi, i, 0]
                j1 = rng[bi, i, 1]
                for t in range(_U(j1 - j0)):
                    j = _U(j0) + _U(t)
                    x[bi, c, i, j] += al * p[bi, c, i, j]
                    r[bi, c, i, j] -= al * q[bi, c, i, j]


@njit(**_NB)
def k_direction(p, z, beta, rng):
    """p = z + β p on the active spans."""
    nb, nc, h, w = p.shape
    for bi in range(nb):
        for c in range(nc):
            be = np.float32(beta[bi, c])
            for i in range(h):
                j0 = rng[bi, i, 0]
                j1 = rng[bi, i, 1]
                for t in range(_U(j1 - j0)):
                    j = _U(j0) + _U(t)
                    p[bi, c, i, j] = z[bi, c, i, j] + be * p[bi, c, i, j]


@njit(**_NB)
def k_dense(inverse, rhs, out):
    """out[b, c] = inverse[b] @ rhs[b, c] (flattened planes; the inverse is symmetric)."""
    nb, nc, h, w = rhs.shape
    n = h * w
    for bi in range(nb):
        inv = inverse[bi]
        for c in range(nc):
            x = rhs[bi, c].reshape(-1)
            y = out[bi, c].reshape(-1)
            for i in range(n):
                acc = np.float32(0.0)
                for j in range(n):
                    acc += inv[i, j] * x[j]
                y[i] = acc


@njit(**_NB)
def k_compose(x, m, u, out, rng):
    """out = x ⊙ (1 − m) + u on the spans ``rng``."""
    nb, nc, h, w = x.shape
    one = np.float32(1.0)
    for bi in range(nb):
        for i in range(h):
            j0 = _U(rng[bi, i, 0])
            n = _U(rng[bi, i, 1]) - j0
            for c in range(nc):
                for t in range(n):
                    j = j0 + _U(t)
                    out[bi, c, i, j] = x[bi, c, i, j] * (one - m[bi, 0, i, j]) + u[bi, c, i, j]


@njit(**_NB)
def k_ldl_inverse(A, out, rtol):
    """out[b] = a symmetric generalised inverse of the symmetric positive semi-definite A[b]:
    LDLᵀ without pivoting, dropping pivots ≤ rtol · max(diag) (for a PSD matrix a zero pivot
    comes with a zero column, so dropping is exact), then L⁻ᵀ D⁺ L⁻¹.

    Why not ``inv``: where two coarse points share their only active fine point, bilinear P
    loses rank and the Galerkin A_c is singular -- but consistent (its right-hand sides Pᵀr
    lie in range(Pᵀ) = range(A_c)), so any solution is a valid correction. Why not LAPACK
    (``pinv``/``eigh``): called from the solver's thread pool, the BLAS threads of two
    workers fought each other (5-10× slower); this serial loop costs n³ flops, n ≤ 64."""
    nb, n, _ = A.shape
    for bi in range(nb):
        L = np.eye(n)
        d = np.zeros(n)
        scale = 0.0
        for i in range(n):
            scale = max(scale, A[bi, i, i])
        cut = rtol * scale
        for j in range(n):
            dj = A[bi, j, j]
            for k in range(j):
                dj -= L[j, k] * L[j, k] * d[k]
            if dj <= cut:
                d[j] = 0.0
                for i in range(j + 1, n):
                    L[i, j] = 0.0
                continue
            d[j] = dj
            for i in range(j + 1, n):
                acc = A[bi, i, j]
                for k in range(j):
                    acc -= L[i, k] * L[j, k] * d[k]
                L[i, j] = acc / dj
        # M = L⁻¹ (unit lower triangular)
        M = np.eye(n)
        for i in range(n):
            for j in range(i):
                acc = 0.0
                for k in range(j, i):
                    acc -= L[i, k] * M[k, j]
                M[i, j] = acc
        # out = Mᵀ D⁺ M
        for i in range(n):
            for j in range(i + 1):
                acc = 0.0
                for k in range(max(i, j), n):
                    if d[k] > 0:
                        acc += M[k, i] * M[k, j] / d[k]
                out[bi, i, j] = acc
                out[bi, j, i] = acc


@njit(**_NB)
def k_galerkin_stencil(y, index, structural, out, dinv, active):
    """The Galerkin level read off the probes: out[b, k, q] = y[b, index[k, q], q] (the
    stencil S); active = 1 where S₄ > 0 and ``structural`` (B, h, w), else 0; dinv = 1 /
    Σ_k |S_k| (the l1-Jacobi diagonal) on active points, else 0. ``index[k, q]`` is the colour
    of q + offset_k, periodic with period 3 along a row: each (k, row) is copied as three
    stride-3 runs of one probe each (no gather), then |S| summed plane by plane (vectorised)."""
    nb, nk, h, w = y.shape
    l1 = np.zeros(w, np.float32)
    for bi in range(nb):
        for i in range(h):
            for k in range(nk):
                for phase in range(min(3, w)):
                    colour = index[k, i, phase]
                    for j in range(phase, w, 3):
                        out[bi, k, i, j] = y[bi, colour, i, j]
            for j in range(w):
                l1[j] = 0.0
            for k in range(nk):
                for j in range(w):
                    l1[j] += abs(out[bi, k, i, j])
            for j in range(w):
                if out[bi, 4, i, j] > 0 and structural[bi, i, j]:
                    active[bi, 0, i, j] = 1.0
                    dinv[bi, 0, i, j] = np.float32(1.0) / l1[j]
                else:
                    active[bi, 0, i, j] = 0.0
                    dinv[bi, 0, i, j] = 0.0


@njit(**_NB)
def k_coarsen(active, out):
    """out[b, q] = any active[b, p] over the fine points 2q − 1 … 2q + 1 of each axis (clipped
    to the grid): the coarse points whose interpolation support holds an active point.
    active (B, h, w) (nonzero = active), out (B, ceil(h/2), ceil(w/2)) bool. Separable: the
    three fine rows are first combined into ``v``, then v is pooled along the row."""
    nb, h, w = active.shape
    hc, wc = out.shape[1], out.shape[2]
    v = np.zeros(w + 2, np.bool_)  # v[j + 1] = fine column j of any of the three rows
    for bi in range(nb):
        for qi in range(hc):
            i = 2 * qi
            il = max(i - 1, 0)
            ih = min(i + 1, h - 1)
            for t in range(w):
                v[t + 1] = (active[bi, il, t] != 0) | (active[bi, i, t] != 0) | (active[bi, ih, t] != 0)
            for qj in range(wc):
                out[bi, qi, qj] = v[2 * qj] | v[2 * qj + 1] | v[2 * qj + 2]


@njit(**_NB)
def k_spans(active, rng):
    """rng[b, i] = [first, last + 1) of the nonzero columns of row i of active (B, h, w),
    (0, 0) for an empty row."""
    nb, h, w = active.shape
    for bi in range(nb):
        for i in range(h):
            first = -1
            last = -1
            for j in range(w):
                if active[bi, i, j]:
                    if first < 0:
                        first = j
                    last = j
            if first < 0:
                rng[bi, i, 0] = 0
                rng[bi, i, 1] = 0
            else:
                rng[bi, i, 0] = first
                rng[bi, i, 1] = last + 1


@njit(**_NB)
def k_add_noise(imgs, masks, fields, which, std):
    """imgs[b, c, p] += std · fields[which[b], c, p] at the removed pixels p of masks[b].
    imgs (B, C, h, w), masks (B, h, w) bool, fields (F, C, h, w), which (B,) int64."""
    nb, nc, h, w = imgs.shape
    for bi in range(nb):
        f = which[bi]
        for c in range(nc):
            for i in range(h):
                for j in range(w):  # branch-free: vectorised
                    imgs[bi, c, i, j] += std * np.float32(masks[bi, i, j]) * fields[f, c, i, j]
