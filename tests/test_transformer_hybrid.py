"""A tiny conv + attention hybrid (MaxViT/CoAtNet-like) end to end, from both torch exporters.

The module: a strided conv stem with BatchNorm, an MBConv block (expand, depthwise, squeeze-excite,
project, residual), a patch-embedding conv to 4×4 tokens, one transformer block whose attention is
written with ``einsum`` and a learned relative-position bias read by index, one whose attention is
``F.scaled_dot_product_attention``, LayerNorms, GELU MLPs and a mean-pooled linear head. It is
exported with the legacy exporter (opset 17: Erf-GELU, Einsum, Gather, decomposed LayerNorm
shapes), with the dynamo exporter at its default opset (Gelu, LayerNormalization) and at opset 23
(the Attention operator). Each file must load (the mirror-vs-ONNX-Runtime parity probe passes),
give finite Grad-CAM maps of the image's size at every conv layer, patch embedding included, and
its mirror in float64 must reproduce the module's float64 logits and input gradient.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from camonnx.explainer import Explainer
from camonnx.parity import float64_twin
from conftest import dyadic_batchnorm, export_legacy

SIZE = 32
CLASSES = 10


class MBConv(nn.Module):
    def __init__(self, channels: int, expand: int = 2):
        super().__init__()
        hidden = channels * expand
        self.expand = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False),
                                    nn.BatchNorm2d(hidden), nn.SiLU())
        self.depthwise = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden,
                                                 bias=False), nn.BatchNorm2d(hidden), nn.SiLU())
        self.squeeze = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(hidden, 4, 1), nn.SiLU(),
                                     nn.Conv2d(4, hidden, 1), nn.Sigmoid())
        self.project = nn.Sequential(nn.Conv2d(hidden, channels, 1, bias=False),
                                     nn.BatchNorm2d(channels))

    def forward(self, x):
        h = self.depthwise(self.expand(x))
        return x + self.project(h * self.squeeze(h))


class EinsumAttention(nn.Module):
    """Multi-head attention on a side×side token grid with a relative-position bias table."""

    def __init__(self, dim: int, heads: int, side: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.table = nn.Parameter(torch.randn((2 * side - 1) ** 2, heads) * 0.5)
        coords = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side),
                                            indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + side - 1
        self.register_buffer("index", rel[..., 0] * (2 * side - 1) + rel[..., 1])

    def forward(self, x):
        n, s, d = x.shape
        q, k, v = self.qkv(x).reshape(n, s, 3, self.heads, d // self.heads).permute(
            2, 0, 3, 1, 4).unbind(0)
        scores = torch.einsum("bhid,bhjd->bhij", q, k) * self.scale
        scores = scores + self.table[self.index].permute(2, 0, 1)
        out = torch.einsum("bhij,bhjd->bhid", scores.softmax(-1), v)
        return self.proj(out.transpose(1, 2).reshape(n, s, d))


class SdpaAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        n, s, d = x.shape
        q, k, v = self.qkv(x).reshape(n, s, 3, self.heads, d // self.heads).permute(
            2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, s, d))


class Block(nn.Module):
    def __init__(self, dim: int, attention: nn.Module):
        super().__init__()
        self.norm1, self.attn, self.norm2 = nn.LayerNorm(dim), attention, nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyHybrid(nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(8), nn.SiLU())
        self.mbconv = MBConv(8)
        self.patch_embed = nn.Conv2d(8, dim, 4, stride=4)
        side = SIZE // 8
        self.blocks = nn.Sequential(Block(dim, EinsumAttention(dim, heads, side)),
                                    Block(dim, SdpaAttention(dim, heads)))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, CLASSES)

    def forward(self, x):
        x = self.patch_embed(self.mbconv(self.stem(x)))
        x = self.blocks(x.flatten(2).transpose(1, 2))
        return self.head(self.norm(x).mean(1))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """A tiny model: one torch thread is faster than waking a pool per op on 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def hybrid() -> nn.Module:
    torch.manual_seed(0)
    # BatchNorm statistics that the legacy exporter folds into the convs exactly (see conftest)
    return dyadic_batchnorm(TinyHybrid(), seed=1).eval()


EXPORTS = ["legacy-17", "dynamo", "dynamo-23"]


@pytest.fixture(scope="module", params=EXPORTS)
def exported(request, hybrid, tmp_path_factory):
    path = tmp_path_factory.mktemp("hybrid") / f"{request.param}.onnx"
    if request.param == "legacy-17":
        export_legacy(hybrid, path, size=SIZE)
    else:
        kwargs = {"opset_version": 23} if request.param == "dynamo-23" else {}
        x = torch.randn(2, 3, SIZE, SIZE)  # batch 2: a batch of 1 would be specialised
        program = torch.onnx.export(hybrid, (x,), dynamo=True, input_names=["input"],
                                    output_names=["logits"],
                                    dynamic_shapes={"x": {0: torch.export.Dim("N", max=64)}},
                                    verbose=False, **kwargs)
        program.save(str(path))
    return request.param, Explainer(path)


def test_exports_use_the_transformer_operators(exported):
    """The graphs hold the operators this test is about (else it would test nothing new)."""
    kind, explainer = exported
    ops = {node.op_type for node in explainer.graph.nodes}
    expected = {"legacy-17": {"Einsum", "Erf", "LayerNormalization", "Softmax"},
                "dynamo": {"Einsum", "Gelu", "LayerNormalization", "Softmax"},
                "dynamo-23": {"Einsum", "Gelu", "LayerNormalization", "Attention"}}[kind]
    assert expected <= ops, sorted(ops)


def test_conv_layers_are_explained(exported):
    _, explainer = exported
    assert math.isfinite(explainer.parity_error)
    convs = [node.name for node in explainer.graph.nodes if node.op_type == "Conv"]
    assert [layer.conv_node for layer in explainer.layers] == convs  # the last: patch embedding
    assert explainer.layers[-1].shape == (16, SIZE // 8, SIZE // 8)
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    result = explainer.explain(images, method="gradcam", progress=False)
    assert result.maps.shape == (len(explainer.layers), 2, SIZE, SIZE)
    assert np.isfinite(result.maps).all() and result.maps.max() > 0


def test_float64_mirror_matches_the_module(exported, hybrid):
    """Logits and ∂(top logit)/∂image of the float64 mirror against the float64 module.

    ≤ 1e-6 of the largest value: the file holds the module's float32 weights (BatchNorm folded
    exactly) and a few float32 constants the exporters write (√2 of the Erf-GELU, √scale of the
    decomposed attention), which move the function by ~1e-8 relative (measured: 5e-9 on logits
    and gradient); everything else is float64 on both sides."""
    _, explainer = exported
    twin, model = float64_twin(explainer.mirror), copy.deepcopy(hybrid).double()
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4),
                    dtype=torch.float64)
    ours_x, torch_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours = twin(ours_x, [explainer.graph.logits])[explainer.graph.logits]
    theirs = model(torch_x)
    top = theirs.argmax(1)
    (ours_grad,) = torch.autograd.grad(ours.gather(1, top[:, None]).sum(), [ours_x])
    (torch_grad,) = torch.autograd.grad(theirs.gather(1, top[:, None]).sum(), [torch_x])
    assert ours.dtype == torch.float64 and torch_grad.abs().max() > 0
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=0,
                               atol=1e-6 * float(theirs.abs().max()))
    np.testing.assert_allclose(ours_grad.numpy(), torch_grad.numpy(), rtol=0,
                               atol=1e-6 * float(torch_grad.abs().max()))
