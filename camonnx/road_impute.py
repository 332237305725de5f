"""Noisy linear imputation for ROAD (docs/metrics.md#imputation): the reference direct solver and the fast one.

**The system.** Each removed pixel p takes, per channel, the weighted mean of its 8 neighbours
(edge neighbours 1/6, diagonal 1/12, renormalised over the neighbours inside the image), the
removed neighbours being unknowns themselves. Multiplying row p by its neighbour-weight sum
s_p = Σ_{q in image} w_pq gives

    s_p u_p − Σ_{q removed} w_pq u_q = Σ_{q kept} w_pq x_q        (p removed)

whose matrix A = S − W (restricted to the removed set) is symmetric (w_pq = w_qp) and weakly
diagonally dominant, strictly on every row with a kept neighbour. Every 8-connected component
of removed pixels other than the whole image touches a kept pixel, so A is irreducibly
diagonally dominant per component, hence symmetric positive definite -- unless every pixel is
removed: then there is no data, and the image is filled with its per-channel mean instead.
Noise N(0, σ²), σ = 0.01 by default, is then added at the removed pixels only.

**Reference.** :func:`impute_reference` builds A with scipy.sparse (vectorised COO, not LIL) and
solves it directly (``spsolve``, float64).

**Fast path.** :func:`solve` imputes a whole batch of (image, mask) pairs -- all fractions,
layers and images of a ybROAD chunk -- by conjugate gradients on A (SPD, see above),
preconditioned with one geometric multigrid V-cycle per iteration:

* level 0 is the 3×3 stencil above on the full H×W grid, applied as a masked convolution
  A u = m ⊙ (s ⊙ u − W ∗ u) (m the removed mask; every solver vector vanishes off m, so the
  kept pixels drop out);
* prolongation P = bilinear interpolation from a grid of ceil(h/2)×ceil(w/2) points, restricted
  to the active points of the finer level. On an even-sized axis the last fine row copies the
  last coarse row, so that constants stay constants: the image border acts as a Neumann
  boundary, and without that the V-cycle stalled at a convergence factor of ~0.8 on masks
  touching the border. Restriction R = Pᵀ; coarse operators by the Galerkin product
  A_c = Pᵀ A P. With a 9-point A and bilinear P, A_c is again a 9-point stencil, measured by
  *probing*: the product applied to 9 coloured indicator vectors (colour = (i mod 3, j mod 3))
  reads every stencil entry at once, so the setup uses only the cycle's own operations;
* smoothing: ``sweeps`` (1) Jacobi sweep before and after the coarse correction (the same on
  both sides: the V-cycle is a symmetric preconditioner, as CG requires) -- plain Jacobi
  (ω = 1) on level 0, whose D⁻¹A has its spectrum in (0, 2); l1-Jacobi with ω = 1.6 on the
  Galerkin levels, which are not diagonally dominant (λmax(diag⁻¹A_c) reaches 4 on ResNet
  maps: plain Jacobi diverged there and CG stalled; see :func:`galerkin`);
* the coarsest level (≤ 64 points) is solved exactly by a batched dense generalised inverse
  (:func:`k_ldl_inverse`: bilinear P can lose rank on sparse masks, A_c is then singular but
  consistent).

Stopping: CG stops per system (mask × channel) when both the preconditioned residual z = M⁻¹r
(an estimate of the remaining error in the image's units, M ≈ A⁻¹) and the residual in pixel
units, D⁻¹r = (weighted neighbour mean − value) at each removed pixel, are ≤ ``tol`` in
max-norm, or after ``max_iter`` iterations. Masks whose channels have all converged are retired
(the CPU kernels skip them). Mixed precision (:func:`_pcg`): a float32 CG to 1e-2, then a
restart from the true residual accumulated in float64, down to ``tol`` -- one float32 stage
stalls at an error of ~eps·κ (7e-4 measured on a 224² mask removing 80 %, whatever ``tol``).

Start: u = 0, no separate warm start. The first CG step applies one V-cycle to the right-hand
side, i.e. a multigrid fill (coarse-grid solution plus smoothing) of the removed region; a cheap
masked-average fill was not implemented (the issue's "e.g."): it could save at most part of
the first of the 8-11 iterations a 224² ROAD mask takes at ``tol=1e-5``.

**Backends.** One algorithm, two array backends with one interface (:class:`TorchOps`,
:class:`NumbaOps`): torch tensor operations on any device (what runs on CUDA, on the whole
batch at once), and on CPU NumPy arrays with serial ``numba.njit(cache=True, nogil=True)``
kernels that touch only the rows' active column spans (:func:`active_ranges`), the masks solved
one by one on a thread pool (one per core). Serial kernels + a pool, not ``parallel=True``: a
solve makes ~300 kernel calls, and on a loaded machine each OpenMP parallel region (numba's or
torch's) was measured at ~8-12 ms of thread wake-up, more than the work; the pool pays that once
per solve. On CPU, torch's depthwise conv2d runs ~50-100 ns per element against ~1-2 for the
numba stencils.

Accuracy against :func:`impute_reference` (tests/test_road.py): max |fast − direct| ≤ 1e-4 at
the default ``tol=1e-5`` (measured ≤ 2e-5, image values ~±3) on random and smooth masks, masks
touching the border, 99 % removal, a mask keeping a single pixel, 224² ROAD masks; residual
max |u_p − Σ w_pq u_q / s_p| ≤ 1e-5 (measured ≤ 4e-6). Cost on 2 CPU cores: ~12-15 ms per 224²
mask (3 channels), against ~400 ms for pytorch-grad-cam's LIL build + spsolve
(bench/bench_road.py).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numba import njit

from camonnx.errors import InputError

#: 3×3 neighbour weights (docs/metrics.md#imputation; row offset −1..1 × column offset −1..1; centre 0).
WEIGHTS = np.array([[1 / 12, 1 / 6, 1 / 12],
                    [1 / 6, 0.0, 1 / 6],
                    [1 / 12, 1 / 6, 1 / 12]])
#: stencil index k = (di + 1) * 3 + (dj + 1) for the neighbour at offset (di, dj); k = 4 is p itself.
OFFSETS = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)]
#: The coarsest multigrid level has at most this many points (solved exactly).
COARSEST_POINTS = 64
#: Damping of the l1-Jacobi sweeps on the coarse levels (convergent for any value < 2 there).
COARSE_OMEGA = 1.6
#: Imputation noise (docs/metrics.md#imputation), in the model's input space.
NOISE_STD = 0.01


# ---------------------------------------------------------------------------------------------
# the reference: scipy.sparse direct solve
# ---------------------------------------------------------------------------------------------

def neighbour_sums(h: int, w: int) -> np.ndarray:
    """s_p = Σ of the weights of p's neighbours inside an h×w image (1 inside, less at borders).
    Cached; read-only."""
    return _neighbour_sums(int(h), int(w))


@functools.lru_cache(maxsize=32)
def _neighbour_sums(h: int, w: int) -> np.ndarray:
    ones = np.pad(np.ones((h, w)), 1)
    s = np.zeros((h, w))
    for di, dj in OFFSETS:
        s += WEIGHTS[di + 1, dj + 1] * ones[1 + di:1 + di + h, 1 + dj:1 + dj + w]
    s.setflags(write=False)
    return s


def linear_system(mask: np.ndarray):
    """(A, B, removed) for a removed-pixel mask (H, W): A the (n, n) CSR matrix of the rows
    s_p u_p − Σ_{q removed} w_pq u_q, B the (n, H·W) CSR matrix with B·x = Σ_{q kept} w_pq x_q,
    ``removed`` the flat indices of the n unknowns (row-major)."""
    import scipy.sparse as sp

    mask = np.asarray(mask, bool)
    h, w = mask.shape
    flat = mask.ravel()
    removed = np.flatnonzero(flat)
    n = removed.size
    var = np.full(h * w, -1, np.int64)
    var[removed] = np.arange(n)
    pi, pj = np.divmod(removed, w)
    diag = np.zeros(n)
    a_rows, a_cols, a_vals, b_rows, b_cols, b_vals = [], [], [], [], [], []
    for di, dj in OFFSETS:
        if di == 0 and dj == 0:
            continue
        weight = WEIGHTS[di + 1, dj + 1]
        qi, qj = pi + di, pj + dj
        inside = (qi >= 0) & (qi < h) & (qj >= 0) & (qj < w)
        rows = np.flatnonzero(inside)
        q = qi[inside] * w + qj[inside]
        diag[rows] += weight
        unknown = flat[q]
        a_rows.append(rows[unknown])
        a_cols.append(var[q[unknown]])
        a_vals.append(np.full(int(unknown.sum()), -weight))
        b_rows.append(rows[~unknown])
        b_cols.append(q[~unknown])
        b_vals.append(np.full(int((~unknown).sum()), weight))
    a = sp.csr_matrix((np.concatenate([diag] + a_vals),
                       (np.concatenate([np.arange(n)] + a_rows), np.concatenate([np.arange(n)] + a_cols))),
                      shape=(n, n))
    b = sp.csr_matrix((np.concatenate(b_vals), (np.concatenate(b_rows), np.concatenate(b_cols))),
                      shape=(n, h * w))
    return a, b, removed


def impute_reference(image, mask) -> np.ndarray:
    """Noise-free linear imputation of one image (C, H, W) at the removed pixels ``mask`` (H, W)
    by a direct sparse solve (scipy ``spsolve``, float64): the reference for :func:`solve`.
    Every pixel removed: the per-channel image mean."""
    from scipy.sparse.linalg import spsolve

    x = np.asarray(image, np.float64)
    mask = np.asarray(mask, bool)
    if x.ndim != 3 or mask.shape != x.shape[1:]:
        raise InputError(f"impute_reference takes an image (C, H, W) and a mask (H, W); got "
                         f"{x.shape} and {mask.shape}.")
    out = x.copy()
    if not mask.any():
        return out
    if mask.all():
        out[:] = x.mean(axis=(1, 2), keepdims=True)
        return out
    a, b, removed = linear_system(mask)
    flat = x.reshape(x.shape[0], -1)
    solution = np.asarray(spsolve(a.tocsc(), b @ flat.T)).reshape(len(removed), -1)
    out.reshape(x.shape[0], -1)[:, removed] = solution.T
    return out


def imputation_residual(imputed, mask) -> float:
    """max over removed pixels and channels of |u_p − Σ_q w_pq u_q / s_p| (float64): how far the
    imputed values are from satisfying the linear system (0 for an exact solution)."""
    u = np.asarray(imputed, np.float64)
    mask = np.asarray(mask, bool)
    if not mask.any() or mask.all():
        return 0.0
    h, w = mask.shape
    pad = np.pad(u, ((0, 0), (1, 1), (1, 1)))
    mean = np.zeros_like(u)
    for di, dj in OFFSETS:
        mean += WEIGHTS[di + 1, dj + 1] * pad[:, 1 + di:1 + di + h, 1 + dj:1 + dj + w]
    mean /= neighbour_sums(h, w)
    return float(np.abs(u - mean)[:, mask].max())


# ---------------------------------------------------------------------------------------------
# backends: torch (any device) and numpy + numba (CPU)
# ---------------------------------------------------------------------------------------------

class TorchOps:
    """The solver's arrays and operations as torch tensors on ``device`` (CPU or CUDA).
    Per-system scalars ((B, C) dot products, α, β) live on the host as float64 numpy."""

    name = "torch"

    def __init__(self, device: torch.device):
        self.device = torch.device(device)

    # arrays
    def zeros(self, shape):
        return torch.zeros(shape, dtype=torch.float32, device=self.device)

    def empty(self, shape):
        return torch.empty(shape, dtype=torch.float32, device=self.device)

    def asarray(self, a: np.ndarray):
        return torch.as_tensor(np.ascontiguousarray(a), device=self.device)

    def copy(self, a):
        return a.clone()

    def host(self, a) -> np.ndarray:
        return a.detach().cpu().numpy()

    # the fine level: A u = m ⊙ (s ⊙ u − W ∗ u)
    def fine(self, m, s, u, b, dinv, out, mode: int, omega: float = 1.0, rng=None):
        """mode 0: out = A u; 1: out = b − A u; 2: out = u + ω D⁻¹ (b − A u). ``rng``: the
        level's active column span per row (numba only; torch computes everywhere)."""
        nb, nc, h, w = u.shape
        wu = F.conv2d(u.reshape(nb * nc, 1, h, w), _weights_kernel(u.dtype, u.device), padding=1)
        return self._finish((u * s - wu.reshape(nb, nc, h, w)).mul_(m), u, b, dinv, out, mode, omega)

    def stencil(self, S, u, b, dinv, out, mode: int, omega: float = 1.0, rng=None):
        """A variable 9-point stencil S (B, 9, h, w), zero toward outside neighbours."""
        h, w = u.shape[-2:]
        pad = F.pad(u, (1, 1, 1, 1))
        acc = torch.zeros_like(u)
        for k, (di, dj) in enumerate(OFFSETS):
            acc.addcmul_(S[:, k:k + 1], pad[..., 1 + di:1 + di + h, 1 + dj:1 + dj + w])
        return self._finish(acc, u, b, dinv, out, mode, omega)

    @staticmethod
    def _finish(acc, u, b, dinv, out, mode, omega):
        if mode == 0:
            out.copy_(acc)
        elif mode == 1:
            torch.sub(b, acc, out=out)
        else:
            acc.neg_().add_(b).mul_(dinv)
            torch.add(u, acc, alpha=omega, out=out)
        return out

    def true_residual(self, m, s, y, out, rng=None):
        """out = m ⊙ (W ∗ y − s ⊙ y) for a full image y (kept and imputed pixels), accumulated in
        float64: the residual of the linear system, for the CG restart."""
        nb, nc, h, w = y.shape
        yd = y.double()
        wy = F.conv2d(yd.reshape(nb * nc, 1, h, w), _weights_kernel(torch.float64, y.device), padding=1)
        out.copy_(((wy.reshape(nb, nc, h, w) - yd * s.double()) * m.double()).float())
        return out

    def restrict(self, r, out, rng=None):
        """out = Pᵀ r (transpose of :meth:`prolong_add`'s interpolation)."""
        b, c, h, w = r.shape
        hc, wc = coarse_size(h, w)
        ph, pw = 1 - h % 2, 1 - w % 2
        y = F.conv2d(F.pad(r.reshape(b * c, 1, h, w), (0, pw, 0, ph)),
                     _prolong_kernel(r.dtype, r.device), stride=2, padding=1)
        if ph:  # adjoint of copying the last coarse row
            y[:, :, hc - 1] += y[:, :, hc]
        if pw:
            y[:, :, :, wc - 1] += y[:, :, :, wc]
        out.copy_(y[:, :, :hc, :wc].reshape(out.shape))
        return out

    def prolong_add(self, e, active, u, rng=None):
        """u += active ⊙ P e: bilinear interpolation (fine 2i = coarse i, fine 2i+1 = mean of
        coarse i and i+1; on an even-sized axis the last fine row copies the last coarse row)."""
        b, c, hc, wc = e.shape
        h, w = u.shape[-2:]
        ph, pw = 1 - h % 2, 1 - w % 2
        ep = e.reshape(b * c, 1, hc, wc)
        if ph or pw:
            ep = F.pad(ep, (0, pw, 0, ph), mode="replicate")
        fine = F.conv_transpose2d(ep, _prolong_kernel(e.dtype, e.device), stride=2, padding=1)
        u.addcmul_(fine[:, :, :h, :w].reshape(b, c, h, w), active)
        return u

    def scale(self, dinv, b, omega, out, rng=None):
        """out = ω D⁻¹ b."""
        torch.mul(b, dinv, out=out).mul_(omega)
        return out

    def dot(self, a, b, rng=None) -> np.ndarray:
        return torch.einsum("bchw,bchw->bc", a.double(), b.double()).cpu().numpy()

    def error(self, z, r, dinv, rng=None) -> np.ndarray:
        """Per system: max(|z|, |D⁻¹ r|) -- the error estimate and the residual in pixel units."""
        rs = r * dinv
        big = torch.maximum(torch.maximum(z.amax(dim=(2, 3)), -z.amin(dim=(2, 3))),
                            torch.maximum(rs.amax(dim=(2, 3)), -rs.amin(dim=(2, 3))))
        return big.double().cpu().numpy()

    def error_dot(self, z, r, dinv, rng=None) -> tuple[np.ndarray, np.ndarray]:
        """(:meth:`error`, :meth:`dot` (r, z)) in one pass."""
        return self.error(z, r, dinv, rng), self.dot(r, z, rng)

    def update(self, x, r, p, q, alpha: np.ndarray, rng=None):
        """x += α p; r −= α q (α per (B, C))."""
        a = self.asarray(alpha.astype(np.float32))[:, :, None, None]
        x.addcmul_(p, a)
        r.addcmul_(q, a, value=-1.0)

    def direction(self, p, z, beta: np.ndarray, rng=None):
        """p = z + β p."""
        p.mul_(self.asarray(beta.astype(np.float32))[:, :, None, None]).add_(z)

    def gather9(self, y, index: np.ndarray):
        """out[:, k, q] = y[:, index[k, q], q]."""
        b, _, hc, wc = y.shape
        return torch.gather(y, 1, self.asarray(index)[None].expand(b, 9, hc, wc)).contiguous()

    def dense_solve(self, inverse, rhs, out):
        """out (B, C, n) = rhs (B, C, n) @ inverse (B, n, n) (symmetric)."""
        b, c, h, w = rhs.shape
        torch.matmul(rhs.reshape(b, c, h * w), inverse, out=out.view(b, c, h * w))
        return out

    def compose(self, x, m, u, out):
        """out = x ⊙ (1 − m) + u (u vanishes off m)."""
        torch.addcmul(u, x, 1.0 - m, out=out)
        return out


