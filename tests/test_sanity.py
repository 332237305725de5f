"""The sanity checks (camonnx/sanity_checks.py, camonnx/sanity_report.py, `camonnx sanity`) on the
pretrained default model and three scikit-image photos.

The property the test exists for: randomising every parameter layer from the logits down drives
Grad-CAM's similarity to the original map toward 0, while depth 0 (the original weights,
re-written and re-loaded) gives exactly 1. Threshold, measured first: with seeds 0–11 the mean
Spearman ρ over the three photos at the suggested layer after full randomisation ranged from
−0.24 to 0.22 (mean 0.02), the HOG Pearson mean from 0.03 to 0.13; this test uses seed 0
(ρ 0.04, HOG 0.13) and requires ρ < 0.5 and HOG < 0.4: a map that survived the randomisation
would score near 1 (as randomcam does after the top layer alone is randomised).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from camonnx.errors import InputError
from camonnx.sanity_checks import choose_steps, random_classes, sanity


@pytest.fixture(scope="module")
def explainer():
    from camonnx.explainer import Explainer

    return Explainer()


@pytest.fixture(scope="module")
def photos():
    import skimage.data

    return [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut()]


@pytest.fixture(scope="module")
def full(explainer, photos):
    """Depth 0 and the full cascade (all 50 parameter layers), gradcam and randomcam."""
    return sanity(explainer, photos, methods=("gradcam", "randomcam"), steps=[0, 50], seed=0,
                  progress=False)


def test_identity_gives_one_and_full_randomisation_drops_gradcam(full):
    assert full.steps == [0, 50] and len(full.parameter_layers) == 50
    assert full.randomised[0] == [] and len(full.randomised[1]) == 50
    for metric in ("spearman", "ssim", "hog"):
        for method in ("gradcam", "randomcam"):
            values = full.similarity[metric][method]
            assert values.shape == (2, 1, 3)
            assert np.array_equal(values[0], np.ones((1, 3))), (metric, method)
            assert np.isfinite(values).all()
    assert full.similarity["spearman"]["gradcam"][1].mean() < 0.5
    assert full.similarity["hog"]["gradcam"][1].mean() < 0.4


def test_random_logit(full, explainer, photos):
    logit = full.random_logit
    assert all(c != t for c, t in zip(logit["classes"], full.targets))
    # randomcam ignores the target: its map for any class is the same map
    for metric in ("spearman", "ssim", "hog"):
        assert np.array_equal(logit["similarity"][metric]["randomcam"], np.ones((1, 3)))
    # Grad-CAM's map follows the class (measured mean ρ with seed 0: −0.08)
    assert logit["similarity"]["spearman"]["gradcam"].mean() < 0.5
    assert full.targets == explainer.logits(photos).argmax(1).tolist()  # the original's classes


def test_independent_top_layer(explainer, photos):
    """Randomising the classifier (Gemm) alone leaves every conv activation as it was: randomcam,
    which reads activations only, gives exactly 1; Grad-CAM, through the gradient, does not."""
    result = sanity(explainer, photos[:2], methods=("gradcam", "randomcam"),
                    mode="independent", steps=[1], random_logit=False, progress=False)
    assert result.randomised == [["/_fc/Gemm"]] and result.step_labels == ["/_fc/Gemm"]
    for metric in ("spearman", "ssim", "hog"):
        assert np.array_equal(result.similarity[metric]["randomcam"], np.ones((1, 1, 2)))
    assert result.similarity["spearman"]["gradcam"].max() < 0.99
    assert result.random_logit is None


def test_report_files(full, tmp_path):
    doc = json.loads(full.write_json(tmp_path / "sanity.json").read_text())
    assert doc["kind"] == "sanity" and doc["metrics"] == ["spearman", "ssim", "hog"]
    assert doc["methods"] == ["gradcam", "randomcam"] and doc["steps"] == [0, 50]
    assert doc["step_labels"] == ["original", "/_conv_stem/Conv"]
    assert np.asarray(doc["similarity"]["ssim"]["gradcam"]).shape == (2, 1, 3)
    assert np.asarray(doc["mean"]["ssim"]["gradcam"]).shape == (2, 1)
    assert doc["curve"]["spearman"]["gradcam"][0] == 1.0
    assert np.asarray(doc["random_logit"]["similarity"]["hog"]["gradcam"]).shape == (1, 3)
    assert len(doc["parameter_layers"]) == 50 and doc["parameter_layers"][-1]["op_type"] == "Gemm"
    rows = full.write_csv(tmp_path / "sanity.csv").read_text().splitlines()
    assert rows[0].startswith("test,method,depth,randomised_down_to,layer_index,layer,spearman_mean")
    assert len(rows) == 1 + 2 * (2 + 1)  # per method: 2 steps × 1 layer + 1 random-logit row
    assert full.plot(tmp_path / "sanity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = full.summary()
    assert "gradcam" in text and "random logit" in text


def test_maps_are_non_negative(explainer, photos):
    """Why one (absolute) variant is reported: every method's raw map is ReLU'd, so the signed
    and the absolute map coincide (docs/sanity.md#measures). A middle and the suggested layer
    (all 49 layers take ~50 s)."""
    layers = [24, explainer.suggested_layer.index]
    for method in ("gradcam", "hirescam", "elementwise", "xgradcam", "layercam", "gradcam++",
                   "eigencam", "eigengradcam", "randomcam"):
        explanation = explainer.explain(photos[:1], method=method, layers=layers, normalize="none",
                                        progress=False)
        assert explanation.maps.min() >= 0, method


def test_choose_steps():
    assert choose_steps(None, 50) == [0, 1, 2, 3, 5, 7, 10, 15, 23, 34, 50]
    assert choose_steps("auto", 5) == [0, 1, 2, 3, 4, 5]
    assert choose_steps("all", 3) == [0, 1, 2, 3]
    assert choose_steps([5, 0, 5], 50) == [0, 5]
    for bad in ([51], [-1], "some", [], [1.5], 3):
        with pytest.raises(InputError):
            choose_steps(bad, 50)


def test_random_classes():
    classes = [3, 0, 999, 500] * 50
    drawn = random_classes(classes, 1000, seed=2)
    assert drawn == random_classes(classes, 1000, seed=2)
    assert all(d != c and 0 <= d < 1000 for d, c in zip(drawn, classes))
    assert len(set(drawn)) > 150  # spread over the classes, not a fixed offset
    assert random_classes([1, 0], 2, seed=0) == [0, 1]
    with pytest.raises(InputError):
        random_classes([0], 1, seed=0)


def test_bad_input(explainer, photos):
    with pytest.raises(InputError, match="mode"):
        sanity(explainer, photos[:1], mode="sideways", progress=False)
    with pytest.raises(InputError, match="out of range"):
        sanity(explainer, photos[:1], steps=[51], progress=False)
    with pytest.raises(InputError, match="No method"):
        sanity(explainer, photos[:1], methods=(), progress=False)
    with pytest.raises(InputError, match="Unknown method"):
        sanity(explainer, photos[:1], methods=("gradcram",), progress=False)
    with pytest.raises(InputError, match="class indices"):
        sanity(explainer, photos[:1], targets=lambda scores: scores[:, 0], progress=False)


def test_cli(tmp_path):
    from camonnx.cli import main

    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(main, ["sanity", "--steps", "0,1", "-m", "gradcam", "-m", "randomcam",
                                  "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["sanity.csv", "sanity.json", "sanity.png"]
    doc = json.loads((out / "sanity.json").read_text())
    assert doc["steps"] == [0, 1] and doc["layers"] == ["/_conv_head/Conv"]
    assert "random logit" in result.output

    for args, message in ((["--steps", "x"], "--steps takes"),
                          (["--steps", "0,51"], "out of range"),
                          (["--mode", "sideways"], "sideways")):
        bad = runner.invoke(main, ["sanity", *args, "--out", str(tmp_path / "bad")])
        assert bad.exit_code == 2 and message in bad.output, bad.output
    blocker = tmp_path / "file"
    blocker.write_text("")
    bad = runner.invoke(main, ["sanity", "--out", str(blocker)])
    assert bad.exit_code == 2 and "Error:" in bad.output and "is a file" in bad.output
