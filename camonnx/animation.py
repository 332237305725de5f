"""CAManim (Kaczmarek et al., 2023; docs/pipeline.md#camanim): animate one explanation through every layer.

Every frame comes from ONE all-layer :class:`~camonnx.explanation.Explanation` (one forward and,
for gradient methods, one backward; see :func:`explain_for_animation`); nothing here runs the
model. The pipeline is

    explanation ──unnormalized_maps──► (L, N, H, W) raw maps at the input resolution
                ──normalize_maps─────► local / global min-max
                ──render_frames──────► Frames (uint8 RGB frames + their captions)
                ──write_frames───────► MP4 (H.264) | looping GIF | folder of PNG frames

:func:`animate` does all of it. Deliberate choices, documented:

- ``global`` uses the min and max of the raw, upsampled maps of that image over ALL layers of
  the explanation, even when ``layers=`` / ``every=`` animate only some of them (so early layers
  look dim, the paper's point; pytorch-grad-cam based reference code normalises per layer).
  The layer holding both extremes therefore looks the same in ``local`` and ``global``.
- ``every=K`` animates every K-th selected layer, starting at the first. The held last frame
  always shows the final (deepest) selected layer, so the animation ends on it even when the
  stride skips it.
- Frames keep the model's input resolution (no upscaling): panel(s) of H×W (``both``: local and
  global side by side, a 4-pixel gap) above a caption band. The frame is padded on the right /
  bottom to even dimensions (H.264 with yuv420p needs them) for every format alike.
- Frame counts: the MP4 has a constant frame rate, so the held frame is repeated
  ``round(hold_seconds · fps)`` times (at least once when ``hold_seconds > 0``); the GIF and the
  PNG folder store it once (the GIF with a ``hold_seconds`` duration). Captions make frames
  distinct (the held one says "final layer"); should two consecutive frames still be identical
  (tiny frames whose captions are cut), Pillow's GIF writer merges them and adds their durations.
- Writing is atomic: a temporary file (folder) beside the target, renamed over it at the end; a
  failed or interrupted run leaves neither a partial target nor the temporary behind. An existing
  frames folder is replaced only if it holds nothing but ``frame_*.png`` files.

Extension point (Gradual Extrapolation, docs/methods.md#gradual-extrapolation): pass the option through
:func:`explain_for_animation` (``extrapolate=True``); an explanation whose ``options`` say
``extrapolate`` is animated from its ``maps`` as they are (they are not re-derived from ``raw``),
and its captions name the method "+ GE".
"""

from __future__ import annotations

import logging
import numbers
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np

from camonnx.errors import InputError, unknown_name_error
from camonnx.writer import check_writable, replace_folder, staging_folder, write_file

if TYPE_CHECKING:
    from camonnx.explanation import Explanation

log = logging.getLogger("camonnx")

NORMS = ("local", "global", "both")
#: Output kinds by file extension; anything else that has an extension is an error.
FILE_KINDS = {".mp4": "mp4", ".gif": "gif"}
SUPPORTED = (".mp4 (H.264), .gif (looping) or a folder of PNG frames (a path without extension "
             "or ending in '/')")
FRAME_PATTERN = re.compile(r"frame_\d+\.png")
GAP = 4  # pixels between the local and global panels of `both`
BACKGROUND = (16, 16, 16)
TEXT_COLOURS = ((255, 255, 255), (190, 190, 190), (255, 214, 110))

LayerSelection = Union[None, str, int, Sequence[Union[str, int]]]


# --------------------------------------------------------------------------------------------
# the explanation and its maps
# --------------------------------------------------------------------------------------------
def explain_for_animation(explainer, images, method: str = "gradcam", layers="all", targets=None,
                          *, batch_size: int = 16, seed: int = 0, progress: bool = True,
                          **options) -> "Explanation":
    """The single all-layer explanation an animation is made from: ``explainer.explain`` with
    ``normalize="none"`` (animate normalises). ``options`` go to ``explain`` unchanged (e.g.
    ``extrapolate=True`` for Gradual Extrapolation, whose maps are final)."""
    return explainer.explain(images, method=method, layers=layers, targets=targets,
                             normalize="none", batch_size=batch_size, seed=seed,
                             progress=progress, **options)


