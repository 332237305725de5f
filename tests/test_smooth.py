"""Smooth Grad-CAM++ (docs/methods.md#smoothgradcampp): against Grad-CAM++, an independent numpy implementation of the
formula from per-sample mirror gradients, channel and region subsets, seeding, vanishing
denominators, validation and the CLI. resnet18 (random weights) at 64×64."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from camonnx.cli import main
from camonnx.errors import InputError
from camonnx.explainer import Explainer
from camonnx.recipe import Preprocess, save_recipe
from camonnx.methods.smoothgradcampp import region_cells, smooth_weights
from camonnx.noise import noisy_copies

from conftest import export_legacy

N_SAMPLES, NOISE, SEED = 8, 0.15, 3
LAYERS = [0, 4, 9, 14, 19]  # 32×32×64, 16×16×64, 8×8×128, 4×4×256, 2×2×512
CLASSES = [3, 500]


@pytest.fixture(scope="module")
def explainer(resnet18_onnx):
    return Explainer(resnet18_onnx)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))


def smooth(explainer, x, **kw):
    kw.setdefault("layers", LAYERS)
    kw.setdefault("targets", CLASSES)
    return explainer.explain(x, method="smoothgradcam++", normalize="none", progress=False,
                             seed=kw.pop("seed", SEED), **kw)


# --- an independent implementation ------------------------------------------------------------
@pytest.fixture(scope="module")
def per_sample(explainer, images):
    """Clean activations (ONNX Runtime) and per-copy gradients (the mirror, image by image) of
    the copies rebuilt with the documented rule: x + σ·z_t, σ = s·(max − min), z_t seeded."""
    layers = [explainer.layers[i] for i in LAYERS]
    copies = noisy_copies(images, N_SAMPLES, NOISE, SEED)
    # the rule, spelled out: z_t is one seeded N(0, 1) draw of shape (C, H, W) per copy
    gen = torch.Generator().manual_seed(SEED)
    z = torch.stack([torch.randn((3, 64, 64), generator=gen) for _ in range(N_SAMPLES)])
    span = images.flatten(1).amax(1) - images.flatten(1).amin(1)
    torch.testing.assert_close(copies, images[:, None] + (NOISE * span)[:, None, None, None, None] * z,
                               rtol=0, atol=0)
    grads = {layer.name: [] for layer in layers}
    for i, cls in enumerate(CLASSES):
        _, _, g = explainer.gradients_tensors(copies[i], [cls] * N_SAMPLES, layers)
        for layer in layers:
            grads[layer.name].append(g[layer.tensor].double().numpy())
    acts = explainer.activations(images, [layer.name for layer in layers])
    return layers, {k: a.astype(np.float64) for k, a in acts.items()}, {k: np.stack(v) for k, v in grads.items()}


def centre_rule(grid, size, box=None, mask=None):
    """Test-side region rule: cell centres ((j + 0.5)·W/w, (i + 0.5)·H/h) inside the box, or on a
    True pixel of the mask; if that selects nothing, the cell holding the box centre (for a mask,
    its True pixel nearest the centroid)."""
    h, w = grid
    H, W = size
    cy, cx = (np.arange(h) + 0.5) * H / h, (np.arange(w) + 0.5) * W / w
    if box is not None:
        x0, y0, x1, y1 = box
        cells = ((cy >= y0) & (cy < y1))[:, None] & ((cx >= x0) & (cx < x1))[None, :]
        if not cells.any():
            cells[int((y0 + y1) / 2 * h / H), int((x0 + x1) / 2 * w / W)] = True
        return cells
    mh, mw = mask.shape
    cells = mask[np.floor(cy * mh / H).astype(int)][:, np.floor(cx * mw / W).astype(int)]
    if not cells.any():  # the cell holding the mask's True pixel nearest its centroid
        rows, cols = np.nonzero(mask)
        nearest = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
        cells[int((rows[nearest] + 0.5) * h / mh), int((cols[nearest] + 0.5) * w / mw)] = True
    return cells


def reference(acts, grads, cells=None, channels=None, top=None):
    """Numpy float64: D1, D2, D3 over copies, α, w over the region, channel subset, M."""
    d1, d2, d3 = grads.mean(1), (grads ** 2).mean(1), (grads ** 3).mean(1)
    s = acts.sum(axis=(2, 3), keepdims=True)
    den = 2 * d2 + s * d3 + 1e-6
    alpha = np.where(den != 0, d2 / np.where(den != 0, den, 1.0), 0.0)
    term = alpha * np.maximum(d1, 0)
    if cells is not None:
        term = term * cells
    w = term.sum(axis=(2, 3))
    if channels is not None:
        keep = np.zeros(w.shape[1], bool)
        keep[channels] = True
        w = w * keep
    if top is not None and top < w.shape[1]:
        order = np.argsort(-w, axis=1, kind="stable")[:, :top]
        keep = np.zeros_like(w, bool)
        np.put_along_axis(keep, order, True, axis=1)
        w = w * keep
    return np.maximum((w[:, :, None, None] * acts).sum(1), 0)


def assert_close_maps(got, want):
    """1e-5 of the map's scale. Both sides start from the same float32 gradients (the mirror's,
    which no float64 oracle can stand in for: see test_gradients.py), so what differs is the
    formula: the pipeline's float32 map against numpy's all-float64 one. Measured over image
    seeds 5–9, every case: ≤ 9.8e-8."""
    scale = max(np.abs(want).max(), 1e-12)
    err = np.abs(got - want).max() / scale
    assert err <= 1e-5, f"relative error {err:.2e}"


MASK = np.zeros((64, 64), bool)
MASK[5:40, 20:60] = True
MASK[50:, :10] = True
LAYER_MASK = np.zeros((8, 8), bool)  # at layer 9's grid
LAYER_MASK[[0, 2, 3, 7], [1, 5, 2, 7]] = True

CASES = {
    "plain": {},
    "channels": {"channels": [0, 3, 17, 40, 63]},
    "top5+dict": {"channels": {4: [1, 2, 60], 19: "top5", 14: "top-7"}},
    "box": {"region": (10, 7.5, 45, 30)},
    "tiny box": {"region": (40, 10, 42, 12)},  # smaller than the deep cells: fallback cell
    "mask": {"region": MASK},
    "layer mask + channels": {"region": LAYER_MASK, "channels": [5, 9, 11]},
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_numpy_reference(explainer, images, per_sample, case):
    options = CASES[case]
    result = smooth(explainer, images, samples=N_SAMPLES, noise=NOISE, **options)
    layers, acts, grads = per_sample
    for layer, raw in zip(layers, result.raw):
        h, w = acts[layer.name].shape[2:]
        cells = None
        region = options.get("region")
        if isinstance(region, tuple):
            cells = centre_rule((h, w), (64, 64), box=region)
        elif region is not None:
            cells = centre_rule((h, w), (64, 64), mask=region)
        chans, top = options.get("channels"), None
        if isinstance(chans, dict):
            chans = {explainer.layer(k).name: v for k, v in chans.items()}.get(layer.name)
        if isinstance(chans, str):
            chans, top = None, int(chans.replace("top", "").strip("-"))
        want = reference(acts[layer.name], grads[layer.name], cells, chans, top)
        assert_close_maps(raw, want)
        if cells is not None:
            np.testing.assert_array_equal(cells, region_cells(region, (64, 64), (h, w)))
            assert cells.any()


def test_region_rule_exact_cases():
    # layer cell centres at 2×2 on 64×64: 16 and 48; box x in [16, 48) holds only the first
    np.testing.assert_array_equal(region_cells((16, 0, 48, 64), (64, 64), (2, 2)),
                                  [[True, False], [True, False]])
    # an integer box at the input's resolution is exactly the slice [y0:y1, x0:x1]
    box = region_cells((3, 5, 20, 9), (64, 64), (64, 64))
    expected = np.zeros((64, 64), bool)
    expected[5:9, 3:20] = True
    np.testing.assert_array_equal(box, expected)
    # a mask at a layer's own grid selects exactly its cells there
    np.testing.assert_array_equal(region_cells(LAYER_MASK, (64, 64), (8, 8)), LAYER_MASK)
    # a tiny region still gives every layer the cell holding its centre
    assert region_cells((40, 10, 42, 12), (64, 64), (2, 2)).tolist() == [[False, True], [False, False]]
    one = np.zeros((64, 64), bool)
    one[60, 3] = True
    for grid in [(32, 32), (4, 4), (2, 2), (1, 1)]:
        cells = region_cells(one, (64, 64), grid)
        assert cells.sum() == 1 and cells[60 * grid[0] // 64, 3 * grid[1] // 64]


def test_full_region_and_all_channels_equal_no_subset(explainer, images):
    x, kw = images[:1], {"samples": 2, "targets": CLASSES[0]}
    plain = smooth(explainer, x, **kw)
    full_box = smooth(explainer, x, region=(0, 0, 64, 64), **kw)
    big_box = smooth(explainer, x, region=(-10, -10, 100, 100), **kw)
    full_mask = smooth(explainer, x, region=np.ones((64, 64), bool), **kw)
    all_channels = smooth(explainer, x, channels={0: list(range(64)), 19: "top512"}, **kw)
    top_all = smooth(explainer, x, channels="top999", **kw)
    for other in (full_box, big_box, full_mask, all_channels, top_all):
        for a, b in zip(plain.raw, other.raw):
            np.testing.assert_array_equal(a, b)
    # a real region does change the weights (and only through them: the map spans the layer)
    part = smooth(explainer, x, region=(0, 0, 20, 20), **kw)
    assert not np.allclose(part.raw[2], plain.raw[2])


# --- Grad-CAM++, seeding, batches -------------------------------------------------------------
def test_one_copy_without_noise_is_gradcampp(explainer, images):
    # identical math on the same mirror; differences: ORT vs mirror activations and the batch
    # size of the conv kernels (float32 rounding), observed ~5e-7 of each map's scale
    pp = explainer.explain(images, method="gradcam++", targets=CLASSES, normalize="none", progress=False)
    sm = explainer.explain(images, method="smoothgradcam++", targets=CLASSES, normalize="none",
                           progress=False, samples=1, noise=0.0)
    assert sm.layers == pp.layers and len(sm.layers) == 20
    for a, b in zip(pp.raw, sm.raw):
        assert np.abs(a - b).max() <= 1e-5 * max(np.abs(a).max(), 1e-12)
    np.testing.assert_allclose(sm.maps, pp.maps, atol=1e-5)  # ~1e-6 after upsampling


def test_seeded_and_batch_independent(explainer, images):
    a = smooth(explainer, images, samples=4, seed=1)
    b = smooth(explainer, images, samples=4, seed=1)
    c = smooth(explainer, images, samples=4, seed=2)
    for ra, rb in zip(a.raw, b.raw):
        np.testing.assert_array_equal(ra, rb)
    # the last tap feeds global pooling + fc: its gradient is the same for every input, so only
    # the earlier layers' maps can depend on the noise
    for ra, rc in zip(a.raw[:-1], c.raw[:-1]):
        assert not np.allclose(ra, rc)
    np.testing.assert_array_equal(a.raw[-1], c.raw[-1])
    # the noise depends on (seed, image shape) only: an image alone gets its map in the batch
    alone = smooth(explainer, images[1:], samples=4, seed=1, targets=CLASSES[1])
    for ra, r1 in zip(a.raw, alone.raw):
        assert np.abs(ra[1] - r1[0]).max() <= 1e-5 * np.abs(ra[1]).max()


def test_copies_spanning_chunks(explainer):
    # 40 copies of one image run as 5 chunks of 8 on CPU (CPU_COPIES_PER_PASS; 32 + 8 on a GPU);
    # the same D1, D2, D3 from one mirror pass over all 40 give the same maps
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    layers = [explainer.layers[i] for i in (0, 9)]
    result = explainer.explain(x, method="smoothgradcam++", layers=[0, 9], targets=7, samples=40,
                               seed=4, normalize="none", progress=False)
    copies = noisy_copies(x, 40, 0.15, 4)[0]
    _, acts, grads = explainer.gradients_tensors(copies, [7] * 40, layers)
    clean = explainer.activations(x, [0, 9])
    for layer, raw in zip(layers, result.raw):
        g = grads[layer.tensor]
        d = [(g ** p).mean(0, keepdim=True) for p in (1, 2, 3)]
        a = torch.from_numpy(clean[layer.name])
        w = smooth_weights(*d, a)
        want = torch.relu((w[:, :, None, None] * a.double()).sum(1)).numpy()
        assert_close_maps(raw, want)


# --- vanishing denominators --------------------------------------------------------------------
class ZeroBranch(torch.nn.Module):
    """conv2 has zero weights and a negative bias: its ReLU tap is all zeros (S_k = 0), while its
    gradient through conv4 is not."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.c4 = torch.nn.Conv2d(4, 4, 1)
        self.fc = torch.nn.Linear(4, 3)
        with torch.no_grad():
            self.c2.weight.zero_()
            self.c2.bias.fill_(-1.0)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a))
        y = torch.relu(self.c3(a) + self.c4(b))
        return self.fc(y.mean(dim=(2, 3)))


