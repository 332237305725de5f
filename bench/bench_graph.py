"""Foundation benchmark: load+prepare, ORT with/without all taps, mirror vs the torch model.

ResNet-50 (random weights), 224×224, batch 1 and 16, CPU (and CUDA when available).
Targets (issue 3): mirror fwd+bwd ≤ 1.3× the original torch model's fwd+bwd; exposing all taps
costs ≤ 25% over the plain ORT forward.

    python bench/bench_graph.py [--batches 1 16] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).parent))
from results import export_resnet50, machine, resnet50, table, timeit, write_section  # noqa: E402

from camonnx.graph import load_graph  # noqa: E402
from camonnx.mirror import Mirror  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    model = resnet50()
    path = export_resnet50(Path(tempfile.mkdtemp()) / "resnet50.onnx")

    start = time.perf_counter()
    graph = load_graph(path)
    mirror = Mirror(graph).eval()
    load_s = time.perf_counter() - start
    taps = graph.tap_tensors

    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    exposed = ort.InferenceSession(graph.prepared.SerializeToString(), providers=["CPUExecutionProvider"])

    rows = []
    for batch in args.batches:
        x = torch.randn(batch, 3, 224, 224)
        xn = x.numpy()
        t_plain = timeit(lambda: plain.run(None, {"input": xn}), args.repeat)
        t_exposed = timeit(lambda: exposed.run(None, {"input": xn}), args.repeat)

        def torch_fwd_bwd():
            xr = x.clone().requires_grad_(True)
            logits = model(xr)
            logits[:, 0].sum().backward()
            model.zero_grad(set_to_none=True)

        def mirror_fwd_bwd():
            values = mirror(x.clone().requires_grad_(True), taps + [graph.logits])
            torch.autograd.grad(values[graph.logits][:, 0].sum(), [values[t] for t in taps])

        with torch.no_grad():
            t_torch_fwd = timeit(lambda: model(x), args.repeat)
            t_mirror_fwd = timeit(lambda: mirror(x, taps + [graph.logits]), args.repeat)
        t_torch_fb = timeit(torch_fwd_bwd, args.repeat)
        t_mirror_fb = timeit(mirror_fwd_bwd, args.repeat)
        rows.append([batch, f"{t_plain * 1e3:.0f}", f"{t_exposed * 1e3:.0f}",
                     f"{t_exposed / t_plain:.2f}×", f"{t_torch_fwd * 1e3:.0f}",
                     f"{t_mirror_fwd * 1e3:.0f}", f"{t_torch_fb * 1e3:.0f}",
                     f"{t_mirror_fb * 1e3:.0f}", f"{t_mirror_fb / t_torch_fb:.2f}×"])

    header = ["batch", "ORT plain ms", "ORT all taps ms", "taps/plain", "torch fwd ms",
              "mirror fwd ms", "torch fwd+bwd ms", "mirror fwd+bwd ms (all 53 taps)", "mirror/torch"]
    body = (f"## Foundation: graph, ORT, mirror (bench/bench_graph.py)\n\n"
            f"Machine: {machine()}\n\nResNet-50, 224×224, random weights, {len(graph.layers)} taps "
            f"({len(taps)} distinct tensors). Load + tap analysis + mirror build: {load_s:.2f} s. "
            f"Median of {args.repeat} runs.\n\n{table(header, [[str(c) for c in r] for r in rows])}\n\n"
            "Targets: taps/plain ≤ 1.25×, mirror/torch fwd+bwd ≤ 1.3× (torch's backward also "
            "computes weight gradients, which the mirror does not need).")
    print(body)
    write_section("graph", body)


if __name__ == "__main__":
    main()
