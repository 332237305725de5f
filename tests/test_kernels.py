"""camonnx.kernels: CPU twins here, CUDA kernels in a subprocess (simulator, or a real GPU).

Oracle: ``kernels_oracle`` (torch ``F.interpolate`` per layer, explicit float64 sums, amin/amax),
tolerance 1e-5. The CUDA cases live in ``kernels_cudasim_cases.py``: ``NUMBA_ENABLE_CUDASIM=1``
must be set before numba is imported, so they run in their own ``python -m pytest`` process,
started in the background when this module starts (it overlaps with the CPU tests' JIT) and
checked by ``test_cuda_kernels_under_simulator``. ``kernels_ptx_check.py`` compiles every CUDA
kernel for the real target (PTX, no GPU needed); with a GPU, the same cases also run for real.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

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

import camonnx.kernels as K
from camonnx.errors import InputError
from camonnx.kernels import _cpu

HERE = Path(__file__).resolve().parent
CASES = HERE / "kernels_cudasim_cases.py"
PTX_CHECK = HERE / "kernels_ptx_check.py"
SIM_TEST = "test_cuda_kernels_under_simulator"
PTX_TEST = "test_cuda_kernels_compile_to_ptx"
_BG: dict = {}


def _start_ptx_check():
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, str(PTX_CHECK)], cwd=str(HERE.parent), env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    return proc, log


def _start_cuda_cases(simulator: bool):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(CASES)],
        cwd=str(HERE.parent), env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    return proc, log


def _finish(proc, log, timeout=600):
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.seek(0)
    out = log.read()
    log.close()
    return proc.returncode, out


CPU_KERNELS = ["wsum_channel", "wsum_elementwise", "ups_minmax", "ups_write", "maps_minmax",
               "maps_scale", "ge_chansum", "ge_resize_mul", "ge_stats", "ge_final", "power_sums"]


@pytest.fixture(scope="module", autouse=True)
def _cuda_cases_in_background(request):
    """Start the simulator run and the PTX compile check early (only if their tests are selected)
    so that they overlap the CPU tests and their JIT compile."""
    names = {item.name for item in request.session.items}
    if SIM_TEST in names:
        _BG["sim"] = _start_cuda_cases(simulator=True)
    if PTX_TEST in names:
        _BG["ptx"] = _start_ptx_check()
    yield
    for key in list(_BG):
        proc, log = _BG.pop(key)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


# --------------------------------------------------------------------------------------------
# weighted channel sums
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 1), (3, 5, 4, 9)],
                         ids=["N2", "1x1-batch1", "odd"])
@pytest.mark.parametrize("mode", K.WSUM_MODES)
@pytest.mark.parametrize("relu", [True, False])
def test_wsum_cpu(shape, mode, relu):
    run_wsum_case(K.weighted_channel_sum, *shape, mode, relu)


def test_wsum_many_channels_accumulates_in_float64():
    A = rand(2, 700, 3, 4, seed=3)
    Wt = rand(2, 700, seed=4)
    close(K.weighted_channel_sum(A, Wt, "channel", relu=False), wsum_ref(A, Wt, "channel", False))


def test_wsum_gradcam_family_formulas():
    """The modes give the maps of docs/methods.md: gradcam, hirescam, elementwise, layercam."""
    A = rand(2, 4, 5, 6, seed=1, lo=0, hi=2)
    g = rand(2, 4, 5, 6, seed=2)
    a64, g64 = A.double(), g.double()  # the formulas in float64
    want = torch.relu((g64.mean((2, 3))[:, :, None, None] * a64).sum(1))
    close(K.weighted_channel_sum(A, g.mean((2, 3)), "channel"), want)
    close(K.weighted_channel_sum(A, g, "elementwise"), torch.relu((g64 * a64).sum(1)))
    close(K.weighted_channel_sum(A, g, "elementwise_relu"),
          torch.relu(torch.relu(g64 * a64).sum(1)))
    close(K.weighted_channel_sum(A, torch.relu(g), "elementwise"),
          torch.relu((torch.relu(g64) * a64).sum(1)))


def test_wsum_accepts_float64_and_noncontiguous():
    A = rand(2, 3, 6, 5, seed=5).double().transpose(2, 3)  # (2, 3, 5, 6), non-contiguous
    Wt = rand(3, 2, seed=6).t()  # (2, 3), non-contiguous
    got = K.weighted_channel_sum(A, Wt, "channel")
    close(got, wsum_ref(A.float(), Wt.float(), "channel", True))


# --------------------------------------------------------------------------------------------
# upsampling + normalisation
# --------------------------------------------------------------------------------------------
# Every map size 1..9 x a few widths: upscale, downscale, same size, 1x1, odd ratios.
RATIO_MAPS = [(h, w) for h in (1, 2, 3, 5, 7, 8, 9) for w in (1, 4, 6, 9, 13)]


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (9, 13), (17, 23), (3, 40)])
@pytest.mark.parametrize("norm", K.NORM_MODES)
def test_upsample_matches_interpolate_all_ratios(size, norm):
    maps = [rand(2, h, w, seed=i) for i, (h, w) in enumerate(RATIO_MAPS)]
    close(K.upsample_layers(maps, size, norm), upsample_ref(maps, size, norm))


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("norm", K.NORM_MODES)
def test_upsample_batches(n, norm):
    maps = [rand(n, s, s + 2, seed=s) for s in (28, 14, 7, 1)]
    close(K.upsample_layers(maps, (56, 57), norm), upsample_ref(maps, (56, 57), norm))


def test_upsample_large_upscale_many_rows():
    # 7 -> 224 and 112 -> 224: long runs of rows between two source rows (the min/max pass only
    # evaluates each run's ends), and chunk boundaries inside runs.
    maps = [rand(2, 7, 7, seed=1), rand(2, 112, 112, seed=2), rand(2, 3, 50, seed=3)]
    for norm in K.NORM_MODES:
        close(K.upsample_layers(maps, (224, 224), norm), upsample_ref(maps, (224, 224), norm))


def test_upsample_constant_maps_give_zeros():
    maps = [torch.full((2, 3, 4), 0.7), rand(2, 2, 3, seed=1), torch.full((2, 1, 1), -2.0),
            torch.zeros(2, 5, 5)]
    got = K.upsample_layers(maps, (13, 11), "local")
    assert torch.isfinite(got).all()
    assert (got[0] == 0).all() and (got[2] == 0).all() and (got[3] == 0).all()
    close(got, upsample_ref(maps, (13, 11), "local"))
    const = [torch.full((2, 2, 2), 3.0), torch.full((2, 3, 1), 3.0)]
    got = K.upsample_layers(const, (8, 8), "global")
    assert torch.isfinite(got).all() and (got == 0).all()
    # a 1x1 map resized to 224x224 stays exactly constant (lerp form), so it normalises to zeros
    one = K.upsample_layers([rand(3, 1, 1, seed=4)], (224, 224), "none")
    assert (one == one[:, :, :1, :1]).all()


def test_global_uses_min_max_across_all_layers():
    out = K.upsample_layers(global_extremes_maps(), (9, 11), "global")
    check_global_extremes(out)
    # local normalisation instead makes every layer span [0, 1]
    loc = K.upsample_layers(global_extremes_maps(), (9, 11), "local")
    assert (loc.amin(dim=(2, 3)) == 0).all() and (loc.amax(dim=(2, 3)) == 1).all()


def test_upsample_out_buffer_and_tensor_input():
    stack = rand(3, 2, 4, 5, seed=2)
    out = torch.full((3, 2, 6, 7), float("nan"))
    res = K.upsample_layers(stack, (6, 7), "local", out=out)
    assert res is out
    close(out, upsample_ref(list(stack), (6, 7), "local"))
    with pytest.raises(InputError):
        K.upsample_layers(stack, (6, 7), "local", out=torch.empty(3, 2, 6, 8))


@pytest.mark.parametrize("norm", K.NORM_MODES)
def test_normalize_in_place(norm):
    buf = rand(3, 2, 9, 10, seed=6)
    buf[1, 0] = 0.25  # constant map
    ref = normalize_ref(buf, norm)
    got = buf.clone()
    assert K.normalize_(got, norm) is got
    close(got, ref)
    three = buf[0].clone()  # (N, H, W): one layer
    close(K.normalize_(three, norm), normalize_ref(buf[:1], norm)[0])


# --------------------------------------------------------------------------------------------
# Gradual Extrapolation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hw,target", [((3, 4), (7, 9)), ((7, 7), (28, 28)), ((5, 6), (2, 3)),
                                       ((4, 4), (4, 4)), ((1, 1), (5, 3))],
                         ids=["up", "x4", "down", "same", "1x1"])
def test_ge_step(hw, target):
    H = rand(3, *hw, seed=7, lo=0, hi=2)
    E = rand(3, 4, *target, seed=8)
    E[1] = -1.0  # S == 0 for image 1: plain resize (the step is a no-op for it), no NaN
    got = K.ge_step(H, E)
    close(got, ge_step_ref(H, E))
    close(got[1], upsample_ref([H[1:2]], target, "none")[0, 0])


def test_ge_saliency_and_apply():
    """ge_step == ge_apply(H, *ge_saliency(E)); one saliency serves several layers' maps."""
    E = rand(2, 5, 9, 8, seed=3)
    E[0] = -0.5  # S == 0 for image 0
    S, smax = K.ge_saliency(E)
    S_ref = E.double().sum(1).clamp_min(0)
    close(S, S_ref)
    close(smax, S_ref.amax(dim=(1, 2)))
    assert smax[0] == 0
    for i, hw in enumerate([(3, 4), (1, 1), (5, 5)]):
        H = rand(2, *hw, seed=20 + i)
        close(K.ge_apply(H, S, smax), ge_step_ref(H, E))
    with pytest.raises(InputError):
        K.ge_apply(rand(2, 3, 3), S, smax[:1])
    with pytest.raises(InputError):  # 3 maps cannot stack layers of 2 images
        K.ge_apply(rand(3, 3, 3), S, smax)
    empty = K.ge_apply(rand(0, 3, 3), S[:0], smax[:0])  # an empty batch stays empty
    assert tuple(empty.shape) == (0, 9, 8)
    with pytest.raises(InputError):
        K.ge_apply(rand(2, 3, 3), S[:0], smax[:0])