def test_no_nan_when_denominators_vanish(explainer, tmp_path):
    zero = torch.zeros(1, 3, 64, 64)  # σ = 0: every copy is the constant image
    flat = smooth(explainer, zero, layers="all", samples=3, targets=None)
    assert all(np.isfinite(r).all() for r in flat.raw) and np.isfinite(flat.maps).all()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    for target in (lambda z: z[:, 0] * 0.0,  # zero gradients everywhere
                   lambda z: torch.zeros(z.shape[0])):  # no dependence on the input at all
        none = smooth(explainer, x, layers=[0, -1], samples=3, targets=target)
        assert all((r == 0).all() for r in none.raw) and np.isfinite(none.maps).all()
    path = export_legacy(ZeroBranch().eval(), tmp_path / "zero.onnx", size=16, dynamic_size=True)
    tiny = Explainer(path)
    result = tiny.explain(torch.randn(1, 3, 16, 16), method="smoothgradcam++", normalize="none",
                          progress=False, samples=4)
    assert all(np.isfinite(r).all() for r in result.raw) and np.isfinite(result.maps).all()
    acts = tiny.activations(torch.zeros(1, 3, 16, 16))
    dead = [name for name, a in acts.items() if not a.any()]
    assert dead and (result[dead[0]] == 0).all()
    # the formula itself: A = 0, D = 0 → α = 0 and w = 0, never NaN
    zeros = torch.zeros(2, 3, 4, 4)
    assert torch.equal(smooth_weights(zeros, zeros, zeros, zeros), torch.zeros(2, 3, dtype=torch.float64))


