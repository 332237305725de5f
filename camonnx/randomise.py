"""The parameter layers of an ONNX graph and their seeded re-initialisation (docs/sanity.md#rule).

One job: find what the model-parameter randomisation test (Adebayo et al., NeurIPS 2018)
randomises, and write the randomised model. :func:`camonnx.sanity_checks.sanity` runs the test itself.

**Parameter layer.** One ``Conv``, ``Gemm`` or ``MatMul`` node with a constant weight, with

* its weight (Conv's W, the constant one of Gemm's/MatMul's two inputs),
* its bias (Conv's B, Gemm's C, or the constant of an ``Add`` that alone consumes a MatMul),
* and, when the exporter kept one, the ``BatchNormalization`` that alone consumes its output:
  the affine scale γ and shift β (the running mean and variance are statistics, not learned
  parameters, and stay).

Layers are numbered in the graph's topological order, 0 nearest the input; "from the logits
down" means that cascading depth j randomises the j layers with the highest indices.

**Rule** (same shape and dtype, seeded, scale-preserving):

* weights: w' ~ N(0, r²) i.i.d., r = √(mean w²), the original tensor's root-mean-square. A conv
  or matrix product's output variance is Σ w² times its input's, so keeping E[Σ w'²] = Σ w² keeps
  the layer's output scale: the randomised network neither vanishes nor explodes, and its maps
  stay informative instead of degenerating into constants (which would "pass" the test for the
  wrong reason). The mean is 0: a weight's sign carries no meaning on its own, and this is the
  zero-mean re-initialisation of the paper.
* biases, γ and β: a random permutation of the original values. A bias (with folded BatchNorm,
  the channel's operating point before its activation) and γ have sign structures that matter
  (γ is mostly positive; a zero-mean normal would flip half of the signs): a permutation keeps
  the exact multiset of values, so scale and signs are preserved exactly while each channel's
  value is destroyed. A one-element tensor cannot change under a permutation.

Draws come from ``numpy.random.default_rng(SeedSequence([seed, layer index]))``, tensors drawn
in a fixed order (weight, bias, γ, β), so a layer's draw is the same at every depth and in both
modes: cascading depth j + 1 adds one layer to depth j's model.

**Where the values live.** A parameter is an initializer, or the ``value`` of a ``Constant``
node, possibly reached through ``Identity`` and ``Cast`` nodes (the draw is made in the stored
dtype; the Cast converts it as before). A weight behind ``DequantizeLinear`` (a quantised
model), or computed by other nodes, is refused with :class:`~camonnx.errors.InputError`. A
tensor that also feeds other nodes (shared) is not changed in place: the randomised copy goes
into a new initializer that only this layer's node reads, so randomising one layer never
changes another. Weights in external data are loaded first
(``onnx.external_data_helper.load_external_data_for_model``); a randomised model too large for
one protobuf is written with external data beside it.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from camonnx.errors import InputError
from camonnx.graph import _PROTO_LIMIT
from camonnx.writer import publish, staging_folder, write_file

#: Nodes a parameter is read through (values unchanged up to the dtype).
_PASS_THROUGH = ("Identity", "Cast")
#: Roles in the order a layer's tensors are drawn, with their rule.
RULES = {"weight": "normal", "bias": "permutation", "bn_scale": "permutation",
         "bn_shift": "permutation"}
_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class ParameterTensor:
    """One tensor of a parameter layer: the ``slot``-th input of node ``position`` reads it,
    stored as ``source`` (an initializer, or a Constant node's output when ``constant``),
    through the ``casts`` (ONNX dtypes of the Cast nodes in between, in order). ``exclusive``:
    nothing else reads the source or the chain, so it is changed in place."""

    role: str
    position: int
    slot: int
    source: str
    constant: bool
    casts: tuple[int, ...]
    exclusive: bool

    @property
    def rule(self) -> str:
        return RULES[self.role]

    def to_dict(self) -> dict:
        return {"role": self.role, "source": self.source, "rule": self.rule}


@dataclass(frozen=True)
class ParameterLayer:
    """A Conv/Gemm/MatMul node with its weight, bias and following BatchNorm's γ, β.
    ``index``: topological rank among the parameter layers (0 nearest the input);
    ``position``: the node's index in the graph."""

    index: int
    name: str
    op_type: str
    position: int
    tensors: tuple[ParameterTensor, ...]

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "op_type": self.op_type,
                "position": self.position, "tensors": [t.to_dict() for t in self.tensors]}


