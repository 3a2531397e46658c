"""Checkpoint averaging at the end of training (§6.1: "we used a single model obtained by averaging the last 5
checkpoints"), kept only when it helps.

Every `--average_every` updates the trainer takes a snapshot of the weights (a float copy in CPU memory) and keeps
the last `--average_last`; at the end the final weights join them, their mean is validated like any evaluation, and
it replaces the final weights only if its validation BLEU is higher. The paper's checkpoints were 10 minutes apart;
ours default to `--eval_steps / --average_last` updates apart, spanning the last evaluation interval, without
evaluating or writing checkpoints for each (a validation costs far more than a snapshot).

The snapshots travel in every checkpoint (`averaging.safetensors`, N times the weights), so a resumed run averages
the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .arguments import TrainArguments
from .checkpoints import RunningMean
from .model_setup import canonical_state_dict

SNAPSHOTS_FILE = "averaging.safetensors"


def snapshot_interval(args: TrainArguments) -> int:
    """Updates between two snapshots: `--average_every`, or the last evaluation interval split in `--average_last`."""
    return args.average_every or max(1, args.eval_steps // max(args.average_last, 1))


class WeightSnapshots:
    """The last `last` snapshots of a model's weights, by step (oldest first), under their plain names (tied copies
    once, see `canonical_state_dict`)."""

    def __init__(self, last: int, every: int):
        self.last, self.every = last, every
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}

    @property
    def enabled(self) -> bool:
        return self.last > 1

    @property
    def steps(self) -> list[int]:
        return list(self.snapshots)

    def due(self, step: int) -> bool:
        return self.enabled and step % self.every == 0

    def take(self, model, step: int) -> None:
        """A copy of `model`'s weights (the unwrapped model) at `step`; the oldest beyond `last` is dropped."""
        tied = set(getattr(model, "_tied_weights_keys", None) or {})
        weights = canonical_state_dict(model.state_dict(), tied)
        self.snapshots[step] = {name: tensor.detach().to("cpu", copy=True) for name, tensor in weights.items()}
        while len(self.snapshots) > self.last:
            del self.snapshots[next(iter(self.snapshots))]

    def mean(self) -> dict[str, torch.Tensor]:
        mean = RunningMean()
        for step, weights in self.snapshots.items():
            mean.add(weights, f"the snapshot of step {step}")
        return mean.mean()

    # -- in checkpoints -----------------------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """Into a checkpoint folder (nothing when averaging is off or no snapshot was taken yet)."""
        if not (self.enabled and self.snapshots):
            return
        tensors = {f"{step}/{name}": tensor for step, weights in self.snapshots.items()
                   for name, tensor in weights.items()}
        save_file(tensors, str(Path(folder) / SNAPSHOTS_FILE), metadata={"steps": json.dumps(self.steps)})

    def load(self, folder: Path) -> None:
        """The snapshots a checkpoint carries (none in a checkpoint written without averaging), the last `last`."""
        path = Path(folder) / SNAPSHOTS_FILE
        self.snapshots = {}
        if not (self.enabled and path.is_file()):
            return
        with safe_open(str(path), framework="pt") as file:
            steps = json.loads(file.metadata()["steps"])
            names = {}
            for key in file.keys():
                step, name = key.split("/", 1)
                names.setdefault(int(step), []).append(name)
            for step in steps[-self.last:]:
                self.snapshots[step] = {name: file.get_tensor(f"{step}/{name}") for name in names[step]}

