"""Sanity checks: the cascading model-parameter randomisation test on the pretrained default model.

EfficientNet-Lite0 (ImageNet weights, 50 parameter layers), five scikit-image photos (chelsea,
coffee, astronaut, rocket, the left stereo_motorcycle image), the suggested layer, methods
gradcam, gradcam++, layercam, eigencam and randomcam (the baseline), CPU. ``camonnx.sanity_checks.sanity``
with the default depths (0 and 10 geometrically spaced depths up to 50) and the random-logit
test. Reported: each similarity measure (mean over the photos) at a few depths, and the time of
one randomisation step (randomise + write, load with the parity check, explain every method,
compare) against one plain explain of the same photos with every method (the baseline, the
median of --repeat runs in the same process, after a warm-up).

    python bench/bench_sanity.py [--repeat 3] [--seed 0] [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from results import machine, table, write_section  # noqa: E402

PHOTOS = {"chelsea": lambda d: d.chelsea(), "coffee": lambda d: d.coffee(),
          "astronaut": lambda d: d.astronaut(), "rocket": lambda d: d.rocket(),
          "motorcycle": lambda d: d.stereo_motorcycle()[0]}
METHODS = ("gradcam", "gradcam++", "layercam", "eigencam", "randomcam")
SHOWN = (1, 2, 5, 10, 23, 50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of the baseline explain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    import skimage.data

    from camonnx.explainer import Explainer
    from camonnx.sanity_checks import sanity
    from camonnx.similarity import METRICS

    explainer = Explainer()
    images = [load(skimage.data) for load in PHOTOS.values()]
    x, _ = explainer.prepare(images)

    def plain() -> None:
        for method in METHODS:
            explainer.explain(x, method=method, layers="suggested", progress=False)

    plain()  # warm-up (kernels, caches)
    times = []
    for _ in range(args.repeat):
        tick = time.perf_counter()
        plain()
        times.append(time.perf_counter() - tick)
    baseline = statistics.median(times)

    result = sanity(explainer, images, methods=METHODS, layers="suggested", seed=args.seed)
    print(result.summary(), flush=True)
    t = result.timings
    steps = len(result.steps)
    shown = [d for d in SHOWN if d in result.steps]
    logit = result.random_logit_mean()
    tables = []
    for metric in METRICS:
        rows = [[m] + [f"{result.curve[metric][m][result.steps.index(d)]:.3f}" for d in shown]
                + [f"{logit[metric][m]:.3f}"] for m in METHODS]
        header = ["method"] + [f"depth {d} ({result.step_labels[result.steps.index(d)]})"
                               for d in shown] + ["random logit"]
        tables.append(f"**{metric}**\n\n{table(header, rows)}")
    per = {k: t[k] / steps for k in ("randomise", "load", "explain", "compare")}
    timing = table(["", "seconds"], [
        ["one plain explain, 5 photos × 5 methods (baseline, median of "
         f"{args.repeat})", f"{baseline:.2f}"],
        ["one randomisation step (mean of the run's steps)", f"{t['per_step']:.2f}"],
        ["  of which randomise + write the model", f"{per['randomise']:.2f}"],
        ["  of which load (graph, mirror, parity check)", f"{per['load']:.2f}"],
        ["  of which explain (5 methods)", f"{per['explain']:.2f}"],
        ["  of which compare (3 measures × 5 methods × 5 photos)", f"{per['compare']:.2f}"],
        ["step / baseline", f"{t['per_step'] / baseline:.2f}×"],
        [f"whole run ({steps} depths + random logit)", f"{t['total']:.1f}"],
    ])
    body = (f"## Sanity checks: model-parameter randomisation (bench/bench_sanity.py)\n\n"
            f"Machine: {machine()}\n\n"
            f"Pretrained EfficientNet-Lite0 (50 parameter layers), the suggested layer "
            f"({result.layers[0]}), photos {', '.join(PHOTOS)}, cascading randomisation from "
            f"the logits down with seed {args.seed} (docs/sanity.md). Each value: the similarity "
            f"of the randomised model's map to the original's, mean over the 5 photos; depth j "
            f"= the j parameter layers nearest the logits re-initialised (the column names the "
            f"deepest one); depth 0 is 1 by construction. Random logit: the map of a random "
            f"other class against the target's.\n\n" + "\n\n".join(tables)
            + f"\n\nTime per randomisation step against one plain explain of the same photos "
              f"with the same methods, in the same run:\n\n{timing}")
    print(body)
    if not args.no_write:
        write_section("sanity", body)


if __name__ == "__main__":
    main()
