"""The pass engine (camonnx.passes): the gradient pass's per-chunk hook and re-runs from a tap."""

from __future__ import annotations

import torch

from camonnx.explainer import Explainer


def test_gradient_pass_hands_each_chunk_to_the_hook(resnet18_onnx):
    """The hook sees every chunk with its rows and resolved target; concatenated, the chunks are
    exactly what ``gradients`` returns for the same chunking."""
    engine = Explainer(resnet18_onnx).engine
    x = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    taps = [engine.layers[0].tensor, engine.layers[-1].tensor]
    seen = []
    engine.gradient_pass(((c, x[c]) for c in engine.chunks(5, 2)), None, taps, seen.append)
    assert [part.rows for part in seen] == [slice(0, 2), slice(2, 4), slice(4, 5)]
    whole = engine.gradients(x, None, taps, batch_size=2)
    assert [i for part in seen for i in part.target.indices] == whole.classes
    for tap in taps:
        torch.testing.assert_close(torch.cat([p.gradients[tap] for p in seen]), whole.gradients[tap],
                                   rtol=0, atol=0)


def test_rerun_from_an_unchanged_tap_gives_the_clean_logits(resnet18_onnx):
    """Re-running the network after a tap with the tap itself, for copies of one image, gives
    that image's clean logits (up to float32 summation order of a different batch size)."""
    engine = Explainer(resnet18_onnx).engine
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    tap = engine.from_tap(x, engine.layers[3].tensor)
    logits = tap.rerun(1, tap.value[1:2].repeat(3, 1, 1, 1))
    assert logits.shape == (3, tap.logits.shape[1])
    for row in logits:
        torch.testing.assert_close(row, tap.logits[1], rtol=1e-5, atol=1e-5)
