"""camonnx end to end on a CUDA GPU: correctness first, then timings against torch on the same GPU.

Run by ``bench/gpu_check.sh`` on a machine with a CUDA GPU (``--device cpu`` runs the same steps on
the CPU, to check the script itself). Without onnxruntime-gpu the torch mirror does the forwards on
the GPU. Model: torchvision ResNet-50 with random weights (no download), exported with the legacy
exporter; the pretrained default model too when its packages are installed.

Correctness on the device, in float64 (see :func:`float64_checks`): the mirror's logits against the
float64 torch model's (≤ 1e-5 of the max: the file stores the weights in float32, ~6e-8 relative,
grown through 50 layers), and its gradient of the top logit against central differences of its own
forward (≤ 1e-4 relative; measured 1.8e-6 on the CPU, see :func:`float64_checks` for the step). Then all-layer Grad-CAM maps on the device against the same maps
computed on the CPU (float32 both sides through different kernels: ≤ 1e-3 absolute on [0, 1]
maps, a bound for near-tied min-max normalisations, not a measured figure).

Timings (median of ``--repeat`` runs, synchronised): torch forward+backward of the model (the
baseline), camonnx's one forward+backward for every tap, all-layer Grad-CAM, Smooth Grad-CAM++
(last layer, 25 copies), Gradual Extrapolation of every layer, CAManim frames of every layer, and
ybROAD of the last layer. The table goes to the "gpu" section of bench/RESULTS.md with the device.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from results import export_resnet50, machine, resnet50, table, write_section  # noqa: E402

from camonnx.explainer import Explainer  # noqa: E402


def synced(device: torch.device):
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return sync


def median_time(fn, sync, repeat: int) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def float64_checks(explainer: Explainer, model: torch.nn.Module, device) -> tuple[float, float]:
    """On ``device``, in float64: (max |logits (mirror) − logits (torch)| / max |torch's|, and
    the worst relative error of the mirror's ∂y/∂x · v against central differences of its own
    forward, (y(x + h·v) − y(x − h·v)) / 2h, over 3 random directions v).

    The gradient is checked against the mirror's own forward, not torch's: the exported file
    folds BatchNorm into float32 conv weights, so a ReLU input within ~1e-7 of 0 can switch
    sides between the two functions and their exact gradients then differ locally (on random-weight
    ResNet-50, 2,305 of 150,528 input-gradient values differ by more than 1e-6 of the max). The
    step h = 1e-8 keeps x ± h·v inside one linear piece of the ReLU network for almost every
    direction (h = 1e-6 crossed kinks: 7e-4 relative error for the mirror and torch alike; 1e-8:
    1.8e-6 on the CPU), while float64 rounding stays ~1e-16·|y| / h ≈ 1e-7."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 224, 224, generator=generator, dtype=torch.float64).to(device)
    mirror = copy.deepcopy(explainer.mirror).double().to(device)
    reference = copy.deepcopy(model).double().to(device)
    name = explainer.graph.logits

    def scores(v: torch.Tensor) -> torch.Tensor:
        return mirror(v, [name])[name]

    with torch.no_grad():
        ours, theirs = scores(x), reference(x)
    logits_error = float((ours - theirs).abs().max() / theirs.abs().max())
    top = int(ours.argmax())
    xg = x.clone().requires_grad_(True)
    gradient = torch.autograd.grad(scores(xg)[0, top], xg)[0]
    h, worst = 1e-8, 0.0
    for _ in range(3):
        v = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(device)
        with torch.no_grad():
            numeric = (scores(x + h * v)[0, top] - scores(x - h * v)[0, top]) / (2 * h)
        analytic = (gradient * v).sum()
        worst = max(worst, float((numeric - analytic).abs() / analytic.abs().clamp_min(1e-12)))
    return logits_error, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu, to check the script")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: torch sees no CUDA GPU (run with --device cpu to check the script)")
    sync = synced(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    work = Path(tempfile.mkdtemp(prefix="camonnx-gpu-"))
    path = export_resnet50(work / "resnet50.onnx")
    explainer = Explainer(path, device=str(device))
    model = resnet50().to(device)
    forwards = "ONNX Runtime" if explainer.runtime is not None else "the torch mirror"

    logits_error, gradient_error = float64_checks(explainer, model, device)
    checks = [["ResNet-50: mirror float64 logits vs torch float64, max error / max",
               f"{logits_error:.1e}", "≤ 1e-5"],
              ["ResNet-50: mirror float64 ∂y/∂x·v vs central differences (h = 1e-8), rel. error",
               f"{gradient_error:.1e}", "≤ 1e-4"]]
    cpu = Explainer(path, device="cpu")
    x = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    on_device = explainer.explain(x, layers="all", progress=False).maps
    on_cpu = cpu.explain(x, layers="all", progress=False).maps
    checks.append([f"ResNet-50: all-layer Grad-CAM maps on {name} vs CPU, max |Δ|",
                   f"{float(np.abs(on_device - on_cpu).max()):.1e}", "≤ 1e-3"])
    passed = [float(value) <= float(bound.split()[-1]) for _, value, bound in checks]

    xd = x.to(device)

    def torch_fwd_bwd():
        xg = xd.clone().requires_grad_(True)
        logits = model(xg)
        torch.autograd.grad(logits.max(1).values.sum(), xg)

    baseline = median_time(torch_fwd_bwd, sync, args.repeat)
    one = xd[:1]
    steps = {
        f"camonnx gradients of all {len(explainer.layers)} taps (one fwd+bwd)":
            lambda: explainer.gradients_tensors(xd, None, explainer.layers),
        "explain gradcam, all layers": lambda: explainer.explain(xd, progress=False),
        "explain gradcam, all layers, Gradual Extrapolation":
            lambda: explainer.explain(xd, extrapolate=True, progress=False),
        "explain smoothgradcam++ (25 copies), last layer, 1 image":
            lambda: explainer.explain(one, method="smoothgradcam++", layers=[-1], progress=False),
        "animate: all layers to PNG frames, 1 image": lambda: _animate(explainer, one, work),
        "ybroad gradcam, last layer, 1 image, 1 trial":
            lambda: _ybroad(explainer, one),
    }
    rows = [[f"torch ResNet-50 forward+backward (baseline), batch {args.batch}",
             f"{baseline * 1e3:.1f}", "1.00×"]]
    for label, fn in steps.items():
        seconds = median_time(fn, sync, args.repeat if "1 image" not in label else 2)
        batch = "" if "1 image" in label else f", batch {args.batch}"
        rows.append([label + batch, f"{seconds * 1e3:.1f}", f"{seconds / baseline:.2f}×"])
        print(rows[-1], flush=True)

    body = (f"## GPU end to end (bench/bench_gpu.py)\n\nDevice: **{name}**; {machine()}. Forwards "
            f"through {forwards}. ResNet-50, random weights, 224×224.\n\nCorrectness on the device:"
            f"\n\n{table(['check', 'value', 'bound'], checks)}\n\nTimings (median of "
            f"{args.repeat}; ratios against torch's own forward+backward on the same device, same "
            f"run):\n\n{table(['step', 'ms', 'vs torch fwd+bwd'], rows)}")
    print(body)
    if not args.no_write and device.type == "cuda":
        write_section("gpu", body)
    if not all(passed):
        sys.exit("bench_gpu: a correctness check failed (see the table)")


def _animate(explainer: Explainer, x: torch.Tensor, work: Path) -> None:
    from camonnx.animation import animate

    explanation = explainer.explain(x, normalize="none", progress=False)
    animate(explanation, work / "frames", norm="both", progress=False)


def _ybroad(explainer: Explainer, x: torch.Tensor) -> None:
    from camonnx.road import ybroad

    ybroad(explainer, x, layers=[-1], trials=1, progress=False)


if __name__ == "__main__":
    main()
