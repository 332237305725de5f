"""All-layer Grad-CAM: camonnx vs a pytorch-grad-cam loop over the layers vs one torch fwd+bwd.

ResNet-50 (random weights), 224×224, all 53 conv taps, batch 1 and 8, CPU (and CUDA when
available). Each measurement runs in its own subprocess so that its peak memory (max RSS) is its
own. Targets (issue 4): camonnx ≥ 25× faster than the loop and ≤ 1.5× one plain forward+backward
on CPU.

    python bench/bench_cam.py [--batches 1 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from results import export_resnet50, first_and_warm, resnet50  # noqa: E402


def run_one(approach: str, batch: int, repeat: int, onnx_path: str) -> dict:
    """Time one approach in this process: first call and the median of warm calls."""
    import torch

    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    if approach == "camonnx":
        from camonnx.explainer import Explainer

        start = time.perf_counter()
        explainer = Explainer(onnx_path)
        load = time.perf_counter() - start
        fn = lambda: explainer.explain(x, method="gradcam", layers="all", batch_size=batch,  # noqa: E731
                                       progress=False)
    elif approach == "grad-cam loop":
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        model, load = resnet50(), 0.0
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]

        def fn():
            targets = [ClassifierOutputTarget(0)] * batch
            for conv in convs:  # CAManim's approach: one GradCAM object per layer
                with GradCAM(model=model, target_layers=[conv]) as cam:
                    cam(input_tensor=x, targets=targets)
    else:  # one plain forward+backward of the torch model
        model, load = resnet50(), 0.0

        def fn():
            xr = x.clone().requires_grad_(True)
            model(xr)[:, 0].sum().backward()
            model.zero_grad(set_to_none=True)

    return {**first_and_warm(fn, repeat), "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", nargs=3, metavar=("APPROACH", "BATCH", "ONNX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        approach, batch, path = args.one
        reps = 1 if approach == "grad-cam loop" else args.repeat
        print(json.dumps(run_one(approach, int(batch), reps, path)))
        return

    from results import machine, table, write_section

    path = Path(tempfile.mkdtemp()) / "resnet50.onnx"
    export_resnet50(path)
    rows, results = [], {}
    for batch in args.batches:
        for approach in ("torch fwd+bwd", "camonnx", "grad-cam loop"):
            out = subprocess.run([sys.executable, __file__, "--repeat", str(args.repeat), "--one",
                                  approach, str(batch), str(path)], capture_output=True, text=True,
                                 check=True)
            results[(approach, batch)] = json.loads(out.stdout.strip().splitlines()[-1])
            print(approach, batch, results[(approach, batch)], flush=True)
        base = results[("torch fwd+bwd", batch)]["warm"]
        loop = results[("grad-cam loop", batch)]["warm"]
        for approach in ("torch fwd+bwd", "camonnx", "grad-cam loop"):
            r = results[(approach, batch)]
            rows.append([batch, approach, f"{r['first']:.2f}", f"{r['warm']:.2f}",
                         f"{r['warm'] / base:.2f}×", f"{loop / r['warm']:.1f}×", f"{r['peak_mb']:.0f}"])
    header = ["batch", "approach", "first call s", "warm s", "vs one torch fwd+bwd",
              "speed-up vs loop", "peak RSS MB"]
    body = (f"## All-layer Grad-CAM (bench/bench_cam.py)\n\nMachine: {machine()}\n\n"
            "ResNet-50, 224×224, random weights, all 53 conv layers, Grad-CAM maps upsampled to "
            "224×224 and normalised. camonnx: one ORT-free mirror forward+backward for all taps + "
            "kernels. grad-cam loop: pytorch-grad-cam, one GradCAM object per Conv2d (53), as "
            "CAManim does; loop timed once (it is slow). Warm = median of repeated calls after "
            f"the first.\n\n{table(header, [[str(c) for c in r] for r in rows])}\n\n"
            "Targets: camonnx ≥ 25× faster than the loop; ≤ 1.5× one torch forward+backward.")
    print(body)
    write_section("cam", body)


if __name__ == "__main__":
    main()
