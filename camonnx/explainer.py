"""The :class:`Explainer`: one ONNX model, its taps, its preprocessing and the explanations.

Images go in as paths, PIL images or arrays (preprocessed by the model's recipe), or as an
already-preprocessed (N, C, H, W) tensor. The passes themselves run in the model's
:class:`~camonnx.passes.PassEngine`: ``activations`` runs ONNX Runtime once for every tap;
``gradients`` runs the mirror forward once and backward once for every tap
(docs/pipeline.md#passes).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np
import torch

from camonnx.errors import InputError, ModelLoadError
from camonnx.graph import Layer, ModelGraph, load_graph
from camonnx.images import prepare_images
from camonnx.recipe import Preprocess
from camonnx.mirror import Mirror
from camonnx.passes import Gradients, PassEngine, concat, torch_device
from camonnx.presets import choose_recipe, warn_assumed_recipe
from camonnx.parity import (ParityReport, check_finite_weights, check_parity,
                             first_non_finite, not_finite_error, probe_tensors)
from camonnx.runtime import OrtRuntime
from tqdm.auto import tqdm

from camonnx.targets import TargetLike, per_image, resolve, take

log = logging.getLogger("camonnx")

if TYPE_CHECKING:
    from camonnx.explanation import Explanation

LayerSpec = Union[str, Sequence[Union[str, int]]]


class Explainer:
    """Explain one ONNX CNN.

    ``model``: path of an .onnx file (default: the bundled pretrained EfficientNet-Lite0).
    ``device``: "cpu" or "cuda[:i]". On CUDA without onnxruntime-gpu, forward passes run through
    the torch mirror on the GPU. ``tap``: "block" (default) or "conv" (docs/pipeline.md#taps). ``layout``:
    override the detected input layout. ``preprocess``: override the recipe stored beside the model
    (a :class:`Preprocess` or a preset name: "torchvision", "tf", "caffe", "inception"; see
    :mod:`camonnx.presets`); without either, torchvision's is assumed, with a warning.
    ``labels``: class names in output order, or a file with one per line (default: the recipe's).
    ``output``: the class output to explain (a graph output's name, or any tensor of the graph);
    by default the first graph output that holds one score vector per image, such as (N, C),
    (N, C, 1, 1) or (N, 1, 1, C). Its scores are read as an (N, C) matrix whatever its shape.
    ``threads``: ONNX Runtime's intra-op threads on CPU (default: ONNX Runtime's, one per core;
    the dataset audit's Ray actors use 1).
    """

    def __init__(self, model: str | os.PathLike | None = None, device: str = "cpu", *,
                 tap: str = "block", layout: str | None = None,
                 preprocess: Preprocess | str | None = None, check_parity: bool = True,
                 output: str | None = None, labels: Sequence[str] | str | os.PathLike | None = None,
                 threads: int | None = None):
        if model is None:
            from camonnx.models import default_model
            model = default_model()
        self.model_path = Path(model)
        self.tap = tap
        self.graph: ModelGraph = load_graph(self.model_path, tap=tap, layout=layout,  # type: ignore[arg-type]
                                            output=output)
        if self.graph.class_problem is not None:
            raise ModelLoadError(self.graph.class_problem)
        device = torch_device(device)
        recipe, self.labels, assumed = choose_recipe(self.model_path, preprocess, labels, self.graph)
        self.preprocess = _fit_recipe(recipe, self.graph)
        if assumed:
            warn_assumed_recipe(self.model_path, self.preprocess)
        #: Every pass on the model (mirror, ONNX Runtime, device, layout, chunking).
        self.engine = PassEngine(self.graph, device, self.model_path.name, threads=threads)
        self.parity_error = self._probe(check_parity)
        self._check_class_output()

    @property
    def device(self) -> torch.device:
        return self.engine.device

    @property
    def mirror(self) -> Mirror:
        """The torch mirror of the graph (autograd)."""
        return self.engine.mirror

    @property
    def runtime(self) -> OrtRuntime | None:
        """The ONNX Runtime session, None where it does not run on the device."""
        return self.engine.runtime

    def to_model_layout(self, x: torch.Tensor) -> torch.Tensor:
        """An NCHW batch in the model's input layout (:meth:`PassEngine.to_model_layout`)."""
        return self.engine.to_model_layout(x)

    def _check_class_output(self) -> None:
        """Where shape inference could not tell, check on a probe that the class output holds
        one score vector per image (the graph flattens it to (N, classes))."""
        if self.graph.class_shape is not None:
            return
        h, w = self.preprocess.size
        x = torch.zeros((1, self.graph.input.channels or 3, h, w), device=self.device)
        with torch.no_grad():
            source = self.mirror(self.to_model_layout(x), [self.graph.class_source])
        self.graph.check_class_shape(tuple(source[self.graph.class_source].shape))

    # --- layers ------------------------------------------------------------------------------

    @property
    def layers(self) -> list[Layer]:
        return self.graph.layers

    @property
    def suggested_layer(self) -> Layer:
        """The deepest tap with more than one spatial position (the usual Grad-CAM layer)."""
        spatial = [layer for layer in self.layers if len(layer.shape) == 3 and layer.shape[1] * layer.shape[2] > 1]
        return (spatial or self.layers)[-1]

    def layer(self, key: str | int) -> Layer:
        """A layer by name, ONNX tensor name, or index (negative counts from the end)."""
        return self.engine.layer(key)

    def select_layers(self, spec: LayerSpec = "all") -> list[Layer]:
        """``"all"``, ``"suggested"``, or a list of names / indices, in topological order."""
        if isinstance(spec, str):
            if spec == "all":
                return list(self.layers)
            if spec == "suggested":
                return [self.suggested_layer]
            spec = [spec]
        chosen = {self.layer(key).index for key in spec}
        if not chosen:
            raise InputError("No layers selected: give 'all', 'suggested' or at least one layer.")
        return [self.layers[i] for i in sorted(chosen)]

    # --- inputs ------------------------------------------------------------------------------

    def prepare(self, images) -> tuple[torch.Tensor, list[np.ndarray]]:
        """(N, C, H, W) float32 batch on the explainer's device, and the RGB crops for overlays.

        A preprocessed tensor may come in the model's own layout (e.g. (N, H, W, C) for a
        TensorFlow export) or in (N, C, H, W); see :meth:`_as_nchw`."""
        x, crops = prepare_images(self._as_nchw(images), self.preprocess,
                                  channels=self.graph.input.channels or 3)
        self._check_input(x)
        return x.to(self.device, torch.float32), crops

    def _as_nchw(self, images):
        """A preprocessed float tensor (4-D, or 3-D for one image) given in the model's NHWC
        layout, turned to NCHW; anything else unchanged. The layout is read off the shape: the
        channel axis must hold the model's channel count and the other axes its fixed height
        and width where it has them. A shape that fits both layouts (e.g. 3×3×3 images) is
        taken in the model's own layout."""
        spec = self.graph.input
        is_tensor = isinstance(images, torch.Tensor) and images.ndim in (3, 4)
        is_array = isinstance(images, np.ndarray) and images.ndim == 4 \
            and np.issubdtype(images.dtype, np.floating)
        if spec.layout != "NHWC" or not (is_tensor or is_array):
            return images
        shape = tuple(images.shape[-3:])
        channels = spec.channels or 3
        fits = lambda c, h, w: c == channels and spec.height in (None, h) and spec.width in (None, w)  # noqa: E731
        if not fits(shape[2], shape[0], shape[1]):
            return images  # NCHW, or a shape _check_input reports
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        return images.movedim(-1, -3)

    def _check_input(self, x: torch.Tensor) -> None:
        spec = self.graph.input
        expected = (spec.channels, spec.height, spec.width)
        got = tuple(x.shape[1:])
        if any(e is not None and e != g for e, g in zip(expected, got)):
            raise InputError(f"The model expects images of (channels, height, width) = "
                             f"{tuple(e if e is not None else '?' for e in expected)}, got {got}. "
                             "Pass image files or arrays to let camonnx resize them.")
        if not _all_finite(x):
            raise InputError("The input tensor holds NaN or infinite values.")

    # --- forward passes ----------------------------------------------------------------------

    def forward(self, x: torch.Tensor, outputs: Sequence[str]) -> dict[str, torch.Tensor]:
        """Named tensors for a prepared NCHW batch: ONNX Runtime where it runs on this device,
        else the mirror (no autograd). Runs fixed-batch models image by image."""
        return self.engine.forward(x, outputs)

    def logits(self, images) -> np.ndarray:
        x, _ = self.prepare(images)
        return self.forward(x, [self.graph.logits])[self.graph.logits].cpu().numpy()

    def activations(self, images, layers: LayerSpec = "all") -> dict[str, np.ndarray]:
        """Every selected layer's activation (N, K, h, w) from one ONNX Runtime run."""
        chosen = self.select_layers(layers)
        x, _ = self.prepare(images)
        values = self.forward(x, list(dict.fromkeys(layer.tensor for layer in chosen)))
        return {layer.name: values[layer.tensor].cpu().numpy() for layer in chosen}

    def gradients(self, images, targets: TargetLike = None, layers: LayerSpec = "all",
                  batch_size: int | None = None) -> Gradients[np.ndarray]:
        """Logits, activations A and gradients ∂y/∂A of every selected layer, from one forward
        and one backward of the mirror (per chunk of ``batch_size`` images), as numpy arrays
        keyed by layer name. Unpacks as ``logits, activations, gradients``, as
        :meth:`gradients_tensors` does."""
        chosen = self.select_layers(layers)
        x, _ = self.prepare(images)
        result = self.gradients_tensors(x, targets, chosen, batch_size)
        return Gradients(
            result.logits.cpu().numpy(),
            {layer.name: result.activations[layer.tensor].cpu().numpy() for layer in chosen},
            {layer.name: result.gradients[layer.tensor].cpu().numpy() for layer in chosen},
            result.classes, result.target)

    def gradients_tensors(self, x: torch.Tensor, targets: TargetLike, layers: Sequence[Layer],
                          batch_size: int | None = None,
                          extra: Sequence[str] = ()) -> Gradients[torch.Tensor]:
        """Torch-level :meth:`gradients` on a prepared batch (:meth:`PassEngine.gradients`):
        unpacks as ``logits, activations, gradients``, keyed by tap tensor, all on the
        explainer's device. ``extra`` tensors (e.g. Gradual Extrapolation steps) are returned
        with the activations, without gradients."""
        return self.engine.gradients(x, targets, [layer.tensor for layer in layers], batch_size,
                                     extra)

    # --- explanations ------------------------------------------------------------------------

    def explain(self, images, method: str = "gradcam", layers: LayerSpec = "all",
                targets: TargetLike = None, normalize: str = "local", batch_size: int = 16,
                seed: int = 0, progress: bool = True, extrapolate: bool = False,
                include_input: bool = False, image_ids: Sequence[int] | None = None,
                **options) -> "Explanation":
        """Maps of ``method`` for every selected layer from one forward (+ one backward for
        gradient methods) per batch of ``batch_size`` images.

        ``normalize``: "local" (per map min-max), "global" (min-max over all selected layers of
        an image), or "none" (docs/methods.md#normalisation). ``extrapolate``: sharpen every map by Gradual
        Extrapolation through the earlier layers (docs/methods.md#gradual-extrapolation; each map then spans [0, 1] exactly, so
        ``normalize`` has nothing left to change and is not applied: the explanation records
        ``normalize="extrapolated"`` and ``extrapolation=Extrapolation(include_input)``);
        ``include_input`` adds its last step through the image itself (off by default: it
        weights the map by the image's brightness and lowered ROAD on real photos).
        ``image_ids``: each image's identity for the seeded methods (randomcam; default: its
        index among ``images``), so that an image explained in another batch, as a dataset audit
        does, gets the same map. ``options`` go to the method (e.g. ``scorecam_align_corners``).
        """
        from camonnx.explanation import EXTRAPOLATED, Explanation, Extrapolation
        from camonnx.extrapolate import extrapolate as extrapolate_maps
        from camonnx.extrapolate import step_tensors
        from camonnx.kernels import upsample_layers
        from camonnx.methods import get_method
        from camonnx.methods.base import Context, LayerData

        cam = get_method(method)
        cam.check_options(options)
        if normalize not in ("local", "global", "none"):
            raise InputError(f"Unknown normalize={normalize!r}: use 'local', 'global' or 'none'.")
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}.")
        chosen = self.select_layers(layers)
        x, crops = self.prepare(images)
        targets = per_image(targets, x.shape[0])
        ids = _image_ids(image_ids, x.shape[0])
        raws: list[list[torch.Tensor]] = [[] for _ in chosen]
        extrapolated: list[torch.Tensor] = []
        extra = step_tensors(self.graph) if extrapolate else []
        taps = [layer.tensor for layer in chosen]
        logits_parts, classes = [], []
        chunks = list(self.engine.chunks(x.shape[0], batch_size))
        for chunk in tqdm(chunks, desc=f"{cam.name}", unit="batch", disable=not progress or len(chunks) == 1):
            xc = x[chunk]
            if cam.uses_gradients:
                passed = self.engine.gradients(xc, take(targets, chunk), taps, extra=extra)
                acts, logits, grads, target = (passed.activations, passed.logits, passed.gradients,
                                               passed.target)
            else:
                names = list(dict.fromkeys(taps + extra))
                acts = self.engine.forward(xc, names + [self.graph.logits])
                logits, grads = acts[self.graph.logits], None
                target = resolve(take(targets, chunk), logits)
            ctx = Context(self.engine, xc, target, seed=seed, image_ids=ids[chunk],
                          batch_size=max(batch_size, 32), progress=progress, options=options)
            cam.begin(ctx, chosen)
            for i, layer in enumerate(chosen):
                data = LayerData(layer, acts[layer.tensor], grads[layer.tensor] if grads else None)
                raws[i].append(cam.raw_map(data, ctx))
            if extrapolate:
                extrapolated.append(extrapolate_maps([r[-1] for r in raws], chosen, self.graph,
                                                     acts, xc, include_input))
            logits_parts.append(logits.detach())
            chunk_classes = target.classes(logits)
            classes = None if classes is None or chunk_classes is None else classes + chunk_classes
        raw = [concat(parts) for parts in raws]
        if extrapolate:
            # each map already spans [0, 1] exactly (or is all zeros): any normalisation is a no-op
            maps = concat(extrapolated, dim=1)
        else:
            maps = upsample_layers(raw, tuple(x.shape[2:]), normalize)
        return Explanation(
            maps=maps.cpu().numpy(), raw=[r.cpu().numpy() for r in raw],
            layers=[layer.name for layer in chosen], targets=classes,
            logits=concat(logits_parts).cpu().numpy(), method=cam.name,
            normalize=EXTRAPOLATED if extrapolate else normalize,
            model=str(self.model_path), images=crops, labels=self.labels,
            options={"seed": seed, **options},
            extrapolation=Extrapolation(include_input) if extrapolate else None)

    # --- load-time probe ---------------------------------------------------------------------

    def _probe(self, check: bool) -> float:
        """Refuse non-finite weights; measure each tap's shape on a probe input (standard normal
        noise, seed 0); with ``check``, judge the mirror against ONNX Runtime on it
        (:mod:`camonnx.parity`) and keep the report in ``parity_report``. Returns the largest
        relative RMS difference between the two over the checked tensors (NaN if unchecked)."""
        check_finite_weights(self.graph, self.mirror)
        spec, (h, w) = self.graph.input, self.preprocess.size
        generator = torch.Generator().manual_seed(0)
        x = self.to_model_layout(torch.randn((1, spec.channels or 3, h, w),
                                             generator=generator).to(self.device))
        names = probe_tensors(self.graph)
        with torch.no_grad():
            mirrored = self.mirror(x, names)
        shapes = {n: tuple(v.shape[1:]) for n, v in mirrored.items()}
        self.graph.layers = [layer.with_shape(shapes[layer.tensor], h) for layer in self.layers]
        self.parity_report: ParityReport | None = None
        if not check or self.runtime is None:
            broken = first_non_finite(names, mirrored)
            if broken is not None and check:  # no ONNX Runtime on this device: the mirror's word
                raise not_finite_error(self._describe(broken), "the torch mirror (ONNX Runtime "
                                       "does not run on this device)")
            if broken is not None:
                log.warning("%s: the model's own output is not finite on a finite probe input "
                            "(first at %s): its maps will be NaN.", self.model_path.name,
                            self._describe(broken))
            return float("nan")
        reference = self.runtime.run(x, names)
        self.parity_report = check_parity(self.graph, self.mirror, x, mirrored, reference,
                                          self._describe)
        return self.parity_report.worst_difference

    def _describe(self, tensor: str) -> str:
        for layer in self.layers:
            if layer.tensor == tensor:
                return f"layer {layer.name!r} (tensor {tensor!r})"
        return f"tensor {tensor!r}"


def _fit_recipe(recipe: Preprocess, graph: ModelGraph) -> Preprocess:
    """The recipe, with its crop size forced to the model's fixed input size if it has one."""
    h, w = graph.input.height, graph.input.width
    if h and w and tuple(recipe.size) != (h, w):
        resize = round(min(h, w) * recipe.resize / min(recipe.size)) if recipe.resize else None
        return replace(recipe, size=(h, w), resize=resize)
    return recipe


def _all_finite(x: torch.Tensor) -> bool:
    """Whether every value is finite. On CPU through numpy, single-threaded: torch's parallel
    region for a 224×224 batch costs tens of milliseconds when its threads must first wake up
    (measured 27 ms right after an ONNX Runtime run), numpy ~0.1 ms."""
    if x.device.type == "cpu":
        return bool(np.isfinite(x.detach().numpy()).all())
    return bool(torch.isfinite(x).all())


def _image_ids(image_ids: Sequence[int] | None, count: int) -> tuple[int, ...]:
    """The images' identities for per-image seeds: positions by default, else one integer per
    image."""
    if image_ids is None:
        return tuple(range(count))
    ids = tuple(int(i) for i in image_ids)
    if len(ids) != count:
        raise InputError(f"image_ids names {len(ids)} images, but {count} were given: one id "
                         f"per image.")
    return ids
