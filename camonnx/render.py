"""Turning maps into pictures: JET colormap blended with the image (no OpenCV)."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

#: 256-entry RGB lookup table of matplotlib's "jet".
JET_LUT = (colormaps["jet"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def heatmap(map01: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] → (H, W, 3) uint8 JET colours (NaN-free input expected)."""
    index = np.clip(np.nan_to_num(map01, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return JET_LUT[index]


def overlay(image: np.ndarray, map01: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the JET heatmap of ``map01`` with the RGB ``image`` (same H×W): α·heat + (1−α)·image."""
    if image.shape[:2] != map01.shape:
        raise ValueError(f"image {image.shape[:2]} and map {map01.shape} differ in size")
    blended = alpha * heatmap(map01).astype(np.float32) + (1 - alpha) * image.astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
