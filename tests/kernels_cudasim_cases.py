"""CUDA kernel cases, run by ``test_kernels.py`` in a subprocess.

Under ``NUMBA_ENABLE_CUDASIM=1`` (set before numba is imported, hence the subprocess) the CUDA
kernels run in numba's simulator on CPU tensors (``backend="cuda"``); on a machine with a GPU and
without the simulator they run for real on CUDA tensors. Same torch oracle as the CPU tests.
Shapes stay tiny under the simulator (~3000x slower than torch); the simulator's small blocks and
grids (see ``camonnx.kernels._cuda``) make these shapes walk both grid-stride loops.
"""

from __future__ import annotations

import pytest
import torch
from kernels_oracle import (
    check_global_extremes,
    close,
    ge_finalize_ref,
    ge_step_ref,
    global_extremes_maps,
    normalize_ref,
    rand,
    run_power_sums_case,
    run_wsum_case,
    upsample_ref,
    wsum_ref,
)
from numba import config

import camonnx.kernels as K

SIM = bool(getattr(config, "ENABLE_CUDASIM", 0))
if not SIM and not torch.cuda.is_available():
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 or a CUDA GPU", allow_module_level=True)
DEV = "cpu" if SIM else "cuda"
BE = dict(backend="cuda")


def test_backend_is_cuda_kernels():
    from camonnx.kernels import _cuda

    assert _cuda.TPB >= 16
    if SIM:
        assert K.cuda_simulator_enabled()


@pytest.mark.parametrize("mode", K.WSUM_MODES)
@pytest.mark.parametrize("relu", [True, False])
def test_wsum(mode, relu):
    run_wsum_case(lambda *a: K.weighted_channel_sum(*a, **BE), 2, 3, 5, 7, mode, relu, device=DEV)


def test_wsum_batch1_1x1():
    for mode in K.WSUM_MODES:
        run_wsum_case(lambda *a: K.weighted_channel_sum(*a, **BE), 1, 2, 1, 1, mode, True,
                      device=DEV)


MAPS = [(5, 7), (1, 1), (3, 2)]


@pytest.mark.parametrize("size", [(9, 11), (4, 3)], ids=["up", "down"])
@pytest.mark.parametrize("norm", K.NORM_MODES)
def test_upsample(size, norm):
    maps = [rand(2, h, w, seed=3 + i, device=DEV) for i, (h, w) in enumerate(MAPS)]
    got = K.upsample_layers(maps, size, norm, **BE)
    close(got, upsample_ref([m.cpu() for m in maps], size, norm))


def test_upsample_batch1_global():
    maps = [rand(1, h, w, seed=7 + i, device=DEV) for i, (h, w) in enumerate(MAPS)]
    close(K.upsample_layers(maps, (6, 5), "global", **BE),
          upsample_ref([m.cpu() for m in maps], (6, 5), "global"))


def test_upsample_constant_maps_give_zeros():
    maps = [torch.full((2, 3, 4), 0.7, device=DEV), rand(2, 2, 3, seed=1, device=DEV),
            torch.full((2, 1, 1), -2.0, device=DEV)]
    got = K.upsample_layers(maps, (7, 5), "local", **BE).cpu()
    assert torch.isfinite(got).all()
    assert (got[0] == 0).all() and (got[2] == 0).all()
    close(got, upsample_ref([m.cpu() for m in maps], (7, 5), "local"))
    const = [torch.full((1, 2, 2), 3.0, device=DEV), torch.full((1, 3, 1), 3.0, device=DEV)]
    got = K.upsample_layers(const, (5, 4), "global", **BE).cpu()
    assert torch.isfinite(got).all() and (got == 0).all()


def test_global_uses_all_layers():
    out = K.upsample_layers(global_extremes_maps(DEV), (9, 11), "global", **BE)
    check_global_extremes(out)


