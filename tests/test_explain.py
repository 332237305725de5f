"""Explainer.explain, Explanation.save and `camonnx explain` (docs/pipeline.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from camonnx.cli import main
from camonnx.errors import InputError
from camonnx.explainer import Explainer
from camonnx.methods import METHODS
from conftest import CHEAP_OPTIONS


@pytest.fixture(scope="module")
def explainer(resnet18_onnx):
    return Explainer(resnet18_onnx)


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(21))


def test_all_layers_shapes_and_normalisations(explainer, images):
    result = explainer.explain(images[:2], method="gradcam", normalize="local", progress=False)
    assert result.maps.shape == (20, 2, 64, 64) and result.maps.dtype == np.float32
    assert [r.shape[1:] for r in result.raw][0] == (32, 32)
    assert result.layers == [layer.name for layer in explainer.layers]
    flat = result.maps.reshape(20, 2, -1)
    assert np.all((flat.max(-1) == 1) | (flat.max(-1) == 0)) and flat.min() >= 0
    glob = explainer.explain(images[:2], method="gradcam", normalize="global", progress=False)
    per_image_max = glob.maps.reshape(20, 2, -1).max(axis=(0, 2))
    np.testing.assert_allclose(per_image_max, 1.0)
    none = explainer.explain(images[:2], method="gradcam", normalize="none", progress=False)
    assert none.maps.max() > 1.0 or not np.allclose(none.maps, glob.maps)


def test_batch_of_four_targets_equals_each_image_alone(explainer, images):
    classes = [2, 40, 300, 999]
    for method in ("gradcam", "layercam", "eigencam"):
        batch = explainer.explain(images, method=method, targets=classes, batch_size=3,
                                  progress=False)
        for i, cls in enumerate(classes):
            alone = explainer.explain(images[i:i + 1], method=method, targets=cls, progress=False)
            # 1e-4: conv kernels sum in a batch-size-dependent order (float32), and min-max
            # normalisation divides by each map's range
            np.testing.assert_allclose(batch.maps[:, i], alone.maps[:, 0], atol=1e-4)
        assert batch.targets == classes


@pytest.mark.parametrize("method", sorted(METHODS))
def test_constant_image_gives_no_nan(explainer, method):
    flat = np.zeros((1, 3, 32, 32), np.float32)
    result = explainer.explain(flat, method=method, layers=[0, -1], progress=False,
                               **CHEAP_OPTIONS.get(method, {}))
    assert np.isfinite(result.maps).all() and all(np.isfinite(r).all() for r in result.raw)


def test_unknown_method_lists_known_ones(explainer, images):
    with pytest.raises(InputError, match="Known methods: ablationcam, eigencam"):
        explainer.explain(images[:1], method="gradcan")


def test_randomcam_is_seeded(explainer, images):
    a = explainer.explain(images[:1], method="randomcam", seed=1, progress=False)
    b = explainer.explain(images[:1], method="randomcam", seed=1, progress=False)
    c = explainer.explain(images[:1], method="randomcam", seed=2, progress=False)
    np.testing.assert_array_equal(a.maps, b.maps)
    assert not np.array_equal(a.maps, c.maps)


def test_save_writes_overlays_npz_and_manifest(explainer, images, tmp_path):
    result = explainer.explain(images[:2], method="gradcam++", layers=[0, 5, -1], progress=False)
    result.save(tmp_path / "out")
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files.count("maps.npz") == 1 and len([f for f in files if f.endswith(".png")]) == 6
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["method"] == "gradcam++" and manifest["layers"] == result.layers
    assert "torch" in manifest["versions"]
    with np.load(tmp_path / "out" / "maps.npz") as data:
        np.testing.assert_array_equal(data["maps"], result.maps)
        assert data["raw_002"].shape == result.raw[2].shape


def test_cli_explain_on_default_model_and_image(tmp_path):
    result = CliRunner().invoke(main, ["explain", "--layers", "suggested", "--method", "layercam",
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "cat" in result.output
    assert (tmp_path / "o" / "manifest.json").exists()


def test_cli_explain_errors_exit_2(resnet18_onnx, tmp_path):
    runner = CliRunner()
    bad_layer = runner.invoke(main, ["explain", str(resnet18_onnx), "--layers", "/layer9/Conv"])
    assert bad_layer.exit_code == 2 and "Unknown layer" in bad_layer.output
    missing = runner.invoke(main, ["explain", str(resnet18_onnx), str(tmp_path / "none.png")])
    assert missing.exit_code == 2 and "none.png" in missing.output
    blocker = tmp_path / "file"
    blocker.write_text("x")
    unwritable = runner.invoke(main, ["explain", str(resnet18_onnx), "--layers", "suggested",
                                      "--out", str(blocker / "sub")])
    assert unwritable.exit_code == 2 and "is a file, not a folder" in unwritable.output
    out_of_range = runner.invoke(main, ["explain", str(resnet18_onnx), "--target", "5000"])
    assert out_of_range.exit_code == 2 and "out of range" in out_of_range.output


def test_options_of_another_method_are_rejected(explainer, images):
    with pytest.raises(InputError, match="do not apply to method 'gradcam'"):
        explainer.explain(images[:1], method="gradcam", samples=5)


def test_manifest_summarises_array_options(explainer, images, tmp_path):
    mask = np.zeros((64, 64), bool)
    mask[10:30, 10:30] = True
    result = explainer.explain(images[:1], method="smoothgradcam++", layers=[-1], samples=2,
                               region=mask, progress=False)
    result.save(tmp_path, overlays=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["options"]["region"] == {"array": [64, 64], "dtype": "bool"}
