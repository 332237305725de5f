"""Noisy linear imputation for ROAD (docs/metrics.md#imputation): the fast batched solve and the noise.

One job: fill the removed pixels of a batch of (image, mask) pairs -- all fractions, layers and
images of a ybROAD chunk -- with the solution u of the linear system of
:mod:`camonnx.road_system`,

    s_p u_p − Σ_{q removed} w_pq u_q = Σ_{q kept} w_pq x_q        (p removed),

then add noise N(0, σ²), σ = :data:`NOISE_STD` = 0.01 by default, at the removed pixels only
(:func:`add_noise`; :func:`impute` does both). A mask removing every pixel gets the image's
per-channel mean.

**Solve.** :func:`solve` runs conjugate gradients on A (SPD, see :mod:`camonnx.road_system`),
preconditioned with one geometric multigrid V-cycle per iteration
(:class:`camonnx.road_multigrid.Multigrid`), on either array backend
(:mod:`camonnx.road_backends`): torch on CUDA (the whole batch at once), numba kernels on CPU,
the masks one by one on a thread pool (one per core; ``CAMONNX_THREADS`` overrides). Serial
kernels + a pool, not ``parallel=True``: a solve makes ~40 kernel calls per mask (each V-cycle
and the FMG one compiled call: ``camonnx.kernels._impute_cycle``), and on a loaded machine each
OpenMP parallel region (numba's or torch's) was measured at ~8-12 ms of thread wake-up, more
than the work; the pool pays that once per solve.

Stopping: CG stops per system (mask × channel) when both the preconditioned residual z = M⁻¹r
(an estimate of the remaining error in the image's units, M ≈ A⁻¹) and the residual in pixel
units, D⁻¹r = (weighted neighbour mean − value) at each removed pixel, are ≤ ``tol`` in
max-norm, or after ``max_iter`` iterations (the CPU test counts the points above ``tol``: a
sum vectorises, a max does not; the max-norm itself is computed once, for :class:`SolveInfo`).
Masks whose channels have all converged are retired (the CPU kernels skip them).

Start (:func:`_pcg`): a full-multigrid solution u₀ (:meth:`camonnx.road_multigrid.Multigrid.fmg`:
the right-hand side restricted to every level, the coarsest solved exactly, then level by level
upward the coarser solution interpolated and corrected by one V-cycle; ~1.5 V-cycles of work),
then the true residual of u₀ accumulated in float64 and CG in float32 down to ``tol``: ~2.5
iterations on 224² ROAD masks at the default ``tol`` (:data:`TOL` = 1e-4), against ~6 from
u = 0 (where the first CG step is itself one V-cycle on the right-hand side). The float64
residual keeps float32 CG accurate: from u = 0 a float32 CG stalls at an error of ~eps·κ·|e₀|
(7e-4 measured on a 224² mask removing 80 %, whatever ``tol``), because its recurrence residual
drifts from the true one; from u₀, |e₀| and that floor are ~100× smaller. (This replaces a
float32 CG stage to 1e-2 followed by a restart from the float64 residual.) The previous
fraction's solution is not used: MoRF(q') ⊃ MoRF(q), but the error of u_q as a start for q' is
the harmonic extension of x − u_q over the newly removed band, O(1) like the error of u = 0.

Accuracy against :func:`camonnx.road_system.impute_reference` (tests/test_road.py):
max |fast − direct| ≤ 1e-3 (the contract) at the default ``tol`` = 1e-4: measured ≤ 2.2e-4 on
104 ROAD masks of the default model (Grad-CAM at every 4th layer of the cat, all 8 masks; values
in [-1, 0.7]; 2.6e-4 before the FMG start), ≤ 1.1e-4 on random and smooth masks, masks touching
the border, 99 % removal and a mask keeping a single pixel (values ~±3); residual
max |u_p − Σ w_pq u_q / s_p| ≤ ``tol`` (measured ≤ 7.6e-5). The error is up to ~3× the stopping
estimate (``tol`` 3e-4 gave 8.9e-4, too close to the contract; 1e-5, the former default, 2e-5 for
2 more iterations). Cost: ~6.5 ms of one core per 224² mask (3 channels; ~1.7 of set-up, ~1.2
of FMG, ~0.5 per V-cycle; was ~11 before the compiled cycles and unsigned span loops), against
~400 ms for pytorch-grad-cam's LIL build + spsolve (bench/bench_road.py).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from camonnx.errors import InputError
from camonnx.kernels._impute_cpu import k_add_noise
from camonnx.road_backends import NumbaOps, TorchOps, get_ops
from camonnx.road_multigrid import Multigrid

#: Imputation noise (docs/metrics.md#imputation), in the model's input space.
NOISE_STD = 0.01


@dataclass
class SolveInfo:
    """How a fast solve went: the most CG iterations of any group of masks, whether every system
    met ``tol``, the final max |M⁻¹r| (≈ the remaining error, image units), backend, threads."""

    iterations: int
    converged: bool
    error_estimate: float
    backend: str
    workers: int = 1


#: Default stopping tolerance of :func:`solve` (max-norm, image units): measured error against the
#: direct solve ≤ 2.2e-4 on 104 ROAD masks of the default model (the contract is 1e-3); 3e-4 gave
#: 8.9e-4, too close to it.
TOL = 1e-4
#: Masks per CPU solve (see :func:`solve`).
CPU_GROUP = 1


def _pcg(ops: TorchOps, x, removed: np.ndarray, out, tol: float, max_iter: int, sweeps: int,
         omega: float) -> tuple[int, bool, float]:
    """Solve every system of x (B, C, H, W) at the removed masks (B, H, W; none full) into out.

    u₀ = FMG(r₀) (r₀ the residual of u = 0), r = b − A u₀ recomputed from the imputed image
    with float64 accumulation, then float32 CG from u₀ down to ``tol`` (the module docstring
    says why: the float64 residual of a start already ~100× closer than u = 0 keeps the
    float32 recurrence's drift far below ``tol``)."""
    b, c = x.shape[:2]
    mg = Multigrid(ops, removed, c, sweeps=sweeps, omega=omega)
    m, s_, dinv, rng = mg.fine.m, mg.fine.s, mg.fine.dinv, mg.fine.rng
    u = ops.zeros(x.shape)
    r = ops.zeros(x.shape)
    q = ops.zeros(x.shape)   # A p
    spans = None if rng is None else rng.copy()   # every mask's (retire() empties rng's)
    # ``out`` holds the imputed image x ⊙ (1 − m) + u throughout: written whole once (u = 0),
    # then only on the active spans, where u lives
    ops.compose(x, m, u, out, None if rng is None else full_spans(rng.shape[0], *x.shape[2:]))
    ops.true_residual(m, s_, out, r, rng)      # r₀ = Σ_q w_pq y_q − s_p y_p at removed p
    mg.fmg(r, u)
    ops.compose(x, m, u, out, rng)
    ops.true_residual(m, s_, out, r, rng)      # float64-accurate residual of the FMG start
    z = mg.vcycle(r)
    p = ops.copy(z)
    over, rz = ops.error_dot(z, r, dinv, tol, rng)
    done = ~over
    mg.retire(done.all(axis=1))
    iterations = 0
    while not done.all() and iterations < max_iter:
        iterations += 1
        mg.apply(p, q)
        pq = ops.dot(p, q, rng)
        alpha = np.where(done | (pq <= 0), 0.0, rz / np.where(pq > 0, pq, 1.0))
        ops.update(u, r, p, q, alpha, rng)
        z = mg.vcycle(r)
        over, rz_new = ops.error_dot(z, r, dinv, tol, rng)
        done = done | ~over
        mg.retire(done.all(axis=1))
        beta = np.where(rz > 0, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        ops.direction(p, z, beta, rng)
        rz = rz_new
    ops.compose(x, m, u, out, spans)
    # retired masks kept their last z and r (the kernels skip them): each system's final estimate
    err = ops.error(z, r, dinv, spans)
    return iterations, bool(done.all()), float(err.max(initial=0.0))


def full_spans(b: int, h: int, w: int) -> np.ndarray:
    """(b, h, 2) spans covering every column of every row."""
    spans = np.zeros((b, h, 2), np.int64)
    spans[..., 1] = w
    return spans


def default_workers() -> int:
    """Threads for the CPU solver: the cores this process may use (``CAMONNX_THREADS`` overrides)."""
    env = os.environ.get("CAMONNX_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def solve(images: torch.Tensor, removed: torch.Tensor, *, tol: float = TOL, max_iter: int = 50,
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
    """Add std · Z at the removed pixels of each image, in place, Z ~ N(0, 1) of shape (C, H, W)
    drawn from ``numpy.random.default_rng(seeds[i])`` (an int or a tuple of ints) on the host.

    Images that share a seed share their field Z: ROAD gives every mask of one image and trial
    the same seed, so each imputed image still gets i.i.d. N(0, std²) at its removed pixels, and
    its layers and fractions are compared under common random numbers (the noise at a
    pixel does not depend on which mask removes it). One field per distinct seed is drawn, not
    one draw per removed pixel and mask: ~25× fewer draws for a 49-layer ybROAD. The noise is
    the same on every device and for every batch split."""
    if std == 0:
        return imputed
    b, c, h, w = imputed.shape
    if len(seeds) != b:
        raise InputError(f"add_noise needs one seed per image: {len(seeds)} for {b}.")
    slots: dict = {}
    which = np.array([slots.setdefault(_seed_key(seed), len(slots)) for seed in seeds], np.int64)
    fields = np.empty((len(slots), c, h, w), np.float32)
    for key, slot in slots.items():
        np.random.default_rng(key).standard_normal((c, h, w), dtype=np.float32, out=fields[slot])
    rem = np.ascontiguousarray(removed.detach().to("cpu", torch.bool).numpy())
    if imputed.device.type == "cpu":
        k_add_noise(imputed.numpy(), rem, fields, which, np.float32(std))
    else:  # the fields go over once; the masks are already where the images are
        on_device = torch.from_numpy(fields).to(imputed.device)
        mask = removed.to(imputed.device, torch.float32)[:, None]
        imputed.addcmul_(on_device[torch.as_tensor(which, device=imputed.device)], mask, value=std)
    return imputed


def _seed_key(seed):
    """A seed as a hashable numpy seed: an int, or a tuple of ints."""
    if isinstance(seed, (tuple, list, np.ndarray)):
        return tuple(int(v) for v in seed)
    return int(seed)


def impute(images: torch.Tensor, removed: torch.Tensor, *, noise: float = NOISE_STD,
           seeds: Sequence | None = None, tol: float = TOL, max_iter: int = 50,
           backend: str | None = None, workers: int | None = None) -> torch.Tensor:
    """Noisy linear imputation (docs/metrics.md#imputation) of images (B, C, H, W) at removed masks (B, H, W): all
    systems solved at once by :func:`solve`, then N(0, ``noise``²) at the removed pixels
    (``seeds``: one per image for its noise field, see :func:`add_noise`; default 0, 1, …)."""
    out, _ = solve(images, removed, tol=tol, max_iter=max_iter, backend=backend, workers=workers)
    seeds = list(range(out.shape[0])) if seeds is None else list(seeds)
    return add_noise(out, torch.as_tensor(removed), noise, seeds)
