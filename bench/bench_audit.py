"""The dataset audit (`camonnx audit`): images/s, its cost against the passes it needs, and Ray.

Eight scikit-image photos (listed in a CSV), Grad-CAM at 3 layers (evenly spaced over the deep
half), ROAD, 1 trial, shards of 4 images, CPU. For the default model (EfficientNet-Lite0) and
ResNet-50 (random weights):

* **audit**: the in-process audit's wall time (shards, rows, Parquet, summary included);
* inside the same run: the seconds in ONNX Runtime forwards (the clean images + 2 × 4 imputed
  images per layer and image), in the explanations, in ROAD (with its forwards), and the rest.

Ray: ResNet-18 (random) at 128×128, 48 photos in shards of 2 (at 64×64 the per-shard work is
so small that Ray's per-task overhead hides the second actor: measured 1.00×), 1 and 2
single-threaded actors;
steady-state images/s after the first round of shards (which carries Ray's and the actors'
start-up).

Targets (issue): audit ≤ 1.3 × the forwards it needs; Ray with 2 single-threaded actors ≥ 1.7 ×
the throughput of 1.

    python bench/bench_audit.py [--part all|in-process|ray] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from results import export_resnet50, machine, table, write_section  # noqa: E402

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
          "retina.jpg", "hubble_deep_field.jpg", "coins.png"]
SHARD, BATCH = 4, 64
RAY_IMAGES, RAY_SHARD = 48, 2


def photo_csv(folder: Path, count: int = len(PHOTOS)) -> Path:
    import skimage

    data = Path(skimage.__file__).parent / "data"
    names = (PHOTOS * (count // len(PHOTOS) + 1))[:count]
    listing = folder / f"photos{count}.csv"
    rows = []
    for i, name in enumerate(names):  # copies, so a repeated photo is another image
        target = folder / "img" / f"{i:03d}-{name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data / name, target)
        rows.append(f"{target}\n")
    listing.write_text("path\n" + "".join(rows))
    return listing


def deep_layers(explainer, count: int = 3) -> list[int]:
    n = len(explainer.layers)
    return sorted({n // 2 + round(i * (n - 1 - n // 2) / (count - 1)) for i in range(count)})


class Timed:
    """Seconds spent in a wrapped callable (instance attribute wrapper, summed over calls)."""

    def __init__(self, owner, name: str) -> None:
        self.seconds, self.inner = 0.0, getattr(owner, name)
        setattr(owner, name, self)

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def in_process(name: str, model, folder: Path) -> list[str]:
    """One audit with its forwards (every ``PassEngine.forward``: clean images and the metric's
    imputed images), its explanations and its metric scoring timed inside the same run, so the
    ratios do not drift with the shared machine's load."""
    from camonnx.audit_run import audit
    from camonnx.explainer import Explainer
    from camonnx.metrics import get_metric

    explainer = Explainer(model)
    listing = photo_csv(folder)
    layers = deep_layers(explainer)
    road = get_metric("road")
    audit(explainer, photo_csv(folder / "warm", 1), layers=layers[:1], metrics=[road],
          out=folder / "warm-out", progress=False)  # warm-up (JIT, caches)
    forward, explain = Timed(explainer.engine, "forward"), Timed(explainer, "explain")
    metric = Timed(road, "score")
    start = time.perf_counter()
    audit(explainer, listing, methods="gradcam", layers=layers, metrics=[road],
          out=folder / f"audit-{name}", shard_size=SHARD, batch_size=BATCH, progress=False)
    wall = time.perf_counter() - start
    n = len(PHOTOS)
    rest = wall - explain.seconds - metric.seconds  # clean forwards, images, rows, files
    return [name, str(n), str(layers), f"{wall:.1f}", f"{n / wall:.2f}", f"{forward.seconds:.1f}",
            f"{wall / forward.seconds:.2f}×", f"{explain.seconds:.1f}", f"{metric.seconds:.1f}",
            f"{rest:.1f}"]


