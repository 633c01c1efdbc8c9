"""The blocks the paper left out (ECA, triplet) and the block options (act, softmax), each against its equations.

References are written from the papers' equations with explicit pooling, padding and weight products, using
the block's own weights, on random inputs; BatchNorm is applied from its formula.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cabench.measure.complexity import count_model
from cabench.models.attention import CBAM, CoordinateAttention, SqueezeExcite
from cabench.models.blocks import create_attention
from cabench.models.eca import EfficientChannelAttention, eca_kernel_size
from cabench.models.registry import ModelSpec, build_model
from cabench.models.triplet import TripletAttention

ACTS = {
    "relu": lambda t: t.clamp(min=0),
    "hswish": lambda t: t * (t + 3).clamp(0, 6) / 6,
    "silu": lambda t: t / (1 + torch.exp(-t)),
}


def _randomize(module: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    for p in module.parameters():
        p.data.add_(torch.randn(p.shape, generator=g) * 0.3)


def _bn(bn: torch.nn.BatchNorm2d, t: torch.Tensor, dim: int, training: bool) -> torch.Tensor:
    """BatchNorm from its formula along channel axis ``dim`` (batch statistics in training, running in eval)."""
    shape = [1] * t.dim()
    shape[dim] = -1
    if training:
        axes = [d for d in range(t.dim()) if d != dim]
        mean, var = t.mean(dim=axes), t.var(dim=axes, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    return (t - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


# --- ECA -----------------------------------------------------------------------------------------------------


def test_eca_kernel_is_the_odd_number_nearest_to_log2c_plus_b_over_gamma() -> None:
    for c in range(2, 5000):
        t = (math.log2(c) + 1) / 2
        k = eca_kernel_size(c)
        assert k % 2 == 1
        nearest = min(range(1, 40, 2), key=lambda o: (abs(o - t), -o))  # ties go to the larger odd number
        assert k == nearest, c
    # MobileNetV2-1.0's hidden widths.
    assert {c: eca_kernel_size(c) for c in (96, 144, 192, 384, 576, 960)} == {
        96: 3,
        144: 5,
        192: 5,
        384: 5,
        576: 5,
        960: 5,
    }


@pytest.mark.parametrize("shape", [(2, 96, 5, 7), (1, 144, 4, 4), (3, 16, 3, 2)])
def test_eca_is_a_1d_conv_across_channels_of_the_pooled_map(shape: tuple[int, ...]) -> None:
    block = EfficientChannelAttention(shape[1])
    _randomize(block)
    x = torch.randn(shape)
    n, c = shape[:2]
    k = block.kernel_size
    w = block.conv.weight.view(k)
    z = x.sum(dim=(2, 3)) / (shape[2] * shape[3])
    padded = torch.cat([torch.zeros(n, k // 2), z, torch.zeros(n, k // 2)], dim=1)
    s = torch.stack([sum(w[j] * padded[:, i + j] for j in range(k)) for i in range(c)], dim=1)
    want = x * (1 / (1 + torch.exp(-s)))[:, :, None, None]
    with torch.no_grad():
        assert (block(x) - want).abs().max().item() < 1e-5
    assert block.conv.bias is None and sum(p.numel() for p in block.parameters()) == k


# --- Triplet attention ---------------------------------------------------------------------------------------


def _branch(gate: torch.nn.Module, x: torch.Tensor, pooled_axis: int, training: bool) -> torch.Tensor:
    """One branch written on the unrotated tensor: pool ``pooled_axis`` away, conv over the two others."""
    mx = x.max(dim=pooled_axis).values
    mean = x.sum(dim=pooled_axis) / x.shape[pooled_axis]
    if pooled_axis == 2:  # C-W branch: the map is (C, W)
        pooled = torch.stack([mx, mean], dim=1)  # (N, 2, C, W)
    elif pooled_axis == 3:  # C-H branch: the map is (H, C) in the rotated frame
        pooled = torch.stack([mx, mean], dim=1).transpose(2, 3)  # (N, 2, H, C)
    else:  # spatial branch: (H, W)
        pooled = torch.stack([mx, mean], dim=1)
    k = gate.conv.weight.shape[-1]
    s = F.conv2d(F.pad(pooled, (k // 2,) * 4), gate.conv.weight)
    g = torch.sigmoid(_bn(gate.bn, s, 1, training))[:, 0]
    if pooled_axis == 2:
        return x * g[:, :, None, :]  # gate (C, W), shared over H
    if pooled_axis == 3:
        return x * g.transpose(1, 2)[:, :, :, None]  # gate (H, C) -> (C, H), shared over W
    return x * g[:, None, :, :]  # gate (H, W), shared over C


@pytest.mark.parametrize("shape", [(2, 24, 9, 6), (1, 10, 5, 12)])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("kernel_size", [7, 3])
def test_triplet_is_the_mean_of_three_rotated_z_pool_gates(
    shape: tuple[int, ...], training: bool, kernel_size: int
) -> None:
    block = TripletAttention(shape[1], kernel_size=kernel_size)
    _randomize(block)
    block.train(training)
    x = torch.randn(shape)
    want = (
        _branch(block.cw, x, 2, training) + _branch(block.hc, x, 3, training) + _branch(block.hw, x, 1, training)
    ) / 3
    with torch.no_grad():
        assert (block(x) - want).abs().max().item() < 1e-5
    assert sum(p.numel() for p in block.parameters()) == 3 * (2 * kernel_size**2 + 2)


# --- Options: act and softmax --------------------------------------------------------------------------------


def _lin(weight: torch.Tensor, bias: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.einsum("oc,ncl->nol", weight.flatten(1), z) + bias[None, :, None]


def reference_ca(block: CoordinateAttention, x: torch.Tensor, act: str, softmax: bool, training: bool) -> torch.Tensor:
    h, w = x.shape[-2:]
    z = torch.cat([x.sum(dim=3) / w, x.sum(dim=2) / h], dim=2)  # Eq. 4-5, concatenated
    f = ACTS[act](_bn(block.bn1, _lin(block.conv1.weight, block.conv1.bias, z), 1, training))  # Eq. 6
    a_h = _lin(block.conv_h.weight, block.conv_h.bias, f[:, :, :h])
    a_w = _lin(block.conv_w.weight, block.conv_w.bias, f[:, :, h:])
    if softmax:  # H * softmax over the rows, W * softmax over the columns
        g_h = h * torch.exp(a_h) / torch.exp(a_h).sum(dim=2, keepdim=True)
        g_w = w * torch.exp(a_w) / torch.exp(a_w).sum(dim=2, keepdim=True)
    else:
        g_h, g_w = torch.sigmoid(a_h), torch.sigmoid(a_w)
    return x * g_h[:, :, :, None] * g_w[:, :, None, :]


@pytest.mark.parametrize("act", ["relu", "hswish", "silu"])
@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize(("batch", "training"), [(1, False), (3, False), (3, True)])
def test_ca_options_follow_their_equations(act: str, softmax: bool, batch: int, training: bool) -> None:
    torch.manual_seed(0)  # the same draw whatever ran before
    block = create_attention("ca", 32, reduction=4, act=act, softmax=softmax)
    assert isinstance(block, CoordinateAttention)
    _randomize(block)
    block.train(training)
    x = torch.randn(batch, 32, 6, 9)  # batch 1 in eval takes the inference path (not for softmax)
    with torch.no_grad():
        got = block(x)
        want = reference_ca(block, x, act, softmax, training)
    # fp32 against the float64 reference: 1e-5, relative where softmax gates (scaled by H or W) make values large
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-5, atol=1e-5)


def test_ca_softmax_gates_average_one_per_direction() -> None:
    block = CoordinateAttention(16, reduction=2, softmax=True).eval()
    _randomize(block)
    x = torch.rand(1, 16, 7, 5, dtype=torch.float64) + 0.5
    block.double()
    with torch.no_grad():
        gate = block(x) / x  # g^h_c(i) g^w_c(j)
    # Rank one per channel, and the row and column factors each average 1: the gate map averages 1.
    assert torch.allclose(gate.mean(dim=(2, 3)), torch.ones(1, 16, dtype=torch.float64))


@pytest.mark.parametrize("act", ["relu", "hswish", "silu"])
def test_se_and_cbam_take_an_activation(act: str) -> None:
    se = SqueezeExcite(48, act=act).eval()
    cbam = CBAM(48, act=act).eval()
    _randomize(se)
    _randomize(cbam)
    x = torch.randn(2, 48, 5, 6)
    z = x.mean(dim=(2, 3))
    s = _lin(se.fc2.weight, se.fc2.bias, ACTS[act](_lin(se.fc1.weight, se.fc1.bias, z[:, :, None])))
    w0, b0, w1, b1 = cbam.mlp[0].weight, cbam.mlp[0].bias, cbam.mlp[2].weight, cbam.mlp[2].bias

    def mlp(v: torch.Tensor) -> torch.Tensor:
        return ACTS[act](v @ w0.T + b0) @ w1.T + b1

    x1 = x * torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))[:, :, None, None]
    pooled = torch.cat([x1.amax(dim=1, keepdim=True), x1.mean(dim=1, keepdim=True)], dim=1)
    spatial = _bn(cbam.spatial_bn, F.conv2d(pooled, cbam.spatial_conv.weight, padding=3), 1, False)
    with torch.no_grad():
        assert (se(x) - x * torch.sigmoid(s)[:, :, :, None]).abs().max().item() < 1e-5
        assert (cbam(x) - x1 * torch.sigmoid(spatial)).abs().max().item() < 1e-5


def test_options_add_no_parameters_and_blocks_sit_where_attention_goes() -> None:
    ca = count_model(ModelSpec("mobilenetv2", attention="ca"), madds=False).params
    for args in ({"act": "relu"}, {"softmax": True}, {"act": "silu"}):
        assert count_model(ModelSpec("mobilenetv2", attention="ca", attention_args=args), madds=False).params == ca
    model = build_model(ModelSpec("mobilenetv2", attention="eca"))
    ecas = [m for m in model.modules() if isinstance(m, EfficientChannelAttention)]
    assert len(ecas) == 16 and ecas[0].kernel_size == 3  # features[2]: hidden width 96
    baseline = count_model(ModelSpec("mobilenetv2"), madds=False).params
    eca = count_model(ModelSpec("mobilenetv2", attention="eca"), madds=False).params
    assert eca - baseline == sum(m.kernel_size for m in ecas)
    triplet = count_model(ModelSpec("mobilenetv2", attention="triplet"), madds=False).params
    assert triplet - baseline == 16 * 300
    with pytest.raises(ValueError, match="eca"):
        create_attention("eca", 64, reduction=16)  # ECA has no reduction ratio: refused, not ignored