# --- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    ({"channels": [70]}, r"index 70 is out of range for layer '/conv1/Conv', which has K=64"),
    ({"channels": [-1]}, "negative"),
    ({"channels": []}, "empty"),
    ({"channels": "top0"}, "topK"),
    ({"channels": "first5"}, "topK"),
    ({"channels": [1.5]}, "list of channel indices"),
    ({"channels": {"/layer9/Conv": [1]}}, "Unknown layer"),
    ({"channels": {5: [1]}}, "not among the explained layers"),
    ({"region": (10, 10, 5, 20)}, "needs x0 < x1"),
    ({"region": (70, 70, 90, 90)}, "outside the 64×64 input"),
    ({"region": (1, 2, 3)}, "box"),
    ({"region": np.zeros((64, 64), bool)}, "empty"),
    ({"region": np.ones((10, 10), bool)}, r"shape \(10, 10\).*64, 64.*32×32"),
    ({"region": np.ones((2, 64, 64), bool)}, "one boolean mask"),
    ({"region": np.full((64, 64), 0.5)}, "boolean"),
    ({"samples": 0}, "at least 1"),
    ({"samples": 2.5}, "whole number"),
    ({"noise": -0.1}, "noise"),
    ({"noise": float("nan")}, "noise"),
])
def test_bad_options_are_input_errors(explainer, images, options, message):
    with pytest.raises(InputError, match=message):
        smooth(explainer, images[:1], layers=[0, 19], targets=CLASSES[0], **options)


