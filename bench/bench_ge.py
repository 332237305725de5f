"""Gradual Extrapolation overhead: explain(extrapolate=True) vs the same method without it.

ResNet-50 (random weights), 224×224, CPU (and CUDA when available): all 53 layers and the last
layer, batch 1 and 8, for gradcam. Target (issue 6): ≤ 10% overhead.

    python bench/bench_ge.py [--batches 1 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from results import export_resnet50, machine, table, timeit, write_section  # noqa: E402

from camonnx.explainer import Explainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--method", default="gradcam")
    args = parser.parse_args()

    path = export_resnet50(Path(tempfile.mkdtemp()) / "resnet50.onnx")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    explainer = Explainer(path, device=device)
    rows = []
    for layers, label in (("all", "all 53"), ("suggested", "last")):
        for batch in args.batches:
            x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
            run = lambda ge: explainer.explain(x, method=args.method, layers=layers,  # noqa: E731
                                               batch_size=batch, extrapolate=ge, progress=False)
            plain = timeit(lambda: run(False), args.repeat)
            extrapolated = timeit(lambda: run(True), args.repeat)
            rows.append([label, batch, f"{plain:.3f}", f"{extrapolated:.3f}",
                         f"{(extrapolated / plain - 1) * 100:+.1f}%"])
            print(rows[-1], flush=True)
    header = ["layers", "batch", f"{args.method} s", f"{args.method} + GE s", "GE overhead"]
    body = (f"## Gradual Extrapolation overhead (bench/bench_ge.py)\n\nMachine: {machine()}\n\n"
            f"ResNet-50, 224×224, random weights, device {device}; median of {args.repeat} warm "
            f"runs.\n\n{table(header, [[str(c) for c in r] for r in rows])}\n\nTarget: ≤ 10% overhead.")
    print(body)
    write_section("ge", body)


if __name__ == "__main__":
    main()
