"""ONNX Runtime on the prepared model: logits and every tap's activation from one run.

The provider follows ``device``: ``"cpu"`` passes the CPU provider explicitly (onnxruntime-gpu
lists CUDA even where no GPU exists and would silently fall back), ``"cuda"`` asks for CUDA and
checks ``get_providers()`` after the session is created, failing clearly if CUDA did not load;
a list of provider names is passed through. On CUDA, inputs and outputs are bound to torch CUDA
tensors with ORT's IO binding, so activations stay on the GPU for the kernels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnxruntime as ort
import torch

from camonnx.errors import DeviceError, ModelLoadError
from camonnx.graph import ModelGraph


def cuda_provider_available() -> bool:
    """Whether this onnxruntime build has the CUDA execution provider."""
    return "CUDAExecutionProvider" in ort.get_available_providers()


def providers_for(device: str | Sequence[str]) -> list[str]:
    if not isinstance(device, str):
        return list(device)
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise DeviceError(f"Unknown device {device!r}: use 'cpu', 'cuda' or a list of ONNX Runtime "
                      "execution providers.")


class OrtRuntime:
    """An ONNX Runtime session returning ``{tensor name: array}`` for the requested outputs.

    Two sessions of the model: the prepared one (every tap an output: one run gives all the
    activations), and, opened on the first run that asks for the class scores alone, the lean
    one (:meth:`camonnx.graph.ModelGraph.lean_source`), which runs faster because ONNX Runtime
    may fuse and reuse what is not an output. Both come from the same graph and options."""

    def __init__(self, graph: ModelGraph, device: str | Sequence[str] = "cpu",
                 threads: int | None = None):
        providers = providers_for(device)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # ORT's threads spin-wait after a run by default, holding the cores that torch's threads
        # need for the mirror pass that follows (measured on 2 cores: Grad-CAM of the default
        # model's deepest layer 27 → 19 ms, all layers 122 → 103 ms; the ORT forward unchanged).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self._graph, self._options, self._providers = graph, options, providers
        self.session = self._open(graph.prepared_source)
        self._lean: ort.InferenceSession | None = None
        self.lean_outputs = graph.lean_outputs
        active = self.session.get_providers()
        if providers[0] != "CPUExecutionProvider" and active[0] != providers[0]:
            raise DeviceError(
                f"ONNX Runtime did not load {providers[0]} (active: {', '.join(active)}). Install "
                "onnxruntime-gpu matching your CUDA version in place of onnxruntime (pip uninstall "
                "onnxruntime && pip install onnxruntime-gpu), or use "
                "device='cpu'.")
        self.on_cuda = active[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        self.device_id = _device_id(device)
        self.input_name = graph.input.name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _open(self, source_of) -> ort.InferenceSession:
        try:
            with source_of() as source:
                return ort.InferenceSession(source, self._options, providers=self._providers)
        except Exception as exc:
            raise ModelLoadError(f"ONNX Runtime cannot open the model: {str(exc).strip()}") from None

    def session_for(self, outputs: Sequence[str]) -> ort.InferenceSession:
        """The lean session when it gives every requested output, else the prepared one."""
        if not set(outputs) <= self.lean_outputs:
            return self.session
        if self._lean is None:
            self._lean = self._open(self._graph.lean_source)
        return self._lean

    def run(self, x: np.ndarray | torch.Tensor, outputs: Sequence[str]) -> dict:
        """Outputs for a batch ``x`` in the model's layout: numpy on CPU, torch CUDA tensors on CUDA."""
        if self.on_cuda and isinstance(x, torch.Tensor) and x.is_cuda:
            return self._run_bound(x, outputs)
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        values = self.session_for(outputs).run(
            list(outputs), {self.input_name: np.ascontiguousarray(x, np.float32)})
        return dict(zip(outputs, values))

    def _run_bound(self, x: torch.Tensor, outputs: Sequence[str]) -> dict[str, torch.Tensor]:
        """IO binding: ORT reads the torch tensor and writes into ORT-allocated CUDA memory,
        handed to torch through DLPack without a host copy."""
        x = x.contiguous().float()
        session = self.session_for(outputs)
        binding = session.io_binding()
        binding.bind_input(self.input_name, "cuda", self.device_id, np.float32, list(x.shape),
                           x.data_ptr())
        for name in outputs:
            binding.bind_output(name, "cuda", self.device_id)
        torch.cuda.current_stream(x.device).synchronize()
        session.run_with_iobinding(binding)
        values = binding.get_outputs()
        return {name: torch.from_dlpack(v.to_dlpack()) if hasattr(v, "to_dlpack")
                else torch.as_tensor(v.numpy(), device=x.device)
                for name, v in zip(outputs, values)}


def _device_id(device) -> int:
    if isinstance(device, str) and ":" in device:
        return int(device.split(":", 1)[1])
    return 0
