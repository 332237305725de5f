"""Named preprocessing presets, class-name files, and the recipe a model load uses.

A model expects its images prepared the way it was trained. The common conventions, as
:class:`~camonnx.recipe.Preprocess` recipes (each maps a uint8 pixel ``v`` to
``(v * scale - mean) / std`` per channel, in the model's channel order):

``torchvision``
    PyTorch/torchvision ImageNet models: RGB, ``scale`` 1/255, ImageNet ``mean`` (0.485, 0.456,
    0.406) and ``std`` (0.229, 0.224, 0.225); shorter side resized to 256, centre crop 224×224,
    bilinear. camonnx assumes it for a model without a recipe file.
``tf``
    Keras/TensorFlow "tf" mode (``keras.applications.imagenet_utils.preprocess_input(x,
    mode="tf")``, used by MobileNet, MobileNetV2, ResNetV2, …): RGB, ``v / 127.5 - 1`` so inputs
    lie in [-1, 1] (``scale`` 1/127.5, ``mean`` 1, ``std`` 1); 224×224 from the central 87.5 %
    (shorter side 256), bilinear, as TF-slim's evaluation preprocessing crops.
``caffe``
    Caffe-trained models and Keras "caffe" mode (VGG16/19, ResNet50 of ``keras.applications``):
    **BGR**, no scaling (0–255), minus the ImageNet mean pixel in BGR order (103.939, 116.779,
    123.68), ``std`` 1; shorter side 256, centre crop 224×224 (Caffe's ImageNet models were
    trained on 256-pixel images with 224 crops), bilinear.
``inception``
    Inception v3/v4, Inception-ResNet-v2 and Xception (Keras and TF-slim): the ``tf`` values
    ([-1, 1]) at 299×299, cropped from the central 87.5 % like TF-slim's
    ``preprocess_for_eval`` (``central_fraction=0.875``): shorter side 342 (= 299 / 0.875,
    rounded), centre crop 299×299, bilinear.

Where the originals warp (TF-slim crops 87.5 % of each side, then resizes to a square; Keras
examples resize straight to the input size), these presets keep the aspect ratio with a
shorter-side resize and a centre crop, as torchvision does; for a square photo the two agree.
A model with a fixed input size keeps the preset's crop fraction at its own size, so ``tf`` and
``inception`` differ only for models that take any size.

Class names come from a text file, one name per line in the model's output order
(:func:`read_labels`). :func:`choose_recipe` decides what a model load uses: the explicit
preprocessing and labels if given, else the recipe file beside the model, else ``torchvision``
(and :func:`warn_assumed_recipe` says so).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from camonnx.errors import InputError, unknown_name_error
from camonnx.recipe import IMAGENET_MEAN, IMAGENET_STD, Preprocess, load_recipe, recipe_path

if TYPE_CHECKING:
    from camonnx.graph import ModelGraph

log = logging.getLogger("camonnx")

#: Keras' "caffe"-mode mean pixel, in BGR order (ImageNet, 0–255).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

PRESETS: dict[str, Preprocess] = {
    "torchvision": Preprocess(size=(224, 224), resize=256, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                              scale=1 / 255, channel_order="RGB", interpolation="bilinear"),
    "tf": Preprocess(size=(224, 224), resize=256, mean=(1.0, 1.0, 1.0), std=(1.0, 1.0, 1.0),
                     scale=1 / 127.5, channel_order="RGB", interpolation="bilinear"),
    "caffe": Preprocess(size=(224, 224), resize=256, mean=CAFFE_MEAN_BGR, std=(1.0, 1.0, 1.0),
                        scale=1.0, channel_order="BGR", interpolation="bilinear"),
    "inception": Preprocess(size=(299, 299), resize=342, mean=(1.0, 1.0, 1.0), std=(1.0, 1.0, 1.0),
                            scale=1 / 127.5, channel_order="RGB", interpolation="bilinear"),
}
#: What camonnx assumes without a recipe file (``Preprocess()``'s defaults are the same values).
DEFAULT_PRESET = "torchvision"


def preset(name: str) -> Preprocess:
    """The :class:`Preprocess` of preset ``name`` (see the module docstring)."""
    if name not in PRESETS:
        raise unknown_name_error("preset", str(name), PRESETS, f"Known presets: {', '.join(PRESETS)}.")
    return PRESETS[name]


def with_overrides(base: Preprocess, **fields) -> Preprocess:
    """``base`` with the given fields replaced (``resize=None``: resize straight to ``size``);
    the result is validated like any :class:`Preprocess` (an :class:`InputError` names a bad
    value)."""
    unknown = sorted(set(fields) - set(Preprocess.__dataclass_fields__))
    if unknown:
        raise InputError(f"Unknown preprocessing field(s) {', '.join(unknown)}; known fields: "
                         f"{', '.join(Preprocess.__dataclass_fields__)}.")
    return replace(base, **fields)


def describe(recipe: Preprocess) -> str:
    """One line for people: channel order, the formula with its numbers, resize and crop."""
    scale = "x" if recipe.scale == 1 else f"x/{1 / recipe.scale:.6g}"
    numbers = lambda values: ", ".join(f"{v:.6g}" for v in values)  # noqa: E731
    h, w = recipe.size
    geometry = (f"shorter side {recipe.resize}, centre crop {h}×{w}" if recipe.resize
                else f"resized to {h}×{w}")
    return (f"{recipe.channel_order}, ({scale} − mean) / std with mean ({numbers(recipe.mean)}) "
            f"and std ({numbers(recipe.std)}), {geometry}, {recipe.interpolation}")


# --- class names -----------------------------------------------------------------------------

def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names from a UTF-8 text file, one per line, line 1 naming class 0.

    Surrounding whitespace is stripped and trailing blank lines are ignored; a blank line
    before the last name, an empty, missing or unreadable file is an :class:`InputError`."""
    path = Path(path)
    name = str(path)
    fix = "Give a UTF-8 text file with one class name per line, in the model's output order."
    if path.is_dir():
        raise InputError(f"{name!r} is a directory, not a labels file. {fix}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"The labels file {name!r} does not exist. {fix}") from None
    except PermissionError:
        raise InputError(f"The labels file {name!r} is not readable: check its permissions.") from None
    except UnicodeDecodeError:
        raise InputError(f"The labels file {name!r} is not UTF-8 text. {fix}") from None
    except OSError as exc:
        raise InputError(f"Cannot read the labels file {name!r}: {exc.strerror or exc}.") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise InputError(f"The labels file {name!r} holds no class names. {fix}")
    if "" in lines:
        line = lines.index("") + 1
        raise InputError(f"Line {line} of the labels file {name!r} is blank: line i names class "
                         f"i − 1, so every line up to the last must hold a name. {fix}")
    return lines


def class_count(graph: "ModelGraph") -> int | None:
    """The number of classes of the model's class output, ``None`` where shape inference could
    not tell."""
    shape = graph.class_shape
    if shape is None or graph.class_problem is not None:
        return None
    count = 1
    for dim in shape[1:]:
        count *= int(dim)
    return count


def _check_count(labels: list[str], graph: "ModelGraph", source: str, fix: str) -> list[str]:
    classes = class_count(graph)
    if classes is not None and len(labels) != classes:
        raise InputError(f"{source} {len(labels)} class names but the model's class output "
                         f"{graph.output!r} has {classes} classes. {fix}")
    return labels


# --- the recipe of one model load ------------------------------------------------------------

def choose_recipe(model_path: str | os.PathLike, preprocess: Preprocess | str | None,
                  labels: Sequence[str] | str | os.PathLike | None,
                  graph: "ModelGraph") -> tuple[Preprocess, list[str] | None, bool]:
    """(recipe, labels, assumed) for loading the model at ``model_path``.

    ``preprocess``: a :class:`Preprocess`, a preset name, or ``None`` for the model's recipe
    file, else the ``torchvision`` preset. ``labels``: class names, a labels file
    (:func:`read_labels`), or ``None`` for the recipe file's. ``assumed`` is true when neither
    the caller nor a recipe file said how to preprocess. Labels whose count differs from the
    model's classes (where known) are an :class:`InputError`."""
    if isinstance(preprocess, str):
        preprocess = preset(preprocess)
    elif preprocess is not None and not isinstance(preprocess, Preprocess):
        raise InputError(f"preprocess must be a Preprocess or a preset name ({', '.join(PRESETS)}), "
                         f"got {type(preprocess).__name__}.")
    stored, stored_labels = (None, None)
    has_sidecar = recipe_path(model_path).is_file()
    if has_sidecar and (preprocess is None or labels is None):
        stored, stored_labels = load_recipe(model_path)
    recipe = preprocess or stored or preset(DEFAULT_PRESET)
    if labels is None:
        if stored_labels is not None:
            fix = (f"Fix or delete {str(recipe_path(model_path))!r}, or rewrite it with "
                   "`camonnx recipe MODEL --force --labels FILE`.")
            stored_labels = _check_count(stored_labels, graph,
                                         f"The recipe file {str(recipe_path(model_path))!r} holds", fix)
        return recipe, stored_labels, preprocess is None and not has_sidecar
    if isinstance(labels, (str, os.PathLike)):
        names = read_labels(labels)
        source = f"The labels file {os.fspath(labels)!r} holds"
    else:
        names = list(labels)
        if not names or not all(isinstance(n, str) for n in names):
            raise InputError("labels must be a non-empty list of strings (class names in output "
                             "order) or the path of a labels file.")
        source = "The labels hold"
    fix = "Give one class name per class, in the model's output order."
    return recipe, _check_count(names, graph, source, fix), preprocess is None and not has_sidecar


def warn_assumed_recipe(model_path: str | os.PathLike, recipe: Preprocess) -> None:
    """Log the one warning of a model load without a recipe: what was assumed, how to change it."""
    name = Path(model_path).name
    log.warning("%s has no recipe file (%s), so camonnx assumes torchvision's ImageNet "
                "preprocessing: %s. If the model was trained otherwise (Keras/TensorFlow: "
                "--preset tf or inception; Caffe: --preset caffe), save its recipe once with "
                "`camonnx recipe %s --preset NAME` (or --mean/--std/--scale/--channel-order/"
                "--size/--resize), or pass those flags to each command (Python: preprocess=).",
                name, recipe_path(model_path).name, describe(recipe), model_path)


__all__ = ["PRESETS", "DEFAULT_PRESET", "CAFFE_MEAN_BGR", "preset", "with_overrides", "describe",
           "read_labels", "class_count", "choose_recipe", "warn_assumed_recipe"]
