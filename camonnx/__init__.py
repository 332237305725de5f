"""camonnx: explain any ONNX CNN, every conv layer at once."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy public helpers (importing camonnx stays cheap): ``camonnx.animate(explanation, out)``."""
    if name == "animate":
        import importlib

        return importlib.import_module("camonnx.animate")  # a callable module: see animate.py
    raise AttributeError(f"module 'camonnx' has no attribute {name!r}")
