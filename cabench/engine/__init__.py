"""The training engine shared by every task: resumable, DDP-aware, deterministic on CPU.

:func:`train` takes any ``nn.Module``, two map-style datasets and a :class:`Task`
(what a batch is, what the loss is, how to evaluate), and follows a recipe
(:class:`TrainSettings`). Classification, detection and segmentation are tasks
(:mod:`cabench.tasks.classification`, :mod:`~cabench.tasks.detection`,
:mod:`~cabench.tasks.segmentation`); the loop, the schedule, checkpoints,
resume, DDP, AMP and logging are written once, here: ``settings`` (what a run
follows), ``schedule`` (the learning rate), ``sampling`` (data order and
per-sample seeding), ``runtime`` (what surrounds a step), ``loop`` (the loop
itself, in short steps), ``distributed`` (process groups and torchrun).

Batch and learning rate. ``batch_size`` is the global batch. Each of the
``world_size`` processes takes ``batch_size // world_size`` images (an error
if it does not divide), DDP averages the gradients, and the learning rate is
the recipe's, so N processes make the same updates as one process with the
whole batch (up to float summation order; BatchNorm statistics are per
process unless ``sync_bn``, which needs CUDA).

Data order. Epoch ``e`` visits the permutation ``randperm(n, seed + e)``;
step ``k`` of the epoch is its slice ``[k*B, (k+1)*B)``, which rank ``r``
reads as every ``world_size``-th element from ``r`` (the split
``DistributedSampler`` makes, without padding; the tail shorter than a
global batch is dropped). Each sample's augmentation RNG (torch, numpy,
python ``random``) is seeded from ``(seed, epoch, index)``, so what a sample
looks like does not depend on the worker that loads it, on how many workers
there are, or on where a run was resumed.

Length. ``iterations`` global steps when a recipe counts iterations (the
detection and segmentation recipes), else ``epochs`` passes over the data.

Learning rate. A ``torch.optim.lr_scheduler.LambdaLR`` (stepped after each
optimizer step, its state in the checkpoint) multiplies the recipe's ``lr``
by a factor of the global step (:func:`~cabench.engine.schedule.lr_factor`): linear warmup
over ``warmup_epochs`` or ``warmup_iterations`` (from ``lr/warmup_steps`` to
``lr``), then cosine to 0 over the remaining steps, ``lr * step_gamma **
floor(step / (step_epochs * steps_per_epoch))`` (``step``, TF staircase
exponential decay, on the global step), ``lr * step_gamma ** k`` after the
k-th of ``milestones`` (``multistep``, global step numbers) or ``lr * (1 - t)
** poly_power``. ``max_steps`` truncates a run without reshaping the schedule.

Checkpoints (``run_dir/checkpoint.pt``, see :mod:`cabench.checkpoint`):
written atomically at each epoch end, every ``ckpt_every_steps`` steps, when
``max_steps`` stops a run, and on Ctrl-C. If the file exists when
:func:`train` starts, the run resumes from it: model, optimizer,
lr scheduler, grad scaler, EMA (``torch.optim.swa_utils.AveragedModel``, see
:mod:`cabench.engine.ema`), counters, every rank's RNG states and the loss accumulator
are restored and the sampler skips the ``step_in_epoch`` global batches of
the current epoch already trained on (their indices are never loaded), so an
interrupted-and-resumed run is bitwise identical to an uninterrupted one
(tested with SIGKILL on CPU).

Ctrl-C. A training step (forward, backward, update) runs with SIGINT
deferred, so an interrupt always lands between steps; the state is then
saved and :class:`TrainingInterrupted` raised. SIGKILL loses at most the steps
since the last checkpoint.

Logging. Rank 0 appends one JSON line per ``log_every`` steps to
``run_dir/log.jsonl`` (step, epoch, loss averaged over ranks, lr, img/s,
time), flushed at once, and calls ``progress(event)`` with the same numbers
and an ETA. On resume, lines past the checkpoint's step are dropped first.

Per-image outcomes. The final evaluation's per-image outcomes (the task's
evaluator returns them under :data:`cabench.outcomes.KEY`) are written to
``run_dir/per_image.npz`` by rank 0; they never enter the logged metrics.
"""

from cabench.engine.loop import CHECKPOINT_NAME, LOG_NAME, check_held, check_runnable, train
from cabench.engine.runtime import autocast, eval_mode, gather_objects, interleave_ranks, unwrap
from cabench.engine.sampling import eval_loader
from cabench.engine.schedule import lr_at, total_steps_of
from cabench.engine.settings import EvalSetup, LeaseLost, TrainingDiverged, TrainingInterrupted, TrainSettings
from cabench.engine.task import ProgressFn, Task

__all__ = [
    "CHECKPOINT_NAME",
    "LOG_NAME",
    "EvalSetup",
    "LeaseLost",
    "ProgressFn",
    "Task",
    "TrainSettings",
    "TrainingDiverged",
    "TrainingInterrupted",
    "autocast",
    "check_held",
    "check_runnable",
    "eval_loader",
    "eval_mode",
    "gather_objects",
    "interleave_ranks",
    "lr_at",
    "total_steps_of",
    "train",
    "unwrap",
]
