"""Image loading, the preprocessing recipe, and the sidecar (camonnx.images)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from camonnx.errors import InputError
from camonnx.images import load_image, prepare_images
from camonnx.recipe import Preprocess, load_recipe, recipe_path, save_recipe
from camonnx.models import default_image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
MEAN64, STD64 = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
#: camonnx's float32 (x/255 − mean)/std against the float64 one on the same pixels: values up to
#: 2.64, and the division by std ≈ 0.22 multiplies the rounding of x/255 − mean by 4.5, so float32
#: errs by at most ~7e-7; measured ≤ 6.0e-7 over 8 random images of each shape tested here.
ATOL32 = 1e-6


def _rng_image(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, c), dtype=np.uint8)


def _reference(pil: Image.Image, resize: int = 256, crop: int = 224,
               resample=Image.Resampling.BILINEAR) -> np.ndarray:
    """torchvision-style eval preprocessing by hand: shorter side → resize (PIL), centre crop,
    ToTensor, Normalize. Returns (3, crop, crop) in float64 (see :data:`ATOL32`)."""
    w, h = pil.size
    if h <= w:
        size = (int(resize * w / h), resize)
    else:
        size = (resize, int(resize * h / w))
    pil = pil.resize(size, resample)
    w, h = pil.size
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return _normalize64(np.asarray(pil)[top:top + crop, left:left + crop])


def _normalize64(crop: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 → (3, H, W) float64 (x/255 − mean)/std, ImageNet mean and std."""
    arr = crop.astype(np.float64) / 255.0
    return ((arr - MEAN64) / STD64).transpose(2, 0, 1)


# --- load_image ------------------------------------------------------------------------------

def test_load_png_file_is_uint8_rgb():
    rgb = load_image(default_image())
    assert rgb.dtype == np.uint8 and rgb.shape == (300, 451, 3)
    assert np.array_equal(rgb, np.asarray(Image.open(default_image()).convert("RGB")))


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 1)])
def test_grayscale_array_expands_to_three_channels(shape):
    gray = _rng_image(37, 53, 1)[..., 0].reshape(shape)
    rgb = load_image(gray)
    assert rgb.shape == (37, 53, 3) and rgb.dtype == np.uint8
    for c in range(3):
        assert np.array_equal(rgb[..., c], gray.reshape(37, 53))


def test_grayscale_file(tmp_path):
    gray = _rng_image(20, 30, 1)[..., 0]
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    rgb = load_image(tmp_path / "g.png")
    assert rgb.shape == (20, 30, 3) and np.array_equal(rgb[..., 1], gray)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 200                  # red channel
    rgba[0, :, 3] = 255                 # row 0 opaque
    rgba[1, :, 3] = 0                   # row 1 transparent → white
    rgba[2, :, 3] = 128                 # row 2 half → blend
    rgb = load_image(rgba)
    assert rgb.shape == (4, 5, 3)
    assert (rgb[0] == [200, 0, 0]).all()
    assert (rgb[1] == 255).all()
    a = 128 / 255
    assert np.allclose(rgb[2], np.round([200 * a + 255 * (1 - a), 255 * (1 - a), 255 * (1 - a)]))
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(load_image(str(tmp_path / "a.png")), rgb)


def test_16bit_array_and_file(tmp_path):
    values = np.array([[0, 257, 65535], [32896, 1000, 65280]], dtype=np.uint16)
    expected = np.round(values / 257).astype(np.uint8)
    rgb = load_image(values)
    assert rgb.dtype == np.uint8 and np.array_equal(rgb[..., 0], expected)
    Image.fromarray(values).save(tmp_path / "g16.png")      # a 16-bit grayscale PNG
    assert np.array_equal(load_image(tmp_path / "g16.png")[..., 2], expected)