class NumbaOps(TorchOps):
    """The same operations on float32 C-contiguous numpy arrays with serial numba kernels
    (called from the pool's threads: they release the GIL)."""

    name = "numba"

    def __init__(self):
        super().__init__(torch.device("cpu"))

    def zeros(self, shape):
        return np.zeros(shape, np.float32)

    def empty(self, shape):
        return np.empty(shape, np.float32)

    def asarray(self, a):
        return np.ascontiguousarray(a)

    def copy(self, a):
        return a.copy()

    def host(self, a):
        return a

    def fine(self, m, s, u, b, dinv, out, mode: int, omega: float = 1.0, rng=None):
        k_fine(m, s, u, b, dinv, out, int(mode), float(omega), rng)
        return out

    def stencil(self, S, u, b, dinv, out, mode: int, omega: float = 1.0, rng=None):
        k_stencil(S, u, b, dinv, out, int(mode), float(omega), rng)
        return out

    def true_residual(self, m, s, y, out, rng=None):
        k_true_residual(m, s, y, out, rng)
        return out

    def restrict(self, r, out, rng=None):
        k_restrict(r, out, rng)
        return out

    def prolong_add(self, e, active, u, rng=None):
        k_prolong_add(e, active, u, rng)
        return u

    def scale(self, dinv, b, omega, out, rng=None):
        k_scale(dinv, b, float(omega), out, rng)
        return out

    def dot(self, a, b, rng=None):
        out = np.zeros(a.shape[:2])
        k_dot(a, b, out, rng)
        return out

    def error(self, z, r, dinv, rng=None):
        out = np.zeros(z.shape[:2])
        k_error(z, r, dinv, out, rng)
        return out

    def error_dot(self, z, r, dinv, rng=None):
        err = np.zeros(z.shape[:2])
        dot = np.zeros(z.shape[:2])
        k_error_dot(z, r, dinv, err, dot, rng)
        return err, dot

    def update(self, x, r, p, q, alpha, rng=None):
        k_update(x, r, p, q, np.ascontiguousarray(alpha, np.float64), rng)

    def direction(self, p, z, beta, rng=None):
        k_direction(p, z, np.ascontiguousarray(beta, np.float64), rng)

    def gather9(self, y, index):
        out = np.empty_like(y)
        k_gather9(y, index, out)
        return out

    def dense_solve(self, inverse, rhs, out):
        k_dense(inverse, rhs, out)
        return out

    def compose(self, x, m, u, out):
        k_compose(x, m, u, out)
        return out


