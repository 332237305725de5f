"""The CPU imputation solver's V-cycle and full-multigrid solve, each compiled as one call.

One job: run :meth:`camonnx.road_multigrid.Multigrid.vcycle` and ``.fmg`` for the numba backend
without going back to Python between levels. The algorithm is the same, operation for
operation, as the backend-neutral version in :mod:`camonnx.road_multigrid` (which the torch
backend runs); these functions only string the kernels of ``_impute_cpu`` together. Why: a
V-cycle on a 224² mask is ~26 kernel calls over six levels, ~190 calls per solve, and from
Python each call (method lookup, numba's argument type checks) cost ~4 µs, about 10 % of a
solve; in one compiled call the levels run back to back.

The levels arrive as homogeneous tuples indexed by level (numba types them as ``UniTuple``s,
which accept a run-time index): ``S`` (9-point stencils; level 0's entry is unused, the fine
level is ``m``, ``s``), ``dinv``, ``active``, ``rng`` (active spans), and the four work buffers
of each level ``rhs``, ``ua``, ``ub``, ``res`` (rhs, two iterates, residual; zero off the active
spans). ``omegas[l]`` is level l's Jacobi damping.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._impute_cpu import _U, k_dense, k_fine, k_prolong_add, k_restrict, k_scale, k_stencil

_NB = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_NB)
def _op(level, m, s, S, u, b, dinv, out, mode, omega, rng):
    """Level ``level``'s operator in ``mode`` (0: A u; 1: b − A u; 2: a Jacobi sweep)."""
    if level == 0:
        k_fine(m, s, u, b, dinv, out, mode, omega, rng)
    else:
        k_stencil(S, u, b, dinv, out, mode, omega, rng)


@njit(**_NB)
def k_vcycle(top, rhs_top, m, s, S, dinv, active, rng, rhs, ua, ub, res, inverse, omegas, sweeps):
    """z ≈ A⁻¹ rhs_top by one V-cycle from zero on levels top … n − 1. Returns which buffer of
    level ``top`` holds z: 0 = ``ua[top]``, 1 = ``ub[top]`` (rhs_top is kept).

    Down each level l: u = ω D⁻¹ b (the first sweep from zero), ``sweeps`` − 1 more sweeps,
    r = b − A u, b_{l+1} = Pᵀ r; the coarsest level solved exactly (dense inverse); up each
    level: u += active ⊙ P e, then ``sweeps`` sweeps."""
    n = len(dinv)
    bottom = n - 1
    which = np.zeros(n, np.int64)   # per level: 0 = the iterate is in ua, 1 = in ub
    for l in range(top, bottom):
        b = rhs_top if l == top else rhs[l]
        u = ua[l]
        k_scale(dinv[l], b, omegas[l], u, rng[l])
        cur = 0
        for _ in range(sweeps - 1):
            src = ua[l] if cur == 0 else ub[l]
            dst = ub[l] if cur == 0 else ua[l]
            _op(l, m, s, S[l], src, b, dinv[l], dst, 2, omegas[l], rng[l])
            cur = 1 - cur
        src = ua[l] if cur == 0 else ub[l]
        _op(l, m, s, S[l], src, b, dinv[l], res[l], 1, 1.0, rng[l])
        k_restrict(res[l], rhs[l + 1], rng[l + 1])
        which[l] = cur
    k_dense(inverse, rhs_top if top == bottom else rhs[bottom], ua[bottom])
    which[bottom] = 0
    for l in range(bottom - 1, top - 1, -1):
        b = rhs_top if l == top else rhs[l]
        e = ua[l + 1] if which[l + 1] == 0 else ub[l + 1]
        cur = which[l]
        k_prolong_add(e, active[l], ua[l] if cur == 0 else ub[l], rng[l])
        for _ in range(sweeps):
            src = ua[l] if cur == 0 else ub[l]
            dst = ub[l] if cur == 0 else ua[l]
            _op(l, m, s, S[l], src, b, dinv[l], dst, 2, omegas[l], rng[l])
            cur = 1 - cur
        which[l] = cur
    return which[top]


@njit(**_NB)
def k_fmg(rhs_top, x, xs, m, s, S, dinv, active, rng, rhs, ua, ub, res, inverse, omegas, sweeps):
    """x ≈ A⁻¹ rhs_top by full multigrid (x given zero; rhs_top is kept): b_{l+1} = Pᵀ b_l down
    every level, the coarsest solved exactly, then from coarse to fine x_l = P x_{l+1} and one
    V-cycle on its residual, x_l += V_l(b_l − A_l x_l). ``xs[l]`` (l ≥ 1) are zeroed buffers
    for the coarse solutions (``xs[0]`` is unused: level 0's is x)."""
    n = len(dinv)
    for l in range(1, n):
        k_restrict(rhs_top if l == 1 else rhs[l - 1], rhs[l], rng[l])
    k_dense(inverse, rhs[n - 1] if n > 1 else rhs_top, x if n == 1 else xs[n - 1])
    for l in range(n - 2, -1, -1):
        xl = x if l == 0 else xs[l]
        k_prolong_add(xs[l + 1], active[l], xl, rng[l])
        b = rhs_top if l == 0 else rhs[l]
        # the residual of level l into rhs[l]: in place when l > 0 (b_l is not needed again);
        # at level 0 rhs[0] is free (the right-hand side is rhs_top)
        _op(l, m, s, S[l], xl, b, dinv[l], rhs[l], 1, 1.0, rng[l])
        z = k_vcycle(l, rhs[l], m, s, S, dinv, active, rng, rhs, ua, ub, res, inverse, omegas,
                     sweeps)
        zl = ua[l] if z == 0 else ub[l]
        _add(xl, zl, rng[l])


@njit(**_NB)
def _add(x, z, rng):
    """x += z on the active spans."""
    nb, nc, h, w = x.shape
    for bi in range(nb):
        for i in range(h):
            j0 = rng[bi, i, 0]
            j1 = rng[bi, i, 1]
            for c in range(nc):
                for t in range(_U(j1 - j0)):
                    j = _U(j0) + _U(t)
                    x[bi, c, i, j] += z[bi, c, i, j]
