"""The multigrid of the imputation's CG: its V-cycle preconditioner and its full-multigrid
start (docs/metrics.md#solver).

One job: build the level hierarchy for a batch of removed masks (B, H, W) and apply one V-cycle,
z ≈ A⁻¹ r (:meth:`Multigrid.vcycle`), or solve by full multigrid (:meth:`Multigrid.fmg`, CG's
starting point), with the operations of either backend (:mod:`camonnx.road_backends`):

* level 0 is the 3×3 stencil of :mod:`camonnx.road_system` on the full H×W grid, applied as a
  masked convolution A u = m ⊙ (s ⊙ u − W ∗ u) (m the removed mask; every solver vector vanishes
  off m, so the kept pixels drop out);
* prolongation P = bilinear interpolation from a grid of ceil(h/2)×ceil(w/2) points, restricted
  to the active points of the finer level. On an even-sized axis the last fine row copies the
  last coarse row, so that constants stay constants: the image border acts as a Neumann
  boundary, and without that the V-cycle stalled at a convergence factor of ~0.8 on masks
  touching the border. Restriction R = Pᵀ; coarse operators by the Galerkin product
  A_c = Pᵀ A P. With a 9-point A and bilinear P, A_c is again a 9-point stencil, measured by
  *probing*: the product applied to 9 coloured indicator vectors (colour = (i mod 3, j mod 3))
  reads every stencil entry at once, so the setup uses only the cycle's own operations (plus
  one kernel reading the stencil and its l1 diagonal off the probes);
* smoothing: ``sweeps`` (1) Jacobi sweep before and after the coarse correction (the same on
  both sides: the V-cycle is a symmetric preconditioner, as CG requires) -- plain Jacobi
  (ω = 1) on level 0, whose D⁻¹A has its spectrum in (0, 2); l1-Jacobi with ω = 1.6 on the
  Galerkin levels, which are not diagonally dominant (λmax(diag⁻¹A_c) reaches 4 on ResNet
  maps: plain Jacobi diverged there and CG stalled; see :func:`galerkin`);
* the coarsest level (≤ 64 points) is solved exactly by a batched dense generalised inverse
  (``k_ldl_inverse`` in ``camonnx.kernels._impute_cpu``: bilinear P can lose rank on sparse
  masks, A_c is then singular but consistent).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from camonnx.kernels._impute_cpu import k_coarsen, k_ldl_inverse, k_spans
from camonnx.kernels._impute_cycle import k_fmg, k_vcycle
from camonnx.road_backends import NumbaOps, TorchOps, coarse_size
from camonnx.road_system import OFFSETS, fine_stencil, neighbour_sums

#: The coarsest multigrid level has at most this many points (solved exactly).
COARSEST_POINTS = 64
#: Damping of the l1-Jacobi sweeps on the coarse levels (convergent for any value < 2 there).
COARSE_OMEGA = 1.6


@dataclass
class _Level:
    """One multigrid level. The fine level stores no stencil: A u = m ⊙ (s ⊙ u − W ∗ u) with
    the constant weights W, the removed mask m and the neighbour sums s. Coarse levels store
    their Galerkin stencil S (B, 9, h, w)."""

    dinv: object                # (B, 1, h, w) 1/diagonal on active points, 0 elsewhere
    active: object              # (B, 1, h, w) 1.0 on active points
    S: object = None            # coarse levels: (B, 9, h, w)
    m: object = None            # fine level: (B, 1, h, w) removed mask (float)
    s: object = None            # fine level: (h, w) neighbour-weight sums
    rng: object = None          # numba: (B, h, 2) int64 active columns [first, last + 1) per row

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.active.shape[-2:])

    def op(self, ops: TorchOps, u, b, out, mode: int, omega: float = 1.0):
        """mode 0: out = A u; 1: out = b − A u; 2: out = u + ω D⁻¹ (b − A u)."""
        if self.S is None:
            return ops.fine(self.m, self.s, u, b, self.dinv, out, mode, omega, self.rng)
        return ops.stencil(self.S, u, b, self.dinv, out, mode, omega, self.rng)

    def stencil_host(self) -> np.ndarray:
        """The (B, 9, h, w) stencil as float64 numpy (small levels only)."""
        if self.S is not None:
            return np.asarray(_host(self.S), np.float64)
        return fine_stencil(np.asarray(_host(self.m))[:, 0] > 0)


def _host(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a


def active_ranges(active: np.ndarray) -> np.ndarray:
    """(B, h, 2) int64 [first, last + 1) of the active columns of each row of (B, h, w) bool
    (0, 0 for an empty row; :func:`k_spans`). The numba kernels touch only these spans: every
    solver vector is zero off the active set (buffers start zeroed), so the rest never needs
    reading or writing -- about half of the memory traffic on ROAD's masks, which remove
    20-80 % of the pixels."""
    out = np.empty(active.shape[:2] + (2,), np.int64)
    k_spans(active, out)
    return out


def coarsen_active(active: np.ndarray) -> np.ndarray:
    """(B, hc, wc) bool: coarse points whose interpolation support (fine 2q−1 … 2q+1) holds an
    active fine point (nonzero in ``active`` (B, h, w)) -- exactly those with a positive
    Galerkin diagonal (:func:`k_coarsen`)."""
    b, h, w = active.shape
    out = np.empty((b,) + coarse_size(h, w), bool)
    k_coarsen(active, out)
    return out


def _fine_level(ops: TorchOps, removed: np.ndarray) -> _Level:
    h, w = removed.shape[-2:]
    m = removed.astype(np.float32)[:, None]
    s = neighbour_sums(h, w).astype(np.float32)
    rng = active_ranges(removed) if isinstance(ops, NumbaOps) else None
    return _Level(dinv=ops.asarray(m / s), active=ops.asarray(m), m=ops.asarray(m), s=ops.asarray(s),
                  rng=rng)


_COLOURS: dict = {}


def _colour_tables(hc: int, wc: int):
    """Probe vectors E (9, hc, wc): E[c] = 1 where (i mod 3)·3 + (j mod 3) = c; and the gather
    index (9, hc, wc): for stencil entry k at q, the colour of q + offset_k."""
    key = (hc, wc)
    if key not in _COLOURS:
        i = np.arange(hc)[:, None]
        j = np.arange(wc)[None, :]
        colour = (i % 3) * 3 + (j % 3)
        probes = np.stack([(colour == c) for c in range(9)]).astype(np.float32)
        index = np.stack([np.broadcast_to(((i + di) % 3) * 3 + ((j + dj) % 3), (hc, wc))
                          for di, dj in OFFSETS]).astype(np.int64)
        _COLOURS[key] = (probes, index)
    return _COLOURS[key]


@functools.lru_cache(maxsize=32)
def _prolonged_probes(h: int, w: int) -> np.ndarray:
    """P E (9, h, w): the coloured probes of the coarse grid interpolated onto the h×w grid.
    Independent of the mask (the mask only zeroes inactive points: active ⊙ P E), so computed
    once per size instead of by one 9-channel prolongation per level and solve. Read-only."""
    hc, wc = coarse_size(h, w)
    probes, _ = _colour_tables(hc, wc)
    out = np.zeros((1, 9, h, w), np.float32)
    full = np.zeros((1, h, 2), np.int64)
    full[..., 1] = w
    NumbaOps().prolong_add(np.ascontiguousarray(probes[None]), np.ones((1, 1, h, w), np.float32),
                           out, full)
    out = out[0]
    out.setflags(write=False)
    return out


def galerkin(level: _Level, ops: TorchOps) -> _Level:
    """The next coarser level: A_c = Pᵀ A P, measured by probing with 9 coloured vectors (the 9
    channels of one batch: P e -- mask-independent up to the active points, cached per size by
    :func:`_prolonged_probes` --, then A, then Pᵀ). A_c[q, q + d] is read from the probe of
    the colour of q + d: no other point of that colour lies within q's 3×3 stencil."""
    b = level.active.shape[0]
    h, w = level.shape
    hc, wc = coarse_size(h, w)
    _, index = _colour_tables(hc, wc)
    structural = coarsen_active(np.asarray(_host(level.active))[:, 0])
    rng_c = active_ranges(structural) if isinstance(ops, NumbaOps) else None
    pe = ops.asarray(_prolonged_probes(h, w)[None]) * level.active   # active ⊙ P e
    ape = ops.zeros((b, 9, h, w))
    level.op(ops, pe, pe, ape, 0)
    y = ops.zeros((b, 9, hc, wc))
    ops.restrict(ape, y, rng_c)
    # l1-Jacobi: D = Σ_k |S_k| (row sums of |A_c|), not the diagonal. Galerkin operators on
    # irregular masks are not diagonally dominant: λmax(diag⁻¹ A_c) reaches 4 on ResNet maps,
    # where plain Jacobi diverges and the V-cycle stops being positive definite (CG then stalls
    # or breaks down); with the l1 diagonal λmax ≤ 1 (Gershgorin), so any damping < 2 converges.
    S, dinv, active = ops.galerkin_stencil(y, index, structural)
    return _Level(dinv=dinv, active=active, S=S, rng=rng_c)


