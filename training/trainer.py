"""Train the Transformer with the paper's recipe (§5), through Accelerate.

    vanilla-transformer train --dataset bible --preset tiny --output_dir runs/tiny
    accelerate launch -m vanilla_transformer.training.train --dataset wmt14 --source_lang de --target_lang en ...

The same program runs on one CPU process, N GPUs (DDP), several nodes, or FSDP2, as chosen with `accelerate config`
(FSDP2 also on CPU processes, see `distributed.keep_fsdp_on_cpu`).

* Data (§5.1): one shared BPE vocabulary (trained on the training text unless `--tokenizer` is given); batches of
  similar-length pairs holding about `--max_tokens` tokens per process (`TokenBatchSampler`). Each process reads its
  own share of the batches (batch i goes to rank i mod N), so one update sees the union of N batches.
* Loss (§5.4): the model's label-smoothed cross-entropy (ε = the config's `label_smoothing`, 0.1), summed over the
  target tokens of the whole global batch (all processes, all accumulated micro-batches) and divided by their number.
  The update is therefore the same however the global batch is split over processes and micro-batches.
* Optimizer (§5.3): Adam(β1 0.9, β2 0.98, ε 1e-9); lrate = lr_scale · d_model^-0.5 · min(step^-0.5,
  step · warmup^-1.5) with warmup 4000; `--preset tiny` from scratch gets its own (`init_from.SMALL_*`). Optional
  gradient-norm clipping. An update whose loss (or gradient norm) is not finite is skipped with a warning; five in a
  row abort the run.
* Evaluation every `--eval_steps`: validation loss = per-token negative log-likelihood *without* label smoothing
  (nats; perplexity = exp), and BLEU (sacrebleu) of beam-search translations (§6.1: beam 4, α 0.6, source length
  + 50) of a fixed subset of the validation set. The best BLEU so far is written to `<output_dir>/best/`.
* Checkpoints every `--save_steps` (see `checkpoints.py`), the last `--keep_last` kept; `--resume` continues the
  latest complete one bit for bit: same weights, optimizer and schedule, RNG streams, and data position (a newer
  checkpoint missing a state file is passed over with a warning naming the file).
* Data that the length limit would gut is refused before training: more than half of the training pairs, or every
  validation pair, longer than `--max_length` (a run would otherwise learn from scraps or report NaN).
* The end: the average of the last `--average_last` weight snapshots (§6.1, see `averaging.py`) replaces the final
  weights if its validation BLEU is higher; then `<output_dir>/final/` (see `export.py`) with `run_summary.json`.
* Seeing it run: TensorBoard under `<output_dir>/runs` (loss, lr, tokens/s, grad norm, padding, BLEU), a progress
  bar and log lines on the main process.

This module is the loop (`Trainer`: set up, run, save, evaluate, export, finish) and `train`; its parts live in
their own modules: `state.py` (the counters a checkpoint carries), `schedule.py` (optimizer and learning rate),
`batches.py` (the data as micro-batches), `model_setup.py` (the model and its weight names in checkpoints),
`step.py` (one update, with the model's loss), `averaging.py` (§6.1 at the end), `validation.py` (evaluation
during training), `distributed.py` (Accelerate and the processes), `output_dir.py` (the output folder's lock and
clean-up), `memory.py`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate.utils import DistributedType, set_seed
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..base.errors import UsageError
from .averaging import WeightSnapshots, snapshot_interval
from .arguments import (DataArguments, ModelArguments, TrainArguments, arguments_dict, model_overrides, parse_duration,
                        validate, DEFAULT_VOCAB_SIZE)
from .batches import MicroBatches, prepare_data
from .checkpoints import WEIGHTS_FILE, read_state, resumable_checkpoint, rotate_checkpoints, save_checkpoint
from .distributed import check_shared_output_dir, make_accelerator
from .export import hardware, library_versions, paper_generation_config, save_model_folder
from .memory import memory_note
from .model_setup import build_model, canonical_state_dict, put_weights, register_checkpoint_hooks
from .output_dir import prepare_output_dir, take_output_lock
from .run_record import differences, run_record
from .init_from import (extend_record, load_initial_model, record_differences, resolve_batch, resolve_schedule,
                        resolve_source)
from .schedule import build_optimizer
from .state import TrainerState
from .step import Meter, NonFiniteLossError, StepResult, train_step
from .validation import evaluate, make_eval_set, score_test_split

logger = logging.getLogger(__name__)

MAX_BAD_STEPS_IN_A_ROW = 5
# best/ keeps the translations its BLEU was computed from (the --eval_samples validation sentences, in file order).
VALIDATION_HYPOTHESES = "validation_hypotheses.txt"
SUMMARY_NOTE = ("validation_loss is the per-token negative log-likelihood without label smoothing (nats); BLEU and "
                "chrF are sacrebleu corpus scores of detokenized beam-search output (beam 4, length penalty 0.6, "
                "at most source length + 50 tokens)")


def tracker_config(hyperparameters: dict) -> dict:
    """TensorBoard's hparams take only numbers, strings and booleans."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hyperparameters.items()}


