"""Shared helpers for the bench scripts: timing, machine description, RESULTS.md sections."""

from __future__ import annotations

import platform
import re
import statistics
import time
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).with_name("RESULTS.md")


def resnet50():
    """The benchmarks' model: torchvision ResNet-50, random weights (seed 0), eval mode."""
    import torch
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).eval()


def export_resnet50(path: Path) -> Path:
    """:func:`resnet50` exported with the legacy exporter (opset 17, dynamic batch) to ``path``."""
    import torch

    torch.onnx.export(resnet50(), (torch.randn(1, 3, 224, 224),), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    return path


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of ``fn`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def first_and_warm(fn: Callable[[], object], repeat: int = 3) -> dict:
    """{"first": the first call's seconds (JIT, caches), "warm": median of ``repeat`` later calls
    (the first's when ``repeat`` is 0), "peak_mb": the process's peak resident memory}."""
    import resource

    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"first": first, "warm": statistics.median(times) if times else first,
            "peak_mb": peak_mb}


def paired(first: Callable[[], object], second: Callable[[], object], repeat: int = 7,
           warmup: int = 1) -> tuple[float, float, float]:
    """(median s of ``first``, median s of ``second``, median of the per-pair ratios
    second/first) over ``repeat`` pairs run back to back, after ``warmup`` pairs. Alternating the
    two keeps slow drifts of a shared machine's load out of the ratio."""
    for _ in range(warmup):
        first()
        second()
    a, b = [], []
    for _ in range(repeat):
        for fn, times in ((first, a), (second, b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return (statistics.median(a), statistics.median(b),
            statistics.median(y / x for x, y in zip(a, b)))


def machine() -> str:
    import numpy
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    load = ", load average %.1f at the start" % os.getloadavg()[0]
    return (f"{cpu}, {os.cpu_count()} cores{load}, GPU: {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of bench/RESULTS.md."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nEach section is written by its bench script; re-run the script to update it.\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
