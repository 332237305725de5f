"""Independent torch oracles and shared checks for the kernel tests.

Everything here is written from the formulas (docs/methods.md, docs/pipeline.md#kernels) with plain torch in float64 (on
float64 copies of the kernels' float32 inputs): sums, ``F.interpolate(mode="bilinear",
align_corners=False)`` per layer, ``amin``/``amax`` normalisation. Used by ``test_kernels.py``
(CPU twins) and ``kernels_cudasim_cases.py`` (CUDA kernels, under the simulator or on a GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: float32 kernels against the float64 oracle, on values of order 1. Measured over 5 seed sets of
#: every CPU case in test_kernels.py, as a share of the allowance atol + rtol·|want|: ≤ 0.38 for
#: bilinear upsampling (worst 7×7 → 224×224: the kernels place source coordinates in float32,
#: ~4e-6), ≤ 0.05 for the weighted sums and the Gradual Extrapolation steps. A wrong index,
#: weight or blend is O(0.1).
TOL = dict(rtol=1e-5, atol=1e-5)


def wsum_ref(A: torch.Tensor, Wt: torch.Tensor, mode: str, relu: bool) -> torch.Tensor:
    A64, W64 = A.double(), Wt.double()
    if mode == "channel":
        M = (W64[:, :, None, None] * A64).sum(1)
    elif mode == "elementwise":
        M = (W64 * A64).sum(1)
    elif mode == "elementwise_relu":
        M = (W64 * A64).clamp_min(0).sum(1)
    else:
        raise ValueError(mode)
    if relu:
        M = M.clamp_min(0)
    return M


def resize_ref(m: torch.Tensor, size) -> torch.Tensor:
    """(N, h, w) -> (N, H, W), torch bilinear with half-pixel centres, in float64."""
    return F.interpolate(m[:, None].double(), size=tuple(size), mode="bilinear",
                         align_corners=False)[:, 0]


def normalize_ref(X: torch.Tensor, mode: str) -> torch.Tensor:
    """(L, N, H, W): local = per (l, n); global = per n over all layers; constant -> 0."""
    X = X.double()
    if mode == "none":
        return X.clone()
    dims = (2, 3) if mode == "local" else (0, 2, 3)
    lo = X.amin(dim=dims, keepdim=True)
    hi = X.amax(dim=dims, keepdim=True)
    rng = hi - lo
    # torch's bilinear blend (lam0*a + lam1*b) leaves last-ulp noise on a resized constant map;
    # the kernels' lerp form keeps it exactly constant. Ranges at the kernels' (float32)
    # rounding level count as constant.
    scale = torch.maximum(lo.abs(), hi.abs())
    rng = torch.where(rng <= 8 * torch.finfo(torch.float32).eps * scale, torch.zeros_like(rng), rng)
    safe = torch.where(rng > 0, rng, torch.ones_like(rng))
    return torch.where(rng > 0, (X - lo) / safe, torch.zeros_like(X))


def upsample_ref(maps, size, mode: str) -> torch.Tensor:
    X = torch.stack([resize_ref(m, size) for m in maps])
    return normalize_ref(X, mode)


def ge_step_ref(H: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
    S = E.double().sum(1).clamp_min(0)
    R = resize_ref(H, E.shape[2:])
    out = R.clone()
    for n in range(H.shape[0]):
        m = S[n].max()
        if m > 0:
            out[n] = R[n] * (S[n] / m)
    return out


def ge_finalize_ref(H: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(H, dtype=torch.float64)
    for n in range(H.shape[0]):
        x = H[n].double()
        if x.numel() < 2:
            continue
        std = x.std(unbiased=True)
        if not std > 0:
            continue
        z = ((x - x.mean()) / std).clamp(-1, 1)
        lo, hi = z.min(), z.max()
        if hi > lo:
            out[n] = (z - lo) / (hi - lo)
    return out


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == torch.float32, got.dtype
    assert tuple(got.shape) == tuple(want.shape), (tuple(got.shape), tuple(want.shape))
    assert torch.isfinite(got).all(), "non-finite values"
    torch.testing.assert_close(got.cpu().double(), want.cpu().double(), **TOL)


# --------------------------------------------------------------------------------------------
# cases shared by the CPU and CUDA tests (the CUDA ones stay tiny: the simulator is slow)
# --------------------------------------------------------------------------------------------
def rand(*shape, seed=0, device="cpu", lo=-1.0, hi=1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g) * (hi - lo) + lo).to(device)


def run_wsum_case(fn, N, K, h, w, mode, relu, device="cpu", **kw):
    A = rand(N, K, h, w, seed=1, device=device)
    Wt = rand(*((N, K) if mode == "channel" else (N, K, h, w)), seed=2, device=device)
    got = fn(A, Wt, mode, relu, **kw)
    close(got, wsum_ref(A.cpu(), Wt.cpu(), mode, relu))
    if relu:
        assert (got >= 0).all()


def global_extremes_maps(device="cpu"):
    """3 layers, 2 images: image 0's extremes both sit in layer 1, image 1's in layer 2."""
    a = rand(2, 4, 5, seed=10, device=device)  # values in [-1, 1]
    b = rand(2, 3, 3, seed=11, device=device)
    c = rand(2, 6, 2, seed=12, device=device)
    b[0, 0, 0], b[0, 2, 2] = -5.0, 9.0
    c[1, 1, 1], c[1, 5, 0] = -7.0, 4.0
    return [a, b, c]


def check_global_extremes(out: torch.Tensor) -> None:
    """``out`` = upsample_layers(global_extremes_maps(), size, "global"), size an upscale: the
    layer holding an image's extremes spans exactly [0, 1], the other layers stay strictly inside
    (so the min/max really were taken over all layers of that image, and per image)."""
    o = out.cpu()
    for n, holder in ((0, 1), (1, 2)):
        assert o[holder, n].min().item() == 0.0
        assert o[holder, n].max().item() == 1.0
        for l in range(3):
            if l != holder:
                assert o[l, n].min().item() > 0.0
                assert o[l, n].max().item() < 1.0


def run_power_sums_case(shape, device="cpu", **kw) -> None:
    """add_power_sums twice into non-zero float64 accumulators == float64 torch sums of g, g², g³
    (same float64 arithmetic, summation order aside: tolerance 1e-12)."""
    from camonnx import kernels as K

    g1, g2 = rand(*shape, seed=41, device=device), rand(*shape, seed=42, device=device, lo=-3)
    start = rand(3, *shape[1:], seed=43).double().to(device)
    sums = [start[p].clone().reshape(-1) for p in range(3)]
    K.add_power_sums(g1, sums, **kw)
    K.add_power_sums(g2, sums, **kw)
    for p in range(3):
        both = torch.cat([g1, g2]).double().cpu()
        want = start[p].cpu().reshape(-1) + (both ** (p + 1)).reshape(both.shape[0], -1).sum(0)
        torch.testing.assert_close(sums[p].cpu(), want, rtol=1e-12, atol=1e-12)