class Trainer:
    """The loop of `train`, split into small steps; all state lives here between them."""

    def __init__(self, data: DataArguments, model_args: ModelArguments, args: TrainArguments):
        self.data, self.model_args, self.args = data, model_args, args
        resolve_schedule(model_args, args)  # `validate` did it already; a caller that skipped it gets the same
        resolve_batch(data, model_args)
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
        self.snapshots = WeightSnapshots(args.average_last, snapshot_interval(args))
        self.averaging: dict | None = None

    # -- setup ----------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        from .data import Seq2SeqCollator, TokenBatchSampler, padding_fraction
        from .prepare import check_kept_pairs, lengths_of

        accelerator, data, args = self.accelerator, self.data, self.args
        set_seed(args.seed)
        prepared = prepare_data(accelerator, data, self.output_dir)
        self.raw, self.tokenizer = prepared.raw, prepared.tokenizer
        # what this run is (see run_record.py), with the starting model and the schedule (see init_from.py)
        self.record = extend_record(run_record(data, args, DEFAULT_VOCAB_SIZE), self.model_args, args)
        train_set, validation_set = prepared.train, prepared.validation
        dropped = prepared.info["dropped_over_max_length"]
        check_kept_pairs(prepared.info, data.max_length)  # the check `prepare` makes too
        if args.do_test and len(self.raw.get("test", [])) == 0:
            raise UsageError("--do_test: the data has no test pairs (give --test_file, or leave --do_test out)")
        self.data_summary = {"train_pairs": len(train_set), "dropped_over_max_length": dropped,
                             "validation_pairs": len(self.raw["validation"]), "data_cache": prepared.info["cache"]}
        if "tokenizer_trained" in prepared.info:
            self.data_summary["tokenizer_trained"] = prepared.info["tokenizer_trained"]
        src_lengths, tgt_lengths = lengths_of(train_set)
        self.sampler = TokenBatchSampler(src_lengths, tgt_lengths, data.max_tokens,
                                         shuffle=True, seed=args.seed, num_replicas=accelerator.num_processes,
                                         rank=accelerator.process_index)
        self.padding_of = lambda batches: padding_fraction(batches, self.sampler.src_lengths,
                                                           self.sampler.tgt_lengths)
        self.train_set = train_set
        self.eval_set = make_eval_set(self.raw["validation"], validation_set, data, args.seed)

        if self.model_args.init_from:  # weights, config (and, through --tokenizer, the tokenizer) of a trained model
            model = load_initial_model(self.model_args, resolve_source(self.model_args.init_from))
        else:
            model = build_model(self.model_args, self.tokenizer)
        self.config = model.config
        # decoding starts from the config's token (ours: <s>; a converted Marian model: the pad token)
        self.collator = Seq2SeqCollator(self.tokenizer.pad_token_id, self.config.decoder_start_token_id)
        self.parameters = sum(p.numel() for p in model.parameters())
        set_seed(args.seed + accelerator.process_index)  # dropout streams differ between processes
        optimizer, scheduler = build_optimizer(model, model.config.d_model, args)
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        register_checkpoint_hooks(accelerator)
        if self.snapshots.enabled and accelerator.distributed_type in (DistributedType.FSDP,
                                                                       DistributedType.DEEPSPEED):
            logger.warning("--average_last: no averaging at the end under %s (each process holds a shard); average "
                           "the checkpoints with `vanilla-transformer average`", accelerator.distributed_type)
            self.snapshots.last = 0
        if args.resume:
            self.resume()
        self.batches = MicroBatches(train_set, self.sampler, self.collator, self.state.epoch,
                                    self.state.batches_in_epoch)
        self.hyperparameters = arguments_dict(data, self.model_args, args)
        self.hyperparameters["vocab_size"] = len(self.tokenizer)  # what the run used (trained or --tokenizer)
        if args.report_to != "none":
            accelerator.init_trackers("train", config=tracker_config(self.hyperparameters))
        logger.info("model: %s%s, %.2fM parameters; %d training pairs (%d dropped as longer than %d tokens), "
                    "%d processes (%s), mixed precision %s", f"from {self.model_args.init_from}"
                    if self.model_args.init_from else f"preset {self.model_args.preset or 'base'}",
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
        self.snapshots.load(checkpoint)
        saved = read_state(checkpoint)
        self.state = TrainerState.from_dict(saved)
        previous = saved.get("run") if isinstance(saved.get("run"), dict) else {}
        refused, allowed = differences(previous, self.record) if previous else ([], {})
        refused += record_differences(previous, self.record) if previous else []
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
            if self.snapshots.due(state.step):
                self.snapshots.take(self.accelerator.unwrap_model(self.model), state.step)
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
        self.snapshots.save(folder)
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
        scores = score_test_split(self.accelerator, self.model, self.tokenizer, rows, self.data, self.args)
        if self.accelerator.is_main_process:
            logger.info("test: BLEU %.2f | chrF %.2f | length ratio %.2f (%d sentences)", scores["bleu"],
                        scores["chrf"], scores["length_ratio"], len(rows))
        self.accelerator.log({"test/bleu": scores["bleu"], "test/chrf": scores["chrf"],
                              "test/length_ratio": scores["length_ratio"]}, step=self.state.step)
        return scores

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
            "averaging": self.averaging,
            "evaluations": state.evaluations,
            "test": None if test is None else {k: v for k, v in test.items() if k != "hypotheses"},
            "note": SUMMARY_NOTE,
            "data": {"source_lang": self.data.source_lang, "target_lang": self.data.target_lang,
                     "dataset": self.data.dataset or self.data.train_file, **self.data_summary,
                     "files": {name: identity for name, identity in self.record["files"].items() if identity},
                     "tokenizer": self.record["tokenizer"]},
            "resumes": self.record["resumes"],
            "init_from": self.record["init_from"],
            "model": {"preset": None if self.model_args.init_from else self.model_args.preset or "base", "overrides": model_overrides(self.model_args),
                      "parameters": self.parameters, "config": self.config.to_diff_dict()},
            "hyperparameters": self.hyperparameters,
            "libraries": library_versions(),
            "hardware": hardware(self.accelerator),
        }

    def average_at_end(self) -> dict | None:
        """§6.1's average of the last snapshots and the final weights, kept in the model only if its validation
        BLEU beats the final weights' (see averaging.py); best/ too when it beats the best so far. What was
        averaged and both scores, for run_summary.json; None when averaging is off."""
        snapshots, state = self.snapshots, self.state
        if not snapshots.enabled:
            return None
        model = self.accelerator.unwrap_model(self.model)
        if state.step not in snapshots.snapshots:
            snapshots.take(model, state.step)
        final = state.evaluations[-1]  # `run` evaluates the last update
        record = {"snapshot_steps": snapshots.steps, "every": snapshots.every, "final_validation_bleu": final["bleu"],
                  "kept": False}
        if len(snapshots.snapshots) < 2:
            return {**record, "validation": None, "note": "fewer than two snapshots: nothing to average"}
        put_weights(model, snapshots.mean(), "the average of the snapshots")
        result = evaluate(self.accelerator, self.model, self.tokenizer, self.eval_set, self.collator, self.data,
                          self.args)
        record["validation"] = {key: result[key] for key in ("validation_loss", "bleu", "chrf", "length_ratio")}
        record["kept"] = result["bleu"] > final["bleu"]
        if self.accelerator.is_main_process:
            logger.info("average of the weights at steps %s: validation BLEU %.2f (final weights %.2f): %s",
                        ", ".join(map(str, snapshots.steps)), result["bleu"], final["bleu"],
                        "kept as the final model" if record["kept"] else "the final weights are kept")
        if not record["kept"]:
            put_weights(model, snapshots.snapshots[state.step], f"the snapshot of step {state.step}")
        elif result["bleu"] > state.best_bleu:
            state.best_bleu, state.best_step = result["bleu"], state.step
            self.export("best", {"step": state.step, "averaged_steps": snapshots.steps,
                                 "validation": {"step": state.step, **record["validation"]}},
                        {VALIDATION_HYPOTHESES: "".join(h + "\n" for h in result["hypotheses"])})
        return record

    def finish(self) -> dict:
        self.state.train_seconds = self.elapsed()
        self.averaging = self.average_at_end()
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
