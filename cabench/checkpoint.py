"""Training checkpoints: written atomically, read back with ``weights_only=True``.

:func:`save_checkpoint` writes to a temporary file in the checkpoint's own
directory, flushes and fsyncs it, renames it over the target with
``os.replace`` and fsyncs the directory, so a crash (even SIGKILL) at any
moment leaves either the previous checkpoint or the new one, never a torn
file. A temporary file left behind by a killed writer is named
``.<name>.<random>.tmp``; it is never read and :func:`remove_stale_temps`
deletes it.

:func:`load_checkpoint` refuses anything but tensors, primitives, dicts,
lists and tuples (``torch.load(..., weights_only=True)``), so loading a
checkpoint can never execute code. Everything the training engine stores is
therefore of those types: RNG states as tensors, the resolved config as a
JSON string. :func:`rng_state` / :func:`set_rng_state` convert the states of
python ``random``, numpy, torch CPU and CUDA to and from that form.
"""

from __future__ import annotations

import os
import pickle
import random
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "check_state_dict",
    "load_checkpoint",
    "remove_stale_temps",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely; the message is one line."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: temp file, flush, fsync, ``os.replace``, fsync dir."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete temp files a killed :func:`save_checkpoint` left next to ``path``; return them."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; raise :class:`CheckpointError` (one line) if refused."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, AttributeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: a checkpoint must hold a dict, not {type(state).__name__}")
    return state


def check_state_dict(state: object, where: str | Path) -> dict[str, torch.Tensor]:
    """``state`` if it is a non-empty dict of name -> finite tensor; :class:`CheckpointError` naming the
    file and the first offending key otherwise (a string value, a nested dict, NaN or inf weights)."""
    if not isinstance(state, dict) or not state:
        what = "an empty dict" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise CheckpointError(f"{where}: not a state dict of tensors (it holds {what})")
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{where}: key {key!r} is not a parameter name")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: {key}: a {type(value).__name__}, not a tensor")
        problem = _tensor_problem(key, value)  # before anything reads the values: no allocation from a bomb
        if problem:
            raise CheckpointError(f"{where}: {key}: {problem}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{where}: {key}: holds NaN or infinite values")
    return state


# Integer tensors a model's state holds (BatchNorm's step counter); every other entry is floating point.
_INTEGER_BUFFERS = ("num_batches_tracked",)


def _tensor_problem(key: str, value: torch.Tensor) -> str | None:
    """What makes ``value`` no weight tensor, judged from its metadata alone (layout, device, dtype, strides)."""
    if value.layout != torch.strided:
        return f"a {str(value.layout).removeprefix('torch.')} tensor; weights are dense (strided) tensors"
    if value.device.type == "meta":
        return "a meta tensor (no data)"
    if value.is_complex() or value.dtype == torch.bool:
        return f"a {str(value.dtype).removeprefix('torch.')} tensor; weights are real floating point"
    if not value.is_floating_point() and not key.endswith(_INTEGER_BUFFERS):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor; weights are floating point"
    if any(stride == 0 and size > 1 for stride, size in zip(value.stride(), value.shape, strict=True)):
        return "a tensor that repeats one stored value along a dimension (stride 0), not saved weights"
    if value.numel() > value.untyped_storage().nbytes() // max(value.element_size(), 1):
        return "a tensor larger than the storage it was saved with"
    return None


# --- RNG states as tensors/primitives ---------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The states of python ``random``, numpy's global RNG, torch CPU and every CUDA device."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only if this process has the same devices)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
