"""The audit on Ray (``camonnx audit --ray [ADDRESS]``, docs/audit.md#ray).

One Ray Data pipeline over the shards still to do, one row per shard:

1. ``map(_prepare)``: CPU tasks read and preprocess each shard's images
   (:func:`camonnx.audit_run.prepare_shard`, by the model's recipe; no model is loaded there);
2. ``map_batches(ScoreActor)``: an actor pool, one :class:`~camonnx.explainer.Explainer` per
   actor (``num_gpus=1`` each on a cluster with GPUs, else one CPU each), scores a shard
   (:func:`camonnx.audit_run.score_shard`) and returns its rows as Arrow IPC bytes;
3. the driver writes each shard as it arrives (:class:`camonnx.audit_store.Store`).

**Faults.** A worker process that dies is restarted and its shard retried (``max_restarts``,
``max_task_retries``: :data:`RETRIES` each). A shard is the unit of retry and of writing, and a
shard file is replaced atomically by the same rows, so a retried or repeated shard loses or
duplicates no row.

**Threads.** Each actor runs torch, ONNX Runtime and the ROAD solver on ``threads`` threads
(default 1), so a pool of k actors uses k cores and rows equal an in-process run's with the same
thread count.
"""

from __future__ import annotations

import os
import pickle
from typing import TYPE_CHECKING, Callable

import numpy as np

from camonnx.audit_run import AuditPlan, ShardInput, prepare_shard, score_shard
from camonnx.errors import InputError

if TYPE_CHECKING:
    from camonnx.audit_data import Dataset

#: Restarts of a dead actor, and retries of the shard it was scoring.
RETRIES = 3


def _retries() -> dict:
    """The actors' fault tolerance (Ray Data's default would retry forever)."""
    return {"max_restarts": RETRIES, "max_task_retries": RETRIES}


def _prepare(row: dict, plan: AuditPlan) -> dict:
    """Ray Data map: one shard's images read and preprocessed (pickled with the shard)."""
    shard = pickle.loads(row["shard"])
    prepared = prepare_shard(shard, plan.recipe, plan.channels)
    return {"start": row["start"], "payload": pickle.dumps((shard, prepared), protocol=5)}


class ScoreActor:
    """One Explainer per actor; each call scores whole shards (a batch of one row each)."""

    def __init__(self, plan: AuditPlan, device: str, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        os.environ["CAMONNX_THREADS"] = str(threads)  # the ROAD solver's pool
        self.plan = plan
        self.explainer = plan.load(device, threads=threads)

    def __call__(self, batch: dict) -> dict:
        import pyarrow as pa

        starts, blobs = [], []
        for payload in batch["payload"]:
            shard, prepared = pickle.loads(payload)
            table = score_shard(self.explainer, self.plan, shard, prepared)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            starts.append(shard.start)
            blobs.append(sink.getvalue().to_pybytes())
        return {"start": np.asarray(starts, np.int64), "rows": np.asarray(blobs, dtype=object)}


def pool_size(resources: dict, actors: int | None) -> tuple[int, int]:
    """(actors, GPUs per actor): one actor per GPU where the cluster has GPUs, else CPUs − 1
    (one CPU left for the read/preprocess tasks), or ``actors`` when given."""
    gpus = int(resources.get("GPU", 0))
    if actors is None:
        actors = gpus if gpus else max(1, int(resources.get("CPU", 1)) - 1)
    return int(actors), 1 if gpus else 0


def run_ray(plan: AuditPlan, dataset: "Dataset", todo: list[tuple[int, int]],
            stored: Callable[[int, int, object], None], *, address: str | None = None,
            actors: int | None = None, threads: int | None = None) -> None:
    """Score the shards ``todo`` on Ray (an already initialised Ray, else ``ray.init(address)``)
    and hand each shard's rows to ``stored(start, stop, table)`` as it arrives."""
    import pyarrow as pa

    try:
        import ray
    except ImportError:
        raise InputError("--ray needs Ray: pip install 'camonnx[ray]' (or ray[data]).") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the audit's own bar counts images
    size, gpus = pool_size(ray.cluster_resources(), actors)
    items = [{"start": start, "shard": pickle.dumps(ShardInput.of(dataset, start, stop))}
             for start, stop in todo]
    stops = dict(todo)
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map(_prepare, fn_kwargs={"plan": plan}, num_cpus=1)
    ds = ds.map_batches(ScoreActor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=size),
                        num_gpus=gpus, num_cpus=1,
                        fn_constructor_kwargs={"plan": plan, "device": "cuda" if gpus else "cpu",
                                               "threads": threads or 1},
                        ray_remote_args_fn=_retries)
    for row in ds.iter_rows():
        table = pa.ipc.open_stream(row["rows"]).read_all()
        start = int(row["start"])
        stored(start, stops[start], table)