_KERNELS: dict = {}


def _weights_kernel(dtype, device) -> torch.Tensor:
    key = ("w", dtype, str(device))
    if key not in _KERNELS:
        _KERNELS[key] = torch.tensor(WEIGHTS, dtype=dtype).reshape(1, 1, 3, 3).to(device)
    return _KERNELS[key]


def _prolong_kernel(dtype, device) -> torch.Tensor:
    key = ("p", dtype, str(device))
    if key not in _KERNELS:
        w = torch.tensor([0.5, 1.0, 0.5], dtype=dtype)
        _KERNELS[key] = torch.outer(w, w).reshape(1, 1, 3, 3).to(device)
    return _KERNELS[key]


def get_ops(device: torch.device | str, backend: str | None = None) -> TorchOps:
    """``None``: numba on CPU, torch elsewhere; or force ``"torch"`` / ``"numba"``."""
    device = torch.device(device)
    if backend is None:
        backend = "numba" if device.type == "cpu" else "torch"
    if backend == "torch":
        return TorchOps(device)
    if backend == "numba":
        if device.type != "cpu":
            raise InputError(f"The numba imputation backend runs on CPU tensors; the data is on {device}.")
        return NumbaOps()
    raise InputError(f"Unknown imputation backend {backend!r}: use None, 'torch' or 'numba'.")


