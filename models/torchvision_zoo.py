"""torchvision classifiers for the zoo: random weights (seeded) or a local state-dict file.

Nothing here downloads: every model is built with ``weights=None``; ``weights=`` loads a local
``.pth`` state dict. The preprocessing recipes are torchvision's ImageNet eval transforms
(``Weights.IMAGENET1K_V1.transforms``): shorter side → 256, centre crop 224, ImageNet mean/std,
bilinear for all but ``efficientnet_b0``, whose recipe resizes bicubically.

:func:`load_state_dict_file` is also used by :mod:`camonnx.models.efficientnet_lite`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from camonnx.errors import InputError
from camonnx.recipe import IMAGENET_MEAN, IMAGENET_STD, Preprocess

_IMAGENET = dict(size=(224, 224), resize=256, mean=IMAGENET_MEAN, std=IMAGENET_STD)

#: name → (torchvision constructor, the recipe of its IMAGENET1K_V1 weights, description)
MODELS: dict[str, tuple[str, Preprocess, str]] = {
    "resnet18": ("resnet18", Preprocess(**_IMAGENET), "ResNet-18"),
    "resnet50": ("resnet50", Preprocess(**_IMAGENET), "ResNet-50"),
    "vgg16": ("vgg16", Preprocess(**_IMAGENET), "VGG-16"),
    "densenet121": ("densenet121", Preprocess(**_IMAGENET), "DenseNet-121"),
    "mobilenet_v3_large": ("mobilenet_v3_large", Preprocess(**_IMAGENET), "MobileNetV3-Large"),
    "efficientnet_b0": ("efficientnet_b0", Preprocess(**_IMAGENET, interpolation="bicubic"),
                        "EfficientNet-B0"),
}

_INSTALL = "Install the model zoo extra: pip install 'camonnx[zoo]'."


def torchvision_version() -> str:
    """torchvision's version, or an :class:`InputError` telling how to install it."""
    try:
        import torchvision
    except ImportError:
        raise InputError(f"The torchvision models need torchvision, which is not installed. "
                         f"{_INSTALL}") from None
    return torchvision.__version__


def build(name: str, weights: str | os.PathLike | None = None, seed: int = 0) -> torch.nn.Module:
    """The torchvision model ``name`` in eval mode: random weights drawn with ``seed`` (the
    global torch RNG is left untouched), or the state dict in the local file ``weights``."""
    torchvision_version()
    import torchvision

    constructor = getattr(torchvision.models, MODELS[name][0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = constructor(weights=None)
    if weights is not None:
        load_state_dict_file(model, weights, name)
    return model.eval()


def load_state_dict_file(model: torch.nn.Module, weights: str | os.PathLike, name: str) -> None:
    """Load a local state-dict file into ``model``, strictly; a missing, unreadable or
    incompatible file is an :class:`InputError` that says what does not fit."""
    path = Path(weights)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise InputError(f"Weights file {str(path)!r} {what}. Give a local .pth state-dict "
                         f"file saved with torch.save(model.state_dict(), PATH).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"Weights file {str(path)!r} cannot be read as a PyTorch state dict "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                         "Save the weights with torch.save(model.state_dict(), PATH) "
                         "(a whole pickled model is not accepted).") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"Weights file {str(path)!r} does not hold a state dict (a mapping of "
                         "parameter names to tensors). Save it with "
                         "torch.save(model.state_dict(), PATH).")
    if all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("wrong shape (file vs model)", mismatched)):
            if keys:
                more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:3])}{more}")
        raise InputError(f"Weights file {str(path)!r} does not fit the {name} architecture "
                         f"({'; '.join(parts)}). Give a state dict saved from the same "
                         f"model ({name}, 1000 classes).")
    model.load_state_dict(state, strict=True)