def test_ge_apply_stacked_layers_and_out_buffer():
    """H stacking G layers' maps (G·N, h, w) equals G separate calls; ``out`` is written and
    returned; a wrong ``out`` is refused."""
    E = rand(2, 4, 11, 9, seed=13)
    E[1, :, :5] = -2.0
    S, smax = K.ge_saliency(E)
    layers = [rand(2, 3, 4, seed=30 + g) for g in range(3)]
    out = torch.empty(6, 11, 9)
    assert K.ge_apply(torch.cat(layers), S, smax, out=out) is out
    close(out, torch.cat([ge_step_ref(h, E) for h in layers]))
    for bad in (torch.empty(6, 11, 8), torch.empty(6, 11, 9, dtype=torch.float64),
                torch.empty(6, 9, 11).transpose(1, 2), "buffer"):
        with pytest.raises(InputError, match="out must be"):
            K.ge_apply(torch.cat(layers), S, smax, out=bad)


def test_ge_finalize():
    H = rand(3, 13, 11, seed=9, lo=0, hi=3)
    H[1] = 3.0  # constant -> zeros
    H[2, 0, 0] = 50.0  # outlier: z clipped at 1
    got = K.ge_finalize(H)
    close(got, ge_finalize_ref(H))
    assert (got[1] == 0).all()
    assert got[0].min() == 0 and got[0].max() == 1
    close(K.ge_finalize(rand(2, 1, 1, seed=2)), torch.zeros(2, 1, 1))
    expected = ge_finalize_ref(H)
    assert K.ge_finalize(H, out=H) is H  # in place: the shift is read before any write
    close(H, expected)


