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

    def take(self, rows: Rows) -> "Target":
        """The target of a batch whose row r shows image ``rows[r]`` (a slice or one image index
        per row, repeats allowed: variants of one image). A target that treats every image
        alike is itself."""
        return self


@dataclass(frozen=True)
class IndexTarget(Target):
    """A target about one class c_n per image n (``indices``); ``take`` picks the rows' c_n."""

    indices: tuple[int, ...]

    def classes(self, logits: torch.Tensor) -> list[int]:
        return list(self.indices)

    def take(self, rows: Rows) -> "IndexTarget":
        if isinstance(rows, slice):
            return type(self)(self.indices[rows])
        return type(self)(tuple(self.indices[i] for i in rows))

    def _gather(self, scores: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(self.indices, device=scores.device).reshape(-1, 1)
        return scores.gather(1, index).squeeze(1)


@dataclass(frozen=True)
class ClassLogit(IndexTarget):
    """y_n = logit of class c_n (the default target: pre-softmax, see docs/deviations.md#default-target)."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self._gather(logits)


@dataclass(frozen=True)
class ClassProbability(IndexTarget):
    """y_n = softmax(logits_n)[c_n]."""

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self._gather(torch.softmax(logits, dim=1))


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
#: The images of a batch's rows: a slice of the images, or one image index per row.
Rows = Union[slice, Sequence[int]]


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
            raise _count_error(len(indices), n)
    else:
        return None
    bad = [i for i in indices if not 0 <= i < classes]
    if bad:
        raise InputError(f"Class index {bad[0]} is out of range: the model has {classes} classes "
                         f"(0–{classes - 1}).")
    return indices


def _count_error(given: int, n: int) -> InputError:
    return InputError(f"{given} targets were given for a batch of {n} images: give one class "
                      "index per image, or a single index for all.")


def per_image(targets: TargetLike, n: int) -> TargetLike:
    """``targets`` for a batch of ``n`` images, ready for :func:`take`: a sequence of class
    indices becomes a :class:`ClassLogit`; a per-image count other than ``n`` is an error."""
    if isinstance(targets, IndexTarget):
        if len(targets.indices) != n:
            raise _count_error(len(targets.indices), n)
        return targets
    if isinstance(targets, (Sequence, np.ndarray)) and not isinstance(targets, str):
        if len(targets) != n:
            raise _count_error(len(targets), n)
        return ClassLogit(tuple(int(t) for t in targets))
    return targets


def take(targets: TargetLike, rows: Rows) -> TargetLike:
    """The targets of the rows ``rows`` (:meth:`Target.take`); None (each image's predicted
    class), one class index and functions apply to every image as they are."""
    return targets.take(rows) if isinstance(targets, Target) else targets


def joined(parts: Sequence[Target]) -> Target:
    """One target for a batch resolved in consecutive chunks: the chunks' class indices in
    order, or the one target every chunk shares."""
    first = parts[0]
    if len(parts) == 1 or not isinstance(first, IndexTarget):
        return first
    return type(first)(tuple(index for part in parts for index in part.indices))


def resolve(targets: TargetLike, logits: torch.Tensor) -> Target:
    """The :class:`Target` for ``targets`` given the batch's logits (argmax when None)."""
    if isinstance(targets, Target):
        if isinstance(targets, IndexTarget):
            class_indices(list(targets.indices), logits)
        return targets
    indices = class_indices(targets, logits)
    if indices is not None:
        return ClassLogit(tuple(indices))
    if callable(targets):
        return FunctionTarget(targets)
    raise InputError(f"Unusable target {targets!r}: give None (predicted class), a class index, "
                     "one index per image, or a function of the logits.")
