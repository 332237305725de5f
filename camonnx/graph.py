"""Load an ONNX image classifier, find its conv taps, and prepare a copy exposing them.

docs/pipeline.md#taps. A *tap* is one per ``Conv`` node: the tensor reached by walking forward from the Conv
output while the current tensor has exactly one consumer and that consumer is a shape-preserving
elementwise op (the "block" tap), or the raw Conv output with ``tap="conv"``. The prepared model
lists every tap tensor (and the pre-softmax logits, when the model ends in a Softmax) as extra
graph outputs, so one ONNX Runtime run returns the logits and every activation.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from camonnx.errors import ModelLoadError, unknown_name_error
from camonnx.ops import Node

log = logging.getLogger("camonnx")

TapMode = Literal["block", "conv"]
Layout = Literal["NCHW", "NHWC"]

#: Elementwise ops a block tap walks through (docs/pipeline.md#taps).
SHAPE_PRESERVING = frozenset({
    "BatchNormalization", "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid",
    "HardSwish", "Elu", "Selu", "Dropout", "Identity", "Add", "Sum", "Mul",
})
_BINARY = frozenset({"Add", "Sum", "Mul"})
_SOFTMAX = frozenset({"Softmax", "LogSoftmax"})
#: Above this size a model is kept with external data instead of one protobuf (2 GiB limit).
_PROTO_LIMIT = 1_800_000_000


@dataclass(frozen=True)
class Layer:
    """One tap: a conv layer's output (block tap) and where it sits in the network."""

    index: int
    name: str
    tensor: str
    conv_node: str
    ops: tuple[str, ...]
    shape: tuple[int, ...] = ()
    stride: float = 0.0
    #: Index of the Conv node in the graph's (topological) node list.
    position: int = 0
    #: Whether the conv itself is strided (its tap is a Gradual Extrapolation step, docs/methods.md#gradual-extrapolation).
    strided: bool = False

    @property
    def channels(self) -> int:
        return self.shape[0] if self.shape else 0

    def with_shape(self, shape: tuple[int, ...], input_height: int) -> "Layer":
        stride = input_height / shape[1] if len(shape) >= 2 and shape[1] else 0.0
        return replace(self, shape=tuple(shape), stride=float(stride))

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "tensor": self.tensor,
                "conv_node": self.conv_node, "ops": list(self.ops), "shape": list(self.shape),
                "stride": self.stride, "channels": self.channels}


@dataclass(frozen=True)
class InputSpec:
    """The image input: name, layout and the dims the model fixes (``None`` when dynamic)."""

    name: str
    layout: Layout
    batch: int | None
    channels: int | None
    height: int | None
    width: int | None

    @property
    def fixed_batch(self) -> bool:
        return self.batch is not None


