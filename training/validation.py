"""Evaluation during training, shared out over the processes: the validation loss (plain NLL), BLEU/chrF of
beam-search translations of a fixed validation sample, and the test split's scores at the end (`--do_test`).

The only module of the trainer that translates (`translation.translate`, as every command) and scores
(`evaluation.score`)."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object

from .arguments import DataArguments, TrainArguments
from .batches import MicroBatches
from .distributed import root_gathered
from ..translation import DecodingOptions, TransformersEngine, translate
from .evaluation import score
from .step import batch_losses


@dataclass
class EvalSet:
    """What every evaluation uses: the tokenized validation split (loss) and a fixed sample of raw pairs (BLEU)."""

    tokenized: object
    sources: list[str]
    references: list[str]


def make_eval_set(raw_split, tokenized, data: DataArguments, seed: int) -> EvalSet:
    """BLEU on `--eval_samples` validation pairs chosen once with a private RNG (the global ones stay untouched)."""
    indices = list(range(len(raw_split)))
    if data.eval_samples and data.eval_samples < len(indices):
        indices = sorted(random.Random(seed).sample(indices, data.eval_samples))
    rows = raw_split.select(indices)["translation"]
    return EvalSet(tokenized, [r[data.source_lang] for r in rows], [r[data.target_lang] for r in rows])


def shard(items: list, accelerator: Accelerator) -> list:
    """This process's share (every N-th item), padded with its last item to the common length, so that every
    process runs as many forward passes (FSDP needs it)."""
    mine = items[accelerator.process_index::accelerator.num_processes]
    common = math.ceil(len(items) / accelerator.num_processes)
    return mine + [mine[-1] if mine else items[0]] * (common - len(mine)) if items else []


@torch.no_grad()
def validation_loss(accelerator: Accelerator, model, tokenized, collator, max_tokens: int) -> float:
    """Per-token NLL (no label smoothing) over the whole tokenized validation split, summed over processes."""
    from .data import TokenBatchSampler

    sampler = TokenBatchSampler(tokenized["src_length"], tokenized["tgt_length"], max_tokens, shuffle=False)
    batches = list(sampler)
    mine = batches[accelerator.process_index::accelerator.num_processes]
    padded = shard(batches, accelerator)  # same count on every process; the padding copies are not counted
    reader = MicroBatches(tokenized, sampler, collator)
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    model.eval()
    for number, indices in enumerate(padded):
        batch = {k: v.to(accelerator.device) for k, v in reader.collate(indices).items()}
        _, nll_sum, tokens = batch_losses(model, batch, 0.0)
        if number < len(mine):
            totals += torch.tensor([nll_sum.item(), int(tokens)], dtype=torch.float64, device=accelerator.device)
    model.train()
    totals = accelerator.reduce(totals, "sum")
    if totals[1] == 0:  # refused before training (`check_kept_pairs`); never report NaN as a result
        raise ValueError("the validation split has no target token to score")
    return (totals[0] / totals[1]).item()


def distributed_translate(accelerator: Accelerator, model, tokenizer, sources: list[str], args: TrainArguments,
                          progress: bool = False) -> list[str]:
    """Translations of `sources` (in order), each process translating a share; every process gets them all."""
    numbered = list(enumerate(sources))
    mine = shard(numbered, accelerator)
    engine = TransformersEngine(model, tokenizer, synced_gpus=accelerator.distributed_type == DistributedType.FSDP,
                                device=accelerator.device)
    options = DecodingOptions(num_beams=args.num_beams, length_penalty=args.length_penalty)
    with root_gathered(accelerator, model):
        hypotheses = translate(engine, [s for _, s in mine], options, args.eval_batch_size,
                               progress=progress and accelerator.is_local_main_process)
    gathered = gather_object([(i, h) for (i, _), h in zip(mine, hypotheses)])
    by_index = dict(gathered)
    return [by_index[i] for i in range(len(sources))]


def evaluation_model(accelerator: Accelerator, model):
    """FSDP must run the wrapped model on every process; otherwise the plain model (no DDP collectives)."""
    return model if accelerator.distributed_type == DistributedType.FSDP else accelerator.unwrap_model(model)


def evaluate(accelerator, model, tokenizer, eval_set: EvalSet, collator, data: DataArguments,
             args: TrainArguments) -> dict:
    """Validation loss (plain NLL) and BLEU/chrF on the fixed validation sample."""
    start = time.perf_counter()
    plain = evaluation_model(accelerator, model)
    loss = validation_loss(accelerator, plain, eval_set.tokenized, collator, data.max_tokens)
    hypotheses = distributed_translate(accelerator, plain, tokenizer, eval_set.sources, args)
    scores = score(hypotheses, eval_set.references, where="validation", warn=accelerator.is_main_process)
    return {"validation_loss": loss, "validation_ppl": math.exp(min(loss, 50.0)), "bleu": scores["bleu"],
            "chrf": scores["chrf"], "length_ratio": scores["length_ratio"], "eval_seconds": time.perf_counter() - start,
            "examples": hypotheses[:3], "hypotheses": hypotheses}


def score_test_split(accelerator: Accelerator, model, tokenizer, rows: list[dict], data: DataArguments,
                args: TrainArguments) -> dict:
    """BLEU/chrF (and length ratio) of the final model on the test split's `rows`, with the hypotheses."""
    sources = [r[data.source_lang] for r in rows]
    references = [r[data.target_lang] for r in rows]
    plain = evaluation_model(accelerator, model)
    hypotheses = distributed_translate(accelerator, plain, tokenizer, sources, args, progress=True)
    scores = score(hypotheses, references, where="test", warn=accelerator.is_main_process)
    return {**scores, "split": "test", "hypotheses": hypotheses}
