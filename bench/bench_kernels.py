"""CPU benchmark: ``camonnx.kernels.upsample_layers`` (+ normalisation) vs the torch equivalent.

Shapes are ResNet-50-like: 53 conv taps at 112/56/28/14/7 (1 + 10 + 13 + 19 + 10 layers), batch 1
and 8, every map resized to 224x224 into one (L, N, H, W) buffer and min-max normalised
(local, global, none).

The torch equivalent is what a caller would write without the kernels: ``F.interpolate`` per layer
(bilinear, ``align_corners=False``) stacked into one buffer, then ``torch.aminmax`` per map (or per
image over all layers for ``global``) and in-place ``sub_``/``div_`` (a constant map becomes zeros).

Timings:
- *first call*: a fresh process (``python bench/bench_kernels.py --first-call``): import excluded,
  the first ``upsample_layers`` call timed, once with an empty numba cache directory (the JIT
  compile, what the very first run pays) and once with the cache that run left behind (what every
  later CLI run pays: loading compiled code from disk). The torch first call is timed the same way.
- *warm*: median (and min) of repeated calls in one process after warm-up, kernels and torch
  alternating call by call (the bench machine may be shared: alternation exposes both to the
  same load).

Usage: ``python bench/bench_kernels.py [--repeats 15] [--threads 1,0] [--no-first-call]``. Prints
markdown tables (one per thread setting; 0 = library defaults) and writes them to
``bench/results_kernels.md`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = [112] * 1 + [56] * 10 + [28] * 13 + [14] * 19 + [7] * 10  # 53 ResNet-50-like taps
OUT = (224, 224)
MODES = ("local", "global", "none")
BATCHES = (1, 8)


def make_maps(n: int):
    import torch

    g = torch.Generator().manual_seed(0)
    return [torch.rand(n, s, s, generator=g) for s in SIZES]


def torch_equivalent(maps, size, mode):
    import torch
    import torch.nn.functional as F

    X = torch.stack([F.interpolate(m[:, None], size=size, mode="bilinear",
                                   align_corners=False)[:, 0] for m in maps])
    if mode == "none":
        return X
    L, N = X.shape[:2]
    lo, hi = torch.aminmax(X.view(L, N, -1), dim=2)  # one pass over the buffer
    if mode == "global":
        lo = lo.amin(dim=0, keepdim=True).expand(L, N)
        hi = hi.amax(dim=0, keepdim=True).expand(L, N)
    rng = hi - lo
    lo = lo[..., None, None]
    rng = torch.where(rng > 0, rng, torch.ones_like(rng))[..., None, None]
    return X.sub_(lo).div_(rng)  # constant maps: X - lo == 0 -> zeros


def kernels_call(maps, size, mode):
    from camonnx.kernels import upsample_layers

    return upsample_layers(maps, size, mode)


def first_call_child(which: str, n: int, mode: str) -> None:
    """Runs in a fresh process: time the first call only (imports excluded)."""
    import torch  # noqa: F401

    import camonnx.kernels  # noqa: F401

    maps = make_maps(n)
    fn = kernels_call if which == "kernels" else torch_equivalent
    t = time.perf_counter()
    fn(maps, OUT, mode)
    print(json.dumps({"first_s": time.perf_counter() - t}))


def run_child(which, n, mode, cache_dir) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    r = subprocess.run([sys.executable, __file__, "--first-call", which, str(n), mode],
                       env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["first_s"]


def warm_times(fns, maps, mode, repeats) -> list[tuple[float, float]]:
    """(median, min) seconds per function; the functions alternate call by call so that both
    see the same machine load."""
    for fn in fns:
        for _ in range(2):
            fn(maps, OUT, mode)
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn(maps, OUT, mode)
            ts[k].append(time.perf_counter() - t)
    return [(statistics.median(t), min(t)) for t in ts]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--first-call", nargs=3, metavar=("WHICH", "N", "MODE"))
    ap.add_argument("--no-first-call", action="store_true", help="skip the fresh-process timings")
    ap.add_argument("--threads", default="1,0",
                    help="comma-separated thread counts for both numba and torch, one table each; "
                         "0 = the libraries' defaults (default: 1,0)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results_kernels.md")),
                    help="markdown file to write the table to")
    args = ap.parse_args()
    if args.first_call:
        first_call_child(args.first_call[0], int(args.first_call[1]), args.first_call[2])
        return

    import numba
    import torch

    from camonnx.kernels import upsample_layers

    first = {}
    if not args.no_first_call:
        with tempfile.TemporaryDirectory() as cache:
            first["kernels_cold"] = run_child("kernels", 1, "local", cache)
            first["kernels_cached"] = run_child("kernels", 1, "local", cache)
            first["torch"] = run_child("torch", 1, "local", cache)

    default_threads = (numba.get_num_threads(), torch.get_num_threads())
    mb = lambda n: len(SIZES) * n * OUT[0] * OUT[1] * 4 / 2**20  # noqa: E731
    lines = [
        "## camonnx.kernels.upsample_layers vs torch (CPU)",
        "",
        f"{len(SIZES)} ResNet-50-like layers (112/56/28/14/7 -> {OUT[0]}x{OUT[1]}), bilinear "
        "half-pixel, fused min-max normalisation. torch: F.interpolate per layer + stack + "
        "aminmax + in-place sub/div.",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"numba {numba.__version__}, torch {torch.__version__}; load average at start "
        f"{os.getloadavg()[0]:.1f} (the machine may be shared: compare the columns of one row, "
        "which alternate call by call).",
        f"Warm: median (min) ms of {args.repeats} alternating calls. 'kernels' and 'torch' "
        "allocate their output each call (page faults included, as in real use); 'kernels, "
        "out=' writes into a reused buffer. Speed-up: torch / kernels, medians.",
    ]
    for threads in [int(t) for t in args.threads.split(",")]:
        nb, tt_ = (threads, threads) if threads else default_threads
        numba.set_num_threads(nb)
        torch.set_num_threads(tt_)
        rows = []
        for n in BATCHES:
            maps = make_maps(n)
            for mode in MODES:
                ref = torch_equivalent(maps, OUT, mode)
                got = upsample_layers(maps, OUT, mode)
                err = (got - ref).abs().max().item()
                buf = torch.empty_like(got)

                def kernels_reuse(maps, size, mode, _buf=buf):
                    return upsample_layers(maps, size, mode, out=_buf)

                (tk, tk_min), (tr, tr_min), (tt, tt_min) = warm_times(
                    (kernels_call, kernels_reuse, torch_equivalent), maps, mode, args.repeats)
                rows.append((n, mode, tk, tk_min, tr, tr_min, tt, tt_min, err))
        lines += [
            "",
            f"### {nb} numba thread(s), {tt_} torch thread(s)",
            "",
            "| batch | normalize | output MiB | kernels | kernels, out= | torch | speed-up "
            "| max abs diff |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for n, mode, tk, tk_min, tr, tr_min, tt, tt_min, err in rows:
            lines.append(f"| {n} | {mode} | {mb(n):.0f} | {tk * 1e3:.1f} ({tk_min * 1e3:.1f}) | "
                         f"{tr * 1e3:.1f} ({tr_min * 1e3:.1f}) | {tt * 1e3:.1f} "
                         f"({tt_min * 1e3:.1f}) | {tt / tk:.1f}x | {err:.1e} |")
    if first:
        lines += [
            "",
            "First call in a fresh process (batch 1, local; imports excluded):",
            "",
            "| what | seconds |",
            "|---|---:|",
            "| kernels, empty numba cache (JIT compile of 2 kernels) | "
            f"{first['kernels_cold']:.2f} |",
            f"| kernels, numba cache populated (load from disk) | {first['kernels_cached']:.2f} |",
            f"| torch equivalent | {first['torch']:.3f} |",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
