"""The CA training path (cabench.models.ca_autograd) gives the module path's outputs and gradients.

The module path (``CoordinateAttention._forward_modules``: pooled strips concatenated, the block's Conv2d /
BatchNorm2d modules, ``x * g_h * g_w`` through autograd) is the reference; it is itself checked against Eq. 4-9 in
test_attention.py. Inputs are random, shapes include non-square maps and a one-row map.
"""

from __future__ import annotations

import copy

import pytest
import torch

from cabench.models import ca_autograd
from cabench.models.attention import CoordinateAttention
from cabench.models.ca_autograd import CoordinateGate, StripPool, coordinate_attention_train

SHAPES = [(2, 16, 7, 5), (3, 40, 6, 9), (4, 96, 14, 14), (2, 24, 1, 11), (5, 8, 12, 3)]


def _block(channels: int, seed: int) -> CoordinateAttention:
    torch.manual_seed(seed)
    block = CoordinateAttention(channels)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
        block.bn1.running_mean.copy_(torch.randn(block.bn1.num_features, generator=g) * 0.3)
        block.bn1.running_var.copy_(torch.rand(block.bn1.num_features, generator=g) + 0.5)
    return block


def _run(block: CoordinateAttention, x: torch.Tensor, gy: torch.Tensor, fast: bool) -> dict[str, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    block.zero_grad(set_to_none=True)
    if fast:
        y = coordinate_attention_train(x, block.conv1, block.bn1, block.conv_h, block.conv_w)
    else:
        y = block._forward_modules(x)
    y.backward(gy)
    got = {"y": y.detach(), "x.grad": x.grad}
    got.update({f"{n}.grad": p.grad for n, p in block.named_parameters()})
    got.update({f"buffer {n}": b.clone() for n, b in block.named_buffers()})
    return got


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_outputs_gradients_and_bn_statistics_equal_the_module_path(shape: tuple[int, ...], training: bool) -> None:
    block = _block(shape[1], seed=sum(shape)).train(training)
    ref_block = copy.deepcopy(block)
    x, gy = torch.randn(shape), torch.randn(shape)
    got, want = _run(block, x, gy, fast=True), _run(ref_block, x, gy, fast=False)
    assert got.keys() == want.keys()
    for name in want:
        atol = 1e-5
        if training and name == "conv1.bias.grad":
            # Exactly zero in exact arithmetic (training-mode BatchNorm subtracts the batch mean, so the bias
            # before it has no effect): both paths return rounding noise of a sum of N x (H + W) terms, which is
            # held to 1e-5 relative to the size of the gradients flowing through the same layer.
            atol = 1e-5 * max(1.0, float(want["conv1.weight.grad"].abs().max()))
            assert float(want[name].abs().max()) <= atol
        torch.testing.assert_close(got[name], want[name], atol=atol, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    if training:  # the running statistics moved, once, as BatchNorm2d on the joined strips moves them
        assert int(block.bn1.num_batches_tracked) == 1


def test_channels_last_input_gives_the_same_values_and_layout() -> None:
    block = _block(32, seed=3).train()
    ref_block = copy.deepcopy(block)
    x = torch.randn(3, 32, 9, 6).contiguous(memory_format=torch.channels_last)
    gy = torch.randn(3, 32, 9, 6).contiguous(memory_format=torch.channels_last)
    got, want = _run(block, x, gy, fast=True), _run(ref_block, x, gy, fast=False)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5)
    assert got["y"].is_contiguous(memory_format=torch.channels_last)


def test_backward_formulas_pass_gradcheck_in_float64() -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    g_h = torch.rand(2, 3, 4, 1, dtype=torch.float64, generator=g, requires_grad=True)
    g_w = torch.rand(2, 3, 1, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(CoordinateGate.apply, (x, g_h, g_w))
    assert torch.autograd.gradcheck(StripPool.apply, (x,))
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    assert torch.autograd.gradcheck(CoordinateGate.apply, (x_cl, g_h, g_w))


def test_block_dispatch_training_goes_through_the_training_path_and_tracing_does_not(monkeypatch) -> None:
    block = _block(16, seed=0).train()
    calls: list[int] = []
    real = ca_autograd.coordinate_attention_train
    monkeypatch.setattr("cabench.models.attention.coordinate_attention_train", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(2, 16, 5, 4)
    block(x)
    assert calls == [1]
    torch.jit.trace(block.eval(), x, check_trace=False)  # fvcore's counts trace the modules (convolutions)
    assert calls == [1]


def _small_ca_net(channels: int = 24) -> torch.nn.Module:
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU6(),
        CoordinateAttention(channels),
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
        nn.BatchNorm2d(channels),
        CoordinateAttention(channels),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, 10),
    )


def test_network_loss_and_gradients_equal_the_module_path() -> None:
    """Gradients through two stacked blocks into the layers before them, in float64 (where the two paths agree to
    rounding of the last digits; in float32, training-mode BatchNorm at small batches amplifies the rounding
    differences of any two orderings of the same sums)."""
    torch.manual_seed(0)
    fast = _small_ca_net().double().train()
    slow = copy.deepcopy(fast)
    for m in slow.modules():
        if isinstance(m, CoordinateAttention):
            m.forward = m._forward_modules  # type: ignore[method-assign]
    x, target = torch.randn(3, 3, 22, 14, dtype=torch.float64), torch.tensor([1, 7, 3])
    losses = []
    for net in (fast, slow):
        loss = torch.nn.functional.cross_entropy(net(x), target)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], atol=1e-12, rtol=1e-12)
    for (name, p), q in zip(fast.named_parameters(), slow.parameters(), strict=True):
        atol = 1e-9 if not name.endswith("3.conv1.bias") and not name.endswith("6.conv1.bias") else 1e-7
        torch.testing.assert_close(p.grad, q.grad, atol=atol, rtol=1e-9, msg=lambda m, n=name: f"{n}: {m}")


def test_autocast_keeps_the_module_paths_dtype_and_values() -> None:
    block = _block(32, seed=5).train()
    ref_block = copy.deepcopy(block)
    x, gy = torch.randn(2, 32, 7, 9), torch.randn(2, 32, 7, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _run(block, x.bfloat16(), gy.bfloat16(), fast=True)
        want = _run(ref_block, x.bfloat16(), gy.bfloat16(), fast=False)
    assert got["y"].dtype == want["y"].dtype == torch.bfloat16
    torch.testing.assert_close(got["y"].float(), want["y"].float(), atol=3e-2, rtol=3e-2)