def test_float_arrays_in_unit_range():
    f = np.random.default_rng(1).random((37, 53, 3))
    assert np.array_equal(load_image(f), np.round(f * 255).astype(np.uint8))
    assert np.array_equal(load_image(f.astype(np.float32))[..., 0],
                          np.round(f.astype(np.float32)[..., 0].astype(np.float64) * 255).astype(np.uint8))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        load_image(f * 255)


def test_pil_image_and_exif_orientation(tmp_path):
    arr = _rng_image(10, 20)
    assert np.array_equal(load_image(Image.fromarray(arr)), arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(arr).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    assert load_image(tmp_path / "rot.jpg").shape == (20, 10, 3)


def test_error_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(InputError, match="does not exist") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_error_text_file_renamed_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(InputError, match="not an image file") as info:
        load_image(str(path))
    assert str(path) in str(info.value)


def test_error_truncated_png(tmp_path):
    data = default_image().read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_error_directory(tmp_path):
    with pytest.raises(InputError, match="directory") as info:
        load_image(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("arr, words", [
    (np.zeros((0, 5, 3), np.uint8), "zero size"),
    (np.zeros((2, 3, 4, 5, 3), np.uint8), "(2, 3, 4, 5, 3)"),
    (np.zeros((3, 8, 9), np.uint8), "channels-first"),
    (np.zeros((8, 9, 2), np.uint8), "(8, 9, 2)"),
])
def test_error_bad_arrays_name_the_input(arr, words):
    with pytest.raises(InputError) as info:
        load_image(arr)
    assert words in str(info.value) and "array" in str(info.value)


def test_error_in_a_list_names_the_image():
    with pytest.raises(InputError, match="Image 1 of 2") as info:
        prepare_images([_rng_image(30, 30), np.zeros((0, 0), np.uint8)], Preprocess())
    assert "(0, 0)" in str(info.value)


# --- prepare_images --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(300, 451), (53, 37), (37, 53), (400, 256)])
def test_prepare_matches_torchvision_style_pipeline(shape):
    arr = _rng_image(*shape) if shape != (300, 451) else load_image(default_image())
    x, crops = prepare_images(arr, Preprocess())
    assert x.dtype == torch.float32 and tuple(x.shape) == (1, 3, 224, 224)
    ref = _reference(Image.fromarray(arr))
    np.testing.assert_allclose(x[0].numpy(), ref, rtol=0, atol=ATOL32)
    # the crop is exactly what the model sees: un-normalising the batch gives it back
    assert crops[0].shape == (224, 224, 3) and crops[0].dtype == np.uint8
    back = (x[0].numpy().transpose(1, 2, 0) * STD + MEAN) * 255
    assert np.abs(back - crops[0]).max() < 1e-3


def test_prepare_matches_torchvision_transforms():
    from torchvision import transforms as T

    pil = Image.open(default_image()).convert("RGB")
    for interp, mode in (("bilinear", T.InterpolationMode.BILINEAR),
                         ("bicubic", T.InterpolationMode.BICUBIC)):
        # torchvision's resize and crop (uint8 PIL, exact), then ToTensor + Normalize in float64
        crop = T.Compose([T.Resize(256, interpolation=mode), T.CenterCrop(224)])(pil)
        x, _ = prepare_images(pil, Preprocess(interpolation=interp))
        np.testing.assert_allclose(x[0].numpy(), _normalize64(np.asarray(crop)), rtol=0,
                                   atol=ATOL32)


def test_prepare_batch_of_mixed_sources(tmp_path):
    Image.fromarray(_rng_image(64, 80)).save(tmp_path / "a.png")
    x, crops = prepare_images([tmp_path / "a.png", str(default_image()), _rng_image(37, 53)],
                              Preprocess(size=(64, 96), resize=None))
    assert tuple(x.shape) == (3, 3, 64, 96) and len(crops) == 3
    assert all(c.shape == (64, 96, 3) for c in crops)


def test_prepare_bgr_gray_and_custom_scale():
    arr = _rng_image(50, 50)
    rgb_recipe = Preprocess(size=(50, 50), resize=None, mean=(0.0,), std=(1.0,), scale=1.0)
    x, _ = prepare_images(arr, rgb_recipe)
    assert np.array_equal(x[0].numpy(), arr.transpose(2, 0, 1).astype(np.float32))
    bgr = Preprocess(size=(50, 50), resize=None, mean=(0.0,), std=(1.0,), scale=1.0, channel_order="BGR")
    xb, crops = prepare_images(arr, bgr)
    assert np.array_equal(xb[0].numpy(), x[0].numpy()[::-1]) and np.array_equal(crops[0], arr)
    g, _ = prepare_images(arr, rgb_recipe, channels=1)
    assert tuple(g.shape) == (1, 1, 50, 50)
    lum = arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(g[0, 0].numpy(), lum, atol=1e-3)


def test_preprocessed_batch_passes_through():
    recipe = Preprocess()
    x, crops = prepare_images([default_image(), _rng_image(300, 300)], recipe)
    y, display = prepare_images(x, recipe)
    assert y.data_ptr() == x.data_ptr()
    for a, b in zip(crops, display):
        assert np.array_equal(a, b)
    z, _ = prepare_images(x.numpy(), recipe)  # a float numpy batch too
    assert torch.equal(z, x)
    wild, shown = prepare_images(torch.full((1, 3, 8, 8), 100.0), recipe)
    assert (shown[0] == 255).all()  # clipped to [0, 255]
    with pytest.raises(InputError, match="channels-last"):
        prepare_images(torch.zeros(1, 8, 8, 3), recipe)


# --- the recipe and its sidecar -------------------------------------------------------------

def test_recipe_round_trip_and_validation():
    recipe = Preprocess(size=(240, 200), resize=None, mean=(0.5, 0.5, 0.5), std=(0.5,),
                        scale=1.0, channel_order="BGR", interpolation="bicubic")
    again = Preprocess.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert again == recipe
    assert Preprocess.from_dict({}) == Preprocess()
    bad = [{"size": (0, 224)}, {"size": "big"}, {"resize": -3}, {"mean": (0.1, 0.2)},
           {"std": (0.0, 1.0, 1.0)}, {"scale": 0}, {"channel_order": "RGBA"},
           {"interpolation": "nearest"}, {"colour": "RGB"}]
    for fields in bad:
        with pytest.raises(InputError):
            Preprocess.from_dict(fields)
    with pytest.raises(InputError, match="colour"):
        Preprocess.from_dict({"colour": "RGB"})


def test_sidecar_round_trip(tmp_path):
    model = tmp_path / "m.onnx"
    assert recipe_path(model) == tmp_path / "m.camonnx.json"
    assert recipe_path(tmp_path / "m.bin") == tmp_path / "m.bin.camonnx.json"
    assert load_recipe(model) == (Preprocess(), None)  # no sidecar: defaults
    recipe = Preprocess(interpolation="bicubic", mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
    labels = ["cat", "dog", "ünïcode"]
    written = save_recipe(model, recipe, labels, {"note": 1})
    assert written == recipe_path(model)
    assert load_recipe(model) == (recipe, labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.camonnx.json"]  # no temp left


def test_corrupt_sidecar_names_the_file(tmp_path):
    model = tmp_path / "m.onnx"
    recipe_path(model).write_text("{ not json")
    with pytest.raises(InputError, match="not valid JSON") as info:
        load_recipe(model)
    assert str(recipe_path(model)) in str(info.value)
    recipe_path(model).write_text(json.dumps({"format": "camonnx-recipe", "preprocess": {"size": -1}}))
    with pytest.raises(InputError, match="invalid") as info:
        load_recipe(model)
    assert str(recipe_path(model)) in str(info.value)


def test_unwritable_sidecar_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="Cannot create the folder .*file"):
        save_recipe(blocker / "m.onnx", Preprocess())
