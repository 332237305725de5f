"""The dataset audit: every method's maps at every selected layer of every image of a dataset,
scored by faithfulness metrics, streamed to Parquet shards, resumable, then summarised
(docs/audit.md).

:func:`audit` is the public entry. Images flow in *shards* of ``shard_size`` consecutive image
ids (the sorted dataset, :mod:`camonnx.audit_data`). Per shard, both engines run the same two
steps:

1. :func:`prepare_shard` (CPU only): each image loaded and preprocessed by the model's recipe;
   an image that cannot be read is kept as *failed* with the reason;
2. :func:`score_shard` (the model): one clean forward for the predicted classes, then per method
   one :meth:`Explainer.explain` of every selected layer and every metric's scores
   (:func:`camonnx.metrics.evaluate.score_explanation`), giving one row per (image, method,
   layer, metric, trial).

The in-process engine (here) runs them in turn; the Ray engine (:mod:`camonnx.audit_ray`) runs
step 1 as Ray Data tasks on CPUs and step 2 in an actor pool, one Explainer per actor. Shards go
to the store (:mod:`camonnx.audit_store`) as they finish.

**Seeds.** Method m's seed is ``s_m = (seed XOR h(m)) mod 2⁶³`` with h the first 8 bytes of
SHA-256 of the method name (not Python's salted ``hash``); the metrics draw from
``(s_m, trial, layer index in the model, image id, …)``, so a row does not depend on the shard
it ran in, the engine or the order. The seeded methods get the image ids too (randomcam's
weights; smoothgradcam++'s noise depends on the seed and the image shape only), so the maps do
not depend on the shard either.

**Memory.** At most one shard's prepared images (S·C·H·W float32), one method's maps of it
(L·S·H·W float32), one explain batch's activations and gradients and one metric chunk
(``batch_size`` perturbed images) per worker.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from camonnx.audit_data import Dataset, list_dataset
from camonnx.audit_store import Store, shard_ranges
from camonnx.errors import CamonnxError, InputError

if TYPE_CHECKING:
    import pyarrow as pa

    from camonnx.audit_summary import AuditSummary
    from camonnx.explainer import Explainer
    from camonnx.metrics.base import Metric

#: Images per explain pass inside a shard (bounds the activations and gradients held at once).
EXPLAIN_BATCH = 16
TARGETS = ("predicted", "label")


def stable_hash(text: str) -> int:
    """h(text): the first 8 bytes of SHA-256(text) as an integer < 2⁶³ (stable across runs)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") & (2 ** 63 - 1)


def method_seed(seed: int, method: str) -> int:
    """s_m = (seed XOR h(method)) mod 2⁶³."""
    return (int(seed) ^ stable_hash(method)) & (2 ** 63 - 1)


@dataclass(frozen=True)
class ShardInput:
    """Images [start, stop) of the dataset: their paths and labels."""

    start: int
    stop: int
    paths: tuple[str, ...]
    labels: tuple[int | None, ...]
    label_names: tuple[str | None, ...]

    @classmethod
    def of(cls, dataset: Dataset, start: int, stop: int) -> "ShardInput":
        return cls(start, stop, dataset.paths[start:stop], dataset.labels[start:stop],
                   dataset.label_names[start:stop])


@dataclass
class Prepared:
    """A shard's prepared images: ``x`` (n_ok, C, H, W) float32 of the readable ones, ``ok``
    per image, and the reason of each failed one."""

    x: np.ndarray
    ok: list[bool]
    reasons: list[str | None]


def prepare_shard(shard: ShardInput, recipe, channels: int) -> Prepared:
    """Load and preprocess each image of ``shard`` by ``recipe``
    (:func:`camonnx.images.prepare_images`); an unreadable image is recorded as failed with
    the :class:`InputError`'s message."""
    from camonnx.images import prepare_images

    arrays, ok, reasons = [], [], []
    for path in shard.paths:
        try:
            x, _ = prepare_images(path, recipe, channels=channels)
        except InputError as exc:
            ok.append(False)
            reasons.append(str(exc))
            continue
        arrays.append(x.numpy()[0])
        ok.append(True)
        reasons.append(None)
    h, w = recipe.size
    x = np.stack(arrays) if arrays else np.zeros((0, channels, h, w), np.float32)
    return Prepared(x, ok, reasons)


