"""camonnx.kernels: compiled kernel pairs (Numba CUDA + Numba CPU twin) behind one torch API.

Each pair has one signature; the data's device selects the twin (see ``_api``):

- :func:`weighted_channel_sum` — Σ_k w·A (per-channel or elementwise weights, inner/outer ReLU).
- :func:`upsample_layers` — every layer's map bilinearly resized into one (L, N, H, W) buffer,
  fused with local / global / no min-max normalisation; :func:`normalize_` on a buffer alone.
- :func:`ge_step` (= :func:`ge_apply` ∘ :func:`ge_saliency`), :func:`ge_finalize` — Gradual
  Extrapolation (docs/methods.md#gradual-extrapolation).
- :func:`add_power_sums` — Σ_t g^p, p = 1, 2, 3, in float64 (Smooth Grad-CAM++, docs/methods.md#smoothgradcampp).
- :func:`warmup` — pay the first-call JIT (or cache load) ahead of time.

``_impute_cpu`` holds the CPU kernels of ROAD's imputation solver (stencils, smoothers,
restriction and prolongation, fused dot products; docs/metrics.md), ``_impute_cycle`` strings
them into one compiled call per V-cycle and per full-multigrid solve. They have no CUDA twin: on a
GPU the solver runs as torch operations (``camonnx.road_backends.TorchOps``).
"""

from ._api import (
    NORM_MODES,
    WSUM_MODES,
    add_power_sums,
    cuda_simulator_enabled,
    ge_apply,
    ge_finalize,
    ge_saliency,
    ge_step,
    normalize_,
    upsample_layers,
    warmup,
    weighted_channel_sum,
)
from ._tables import axis_table

__all__ = [
    "NORM_MODES",
    "WSUM_MODES",
    "add_power_sums",
    "axis_table",
    "cuda_simulator_enabled",
    "ge_apply",
    "ge_finalize",
    "ge_saliency",
    "ge_step",
    "normalize_",
    "upsample_layers",
    "warmup",
    "weighted_channel_sum",
]
