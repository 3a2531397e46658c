"""Train the Transformer with the paper's recipe (§5), through Accelerate.

    vanilla-transformer train --dataset bible --preset tiny --output_dir runs/tiny
    accelerate launch -m vanilla_transformer.training.train --dataset wmt14 --source_lang de --target_lang en ...

The same program runs on one CPU process, N GPUs (DDP), several nodes, or FSDP2, as chosen with `accelerate config`
(FSDP2 also on CPU processes, see `keep_fsdp_on_cpu`).

* Data (§5.1): one shared BPE vocabulary (trained on the training text unless `--tokenizer` is given); batches of
  similar-length pairs holding about `--max_tokens` tokens per process (`TokenBatchSampler`). Each process reads its
  own share of the batches (batch i goes to rank i mod N), so one update sees the union of N batches.
* Loss (§5.4): label-smoothed cross-entropy (ε = the config's `label_smoothing`, 0.1), summed over the target
  tokens of the whole global batch (all processes, all accumulated micro-batches) and divided by their number. The
  update is therefore the same however the global batch is split over processes and micro-batches.
* Optimizer (§5.3): Adam(β1 0.9, β2 0.98, ε 1e-9); lrate = lr_scale · d_model^-0.5 · min(step^-0.5,
  step · warmup^-1.5) with warmup 4000. Optional gradient-norm clipping. An update whose loss (or gradient norm) is
  not finite is skipped with a warning; five in a row abort the run.
* Evaluation every `--eval_steps`: validation loss = per-token negative log-likelihood *without* label smoothing
  (nats; perplexity = exp), and BLEU (sacrebleu) of beam-search translations (§6.1: beam 4, α 0.6, source length
  + 50) of a fixed subset of the validation set. The best BLEU so far is written to `<output_dir>/best/`.
* Checkpoints every `--save_steps` (see `checkpoints.py`), the last `--keep_last` kept; `--resume` continues the
  latest complete one bit for bit: same weights, optimizer and schedule, RNG streams, and data position (a newer
  checkpoint missing a state file is passed over with a warning naming the file).
* Data that the length limit would gut is refused before training: more than half of the training pairs, or every
  validation pair, longer than `--max_length` (a run would otherwise learn from scraps or report NaN).
* The end: `<output_dir>/final/` (see `export.py`) with `run_summary.json`.
* Seeing it run: TensorBoard under `<output_dir>/runs` (loss, lr, tokens/s, grad norm, padding, BLEU), a progress
  bar and log lines on the main process.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import secrets
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, ProjectConfiguration, gather_object, set_seed
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..base.errors import UsageError
from ..base.files import write_text
from ..base.locks import OutputFolderBusy, OutputLock
from .arguments import (DataArguments, ModelArguments, TrainArguments, arguments_dict, build_model_config,
                        model_overrides, parse_duration, validate, DEFAULT_VOCAB_SIZE)
from .checkpoints import (WEIGHTS_FILE, list_checkpoints, read_state, remove_checkpoint, remove_temporaries,
                          resumable_checkpoint, rotate_checkpoints, save_checkpoint)
from .evaluation import score, translate
from .run_record import differences, run_record
from .export import hardware, library_versions, paper_generation_config, save_model_folder
from ..base.outputs import is_owned_model_file, is_owned_tokenizer_file, remove_owned

logger = logging.getLogger(__name__)

MAX_BAD_STEPS_IN_A_ROW = 5
# best/ keeps the translations its BLEU was computed from (the --eval_samples validation sentences, in file order).
VALIDATION_HYPOTHESES = "validation_hypotheses.txt"
SUMMARY_NOTE = ("validation_loss is the per-token negative log-likelihood without label smoothing (nats); BLEU and "
                "chrF are sacrebleu corpus scores of detokenized beam-search output (beam 4, length penalty 0.6, "
                "at most source length + 50 tokens)")


# ---------------------------------------------------------------------------------------------------------------------
# State that a checkpoint carries besides Accelerate's (trainer_state.json)
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# Learning rate (§5.3)
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------


def prepare_data(accelerator: Accelerator, data: DataArguments, output_dir: Path):
    """The tokenizer and the tokenized data (`prepare.prepare_in_cache`), prepared once and memory-mapped by every
    process: the main process reads, trains the tokenizer and tokenizes (or finds it all in the cache) while the
    others wait; then each node's first process looks for the result (a `--data_cache_dir` on a node's own disk is
    filled there), then every other process memory-maps it."""
    from .prepare import prepare_in_cache as prepare

    start = time.perf_counter()
    progress = accelerator.is_local_main_process
    prepared = prepare(data, output_dir, progress) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    if prepared is None and accelerator.is_local_main_process:
        prepared = prepare(data, output_dir, progress, main=False)
    accelerator.wait_for_everyone()
    if prepared is None:
        prepared = prepare(data, output_dir, main=False)
    logger.info("rank %d: data ready in %.1f s; %s", accelerator.process_index, time.perf_counter() - start,
                memory_note())
    return prepared


def memory_mb() -> dict[str, float]:
    """This process's memory from /proc/self/status, in MB: ``peak`` resident (VmHWM: unlike getrusage's ru_maxrss,
    not inherited from the parent across fork and exec), and now ``anonymous`` (its own) and ``file`` (pages of
    files it maps, such as the memory-mapped data cache: shared and reclaimable). Empty where /proc is missing."""
    names = {"VmHWM:": "peak", "RssAnon:": "anonymous", "RssFile:": "file"}
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    return {names[line.split()[0]]: int(line.split()[1]) / 1024 for line in lines if line.split()[:1] and
            line.split()[0] in names}


def memory_note() -> str:
    memory = memory_mb()
    if not memory:
        return "memory unknown"
    return (f"peak RSS {memory.get('peak', 0):.0f} MB (now {memory.get('anonymous', 0):.0f} MB anonymous + "
            f"{memory.get('file', 0):.0f} MB of mapped files)")


class MicroBatches:
    """Endless micro-batches of this process, epoch after epoch, knowing where it is (`epoch`, `position`)."""

    def __init__(self, dataset, sampler, collator, epoch: int = 0, position: int = 0):
        self.rows = dataset.select_columns(["input_ids", "labels"])
        self.sampler, self.collator = sampler, collator
        self.epoch, self.position = epoch, position
        self._iterator = None

    def __iter__(self):
        return self

    def __next__(self) -> tuple[dict, list[int]]:
        for _ in range(2):
            if self._iterator is None:
                self.sampler.set_epoch(self.epoch, start_index=self.position)
                self._iterator = iter(self.sampler)
            indices = next(self._iterator, None)
            if indices is not None:
                self.position += 1
                return self.collate(indices), indices
            self.epoch, self.position, self._iterator = self.epoch + 1, 0, None
        raise RuntimeError("the training data gives no batches")

    def collate(self, indices: list[int]) -> dict:
        columns = self.rows[indices]
        features = [{"input_ids": s, "labels": t} for s, t in zip(columns["input_ids"], columns["labels"])]
        return self.collator(features)


# ---------------------------------------------------------------------------------------------------------------------
# Model, loss, checkpoint hooks
# ---------------------------------------------------------------------------------------------------------------------


def build_model(model_args: ModelArguments, tokenizer):
    """The preset with the user's overrides, sized to the tokenizer, ids from the tokenizer."""
    from ..modeling import VanillaTransformerForConditionalGeneration

    special = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id)
    config = build_model_config(model_args, vocab_size=len(tokenizer), special_ids=special)
    return VanillaTransformerForConditionalGeneration(config)


