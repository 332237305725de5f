"""CAManim end to end: camonnx (one all-layer explanation + render + MP4) vs the reference approach.

ResNet-50 (random weights, seeded), the bundled cat at 224×224, all 53 conv layers, Grad-CAM, CPU.

- camonnx: ``explain(..., normalize="none")`` (one forward + one backward for every layer), then
  ``camonnx.animate`` (normalise, JET overlay + caption per frame, H.264 MP4 via imageio-ffmpeg).
  The model load (ONNX checks, torch mirror, parity probe) is reported apart.
- reference (as CAManim does it): one pytorch-grad-cam ``GradCAM`` object per ``Conv2d`` layer
  (a forward + backward each), each frame rendered with ``show_cam_on_image`` and a matplotlib
  figure carrying the caption, then the same MP4 encoder (libx264, yuv420p) as camonnx.

Target (issue): camonnx ≥ 10× faster end to end. The reference runs once (about a minute).

    python bench/bench_animate.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from results import export_resnet50, resnet50  # noqa: E402


def run_camonnx(onnx_path: Path, image, out: Path, repeat: int) -> dict:
    import camonnx
    from camonnx.animation import explain_for_animation
    from camonnx.explainer import Explainer

    start = time.perf_counter()
    explainer = Explainer(onnx_path)
    load = time.perf_counter() - start

    def once(norm: str = "local") -> tuple[float, float]:
        t0 = time.perf_counter()
        explanation = explain_for_animation(explainer, [image], method="gradcam", progress=False)
        t1 = time.perf_counter()
        camonnx.animate(explanation, out, norm=norm, progress=False)
        return t1 - t0, time.perf_counter() - t1

    first = once()
    warm = [once() for _ in range(repeat)]
    both = [once("both") for _ in range(repeat)]
    return {"load": load, "layers": len(explainer.layers), "first": sum(first),
            "explain": statistics.median(w[0] for w in warm),
            "animate": statistics.median(w[1] for w in warm),
            "total": statistics.median(sum(w) for w in warm),
            "total_both": statistics.median(sum(w) for w in both)}


def run_reference(image, out: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import preprocess_image, show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from camonnx.animation import Frames, _write_mp4

    start = time.perf_counter()
    model = resnet50()
    load = time.perf_counter() - start
    rgb = image.astype(np.float32) / 255.0
    x = preprocess_image(rgb, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]

    t0 = time.perf_counter()
    with torch.no_grad():
        cls = int(model(x).argmax())
    cams = []
    for name, conv in convs:  # CAManim: one GradCAM object (forward + backward) per layer
        with GradCAM(model=model, target_layers=[conv]) as cam:
            cams.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(cls)])[0])
    t1 = time.perf_counter()
    frames = []
    for k, ((name, _), grayscale) in enumerate(zip(convs, cams)):
        visual = show_cam_on_image(rgb, grayscale, use_rgb=True)
        fig = plt.figure(figsize=(2.24, 2.86), dpi=100)
        ax = fig.add_axes([0, 0.217, 1, 0.783])
        ax.imshow(visual)
        ax.axis("off")
        fig.text(0.02, 0.02, f"{name}\nlayer {k + 1} / {len(convs)} · gradcam · local\nclass {cls}",
                 fontsize=7, color="black")
        fig.canvas.draw()
        frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
        plt.close(fig)
    t2 = time.perf_counter()
    h, w = frames[0].shape[:2]
    frames = [f[: h - h % 2, : w - w % 2] for f in frames]
    hold = 5
    _write_mp4(Frames(frames + [frames[-1]], [""] * (len(frames) + 1), [""] * (len(frames) + 1),
                      [0.2] * len(frames) + [hold * 0.2], 5.0), out)
    t3 = time.perf_counter()
    return {"load": load, "layers": len(convs), "cams": t1 - t0, "render": t2 - t1,
            "encode": t3 - t2, "total": t3 - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="warm camonnx runs (median)")
    args = parser.parse_args()

    import imageio.v3 as iio
    import numpy as np

    from camonnx.images import prepare_images
    from camonnx.recipe import Preprocess
    from camonnx.models import default_image
    from results import machine, table, write_section

    _, crops = prepare_images([default_image()], Preprocess())
    image = crops[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        onnx_path = tmp / "resnet50.onnx"
        export_resnet50(onnx_path)
        ours = run_camonnx(onnx_path, image, tmp / "camonnx.mp4", args.repeat)
        ref = run_reference(image, tmp / "reference.mp4")
        for name in ("camonnx.mp4", "reference.mp4"):
            n = iio.imread(tmp / name, index=None).shape[0]
            assert n == 53 + 5, f"{name}: {n} frames"
        assert np.isfinite(ours["total"])

    speedup = ref["total"] / ours["total"]
    rows = [
        ["camonnx (warm, median of %d)" % args.repeat,
         f"{ours['explain']:.2f} (explain: 1 fwd + 1 bwd)", f"{ours['animate']:.2f} (render + encode)",
         f"{ours['total']:.2f}", f"{ours['load']:.2f}", "1×"],
        ["camonnx, first call in process", "", "", f"{ours['first']:.2f}", "", ""],
        ["camonnx, --norm both (warm)", "", "", f"{ours['total_both']:.2f}", "", ""],
        ["reference: GradCAM per Conv2d + matplotlib frames (once)",
         f"{ref['cams']:.2f} ({ref['layers']} × fwd + bwd)",
         f"{ref['render']:.2f} + {ref['encode']:.2f} (render + encode)", f"{ref['total']:.2f}",
         f"{ref['load']:.2f}", f"{speedup:.1f}× slower"],
    ]
    body = "\n".join([
        "## CAManim end to end (bench/bench_animate.py)",
        "",
        f"ResNet-50 (random weights), 224×224 cat, all {ours['layers']} conv layers, Grad-CAM, "
        "MP4 at 5 fps (53 frames + 1 s hold), CPU.",
        f"Machine: {machine()}.",
        "",
        table(["approach", "maps (s)", "frames + MP4 (s)", "end to end (s)", "model load (s)", "vs camonnx"],
              rows),
        "",
        f"camonnx is **{speedup:.1f}×** faster end to end (target ≥ 10×). End to end excludes the "
        "model load on both sides (camonnx's includes ONNX checks, the torch mirror and a parity "
        "probe; the reference builds the torch model).",
    ])
    write_section("animate", body)
    print(body)


if __name__ == "__main__":
    main()