class _Graph:
    """Producers, consumers and constants of a model's main graph."""

    def __init__(self, model: onnx.ModelProto):
        self.nodes = list(model.graph.node)
        self.initializers = {init.name: init for init in model.graph.initializer}
        self.producer = {out: (i, node) for i, node in enumerate(self.nodes) for out in node.output}
        self.readers: dict[str, int] = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    self.readers[name] = self.readers.get(name, 0) + 1
        for out in model.graph.output:
            self.readers[out.name] = self.readers.get(out.name, 0) + 1

    def node_name(self, position: int) -> str:
        node = self.nodes[position]
        return node.name or f"{node.op_type.lower()}{position}:{node.output[0]}"

    def is_constant(self, name: str) -> bool:
        return self._resolve(name) is not None

    def tensor(self, role: str, position: int, slot: int) -> ParameterTensor:
        """The parameter read by input ``slot`` of node ``position``; refused if not constant."""
        name = self.nodes[position].input[slot]
        found = self._resolve(name)
        if found is None:
            producer = self.producer.get(name)
            origin = f"the {producer[1].op_type} node {self.node_name(producer[0])!r}" \
                if producer else "a graph input"
            raise InputError(f"The {role} of {self.node_name(position)!r} ({name!r}) is computed "
                             f"by {origin}, not stored: camonnx randomises weights stored as "
                             "initializers or Constant nodes (read directly or through Identity/"
                             "Cast). Export the model with its weights as initializers.")
        source, constant, casts, path = found
        exclusive = all(self.readers.get(t, 0) == 1 for t in path)
        return ParameterTensor(role, position, slot, source, constant, casts, exclusive)

    def _resolve(self, name: str):
        """(source, is a Constant node, Cast dtypes in order, tensors on the way) or None; an
        :class:`InputError` for a dequantised tensor."""
        path, casts = [name], []
        while name not in self.initializers:
            if name not in self.producer:
                return None
            position, node = self.producer[name]
            if node.op_type == "Constant":
                if not any(a.name == "value" for a in node.attribute):
                    return None
                return name, True, tuple(reversed(casts)), path
            if node.op_type == "DequantizeLinear":
                raise InputError(f"{self.node_name(position)!r} dequantises a weight: camonnx does "
                                 "not randomise quantised weights. Run the sanity checks on the "
                                 "float model the quantised one was made from.")
            if node.op_type not in _PASS_THROUGH:
                return None
            if node.op_type == "Cast":
                casts.append(next(a.i for a in node.attribute if a.name == "to"))
            name = node.input[0]
            path.append(name)
        return name, False, tuple(reversed(casts)), path

    def sole_reader(self, tensor: str) -> tuple[int, onnx.NodeProto] | None:
        if self.readers.get(tensor, 0) != 1:
            return None
        for i, node in enumerate(self.nodes):
            if tensor in node.input:
                return i, node
        return None


def parameter_layers(model: onnx.ModelProto) -> list[ParameterLayer]:
    """Every parameter layer of ``model``'s main graph in topological order (module docstring).
    An :class:`InputError` if there is none."""
    graph = _Graph(model)
    layers: list[ParameterLayer] = []
    for position, node in enumerate(graph.nodes):
        if node.op_type not in _OPS or node.domain not in ("", "ai.onnx"):
            continue
        tensors = _layer_tensors(graph, position, node)
        if tensors:
            layers.append(ParameterLayer(len(layers), graph.node_name(position), node.op_type,
                                         position, tuple(tensors)))
    if not layers:
        raise InputError("The model has no parameter layer (a Conv, Gemm or MatMul node with a "
                         "stored weight): there is nothing to randomise.")
    return layers


def _layer_tensors(graph: _Graph, position: int, node: onnx.NodeProto) -> list[ParameterTensor]:
    inputs = list(node.input)
    if node.op_type == "Conv":
        tensors = [graph.tensor("weight", position, 1)]
        if len(inputs) > 2 and inputs[2]:
            tensors.append(graph.tensor("bias", position, 2))
    else:
        constant = [slot for slot in (1, 0) if graph.is_constant(inputs[slot])]
        if not constant:
            return []  # a product of two activations (attention): no parameters
        tensors = [graph.tensor("weight", position, constant[0])]
        if node.op_type == "Gemm" and len(inputs) > 2 and inputs[2]:
            tensors.append(graph.tensor("bias", position, 2))
    output = node.output[0]
    after = graph.sole_reader(output)
    if node.op_type == "MatMul" and after is not None and after[1].op_type == "Add":
        other = [slot for slot, name in enumerate(after[1].input) if name != output]
        if len(other) == 1 and graph.is_constant(after[1].input[other[0]]):
            tensors.append(graph.tensor("bias", after[0], other[0]))
            output, after = after[1].output[0], graph.sole_reader(after[1].output[0])
    if after is not None and after[1].op_type == "BatchNormalization" and after[1].input[0] == output:
        tensors += [graph.tensor("bn_scale", after[0], 1), graph.tensor("bn_shift", after[0], 2)]
    return tensors