@dataclass
class ModelGraph:
    """An ONNX classifier with its taps found; ``prepared`` exposes every tap as an output."""

    path: Path | None
    model: onnx.ModelProto
    opset: int
    input: InputSpec
    output: str
    logits: str
    softmax: str | None
    layers: list[Layer]
    prepared: onnx.ModelProto
    nodes: list[Node] = field(repr=False, default_factory=list)
    #: The tensor the class scores are read from (before camonnx flattens it to (N, classes)).
    class_source: str = ""
    #: Its shape from shape inference (batch 1), ``None`` where inference could not tell.
    class_shape: tuple[int | None, ...] | None = None
    #: Why no output is usable as class scores (``None`` when one is); the Explainer raises it.
    class_problem: str | None = None
    #: The Flatten node camonnx appends to make the class scores (N, classes), if any.
    class_flatten: onnx.NodeProto | None = field(repr=False, default=None)

    @property
    def lean_outputs(self) -> frozenset[str]:
        """The tensors the lean model (:meth:`lean_source`) gives: the model's own outputs and
        the class scores."""
        return frozenset([o.name for o in self.model.graph.output] + [self.logits])

    def check_class_shape(self, shape: Sequence[int]) -> None:
        """Raise :class:`ModelLoadError` unless ``shape`` (measured) is a class vector."""
        if not is_class_vector(shape):
            raise ModelLoadError(_not_class(self.output, shape))

    @property
    def pool_steps(self) -> list[tuple[int, str]]:
        """(node position, output tensor) of every MaxPool/AveragePool with a stride > 1: the
        Gradual Extrapolation steps that are not conv taps (docs/methods.md#gradual-extrapolation). Exposed as outputs too."""
        return [(i, node.outputs[0]) for i, node in enumerate(self.nodes)
                if node.op_type in ("MaxPool", "AveragePool")
                and any(int(v) > 1 for v in node.attr("strides", []) or [])]

    @property
    def tap_tensors(self) -> list[str]:
        """Distinct tap tensors in topological order (two convs may share a block tap)."""
        return list(dict.fromkeys(layer.tensor for layer in self.layers))

    @contextlib.contextmanager
    def prepared_source(self) -> Iterator[bytes | str]:
        """What ONNX Runtime needs to open the prepared model: its bytes, or for a model over
        2 GiB the path of a temporary copy with external data, deleted when the block ends (a
        session reads it while it is created)."""
        with _source(self.prepared) as source:
            yield source

    @contextlib.contextmanager
    def lean_source(self) -> Iterator[bytes | str]:
        """The same for the *lean* model: the original graph with only the class scores added
        as an output, not the taps. Where a pass needs nothing but the class scores (every
        metric's forwards), it runs ~1.3-1.8× faster than the prepared model on CPU: a tensor
        that is a graph output must be materialised, which keeps ONNX Runtime from fusing the
        conv layers with their activations and from reusing their memory."""
        lean = _expose(self.model, [self.logits], None)
        if self.class_flatten is not None:
            lean.graph.node.append(self.class_flatten)
        with _source(lean) as source:
            yield source


@contextlib.contextmanager
def _source(model: onnx.ModelProto) -> Iterator[bytes | str]:
    if model.ByteSize() < _PROTO_LIMIT:
        yield model.SerializeToString()
        return
    with tempfile.TemporaryDirectory(prefix="camonnx-") as folder:
        target = os.path.join(folder, "model.onnx")
        onnx.save_model(model, target, save_as_external_data=True, location="model.onnx.data")
        yield target


def load_graph(model: str | os.PathLike | onnx.ModelProto, tap: TapMode = "block",
               layout: Layout | None = None, output: str | None = None) -> ModelGraph:
    """Load, check and analyse an ONNX classifier; raise :class:`ModelLoadError` if unusable.

    ``output`` names the class output (a graph output, or any tensor of the graph); by default
    it is chosen by :func:`choose_class_output`.
    """
    if tap not in ("block", "conv"):
        raise ModelLoadError(f"Unknown tap mode {tap!r}: use 'block' or 'conv'.")
    path, proto = _read(model)
    _check(path, proto)
    opset = _default_opset(proto)
    graph_input = _image_input(proto, layout)
    inferred = _infer_shapes(proto, graph_input)
    nodes = [_decode(node, i, opset) for i, node in enumerate(proto.graph.node)]
    choice = choose_class_output(proto, nodes, inferred, output)
    layers = _find_taps(nodes, inferred, tap, proto)
    if not layers:
        raise ModelLoadError(
            f"{_label(path)} has no Conv node: camonnx explains convolutional networks by their "
            "conv layers. Export a CNN, or check that the export did not fuse convolutions "
            "into custom ops.")
    layers = _with_inferred_shapes(layers, inferred, graph_input)
    logits, source_shape = choice.source, inferred.get(choice.source)
    flatten = None
    if choice.problem is None and (_undecided(source_shape) or len(source_shape) != 2):
        logits = CLASS_SCORES
        flatten = helper.make_node("Flatten", [choice.source], [CLASS_SCORES], axis=1,
                                   name=CLASS_SCORES)
        nodes.append(_decode(flatten, len(nodes), opset))
    graph = ModelGraph(path, proto, opset, graph_input, choice.output, logits, choice.softmax,
                       layers, proto, nodes, class_source=choice.source,
                       class_shape=None if _undecided(source_shape) else tuple(source_shape),
                       class_problem=choice.problem)
    exposed = [layer.tensor for layer in layers] + [t for _, t in graph.pool_steps] + [logits]
    graph.prepared = _expose(proto, exposed, inferred)
    if flatten is not None:
        graph.prepared.graph.node.append(flatten)
        graph.class_flatten = flatten
    return graph


# --- loading and checking --------------------------------------------------------------------

