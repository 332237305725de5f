"""The result of :meth:`Explainer.explain`: maps of every layer, with what produced them."""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


#: ``Explanation.normalize`` of extrapolated maps: Gradual Extrapolation's last step scales each
#: map to [0, 1] itself (min 0 and max 1 exactly, or all zeros), and the requested
#: normalisation is not applied.
EXTRAPOLATED = "extrapolated"
#: The file of :meth:`Explanation.save` holding the RGB crops (array ``images``, (N, H, W, 3) uint8).
IMAGES_FILE = "images.npz"


@dataclass(frozen=True)
class Extrapolation:
    """How the maps were sharpened by Gradual Extrapolation (docs/methods.md#gradual-extrapolation):
    ``include_input``: whether the last step went through the input image itself."""

    include_input: bool = False


@dataclass
class Explanation:
    """Maps for L layers and N images.

    ``maps``: (L, N, H, W) float32 at the input resolution, normalised as ``normalize`` says;
    ``raw``: per layer, the (N, h, w) unnormalised map at the layer's native resolution;
    ``layers``: the layer names (topological order); ``targets``: the class index per image
    (None for a function target); ``logits``: (N, classes); ``images``: the RGB crops the model saw.
    ``normalize``: "local", "global" or "none" as asked, or ``"extrapolated"`` (:data:`EXTRAPOLATED`)
    when the maps are Gradual Extrapolation's, each already in [0, 1], whatever was asked;
    ``extrapolation``: how they were extrapolated (:class:`Extrapolation`), None for plain maps.
    ``options``: the seed and the method's options.
    """

    maps: np.ndarray
    raw: list[np.ndarray]
    layers: list[str]
    targets: list[int] | None
    logits: np.ndarray
    method: str
    normalize: str
    model: str
    images: list[np.ndarray] = field(repr=False, default_factory=list)
    labels: list[str] | None = field(repr=False, default=None)
    options: dict = field(default_factory=dict)
    extrapolation: Extrapolation | None = None

    def __getitem__(self, layer: str | int) -> np.ndarray:
        """The (N, H, W) maps of one layer, by name or index."""
        if isinstance(layer, str):
            if layer not in self.layers:
                from camonnx.errors import unknown_name_error
                raise unknown_name_error("layer", layer, self.layers, "See explanation.layers.")
            layer = self.layers.index(layer)
        return self.maps[layer]

    def label(self, i: int) -> str:
        """Human-readable target of image ``i``: class name when known, else the index."""
        if self.targets is None:
            return "custom target"
        cls = self.targets[i]
        if self.labels and 0 <= cls < len(self.labels):
            return f"{self.labels[cls]} ({cls})"
        return f"class {cls}"

    def save(self, directory: str | os.PathLike, overlays: bool = True) -> Path:
        """Write ``maps.npz`` (maps, raw maps, logits, targets), ``images.npz`` (``images``: the
        (N, H, W, 3) uint8 RGB crops the model saw, when the explanation has them),
        ``manifest.json`` and, with ``overlays``, one PNG per image and layer (JET blended with
        the image). The files are
        written to a hidden staging folder inside ``directory`` and moved into place only once
        all are complete (:mod:`camonnx.writer`)."""
        import imageio.v3 as iio

        from camonnx.render import overlay
        from camonnx.writer import publish, staging_folder

        target = Path(directory)
        with staging_folder(target) as staging:  # creates ``target`` if need be
            arrays = {"maps": self.maps, "logits": self.logits,
                      "targets": np.asarray(self.targets if self.targets is not None else [], np.int64)}
            arrays.update({f"raw_{i:03d}": r for i, r in enumerate(self.raw)})
            np.savez_compressed(staging / "maps.npz", **arrays)
            written = ["maps.npz", "manifest.json"]
            if self.images:  # the RGB crops the model saw: the report draws its frames on them
                np.savez_compressed(staging / IMAGES_FILE, images=np.stack(
                    [np.asarray(image, np.uint8) for image in self.images]))
                written.insert(0, IMAGES_FILE)
            if overlays and self.images:
                for n, image in enumerate(self.images):
                    for l, name in enumerate(self.layers):
                        filename = f"image{n:02d}_layer{l:03d}_{_slug(name)}.png"
                        iio.imwrite(staging / filename, overlay(image, self.maps[l, n]))
                        written.append(filename)
            (staging / "manifest.json").write_text(json.dumps(self.manifest(written), indent=2))
            publish(staging, target, written)
        return target

    def manifest(self, files: list[str] | None = None) -> dict:
        import camonnx
        import onnxruntime
        import torch

        return {
            "model": self.model, "method": self.method, "normalize": self.normalize,
            "layers": self.layers, "targets": self.targets,
            "target_labels": [self.label(i) for i in range(self.maps.shape[1])],
            "shape": list(self.maps.shape), "options": _jsonable(self._listed_options()),
            "files": files or [],
            "versions": {"camonnx": camonnx.__version__, "python": platform.python_version(),
                         "torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        }

    def _listed_options(self) -> dict:
        """The manifest's options: the seed, Gradual Extrapolation's ``extrapolate`` and
        ``include_input`` (from :attr:`extrapolation`), then the method's options."""
        seed = {key: self.options[key] for key in ("seed",) if key in self.options}
        ge = self.extrapolation
        return {**seed, "extrapolate": ge is not None,
                "include_input": ge is not None and ge.include_input,
                **{key: value for key, value in self.options.items() if key not in seed}}


def _jsonable(value):
    """Options for the manifest: arrays and tensors are summarised by shape and dtype."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        if getattr(value, "ndim", 1) == 0:
            return value.item()
        return {"array": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "layer"