@functools.lru_cache(maxsize=32)
def _dense_tables(h: int, w: int):
    """(rows, cols, stencil index) of every in-grid stencil entry of an h×w grid."""
    rows, cols, ks = [], [], []
    for k, (di, dj) in enumerate(OFFSETS):
        for i in range(h):
            for j in range(w):
                if 0 <= i + di < h and 0 <= j + dj < w:
                    rows.append(i * w + j)
                    cols.append((i + di) * w + j + dj)
                    ks.append(k)
    return np.array(rows), np.array(cols), np.array(ks)


def _dense_inverse(level: _Level) -> np.ndarray:
    """(B, n, n) float32 symmetric generalised inverse of the coarsest operator (float64 LDLᵀ
    in numba, see :func:`k_ldl_inverse`; inactive points are decoupled identity rows)."""
    S = level.stencil_host()
    b, _, h, w = S.shape
    n = h * w
    rows, cols, ks = _dense_tables(h, w)
    A = np.zeros((b, n, n))
    A[:, rows, cols] = S.reshape(b, 9, n)[:, ks, rows]
    active = (np.asarray(_host(level.active)).reshape(b, n) > 0).astype(np.float64)
    A[:, np.arange(n), np.arange(n)] += 1.0 - active
    A = (A + A.transpose(0, 2, 1)) / 2
    inverse = np.empty((b, n, n), np.float32)
    k_ldl_inverse(A, inverse, 1e-6)
    return inverse


