"""The dataset audit in-process: rows, resume, faults, refusals, the summary's statistics, the CLI.

A tiny ImageFolder dataset (6 scikit-image photos resized to 48×40, classes "0" and "1") on a
random-weight ResNet-18 at 32×32 (tests/conftest.py), 3 of its 20 layers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from camonnx.audit_run import audit, method_seed, stable_hash
from camonnx.audit_data import list_dataset
from camonnx.audit_store import Store
from camonnx.audit_summary import summarise
from camonnx.errors import InputError
from camonnx.recipe import Preprocess

PRE = Preprocess(size=(32, 32), resize=36)
LAYERS = [0, 9, 19]
METHODS = ["gradcam", "layercam"]
PHOTOS = ["astronaut", "camera", "chelsea", "coffee", "rocket", "coins"]


def write_photos(root: Path) -> Path:
    """ImageFolder layout: root/<class>/<photo>.png, classes 0 and 1 alternating."""
    import skimage.data
    from PIL import Image

    for i, name in enumerate(PHOTOS):
        folder = root / str(i % 2)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(getattr(skimage.data, name)()).resize((48, 40)).save(folder / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_photos(tmp_path_factory.mktemp("audit-data") / "photos")


@pytest.fixture(scope="module")
def explainer(resnet18_onnx):
    from camonnx.explainer import Explainer

    return Explainer(resnet18_onnx, preprocess=PRE)


def run(explainer, data, out, **options):
    kwargs = dict(methods=METHODS, layers=LAYERS, trials=2, shard_size=2, out=out,
                  progress=False)
    return audit(explainer, data, **{**kwargs, **options})


@pytest.fixture(scope="module")
def clean(explainer, data, tmp_path_factory):
    """One uninterrupted run: (its out folder, its summary)."""
    out = tmp_path_factory.mktemp("clean") / "out"
    return out, run(explainer, data, out)


def test_rows_cover_every_key_once_with_components(explainer, data, clean):
    out, summary = clean
    rows = Store(out).read()
    n_images = len(PHOTOS)
    assert rows.num_rows == n_images * len(METHODS) * len(LAYERS) * 2  # × 1 metric × 2 trials
    keys = set(zip(*(rows.column(k).to_pylist() for k in
                     ("image_id", "method", "layer_index", "metric", "trial"))))
    assert len(keys) == rows.num_rows
    assert set(rows.column("status").to_pylist()) == {"ok"}
    assert summary.failed == 0 and summary.scored == n_images
    # image ids follow the sorted paths; labels are the integer class folders
    listing = list_dataset(data)
    for image_id, path, label in zip(*(rows.column(k).to_pylist() for k in
                                       ("image_id", "path", "label"))):
        assert path == listing.paths[image_id]
        assert label == int(Path(path).parent.name)
    # ROAD's score is its components' combination (float64 on both sides: exact to rounding)
    morf = np.stack([rows.column(f"morf_{q:g}").to_numpy() for q in (0.2, 0.4, 0.6, 0.8)], 1)
    lerf = np.stack([rows.column(f"lerf_{q:g}").to_numpy() for q in (0.2, 0.4, 0.6, 0.8)], 1)
    np.testing.assert_allclose(rows.column("score").to_numpy(),
                               (lerf.mean(1) - morf.mean(1)) / 2, rtol=0, atol=1e-15)
    # the predicted class is the model's argmax on each image alone
    for image_id in range(n_images):
        predicted = explainer.logits(listing.paths[image_id]).argmax()
        mine = {p for i, p in zip(rows.column("image_id").to_pylist(),
                                  rows.column("predicted").to_pylist()) if i == image_id}
        assert mine == {predicted}
    assert rows.column("target").to_pylist() == rows.column("predicted").to_pylist()


def test_rows_equal_direct_scoring_of_the_dataset(explainer, data, tmp_path):
    """One shard of all images: each row is the score that the metric interface gives for the
    same maps with image id = position in the sorted dataset, layer id = the model's index and
    the method's seed (the same computation, so equal exactly)."""
    from camonnx.metrics.base import logits_of
    from camonnx.metrics.evaluate import score_explanation

    run(explainer, data, tmp_path / "one", shard_size=len(PHOTOS))
    rows = Store(tmp_path / "one").read()
    paths = list_dataset(data).paths
    x, _ = explainer.prepare(list(paths))
    logits = logits_of(explainer.engine, x)
    for method in METHODS:
        seed = method_seed(0, method)
        explanation = explainer.explain(x, method=method, layers=LAYERS,
                                        targets=logits.argmax(1).tolist(), normalize="none",
                                        seed=seed, progress=False)
        curve = score_explanation(explainer, x, explanation, ["road"], trials=2, seed=seed,
                                  progress=False, layer_ids=LAYERS, image_ids=range(len(paths)),
                                  logits=logits)[0]
        mine = rows.filter(pa.compute.equal(rows.column("method"), method))
        for image_id, layer, trial, score, morf in zip(*(mine.column(k).to_pylist() for k in (
                "image_id", "layer_index", "trial", "score", "morf_0.4"))):
            assert score == curve.scores[trial, LAYERS.index(layer), image_id]
            assert morf == curve.components["morf"][trial, LAYERS.index(layer), image_id, 1]


