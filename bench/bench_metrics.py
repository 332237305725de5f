"""Faithfulness metrics: each metric's cost against its forward passes, and RISE's ROAD and time.

1. Cost. The pretrained default model (EfficientNet-Lite0), the bundled cat, Grad-CAM at three
   layers (a third, two thirds, and the last): every metric of the catalogue through
   ``camonnx.metrics.evaluate.evaluate``; its own work against the forward passes it needs,
   (metric − forward) / forward, both measured inside the same call.
2. RISE. The same model on scikit-image's chelsea, coffee, astronaut, rocket and the left
   stereo_motorcycle image: ROAD (3 seeded trials, docs/metrics.md#road) of RISE's map at each
   mask count, next to Grad-CAM and Grad-CAM++ at the suggested (last) layer; RISE's time per
   image against one Grad-CAM explanation and against an unbatched loop of single-image
   forwards (N × one single-image ORT forward, both measured in the same run).
3. Speed. RISE (512 masks, chelsea) against a loop of one ORT forward per masked image, back to
   back (paired), the way an unbatched implementation runs.

    python bench/bench_metrics.py [--part cost rise speed] [--masks 1280 5000] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results import machine, paired, table, timeit, write_section  # noqa: E402

PHOTOS = {"chelsea": lambda d: d.chelsea(), "coffee": lambda d: d.coffee(),
          "astronaut": lambda d: d.astronaut(), "rocket": lambda d: d.rocket(),
          "motorcycle": lambda d: d.stereo_motorcycle()[0]}
TRIALS = 3


def load() -> str:
    return "load average %.1f" % os.getloadavg()[0]


def cost(explainer) -> str:
    from camonnx.metrics import CATALOGUE, get_metric
    from camonnx.metrics.evaluate import evaluate
    from camonnx.models import default_image

    n = len(explainer.layers)
    layers = sorted({explainer.layers[i].index for i in (n // 3, 2 * n // 3, n - 1)})
    image = str(default_image())
    one_step = {"pixels_per_step": 224 * 224}  # warm-up of every metric (Numba cache, SciPy)
    evaluate(explainer, image, [get_metric(name, **(one_step if name in ("deletion", "insertion")
                                                    else {})) for name in CATALOGUE],
             layers=layers[-1:], progress=False)
    rows = []
    for name in sorted(CATALOGUE):
        start_load = load()
        curve = evaluate(explainer, image, name, methods="gradcam", layers=layers,
                         progress=False)[0]
        t = curve.timings
        own = t["metric"] - t["forward"]
        rows.append([name, f"{t['forward_images']}", f"{t['metric']:.2f}", f"{t['forward']:.2f}",
                     f"{t['forward'] * 1e3 / t['forward_images']:.1f}", f"{own:.2f}",
                     f"{own / t['forward']:.1%}", start_load])
        print(rows[-1], flush=True)
    return "\n".join([
        "## Metric cost against the forward passes (bench/bench_metrics.py)",
        "",
        f"EfficientNet-Lite0 (pretrained, default model), the bundled cat at 224×224, Grad-CAM at "
        f"layers {layers}, one trial, batch 64, CPU. Machine: {machine()}.",
        "",
        table(["metric", "images forwarded", "metric total (s)", "forward (s)", "forward ms/img",
               "own work (s)", "own / forward", "load at its start"], rows),
        "",
        "Own work = the metric's total − its forward time (ranking, blur, masks, imputation); "
        "both measured inside the same call, after a warm-up call of every metric. "
        "deletion/insertion: 224 pixels a step (225 images per map); drop/increase: one masked "
        "image per map; road: 8 imputed images per map (+ 1 clean forward in every row). One run "
        "on a shared, busy machine.",
    ])


def rise(explainer, masks: list[int]) -> str:
    import skimage.data

    from camonnx.metrics.base import logits_of
    from camonnx.metrics.evaluate import evaluate

    x1, _ = explainer.prepare([PHOTOS["chelsea"](skimage.data)])
    one = timeit(lambda: logits_of(explainer.engine, x1), repeat=9)
    batch = x1.expand(32, -1, -1, -1).contiguous()
    per_image_batched = timeit(lambda: logits_of(explainer.engine, batch), repeat=3) / 32
    start = load()
    rows, scores, times, explain_times = [], {}, {m: [] for m in masks}, []
    for photo, make in PHOTOS.items():
        image = make(skimage.data)
        row = [photo]
        for method in ("gradcam", "gradcam++"):
            curve = evaluate(explainer, image, "road", methods=method, layers="suggested",
                             trials=TRIALS, progress=False)[0]
            scores.setdefault(method, []).append(curve.mean)
            row.append(f"{curve.mean:+.4f}")
            if method == "gradcam":
                row[0] = f"{photo} ({curve.labels[0] or curve.targets[0]})"
                explain_times.append(timeit(lambda: explainer.explain(
                    image, method="gradcam", layers="suggested", progress=False), repeat=3))
        for count in masks:
            curve = evaluate(explainer, image, "road", methods="rise", layers="suggested",
                             trials=TRIALS, progress=False, masks=count)[0]
            scores.setdefault(f"rise {count}", []).append(curve.mean)
            times[count].append(curve.timings["explain"])
            row.append(f"{curve.mean:+.4f} ({curve.timings['explain']:.1f} s)")
        rows.append(row)
        print(row, flush=True)
    mean_row = ["**mean**"] + [f"**{statistics.mean(scores[k]):+.4f}**"
                               for k in ["gradcam", "gradcam++"] + [f"rise {m}" for m in masks]]
    rows.append(mean_row)
    gradcam_s = statistics.median(explain_times)
    speed = [[f"{m}", f"{statistics.mean(times[m]):.1f}",
              f"{statistics.mean(times[m]) / gradcam_s:.0f}×",
              f"{m * one:.1f}", f"{m * one / statistics.mean(times[m]):.2f}×",
              f"{statistics.mean(times[m]) / (m * per_image_batched):.2f}×"] for m in masks]
    header = ["photo (class)", "gradcam ROAD", "gradcam++ ROAD"] + \
        [f"RISE {m} masks ROAD (time)" for m in masks]
    return "\n".join([
        "## RISE: faithfulness and time (bench/bench_metrics.py)",
        "",
        f"EfficientNet-Lite0 (pretrained), scikit-image photos at 224×224, CPU; ROAD "
        f"(fractions 0.2/0.4/0.6/0.8, {TRIALS} seeded trials, mean) of Grad-CAM and Grad-CAM++ at the "
        f"suggested (last) layer and of RISE (8×8 cells, keep 0.5, seed 0). "
        f"Machine: {machine()}; {start} at the start of this part, {load()} at its end.",
        "",
        table(header, rows),
        "",
        table(["masks", "RISE s / image", "÷ one gradcam explain",
               "unbatched loop s (N × 1-image forward)", "loop / RISE",
               "RISE / (N × batched forward per image)"], speed),
        "",
        f"Baselines measured in the same run: one Grad-CAM explanation of one photo at the last "
        f"layer {gradcam_s * 1e3:.0f} ms (median); one single-image ORT forward {one * 1e3:.1f} ms; "
        f"per image in a batch of 32, {per_image_batched * 1e3:.1f} ms. The reference figures of "
        f"the issue (OpenVINO XAI's RISE, same model and photos): +0.238 at 5,000 masks, +0.197 "
        f"at 1,280; Grad-CAM++ +0.171, Grad-CAM +0.151. One run on a shared, busy machine.",
    ])


def speed(explainer, masks: int = 512, repeat: int = 3) -> str:
    """RISE against the unbatched loop it replaces, back to back (:func:`results.paired`)."""
    import skimage.data

    from camonnx.masking import masked
    from camonnx.methods.rise import draw_masks, upsampled_masks
    from camonnx.metrics.base import logits_of

    x, _ = explainer.prepare([PHOTOS["chelsea"](skimage.data)])
    grids, shifts = draw_masks(masks, 8, 0.5, (224, 224), 0)
    images = masked(x[0], upsampled_masks(grids, shifts, (224, 224), x.device))
    loop = lambda: [logits_of(explainer.engine, images[i:i + 1]) for i in range(masks)]  # noqa: E731
    rise_call = lambda: explainer.explain(x, method="rise", layers="suggested",  # noqa: E731
                                          masks=masks, progress=False)
    start = load()
    loop_s, rise_s, ratio = paired(loop, rise_call, repeat=repeat)
    return "\n".join([
        "## RISE against an unbatched loop (bench/bench_metrics.py)",
        "",
        f"EfficientNet-Lite0, chelsea at 224×224, CPU, {masks} masks. Machine: {machine()}; "
        f"{start} at the start, {load()} at the end.",
        "",
        table(["unbatched loop: one ORT forward per masked image (s)", "camonnx RISE explain (s)",
               "RISE / loop (median of pairs)"],
              [[f"{loop_s:.2f}", f"{rise_s:.2f}", f"{ratio:.2f}×"]]),
        "",
        f"The loop forwards the {masks} masked images (made beforehand, not timed) one at a "
        f"time, as a per-mask loop does; camonnx's RISE draws and builds its masks, forwards "
        f"them in batches of 32 and sums the map. Medians of {repeat} back-to-back pairs after a "
        "warm-up pair. On a GPU the batches run on the device (not measured here: no GPU).",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", nargs="+", choices=["cost", "rise", "speed"],
                        default=["cost", "rise", "speed"])
    parser.add_argument("--masks", nargs="+", type=int, default=[1280])
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    from camonnx.explainer import Explainer

    explainer = Explainer()
    for part in args.part:
        body = {"cost": lambda: cost(explainer), "rise": lambda: rise(explainer, args.masks),
                "speed": lambda: speed(explainer)}[part]()
        print(body, flush=True)
        if not args.no_write:  # one RISE section per mask set other than the default 1280
            plain = part != "rise" or args.masks == [1280]
            suffix = "" if plain else "-" + "-".join(map(str, args.masks))
            write_section(f"metrics-{part}{suffix}", body)


if __name__ == "__main__":
    main()
