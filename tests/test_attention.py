"""Each attention block computes the function its paper writes down.

References below are written from the equations (SE: Eq. 1-3; CA: Eq. 4-9;
CBAM: Woo et al. Eq. 2-4) with explicit pooling and weight products, using the
block's own weights, on fresh random inputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cabench.models.attention import (
    ATTENTIONS,
    CBAM,
    CoordinateAttention,
    DirectionalAttention,
    SqueezeExcite,
    create_attention,
    default_reduction,
)

torch.manual_seed(0)


def _randomize(module: torch.nn.Module) -> None:
    """Non-trivial BN statistics and weights, so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    for p in module.parameters():
        p.data.add_(torch.randn(p.shape, generator=g) * 0.05)


def _hswish(t: torch.Tensor) -> torch.Tensor:
    return t * torch.clamp(t + 3, 0, 6) / 6


def _lin(weight: torch.Tensor, bias: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv on a (N, C, L) tensor: W z + b."""
    return torch.einsum("oc,ncl->nol", weight.flatten(1), z) + bias[None, :, None]


def _bn_eval(bn: torch.nn.BatchNorm2d, t: torch.Tensor) -> torch.Tensor:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (t - bn.running_mean[None, :, None]) * scale[None, :, None] + bn.bias[None, :, None]


def _bn_train(bn: torch.nn.BatchNorm2d, t: torch.Tensor) -> torch.Tensor:
    mean = t.mean(dim=(0, 2))
    var = t.var(dim=(0, 2), unbiased=False)
    return (t - mean[None, :, None]) / torch.sqrt(var[None, :, None] + bn.eps) * bn.weight[None, :, None] + bn.bias[
        None, :, None
    ]


def reference_coordinate_attention(block: CoordinateAttention, x: torch.Tensor, training: bool) -> torch.Tensor:
    h, w = x.shape[-2:]
    z_h = x.sum(dim=3) / w  # Eq. 4: z^h_c(h) = 1/W sum_i x_c(h, i)   -> (N, C, H)
    z_w = x.sum(dim=2) / h  # Eq. 5: z^w_c(w) = 1/H sum_j x_c(j, w)   -> (N, C, W)
    z = torch.cat([z_h, z_w], dim=2)  # concatenation along the spatial dimension
    f = _lin(block.conv1.weight, block.conv1.bias, z)
    f = _bn_train(block.bn1, f) if training else _bn_eval(block.bn1, f)
    f = _hswish(f)  # Eq. 6 with delta = h_swish
    f_h, f_w = f[:, :, :h], f[:, :, h:]
    g_h = torch.sigmoid(_lin(block.conv_h.weight, block.conv_h.bias, f_h))  # Eq. 7
    g_w = torch.sigmoid(_lin(block.conv_w.weight, block.conv_w.bias, f_w))  # Eq. 8
    return x * g_h[:, :, :, None] * g_w[:, :, None, :]  # Eq. 9


def reference_se(block: SqueezeExcite, x: torch.Tensor) -> torch.Tensor:
    z = x.mean(dim=(2, 3))  # Eq. 1
    t1 = F.relu(z @ block.fc1.weight.flatten(1).T + block.fc1.bias)  # Eq. 3
    z_hat = t1 @ block.fc2.weight.flatten(1).T + block.fc2.bias
    return x * torch.sigmoid(z_hat)[:, :, None, None]  # Eq. 2


def reference_cbam(block: CBAM, x: torch.Tensor) -> torch.Tensor:
    w0, b0 = block.mlp[0].weight, block.mlp[0].bias
    w1, b1 = block.mlp[2].weight, block.mlp[2].bias

    def mlp(v: torch.Tensor) -> torch.Tensor:
        return F.relu(v @ w0.T + b0) @ w1.T + b1

    m_c = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))
    x1 = x * m_c[:, :, None, None]
    pooled = torch.cat([x1.amax(dim=1, keepdim=True), x1.mean(dim=1, keepdim=True)], dim=1)
    s = F.conv2d(pooled, block.spatial_conv.weight, padding=3)
    bn = block.spatial_bn
    s = (s - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
    s = s * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    return x1 * torch.sigmoid(s)


@pytest.mark.parametrize("shape", [(2, 32, 7, 7), (3, 96, 14, 9), (1, 16, 5, 12)])
@pytest.mark.parametrize("training", [False, True])
def test_coordinate_attention_is_eq_4_to_9(shape: tuple[int, ...], training: bool) -> None:
    block = CoordinateAttention(shape[1], reduction=4)
    _randomize(block)
    block.train(training)
    for _ in range(3):
        x = torch.randn(shape)
        with torch.no_grad():
            got = block(x)
            want = reference_coordinate_attention(block, x, training)
        assert (got - want).abs().max().item() < 1e-5


def test_coordinate_attention_gates_rows_and_columns_separately() -> None:
    """y_c(i, j) = x_c(i, j) * g^h_c(i) * g^w_c(j): the gate map has rank one per channel."""
    block = CoordinateAttention(8, reduction=1).eval()
    _randomize(block)
    block.double()
    x = torch.rand(1, 8, 6, 5, dtype=torch.float64) + 0.5
    with torch.no_grad():
        gate = block(x) / x
    for c in range(8):
        assert torch.linalg.matrix_rank(gate[0, c]).item() == 1


@pytest.mark.parametrize("shape", [(2, 48, 7, 7), (4, 144, 3, 5)])
def test_squeeze_excite_is_eq_1_to_3(shape: tuple[int, ...]) -> None:
    block = SqueezeExcite(shape[1], reduction=24).eval()
    _randomize(block)
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.allclose(block(x), reference_se(block, x), atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 48, 9, 9), (1, 96, 7, 11)])
def test_cbam_is_channel_then_spatial_attention(shape: tuple[int, ...]) -> None:
    block = CBAM(shape[1], reduction=24).eval()
    _randomize(block)
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.allclose(block(x), reference_cbam(block, x), atol=1e-5)


@pytest.mark.parametrize("direction", ["x", "y"])
def test_one_direction_attention_is_ca_along_one_axis(direction: str) -> None:
    """X attention gates columns (varies along the width), Y attention gates rows."""
    block = DirectionalAttention(32, reduction=4, direction=direction).eval()
    _randomize(block)
    x = torch.randn(2, 32, 6, 9)
    with torch.no_grad():
        got = block(x)
        z = x.mean(dim=2) if direction == "x" else x.mean(dim=3)  # pool over H for X, over W for Y
        f = _hswish(_bn_eval(block.bn1, _lin(block.conv1.weight, block.conv1.bias, z)))
        gate_conv = block.conv_w if direction == "x" else block.conv_h
        g = torch.sigmoid(_lin(gate_conv.weight, gate_conv.bias, f))
        want = x * (g[:, :, None, :] if direction == "x" else g[:, :, :, None])
    assert torch.allclose(got, want, atol=1e-5)


def test_factory_speaks_one_vocabulary() -> None:
    assert {"none", "se", "cbam", "ca", "x", "y"} <= set(ATTENTIONS.names())
    assert isinstance(create_attention("none", 16), torch.nn.Identity)
    for kind in ATTENTIONS.names():
        block = create_attention(kind, 64)
        x = torch.randn(2, 64, 5, 5)
        assert block(x).shape == x.shape
    with pytest.raises(ValueError, match="unknown attention 'gcnet'"):
        create_attention("gcnet", 16)


def test_reduction_defaults_are_table_1s() -> None:
    assert default_reduction("se") == 24
    assert default_reduction("x") == default_reduction("y") == 24
    assert default_reduction("ca") == 32


def test_ca_bottleneck_has_a_floor_of_eight_and_se_has_none() -> None:
    """mip = max(8, C // r) for CA (authors' coordatt.py); C // r for SE (authors' SE for MobileNetV2)."""
    assert CoordinateAttention(96, reduction=32).conv1.out_channels == 8
    assert CoordinateAttention(960, reduction=32).conv1.out_channels == 30
    assert SqueezeExcite(96, reduction=24).fc1.out_channels == 4
    assert CBAM(144, reduction=24).mlp[0].out_features == 6
