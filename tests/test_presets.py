"""Preprocessing presets, the `camonnx recipe` command and the preprocessing flags.

Two hand-built colour classifiers stand in for a user's own exports: a tf2onnx-style NHWC model
trained on Keras "tf" inputs ([-1, 1]) and a Caffe-style NCHW model on BGR 0–255 minus the mean
pixel. Each scores its classes by the distance of the image's mean colour to a class prototype,
computed from its own input convention, so it is right exactly when the image is prepared the
way it expects: a synthetic image of a prototype-like colour is classified correctly with the
right preset and wrongly with camonnx's torchvision default.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from camonnx.cli import _FIELDS, main
from camonnx.errors import InputError
from camonnx.explainer import Explainer
from camonnx.images import prepare_images
from camonnx.recipe import (IMAGENET_MEAN, IMAGENET_STD, Preprocess, load_sidecar, recipe_path,
                            save_recipe)
from camonnx.presets import CAFFE_MEAN_BGR, PRESETS, describe, preset, read_labels, with_overrides

F = TensorProto.FLOAT
WARNING = "has no recipe file"

#: The tf model's classes: gray levels (prototype colour g·(1, 1, 1), g in [0, 1]).
GRAY_LEVELS = {"black": 0.0, "dark gray": 1 / 3, "light gray": 2 / 3, "white": 1.0}
#: The Caffe model's classes: RGB prototypes in [0, 1].
COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0),
           "gray": (0.5, 0.5, 0.5)}
TF_SIZE = 32
LIGHT_GRAY, RED = (170, 170, 170), (220, 30, 30)


def _save(nodes, inputs, outputs, inits, path: Path) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _nearest_prototype_head(x: str, weight: np.ndarray, bias: np.ndarray, out: str):
    """Conv 1×1 (per-pixel class scores) → GlobalAveragePool → Flatten → Softmax.

    For prototypes p_k and the pixel colour rgb (in [0, 1], recovered from the input by an
    affine map), −‖rgb − p_k‖² = −‖rgb‖² + 2 p_k·rgb − ‖p_k‖²; the first term is the same
    for every class, so the affine score 2 p_k·rgb − ‖p_k‖², averaged over pixels, ranks
    the classes by the distance of the pixels to each prototype."""
    k = weight.shape[0]
    inits = [numpy_helper.from_array(weight.reshape(k, 3, 1, 1).astype(np.float32), "w"),
             numpy_helper.from_array(bias.astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", [x, "w", "b"], ["scores"], name="head/Conv", kernel_shape=[1, 1]),
             helper.make_node("GlobalAveragePool", ["scores"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["logits"], axis=1),
             helper.make_node("Softmax", ["logits"], [out], axis=1)]
    return nodes, inits


def tf_model(path: Path) -> Path:
    """tf2onnx-style: input (unk, 32, 32, 3) NHWC, Transpose to NCHW; inputs x = v/127.5 − 1,
    so rgb = (x + 1) / 2 and score_k = g_k Σ_c x_c + 3 g_k − 3 g_k² for gray level g_k."""
    g = np.array(list(GRAY_LEVELS.values()))
    weight = np.repeat(g[:, None], 3, axis=1)
    bias = 3 * g - 3 * g ** 2
    nodes, inits = _nearest_prototype_head("nchw", weight, bias, "predictions")
    nodes.insert(0, helper.make_node("Transpose", ["input_1"], ["nchw"], perm=[0, 3, 1, 2]))
    x = helper.make_tensor_value_info("input_1", F, ["unk__6", TF_SIZE, TF_SIZE, 3])
    y = helper.make_tensor_value_info("predictions", F, ["unk__7", len(g)])
    return _save(nodes, [x], [y], inits, path)


def caffe_model(path: Path) -> Path:
    """Caffe-style: input "data" (N, 3, H, W) in BGR, x_c = v_c − mean_c (0–255), so
    rgb = (x + mean) / 255 read in reverse channel order."""
    p_bgr = np.array(list(COLOURS.values()))[:, ::-1]  # prototypes in the model's channel order
    mean = np.array(CAFFE_MEAN_BGR)
    weight = 2 * p_bgr / 255
    bias = 2 * p_bgr @ mean / 255 - (p_bgr ** 2).sum(axis=1)
    nodes, inits = _nearest_prototype_head("data", weight, bias, "prob")
    x = helper.make_tensor_value_info("data", F, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("prob", F, ["N", len(COLOURS)])
    return _save(nodes, [x], [y], inits, path)


def _image(path: Path, colour) -> Path:
    """A 60×80 image of one colour with a faint checkerboard (±4), so the maps have structure."""
    yy, xx = np.mgrid[0:60, 0:80]
    texture = np.where((yy // 10 + xx // 10) % 2 == 0, 4, -4)[..., None]
    Image.fromarray(np.clip(np.array(colour) + texture, 0, 255).astype(np.uint8)).save(path)
    return path


def _labels_file(path: Path, names) -> Path:
    path.write_text("\n".join(names) + "\n", encoding="utf-8")
    return path


def _predicted(explainer: Explainer, image: Path) -> int:
    return int(explainer.logits([str(image)]).argmax())


@pytest.fixture
def tf_setup(tmp_path):
    return (tf_model(tmp_path / "mobilenet_tf.onnx"), _image(tmp_path / "gray.png", LIGHT_GRAY),
            _labels_file(tmp_path / "levels.txt", GRAY_LEVELS))


@pytest.fixture
def caffe_setup(tmp_path):
    return (caffe_model(tmp_path / "vgg_caffe.onnx"), _image(tmp_path / "red.png", RED),
            _labels_file(tmp_path / "colours.txt", COLOURS))


# --- the presets -----------------------------------------------------------------------------

def _oracle(name: str, pixels: np.ndarray) -> np.ndarray:
    """Each preset's published formula in float64, (H, W, 3) RGB uint8 → (3, H, W)."""
    v = pixels.astype(np.float64)
    if name == "torchvision":
        x = (v / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    elif name in ("tf", "inception"):
        x = v / 127.5 - 1
    else:  # caffe: RGB → BGR, minus the BGR mean pixel
        x = v[..., ::-1] - np.array([103.939, 116.779, 123.68])
    return x.transpose(2, 0, 1)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_apply_their_published_formulas(name):
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    pixels[0, :2] = [[0, 0, 0], [255, 255, 255]]
    exact = with_overrides(preset(name), size=(20, 30), resize=None)  # no resampling
    x, crops = prepare_images(pixels, exact)
    # float32 against the float64 formula: the float32 rounding of the mean (≤ 123.68·2⁻²⁴ ≈
    # 7.4e-6, Caffe's 0–255 values) and of at most three operations (≤ 3·2⁻²⁴ relative)
    np.testing.assert_allclose(x[0].numpy(), _oracle(name, pixels), rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(crops[0], pixels)  # the display crop stays RGB


def test_preset_geometry_and_range_as_documented():
    assert PRESETS["torchvision"] == Preprocess()  # camonnx's default without a recipe
    assert [(PRESETS[n].size, PRESETS[n].resize) for n in ("torchvision", "tf", "caffe", "inception")] \
        == [((224, 224), 256), ((224, 224), 256), ((224, 224), 256), ((299, 299), 342)]
    assert round(299 / 0.875) == 342  # the central 87.5 %, TF-slim's eval crop
    extremes = np.array([[[0, 0, 0], [255, 255, 255]]], dtype=np.uint8)
    x, _ = prepare_images(extremes, with_overrides(preset("tf"), size=(1, 2), resize=None))
    assert x[0, :, 0, 0].tolist() == [-1.0] * 3 and x[0, :, 0, 1].tolist() == [1.0] * 3
    assert PRESETS["caffe"].channel_order == "BGR" and PRESETS["caffe"].scale == 1.0
    assert "BGR" in describe(PRESETS["caffe"]) and "x/127.5" in describe(PRESETS["tf"])
    with pytest.raises(InputError, match="Unknown preset 'caffee'.*caffe"):
        preset("caffee")
    with pytest.raises(InputError, match="std"):
        with_overrides(preset("tf"), std=(0.0,))


# --- the two models, from Python -------------------------------------------------------------

def test_tf_model_is_right_only_with_tf_values(tf_setup, caplog):
    model, image, _ = tf_setup
    light, white = list(GRAY_LEVELS).index("light gray"), list(GRAY_LEVELS).index("white")
    with caplog.at_level(logging.WARNING, logger="camonnx"):
        assumed = Explainer(model, check_parity=True)
    assert _predicted(assumed, image) == white  # torchvision's values double the contrast
    assert sum(WARNING in r.getMessage() for r in caplog.records) == 1
    for name, expected in [("tf", light), ("inception", light), ("caffe", white)]:
        explainer = Explainer(model, preprocess=name)
        # the fixed 32×32 input replaces the crop size, keeping the preset's crop fraction
        assert explainer.preprocess.size == (TF_SIZE, TF_SIZE) and explainer.preprocess.resize == 37
        assert _predicted(explainer, image) == expected, name


def test_caffe_model_is_right_only_with_caffe_values(caffe_setup):
    model, image, labels = caffe_setup
    names = list(COLOURS)
    expected = {"torchvision": "gray", "tf": "gray", "inception": "gray", "caffe": "red"}
    for name, colour in expected.items():  # [-2, 2]-scaled inputs look like the mean pixel
        assert names[_predicted(Explainer(model, preprocess=name), image)] == colour, name
    rgb_order = Explainer(model, preprocess=with_overrides(preset("caffe"), channel_order="RGB"))
    assert names[_predicted(rgb_order, image)] == "blue"  # red read as blue: the order matters
    with_labels = Explainer(model, preprocess="caffe", labels=labels)
    assert with_labels.labels == names
    assert with_labels.explain([str(image)], layers="suggested", progress=False).label(0) == "red (0)"


def test_warning_once_per_load_and_not_with_a_recipe(caffe_setup, caplog):
    model, _, labels = caffe_setup
    with caplog.at_level(logging.WARNING, logger="camonnx"):
        Explainer(model, labels=labels)  # labels alone do not say how to preprocess
        first = [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]
        caplog.clear()
        Explainer(model, preprocess="caffe")
        explicit = [r for r in caplog.records if WARNING in r.getMessage()]
        save_recipe(model, preset("caffe"))
        Explainer(model)
        stored = [r for r in caplog.records if WARNING in r.getMessage()]
    assert len(first) == 1 and explicit == [] and stored == []
    message = first[0]
    assert "vgg_caffe.camonnx.json" in message and "torchvision" in message
    assert "camonnx recipe" in message and "--preset" in message and "preprocess=" in message
    assert "(0.485, 0.456, 0.406)" in message  # what was assumed, with its numbers


# --- the command line ------------------------------------------------------------------------

def _run(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def _explain(model, image, *flags, out):
    return _run(["explain", model, image, "--layers", "suggested", "--no-overlays", "-o", out, *flags])


def test_cli_flags_choose_the_preprocessing(tf_setup, caffe_setup, tmp_path):
    model, image, labels = tf_setup
    assumed = _explain(model, image, "--labels", labels, out=tmp_path / "a")
    assert assumed.exit_code == 0, assumed.output
    assert f"{image}: white (3)" in assumed.stdout
    assert assumed.stderr.count(WARNING) == 1 and "camonnx recipe" in assumed.stderr
    right = _explain(model, image, "--preset", "tf", "--labels", labels, out=tmp_path / "b")
    assert right.exit_code == 0 and f"{image}: light gray (2)" in right.stdout
    assert WARNING not in right.stderr
    # the tf values spelled out field by field
    fields = _explain(model, image, "--scale", "1/127.5", "--mean", "1", "--std", "1",
                      "--labels", labels, out=tmp_path / "c")
    assert fields.exit_code == 0 and "light gray (2)" in fields.stdout
    cmodel, cimage, clabels = caffe_setup
    red = _explain(cmodel, cimage, "--preset", "caffe", "--labels", clabels, out=tmp_path / "d")
    assert red.exit_code == 0 and f"{cimage}: red (0)" in red.stdout
    blue = _explain(cmodel, cimage, "--preset", "caffe", "--channel-order", "rgb", "--labels",
                    clabels, out=tmp_path / "e")
    assert blue.exit_code == 0 and "blue (2)" in blue.stdout


def test_recipe_command_writes_the_sidecar_later_commands_use(tf_setup, tmp_path):
    model, image, labels = tf_setup
    written = _run(["recipe", model, "--preset", "tf", "--labels", labels])
    assert written.exit_code == 0, written.output
    sidecar = recipe_path(model)
    assert f"Wrote {sidecar}" in written.stdout and "x/127.5" in written.stdout
    assert "4 class names" in written.stdout and WARNING not in written.stderr
    doc = load_sidecar(model)
    assert doc["labels"] == list(GRAY_LEVELS) and doc["extra"]["preset"] == "tf"
    assert Preprocess.from_dict(doc["preprocess"]) == with_overrides(preset("tf"), size=(32, 32), resize=37)
    plain = _explain(model, image, out=tmp_path / "a")  # no flags
    assert plain.exit_code == 0 and "light gray (2)" in plain.stdout and WARNING not in plain.stderr
    again = _run(["recipe", model, "--preset", "caffe"])
    assert again.exit_code == 2 and "--force" in again.output and again.output.count("Error:") == 1
    assert load_sidecar(model)["extra"]["preset"] == "tf"  # untouched
    forced = _run(["recipe", model, "--preset", "caffe", "--force"])
    assert forced.exit_code == 0, forced.output
    replaced, kept = Preprocess.from_dict(load_sidecar(model)["preprocess"]), load_sidecar(model)["labels"]
    assert replaced.channel_order == "BGR" and kept == list(GRAY_LEVELS)  # labels kept
    # without --preset the flags change the stored recipe
    assert _run(["recipe", model, "--mean", "0", "--force"]).exit_code == 0
    changed = Preprocess.from_dict(load_sidecar(model)["preprocess"])
    assert changed == with_overrides(replaced, mean=(0.0,))


def test_every_image_command_takes_the_flags():
    flags = {*_FIELDS, "preset", "labels", "output"}
    for name in ("explain", "animate", "ybroad", "recipe"):
        assert flags <= {p.name for p in main.commands[name].params}, name
    assert "output" in {p.name for p in main.commands["layers"].params}


def test_animate_and_ybroad_use_the_flags(tf_setup, tmp_path):
    model, image, labels = tf_setup
    frames = _run(["animate", model, image, "--preset", "tf", "--labels", labels, "-o", tmp_path / "frames/"])
    assert frames.exit_code == 0, frames.output
    assert "light gray (2) ->" in frames.stdout and WARNING not in frames.stderr
    road = _run(["ybroad", model, image, "--preset", "tf", "--labels", labels, "--fractions", "0.5",
                 "-o", tmp_path / "road"])
    assert road.exit_code == 0, road.output
    assert json.loads((tmp_path / "road" / "ybroad.json").read_text())  # written
    assert "light gray" in (tmp_path / "road" / "ybroad.json").read_text()


def test_output_flag_reaches_the_explainer(tf_setup, tmp_path):
    model, image, _ = tf_setup
    named = _run(["layers", model, "--output", "predictions"])
    assert named.exit_code == 0, named.output
    unknown = _run(["layers", model, "--output", "nope"])
    assert unknown.exit_code == 2 and "nope" in unknown.output and "predictions" in unknown.output
    assert _explain(model, image, "--preset", "tf", "--output", "logits", out=tmp_path / "o").exit_code == 0


def test_gradual_extrapolation_input_step_is_off_by_default(tf_setup, tmp_path):
    model, image, _ = tf_setup
    for flags, expected in [((), False), (("--include-input",), True)]:
        out = tmp_path / f"ge{expected}"
        result = _explain(model, image, "--preset", "tf", "--extrapolate", *flags, out=out)
        assert result.exit_code == 0, result.output
        assert json.loads((out / "manifest.json").read_text())["options"]["include_input"] is expected


def _bad_labels(tmp_path: Path, kind: str) -> Path:
    if kind == "missing":
        return tmp_path / "none.txt"
    if kind == "directory":
        return tmp_path
    path = tmp_path / f"{kind}.txt"
    path.write_text({"empty": "\n\n", "blank line": "a\n\nb\nc\n", "count": "a\nb\nc\n"}[kind])
    return path


@pytest.mark.parametrize("flags, message", [
    (["--std", "0"], "std"),
    (["--std", "1,0,1"], "non-zero"),
    (["--channel-order", "GBR"], "--channel-order"),
    (["--mean", "a,b"], "--mean"),
    (["--mean", "1,2"], "mean must be 1 or 3"),
    (["--scale", "0"], "scale must be a positive"),
    (["--scale", "1/0"], "--scale"),
    (["--size", "0"], "size must be a positive"),
    (["--resize", "big"], "--resize"),
    (["--size", "64"], "fixed at 32×32"),
    (["--preset", "keras"], "--preset"),
    (["--labels", "missing"], "does not exist"),
    (["--labels", "directory"], "is a directory"),
    (["--labels", "empty"], "holds no class names"),
    (["--labels", "blank line"], "Line 2"),
    (["--labels", "count"], "3 class names but the model's class output 'predictions' has 4"),
])
def test_bad_flags_are_one_error_line(tf_setup, tmp_path, flags, message):
    model, image, _ = tf_setup
    if flags[0] == "--labels":
        flags = ["--labels", _bad_labels(tmp_path, flags[1])]
    result = _explain(model, image, "--preset", "tf", *flags, out=tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert result.output.count("Error:") == 1 and message in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_stored_labels_of_the_wrong_count_are_refused(caffe_setup, tmp_path):
    model, image, _ = caffe_setup
    save_recipe(model, preset("caffe"), labels=["a", "b"])
    result = _explain(model, image, out=tmp_path / "out")
    assert result.exit_code == 2 and result.output.count("Error:") == 1
    assert "vgg_caffe.camonnx.json" in result.output and "2 class names" in result.output


def test_read_labels_accepts_usual_text_files(tmp_path):
    path = tmp_path / "l.txt"
    path.write_bytes("\ufeffcat\r\n  dog \r\nünïcode\n\n".encode("utf-8"))
    assert read_labels(path) == ["cat", "dog", "ünïcode"]
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match="not UTF-8"):
        read_labels(path)
