"""Deep-layer Grad-CAM by the partial route vs the full route, against one ONNX Runtime forward.

For a deep layer the pass engine takes ONNX Runtime's activations of the requested taps and
re-runs only the rest of the network through the mirror, forward and backward (the partial
route); for all layers it runs the whole mirror (the full route). This script times, on the
default model (EfficientNet-Lite0, pretrained) and a random-weight ResNet-50, CPU, batch 1,
224×224: one plain ORT forward (the baseline), Grad-CAM of the deepest layer by each route, and
all-layer Grad-CAM by each route (the partial route falls back to the full one there). Pairs are
run back to back and the ratio is the median of the per-pair ratios. Target: a deep layer's
Grad-CAM ≤ 1.3× one ORT forward; all layers unchanged. Writes the "route" section of
bench/RESULTS.md.

    python bench/bench_route.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from results import export_resnet50, machine, paired, table, write_section  # noqa: E402


def timings(explainer, x: torch.Tensor, repeat: int) -> list[list[str]]:
    engine = explainer.engine
    deep = [explainer.layers[-1].index]

    def explain(layers, partial: bool):
        def run():
            engine.partial_pass = partial
            explainer.explain(x, method="gradcam", layers=layers, progress=False)
        return run

    def ort_forward():
        engine.runtime.run(x.numpy(), [explainer.graph.logits])

    rows = []
    for name, layers in (("deepest layer", deep), ("all layers", "all")):
        ort, full, full_ratio = paired(ort_forward, explain(layers, False), repeat)
        _, partial, partial_ratio = paired(ort_forward, explain(layers, True), repeat)
        rows.append([name, f"{ort * 1e3:.1f}", f"{full * 1e3:.1f}", f"{full_ratio:.2f}×",
                     f"{partial * 1e3:.1f}", f"{partial_ratio:.2f}×", f"{full / partial:.2f}×"])
    engine.partial_pass = True
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    from camonnx.explainer import Explainer

    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, explainer in (("EfficientNet-Lite0 (default)", Explainer()),
                                 ("ResNet-50", Explainer(export_resnet50(Path(folder) / "r50.onnx")))):
            for row in timings(explainer, x, args.repeat):
                rows.append([label, *row])
                print(rows[-1], flush=True)
    body = "\n".join([
        "## Partial route for deep layers (bench/bench_route.py)",
        "",
        f"Machine: {machine()}",
        "",
        "Grad-CAM, batch 1, 224×224, CPU; median ms of "
        f"{args.repeat} back-to-back pairs with one plain ONNX Runtime forward (the baseline).",
        "",
        table(["model", "layers", "ORT forward ms", "full route ms", "full / ORT",
               "partial route ms", "partial / ORT", "speed-up"], rows),
        "",
        "Target: the deepest layer's Grad-CAM ≤ 1.3× one ORT forward; all layers unchanged "
        "(the engine takes the full route there). Maps agree with the full route within float32 "
        "rounding (tests/test_partial_pass.py, against float64).",
    ])
    print(body)
    write_section("route", body)


if __name__ == "__main__":
    main()