# ---------------------------------------------------------------------------------------------
# multigrid hierarchy
# ---------------------------------------------------------------------------------------------

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


def fine_stencil(removed: np.ndarray) -> np.ndarray:
    """The (B, 9, H, W) float64 stencil of A for removed masks (B, H, W): entry k at p is
    A[p, p + offset_k], zero unless p (and, off the centre, that neighbour) is removed."""
    b, h, w = removed.shape
    m = removed.astype(np.float64)
    pad = np.pad(m, ((0, 0), (1, 1), (1, 1)))
    S = np.empty((b, 9, h, w))
    for k, (di, dj) in enumerate(OFFSETS):
        if k == 4:
            S[:, 4] = m * neighbour_sums(h, w)
        else:
            S[:, k] = -WEIGHTS[di + 1, dj + 1] * m * pad[:, 1 + di:1 + di + h, 1 + dj:1 + dj + w]
    return S


def active_ranges(active: np.ndarray) -> np.ndarray:
    """(B, h, 2) int64 [first, last + 1) of the active columns of each row of (B, h, w) bool
    (0, 0 for an empty row). The numba kernels touch only these spans: every solver vector is
    zero off the active set (buffers start zeroed), so the rest never needs reading or writing
    -- about half of the memory traffic on ROAD's masks, which remove 20-80 % of the pixels."""
    b, h, w = active.shape
    any_ = active.any(axis=2)
    first = np.argmax(active, axis=2)
    last = w - np.argmax(active[:, :, ::-1], axis=2)
    out = np.zeros((b, h, 2), np.int64)
    out[..., 0] = np.where(any_, first, 0)
    out[..., 1] = np.where(any_, last, 0)
    return out


def coarsen_active(active: np.ndarray) -> np.ndarray:
    """(B, hc, wc) bool: coarse points whose interpolation support (fine 2q−1 … 2q+1) holds an
    active fine point -- exactly those with a positive Galerkin diagonal."""
    def axis(a, ax):
        n = a.shape[ax]
        nc = (n + 1) // 2
        even = np.take(a, np.arange(0, n, 2), axis=ax).copy()
        odd = np.take(a, np.arange(1, n, 2), axis=ax)
        k = odd.shape[ax]
        idx = [slice(None)] * a.ndim
        idx[ax] = slice(0, k)
        even[tuple(idx)] |= odd
        idx[ax] = slice(1, min(k + 1, nc))
        src = [slice(None)] * a.ndim
        src[ax] = slice(0, min(k, nc - 1))
        even[tuple(idx)] |= odd[tuple(src)]
        return even

    return axis(axis(active, 1), 2)


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


def coarse_size(h: int, w: int) -> tuple[int, int]:
    return (h + 1) // 2, (w + 1) // 2


def galerkin(level: _Level, ops: TorchOps) -> _Level:
    """The next coarser level: A_c = Pᵀ A P, measured by probing with 9 coloured vectors (the 9
    channels of one batch: P e, then A, then Pᵀ). A_c[q, q + d] is read from the probe of
    the colour of q + d: no other point of that colour lies within q's 3×3 stencil."""
    b = level.active.shape[0]
    h, w = level.shape
    hc, wc = coarse_size(h, w)
    probes, index = _colour_tables(hc, wc)
    structural = coarsen_active(np.asarray(_host(level.active))[:, 0] > 0)
    rng_c = active_ranges(structural) if isinstance(ops, NumbaOps) else None
    pe = ops.zeros((b, 9, h, w))
    ops.prolong_add(ops.asarray(np.broadcast_to(probes[None], (b, 9, hc, wc))), level.active, pe,
                    level.rng)
    ape = ops.zeros((b, 9, h, w))
    level.op(ops, pe, pe, ape, 0)
    y = ops.zeros((b, 9, hc, wc))
    ops.restrict(ape, y, rng_c)
    S = ops.gather9(y, index)
    host = _host(S)
    positive = (host[:, 4:5] > 0) & structural[:, None]
    # l1-Jacobi: D = Σ_k |S_k| (row sums of |A_c|), not the diagonal. Galerkin operators on
    # irregular masks are not diagonally dominant: λmax(diag⁻¹ A_c) reaches 4 on ResNet maps,
    # where plain Jacobi diverges and the V-cycle stops being positive definite (CG then stalls
    # or breaks down); with the l1 diagonal λmax ≤ 1 (Gershgorin), so any damping < 2 converges.
    l1 = np.abs(host).sum(axis=1, keepdims=True)
    dinv = np.where(positive, 1.0 / np.where(positive, l1, 1.0), 0.0).astype(np.float32)
    return _Level(dinv=ops.asarray(dinv), active=ops.asarray(positive.astype(np.float32)), S=S,
                  rng=rng_c)


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
        self._spans = [None if lv.rng is None else lv.rng.copy() for lv in self.levels]
        b = removed.shape[0]
        # per level: rhs, two iterate buffers (ping-pong), residual
        # (zeroed: the numba kernels never write outside the active spans)
        self.bufs = [tuple(ops.zeros((b, channels) + lv.shape) for _ in range(4)) for lv in self.levels]

    @property
    def fine(self) -> _Level:
        return self.levels[0]

    def restore(self) -> None:
        """Undo :meth:`retire`: every mask active again (for the next CG stage)."""
        for lv, spans in zip(self.levels, self._spans):
            if spans is not None:
                lv.rng[...] = spans

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


