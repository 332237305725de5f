"""The pass engine: every forward and backward camonnx runs on a model (docs/pipeline.md#passes).

One :class:`PassEngine` per model owns the torch mirror, the ONNX Runtime session, the device,
the model's input layout and the chunking (a fixed-batch model runs one image at a time).
Methods and metrics reach the model only through it:

* :meth:`PassEngine.forward` — named tensors of a batch, from ONNX Runtime where it runs on the
  device, else from the mirror without autograd;
* :meth:`PassEngine.gradient_pass` — per chunk, one mirror forward and one
  ``torch.autograd.grad(Σ_n y_n, taps)`` giving ∂y/∂A for every tap at once; each chunk's result
  goes to a hook (Smooth Grad-CAM++ accumulates its noisy copies' gradient powers there, and
  :meth:`PassEngine.gradients` concatenates the chunks);
* :meth:`PassEngine.from_tap` — a clean mirror forward from which the network after one tap
  re-runs with that tap replaced (Ablation-CAM).

Targets are resolved once per chunk, on that chunk's logits, from the rows of the images it holds
(:meth:`camonnx.targets.Target.take`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Generic, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from camonnx.errors import DeviceError, InputError, unknown_name_error
from camonnx.graph import Layer, ModelGraph
from camonnx.mirror import Mirror
from camonnx.runtime import OrtRuntime, cuda_provider_available
from camonnx.targets import Rows, Target, TargetLike, joined, per_image, resolve, take

log = logging.getLogger("camonnx")

T = TypeVar("T", np.ndarray, torch.Tensor)


@dataclass
class Gradients(Generic[T]):
    """One forward + one backward: the logits (N, classes), and per tap A and ∂y/∂A.

    Unpacks as ``logits, activations, gradients``. ``classes``: the class index per image (None
    for a function target); ``target``: the resolved :class:`~camonnx.targets.Target`."""

    logits: T
    activations: dict[str, T]
    gradients: dict[str, T]
    classes: list[int] | None
    target: Target

    def __iter__(self):
        return iter((self.logits, self.activations, self.gradients))


@dataclass
class GradientChunk:
    """What one chunk of :meth:`PassEngine.gradient_pass` hands to its hook (all detached)."""

    rows: Rows  # the image of each row, as the targets number them
    values: dict[str, torch.Tensor]  # taps and extra tensors (N', K, h, w)
    gradients: dict[str, torch.Tensor]  # ∂y/∂A per tap (zeros where y does not depend on it)
    logits: torch.Tensor  # (N', classes)
    target: Target  # resolved on these logits


#: The partial route is taken when the mirror's part of the network holds at most this share of
#: its costly nodes. Measured on CPU (bench/bench_route.py): ONNX Runtime's forward costs about
#: half of the mirror's, so the route pays once the skipped part exceeds about half.
PARTIAL_SHARE = 0.5


@dataclass(frozen=True)
class PartialRoute:
    """A gradient pass that starts from ONNX Runtime's tensors (:meth:`PassEngine.partial_route`)."""

    leaves: tuple[str, ...]  # taps whose gradient the backward stops at
    from_runtime: tuple[str, ...]  # leaves, the frontier ORT exposes, extra tensors upstream