def unnormalized_maps(explanation: "Explanation") -> np.ndarray:
    """The (L, N, H, W) float32 maps to normalise: ``explanation.maps`` when it was made with
    ``normalize="none"`` (or is extrapolated: its maps are final), else the native ``raw`` maps
    upsampled again (bilinear, half-pixel centres, as ``explain`` does)."""
    maps = np.asarray(explanation.maps, dtype=np.float32)
    if explanation.normalize == "none" or explanation.extrapolation is not None:
        return maps
    import torch
    import torch.nn.functional as F

    size = tuple(maps.shape[2:])
    up = [F.interpolate(torch.as_tensor(np.asarray(r, np.float32))[:, None], size=size,
                        mode="bilinear", align_corners=False)[:, 0] for r in explanation.raw]
    return torch.stack(up).numpy()


def normalize_maps(maps: np.ndarray, mode: str) -> np.ndarray:
    """Min-max normalise (L, N, H, W) raw maps to [0, 1] (float32, a new array).

    ``local``: per (layer, image). ``global``: per image, one min and max over all L layers.
    A constant map (group) becomes all zeros, never NaN; non-finite values count as 0.
    """
    if mode not in ("local", "global"):
        raise InputError(f"Unknown normalisation {mode!r}: use 'local' or 'global'.")
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if maps.ndim != 4:
        raise InputError(f"maps must be (L, N, H, W); got shape {maps.shape}.")
    axes = (2, 3) if mode == "local" else (0, 2, 3)
    lo = maps.min(axis=axes, keepdims=True)
    rng = maps.max(axis=axes, keepdims=True) - lo
    out = np.zeros_like(maps)
    np.divide(maps - lo, rng, out=out, where=np.broadcast_to(rng > 0, maps.shape))
    return np.clip(out, 0.0, 1.0, out=out)


def select_layers(names: Sequence[str], layers: LayerSelection = None, every: int = 1) -> list[int]:
    """Indices (into ``names``) of the layers to animate, in the explanation's order.

    ``layers``: None or "all" (every layer), a name, an index (negative counts from the end), or
    a list of them; then every ``every``-th of those, starting at the first."""
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise InputError(f"every must be a positive integer, got {every!r}.")
    if layers is None or (isinstance(layers, str) and layers == "all"):
        chosen = list(range(len(names)))
    else:
        keys = [layers] if isinstance(layers, (str, int, np.integer)) else list(layers)
        picked = set()
        for key in keys:
            if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
                if not -len(names) <= key < len(names):
                    raise InputError(f"Layer index {key} is out of range: the explanation has "
                                     f"{len(names)} layers (0-{len(names) - 1}).")
                picked.add(int(key) % len(names))
            elif isinstance(key, str) and key in names:
                picked.add(names.index(key))
            else:
                raise unknown_name_error("layer", str(key), names,
                                         "Choose among explanation.layers.")
        chosen = sorted(picked)
    if not chosen:
        raise InputError("Zero layers selected: an animation needs at least one layer. Give "
                         "layer names or indices from explanation.layers (or None for all).")
    return chosen[::every]


