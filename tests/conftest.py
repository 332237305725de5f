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


def export_legacy(model: torch.nn.Module, path: Path, size: int = 224, opset: int = 17,
                  dynamic_size: bool = False) -> Path:
    """Legacy-exporter ONNX with a dynamic batch (and, optionally, dynamic height/width)."""
    x = torch.randn(1, 3, size, size)
    axes = {0: "N", 2: "H", 3: "W"} if dynamic_size else {0: "N"}
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": axes, "logits": {0: "N"}})
    return path


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
