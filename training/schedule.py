"""The optimizer and learning-rate schedule of §5.3: Adam(β1 0.9, β2 0.98, ε 1e-9) and the warmup / inverse square
root rate."""

from __future__ import annotations

import torch

from .arguments import TrainArguments


def noam_lr(step: int, d_model: int, warmup_steps: int, scale: float = 1.0) -> float:
    """§5.3: lrate = scale · d_model^-0.5 · min(step^-0.5, step · warmup_steps^-1.5), step counted from 1."""
    step = max(step, 1)
    return scale * d_model ** -0.5 * min(step ** -0.5, step * warmup_steps ** -1.5)


def build_optimizer(model, d_model: int, args: TrainArguments):
    """Adam(β1, β2, ε) of §5.3 and a LambdaLR giving update n (1-based) the rate `noam_lr(n)`."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(args.adam_beta1, args.adam_beta2),
                                 eps=args.adam_epsilon, fused=args.adam_fused or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda index: noam_lr(index + 1, d_model, args.warmup_steps, args.lr_scale))
    return optimizer, scheduler