def test_rows_do_not_depend_on_the_shard_size(explainer, data, tmp_path):
    """randomcam's weights are seeded per image: by its id in the dataset, so shards of 2 and
    of 4 images give the same maps and so the same rows."""
    def rows(shard_size):
        out = tmp_path / f"s{shard_size}"
        run(explainer, data, out, methods=["randomcam"], layers=[9, 19], trials=1,
            shard_size=shard_size)
        table = Store(out).read().sort_by([("image_id", "ascending"),
                                           ("layer_index", "ascending")])
        return table.column("image_id").to_pylist(), table.column("score").to_numpy()

    ids_2, scores_2 = rows(2)
    ids_4, scores_4 = rows(4)
    assert ids_2 == ids_4 and len(ids_2) == len(PHOTOS) * 2
    # measured equal bit for bit; 1e-9 leaves room for ORT choosing another kernel blocking for
    # a batch of 4 than of 2, and is far below what a changed seed does (an image's randomcam
    # seeded by its position in the shard instead moved ROAD scores by up to 2.1e-4 here)
    np.testing.assert_allclose(scores_2, scores_4, rtol=0, atol=1e-9)


def test_every_catalogue_metric_gives_rows_and_summary(explainer, data, tmp_path):
    """Any metric of the catalogue: its score and its components flattened to columns."""
    from camonnx.metrics import CATALOGUE, get_metric

    names = sorted(CATALOGUE)
    summary = run(explainer, data, tmp_path / "all", methods=["gradcam"], layers=[19], trials=1,
                  metrics=names, shard_size=3)
    rows = Store(tmp_path / "all").read()
    assert sorted(set(rows.column("metric").to_pylist())) == names
    assert set(rows.column("status").to_pylist()) == {"ok"}
    assert rows.num_rows == len(PHOTOS) * len(names)
    for name in names:
        mine = rows.filter(pa.compute.equal(rows.column("metric"), name))
        assert mine.column("score").null_count == 0
        curve = summary.curve(name, "gradcam")
        assert curve.higher_is_better == get_metric(name).higher_is_better
        np.testing.assert_allclose(curve.stats[0].mean, np.mean(mine.column("score").to_numpy()),
                                   rtol=0, atol=1e-12)
    component = [c for c in rows.column_names if c.startswith(("morf_", "lerf_"))]
    assert len(component) == 8


def test_method_seed_is_stable_and_distinct():
    """sha256-based, never Python's salted hash(): fixed values, different per method."""
    assert stable_hash("gradcam") == int.from_bytes(
        __import__("hashlib").sha256(b"gradcam").digest()[:8], "big") & (2 ** 63 - 1)
    assert method_seed(7, "gradcam") == (7 ^ stable_hash("gradcam"))
    assert method_seed(0, "gradcam") != method_seed(0, "layercam")


def test_interrupted_run_resumes_to_the_clean_rows(explainer, data, clean, tmp_path):
    out = tmp_path / "out"
    stored = []

    def stop_after_one(start, stop):
        stored.append((start, stop))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(explainer, data, out, on_shard=stop_after_one)
    files = sorted(p.name for p in (out / "shards").iterdir())
    assert files == ["shard-00000000-00000002.parquet"]  # no partial or temporary file
    assert not (out / "summary.json").exists()
    again = []
    summary = run(explainer, data, out, on_shard=lambda a, b: again.append((a, b)))
    assert again == [(2, 4), (4, 6)]  # the stored shard was skipped
    assert Store(out).read().equals(Store(clean[0]).read())
    assert summary.to_dict()["curves"] == clean[1].to_dict()["curves"]


