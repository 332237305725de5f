"""The model zoo (camonnx.models): real exports, real ONNX Runtime runs, no mocks."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from camonnx.errors import InputError
from camonnx.graph import load_graph
from camonnx.images import prepare_images
from camonnx.recipe import Preprocess, load_recipe, load_sidecar, recipe_path
from camonnx.models import (ZOO, cache_dir, default_image, default_model, export_model,
                            imagenet_labels)
from camonnx.models import efficientnet_lite

DOMESTIC_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
#: ONNX Runtime (float32) against the torch model in float64, relative to the logits' max:
#: float32 rounding through the network with ORT's kernels (and the exporters' BatchNorm
#: folding, ~1e-7). Measured over input seeds 0–4: resnet18 exports (both exporters, batch 1
#: and 3) ≤ 4.9e-7; the pretrained EfficientNet-Lite0 on the cat (and 4 noisy variants) ≤ 7.0e-7.
#: So 1e-5 of the max; an export error (a dropped layer, wrong weights) is O(1).
RTOL32 = 1e-5


def _session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def resnet18_exports(tmp_path_factory):
    """resnet18 (random weights, seed 0) exported once with each exporter."""
    folder = tmp_path_factory.mktemp("zoo")
    return {exporter: export_model("resnet18", folder / f"r18_{exporter}.onnx", exporter=exporter)
            for exporter in ("dynamo", "legacy")}


@pytest.fixture(scope="module")
def resnet18_torch():
    """The torch model the exports come from, in float64: the oracle."""
    return ZOO["resnet18"].build(None, 0).double()


class _NoNetwork:
    """Any socket connection attempt fails the test (checks that nothing downloads)."""

    def __enter__(self):
        self._connect = socket.socket.connect

        def refuse(sock, *args, **kwargs):
            raise AssertionError(f"camonnx tried to open a network connection to {args}")

        socket.socket.connect = refuse
        return self

    def __exit__(self, *exc):
        socket.socket.connect = self._connect


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """CAMONNX_CACHE pointed at a temp folder; the default model exported once into it."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAMONNX_CACHE", str(folder))
        with _NoNetwork():
            path = default_model()
        yield folder, path


# --- export round trip -----------------------------------------------------------------------

@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_export_is_valid_onnx(resnet18_exports, exporter):
    path = resnet18_exports[exporter]
    onnx.checker.check_model(str(path))  # the path form also checks external data
    proto = onnx.load(str(path), load_external_data=False)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch
    assert [d.dim_value for d in dims[1:]] == [3, 224, 224]
    data = path.with_name(path.name + ".data")
    assert data.is_file() == (exporter == "dynamo")  # dynamo keeps weights in OUT.data
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".camonnx-export-")]


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
@pytest.mark.parametrize("batch", [1, 3])
def test_export_matches_torch(resnet18_exports, resnet18_torch, exporter, batch):
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = resnet18_torch(x.double()).numpy()
    got = _session(resnet18_exports[exporter]).run(["logits"], {"input": x.numpy()})[0]
    assert got.shape == (batch, 1000)
    np.testing.assert_allclose(got, expected, rtol=0, atol=RTOL32 * np.abs(expected).max())


def test_dynamo_external_data_loads_through_graph(resnet18_exports):
    graph = load_graph(resnet18_exports["dynamo"])
    assert len(graph.layers) == 20
    assert len(load_graph(resnet18_exports["legacy"]).layers) == 20


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_export_sidecar(resnet18_exports, exporter):
    path = resnet18_exports[exporter]
    recipe, labels = load_recipe(path)
    assert recipe == ZOO["resnet18"].recipe == Preprocess()
    assert labels == imagenet_labels()
    extra = load_sidecar(path)["extra"]
    assert extra["model"] == "resnet18" and extra["exporter"] == exporter
    assert extra["weights"] == "random (seed 0)" and extra["versions"]["torch"] == torch.__version__
    assert extra["opset"] == onnx.load(str(path), load_external_data=False).opset_import[0].version


# --- errors ----------------------------------------------------------------------------------

def test_unknown_model_lists_known_names(tmp_path):
    with pytest.raises(InputError) as info:
        export_model("resnet19", tmp_path / "x.onnx")
    message = str(info.value)
    assert "resnet19" in message and "Did you mean" in message
    assert all(name in message for name in ZOO)
    assert not list(tmp_path.iterdir())


def test_weights_file_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist") as info:
        export_model("resnet18", tmp_path / "x.onnx", weights=tmp_path / "missing.pth")
    assert "missing.pth" in str(info.value)
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(10, 512)}, wrong)
    with pytest.raises(InputError, match="does not fit the resnet18") as info:
        export_model("resnet18", tmp_path / "x.onnx", weights=wrong, exporter="legacy")
    assert "wrong.pth" in str(info.value) and "missing" in str(info.value)
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(InputError, match="cannot be read"):
        export_model("resnet18", tmp_path / "x.onnx", weights=junk, exporter="legacy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pth", "wrong.pth"]


