"""The fast CA block still computes Eq. 4-9; the authors'-style block is the same function; the timers behave.

The reference below is written from the paper's equations in float64 with explicit sums and weight products,
using the block's own parameters, and compared on fresh random inputs: every path of the block (the batch-1
inference path with its pooling and layout variants, and the module path used for training, gradients, batches and
channels_last inputs) must agree with it to 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cabench.measure.ca_reference import AuthorsStyleCoordinateAttention, swap_in_authors_style
from cabench.models.attention import CoordinateAttention, fold_for_inference
from cabench.models.mobilenetv2 import MobileNetV2

ATOL = 1e-5


def _eq_4_to_9(block: nn.Module, x: torch.Tensor, training: bool) -> torch.Tensor:
    """Eq. 4-9 in float64 from the block's parameters (BatchNorm: batch statistics if ``training``)."""
    p = {k: v.detach().double() for k, v in block.state_dict().items() if v.is_floating_point()}
    x = x.double()
    _, c, h, w = x.shape
    z_h = x.sum(dim=3) / w  # Eq. 4: (N, C, H)
    z_w = x.sum(dim=2) / h  # Eq. 5: (N, C, W)
    z = torch.cat([z_h, z_w], dim=2)  # (N, C, H + W)
    w1 = p["conv1.weight"].reshape(-1, c)
    f = torch.einsum("mc,ncl->nml", w1, z) + p["conv1.bias"][None, :, None]
    if training:
        mean = f.mean(dim=(0, 2), keepdim=True)
        var = ((f - mean) ** 2).mean(dim=(0, 2), keepdim=True)
    else:
        mean, var = p["bn1.running_mean"][None, :, None], p["bn1.running_var"][None, :, None]
    eps = block.bn1.eps
    f = (f - mean) / torch.sqrt(var + eps) * p["bn1.weight"][None, :, None] + p["bn1.bias"][None, :, None]
    f = f * torch.clamp(f + 3, 0, 6) / 6  # Eq. 6, delta = h_swish
    f_h, f_w = f[:, :, :h], f[:, :, h:]
    mip = f.shape[1]
    a_h = torch.einsum("cm,nml->ncl", p["conv_h.weight"].reshape(c, mip), f_h) + p["conv_h.bias"][None, :, None]
    a_w = torch.einsum("cm,nml->ncl", p["conv_w.weight"].reshape(c, mip), f_w) + p["conv_w.bias"][None, :, None]
    g_h, g_w = torch.sigmoid(a_h), torch.sigmoid(a_w)  # Eq. 7, 8
    return x * g_h[:, :, :, None] * g_w[:, :, None, :]  # Eq. 9


