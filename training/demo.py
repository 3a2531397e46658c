"""`make demo`: the whole recipe on a laptop-sized problem — Spanish → English on the Bible, CPU only.

1. Prepare the bundled corpus (`load_bible`: verse-aligned Reina-Valera 1909 / World English Bible, held-out
   validation and test chapters).
2. Train a small Transformer (the `tiny` preset, see `DEMO_MODEL`) with the paper's recipe (§5: shared BPE, token
   batches, Adam with the warmup schedule, label smoothing, dropout) for a fixed wall-clock budget — the same
   `vanilla-transformer train` a GPU cluster runs, here on two CPU threads.
3. Translate the test chapters with beam search (§6.1) and report sacrebleu BLEU and chrF.
4. Export the model to `demo_output/final` and translate three Spanish sentences with it.

Options: `python -m vanilla_transformer.training.demo --minutes 15 --output_dir demo_output [extra train args]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# Short runs want a short warmup and a larger peak rate than §5.3's (warmup 4000, scale 1) — a run of a few
# thousand updates would otherwise spend most of its time warming up.
DEMO_MODEL = ["--preset", "tiny"]
DEMO_RECIPE = ["--vocab_size", "8000", "--max_tokens", "6000", "--warmup_steps", "1000", "--lr_scale", "2.0",
               "--max_length", "200", "--eval_samples", "150", "--eval_batch_size", "50", "--logging_steps", "50",
               "--keep_last", "2", "--seed", "1"]
SENTENCES = [
    "En el principio creó Dios los cielos y la tierra.",
    "Bienaventurados los pacíficos, porque ellos serán llamados hijos de Dios.",
    "El amor es sufrido, es benigno; el amor no tiene envidia.",
]


def demo_arguments(minutes: float, output_dir: str, eval_steps: int, extra: list[str]) -> list[str]:
    """The `vanilla-transformer train` command line of the demo."""
    return ["--dataset", "bible", *DEMO_MODEL, *DEMO_RECIPE, "--max_time", f"{minutes}m", "--max_steps", "1000000",
            "--eval_steps", str(eval_steps), "--save_steps", str(eval_steps), "--output_dir", output_dir,
            "--overwrite_output_dir", "--do_test", *extra]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vanilla_transformer.training.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=16.0, help="training budget (wall clock, evaluations "
                        "included; the corpus, tokenizer and final test translation come on top)")
    parser.add_argument("--output_dir", default="demo_output")
    parser.add_argument("--eval_steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args, extra = parser.parse_known_args(argv)

    from .train import parse_args, setup_logging, train

    torch.set_num_threads(args.threads)
    setup_logging()
    start = time.perf_counter()

    from .bible import load_bible

    corpus = load_bible()
    print("Bible corpus: " + ", ".join(f"{name} {len(split)} verse pairs" for name, split in corpus.items()))

    train_argv = demo_arguments(args.minutes, args.output_dir, args.eval_steps, extra)
    print("training: vanilla-transformer train " + " ".join(train_argv))
    summary = train(*parse_args(train_argv))

    final = Path(args.output_dir) / "final"
    from .evaluate import load_model_and_tokenizer, translate

    model, tokenizer = load_model_and_tokenizer(str(final), "cpu")
    translations = translate(model, tokenizer, SENTENCES)
    total = time.perf_counter() - start

    test = summary["test"] or {}
    print()
    print(f"model: {final} ({summary['model']['parameters'] / 1e6:.1f}M parameters)")
    print(f"trained {summary['steps']} updates ({summary['epochs']:.2f} epochs, {summary['target_tokens']:,} "
          f"target tokens) in {summary['train_seconds'] / 60:.1f} min")
    print(f"best validation BLEU {summary['best_validation_bleu']:.2f} (subset of {len(corpus['validation'])} "
          f"verses, step {summary['best_step']})")
    print(f"test BLEU {test.get('bleu', float('nan')):.2f}, chrF {test.get('chrf', float('nan')):.2f} "
          f"({test.get('sentences', 0)} verses of held-out chapters; {test.get('bleu_signature', '')})")
    for source, target in zip(SENTENCES, translations):
        print(f"  {source}\n  → {target}")
    print(f"demo finished in {total / 60:.1f} min")
    (Path(args.output_dir) / "demo_result.json").write_text(json.dumps(
        {"test": test, "total_minutes": round(total / 60, 2), "translations": dict(zip(SENTENCES, translations)),
         "train_minutes": round(summary["train_seconds"] / 60, 2), "steps": summary["steps"]}, indent=2) + "\n",
        encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