def test_changed_option_or_dataset_is_refused_on_resume(explainer, data, clean, tmp_path):
    out = clean[0]
    with pytest.raises(InputError, match=r"changed: options\.trials.*Pick a new --out"):
        run(explainer, data, out, trials=3)
    with pytest.raises(InputError, match=r"options\.layer_names, options\.layers"):
        run(explainer, data, out, layers=[0, 19])
    fewer = shutil.copytree(data, tmp_path / "fewer")
    (fewer / "0" / "astronaut.png").unlink()
    with pytest.raises(InputError, match=r"dataset\.images, dataset\.listing_sha256"):
        run(explainer, fewer, out)


def test_corrupt_image_gives_failed_rows_and_is_counted(explainer, data, clean, tmp_path):
    broken = shutil.copytree(data, tmp_path / "photos")
    (broken / "1" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # sorts last
    out = tmp_path / "out"
    summary = run(explainer, broken, out)
    rows = Store(out).read()
    failed = rows.filter(pa.compute.equal(rows.column("status"), "failed"))
    assert set(failed.column("image_id").to_pylist()) == {len(PHOTOS)}
    assert failed.num_rows == len(METHODS) * len(LAYERS) * 2
    assert failed.column("score").null_count == failed.num_rows
    assert all("zz_broken.png" in r and ("not an image" in r or "damaged" in r)
               for r in failed.column("reason").to_pylist())
    assert summary.failed == 1 and summary.scored == len(PHOTOS)
    written = json.loads((out / "summary.json").read_text())
    assert written["failed"] == 1 and written["failures"][0]["image_id"] == len(PHOTOS)
    ok = rows.filter(pa.compute.equal(rows.column("status"), "ok"))
    same = Store(clean[0]).read()  # the other images' rows are untouched (paths: another copy)
    assert ok.drop_columns(["path"]).equals(same.drop_columns(["path"]))


def test_label_target_needs_class_indices(explainer, data, tmp_path):
    named = tmp_path / "named"
    shutil.copytree(data / "0", named / "cats")
    shutil.copytree(data / "1", named / "dogs")
    with pytest.raises(InputError, match="--target label needs a class index.*'cats'"):
        run(explainer, named, tmp_path / "out", target="label")
    names = [f"class {i}" for i in range(1000)]
    names[281], names[207] = "tabby cat", "golden retriever"
    assert list_dataset(named, class_names=names).label_source == "names only"
    model_named = tmp_path / "model-named"
    shutil.copytree(data / "0", model_named / "tabby_cat")  # "_" for " ", as folders often do
    shutil.copytree(data / "1", model_named / "golden retriever")
    listing = list_dataset(model_named, class_names=names)
    assert listing.label_source == "model labels" and listing.labelled
    assert {Path(p).parent.name: c for p, c in zip(listing.paths, listing.labels)} == {
        "tabby_cat": 281, "golden retriever": 207}
    flat = list_dataset(str(data / "*" / "*.png"))  # a glob: no labels
    assert len(flat) == len(PHOTOS) and flat.label_source is None


def test_csv_dataset_with_labels(data, tmp_path):
    paths = sorted(p.relative_to(data) for p in data.rglob("*.png"))
    table = tmp_path / "list.csv"
    table.write_text("path,label\n" + "".join(f"{data.name}/{p},{p.parent.name}\n" for p in paths))
    shutil.copytree(data, tmp_path / data.name)
    listing = list_dataset(table)
    assert listing.label_source == "integer names" and listing.labelled
    assert [Path(p).name for p in listing.paths] == [p.name for p in paths]
    bad = tmp_path / "bad.csv"
    bad.write_text("file\nx.png\n")
    with pytest.raises(InputError, match="no 'path' column"):
        list_dataset(bad)


def _synthetic_rows(scores: np.ndarray, labels: list[int]) -> pa.Table:
    """Rows of one metric and method: scores (images, layers, trials)."""
    n, n_layers, trials = scores.shape
    i, l, t = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n_layers), np.arange(trials),
                                              indexing="ij"))
    return pa.table({
        "image_id": i, "path": [f"img{k}" for k in i], "label": [labels[k] for k in i],
        "label_name": [str(labels[k]) for k in i], "method": ["gradcam"] * len(i),
        "layer_index": l * 3, "metric": ["road"] * len(i), "score": scores[i, l, t],
        "status": ["ok"] * len(i), "reason": [None] * len(i)})


