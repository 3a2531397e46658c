"""#32: does our default small-model recipe learn as fast as a stock transformers recipe, at equal wall-clock time?

Both systems train the demo's model shape (d_model 256, 3+3 layers, 4 heads, FFN 512, dropout 0, tied embeddings,
embeddings × √d_model, sinusoidal positions) on the demo's corpus (the Bible, es → en) with the demo's tokenizer
(8,000-token BPE, prepared once with `vanilla-transformer prepare`), on the same machine, one after the other (or
`--parallel 2` side by side with one thread each, for exploring), for the same training time:

* **ours**: `vanilla-transformer train` with the demo's arguments (`cli/demo.py`: DEMO_MODEL, DEMO_RECIPE) and
  whatever `--ours_args` adds; no validation during the run (each stop evaluates 50 verses, counted in its time).
  It trains for the first budget, stops (a checkpoint, `final/`), then `--resume`s until the next budget: the
  schedule depends on the update number only, so each snapshot is the model a run of that budget would give.
* **marian**: transformers' `MarianMTModel` of the same shape with `Seq2SeqTrainer` and a stock recipe (AdamW lr
  5e-4, β2 0.999, `inverse_sqrt`, warmup 600, gradient clipping 1.0, label smoothing 0.1, 40 pairs a batch,
  `group_by_length` sampling); a callback snapshots the model when the training time reaches each budget
  (snapshot time not counted) and stops at the last.

Every snapshot is translated the same way: converted to our format (`convert_marian`, exact) for Marian, then
`translate()` with beam 4 and α 0.6 (§6.1) on the 952 test verses, sacrebleu BLEU and chrF.

    python benchmarks/recipe_race.py --seeds 1,2,3 --minutes 12,20
    python benchmarks/recipe_race.py --systems ours --ours_args "--learning_rate 1e-3" --label lr1e-3 --minutes 12
    python benchmarks/recipe_race.py --quick      # 1-minute smoke run of both systems

Results: one JSON line per (system, seed) appended to `--json`; `--markdown` rewrites this script's section of
BENCHMARKS.md from every line of that file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from machine import cpu_isa, cpu_name

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- recipe_race.py: begin (generated from benchmarks/recipe_race.json; edits are lost) -->"
END = "<!-- recipe_race.py: end -->"
MARIAN_RECIPE = dict(per_device_train_batch_size=40, learning_rate=5e-4, adam_beta1=0.9, adam_beta2=0.999,
                     adam_epsilon=1e-8, weight_decay=0.0, lr_scheduler_type="inverse_sqrt", warmup_steps=600,
                     max_grad_norm=1.0, label_smoothing_factor=0.1,
                     train_sampling_strategy="group_by_length")


def demo_train_arguments() -> list[str]:
    from vanilla_transformer.cli.demo import DEMO_MODEL, DEMO_RECIPE

    return ["--dataset", "bible", *DEMO_MODEL, *DEMO_RECIPE]


def prepare(out: Path) -> Path:
    """The demo's tokenizer and tokenized data, once, in `out/cache`; returns the tokenizer folder."""
    tokenizer = out / "prepare" / "tokenizer"
    if not tokenizer.exists():
        subprocess.run([sys.executable, "-m", "vanilla_transformer.cli.main", "prepare", *demo_train_arguments(),
                        "--output_dir", str(out / "prepare"), "--data_cache_dir", str(out / "cache")], check=True)
    return tokenizer


def test_nll(folder: Path, rows: list[dict]) -> float:
    """Per-token negative log-likelihood (nats, no label smoothing) of the test references, teacher-forced: how well
    a model fits text it never saw, whatever its decoding."""
    import torch

    from vanilla_transformer.modeling.modeling_vanilla_transformer import label_smoothed_loss_sums
    from vanilla_transformer.translation.folders import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(folder), device="cpu")
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), 64):
            chunk = rows[start:start + 64]
            batch = tokenizer([r["es"] for r in chunk], text_target=[r["en"] for r in chunk], padding=True,
                              return_tensors="pt")
            labels = batch["labels"].masked_fill(batch["labels"] == tokenizer.pad_token_id, -100)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).logits
            _, nll_sum, count = label_smoothed_loss_sums(logits, labels, 0.0)  # the model's own loss, unsmoothed
            total, tokens = total + float(nll_sum), tokens + int(count)
    return total / tokens


