"""The imputation solver's two array backends, one interface (docs/metrics.md#solver).

One job: every array operation the multigrid-preconditioned CG of
:mod:`camonnx.road_imputation` needs, on a batch of B masks × C channels on an h×w grid, so that
the algorithm is written once (:mod:`camonnx.road_multigrid`, :func:`camonnx.road_imputation._pcg`):

* :class:`TorchOps`: torch tensor operations on any device -- what runs on CUDA, on the whole
  batch at once;
* :class:`NumbaOps`: float32 C-contiguous numpy arrays and the serial numba kernels of
  ``camonnx.kernels._impute_cpu``, which touch only the rows' active column spans
  (:func:`camonnx.road_multigrid.active_ranges`); on CPU the solver runs the masks one by one on
  a thread pool (one per core). On CPU, torch's depthwise conv2d runs ~50-100 ns per element
  against ~1-2 for the numba stencils.

The operations (m the removed mask, s the neighbour-weight sums, W the 3×3 weights of
:mod:`camonnx.road_system`, D the diagonal):

* fine level: A u = m ⊙ (s ⊙ u − W ∗ u); a coarse level: A u = Σ_k S_k ⊙ shift_k(u) with its
  Galerkin 9-point stencil S. Each in three modes: 0: A u; 1: b − A u; 2: u + ω D⁻¹ (b − A u);
* the true residual m ⊙ (W ∗ y − s ⊙ y) of a full image y, accumulated in float64;
* prolongation P: bilinear interpolation from the coarse grid of ceil(h/2)×ceil(w/2) points
  (:func:`coarse_size`; fine 2i = coarse i, fine 2i+1 = the mean of coarse i and i+1, and on
  an even-sized axis the last fine row copies the last coarse row); restriction R = Pᵀ;
* a Galerkin level's stencil read off its probes, with its active points and l1-Jacobi
  diagonal (:meth:`TorchOps.galerkin_stencil`);
* the CG vector operations: ω D⁻¹ b, per-system dot products and max-norms, x += α p,
  r −= α q, p = z + β p; the coarsest level's dense solve; x ⊙ (1 − m) + u.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from camonnx.errors import InputError
from camonnx.kernels._impute_cpu import (k_compose, k_dense, k_direction, k_dot, k_error_dot, k_error_max,
                                         k_fine, k_galerkin_stencil, k_prolong_add, k_restrict, k_scale,
                                         k_stencil, k_true_residual, k_update)
from camonnx.road_system import OFFSETS, WEIGHTS


def coarse_size(h: int, w: int) -> tuple[int, int]:
    """The next coarser grid of an h×w level: ceil(h/2) × ceil(w/2) points."""
    return (h + 1) // 2, (w + 1) // 2


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
        a = np.ascontiguousarray(a)
        return torch.as_tensor(a if a.flags.writeable else a.copy(), device=self.device)

    def copy(self, a):
        return a.clone()

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
        float64: the residual of the linear system, at CG's start."""
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

    def error_dot(self, z, r, dinv, tol: float, rng=None) -> tuple[np.ndarray, np.ndarray]:
        """Per system: whether :meth:`error` exceeds ``tol`` (B, C bool), and :meth:`dot` (r, z)."""
        return self.error(z, r, dinv, rng) > tol, self.dot(r, z, rng)

    def update(self, x, r, p, q, alpha: np.ndarray, rng=None):
        """x += α p; r −= α q (α per (B, C))."""
        a = self.asarray(alpha.astype(np.float32))[:, :, None, None]
        x.addcmul_(p, a)
        r.addcmul_(q, a, value=-1.0)

    def direction(self, p, z, beta: np.ndarray, rng=None):
        """p = z + β p."""
        p.mul_(self.asarray(beta.astype(np.float32))[:, :, None, None]).add_(z)

    def galerkin_stencil(self, y, index: np.ndarray, structural: np.ndarray):
        """(S, dinv, active) of a Galerkin level from its probes y (B, 9, h, w): S[:, k, q] =
        y[:, index[k, q], q]; active = (S₄ > 0) ⊙ ``structural`` (B, h, w bool, host); dinv =
        1 / Σ_k |S_k| on active points, else 0 (l1-Jacobi, see road_multigrid.galerkin)."""
        b, _, hc, wc = y.shape
        S = torch.gather(y, 1, self.asarray(index)[None].expand(b, 9, hc, wc)).contiguous()
        host = S.detach().cpu().numpy()
        positive = (host[:, 4:5] > 0) & structural[:, None]
        l1 = np.abs(host).sum(axis=1, keepdims=True)
        dinv = np.where(positive, 1.0 / np.where(positive, l1, 1.0), 0.0).astype(np.float32)
        return S, self.asarray(dinv), self.asarray(positive.astype(np.float32))

    def dense_solve(self, inverse, rhs, out):
        """out (B, C, n) = rhs (B, C, n) @ inverse (B, n, n) (symmetric)."""
        b, c, h, w = rhs.shape
        torch.matmul(rhs.reshape(b, c, h * w), inverse, out=out.view(b, c, h * w))
        return out

    def compose(self, x, m, u, out, rng=None):
        """out = x ⊙ (1 − m) + u (u vanishes off m); numba: on the spans ``rng`` only."""
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
        err = np.zeros(z.shape[:2])
        k_error_max(z, r, dinv, err, rng)
        return err

    def error_dot(self, z, r, dinv, tol, rng=None):
        over = np.zeros(z.shape[:2], np.int64)
        dot = np.zeros(z.shape[:2])
        k_error_dot(z, r, dinv, float(tol), over, dot, rng)
        return over > 0, dot

    def update(self, x, r, p, q, alpha, rng=None):
        k_update(x, r, p, q, np.ascontiguousarray(alpha, np.float64), rng)

    def direction(self, p, z, beta, rng=None):
        k_direction(p, z, np.ascontiguousarray(beta, np.float64), rng)

    def galerkin_stencil(self, y, index, structural):
        b, _, h, w = y.shape
        S = np.empty_like(y)
        dinv = np.empty((b, 1, h, w), np.float32)
        active = np.empty((b, 1, h, w), np.float32)
        k_galerkin_stencil(y, index, structural, S, dinv, active)
        return S, dinv, active

    def dense_solve(self, inverse, rhs, out):
        k_dense(inverse, rhs, out)
        return out

    def compose(self, x, m, u, out, rng=None):
        k_compose(x, m, u, out, rng)
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

