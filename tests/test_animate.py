"""CAManim: camonnx.animate, its frames, writers and `camonnx animate` (docs/pipeline.md#camanim).

Real models only: the session's ResNet-18 (random weights, dynamic H/W) on 64×64 crops of the
bundled cat for most tests, and the default pretrained EfficientNet-Lite0 for one end-to-end run.
"""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from click.testing import CliRunner

import camonnx
from camonnx.animation import (Frames, animate, animation_paths, explain_for_animation,
                             normalize_maps, render_frames, unnormalized_maps, write_frames)
from camonnx.cli import main
from camonnx.errors import InputError
from camonnx.explainer import Explainer
from camonnx.recipe import Preprocess, save_recipe
from camonnx.models import default_image

SIZE = 64
FPS, HOLD = 5, 1.0


@pytest.fixture(scope="module")
def small_model(resnet18_onnx, tmp_path_factory) -> Path:
    """The session ResNet-18 with a 64×64 recipe and ImageNet labels in its own folder."""
    folder = tmp_path_factory.mktemp("anim_model")
    path = folder / "resnet18.onnx"
    os.symlink(resnet18_onnx, path)
    labels = (Path(camonnx.__file__).parent / "data" / "imagenet_classes.txt").read_text().splitlines()
    save_recipe(path, Preprocess(size=(SIZE, SIZE), resize=SIZE), labels=labels)
    return path


@pytest.fixture(scope="module")
def explainer(small_model) -> Explainer:
    return Explainer(small_model)


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    return iio.imread(default_image())[..., :3]


@pytest.fixture(scope="module")
def explanation(explainer, cat):
    return explain_for_animation(explainer, [cat, cat[:, ::-1].copy()], method="gradcam",
                                 progress=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- writers --------------------------------------------------------------------------------

def test_mp4_gif_and_png_folder_decode_with_expected_frames(explanation, tmp_path):
    L = len(explanation.layers)
    frames = render_frames(explanation, fps=FPS, hold_seconds=HOLD, progress=False)
    h, w = frames.size
    assert (h % 2, w % 2) == (0, 0) and w == SIZE and h > SIZE  # panel + caption band
    n_hold = round(HOLD * FPS)

    mp4 = animate(explanation, tmp_path / "anim.mp4", fps=FPS, hold_seconds=HOLD, progress=False)
    video = iio.imread(mp4, index=None)
    assert video.shape == (L + n_hold, h, w, 3)
    # lossy, but frame k is frame k: closer to its own render than to any other layer's
    rendered = np.stack(frames.images[:L]).astype(float)
    errors = np.abs(video[:L].astype(float)[:, None] - rendered[None]).mean(axis=(2, 3, 4))
    assert (errors.argmin(axis=1) == np.arange(L)).all()
    assert (np.abs(video[L:].astype(float) - frames.images[-1]).mean() < 8)

    gif = animate(explanation, tmp_path / "anim.gif", fps=FPS, hold_seconds=HOLD, progress=False)
    decoded = iio.imread(gif, index=None)
    assert decoded.shape[:3] == (L + 1, h, w)
    from PIL import Image
    with Image.open(gif) as im:
        assert im.info["loop"] == 0 and im.info["duration"] == 1000 / FPS
        im.seek(L)
        assert im.info["duration"] == HOLD * 1000

    folder = animate(explanation, tmp_path / "frames", fps=FPS, hold_seconds=HOLD, progress=False)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"frame_{i:03d}.png" for i in range(L + 1)]
    np.testing.assert_array_equal(iio.imread(folder / "frame_007.png"), frames.images[7])
    # a second run replaces the old frames folder (fewer frames now: no stale ones remain)
    animate(explanation, str(tmp_path / "frames") + "/", every=5, hold_seconds=0, progress=False)
    assert len(list(folder.iterdir())) == len(range(0, L, 5))
    assert _leftovers(tmp_path) == []