def score_folder(folder: Path) -> dict:
    """Beam-4 BLEU/chrF of a model folder of ours on the demo's test verses, and the references' NLL."""
    from vanilla_transformer.training.bible import load_bible
    from vanilla_transformer.training.evaluation import score
    from vanilla_transformer.translation import load_engine, translate

    rows = load_bible()["test"]["translation"]
    hypotheses = translate(load_engine(str(folder), device="cpu"), [r["es"] for r in rows])
    scores = score(hypotheses, [r["en"] for r in rows], where="test")
    return {"bleu": round(scores["bleu"], 2), "chrf": round(scores["chrf"], 2),
            "length_ratio": round(scores["length_ratio"], 3), "test_nll": round(test_nll(folder, rows), 4),
            "sentences": len(rows)}


# -- ours ----------------------------------------------------------------------------------------------------------
def run_ours(out: Path, seed: int, minutes: list[float], extra: list[str]) -> dict:
    run = out / "run"
    snapshots = {}
    for index, budget in enumerate(minutes):
        command = [sys.executable, "-m", "vanilla_transformer.cli.main", "train", *demo_train_arguments(),
                   "--max_steps", "1000000", "--max_time", f"{budget}m", "--eval_steps", "1000000000",
                   "--save_steps", "1000000000", "--eval_samples", "50", "--report_to", "none",
                   "--data_cache_dir", str(out.parent.parent / "cache"), "--output_dir", str(run),
                   "--seed", str(seed), *extra]
        command += ["--resume"] if index else ["--overwrite_output_dir"]
        with open(out / "train.log", "a", encoding="utf-8") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
        summary = json.loads((run / "final" / "run_summary.json").read_text(encoding="utf-8"))
        snapshot = out / f"{budget:g}min"
        shutil.rmtree(snapshot, ignore_errors=True)
        shutil.copytree(run / "final", snapshot)
        snapshots[f"{budget:g}"] = {"updates": summary["steps"], "train_seconds": summary["train_seconds"],
                                    "epochs": round(summary["epochs"], 3), "folder": str(snapshot)}
    return snapshots