# ---------------------------------------------------------------------------------------------
# the solve
# ---------------------------------------------------------------------------------------------

@dataclass
class SolveInfo:
    """How a fast solve went: the most CG iterations of any group of masks, whether every system
    met ``tol``, the final max |M⁻¹r| (≈ the remaining error, image units), backend, threads."""

    iterations: int
    converged: bool
    error_estimate: float
    backend: str
    workers: int = 1


#: Masks per CPU solve (see :func:`solve`).
CPU_GROUP = 1
#: Tolerance of the first CG stage (see :func:`_pcg`).
STAGE1_TOL = 1e-2


def _pcg(ops: TorchOps, x, removed: np.ndarray, out, tol: float, max_iter: int, sweeps: int,
         omega: float) -> tuple[int, bool, float]:
    """Solve every system of x (B, C, H, W) at the removed masks (B, H, W; none full) into out.

    Mixed precision in two stages: CG (float32 vectors) to ``max(tol, STAGE1_TOL)``, then the
    true residual of the imputed image is recomputed with float64 accumulation and CG restarts
    from there down to ``tol``. One float32 stage stalls at an error of ~eps·κ: on a 224×224
    image with 80 % removed, κ ~ 10⁴ and the error floor measured 7e-4 whatever the tolerance,
    because the recurrence residual drifts from the true one; the restart removes that drift for
    the price of one residual pass (measured: ≤ 2e-5 at 10-11 iterations; STAGE1_TOL 1e-3 to
    3e-2 all gave the same accuracy, 1e-2 the least CPU time)."""
    b, c = x.shape[:2]
    mg = Multigrid(ops, removed, c, sweeps=sweeps, omega=omega)
    m, s_, dinv, rng = mg.fine.m, mg.fine.s, mg.fine.dinv, mg.fine.rng
    u = ops.zeros(x.shape)
    r = ops.zeros(x.shape)
    q = ops.zeros(x.shape)   # A p
    y = ops.empty(x.shape)   # the imputed image x ⊙ (1 − m) + u
    iterations, done, err = 0, np.zeros((b, c), bool), np.zeros((b, c))
    for stage_tol in ([STAGE1_TOL, tol] if tol < STAGE1_TOL else [tol]):
        mg.restore()
        ops.compose(x, m, u, y)
        ops.true_residual(m, s_, y, r, rng)    # r = Σ_q w_pq y_q − s_p y_p at removed p
        z = mg.vcycle(r)
        p = ops.copy(z)
        err, rz = ops.error_dot(z, r, dinv, rng)
        done = err <= stage_tol
        mg.retire(done.all(axis=1))
        while not done.all() and iterations < max_iter:
            iterations += 1
            mg.apply(p, q)
            pq = ops.dot(p, q, rng)
            alpha = np.where(done | (pq <= 0), 0.0, rz / np.where(pq > 0, pq, 1.0))
            ops.update(u, r, p, q, alpha, rng)
            z = mg.vcycle(r)
            err_new, rz_new = ops.error_dot(z, r, dinv, rng)
            err = np.where(done, err, err_new)
            done = done | (err <= stage_tol)
            mg.retire(done.all(axis=1))
            beta = np.where(rz > 0, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
            ops.direction(p, z, beta, rng)
            rz = rz_new
    ops.compose(x, m, u, out)
    return iterations, bool(done.all()), float(err.max(initial=0.0))


def default_workers() -> int:
    """Threads for the CPU solver: the cores this process may use (``CAMONNX_THREADS`` overrides)."""
    env = os.environ.get("CAMONNX_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def solve(images: torch.Tensor, removed: torch.Tensor, *, tol: float = 1e-5, max_iter: int = 50,
          backend: str | None = None, sweeps: int = 1, omega: float = 1.0,
          workers: int | None = None) -> tuple[torch.Tensor, SolveInfo]:
    """Noise-free linear imputation of every (image, mask) pair at once: images (B, C, H, W),
    removed (B, H, W) bool. Returns the imputed float32 images on the images' device (kept pixels
    copied; masks removing every pixel filled with the per-channel mean) and a :class:`SolveInfo`.
    ``backend``: None (numba on CPU, torch on CUDA), "numba" or "torch"; ``workers``: CPU threads
    for the numba backend (default :func:`default_workers`)."""
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if not isinstance(removed, torch.Tensor):
        removed = torch.as_tensor(np.asarray(removed))
    if images.ndim != 4 or tuple(removed.shape) != (images.shape[0],) + tuple(images.shape[2:]):
        raise InputError(f"The imputation takes images (B, C, H, W) and masks (B, H, W); got "
                         f"{tuple(images.shape)} and {tuple(removed.shape)}.")
    if not (tol > 0 and max_iter >= 0 and sweeps >= 1):
        raise InputError(f"Solver options must be positive: tol={tol}, max_iter={max_iter}, sweeps={sweeps}.")
    device = images.device
    ops = get_ops(device, backend)
    x = images.detach().to(torch.float32)
    rem = removed.detach().to("cpu", torch.bool).numpy()
    b, c, h, w = x.shape
    flat = rem.reshape(b, -1)
    full = flat.all(axis=1) if b else np.zeros(0, bool)
    some = flat.any(axis=1) if b else np.zeros(0, bool)
    todo = np.flatnonzero(some & ~full)
    if isinstance(ops, NumbaOps):
        xs = np.ascontiguousarray(x.numpy())
        out = np.empty_like(xs)          # every image is written below: copied, filled or solved
        out[~some] = xs[~some]
        out[full] = xs[full].mean(axis=(2, 3), keepdims=True)
    else:
        xs = x.contiguous()
        out = xs.clone()
        if full.any():
            t_idx = torch.as_tensor(np.flatnonzero(full), device=device)
            out[t_idx] = xs[t_idx].mean(dim=(2, 3), keepdim=True).expand(-1, -1, h, w)
    if todo.size == 0:
        result = torch.from_numpy(out) if isinstance(out, np.ndarray) else out
        return result, SolveInfo(0, True, 0.0, ops.name)

    if isinstance(ops, NumbaOps):
        # Masks one by one (CPU_GROUP) on a pool of threads: one 224² mask keeps a solve's
        # working set (~8 MB) cache-friendly -- measured 35 % less CPU time than one 64-mask
        # solve -- each mask stops at its own iteration count, and the pool balances the masks
        # over the cores dynamically.
        groups = [todo[i:i + CPU_GROUP] for i in range(0, todo.size, CPU_GROUP)]
        n_workers = max(1, min(workers or default_workers(), len(groups)))

        def run(group):
            first, last = int(group[0]), int(group[-1]) + 1
            if last - first == group.size:  # contiguous: views, no copies
                return _pcg(ops, xs[first:last], rem[first:last], out[first:last], tol, max_iter,
                            sweeps, omega)
            sub = np.empty((group.size, c, h, w), np.float32)
            result = _pcg(ops, np.ascontiguousarray(xs[group]), rem[group], sub, tol, max_iter,
                          sweeps, omega)
            out[group] = sub
            return result

        if n_workers == 1:
            results = [run(g) for g in groups]
        else:
            with ThreadPoolExecutor(n_workers) as pool:
                results = list(pool.map(run, groups))
        out_t = torch.from_numpy(out)
    else:
        t_idx = torch.as_tensor(todo, device=device)
        sub = torch.empty((todo.size, c, h, w), dtype=torch.float32, device=device)
        results = [_pcg(ops, xs[t_idx].contiguous(), rem[todo], sub, tol, max_iter, sweeps, omega)]
        out[t_idx] = sub
        out_t = out
        n_workers = 1
    info = SolveInfo(max(r[0] for r in results), all(r[1] for r in results),
                     max(r[2] for r in results), ops.name, n_workers)
    return out_t, info


def add_noise(imputed: torch.Tensor, removed: torch.Tensor, std: float,
              seeds: Sequence) -> torch.Tensor:
    """Add N(0, std²) at the removed pixels of each image, in place. Image i draws from
    ``numpy.random.default_rng(seeds[i])`` (an int or a tuple of ints) on the host, so the noise
    is the same on every device and for every batch split."""
    if std == 0:
        return imputed
    b, c, h, w = imputed.shape
    if len(seeds) != b:
        raise InputError(f"add_noise needs one seed per image: {len(seeds)} for {b}.")
    rem = np.ascontiguousarray(removed.detach().to("cpu", torch.bool).numpy())
    on_host = imputed.device.type == "cpu"
    target = imputed.numpy() if on_host else np.zeros((c, h, w), np.float32)
    for i, seed in enumerate(seeds):
        count = int(rem[i].sum())
        if count == 0:
            continue
        # draws only for the removed pixels (channel by channel, row-major order), scattered
        # and scaled by one kernel pass
        draws = np.random.default_rng(seed).standard_normal(c * count, dtype=np.float32)
        if on_host:
            k_add_noise(target[i], rem[i], draws, np.float32(std))
        else:
            target[...] = 0
            k_add_noise(target, rem[i], draws, np.float32(std))
            imputed[i] += torch.from_numpy(target).to(imputed.device)
    return imputed


def impute(images: torch.Tensor, removed: torch.Tensor, *, noise: float = NOISE_STD,
           seeds: Sequence | None = None, tol: float = 1e-5, max_iter: int = 50,
           backend: str | None = None, workers: int | None = None) -> torch.Tensor:
    """Noisy linear imputation (docs/metrics.md#imputation) of images (B, C, H, W) at removed masks (B, H, W): all
    systems solved at once by :func:`solve`, then N(0, ``noise``²) at the removed pixels
    (``seeds``: one per image for the noise, default 0, 1, …)."""
    out, _ = solve(images, removed, tol=tol, max_iter=max_iter, backend=backend, workers=workers)
    seeds = list(range(out.shape[0])) if seeds is None else list(seeds)
    return add_noise(out, torch.as_tensor(removed), noise, seeds)


# ---------------------------------------------------------------------------------------------
# numba CPU kernels: serial (the pool parallelises), float32 C-contiguous arrays
# ---------------------------------------------------------------------------------------------

_NB = dict(cache=True, fastmath=False, nogil=True, error_model="numpy")


# Inner loops are written ``for t in range(n): j = lo + t``: numba's ``range(lo, hi)`` with a
# run-time start does not vectorise (measured 3.7 against 0.9 ns per element for the 9-point
# stencil), the zero-based form does.


@njit(**_NB)
def _stencil_col(s0, s1, s2, s3, s4, s5, s6, s7, s8, um, u0, up, o, bb, dd, mode, omega, j, w):
    """One border column of a k_stencil row: clamped neighbours (the stencil is zero toward
    outside neighbours, so a clamped value is multiplied by 0)."""
    jm = max(j - 1, 0)
    jp = min(j + 1, w - 1)
    acc = (s0[j] * um[jm] + s1[j] * um[j] + s2[j] * um[jp] + s3[j] * u0[jm] + s4[j] * u0[j]
           + s5[j] * u0[jp] + s6[j] * up[jm] + s7[j] * up[j] + s8[j] * up[jp])
    if mode == 0:
        o[j] = acc
    elif mode == 1:
        o[j] = bb[j] - acc
    else:
        o[j] = u0[j] + omega * dd[j] * (bb[j] - acc)


@njit(**_NB)
def k_stencil(S, u, b, dinv, out, mode, omega, rng):
    """A variable 9-point stencil S (B, 9, h, w) on the active spans ``rng`` (B, h, 2).
    mode 0: out = A u; 1: out = b − A u; 2: out = u + ω D⁻¹ (b − A u). The rows above and
    below are clamped at the image border, as are the first and last columns: S is zero
    toward outside neighbours, so a clamped value is multiplied by 0."""
    nb, nc, h, w = u.shape
    om = np.float32(omega)
    for bi in range(nb):
        for i in range(h):
            j0 = rng[bi, i, 0]
            j1 = rng[bi, i, 1]
            if j0 >= j1:
                continue
            im = max(i - 1, 0)
            ip = min(i + 1, h - 1)
            lo = max(j0, 1)
            hi = max(min(j1, w - 1), lo)
            n = hi - lo
            s0 = S[bi, 0, i]
            s1 = S[bi, 1, i]
            s2 = S[bi, 2, i]
            s3 = S[bi, 3, i]
            s4 = S[bi, 4, i]
            s5 = S[bi, 5, i]
            s6 = S[bi, 6, i]
            s7 = S[bi, 7, i]
            s8 = S[bi, 8, i]
            dd = dinv[bi, 0, i]
            for c in range(nc):
                um = u[bi, c, im]
                u0 = u[bi, c, i]
                up = u[bi, c, ip]
                o = out[bi, c, i]
                bb = b[bi, c, i]
                if mode == 0:
                    for t in range(n):
                        j = lo + t
                        o[j] = (s0[j] * um[j - 1] + s1[j] * um[j] + s2[j] * um[j + 1]
                                + s3[j] * u0[j - 1] + s4[j] * u0[j] + s5[j] * u0[j + 1]
                                + s6[j] * up[j - 1] + s7[j] * up[j] + s8[j] * up[j + 1])
                elif mode == 1:
                    for t in range(n):
                        j = lo + t
                        o[j] = bb[j] - (s0[j] * um[j - 1] + s1[j] * um[j] + s2[j] * um[j + 1]
                                        + s3[j] * u0[j - 1] + s4[j] * u0[j] + s5[j] * u0[j + 1]
                                        + s6[j] * up[j - 1] + s7[j] * up[j] + s8[j] * up[j + 1])
                else:
                    for t in range(n):
                        j = lo + t
                        acc = (s0[j] * um[j - 1] + s1[j] * um[j] + s2[j] * um[j + 1]
                               + s3[j] * u0[j - 1] + s4[j] * u0[j] + s5[j] * u0[j + 1]
                               + s6[j] * up[j - 1] + s7[j] * up[j] + s8[j] * up[j + 1])
                        o[j] = u0[j] + om * dd[j] * (bb[j] - acc)
                if j0 == 0:
                    _stencil_col(s0, s1, s2, s3, s4, s5, s6, s7, s8, um, u0, up, o, bb, dd, mode, om, 0, w)
                if j1 == w and w > 1:
                    _stencil_col(s0, s1, s2, s3, s4, s5, s6, s7, s8, um, u0, up, o, bb, dd, mode, om,
                                 w - 1, w)


@njit(**_NB)
def _fine_px(m, s, um, u0, up, out, b, dinv, mode, omega, j, w):
    e = np.float32(1.0 / 6.0)
    d = np.float32(1.0 / 12.0)
    acc = s[j] * u0[j] - e * (um[j] + up[j])
    if j > 0:
        acc -= e * u0[j - 1] + d * (um[j - 1] + up[j - 1])
    if j < w - 1:
        acc -= e * u0[j + 1] + d * (um[j + 1] + up[j + 1])
    acc *= m[j]
    if mode == 0:
        out[j] = acc
    elif mode == 1:
        out[j] = b[j] - acc
    else:
        out[j] = u0[j] + omega * dinv[j] * (b[j] - acc)


@njit(**_NB)
def k_fine(m, s, u, b, dinv, out, mode, omega, rng):
    """The fine level's A u = m ⊙ (s ⊙ u − W ∗ u), zero outside the image, on the active
    spans; modes as k_stencil. m, dinv (B, 1, h, w); s (h, w)."""
    nb, nc, h, w = u.shape
    om = np.float32(omega)
    e = np.float32(1.0 / 6.0)
    d = np.float32(1.0 / 12.0)
    zero = np.zeros(w, np.float32)
    for bi in range(nb):
        for i in range(h):
            j0 = rng[bi, i, 0]
            j1 = rng[bi, i, 1]
            if j0 >= j1:
                continue
            mi = m[bi, 0, i]
            di = dinv[bi, 0, i]
            si = s[i]
            lo = max(j0, 1)
            hi = max(min(j1, w - 1), lo)
            n = hi - lo
            for c in range(nc):
                um = u[bi, c, i - 1] if i > 0 else zero
                u0 = u[bi, c, i]
                up = u[bi, c, i + 1] if i < h - 1 else zero
                o = out[bi, c, i]
                bb = b[bi, c, i]
                if mode == 0:
                    for t in range(n):
                        j = lo + t
                        o[j] = mi[j] * (si[j] * u0[j] - e * (um[j] + up[j] + u0[j - 1] + u0[j + 1])
                                        - d * (um[j - 1] + um[j + 1] + up[j - 1] + up[j + 1]))
                elif mode == 1:
                    for t in range(n):
                        j = lo + t
                        o[j] = bb[j] - mi[j] * (si[j] * u0[j] - e * (um[j] + up[j] + u0[j - 1] + u0[j + 1])
                                                - d * (um[j - 1] + um[j + 1] + up[j - 1] + up[j + 1]))
                else:
                    for t in range(n):
                        j = lo + t
                        acc = mi[j] * (si[j] * u0[j] - e * (um[j] + up[j] + u0[j - 1] + u0[j + 1])
                                       - d * (um[j - 1] + um[j + 1] + up[j - 1] + up[j + 1]))
                        o[j] = u0[j] + om * di[j] * (bb[j] - acc)
    _fine_borders(m, s, u, b, dinv, out, mode, om, rng)


@njit(**_NB, inline="never")
def _fine_borders(m, s, u, b, dinv, out, mode, om, rng):
    """k_fine's first and last columns (a separate function: see _stencil_borders)."""
    nb, nc, h, w = u.shape
    zero = np.zeros(w, np.float32)
    for bi in range(nb):
        for i in range(h):
            j0 = rng[bi, i, 0]
            j1 = rng[bi, i, 1]
            if j0 >= j1 or (j0 > 0 and j1 < w):
                continue
            mi = m[bi, 0, i]
            di = dinv[bi, 0, i]
            si = s[i]
            for c in range(nc):
                um = u[bi, c, i - 1] if i > 0 else zero
                up = u[bi, c, i + 1] if i < h - 1 else zero
                if j0 == 0:
                    _fine_px(mi, si, um, u[bi, c, i], up, out[bi, c, i], b[bi, c, i], di, mode, om, 0, w)
                if j1 == w and w > 1:
                    _fine_px(mi, si, um, u[bi, c, i], up, out[bi, c, i], b[bi, c, i], di, mode, om,
                             w - 1, w)


@njit(**_NB)
def k_true_residual(m, s, y, out, rng):
    """out = m ⊙ (W ∗ y − s ⊙ y) on the active spans, accumulated in float64 (y: the full
    imputed image; zero outside the image)."""
    nb, nc, h, w = y.shape
    zero = np.zeros(w, np.float32)
    e = 1.0 / 6.0
    d = 1.0 / 12.0
    for bi in range(nb):
        for i in range(h):
            j0 = rng[bi, i, 0]
            j1 = rng[bi, i, 1]
            if j0 >= j1:
                continue
            mi = m[bi, 0, i]
            si = s[i]
            for c in range(nc):
                um = y[bi, c, i - 1] if i > 0 else zero
                u0 = y[bi, c, i]
                up = y[bi, c, i + 1] if i < h - 1 else zero
                o = out[bi, c, i]
                for j in range(j0, j1):
                    acc = e * (np.float64(um[j]) + np.float64(up[j])) - np.float64(si[j]) * np.float64(u0[j])
                    if j > 0:
                        acc += e * np.float64(u0[j - 1]) + d * (np.float64(um[j - 1]) + np.float64(up[j - 1]))
                    if j < w - 1:
                        acc += e * np.float64(u0[j + 1]) + d * (np.float64(um[j + 1]) + np.float64(up[j + 1]))
                    o[j] = np.float32(mi[j] * acc)


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
            wlow = half if i - 1 >= 0 else np.float32(0.0)
            ihigh = i + 1
            whigh = np.float32(0.0)
            if ihigh < h:
                whigh = np.float32(1.0) if (ihigh == h - 1 and h % 2 == 0) else half
            for c in range(nc):
                mid = r[bi, c, i]
                low = r[bi, c, max(i - 1, 0)]
                high = r[bi, c, min(ihigh, h - 1)]
                for t in range(f1 - f0):
                    j = f0 + t
                    v[j + 1] = mid[j] + wlow * low[j] + whigh * high[j]
                dst = out[bi, c, qi]
                for t in range(j1 - j0):
                    qj = j0 + t
                    dst[qj] = v[2 * qj + 1] + half * v[2 * qj] + half * v[2 * qj + 2]
                if j1 == wc and w % 2 == 0:  # the last fine column counts fully
                    dst[wc - 1] += (last_w - half) * v[w]


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
            c0 = j0 // 2
            c1 = min((j1 - 1) // 2 + 2, wc)  # coarse columns [c0, c1) are needed
            act = active[bi, 0, i]
            for c in range(nc):
                e0 = e[bi, c, i0]
                e1 = e[bi, c, i1]
                for t in range(c1 - c0):
                    jc = c0 + t
                    v[jc] = wi0 * e0[jc] + wi1 * e1[jc]
                v[wc] = v[wc - 1]  # past the last coarse column: copy (even-sized axis)
                row = u[bi, c, i]
                # fine columns in (even, odd) pairs 2jc, 2jc + 1; a lone odd first and a lone
                # even last column apart (a branch-free loop: 1.0 against 1.4 ns per element)
                p0 = (j0 + 1) // 2
                p1 = j1 // 2
                if j0 % 2 == 1:
                    jc = j0 // 2
                    row[j0] += act[j0] * half * (v[jc] + v[jc + 1])
                for t in range(p1 - p0):
                    jc = p0 + t
                    row[2 * jc] += act[2 * jc] * v[jc]
                    row[2 * jc + 1] += act[2 * jc + 1] * half * (v[jc] + v[jc + 1])
                if j1 % 2 == 1 and (j1 - 1) // 2 >= p1:
                    row[j1 - 1] += act[j1 - 1] * v[(j1 - 1) // 2]


@njit(**_NB)
def k_scale(dinv, b, omega, out, rng):
    """out = ω D⁻¹ b on the active spans."""
    nb, nc, h, w = b.shape
    om = np.float32(omega)
    for bi in range(nb):
        for i in range(h):
            j0 = rng[bi, i, 0]
            j1 = rng[bi, i, 1]
            d = dinv[bi, 0, i, j0:j1]
            for c in range(nc):
                src = b[bi, c, i, j0:j1]
                dst = out[bi, c, i, j0:j1]
                for t in range(j1 - j0):
                    dst[t] = om * d[t] * src[t]


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
                x = a[bi, c, i, j0:j1]
                y = b[bi, c, i, j0:j1]
                part = 0.0
                for t in range(j1 - j0):
                    part += np.float64(x[t]) * np.float64(y[t])
                acc += part
            out[bi, c] = acc


@njit(**_NB)
def k_error(z, r, dinv, out, rng):
    """out[b, c] = max over the active spans of max(|z|, |dinv ⊙ r|)."""
    nb, nc, h, w = z.shape
    for bi in range(nb):
        for c in range(nc):
            mx = np.float32(0.0)
            for i in range(h):
                j0 = rng[bi, i, 0]
                j1 = rng[bi, i, 1]
                zv = z[bi, c, i, j0:j1]
                rv = r[bi, c, i, j0:j1]
                d = dinv[bi, 0, i, j0:j1]
                part = np.float32(0.0)
                for t in range(j1 - j0):
                    part = max(part, max(abs(zv[t]), abs(d[t] * rv[t])))
                mx = max(mx, part)
            out[bi, c] = mx


@njit(cache=True, fastmath={"reassoc", "contract"}, nogil=True, error_model="numpy")
def k_error_dot(z, r, dinv, err, dot, rng):
    """k_error and k_dot(r, z) in one pass over z and r."""
    nb, nc, h, w = z.shape
    for bi in range(nb):
        for c in range(nc):
            mx = np.float32(0.0)
            acc = 0.0
            for i in range(h):
                j0 = rng[bi, i, 0]
                j1 = rng[bi, i, 1]
                zv = z[bi, c, i, j0:j1]
                rv = r[bi, c, i, j0:j1]
                d = dinv[bi, 0, i, j0:j1]
                part = np.float32(0.0)
                sub = 0.0
                for t in range(j1 - j0):
                    part = max(part, max(abs(zv[t]), abs(d[t] * rv[t])))
                    sub += np.float64(zv[t]) * np.float64(rv[t])
                mx = max(mx, part)
                acc += sub
            err[bi, c] = mx
            dot[bi, c] = acc


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
                xv = x[bi, c, i, j0:j1]
                rv = r[bi, c, i, j0:j1]
                pv = p[bi, c, i, j0:j1]
                qv = q[bi, c, i, j0:j1]
                for t in range(j1 - j0):
                    xv[t] += al * pv[t]
                    rv[t] -= al * qv[t]


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
                pv = p[bi, c, i, j0:j1]
                zv = z[bi, c, i, j0:j1]
                for t in range(j1 - j0):
                    pv[t] = zv[t] + be * pv[t]


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
def k_compose(x, m, u, out):
    """out = x ⊙ (1 − m) + u."""
    nb, nc, h, w = x.shape
    for bi in range(nb):
        mv = m[bi, 0].reshape(-1)
        for c in range(nc):
            xv = x[bi, c].reshape(-1)
            uv = u[bi, c].reshape(-1)
            ov = out[bi, c].reshape(-1)
            for j in range(h * w):
                ov[j] = xv[j] * (np.float32(1.0) - mv[j]) + uv[j]


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
def k_gather9(y, index, out):
    """out[b, k, q] = y[b, index[k, q], q] (reading the Galerkin stencil off the probes)."""
    nb, nk, h, w = y.shape
    for bi in range(nb):
        for k in range(nk):
            for i in range(h):
                for j in range(w):
                    out[bi, k, i, j] = y[bi, index[k, i, j], i, j]


@njit(**_NB)
def k_add_noise(img, mask, draws, std):
    """img[c, p] += std · draws[c · count + rank of p] at the removed pixels p (row-major)."""
    nc, h, w = img.shape
    count = draws.shape[0] // nc
    for c in range(nc):
        t = c * count
        for i in range(h):
            for j in range(w):
                if mask[i, j]:
                    img[c, i, j] += std * draws[t]
                    t += 1