def test_ge_pipeline_224():
    H = rand(2, 7, 7, seed=1, lo=0, hi=1)
    for i, s in enumerate((14, 28, 56, 112, 224)):
        E = rand(2, 3, s, s, seed=10 + i)
        H_ref = ge_step_ref(H, E)
        H = K.ge_step(H, E)
        close(H, H_ref)
    close(K.ge_finalize(H), ge_finalize_ref(H))


# --------------------------------------------------------------------------------------------
# API contract
# --------------------------------------------------------------------------------------------
def test_bad_inputs_are_clear_errors():
    A = rand(2, 3, 4, 5)
    with pytest.raises(InputError, match="mode"):
        K.weighted_channel_sum(A, rand(2, 3), "nope")
    with pytest.raises(InputError, match="shape"):
        K.weighted_channel_sum(A, rand(2, 4), "channel")
    with pytest.raises(InputError, match="batch"):
        K.upsample_layers([rand(2, 3, 3), rand(3, 3, 3)], (5, 5))
    with pytest.raises(InputError, match="normalisation"):
        K.upsample_layers([rand(2, 3, 3)], (5, 5), "minmax")
    with pytest.raises(InputError):
        K.upsample_layers([], (5, 5))
    with pytest.raises(InputError):
        K.ge_step(rand(2, 3, 3), rand(3, 2, 5, 5))
    if not K.cuda_simulator_enabled():
        with pytest.raises(InputError, match="cuda"):
            K.weighted_channel_sum(A, rand(2, 3), backend="cuda")