# -- Marian + Seq2SeqTrainer ----------------------------------------------------------------------------------------
def run_marian(out: Path, seed: int, minutes: list[float], tokenizer_dir: Path) -> dict:
    import torch
    from transformers import (AutoTokenizer, DataCollatorForSeq2Seq, MarianConfig, MarianMTModel, Seq2SeqTrainer,
                              Seq2SeqTrainingArguments, TrainerCallback, set_seed)

    from vanilla_transformer.modeling.convert_marian import convert_marian
    from vanilla_transformer.training.bible import load_bible

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    train_rows = load_bible()["train"]

    def encode(batch):
        sources = [pair["es"] for pair in batch["translation"]]
        targets = [pair["en"] for pair in batch["translation"]]
        return tokenizer(sources, text_target=targets)

    data = train_rows.map(encode, batched=True, remove_columns=train_rows.column_names)
    data = data.filter(lambda row: len(row["input_ids"]) <= 200 and len(row["labels"]) <= 200)  # ours: --max_length
    set_seed(seed)
    config = MarianConfig(
        vocab_size=len(tokenizer), d_model=256, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=512, decoder_ffn_dim=512, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, activation_function="relu", scale_embedding=True, max_position_embeddings=512,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
        forced_eos_token_id=tokenizer.eos_token_id)
    model = MarianMTModel(config)
    budgets = [m * 60 for m in minutes]
    snapshots: dict = {}

    class Budget(TrainerCallback):
        """Snapshots at each budget of training time (the snapshot's own time not counted); stops at the last."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.start, self.paused = time.perf_counter(), 0.0

        def on_step_end(self, args, state, control, model=None, **kwargs):
            spent = time.perf_counter() - self.start - self.paused
            if len(snapshots) < len(budgets) and spent >= budgets[len(snapshots)]:
                pause = time.perf_counter()
                budget = minutes[len(snapshots)]
                folder = out / f"{budget:g}min"
                convert_marian(model).save_pretrained(folder)  # exact: the same weights in our layout
                tokenizer.save_pretrained(folder)
                snapshots[f"{budget:g}"] = {"updates": state.global_step, "train_seconds": round(spent, 1),
                                            "epochs": round(state.epoch, 3), "folder": str(folder)}
                self.paused += time.perf_counter() - pause
                if len(snapshots) == len(budgets):
                    control.should_training_stop = True
            return control

    arguments = Seq2SeqTrainingArguments(
        output_dir=str(out / "trainer"), max_steps=10_000_000, save_strategy="no", eval_strategy="no",
        logging_steps=100, report_to=[], seed=seed, data_seed=seed, dataloader_num_workers=0, use_cpu=True,
        disable_tqdm=True, **MARIAN_RECIPE)
    trainer = Seq2SeqTrainer(model=model, args=arguments, train_dataset=data,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
                             callbacks=[Budget()])
    torch.manual_seed(seed)
    trainer.train()
    return snapshots


def worker(args) -> None:
    """One (system, seed): train, translate every snapshot, append one JSON line to --json."""
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out_dir) / args.label / f"seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    minutes = [float(m) for m in args.minutes.split(",")]
    started = time.time()
    if args.worker == "ours":
        snapshots = run_ours(out, args.seed, minutes, shlex.split(args.ours_args))
    else:
        snapshots = run_marian(out, args.seed, minutes, Path(args.out_dir) / "prepare" / "tokenizer")
    for snapshot in snapshots.values():
        snapshot.update(score_folder(Path(snapshot["folder"])))
    import transformers

    line = {"system": args.worker, "label": args.label, "seed": args.seed, "threads": args.threads,
            "parallel": args.parallel, "ours_args": args.ours_args if args.worker == "ours" else None,
            "snapshots": snapshots, "cpu": cpu_name(), "isa": cpu_isa(), "torch": torch.__version__,
            "transformers": transformers.__version__, "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started))}
    with open(args.json, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line) + "\n")
    print(json.dumps(line))


# -- the table ------------------------------------------------------------------------------------------------------
def summary(values: list[float], digits: int = 2) -> str:
    """The mean, and with several values ± their sd (min–max)."""
    text = f"{statistics.mean(values):.{digits}f}"
    if len(values) > 1:
        text += f" ± {statistics.stdev(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"
    return text


def machine_table(lines: list[dict]) -> str:
    """The rows of one machine, and whether the default recipe (label `ours`) is ahead of Marian's at each budget by
    more than the seed spread (the larger of the two sds)."""
    groups: dict = {}
    for line in lines:
        for budget, snap in line["snapshots"].items():
            key = (float(budget), line["label"], line["threads"], line["parallel"])
            groups.setdefault(key, {"line": line, "runs": []})["runs"].append(snap)
    rows = ["| minutes | system | threads | seeds | updates | test BLEU | chrF | length ratio | test NLL |",
            "|---:|---|---|---:|---:|---|---|---|---|"]
    for (budget, label, threads, parallel), group in sorted(groups.items()):
        runs, line = group["runs"], group["line"]
        system = f"{label} (`{line['ours_args']}`)" if line["system"] == "ours" and line["ours_args"] else label
        nll = [r["test_nll"] for r in runs if "test_nll" in r]
        rows.append(f"| {budget:g} | {system} | {threads}{' (side by side)' if parallel > 1 else ''} | {len(runs)} | "
                    f"{statistics.mean(r['updates'] for r in runs):,.0f} | {summary([r['bleu'] for r in runs])} | "
                    f"{summary([r['chrf'] for r in runs])} | {summary([r['length_ratio'] for r in runs], 3)} | "
                    f"{summary(nll, 3) if len(nll) == len(runs) else '—'} |")
    verdicts = []
    for budget, threads, parallel in sorted({(key[0], key[2], key[3]) for key in groups}):
        ours, marian = (groups.get((budget, label, threads, parallel)) for label in ("ours", "marian"))
        if not ours or not marian or min(len(ours["runs"]), len(marian["runs"])) < 2:
            continue
        setting = "" if (threads, parallel) == (2, 1) else f" ({threads} threads, {parallel} side by side)"
        a, b = ([r["bleu"] for r in group["runs"]] for group in (ours, marian))
        lead, spread = statistics.mean(a) - statistics.mean(b), max(statistics.stdev(a), statistics.stdev(b))
        verdict = "ahead by more than the spread" if lead > spread else "NOT ahead by more than the spread"
        verdicts.append(f"at {budget:g} min{setting} the default recipe leads by {lead:+.2f} BLEU, seed spread (larger sd) "
                        f"{spread:.2f}: {verdict}")
    return "\n".join(rows) + ("\n\n" + "; ".join(verdicts) + "." if verdicts else "")


def table(lines: list[dict]) -> str:
    """One table per machine (CPU and instruction set): budgets are only comparable on one machine."""
    machines: dict = {}
    for line in lines:
        machines.setdefault((line["cpu"], line["isa"]), []).append(line)
    parts = []
    for (cpu, isa), group in sorted(machines.items(), key=lambda item: item[1][0]["started"], reverse=True):
        first = group[0]
        parts.append(f"{cpu} ({isa}), torch {first['torch']}, transformers {first['transformers']}, from "
                     f"{min(line['started'] for line in group)}:\n\n{machine_table(group)}")
    return (f"{BEGIN}\n## Recipes at equal training time (#32)\n\n`python benchmarks/recipe_race.py` (method in "
            "its docstring). `ours` is `vanilla-transformer train` with the demo's arguments and the recipe `--preset "
            "tiny` gets by default at the time of the run (labels name earlier defaults). Test BLEU/chrF: beam 4, "
            "α 0.6, the 952 test verses; several seeds: mean ± sd (min–max); test NLL: nats per reference token, "
            "teacher-forced, no smoothing.\n\n" + "\n\n".join(parts) + f"\n{END}")


def write_markdown(json_path: Path, markdown: Path) -> None:
    lines = [json.loads(line) for line in json_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        return
    section = table(lines)
    text = markdown.read_text(encoding="utf-8") if markdown.exists() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    markdown.write_text(text, encoding="utf-8")


def fill_nll(json_path: Path) -> None:
    """Add the test NLL to the snapshots of --json that lack it (lines written before it was measured)."""
    from vanilla_transformer.training.bible import load_bible

    rows = load_bible()["test"]["translation"]
    lines = [json.loads(line) for line in json_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for line in lines:
        for snapshot in line["snapshots"].values():
            if "test_nll" not in snapshot and Path(snapshot["folder"]).is_dir():
                snapshot["test_nll"] = round(test_nll(Path(snapshot["folder"]), rows), 4)
    json_path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default="ours,marian")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--minutes", default="12,20", help="training-time budgets, ascending")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of one run")
    parser.add_argument("--parallel", type=int, default=1, help="runs side by side (each with --threads)")
    parser.add_argument("--ours_args", default="", help="extra `train` arguments for ours (a recipe variant)")
    parser.add_argument("--label", default=None, help="name of this variant in the table (default: the system)")
    parser.add_argument("--out_dir", default="/tmp/recipe_race")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "recipe_race.json"))
    parser.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"), help="'' leaves it alone")
    parser.add_argument("--quick", action="store_true", help="1-minute budgets, one seed, own json/out_dir")
    parser.add_argument("--fill_nll", action="store_true", help="only add the missing test NLLs to --json's lines "
                        "(their snapshot folders must still exist), then rewrite --markdown")
    parser.add_argument("--worker", choices=("ours", "marian"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.fill_nll:
        fill_nll(Path(args.json))
        if args.markdown:
            write_markdown(Path(args.json), Path(args.markdown))
        return None
    if args.quick:
        args.minutes, args.seeds, args.markdown = "0.5,1", "1", ""
        args.json, args.out_dir = "/tmp/recipe_race_quick.json", "/tmp/recipe_race_quick"
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prepare(out)
    jobs = [(system, int(seed)) for seed in args.seeds.split(",") for system in args.systems.split(",")]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "RAYON_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    running: list[subprocess.Popen] = []
    for system, seed in jobs:
        while len(running) >= args.parallel:
            running = [job for job in running if job.poll() is None]
            if len(running) >= args.parallel:
                time.sleep(2)
        label = args.label or system if system == "ours" else system
        command = [sys.executable, __file__, "--worker", system, "--seed", str(seed), "--minutes", args.minutes,
                   "--threads", str(args.threads), "--parallel", str(args.parallel), f"--ours_args={args.ours_args}",
                   "--label", label, "--out_dir", args.out_dir, "--json", args.json]
        print("started:", system, "seed", seed, label, flush=True)
        running.append(subprocess.Popen(command, env=env))
    for job in running:
        job.wait()
    if args.markdown:
        write_markdown(Path(args.json), Path(args.markdown))


if __name__ == "__main__":
    main()
