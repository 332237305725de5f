"""ROAD and ybROAD: camonnx vs pytorch-grad-cam's ROADCombined, and ROAD's cost against its forwards.

CPU, the bundled 224×224 cat.

1. One ROAD combined score on ResNet-50 (random weights, seed 0; fractions 0.2/0.4/0.6/0.8 ×
   MoRF/LeRF = 8 imputed images) of the same map (Grad-CAM at the suggested layer, upsampled):
   camonnx's ``road_score`` (batched multigrid-CG imputation + one ONNX Runtime batch) against
   ``ROADCombined(percentiles=[20, 40, 60, 80])`` with ``ClassifierOutputSoftmaxTarget`` on the
   torch model. Their imputation is timed alone by running their ``RemoveMostRelevantFirst`` /
   ``RemoveLeastRelevantFirst`` + ``NoisyLinearImputer`` on the same map; their forward time is
   the rest of their call.
2. Full ybROAD (Grad-CAM, every conv layer, one image) on the default model (EfficientNet-Lite0,
   49 layers, 392 masks, 2 trials) and on ResNet-50 (53 layers, 424 masks, 1 trial): ranking,
   imputation and forward times, each run in a fresh process. With ``--before TREE`` (a checkout
   of the baseline, e.g. ``git worktree add /tmp/before HEAD``) the same runs are made with that
   tree's camonnx too, alternating before / after, so that the ratios (rank + imputation) /
   forward of both come from the same period of a shared machine's load; the ROAD scores of the
   two (same seeds) are compared against the trial-to-trial spread.

Targets (issues): imputation ≥ 20× faster than pytorch-grad-cam's; a score costs ≤ 1.25× its own
forward passes; on the default model, ranking + imputation ≤ 0.25× the forwards.

    python bench/bench_road.py [--repeat 3] [--before TREE] [--no-ybroad] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from results import export_resnet50, machine, resnet50, table, write_section  # noqa: E402

PERCENTILES = [20, 40, 60, 80]


def median_timings(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], float)}


def theirs(x, cam, cls: int, repeat: int) -> dict:
    """pytorch-grad-cam: the full ROADCombined call, and its imputation alone."""
    import torch
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer, ROADCombined
    from pytorch_grad_cam.metrics.perturbation_confidence import (RemoveLeastRelevantFirst,
                                                                  RemoveMostRelevantFirst)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = resnet50()
    metric = ROADCombined(percentiles=PERCENTILES)
    targets = [ClassifierOutputSoftmaxTarget(cls)]
    with torch.no_grad():
        model(x)  # warm-up
    totals, imputes, scores = [], [], []
    for _ in range(repeat):
        start = time.perf_counter()
        scores.append(float(metric(x, cam, targets, model)[0]))
        totals.append(time.perf_counter() - start)
        start = time.perf_counter()
        for p in PERCENTILES:
            for kind in (RemoveMostRelevantFirst, RemoveLeastRelevantFirst):
                kind(p, NoisyLinearImputer())(x[0].cpu(), torch.from_numpy(cam[0]))
        imputes.append(time.perf_counter() - start)
    total, impute = statistics.median(totals), statistics.median(imputes)
    return {"total": total, "impute": impute, "forward": total - impute, "score": statistics.mean(scores)}


def use_tree(tree: Path) -> None:
    """Import camonnx from the checkout ``tree`` instead of the installed one (its package-dir
    mapping: camonnx/, kernels/ as camonnx.kernels, models/ as camonnx.models)."""
    import importlib.util

    for name, folder in (("camonnx", "camonnx"), ("camonnx.kernels", "kernels"),
                         ("camonnx.models", "models")):
        spec = importlib.util.spec_from_file_location(
            name, tree / folder / "__init__.py", submodule_search_locations=[str(tree / folder)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def child(tree: Path, onnx: str | None, trials: int) -> None:
    """One ybROAD run (Grad-CAM, all layers, the cat) with ``tree``'s camonnx; prints JSON."""
    use_tree(tree)
    from camonnx.explainer import Explainer
    from camonnx.models import default_image
    from camonnx.road import ybroad

    explainer = Explainer(onnx) if onnx else Explainer()
    x, _ = explainer.prepare([str(default_image())])
    ybroad(explainer, x, method="gradcam", layers=[0], progress=False)  # warm-up: JIT cache, ORT
    yb = ybroad(explainer, x, method="gradcam", layers="all", trials=trials, progress=False)
    print(json.dumps({"timings": yb.timings, "scores": yb.scores.tolist(), "layers": len(yb.layers),
                      "solver": yb.solver, "solver_file": sys.modules["camonnx.road_imputation"].__file__}))