def _label(path: Path | None) -> str:
    return str(path) if path is not None else "The model"


def _read(model) -> tuple[Path | None, onnx.ModelProto]:
    if isinstance(model, onnx.ModelProto):
        return None, model
    path = Path(model)
    if not path.exists():
        raise ModelLoadError(f"Model file {path} does not exist. Give the path of an .onnx file, "
                             "or run `camonnx export NAME OUT.onnx` to make one.")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory, not an ONNX file.")
    if not os.access(path, os.R_OK):
        raise ModelLoadError(f"Model file {path} is not readable: check its permissions.")
    try:
        proto = onnx.load(str(path))
    except FileNotFoundError as exc:
        raise ModelLoadError(
            f"{path} stores its weights in an external data file that is missing ({exc.filename}). "
            "Keep the .onnx file and its .data file together in one folder.") from None
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelLoadError(
            f"{path} is not a valid ONNX file (it may be truncated or another format): "
            f"{type(exc).__name__}: {exc}. Re-export or re-download the model.") from None
    if not proto.graph.node:
        raise ModelLoadError(f"{path} holds no ONNX graph (no nodes): it is empty, truncated "
                             "or not an ONNX model. Re-export or re-download it.")
    return path, proto


def _check(path: Path | None, proto: onnx.ModelProto) -> None:
    try:
        if path is not None:
            onnx.checker.check_model(str(path))
        else:
            onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelLoadError(f"{_label(path)} fails the ONNX checker: {str(exc).strip().rstrip('.')}. "
                             "Re-export the model with a current exporter.") from None


def _default_opset(proto: onnx.ModelProto) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def _image_input(proto: onnx.ModelProto, layout: Layout | None) -> InputSpec:
    initializers = {init.name for init in proto.graph.initializer}
    candidates = [i for i in proto.graph.input if i.name not in initializers]
    images = [i for i in candidates if len(i.type.tensor_type.shape.dim) == 4]
    if not images:
        found = ", ".join(f"{i.name} {_dims(i)}" for i in candidates) or "none"
        raise ModelLoadError(
            f"The model has no 4-D image input (inputs: {found}). camonnx explains image "
            "classifiers whose input is (batch, channels, height, width) or (batch, height, "
            "width, channels).")
    if len(candidates) > 1:
        others = ", ".join(i.name for i in candidates if i is not images[0])
        raise ModelLoadError(
            f"The model has inputs besides the image {images[0].name!r}: {others}. camonnx feeds "
            "one image input; export the model with its other inputs fixed as constants.")
    value = images[0]
    if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ModelLoadError(f"The image input {value.name!r} is not float32 "
                             f"(ONNX type {value.type.tensor_type.elem_type}); camonnx feeds float32.")
    n, a, b, c = _dims(value)
    chosen = layout or _detect_layout(proto, value.name, a, c)
    if chosen not in ("NCHW", "NHWC"):
        raise ModelLoadError(f"Unknown layout {chosen!r}: use 'NCHW' or 'NHWC'.")
    if chosen == "NCHW":
        return InputSpec(value.name, "NCHW", n, a, b, c)
    return InputSpec(value.name, "NHWC", n, c, a, b)


def _detect_layout(proto: onnx.ModelProto, name: str, dim1, dim3) -> Layout:
    """NCHW unless the channel count sits last, or the input feeds a Transpose to NCHW."""
    if dim1 in (1, 3, 4) and dim3 not in (1, 3, 4):
        return "NCHW"
    if dim3 in (1, 3, 4) and dim1 not in (1, 3, 4):
        return "NHWC"
    for node in proto.graph.node:
        if name in node.input and node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            if perm == [0, 3, 1, 2]:
                return "NHWC"
    return "NCHW"