@pytest.mark.parametrize("norm", K.NORM_MODES)
def test_normalize_(norm):
    buf = rand(2, 2, 3, 5, seed=6, device=DEV)
    buf[1, 0] = 0.25  # a constant map
    ref = normalize_ref(buf.cpu(), norm)
    got = buf.clone()
    assert K.normalize_(got, norm, **BE) is got
    close(got, ref)


@pytest.mark.parametrize("target", [(7, 9), (2, 3)], ids=["up", "down"])
def test_ge_step(target):
    H = rand(2, 3, 4, seed=7, device=DEV)
    E = rand(2, 3, *target, seed=8, device=DEV)
    E[1] = -1.0  # S == 0 for image 1: plain resize, no NaN
    close(K.ge_step(H, E, **BE), ge_step_ref(H.cpu(), E.cpu()))


def test_ge_saliency_and_apply():
    E = rand(2, 3, 4, 5, seed=3, device=DEV)
    E[0] = -0.5
    S, smax = K.ge_saliency(E, **BE)
    S_ref = E.cpu().double().sum(1).clamp_min(0)
    close(S, S_ref)
    close(smax, S_ref.amax(dim=(1, 2)))
    H = rand(2, 2, 3, seed=4, device=DEV)
    close(K.ge_apply(H, S, smax, **BE), ge_step_ref(H.cpu(), E.cpu()))
    stacked = rand(3 * 2, 2, 3, seed=5, device=DEV)  # three layers' maps of the same two images
    out = torch.empty(3 * 2, 4, 5, device=DEV)
    assert K.ge_apply(stacked, S, smax, out=out, **BE) is out
    close(out, torch.cat([ge_step_ref(m, E.cpu()) for m in stacked.cpu().split(2)]))


def test_ge_finalize():
    H = rand(2, 5, 7, seed=9, device=DEV, lo=0, hi=3)
    H[1] = 3.0  # constant image -> zeros
    got = K.ge_finalize(H, **BE)
    close(got, ge_finalize_ref(H.cpu()))
    assert (got[1] == 0).all()
    close(K.ge_finalize(rand(1, 1, 1, seed=2, device=DEV), **BE), torch.zeros(1, 1, 1))
    expected = ge_finalize_ref(H.cpu())
    assert K.ge_finalize(H, out=H, **BE) is H  # in place
    close(H, expected)


@pytest.mark.parametrize("shape", [(1, 1), (4, 2, 5, 7)])
def test_add_power_sums(shape):
    run_power_sums_case(shape, device=DEV, **BE)


@pytest.mark.skipif(SIM, reason="large shapes only on a real GPU")
def test_real_gpu_large_shapes():
    # Realistic launch sizes: many layers, batch > 1, odd sizes, 224x224 output.
    A = torch.randn(16, 256, 28, 28, device="cuda")
    g = torch.randn(16, 256, 28, 28, device="cuda")
    close(K.weighted_channel_sum(A, g.mean((2, 3)), "channel"),
          wsum_ref(A.cpu(), g.mean((2, 3)).cpu(), "channel", True))
    close(K.weighted_channel_sum(A, g, "elementwise_relu"),
          wsum_ref(A.cpu(), g.cpu(), "elementwise_relu", True))
    maps = [torch.rand(16, s, s + 1, device="cuda") for s in [112, 56, 56, 28, 14, 7, 7, 1] * 8]
    for norm in K.NORM_MODES:
        close(K.upsample_layers(maps, (224, 223), norm),
              upsample_ref([m.cpu() for m in maps], (224, 223), norm))
    E = torch.randn(16, 64, 112, 112, device="cuda")
    H = torch.rand(16, 7, 7, device="cuda")
    close(K.ge_step(H, E), ge_step_ref(H.cpu(), E.cpu()))
    close(K.ge_finalize(K.ge_step(H, E)), ge_finalize_ref(ge_step_ref(H.cpu(), E.cpu())))
    run_power_sums_case((25, 8, 256, 28, 28), device="cuda")