def _randomize(block: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        for prm in block.parameters():
            prm.add_(torch.randn(prm.shape, generator=g) * 0.1)


def _check(block: nn.Module, x: torch.Tensor, training: bool, grad: bool = False) -> torch.Tensor:
    block.train(training)
    with torch.set_grad_enabled(grad):
        got = block(x)
    want = _eq_4_to_9(block, x, training)
    assert got.shape == x.shape
    assert (got.double() - want).abs().max().item() < ATOL
    return got


# (C, H, W): pooling by one matrix product (<= 64 pixels) or by a matrix-vector product and a reduction; compact
# ([h | w | pad]) or split ([h | pad | w | pad]) strip layouts; square and non-square maps; gates applied through
# the gate map (W <= 28) or by two products (W > 28).
SHAPES = [(64, 7, 7), (40, 5, 12), (16, 8, 8), (48, 14, 14), (24, 20, 11), (32, 2, 40), (16, 9, 30), (8, 56, 56)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [False, True])
def test_every_path_is_eq_4_to_9(shape: tuple[int, int, int], training: bool) -> None:
    block = CoordinateAttention(shape[0], reduction=4)
    _randomize(block, seed=sum(shape))
    for batch in (1, 2):
        for _ in range(3):  # fresh inputs each time
            _check(block, torch.randn(batch, *shape), training)


def test_the_inference_path_is_taken_exactly_when_it_may_be(monkeypatch: pytest.MonkeyPatch) -> None:
    block = CoordinateAttention(16, reduction=4)
    calls: list[int] = []
    fast = block._forward_inference
    monkeypatch.setattr(block, "_forward_inference", lambda x: calls.append(1) or fast(x))
    x = torch.randn(1, 16, 7, 7)
    cases = [
        (False, False, x, 1),  # eval, no grad, one contiguous image
        (False, True, x, 0),  # gradients on
        (True, False, x, 0),  # training
        (False, False, torch.randn(2, 16, 7, 7), 0),  # a batch
        (False, False, x.contiguous(memory_format=torch.channels_last), 0),
    ]
    for training, grad, inp, expected in cases:
        calls.clear()
        block.train(training)
        with torch.set_grad_enabled(grad):
            block(inp)
        assert len(calls) == expected, (training, grad, inp.shape)


def test_eval_with_gradients_is_eq_4_to_9_and_differentiable() -> None:
    block = CoordinateAttention(32, reduction=4)
    _randomize(block, seed=3)
    x = torch.randn(1, 32, 7, 7, requires_grad=True)
    y = _check(block, x, training=False, grad=True)
    y.square().sum().backward()
    assert x.grad is not None and block.conv1.weight.grad is not None and block.conv_w.bias.grad is not None


def test_changed_weights_and_modes_take_effect_at_once() -> None:
    """No stale state: in-place, .data, load_state_dict and train()/eval() changes between calls all show."""
    block = CoordinateAttention(48, reduction=4)
    _randomize(block, seed=5)
    shape = (1, 48, 14, 14)
    _check(block, torch.randn(shape), training=False)
    with torch.no_grad():
        block.conv1.weight.mul_(1.5)  # in place (bumps the version counter)
    _check(block, torch.randn(shape), training=False)
    block.bn1.running_var.data.mul_(3.0)  # through .data (does not bump it)
    block.conv_h.bias.data.add_(0.5)
    _check(block, torch.randn(shape), training=False)
    other = CoordinateAttention(48, reduction=4)
    _randomize(other, seed=6)
    block.load_state_dict(other.state_dict())
    _check(block, torch.randn(shape), training=False)
    mean_before = block.bn1.running_mean.clone()
    _check(block, torch.randn(shape), training=True)  # batch statistics, and updates the running ones
    assert not torch.equal(mean_before, block.bn1.running_mean)
    _check(block, torch.randn(shape), training=False)  # the updated running statistics are used
    _check(block, torch.randn(1, 48, 7, 7), training=False)  # another map size right after


@pytest.mark.parametrize("shape", SHAPES)
def test_a_folded_block_computes_eq_4_to_9_of_the_unfolded_one(shape: tuple[int, int, int]) -> None:
    block = CoordinateAttention(shape[0], reduction=4).eval()
    _randomize(block, seed=sum(shape) + 1)
    inputs = [
        torch.randn(1, *shape),
        torch.randn(2, *shape),
        torch.randn(1, *shape).contiguous(memory_format=torch.channels_last),
    ]
    want = [_eq_4_to_9(block, x, training=False) for x in inputs]  # from the BatchNorm the fold removes
    fold_for_inference(nn.Sequential(block))
    assert isinstance(block.bn1, nn.Identity) and "bn1.running_mean" not in block.state_dict()
    for x, expected in zip(inputs, want, strict=True):
        for grad in (False, True):  # the batch-1 inference path and the module path
            with torch.set_grad_enabled(grad):
                assert (block(x).double() - expected).abs().max().item() < ATOL
    block.train()
    with pytest.raises(RuntimeError, match=r"folded for inference .* cannot train"):
        block(inputs[1])


def test_channels_last_input() -> None:
    block = CoordinateAttention(32, reduction=4)
    _randomize(block, seed=7)
    for training in (False, True):
        for size in (7, 14):
            x = torch.randn(1, 32, size, size).contiguous(memory_format=torch.channels_last)
            y = _check(block, x, training)
            assert y.is_contiguous(memory_format=torch.channels_last)
    y = _check(block, torch.randn(1, 32, 14, 14), training=False)
    assert y.is_contiguous()


def test_parameter_names_and_shapes_are_unchanged() -> None:
    block = CoordinateAttention(96)
    assert {k: tuple(v.shape) for k, v in block.state_dict().items()} == {
        "conv1.weight": (8, 96, 1, 1),
        "conv1.bias": (8,),
        "bn1.weight": (8,),
        "bn1.bias": (8,),
        "bn1.running_mean": (8,),
        "bn1.running_var": (8,),
        "bn1.num_batches_tracked": (),
        "conv_h.weight": (96, 8, 1, 1),
        "conv_h.bias": (96,),
        "conv_w.weight": (96, 8, 1, 1),
        "conv_w.bias": (96,),
    }


@pytest.mark.parametrize("training", [False, True])
def test_authors_style_block_is_the_same_function(training: bool) -> None:
    ours = CoordinateAttention(64, reduction=8)
    _randomize(ours, seed=11)
    theirs = AuthorsStyleCoordinateAttention(64, reduction=8)
    theirs.load_state_dict(ours.state_dict())  # same names, same shapes
    for shape in ((1, 64, 7, 7), (2, 64, 14, 9), (1, 64, 28, 28)):
        x = torch.randn(shape)
        ours.train(training)
        theirs.train(training)
        with torch.no_grad():
            a, b = ours(x), theirs(x)
        assert (a - b).abs().max().item() < ATOL
        assert (b.double() - _eq_4_to_9(theirs, x, training)).abs().max().item() < ATOL


def test_swap_in_authors_style_keeps_the_weights_and_the_logits() -> None:
    torch.manual_seed(0)
    model = MobileNetV2(width=0.5, attention="ca", num_classes=10).eval()
    swapped = MobileNetV2(width=0.5, attention="ca", num_classes=10)
    swapped.load_state_dict(model.state_dict())
    assert swap_in_authors_style(swapped) == 16
    swapped.eval()
    assert not any(type(m) is CoordinateAttention for m in swapped.modules())
    assert swapped.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert (model(x) - swapped(x)).abs().max().item() < 1e-4


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean(dim=(2, 3)))


def test_the_one_timer_times_each_step_in_rotating_rounds_and_restores_threads() -> None:
    from cabench.measure.bench import pinned_threads, time_interleaved

    calls: list[str] = []
    a, b = _Tiny(), _Tiny().eval()
    x = torch.randn(1, 3, 8, 8)
    previous = torch.get_num_threads()
    with pinned_threads(1):
        assert torch.get_num_threads() == 1
        steps = {"a": lambda: calls.append("a") or a(x), "b": lambda: calls.append("b") or b(x)}
        times = time_interleaved(steps, rounds=3, warmup=1)
    assert torch.get_num_threads() == previous  # restored
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warmups, then round k starts at step k mod 2
    assert list(times) == ["a", "b"] and all(len(t) == 3 and min(t) > 0 for t in times.values())
    assert a.training and not b.training  # the timer does not touch the models
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        time_interleaved(steps, rounds=0, warmup=0)
