"""Image loading and preparation.

``load_image`` turns a path, a PIL image or a numpy array into one canonical form: a uint8
(H, W, 3) RGB array. ``prepare_images`` applies a model's :class:`Preprocess` recipe to one image
or a list (resize the shorter side, centre crop, scale, normalise) and returns the (N, C, H, W)
float32 batch together with the uint8 RGB crops exactly as the model sees them (for overlays).

The recipe itself, and the file that carries it beside the model, are :mod:`camonnx.recipe`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from camonnx.errors import InputError
from camonnx.recipe import Preprocess

_INTERPOLATION = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
_FLOAT_TOLERANCE = 1e-3


# --- loading one image -----------------------------------------------------------------------

def _describe(src) -> str:
    if isinstance(src, (str, os.PathLike)):
        return f"image file {os.fspath(src)!r}"
    if isinstance(src, Image.Image):
        return f"PIL image (mode {src.mode}, size {src.size[0]}x{src.size[1]})"
    if isinstance(src, np.ndarray):
        return f"image array of shape {src.shape} and dtype {src.dtype}"
    return f"input of type {type(src).__name__}"


def load_image(src) -> np.ndarray:
    """One image as a uint8 (H, W, 3) RGB array.

    ``src``: a path (str or Path), a PIL image, or a numpy array (H, W), (H, W, 1), (H, W, 3)
    or (H, W, 4) of uint8, uint16 or float in [0, 1] (other integer types must hold values in
    0–255 or 0–65535). Grayscale is expanded to three equal channels; an alpha channel (RGBA,
    LA, palette transparency) is composited onto a **white** background; 16-bit values are scaled
    to 8 bits (v / 257, rounded); a file's EXIF orientation is applied. Anything unusable (a
    missing file, a directory, a non-image or truncated file, a zero-size image, an array of
    the wrong shape) raises :class:`InputError` naming the input and the fix.
    """
    if isinstance(src, (str, os.PathLike)):
        return _from_pil(_open(Path(src)), _describe(src))
    if isinstance(src, Image.Image):
        name = _describe(src)
        try:
            src.load()
        except Exception as exc:  # lazily opened file that turns out broken
            raise InputError(f"The {name} cannot be decoded: {exc}. Re-save the image.") from None
        return _from_pil(_exif_transpose(src), name)
    if isinstance(src, torch.Tensor):
        raise InputError(f"A torch.Tensor of shape {tuple(src.shape)} is not an image file or "
                         "array: pass a preprocessed (N, C, H, W) batch to prepare_images as is, "
                         "or a (H, W, 3) numpy array.")
    if isinstance(src, np.ndarray):
        return _from_array(src, _describe(src))
    raise InputError(f"Cannot read an image from {_describe(src)}: give a file path, a PIL image "
                     "or a numpy array (H, W[, 1|3|4]).")


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise InputError(f"Image file {str(path)!r} does not exist. Check the path (it is "
                         f"relative to {os.getcwd()!r}).")
    if path.is_dir():
        raise InputError(f"{str(path)!r} is a directory, not an image file. Give the path of one "
                         "image (PNG, JPEG, …), or list the files you want.")
    try:
        with Image.open(path) as img:
            img.load()
            return _exif_transpose(img)
    except PermissionError:
        raise InputError(f"Image file {str(path)!r} is not readable: check its permissions.") from None
    except UnidentifiedImageError:
        raise InputError(f"{str(path)!r} is not an image file Pillow can read (it may be another "
                         "format despite its extension). Give a PNG, JPEG, BMP, TIFF, WebP, … "
                         "image.") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"Image file {str(path)!r} is too large to decode safely ({exc}). "
                         "Downscale it first.") from None
    except Exception as exc:  # truncated data, broken chunks, decoder errors
        raise InputError(f"Image file {str(path)!r} is damaged or truncated and cannot be "
                         f"decoded ({type(exc).__name__}: {exc}). Re-save or re-download it.") from None


def _exif_transpose(img: Image.Image) -> Image.Image:
    """A copy of ``img`` rotated/flipped upright per its EXIF orientation tag."""
    try:
        out = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block: keep the pixels as stored
        out = None
    return out if out is not None and out is not img else img.copy()


def _from_pil(img: Image.Image, name: str) -> np.ndarray:
    if img.width == 0 or img.height == 0:
        raise InputError(f"The {name} has zero size: give an image with at least one pixel.")
    mode = img.mode
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        return _from_array(arr if arr.max(initial=0) <= 1.0 else arr / 255.0, name)
    if mode.startswith("I"):  # I;16, I;16B, I;16L, I (16-bit PNG/TIFF): treat as 16-bit
        arr = np.asarray(img)
        return _from_array(np.clip(arr.astype(np.int64), 0, 65535).astype(np.uint16), name)
    if mode not in ("L", "RGB", "RGBA"):  # P, PA, LA, La, RGBa, 1, CMYK, YCbCr, …
        alpha = mode in ("LA", "La", "PA", "RGBa") or (mode == "P" and "transparency" in img.info)
        try:
            img = img.convert("RGBA" if alpha else "RGB")
        except Exception as exc:
            raise InputError(f"The {name} has a pixel format camonnx cannot convert to RGB "
                             f"({exc}). Save it as an 8-bit RGB PNG or JPEG.") from None
    return _from_array(np.asarray(img), name)


def _from_array(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.size == 0:
        raise InputError(f"The {name} is empty (zero size): give an image with at least one pixel.")
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
        raise InputError(f"The {name} looks channels-first (C, H, W); images are (H, W, C): "
                         "pass arr.transpose(1, 2, 0).")
    if arr.ndim == 4:
        raise InputError(f"The {name} is 4-D: pass a preprocessed float batch (N, C, H, W) to "
                         "prepare_images directly, or one image (H, W[, C]) at a time.")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3, 4))):
        raise InputError(f"The {name} is not an image: expected (H, W), (H, W, 1), (H, W, 3) "
                         "or (H, W, 4).")
    rgb = _to_uint8(arr, name)
    if rgb.ndim == 2:
        rgb = rgb[:, :, None]
    if rgb.shape[-1] == 1:
        return np.ascontiguousarray(np.repeat(rgb, 3, axis=-1))
    if rgb.shape[-1] == 4:  # composite onto white
        alpha = rgb[:, :, 3:4].astype(np.float32) / 255.0
        out = rgb[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.round(out), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb)


def _to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return np.round(arr / 257.0).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 255:
            return arr.astype(np.uint8)
        if lo >= 0 and hi <= 65535:
            return np.round(arr / 257.0).astype(np.uint8)
        raise InputError(f"The {name} holds values in [{lo}, {hi}]: integer images must be "
                         "8-bit (0–255) or 16-bit (0–65535).")
    if np.issubdtype(arr.dtype, np.floating):
        values = arr.astype(np.float64)
        if not np.isfinite(values).all():
            raise InputError(f"The {name} holds NaN or infinite values.")
        lo, hi = float(values.min()), float(values.max())
        if lo < -_FLOAT_TOLERANCE or hi > 1 + _FLOAT_TOLERANCE:
            raise InputError(f"The {name} holds values in [{lo:g}, {hi:g}]: float images must be "
                             "in [0, 1]. Divide by 255 (or pass uint8); for a preprocessed batch "
                             "pass a 4-D (N, C, H, W) tensor.")
        return np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise InputError(f"The {name} has an unsupported dtype: use uint8, uint16 or float in [0, 1].")


# --- preprocessing a batch -------------------------------------------------------------------

def prepare_images(images, recipe: Preprocess, channels: int = 3) -> tuple[torch.Tensor, list[np.ndarray]]:
    """The (N, C, H, W) float32 batch for the model, and each image's uint8 (H, W, 3) RGB crop.

    ``images``: one image or a list of them (anything :func:`load_image` takes). A
    ``torch.Tensor`` or floating numpy array that is already 4-D (N, C, H, W) is treated as
    preprocessed and returned as is (as a float32 tensor); its display crops come from undoing
    the recipe's normalisation, clipped to [0, 255]. A 3-D tensor (C, H, W) is one preprocessed
    image. An integer 4-D numpy array is a stack of (H, W, C) images.
    With ``channels=1`` the batch holds the luminance (0.299 R + 0.587 G + 0.114 B); the crops
    stay RGB.
    """
    if isinstance(images, torch.Tensor) or (
            isinstance(images, np.ndarray) and images.ndim == 4 and np.issubdtype(images.dtype, np.floating)):
        return _preprocessed(images, recipe, channels)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) == 0:
        raise InputError("No images were given: pass at least one image path, PIL image or array.")
    if channels not in (1, 3):
        raise InputError(f"camonnx prepares 1-channel (luminance) or 3-channel images; the model "
                         f"takes {channels} channels. Pass a preprocessed (N, {channels}, H, W) tensor.")
    mean, std = recipe.channel_stats(channels)
    batch, crops = [], []
    for i, src in enumerate(images):
        try:
            rgb = load_image(src)
        except InputError as exc:
            if len(images) == 1:
                raise
            raise InputError(f"Image {i} of {len(images)}: {exc}") from None
        crop = _resize_crop(rgb, recipe)
        crops.append(crop)
        batch.append(_normalise(crop, recipe, channels, mean, std))
    return torch.from_numpy(np.stack(batch)), crops


def _resize_crop(rgb: np.ndarray, recipe: Preprocess) -> np.ndarray:
    """Resize (shorter side → ``resize``) and centre crop to ``size``, torchvision-style."""
    out_h, out_w = recipe.size
    h, w = rgb.shape[:2]
    resample = _INTERPOLATION[recipe.interpolation]
    img = Image.fromarray(rgb)
    if recipe.resize is None:
        if (h, w) != (out_h, out_w):
            img = img.resize((out_w, out_h), resample)
        return np.asarray(img).copy()
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = recipe.resize, int(recipe.resize * long / short)
    new_h, new_w = (new_short, new_long) if h <= w else (new_long, new_short)
    if new_h < out_h or new_w < out_w:  # cover the crop rather than pad (see Preprocess)
        factor = max(out_h / h, out_w / w)
        new_h, new_w = max(out_h, math.ceil(h * factor)), max(out_w, math.ceil(w * factor))
    if (new_h, new_w) != (h, w):
        img = img.resize((new_w, new_h), resample)
    top = int(round((new_h - out_h) / 2.0))
    left = int(round((new_w - out_w) / 2.0))
    return np.asarray(img)[top:top + out_h, left:left + out_w].copy()


def _normalise(crop: np.ndarray, recipe: Preprocess, channels: int, mean: np.ndarray,
               std: np.ndarray) -> np.ndarray:
    x = crop.astype(np.float32)
    if channels == 1:
        x = (x @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]
    elif recipe.channel_order == "BGR":
        x = x[:, :, ::-1]
    x = (x * np.float32(recipe.scale) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def _preprocessed(x, recipe: Preprocess, channels: int) -> tuple[torch.Tensor, list[np.ndarray]]:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise InputError(f"A preprocessed tensor must be (N, C, H, W) or (C, H, W), got shape "
                         f"{tuple(x.shape)}.")
    if not (x.is_floating_point()):
        raise InputError(f"A preprocessed tensor must be floating point, got {x.dtype}. Pass "
                         "uint8 images as numpy arrays (H, W, 3) to have them preprocessed.")
    if x.shape[0] == 0:
        raise InputError("The preprocessed batch is empty (N = 0).")
    if x.shape[1] != channels:
        hint = (" It looks channels-last (N, H, W, C): pass x.permute(0, 3, 1, 2)."
                if x.shape[-1] == channels else "")
        raise InputError(f"The preprocessed batch has shape {tuple(x.shape)} but the model takes "
                         f"{channels} channels in (N, C, H, W).{hint}")
    x = x.float()
    return x, _display(x, recipe, channels)


def _display(x: torch.Tensor, recipe: Preprocess, channels: int) -> list[np.ndarray]:
    """Undo the normalisation: uint8 (H, W, 3) RGB per image, clipped to [0, 255]."""
    mean, std = recipe.channel_stats(channels)
    arr = x.detach().cpu().numpy().astype(np.float64)
    arr = (arr * std[None, :, None, None] + mean[None, :, None, None]) / recipe.scale
    # non-finite values (refused by the explainer's input check) must not warn in the cast
    arr = np.clip(np.round(np.nan_to_num(arr)), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    if channels == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif recipe.channel_order == "BGR":
        arr = arr[..., ::-1]
    return [np.ascontiguousarray(a) for a in arr]


__all__ = ["load_image", "prepare_images"]