def token_losses(model, batch: dict, label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(label-smoothed loss, plain NLL, target tokens), both losses summed over the non-padding target tokens.

    Smoothing as in §5.4 and `torch.nn.functional.cross_entropy`: (1 - ε) · NLL + ε · mean over the vocabulary of
    -log p. Computed in float32 whatever the autocast precision.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   decoder_input_ids=batch["decoder_input_ids"], use_cache=False).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    labels = batch["labels"]
    mask = labels != -100
    nll = -log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    nll_sum = (nll * mask).sum()
    if label_smoothing:
        smooth = -log_probs.mean(dim=-1)
        loss_sum = ((1.0 - label_smoothing) * nll + label_smoothing * smooth).mul(mask).sum()
    else:
        loss_sum = nll_sum
    return loss_sum, nll_sum.detach(), int(mask.sum())


def canonical_state_dict(state_dict: dict, tied_keys) -> dict:
    """Model weights under their plain names (no DDP `module.` / torch.compile `_orig_mod.` prefix), each shared
    matrix once (the tied copies are restored on load)."""
    clean = {}
    for key, tensor in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        if key not in tied_keys:
            clean[key] = tensor
    return clean


def register_checkpoint_hooks(accelerator: Accelerator) -> None:
    """Checkpoints keep the model under its plain names (a checkpoint folder loads with `from_pretrained` and
    `vanilla-transformer average`), and load into the unwrapped model. FSDP and DeepSpeed keep their own formats
    (for FSDP the trainer adds the gathered weights, see `Trainer.save`)."""
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return

    def save_hook(models, weights, output_dir):
        for index, model in enumerate(models):
            tied = set(getattr(accelerator.unwrap_model(model), "_tied_weights_keys", None) or {})
            weights[index] = canonical_state_dict(weights[index], tied)

    def load_hook(models, input_dir):
        for index, model in enumerate(models):
            name = WEIGHTS_FILE if index == 0 else WEIGHTS_FILE.replace(".", f"_{index}.")
            load_weights(accelerator.unwrap_model(model), Path(input_dir) / name)
        models.clear()  # loaded here; Accelerate skips them

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def load_weights(model, path: Path) -> None:
    """Load a canonical state dict in place; only tied copies may be absent."""
    from ..modeling.modeling_vanilla_transformer import split_fused_projections  # checkpoints of earlier versions

    state = split_fused_projections(load_file(str(path), device=str(next(model.parameters()).device)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"{path} does not fit the model: missing {sorted(set(missing) - tied)}, unexpected "
                           f"{sorted(unexpected)}")


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------------


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
        _, nll_sum, tokens = token_losses(model, batch, 0.0)
        if number < len(mine):
            totals += torch.tensor([nll_sum.item(), tokens], dtype=torch.float64, device=accelerator.device)
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
    synced = accelerator.distributed_type == DistributedType.FSDP
    with root_gathered(accelerator, model):
        hypotheses = translate(model, tokenizer, [s for _, s in mine], args.eval_batch_size, args.num_beams,
                               args.length_penalty, device=accelerator.device, synced_gpus=synced,
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


# ---------------------------------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------------------------------


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
    Accelerate's DDP averages gradients over N processes, hence the factor N.
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
            loss_sum, nll_sum, _ = token_losses(model, batch, label_smoothing)
            accelerator.backward(loss_sum * scale)
        loss_total += loss_sum.detach().double()
        nll_total += nll_sum.double()
    loss_sum, nll_sum = (float(x) for x in accelerator.reduce(torch.stack([loss_total, nll_total]), "sum"))
    max_norm = train_args.clip_norm if train_args.clip_norm > 0 else float("inf")
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


def make_accelerator(train_args: TrainArguments) -> Accelerator:
    """Accelerate decides processes, devices and precision (`accelerate config` / `accelerate launch`);
    `--mixed_precision` overrides. The scheduler steps once per update (not once per process)."""
    output_dir = Path(train_args.output_dir)
    project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "runs"),
                                   automatic_checkpoint_naming=False)
    kwargs = {"mixed_precision": train_args.mixed_precision} if train_args.mixed_precision else {}
    log_with = None if train_args.report_to == "none" else train_args.report_to
    accelerator = Accelerator(project_config=project, log_with=log_with, step_scheduler_with_optimizer=False,
                              cpu=cpu_only_multiprocess(), **kwargs)
    refuse_fp16_on_cpu(accelerator)
    keep_fsdp_on_cpu(accelerator)
    return accelerator


