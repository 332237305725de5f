"""Every zoo model, with both torch exporters: the mirror against the torch model it came from.

Loading checks the mirror against ONNX Runtime on a probe input (ParityError otherwise). The
oracle here is the original torch model (``ZOO[name].build(None, 0)``, the weights the export was
made from) in float64: the mirror's float64 twin must give its logits within RTOL64, and the
float32 pipeline (``explainer.gradients``) within RTOL32; every gradient must be finite.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camonnx.explainer import Explainer
from camonnx.models import ZOO, export_model
from camonnx.parity import float64_twin

CASES = [(name, "legacy") for name in ZOO] + [(name, "dynamo") for name in ZOO]
#: float64 twin against float64 torch, relative to the logits' max. float64 rounding is ~1e-15;
#: what is left is the file's float32 storage of numbers the module computes exactly, above all
#: BatchNorm folded into float32 conv weights. Measured over input seeds 0–4: ≤ 2.2e-7 on the
#: random-weight models (0 on vgg16, which has no BatchNorm), 6.8e-7 on the pretrained
#: efficientnet_lite0 (real BatchNorm statistics), so 3e-6.
RTOL64 = 3e-6
#: float32 pipeline against float64 torch: float32 rounding through the network. Measured over
#: input seeds 0–4: ≤ 9.1e-7, except vgg16 (ReLU chains without BatchNorm, 4096-wide GEMMs):
#: 3.3e-6. So 1e-5.
RTOL32 = 1e-5


@pytest.mark.parametrize("name,exporter", CASES, ids=[f"{n}-{e}" for n, e in CASES])
def test_zoo_model_mirror_matches_the_torch_model(name, exporter, tmp_path):
    path = export_model(name, tmp_path / f"{name}.onnx", exporter=exporter)
    explainer = Explainer(path)
    x = torch.randn(2, 3, *explainer.preprocess.size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ZOO[name].build(None, 0).double()(x.double()).numpy()
        twin = float64_twin(explainer.mirror)
        exact = twin(explainer.to_model_layout(x.double()), [explainer.graph.logits])
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(exact[explainer.graph.logits].numpy(), want, rtol=0,
                               atol=RTOL64 * scale)
    result = explainer.gradients(x, layers=[0, -1])
    np.testing.assert_allclose(result.logits, want, rtol=0, atol=RTOL32 * scale)
    assert all(np.isfinite(g).all() and np.abs(g).max() > 0 for g in result.gradients.values())
