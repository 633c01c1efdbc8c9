"""Weights files that are not a loadable state dict of finite tensors: one line naming the file and key."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
import torch

from cabench.checkpoint import CheckpointError, check_state_dict
from cabench.models.registry import ModelSpec, build_model
from cabench.models.weights import load_backbone, load_weights

SPEC = ModelSpec("mobilenetv2", 0.5)


@pytest.fixture(scope="module")
def good_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model(SPEC).state_dict()


def _bad_file(tmp_path: Path, good: dict[str, torch.Tensor], case: str) -> tuple[Path, str]:
    """Write the one bad weights file of ``case``; return it and the words its error must contain."""
    first = next(iter(good))
    path = tmp_path / "weights.pt"
    raw = {
        "empty file": (b"", "not a PyTorch checkpoint (an empty file"),
        "text file": (b"hello", "not a PyTorch checkpoint (a file starting with b'hell'"),
        "a JPEG": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "not a PyTorch checkpoint (a file starting with b'\\xff\\xd8"),
    }
    if case in raw:
        path.write_bytes(raw[case][0])
        return path, raw[case][1]
    if case == "truncated file":
        torch.save(good, path)
        path.write_bytes(path.read_bytes()[:5000])
        return path, "not a loadable checkpoint"
    objects = {
        "a string value": ({**good, first: "weights"}, f"{first}: a str, not a tensor"),
        "a nested dict value": ({**good, first: {"a": torch.zeros(1)}}, f"{first}: a dict, not a tensor"),
        "NaN weights": ({**good, first: torch.full_like(good[first], float("nan"))}, f"{first}: holds NaN"),
        "inf weights": ({**good, first: torch.full_like(good[first], float("inf"))}, f"{first}: holds NaN or inf"),
        "a list": ([1, 2], "no state dict inside"),
        "an empty dict": ({}, "it holds an empty dict"),
        "integer keys": ({1: torch.zeros(1)}, "not a parameter name"),
        "wrong shape": ({**good, first: torch.zeros(3)}, f"{first}: shape (3,) does not fit"),
        "a pickled object": ({**good, "when": datetime.date(2021, 6, 19)}, "Unsupported global: GLOBAL datetime.date"),
    }
    obj, expected = objects[case]
    torch.save(obj, path)
    return path, expected


CASES = [
    "empty file",
    "truncated file",
    "text file",
    "a JPEG",
    "a string value",
    "a nested dict value",
    "NaN weights",
    "inf weights",
    "a list",
    "an empty dict",
    "integer keys",
    "wrong shape",
    "a pickled object",
]


@pytest.mark.parametrize("case", CASES)
def test_a_bad_weights_file_is_one_line_naming_file_and_key(
    tmp_path: Path, good_state: dict[str, torch.Tensor], case: str
) -> None:
    path, expected = _bad_file(tmp_path, good_state, case)
    model = build_model(SPEC)
    for load in (load_weights, load_backbone):
        with pytest.raises(ValueError) as info:
            load(model, path)
        message = str(info.value)
        assert "\n" not in message and str(path) in message, message
        if load is load_weights or "shape" not in expected:
            assert expected in message, message


def test_a_good_state_dict_loads(tmp_path: Path, good_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "good.pt"
    torch.save({"model": good_state}, path)
    model = build_model(SPEC)
    assert len(load_weights(model, path)) == 64  # the file's sha256
    assert torch.equal(model.state_dict()[next(iter(good_state))], next(iter(good_state.values())))


def test_check_state_dict_accepts_integer_buffers_and_refuses_non_finite() -> None:
    ok = {"w": torch.ones(2), "bn.num_batches_tracked": torch.tensor(3)}
    assert check_state_dict(ok, "f.pt") is ok
    with pytest.raises(CheckpointError, match=r"f\.pt: w: holds NaN"):
        check_state_dict({"w": torch.tensor([1.0, float("-inf")])}, "f.pt")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (torch.zeros(3, 3).to_sparse(), "a sparse_coo tensor; weights are dense (strided) tensors"),
        (torch.empty(3, device="meta"), "a meta tensor (no data)"),
        (torch.ones(3, dtype=torch.bool), "a bool tensor; weights are real floating point"),
        (torch.ones(3, dtype=torch.complex64), "a complex64 tensor; weights are real floating point"),
        (torch.ones(3, dtype=torch.int64), "a int64 tensor; weights are floating point"),
        (torch.zeros(1).expand(10**6), "a tensor that repeats one stored value along a dimension (stride 0)"),
    ],
)
def test_a_tensor_that_is_no_weight_is_refused_from_its_metadata(value: torch.Tensor, words: str) -> None:
    # Issue 22: these exited 3 (MemoryError reading a stride-0 bomb) or were accepted and cast.
    with pytest.raises(CheckpointError, match=re.escape(f"w.pt: layer.weight: {words}")):
        check_state_dict({"layer.weight": value}, "w.pt")


def test_batchnorm_step_counters_stay_integer() -> None:
    state = {"bn.weight": torch.ones(2), "bn.num_batches_tracked": torch.tensor(7)}
    assert check_state_dict(state, "w.pt") is state