def cpu_only_multiprocess() -> bool:
    """Several processes (torchrun) on a machine without GPUs: Accelerate then needs `cpu=True` to use gloo
    (`accelerate launch --cpu` says so itself)."""
    from accelerate.utils import is_npu_available, is_xpu_available

    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return several and not (torch.cuda.is_available() or is_xpu_available() or is_npu_available())


# ---------------------------------------------------------------------------------------------------------------------
# Distribution: FSDP2 and precision on CPU processes, one output directory for all processes
# ---------------------------------------------------------------------------------------------------------------------


def fsdp_requested() -> bool:
    """`accelerate launch` with an FSDP config (`distributed_type: FSDP`) says so in the environment."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def keep_fsdp_on_cpu(accelerator: Accelerator) -> None:
    """FSDP2 on CPU processes (gloo), as on GPUs.

    Accelerate 1.15 reads the FSDP plugin only for GPU-like devices (accelerate/state.py, `AcceleratorState.__init__`,
    the branch `elif self.distributed_type in [DistributedType.MULTI_GPU, ...]`, which leaves MULTI_CPU out): CPU
    processes launched with an FSDP config silently train with DDP, without a message. PyTorch's `fully_shard`
    runs on CPU, so we set what that branch sets on GPUs (the distributed type and the plugin, read from the same
    environment variables); from there on Accelerate's own FSDP2 code runs (`fully_shard` of the wrapped layers,
    sharded checkpoints, gathered state dicts), the code a GPU run goes through.
    """
    if not fsdp_requested() or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return
    from accelerate.state import PartialState
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise ValueError(f"FSDP version {plugin.fsdp_version} does not run on CPU processes; set `fsdp_version: 2` "
                         "in the Accelerate config (see examples/accelerate/fsdp2.yaml)")
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # as AcceleratorState does on GPUs
    if accelerator.is_main_process:
        logger.info("FSDP2 on %d CPU processes (gloo)", accelerator.num_processes)


def refuse_fp16_on_cpu(accelerator: Accelerator) -> None:
    """Accelerate 1.15 turns float16 autocast and loss scaling on only off the CPU (accelerator.py: `self.native_amp`
    needs `self.device.type != "cpu"`); on CPU `fp16` would silently train in float32."""
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ValueError("--mixed_precision fp16 needs a GPU: on CPU Accelerate neither autocasts to float16 nor "
                         "scales the loss, so the run would silently train in float32. Use --mixed_precision bf16 "
                         "(or no) on CPU.")


def check_shared_output_dir(accelerator: Accelerator, output_dir: Path) -> None:
    """Every process writes into the same checkpoint folders (the main process the model, optimizer and exports,
    each process its own RNG state and, under FSDP, its own shards), and reads them back on --resume: all processes
    must see one --output_dir. The main process writes a marker that every process must be able to read; if some
    cannot (nodes with their own local disks), all stop with the same error instead of writing incomplete
    checkpoints."""
    if accelerator.num_processes == 1:
        return
    from accelerate.utils import broadcast_object_list

    nonce = broadcast_object_list([secrets.token_hex(8)])[0]  # the main process's
    marker = output_dir / f".tmp-shared-{nonce}"
    if accelerator.is_main_process:
        write_text(marker, nonce)
    accelerator.wait_for_everyone()
    try:
        sees = marker.read_text(encoding="utf-8") == nonce
    except OSError:
        sees = False
    views = gather_object([(accelerator.process_index, socket.gethostname(), sees)])
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        marker.unlink(missing_ok=True)
    blind = [f"rank {rank} on {host}" for rank, host, seen in views if not seen]
    if blind:
        raise RuntimeError(
            f"--output_dir {output_dir} is not shared by all processes: {', '.join(blind)} cannot see the files the "
            f"main process (rank 0 on {views[0][1]}) writes there. Checkpoints, the tokenizer and --resume need "
            "one directory that every node mounts (NFS, Lustre, ...); give every node the same path on it.")


@contextlib.contextmanager
def root_gathered(accelerator: Accelerator, model):
    """`generate()` runs the encoder directly, not through the model's forward, so under FSDP2 the parameters
    held by the root module (those outside the separately wrapped layers) would still be sharded there: gather
    them for the duration (every process takes part, as with all FSDP calls)."""
    if not accelerator.is_fsdp2:
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def tracker_config(hyperparameters: dict) -> dict:
    """TensorBoard's hparams take only numbers, strings and booleans."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hyperparameters.items()}


