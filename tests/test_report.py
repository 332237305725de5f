"""The HTML report without a browser (docs/report.md): what the page holds, that every asset is
inlined, that its frames are the maps over the image, its size, and bad run folders.

Real runs of the default pretrained EfficientNet-Lite0 on the bundled cat, through the CLI:
`explain --report` on four layers (plus a Gradual Extrapolation run in a sub-folder: two methods),
`ybroad --report` on two layers, and `explain --report` on all 49 layers for the size bound. The
page's script is tested in Chromium (tests/test_report_browser.py).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from matplotlib import colormaps
from PIL import Image

from camonnx.cli import main
from camonnx.errors import InputError
from camonnx.models import default_model
from camonnx.report_page import write_report
from camonnx.report_run import animation_report_folder
from camonnx.report_svg import nice_ticks

LAYERS = "0,10,20,30"


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


class Page(HTMLParser):
    """Every start tag with its attributes, and the text of <script>/<style> elements."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self.styles: list[str] = []
        self._open: tuple[str, dict] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag in ("script", "style"):
            self._open = (tag, attrs)

    def handle_data(self, data):
        if self._open is not None:
            tag, attrs = self._open
            (self.scripts.append((attrs, data)) if tag == "script" else self.styles.append(data))

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._open = None

    def find(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]

    def data(self) -> dict:
        return json.loads(next(text for attrs, text in self.scripts if attrs.get("id") == "report-data"))


def decode(uri: str) -> np.ndarray:
    head, payload = uri.split(",", 1)
    assert head in ("data:image/jpeg;base64", "data:image/png;base64")
    with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
        return np.asarray(image.convert("RGB"))


def oracle_overlay(image: np.ndarray, map01: np.ndarray) -> np.ndarray:
    """0.5·JET(map) + 0.5·image in float64, matplotlib's colormap sampled directly."""
    heat = colormaps["jet"](np.clip(map01.astype(np.float64), 0, 1))[..., :3] * 255.0
    return 0.5 * heat + 0.5 * image.astype(np.float64)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """`explain --report` on four layers, with a Gradual Extrapolation explanation (and its
    comparison) in the sub-folder ge/, then `camonnx report` over both."""
    out = tmp_path_factory.mktemp("report") / "run"
    run("explain", "--layers", LAYERS, "--out", str(out), "--report")
    run("explain", "--layers", "20,30", "--extrapolate", "--compare", "--no-overlays",
        "--out", str(out / "ge"))
    run("report", str(out))
    return out


@pytest.fixture(scope="module")
def page(run_dir) -> Page:
    return Page((run_dir / "index.html").read_text(encoding="utf-8"))


def test_run_folder_holds_what_the_page_is_made_from(run_dir):
    with np.load(run_dir / "images.npz") as npz:
        images = npz["images"]
    assert images.shape == (1, 224, 224, 3) and images.dtype == np.uint8
    card = json.loads((run_dir / "model.json").read_text())
    model = default_model()
    assert card["sha256"] == hashlib.sha256(Path(model).read_bytes()).hexdigest()
    assert len(card["layers"]) == 49 and card["suggested"] == 48 and card["tap"] == "block"
    assert "images.npz" in json.loads((run_dir / "manifest.json").read_text())["files"]


def test_every_asset_is_inlined(page):
    for tag, attrs in page.tags:
        for key in ("src", "href"):
            value = attrs.get(key)
            if value is not None and tag != "a":
                assert value.startswith("data:"), (tag, key, value[:60])
        if tag == "a":
            assert attrs["href"].startswith("#"), attrs["href"]
    assert not page.find("link") and page.styles and page.styles[0].strip()
    assert all("src" not in attrs for attrs, _ in page.scripts)
    assert any(attrs == {} and "report-data" in text for attrs, text in page.scripts)


def test_viewer_controls_are_labelled(page):
    slider = page.find("input", id="layer")[0]
    assert slider["type"] == "range" and slider["max"] == "3" and slider["aria-label"] == "Layer"
    assert page.find("button", id="prev")[0]["aria-label"] == "Previous layer"
    assert {a["value"] for a in page.find("input", name="norm")} == {"local", "global"}
    assert page.find("select", id="method")[0]["aria-label"] == "Method"
    images = page.find("img")
    assert images and all(a.get("alt") for a in images)
    assert page.find("meta", name="viewport")


