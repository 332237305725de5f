"""Public kernel API and the device dispatch layer.

Callers pass torch tensors and get torch tensors back (float32). The data's device picks the
implementation:

- CPU tensors: the ``numba.njit(parallel=True, cache=True)`` twins in ``_cpu.py``, called on
  ``Tensor.numpy()`` views (no copies unless an input is not float32 / not contiguous). The first
  call in a process loads the compiled code from numba's on-disk cache (or compiles it once).
- CUDA tensors: the ``numba.cuda`` twins in ``_cuda.py`` (imported on first use), reading the
  tensors zero-copy through ``__cuda_array_interface__``; results are allocated by torch on the same
  device; launches go on torch's current stream; nothing is copied to the host.

``backend="cuda"`` on CPU tensors is accepted only under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``): that is how the CUDA kernels are tested on machines without a GPU.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from camonnx.errors import InputError

from . import _cpu
from ._tables import axis_table, layer_tables

WSUM_MODES = ("channel", "elementwise", "elementwise_relu")
SMALL_WORK = 1 << 18  # CPU calls below this many element operations stay single-threaded
NORM_MODES = ("local", "global", "none")


# --------------------------------------------------------------------------------------------
# backend selection and array views
# --------------------------------------------------------------------------------------------
def cuda_simulator_enabled() -> bool:
    """True when numba runs CUDA kernels in its CPU simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    from numba import config

    return bool(getattr(config, "ENABLE_CUDASIM", 0))


def _resolve(tensors: Sequence[torch.Tensor], backend: str | None) -> str:
    dev = tensors[0].device
    for t in tensors[1:]:
        if t.device != dev:
            raise InputError(f"All kernel inputs must be on one device; got {dev} and {t.device}.")
    if backend is None:
        return "cuda" if dev.type == "cuda" else "cpu"
    if backend == "cpu":
        if dev.type != "cpu":
            raise InputError(f"backend='cpu' needs CPU tensors; the data is on {dev}.")
        return "cpu"
    if backend == "cuda":
        if dev.type == "cuda" or (dev.type == "cpu" and cuda_simulator_enabled()):
            return "cuda"
        raise InputError(
            f"backend='cuda' needs CUDA tensors (or NUMBA_ENABLE_CUDASIM=1); the data is on {dev}."
        )
    raise InputError(f"Unknown kernel backend {backend!r}; use None, 'cpu' or 'cuda'.")


def _f32(t, name: str) -> torch.Tensor:
    """float32, C-contiguous, detached; canonical strides (a view, no copy, when already so)."""
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}.")
    t = t.detach()
    if t.dtype != torch.float32:
        t = t.to(torch.float32)
    t = t.contiguous()
    # Size-1 dims of a contiguous tensor may carry any stride; give numba the canonical ones so the
    # arrays always type as C-contiguous (one kernel signature).
    canon, acc = [], 1
    for s in reversed(t.shape):
        canon.append(acc)
        acc *= max(int(s), 1)
    canon = tuple(reversed(canon))
    if t.stride() != canon and t.numel() > 0:
        t = t.as_strided(t.shape, canon)
    return t


