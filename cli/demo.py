"""`make demo`: the whole recipe on a laptop-sized problem — Spanish → English on the Bible, CPU only.

1. Prepare the bundled corpus (`load_bible`: verse-aligned Reina-Valera 1909 / World English Bible, held-out
   validation and test chapters).
2. Train a small Transformer (the `tiny` preset, see `DEMO_MODEL`) with the paper's recipe (§5: shared BPE, token
   batches, Adam with the warmup schedule, label smoothing) for 2200 updates, about 15 minutes on two CPU threads
   (at most 20) — the same `vanilla-transformer train` a GPU cluster runs.
3. Translate the test chapters with beam search (§6.1) and report sacrebleu BLEU and chrF.
4. Export the model to `demo_output/final` and translate three Spanish sentences with it.

Options: `python -m vanilla_transformer.training.demo [--steps N] [--minutes M] [--output_dir DIR] [train args]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from ..base.files import write_json
from ..base.outputs import SUMMARY_FILE
from ..deployment.engines import load_engine
from ..translation import translate
from ..training.bible import load_bible
from ..training.trainer import train
from .parsing import CommandParser, finite_float
from .train import parse_args, setup_logging

logger = logging.getLogger(__name__)

# The `tiny` preset with a narrower FFN (d_ff 512: 25% more tokens per second on a CPU) and no dropout: a run of
# about two epochs does not overfit, so dropout would only slow it down (on this corpus it costs ~1.5x the updates
# to reach the same BLEU).
DEMO_MODEL = ["--preset", "tiny", "--ffn_dim", "512", "--dropout", "0"]
# The `tiny` preset's own recipe (2500-token batches, 600 warmup updates to a peak of 5e-4, Adam β2 0.999, ε 1e-8,
# clipping at norm 1, N(0, 0.02) weights: the SMALL_* constants in training/init_from.py, chosen by
# benchmarks/recipe_race.py); here only what the demo adds: evaluation, checkpoints and the seed.
DEMO_RECIPE = ["--vocab_size", "8000", "--max_length", "200", "--eval_samples", "150", "--eval_batch_size", "50",
               "--logging_steps", "100", "--keep_last", "2", "--seed", "1"]
# About 15 minutes of training on two idle CPU cores; the time cap keeps a busy machine within the half hour.
DEMO_STEPS = 2200
DEMO_MAX_MINUTES = 20.0
# Test BLEU of the full DEMO_STEPS-update demo on an idle two-core machine (README, BENCHMARKS.md).
IDLE_MACHINE_TEST_BLEU = 22.7
SENTENCES = [
    "En el principio creó Dios los cielos y la tierra.",
    "Bienaventurados los pacíficos, porque ellos serán llamados hijos de Dios.",
    "El amor es sufrido, es benigno; el amor no tiene envidia.",
]


def demo_arguments(steps: int, minutes: float, output_dir: str, eval_steps: int, extra: list[str]) -> list[str]:
    """The `vanilla-transformer train` command line of the demo (`extra` arguments override)."""
    return ["--dataset", "bible", *DEMO_MODEL, *DEMO_RECIPE, "--max_steps", str(steps), "--max_time", f"{minutes}m",
            "--eval_steps", str(eval_steps), "--save_steps", str(eval_steps), "--output_dir", output_dir,
            "--overwrite_output_dir", "--do_test", *extra]


def time_cap_report(summary: dict) -> dict | None:
    """What the time cap (`--max_time`, the demo's --minutes) cut short, from the run summary the trainer returns
    (training stops at --max_steps or when --max_time is spent, so fewer updates than planned means the cap); None
    when training ran every planned update."""
    planned = summary["hyperparameters"]["max_steps"]
    if summary["steps"] >= planned:
        return None
    return {"stopped_by": "max_time", "max_time": summary["hyperparameters"]["max_time"],
            "updates_done": summary["steps"], "updates_planned": planned, "epochs": summary["epochs"],
            "train_minutes": round(summary["train_seconds"] / 60, 2),
            "note": "training was stopped by the time cap, not by its planned number of updates: the scores are those "
                    "of an undertrained model"}


def time_cap_message(cap: dict, idle_bleu: float | None = IDLE_MACHINE_TEST_BLEU) -> str:
    """One warning paragraph about a run the time cap cut short (`time_cap_report`)."""
    text = (f"WARNING: the time cap ({cap['max_time']}) stopped training after {cap['updates_done']:,} of the "
            f"{cap['updates_planned']:,} planned updates ({cap['epochs']:.2f} epochs, {cap['train_minutes']:.1f} min): "
            "the scores below are those of an undertrained model")
    if idle_bleu is not None:
        text += f", lower than the test BLEU of about {idle_bleu} that the full run reaches on an idle machine"
    return text + ". The machine was busy or slow: run again when it is idle, or give more --minutes."


def record_time_cap(summary: dict, final: Path) -> dict | None:
    """`time_cap_report` of the run, also written into `final/run_summary.json` (as "stopped_early") when the cap
    cut training short."""
    cap = time_cap_report(summary)
    if cap is not None:
        path = final / SUMMARY_FILE
        recorded = json.loads(path.read_text(encoding="utf-8"))
        recorded["stopped_early"] = cap
        write_json(path, recorded)
        summary["stopped_early"] = cap
    return cap


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m vanilla_transformer.training.demo", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=DEMO_STEPS, help="optimizer updates")
    parser.add_argument("--minutes", type=finite_float, default=DEMO_MAX_MINUTES, help="cap on the training time (wall "
                        "clock, evaluations included; corpus, tokenizer and the test translation come on top)")
    parser.add_argument("--output_dir", default="demo_output")
    parser.add_argument("--eval_steps", type=int, default=550)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args, extra = parser.parse_known_args(argv)

    train_argv = demo_arguments(args.steps, args.minutes, args.output_dir, args.eval_steps, extra)
    train_arguments = parse_args(train_argv)  # a bad argument stops the demo before the corpus is prepared
    torch.set_num_threads(args.threads)
    setup_logging()
    start = time.perf_counter()

    corpus = load_bible()
    print("Bible corpus: " + ", ".join(f"{name} {len(split)} verse pairs" for name, split in corpus.items()))

    print("training: vanilla-transformer train " + " ".join(train_argv))
    summary = train(*train_arguments)

    final = Path(args.output_dir) / "final"
    cap = record_time_cap(summary, final)
    translations = translate(load_engine(str(final), device="cpu"), SENTENCES)
    total = time.perf_counter() - start

    test = summary["test"] or {}
    print()
    if cap is not None:
        print(time_cap_message(cap, IDLE_MACHINE_TEST_BLEU if args.steps == DEMO_STEPS else None))
    print(f"model: {final} ({summary['model']['parameters'] / 1e6:.1f}M parameters)")
    print(f"trained {summary['steps']} updates ({summary['epochs']:.2f} epochs, {summary['target_tokens']:,} "
          f"target tokens) in {summary['train_seconds'] / 60:.1f} min"
          + (f", stopped by the time cap ({args.minutes:g} min) before the planned {cap['updates_planned']:,}"
             if cap is not None else ""))
    sample = summary["hyperparameters"]["eval_samples"] or len(corpus["validation"])
    print(f"best validation BLEU {summary['best_validation_bleu']:.2f} (on {sample} of the "
          f"{len(corpus['validation'])} validation verses, step {summary['best_step']})")
    print(f"test BLEU {test.get('bleu', float('nan')):.2f}, chrF {test.get('chrf', float('nan')):.2f}, "
          f"length ratio {test.get('length_ratio', float('nan')):.2f} ({test.get('sentences', 0)} verses of held-out chapters; {test.get('bleu_signature', '')})")
    for source, target in zip(SENTENCES, translations):
        print(f"  {source}\n  → {target}")
    print(f"demo finished in {total / 60:.1f} min")
    (Path(args.output_dir) / "demo_result.json").write_text(json.dumps(
        {"test": test, "total_minutes": round(total / 60, 2), "translations": dict(zip(SENTENCES, translations)),
         "train_minutes": round(summary["train_seconds"] / 60, 2), "steps": summary["steps"],
         "stopped_early": cap}, indent=2) + "\n",
        encoding="utf-8")
    return 0


if __name__ == "__main__":
    from .main import run_command

    raise SystemExit(run_command("demo", main))
