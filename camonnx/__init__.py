"""camonnx: explain any ONNX CNN, every conv layer at once."""

__version__ = "0.1.0"