class _Launch:
    """Array views and kernel launches for one backend on one device."""

    def __init__(self, backend: str, device: torch.device):
        self.backend = backend
        self.device = device
        self.real_cuda = backend == "cuda" and device.type == "cuda"
        self._gpu_ctx = None
        self.stream = None

    def __enter__(self):
        if self.real_cuda:
            from numba import cuda

            self._gpu_ctx = cuda.gpus[self.device.index if self.device.index is not None
                                      else torch.cuda.current_device()]
            self._gpu_ctx.__enter__()
            handle = torch.cuda.current_stream(self.device).cuda_stream
            self.stream = cuda.external_stream(handle) if handle else cuda.default_stream()
        return self

    def __exit__(self, *exc):
        if self._gpu_ctx is not None:
            self._gpu_ctx.__exit__(*exc)
            self._gpu_ctx = None
        return False

    @property
    def k(self):
        """The kernel module of this backend."""
        if self.backend == "cpu":
            return _cpu
        from . import _cuda

        return _cuda

    def arr(self, t: torch.Tensor):
        """Zero-copy kernel view of a float32/int tensor on ``self.device``."""
        if self.real_cuda:
            from numba import cuda

            return cuda.as_cuda_array(t, sync=False)
        return t.numpy()

    def table(self, a: np.ndarray):
        """A (cached, host) numpy table as a kernel argument on this device. On a GPU the table
        is copied to the device once per new layout (shape set) and then reused."""
        if not self.real_cuda:
            return a
        key = (id(a), str(self.device))
        hit = _DEVICE_TABLES.get(key)
        if hit is None or hit[0] is not a:
            if len(_DEVICE_TABLES) > 512:
                _DEVICE_TABLES.clear()
            hit = (a, torch.from_numpy(np.array(a)).to(self.device, non_blocking=False))
            _DEVICE_TABLES[key] = hit
        return self.arr(hit[1])

    def run(self, kernel, grid, block, *args, work: int = 0):
        """Launch a CUDA kernel (``grid``/``block`` ignored on CPU, where ``kernel`` is the twin).

        On CPU, a call with less than ``SMALL_WORK`` element operations runs on the calling thread
        alone: waking the worker threads costs more than such a call (tens of microseconds on an
        idle machine, whole scheduler ticks of milliseconds on a busy one).
        """
        if self.backend == "cpu":
            if work < SMALL_WORK:
                import numba

                prev = numba.get_num_threads()
                if prev > 1:
                    numba.set_num_threads(1)
                    try:
                        kernel(*args)
                    finally:
                        numba.set_num_threads(prev)
                    return
            kernel(*args)
        elif self.stream is not None:
            kernel[grid, block, self.stream](*args)
        else:
            kernel[grid, block](*args)


# Device copies of the cached host tables, keyed by the host array's identity (host tables live in
# lru caches, so they stay alive and keep their identity).
_DEVICE_TABLES: dict = {}


# --------------------------------------------------------------------------------------------
# 1. weighted channel sum
# --------------------------------------------------------------------------------------------
def weighted_channel_sum(acts: torch.Tensor, weights: torch.Tensor, mode: str = "channel",
                         relu: bool = True, *, backend: str | None = None) -> torch.Tensor:
    """Channel-weighted sum of activations, (N, K, h, w) -> (N, h, w), float32.

    - ``mode="channel"``: ``weights`` (N, K); ``M = Σ_k w[n,k]·A[n,k]`` (gradcam, xgradcam,
      gradcam++, scorecam, ablationcam, randomcam: any per-channel weights).
    - ``mode="elementwise"``: ``weights`` (N, K, h, w); ``M = Σ_k W⊙A`` (hirescam with W = g,
      layercam with W = ReLU(g)).
    - ``mode="elementwise_relu"``: ``M = Σ_k ReLU(W⊙A)`` (elementwise CAM with W = g).

    Then ``ReLU(M)`` if ``relu``. Sums accumulate in float64 and are rounded once to float32 (the
    CPU channel mode adds groups of 4 channels in float32 first: still far below 1e-5 error).
    float32 C-contiguous inputs are used in place; others are converted (a copy).
    """
    if mode not in WSUM_MODES:
        raise InputError(f"Unknown weighted_channel_sum mode {mode!r}; use one of {WSUM_MODES}.")
    acts = _f32(acts, "acts")
    weights = _f32(weights, "weights")
    if acts.dim() != 4:
        raise InputError(f"acts must be (N, K, h, w); got shape {tuple(acts.shape)}.")
    N, K, h, w = acts.shape
    want = (N, K) if mode == "channel" else (N, K, h, w)
    if tuple(weights.shape) != want:
        raise InputError(f"weights for mode {mode!r} must have shape {want}; "
                         f"got {tuple(weights.shape)}.")
    be = _resolve([acts, weights], backend)
    out = torch.empty((N, h, w), dtype=torch.float32, device=acts.device)
    if out.numel() == 0:
        return out
    if K == 0:
        return out.zero_()
    with _Launch(be, acts.device) as L:
        k = L.k
        if be == "cuda":
            grid, block = k.grid_1d(N * h * w, k.WS_X), (k.WS_X, k.WS_Y)
        else:
            grid = block = None
        if mode == "channel":
            L.run(k.wsum_channel, grid, block, L.arr(acts), L.arr(weights), int(bool(relu)),
                  L.arr(out), work=acts.numel())
        else:
            L.run(k.wsum_elementwise, grid, block, L.arr(acts), L.arr(weights),
                  int(mode == "elementwise_relu"), int(bool(relu)), L.arr(out),
                  work=2 * acts.numel())
    return out


