"""Parity with pytorch-grad-cam (the independent oracle) on torchvision ResNets.

pytorch-grad-cam runs one forward/backward per layer on the torch model; camonnx runs one for all
layers through ONNX Runtime and the mirror. pytorch-grad-cam runs on the float64 model
(``model.double()``, float64 input): the oracle. camonnx runs as users run it, in float32; both raw
maps (before upsampling) are min-max normalised per map and must agree within ATOL (measured). (Float32
against float32 would compare two roundings: for Ablation-CAM, whose w_k = (y − y_k)/y divides a
difference of nearly equal scores, pytorch-grad-cam's own float32 run drifts ~1.3e-4 from its
float64 run.) Intended differences,
tested separately: pytorch-grad-cam upsamples with OpenCV after normalising (we upsample exactly
with half-pixel centres — kernel tests check that against torch), its Score-CAM masks use
align_corners=True (we use half-pixel centres; the option ``scorecam_align_corners`` reproduces
theirs here), and its Eigen-CAM leaves the SVD's sign to chance (we orient the projection
towards the feature mass).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pytorch_grad_cam import (AblationCAM, EigenCAM, EigenGradCAM, GradCAM, GradCAMElementWise,
                              GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from camonnx.explainer import Explainer

THEIRS = {
    "gradcam": GradCAM, "hirescam": HiResCAM, "elementwise": GradCAMElementWise,
    "xgradcam": XGradCAM, "layercam": LayerCAM, "gradcam++": GradCAMPlusPlus,
    "eigencam": EigenCAM, "eigengradcam": EigenGradCAM, "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
}
LAYERS = {  # torchvision module ↔ camonnx block tap (legacy-exporter node names)
    "layer2": "/layer2/layer2.1/conv2/Conv",
    "layer3": "/layer3/layer3.1/conv2/Conv",
    "layer4": "/layer4/layer4.1/conv2/Conv",
}
SIZE = 96
CLASSES = [3, 817]
#: camonnx (float32) against pytorch-grad-cam (float64), min-max normalised maps, measured over
#: input seeds 0–5 at every layer here: ≤ 5.5e-6 for the gradient methods (Grad-CAM at layer3),
#: ≤ 5.3e-7 for Score-CAM, so 3e-5; Ablation-CAM ≤ 8.3e-5: its w_k = (y − y_k)/y divides a float32
#: difference of nearly equal scores, so 2.5e-4. A formula error (a missing ReLU, a mean over
#: the wrong axes, a wrong power in Grad-CAM++'s α) moves the normalised map by 1e-2 or more.
ATOL = {"ablationcam": 2.5e-4}
DEFAULT_ATOL = 3e-5


def _minmax(maps: np.ndarray) -> np.ndarray:
    flat = maps.reshape(len(maps), -1)
    lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    return ((flat - lo) / np.where(hi > lo, hi - lo, 1)).reshape(maps.shape)


def their_raw_map(name: str, model, module, x: torch.Tensor, classes: list[int]) -> np.ndarray:
    """pytorch-grad-cam's raw map for one layer: its forward up to get_cam_image, ReLU'd."""
    cam = THEIRS[name](model=model, target_layers=[module])
    targets = [ClassifierOutputTarget(c) for c in classes]
    outputs = cam.activations_and_grads(x)
    if cam.uses_gradients:
        model.zero_grad()
        sum(t(o) for t, o in zip(targets, outputs)).backward(retain_graph=True)
    acts = cam.activations_and_grads.activations[0].numpy()
    grads = cam.activations_and_grads.gradients[0].numpy() if cam.uses_gradients else None
    raw = cam.get_cam_image(x, module, targets, acts, grads, False)
    cam.activations_and_grads.release()
    if name in ("eigencam", "eigengradcam"):  # intended: we fix the SVD's sign (see eigencam.py)
        features = acts if name == "eigencam" else acts * grads
        mass = features.sum(axis=1)
        raw = raw * np.where((raw * mass).sum(axis=(1, 2)) < 0, -1.0, 1.0)[:, None, None]
    return np.maximum(raw, 0)


@pytest.fixture(scope="module")
def setup(resnet18, resnet18_onnx):
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(11))
    return copy.deepcopy(resnet18).double(), Explainer(resnet18_onnx), x


@pytest.mark.parametrize("method", list(THEIRS))
def test_raw_maps_match_pytorch_grad_cam(setup, method):
    model, explainer, x = setup
    options = {"scorecam_align_corners": True} if method == "scorecam" else {}
    classes = CLASSES
    if method in ("scorecam", "ablationcam"):  # one forward per channel: one small image
        x, classes = x[:1, :, :64, :64], CLASSES[:1]
    ours = explainer.explain(x, method=method, layers=list(LAYERS.values()), targets=classes,
                             normalize="none", progress=False, **options)
    for i, module_name in enumerate(LAYERS):
        theirs = their_raw_map(method, model, getattr(model, module_name)[-1], x.double(), classes)
        assert ours.raw[i].shape == theirs.shape and theirs.dtype == np.float64
        np.testing.assert_allclose(_minmax(ours.raw[i]), _minmax(theirs),
                                   atol=ATOL.get(method, DEFAULT_ATOL), rtol=0,
                                   err_msg=f"{method} at {module_name}")


def test_scorecam_default_masks_use_half_pixel_centres(setup):
    """Our default Score-CAM differs from the align_corners variant, and equals the formula."""
    from camonnx.methods.scorecam import channel_masks

    _, explainer, x = setup
    tap = LAYERS["layer4"]
    acts = torch.from_numpy(explainer.activations(x, layers=[tap])[tap])
    masks = channel_masks(acts, (SIZE, SIZE))
    up = torch.nn.functional.interpolate(acts.double(), size=(SIZE, SIZE), mode="bilinear",
                                         align_corners=False)
    lo = up.amin(dim=(2, 3), keepdim=True)
    hi = up.amax(dim=(2, 3), keepdim=True)
    expected = torch.where(hi > lo, (up - lo) / (hi - lo).clamp_min(1e-30), torch.zeros_like(up))
    # float32 masks against the float64 formula on the same activations: measured ≤ 4.1e-7 over
    # input seeds 0–5 (masks in [0, 1]), so 1e-6
    torch.testing.assert_close(masks.double(), expected, atol=1e-6, rtol=0)
    assert not torch.allclose(masks, channel_masks(acts, (SIZE, SIZE), align_corners=True))
