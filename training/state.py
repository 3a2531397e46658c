"""The counters and data position a checkpoint carries besides Accelerate's state (`trainer_state.json`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainerState:
    """Counters and the data position: micro-batches of this rank consumed in `epoch` (the same on every rank)."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    source_tokens: int = 0
    target_tokens: int = 0
    train_seconds: float = 0.0
    skipped_steps: int = 0
    best_bleu: float | None = None
    best_step: int | None = None
    evaluations: list[dict] = field(default_factory=list)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainerState":
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})