@dataclass(frozen=True)
class AuditPlan:
    """What a worker needs to score shards: how to load the model, and the run's options."""

    model: str
    explainer_options: dict
    methods: tuple[str, ...]
    layer_indices: tuple[int, ...]
    layer_names: tuple[str, ...]
    metrics: tuple[Any, ...]  # Metric instances
    trials: int
    target: str
    seed: int
    batch_size: int
    channels: int
    threads: int | None = None

    def load(self, device: str, threads: int | None = None) -> "Explainer":
        """The plan's Explainer on ``device`` (ONNX Runtime with ``threads`` intra-op threads)."""
        from camonnx.explainer import Explainer

        return Explainer(self.model, device=device, threads=threads, **self.explainer_options)

    @property
    def recipe(self):
        return self.explainer_options["preprocess"]


def score_shard(explainer: "Explainer", plan: AuditPlan, shard: ShardInput,
                prepared: Prepared) -> "pa.Table":
    """One row per (image, method, layer, metric, trial) of ``shard``
    (:func:`camonnx.audit_rows.rows`): the images' logits once, then each method's explanation
    of every selected layer and each metric's scores of it. A method or metric that refuses the
    shard (an :class:`InputError`, e.g. non-finite maps) gives failed rows with its message."""
    import torch

    from camonnx.audit_rows import Block, rows
    from camonnx.metrics.base import logits_of
    from camonnx.metrics.evaluate import score_explanation

    ok = np.asarray(prepared.ok, bool)
    blocks: list[Block] = []
    predicted = targets = None
    if ok.any():
        x, _ = explainer.prepare(torch.from_numpy(prepared.x))
        logits = logits_of(explainer.engine, x)
        predicted = logits.argmax(axis=1)
        targets = (predicted if plan.target == "predicted"
                   else np.asarray([shard.labels[i] for i in np.flatnonzero(ok)], np.int64))
        ids = shard.start + np.flatnonzero(ok)
    for method in plan.methods:
        seed = method_seed(plan.seed, method)
        explanation, failure = None, None
        if ok.any():
            try:
                explanation = explainer.explain(
                    x, method=method, layers=list(plan.layer_indices), targets=targets.tolist(),
                    normalize="none", batch_size=EXPLAIN_BATCH, seed=seed, progress=False,
                    image_ids=ids.tolist())
            except CamonnxError as exc:
                failure = f"{method}: {exc}"
        for metric in plan.metrics:
            result, reason = None, failure
            if explanation is not None:
                try:
                    result = score_explanation(
                        explainer, x, explanation, [metric], trials=plan.trials, seed=seed,
                        batch_size=plan.batch_size, progress=False,
                        layer_indices=plan.layer_indices, layer_ids=plan.layer_indices,
                        image_ids=ids, logits=logits)[0]
                except CamonnxError as exc:
                    reason = f"{metric.name}: {exc}"
            blocks.append(Block(method, metric.name, result, reason))
    return rows(shard, prepared, plan, blocks, predicted, targets)


# --- the public entry ------------------------------------------------------------------------