def test_both_panels_side_by_side_and_callable_package_helper(explanation, tmp_path):
    frames = render_frames(explanation, norm="both", progress=False)
    assert frames.size[1] == 2 * SIZE + 4
    left, right = frames.images[3][:SIZE, :SIZE], frames.images[3][:SIZE, SIZE + 4:2 * SIZE + 4]
    assert not np.array_equal(left, right)  # local vs global
    out = camonnx.animate(explanation, tmp_path / "both.gif", norm="both", image_index=1,
                          hold_seconds=0, progress=False)
    assert out == tmp_path / "both.gif"
    assert iio.imread(out, index=None).shape[:3] == (len(explanation.layers), *frames.size)


# --- captions -------------------------------------------------------------------------------

def test_caption_of_frame_k_names_tap_k(explanation, explainer):
    layers = explanation.layers
    assert layers == [layer.name for layer in explainer.layers]
    frames = render_frames(explanation, progress=False)
    lines = [c.splitlines() for c in frames.captions]
    assert [line[0] for line in lines] == layers + [layers[-1]]  # + the held final frame
    assert frames.layers == layers + [layers[-1]] and frames.hold
    assert [line[1].split(" · ")[0] for line in lines[:-1]] == \
        [f"layer {k + 1} / {len(layers)}" for k in range(len(layers))]
    assert lines[-1][1].startswith(f"final layer: {len(layers)} / {len(layers)} · gradcam")
    assert all(line[2] == explanation.label(0) for line in lines)
    assert "(" in lines[0][2] and not lines[0][2].startswith("class")  # an ImageNet name

    every2 = render_frames(explanation, every=2, progress=False)
    assert [c.splitlines()[0] for c in every2.captions[:-1]] == layers[::2]
    assert every2.captions[-1].splitlines()[0] == layers[-1]  # ends on the final layer

    subset = render_frames(explanation, layers=[layers[5], 2, -1], every=1, hold_seconds=0,
                           progress=False)
    assert subset.layers == [layers[2], layers[5], layers[-1]] and not subset.hold


def test_extrapolated_explanation_is_animated_as_is(explainer, cat):
    sharp = explain_for_animation(explainer, [cat], method="gradcam", layers=[-2, -1],
                                  extrapolate=True, progress=False)
    frames = render_frames(sharp, norm="global", hold_seconds=0, progress=False)
    assert frames.captions[0].splitlines()[1].endswith("· gradcam + GE · global")
    np.testing.assert_array_equal(unnormalized_maps(sharp), sharp.maps)


# --- normalisation --------------------------------------------------------------------------

def test_global_is_darker_early_and_equals_local_at_the_extremes(explanation):
    raw = explanation.maps[:, 0].astype(np.float64)  # normalize="none": (L, H, W) raw maps
    frames = render_frames(explanation, norm="both", progress=False)
    local, glob = frames.maps["local"], frames.maps["global"]
    # definitions, recomputed here: local per layer, global over ALL layers of the image
    lo, hi = raw.min(), raw.max()
    np.testing.assert_allclose(glob, (raw - lo) / (hi - lo), atol=1e-6)
    for l in range(len(raw)):
        rng = raw[l].max() - raw[l].min()
        expected = (raw[l] - raw[l].min()) / rng if rng > 0 else np.zeros_like(raw[l])
        np.testing.assert_allclose(local[l], expected, atol=1e-6)
    # early layers look dim in global (the heat layer and the rendered red channel)
    early = slice(0, 5)
    assert glob[early].mean() < 0.5 * local[early].mean()
    red = lambda imgs: np.mean([im[:SIZE, :SIZE, 0].mean() for im in imgs])  # noqa: E731
    g_frames = render_frames(explanation, norm="global", progress=False).images[early]
    l_frames = render_frames(explanation, norm="local", progress=False).images[early]
    assert red(g_frames) < red(l_frames)
    # the layer holding the global max: global = local rescaled by the global range, max 1 in both
    top = int(np.argmax(raw.max(axis=(1, 2))))
    assert glob[top].max() == local[top].max() == 1.0
    np.testing.assert_allclose(glob[top], (raw[top] - lo) / (hi - lo), atol=1e-6)
    # global stays global when only some layers are animated
    part = render_frames(explanation, norm="global", layers=[0, 1], progress=False)
    np.testing.assert_array_equal(part.maps["global"], glob[:2])


