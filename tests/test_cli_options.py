"""Options shared by the commands: --tap everywhere (indices as `camonnx layers --tap` prints
them), ybROAD with Gradual Extrapolation, and outputs checked before the model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from camonnx.cli import main
from camonnx.explainer import Explainer
from camonnx.recipe import Preprocess

SMALL = ["--size", "64", "--resize", "none"]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "noise.png"
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_tap_conv_indices_from_layers_work_in_explain(resnet18_onnx, image, tmp_path):
    listed = json.loads(_run("layers", resnet18_onnx, "--tap", "conv", "--json").stdout)
    conv_tensors = [row["tensor"] for row in listed["layers"]]
    assert conv_tensors != [layer.tensor for layer in Explainer(resnet18_onnx).layers]
    for tap in ("conv", "block"):
        _run("explain", resnet18_onnx, image, "--tap", tap, "--layers", "0,3", "--no-overlays",
             "--normalize", "none", "--out", tmp_path / tap, *SMALL)
    raw = {tap: np.load(tmp_path / tap / "maps.npz")["raw_001"] for tap in ("conv", "block")}
    assert not np.array_equal(raw["conv"], raw["block"])  # another tensor: the raw conv output
    explainer = Explainer(resnet18_onnx, tap="conv", preprocess=Preprocess(size=64, resize=None))
    want = explainer.explain(image, layers=[0, 3], normalize="none", progress=False)
    np.testing.assert_array_equal(raw["conv"], want.raw[1])  # the same computation, bit for bit


def test_tap_conv_in_animate(resnet18_onnx, image, tmp_path):
    frames = {}
    for tap in ("conv", "block"):
        _run("animate", resnet18_onnx, image, "--tap", tap, "--layers", "0,1", "--out",
             tmp_path / f"{tap}/", *SMALL)
        frames[tap] = [np.asarray(Image.open(p)) for p in sorted((tmp_path / tap).iterdir())]
    assert len(frames["conv"]) == len(frames["block"]) >= 2
    assert not np.array_equal(frames["conv"][0], frames["block"][0])


def test_ybroad_extrapolate_scores_the_extrapolated_maps(resnet18_onnx, image, tmp_path):
    plain, sharp = tmp_path / "plain", tmp_path / "ge"
    for out, flags in ((plain, []), (sharp, ["--extrapolate"])):
        _run("ybroad", resnet18_onnx, image, "--layers", "-1", "--tap", "conv", "--out", out,
             *flags, *SMALL)
    docs = [json.loads((out / "ybroad.json").read_text())["results"][0] for out in (plain, sharp)]
    assert docs[0]["options"].get("extrapolate") in (None, False)
    assert docs[1]["options"]["extrapolate"] is True
    assert docs[0]["layers"] == docs[1]["layers"]
    assert docs[0]["scores"] != docs[1]["scores"]  # a different map gives different ROAD


@pytest.mark.parametrize("command", ["explain", "ybroad"])
def test_unwritable_out_fails_before_the_model_loads(command, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, [command, str(tmp_path / "missing.onnx"), "--out",
                                       str(blocker / "sub")])
    assert result.exit_code == 2
    assert "is a file, not a folder" in result.output  # not the missing model: checked first


@pytest.mark.parametrize("command", ["explain", "animate", "ybroad"])
def test_include_input_needs_extrapolate(command, tmp_path):
    """--include-input without --extrapolate would be ignored: it is refused, before any load."""
    result = CliRunner().invoke(main, [command, "--include-input", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "--include-input" in result.output and "add --extrapolate" in result.output


def test_method_flags_belong_to_their_method(resnet18_onnx, image, tmp_path):
    bad = CliRunner().invoke(main, ["explain", str(resnet18_onnx), image, "-m", "gradcam",
                                    "--masks", "8", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--masks apply to --method rise only" in bad.output
    bad = CliRunner().invoke(main, ["explain", str(resnet18_onnx), image, "-m", "rise",
                                    "--samples", "3", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--samples apply to --method smoothgradcam++ only" in bad.output
    _run("explain", resnet18_onnx, image, "-m", "rise", "--masks", "8", "--cells", "4", "--keep",
         "0.4", "--layers", "-1", "--no-overlays", "--out", tmp_path / "rise", *SMALL)
    manifest = json.loads((tmp_path / "rise" / "manifest.json").read_text())
    assert manifest["method"] == "rise"
    assert {"masks": 8, "cells": 4, "keep": 0.4}.items() <= manifest["options"].items()
