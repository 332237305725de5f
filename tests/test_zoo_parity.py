"""Mirror parity with ONNX Runtime on every zoo model, with both torch exporters
(docs/pipeline.md#parity).

Explainer's load-time probe judges the mirror against ONNX Runtime on a probe input
(camonnx.parity) and raises ParityError on a real disagreement; here every zoo export must load,
its report must cover the logits and every tap, and on a second input the float32 mirror's
logits must stay close to ONNX Runtime's, with finite gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camonnx.explainer import Explainer
from camonnx.models import ZOO, export_model

CASES = [(name, "legacy") for name in ZOO] + [(name, "dynamo") for name in ZOO]
#: Relative RMS of mirror − ORT on the logits, both float32. Measured over 3 probe seeds per
#: model (camonnx.parity's measurements): ≤ 7.8e-6 on random-weight torchvision models and
#: 1.3e-6 on the pretrained EfficientNet-Lite0; 1e-4 leaves a 10× margin and is still far below
#: any semantic error (≥ 1e-3).
LOGITS_RMS = 1e-4


@pytest.mark.parametrize("name,exporter", CASES, ids=[f"{n}-{e}" for n, e in CASES])
def test_zoo_model_mirror_matches_ort(name, exporter, tmp_path):
    path = export_model(name, tmp_path / f"{name}.onnx", exporter=exporter)
    explainer = Explainer(path)
    checked = {t.tensor for t in explainer.parity_report.tensors}
    assert {explainer.graph.logits, *explainer.graph.tap_tensors} <= checked
    x = torch.randn(2, 3, *explainer.preprocess.size, generator=torch.Generator().manual_seed(0))
    ort_logits = explainer.forward(x, [explainer.graph.logits])[explainer.graph.logits].numpy()
    result = explainer.gradients(x, layers=[0, -1])
    difference = np.linalg.norm(result.logits - ort_logits) / np.linalg.norm(ort_logits)
    assert difference <= LOGITS_RMS
    assert all(np.isfinite(g).all() for g in result.gradients.values())
