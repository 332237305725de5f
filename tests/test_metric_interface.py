"""The metric interface (docs/metrics.md#the-metric-interface): one way in (MapBatch), one way
out (MetricScores / MetricCurve), seeds from identities rather than batch positions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from camonnx.errors import InputError
from camonnx.metrics import CATALOGUE, get_metric
from camonnx.metrics.base import MapBatch, Metric, MetricScores, forward_probabilities, logits_of
from camonnx.metrics.curve import MetricCurve, plot_curves, write_csv, write_json
from camonnx.metrics.evaluate import evaluate
from camonnx.road import ybroad


@pytest.fixture(scope="module")
def r18(resnet18_onnx):
    from camonnx.explainer import Explainer

    return Explainer(resnet18_onnx)


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 40, 48, generator=torch.Generator().manual_seed(1))


def test_every_catalogue_entry_loads_and_matches_its_line():
    for name, entry in CATALOGUE.items():
        metric = get_metric(name)
        assert isinstance(metric, Metric)
        assert metric.name == name and metric.higher_is_better == entry.higher_is_better
        json.dumps(metric.options)  # options go into manifests and result files


def test_unknown_metric_names_the_known_ones():
    with pytest.raises(InputError, match="Unknown metric 'raod'.*Did you mean: road"):
        get_metric("raod")


def test_road_through_evaluate_equals_ybroad(r18, x):
    """The interface adds nothing to ROAD: the same seeds, the same numbers, bit for bit."""
    layers = [3, 11, 19]
    curve, = evaluate(r18, x, "road", "gradcam", layers=layers, trials=2, seed=5, progress=False)
    road = ybroad(r18, x, method="gradcam", layers=layers, trials=2, seed=5, progress=False)
    assert np.array_equal(curve.scores, road.scores)
    assert np.array_equal(curve.components["morf"], road.morf)
    assert np.array_equal(curve.components["lerf"], road.lerf)
    assert curve.layer_indices == road.layer_indices == layers
    assert curve.best_index == road.max_index and curve.best_value == road.max
    assert curve.timings["forward_images"] == road.timings["forward_images"] == 2 * 3 * 2 * 8 + 2


def test_seeds_follow_image_ids_not_batch_positions(r18, x):
    """Scoring two images together or one at a time (as an audit's shards may) gives the same
    numbers when each image keeps its identity."""
    maps = np.random.default_rng(0).random((2, 2, 40, 48)).astype(np.float32)
    logits = logits_of(r18.engine, x)
    classes = logits.argmax(1)
    metric = get_metric("road")
    both = metric.score(MapBatch(r18.engine, x, maps, classes, logits, layer_ids=[4, 9],
                                 image_ids=[10, 11]), trials=2, seed=3, progress=False)
    for n in range(2):
        alone = metric.score(MapBatch(r18.engine, x[n:n + 1], maps[:, n:n + 1], classes[n:n + 1],
                                      logits[n:n + 1], layer_ids=[4, 9], image_ids=[10 + n]),
                             trials=2, seed=3, progress=False)
        assert np.array_equal(alone.scores[:, :, 0], both.scores[:, :, n])
    shifted = metric.score(MapBatch(r18.engine, x, maps, classes, logits, layer_ids=[4, 9],
                                    image_ids=[12, 13]), trials=2, seed=3, progress=False)
    assert not np.array_equal(shifted.scores, both.scores)  # another identity, other seeds


def test_map_batch_refuses_bad_input(r18, x):
    logits = logits_of(r18.engine, x)
    good = np.zeros((1, 2, 40, 48), np.float32)
    with pytest.raises(InputError, match="layers, images, H, W"):
        MapBatch(r18.engine, x, good[0], [0, 0], logits)
    with pytest.raises(InputError, match="model's input size"):
        MapBatch(r18.engine, x, good[..., :40], [0, 0], logits)
    with pytest.raises(InputError, match="NaN"):
        MapBatch(r18.engine, x, np.full_like(good, np.nan), [0, 0], logits)
    with pytest.raises(InputError, match="one target class per image"):
        MapBatch(r18.engine, x, good, [0], logits)
    with pytest.raises(InputError, match=r"lie in \[0, 999\]"):
        MapBatch(r18.engine, x, good, [0, 1000], logits)
    with pytest.raises(InputError, match="image_ids names 1 entries for 2"):
        MapBatch(r18.engine, x, good, [0, 0], logits, image_ids=[7])
    with pytest.raises(InputError, match="trials"):
        get_metric("road").score(MapBatch(r18.engine, x, good, [0, 0], logits), trials=0)
    with pytest.raises(InputError, match="fractions"):
        get_metric("road", fractions=(0.5, 1.5))


class KeepTop(Metric):
    """A metric written in the test, the way a user would add one: the probability left when
    only the top half of the map's pixels are kept (the rest set to 0)."""

    name = "keeptop"
    higher_is_better = True

    def score(self, batch, *, trials=1, seed=0, batch_size=64, progress=True, desc=None):
        n_layers, n_images, h, w = batch.maps.shape
        keep = batch.maps >= np.median(batch.maps.reshape(n_layers, n_images, -1), -1)[..., None, None]
        images = batch.x[None] * torch.from_numpy(keep[:, :, None].astype(np.float32))
        probs = forward_probabilities(batch.engine, images.reshape(-1, *batch.x.shape[1:]),
                                      np.tile(batch.classes, n_layers), batch_size)
        scores = np.broadcast_to(probs.reshape(1, n_layers, n_images), (trials, n_layers, n_images))
        return MetricScores(self.name, scores, {"kept": keep.mean(axis=(2, 3))[None]},
                            batch.base_probability, timings={"forward": 0.0,
                                                             "forward_images": len(probs)})


def test_a_metric_defined_outside_the_catalogue_runs_through_evaluate(r18, x):
    curves = evaluate(r18, x, [KeepTop(), "road"], ["gradcam", "layercam"], layers=[5, 19],
                      progress=False)
    assert [(c.metric, c.method) for c in curves] == [
        ("keeptop", "gradcam"), ("road", "gradcam"), ("keeptop", "layercam"), ("road", "layercam")]
    keep = curves[0]
    # the direct computation: the same masking, one image and layer at a time, in float64 softmax
    explanation = r18.explain(x, method="gradcam", layers=[5, 19], normalize="none", progress=False)
    for l in range(2):
        for n in range(2):
            m = explanation.maps[l, n]
            kept = x[n:n + 1] * torch.from_numpy((m >= np.median(m)).astype(np.float32))
            z = logits_of(r18.engine, kept)[0].astype(np.float64)
            p = np.exp(z - z.max())[explanation.targets[n]] / np.exp(z - z.max()).sum()
            # float32 logits of ORT: one image alone vs four in one batch may take other kernel
            # blockings (measured equal here; 1e-4 relative covers float32 rounding of a logit
            # of size ~10 moving p by ≤ 1e-5 relative)
            assert keep.scores[0, l, n] == pytest.approx(p, rel=1e-4, abs=1e-7)


def _curve(metric, scores, higher):
    scores = np.asarray(scores, float)
    return MetricCurve(metric=metric, method="gradcam", model="m.onnx", layers=["a", "b", "c"],
                       layer_indices=[2, 5, 9], scores=scores, components={},
                       base_probability=np.ones(scores.shape[2]), targets=[0] * scores.shape[2],
                       higher_is_better=higher)


def test_the_best_layer_respects_the_metric_direction(tmp_path):
    scores = [[[0.3, 0.1], [0.5, 0.7], [0.2, 0.0]]]  # (T=1, L=3, N=2): curve 0.2, 0.6, 0.1
    high, low = _curve("insertion", scores, True), _curve("deletion", scores, False)
    assert np.allclose(high.curve, [0.2, 0.6, 0.1])
    assert (high.best, high.best_index, high.best_layer) == (1, 5, "b")
    assert (low.best, low.best_index, low.best_layer) == (2, 9, "c")
    assert low.summary().startswith("deletion of gradcam: min +0.1000 at layer 9 (c)")
    rows = write_csv([high, low], tmp_path / "m.csv").read_text().splitlines()
    assert rows[0] == "metric,method,layer_index,layer,mean,std,higher_is_better"
    assert rows[1] == "insertion,gradcam,2,a,0.2,0.1,1" and len(rows) == 7
    doc = json.loads(write_json([high, low], tmp_path / "m.json").read_text())["results"]
    assert doc[1]["best_layer"] == "c" and doc[1]["higher_is_better"] is False
    assert plot_curves([high, low], tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "m.json", "m.png"]


def test_trials_of_a_tie_free_map_share_one_solve(r18, x, monkeypatch):
    """Trials differ only in tie-breaking and noise: on a map without ties their masks are the
    same, so ROAD solves each (image, mask) once and draws each trial's noise on its own copy.
    With batch_size 8 every chunk holds one unit, so nothing is shared: the same numbers."""
    import camonnx.road_imputation as imputation

    solved = []
    real_solve = imputation.solve

    def counting_solve(images, removed, **options):
        solved.append(len(images))
        return real_solve(images, removed, **options)

    monkeypatch.setattr(imputation, "solve", counting_solve)
    maps = np.random.default_rng(3).random((1, 2, 40, 48)).astype(np.float32)  # no ties
    logits = logits_of(r18.engine, x)
    batch = MapBatch(r18.engine, x, maps, logits.argmax(1), logits)
    shared = get_metric("road").score(batch, trials=3, seed=2, batch_size=64, progress=False)
    assert sum(solved) == 2 * 8  # 2 images × 8 masks, not × 3 trials
    solved.clear()
    alone = get_metric("road").score(batch, trials=3, seed=2, batch_size=8, progress=False)
    assert sum(solved) == 3 * 2 * 8
    np.testing.assert_array_equal(shared.scores, alone.scores)
    assert not np.array_equal(shared.scores[0], shared.scores[1])  # the noise is each trial's own