def _draw(values: np.ndarray, rule: str, rng: np.random.Generator) -> np.ndarray:
    """The module docstring's rule: N(0, r²) with r the RMS (float64), or a permutation."""
    if not np.issubdtype(values.dtype, np.floating):
        raise InputError(f"A parameter of dtype {values.dtype} cannot be randomised: camonnx "
                         "randomises floating-point weights.")
    if rule == "normal":
        rms = float(np.sqrt(np.mean(np.square(values, dtype=np.float64))))
        return (rng.standard_normal(values.shape) * rms).astype(values.dtype)
    return rng.permutation(values.ravel()).reshape(values.shape)


class Randomiser:
    """Seeded re-initialisation of a model's parameter layers; each layer's draw is made once
    and reused by every randomised model built from it.

    ``base_dir``: where the model's external data files are, for a model loaded without them."""

    def __init__(self, model: onnx.ModelProto, seed: int = 0,
                 base_dir: str | os.PathLike | None = None):
        self.model = copy.deepcopy(model)
        if any(uses_external_data(init) for init in self.model.graph.initializer):
            if base_dir is None:
                raise InputError("The model keeps its weights in external data that is not "
                                 "loaded: give the folder of its .data file (base_dir=).")
            load_external_data_for_model(self.model, str(base_dir))
        self.layers = parameter_layers(self.model)
        self.seed = int(seed) & (2 ** 63 - 1)
        self._draws: dict[int, list[np.ndarray]] = {}

    def draws(self, layer: ParameterLayer) -> list[np.ndarray]:
        """The randomised values of the layer's tensors, in their stored dtype."""
        if layer.index not in self._draws:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, layer.index]))
            self._draws[layer.index] = [_draw(_stored(self.model, t), t.rule, rng)
                                        for t in layer.tensors]
        return self._draws[layer.index]

    def randomised(self, layers: Sequence[ParameterLayer]) -> onnx.ModelProto:
        """A copy of the model with ``layers`` re-initialised (the others untouched)."""
        model = copy.deepcopy(self.model)
        initializers = {init.name: init for init in model.graph.initializer}
        producer = {out: node for node in model.graph.node for out in node.output}
        for layer in layers:
            for tensor, values in zip(layer.tensors, self.draws(layer)):
                if tensor.exclusive:
                    stored = numpy_helper.from_array(values, tensor.source)
                    if tensor.constant:
                        _value(producer[tensor.source]).CopyFrom(stored)
                    else:
                        initializers[tensor.source].CopyFrom(stored)
                    continue
                for to in tensor.casts:
                    values = values.astype(helper.tensor_dtype_to_np_dtype(to))
                node = model.graph.node[tensor.position]
                name = f"{node.input[tensor.slot]}/camonnx_randomised_{layer.index}"
                model.graph.initializer.append(numpy_helper.from_array(values, name))
                node.input[tensor.slot] = name
        return model


def _value(node: onnx.NodeProto) -> onnx.TensorProto:
    """A Constant node's ``value`` tensor."""
    return next(a.t for a in node.attribute if a.name == "value")


def _stored(model: onnx.ModelProto, tensor: ParameterTensor) -> np.ndarray:
    if tensor.constant:
        return numpy_helper.to_array(_value(next(n for n in model.graph.node
                                                 if tensor.source in n.output)))
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == tensor.source))


def write_model(model: onnx.ModelProto, path: str | os.PathLike,
                external_above: int = _PROTO_LIMIT) -> Path:
    """Write ``model`` to ``path`` atomically; above ``external_above`` bytes (default: near
    protobuf's 2 GiB limit) with its weights in ``path.data`` beside it, the data file moved
    into place first."""
    path = Path(path)
    if model.ByteSize() < external_above:
        return write_file(path, lambda tmp: onnx.save_model(model, str(tmp)))
    data = f"{path.name}.data"
    with staging_folder(path.parent) as staging:
        onnx.save_model(copy.deepcopy(model), str(staging / path.name), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data, size_threshold=0)
        publish(staging, path.parent, [data, path.name])
    return path


def load_like(explainer, path: str | os.PathLike):
    """A new :class:`~camonnx.explainer.Explainer` of the model at ``path`` with ``explainer``'s
    device, tap mode, layout, preprocessing, labels and class output, and its parity check (the
    mirror is checked against ONNX Runtime again on the new weights)."""
    from camonnx.explainer import Explainer

    tap = "block" if any(len(layer.ops) > 1 for layer in explainer.layers) else "conv"
    checked = explainer.parity_report is not None or explainer.runtime is None
    return Explainer(path, device=str(explainer.device), tap=tap,
                     layout=explainer.graph.input.layout, preprocess=explainer.preprocess,
                     check_parity=checked, output=explainer.graph.output,
                     labels=explainer.labels)
