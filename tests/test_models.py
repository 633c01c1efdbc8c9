"""The backbones are the networks the paper names, and load the authors' released layout."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cabench.measure.complexity import count_params
from cabench.models import ModelSpec, architectures, build_model
from cabench.models.mobilenetv2 import MobileNetV2, load_authors_state_dict, make_divisible


@pytest.mark.parametrize("width", [1.0, 0.75, 0.5])
def test_mobilenetv2_without_attention_has_torchvisions_parameter_count(width: float) -> None:
    ours = count_params(MobileNetV2(width=width))
    theirs = count_params(torchvision.models.mobilenet_v2(width_mult=width))
    assert ours == theirs


def test_efficientnet_b0_with_its_own_se_is_torchvisions() -> None:
    ours = count_params(build_model(ModelSpec("efficientnet_b0")))
    assert ours == count_params(torchvision.models.efficientnet_b0()) == 5_288_548


def test_efficientnet_b0_with_ca_replaces_every_se() -> None:
    model = build_model(ModelSpec("efficientnet_b0", attention="ca"))
    kinds = [type(m).__name__ for m in model.modules()]
    assert "SqueezeExcitation" not in kinds
    assert kinds.count("CoordinateAttention") == 16  # one per MBConv block of b0


def test_attention_sits_after_the_depthwise_conv_on_the_hidden_dim() -> None:
    model = MobileNetV2(attention="ca")
    block = model.features[2]  # 16 -> 24, expansion 6
    assert isinstance(block.conv[3], nn.Conv2d) and block.conv[3].groups == 96  # depthwise
    assert type(block.conv[6]).__name__ == "CoordinateAttention"
    assert block.conv[6].conv1.in_channels == 96
    first = model.features[1]  # expansion 1: no attention, as in the authors' mbv2_ca.py
    assert not any(type(m).__name__ == "CoordinateAttention" for m in first.modules())


# --- The authors' released MobileNetV2+CA layout, rebuilt here from its module names and
# shapes (features.N.conv.K, CA as conv1/bn1/conv2/conv3, conv, classifier.1), to check that
# a state dict in that layout loads and gives the same logits.


class _AuthorsLayoutCA(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        mip = max(8, c // 32)
        self.conv1 = nn.Conv2d(c, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.conv2 = nn.Conv2d(mip, c, 1)  # height gate
        self.conv3 = nn.Conv2d(mip, c, 1)  # width gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = torch.cat([x.mean(3, keepdim=True), x.mean(2, keepdim=True).permute(0, 1, 3, 2)], dim=2)
        y = nn.functional.hardswish(self.bn1(self.conv1(y)))
        a_h, a_w = torch.split(y, [h, w], dim=2)
        return x * self.conv2(a_h).sigmoid() * self.conv3(a_w.permute(0, 1, 3, 2)).sigmoid()


def _cbr(cin: int, cout: int, k: int = 1, s: int = 1, g: int = 1, act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(cout)]
    return [*layers, nn.ReLU6()] if act else layers


class _AuthorsLayoutBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hid = cin * t
        self.identity = stride == 1 and cin == cout
        if t == 1:
            self.conv = nn.Sequential(*_cbr(hid, hid, 3, stride, hid), *_cbr(hid, cout, act=False))
        else:
            self.conv = nn.Sequential(
                *_cbr(cin, hid), *_cbr(hid, hid, 3, stride, hid), _AuthorsLayoutCA(hid), *_cbr(hid, cout, act=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.identity else self.conv(x)


class _AuthorsLayoutMBV2CA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        cfg = [
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ]
        layers: list[nn.Module] = [nn.Sequential(*_cbr(3, 32, 3, 2))]
        cin = 32
        for t, c, n, s in cfg:
            for i in range(n):
                layers.append(_AuthorsLayoutBlock(cin, make_divisible(c), s if i == 0 else 1, t))
                cin = make_divisible(c)
        self.features = nn.Sequential(*layers)
        self.conv = nn.Sequential(*_cbr(cin, 1280))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(1280, 1000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.conv(self.features(x))).flatten(1))


@pytest.mark.slow
def test_authors_released_mbv2_ca_state_dict_loads_and_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    authors = _AuthorsLayoutMBV2CA()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in authors.modules():  # non-trivial weights and BN statistics
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    authors.eval()
    state = {"module." + k: v for k, v in authors.state_dict().items()}  # as saved from DataParallel
    ours = MobileNetV2(attention="ca")
    load_authors_state_dict(ours, state)
    ours.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), authors(x), atol=1e-4)
    plain = MobileNetV2(attention="ca")
    plain.load_state_dict(authors.state_dict())  # the authors' names, no converter
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(plain(x), authors(x), atol=1e-4)


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec("mobilenetv2", width=0.5, attention="cbam"),
        ModelSpec("mobilenext", width=0.75, attention="ca"),
        ModelSpec("efficientnet_b0", attention="ca"),
        ModelSpec("ssdlite320_mobilenetv2", attention="ca", num_classes=21),
        ModelSpec("ssdlite320_mobilenext", num_classes=81),
        ModelSpec("deeplabv3_mobilenetv2", attention="se", output_stride=8, num_classes=19),
    ],
    ids=lambda s: s.key(),
)
@pytest.mark.slow
def test_every_architecture_runs_at_its_paper_input_size(spec: ModelSpec) -> None:
    info = architectures()[spec.arch]
    model = build_model(spec).eval()
    view = info.view_for_counting(model)
    with torch.no_grad():
        out = view(torch.randn(1, 3, *info.input_size))
    if info.task == "segment":
        assert out.shape == (1, spec.num_classes, *info.input_size)
    elif info.task == "classify":
        assert out.shape == (1, 1000)
    else:
        assert all(torch.isfinite(t).all() for t in (out if isinstance(out, (tuple, list)) else [out]))


def test_registry_lists_the_papers_architectures() -> None:
    assert {
        "mobilenetv2",
        "mobilenext",
        "efficientnet_b0",
        "ssdlite320_mobilenetv2",
        "ssdlite320_mobilenext",
        "deeplabv3_mobilenetv2",
    } <= set(architectures())


def test_a_spec_the_arch_cannot_take_is_refused_in_one_sentence() -> None:
    with pytest.raises(ValueError, match="does not take 'output_stride'"):
        build_model(ModelSpec("mobilenetv2", output_stride=8))
    with pytest.raises(ValueError, match="unknown architecture 'resnet50'"):
        build_model(ModelSpec("resnet50"))
    with pytest.raises(ValueError, match="width must be positive"):
        build_model(ModelSpec("mobilenext", width=0))


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_backbones_relu6_trains_bitwise_as_torchs_in_place_relu6_without_copying_its_input(
    channels_last: bool,
) -> None:
    from cabench.models.layers import ReLU6

    x = torch.randn(4, 8, 6, 6) * 4
    x[0, 0, 0, :3] = torch.tensor([0.0, 6.0, float("nan")])  # the edges of (0, 6), and a NaN
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    outputs, grads = [], []
    for relu6 in (ReLU6(inplace=True), nn.ReLU6(inplace=True)):
        leaf = x.clone().requires_grad_()
        y = relu6(leaf * 1.0)  # in place on a non-leaf, as after a BatchNorm
        y.backward(grad)
        outputs.append(y.detach())
        grads.append(leaf.grad)
    assert torch.equal(outputs[0].nan_to_num(-1), outputs[1].nan_to_num(-1))
    assert torch.equal(grads[0], grads[1]) and grads[0].stride() == grads[1].stride()

    from torch.profiler import profile

    leaf = x.clone().requires_grad_()
    with profile() as prof:
        ReLU6(inplace=True)(leaf * 1.0).sum().backward()
    assert "aten::clone" not in {e.name for e in prof.events()}  # torch's hardtanh_ clones its input here
    model = build_model(ModelSpec("mobilenetv2", width=0.5, num_classes=10, small_input=True))
    assert sum(isinstance(m, ReLU6) for m in model.modules()) == 35  # every ReLU6 of the backbone
