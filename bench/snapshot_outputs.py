"""Fingerprint of everything camonnx computes, to show that a refactor changed no result.

Run it before and after a change that must keep behaviour (``python bench/snapshot_outputs.py
before.json``, then ``after.json``) and compare with ``--compare before.json after.json``: every
map, raw map, logit, ROAD score and written file of every registered method on two models (a
random-weight ResNet-18 export and the pretrained default model), plain and with Gradual
Extrapolation, is hashed (SHA-256 of the float32 bytes), so "same" means bit-identical.
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
            if path.suffix == ".npz":
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


def snapshot() -> dict:
    import skimage.data

    from camonnx.explainer import Explainer
    from camonnx.methods import METHODS
    from camonnx.road import road_score

    work = Path(tempfile.mkdtemp(prefix="camonnx-snapshot-"))
    images = [skimage.data.chelsea(), skimage.data.astronaut()]
    result: dict = {}
    for model_name, path in models(work).items():
        explainer = Explainer(path)
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
                    entry["files"] = files_digest(folder)
                    road = road_score(explainer, images, e.maps[-1], trials=2, seed=3)
                    entry["road"] = digest(np.asarray(road.scores, np.float64))
                result[key] = entry
                print(key, entry["maps"], flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="write the snapshot here (JSON)")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
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
    Path(args.out).write_text(json.dumps(snapshot(), indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
