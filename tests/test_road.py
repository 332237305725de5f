"""ROAD and ybROAD (docs/metrics.md): the imputation solvers, exact tie-safe ranking, faithfulness on a
pretrained model with real photos, agreement with pytorch-grad-cam's ROADCombined, the
ybROAD result and its writers, and the CLI.

Models: the session's ``resnet18_onnx`` (random weights, dynamic H/W) at small sizes for the
plumbing; the pretrained default EfficientNet-Lite0 at 224 for faithfulness; the same pretrained
network exported with a dynamic size and run at 96×96 for the agreement with pytorch-grad-cam
(whose per-mask LIL build + spsolve would take ~10 s per image and seed at 224).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from camonnx.errors import InputError
from camonnx.road import road_score, ybroad
from camonnx.road_imputation import add_noise, impute, solve
from camonnx.road_masks import FRACTIONS, relevance_rank, removal_count, removal_masks
from camonnx.road_system import imputation_residual, impute_reference

# --- masks used by the solver tests ----------------------------------------------------------


def _smooth_masks(n: int, h: int, w: int, q: float, seed: int) -> np.ndarray:
    """Blob-like masks (an upsampled random 5×5 field thresholded at exactly round(q·h·w))."""
    coarse = torch.rand(n, 1, 5, 5, generator=torch.Generator().manual_seed(seed))
    field = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear",
                                            align_corners=False)[:, 0].numpy()
    return np.stack([removal_masks(relevance_rank(f, seed), [q], (h, w))[0] for f in field])


def _solver_cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    cases = []
    h, w = 37, 45
    cases.append(("random 50%", rng.random((h, w)) < 0.5))
    cases.append(("random 99%", rng.random((h, w)) < 0.99))
    cases.append(("smooth 80%", _smooth_masks(1, h, w, 0.8, 1)[0]))
    cases.append(("smooth 20%", _smooth_masks(1, h, w, 0.2, 2)[0]))
    border = np.zeros((h, w), bool)
    border[:, :3] = border[:2, :] = border[-1, :] = True       # touches every border
    cases.append(("border frame", border))
    corner = np.zeros((h, w), bool)
    corner[-9:, -11:] = True                                     # a corner block
    cases.append(("corner block", corner))
    one = np.zeros((h, w), bool)
    one[0, 0] = True
    cases.append(("one corner pixel", one))
    keep_one = np.ones((h, w), bool)
    keep_one[h // 2, w // 2] = False                             # 99.94 %: one kept pixel
    cases.append(("all but one", keep_one))
    return cases


# --- the linear system --------------------------------------------------------------------------


def test_reference_and_fast_solver_satisfy_the_linear_system_and_agree():
    """Every imputed pixel is the renormalised weighted mean of its 8 neighbours (residual
    ≤ tol = 1e-4 for the fast solver, its stopping rule; ≤ 1e-9 for the direct one); fast =
    direct within the contract 1e-3 on random, smooth, border-touching, 99 % and all-but-one
    masks, at an odd size, with both backends (torch's is what runs on CUDA). From the
    full-multigrid start CG takes ≤ 5 iterations (measured 3; from u = 0, with a float32 stage
    to 1e-2 and a restart, it took 6)."""
    cases = _solver_cases()
    rng = np.random.default_rng(1)
    images = rng.normal(0, 1.5, (len(cases), 3, 37, 45)).astype(np.float32)
    masks = np.stack([m for _, m in cases])
    for backend in ("numba", "torch"):
        fast, info = solve(torch.from_numpy(images), torch.from_numpy(masks), backend=backend)
        assert info.converged and info.iterations <= 5, (backend, info)
        for i, (name, mask) in enumerate(cases):
            ref = impute_reference(images[i], mask)
            assert imputation_residual(ref, mask) < 1e-9, name
            got = fast[i].numpy()
            # the stopping rule bounds max |D⁻¹ r| by tol = 1e-4 (measured ≤ 7.6e-5)
            assert imputation_residual(got, mask) <= 1e-4, (backend, name)
            # 1e-3 is the contract; measured ≤ 1.1e-4 (image std 1.5; the 99 % and the smooth
            # 80 % masks are the worst)
            assert np.abs(got - ref).max() <= 1e-3, (backend, name, np.abs(got - ref).max())
            assert np.array_equal(got[:, ~mask], images[i][:, ~mask]), (backend, name)


def _stencil_oracle(S: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Σ_k S_k(p) u(p + offset_k) in float64, zero outside the image."""
    from camonnx.road_system import OFFSETS

    h, w = u.shape[-2:]
    pad = np.pad(u.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    return sum(S[:, k:k + 1] * pad[..., 1 + di:1 + di + h, 1 + dj:1 + dj + w]
               for k, (di, dj) in enumerate(OFFSETS))


@pytest.mark.parametrize("shape", [(37, 45), (6, 9), (1, 7), (5, 1), (2, 2)])
def test_stencil_kernels_match_a_float64_oracle(shape):
    """The numba stencils (fine level, Galerkin 9-point, float64 true residual) against
    explicit float64 sums over the 9 shifted images, in every mode, on masks that touch every
    border, at sizes with a single row or column: ≤ 1e-5 (float32 rounding of sums of ~10
    terms of size ~3: measured ≤ 1.4e-6); the true residual, accumulated in float64 and
    rounded to float32 once, ≤ 1e-6 (measured ≤ 2.4e-7)."""
    from camonnx.kernels._impute_cpu import k_fine, k_stencil, k_true_residual
    from camonnx.road_multigrid import active_ranges
    from camonnx.road_system import WEIGHTS, fine_stencil, neighbour_sums

    h, w = shape
    rng = np.random.default_rng(h * 100 + w)
    removed = rng.random((3, h, w)) < 0.6
    removed[0] = True                                          # every pixel, borders included
    spans = active_ranges(removed)
    in_span = np.zeros((3, 1, h, w), bool)
    for b in range(3):
        for i in range(h):
            in_span[b, 0, i, spans[b, i, 0]:spans[b, i, 1]] = True
    m = removed[:, None].astype(np.float32)
    s = neighbour_sums(h, w).astype(np.float32)
    dinv = m / s
    u = (rng.normal(0, 1.5, (3, 3, h, w)) * m).astype(np.float32)   # solver vectors vanish off m
    b = rng.normal(0, 1.5, (3, 3, h, w)).astype(np.float32)
    A = fine_stencil(removed)
    S = (A * rng.uniform(0.5, 2.0, A.shape)).astype(np.float32)     # zero toward outside, like A_c
    for kernel, stencil, args in ((k_fine, A, (m, s)), (k_stencil, S.astype(np.float64), (S,))):
        au = _stencil_oracle(stencil, u)
        expected = {0: au, 1: b - au, 2: u + 0.8 * dinv * (b - au)}
        for mode, want in expected.items():
            out = np.full_like(u, 7.0)                         # untouched outside the spans
            kernel(*args, u, b, dinv, out, mode, 0.8, spans)
            span = np.broadcast_to(in_span, u.shape)
            assert np.abs(out[span] - want[span]).max() <= 1e-5, (kernel.__name__, mode)
            assert np.all(out[~span] == 7.0), (kernel.__name__, mode)
    y = rng.normal(0, 1.5, (3, 3, h, w)).astype(np.float32)
    pad = np.pad(y.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    wy = sum(WEIGHTS[di + 1, dj + 1] * pad[..., 1 + di:1 + di + h, 1 + dj:1 + dj + w]
             for di in (-1, 0, 1) for dj in (-1, 0, 1))
    want = removed[:, None] * (wy - neighbour_sums(h, w) * y)
    out = np.zeros_like(y)
    k_true_residual(m, s, y, out, spans)
    assert np.abs(out - want).max() <= 1e-6


def _interpolation_1d(n: int) -> np.ndarray:
    """(n, ceil(n/2)) float64 bilinear interpolation of one axis: fine 2i = coarse i, fine
    2i + 1 = the mean of coarse i and i + 1, and on an even n the last fine point copies the
    last coarse one (docs/metrics.md#solver)."""
    nc = (n + 1) // 2
    P = np.zeros((n, nc))
    for i in range(n):
        if i % 2 == 0:
            P[i, i // 2] = 1.0
        elif i // 2 + 1 < nc:
            P[i, i // 2] = P[i, i // 2 + 1] = 0.5
        else:
            P[i, i // 2] = 1.0
    return P


def _dense_operator(S: np.ndarray) -> np.ndarray:
    """The (h·w, h·w) float64 matrix of a 9-point stencil S (9, h, w)."""
    from camonnx.road_system import OFFSETS

    _, h, w = S.shape
    A = np.zeros((h * w, h * w))
    for k, (di, dj) in enumerate(OFFSETS):
        for i in range(h):
            for j in range(w):
                if 0 <= i + di < h and 0 <= j + dj < w:
                    A[i * w + j, (i + di) * w + j + dj] = S[k, i, j]
    return A


@pytest.mark.parametrize("shape", [(9, 8), (12, 13), (16, 16)])
def test_galerkin_levels_match_a_dense_float64_product(shape):
    """Every coarse level of the multigrid (both backends) against Pᵀ A P built with explicit
    dense float64 matrices from the previous level: the stencil ≤ 1e-6 (float32 rounding of
    sums of ~40 terms ≤ 1: measured ≤ 1.6e-7); the active points = positive diagonal and an
    active fine point in the interpolation support; dinv = 1 / Σ |row| there (l1-Jacobi; relative
    1e-5, measured ≤ 2.4e-7), 0 elsewhere; the numba backend's active spans = the first and last active column per row."""
    from camonnx.road_backends import NumbaOps, TorchOps
    from camonnx.road_multigrid import Multigrid
    from camonnx.road_system import fine_stencil

    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    removed = np.stack([rng.random(shape) < q for q in (0.3, 0.7, 0.95)])
    removed[0, :, :2] = True                                   # touches a border
    for ops in (NumbaOps(), TorchOps("cpu")):
        mg = Multigrid(ops, removed, 3)
        assert len(mg.levels) >= 2
        for b in range(removed.shape[0]):
            prev = fine_stencil(removed[b:b + 1])[0]
            active = removed[b].ravel()
            for lv in mg.levels[1:]:
                h, w = prev.shape[-2:]
                P = np.kron(_interpolation_1d(h), _interpolation_1d(w)) * active[:, None]
                Ac = P.T @ _dense_operator(prev) @ P
                S = np.asarray(lv.S)[b].astype(np.float64)
                assert np.abs(_dense_operator(S) - Ac).max() <= 1e-6, (type(ops), shape, b)
                want = (np.diag(Ac) > 0) & (P[active] > 0).any(axis=0)
                got = np.asarray(lv.active)[b, 0].ravel() > 0
                assert np.array_equal(got, want)
                l1 = np.abs(Ac).sum(axis=1)
                dinv = np.where(want, 1 / np.where(want, l1, 1), 0)
                assert np.allclose(np.asarray(lv.dinv)[b, 0].ravel(), dinv, rtol=1e-5, atol=0)
                if lv.rng is not None:
                    grid = want.reshape(lv.shape)
                    for i, row in enumerate(grid):
                        cols = np.flatnonzero(row)
                        span = (cols[0], cols[-1] + 1) if cols.size else (0, 0)
                        assert tuple(lv.rng[b, i]) == span
                prev, active = S, want


@pytest.mark.parametrize("shape", [(7, 9), (33, 30), (64, 64)])
def test_compiled_cycles_equal_the_level_by_level_ones(shape):
    """The numba backend's V-cycle and full multigrid, each one compiled call
    (kernels/_impute_cycle.py), against the same algorithm run level by level from Python
    with the same kernels (Multigrid with ``compiled`` off): the same operations in the same
    order, so bit-identical, with 1 and 2 smoothing sweeps."""
    from camonnx.road_backends import NumbaOps
    from camonnx.road_multigrid import Multigrid

    rng = np.random.default_rng(sum(shape))
    removed = np.stack([rng.random(shape) < q for q in (0.2, 0.6, 0.9)])
    removed[1, :, :3] = True                                    # touches a border
    rhs = (rng.normal(size=(3, 3) + shape) * removed[:, None]).astype(np.float32)
    for sweeps in (1, 2):
        compiled = Multigrid(NumbaOps(), removed, 3, sweeps=sweeps)
        stepwise = Multigrid(NumbaOps(), removed, 3, sweeps=sweeps)
        stepwise.compiled = None
        assert compiled.compiled is not None
        assert np.array_equal(compiled.vcycle(rhs), stepwise.vcycle(rhs))
        assert np.array_equal(compiled.fmg(rhs, np.zeros_like(rhs)), stepwise.fmg(rhs, np.zeros_like(rhs)))


def test_full_and_empty_removal_and_noise_only_on_removed_pixels():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(3, 3, 16, 20)).astype(np.float32))
    masks = torch.zeros((3, 16, 20), dtype=torch.bool)
    masks[0] = True                                   # 100 %: per-channel image mean
    masks[2, 4:9, 5:15] = True
    out, _ = solve(x, masks)
    assert torch.allclose(out[0], x[0].mean(dim=(1, 2), keepdim=True).expand(3, 16, 20), atol=1e-6)
    assert torch.equal(out[1], x[1])                  # nothing removed: unchanged
    ref = impute_reference(x[0].numpy(), np.ones((16, 20), bool))
    assert np.allclose(ref, out[0].numpy(), atol=1e-6)

    noisy = impute(x, masks, noise=0.01, seeds=[5, 6, 7])
    again = impute(x, masks, noise=0.01, seeds=[5, 6, 7])
    assert torch.equal(noisy, again)                  # seeded
    kept = ~masks[:, None].expand_as(x)
    assert torch.equal(noisy[kept], x[kept])          # kept pixels untouched, noise or not
    delta = (noisy - out)[~kept]
    assert abs(float(delta.std()) - 0.01) < 0.001 and abs(float(delta.mean())) < 0.001
    # the noise of an image depends on its seed only, not on the batch it is imputed in
    alone = add_noise(out[2:3].clone(), masks[2:3], 0.01, [7])
    assert torch.equal(alone[0], noisy[2])


def test_solver_rejects_bad_shapes():
    with pytest.raises(InputError, match="masks"):
        solve(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 9, dtype=torch.bool))
    with pytest.raises(InputError, match="backend"):
        solve(torch.zeros(1, 3, 8, 8), torch.ones(1, 8, 8, dtype=torch.bool), backend="cuda")


# --- exact, tie-safe ranking ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 9), (32, 32), (224, 224)])
def test_constant_map_removes_exactly_round_q_hw(shape):
    """A flat map (every pixel tied) removes exactly round(q·H·W) pixels at every q, for MoRF
    and LeRF; thresholding at a percentile would remove them all."""
    h, w = shape
    flat = np.full(shape, 0.5, np.float32)
    qs = (0.01, 0.2, 0.25, 0.4, 0.5, 0.6, 0.8, 0.99, 1.0)
    masks = removal_masks(relevance_rank(flat, 3), qs, shape)
    for i, q in enumerate(qs):
        k = round(q * h * w)
        assert removal_count(q, h * w) == k
        assert masks[i].sum() == k and masks[len(qs) + i].sum() == k
    # the percentile rule of the common implementation: everything ≥ the threshold goes
    assert (flat >= np.percentile(flat, 20)).sum() == h * w
    # tie-breaking is seeded: same seed, same masks; another seed, others
    assert np.array_equal(masks, removal_masks(relevance_rank(flat, 3), qs, shape))
    assert not np.array_equal(masks, removal_masks(relevance_rank(flat, 4), qs, shape))


def test_rank_keys_give_the_sort_order_and_the_same_masks():
    """relevance_rank and fraction_masks take a selection on unique uint64 keys for float32
    maps; against the definition (seeded permutation + stable sort, rank_by_sort), on maps with
    ties, negatives, −0.0 and +0.0, a constant map and odd sizes: identical ranks and masks.
    Maps float32 cannot hold exactly (or with NaN) take the sort path."""
    from camonnx.road_masks import fraction_masks, rank_by_sort, rank_keys

    rng = np.random.default_rng(11)
    qs = (0.01, 0.2, 0.5, 0.8, 1.0)
    ties = np.round(rng.normal(size=(31, 17)), 1).astype(np.float32)       # many ties, signs
    ties[0, :5] = -0.0
    ties[1, :5] = 0.0
    maps = [ties, np.maximum(rng.normal(size=(64, 64)), 0).astype(np.float32),
            np.full((7, 9), 2.5, np.float32), rng.normal(size=(5, 200)).astype(np.float32),
            np.round(rng.normal(size=(20, 20)), 2)]                          # float64, exact? no
    for i, relevance in enumerate(maps):
        for seed in (0, (3, 1, 4)):
            want = rank_by_sort(relevance, seed)
            assert np.array_equal(relevance_rank(relevance, seed), want), i
            assert np.array_equal(fraction_masks(relevance, seed, qs),
                                  removal_masks(want, qs, relevance.shape)), i
    assert rank_keys(maps[-1], 0) is None                  # float64 values float32 would round
    assert rank_keys(maps[-1].astype(np.float32).astype(np.float64), 0) is not None
    assert rank_keys(np.array([[1.0, np.nan]], np.float32), 0) is None


def test_ranking_orders_values_and_breaks_ties_only_among_equals():
    rng = np.random.default_rng(0)
    relevance = rng.integers(0, 4, size=(20, 30)).astype(np.float32)    # 4 plateaus
    rank = relevance_rank(relevance, 11).reshape(20, 30)
    order = np.argsort(rank.ravel())
    values = relevance.ravel()[order]
    assert np.all(np.diff(values) <= 0)                                  # most relevant first
    masks = removal_masks(rank.ravel(), FRACTIONS, (20, 30))
    for i in range(len(FRACTIONS) - 1):                                  # nested MoRF and LeRF
        assert np.all(masks[i] <= masks[i + 1])
        assert np.all(masks[4 + i] <= masks[4 + i + 1])
    # MoRF(q) and LeRF(1 − q) are complements
    assert np.array_equal(masks[0], ~masks[4 + 3]) and np.array_equal(masks[1], ~masks[4 + 2])


# --- faithfulness on the pretrained model with real photos -----------------------------------

#: Hand-drawn boxes (rows y0:y1, columns x0:x1) around the predicted object, in the model's
#: 224×224 input frame (short side resized to 256, centre crop), checked by eye on the crops:
#: coffee → espresso (967, p 0.95): the cup with the coffee; camera → tripod (872, p 0.94):
#: the tripod and the camera on it; astronaut → football helmet (560, p 0.16): the white
#: helmet bottom right.
BOXES = {"coffee": (0, 150, 50, 210), "camera": (85, 224, 100, 180), "astronaut": (150, 224, 120, 224)}


@pytest.fixture(scope="module")
def pretrained():
    from camonnx.explainer import Explainer

    return Explainer()


@pytest.fixture(scope="module")
def photos(pretrained):
    import skimage.data

    images = []
    for name in BOXES:
        image = getattr(skimage.data, name)()
        images.append(np.stack([image] * 3, -1) if image.ndim == 2 else image)
    x, _ = pretrained.prepare(images)
    boxes = np.zeros((len(BOXES), 224, 224), np.float32)
    for i, (y0, y1, x0, x1) in enumerate(BOXES.values()):
        boxes[i, y0:y1, x0:x1] = 1.0
    return x, boxes


def test_object_mask_beats_its_inverse_and_a_random_map_scores_near_zero(pretrained, photos):
    """ROAD of the object box > 0.05 > −0.05 > ROAD of its inverse, per photo; random i.i.d.
    maps (3 seeds × 3 photos) score near 0: |mean| ≤ 0.02 and every score within ±0.08
    (measured: std ≈ 0.013 per score, max |score| ≈ 0.036 over 18)."""
    x, boxes = photos
    n = len(boxes)
    rng = np.random.default_rng(123)
    randoms = rng.random((3 * n, 224, 224)).astype(np.float32)
    maps = np.concatenate([boxes, 1.0 - boxes, randoms])
    images = torch.cat([x] * 5)
    classes = [967, 872, 560] * 5
    result = road_score(pretrained, images, maps, targets=classes, seed=0)
    assert result.targets == classes
    assert np.argmax(pretrained.logits(x), axis=1).tolist() == [967, 872, 560]
    obj, inverse, rand = result.score[:n], result.score[n:2 * n], result.score[2 * n:]
    assert np.all(obj > 0.05) and np.all(inverse < -0.05), (obj, inverse)
    assert np.all(obj - inverse > 0.15)
    assert abs(rand.mean()) <= 0.02 and np.abs(rand).max() <= 0.08, rand
    # the deltas have the expected signs for the object: removing it hurts (MoRF < 0) ...
    assert np.all(result.morf[0, :n].mean(axis=1) < 0)
    assert result.timings["impute"] > 0 and result.timings["forward"] > 0


def test_road_score_rejects_bad_input(pretrained, photos):
    x, boxes = photos
    with pytest.raises(InputError, match="one map per image"):
        road_score(pretrained, x, boxes[:2])
    with pytest.raises(InputError, match="NaN"):
        road_score(pretrained, x[:1], np.full((1, 224, 224), np.nan))
    with pytest.raises(InputError, match="fractions"):
        road_score(pretrained, x[:1], boxes[:1], fractions=(0.2, 1.2))
    with pytest.raises(InputError, match="trials"):
        road_score(pretrained, x[:1], boxes[:1], trials=0)
    with pytest.raises(InputError, match="function targets"):
        road_score(pretrained, x[:1], boxes[:1], targets=lambda logits: logits[:, 0])


# --- agreement with pytorch-grad-cam ----------------------------------------------------------


def test_agrees_with_pytorch_grad_cam_road_combined(tmp_path):
    """Same pretrained network (EfficientNet-Lite0 exported with a dynamic size, 96×96), same
    tie-free smooth map, same fractions (their percentiles 20/40/60/80), their target
    ClassifierOutputSoftmaxTarget: the mean ROAD over our seeded trials and over their seeds
    (torch.manual_seed) agree within 3 σ, σ the pooled spread of a single run's noise (≥ 0.003).
    Measured: 0.276 vs 0.279, σ ≈ 0.004."""
    from conftest import export_legacy
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
    import skimage.data

    from camonnx.explainer import Explainer
    from camonnx.models import efficientnet_lite

    size = 96
    model = efficientnet_lite.build()
    path = export_legacy(model, tmp_path / "lite0.onnx", size=size, dynamic_size=True)
    explainer = Explainer(path, preprocess=replace(efficientnet_lite.RECIPE, size=(size, size),
                                                   resize=size * 256 // 224))
    x, _ = explainer.prepare([skimage.data.coffee()])
    cls = int(explainer.logits(x).argmax())
    assert cls == 967  # espresso
    yy, xx = np.mgrid[0:size, 0:size] / size
    relevance = np.exp(-((yy - 0.33) ** 2 + (xx - 0.58) ** 2) / (2 * 0.2 ** 2))
    relevance += 1e-9 * np.random.default_rng(0).permutation(size * size).reshape(size, size)
    assert len(np.unique(relevance)) == size * size                      # tie-free
    ours = road_score(explainer, x, relevance[None], trials=6, targets=cls).scores[:, 0]

    metric = ROADCombined(percentiles=[20, 40, 60, 80])
    theirs = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # their 64 batch-1 torch forwards: 1.7 s each with 2 OpenMP threads
    try:                      # on a loaded 2-core machine (conftest sets OMP_NUM_THREADS=2), 0.03 s
        for seed in range(4):
            torch.manual_seed(seed)
            theirs.append(float(metric(x, relevance[None].astype(np.float32),
                                       [ClassifierOutputSoftmaxTarget(cls)], model)[0]))
    finally:
        torch.set_num_threads(threads)
    theirs = np.array(theirs)
    pooled = np.sqrt((ours.var(ddof=1) * (len(ours) - 1) + theirs.var(ddof=1) * (len(theirs) - 1))
                     / (len(ours) + len(theirs) - 2))
    sigma = max(pooled, 0.003)
    assert abs(ours.mean() - theirs.mean()) <= 3 * sigma, (ours, theirs)
    assert ours.mean() > 0.1                                             # a meaningful score


# --- ybROAD ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def r18(resnet18_onnx):
    from camonnx.explainer import Explainer

    return Explainer(resnet18_onnx)


def test_ybroad_result_is_consistent_and_independent_of_batching(r18, tmp_path):
    x = torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(0))
    layers = [0, 7, 15, 19]
    a = ybroad(r18, x, method="gradcam", layers=layers, trials=2, seed=3, progress=False)
    b = ybroad(r18, x, method="gradcam", layers=layers, trials=2, seed=3, batch_size=8, progress=False)
    assert a.scores.shape == (2, 4, 2) and a.morf.shape == a.lerf.shape == (2, 4, 2, 4)
    assert np.allclose(a.scores, b.scores, atol=1e-6)                   # chunking changes nothing
    # the torch solver backend (what runs on CUDA), here on CPU: same seeds, same scores
    c = ybroad(r18, x, method="gradcam", layers=layers, trials=2, seed=3, progress=False,
               solver={"backend": "torch"})
    assert np.allclose(a.scores, c.scores, atol=1e-5)
    assert np.allclose(a.scores, (a.lerf.mean(-1) - a.morf.mean(-1)) / 2)
    assert np.allclose(a.curve, a.scores.mean(axis=(0, 2)))
    assert np.allclose(a.curve_std, a.scores.std(axis=(0, 2)))
    assert a.max == a.curve.max() and a.layers[a.argmax] == a.max_layer
    assert a.layer_indices == layers and a.max_index == layers[a.argmax]
    assert np.isclose(a.mean, a.curve.mean())
    assert not np.allclose(a.scores[0], a.scores[1])                   # trials differ (noise)
    assert a.timings["forward_images"] == 2 * 4 * 2 * 8 + 2
    for key in ("explain", "rank", "impute", "forward", "total"):
        assert a.timings[key] >= 0
    assert a.summary().startswith("gradcam: max ybROAD")

    csv_path, json_path, png_path = a.to_csv(tmp_path / "y.csv"), a.to_json(tmp_path / "y.json"), \
        a.plot(tmp_path / "y.png")
    rows = csv_path.read_text().splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("method,layer_index,layer,road_mean,road_std")
    doc = json.loads(json_path.read_text())["results"][0]
    assert doc["layers"] == a.layers and np.allclose(doc["curve"], a.curve)
    assert doc["max_layer"] == a.max_layer and doc["fractions"] == list(FRACTIONS)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.csv", "y.json", "y.png"]  # no temp files


def test_ybroad_rejects_function_targets(r18):
    with pytest.raises(InputError, match="function targets"):
        ybroad(r18, torch.randn(1, 3, 32, 32), layers=[0], targets=lambda z: z[:, 1], progress=False)


def test_ybroad_cli_writes_csv_json_png(resnet18_onnx, tmp_path):
    from PIL import Image

    from camonnx.cli import main

    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(main, ["ybroad", str(resnet18_onnx), str(image), "-m", "gradcam", "-m",
                                  "layercam", "--layers", "0,19", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "gradcam: max ybROAD" in result.output and "layercam: max ybROAD" in result.output
    assert "imputation" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["ybroad.csv", "ybroad.json", "ybroad.png"]
    doc = json.loads((out / "ybroad.json").read_text())
    assert [r["method"] for r in doc["results"]] == ["gradcam", "layercam"]
    assert len((out / "ybroad.csv").read_text().splitlines()) == 1 + 2 * 2

    bad = runner.invoke(main, ["ybroad", str(resnet18_onnx), str(image), "--fractions", "0.2,x",
                               "--out", str(out)])
    assert bad.exit_code == 2 and "--fractions" in bad.output
    bad = runner.invoke(main, ["ybroad", str(resnet18_onnx), str(image), "--layers", "nope",
                               "--out", str(out)])
    assert bad.exit_code == 2 and "Unknown layer" in bad.output
