"""The audit on Ray: the same rows as in-process, and a worker that dies is retried.

One module-scoped local Ray (2 CPUs: one actor, one CPU left for the read/preprocess tasks),
the dataset and model of tests/test_audit.py. Both engines run with one thread (the actors'
default), so the rows are equal bit for bit.
"""

from __future__ import annotations

import os
import sys

import pytest

from camonnx.audit_store import Store
from camonnx.metrics.road import Road

ray = pytest.importorskip("ray")

from test_audit import LAYERS, METHODS, PRE, write_photos  # noqa: E402


class DyingOnceRoad(Road):
    """ROAD whose worker process dies (os._exit) the first time it scores, mid-shard: a real
    crash of the actor, leaving a marker file so the retry goes through."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def score(self, batch, **kwargs):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return super().score(batch, **kwargs)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the test module is not importable in the workers: ship this class by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_photos(tmp_path_factory.mktemp("ray-data") / "photos")


def audit_rows(model, data, out, metric="road", **options):
    from camonnx.audit_run import audit

    audit(model, data, methods=METHODS, layers=LAYERS, metrics=[metric], trials=2,
          shard_size=2, out=out, progress=False, threads=1, preprocess=PRE, **options)
    return Store(out).read()


@pytest.fixture(scope="module")
def in_process(resnet18_onnx, data, tmp_path_factory):
    return audit_rows(resnet18_onnx, data, tmp_path_factory.mktemp("ip") / "out")


def test_ray_rows_equal_in_process(local_ray, resnet18_onnx, data, in_process, tmp_path):
    rows = audit_rows(resnet18_onnx, data, tmp_path / "out", ray=True)
    assert rows.num_rows == in_process.num_rows > 0
    assert rows.equals(in_process)  # bit for bit: one thread on both sides


def test_dead_worker_is_retried_without_lost_or_duplicated_rows(local_ray, resnet18_onnx, data,
                                                                in_process, tmp_path):
    marker = tmp_path / "died"
    rows = audit_rows(resnet18_onnx, data, tmp_path / "out", metric=DyingOnceRoad(str(marker)),
                      ray=True)
    assert marker.exists()  # the actor did die once
    keys = list(zip(*(rows.column(k).to_pylist() for k in
                      ("image_id", "method", "layer_index", "metric", "trial"))))
    assert len(keys) == len(set(keys)) == in_process.num_rows
    assert rows.equals(in_process)