def _commit(tree: Path) -> str:
    return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or str(tree)


def run_child(tree: Path, onnx: str | None, trials: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(tree), "--trials", str(trials)]
    if onnx:
        cmd += ["--onnx", onnx]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=str(tree)).stdout
    return json.loads(out.strip().splitlines()[-1])


def ybroad_cost(trees: dict, models: list, repeat: int) -> tuple[list, list]:
    """Paired ybROAD runs: for each model, ``repeat`` rounds of one run per tree (alternating
    their order). Returns the table rows and the text lines."""
    import numpy as np

    rows, notes = [], []
    for label, onnx, trials in models:
        runs = {name: [] for name in trees}
        for r in range(repeat):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for name in order:
                runs[name].append(run_child(trees[name], onnx, trials))
        ratio = {name: statistics.median((d["timings"]["rank"] + d["timings"]["impute"])
                                         / d["timings"]["forward"] for d in runs[name])
                 for name in trees}
        med = {name: median_timings([d["timings"] for d in runs[name]]) for name in trees}
        first = runs["after"][0]
        row = [label, str(first["layers"]), str(first["timings"]["forward_images"]), str(trials)]
        for name in ("before", "after"):
            if name in trees:
                t = med[name]
                row += [f"{t['rank']:.2f} / {t['impute']:.2f} / {t['forward']:.2f}",
                        f"**{ratio[name]:.2f}×**"]
            else:
                row += ["(no --before)", "–"]
        row.append(f"{runs['after'][0]['solver']['max_iterations']}")
        if "before" in trees:
            row.append(f"{ratio['before'] / ratio['after']:.1f}×")
            a = np.array(runs["after"][0]["scores"])
            b = np.array(runs["before"][0]["scores"])
            change = np.abs(a - b).max()
            spread = f"{a.std(axis=0).mean():.4f}" if a.shape[0] > 1 else "–"
            notes.append(f"{label}, {trials} trial(s): max |ROAD after − ROAD before| over "
                         f"{a.size} (trial, layer) scores = {change:.1e}, mean "
                         f"{np.abs(a - b).mean():.1e} (same seeds, other noise draws); "
                         f"trial-to-trial std of a score (mean over layers) = {spread}.")
        else:
            row.append("–")
        rows.append(row)
    return rows, notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-ybroad", action="store_true", help="skip the full ybROAD run")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--before", type=Path, help="a checkout of the baseline (git worktree) to "
                        "pair the ybROAD runs with")
    parser.add_argument("--ybroad-repeat", type=int, default=1,
                        help="paired ybROAD rounds per model (default 1)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--trials", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.onnx, args.trials)

    import numpy as np

    from camonnx.explainer import Explainer
    from camonnx.models import default_image
    from camonnx.road import road_score

    tmp = Path(tempfile.mkdtemp(prefix="bench-road-"))
    onnx_path = export_resnet50(tmp / "resnet50.onnx")
    explainer = Explainer(onnx_path)
    x, _ = explainer.prepare([str(default_image())])
    explanation = explainer.explain(x, method="gradcam", layers="suggested", normalize="none",
                                    progress=False)
    cam = explanation.maps[0].astype(np.float32)          # (1, 224, 224)
    cls = int(explanation.targets[0])

    # --- camonnx: one ROAD score ---------------------------------------------------------
    road_score(explainer, x, cam, targets=cls)             # warm-up (numba cache load, ORT)
    runs, first_scores = [], []
    for _ in range(args.repeat):
        result = road_score(explainer, x, cam, targets=cls, seed=len(runs))
        runs.append(dict(result.timings))
        first_scores.append(float(result.score[0]))
    ours = median_timings(runs)
    cost = statistics.median(r["total"] / r["forward"] for r in runs)   # per run, then median
    ref = theirs(x, cam, cls, max(1, min(args.repeat, 2)))

    rows = [
        ["camonnx road_score", f"{ours['rank'] * 1e3:.0f}", f"{ours['impute'] * 1e3:.0f}",
         f"{ours['forward'] * 1e3:.0f}", f"{ours['total'] * 1e3:.0f}", f"{cost:.2f}×",
         f"{np.mean(first_scores):+.4f}"],
        ["pytorch-grad-cam ROADCombined", "(in imputation)", f"{ref['impute'] * 1e3:.0f}",
         f"{ref['forward'] * 1e3:.0f}", f"{ref['total'] * 1e3:.0f}",
         f"{ref['total'] / ref['forward']:.2f}×", f"{ref['score']:+.4f}"],
    ]
    speedup = ref["impute"] / ours["impute"]
    score_table = table(["one ROAD score (8 imputed images)", "rank (ms)", "imputation (ms)",
                         "forward (ms)", "total (ms)", "total / forward", "ROAD"], rows)
    lines = [
        "## ROAD and ybROAD (bench/bench_road.py)",
        "",
        "ResNet-50 (random weights), 224×224 cat, CPU; the map is Grad-CAM at the suggested layer "
        f"(class {cls}), fractions 0.2/0.4/0.6/0.8 × MoRF/LeRF (their percentiles 20/40/60/80).",
        f"Machine: {machine()}.",
        "",
        score_table,
        "",
        f"Imputation: camonnx **{speedup:.0f}×** faster than pytorch-grad-cam's (target ≥ 20×); "
        f"a whole camonnx score (road_score call) costs **{cost:.2f}×** its own forward passes "
        f"(target ≤ 1.25×; per-run ratio, median). camonnx's forward: 1 + 8 images through ONNX "
        f"Runtime (one batch of 8); theirs: 8 + 8 single-image torch forwards (each threshold "
        f"re-runs the clean image). Medians of {args.repeat} runs after a warm-up (theirs: "
        f"{max(1, min(args.repeat, 2))}, imputation timed alone by running their "
        "Remove*RelevantFirst + NoisyLinearImputer on the same map; their forward = the rest "
        "of their call). Same ROAD up to noise (the random-weight softmax is nearly flat, so "
        "the values are small); agreement is tested on a pretrained model in tests/test_road.py. "
        "Timings on a shared 2-core machine vary ±20 % with other load.",
    ]

    # --- full ybROAD: (rank + imputation) / forward, before and after -------------------------
    if not args.no_ybroad:
        trees = {"after": HERE.parent.resolve()}
        if args.before:
            trees = {"before": args.before.resolve(), **trees}
        models = [("EfficientNet-Lite0 (default, pretrained)", None, 1),
                  ("EfficientNet-Lite0 (default, pretrained)", None, 2),
                  ("ResNet-50 (random weights)", str(onnx_path), 1)]
        rows, notes = ybroad_cost(trees, models, args.ybroad_repeat)
        lines += [
            "",
            table(["ybROAD, 1 image, Grad-CAM", "layers", "forwarded images", "trials",
                   "before: rank / imputation / forward (s)", "before: (rank + imputation) / forward",
                   "after: rank / imputation / forward (s)", "after: (rank + imputation) / forward",
                   "max CG iterations (after)", "ratio before / after"], rows),
            "",
            ("Each cell is one ybROAD run" if args.ybroad_repeat == 1 else
             f"Each cell is the median of {args.ybroad_repeat} ybROAD runs (ratios: of the per-run "
             "ratios)")
            + " (Grad-CAM, every conv layer, the cat) in a fresh process "
            "after a one-layer warm-up; before and after alternate"
            + (f" (before: a worktree of commit {_commit(args.before)})" if args.before else "")
            + ". Ratios, not seconds, are the result: the machine is shared (load average "
            f"{os.getloadavg()[0]:.1f} at the end). Target on the default model: "
            "(rank + imputation) / forward ≤ 0.25×. After = each V-cycle and the full-multigrid "
            "start as one compiled call (kernels/_impute_cycle.py), unsigned span indices "
            "(k_prolong_add 5× faster), a vectorised stopping test, the imputed image composed "
            "on the active spans only; the noise as one field per image and trial (common "
            "random numbers; before: one draw per removed pixel and mask); the masks by "
            "selection on unique keys instead of a full sort (bit-identical masks); and the "
            "forwards on ONNX Runtime's lean session (class scores only, taps not exposed: "
            "faster forwards, so a larger ratio for the same imputation seconds). The ROAD "
            "scores differ from before by the noise realisation only (compare with the "
            "trial-to-trial spread).",
            *[f"- {n}" for n in notes],
        ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("road", body)


if __name__ == "__main__":
    main()