def test_views_hold_both_methods_and_all_frames(page):
    data = page.data()
    labels = [v["label"] for v in data["views"]]
    assert labels == ["gradcam", "gradcam + GE"]
    plain, ge = data["views"]
    assert len(plain["layers"]) == 4 and len(ge["layers"]) == 2
    assert plain["classes"] == ["tiger cat (282)"]
    assert [data["indices"][name] for name in plain["layers"]] == [0, 10, 20, 30]
    for view in data["views"]:
        for norm in ("local", "global"):
            assert len(view["frames"][0][norm]) == len(view["layers"])


def test_frames_are_the_maps_over_the_image(run_dir, page):
    """Local frames against overlays of the explanation's own local maps (maps.npz, normalised by
    the upsampling kernel), global ones against raw maps upsampled in float64 and min-maxed over
    all layers. Mean |difference| in levels of 255, JPEG q85 included: measured 8.7 on layer 0
    (112×112 stem, fine detail that JPEG smooths), ≤ 3.9 on the others (the rendering alone is
    ≤ 0.6 off the float64 oracle); bound 12. The frame is also closer to its own layer's oracle
    than to any other layer's (measured ≥ 27 from the others)."""
    data = page.data()["views"][0]
    with np.load(run_dir / "maps.npz") as npz:
        maps = npz["maps"][:, 0]
        raw = [npz[f"raw_{l:03d}"] for l in range(4)]
    with np.load(run_dir / "images.npz") as npz:
        image = npz["images"][0]
    up = torch.cat([F.interpolate(torch.as_tensor(r, dtype=torch.float64)[:, None], size=(224, 224),
                                  mode="bilinear", align_corners=False)[:, 0] for r in raw]).numpy()
    glob = (up - up.min()) / (up.max() - up.min())
    for norm, oracle_maps in (("local", maps), ("global", glob)):
        oracles = [oracle_overlay(image, m) for m in oracle_maps]
        for l in range(4):
            frame = decode(data["frames"][0][norm][l]).astype(np.float64)
            assert frame.shape == (224, 224, 3)
            errors = [np.abs(frame - o).mean() for o in oracles]
            assert errors[l] <= 12.0, (norm, l, errors)
            assert int(np.argmin(errors)) == l, (norm, l, errors)
    assert not np.array_equal(decode(data["frames"][0]["local"][0]),
                              decode(data["frames"][0]["global"][0]))


def test_initial_frame_and_caption_show_the_deepest_layer(page):
    data = page.data()["views"][0]
    img = page.find("img", id="frame-0")[0]
    assert img["src"] == data["frames"][0]["local"][3]
    assert data["layers"][3] in img["alt"] and "layer 4 / 4" in img["alt"]


def test_comparison_and_model_card(run_dir, page):
    html = (run_dir / "index.html").read_text(encoding="utf-8")
    compare = [a for a in page.find("img") if "Gradual Extrapolation" in a.get("alt", "")]
    assert len(compare) == 1 and decode(compare[0]["src"]).shape[0] > 100
    taps = [a for a in page.find("tr") if "data-layer" in a]
    assert len(taps) == 49
    assert sum(a.get("class") == "in-run" for a in taps) == 4
    card = json.loads((run_dir / "model.json").read_text())
    assert card["sha256"] in html and card["preprocess"] in html


