"""Fingerprint of everything camonnx computes, to show that a refactor changed no result.

Run it before and after a change that must keep behaviour (``python bench/snapshot_outputs.py
before.json``, then ``after.json``) and compare with ``--compare before.json after.json``: every
map, raw map, logit, ROAD score and written file of every registered method on two models (a
random-weight ResNet-18 export and the pretrained default model), plain and with Gradual
Extrapolation, is hashed (SHA-256 of the float32 bytes), so "same" means bit-identical. Also
hashed: the saved explanation folder, CAManim's PNG frames, Gradual Extrapolation's comparison
PNGs, and ybROAD's scores, CSV, JSON (without its timings) and plot.

``--full-route`` turns the pass engine's partial route for deep layers off (it changes maps
within float32 rounding, see tests/test_partial_pass.py), to compare with code from before it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def digest(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def files_digest(folder: Path) -> dict[str, str]:
    """Hashes of the written files; manifest.json is hashed without its version/time fields."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".json":
                doc = json.loads(data)
                for entry in [doc, *doc.get("results", [])]:
                    entry.pop("timings", None)  # wall-clock times differ run to run
                    if "model" in entry:  # the export lives in a fresh temporary folder
                        entry["model"] = Path(entry["model"]).name
                data = json.dumps(doc, sort_keys=True).encode()
            elif path.suffix == ".npz":
                with np.load(path) as npz:
                    data = b"".join(npz[k].tobytes() for k in sorted(npz.files))
            out[str(path.relative_to(folder))] = hashlib.sha256(data).hexdigest()[:16]
    return out


def models(work: Path) -> dict[str, Path]:
    import torchvision

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    path = work / "resnet18.onnx"
    torch.onnx.export(resnet, (torch.randn(1, 3, 224, 224),), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    from camonnx.models import default_model

    return {"resnet18": path, "default": Path(default_model())}


def snapshot(full_route: bool = False) -> dict:
    import skimage.data

    from camonnx.animation import animate
    from camonnx.explainer import Explainer
    from camonnx.extrapolate import save_comparisons
    from camonnx.methods import METHODS
    from camonnx.road import road_score, ybroad

    work = Path(tempfile.mkdtemp(prefix="camonnx-snapshot-"))
    images = [skimage.data.chelsea(), skimage.data.astronaut()]
    result: dict = {}
    for model_name, path in models(work).items():
        explainer = Explainer(path)
        if full_route:
            explainer.engine.partial_pass = False
        layers = [0, len(explainer.layers) // 2, -1]
        for method in sorted(METHODS):
            options = {"samples": 4} if method == "smoothgradcam++" else {}
            for extrapolate in (False, True):
                key = f"{model_name}/{method}/{'ge' if extrapolate else 'plain'}"
                e = explainer.explain(images, method=method, layers=layers, progress=False,
                                      extrapolate=extrapolate, **options)
                entry = {"maps": digest(e.maps), "logits": digest(e.logits),
                         "raw": [digest(r) for r in e.raw], "targets": e.targets}
                if method in ("gradcam", "randomcam"):
                    folder = work / key.replace("/", "_")
                    e.save(folder)
                    road = road_score(explainer, images, e.maps[-1], trials=2, seed=3)
                    entry["road"] = digest(np.asarray(road.scores, np.float64))
                    animate(e, folder / "frames", progress=False)
                    if extrapolate:
                        (folder / "compare").mkdir()
                        save_comparisons(e, folder / "compare")
                    entry["files"] = files_digest(folder)
                result[key] = entry
                print(key, entry["maps"], flush=True)
        yb = ybroad(explainer, images[:1], "gradcam", layers=[0, -1], trials=1, progress=False)
        folder = work / f"{model_name}_ybroad"
        folder.mkdir()
        yb.to_csv(folder / "ybroad.csv")
        yb.to_json(folder / "ybroad.json")
        yb.plot(folder / "ybroad.png")
        result[f"{model_name}/ybroad"] = {"scores": digest(yb.scores), "files": files_digest(folder)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="write the snapshot here (JSON)")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--full-route", action="store_true",
                        help="no partial route for deep layers (compare with older code)")
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(Path(p).read_text()) for p in args.compare)
        differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        print(f"{len(before)} entries before, {len(after)} after, {len(differ)} differ")
        for key in differ:
            print("  differs:", key)
        sys.exit(1 if differ else 0)
    if not args.out:
        parser.error("give an output file, or --compare BEFORE AFTER")
    Path(args.out).write_text(json.dumps(snapshot(args.full_route), indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