# --- CLI ------------------------------------------------------------------------------------------
def test_cli_smooth_options(resnet18_onnx, tmp_path):
    # a copy of the model with a 64×64 recipe beside it keeps the CLI runs small
    model = tmp_path / "r18.onnx"
    model.write_bytes(resnet18_onnx.read_bytes())
    save_recipe(model, Preprocess(size=(64, 64), resize=None))
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(image)
    mask = np.zeros((64, 64), bool)
    mask[10:40, 20:60] = True
    np.save(tmp_path / "mask.npy", mask)
    runner = CliRunner()
    base = ["explain", str(model), str(image), "-m", "smoothgradcam++", "-l", "0,-1",
            "--samples", "2", "--noise", "0.1", "--no-overlays"]
    ok = runner.invoke(main, base + ["--channels", "top3", "--region", "10,10,40,30.5", "-o",
                                     str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["method"] == "smoothgradcam++"
    wanted = {"seed": 0, "samples": 2, "noise": 0.1, "channels": "top3",
              "region": [10.0, 10.0, 40.0, 30.5]}
    assert {k: manifest["options"].get(k) for k in wanted} == wanted
    masked = runner.invoke(main, base + ["--channels", "0,1,2", "--region", str(tmp_path / "mask.npy"),
                                         "-o", str(tmp_path / "b")])
    assert masked.exit_code == 0, masked.output
    bad = runner.invoke(main, base + ["--channels", "70", "-o", str(tmp_path / "c")])
    assert bad.exit_code == 2 and "K=64" in bad.output
    wrong_method = runner.invoke(main, ["explain", str(model), str(image), "--noise", "0.2"])
    assert wrong_method.exit_code == 2 and "--noise apply to --method smoothgradcam++" in wrong_method.output
    bad_region = runner.invoke(main, base + ["--region", "1,2,x"])
    assert bad_region.exit_code == 2 and "--region takes a box" in bad_region.output
