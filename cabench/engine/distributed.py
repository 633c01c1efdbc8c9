"""Process-group plumbing for torchrun/DDP, and re-launching a command under torchrun.

``torchrun`` (``python -m torch.distributed.run``) starts one process per GPU
and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR/PORT``);
:func:`init_distributed` reads them and joins the group: NCCL on CUDA, gloo on
CPU. Without those variables it is a single process and initializes nothing,
so every helper here is a no-op outside torchrun.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from cabench.registry import PLUGINS_ENV, plugin_modules

__all__ = [
    "all_reduce_sum",
    "broadcast_path",
    "cleanup",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main",
    "launch_torchrun",
    "torchrun_command",
    "under_torchrun",
]

UNDER_TORCHRUN_ENV = "CABENCH_UNDER_TORCHRUN"


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the process that writes files."""
    return get_rank() == 0


def init_distributed(backend: str | None = None) -> tuple[int, int, int, torch.device]:
    """Join the process group torchrun describes; return ``(rank, world_size, local_rank, device)``.

    Idempotent. Backend: ``nccl`` when CUDA is available, else ``gloo`` (``backend`` overrides).
    The device is ``cuda:<local_rank>`` (made current) or ``cpu``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        device = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if cuda else "gloo")
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size, **kwargs)
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return rank, world_size, local_rank, device


def cleanup() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op in a single process); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` (picklable) on every rank (identity in a single process)."""
    if is_distributed():
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def broadcast_path(path: Path | None) -> Path:
    """Rank 0's ``path`` on every rank (identity in a single process)."""
    if is_distributed():
        box = [str(path) if path is not None else None]
        dist.broadcast_object_list(box, src=0)
        path = Path(box[0]) if box[0] is not None else None
    if path is None:
        raise RuntimeError("rank 0 chose no run directory")
    return path


def under_torchrun() -> bool:
    """True inside a process torchrun started (so ``--nproc`` must not launch again)."""
    return bool(os.environ.get(UNDER_TORCHRUN_ENV)) or "TORCHELASTIC_RUN_ID" in os.environ


def _strip_nproc(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        out.append(arg)
    return out


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The command line running ``cabench <argv>`` under ``torch.distributed.run`` with ``nproc`` processes.

    ``argv`` is the cabench arguments without the program name; ``--nproc N`` is removed from it.
    The workers run the CLI through the current interpreter (no dependency on a ``cabench`` script on PATH).
    """
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, not {nproc}")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "--no-python",
        sys.executable,
        "-c",
        "import sys; from cabench.cli import main; sys.exit(main())",
        *_strip_nproc(argv),
    ]


def launch_torchrun(nproc: int, argv: Sequence[str]) -> int:
    """Re-execute ``cabench <argv>`` under torchrun with ``nproc`` processes; return its exit code.

    The workers get this process's plugins through ``CABENCH_PLUGINS`` (those loaded with --plugin and the
    modules of every registered extension outside cabench), so a block registered by a wrapper is known there.
    """
    env = {**os.environ, UNDER_TORCHRUN_ENV: "1"}
    if plugin_modules():
        env[PLUGINS_ENV] = ",".join(plugin_modules())
    try:
        return subprocess.call(torchrun_command(nproc, argv), env=env)
    except KeyboardInterrupt:  # torchrun forwards the signal to its workers and exits on its own
        return 130