def audit(model_or_explainer: "str | os.PathLike | Explainer | None", data, *,
          methods: str | Sequence[str] = "gradcam", layers="all",
          metrics: "str | Metric | Sequence[str | Metric]" = "road", trials: int = 1,
          target: str = "predicted", seed: int = 0, batch_size: int = 64, shard_size: int = 16,
          out: str | os.PathLike = "camonnx-audit", ray: bool | str | None = None,
          actors: int | None = None, threads: int | None = None, device: str = "cpu",
          progress: bool = True, on_shard: Callable[[int, int], None] | None = None,
          **explainer_options) -> "AuditSummary":
    """Audit a dataset: every method's maps at every selected layer of every image, scored by
    every metric, in Parquet shards under ``out``; returns the :class:`AuditSummary` (also
    written as ``out``/summary.json, .csv, .png).

    ``model_or_explainer``: an :class:`Explainer`, a model path, or None (the bundled model);
    ``explainer_options`` (``tap``, ``preprocess``, ``labels``, ``output``, ``check_parity``)
    go to the Explainer made from a path. ``data``: a folder (an ImageFolder layout gives
    labels), a glob, a CSV/Parquet file with ``path`` [and ``label``] columns, or a list of
    paths (:func:`camonnx.audit_data.list_dataset`). ``metrics``: names from
    :data:`camonnx.metrics.CATALOGUE` or Metric objects. ``target``: ``"predicted"`` (the
    model's class) or ``"label"`` (the dataset's; needs class indices). ``batch_size``: the
    metrics' images per forward; ``shard_size``: images per shard (the unit of work, of
    resuming, and of memory). ``ray``: run on Ray (True: ``ray.init()``'s default cluster, or
    an address); ``actors``: the actor pool's size (default: one per GPU, else CPUs − 1).
    ``threads``: torch's threads for an in-process run (and ONNX Runtime's, for an Explainer
    made here from a path); each Ray actor's torch and ONNX Runtime threads (default 1). ``on_shard(start, stop)`` is called after each shard is stored.

    Rerunning with the same ``out`` resumes: images of stored shards are skipped; a different
    model or option is refused. An interrupt (Ctrl-C) leaves the stored shards and no partial
    file.
    """
    from camonnx.audit_summary import summarise
    from camonnx.metrics.base import check_run_options
    from camonnx.metrics.evaluate import _as_metrics
    from camonnx.methods import get_method

    methods = [methods] if isinstance(methods, str) else list(dict.fromkeys(methods))
    if not methods:
        raise InputError("Give at least one method to audit.")
    for method in methods:
        get_method(method)
    chosen = _as_metrics(metrics)
    check_run_options(trials, batch_size)
    check_run_options(1, shard_size)  # same rule: a positive integer
    if target not in TARGETS:
        raise InputError(f"Unknown target {target!r}: use 'predicted' (the model's class) or "
                         "'label' (the dataset's labels).")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads must be a positive integer, got {threads!r}.")
    store = Store(out)  # fails before the model loads if OUT cannot be written
    explainer = _explainer(model_or_explainer, device, None if ray else threads, explainer_options)
    dataset = list_dataset(data, explainer.labels)
    if target == "label":
        _check_labels(explainer, dataset)
    chosen_layers = explainer.select_layers(layers)
    plan = AuditPlan(
        model=str(explainer.model_path),
        explainer_options={"tap": explainer.tap, "output": explainer.graph.output,
                           "preprocess": explainer.preprocess, "labels": explainer.labels,
                           # the actors check parity where this explainer did
                           "check_parity": explainer.parity_report is not None},
        methods=tuple(methods), layer_indices=tuple(layer.index for layer in chosen_layers),
        layer_names=tuple(layer.name for layer in chosen_layers), metrics=tuple(chosen),
        trials=int(trials), target=target, seed=int(seed), batch_size=int(batch_size),
        channels=explainer.graph.input.channels or 3, threads=threads)
    manifest = build_manifest(plan, dataset, shard_size, engine="ray" if ray else "in-process",
                              device=device)
    done = store.open(manifest)
    todo = [r for r in shard_ranges(len(dataset), shard_size) if r not in done]
    if todo:
        _run(explainer, plan, dataset, store, todo, len(dataset), progress, on_shard, ray,
             actors, threads)
    summary = summarise(store.read(), store.read_manifest())
    summary.write(store.out)
    return summary


def _explainer(model, device: str, threads: int | None, options: dict) -> "Explainer":
    from camonnx.explainer import Explainer

    if isinstance(model, Explainer):
        if options:
            raise InputError(f"{', '.join(sorted(options))}: options of a new Explainer; the "
                             "given Explainer already has its own. Pass a model path instead.")
        return model
    return Explainer(model, device=device, threads=threads, **options)