def ray_scaling(folder: Path) -> list[list[str]]:
    """Ray with 1 and 2 single-threaded actors, each run in a fresh process with its own local
    Ray (3 logical CPUs: the actors plus one for the read/preprocess tasks). Steady-state
    throughput: the shards stored after the first round (one shard per actor, which carries
    Ray's and the actors' startup) over the time they took."""
    import json

    import torch
    import torchvision

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "resnet18.onnx"
    torch.onnx.export(torchvision.models.resnet18(weights=None).eval(),
                      (torch.randn(1, 3, 128, 128),), str(model), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    listing = photo_csv(folder, RAY_IMAGES)
    rows, rates = [], {}
    for actors in (1, 2):
        code = (
            "import json, ray, time\nfrom camonnx.audit_run import audit\n"
            "from camonnx.recipe import Preprocess\n"
            "ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)\n"
            "t0 = time.perf_counter(); times = []\n"
            f"audit({str(model)!r}, {str(listing)!r}, layers=[0, 9, 19], out="
            f"{str(folder / f'ray-{actors}')!r}, shard_size={RAY_SHARD}, ray=True, "
            f"actors={actors}, progress=False, preprocess=Preprocess(size=(128, 128), resize=144), "
            "on_shard=lambda a, b: times.append(time.perf_counter() - t0))\n"
            "print('TIMES', json.dumps(times))\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        times = json.loads(out.stdout.split("TIMES", 1)[1])
        steady = len(times) - actors
        rates[actors] = steady * RAY_SHARD / (times[-1] - times[actors - 1])
        rows.append([str(actors), f"{times[-1]:.1f}", f"{times[actors - 1]:.1f}",
                     f"{steady * RAY_SHARD} in {times[-1] - times[actors - 1]:.1f}",
                     f"{rates[actors]:.2f}"])
    for row, actors in zip(rows, (1, 2)):
        row.append(f"{rates[actors] / rates[1]:.2f}×")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "in-process", "ray"], default="all")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    note = (f"Machine: {machine()}; load averages (1, 5, 15 min) at the start {load[0]:.1f}, "
            f"{load[1]:.1f}, {load[2]:.1f} (shared machine: one run per configuration).")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.part in ("all", "in-process"):
            from camonnx.models import default_model

            rows = [in_process("EfficientNet-Lite0 (default)", default_model(), folder / "lite0"),
                    in_process("ResNet-50 (random)", export_resnet50(folder / "r50.onnx"),
                               folder / "r50")]
            header = ["model", "images", "layers", "audit s", "images/s", "forwards s",
                      "audit / forwards", "explain s", "ROAD s (with its forwards)", "rest s"]
            report("audit", args, "\n\n".join([
                "### Dataset audit, in-process (`bench/bench_audit.py`)", note,
                "8 scikit-image photos, Grad-CAM at 3 deep layers, ROAD, 1 trial, shards of "
                f"{SHARD}, batch {BATCH}, after a one-image warm-up audit. Timed inside the same "
                "run: *forwards*, every ONNX Runtime forward the audit makes (clean images + 8 "
                "imputed per layer and image: 200 images); *explain*, the explanations; *ROAD*, "
                "the metric (ranking, imputation and its forwards); *rest*, everything else "
                "(clean forwards, reading images, rows, Parquet, manifest, summary, plot). "
                "Target: audit ≤ 1.3× the forwards it needs.",
                table(header, rows)]))
        if args.part in ("all", "ray"):
            rows = ray_scaling(folder / "ray")
            report("audit-ray", args, "\n\n".join([
                "### Dataset audit on Ray (`bench/bench_audit.py --part ray`)", note,
                f"ResNet-18 (random) at 128×128, {RAY_IMAGES} photos, layers 0, 9, 19, Grad-CAM, "
                f"ROAD, shards of {RAY_SHARD}, single-threaded actors, a local Ray with 3 logical "
                "CPUs per run (a fresh process each). Steady state: the images of the shards "
                "stored after the first round (one shard per actor, which carries Ray's and the "
                "actors' start-up) over the time they took. Target: 2 actors ≥ 1.7× the "
                "throughput of 1.",
                table(["actors", "run s", "first round done at s", "steady images in s",
                       "images/s", "speed-up"], rows)]))


def report(section: str, args, body: str) -> None:
    print(body, flush=True)
    if not args.no_write:
        write_section(section, body)


if __name__ == "__main__":
    main()
