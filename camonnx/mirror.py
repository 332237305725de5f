"""The torch mirror: the ONNX graph executed node by node with torch ops, for autograd.

docs/pipeline.md#mirror. ``torch.autograd.grad(y.sum(), taps)`` through the mirror gives ∂y/∂A for every tap in
one backward.

Why an interpreter of our own rather than onnx2torch: onnx2torch's last release is from 2024, it
fails on Identity nodes and on several opsets that real exports use (opset 7–9 attribute forms,
opset 18+ input forms), and it cannot stop at, override or return arbitrary intermediate tensors.
An interpreter over the decoded nodes keeps every intermediate tensor addressable by its ONNX name
(taps are ONNX tensors), checks every op and attribute form up front (an unsupported one is an
error at load time, never a wrong number), and lets later stages override a tap and re-run only
the nodes downstream of it. Its per-node Python overhead (~µs) is negligible beside the conv work.

Nodes whose inputs are all constants (weights, shape arithmetic on weights, tf2onnx's transposed
kernels) are folded once at load time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from camonnx.errors import ModelLoadError, UnsupportedModelError
from camonnx.graph import ModelGraph, initializer_arrays
from camonnx.ops import Node, OpSpec, lookup

#: Ops whose cost grows with the image (multiply-accumulates over every position); the rest
#: (activations, shape arithmetic, pooling) cost little beside them. Used to price a partial pass.
COSTLY_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "Attention",
                        "MultiHeadAttention"})


@dataclass(frozen=True)
class Cut:
    """How to get ``wanted`` tensors by re-running only the graph after some given tensors.

    ``leaves``: the ``sources`` no other source feeds; given their values (and the ``given``
    tensors), the mirror computes the other sources and ``wanted`` by running only the nodes
    after the leaves, plus whatever cheap upstream nodes a read tensor that is not ``given``
    needs (e.g. a shape computed from the input). ``frontier``: tensors the nodes after the
    leaves read from outside them. ``downstream``: every tensor the partial pass computes from
    the leaves. ``cost`` / ``full_cost``: costly nodes (:data:`COSTLY_OPS`) that the partial and
    the full forward run."""

    leaves: tuple[str, ...]
    frontier: tuple[str, ...]
    downstream: frozenset[str]
    cost: int
    full_cost: int


class Mirror(torch.nn.Module):
    """Runs a :class:`ModelGraph` with torch; every ONNX tensor can be requested by name."""

    def __init__(self, graph: ModelGraph):
        super().__init__()
        self.input_name = graph.input.name
        self.logits_name = graph.logits
        self.output_name = graph.output
        constants = initializer_arrays(graph.model)
        self._check_inputs(graph, constants)
        # Every op is checked before any compute of the model; nodes whose inputs are all
        # constants are folded as we go, so later checks see their values (e.g. a Constant False
        # feeding Dropout's training_mode).
        self._const: dict[str, torch.Tensor] = {}
        self._buffer_names: dict[str, str] = {}
        for name, array in constants.items():
            self._store_constant(name, torch.from_numpy(np.array(array)))
        self._program: list[tuple[Node, OpSpec]] = []
        for node in graph.nodes:
            spec = lookup(node, constants)
            if all(not i or i in self._const for i in node.inputs):
                for name in self._fold(node, spec):
                    constants[name] = self._const[name].numpy()
            else:
                self._program.append((node, spec))
        self._producer = {out: i for i, (node, _) in enumerate(self._program) for out in node.outputs}
        self._plans: dict[tuple, list[int]] = {}

    # --- construction ------------------------------------------------------------------------

    def _check_inputs(self, graph: ModelGraph, constants: Mapping[str, np.ndarray]) -> None:
        known = set(constants) | {graph.input.name}
        for node in graph.nodes:
            for name in node.inputs:
                if name and name not in known:
                    raise ModelLoadError(
                        f"Node {node.name!r} reads tensor {name!r} that no earlier node produces: "
                        "the graph is not in topological order or is missing an input.")
            known.update(o for o in node.outputs if o)

    def _store_constant(self, name: str, value: torch.Tensor) -> None:
        buffer = f"c{len(self._buffer_names)}"
        self.register_buffer(buffer, value, persistent=False)
        self._buffer_names[name] = buffer
        self._const[name] = value

    def _fold(self, node: Node, spec: OpSpec) -> list[str]:
        inputs = [self._constant(i) if i else None for i in node.inputs]
        with torch.no_grad():
            try:
                result = spec.fn(node, *inputs)
            except Exception as exc:
                raise UnsupportedModelError(
                    f"Could not evaluate constant {node.describe()}: {type(exc).__name__}: {exc}"
                ) from None
        folded = []
        for name, value in zip(node.outputs, _as_tuple(result)):
            if name:
                self._store_constant(name, value)
                folded.append(name)
        return folded

    def _constant(self, name: str) -> torch.Tensor:
        return getattr(self, self._buffer_names[name])

    # --- execution ---------------------------------------------------------------------------

    def _plan(self, wanted: Sequence[str], overridden: frozenset[str]) -> list[int]:
        """Indices of the program nodes needed for ``wanted``, stopping at overridden tensors."""
        key = (tuple(wanted), overridden)
        if key not in self._plans:
            needed: set[int] = set()
            stack = [w for w in wanted if w not in overridden]
            while stack:
                name = stack.pop()
                index = self._producer.get(name)
                if index is None or index in needed:
                    continue
                needed.add(index)
                stack.extend(i for i in self._program[index][0].inputs
                             if i and i not in overridden)
            self._plans[key] = sorted(needed)
        return self._plans[key]

    def frontier(self, tensor: str, output: str | None = None) -> list[str]:
        """Tensors that the nodes downstream of ``tensor`` read from upstream of it.

        Overriding ``tensor`` together with these (taken from a clean forward) re-runs only the
        part of the network after ``tensor`` (Ablation-CAM re-runs the rest of the network from a
        modified tap, docs/methods.md#ablationcam).
        """
        return list(self.cut([tensor], [output or self.logits_name]).frontier)

    def cut(self, sources: Sequence[str], wanted: Sequence[str],
            given: Iterable[str] = ()) -> Cut:
        """The partial pass that yields ``sources`` and ``wanted`` from the leaves of ``sources``
        (see :class:`Cut`); ``given``: the tensors that can be supplied (e.g. ONNX Runtime's
        outputs); the frontier tensors among them are overridden, the others recomputed."""
        requested = set(sources)
        full = self._plan(list(dict.fromkeys([*sources, *wanted])), frozenset())
        tainted: set[str] = set()
        leaves: list[str] = []
        reads: set[str] = set()  # what the nodes after the leaves read
        for index in full:
            node = self._program[index][0]
            downstream = any(name in tainted for name in node.inputs)
            if downstream:
                reads.update(name for name in node.inputs if name)
            for name in node.outputs:
                if name and (downstream or name in requested):
                    tainted.add(name)
                    if not downstream:
                        leaves.append(name)
        order = {name: i for i, (node, _) in enumerate(self._program) for name in node.outputs}
        frontier = sorted(reads - tainted - set(self._buffer_names) - {self.input_name},
                          key=lambda name: order.get(name, -1))
        overridden = frozenset(leaves) | (frozenset(frontier) & frozenset(given))
        partial = self._plan(list(dict.fromkeys([*sources, *wanted])), overridden)
        costly = lambda plan: sum(self._program[i][0].op_type in COSTLY_OPS for i in plan)  # noqa: E731
        return Cut(tuple(leaves), tuple(frontier), frozenset(tainted), costly(partial),
                   costly(full))

    def forward(self, x: torch.Tensor, outputs: Iterable[str] | None = None,
                overrides: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Run the graph on ``x`` (in the model's layout) and return the requested tensors.

        ``outputs`` defaults to the logits. ``overrides`` replaces tensors by name: the nodes
        that produced them (and nodes only they needed) are skipped.
        """
        wanted = list(outputs) if outputs is not None else [self.logits_name]
        overrides = dict(overrides or {})
        plan = self._plan(wanted, frozenset(overrides))
        values: dict[str, torch.Tensor] = {self.input_name: x, **overrides}
        last_use = self._last_use(plan, wanted)
        for step, index in enumerate(plan):
            node, spec = self._program[index]
            args = [self._value(values, i) if i else None for i in node.inputs]
            try:
                result = spec.fn(node, *args)
            except UnsupportedModelError:
                raise
            except Exception as exc:
                raise UnsupportedModelError(
                    f"The mirror failed at {node.describe()}: {type(exc).__name__}: {exc}"
                ) from None
            for name, value in zip(node.outputs, _as_tuple(result)):
                if name:
                    values[name] = value
            for name in last_use.get(step, ()):
                values.pop(name, None)
        return {name: self._value(values, name) for name in wanted}

    def _value(self, values: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        if name in values:
            return values[name]
        if name in self._buffer_names:
            return self._constant(name)
        raise KeyError(name)

    def _last_use(self, plan: list[int], wanted: Sequence[str]) -> dict[int, list[str]]:
        """step → tensors no later step reads (freed early to bound memory)."""
        key = ("last", tuple(plan), tuple(wanted))
        cached = self._plans.get(key)
        if cached is not None:
            return cached  # type: ignore[return-value]
        last: dict[str, int] = {}
        for step, index in enumerate(plan):
            for name in self._program[index][0].inputs:
                if name:
                    last[name] = step
        keep = set(wanted)
        freed: dict[int, list[str]] = {}
        for name, step in last.items():
            if name not in keep and name not in self._buffer_names:
                freed.setdefault(step, []).append(name)
        self._plans[key] = freed  # type: ignore[assignment]
        return freed


def _as_tuple(result) -> tuple:
    return result if isinstance(result, tuple) else (result,)
