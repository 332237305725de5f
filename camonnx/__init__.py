"""camonnx: explain any ONNX CNN, every conv layer at once.

Public API: ``Explainer`` (a model: layers, activations, gradients, ``explain``), whose
``explain`` returns an ``Explanation`` (numpy maps with their layer names, ``save``), and the
helpers ``animate`` (CAManim) and ``ybroad`` (per-layer ROAD). Imports are lazy so that
``import camonnx`` stays cheap.
"""

__version__ = "0.1.0"

_LAZY = {
    "Explainer": ("camonnx.explainer", "Explainer"),
    "Explanation": ("camonnx.explanation", "Explanation"),
    "animate": ("camonnx.animation", "animate"),
    "ybroad": ("camonnx.road", "ybroad"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'camonnx' has no attribute {name!r}")
