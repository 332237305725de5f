"""An audit shard's rows as an Arrow table (columns: docs/audit.md#rows).

One row per (image id, method, layer index, metric, trial): the image (id, path, label, label
name), what the model made of it (predicted class, target), the score and the metric's
components flattened to one column per value (a component c (T, L, N, Q) whose last axis runs
over values v_q gives columns ``c_{v_q}``, e.g. ROAD's ``morf_0.2`` … ``lerf_0.8``; without
named values ``c_0`` …; a (T, L, N) component is the column ``c``; a name that a base column
already has is prefixed by the metric's, ``{metric}_{c}``), the clean image's
probability of the target class, and ``status`` ("ok" / "failed") with the ``reason`` of a
failure. A failed image, method or metric still has its rows (score null), so every key of a
finished audit appears exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from camonnx.audit_run import AuditPlan, Prepared, ShardInput


@dataclass
class Block:
    """One (method, metric) of a shard: its :class:`~camonnx.metrics.curve.MetricCurve` over
    the shard's readable images, or None with the reason it failed."""

    method: str
    metric: str
    result: Any
    reason: str | None


def component_columns(result) -> dict[str, np.ndarray]:
    """Each component (T, L, N, …) flattened to columns of shape (T, L, N)."""
    columns: dict[str, np.ndarray] = {}
    for name, value in result.components.items():
        value = np.asarray(value, np.float64)
        t, l, n = value.shape[:3]
        if value.ndim == 3:
            columns[name] = value
            continue
        flat = value.reshape(t, l, n, -1)
        axis = result.axes.get(name)
        values = list(axis[1]) if axis is not None and len(axis[1]) == flat.shape[-1] \
            else list(range(flat.shape[-1]))
        for q, v in enumerate(values):
            columns[f"{name}_{v:g}" if isinstance(v, float) else f"{name}_{v}"] = flat[..., q]
    return columns


def rows(shard: "ShardInput", prepared: "Prepared", plan: "AuditPlan", blocks: list[Block],
         predicted: np.ndarray | None, targets: np.ndarray | None) -> pa.Table:
    """The shard's table: for each block, trial, layer and image (image-major within a block)."""
    s, n_layers, trials = shard.stop - shard.start, len(plan.layer_indices), plan.trials
    ok = np.asarray(prepared.ok, bool)
    position = np.cumsum(ok) - 1  # column of each readable image in the metric's arrays
    img, lay, tri = (a.ravel() for a in np.meshgrid(np.arange(s), np.arange(n_layers),
                                                    np.arange(trials), indexing="ij"))
    per_image_pred = np.full(s, -1, np.int64)
    per_image_target = np.full(s, -1, np.int64)
    if predicted is not None:
        per_image_pred[ok] = predicted
        per_image_target[ok] = targets
    parts = []
    for block in blocks:
        n = len(img)
        score = np.full(n, np.nan)
        base = np.full(n, np.nan)
        components: dict[str, np.ndarray] = {}
        reason = [prepared.reasons[i] if not ok[i] else block.reason for i in img]
        good = ok[img] & (block.result is not None)
        if block.result is not None:
            pick = (tri[good], lay[good], position[img[good]])
            score[good] = np.asarray(block.result.scores, np.float64)[pick]
            base[good] = np.asarray(block.result.base_probability, np.float64)[pick[2]]
            for name, value in component_columns(block.result).items():
                column = np.full(n, np.nan)
                column[good] = value[pick]
                components[name] = column
        columns = {
            "image_id": pa.array(shard.start + img, pa.int64()),
            "path": pa.array([shard.paths[i] for i in img], pa.string()),
            "label": pa.array([shard.labels[i] for i in img], pa.int64()),
            "label_name": pa.array([shard.label_names[i] for i in img], pa.string()),
            "predicted": pa.array(per_image_pred[img], pa.int64(), mask=per_image_pred[img] < 0),
            "target": pa.array(per_image_target[img], pa.int64(), mask=per_image_target[img] < 0),
            "method": pa.array([block.method] * n, pa.string()),
            "layer_index": pa.array(np.asarray(plan.layer_indices, np.int64)[lay], pa.int64()),
            "layer": pa.array([plan.layer_names[i] for i in lay], pa.string()),
            "metric": pa.array([block.metric] * n, pa.string()),
            "trial": pa.array(tri, pa.int64()),
            "score": pa.array(score, pa.float64(), mask=~good),
            "status": pa.array(np.where(good, "ok", "failed"), pa.string()),
            "reason": pa.array([None if g else r for g, r in zip(good, reason)], pa.string()),
            "base_probability": pa.array(base, pa.float64(), mask=~good),
        }
        for name, value in components.items():  # a name taken by a base column gets a prefix
            columns[name if name not in columns else f"{block.metric}_{name}"] = pa.array(
                value, pa.float64(), mask=~good)
        parts.append(pa.table(columns))
    return pa.concat_tables(parts, promote_options="default")