# --------------------------------------------------------------------------------------------
# frames
# --------------------------------------------------------------------------------------------
@dataclass
class Frames:
    """The distinct frames of one animation, each with its caption and on-screen duration.

    ``images``: (h, w, 3) uint8 frames, all one size; ``captions``: the caption lines drawn on
    each frame, joined by newlines (line 1 is the layer name, line 2 its position, the method and
    the normalisation, line 3 the class label); ``layers``: the layer each frame shows;
    ``durations``: seconds on screen; ``hold``: whether the last frame is the held final frame.
    """

    images: list[np.ndarray]
    captions: list[str]
    layers: list[str]
    durations: list[float]
    fps: float
    hold: bool = False
    maps: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of every frame."""
        return tuple(self.images[0].shape[:2]) if self.images else (0, 0)  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.images)

    def repeats(self) -> list[int]:
        """How many times each frame appears in a constant-frame-rate video (MP4)."""
        return [max(1, round(d * self.fps)) for d in self.durations]

    def video_frames(self):
        """The frames of the constant-frame-rate video, the held one repeated."""
        for image, n in zip(self.images, self.repeats()):
            for _ in range(n):
                yield image


def render_frames(explanation: "Explanation", norm: str = "local", layers: LayerSelection = None,
                  every: int = 1, image_index: int = 0, fps: float = 5, hold_seconds: float = 1.0,
                  progress: bool = True) -> Frames:
    """Render the frames of one image's animation (nothing is written).

    ``Frames.maps`` holds the normalised maps of the animated layers ("local" and/or "global",
    each (frames, H, W), the held frame excluded)."""
    from tqdm.auto import tqdm

    from camonnx.render import overlay

    if norm not in NORMS:
        raise InputError(f"Unknown norm {norm!r}: use one of {', '.join(NORMS)}.")
    if isinstance(fps, bool) or not (isinstance(fps, numbers.Real) and np.isfinite(fps) and fps > 0):
        raise InputError(f"fps must be a positive number, got {fps!r}.")
    if isinstance(hold_seconds, bool) or not (isinstance(hold_seconds, numbers.Real)
                                              and np.isfinite(hold_seconds) and hold_seconds >= 0):
        raise InputError(f"hold_seconds must be zero or more, got {hold_seconds!r}.")
    names = list(explanation.layers)
    if not names:
        raise InputError("The explanation has no layers: nothing to animate.")
    n_images = explanation.maps.shape[1]
    if isinstance(image_index, bool) or not isinstance(image_index, (int, np.integer)) or \
            not -n_images <= image_index < n_images:
        raise InputError(f"image_index {image_index!r} is out of range: the explanation has "
                         f"{n_images} image(s).")
    image_index = int(image_index) % n_images
    selected = select_layers(names, layers)
    chosen = select_layers(names, layers, every)

    raw = unnormalized_maps(explanation)[:, image_index:image_index + 1]  # (L, 1, H, W)
    modes = ["local", "global"] if norm == "both" else [norm]
    normalised = {m: normalize_maps(raw, m)[:, 0] for m in modes}  # each (L, H, W)
    H, W = raw.shape[2:]
    image = _display_image(explanation, image_index, (H, W))

    method = explanation.method + (" + GE" if explanation.extrapolation is not None else "")
    norm_text = "local (left) | global (right)" if norm == "both" else norm
    label = explanation.label(image_index)
    total = len(names)
    panel_w = W * len(modes) + GAP * (len(modes) - 1)
    style = _caption_style(panel_w)

    def frame(l: int, final: bool) -> tuple[np.ndarray, str]:
        panels = [overlay(image, normalised[m][l]) for m in modes]
        row = panels[0] if len(panels) == 1 else np.concatenate(
            [panels[0], np.full((H, GAP, 3), BACKGROUND, np.uint8), panels[1]], axis=1)
        where = f"final layer: {l + 1} / {total}" if final else f"layer {l + 1} / {total}"
        lines = [names[l], f"{where} · {method} · {norm_text}", label]
        return _compose(row, lines, style), "\n".join(lines)

    images, captions, shown = [], [], []
    for l in tqdm(chosen, desc="rendering frames", unit="frame", disable=not progress):
        picture, caption = frame(l, final=False)
        images.append(picture)
        captions.append(caption)
        shown.append(names[l])
    durations = [1.0 / fps] * len(images)
    if hold_seconds > 0:
        picture, caption = frame(selected[-1], final=True)  # the final layer, even if strided past
        images.append(picture)
        captions.append(caption)
        shown.append(names[selected[-1]])
        durations.append(float(hold_seconds))
    return Frames(images, captions, shown, durations, float(fps), hold=hold_seconds > 0,
                  maps={m: v[chosen] for m, v in normalised.items()})


def _display_image(explanation: "Explanation", i: int, size: tuple[int, int]) -> np.ndarray:
    """The RGB crop the model saw (grey when the explanation carries none)."""
    if explanation.images and i < len(explanation.images):
        image = np.asarray(explanation.images[i])
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.shape[:2] == size:
            return image[..., :3].astype(np.uint8)
        log.warning("The explanation's image %d is %s, its maps %s: using a grey background.",
                    i, image.shape[:2], size)
    return np.full((*size, 3), 128, np.uint8)


@dataclass(frozen=True)
class _Style:
    font: object
    line_height: int
    pad: int


@lru_cache(maxsize=8)
def _font(size: int):
    """PIL's default font at ``size`` (FreeType, Pillow ≥ 10.1), else its fixed bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, OSError, ImportError):  # old Pillow or no FreeType
        return ImageFont.load_default()