@pytest.mark.parametrize("shape", [(1, 1), (5, 3, 7, 9), (3, 20001)], ids=["one", "4d", "blocks"])
def test_add_power_sums(shape):
    run_power_sums_case(shape)


def test_add_power_sums_rejects_bad_accumulators():
    g = rand(2, 3, 4)
    good = [torch.zeros(12, dtype=torch.float64) for _ in range(3)]
    for bad in (good[:2], [torch.zeros(12) for _ in range(3)],
                [torch.zeros(11, dtype=torch.float64)] * 3):
        with pytest.raises(InputError, match="accumulators"):
            K.add_power_sums(g, bad)
    with pytest.raises(InputError):
        K.add_power_sums(torch.tensor(1.0), good)


def test_each_cpu_kernel_has_one_signature():
    K.warmup()
    for name in CPU_KERNELS:
        sigs = getattr(_cpu, name).signatures
        assert len(sigs) == 1, (name, sigs)


# --------------------------------------------------------------------------------------------
# CUDA kernels (subprocess)
# --------------------------------------------------------------------------------------------
def test_cuda_kernels_under_simulator():
    proc, log = _BG.pop("sim", None) or _start_cuda_cases(simulator=True)
    rc, out = _finish(proc, log)
    assert rc == 0, f"CUDA simulator cases failed (rc={rc}):\n{out[-6000:]}"
    passed = re.search(r"(\d+) passed", out)
    assert passed and int(passed.group(1)) >= 20, out[-2000:]  # not skipped wholesale


def test_cuda_kernels_compile_to_ptx():
    """The simulator never types the kernels for the GPU: compile each one to PTX (sm_90) with the
    dispatcher's exact argument types (needs libNVVM, not a GPU)."""
    proc, log = _BG.pop("ptx", None) or _start_ptx_check()
    rc, out = _finish(proc, log)
    if rc == 77:
        pytest.skip(out.strip()[-300:])
    assert rc == 0, f"PTX compilation failed (rc={rc}):\n{out[-6000:]}"
    assert out.count("PTX ok:") == len(CPU_KERNELS), out  # every twin has its CUDA kernel


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_kernels_on_gpu():
    proc, log = _start_cuda_cases(simulator=False)
    rc, out = _finish(proc, log)
    assert rc == 0, f"CUDA GPU cases failed (rc={rc}):\n{out[-6000:]}"