def _infer_shapes(proto: onnx.ModelProto, spec: InputSpec) -> dict[str, list[int | None]]:
    """Tensor name → shape, inferred with the image input fixed to batch 1 and a concrete size."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    for value in fixed.graph.input:
        if value.name == spec.name:
            dims = value.type.tensor_type.shape.dim
            h, w, c = spec.height or 224, spec.width or 224, spec.channels or 3
            concrete = [1, c, h, w] if spec.layout == "NCHW" else [1, h, w, c]
            for dim, size in zip(dims, concrete):
                dim.Clear()
                dim.dim_value = size
    try:
        if fixed.ByteSize() < _PROTO_LIMIT:
            fixed = shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:
        pass  # shapes are also measured on the probe run; inference only helps the tap walk
    shapes: dict[str, list[int | None]] = {}
    for value in list(fixed.graph.value_info) + list(fixed.graph.input) + list(fixed.graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = _dims(value)
    for init in fixed.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


# --- taps ------------------------------------------------------------------------------------

def _decode(node: onnx.NodeProto, index: int, opset: int) -> Node:
    attrs = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode("utf-8") for v in value]
        attrs[attr.name] = value
    name = node.name or f"{node.op_type.lower()}{index}:{node.output[0] if node.output else ''}"
    return Node(node.op_type, name, tuple(node.input), tuple(node.output), attrs, opset,
                node.domain)


def _consumers(nodes: list[Node], graph_outputs: set[str]) -> dict[str, int]:
    count: dict[str, int] = {}
    for node in nodes:
        for name in node.inputs:
            if name:
                count[name] = count.get(name, 0) + 1
    for name in graph_outputs:
        count[name] = count.get(name, 0) + 1
    return count


def _preserves_shape(node: Node, current: str, shapes) -> bool:
    if node.op_type not in SHAPE_PRESERVING:
        return False
    if node.inputs[0] != current and node.op_type not in _BINARY:
        return False  # e.g. PRelu's slope, Clip's bounds: must consume the tensor as data
    if node.op_type == "Dropout" and len(node.outputs) > 1 and node.outputs[1]:
        return False
    if node.op_type in _BINARY:
        before, after = shapes.get(current), shapes.get(node.outputs[0])
        if before is not None and after is not None:
            return len(before) == len(after) and all(
                x is None or y is None or x == y for x, y in zip(before, after))
        partners = [shapes.get(i) for i in node.inputs if i != current]
        return all(p is not None and before is not None and len(p) <= len(before) for p in partners)
    return True


def _find_taps(nodes: list[Node], shapes, tap: TapMode, proto: onnx.ModelProto) -> list[Layer]:
    consumers = _consumers(nodes, {o.name for o in proto.graph.output})
    by_input: dict[str, list[Node]] = {}
    for node in nodes:
        for name in dict.fromkeys(node.inputs):
            by_input.setdefault(name, []).append(node)
    layers: list[Layer] = []
    used_names: set[str] = set()
    conv_index = 0
    for position, node in enumerate(nodes):
        if node.op_type != "Conv":
            continue
        current, ops = node.outputs[0], [node.op_type]
        while tap == "block" and consumers.get(current, 0) == 1 and current in by_input:
            nxt = by_input[current][0]
            if not _preserves_shape(nxt, current, shapes):
                break
            current = nxt.outputs[0]
            ops.append(nxt.op_type)
        name = node.name if node.name else f"conv{conv_index}:{node.outputs[0]}"
        if name in used_names:
            name = f"{name}#{conv_index}"
        used_names.add(name)
        strided = any(int(v) > 1 for v in node.attr("strides", []) or [])
        layers.append(Layer(len(layers), name, current, node.name or name, tuple(ops),
                            position=position, strided=strided))
        conv_index += 1
    return layers


def _with_inferred_shapes(layers: list[Layer], shapes, spec: InputSpec) -> list[Layer]:
    out = []
    for layer in layers:
        shape = shapes.get(layer.tensor)
        if shape is not None and len(shape) == 4 and all(d is not None for d in shape[1:]):
            layer = layer.with_shape(tuple(shape[1:]), spec.height or 224)
        out.append(layer)
    return out


#: The (N, classes) tensor camonnx appends (a Flatten) when the class output has other axes.
CLASS_SCORES = "camonnx/class_scores"


@dataclass(frozen=True)
class ClassOutput:
    """The graph output explained, the pre-Softmax tensor its scores come from, and the
    Softmax/LogSoftmax skipped (if any). ``problem`` says why no output fits, else ``None``."""

    output: str
    source: str
    softmax: str | None
    problem: str | None = None


def is_class_vector(shape: Sequence[int | None]) -> bool:
    """Whether a (batch, …) shape holds one score vector per image: its non-batch axes have at
    most one axis longer than 1, e.g. (N, C), (N, C, 1, 1) or (N, 1, 1, C)."""
    rest = list(shape)[1:]
    return len(rest) >= 1 and all(d is not None for d in rest) and sum(d > 1 for d in rest) <= 1


def _undecided(shape: Sequence[int | None] | None) -> bool:
    """Whether shape inference left the class-vector question open (a dim it could not tell)."""
    return shape is None or any(d is None for d in list(shape)[1:])


def choose_class_output(proto: onnx.ModelProto, nodes: list[Node], shapes,
                        requested: str | None = None) -> ClassOutput:
    """The class output: ``requested`` if given, else the first graph output (in the file's
    order) whose pre-Softmax tensor is a class vector (:func:`is_class_vector`), else the first
    output whose shape inference could not tell (checked again on the probe run).

    Exporters list the main head first (torchvision's auxiliary heads, a Keras model's
    ``[probabilities, logits]``), so "the first that fits" explains what the model predicts.
    """
    outputs = [o.name for o in proto.graph.output]
    produced = {o for n in nodes for o in n.outputs if o}
    if requested is not None:
        if requested not in outputs and requested not in produced:
            raise unknown_name_error("output", requested, outputs,
                                     f"The model's outputs are: {', '.join(outputs)}.")
        source, softmax = _pre_softmax(nodes, requested)
        shape = shapes.get(source)
        problem = None if _undecided(shape) or is_class_vector(shape) else _not_class(requested, shape)
        return ClassOutput(requested, source, softmax, problem)
    found = [(name, *_pre_softmax(nodes, name)) for name in outputs]
    fitting = [f for f in found if not _undecided(shapes.get(f[1])) and is_class_vector(shapes[f[1]])]
    unknown = [f for f in found if _undecided(shapes.get(f[1]))]
    if fitting:
        if len(fitting) > 1:
            log.warning("The model has %d outputs that look like class scores (%s); explaining "
                        "%r, the first. Choose another with output=NAME (--output NAME).",
                        len(fitting), ", ".join(f[0] for f in fitting), fitting[0][0])
        return ClassOutput(*fitting[0])
    if unknown:
        return ClassOutput(*unknown[0])
    name, source, softmax = found[0]
    described = "; ".join(f"{f[0]!r} {_shape_text(shapes[f[1]])}" for f in found)
    return ClassOutput(name, source, softmax,
                       f"No output of the model holds one score vector per image (outputs: "
                       f"{described}). camonnx explains classifiers whose class output is "
                       "(N, classes), or has only extra axes of size 1 such as (N, classes, 1, 1). "
                       "Name the class tensor with output=NAME (--output NAME), or re-export the "
                       "model with its classifier head.")


def _not_class(name: str, shape) -> str:
    return (f"The output {name!r} has shape {_shape_text(shape)}, which is not one score vector "
            "per image: camonnx needs (N, classes), or extra axes of size 1 only, such as "
            "(N, classes, 1, 1). Name another output with output=NAME (--output NAME).")


def _shape_text(shape) -> str:
    return "(" + ", ".join("N" if i == 0 else ("?" if d is None else str(d))
                           for i, d in enumerate(shape)) + ")"


def _pre_softmax(nodes: list[Node], output: str) -> tuple[str, str | None]:
    """The classifier's logits tensor, skipping a trailing Softmax/LogSoftmax (docs/pipeline.md#class-output)."""
    producer = {o: n for n in nodes for o in n.outputs}
    node = producer.get(output)
    passthrough = {"Identity", "Flatten", "Reshape", "Squeeze"}
    while node is not None and node.op_type in passthrough:
        node = producer.get(node.inputs[0])
    if node is not None and node.op_type in _SOFTMAX:
        return node.inputs[0], node.op_type
    return output, None


def _expose(proto: onnx.ModelProto, tensors: list[str], shapes) -> onnx.ModelProto:
    prepared = copy.deepcopy(proto)
    existing = {o.name for o in prepared.graph.output}
    for name in dict.fromkeys(tensors):
        if name in existing:
            continue
        prepared.graph.output.append(
            helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        existing.add(name)
    return prepared


def initializer_arrays(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every initializer of the main graph as a numpy array (external data already loaded)."""
    return {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