class PassEngine:
    """The mirror, ONNX Runtime, the device, the input layout and the chunking of one model."""

    def __init__(self, graph: ModelGraph, device: torch.device, model_name: str = "the model",
                 threads: int | None = None):
        self.graph = graph
        self.device = device
        self.mirror = Mirror(graph).to(device)
        self.mirror.eval()
        self.runtime: OrtRuntime | None = None
        if device.type == "cpu" or cuda_provider_available():
            self.runtime = OrtRuntime(graph, "cpu" if device.type == "cpu" else str(device),
                                      threads=threads)
        #: Images per pass at most (1 for a fixed-batch model), None: no limit.
        self.batch_limit = 1 if graph.input.fixed_batch else None
        if self.batch_limit == 1 and graph.input.batch != 1:
            raise InputError(f"The model's batch size is fixed at {graph.input.batch}; camonnx "
                             "runs fixed-batch models one image at a time and needs batch 1 or a "
                             "dynamic batch axis. Re-export with a dynamic batch.")
        if self.batch_limit == 1:
            log.warning("%s has a fixed batch of 1: images run one at a time.", model_name)
        #: Whether gradient passes may take the partial route (:meth:`partial_route`).
        self.partial_pass = True
        self._routes: dict[tuple, PartialRoute | None] = {}

    @property
    def logits_name(self) -> str:
        """The tensor holding the (N, classes) scores."""
        return self.graph.logits

    # --- taps ---------------------------------------------------------------------------------

    @property
    def layers(self) -> list[Layer]:
        return self.graph.layers

    def layer(self, key: str | int) -> Layer:
        """A layer by name, ONNX tensor name, or index (negative counts from the end)."""
        if isinstance(key, (int, np.integer)):
            if not -len(self.layers) <= key < len(self.layers):
                raise InputError(f"Layer index {key} is out of range: the model has "
                                 f"{len(self.layers)} layers (0–{len(self.layers) - 1}).")
            return self.layers[key]
        for layer in self.layers:
            if key in (layer.name, layer.tensor):
                return layer
        raise unknown_name_error("layer", str(key), [layer.name for layer in self.layers],
                                 "List the layers with `camonnx layers MODEL`.")

    # --- layout and chunking ------------------------------------------------------------------

    def to_model_layout(self, x: torch.Tensor) -> torch.Tensor:
        """An NCHW batch in the model's input layout (NHWC for a TensorFlow export)."""
        return x.permute(0, 2, 3, 1).contiguous() if self.graph.input.layout == "NHWC" else x

    def chunk_size(self, wanted: int) -> int:
        """Images per pass: ``wanted``, or 1 for a fixed-batch model."""
        return self.batch_limit or wanted

    def chunks(self, n: int, batch_size: int | None = None) -> Iterator[slice]:
        """Consecutive slices of ``n`` images, ``batch_size`` (default: all) at most."""
        size = self.chunk_size(batch_size or n)
        for start in range(0, n, size):
            yield slice(start, min(start + size, n))

    # --- passes -------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, outputs: Sequence[str]) -> dict[str, torch.Tensor]:
        """Named tensors for a prepared NCHW batch: ONNX Runtime where it runs on this device,
        else the mirror (no autograd). Runs fixed-batch models image by image."""
        parts: list[dict[str, torch.Tensor]] = []
        for chunk in self.chunks(x.shape[0]):
            xm = self.to_model_layout(x[chunk])
            if self.runtime is not None:
                values = self.runtime.run(xm, outputs)
                parts.append({k: torch.as_tensor(v, device=self.device) for k, v in values.items()})
            else:
                with torch.no_grad():
                    parts.append(self.mirror(xm, outputs))
        return {name: concat([p[name] for p in parts]) for name in outputs}

    def gradient_pass(self, batches: Iterable[tuple[Rows, torch.Tensor]], targets: TargetLike,
                      taps: Sequence[str], on_chunk: Callable[[GradientChunk], None],
                      extra: Sequence[str] = ()) -> None:
        """For each (rows, x) of ``batches`` (x: an NCHW chunk, rows: the image of each of its
        rows): one mirror forward, y = the target of those rows resolved on the chunk's logits,
        and one ``torch.autograd.grad(Σ y, taps)``; then ``on_chunk`` gets the chunk's
        :class:`GradientChunk`, whose tensors are freed before the next chunk runs.

        The input requires grad only so that every tap joins the autograd graph: the backward
        asks for the taps alone and stops at the shallowest one. ``extra`` tensors (e.g. Gradual
        Extrapolation steps) come back with the taps, without gradients. For deep taps the
        forward takes the partial route (:meth:`partial_route`)."""
        names = list(dict.fromkeys(taps))
        extra = [name for name in dict.fromkeys(extra) if name not in names]
        wanted = list(dict.fromkeys(names + extra + [self.logits_name]))
        route = self.partial_route(names, extra)
        for rows, x in batches:
            with torch.enable_grad():
                if route is None:
                    values = self.mirror(self.to_model_layout(x).detach().requires_grad_(True),
                                         wanted)
                else:
                    values = self._partial_forward(self.to_model_layout(x).detach(), route,
                                                   wanted)
                logits = values[self.logits_name]
                target = resolve(take(targets, rows), logits.detach())
                score = target(logits).sum()
                tensors = [values[name] for name in names]
                if score.requires_grad:
                    grads = torch.autograd.grad(score, tensors, allow_unused=True)
                else:  # the target does not depend on the input at all
                    grads = (None,) * len(tensors)
            on_chunk(GradientChunk(
                rows, {name: values[name].detach() for name in names + extra},
                {name: g if g is not None else torch.zeros_like(t)
                 for name, g, t in zip(names, grads, tensors)},
                logits.detach(), target))
            del values, logits, tensors, grads

    def partial_route(self, taps: Sequence[str], extra: Sequence[str] = ()) -> PartialRoute | None:
        """The cheaper forward for ``taps``, or None to run the whole mirror.

        ONNX Runtime computes every activation in one forward anyway, faster than the mirror.
        When the requested taps are deep, the engine takes from it the shallowest taps (the
        cut's leaves, which become the autograd leaves), the tensors the rest of the network
        reads from before them (a skip connection) and the ``extra`` tensors upstream of them,
        and the mirror runs only the nodes after the leaves, forward and backward. ∂y/∂A is the
        same function: nothing after a leaf depends on what precedes it except through the
        leaves and those tensors. The route is taken when the mirror's part holds at most
        :data:`PARTIAL_SHARE` of the network's costly nodes (convolutions, matrix products):
        below that, the ORT forward costs less than the mirror forward it replaces. Needs ONNX
        Runtime on the engine's device; ``partial_pass = False`` turns it off."""
        if not self.partial_pass or self.runtime is None:
            return None
        key = (tuple(taps), tuple(extra))
        if key not in self._routes:
            self._routes[key] = self._plan_route(list(taps), list(extra))
        return self._routes[key]

    def _plan_route(self, taps: list[str], extra: list[str]) -> PartialRoute | None:
        exposed = set(self.runtime.output_names)
        cut = self.mirror.cut(taps, [self.logits_name], exposed)
        upstream_extra = [name for name in extra if name not in cut.downstream]
        from_runtime = [*cut.leaves, *(n for n in cut.frontier if n in exposed), *upstream_extra]
        if cut.cost > PARTIAL_SHARE * cut.full_cost or not set(from_runtime) <= exposed:
            return None
        return PartialRoute(tuple(cut.leaves), tuple(dict.fromkeys(from_runtime)))

    def _partial_forward(self, x_model: torch.Tensor, route: PartialRoute,
                         wanted: Sequence[str]) -> dict[str, torch.Tensor]:
        """``wanted`` by the partial route: ORT's tensors override their nodes, the leaves
        require grad, and the mirror computes the rest (the nodes after the leaves, and cheap
        ones such as a shape read from the input)."""
        given = self.runtime.run(x_model, route.from_runtime)
        overrides = {name: torch.as_tensor(value, device=self.device)
                     for name, value in given.items()}
        for name in route.leaves:
            overrides[name] = overrides[name].detach().requires_grad_(True)
        return self.mirror(x_model, wanted, overrides)

    def gradients(self, x: torch.Tensor, targets: TargetLike, taps: Sequence[str],
                  batch_size: int | None = None,
                  extra: Sequence[str] = ()) -> Gradients[torch.Tensor]:
        """:meth:`gradient_pass` over a prepared NCHW batch in chunks of ``batch_size`` images
        (default: all), concatenated: activations (taps and ``extra``) and gradients keyed by
        tensor name, on the engine's device."""
        names = list(dict.fromkeys(taps))
        extra = [name for name in dict.fromkeys(extra) if name not in names]
        parts: list[GradientChunk] = []
        self.gradient_pass(((chunk, x[chunk]) for chunk in self.chunks(x.shape[0], batch_size)),
                           per_image(targets, x.shape[0]), names, parts.append, extra)
        activations = {n: concat([p.values[n] for p in parts]) for n in names + extra}
        gradients = {n: concat([p.gradients[n] for p in parts]) for n in names}
        logits = concat([p.logits for p in parts])
        target = joined([p.target for p in parts])
        return Gradients(logits, activations, gradients, target.classes(logits), target)

    def from_tap(self, x: torch.Tensor, tensor: str) -> "TapPass":
        """A clean mirror forward of the NCHW batch ``x`` (no autograd), kept to re-run the
        network after ``tap`` (:class:`TapPass`)."""
        frontier = self.mirror.frontier(tensor)
        x_model = self.to_model_layout(x)
        with torch.no_grad():  # the mirror's own tap: re-runs differ from it by the change alone
            clean = self.mirror(x_model, frontier + [tensor, self.logits_name])
        n = x.shape[0]
        kept = {name: clean[name] for name in frontier if _per_image(clean[name], n)}
        return TapPass(self, x_model, tensor, clean[tensor], clean[self.logits_name], kept)