def test_card_is_computed_when_the_run_has_none(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    for card in copy.rglob("model.json"):  # the run's and its ge/ sub-folder's
        card.unlink()
    (copy / "index.html").unlink()
    html = write_report(copy, progress=False).read_text(encoding="utf-8")
    card = json.loads((run_dir / "model.json").read_text())
    assert card["sha256"] in html and "did not record its preprocessing" in html


def test_ybroad_report(tmp_path):
    out = tmp_path / "yb"
    run("ybroad", "--layers", "10,30", "--out", str(out), "--report")
    page = Page((out / "index.html").read_text(encoding="utf-8"))
    result = json.loads((out / "ybroad.json").read_text())["results"][0]
    points = [a for a in page.find("circle") if a.get("class") == "pt"]
    assert [p["data-layer"] for p in points] == result["layers"]
    assert {p["data-method"] for p in points} == {"gradcam"}
    assert len(page.find("circle", **{"class": "best"})) == 1
    assert page.data()["views"][0]["folder"] == "gradcam"
    assert (out / "gradcam" / "maps.npz").is_file() and (out / "model.json").is_file()


def test_metrics_and_sanity_reports_from_their_commands(tmp_path):
    """`metrics --report` saves the maps it scored (the slider, clickable metric curves);
    `sanity --report` records the model card it ran with."""
    out = tmp_path / "metrics"
    run("metrics", "--layers", "30,48", "--metric", "drop,increase", "--out", str(out), "--report")
    page = Page((out / "index.html").read_text(encoding="utf-8"))
    assert page.data()["views"][0]["folder"] == "gradcam"
    points = [a for a in page.find("circle") if a.get("class") == "pt"]
    assert len(points) == 2 * 2 and {p["data-method"] for p in points} == {"gradcam"}
    assert (out / "gradcam" / "maps.npz").is_file() and (out / "model.json").is_file()
    out = tmp_path / "sanity"
    run("sanity", "--steps", "0,1", "--no-random-logit", "--out", str(out), "--report")
    html = (out / "index.html").read_text(encoding="utf-8")
    card = json.loads((out / "model.json").read_text())
    assert card["sha256"] in html and "did not record its preprocessing" not in html


def test_page_of_all_49_layers_stays_small(tmp_path):
    out = tmp_path / "all"
    run("explain", "--layers", "all", "--no-overlays", "--out", str(out), "--report")
    size = (out / "index.html").stat().st_size
    assert len(Page((out / "index.html").read_text()).data()["views"][0]["layers"]) == 49
    assert size < 5_000_000, size  # measured: 1.38 MB (98 JPEG frames, 224×224, q85)


def test_animate_report_goes_beside_the_video(tmp_path):
    video = tmp_path / "cat.gif"
    run("animate", "--layers", "30,48", "--out", str(video), "--report")
    folder = animation_report_folder(video)
    assert folder == tmp_path / "cat-report" and (folder / "index.html").is_file()
    record = json.loads((folder / "animation.json").read_text())
    assert (folder / record["outputs"][0]).resolve() == video.resolve()
    page = Page((folder / "index.html").read_text())
    assert [a["href"] for a in page.find("a") if not a["href"].startswith("#")] == ["../cat.gif"]


def _curve_docs(names: list[str], model: str) -> dict[str, dict]:
    """metrics.json, summary.json (audit) and sanity.json in the shapes `camonnx metrics`,
    `camonnx audit` and `camonnx sanity` write (docs/report.md#what-it-reads), small values of
    our own; one audit layer has no score (null), as the audit writes it."""
    idx = [0, 10, 20, 30]
    metric = lambda m, curve, higher, best: {  # noqa: E731
        "metric": m, "method": "gradcam", "model": model, "higher_is_better": higher,
        "layers": names, "layer_indices": idx, "trials": 1, "seed": 0, "targets": [282],
        "target_labels": ["tiger cat (282)"], "curve": curve, "curve_std": [0.01] * 4,
        "best": best, "best_index": idx[best], "best_layer": names[best],
        "best_value": curve[best], "mean": sum(curve) / 4, "options": {"normalize": "none"}}
    point = lambda i, mean: {"position": i, "layer_index": idx[i], "layer": names[i],  # noqa: E731
                             "mean": mean, "ci_low": mean - 0.1, "ci_high": mean + 0.1}
    audit = {"kind": "camonnx-audit-summary", "format": 1, "model": model, "dataset": "cats/",
             "images": 3, "scored": 2, "failed": 1,
             "failures": [{"image_id": 2, "path": "cats/broken.png", "reason": "cannot read"}],
             "trials": 1, "seed": 0, "target": "predicted",
             "bootstrap": {"resamples": 2000, "confidence": 0.95, "method": "percentile"},
             "curves": [{"metric": "road", "method": m, "higher_is_better": True,
                         "layer_indices": idx, "layers": names, "n": [2, 2, 2, 0],
                         "mean": [0.1, 0.3, 0.2, None], "std": [0.1, 0.1, 0.1, None],
                         "ci_low": [0.0, 0.2, 0.1, None], "ci_high": [0.2, 0.4, 0.3, None],
                         "best": point(1, 0.3), "runner_up": point(2, 0.2),
                         "best_overlaps_runner_up": True,
                         "per_class": [{"class": 282, "label": "tiger cat", "n": [2, 2, 2, 0],
                                        "mean": [0.1, 0.2, 0.4, None], "std": [0.1] * 3 + [None],
                                        "ci_low": [0.0, 0.1, 0.3, None],
                                        "ci_high": [0.2, 0.3, 0.5, None]}]}
                        for m in ("gradcam", "layercam")]}
    sanity = {"kind": "sanity", "model": model, "mode": "cascading", "seed": 0,
              "methods": ["gradcam"], "metrics": ["spearman", "ssim"], "layers": names[-1:],
              "layer_indices": [30], "steps": [0, 1, 5],
              "step_labels": ["original", "/_fc/Gemm", "/_blocks.15/_project_conv/Conv"],
              "curve": {"spearman": {"gradcam": [1.0, 0.2, 0.1]}, "ssim": {"gradcam": [1.0, 0.5, 0.4]}},
              "curve_std": {"spearman": {"gradcam": [0.0, 0.0, 0.0]}, "ssim": {"gradcam": [0.0] * 3}},
              "random_logit": {"classes": [5], "class_labels": ["x"],
                               "mean": {"spearman": {"gradcam": -0.05}, "ssim": {"gradcam": 0.48}}},
              "options": {"batch_size": 16, "steps": [0, 1, 5], "tap": "block"}}
    return {"metrics.json": {"results": [metric("deletion", [0.3, 0.2, 0.25, 0.1], False, 3),
                                         metric("road", [0.01, 0.05, 0.02, 0.0], True, 1)]},
            "summary.json": audit, "sanity.json": sanity}


def test_metrics_audit_and_sanity_sections(run_dir, tmp_path):
    out = tmp_path / "curves"
    out.mkdir()
    names = json.loads((run_dir / "manifest.json").read_text())["layers"]
    shutil.copy(run_dir / "model.json", out / "model.json")
    for name, doc in _curve_docs(names, str(default_model())).items():
        (out / name).write_text(json.dumps(doc))
    run("report", str(out))
    html = (out / "index.html").read_text(encoding="utf-8")
    page = Page(html)
    assert {a["id"] for a in page.find("section")} == {"metrics", "audit", "sanity", "model", "manifest"}
    geometry = [v for t, a in page.tags if t in ("circle", "polygon", "polyline")
                for k, v in a.items() if k in ("cx", "cy", "points")]
    numbers = [float(n) for v in geometry for n in v.replace(",", " ").split()]
    assert numbers and np.isfinite(numbers).all()  # a null audit value leaves a gap, not a NaN
    points = [a for a in page.find("circle") if "pt" in a.get("class", "")]
    # no maps on this page: no point is a button; metrics 2 × 4, audit 2 × 3 (one null), sanity 2 × 3
    assert len(points) == 8 + 6 + 6 and not any("data-layer" in a for a in points)
    assert len(page.find("circle", **{"class": "best"})) == 2 + 2
    assert len(page.find("polygon", **{"class": "band"})) == 2 + 2 + 2
    assert "cats/broken.png" in html and "yes: not separated" in html and "tiger cat" in html
    assert "/_blocks.15/_project_conv/Conv" in html  # sanity tick, in the point's tooltip


def test_bad_run_folders_are_input_errors(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    (tmp_path / "file.txt").write_text("x")
    a_file = runner.invoke(main, ["report", str(tmp_path / "file.txt")])
    assert a_file.exit_code == 2 and "is a file" in a_file.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(main, ["report", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "holds nothing to report" in empty.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{")
    (broken / "maps.npz").write_bytes(b"not a zip")
    bad = runner.invoke(main, ["report", str(broken)])
    assert bad.exit_code == 2 and "manifest.json" in bad.output and "Traceback" not in bad.output
    with pytest.raises(InputError, match="does not exist"):
        write_report(tmp_path / "nope")
    assert not (tmp_path / "empty" / "index.html").exists()


@pytest.mark.parametrize("lo, hi", [(-0.077, 0.0576), (0.0, 1.0), (0.3, 0.3), (1e-3, 1.9e-3),
                                    (-3.0, 250.0)])
def test_ticks_cover_the_range(lo, hi):
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and 3 <= len(ticks) <= 9
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