def _caption_style(width: int) -> _Style:
    size = int(np.clip(round(width / 18), 9, 16))
    font = _font(size)
    top, bottom = font.getbbox("Agy|")[1::2]
    return _Style(font, int(bottom - min(top, 0)) + 3, 4)


def _fit(draw, text: str, font, width: int, keep_end: bool) -> str:
    """``text`` shortened until it fits ``width`` pixels: "...tail" with ``keep_end`` (layer
    names: the tail is the informative part), else "head..."."""
    if draw.textlength(text, font=font) <= width:
        return text
    for cut in range(1, len(text)):
        short = "..." + text[cut:] if keep_end else text[:len(text) - cut] + "..."
        if draw.textlength(short, font=font) <= width:
            return short
    return "..."


def _compose(row: np.ndarray, lines: list[str], style: _Style) -> np.ndarray:
    """The panel row above a caption band; padded to even height and width."""
    from PIL import Image, ImageDraw

    h, w = row.shape[:2]
    band_h = 2 * style.pad + len(lines) * style.line_height
    total_h, total_w = h + band_h, w
    total_h += total_h % 2
    total_w += total_w % 2
    canvas = Image.new("RGB", (total_w, total_h), BACKGROUND)
    canvas.paste(Image.fromarray(np.ascontiguousarray(row)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for n, text in enumerate(lines):
        colour = TEXT_COLOURS[min(n, len(TEXT_COLOURS) - 1)]
        fitted = _fit(draw, text, style.font, w - 2 * style.pad, keep_end=n == 0)
        draw.text((style.pad, h + style.pad + n * style.line_height), fitted, fill=colour,
                  font=style.font)
    return np.asarray(canvas)


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------
def output_kind(out: str | os.PathLike) -> str:
    """"mp4", "gif" or "png" (a folder of PNG frames) for an output path; InputError otherwise."""
    text = os.fspath(out)
    path = Path(text)
    if not text.strip():
        raise InputError(f"Empty output path: give {SUPPORTED}.")
    if text.endswith(("/", os.sep)):
        return "png"
    suffix = path.suffix.lower()
    if suffix in FILE_KINDS:
        return FILE_KINDS[suffix]
    if suffix == "" or path.is_dir():
        return "png"
    hint = " For PNG frames give a folder." if suffix == ".png" else ""
    raise InputError(f"Unsupported output {text!r} (extension {suffix!r}): camonnx writes "
                     f"{SUPPORTED}.{hint}")


def check_output(out: str | os.PathLike) -> tuple[str, Path]:
    """Validate an output path before any work: its kind, and that it can be written.

    The nearest existing ancestor of the target's folder must be a writable folder; an existing
    target must be of the right sort (a file for mp4/gif; a folder holding only frame PNGs)."""
    kind = output_kind(out)
    target = Path(out)
    if kind == "png":
        if target.exists() and not target.is_dir():
            raise InputError(f"Cannot write PNG frames to {target}: it is a file. Give a folder.")
        if target.is_dir():
            foreign = [p.name for p in target.iterdir() if not FRAME_PATTERN.fullmatch(p.name)]
            if foreign:
                raise InputError(f"The frames folder {target} already holds other files "
                                 f"({', '.join(sorted(foreign)[:3])}{', ...' if len(foreign) > 3 else ''}); "
                                 "choose a new or empty folder.")
    check_writable(target, folder=kind == "png")
    return kind, target


def write_frames(frames: Frames, out: str | os.PathLike) -> Path:
    """Write ``frames`` atomically as MP4, GIF or a PNG folder (by ``out``); returns the path."""
    kind, target = check_output(out)
    if not frames.images:
        raise InputError("No frames to write.")
    if kind != "png":
        write = _write_mp4 if kind == "mp4" else _write_gif
        return write_file(target, lambda temporary: write(frames, temporary))
    with staging_folder(target.parent) as staging:
        folder = staging / "frames"
        folder.mkdir()
        _write_pngs(frames, folder)
        replace_folder(folder, target)
    return target


def _checked(frames: Frames, images):
    """``images`` one by one, each checked against the first frame's size (writers fail midway
    on a bad frame, and the atomic write then leaves nothing)."""
    shape = frames.images[0].shape
    for n, image in enumerate(images):
        image = np.asarray(image)
        if image.shape != shape or image.dtype != np.uint8 or image.ndim != 3 or shape[2] != 3:
            raise ValueError(f"Frame {n} is {image.dtype} {image.shape}; every frame must be "
                             f"uint8 {shape} RGB.")
        yield image


def _write_mp4(frames: Frames, path: Path) -> None:
    import imageio.v2 as iio2

    # frames are already even-sized: macro_block_size=2 keeps imageio-ffmpeg from resizing them
    writer = iio2.get_writer(path, format="FFMPEG", mode="I", fps=frames.fps, codec="libx264",
                             pixelformat="yuv420p", macro_block_size=2, quality=None,
                             output_params=["-crf", "20", "-movflags", "+faststart"],
                             ffmpeg_log_level="error")
    try:
        for image in _checked(frames, frames.video_frames()):
            writer.append_data(image)
    finally:
        writer.close()


def _write_gif(frames: Frames, path: Path) -> None:
    import imageio.v3 as iio

    durations = [max(20, int(round(d * 1000))) for d in frames.durations]  # ms; players clamp < 20
    stack = np.stack(list(_checked(frames, frames.images)))
    iio.imwrite(path, stack, extension=".gif", plugin="pillow", loop=0, duration=durations)


def _write_pngs(frames: Frames, folder: Path) -> None:
    import imageio.v3 as iio

    digits = max(3, len(str(len(frames.images) - 1)))
    for n, image in enumerate(_checked(frames, frames.images)):
        iio.imwrite(folder / f"frame_{n:0{digits}d}.png", image)


# --------------------------------------------------------------------------------------------
# the public helper
# --------------------------------------------------------------------------------------------
def animate(explanation: "Explanation", out: str | os.PathLike = "camonnx.mp4", norm: str = "local",
            fps: float = 5, layers: LayerSelection = None, every: int = 1, image_index: int = 0,
            hold_seconds: float = 1.0, *, progress: bool = True) -> Path:
    """Animate ``explanation`` through its layers (CAManim) and write ``out``; returns its path.

    ``out``: ``*.mp4`` (H.264), ``*.gif`` (looping) or a folder of ``frame_000.png``... frames.
    ``norm``: "local" (each layer's own min-max), "global" (one min-max over all the
    explanation's layers of the image: early layers look dim) or "both" (side by side).
    ``layers``: None for all, or names / indices of ``explanation.layers``; ``every``: every
    k-th of them. ``image_index``: which image of the explanation. The last frame (the final
    selected layer) holds for ``hold_seconds``. For true global normalisation, explain all
    layers with ``normalize="none"`` (:func:`explain_for_animation`). See the module docstring.
    """
    check_output(out)  # fail fast, before rendering
    frames = render_frames(explanation, norm=norm, layers=layers, every=every,
                           image_index=image_index, fps=fps, hold_seconds=hold_seconds,
                           progress=progress)
    return write_frames(frames, out)


def animation_paths(out: str | os.PathLike | None, images: Sequence[str | os.PathLike],
                    default: str = "camonnx.mp4") -> list[Path]:
    """One output path per image, for the CLI.

    One image: ``out`` itself (default ``camonnx.mp4``). Several images: a folder ``out`` gets
    one ``<image name>.mp4`` per image; a file ``out`` (or the default) becomes
    ``<out stem>-<image name><suffix>`` beside it. Repeated image names get ``-<n>``."""
    target = default if out is None else out
    kind = output_kind(target)
    if len(images) <= 1:
        return [Path(target)]
    stems, seen = [], {}
    for i, image in enumerate(images):
        stem = Path(os.fspath(image)).stem or f"image{i}"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem)
    stems = [f"{s}-{i}" if seen[s] > 1 else s for i, s in enumerate(stems)]
    base = Path(target)
    if kind == "png":
        return [base / f"{s}.mp4" for s in stems]
    return [base.with_name(f"{base.stem}-{s}{base.suffix}") for s in stems]


__all__ = ["Frames", "animate", "animation_paths", "check_output", "explain_for_animation",
           "normalize_maps", "output_kind", "render_frames", "select_layers", "unnormalized_maps",
           "write_frames"]