def take_output_lock(accelerator: Accelerator, output_dir: Path) -> OutputLock | None:
    """One writer per output folder (`base.locks`): the main process locks `--output_dir` for the run; when another
    run holds it, every process stops with the same one-line error naming that run. The other processes take no
    lock: they write into the folder the main process locked (`check_shared_output_dir` makes sure it is one)."""
    lock, problem = None, None
    if accelerator.is_main_process:
        try:
            lock = OutputLock(output_dir).acquire()
        except OutputFolderBusy as error:
            problem = str(error)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        problem = broadcast_object_list([problem])[0]
    if problem:
        raise OutputFolderBusy(problem)
    return lock


def prepare_output_dir(accelerator: Accelerator, train_args: TrainArguments) -> Path:
    """Create `--output_dir`; with `--overwrite_output_dir` remove what an earlier run wrote there — its
    checkpoints, best/, final/, tokenizer/ and TensorBoard event files — and nothing else (a user's file inside one
    of those folders stays, with a warning)."""
    output_dir = Path(train_args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_temporaries(output_dir)
        if train_args.overwrite_output_dir:
            for path in list_checkpoints(output_dir):
                remove_checkpoint(path)
            for name, owned in (("best", is_owned_model_file), ("final", is_owned_model_file),
                                ("tokenizer", is_owned_tokenizer_file)):
                kept = remove_owned(output_dir / name, owned)
                if kept:
                    logger.warning("kept %s: it holds files vanilla-transformer did not write (%s)",
                                   output_dir / name, ", ".join(kept))
            remove_event_files(output_dir / "runs")
    accelerator.wait_for_everyone()
    return output_dir


def remove_event_files(folder: Path) -> None:
    """TensorBoard's event files below `folder`, and the folders left empty; anything else stays."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() and path.name.startswith("events.out.tfevents."):
            path.unlink()
        elif path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()


class Trainer:
    """The loop of `train`, split into small steps; all state lives here between them."""

    def __init__(self, data: DataArguments, model_args: ModelArguments, args: TrainArguments):
        self.data, self.model_args, self.args = data, model_args, args
        self.wall_start = time.perf_counter()
        self.max_time = parse_duration(args.max_time)
        self.accelerator = make_accelerator(args)
        self.lock = take_output_lock(self.accelerator, Path(args.output_dir))  # before anything is written there
        try:
            self.output_dir = prepare_output_dir(self.accelerator, args)
            check_shared_output_dir(self.accelerator, self.output_dir)
        except BaseException:
            self.release()
            raise
        self.state = TrainerState()
        self.bad_in_a_row = 0

    # -- setup ----------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        from .data import Seq2SeqCollator, TokenBatchSampler, padding_fraction
        from .prepare import check_kept_pairs, lengths_of

        accelerator, data, args = self.accelerator, self.data, self.args
        set_seed(args.seed)
        prepared = prepare_data(accelerator, data, self.output_dir)
        self.raw, self.tokenizer = prepared.raw, prepared.tokenizer
        self.record = run_record(data, args, DEFAULT_VOCAB_SIZE)  # what this run is (see run_record.py)
        train_set, validation_set = prepared.train, prepared.validation
        dropped = prepared.info["dropped_over_max_length"]
        check_kept_pairs(prepared.info, data.max_length)  # the check `prepare` makes too
        if args.do_test and len(self.raw.get("test", [])) == 0:
            raise UsageError("--do_test: the data has no test pairs (give --test_file, or leave --do_test out)")
        self.data_summary = {"train_pairs": len(train_set), "dropped_over_max_length": dropped,
                             "validation_pairs": len(self.raw["validation"]), "data_cache": prepared.info["cache"]}
        if "tokenizer_trained" in prepared.info:
            self.data_summary["tokenizer_trained"] = prepared.info["tokenizer_trained"]
        self.collator = Seq2SeqCollator(self.tokenizer.pad_token_id, self.tokenizer.bos_token_id)
        src_lengths, tgt_lengths = lengths_of(train_set)
        self.sampler = TokenBatchSampler(src_lengths, tgt_lengths, data.max_tokens,
                                         shuffle=True, seed=args.seed, num_replicas=accelerator.num_processes,
                                         rank=accelerator.process_index)
        self.padding_of = lambda batches: padding_fraction(batches, self.sampler.src_lengths,
                                                           self.sampler.tgt_lengths)
        self.train_set = train_set
        self.eval_set = make_eval_set(self.raw["validation"], validation_set, data, args.seed)

        model = build_model(self.model_args, self.tokenizer)
        self.config = model.config
        self.parameters = sum(p.numel() for p in model.parameters())
        set_seed(args.seed + accelerator.process_index)  # dropout streams differ between processes
        optimizer, scheduler = build_optimizer(model, model.config.d_model, args)
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        register_checkpoint_hooks(accelerator)
        if args.resume:
            self.resume()
        self.batches = MicroBatches(train_set, self.sampler, self.collator, self.state.epoch,
                                    self.state.batches_in_epoch)
        self.hyperparameters = arguments_dict(data, self.model_args, args)
        self.hyperparameters["vocab_size"] = len(self.tokenizer)  # what the run used (trained or --tokenizer)
        if args.report_to != "none":
            accelerator.init_trackers("train", config=tracker_config(self.hyperparameters))
        logger.info("model: preset %s%s, %.2fM parameters; %d training pairs (%d dropped as longer than %d tokens), "
                    "%d processes (%s), mixed precision %s", self.model_args.preset,
                    f" with {model_overrides(self.model_args)}" if model_overrides(self.model_args) else "",
                    self.parameters / 1e6, len(train_set), dropped, data.max_length, accelerator.num_processes,
                    accelerator.distributed_type, accelerator.mixed_precision)

    def resume(self) -> None:
        """From the newest complete checkpoint (see `checkpoints.resumable_checkpoint`): model, optimizer, schedule,
        RNG streams (Accelerate), then the counters and data position."""
        checkpoint, passed_over = resumable_checkpoint(self.output_dir, self.accelerator.num_processes)
        if checkpoint is None:
            raise UsageError(f"--resume: no complete checkpoint in {self.output_dir} ({'; '.join(passed_over)})")
        for line in passed_over:
            logger.warning("%s: resuming from %s instead", line, checkpoint.name)
        self.accelerator.load_state(str(checkpoint))
        saved = read_state(checkpoint)
        self.state = TrainerState.from_dict(saved)
        previous = saved.get("run") if isinstance(saved.get("run"), dict) else {}
        refused, allowed = differences(previous, self.record) if previous else ([], {})
        if refused:  # `validate` refuses these before any work; a caller that skipped it gets the same refusal
            raise UsageError(f"--resume: {checkpoint.name} was trained with other settings ({'; '.join(refused)})")
        self.record["resumes"] = [*previous.get("resumes", []), {"from_step": self.state.step, "changed": allowed}]
        logger.info("resumed from %s: step %d, epoch %d, batch %d of the epoch", checkpoint, self.state.step,
                    self.state.epoch, self.state.batches_in_epoch)

    # -- the loop -------------------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.state.train_seconds + (time.perf_counter() - self.segment_start)

    def out_of_time(self) -> bool:
        """Decided on the main process and shared, so that every process stops after the same update."""
        if self.max_time is None:
            return False
        flag = torch.tensor([1.0 if self.elapsed() >= self.max_time else 0.0], device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, "max")
        return bool(flag.item())

    def run(self) -> dict:
        args, accelerator, state = self.args, self.accelerator, self.state
        self.segment_start = time.perf_counter()
        meter = Meter()
        bar = tqdm(total=args.max_steps, initial=state.step, desc="training", dynamic_ncols=True,
                   disable=not accelerator.is_local_main_process)
        self.model.train()
        start_step = state.step
        last_saved = last_evaluated = state.step if args.resume else None
        while state.step < args.max_steps and not self.out_of_time():
            result = train_step(accelerator, self.model, self.optimizer, self.scheduler, self.batches, args,
                                self.config.label_smoothing, self.padding_of)
            if not self.account(result):
                continue
            meter.add(result)
            if state.step == start_step + 1:
                logger.info("rank %d: first update %.1f s after start; %s", accelerator.process_index,
                            time.perf_counter() - self.wall_start, memory_note())
            bar.update(1)
            bar.set_postfix(loss=f"{result.loss_sum / max(result.target_tokens, 1):.3f}",
                            tok_s=f"{meter.tokens / max(time.perf_counter() - meter.start, 1e-9):.0f}")
            if state.step % args.logging_steps == 0:
                self.log_train(meter)
            pause = time.perf_counter()
            if state.step % args.eval_steps == 0:
                self.evaluate_and_keep_best()
                last_evaluated = state.step
            if state.step % args.save_steps == 0:
                self.save()
                last_saved = state.step
            meter.start += time.perf_counter() - pause  # tokens/s counts training time only
        bar.close()
        if last_evaluated != state.step:
            self.evaluate_and_keep_best()
        if last_saved != state.step:
            self.save()
        return self.finish()

    def account(self, result: StepResult) -> bool:
        """Count an applied update (and the data it consumed); warn about a skipped one, abort after five."""
        state = self.state
        state.epoch, state.batches_in_epoch = self.batches.epoch, self.batches.position
        if not result.applied:
            state.skipped_steps += 1
            loss = result.loss_sum / max(result.target_tokens, 1)
            if math.isfinite(result.loss_sum) and self.accelerator.mixed_precision == "fp16":
                logger.info("fp16 gradient overflow: the loss scaler skipped an update")
                return False
            self.bad_in_a_row += 1
            logger.warning("non-finite loss (%s) or gradient norm (%s) after step %d: update skipped (%d in a row)",
                           loss, result.grad_norm, state.step, self.bad_in_a_row)
            if self.bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
                raise NonFiniteLossError(
                    f"{self.bad_in_a_row} updates in a row had a non-finite loss or gradient norm (last at step "
                    f"{state.step}); aborting. Try a lower --lr_scale, a longer --warmup_steps, --clip_norm 1.0, or "
                    f"--mixed_precision bf16/no instead of fp16")
            return False
        self.bad_in_a_row = 0
        state.step += 1
        state.target_tokens += result.target_tokens
        state.source_tokens += result.source_tokens
        return True

    def current_lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def log_train(self, meter: Meter) -> None:
        values = meter.values(self.current_lr())
        self.accelerator.log(values, step=self.state.step)
        if self.accelerator.is_main_process:
            logger.info("step %d | loss %.4f | nll %.4f | lr %.3g | %.0f tok/s | grad norm %.3g | padding %.1f%%",
                        self.state.step, values["train/loss"], values["train/nll"], values["train/lr"],
                        values["train/tokens_per_second"], values["train/grad_norm"],
                        100 * values["train/padding_fraction"])
        meter.reset()

    def evaluate_and_keep_best(self) -> dict:
        state = self.state
        result = evaluate(self.accelerator, self.model, self.tokenizer, self.eval_set, self.collator, self.data,
                          self.args)
        record = {"step": state.step, "validation_loss": result["validation_loss"], "bleu": result["bleu"],
                  "chrf": result["chrf"], "length_ratio": result["length_ratio"]}
        state.evaluations.append(record)
        self.accelerator.log({"eval/loss": result["validation_loss"], "eval/ppl": result["validation_ppl"],
                              "eval/bleu": result["bleu"], "eval/chrf": result["chrf"],
                              "eval/length_ratio": result["length_ratio"]}, step=state.step)
        improved = state.best_bleu is None or result["bleu"] > state.best_bleu
        if self.accelerator.is_main_process:
            logger.info("eval at step %d | validation nll %.4f (ppl %.2f) | BLEU %.2f | chrF %.2f | length ratio "
                        "%.2f | %.1f s%s", state.step, result["validation_loss"], result["validation_ppl"],
                        result["bleu"], result["chrf"], result["length_ratio"], result["eval_seconds"],
                        " | new best" if improved else "")
            for hypothesis, reference in zip(result["examples"], self.eval_set.references):
                logger.info("  hyp: %s\n  ref: %s", hypothesis, reference)
        if improved:
            state.best_bleu, state.best_step = result["bleu"], state.step
            self.export("best", {"step": state.step, "validation": record},
                        {VALIDATION_HYPOTHESES: "".join(h + "\n" for h in result["hypotheses"])})
        return result

    def checkpoint_extras(self, folder: Path, weights: dict | None = None) -> None:
        """config.json, generation_config.json and tokenizer: a checkpoint folder is also a model folder. Under FSDP
        also the gathered weights as model.safetensors (Accelerate keeps its sharded files for --resume)."""
        if weights is not None:
            save_file(weights, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        self.config.save_pretrained(folder)
        paper_generation_config(self.config).save_pretrained(folder)  # §6.1 decoding, whatever --num_beams evaluates
        self.tokenizer.save_pretrained(folder)

    def save(self) -> None:
        state = self.state
        state.train_seconds = self.elapsed()
        self.segment_start = time.perf_counter()
        weights = self.gathered_weights() if self.accelerator.distributed_type == DistributedType.FSDP else None
        folder = save_checkpoint(self.accelerator, self.output_dir, state.step, {**asdict(state), "run": self.record},
                                 lambda temporary: self.checkpoint_extras(temporary, weights))
        if self.accelerator.is_main_process:
            logger.info("checkpoint written: %s", folder)
            rotate_checkpoints(self.output_dir, self.args.keep_last)
        self.accelerator.wait_for_everyone()

    def gathered_weights(self) -> dict:
        """The full weights under their plain names, each shared matrix once (FSDP's gathered copies do not share
        memory, so transformers could not tell the tied ones apart). Under FSDP every process must call this; the
        main process gets the weights, the others an empty dict."""
        tied = set(getattr(self.accelerator.unwrap_model(self.model), "_tied_weights_keys", None) or {})
        return canonical_state_dict(self.accelerator.get_state_dict(self.model), tied)

    def export(self, name: str, summary: dict, extra_files: dict[str, str] | None = None) -> Path:
        """Write `<output_dir>/<name>/` from every process's point of view (FSDP gathers the weights), in
        `--export_dtype`. Its generation_config.json holds the paper's decoding (beam 4, length penalty 0.6, §6.1),
        which the README promises for published models: `--num_beams`/`--length_penalty` only set how training
        evaluates (and are recorded as such in run_summary.json)."""
        state_dict = self.gathered_weights()
        path = self.output_dir / name
        if self.accelerator.is_main_process:
            save_model_folder(self.accelerator.unwrap_model(self.model), self.tokenizer, path, summary=summary,
                              state_dict=state_dict, extra_files=extra_files,
                              dtype=getattr(torch, self.args.export_dtype))
        self.accelerator.wait_for_everyone()
        return path

    # -- the end --------------------------------------------------------------------------------------------------
    def release(self) -> None:
        """Give up the output folder's lock (also when the run fails; a killed process loses it anyway)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def test_scores(self) -> dict | None:
        """BLEU/chrF of the final model on the test split (`--do_test`)."""
        if not self.args.do_test:
            return None
        rows = self.raw["test"]["translation"]
        sources = [r[self.data.source_lang] for r in rows]
        references = [r[self.data.target_lang] for r in rows]
        plain = evaluation_model(self.accelerator, self.model)
        hypotheses = distributed_translate(self.accelerator, plain, self.tokenizer, sources, self.args, progress=True)
        scores = score(hypotheses, references, where="test", warn=self.accelerator.is_main_process)
        if self.accelerator.is_main_process:
            logger.info("test: BLEU %.2f | chrF %.2f | length ratio %.2f (%d sentences)", scores["bleu"],
                        scores["chrf"], scores["length_ratio"], len(sources))
        self.accelerator.log({"test/bleu": scores["bleu"], "test/chrf": scores["chrf"],
                              "test/length_ratio": scores["length_ratio"]}, step=self.state.step)
        return {**scores, "split": "test", "hypotheses": hypotheses}

    def epochs_done(self) -> float:
        per_process = self.sampler.num_batches // self.accelerator.num_processes
        return self.state.epoch + self.state.batches_in_epoch / max(per_process, 1)

    def summary(self, test: dict | None) -> dict:
        state = self.state
        return {
            "steps": state.step,
            "epochs": round(self.epochs_done(), 3),
            "target_tokens": state.target_tokens,
            "source_tokens": state.source_tokens,
            "train_seconds": round(state.train_seconds, 1),
            "wall_seconds": round(time.perf_counter() - self.wall_start, 1),
            "skipped_steps": state.skipped_steps,
            "best_validation_bleu": state.best_bleu,
            "best_step": state.best_step,
            "final_validation": state.evaluations[-1] if state.evaluations else None,
            "evaluations": state.evaluations,
            "test": None if test is None else {k: v for k, v in test.items() if k != "hypotheses"},
            "note": SUMMARY_NOTE,
            "data": {"source_lang": self.data.source_lang, "target_lang": self.data.target_lang,
                     "dataset": self.data.dataset or self.data.train_file, **self.data_summary,
                     "files": {name: identity for name, identity in self.record["files"].items() if identity},
                     "tokenizer": self.record["tokenizer"]},
            "resumes": self.record["resumes"],
            "model": {"preset": self.model_args.preset, "overrides": model_overrides(self.model_args),
                      "parameters": self.parameters, "config": self.config.to_diff_dict()},
            "hyperparameters": self.hyperparameters,
            "libraries": library_versions(),
            "hardware": hardware(self.accelerator),
        }

    def finish(self) -> dict:
        self.state.train_seconds = self.elapsed()
        test = self.test_scores()
        summary = self.summary(test)
        extra = {"test_hypotheses.txt": "".join(h + "\n" for h in test["hypotheses"])} if test else None
        final = self.export("final", summary, extra)
        self.accelerator.end_training()
        self.release()
        if self.accelerator.is_main_process:
            logger.info("done: %d updates, %.0f s of training; best validation BLEU %.2f at step %s; model in %s",
                        summary["steps"], summary["train_seconds"], summary["best_validation_bleu"] or 0.0,
                        summary["best_step"], final)
        return summary


def train(data: DataArguments, model_args: ModelArguments, args: TrainArguments) -> dict:
    """Validate the arguments (ValueError naming them), train, export; returns the run summary."""
    validate(data, model_args, args)
    trainer = Trainer(data, model_args, args)
    try:
        trainer.setup()
        return trainer.run()
    finally:
        trainer.release()
