"""Targets: which scalar y per image the explanation is about (docs/methods.md#targets).

A target turns the logits (N, classes) into one score per image. Forms accepted everywhere:

* ``None`` — the predicted class of each image (argmax of the logits);
* an ``int`` — that class for every image;
* a sequence of ints, one per image (its length must equal the batch);
* a :class:`Target` object (e.g. :class:`ClassLogit`, :class:`ClassProbability`), or any callable
  ``f(logits) -> (N,) tensor`` differentiable in the logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import torch

from camonnx.errors import InputError


class Target:
    """Maps logits (N, classes) to one differentiable score per image, shape (N,)."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise TypeError("Target subclasses implement __call__")

    def classes(self, logits: torch.Tensor) -> list[int] | None:
        """The class index per image this target is about, when it has one."""
        return None


@dataclass(frozen=True)
class ClassLogit(Target):
    """y_n = logit of class c_n (the default target: pre-softmax, see docs/deviations.md#default-target)."""

    indices: tuple[int, ...]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(self.indices, device=logits.device).reshape(-1, 1)
        return logits.gather(1, index).squeeze(1)

    def classes(self, logits: torch.Tensor) -> list[int]:
        return list(self.indices)


@dataclass(frozen=True)
class ClassProbability(Target):
    """y_n = softmax(logits_n)[c_n]."""

    indices: tuple[int, ...]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(self.indices, device=logits.device).reshape(-1, 1)
        return torch.softmax(logits, dim=1).gather(1, index).squeeze(1)

    def classes(self, logits: torch.Tensor) -> list[int]:
        return list(self.indices)


@dataclass(frozen=True)
class FunctionTarget(Target):
    """A user function of the logits returning one score per image."""

    fn: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        scores = self.fn(logits)
        if not isinstance(scores, torch.Tensor) or scores.shape != (logits.shape[0],):
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise InputError(f"A target function must return one score per image, shape "
                             f"({logits.shape[0]},); it returned {shape}.")
        return scores


TargetLike = Union[None, int, Sequence[int], np.ndarray, Target, Callable]


def class_indices(targets: TargetLike, logits: torch.Tensor) -> list[int] | None:
    """Validate class-index targets against the logits; ``None`` for function targets."""
    n, classes = logits.shape[0], logits.shape[1]
    if targets is None:
        return logits.argmax(dim=1).tolist()
    if isinstance(targets, (int, np.integer)):
        indices = [int(targets)] * n
    elif isinstance(targets, (Sequence, np.ndarray)) and not isinstance(targets, str):
        indices = [int(t) for t in targets]
        if len(indices) != n:
            raise InputError(f"{len(indices)} targets were given for a batch of {n} images: give "
                             "one class index per image, or a single index for all.")
    else:
        return None
    bad = [i for i in indices if not 0 <= i < classes]
    if bad:
        raise InputError(f"Class index {bad[0]} is out of range: the model has {classes} classes "
                         f"(0–{classes - 1}).")
    return indices


def resolve(targets: TargetLike, logits: torch.Tensor) -> Target:
    """The :class:`Target` for ``targets`` given the batch's logits (argmax when None)."""
    if isinstance(targets, Target):
        if isinstance(targets, (ClassLogit, ClassProbability)):
            class_indices(list(targets.indices), logits)
        return targets
    indices = class_indices(targets, logits)
    if indices is not None:
        return ClassLogit(tuple(indices))
    if callable(targets):
        return FunctionTarget(targets)
    raise InputError(f"Unusable target {targets!r}: give None (predicted class), a class index, "
                     "one index per image, or a function of the logits.")
