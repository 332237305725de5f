"""Similarity measures (camonnx/similarity.py) against direct float64 computations.

Oracles: Spearman as Pearson of average ranks computed with numpy (np.corrcoef); SSIM from its
formula over every 7×7 window with numpy's sliding windows (sample variances, as
structural_similarity uses); HOG Pearson as np.corrcoef of skimage's HOG of maps min-max'd in
numpy. Both sides run in float64; the 1e-12 tolerances cover summation order only (measured
differences on these maps: at most 6e-17 for Spearman, 1.2e-16 for HOG, 6e-16 for SSIM).
"""

from __future__ import annotations

import numpy as np
import pytest

from camonnx.errors import InputError
from camonnx.similarity import (METRICS, Reference, hog_pearson, minmax, pearson, similarities,
                                spearman, ssim)


def _maps(seed: int, shape=(48, 40)):
    """Two related smooth maps: a blurred noise field and a noisy copy of it."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    a = gaussian_filter(rng.standard_normal(shape), 3)
    a = np.maximum(a, 0)
    b = np.maximum(a + 0.5 * gaussian_filter(rng.standard_normal(shape), 2), 0)
    return a, b


def _average_ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(1, len(v) + 1)
    values, inverse = np.unique(v, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def _minmax(a):
    a = np.abs(a)
    return (a - a.min()) / (a.max() - a.min())


def _ssim_oracle(a, b, win=7, k1=0.01, k2=0.03):
    from numpy.lib.stride_tricks import sliding_window_view

    wa, wb = sliding_window_view(a, (win, win)), sliding_window_view(b, (win, win))
    n = win * win
    mu_a, mu_b = wa.mean(axis=(-2, -1)), wb.mean(axis=(-2, -1))
    var_a = ((wa - mu_a[..., None, None]) ** 2).sum(axis=(-2, -1)) / (n - 1)
    var_b = ((wb - mu_b[..., None, None]) ** 2).sum(axis=(-2, -1)) / (n - 1)
    cov = ((wa - mu_a[..., None, None]) * (wb - mu_b[..., None, None])).sum(axis=(-2, -1)) / (n - 1)
    c1, c2 = k1 ** 2, k2 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) \
        / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_against_numpy_ranks(seed):
    a, b = _maps(seed)  # the ReLU leaves many tied zeros: average ranks matter
    assert (a == 0).mean() > 0.2
    expected = np.corrcoef(_average_ranks(a.ravel()), _average_ranks(b.ravel()))[0, 1]
    assert abs(spearman(a, b) - expected) < 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_against_its_formula(seed):
    a, b = _maps(seed)
    assert abs(ssim(a, b) - _ssim_oracle(_minmax(a), _minmax(b))) < 1e-12
    # scale invariance: SSIM works on the min-max'd maps
    assert abs(ssim(3 * a, b) - ssim(a, b)) < 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hog_pearson_against_corrcoef(seed):
    from skimage.feature import hog

    a, b = _maps(seed)
    options = dict(orientations=9, pixels_per_cell=(8, 8), cells_per_block=(3, 3),
                   block_norm="L2-Hys", feature_vector=True)
    expected = np.corrcoef(hog(_minmax(a), **options), hog(_minmax(b), **options))[0, 1]
    assert abs(hog_pearson(a, b) - expected) < 1e-12


def test_pearson_against_corrcoef():
    rng = np.random.default_rng(4)
    u, v = rng.standard_normal(1000), rng.standard_normal(1000)
    assert abs(pearson(u, v) - np.corrcoef(u, v)[0, 1]) < 1e-12


def test_absolute_value_is_compared():
    a, b = _maps(5)
    assert spearman(-a, b) == pytest.approx(spearman(a, b), abs=1e-15)
    assert ssim(-a, b) == pytest.approx(ssim(a, b), abs=1e-15)


def test_constant_and_identical_maps_never_nan():
    a, _ = _maps(6)
    zero, flat = np.zeros_like(a), np.full_like(a, 0.3)
    for fn in (spearman, ssim, hog_pearson):
        assert fn(a, a) == 1.0
        assert fn(zero, zero) == 1.0
    assert spearman(zero, a) == 0.0 and spearman(a, flat) == 0.0
    assert hog_pearson(zero, a) == 0.0
    assert np.isfinite(ssim(zero, a))
    assert spearman(zero, flat) == 0.0  # two different constants: no evidence of similarity
    assert pearson(np.ones(5), np.arange(5)) == 0.0
    assert np.array_equal(minmax(flat), zero)


def test_reference_compares_stacks_like_pairs():
    pairs = [_maps(s) for s in range(6)]
    a = np.stack([p[0] for p in pairs]).reshape(2, 3, 48, 40)
    b = np.stack([p[1] for p in pairs]).reshape(2, 3, 48, 40)
    reference = Reference(a)
    out = reference.compare(b)
    assert set(out) == set(METRICS)
    for metric, fn in (("spearman", spearman), ("ssim", ssim), ("hog", hog_pearson)):
        assert out[metric].shape == (2, 3)
        expected = np.array([fn(x, y) for x, y in pairs]).reshape(2, 3)
        assert np.array_equal(out[metric], expected)
    again = reference.compare(a)  # reused HOG features: the reference against itself
    assert all(np.array_equal(v, np.ones((2, 3))) for v in again.values())
    assert np.array_equal(similarities(a, b)["ssim"], out["ssim"])


def test_bad_input():
    a, b = _maps(7)
    with pytest.raises(InputError, match="one shape"):
        spearman(a, b[:, :-1])
    with pytest.raises(InputError, match="NaN"):
        ssim(np.where(a > 0.1, np.nan, a), b)
    with pytest.raises(InputError, match="2-D"):
        spearman(a[None], b[None])
    with pytest.raises(InputError, match="at least 24"):
        hog_pearson(a[:20, :20], b[:20, :20])
    with pytest.raises(InputError, match="Unknown similarity"):
        Reference(a).compare(b, metrics=("pearson",))
    with pytest.raises(InputError, match="cannot be compared"):
        Reference(a).compare(b[None])
