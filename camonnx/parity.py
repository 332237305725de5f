"""Load-time checks of a model: finite weights, and the torch mirror against ONNX Runtime.

**Non-finite weights.** A NaN or infinite weight makes every map NaN, so it is refused before
any pass (:func:`check_finite_weights`), whatever ``check_parity`` says. ±inf is accepted only
where an operator reads a value as a bound or a fill (Clip's min/max, Max/Min, Pad's value,
Where's branches, comparisons), possibly through Identity/Cast/reshaping ops; NaN never is.

**Parity.** The mirror and ONNX Runtime (ORT) run the same float32 model with different kernels,
so they differ by float32 rounding, which grows with depth: on ResNet-50 with calibrated weights
the mirror's own float32 error reaches a relative RMS of 1e-4 and a max error of 1.2e-4 of a
tensor's max, so a fixed max-error tolerance either rejects correct models or misses real
faults. The criterion here measures float32's real error on this model and this input instead.
On the probe input x (float32) three runs give, for each checked tensor (every tap, every
strided pool output and the logits):

- ``m32``: the mirror in float32, ``ort``: ONNX Runtime in float32,
- ``m64``: the mirror in float64 on the same float32 weights and x, i.e. the model's exact
  value up to ~1e-16,

and with the relative RMS error ``rel(a, b) = ‖a − b‖₂ / ‖b‖₂`` over the tensor::

    noise        = rel(m32, m64)     what float32 really does to this tensor (torch's kernels)
    disagreement = rel(ort, m64)     ORT's distance from the exact value
    fail  ⇔  disagreement > PARITY_FACTOR · max(noise, PARITY_FLOOR)

The first failing tensor in topological order is reported, with the nodes that compute it from
the tensors checked before it (which agreed): the fault is among them.

Relative RMS, not max error: the max over a tensor grows with its size and is set by a handful
of extreme elements (near-tied MaxPool windows, ReLUs flipping at zero), while the RMS is a
stable average; a semantic error of one op (a pad, axis, epsilon, weight layout, rounding or
pooling mode) changes a large share of its output and shows as a relative RMS of 1e-3 or more.

The constants, from measurements (ORT 1.32 CPU, torch 2.14, 3 probe seeds each) on torchvision
resnet50, vgg11_bn, googlenet, densenet121, mobilenet_v3_large, efficientnet_b0 and
regnet_y_400mf with random and with calibrated weights (BN statistics from a real batch), on
ResNet-50 at opset 9, on the pretrained EfficientNet-Lite0, and on 113-conv residual BN nets
(5 seeds each, random and calibrated; the calibrated ones reach a float32 error of 1e-3):

- ``disagreement / noise`` stays ≤ 1.8 wherever noise ≥ 1e-5 (ORT's convolutions are about as
  accurate as torch's); where noise is smaller, disagreement reached 7.8e-6. That excess comes
  from ORT's GlobalAveragePool/ReduceMean, whose float32 sum has a relative error of about
  ``u·√n / 4`` over n cells (3.5e-6 at 224×224, 7.9e-6 at 512×512; torch's pairwise sum ~5e-8),
  which feeds the small squeeze-excitation tensors. ``PARITY_FLOOR = 1e-5`` covers it.
- ``PARITY_FACTOR = 10``: the largest measured ``disagreement / max(noise, floor)`` is 1.8, a
  5.5× margin against false alarms; the smallest allowance, 1e-4, still catches a semantic
  error of 1e-3 with a 10× margin. A fault whose effect is below 10× float32's own error at that
  tensor is not caught: its effect on the model is of the order of what rounding alone does.

On a GPU the noise is what the mirror's kernels really do there (TF32 convolutions included,
when torch enables them).

Cost: the float64 run is needed only when it can change the verdict. With
``difference = rel(ort, m32)`` (computed first, cheaply), the triangle inequality gives
``disagreement ≤ difference·(1 + noise) + noise``; so if every tensor has
``difference ≤ (PARITY_FACTOR − 1)·PARITY_FLOOR / (1 + PARITY_FLOOR)`` the check passes
whatever the noise, and the float64 run is skipped. The float64 copy of the mirror shares nothing
writable with the mirror and is freed after the probe.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from camonnx.errors import ModelLoadError, ParityError
from camonnx.graph import ModelGraph
from camonnx.mirror import Mirror
from camonnx.ops import Node

#: ORT may be this many times further from the exact value than the float32 mirror.
PARITY_FACTOR = 10.0
#: The smallest float32 error (relative RMS) a tensor is granted (ORT's long float32 sums).
PARITY_FLOOR = 1e-5
#: Below this every tensor passes whatever float32's error is (see the module docstring).
_NO_EXACT_RUN_BELOW = (PARITY_FACTOR - 1.0) * PARITY_FLOOR / (1.0 + PARITY_FLOOR)

_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                onnx.TensorProto.BFLOAT16}
#: (op type, input index or None for any) where ±inf is a meaningful value (a bound or a fill).
_INFINITY_READERS = {("Clip", 1), ("Clip", 2), ("Pad", 2), ("Where", 1), ("Where", 2),
                     ("Max", None), ("Min", None), ("Less", None), ("LessOrEqual", None),
                     ("Greater", None), ("GreaterOrEqual", None), ("Equal", None)}
_PASS_THROUGH = frozenset({"Identity", "Cast", "CastLike", "Reshape", "Squeeze", "Unsqueeze",
                           "Expand", "Flatten"})
_SHOWN = 5  # names listed in a message before "and N more"


@dataclass(frozen=True)
class TensorParity:
    """One checked tensor. ``difference`` = rel(ORT, mirror float32); ``noise`` and
    ``disagreement`` (see the module docstring) are ``None`` when the float64 run was skipped."""

    tensor: str
    difference: float
    noise: float | None = None
    disagreement: float | None = None

    @property
    def allowance(self) -> float | None:
        """The largest disagreement this tensor may have: FACTOR · max(noise, FLOOR)."""
        return None if self.noise is None else PARITY_FACTOR * max(self.noise, PARITY_FLOOR)

    @property
    def ok(self) -> bool:
        if self.noise is None:
            return self.difference <= _NO_EXACT_RUN_BELOW
        return self.disagreement <= self.allowance


@dataclass(frozen=True)
class ParityReport:
    """Every checked tensor in topological order; ``exact``: whether the float64 run was made."""

    tensors: list[TensorParity]
    exact: bool

    @property
    def worst_difference(self) -> float:
        """The largest relative RMS difference between ORT and the float32 mirror."""
        return max((t.difference for t in self.tensors), default=0.0)


# --- non-finite values ---------------------------------------------------------------------

def check_finite_weights(graph: ModelGraph, mirror: Mirror) -> None:
    """Raise :class:`ModelLoadError` naming the initializers and Constant nodes that hold NaN,
    or ±inf where no operator reads it as a bound or a fill (weights no node reads are skipped).

    The mirror's constants hold every initializer and Constant value, already in memory: when
    they are all finite (the usual case) nothing else is read (VGG's 0.5 GB: ~0.1 s)."""
    if all(_all_finite(b) for b in mirror.buffers() if b.is_floating_point()):
        return
    readers = _readers(graph.nodes)
    bad: list[str] = []
    for name, values in _weights(graph):
        if name not in readers:
            continue  # a weight no node reads cannot reach the output
        has_nan, has_inf = _non_finite(values)
        if has_nan or (has_inf and not _reads_infinity(name, readers)):
            bad.append(f"{name!r} ({'NaN' if has_nan else 'inf'})")
    if bad:
        shown = ", ".join(bad[:_SHOWN]) + (f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN
                                           else "")
        raise ModelLoadError(
            f"{len(bad)} weight tensor{'s' if len(bad) > 1 else ''} of the model hold"
            f"{'' if len(bad) > 1 else 's'} non-finite values: {shown}. Every map would be NaN. "
            "The weights are broken (a diverged training run, or a faulty conversion or "
            "quantization): re-export the model from a checkpoint whose weights are finite.")


def _weights(graph: ModelGraph):
    """(name, float array) of every floating initializer and Constant node value."""
    for init in graph.model.graph.initializer:
        if init.data_type not in _FLOAT_TYPES:
            continue
        yield init.name, numpy_helper.to_array(init)
    for node in graph.nodes:
        if node.op_type == "Constant" and node.outputs and node.outputs[0]:
            for key in ("value", "value_float", "value_floats"):
                if key in node.attrs and np.asarray(node.attrs[key]).dtype.kind == "f":
                    yield node.outputs[0], np.asarray(node.attrs[key])


def _all_finite(value: torch.Tensor) -> bool:
    if value.device.type == "cpu" and value.dtype != torch.bfloat16:  # numpy: see _host
        return bool(np.isfinite(value.detach().numpy()).all())
    return bool(torch.isfinite(value).all())


def _non_finite(values: np.ndarray) -> tuple[bool, bool]:
    """(holds NaN, holds ±inf)."""
    values = np.asarray(values)
    if values.dtype.kind != "f" or np.isfinite(values).all():
        return False, False
    nan = bool(np.isnan(values).any())
    return nan, bool(np.isinf(values).any())


def _readers(nodes: Sequence[Node]) -> dict[str, list[tuple[Node, int]]]:
    readers: dict[str, list[tuple[Node, int]]] = {}
    for node in nodes:
        for index, name in enumerate(node.inputs):
            if name:
                readers.setdefault(name, []).append((node, index))
    return readers


def _reads_infinity(name: str, readers: Mapping[str, list[tuple[Node, int]]]) -> bool:
    """Whether every use of ``name`` (through pass-through ops) is as a bound or a fill."""
    uses = readers.get(name, [])
    for node, index in uses:
        if node.op_type in _PASS_THROUGH and index == 0:
            if not all(_reads_infinity(out, readers) for out in node.outputs if out):
                return False
        elif (node.op_type, index) not in _INFINITY_READERS and \
                (node.op_type, None) not in _INFINITY_READERS:
            return False
    return bool(uses)


def first_non_finite(names: Sequence[str], values: Mapping[str, object]) -> str | None:
    """The first of ``names`` whose value (array or tensor) holds NaN or inf, or ``None``."""
    for name in names:
        value = _host(values[name])
        finite = (bool(torch.isfinite(value).all()) if isinstance(value, torch.Tensor)
                  else bool(np.isfinite(value).all()))
        if not finite:
            return name
    return None


def _host(value):
    """A CPU value as a numpy array, a GPU one as a tensor. On the CPU numpy is single-threaded
    and skips torch's thread-pool wake-up, which right after an ONNX Runtime run costs more than
    the arithmetic (measured: isfinite of all ResNet-50 taps 0.33–0.52 s in torch, 0.02 s in
    numpy)."""
    if isinstance(value, torch.Tensor):
        return value.detach() if value.device.type != "cpu" else value.detach().numpy()
    return np.asarray(value)


def not_finite_error(where: str, computed_by: str) -> ModelLoadError:
    """The error for a model whose output is NaN/inf on the (finite) probe input."""
    return ModelLoadError(
        f"The model's own output is not finite on a finite input: {computed_by} gives NaN or "
        f"inf at {where}, the first checked tensor that is not finite, on a probe input of "
        "standard normal noise, although every weight is finite. The model overflows (e.g. a "
        "huge weight before an Exp, or a division by a value that reaches zero), so its maps "
        "would be NaN. Check the model's output on a real image with ONNX Runtime; pass "
        "check_parity=False (command line: --no-parity-check) to load it anyway.")


# --- parity --------------------------------------------------------------------------------

def probe_tensors(graph: ModelGraph) -> list[str]:
    """The tensors the probe checks — taps, strided pool outputs, logits — in topological order
    (each one exposed by the prepared model)."""
    position = {out: i for i, node in enumerate(graph.nodes) for out in node.outputs if out}
    names = dict.fromkeys(graph.tap_tensors + [t for _, t in graph.pool_steps] + [graph.logits])
    return sorted(names, key=lambda name: position.get(name, -1))


def check_parity(graph: ModelGraph, mirror: Mirror, x: torch.Tensor,
                 mirrored: Mapping[str, torch.Tensor], reference: Mapping[str, object],
                 describe: Callable[[str], str]) -> ParityReport:
    """Judge the mirror's float32 outputs ``mirrored`` against ORT's ``reference`` on the probe
    ``x`` (model layout) by the criterion of the module docstring.

    Raises :class:`ModelLoadError` when ORT's output is not finite (the model's own fault) and
    :class:`ParityError` naming the first diverging tensor (by ``describe``) otherwise.
    """
    names = probe_tensors(graph)
    ort = {name: _host(reference[name]) for name in names}
    mirrored = {name: _host(mirrored[name]) for name in names}
    broken = first_non_finite(names, ort)
    if broken is not None:
        raise not_finite_error(describe(broken), "ONNX Runtime")
    faults = {name: fault for name in names if (fault := _hard_fault(mirrored[name], ort[name]))}
    tensors = [TensorParity(name, math.inf if name in faults else
                            _relative_rms(ort[name], mirrored[name])) for name in names]
    exact = not all(t.ok for t in tensors if t.tensor not in faults)
    if exact:
        values = {name: _host(v) for name, v in _exact_values(mirror, x, names).items()}
        tensors = [t if t.tensor in faults else
                   replace(t, noise=_relative_rms(mirrored[t.tensor], values[t.tensor]),
                           disagreement=_relative_rms(ort[t.tensor], values[t.tensor]))
                   for t in tensors]
        del values
    for t in tensors:
        if t.tensor in faults:
            raise _parity_error(graph, names, t.tensor, describe, faults[t.tensor])
        if not t.ok:
            raise _parity_error(
                graph, names, t.tensor, describe,
                f"ONNX Runtime is {t.disagreement:.2e} (relative RMS) from the exact float64 "
                f"result, where float32's own error there is {t.noise:.2e} (the mirror in "
                f"float32); the allowance is {PARITY_FACTOR:g} × max(own error, "
                f"{PARITY_FLOOR:.0e}) = {t.allowance:.2e}")
    return ParityReport(tensors, exact)


def _hard_fault(mine, theirs) -> str | None:
    """A difference no rounding explains: another shape, or NaN/inf where ORT is finite."""
    if tuple(mine.shape) != tuple(theirs.shape):
        return f"the mirror's shape is {tuple(mine.shape)}, ONNX Runtime's {tuple(theirs.shape)}"
    if first_non_finite(["x"], {"x": mine}) is not None:
        return "the mirror gives NaN or inf where ONNX Runtime's values are finite"
    return None


def _relative_rms(value, exact) -> float:
    """‖value − exact‖₂ / ‖exact‖₂ in float64 (0 when equal, inf against an all-zero exact)."""
    if isinstance(value, torch.Tensor):
        value, exact = value.double(), exact.to(value.device).double()
        diff, scale = torch.linalg.vector_norm(value - exact), torch.linalg.vector_norm(exact)
    else:
        value, exact = value.astype(np.float64, copy=False), exact.astype(np.float64, copy=False)
        # sums of squares, not np.linalg.norm: BLAS threads wake up as slowly as torch's
        diff, scale = np.sqrt(np.square(value - exact).sum()), np.sqrt(np.square(exact).sum())
    diff, scale = float(diff), float(scale)
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0.0 else math.inf


def _exact_values(mirror: Mirror, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    twin = float64_twin(mirror)
    with torch.no_grad():
        return twin(x.double(), names)


def float64_twin(mirror: Mirror) -> Mirror:
    """A copy of ``mirror`` computing in float64: every floating constant converted (never
    copied in float32 first), and every cast to a floating type — and ConstantOfShape's fill —
    made float64, so that no op falls back to float32 halfway."""
    memo = {id(b): _float64(b) for b in mirror.buffers() if b.is_floating_point()}
    twin = copy.deepcopy(mirror, memo)
    twin._program = [(_float64_node(node), spec) for node, spec in twin._program]
    return twin


def _float64(value: torch.Tensor) -> torch.Tensor:
    if value.device.type == "cpu":  # numpy: see _host
        return torch.from_numpy(value.detach().numpy().astype(np.float64))
    return value.detach().double()


def _float64_node(node: Node) -> Node:
    if node.op_type == "Cast" and int(node.attr("to", 0)) in _FLOAT_TYPES:
        return replace(node, attrs={**node.attrs, "to": onnx.TensorProto.DOUBLE})
    if node.op_type == "ConstantOfShape":
        value = np.asarray(node.attrs.get("value", np.zeros(1, np.float32)))
        if value.dtype.kind == "f":
            return replace(node, attrs={**node.attrs, "value": value.astype(np.float64)})
    return node


def _parity_error(graph: ModelGraph, names: Sequence[str], tensor: str,
                  describe: Callable[[str], str], what: str) -> ParityError:
    earlier = names[:names.index(tensor)]
    suspects = _nodes_between(graph, tensor, set(earlier))
    listed = ", ".join(f"{n.op_type} {n.name!r}" for n in suspects[:_SHOWN])
    if len(suspects) > _SHOWN:
        listed += f" and {len(suspects) - _SHOWN} more"
    since = ("the checked tensors before it agree, so the difference arises in the nodes that "
             f"compute it from them: {listed}" if earlier else f"it is computed by: {listed}")
    return ParityError(
        f"The torch mirror disagrees with ONNX Runtime, first at {describe(tensor)}: {what}; "
        f"{since}. camonnx's gradients would be wrong for this model: please report it (the "
        "model or its opset and exporter, and this message) to the camonnx issue tracker. "
        "Pass check_parity=False (command line: --no-parity-check) to continue at your own risk.")


def _nodes_between(graph: ModelGraph, tensor: str, agreed: set[str]) -> list[Node]:
    """The nodes computing ``tensor`` from the graph input, weights and ``agreed`` tensors."""
    producer = {out: i for i, node in enumerate(graph.nodes) for out in node.outputs if out}
    found: set[int] = set()
    stack = [tensor]
    while stack:
        name = stack.pop()
        index = producer.get(name)
        if index is None or index in found or (name in agreed and name != tensor):
            continue
        found.add(index)
        stack.extend(i for i in graph.nodes[index].inputs if i)
    return [graph.nodes[i] for i in sorted(found)]
