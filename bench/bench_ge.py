"""Gradual Extrapolation: overhead of explain(extrapolate=True), and ROAD of plain vs extrapolated.

1. Overhead. ResNet-50 (random weights), 224×224, CPU (and CUDA when available): all 53 layers
   and the last layer, batch 1 and 8, gradcam with and without ``extrapolate``. Plain and
   extrapolated runs alternate and the overhead is the median of the per-pair ratios; the cost of
   the extrapolation itself (camonnx.extrapolate.extrapolate on the same forward's tensors) is
   timed alone as well. Target (issue 6): ≤ 10 % overhead.
2. ROAD. The pretrained default model (EfficientNet-Lite0) on real photos from scikit-image: ROAD
   (camonnx.road.road_score, docs/metrics.md#road; higher is more faithful) of the last layer's Grad-CAM map,
   plain (bilinear, min-max) and extrapolated, each over seeded imputation trials.

    python bench/bench_ge.py [--batches 1 8] [--repeat 7] [--trials 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from results import export_resnet50, machine, paired, table, timeit, write_section  # noqa: E402

from camonnx.explainer import Explainer  # noqa: E402
from camonnx.extrapolate import extrapolate, step_tensors  # noqa: E402
from camonnx.road import road_score  # noqa: E402

PHOTOS = {"chelsea": lambda d: d.chelsea(), "coffee": lambda d: d.coffee(),
          "astronaut": lambda d: d.astronaut(), "rocket": lambda d: d.rocket(),
          "motorcycle": lambda d: d.stereo_motorcycle()[0]}


def overhead(args, device: str) -> list[list[str]]:
    path = export_resnet50(Path(tempfile.mkdtemp()) / "resnet50.onnx")
    explainer = Explainer(path, device=device)
    rows = []
    for layers, label in (("all", "all 53"), ("suggested", "last")):
        chosen = explainer.select_layers(layers)
        for batch in args.batches:
            x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
            run = lambda ge: explainer.explain(x, method=args.method, layers=layers,  # noqa: E731
                                               batch_size=batch, extrapolate=ge, progress=False)
            plain, extrapolated, ratio = paired(lambda: run(False), lambda: run(True), args.repeat)
            raw = [torch.from_numpy(r).to(device) for r in run(True).raw]
            xd = x.to(device)
            values = explainer.forward(xd, step_tensors(explainer.graph))
            alone = timeit(lambda: extrapolate(raw, chosen, explainer.graph, values, xd),
                           args.repeat)
            rows.append([label, batch, f"{plain:.3f}", f"{extrapolated:.3f}",
                         f"{(ratio - 1) * 100:+.1f}%", f"{alone * 1e3:.1f}",
                         f"{alone / plain * 100:.1f}%"])
            print(rows[-1], flush=True)
    return rows


def road_rows(args) -> tuple[list[list[str]], dict[str, list[float]]]:
    """ROAD of the last layer's map per photo: plain, extrapolated (the default, no input step),
    and extrapolated with the input step (``include_input=True``)."""
    import skimage.data

    explainer = Explainer()
    variants = {"plain": {}, "extrapolated": {"extrapolate": True},
                "extrapolated, with input step": {"extrapolate": True, "include_input": True}}
    rows, means = [], {name: [] for name in variants}
    for photo, load in PHOTOS.items():
        image = load(skimage.data)
        row = [photo, None]
        for variant, options in variants.items():
            result = explainer.explain(image, method=args.method, layers="suggested",
                                       progress=False, **options)
            score = road_score(explainer, image, result.maps[0], trials=args.trials, seed=0)
            means[variant].append(score.mean)
            row[1] = result.label(0)
            row.append(f"{score.mean:+.4f} ± {score.scores.std():.4f}")
        rows.append(row)
        print(rows[-1], flush=True)
    return rows, means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--trials", type=int, default=3, help="ROAD imputation trials per map")
    parser.add_argument("--method", default="gradcam")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    timing = overhead(args, device)
    road, means = road_rows(args)
    header = ["layers", "batch", f"{args.method} s", f"{args.method} + GE s",
              "GE overhead (median of pairs)", "extrapolation alone (ms)", "alone / plain"]
    road_header = ["photo", "predicted class"] + [f"ROAD {v}" for v in means]
    plain = np.array(means["plain"])
    summary = "; ".join(
        f"{variant} {np.mean(values):+.4f}" + ("" if variant == "plain" else
                                              f" (higher than plain on "
                                              f"{int(np.sum(np.array(values) > plain))} of "
                                              f"{len(plain)})")
        for variant, values in means.items())
    body = (f"## Gradual Extrapolation overhead and ROAD (bench/bench_ge.py)\n\n"
            f"Machine: {machine()}\n\n"
            f"ResNet-50, 224×224, random weights, device {device}; {args.repeat} alternating pairs "
            f"of plain and extrapolated explain calls after a warm-up pair: medians of each, and "
            f"the overhead as the median of the per-pair ratios. \"Extrapolation alone\" times "
            f"camonnx.extrapolate.extrapolate on the same forward's tensors (median of "
            f"{args.repeat}).\n\n{table(header, [[str(c) for c in r] for r in timing])}\n\n"
            f"Target: ≤ 10% overhead.\n\n"
            f"ROAD (docs/metrics.md#road, fractions 0.2/0.4/0.6/0.8, higher is more faithful) of the last "
            f"layer's {args.method} map on the pretrained default model (EfficientNet-Lite0, "
            f"224×224) for scikit-image photos, class = the prediction; mean ± std over "
            f"{args.trials} seeded imputation trials. Plain: the map bilinearly upsampled; "
            f"extrapolated: Gradual Extrapolation with the default include_input=False; with "
            f"input step: include_input=True (the reference's last step multiplies by ReLU(Σ of "
            f"the normalised input's channels): roughly where the image is brighter than the "
            f"ImageNet mean).\n\n"
            f"{table(road_header, road)}\n\nMean over the photos: {summary}.")
    print(body)
    write_section("ge", body)


if __name__ == "__main__":
    main()