def test_summary_bootstrap_matches_a_direct_numpy_bootstrap():
    """Mean, std and the percentile CI per layer and per class against a direct float64
    computation (explicit loops and a hand-written linear quantile over the same resample
    indices); tolerance 1e-12: only the summation order differs (measured ≤ 2e-16)."""
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(9, 4, 3)) + np.array([0.0, 0.5, 0.45, -1.0])[None, :, None]
    labels = [0, 1, 0, 1, 1, 0, 0, 1, 0]
    manifest = {"options": {"seed": 11, "metrics": {"road": {}}, "methods": ["gradcam"],
                            "layers": [0, 3, 6, 9], "layer_names": ["a", "b", "c", "d"],
                            "higher_is_better": {"road": True}, "trials": 3,
                            "target": "predicted"},
                "model": {"path": "m.onnx", "sha256": "0"},
                "dataset": {"source": "d", "images": 9}}
    curve = summarise(_synthetic_rows(scores, labels), manifest).curve("road", "gradcam")

    def direct(values, group, layer_index):
        values = [sum(v) / len(v) for v in values]  # trials averaged per image
        n = len(values)
        mean = sum(values) / n
        std = (sum((v - mean) ** 2 for v in values) / n) ** 0.5
        key = (11, stable_hash("road"), stable_hash("gradcam"), layer_index, stable_hash(group))
        index = np.random.default_rng(key).integers(0, n, size=(2000, n))
        means = sorted(sum(values[j] for j in row) / n for row in index)

        def quantile(q):
            pos = q * (len(means) - 1)
            lo = int(np.floor(pos))
            return means[lo] + (pos - lo) * (means[min(lo + 1, len(means) - 1)] - means[lo])
        return n, mean, std, quantile(0.025), quantile(0.975)

    for position, layer_index in enumerate([0, 3, 6, 9]):
        got = curve.stats[position]
        want = direct(scores[:, position, :].tolist(), "all", layer_index)
        assert got.n == want[0]
        np.testing.assert_allclose([got.mean, got.std, got.ci_low, got.ci_high], want[1:],
                                   rtol=0, atol=1e-12)
        for c, label, stats in curve.per_class:
            mine = [k for k in range(9) if labels[k] == c]
            want = direct(scores[mine, position, :].tolist(), label, layer_index)
            np.testing.assert_allclose([stats[position].mean, stats[position].ci_low,
                                        stats[position].ci_high], [want[1], want[3], want[4]],
                                       rtol=0, atol=1e-12)
    means = scores.mean(axis=(0, 2))
    assert curve.best == int(np.argmax(means)) == 1 and curve.runner_up == 2
    a, b = curve.stats[1], curve.stats[2]
    assert curve.overlaps == (a.ci_low <= b.ci_high and b.ci_low <= a.ci_high) is True


def test_cli_audit_and_refused_resume(resnet18_onnx, data, tmp_path):
    from click.testing import CliRunner

    from camonnx.cli import main

    out = tmp_path / "cli"
    args = ["audit", str(resnet18_onnx), str(data), "-m", "gradcam", "--layers", "0,19",
            "--size", "32", "--resize", "36", "--shard-size", "3", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "road of gradcam: best layer" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == len(PHOTOS) and summary["curves"][0]["layer_indices"] == [0, 19]
    assert len(summary["curves"][0]["per_class"]) == 2
    assert (out / "summary.png").stat().st_size > 0
    header = (out / "summary.csv").read_text().splitlines()[0]
    assert header == "metric,method,layer_index,layer,class,n,mean,std,ci_low,ci_high,best"
    result = CliRunner().invoke(main, args + ["--trials", "2"])
    assert result.exit_code == 2 and "Error:" in result.output and "new --out" in result.output
    result = CliRunner().invoke(main, args[:-1] + [str(tmp_path / "x"), "--metric", "rod"])
    assert result.exit_code == 2 and "--metric takes" in result.output