# --------------------------------------------------------------------------------------------
# 2. upsampling of many layers + normalisation
# --------------------------------------------------------------------------------------------
def _size2(size) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    try:
        H, W = (int(s) for s in size)
    except Exception:
        raise InputError(f"size must be an int or (H, W); got {size!r}.") from None
    if H < 1 or W < 1:
        raise InputError(f"size must be positive; got {(H, W)}.")
    return H, W


_LAYOUTS: dict = {}


def _layout(sizes: tuple, N: int):
    """(offs, hs, ws) int64 numpy arrays for packed maps of the given sizes, cached."""
    key = (sizes, N)
    hit = _LAYOUTS.get(key)
    if hit is None:
        if len(_LAYOUTS) > 256:
            _LAYOUTS.clear()
        hs = np.array([h for h, _ in sizes], np.int64)
        ws = np.array([w for _, w in sizes], np.int64)
        offs = np.zeros(len(sizes), np.int64)
        if len(sizes) > 1:
            offs[1:] = np.cumsum(N * hs * ws)[:-1]
        hit = _LAYOUTS[key] = (offs, hs, ws)
    return hit


def _lo_rng(mn: torch.Tensor, mx: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(layer, image) offset and range from per-map min/max (L, N); global: over layers."""
    if mode == "global":
        lo = mn.amin(dim=0, keepdim=True).expand_as(mn).contiguous()
        hi = mx.amax(dim=0, keepdim=True).expand_as(mx).contiguous()
    else:
        lo, hi = mn, mx
    return lo, (hi - lo).contiguous()


def upsample_layers(maps, size, normalize: str = "local", *, out: torch.Tensor | None = None,
                    backend: str | None = None) -> torch.Tensor:
    """Bilinearly resize many layers' maps into one (L, N, H, W) float32 buffer, normalised.

    ``maps``: a sequence of L tensors (N, h_l, w_l) (any sizes, one batch size, one device), or one
    (L, N, h, w) tensor. ``size``: ``(H, W)`` or an int. Resampling is torch's
    ``F.interpolate(mode="bilinear", align_corners=False)`` (same source indices and weights:
    half-pixel centres, source coordinate clamped at 0, indices clamped at the edge), for up- and
    down-scaling, equal to float32 rounding; the blend is written ``a + lam*(b - a)`` so that
    constant regions stay exactly constant (see ``_tables``).

    ``normalize``: ``"local"`` min-max per (layer, image) to [0, 1]; ``"global"`` min and max per
    image over all L layers' resized maps (the layer holding the extremes spans [0, 1], the others
    a sub-range); ``"none"`` raw values. A constant map (max == min) becomes all zeros, never NaN.
    Normalised values are clipped to [0, 1] against last-ulp rounding.

    One pass computes each map's min/max from the interpolation without writing, a second writes
    the normalised values: the output is written once and never re-read. The maps are first packed
    into one flat buffer (the only copy: ~2% of the output's size for ResNet-50 taps at 224x224),
    so that one kernel launch serves every layer. ``out``: an optional preallocated
    (L, N, H, W) float32 contiguous buffer on the maps' device (returned).
    """
    if normalize not in NORM_MODES:
        raise InputError(f"Unknown normalisation {normalize!r}; use one of {NORM_MODES}.")
    if isinstance(maps, torch.Tensor):
        if maps.dim() != 4:
            raise InputError(f"A maps tensor must be (L, N, h, w); got {tuple(maps.shape)}.")
        maps = list(maps.unbind(0))
    maps = [_f32(m, f"maps[{i}]") for i, m in enumerate(maps)]
    if not maps:
        raise InputError("upsample_layers needs at least one map.")
    for i, m in enumerate(maps):
        if m.dim() != 3:
            raise InputError(f"maps[{i}] must be (N, h, w); got shape {tuple(m.shape)}.")
        if m.shape[1] < 1 or m.shape[2] < 1:
            raise InputError(f"maps[{i}] has an empty spatial size {tuple(m.shape[1:])}.")
    N = int(maps[0].shape[0])
    if any(int(m.shape[0]) != N for m in maps):
        raise InputError(f"All maps need one batch size; got {[int(m.shape[0]) for m in maps]}.")
    H, W = _size2(size)
    be = _resolve(maps, backend)
    dev = maps[0].device
    Lc = len(maps)
    result = _out_buffer(out, (Lc, N, H, W), dev)
    out = _f32(result, "out")  # canonical strides, same storage
    if N == 0:
        return result
    sizes = tuple((int(m.shape[1]), int(m.shape[2])) for m in maps)
    yi, yl, xi, xl = layer_tables(sizes, H, W)
    offs, hs, ws = _layout(sizes, N)
    packed = torch.cat([m.reshape(-1) for m in maps]) if Lc > 1 else maps[0].reshape(-1)
    with _Launch(be, dev) as L:
        k = L.k
        tabs = (L.table(offs), L.table(hs), L.table(ws), L.table(yi), L.table(yl), L.table(xi),
                L.table(xl))
        grid = k.grid_2d(H * W, Lc * N) if be == "cuda" else None
        block = getattr(k, "TPB", None)
        if normalize == "none":
            lo = torch.zeros((Lc, N), dtype=torch.float32, device=dev)
            rng = torch.ones((Lc, N), dtype=torch.float32, device=dev)
            L.run(k.ups_write, grid, block, L.arr(packed), *tabs, L.arr(lo), L.arr(rng), 0,
                  L.arr(out), work=out.numel())
            return result
        mn = torch.full((Lc, N), float("inf"), dtype=torch.float32, device=dev)
        mx = torch.full((Lc, N), float("-inf"), dtype=torch.float32, device=dev)
        L.run(k.ups_minmax, grid, block, L.arr(packed), *tabs, L.arr(mn), L.arr(mx),
              work=out.numel())
        lo, rng = _lo_rng(mn, mx, normalize)
        L.run(k.ups_write, grid, block, L.arr(packed), *tabs, L.arr(lo), L.arr(rng), 1,
              L.arr(out), work=out.numel())
    return result


def normalize_(buffer: torch.Tensor, mode: str = "local", *,
               backend: str | None = None) -> torch.Tensor:
    """Min-max normalise an (L, N, H, W) float32 buffer in place and return it.

    ``local``: per (layer, image); ``global``: per image over all layers; ``none``: unchanged.
    Constant maps (max == min over the normalisation group) become zeros. A 3-D (N, H, W) buffer is
    treated as one layer.
    """
    if mode not in NORM_MODES:
        raise InputError(f"Unknown normalisation {mode!r}; use one of {NORM_MODES}.")
    if (not isinstance(buffer, torch.Tensor) or buffer.dtype != torch.float32
            or not buffer.is_contiguous() or buffer.dim() not in (3, 4)):
        raise InputError("normalize_ needs a contiguous float32 (L, N, H, W) or (N, H, W) tensor.")
    if buffer.requires_grad:
        raise InputError("normalize_ works in place: pass a tensor that does not require grad.")
    if mode == "none" or buffer.numel() == 0:
        return buffer
    b4 = buffer if buffer.dim() == 4 else buffer.unsqueeze(0)
    Lc, N, H, W = b4.shape
    flat = _f32(b4.view(Lc * N, H * W), "buffer")
    be = _resolve([flat], backend)
    dev = flat.device
    mn = torch.full((Lc * N,), float("inf"), dtype=torch.float32, device=dev)
    mx = torch.full((Lc * N,), float("-inf"), dtype=torch.float32, device=dev)
    with _Launch(be, dev) as L:
        k = L.k
        grid = k.grid_2d(H * W, Lc * N) if be == "cuda" else None
        block = getattr(k, "TPB", None)
        L.run(k.maps_minmax, grid, block, L.arr(flat), L.arr(mn), L.arr(mx), work=flat.numel())
        lo, rng = _lo_rng(mn.view(Lc, N), mx.view(Lc, N), mode)
        L.run(k.maps_scale, grid, block, L.arr(flat), L.arr(lo.view(-1)), L.arr(rng.view(-1)),
              work=flat.numel())
    return buffer


# --------------------------------------------------------------------------------------------
# 3. Gradual Extrapolation
# --------------------------------------------------------------------------------------------
def ge_step(H: torch.Tensor, E: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """One Gradual Extrapolation step: (N, h, w) map, (N, K, h', w') activation -> (N, h', w').

    ``S = ReLU(Σ_k E[n,k])``; if ``max(S[n]) > 0``: ``out[n] = resize(H[n]) ⊙ S[n] / max(S[n])``,
    else ``out[n] = resize(H[n])`` (the step is skipped for that image only: the output keeps the
    step's size so shapes stay uniform across the batch). ``resize`` is torch's bilinear,
    ``align_corners=False``. Whether a step applies at all (its size larger than H's) is the
    caller's decision; this kernel resizes to E's size whatever it is. Equals
    ``ge_apply(H, *ge_saliency(E))``.
    """
    S, smax = ge_saliency(E, backend=backend)
    return ge_apply(H, S, smax, backend=backend)


def ge_saliency(E: torch.Tensor, *,
                backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A step's saliency: ``S = ReLU(Σ_k E[n,k])`` (N, h', w') and its per-image max (N,).

    Computed once per step and shared by every layer extrapolated through it."""
    Et = _f32(E, "E")
    if Et.dim() != 4 or min(Et.shape[2:]) < 1:
        raise InputError(f"ge_saliency needs E (N, K, h', w') with non-empty spatial size; got "
                         f"{tuple(Et.shape)}.")
    N, _, h2, w2 = Et.shape
    be = _resolve([Et], backend)
    S = torch.empty((N, h2, w2), dtype=torch.float32, device=Et.device)
    smax = torch.zeros((N,), dtype=torch.float32, device=Et.device)
    if N == 0:
        return S, smax
    with _Launch(be, Et.device) as L:
        k = L.k
        grid = k.grid_2d(h2 * w2, N) if be == "cuda" else None
        L.run(k.ge_chansum, grid, getattr(k, "TPB", None), L.arr(Et), L.arr(S), L.arr(smax),
              work=Et.numel())
    return S, smax


def ge_apply(H: torch.Tensor, S: torch.Tensor, smax: torch.Tensor, *,
             out: torch.Tensor | None = None, backend: str | None = None) -> torch.Tensor:
    """The fused resize-multiply of a step: ``resize(H[n]) ⊙ S[m] / smax[m]`` (only the resize
    where ``smax[m] == 0``), (N·G, h, w) -> (N·G, h', w') with S (N, h', w') and smax (N,) from
    :func:`ge_saliency` and ``m = n mod N``: H may stack G layers' maps of the same N images
    (layer-major, as ``maps.reshape(G * N, h, w)``), so that one launch serves every layer going
    through the step. ``out``: an optional contiguous float32 (N·G, h', w') buffer (returned)."""
    Ht, St, mt = _f32(H, "H"), _f32(S, "S"), _f32(smax, "smax")
    if (Ht.dim() != 3 or St.dim() != 3 or mt.shape != (St.shape[0],)
            or (Ht.shape[0] % St.shape[0] if St.shape[0] else Ht.shape[0])):
        raise InputError(f"ge_apply needs H (N·G, h, w), S (N, h', w') and smax (N,) with N "
                         f"dividing H's first axis (both empty for an empty batch); got {tuple(Ht.shape)}, {tuple(St.shape)} and "
                         f"{tuple(mt.shape)}.")
    NG, h, w = Ht.shape
    _, h2, w2 = St.shape
    if min(h, w, h2, w2) < 1:
        raise InputError("ge_apply needs non-empty spatial sizes.")
    be = _resolve([Ht, St, mt], backend)
    out = _out_buffer(out, (NG, h2, w2), Ht.device)
    if NG == 0:
        return out
    yi, yl, xi, xl = layer_tables(((h, w),), h2, w2)
    with _Launch(be, Ht.device) as L:
        k = L.k
        grid = k.grid_2d(h2 * w2, NG) if be == "cuda" else None
        L.run(k.ge_resize_mul, grid, getattr(k, "TPB", None), L.arr(Ht), L.arr(St), L.arr(mt),
              L.table(yi), L.table(yl), L.table(xi), L.table(xl), L.arr(_f32(out, "out")),
              work=2 * out.numel())
    return out


def ge_finalize(H: torch.Tensor, *, out: torch.Tensor | None = None,
                backend: str | None = None) -> torch.Tensor:
    """Final Gradual Extrapolation normalisation, (N, H, W) -> (N, H, W) in [0, 1].

    Per image: z-score with the unbiased std, clip to [-1, 1], min-max to [0, 1]. A zero std
    (constant map, or a single pixel) and a constant clipped map give zeros, never NaN. Mean and
    variance accumulate in float64 (shifted by the image's first value); the per-pixel arithmetic
    is float32. ``out``: an optional contiguous float32 (N, H, W) buffer, which may be ``H`` itself
    (in place).
    """
    Ht = _f32(H, "H")
    if Ht.dim() != 3:
        raise InputError(f"ge_finalize needs H (N, H, W); got {tuple(Ht.shape)}.")
    N, h, w = Ht.shape
    be = _resolve([Ht], backend)
    dev = Ht.device
    out = _out_buffer(out, (N, h, w), dev)
    if out.numel() == 0:
        return out
    flat = Ht.view(N, h * w)
    stats = torch.zeros((N, 5), dtype=torch.float64, device=dev)
    stats[:, 2] = float("inf")
    stats[:, 3] = float("-inf")
    stats[:, 4] = flat[:, 0]  # the shift, read before ``out`` may overwrite H
    with _Launch(be, dev) as L:
        k = L.k
        grid = k.grid_2d(h * w, N) if be == "cuda" else None
        block = getattr(k, "TPB", None)
        L.run(k.ge_stats, grid, block, L.arr(flat), L.arr(stats), work=flat.numel())
        target = _f32(out.view(N, h * w), "out")
        L.run(k.ge_final, grid, block, L.arr(flat), L.arr(stats), L.arr(target),
              work=2 * flat.numel())
    return out


def _out_buffer(out: torch.Tensor | None, shape: tuple[int, ...], device) -> torch.Tensor:
    """``out`` checked against ``shape`` (contiguous float32 on ``device``), or a new buffer."""
    if out is None:
        return torch.empty(shape, dtype=torch.float32, device=device)
    if (not isinstance(out, torch.Tensor) or tuple(out.shape) != shape
            or out.dtype != torch.float32 or not out.is_contiguous()
            or out.device != torch.device(device) or out.requires_grad):
        got = (f"{tuple(out.shape)} {out.dtype} on {out.device}" if isinstance(out, torch.Tensor)
               else type(out).__name__)
        raise InputError(f"out must be a contiguous float32 tensor of shape {shape} on {device} "
                         f"that does not require grad; got {got}.")
    return out


# --------------------------------------------------------------------------------------------
# 4. power sums
# --------------------------------------------------------------------------------------------
def add_power_sums(g: torch.Tensor, sums: Sequence[torch.Tensor], *,
                   backend: str | None = None) -> None:
    """``sums[p-1] += Σ_t g[t]^p`` for p = 1, 2, 3 over the first axis of ``g`` (m, ...), into
    three contiguous float64 accumulators of ``g[0].numel()`` elements on g's device (any shape).

    Powers and sums are float64 (g² exact, g³ rounded once), in one pass over g with no
    temporaries: with one row the sums are g, g², g³ to float32 rounding. Smooth Grad-CAM++'s
    averaged 1st/2nd/3rd derivatives (docs/methods.md#smoothgradcampp) accumulate this way over the noisy copies.
    """
    if not isinstance(g, torch.Tensor) or g.dim() < 1:
        raise InputError("add_power_sums needs a tensor g (m, ...) with at least one axis.")
    flat = _f32(g.reshape(g.shape[0], -1), "g")
    size = flat.shape[1]
    if len(sums) != 3 or any(
            not isinstance(s, torch.Tensor) or s.dtype != torch.float64 or not s.is_contiguous()
            or s.numel() != size or s.device != flat.device for s in sums):
        raise InputError(f"add_power_sums needs three contiguous float64 accumulators of {size} "
                         f"elements on {flat.device}.")
    if flat.numel() == 0:
        return
    be = _resolve([flat], backend)
    with _Launch(be, flat.device) as L:
        k = L.k
        grid = k.grid_1d(size, k.TPB) if be == "cuda" else None
        L.run(k.power_sums, grid, getattr(k, "TPB", None), L.arr(flat),
              *(L.arr(s.view(-1)) for s in sums), work=3 * flat.numel())


# --------------------------------------------------------------------------------------------
# 5. warm-up
# --------------------------------------------------------------------------------------------
def warmup(device: str | torch.device = "cpu", *, backend: str | None = None) -> None:
    """Compile (or load from numba's cache) every kernel for ``device`` with tiny inputs, so the
    first real call pays no JIT. On CPU the compiled code is cached on disk across processes."""
    dev = torch.device(device)
    a = torch.rand(1, 2, 3, 4, device=dev)
    weighted_channel_sum(a, torch.rand(1, 2, device=dev), "channel", backend=backend)
    weighted_channel_sum(a, torch.rand_like(a), "elementwise", backend=backend)
    buf = upsample_layers([a[:, 0], a[:, 1, :2]], (5, 6), "global", backend=backend)
    upsample_layers([a[:, 0]], (5, 6), "none", backend=backend)
    normalize_(buf, "local", backend=backend)
    g = ge_step(a[:, 0], torch.rand(1, 3, 5, 6, device=dev), backend=backend)
    ge_finalize(g, backend=backend)
    add_power_sums(a, [torch.zeros(24, dtype=torch.float64, device=dev) for _ in range(3)],
                   backend=backend)


__all__ = [
    "WSUM_MODES", "NORM_MODES", "weighted_channel_sum", "upsample_layers", "normalize_",
    "ge_step", "ge_saliency", "ge_apply", "ge_finalize", "add_power_sums", "warmup",
    "cuda_simulator_enabled",
    "axis_table",
]
