"""Mirror parity with ONNX Runtime on every zoo model, with both torch exporters (SPEC §3).

Explainer's load-time probe compares the mirror's logits and every tap with ONNX Runtime's
(max error ≤ 1e-4 of each tensor's scale) and raises ParityError otherwise; here we also check
the numbers it reports and the gradients' finiteness on a real image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camonnx.explainer import PARITY_RTOL, Explainer
from camonnx.models import ZOO, export_model

CASES = [(name, "legacy") for name in ZOO] + [(name, "dynamo") for name in ZOO]


@pytest.mark.parametrize("name,exporter", CASES, ids=[f"{n}-{e}" for n, e in CASES])
def test_zoo_model_mirror_matches_ort(name, exporter, tmp_path):
    path = export_model(name, tmp_path / f"{name}.onnx", exporter=exporter)
    explainer = Explainer(path)
    assert explainer.parity_error <= PARITY_RTOL
    x = torch.randn(2, 3, *explainer.preprocess.size, generator=torch.Generator().manual_seed(0))
    logits = explainer.forward(x, [explainer.graph.logits])[explainer.graph.logits]
    result = explainer.gradients(x, layers=[0, -1])
    scale = float(logits.abs().max())
    np.testing.assert_allclose(result.logits, logits.numpy(), atol=PARITY_RTOL * scale)
    assert all(np.isfinite(g).all() for g in result.gradients.values())