def test_layer_holding_both_global_extremes_looks_the_same(explainer, cat):
    # Eigen-CAM projects centred activations: every map has a zero after the ReLU, so the layer
    # with the global max also holds the global min (0) and its global map IS its local map
    eigen = explain_for_animation(explainer, [cat], method="eigencam", progress=False)
    raw = eigen.maps[:, 0]
    top = int(np.argmax(raw.max(axis=(1, 2))))
    assert raw[top].min() == raw.min() == 0.0
    frames = render_frames(eigen, norm="both", progress=False)
    local, glob = frames.maps["local"], frames.maps["global"]
    np.testing.assert_array_equal(glob[top], local[top])
    panel_l, panel_g = frames.images[top][:SIZE, :SIZE], frames.images[top][:SIZE, SIZE + 4:2 * SIZE + 4]
    np.testing.assert_array_equal(panel_l, panel_g)
    others = [l for l in range(len(raw)) if raw[l].max() < raw.max()]
    assert all(glob[l].max() < 1.0 for l in others) and glob[others].mean() < local[others].mean()


def test_constant_maps_become_zeros_never_nan(explanation):
    for mode in ("local", "global"):
        flat = normalize_maps(np.full((3, 2, 8, 8), 4.0, np.float32), mode)
        assert np.isfinite(flat).all() and (flat == 0).all()
    mixed = np.zeros((2, 1, 4, 4), np.float32)
    mixed[1, 0, 0, 0] = 3.0
    local = normalize_maps(mixed, "local")
    assert (local[0] == 0).all() and local[1].max() == 1.0
    from dataclasses import replace
    zero = replace(explanation, maps=np.zeros_like(explanation.maps))
    frames = render_frames(zero, norm="both", progress=False)
    assert all(np.isfinite(m).all() and (m == 0).all() for m in frames.maps.values())


def test_locally_normalised_explanation_is_animated_from_its_raw_maps(explainer, cat, explanation):
    local = explainer.explain([cat, cat[:, ::-1].copy()], normalize="local", progress=False)
    raw = unnormalized_maps(local)
    np.testing.assert_allclose(raw, explanation.maps, rtol=1e-4,
                               atol=1e-5 * float(np.abs(explanation.maps).max()))


# --- failures -------------------------------------------------------------------------------

def test_bad_outputs_and_selections_are_clear_errors_with_no_partial_file(explanation, tmp_path):
    with pytest.raises(InputError, match=r"\.mp4.*\.gif.*folder"):
        animate(explanation, tmp_path / "anim.avi", progress=False)
    blocker = tmp_path / "regular.txt"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="is a file, not a folder"):
        animate(explanation, blocker / "anim.mp4", progress=False)
    with pytest.raises(InputError, match="Zero layers"):
        animate(explanation, tmp_path / "a.mp4", layers=[], progress=False)
    with pytest.raises(InputError, match="every"):
        animate(explanation, tmp_path / "a.mp4", every=0, progress=False)
    with pytest.raises(InputError, match="image_index"):
        animate(explanation, tmp_path / "a.mp4", image_index=2, progress=False)
    with pytest.raises(InputError, match="Unknown layer"):
        animate(explanation, tmp_path / "a.mp4", layers=["no-such-layer"], progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="other files"):
        animate(explanation, busy, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "regular.txt"]
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]


class _Interrupted(Frames):
    """Frames whose video stream is cut by Ctrl-C after a few frames."""

    def video_frames(self):
        for n, image in enumerate(super().video_frames()):
            if n == 3:
                raise KeyboardInterrupt
            yield image


