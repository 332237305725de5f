"""The report's frames: every explanation folder of a run, as CAManim overlays ready for a page.

An *explanation folder* is what :meth:`camonnx.explanation.Explanation.save` writes
(``manifest.json``, ``maps.npz`` and, since the report exists, ``images.npz`` with the RGB crops
the model saw). :func:`load_explanation` reads one back; :func:`view_of` renders, for every image
and layer, the map over the image in both normalisations as :mod:`camonnx.animation` does

    raw maps (L, N, H, W) ──normalize_maps──► local (per layer) and global (per image, over all
    the folder's layers) ──overlay──► JET · 0.5 + image · 0.5 ──JPEG──► base64 data URI

at the image's own size (no upscaling; the page scales it). Extrapolated maps are final (each
already in [0, 1]) and are animated as they are, as ``camonnx animate`` does. A folder without
``images.npz`` (written before it existed, or from a preprocessed tensor) is drawn over grey.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camonnx.errors import InputError

NORMS = ("local", "global")
#: JPEG quality of the frames: about 10 kB per 224×224 overlay (the page of 49 layers and one
#: image, both normalisations, measured 1.38 MB).
JPEG_QUALITY = 85


def is_explanation_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a saved explanation (``manifest.json`` and ``maps.npz``)."""
    return (folder / "manifest.json").is_file() and (folder / "maps.npz").is_file()


def load_explanation(folder: Path):
    """The :class:`~camonnx.explanation.Explanation` saved in ``folder`` (maps, raw maps, logits,
    targets, method, normalisation, options and the RGB crops when stored) and its manifest."""
    from camonnx.explanation import IMAGES_FILE, Explanation, Extrapolation

    manifest = load_json(folder / "manifest.json")
    try:
        with np.load(folder / "maps.npz", allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        images = []
        if (folder / IMAGES_FILE).is_file():
            with np.load(folder / IMAGES_FILE, allow_pickle=False) as npz:
                images = list(npz["images"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"Cannot read the explanation in {folder}: {exc}. Write it again with "
                         f"`camonnx explain --out {folder}`.") from None
    layers = list(manifest.get("layers", []))
    raw = [arrays[f"raw_{i:03d}"] for i in range(len(layers)) if f"raw_{i:03d}" in arrays]
    if "maps" not in arrays or arrays["maps"].ndim != 4 or len(raw) != len(layers):
        raise InputError(f"The explanation in {folder} is incomplete (maps.npz does not match "
                         f"manifest.json). Write it again with `camonnx explain --out {folder}`.")
    options = manifest.get("options", {})
    targets = manifest.get("targets")
    explanation = Explanation(
        maps=arrays["maps"], raw=raw, layers=layers, targets=targets,
        logits=arrays.get("logits", np.zeros((0, 0), np.float32)), method=manifest.get("method", "?"),
        normalize=manifest.get("normalize", "none"), model=manifest.get("model", ""),
        images=images, options=options,
        extrapolation=Extrapolation(bool(options.get("include_input"))) if options.get("extrapolate") else None)
    return explanation, manifest


def load_json(path: Path) -> dict:
    """A run file's JSON object; an :class:`InputError` naming the file when unreadable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read {path}: {exc}. Run the command that wrote it again.") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path} does not hold a JSON object. Run the command that wrote it again.")
    return doc


def data_uri_of_file(path: Path) -> str:
    """An image file (e.g. a ``compare_*.png`` figure) re-encoded as a JPEG data URI."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return data_uri(np.asarray(image.convert("RGB")))
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"Cannot read the image {path}: {exc}. Write it again.") from None


def data_uri(image: np.ndarray, fmt: str = "JPEG") -> str:
    """``image`` (H, W, 3) uint8 encoded (JPEG at :data:`JPEG_QUALITY`, or PNG) as a data URI."""
    from PIL import Image

    buffer = io.BytesIO()
    options = {"quality": JPEG_QUALITY, "optimize": True} if fmt == "JPEG" else {"optimize": True}
    Image.fromarray(np.ascontiguousarray(image, np.uint8)).save(buffer, fmt, **options)
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


@dataclass
class View:
    """One explanation folder, ready for the page: ``label`` names it in the method switch,
    ``frames[n][norm][l]`` is the data URI of image n, layer l; ``classes[n]`` the class label;
    ``size``: the frames' (H, W)."""

    id: str
    label: str
    method: str
    folder: str
    layers: list[str]
    classes: list[str]
    frames: list[dict[str, list[str]]]
    manifest: dict
    size: tuple[int, int] = (0, 0)

    def to_json(self) -> dict:
        return {"id": self.id, "label": self.label, "method": self.method, "folder": self.folder,
                "layers": self.layers, "classes": self.classes, "frames": self.frames}


def view_of(folder: Path, run_dir: Path, index: int, progress: bool = True) -> View:
    """Render the frames of the explanation in ``folder`` (see the module docstring)."""
    from tqdm.auto import tqdm

    from camonnx.animation import _display_image, normalize_maps, unnormalized_maps
    from camonnx.render import overlay

    explanation, manifest = load_explanation(folder)
    raw = unnormalized_maps(explanation)
    L, N, H, W = raw.shape
    normalised = {norm: normalize_maps(raw, norm) for norm in NORMS}
    frames = []
    bar = tqdm(total=L * N * len(NORMS), desc=f"report frames {explanation.method}", unit="frame",
               disable=not progress)
    for n in range(N):
        image = _display_image(explanation, n, (H, W))
        per_norm = {}
        for norm in NORMS:
            per_norm[norm] = [data_uri(overlay(image, normalised[norm][l, n])) for l in range(L)]
            bar.update(L)
        frames.append(per_norm)
    bar.close()
    method = explanation.method + (" + GE" if explanation.extrapolation is not None else "")
    labels = manifest.get("target_labels") or [f"image {n}" for n in range(N)]
    where = "." if folder == run_dir else folder.relative_to(run_dir).as_posix()
    return View(f"v{index}", method, explanation.method, where, list(explanation.layers),
                list(labels), frames, manifest, (H, W))

