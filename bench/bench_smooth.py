"""Smooth Grad-CAM++: camonnx vs torchcam's SmoothGradCAMpp, one layer and all layers, CPU.

ResNet-18 and ResNet-50 (random weights), one 224×224 image, n = 25 noisy copies.

- camonnx: ``explain(method="smoothgradcam++", samples=25)``: one ONNX Runtime forward of the
  clean image, then the 25 copies through the torch mirror in passes of 8 copies (on CPU), one
  forward and one backward per pass that stops at the shallowest requested tap, for every
  requested tap at once.
- torchcam (``torchcam.methods.SmoothGradCAMpp``, if installed; the bench checks that pip would
  not replace torch before installing it): its documented use, ``scores = model(x)`` then
  ``cam(class_idx)``, which runs one forward + one ``autograd.grad`` to the hooked layers per noisy
  copy (batch 1). "per layer": one extractor per Conv2d (20 / 53), as a user explaining every layer
  with it must; "one extractor, all layers": torchcam given the list of every Conv2d at once
  (extra row, for honesty: torchcam can hook many layers, it just cannot batch the copies).
- Without torchcam, a documented stand-in: a per-sample loop of camonnx's own Grad-CAM++
  machinery (one mirror forward+backward per noisy copy, batch 1), labelled as such.

Note torchcam's formula deviates from the paper (see camonnx/methods/smoothgradcampp.py): absolute
noise std, Σ_ab A·D3 in α's denominator, ReLU of the last copy's gradient. The timings compare
the same work (25 noisy forward+backward passes + weights), not the maps.

Targets: one layer (the last block), camonnx no slower than torchcam; all layers, camonnx ≥ 10×
faster than torchcam run once per layer. Each measurement runs in its own subprocess (own peak
RSS); warm = median of ``--repeat`` calls after a first call; the loops over layers run once.

    python bench/bench_smooth.py [--models resnet18 resnet50] [--repeat 3] [--samples 25]
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
SIZE = 224


def _model(name: str):
    import torch
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def _export(name: str, path: Path) -> None:
    import torch

    torch.onnx.export(_model(name), (torch.randn(1, 3, SIZE, SIZE),), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})


def _image():
    import torch

    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def have_torchcam() -> bool:
    try:
        import torchcam.methods  # noqa: F401
    except ImportError:
        return False
    return True


def run_one(approach: str, model_name: str, scope: str, samples: int, repeat: int,
            onnx_path: str) -> dict:
    """Time one approach in this process: its first call and the median of warm calls."""
    import torch
    from results import first_and_warm

    x = _image()
    sigma = 0.15 * float(x.max() - x.min())  # the same noise level for every approach
    load = 0.0
    if approach == "camonnx":
        from camonnx.explainer import Explainer

        start = time.perf_counter()
        explainer = Explainer(onnx_path)
        load = time.perf_counter() - start
        layers = "all" if scope == "all" else [len(explainer.layers) - 1]
        n_layers = len(explainer.select_layers(layers))

        def fn():
            return explainer.explain(x, method="smoothgradcam++", layers=layers, samples=samples,
                                     noise=0.15, progress=False)
    elif approach.startswith("torchcam"):
        from torchcam.methods import SmoothGradCAMpp

        model = _model(model_name)
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        if scope == "last":
            groups = [[model.layer4]]  # the last block's output = camonnx's last (block) tap
        elif approach == "torchcam per layer":
            groups = [[conv] for conv in convs]
        else:
            groups = [convs]
        n_layers = sum(len(g) for g in groups)

        def fn():
            for group in groups:
                with SmoothGradCAMpp(model, target_layer=group, num_samples=samples, std=sigma,
                                     input_shape=(3, SIZE, SIZE)) as cam:
                    scores = model(x)
                    cam(int(scores.argmax(1)), scores)
    else:  # stand-in without torchcam: camonnx's Grad-CAM++ on one noisy copy at a time
        from camonnx.explainer import Explainer
        from camonnx.methods.smoothgradcampp import smooth_weights
        from camonnx.noise import noisy_copies

        explainer = Explainer(onnx_path)
        chosen = explainer.layers if scope == "all" else [explainer.layers[-1]]
        groups = [[layer] for layer in chosen]
        n_layers = len(chosen)

        def fn():
            copies = noisy_copies(x, samples, 0.15, 0)[0]
            for group in groups:  # once per layer, like a per-layer tool
                logits, acts, _ = explainer.gradients_tensors(x, None, group)
                cls = int(logits.argmax(1))
                sums = None
                for t in range(samples):
                    _, _, g = explainer.gradients_tensors(copies[t:t + 1], cls, group)
                    g = g[group[0].tensor]
                    powers = [g, g * g, g * g * g]
                    sums = powers if sums is None else [s + p for s, p in zip(sums, powers)]
                w = smooth_weights(*[s / samples for s in sums], acts[group[0].tensor])
                torch.relu((w[:, :, None, None] * acts[group[0].tensor]).sum(1))

    return {**first_and_warm(fn, repeat), "load": load, "layers": n_layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--one", nargs=4, metavar=("APPROACH", "MODEL", "SCOPE", "ONNX"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        approach, model_name, scope, path = args.one
        loop = scope == "all" and approach != "camonnx"
        print(json.dumps(run_one(approach, model_name, scope, args.samples,
                                 0 if loop else args.repeat, path)))
        return

    from results import machine, table, write_section

    from camonnx.methods.smoothgradcampp import CPU_COPIES_PER_PASS

    reference = "torchcam" if have_torchcam() else "per-sample loop"
    if reference == "torchcam":
        import torchcam
        ref_label = f"torchcam {torchcam.__version__}"
        plan = [("last", "camonnx"), ("last", "torchcam"), ("all", "camonnx"),
                ("all", "torchcam one extractor"), ("all", "torchcam per layer")]
    else:
        ref_label = "per-sample loop (torchcam not installed)"
        plan = [("last", "camonnx"), ("last", "per-sample loop"), ("all", "camonnx"),
                ("all", "per-sample loop")]
    baseline = {"last": plan[1][1], "all": plan[-1][1]}
    rows, notes = [], []
    tmp = Path(tempfile.mkdtemp())
    for model_name in args.models:
        path = tmp / f"{model_name}.onnx"
        _export(model_name, path)
        results = {}
        for scope, approach in plan:
            out = subprocess.run([sys.executable, __file__, "--repeat", str(args.repeat), "--samples",
                                  str(args.samples), "--one", approach, model_name, scope, str(path)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"{approach} {model_name} {scope} failed:\n{out.stderr[-3000:]}")
            r = results[(scope, approach)] = json.loads(out.stdout.strip().splitlines()[-1])
            print(model_name, scope, approach, r, flush=True)
        for scope, approach in plan:
            r = results[(scope, approach)]
            base = results[(scope, baseline[scope])]["warm"]
            rows.append([model_name, "last block" if scope == "last" else f"all {r['layers']}",
                         approach, f"{r['first']:.2f}", f"{r['warm']:.2f}",
                         f"{base / r['warm']:.1f}×", f"{r['peak_mb']:.0f}"])
        one = results[("last", baseline["last"])]["warm"] / results[("last", "camonnx")]["warm"]
        every = results[("all", baseline["all"])]["warm"] / results[("all", "camonnx")]["warm"]
        notes.append(f"{model_name}: last block {one:.1f}× (target ≥ 1×: "
                     f"{'met' if one >= 1 else 'NOT met'}), all layers {every:.1f}× "
                     f"(target ≥ 10×: {'met' if every >= 10 else 'NOT met'}).")
    header = ["model", "layers", "approach", "first call s", "warm s",
              f"speed-up vs {baseline['last'].split()[0]}", "peak RSS MB"]
    body = (f"## Smooth Grad-CAM++ (bench/bench_smooth.py)\n\nMachine: {machine()}\n\n"
            f"One random 224×224 image, random weights, n = {args.samples} noisy copies, CPU. "
            f"Reference: {ref_label}. camonnx: ORT clean forward + the {args.samples} copies "
            f"through the mirror in passes of {CPU_COPIES_PER_PASS} copies, one forward + one "
            "backward per pass (stopping at the shallowest requested tap) for all requested taps "
            "at once, maps upsampled and normalised. torchcam: "
            "`scores = model(x); cam(class_idx)`, one forward + backward per copy (batch 1); "
            "'per layer' = one extractor per Conv2d, 'one extractor' = all Conv2d hooked at once. "
            "Speed-up is against the reference row of the same scope (torchcam for the last "
            "block, torchcam per layer for all layers). Warm = median of repeated calls after the "
            "first; loops over layers timed once (first = warm). The machine is shared: timings "
            f"carry some noise.\n\n{table(header, rows)}\n\n" + "\n".join(f"- {n}" for n in notes))
    print(body)
    write_section("smooth", body)


if __name__ == "__main__":
    main()
