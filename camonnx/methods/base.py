"""The base of every CAM method: what a method receives, and the weighted sum most of them are.

Each method is one small file: a subclass of :class:`CamMethod` whose ``weights`` turns a layer's
activations A (N, K, h, w) and gradients g into channel weights (N, K) or element weights
(N, K, h, w); the shared base combines them with the compiled weighted-channel-sum kernel into the
raw map M (N, h, w) at the layer's native resolution. Methods that are not a weighted sum
(Eigen-CAM) override ``raw_map``. ``@register`` makes a class findable by its ``name``
(docs/extending.md#add-a-method).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from camonnx.errors import InputError
from camonnx.graph import Layer
from camonnx.kernels import weighted_channel_sum
from camonnx.targets import Target

if TYPE_CHECKING:
    from camonnx.passes import PassEngine


@dataclass
class LayerData:
    """One layer's inputs to a method, all on the explainer's device."""

    layer: Layer
    activations: torch.Tensor  # (N, K, h, w)
    gradients: torch.Tensor | None  # (N, K, h, w), None for gradient-free methods


@dataclass
class Context:
    """What methods that re-run the model need: the model's pass engine, the batch and its
    targets (``target.take(rows)`` gives the target of any rows of the batch's images)."""

    engine: PassEngine
    x: torch.Tensor  # the prepared NCHW batch
    target: Target
    seed: int = 0
    #: Each image's identity for per-image seeds: by default its index among all the images of
    #: the explain call; a dataset audit gives each image's index in the dataset.
    image_ids: tuple[int, ...] = ()
    batch_size: int = 64
    progress: bool = True
    options: dict = field(default_factory=dict)

    def scores(self, xs: torch.Tensor, i: int) -> torch.Tensor:
        """Target scores of image ``i``'s variants ``xs`` (M, C, H, W), in chunks of
        ``batch_size`` through :meth:`PassEngine.forward`, no autograd."""
        out = []
        name = self.engine.logits_name
        for start in range(0, xs.shape[0], self.batch_size):
            chunk = xs[start:start + self.batch_size]
            logits = self.engine.forward(chunk, [name])[name]
            out.append(self.target.take([i] * chunk.shape[0])(logits).detach().float())
        return torch.cat(out)


class CamMethod:
    """Base of every method: M = ReLU(Σ_k w_k A_k) from the weights the subclass computes."""

    name: ClassVar[str] = ""
    uses_gradients: ClassVar[bool] = True
    #: How weights combine with A: "channel" (N,K), "elementwise" or "elementwise_relu" (N,K,h,w).
    combine: ClassVar[str] = "channel"
    #: Keyword options of ``explain`` this method reads from ``Context.options``.
    option_names: ClassVar[frozenset[str]] = frozenset()

    def check_options(self, options: dict) -> None:
        """Reject options this method does not read (they would be silently ignored)."""
        unknown = sorted(set(options) - self.option_names)
        if unknown:
            accepted = ", ".join(sorted(self.option_names)) or "none"
            raise InputError(f"Option(s) {', '.join(unknown)} do not apply to method {self.name!r} "
                             f"(its options: {accepted}).")

    def begin(self, ctx: Context, layers: list[Layer]) -> None:
        """Called once per batch before the per-layer maps: a method that needs one extra pass
        for all layers (e.g. over noisy copies) runs it here and keeps the result in ``ctx``."""

    def weights(self, data: LayerData, ctx: Context) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define weights() or raw_map()")

    def raw_map(self, data: LayerData, ctx: Context) -> torch.Tensor:
        weights = self.weights(data, ctx).float().contiguous()
        return weighted_channel_sum(data.activations.float().contiguous(), weights, self.combine, relu=True)


#: name → class of every method whose module has been imported (see camonnx.methods.METHODS).
REGISTERED: dict[str, type[CamMethod]] = {}


def register(cls: type[CamMethod]) -> type[CamMethod]:
    """Class decorator: make ``cls`` the method called ``cls.name``."""
    REGISTERED[cls.name] = cls
    return cls
