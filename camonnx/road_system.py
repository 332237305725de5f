"""The linear system of ROAD's noisy linear imputation and its exact solution (docs/metrics.md#imputation).

One job: define the equations every imputation solver solves, and solve them directly as the
reference that the fast solver (:mod:`camonnx.road_imputation`) is tested against.

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
(Noise N(0, σ²) is then added at the removed pixels only: :func:`camonnx.road_imputation.add_noise`.)

**Reference.** :func:`impute_reference` builds A with scipy.sparse (vectorised COO, not LIL) and
solves it directly (``spsolve``, float64). :func:`imputation_residual` measures how far any
imputed image is from satisfying the system; :func:`fine_stencil` gives A as a 9-point stencil
per pixel (what the multigrid's coarsest level assembles).
"""

from __future__ import annotations

import functools

import numpy as np

from camonnx.errors import InputError


#: 3×3 neighbour weights (docs/metrics.md#imputation; row offset −1..1 × column offset −1..1; centre 0).
WEIGHTS = np.array([[1 / 12, 1 / 6, 1 / 12],
                    [1 / 6, 0.0, 1 / 6],
                    [1 / 12, 1 / 6, 1 / 12]])
#: stencil index k = (di + 1) * 3 + (dj + 1) for the neighbour at offset (di, dj); k = 4 is p itself.
OFFSETS = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)]


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
