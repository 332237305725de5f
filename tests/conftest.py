"""Shared fixtures: small real models exported once per test session.

The ONNX files here are exported directly with torch.onnx (legacy exporter, opset 17, dynamic
batch) so that the graph/mirror tests do not depend on camonnx's own zoo code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")


#: Options that keep the costly methods cheap in tests that run every method: Smooth
#: Grad-CAM++ with 3 noisy copies, RISE with 32 masks (their own tests check them at size).
CHEAP_OPTIONS = {"smoothgradcam++": {"samples": 3}, "rise": {"masks": 32}}


def export_legacy(model: torch.nn.Module, path: Path, size: int = 224, opset: int = 17,
                  dynamic_size: bool = False) -> Path:
    """Legacy-exporter ONNX with a dynamic batch (and, optionally, dynamic height/width)."""
    x = torch.randn(1, 3, size, size)
    axes = {0: "N", 2: "H", 3: "W"} if dynamic_size else {0: "N"}
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": axes, "logits": {0: "N"}})
    return path


def dyadic_batchnorm(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every BatchNorm2d random per-channel parameters that fold into the conv exactly.

    The exporter folds BatchNorm into the preceding conv in float32, so a file exported from
    torchvision's BatchNorm (ε = 1e-5) computes a function ~1e-7 (relative) away from the module's,
    and a ReLU input that close to zero takes a different branch on each side: their gradients
    then differ at a few elements, each exact for its own function. Here ε = 1/16, the running
    variance is σ² − 1/16 for σ ∈ {1, 2}, the weight γ ∈ {1/2, 1, 2}, the mean μ = i/8 and the bias
    β = j/8 (|i|, |j| ≤ 4): the folded W' = W·γ/σ and b' = β − μ·γ/σ are products and sums of
    small dyadic numbers, exact in float32, so file and module compute the same function
    (BatchNorm left unfolded, as in DenseNet's pre-activation blocks, runs from the same float32
    parameters on both sides)."""
    g = torch.Generator().manual_seed(seed)

    def pick(values: list[float], n: int) -> torch.Tensor:
        return torch.tensor(values)[torch.randint(len(values), (n,), generator=g)]

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.eps = 1 / 16
            module.running_var.copy_(pick([1.0, 4.0], n) - 1 / 16)
            module.running_mean.copy_(torch.randint(-4, 5, (n,), generator=g) / 8)
            with torch.no_grad():
                module.weight.copy_(pick([0.5, 1.0, 2.0], n))
                module.bias.copy_(torch.randint(-4, 5, (n,), generator=g) / 8)
    return model


def _torchvision(name: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    for module in model.modules():  # hooks below read ReLU outputs: keep them out of place
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
    return model


@pytest.fixture(scope="session")
def resnet18() -> torch.nn.Module:
    return _torchvision("resnet18")


@pytest.fixture(scope="session")
def resnet18_onnx(resnet18, tmp_path_factory) -> Path:
    return export_legacy(resnet18, tmp_path_factory.mktemp("r18") / "resnet18.onnx",
                         dynamic_size=True)


@pytest.fixture(scope="session")
def resnet50() -> torch.nn.Module:
    return _torchvision("resnet50")


@pytest.fixture(scope="session")
def resnet50_onnx(resnet50, tmp_path_factory) -> Path:
    return export_legacy(resnet50, tmp_path_factory.mktemp("r50") / "resnet50.onnx")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny graphs (see each module's ``pytestmark``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