class Multigrid:
    """The V-cycle preconditioner for a batch of removed masks (B, H, W) and C channels."""

    def __init__(self, ops: TorchOps, removed: np.ndarray, channels: int, sweeps: int = 1,
                 omega: float = 1.0, coarse_omega: float | None = None):
        self.ops, self.sweeps = ops, sweeps
        self.omegas = [omega] + [COARSE_OMEGA if coarse_omega is None else coarse_omega] * 64
        self.levels = [_fine_level(ops, removed)]
        while self.levels[-1].shape[0] * self.levels[-1].shape[1] > COARSEST_POINTS:
            self.levels.append(galerkin(self.levels[-1], ops))
        self.inverse = ops.asarray(_dense_inverse(self.levels[-1]))
        b = removed.shape[0]
        # per level: rhs (also FMG's rhs and residual, see fmg), two iterate buffers
        # (ping-pong), residual
        # (zeroed: the numba kernels never write outside the active spans)
        self.bufs = [tuple(ops.zeros((b, channels) + lv.shape) for _ in range(4)) for lv in self.levels]
        # the numba backend runs a whole V-cycle / FMG in one compiled call
        # (camonnx.kernels._impute_cycle), on the levels as tuples indexed by level
        self.compiled = None
        if isinstance(ops, NumbaOps):
            fine = self.levels[0]
            unused = np.zeros((1, 9, 1, 1), np.float32)   # level 0 has no stored stencil
            self.compiled = (fine.m, fine.s,
                             tuple(unused if lv.S is None else lv.S for lv in self.levels),
                             tuple(lv.dinv for lv in self.levels),
                             tuple(lv.active for lv in self.levels),
                             tuple(lv.rng for lv in self.levels),
                             *(tuple(bufs[k] for bufs in self.bufs) for k in range(4)),
                             self.inverse, np.array(self.omegas[:len(self.levels)], np.float64),
                             int(sweeps))

    @property
    def fine(self) -> _Level:
        return self.levels[0]

    def retire(self, finished: np.ndarray) -> None:
        """Stop computing on masks whose every channel has converged: their active spans
        become empty at every level, so every numba kernel skips them (their solution stays
        as it is). The torch backend keeps computing them (frozen by α = 0)."""
        if self.levels[0].rng is None or not finished.any():
            return
        for lv in self.levels:
            lv.rng[finished] = 0

    def apply(self, u, out):
        return self.fine.op(self.ops, u, u, out, 0)

    def vcycle(self, rhs, level: int = 0):
        """z ≈ A⁻¹ rhs by one V-cycle from zero; returns the buffer holding z (rhs is kept)."""
        if self.compiled is not None:
            return self.bufs[level][1 + k_vcycle(level, rhs, *self.compiled)]
        ops, lv, omega = self.ops, self.levels[level], self.omegas[level]
        _, u, t, r = self.bufs[level]
        if level == len(self.levels) - 1:
            return ops.dense_solve(self.inverse, rhs, u)
        ops.scale(lv.dinv, rhs, omega, u, lv.rng)              # first sweep, from 0
        for _ in range(self.sweeps - 1):
            lv.op(ops, u, rhs, t, 2, omega)
            u, t = t, u
        lv.op(ops, u, rhs, r, 1)
        coarse = self.levels[level + 1]
        coarse_rhs = self.bufs[level + 1][0]
        ops.restrict(r, coarse_rhs, coarse.rng)
        e = self.vcycle(coarse_rhs, level + 1)
        ops.prolong_add(e, lv.active, u, lv.rng)
        for _ in range(self.sweeps):
            lv.op(ops, u, rhs, t, 2, omega)
            u, t = t, u
        return u

    def fmg(self, rhs, x):
        """x ≈ A⁻¹ rhs by full multigrid, x given zero; returns x (rhs is kept). The right-hand
        side is restricted down every level, b_{l+1} = Pᵀ b_l; the coarsest level is solved
        exactly; then from coarse to fine, each level starts from its coarser solution
        interpolated, x_l = P x_{l+1}, and takes one V-cycle on its residual,
        x_l += V_l(b_l − A_l x_l). About 1.5 V-cycles of work; the error left is that of a
        V-cycle from an interpolated solution, not from zero: CG then needs ~2.5 iterations
        instead of ~6 (ROAD masks, 224², tol 1e-4)."""
        ops, n = self.ops, len(self.levels)
        if self.compiled is not None:
            coarse = tuple(ops.zeros(self.bufs[l][0].shape) if l else self.bufs[0][0]
                           for l in range(n))   # level 0's entry is unused: its solution is x
            k_fmg(rhs, x, coarse, *self.compiled)
            return x
        b = [rhs] + [self.bufs[l][0] for l in range(1, n)]   # level l's rhs, then its residual
        for l in range(1, n):
            ops.restrict(b[l - 1], b[l], self.levels[l].rng)
        xs = [x] + [ops.zeros(self.bufs[l][0].shape) for l in range(1, n)]
        ops.dense_solve(self.inverse, b[-1], xs[-1])
        for l in range(n - 2, -1, -1):
            lv = self.levels[l]
            ops.prolong_add(xs[l + 1], lv.active, xs[l], lv.rng)
            res = self.bufs[l][0]                     # free at every level during vcycle(l)
            lv.op(ops, xs[l], b[l], res, 1)           # in place when l > 0 (b_l is not needed again)
            xs[l] += self.vcycle(res, l)
        return x