@dataclass
class TapPass:
    """A clean mirror forward, from which the part of the network after one tap re-runs.

    ``frontier``: the tensors the nodes after the tap read from before it
    (:meth:`camonnx.mirror.Mirror.frontier`), kept where they hold per-image data (floating point,
    batch-major). Shape-like tensors (int64 shapes that a Flatten/Reshape reads from the input)
    are not overridden: the mirror recomputes them from the batched input, so they describe the
    batch of re-run copies rather than the clean batch."""

    engine: PassEngine
    x_model: torch.Tensor  # the clean batch in the model's layout
    tensor: str
    value: torch.Tensor  # the tap, (N, K, h, w)
    logits: torch.Tensor  # (N, classes)
    frontier: dict[str, torch.Tensor]

    def rerun(self, i: int, replaced: torch.Tensor) -> torch.Tensor:
        """Logits (M, classes) of image ``i`` with the tap replaced by the M tensors
        ``replaced`` (M, K, h, w): only the nodes after the tap run, on image i's frontier."""
        copies = replaced.shape[0]
        overrides = {name: _expand(value[i:i + 1], copies) for name, value in self.frontier.items()}
        overrides[self.tensor] = replaced
        logits_name = self.engine.logits_name
        with torch.no_grad():
            x = self.x_model[i:i + 1].expand(copies, *self.x_model.shape[1:])
            return self.engine.mirror(x, [logits_name], overrides)[logits_name]


def concat(parts: Sequence[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """``torch.cat(parts, dim)``, without the copy when there is one part: a copy starts torch's
    thread pool, which costs milliseconds right after an ONNX Runtime run on a busy CPU."""
    return parts[0] if len(parts) == 1 else torch.cat(list(parts), dim)


def torch_device(device: str) -> torch.device:
    """The torch device for ``device`` ("cpu" or "cuda[:i]"); a DeviceError otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"Unknown device {device!r}: use 'cpu' or 'cuda'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device='cuda' was requested but torch sees no CUDA GPU. Use "
                          "device='cpu', or install a CUDA build of torch.")
    if dev.type not in ("cpu", "cuda"):
        raise DeviceError(f"Unsupported device {device!r}: use 'cpu' or 'cuda'.")
    return dev


def _per_image(value: torch.Tensor, batch: int) -> bool:
    """Whether ``value`` holds per-image data: floating point with the batch as first axis."""
    return value.is_floating_point() and value.dim() > 0 and value.shape[0] == batch


def _expand(value: torch.Tensor, copies: int) -> torch.Tensor:
    return value.expand(copies, *value.shape[1:])