def _check_labels(explainer: "Explainer", dataset: Dataset) -> None:
    """``target="label"`` needs a class index per image, within the model's classes."""
    if not dataset.labelled:
        why = ("has no labels" if not dataset.has_labels else
               "has labels that are neither the model's class names nor integers "
               f"(e.g. {next(n for n in dataset.label_names if n is not None)!r})")
        raise InputError(f"--target label needs a class index per image, but the dataset "
                         f"{why}. Use --target predicted, name the class folders (or the "
                         "'label' column) by the model's class names (--labels FILE) or by "
                         "class index.")
    import torch

    h, w = explainer.preprocess.size
    probe = torch.zeros((1, explainer.graph.input.channels or 3, h, w), device=explainer.device)
    classes = explainer.forward(probe, [explainer.graph.logits])[explainer.graph.logits].shape[1]
    bad = sorted({label for label in dataset.labels if not 0 <= label < classes})
    if bad:
        raise InputError(f"The dataset's labels {bad[:5]} are not classes of the model (it has "
                         f"{classes}, 0–{classes - 1}). Fix the labels or use --target predicted.")


def _run(explainer, plan: AuditPlan, dataset: Dataset, store: Store, todo, total: int,
         progress: bool, on_shard, ray, actors, threads) -> None:
    """Score the shards ``todo`` (in-process, or on Ray), storing each as it finishes; the
    progress bar counts images."""
    import torch
    from tqdm.auto import tqdm

    remaining = sum(stop - start for start, stop in todo)
    bar = tqdm(total=total, initial=total - remaining, desc="audit", unit="img",
               disable=not progress, smoothing=0.1)

    def stored(start: int, stop: int, table) -> None:
        store.write(start, stop, table)
        bar.update(stop - start)
        if on_shard is not None:
            on_shard(start, stop)

    try:
        if ray:
            from camonnx.audit_ray import run_ray

            run_ray(plan, dataset, todo, stored, address=None if ray is True else str(ray),
                    actors=actors, threads=threads)
            return
        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            for start, stop in todo:
                shard = ShardInput.of(dataset, start, stop)
                prepared = prepare_shard(shard, plan.recipe, plan.channels)
                stored(start, stop, score_shard(explainer, plan, shard, prepared))
        finally:
            torch.set_num_threads(before)
    finally:
        bar.close()


# --- the manifest ----------------------------------------------------------------------------

def build_manifest(plan: AuditPlan, dataset: Dataset, shard_size: int, *, engine: str,
                   device: str) -> dict:
    """The run's manifest (docs/audit.md#store): what must not change on resume (model,
    dataset, options, seeds) and what may (``versions``, ``created``, the first run's ``run``
    engine)."""
    from camonnx.report_model import sha256

    labels = plan.explainer_options["labels"]
    return {
        "kind": "camonnx-audit", "format": 1,
        "model": {"path": os.path.abspath(plan.model), "sha256": sha256(plan.model)},
        "dataset": {"source": dataset.source, "images": len(dataset),
                    "listing_sha256": dataset.listing_sha256(), "labelled": dataset.labelled,
                    "label_source": dataset.label_source},
        "options": {
            "methods": list(plan.methods), "layers": list(plan.layer_indices),
            "layer_names": list(plan.layer_names),
            "metrics": {m.name: dict(m.options) for m in plan.metrics},
            "higher_is_better": {m.name: bool(m.higher_is_better) for m in plan.metrics},
            "trials": plan.trials, "target": plan.target, "seed": plan.seed,
            "batch_size": plan.batch_size, "shard_size": int(shard_size),
            "explain_batch": EXPLAIN_BATCH, "normalize": "none",
            "tap": plan.explainer_options["tap"], "output": plan.explainer_options["output"],
            "preprocess": plan.recipe.to_dict(),
            "class_names_sha256": None if not labels else
            hashlib.sha256("\n".join(labels).encode("utf-8")).hexdigest(),
        },
        "seeds": {"run": plan.seed, "methods": {m: method_seed(plan.seed, m) for m in plan.methods},
                  "rule": "metric seed (s_m, trial, layer index, image id); s_m = (seed XOR "
                          "sha256(method)[:8]) mod 2^63"},
        "class_names": list(labels) if labels else None,
        "versions": _versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": {"engine": engine, "device": device, "threads": plan.threads},
    }


def _versions() -> dict:
    import numpy
    import onnxruntime
    import pyarrow
    import torch

    import camonnx

    versions = {"camonnx": camonnx.__version__, "python": platform.python_version(),
                "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                "numpy": numpy.__version__, "pyarrow": pyarrow.__version__}
    if "ray" in sys.modules:
        versions["ray"] = sys.modules["ray"].__version__
    return versions