def test_weights_file_is_loaded(tmp_path):
    source = ZOO["resnet18"].build(None, 7)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    loaded = ZOO["resnet18"].build(tmp_path / "r18.pth", 0)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert not torch.equal(ZOO["resnet18"].build(None, 0).conv1.weight, source.conv1.weight)


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="writable") as info:
        export_model("resnet18", blocker / "out.onnx", exporter="legacy")
    assert str(blocker) in str(info.value)
    with pytest.raises(InputError, match="directory"):
        export_model("resnet18", tmp_path, exporter="legacy")


def test_bad_options(tmp_path):
    with pytest.raises(InputError, match="exporter"):
        export_model("resnet18", tmp_path / "x.onnx", exporter="tracing")
    with pytest.raises(InputError, match="opset"):
        export_model("resnet18", tmp_path / "x.onnx", exporter="legacy", opset=99)
    with pytest.raises(InputError, match="legacy exporter"):
        export_model("resnet18", tmp_path / "x.onnx", exporter="dynamo", opset=13)
    assert not list(tmp_path.iterdir())


def test_failed_move_leaves_nothing(tmp_path):
    out = tmp_path / "m.onnx"
    recipe_path(out).mkdir()  # the sidecar cannot be renamed onto a directory
    with pytest.raises(InputError, match="Cannot write"):
        export_model("resnet18", out, exporter="legacy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.camonnx.json"]  # only our blocker


def test_torchvision_recipes_match_torchvision_metadata():
    import torchvision.models as tvm

    enums = {"resnet18": tvm.ResNet18_Weights, "resnet50": tvm.ResNet50_Weights,
             "vgg16": tvm.VGG16_Weights, "densenet121": tvm.DenseNet121_Weights,
             "mobilenet_v3_large": tvm.MobileNet_V3_Large_Weights,
             "efficientnet_b0": tvm.EfficientNet_B0_Weights}
    for name, enum in enums.items():
        tf = enum.IMAGENET1K_V1.transforms()  # builds the transform object; downloads nothing
        recipe = ZOO[name].recipe
        assert recipe.size == (tf.crop_size[0],) * 2 and recipe.resize == tf.resize_size[0]
        assert recipe.interpolation == tf.interpolation.value
        assert np.allclose(recipe.mean, tf.mean) and np.allclose(recipe.std, tf.std)
    assert imagenet_labels() == tvm.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]


# --- the default model -----------------------------------------------------------------------

def test_default_model_classifies_the_cat(cache):
    folder, path = cache
    assert path == folder / "efficientnet_lite0.onnx" and path.is_file()
    recipe, labels = load_recipe(path)
    assert recipe == efficientnet_lite.RECIPE
    assert recipe.mean == pytest.approx((0.498,) * 3, abs=1e-3)
    assert recipe.std == pytest.approx((0.502,) * 3, abs=1e-3)
    x, crops = prepare_images(default_image(), recipe)
    logits = _session(path).run(["logits"], {"input": x.numpy()})[0]
    top1 = int(logits[0].argmax())
    assert top1 in DOMESTIC_CATS, f"top-1 is {top1} ({labels[top1]})"
    assert labels[281] == "tabby" and len(labels) == 1000


def test_default_model_matches_the_pretrained_torch_model(cache):
    _, path = cache
    model = efficientnet_lite.build().double()
    x, _ = prepare_images([default_image()] * 2, efficientnet_lite.RECIPE)
    with torch.no_grad():
        expected = model(x.double()).numpy()
    np.testing.assert_allclose(_session(path).run(None, {"input": x.numpy()})[0], expected,
                               rtol=0, atol=RTOL32 * np.abs(expected).max())


def test_default_model_is_cached_and_refreshed(cache, capfd):
    folder, path = cache
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAMONNX_CACHE", str(folder))
        assert cache_dir() == folder
        mtime = path.stat().st_mtime_ns
        assert default_model() == path and path.stat().st_mtime_ns == mtime  # cached
        assert "exporting" not in capfd.readouterr().err
        sidecar = recipe_path(path)
        doc = load_sidecar(path)
        assert doc["extra"]["exporter"] == "legacy"
        doc["extra"]["versions"]["torch"] = "0.0.1"  # as if torch had changed since the export
        sidecar.write_text(json.dumps(doc))
        with _NoNetwork():
            assert default_model() == path
        err = capfd.readouterr().err
        assert "exporting" in err and str(folder) in err and err.count("\n") == 1
        assert load_sidecar(path)["extra"]["versions"]["torch"] == torch.__version__
        assert load_recipe(path)[0] == efficientnet_lite.RECIPE
        assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_cache_dir_resolution(tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CAMONNX_CACHE", raising=False)
        mp.setenv("XDG_CACHE_HOME", str(tmp_path))
        assert cache_dir() == tmp_path / "camonnx"
        mp.delenv("XDG_CACHE_HOME")
        mp.setenv("HOME", str(tmp_path / "home"))
        assert cache_dir() == tmp_path / "home" / ".cache" / "camonnx"


def test_bundled_data():
    assert default_image().is_file()
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[0] == "tench" and len(set(labels)) >= 998
    labels.append("x")  # a copy: the module's list is not changed
    assert len(imagenet_labels()) == 1000
    assert os.access(default_image(), os.R_OK)
