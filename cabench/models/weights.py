"""Loading weights into a built model: a full checkpoint (``cabench eval``) or an ImageNet backbone (dense rows).

Both read a cabench checkpoint, a plain or DataParallel state dict, or the authors' released state dict
(whose CA layers are named ``conv2``/``conv3`` where cabench says ``conv_h``/``conv_w``), and refuse with
one line naming the first tensor that does not fit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["load_backbone", "load_weights", "sha256_of"]


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_state(path: Path) -> dict[str, Any]:
    """The state dict inside a cabench checkpoint or a plain / DataParallel / authors' state-dict file."""
    import torch

    from cabench.checkpoint import check_state_dict
    from cabench.models.mobilenetv2 import unwrap_state_dict

    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    _check_torch_file(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {_torch_reason(e)})") from None
    state = blob.get("model", blob) if isinstance(blob, dict) else blob
    if not isinstance(state, dict):
        raise ValueError(f"{path}: no state dict inside")
    try:
        state = unwrap_state_dict(state)
    except (AttributeError, TypeError):
        raise ValueError(f"{path}: not a state dict of tensors (a key is not a parameter name)") from None
    return check_state_dict(state, path)


# torch.save writes a zip archive; files from torch < 1.6 (and the authors' weights of 2021) are a pickle stream.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def _check_torch_file(path: Path) -> None:
    """One line for a file that torch.save did not write (an image, a text file, an empty file)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head.startswith(_TORCH_MAGIC):
        kind = "an empty file" if not head else f"a file starting with {head!r}"
        raise ValueError(f"{path}: not a PyTorch checkpoint ({kind}; torch.save writes a zip archive)")


def _torch_reason(error: Exception) -> str:
    """The line of torch's message that says what was refused, not its paragraph about weights_only."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    refused = [line for line in lines if "Unsupported" in line or "global" in line.lower()]
    return (refused or lines or [""])[0].split(". Please", 1)[0][:200]


def _misfit(path: Path, message: str) -> ValueError:
    """A checkpoint that does not fit, with the model it was trained as when its run's config.json says so."""
    try:
        model = json.loads((Path(path).parent / "config.json").read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        model = None
    if isinstance(model, dict) and model:
        spec = " ".join(f"{k}={v}" for k, v in model.items() if v is not None)
        message += f"; the checkpoint was trained as {spec} (its {Path(path).parent / 'config.json'})"
    return ValueError(message)


def _authors_name(key: str, own: dict[str, Any]) -> str:
    """The authors' CA names ``conv2``/``conv3`` are cabench's ``conv_h``/``conv_w``."""
    if key in own:
        return key
    renamed = key.replace(".conv2.", ".conv_h.").replace(".conv3.", ".conv_w.")
    return renamed if renamed in own else key


def load_weights(model: Any, path: Path) -> str:
    """Load a cabench checkpoint or a plain/authors' state dict into ``model``; return the file's sha256.

    Raises ``ValueError`` with one line naming the first key that does not fit.
    """
    state = _read_state(path)
    own = model.state_dict()
    renamed = {_authors_name(k, own): k for k in state}
    for key, tensor in own.items():
        source = renamed.get(key)
        if source is None:
            raise _misfit(path, f"{path}: missing key {key!r} for this model")
        if tuple(state[source].shape) != tuple(tensor.shape):
            raise _misfit(
                path,
                f"{path}: {source}: shape {tuple(state[source].shape)} does not fit the model's {tuple(tensor.shape)}",
            )
    extra = [source for key, source in renamed.items() if key not in own]
    if extra:
        raise _misfit(path, f"{path}: unexpected key {extra[0]!r} for this model")
    model.load_state_dict({key: state[source] for key, source in renamed.items()})
    return sha256_of(path)


# Classifier parameters that a dense model replaces with its own head.
_CLASSIFIER_PREFIXES = ("classifier.", "fc.", "head.")


def load_backbone(model: Any, path: Path, row: str | None = None) -> str:
    """Initialise a detector's or segmenter's backbone from a classification checkpoint; return its sha256.

    Every non-classifier tensor of the checkpoint (a cabench checkpoint or the authors' released
    state dict) must find the same name in the model, directly or under ``backbone.`` (the SSD's
    feature extractor), with the same shape; the classifier head is dropped. Raises ``ValueError``
    with one line naming the first tensor that does not fit (another architecture, width or
    attention block than the row's).
    """
    state = _read_state(path)
    own = model.state_dict()
    where = f"{path}" + (f" (row {row})" if row else "")
    loaded: dict[str, Any] = {}
    for key, tensor in state.items():
        if key.startswith(_CLASSIFIER_PREFIXES):
            continue
        target = next(
            (t for t in (_authors_name(key, own), _authors_name(f"backbone.{key}", own)) if t in own),
            None,
        )
        if target is None:
            raise _misfit(path, f"{where}: {key!r} has no counterpart in this model's backbone")
        if tuple(tensor.shape) != tuple(own[target].shape):
            raise _misfit(
                path,
                f"{where}: {key}: shape {tuple(tensor.shape)} does not fit the backbone's {tuple(own[target].shape)}",
            )
        loaded[target] = tensor
    if not loaded:
        raise ValueError(f"{where}: no backbone tensors inside")
    model.load_state_dict(loaded, strict=False)
    return sha256_of(path)
