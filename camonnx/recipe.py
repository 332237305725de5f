"""A model's preprocessing recipe, and the JSON file that carries it beside the model.

:class:`Preprocess` says how a model wants its images: crop size, shorter-side resize, channel
order, and the per-channel map ``(v * scale - mean) / std`` of a uint8 pixel ``v``. The recipe
travels with the model in a sidecar beside the ``.onnx`` file (:func:`recipe_path`), written by
``camonnx export`` and ``camonnx recipe`` and read when a model loads. This module needs neither
torch nor PIL, so the command line can name presets without loading them.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from camonnx.errors import InputError
from camonnx.writer import write_text

if TYPE_CHECKING:
    import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Format tag and version written into every sidecar.
SIDECAR_FORMAT = "camonnx-recipe"
SIDECAR_VERSION = 1
_SUFFIX = ".camonnx.json"
#: PIL resampling filters a recipe may name.
INTERPOLATIONS = ("bilinear", "bicubic")
#: Floats this far outside [0, 1] are still accepted (and clipped): resampling overshoot.


# --- the recipe ------------------------------------------------------------------------------

@dataclass
class Preprocess:
    """How a model wants its images.

    ``size``: (H, W) fed to the model. ``resize``: the shorter side is resized to this before a
    centre crop to ``size`` (torchvision's ``Resize(resize)`` + ``CenterCrop(size)``); ``None``
    resizes straight to ``size`` (aspect ratio not kept). ``scale`` maps uint8 to the range
    ``mean``/``std`` are given in (1/255: [0, 1]); then ``(x * scale - mean) / std`` per channel,
    in the model's ``channel_order``. ``interpolation``: PIL's ``bilinear`` or ``bicubic``
    (PIL resizes with antialiasing, as torchvision does on PIL images).

    Deviation from torchvision, documented: when ``size`` is not square and the resized image
    would be smaller than the crop in one dimension, the image is scaled up just enough to cover
    the crop instead of being padded with black (padding would put fake edges under the CAMs).
    """

    size: tuple[int, int] = (224, 224)
    resize: int | None = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    scale: float = 1 / 255
    channel_order: str = "RGB"
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        self.size = _pair("size", self.size)
        if self.resize is not None:
            self.resize = _positive_int("resize", self.resize)
        self.mean = _floats("mean", self.mean)
        self.std = _floats("std", self.std)
        if any(s == 0 for s in self.std):
            raise InputError(f"Preprocess std {self.std} contains 0: every std must be non-zero.")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) \
                or not math.isfinite(self.scale) or self.scale <= 0:
            raise InputError(f"Preprocess scale must be a positive number (1/255 for inputs in "
                             f"[0, 1], 1.0 for [0, 255]), got {self.scale!r}.")
        self.scale = float(self.scale)
        if self.channel_order not in ("RGB", "BGR"):
            raise InputError(f"Preprocess channel_order must be 'RGB' or 'BGR', "
                             f"got {self.channel_order!r}.")
        if self.interpolation not in INTERPOLATIONS:
            raise InputError(f"Preprocess interpolation must be 'bilinear' or 'bicubic', "
                             f"got {self.interpolation!r}.")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        d["size"], d["mean"], d["std"] = list(self.size), list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocess":
        """The recipe from :meth:`to_dict`'s output; missing keys take the defaults.

        An unknown key or a bad value is an :class:`InputError` naming it."""
        if not isinstance(data, dict):
            raise InputError(f"A preprocessing recipe must be a JSON object, got {type(data).__name__}.")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"Unknown preprocessing field(s) {', '.join(map(repr, unknown))}; "
                             f"known fields: {', '.join(sorted(known))}.")
        return cls(**data)

    def channel_stats(self, channels: int) -> tuple["np.ndarray", "np.ndarray"]:
        """mean and std as float32 arrays of length ``channels`` (a single value is broadcast)."""
        import numpy as np

        out = []
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) == 1:
                values = values * channels
            elif len(values) != channels:
                if channels == 1:  # luminance model with an RGB recipe: use the mean of the three
                    values = (sum(values) / len(values),)
                else:
                    raise InputError(f"The recipe's {name} has {len(values)} values but the model "
                                     f"takes {channels} channels: give one value or {channels}.")
            out.append(np.asarray(values, dtype=np.float32))
        return out[0], out[1]


def _pair(name: str, value) -> tuple[int, int]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InputError(f"Preprocess {name} must be (height, width), got {value!r}.")
    return (_positive_int(name, value[0]), _positive_int(name, value[1]))


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, float)) \
            or not float(value).is_integer() or value <= 0:
        raise InputError(f"Preprocess {name} must be a positive integer, got {value!r}.")
    return int(value)


def _floats(name: str, value) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    try:
        out = tuple(float(v) for v in value if not isinstance(v, bool))
        ok = len(out) == len(value) and len(out) in (1, 3) and all(map(math.isfinite, out))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"Preprocess {name} must be 1 or 3 finite numbers (one per channel), "
                         f"got {value!r}.")
    return out


# --- the sidecar -----------------------------------------------------------------------------

def recipe_path(model_path: str | os.PathLike) -> Path:
    """The sidecar of a model: ``model.onnx`` → ``model.camonnx.json`` in the same folder
    (a name without the ``.onnx`` extension gets ``.camonnx.json`` appended)."""
    path = Path(model_path)
    if path.suffix.lower() == ".onnx":
        return path.with_suffix(_SUFFIX)
    return path.with_name(path.name + _SUFFIX)


def save_recipe(model_path: str | os.PathLike, recipe: Preprocess, labels: Sequence[str] | None = None,
                extra: dict | None = None) -> Path:
    """Write the model's sidecar atomically (a temp file in the same folder, then a rename).

    ``labels``: the class names in output order; ``extra``: any JSON-serialisable notes (which
    model, exporter, package versions). Returns the sidecar's path."""
    if labels is not None:
        labels = list(labels)
        if not all(isinstance(label, str) for label in labels):
            raise InputError("Labels must be a list of strings (class names in output order).")
    doc = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "preprocess": recipe.to_dict(),
           "labels": labels, "extra": extra or {}}
    try:
        text = json.dumps(doc, indent=1, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InputError(f"The recipe's extra data is not JSON-serialisable: {exc}.") from None
    target = recipe_path(model_path)
    return write_text(target, text + "\n")


def load_sidecar(model_path: str | os.PathLike) -> dict | None:
    """The model's sidecar as a dict (``format``, ``version``, ``preprocess``, ``labels``,
    ``extra``), or ``None`` when there is none. A corrupt sidecar is an :class:`InputError`."""
    path = recipe_path(model_path)
    if not path.is_file():
        return None
    fix = f"Fix or delete {str(path)!r} (camonnx then uses default preprocessing), or re-export the model."
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"The recipe file {str(path)!r} is not valid JSON ({exc}). {fix}") from None
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
        raise InputError(f"{str(path)!r} is not a camonnx recipe (no \"format\": "
                         f"\"{SIDECAR_FORMAT}\"). {fix}")
    return doc


def load_recipe(model_path: str | os.PathLike) -> tuple[Preprocess, list[str] | None]:
    """The model's :class:`Preprocess` and class labels from its sidecar; ``(Preprocess(), None)``
    when there is no sidecar. A corrupt sidecar is an :class:`InputError` naming the file."""
    doc = load_sidecar(model_path)
    if doc is None:
        return Preprocess(), None
    path = recipe_path(model_path)
    try:
        recipe = Preprocess.from_dict(doc.get("preprocess") or {})
    except (InputError, TypeError) as exc:
        raise InputError(f"The recipe file {str(path)!r} is invalid: {exc} Fix or delete it.") from None
    labels = doc.get("labels")
    if labels is not None and (not isinstance(labels, list)
                               or not all(isinstance(label, str) for label in labels)):
        raise InputError(f"The recipe file {str(path)!r} is invalid: \"labels\" must be a list of "
                         "strings. Fix or delete it.")
    return recipe, labels
