"""Targets take the rows of the images a batch holds (camonnx.targets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camonnx.errors import InputError
from camonnx.targets import (ClassLogit, ClassProbability, FunctionTarget, joined, per_image,
                             resolve, take)


@pytest.mark.parametrize("kind", [ClassLogit, ClassProbability])
def test_index_targets_take_slices_and_repeated_rows(kind):
    target = kind((5, 6, 7))
    assert target.take(slice(1, 3)) == kind((6, 7))
    assert target.take([2, 2, 0]) == kind((7, 7, 5))
    assert joined([target.take(slice(0, 1)), target.take(slice(1, 3))]) == target


def test_targets_for_every_image_are_taken_as_they_are():
    fn = FunctionTarget(lambda logits: logits[:, 0])
    assert fn.take([0, 0, 1]) is fn
    assert take(None, slice(0, 2)) is None and take(3, [1, 1]) == 3
    assert joined([fn, fn]) is fn


def test_per_image_checks_the_count_and_makes_index_targets():
    assert per_image([1, 2], 2) == ClassLogit((1, 2))
    assert per_image(np.array([4, 5]), 2) == ClassLogit((4, 5))
    assert per_image(None, 3) is None and per_image(7, 3) == 7
    with pytest.raises(InputError, match="3 targets were given for a batch of 2"):
        per_image([1, 2, 3], 2)
    with pytest.raises(InputError, match="1 targets were given for a batch of 2"):
        per_image(ClassProbability((1,)), 2)


def test_taken_rows_resolve_like_the_whole_batch():
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    whole = resolve(per_image([1, 2, 3, 4], 4), logits)
    parts = [resolve(take(per_image([1, 2, 3, 4], 4), rows), logits[rows])
             for rows in (slice(0, 3), slice(3, 4))]
    assert joined(parts) == whole
    torch.testing.assert_close(whole(logits), torch.cat([p(logits[r]) for p, r in
                                                          zip(parts, (slice(0, 3), slice(3, 4)))]))
