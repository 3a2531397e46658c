"""One update of the loop (§5.3, §5.4): the forward pass and the model's label-smoothed loss on every micro-batch,
normalised by the target tokens of the global batch, then the optimizer step, skipped when not finite; and `Meter`,
the sums between two log lines."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch
from accelerate import Accelerator

from ..modeling.modeling_vanilla_transformer import label_smoothed_loss_sums
from .batches import MicroBatches


def batch_losses(model, batch: dict, label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model's `label_smoothed_loss_sums` of one collated batch (teacher forcing, no decoding cache): (loss,
    plain NLL, target tokens), both losses summed over the non-padding target tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   decoder_input_ids=batch["decoder_input_ids"], use_cache=False).logits
    return label_smoothed_loss_sums(logits, batch["labels"], label_smoothing)


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class StepResult:
    applied: bool
    loss_sum: float
    nll_sum: float
    target_tokens: int
    source_tokens: int
    grad_norm: float
    padding: float


def train_step(accelerator: Accelerator, model, optimizer, scheduler, batches: MicroBatches, train_args,
               label_smoothing: float, padding_of) -> StepResult:
    """One update on `gradient_accumulation_steps` micro-batches per process (§5.3, §5.4).

    The loss is normalised by the target-token count of the *global* batch, counted before any backward pass;
    Accelerate's DDP averages gradients over N processes, hence the factor N. `train_args` are resolved
    (`validate`, or `schedule.resolved` for a caller that builds its own).
    """
    micro = [next(batches) for _ in range(train_args.gradient_accumulation_steps)]
    local = torch.tensor([sum(int((b["labels"] != -100).sum()) for b, _ in micro),
                          sum(int(b["attention_mask"].sum()) for b, _ in micro)], device=accelerator.device)
    target_tokens, source_tokens = (int(x) for x in accelerator.reduce(local, "sum"))
    scale = accelerator.num_processes / max(target_tokens, 1)
    loss_total = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    nll_total = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    for number, (batch, _) in enumerate(micro):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        last = number == len(micro) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            loss_sum, nll_sum, _ = batch_losses(model, batch, label_smoothing)
            accelerator.backward(loss_sum * scale)
        loss_total += loss_sum.detach().double()
        nll_total += nll_sum.detach().double()
    loss_sum, nll_sum = (float(x) for x in accelerator.reduce(torch.stack([loss_total, nll_total]), "sum"))
    max_norm = train_args.clip_norm if train_args.clip_norm > 0 else float("inf")  # 0: no clipping
    grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), max_norm))
    padding = padding_of([indices for _, indices in micro])
    scaler_handles_overflow = accelerator.mixed_precision == "fp16"
    finite = math.isfinite(loss_sum) and (math.isfinite(grad_norm) or scaler_handles_overflow)
    applied = False
    if finite:
        optimizer.step()
        applied = not accelerator.optimizer_step_was_skipped
        if applied:
            scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(applied, loss_sum, nll_sum, target_tokens, source_tokens, grad_norm, padding)


class Meter:
    """Sums between two log lines: losses, tokens, time."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.loss = self.nll = self.tokens = self.steps = self.grad = self.padding = 0.0
        self.start = time.perf_counter()

    def add(self, result: StepResult):
        self.loss += result.loss_sum
        self.nll += result.nll_sum
        self.tokens += result.target_tokens
        self.steps += 1
        self.grad += result.grad_norm
        self.padding += result.padding

    def values(self, lr: float) -> dict:
        seconds = max(time.perf_counter() - self.start, 1e-9)
        tokens = max(self.tokens, 1)
        return {"train/loss": self.loss / tokens, "train/nll": self.nll / tokens,
                "train/ppl": math.exp(min(self.nll / tokens, 50.0)), "train/lr": lr,
                "train/tokens_per_second": self.tokens / seconds, "train/grad_norm": self.grad / max(self.steps, 1),
                "train/padding_fraction": self.padding / max(self.steps, 1)}