def test_failed_or_interrupted_writes_leave_nothing(explanation, tmp_path):
    frames = render_frames(explanation, progress=False)
    target = tmp_path / "anim.mp4"
    target.write_bytes(b"previous animation")
    cut = _Interrupted(**{k: getattr(frames, k) for k in ("images", "captions", "layers",
                                                          "durations", "fps", "hold")})
    with pytest.raises(KeyboardInterrupt):
        write_frames(cut, target)
    assert target.read_bytes() == b"previous animation"  # untouched, not half-overwritten
    # a frame of the wrong size fails the writer midway (ffmpeg, GIF stacking, PNG encoding)
    broken = Frames(frames.images[:4] + [frames.images[4][:10, :10, 0]], frames.captions[:5],
                    frames.layers[:5], frames.durations[:5], frames.fps)
    for name in ("new.mp4", "new.gif", "new_frames"):
        with pytest.raises(ValueError):
            write_frames(broken, tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.mp4"]


# --- command line ---------------------------------------------------------------------------

def test_cli_several_images_frames_folder_and_errors(small_model, cat, tmp_path):
    runner = CliRunner()
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    iio.imwrite(a, cat)
    iio.imwrite(b, cat[::-1].copy())
    result = runner.invoke(main, ["animate", str(small_model), str(a), str(b), "--norm", "both",
                                  "--out", str(tmp_path / "anims") + "/"])
    assert result.exit_code == 0, result.output
    for stem in ("a", "b"):
        video = iio.imread(tmp_path / "anims" / f"{stem}.mp4", index=None)
        assert video.shape[0] == 20 + FPS and video.shape[2] == 2 * SIZE + 4

    result = runner.invoke(main, ["animate", str(small_model), str(a), "--every", "2",
                                  "--hold", "0", "-m", "layercam", "--extrapolate",
                                  "--out", str(tmp_path / "frames")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "frames").glob("frame_*.png"))) == 10
    assert iio.imread(tmp_path / "frames" / "frame_000.png").shape[1] == SIZE

    before = sorted(p.name for p in tmp_path.iterdir())
    blocker = tmp_path / "a.png"  # a regular file used as a folder
    for args, message in [(["--out", str(tmp_path / "x.avi")], "Unsupported output"),
                          (["--out", str(blocker / "x.mp4")], "not a folder"),
                          (["--layers", "", "--out", str(tmp_path / "z.mp4")], "No layers selected")]:
        result = runner.invoke(main, ["animate", str(small_model), str(a), *args])
        assert result.exit_code == 2, result.output
        assert "Error:" in result.output and message in result.output, result.output
        assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_output_names_for_several_images():
    assert animation_paths(None, ["cat.png"]) == [Path("camonnx.mp4")]
    assert animation_paths(None, ["a/cat.png", "dog.jpg"]) == [Path("camonnx-cat.mp4"),
                                                                Path("camonnx-dog.mp4")]
    assert animation_paths("out/", ["a/cat.png", "b/cat.png"]) == [Path("out/cat-0.mp4"),
                                                                    Path("out/cat-1.mp4")]
    assert animation_paths("x.gif", ["cat.png", "dog.png"]) == [Path("x-cat.gif"), Path("x-dog.gif")]
    assert animation_paths("frames", ["cat.png"]) == [Path("frames")]
    with pytest.raises(InputError, match="Unsupported output"):
        animation_paths("x.webm", ["cat.png"])


def test_cli_defaults_default_model_and_cat(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["animate"])
    assert result.exit_code == 0, result.output
    assert "tiger cat" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camonnx.mp4"]
    video = iio.imread(tmp_path / "camonnx.mp4", index=None)
    assert video.shape[1:] == (video.shape[1], 224, 3) and video.shape[1] > 224
    assert video.shape[0] == 49 + FPS  # EfficientNet-Lite0: 49 conv taps, + the held frame
    frame = video[30]
    iio.imwrite(tmp_path / "frame_030.png", frame)
    saved = iio.imread(tmp_path / "frame_030.png")
    panel = saved[:224].astype(float)
    assert panel.std() > 20  # not blank
    assert np.abs(panel[..., 0] - panel[..., 2]).mean() > 10  # coloured heat, not grey
