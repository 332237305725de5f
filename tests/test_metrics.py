"""Deletion, insertion, Average Drop and Increase in Confidence (docs/metrics.md), and the
`camonnx metrics` command.

Every metric is checked against an independent direct implementation written here: a plain
loop over the steps (or maps) building each perturbed image in float64 with numpy (its own
Gaussian blur, its own ordering by ``argsort``), scored by the **torch model itself in float64**
(the module the ONNX file was exported from). camonnx's side runs ONNX Runtime in float32 on
float32 images, so the two differ by float32 rounding of the forward only (tolerances below,
measured).

The model is a tiny random-weight CNN (two convs, 10 classes) at 32×32 whose last layer is
scaled up so that its softmax is far from flat: the probabilities move by tenths when pixels are
removed, so a wrong step, order or substrate cannot hide under the tolerance (each test checks
that the curve it compares does move).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from camonnx.errors import InputError
from camonnx.metrics import CATALOGUE, get_metric
from camonnx.metrics.base import MapBatch, logits_of
from camonnx.road_masks import relevance_rank

from conftest import export_legacy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 32


class Tiny(torch.nn.Module):
    """conv 3→8 (3×3) → ReLU → conv 8→16 (3×3, stride 2) → ReLU → mean → linear 16→10 (×8)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(16, 10)
        with torch.no_grad():
            self.fc.weight.mul_(8.0)

    def forward(self, x):
        h = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(h.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return Tiny().eval()


@pytest.fixture(scope="module")
def tiny_onnx(tiny, tmp_path_factory):
    return export_legacy(tiny, tmp_path_factory.mktemp("tiny") / "tiny.onnx", size=SIZE)


@pytest.fixture(scope="module")
def explainer(tiny_onnx):
    from camonnx.explainer import Explainer

    return Explainer(tiny_onnx)


@pytest.fixture(scope="module")
def case(explainer):
    """Two images, random maps for two layers (no ties), the predicted classes."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, SIZE, SIZE, generator=g)
    maps = np.random.default_rng(2).random((2, 2, SIZE, SIZE)).astype(np.float32)
    logits = logits_of(explainer.engine, x)
    return x, maps, logits.argmax(1), logits


def batch_of(explainer, case, maps=None) -> MapBatch:
    x, default_maps, classes, logits = case
    return MapBatch(explainer.engine, x, default_maps if maps is None else maps, classes, logits)


# --- the direct implementations -------------------------------------------------------------


def prob64(model, image: np.ndarray, cls: int) -> float:
    """p_c of one (C, H, W) float64 image from the torch model in float64."""
    with torch.no_grad():
        z = model.double()(torch.from_numpy(image[None]))[0]
    model.float()
    return float(torch.softmax(z, 0)[cls])


def blur64(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur per channel written out: weights exp(−d²/2σ²), |d| ≤ ⌈3σ⌉, normalised;
    borders mirrored (d c b a | a b c d); rows, then columns."""
    r = math.ceil(3 * sigma)
    weights = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    padded = np.pad(image, ((0, 0), (r, r), (r, r)), mode="symmetric")
    h, w = image.shape[1:]
    rows = sum(weights[i] * padded[:, i:i + h, :] for i in range(2 * r + 1))
    return sum(weights[j] * rows[:, :, j:j + w] for j in range(2 * r + 1))


def stepwise64(model, image, order, cls, per_step, inserting, sigma=5.0):
    """(fractions, probabilities, AUC) by a plain loop over the steps."""
    hw = order.size
    substrate = blur64(image, sigma)
    counts = list(range(0, hw, per_step)) + [hw]
    probs = []
    for count in counts:
        changed = np.zeros(hw, bool)
        changed[order[:count]] = True
        changed = changed.reshape(image.shape[1:])
        perturbed = np.where(changed, image, substrate) if inserting else \
            np.where(changed, substrate, image)
        probs.append(prob64(model, perturbed, cls))
    fractions = [c / hw for c in counts]
    area = sum((fractions[k + 1] - fractions[k]) * (probs[k] + probs[k + 1]) / 2
               for k in range(len(counts) - 1))
    return np.array(fractions), np.array(probs), area


# --- deletion and insertion ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["deletion", "insertion"])
def test_stepwise_agrees_with_a_direct_loop_in_float64(tiny, explainer, case, name):
    """Every step's probability and the AUC agree with the float64 loop within 1e-6 (measured
    ≤ 4e-8: ORT's float32 forward against torch's float64, on probabilities ≈ 0.1–0.2); the last
    step is partial (1024 = 3 steps of 300 + 124) and the fractions run from 0 to 1."""
    x, maps, classes, _ = case
    metric = get_metric(name, pixels_per_step=300)
    result = metric.score(batch_of(explainer, case), seed=0, progress=False)
    axis, fractions = result.axes["probability"]
    assert axis == "fraction" and np.allclose(fractions, [0, 300 / 1024, 600 / 1024, 900 / 1024, 1])
    assert result.components["probability"].shape == (1, 2, 2, 5)
    moved = 0.0
    for l in range(2):
        for n in range(2):
            order = np.argsort(-maps[l, n].astype(np.float64).ravel(), kind="stable")
            f, probs, area = stepwise64(tiny, x[n].double().numpy(), order, int(classes[n]), 300,
                                        name == "insertion")
            assert np.allclose(result.components["probability"][0, l, n], probs, atol=1e-6, rtol=0)
            assert abs(result.scores[0, l, n] - area) <= 1e-6
            moved = max(moved, probs.max() - probs.min())
    assert moved > 0.05  # the curves move by far more than the tolerance
    assert metric.higher_is_better == (name == "insertion") == CATALOGUE[name].higher_is_better


def test_stepwise_flat_map_is_seeded_exact_and_reproducible(tiny, explainer, case):
    """A constant map: the order is the seeded tie-breaking permutation of
    camonnx.road_masks.relevance_rank with seed (seed, trial, layer id, image id, 0); the same
    seed gives the same curve, another seed another, and trials differ. Tolerance as above."""
    x, _, classes, _ = case
    flat = np.full((2, 2, SIZE, SIZE), 0.5, np.float32)
    metric = get_metric("deletion", pixels_per_step=256)
    batch = batch_of(explainer, case, flat)
    a = metric.score(batch, trials=2, seed=7, progress=False)
    b = metric.score(batch, trials=2, seed=7, progress=False)
    c = metric.score(batch, trials=2, seed=8, progress=False)
    assert np.array_equal(a.components["probability"], b.components["probability"])
    assert not np.allclose(a.scores, c.scores) and not np.allclose(a.scores[0], a.scores[1])
    for t, l, n in [(1, 0, 1), (0, 1, 0)]:
        rank = relevance_rank(flat[l, n], (7, t, l, n, 0))
        _, probs, area = stepwise64(tiny, x[n].double().numpy(), np.argsort(rank), int(classes[n]),
                                    256, False)
        assert np.allclose(a.components["probability"][t, l, n], probs, atol=1e-6, rtol=0)
        assert abs(a.scores[t, l, n] - area) <= 1e-6


@pytest.mark.parametrize("name", ["deletion", "insertion", "drop", "increase"])
def test_batch_size_changes_nothing(explainer, case, name):
    """Bit-identical results for batch sizes 3, 7 and 64 (ORT's CPU forward is row-independent)."""
    metric = get_metric(name, **({"pixels_per_step": 200} if name in ("deletion", "insertion")
                                 else {}))
    batch = batch_of(explainer, case)
    runs = [metric.score(batch, trials=2, seed=1, batch_size=b, progress=False) for b in (3, 7, 64)]
    for other in runs[1:]:
        assert np.array_equal(runs[0].scores, other.scores)
        for key, value in runs[0].components.items():
            assert np.array_equal(value, other.components[key])
    assert runs[0].timings["forward_images"] > 0 and runs[0].timings["forward"] > 0


def test_bad_options_are_input_errors(explainer, case):
    for bad in (0, -3, 1.5, True):
        with pytest.raises(InputError, match="pixels_per_step"):
            get_metric("deletion", pixels_per_step=bad)
    with pytest.raises(InputError, match="blur"):
        get_metric("insertion", blur=0)
    with pytest.raises(InputError, match="Unknown metric 'delet'.*deletion"):
        get_metric("delet")
    with pytest.raises(InputError, match="batch_size"):
        get_metric("drop").score(batch_of(explainer, case), batch_size=0, progress=False)


# --- Average Drop and Increase in Confidence -------------------------------------------------


def test_drop_and_increase_agree_with_a_direct_loop_in_float64(tiny, explainer, case):
    """p′ = p_c(x · minmax(M)) per map against the float64 model within 1e-6 (as above: float32
    forward vs float64); drop = max(0, p − p′)/p·100 within 1e-6/p·100 < 1e-3 (p ≈ 0.22) and
    increase = 100·1[p′ > p] from those numbers; a constant map masks everything (x′ = 0)."""
    x, maps, _, logits = case
    maps = maps.copy()
    maps[1, 0] = 3.0  # constant: M̂ = 0
    # image 0 about its predicted class (masking lowers it), image 1 about its least likely one
    # (masking raises it): both outcomes of the indicator occur
    classes = np.array([logits[0].argmax(), logits[1].argmin()])
    batch = MapBatch(explainer.engine, x, maps, classes, logits)
    drop = get_metric("drop").score(batch, trials=2, progress=False)
    increase = get_metric("increase").score(batch, progress=False)
    for l in range(2):
        for n in range(2):
            image = x[n].double().numpy()
            m = maps[l, n].astype(np.float64)
            weight = (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else np.zeros_like(m)
            p = prob64(tiny, image, int(classes[n]))
            after = prob64(tiny, image * weight, int(classes[n]))
            assert abs(drop.components["probability"][0, l, n] - after) <= 1e-6
            assert abs(drop.base_probability[n] - p) <= 1e-6
            assert abs(drop.scores[0, l, n] - max(0.0, p - after) / p * 100) <= 1e-3
            assert increase.scores[0, l, n] == 100.0 * (after > p)
    assert np.array_equal(drop.scores[0], drop.scores[1])  # deterministic: trials repeat
    assert np.array_equal(drop.components["increase"][0] * 100, increase.scores[0])
    assert drop.scores[0, :, 0].min() > 1 and np.all(drop.scores[0, :, 1] == 0)
    assert np.all(increase.scores[0, :, 0] == 0) and np.all(increase.scores[0, :, 1] == 100)
    assert get_metric("drop").higher_is_better is False and get_metric("increase").higher_is_better


# --- the command line ------------------------------------------------------------------------


def test_metrics_cli_writes_csv_json_png(tiny_onnx, tmp_path):
    from PIL import Image

    from camonnx.cli import main

    image = tmp_path / "img.png"
    pixels = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    out = tmp_path / "out"
    runner = CliRunner()
    args = ["metrics", str(tiny_onnx), str(image), "-m", "gradcam", "-m", "gradcam++",
            "--layers", "all", "--metric", "deletion,insertion,drop,road",
            "--pixels-per-step", "256", "--fractions", "0.5", "--out", str(out)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "deletion of gradcam: min" in result.output and "road of gradcam++: max" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "metrics.json", "metrics.png"]
    doc = json.loads((out / "metrics.json").read_text())["results"]
    assert [(r["method"], r["metric"]) for r in doc] == [
        (m, k) for m in ("gradcam", "gradcam++") for k in ("deletion", "insertion", "drop", "road")]
    deletion = doc[0]
    assert deletion["options"]["pixels_per_step"] == 256 and deletion["higher_is_better"] is False
    assert deletion["axes"]["probability"][1] == [0, 0.25, 0.5, 0.75, 1]
    assert len(deletion["components"]["probability"]) == 2 == len(deletion["layers"])
    assert doc[3]["options"]["fractions"] == [0.5]
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 2 * 4 * 2
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    for bad, message in [(["--metric", "deletion,nope"], "Unknown metric 'nope'"),
                         (["--metric", "drop", "--fractions", "0.5"], "--fractions applies to"),
                         (["--metric", "road", "--pixels-per-step", "8"], "--pixels-per-step"),
                         (["--pixels-per-step", "0"], "--pixels-per-step"),
                         (["--layers", "nope"], "Unknown layer")]:
        failed = runner.invoke(main, ["metrics", str(tiny_onnx), str(image), "--out",
                                      str(tmp_path / "bad"), *bad])
        assert failed.exit_code == 2 and message in failed.output, (bad, failed.output)
