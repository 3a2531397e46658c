"""The optimizer and learning-rate schedules: Adam(β1 0.9, β2 0.98, ε 1e-9) of §5.3 and one of

* `noam` (§5.3, the default from scratch): lrate = lr_scale · d_model^-0.5 · min(step^-0.5, step · warmup^-1.5);
  with `--learning_rate` the same curve scaled so that its peak (at step = warmup) is that rate;
* `inverse_sqrt` (fairseq's; the default after `--init_from`): a linear warmup to `--learning_rate`, then
  `--learning_rate` · sqrt(warmup / step);
* `constant` (Marian's fine-tuning habit): a linear warmup, then `--learning_rate` for good;
* `linear` (transformers' `run_translation.py`): a linear warmup, then a linear decay to 0 at `--max_steps`.

Without `--learning_rate` (from scratch) the peak of the other schedules is noam's:
lr_scale · (d_model · warmup)^-0.5.
Steps are counted from 1; warmup 0 means the full rate from the first update.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .arguments import TrainArguments
from .init_from import resolve_schedule

SCHEDULES = ("noam", "inverse_sqrt", "constant", "linear")


def noam_lr(step: int, d_model: int, warmup_steps: int, scale: float = 1.0) -> float:
    """§5.3: lrate = scale · d_model^-0.5 · min(step^-0.5, step · warmup_steps^-1.5), step counted from 1."""
    step = max(step, 1)
    return scale * d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -1.5)


def resolved(args: TrainArguments) -> TrainArguments:
    """`args` with the schedule and optimizer filled in: as they are after `validate`; a copy resolved like a run
    without a preset (§5.3's) for arguments that skipped it (the library path)."""
    fields = ("lr_schedule", "warmup_steps", "lr_scale", "adam_beta2", "adam_epsilon", "clip_norm")
    if all(getattr(args, name) is not None for name in fields):
        return args
    copy = dataclasses.replace(args)
    resolve_schedule(None, copy)
    return copy


def peak_lr(d_model: int, args: TrainArguments, warmup: int) -> float:
    """`--learning_rate`, else the peak of the §5.3 curve for this model and warmup."""
    if args.learning_rate is not None:
        return args.learning_rate
    return args.lr_scale * d_model ** -0.5 * max(warmup, 1) ** -0.5


def learning_rate(step: int, d_model: int, args: TrainArguments) -> float:
    """The rate of update `step` (1-based) under `--lr_schedule`."""
    args = resolved(args)
    warmup, step, schedule = args.warmup_steps, max(step, 1), args.lr_schedule
    if schedule == "noam":
        if args.learning_rate is None:
            return noam_lr(step, d_model, warmup, args.lr_scale)
        return args.learning_rate * min(step ** -0.5, step * warmup ** -1.5) * warmup ** 0.5
    peak = peak_lr(d_model, args, warmup)
    if step < warmup:
        return peak * step / warmup
    if schedule == "inverse_sqrt":
        return peak * math.sqrt(max(warmup, 1) / step)
    if schedule == "constant":
        return peak
    if schedule == "linear":
        return peak * max(0.0, (args.max_steps - step) / max(args.max_steps - warmup, 1))
    raise ValueError(f"--lr_schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def build_optimizer(model, d_model: int, args: TrainArguments):
    """Adam(β1, β2, ε) (§5.3's, unless the arguments or the preset's recipe say otherwise) and a LambdaLR giving
    update n (1-based) the rate `learning_rate(n)`."""
    args = resolved(args)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(args.adam_beta1, args.adam_beta2),
                                 eps=args.adam_epsilon, fused=args.adam_fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda index: learning_rate(index + 1, d_model, args))
    return optimizer, scheduler
