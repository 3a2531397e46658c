#!/usr/bin/env python
"""Benchmark our Transformer against transformers' `MarianMTModel` in one run (same config, weights and inputs).

    python benchmarks/bench.py                      # everything, full size (several minutes on a laptop CPU)
    python benchmarks/bench.py --quick              # everything, shrunk: a smoke test of a minute or two
    python benchmarks/bench.py --parts train,decode --threads 4 --json /tmp/r.json --markdown /tmp/B.md
    python benchmarks/bench.py --quick --parts profile   # where the time goes (torch.profiler, top ops)

Both models have the transformer-base shape (6+6 layers, d_model 512, 8 heads, FFN 2048, ReLU, embeddings scaled by
√d_model, dropout 0.1) and the shared BPE vocabulary trained on the Bible training split (ids: pad 0, <s> 1 = decoder
start, </s> 2). A random `MarianMTModel` is built from a `MarianConfig` with a fixed seed and converted with
`convert_marian`, so the two models hold the same numbers (the largest logit difference is printed).

Parts (`--parts`, comma-separated; default all but `profile`):

* `train`    identical padded batch, train mode, fwd + bwd + Adam step; ms/step, interleaved A/B, median.
* `pipeline` the real input pipeline on the Bible training split: ours = `TokenBatchSampler` + `Seq2SeqCollator`,
             Marian = random (shuffled) batches + `transformers.DataCollatorForSeq2Seq`, both under the same token
             budget (see `--max-tokens`); non-pad target tokens per second, data fetch and collation included.
* `mfu`      FLOPs of one training step (fwd + bwd) counted with `FlopCounterMode` (+ attention score/value matmuls
             added analytically when the counter does not see SDPA, as on CPU) / the `train` step time, against the
             best fp32 `torch.mm` throughput measured in this run. Needs `train` (run automatically).
* `decode`   greedy and beam-4 `generate` on test sentences with one explicit `GenerationConfig` for both models;
             sentences/s, outputs asserted identical.
* `memory`   peak resident memory of a training step and of a beam-4 batch, each model alone in a fresh subprocess
             (`ru_maxrss`, which is process-wide and never decreases, hence one process per measurement).
* `profile`  `torch.profiler` key_averages (top ops by self CPU time) of a training step and of a beam-4 batch.
* `deploy`   CTranslate2 (needs `pip install "vanilla-transformer[ctranslate2]"`): greedy and beam-4 sentences/s of
             our `generate`, CTranslate2 fp32 and CTranslate2 int8 on the `decode` inputs and weights, each engine
             in its own process, interleaved rounds, fp32 outputs asserted identical to ours; then the Bible test
             BLEU of a trained model (`--deploy-model`, default demo_output/final) through each engine.

Results: a markdown table (printed, and written to `--markdown`, default BENCHMARKS.md at the repository root) and
every figure in JSON (`--json`, default benchmarks/results.json).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from machine import cpu_name

REPO = Path(__file__).resolve().parent.parent
PARTS = ("train", "pipeline", "mfu", "decode", "memory", "profile", "deploy")
DEFAULT_PARTS = ("train", "pipeline", "mfu", "decode", "memory")

# Targets from the issue "Performance: a benchmark against Marian in one run" (ratio = ours vs Marian, higher = better).
TARGETS = {"train": 1.05, "pipeline": 1.5, "beam4": 2.0, "mfu": 0.75}
# Targets from the issue "Deploy at production speed" (ratio = CTranslate2 vs our beam-4 `generate`).
DEPLOY_TARGETS = {"fp32": 1.5, "int8": 2.4}
DEPLOY_ENGINES = ("ours", "fp32", "int8")

FULL = dict(vocab_size=8000, max_tokens=4096, max_length=128, train_warmup=2, train_steps=10, pipeline_warmup=2,
            pipeline_steps=20, decode_sentences=64, decode_batch_size=16, max_source_tokens=64, max_new_tokens=32,
            decode_rounds=3, mm_size=2048, mm_repeats=10, profile_rows=20, profile_rounds=3, deploy_rounds=5,
            deploy_bleu_sentences=0)
QUICK = dict(vocab_size=8000, max_tokens=256, max_length=128, train_warmup=1, train_steps=3, pipeline_warmup=1,
             pipeline_steps=4, decode_sentences=16, decode_batch_size=8, max_source_tokens=64, max_new_tokens=8,
             decode_rounds=1, mm_size=1024, mm_repeats=5, profile_rows=15, profile_rounds=2, deploy_rounds=1,
             deploy_bleu_sentences=100)


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shrink every size and count (a smoke test)")
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)}, or 'all' (default: all but profile)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results.json"), help="where to write all figures")
    parser.add_argument("--markdown", default=str(REPO / "BENCHMARKS.md"), help="where to write the table ('' = don't)")
    parser.add_argument("--note", default="", help="a line added under the title of the markdown file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, default=6, help="encoder and decoder layers (6 = transformer-base)")
    parser.add_argument("--loop-adam", action="store_true",
                        help="Adam's per-tensor loop on both sides (default: fused=True on both, as training/train.py "
                             "and the Seq2SeqTrainer default 'adamw_torch_fused' use)")
    parser.add_argument("--no-check", action="store_true", help="report differing decode outputs instead of failing")
    sizes = parser.add_argument_group("sizes (defaults: full run; --quick changes the defaults, explicit values win)")
    for name, value in FULL.items():
        sizes.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                           help=f"full: {value}, quick: {QUICK[name]}")
    parser.add_argument("--deploy-model", default=str(REPO / "demo_output" / "final"),
                        help="a trained model folder for the deploy part's BLEU (default: demo_output/final; "
                             "skipped with a note when missing)")
    parser.add_argument("--memory-worker", nargs=3, metavar=("SIDE", "WORKLOAD", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--deploy-worker", nargs=2, metavar=("ENGINE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.parts = PARTS if args.parts == "all" else tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {PARTS}")
    if "mfu" in args.parts and "train" not in args.parts:
        args.parts = ("train",) + args.parts
    return args


# ---------------------------------------------------------------------------------------------------------------------
# Machine
# ---------------------------------------------------------------------------------------------------------------------


def version(package: str) -> str:
    try:
        from importlib.metadata import version as v

        return v(package)
    except Exception:  # not installed
        return "-"


def replace_section(path: Path, section: str, begin: str, end: str) -> None:
    """Replace a script's section of a Markdown file (between its `begin` and `end` markers), or append it; the
    rest of the file is kept."""
    from vanilla_transformer.base.files import write_text

    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    write_text(path, text)


def git_state() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                capture_output=True, text=True, timeout=10).stdout.splitlines()
        # Only changes to code count: the results files (and the README quoting them) change with every run.
        dirty = [line[3:] for line in status if not line[3:].endswith((".md", "results.json"))]
        return f"{head}{' (modified: ' + ', '.join(dirty) + ')' if dirty else ''}" if head else "-"
    except Exception:
        return "-"


def others_cpu_use(seconds: float = 2.0) -> float | None:
    """Fraction of all cores busy over `seconds` while this process sleeps: work by other processes. (The load
    average cannot tell: it lags by a minute and counts the benchmark itself.) None where /proc/stat is missing."""
    def ticks():
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])
    try:
        busy_before, total_before = ticks()
        time.sleep(seconds)
        busy_after, total_after = ticks()
    except (OSError, ValueError, IndexError):
        return None
    return (busy_after - busy_before) / max(total_after - total_before, 1)


def machine_info() -> dict:
    import torch

    return {
        "cpu": cpu_name(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "-")(),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "load_average_start": os.getloadavg(),
        "others_cpu_start": others_cpu_use(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("torch", "transformers", "tokenizers", "datasets", "numpy",
                                             "vanilla-transformer")},
        "git": git_state(),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Setup: data, tokenizer, the two models
# ---------------------------------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, flush=True)


def quiet_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def build_tokenizer(bible, vocab_size: int):
    from vanilla_transformer.training.data import translation_texts
    from vanilla_transformer.training.tokenizer import train_shared_bpe

    return train_shared_bpe(translation_texts(bible["train"], "es", "en"), vocab_size)


def marian_config(tokenizer, layers: int):
    from transformers import MarianConfig

    return MarianConfig(
        vocab_size=len(tokenizer), decoder_vocab_size=len(tokenizer), d_model=512,
        encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=8, decoder_attention_heads=8,
        encoder_ffn_dim=2048, decoder_ffn_dim=2048, activation_function="relu", scale_embedding=True,
        dropout=0.1, attention_dropout=0.0, activation_dropout=0.0, max_position_embeddings=1024, init_std=0.02,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id, forced_eos_token_id=None,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
    )


def neutral_generation_config(tokenizer, **settings):
    """One explicit generation config for both models: the ids, and nothing else but what the benchmark sets."""
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, forced_eos_token_id=None,
        bad_words_ids=None, do_sample=False, num_return_sequences=1, **settings,
    )


def build_models(tokenizer, args):
    import torch
    from transformers import MarianMTModel

    from vanilla_transformer.modeling.convert_marian import convert_marian, max_logit_difference

    torch.manual_seed(args.seed)
    marian = MarianMTModel(marian_config(tokenizer, args.layers)).eval()
    ours = convert_marian(marian).eval()
    difference = max_logit_difference(marian, ours)
    neutral = neutral_generation_config(tokenizer)
    marian.generation_config = copy.deepcopy(neutral)
    ours.generation_config = copy.deepcopy(neutral)
    return marian, ours, difference


def count_params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# ---------------------------------------------------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------------------------------------------------


def interleaved(functions: dict, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Run the functions in turn (A, B, A, B, ...): `warmup` untimed rounds, then `repeats` timed ones (seconds)."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def summary(seconds: list[float]) -> dict:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "runs": len(seconds), "all_s": seconds}


def train_step_fn(model, optimizer, batch):
    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        return loss

    return step


def make_optimizer(model):
    import torch

    fused = os.environ.get("BENCH_LOOP_ADAM") != "1"  # --loop-adam (also read by the memory subprocesses)
    return torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=fused or None)  # §5.3


# ---------------------------------------------------------------------------------------------------------------------
# Parts
# ---------------------------------------------------------------------------------------------------------------------


def fixed_batch(tokenized, tokenizer, max_tokens: int, seed: int):
    """The identical batch of `train` / `mfu` / `memory` / `profile`: the first batch of a shuffled
    `TokenBatchSampler` epoch, collated by `Seq2SeqCollator` (input_ids, attention_mask, labels, decoder_input_ids)."""
    from vanilla_transformer.training.data import Seq2SeqCollator, TokenBatchSampler

    sampler = TokenBatchSampler(tokenized["src_length"], tokenized["tgt_length"], max_tokens, shuffle=True, seed=seed)
    batches = sampler.epoch_batches(0)
    # The fullest batch among the first few, so that the batch is close to the budget rather than a leftover.
    sources, targets = sampler.src_lengths, sampler.tgt_lengths
    cost = lambda b: len(b) * (max(sources[i] for i in b) + max(targets[i] for i in b))  # noqa: E731
    indices = max(batches[:16], key=cost)
    rows = tokenized.select(indices)
    collate = Seq2SeqCollator(tokenizer.pad_token_id, tokenizer.bos_token_id)
    return collate([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])


def batch_shape(batch) -> dict:
    return {"sentences": batch["input_ids"].shape[0], "source_length": batch["input_ids"].shape[1],
            "target_length": batch["labels"].shape[1],
            "padded_tokens": batch["input_ids"].numel() + batch["labels"].numel(),
            "target_tokens": int((batch["labels"] != -100).sum())}


def part_train(models, batch, args) -> dict:
    """(a) fwd + bwd + Adam on the identical padded batch, train mode (dropout 0.1 on both)."""
    steps = {name: train_step_fn(model, optimizer, batch) for name, (model, optimizer) in models.items()}
    times = interleaved(steps, args.train_warmup, args.train_steps)
    result = {name: summary(t) for name, t in times.items()}
    result["batch"] = batch_shape(batch)
    result["ratio"] = result["marian"]["median_s"] / result["ours"]["median_s"]
    return result


def attention_flops(batch, layers: int, d_model: int) -> int:
    """fwd + bwd FLOPs of the score (QKᵀ) and value (PV) matmuls of every attention, padded positions included:
    each is 2·B·Tq·Tk·d_model forward, twice that backward, so 12·B·Tq·Tk·d per attention. Causal masking is not
    subtracted (the same convention as FlopCounterMode's SDPA formulas)."""
    b, s = batch["input_ids"].shape
    t = batch["labels"].shape[1]
    return 12 * b * d_model * layers * (s * s + t * t + t * s)


def count_step_flops(model, batch) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return {"counted": int(counter.get_total_flops()), "by_op": by_op,
            "sdpa_counted": any("scaled_dot_product" in op for op in by_op)}


def matmul_peak(size: int, repeats: int) -> dict:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    c = torch.empty(size, size)
    for _ in range(2):
        torch.mm(a, b, out=c)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - start)
    flops = 2 * size**3
    return {"size": size, "best_s": min(times), "median_s": statistics.median(times), "flops": flops,
            "peak_flop_s": flops / min(times), "median_flop_s": flops / statistics.median(times)}


def part_mfu(models, batch, train_result, args) -> dict:
    """(c) model FLOPs per training step / step time, against the measured fp32 matmul peak."""
    import torch

    peak = matmul_peak(args.mm_size, args.mm_repeats)
    result = {"matmul": peak}
    config = models["ours"][0].config
    attention = attention_flops(batch, args.layers, config.d_model)
    for name, (model, _) in models.items():
        counted = count_step_flops(model, batch)
        total = counted["counted"] + (0 if counted["sdpa_counted"] else attention)
        step = train_result[name]["median_s"]
        result[name] = {**counted, "attention_added": 0 if counted["sdpa_counted"] else attention,
                        "flops_per_step": total, "step_s": step, "flop_s": total / step,
                        "mfu": total / step / peak["peak_flop_s"]}
    ours = models["ours"][0]
    matmul_params = sum(m.weight.numel() for m in ours.modules() if isinstance(m, torch.nn.Linear))
    shape = batch_shape(batch)
    b, s = batch["input_ids"].shape
    t = batch["labels"].shape[1]
    # 6·N·tokens with N split by where it runs: the encoder's weights and the decoder's cross-attention K/V
    # projections see the B·S source positions, every other weight (lm_head included) the B·T target positions.
    source_side = sum(m.weight.numel() for n, m in ours.named_modules() if isinstance(m, torch.nn.Linear)
                      and (".encoder." in f".{n}." or n.endswith(("cross_attn.k_proj", "cross_attn.v_proj"))))
    result["analytic_6N"] = 6 * (source_side * b * s + (matmul_params - source_side) * b * t) + attention
    result["matmul_params"] = matmul_params
    result["batch"] = shape
    return result


def feature_rows(features, indices):
    rows = features[list(indices)]
    return [{"input_ids": i, "labels": l} for i, l in zip(rows["input_ids"], rows["labels"])]


def part_pipeline(models, tokenized, tokenizer, args) -> dict:
    """(b) real pipeline: bucketed batches + our collator vs random batches + DataCollatorForSeq2Seq, same budget."""
    from transformers import DataCollatorForSeq2Seq

    from baselines import random_batches
    from vanilla_transformer.training.data import Seq2SeqCollator, TokenBatchSampler, batch_cost, padding_fraction

    src, tgt = list(tokenized["src_length"]), list(tokenized["tgt_length"])
    features = tokenized.select_columns(["input_ids", "labels"])
    plans = {
        "ours": TokenBatchSampler(src, tgt, args.max_tokens, shuffle=True, seed=args.seed).epoch_batches(0),
        "marian": random_batches(src, tgt, args.max_tokens, seed=args.seed),
    }
    collators = {
        "ours": Seq2SeqCollator(tokenizer.pad_token_id, tokenizer.bos_token_id),
        "marian": DataCollatorForSeq2Seq(tokenizer, model=models["marian"][0], label_pad_token_id=-100,
                                         return_tensors="pt"),
    }
    result = {"budget": {"max_tokens": args.max_tokens, "definition":
                         "batch cost = sentences × (longest source + longest target) ≤ max_tokens, batches cut "
                         "greedily; ours from length-sorted order (TokenBatchSampler), Marian from a random order "
                         "(benchmarks/baselines.random_batches)"}}
    for name, batches in plans.items():
        costs = [batch_cost([(src[i], tgt[i]) for i in b]) for b in batches]
        result[name] = {"epoch_batches": len(batches), "mean_padded_tokens_per_batch": statistics.mean(costs),
                        "mean_sentences_per_batch": len(src) / len(batches),
                        "padding_fraction": padding_fraction(batches, src, tgt)}
        target_real = sum(tgt)
        target_padded = sum(len(b) * max(tgt[i] for i in b) for b in batches)
        result[name]["target_padding_fraction"] = 1 - target_real / target_padded

    counters = {name: {"seconds": [], "target_tokens": [], "padded_tokens": []} for name in plans}
    total = args.pipeline_warmup + args.pipeline_steps
    for i in range(total):
        for name in ("ours", "marian"):
            model, optimizer = models[name]
            indices = plans[name][i % len(plans[name])]
            start = time.perf_counter()
            batch = collators[name](feature_rows(features, indices))
            optimizer.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            optimizer.step()
            elapsed = time.perf_counter() - start
            if i >= args.pipeline_warmup:
                counters[name]["seconds"].append(elapsed)
                counters[name]["target_tokens"].append(int((batch["labels"] != -100).sum()))
                counters[name]["padded_tokens"].append(batch["input_ids"].numel() + batch["labels"].numel())
    for name, c in counters.items():
        result[name].update(steps=len(c["seconds"]), seconds=sum(c["seconds"]),
                            target_tokens=sum(c["target_tokens"]),
                            measured_padded_tokens_per_batch=statistics.mean(c["padded_tokens"]),
                            tokens_per_s=sum(c["target_tokens"]) / sum(c["seconds"]), step_s=c["seconds"])
    result["ratio"] = result["ours"]["tokens_per_s"] / result["marian"]["tokens_per_s"]
    return result


def decode_inputs(bible, tokenizer, args):
    """The first `decode_sentences` test verses whose source has at most `max_source_tokens` tokens, in batches."""
    sources = []
    for row in bible["test"]:
        text = row["translation"]["es"]
        if len(tokenizer(text)["input_ids"]) <= args.max_source_tokens:
            sources.append(text)
        if len(sources) == args.decode_sentences:
            break
    return [tokenizer(sources[i:i + args.decode_batch_size], padding=True, return_tensors="pt")
            for i in range(0, len(sources), args.decode_batch_size)], len(sources)


def generation_settings(args, beams: int) -> dict:
    return dict(num_beams=beams, max_new_tokens=args.max_new_tokens, length_penalty=0.6 if beams > 1 else 1.0,
                early_stopping=beams > 1, use_cache=True)


def part_decode(models, batches, count, tokenizer, args) -> dict:
    import torch

    result = {"sentences": count, "batch_size": args.decode_batch_size, "max_source_tokens": args.max_source_tokens}
    for mode, beams in (("greedy", 1), ("beam4", 4)):
        config = neutral_generation_config(tokenizer, **generation_settings(args, beams))
        outputs = {name: [] for name in models}

        def runner(name, keep):
            def run():
                for batch in batches:
                    generated = models[name].generate(input_ids=batch["input_ids"],
                                                      attention_mask=batch["attention_mask"],
                                                      generation_config=copy.deepcopy(config))
                    if keep:
                        outputs[name].append(generated)
            return run

        with torch.inference_mode():
            runner("ours", True)()  # warm-up, and the outputs compared below
            runner("marian", True)()
            times = interleaved({name: runner(name, False) for name in models}, 0, args.decode_rounds)
        mismatched = 0
        for mine, theirs in zip(outputs["ours"], outputs["marian"]):
            if mine.shape != theirs.shape:
                mismatched += mine.shape[0]
            else:
                mismatched += int((mine != theirs).any(dim=1).sum())
        lengths = [int((o != tokenizer.pad_token_id).sum(dim=1).float().mean()) for o in outputs["ours"]]
        entry = {"settings": {**config.to_diff_dict(), "max_new_tokens": args.max_new_tokens},
                 "mismatched_sentences": mismatched, "mean_output_tokens": statistics.mean(lengths)}
        for name, t in times.items():
            entry[name] = {**summary(t), "sentences_per_s": count / statistics.median(t)}
        entry["ratio"] = entry["ours"]["sentences_per_s"] / entry["marian"]["sentences_per_s"]
        result[mode] = entry
        if mismatched and not args.no_check:
            raise AssertionError(f"{mode}: {mismatched} of {count} outputs differ between ours and Marian "
                                 "(same weights, same generation config); --no-check to report instead")
    return result


def proc_status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_worker(side: str, workload: str, folder: str, threads: int | None) -> None:
    """In a fresh process: load one model, run one workload twice, print the peak RSS as JSON."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    quiet_libraries()
    folder = Path(folder)
    if side == "ours":
        from vanilla_transformer.modeling.modeling_vanilla_transformer import (
            VanillaTransformerForConditionalGeneration as Model)
    else:
        from transformers import MarianMTModel as Model
    model = Model.from_pretrained(folder / side)
    gc.collect()
    loaded_peak = proc_status_kib("VmHWM")
    before = proc_status_kib("VmRSS")
    reset = reset_peak_rss()
    if workload == "train":
        model.train()
        batch = torch.load(folder / "train_batch.pt", weights_only=True)
        step = train_step_fn(model, make_optimizer(model), batch)
        for _ in range(2):
            step()
    else:
        decode = torch.load(folder / "decode_batch.pt", weights_only=True)
        config = json.loads((folder / "generation.json").read_text())
        from transformers import GenerationConfig

        with torch.inference_mode():
            for _ in range(2):
                model.generate(input_ids=decode["input_ids"], attention_mask=decode["attention_mask"],
                               generation_config=GenerationConfig(**config))
    peak = proc_status_kib("VmHWM")
    print(json.dumps({"side": side, "workload": workload, "rss_before_kib": before, "peak_loading_kib": loaded_peak,
                      "peak_reset": reset, "peak_kib": max(peak, loaded_peak), "workload_peak_kib": peak,
                      "increment_kib": peak - before}))


def part_memory(marian, ours, train_batch, decode_batch, tokenizer, args) -> dict:
    import torch

    result = {"method": "each model alone in a fresh subprocess, loaded with from_pretrained from a temporary "
                        "folder; the workload runs twice (a training step: forward, backward, Adam; or generate "
                        "on the first decoding batch). peak = the process's VmHWM (peak RSS, /proc/self/status: "
                        "Python, torch, weights and workload; `ru_maxrss` is not used because Linux carries the "
                        "parent's RSS into a forked child's maxrss); increment = VmHWM during the workload (reset "
                        "via /proc/self/clear_refs just before) − RSS just before the workload"}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as folder:
        folder = Path(folder)
        marian.save_pretrained(folder / "marian")
        ours.save_pretrained(folder / "ours")
        torch.save(train_batch, folder / "train_batch.pt")
        torch.save({k: decode_batch[k] for k in ("input_ids", "attention_mask")}, folder / "decode_batch.pt")
        config = neutral_generation_config(tokenizer, **generation_settings(args, 4)).to_dict()
        (folder / "generation.json").write_text(json.dumps(config))
        for workload in ("train", "beam4"):
            result[workload] = {}
            for side in ("ours", "marian"):
                command = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", side, workload,
                           str(folder)]
                if args.threads:
                    command += ["--threads", str(args.threads)]
                done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
                if done.returncode:
                    raise RuntimeError(f"memory worker {side}/{workload} failed:\n{done.stderr[-3000:]}")
                result[workload][side] = json.loads(done.stdout.strip().splitlines()[-1])
            r = result[workload]
            r["ratio_peak"] = r["marian"]["peak_kib"] / r["ours"]["peak_kib"]
            r["ratio_increment"] = r["marian"]["increment_kib"] / max(1, r["ours"]["increment_kib"])
    return result


def top_ops(profiler, rows: int) -> list[dict]:
    events = sorted(profiler.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
             "self_share": e.self_cpu_time_total / total, "total_ms": e.cpu_time_total / 1e3} for e in events[:rows]]


# Self CPU time of the profiled ops, grouped: the matrix products both models must do alike, attention kernels,
# copies that caches and beam reordering cause, and everything else.
OP_GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward", "aten::_softmax",
                  "aten::_softmax_backward_data"),
    "copies": ("aten::index_select", "aten::cat", "aten::copy_"),
}


def op_groups(profiler) -> dict:
    grouped = dict.fromkeys([*OP_GROUPS, "other"], 0.0)
    for event in profiler.key_averages():
        group = next((name for name, ops in OP_GROUPS.items() if event.key in ops), "other")
        grouped[group] += event.self_cpu_time_total / 1e6
    return grouped


def part_profile(train_models, eval_models, train_batch, decode_batch, tokenizer, args) -> dict:
    """One training step and one beam-4 batch per model under `torch.profiler`, in turns (ours, Marian, ours, ...)
    for `profile_rounds` rounds; the round with the shortest wall time is kept for each (the least disturbed one)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    config = neutral_generation_config(tokenizer, **generation_settings(args, 4))
    workloads = {}
    for name in ("ours", "marian"):
        model, optimizer = train_models[name]
        workloads[f"train/{name}"] = train_step_fn(model, optimizer, train_batch)
        workloads[f"beam4/{name}"] = (lambda m: lambda: m.generate(
            input_ids=decode_batch["input_ids"], attention_mask=decode_batch["attention_mask"],
            generation_config=copy.deepcopy(config)))(eval_models[name])
    result = {}
    for key in ("train/ours", "train/marian", "beam4/ours", "beam4/marian"):  # warm-up
        with torch.inference_mode(key.startswith("beam4")):
            workloads[key]()
    for _ in range(args.profile_rounds):
        for key, function in workloads.items():
            with torch.inference_mode(key.startswith("beam4")), profile(activities=[ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                function()
                wall = time.perf_counter() - start
            if key not in result or wall < result[key]["wall_s"]:
                result[key] = {"wall_s": wall, "top": top_ops(prof, args.profile_rows), "groups_s": op_groups(prof),
                               "table": prof.key_averages().table(sort_by="self_cpu_time_total",
                                                                  row_limit=args.profile_rows)}
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------------------
# Deploy: our `generate` vs CTranslate2 fp32 and int8, each in its own process
# ---------------------------------------------------------------------------------------------------------------------

WORKER_PREFIX = "@@ "  # marks the worker's answers on stdout (libraries may print too)


def cut_after_end(rows: list[list[int]], eos: int) -> list[list[int]]:
    """`generate` rows without the start token, each ending at its first end token (padding after it dropped)."""
    return [row[1:][:row[1:].index(eos) + 1] if eos in row[1:] else row[1:] for row in rows]


def deploy_worker(engine: str, folder: str, threads: int | None) -> None:
    """One engine in a process of its own: load it, answer `greedy` / `beam4` lines on stdin with the decoding time
    of all batches (and the outputs when the line ends with ` outputs`), until stdin closes."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    quiet_libraries()
    folder = Path(folder)
    spec = json.loads((folder / "inputs.json").read_text())
    batches, settings = spec["batches"], spec["settings"]
    if engine == "ours":
        from transformers import GenerationConfig

        from vanilla_transformer.modeling.modeling_vanilla_transformer import (
            VanillaTransformerForConditionalGeneration as Model)
        from vanilla_transformer.translation import pad_batch

        model = Model.from_pretrained(folder / "ours").eval()
        padded = [pad_batch(batch, spec["pad"], "cpu") for batch in batches]
        configs = {mode: GenerationConfig(**config) for mode, config in settings.items()}

        def run(mode):
            outputs = []
            with torch.inference_mode():
                for input_ids, attention_mask in padded:
                    generated = model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                               generation_config=copy.deepcopy(configs[mode]))
                    outputs += cut_after_end(generated.tolist(), spec["eos"])
            return outputs
    else:
        from vanilla_transformer.deployment.ctranslate2_runtime import CTranslate2Translator

        translator = CTranslate2Translator(folder / engine, threads=threads or 0)

        def run(mode):
            config = settings[mode]
            outputs = []
            for batch in batches:
                outputs += translator.generate_ids(batch, config["num_beams"], config.get("length_penalty", 1.0),
                                                   max_new_tokens=config["max_new_tokens"])
            return outputs

    print(WORKER_PREFIX + json.dumps({"ready": engine}), flush=True)
    for line in sys.stdin:
        mode, _, want = line.strip().partition(" ")
        start = time.perf_counter()
        outputs = run(mode)
        seconds = time.perf_counter() - start
        print(WORKER_PREFIX + json.dumps({"seconds": seconds, "outputs": outputs if want else None}), flush=True)


class Worker:
    """A `--deploy-worker` subprocess and its line protocol."""

    def __init__(self, engine: str, folder: Path, threads: int):
        command = [sys.executable, str(Path(__file__).resolve()), "--deploy-worker", engine, str(folder),
                   "--threads", str(threads)]
        self.engine = engine
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
        self.read()  # "ready"

    def read(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(WORKER_PREFIX):
                return json.loads(line[len(WORKER_PREFIX):])
        raise RuntimeError(f"deploy worker {self.engine} exited with status {self.process.wait()}")

    def ask(self, mode: str, outputs: bool = False) -> dict:
        self.process.stdin.write(mode + (" outputs" if outputs else "") + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def part_deploy(ours, batches, count, tokenizer, bible, args) -> dict:
    """Speed of the three engines on the `decode` inputs and weights, then the trained model's BLEU through each."""
    import torch

    from vanilla_transformer.deployment.ctranslate2_convert import export_ctranslate2

    threads = args.threads or torch.get_num_threads()
    result = {"sentences": count, "batch_size": args.decode_batch_size, "max_source_tokens": args.max_source_tokens,
              "threads": threads, "rounds": args.deploy_rounds, "ctranslate2": version("ctranslate2")}
    settings = {mode: neutral_generation_config(tokenizer, **generation_settings(args, beams)).to_dict()
                for mode, beams in (("greedy", 1), ("beam4", 4))}
    for config in settings.values():
        config["max_new_tokens"] = args.max_new_tokens
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as folder:
        folder = Path(folder)
        ours.save_pretrained(folder / "ours")
        for engine, quantization in (("fp32", None), ("int8", "int8")):
            export_ctranslate2(ours, folder / engine, tokenizer=tokenizer, quantization=quantization)
        unpadded = [[ids[mask.bool()].tolist() for ids, mask in zip(b["input_ids"], b["attention_mask"])]
                    for b in batches]
        (folder / "inputs.json").write_text(json.dumps({"batches": unpadded, "settings": settings,
                                                        "pad": tokenizer.pad_token_id, "eos": tokenizer.eos_token_id}))
        workers = {engine: Worker(engine, folder, threads) for engine in DEPLOY_ENGINES}
        try:
            outputs = {mode: {e: w.ask(mode, outputs=True)["outputs"] for e, w in workers.items()} for mode in settings}
            times = {mode: {engine: [] for engine in workers} for mode in settings}
            for _ in range(args.deploy_rounds):  # interleaved: ours, fp32, int8, ours, ...
                for mode in settings:
                    for engine, worker in workers.items():
                        times[mode][engine].append(worker.ask(mode)["seconds"])
        finally:
            for worker in workers.values():
                worker.close()
    for mode in settings:
        entry = {"settings": {k: v for k, v in settings[mode].items() if k in ("num_beams", "length_penalty",
                                                                            "early_stopping", "max_new_tokens")}}
        reference = outputs[mode]["ours"]
        for engine in DEPLOY_ENGINES:
            same = sum(a == b for a, b in zip(outputs[mode][engine], reference))
            entry[engine] = {**summary(times[mode][engine]), "sentences_per_s": count / statistics.median(
                times[mode][engine]), "identical_to_ours": same}
            entry[engine]["speedup"] = entry[engine]["sentences_per_s"] / entry["ours"]["sentences_per_s"]
        entry["mean_output_tokens"] = statistics.mean(len(row) for row in reference)
        result[mode] = entry
        if entry["fp32"]["identical_to_ours"] != count and not args.no_check:
            raise AssertionError(f"deploy {mode}: {count - entry['fp32']['identical_to_ours']} of {count} CTranslate2 "
                                 "fp32 outputs differ from ours; --no-check to report instead")
    result["overhead"] = deploy_overhead(tokenizer, batches[0], threads, args)
    gap = count / result["greedy"]["ours"]["sentences_per_s"] - count / result["greedy"]["fp32"]["sentences_per_s"]
    per_step = result["overhead"]["ours_ms_per_step"] - result["overhead"]["fp32_ms_per_step"]
    result["overhead"]["share_of_greedy_gap"] = per_step / 1e3 * args.max_new_tokens * len(batches) / gap
    result["bleu"] = deploy_bleu(bible, threads, args)
    return result


def deploy_overhead(tokenizer, batch, threads: int, args) -> dict:
    """The fixed cost of a greedy step, without the matrix products: a model with the same vocabulary but d_model 16
    and 1+1 layers decodes the first `decode` batch for exactly `max_new_tokens` steps, ours vs CTranslate2 fp32
    (in this process, interleaved). What `generate` spends per step beyond CTranslate2 is Python and small ops."""
    import torch

    from vanilla_transformer.configuration.configuration_vanilla_transformer import VanillaTransformerConfig
    from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration
    from vanilla_transformer.deployment.ctranslate2_convert import export_ctranslate2
    from vanilla_transformer.deployment.ctranslate2_runtime import CTranslate2Translator

    torch.manual_seed(args.seed)
    config = VanillaTransformerConfig(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, dropout=0.0,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.bos_token_id)
    model = VanillaTransformerForConditionalGeneration(config).eval()
    steps = args.max_new_tokens
    generation = neutral_generation_config(tokenizer, num_beams=1, max_new_tokens=steps, min_new_tokens=steps)
    sources = [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as folder:
        translator = CTranslate2Translator(export_ctranslate2(model, Path(folder) / "ct2", tokenizer=tokenizer),
                                           threads=threads)
        tokens = [[translator.tokens[i] for i in source] for source in sources]

        def ours():
            with torch.inference_mode():
                model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               generation_config=copy.deepcopy(generation))

        def fp32():
            translator.translator.translate_batch(tokens, beam_size=1, max_decoding_length=steps,
                                                  min_decoding_length=steps, max_input_length=0)

        times = interleaved({"ours": ours, "fp32": fp32}, 2, 10)
    return {"sentences": len(sources), "steps": steps, "d_model": 16, "layers": 1,
            **{f"{name}_ms_per_step": statistics.median(t) * 1e3 / steps for name, t in times.items()}}


def deploy_bleu(bible, threads: int, args) -> dict:
    """The Bible test BLEU of a trained model through each engine (§6.1 decoding, `translation.translate` batching)."""
    from vanilla_transformer.deployment.ctranslate2_convert import export_ctranslate2
    from vanilla_transformer.deployment.engines import load_engine
    from vanilla_transformer.training.evaluation import score, translation_pairs
    from vanilla_transformer.translation import TransformersEngine, load_model_and_tokenizer, translate

    model_dir = Path(args.deploy_model)
    if not (model_dir / "config.json").is_file():
        return {"skipped": f"no trained model at {display_path(str(model_dir))}; run `make demo` or pass "
                           "--deploy-model"}
    limit = args.deploy_bleu_sentences or None
    sources, references = translation_pairs(bible["test"], "es", "en", limit)
    model, tokenizer = load_model_and_tokenizer(str(model_dir), "cpu")
    result = {"model": display_path(str(model_dir)), "sentences": len(sources)}
    hypotheses = {}

    def measure(name, function):
        start = time.perf_counter()
        hypotheses[name] = function()
        result[name] = {**score(hypotheses[name], references), "seconds": time.perf_counter() - start}
        log(f"  BLEU {name}: {result[name]['bleu']:.2f} ({result[name]['seconds']:.1f} s)")

    ours = TransformersEngine(model, tokenizer)
    measure("ours", lambda: translate(ours, sources))
    model.generation_config.early_stopping = True  # CTranslate2's stopping rule
    measure("ours_early_stopping", lambda: translate(ours, sources))
    with tempfile.TemporaryDirectory(prefix="bench-deploy-bleu-") as folder:
        for engine, quantization in (("fp32", None), ("int8", "int8")):
            exported = export_ctranslate2(model_dir, Path(folder) / engine, quantization=quantization)
            translator = load_engine(str(exported), "ctranslate2", "cpu", threads=threads)
            measure(engine, lambda: translate(translator, sources))
    for name in ("ours_early_stopping", "fp32", "int8"):
        result[name]["identical_to_ours"] = sum(a == b for a, b in zip(hypotheses[name], hypotheses["ours"]))
    for name in ("fp32", "int8"):
        result[name]["identical_to_ours_early_stopping"] = sum(
            a == b for a, b in zip(hypotheses[name], hypotheses["ours_early_stopping"]))
    return result


NOTES_MARKER = "<!-- bench.py writes everything above this line; the notes below are kept across runs -->"


def display_path(path: str) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def verdict(ratio: float, target: float | None) -> str:
    if target is None:
        return "—"
    return "✅" if ratio >= target else "❌"


def markdown(results: dict, args) -> str:
    m = results["machine"]
    lines = ["# Benchmarks: vanilla-transformer vs transformers' MarianMTModel", ""]
    if args.note:
        lines += [f"> {args.note}", ""]
    load_start, load_end = m["load_average_start"][0], m.get("load_average_end", [float("nan")])[0]
    others = [v for v in (m.get("others_cpu_start"), m.get("others_cpu_end")) if v is not None]
    if others and max(others) > 0.25:
        lines += [f"> ⚠️ **Preliminary / noisy**: other processes kept the machine busy ({others[0]:.0%} of the cores "
                  f"before the run, {others[-1]:.0%} after). Re-run on an idle machine.", ""]
    if args.quick:
        lines += ["> ⚠️ `--quick` run: shrunk batches and counts, a smoke test rather than a measurement.", ""]
    lines += [
        f"Command: `{shlex.join(['python', 'benchmarks/bench.py', *results['argv']])}`",
        f"All figures: `{display_path(args.json) if args.json else '-'}`. Ratio = ours vs Marian, "
        "higher is better for ours.", "",
        "## Machine", "",
        "| | |", "|---|---|",
        f"| CPU | {m['cpu']} |",
        f"| cores (logical / usable) | {m['logical_cores']} / {m['usable_cores']} |",
        f"| torch threads (intra / inter-op) | {m['torch_threads']} / {m['torch_interop_threads']} |",
        f"| CPU capability, MKL, oneDNN | {m['cpu_capability']}, {m['mkl']}, {m['mkldnn']} |",
        f"| other processes' CPU use before / after the run | {percent(m.get('others_cpu_start'))} / "
        f"{percent(m.get('others_cpu_end'))} (load average {load_start:.2f} / {load_end:.2f}) |",
        f"| Python, platform | {m['python']}, {m['platform']} |",
        "| versions | " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + " |",
        f"| git | {m['git']} |",
        f"| setup | vocab {results['setup']['vocab_size']}, {results['setup']['layers']}+{results['setup']['layers']}"
        f" layers, {results['setup']['parameters'] / 1e6:.1f} M parameters, max logit difference after conversion "
        f"{results['setup']['max_logit_difference']:.1e} |",
        "",
    ]
    r = results["parts"]
    rows = []
    if "train" in r:
        t = r["train"]
        b = t["batch"]
        rows += [("Training, identical batches",
                  f"ms / step (fwd + bwd + Adam), batch {b['sentences']}×({b['source_length']}+{b['target_length']}) "
                  f"= {b['padded_tokens']} padded tokens, median of {t['ours']['runs']}",
                  f"{t['ours']['median_s'] * 1e3:.0f}", f"{t['marian']['median_s'] * 1e3:.0f}", t["ratio"],
                  TARGETS["train"])]
    if "pipeline" in r:
        p = r["pipeline"]
        rows += [("Real pipeline (Bible train)",
                  f"non-pad target tokens / s, budget {p['budget']['max_tokens']} padded tokens / batch "
                  f"(mean {p['ours']['mean_padded_tokens_per_batch']:.0f} ours vs "
                  f"{p['marian']['mean_padded_tokens_per_batch']:.0f} Marian; padding "
                  f"{p['ours']['padding_fraction']:.0%} vs {p['marian']['padding_fraction']:.0%}), "
                  f"{p['ours']['steps']} steps each",
                  f"{p['ours']['tokens_per_s']:.0f}", f"{p['marian']['tokens_per_s']:.0f}", p["ratio"],
                  TARGETS["pipeline"])]
    if "mfu" in r:
        f = r["mfu"]
        rows += [("MFU",
                  f"model FLOP/s ÷ measured fp32 matmul peak ({f['matmul']['peak_flop_s'] / 1e9:.0f} GFLOP/s, "
                  f"{f['matmul']['size']}² mm); {f['ours']['flops_per_step'] / 1e9:.1f} GFLOP / step",
                  f"{f['ours']['mfu']:.0%}", f"{f['marian']['mfu']:.0%}", f["ours"]["mfu"], TARGETS["mfu"])]
    if "decode" in r:
        d = r["decode"]
        for mode, label in (("greedy", "greedy"), ("beam4", "beam 4")):
            e = d[mode]
            rows += [(f"Decoding, {label}",
                      f"sentences / s, {d['sentences']} test sentences (source ≤ {d['max_source_tokens']} tokens), "
                      f"batch {d['batch_size']}, max_new_tokens {e['settings']['max_new_tokens']}, outputs "
                      f"{'identical' if not e['mismatched_sentences'] else str(e['mismatched_sentences']) + ' differ'}",
                      f"{e['ours']['sentences_per_s']:.2f}", f"{e['marian']['sentences_per_s']:.2f}", e["ratio"],
                      TARGETS["beam4"] if mode == "beam4" else None)]
    if "memory" in r:
        mem = r["memory"]
        for workload, label in (("train", "training step"), ("beam4", "beam-4 batch")):
            e = mem[workload]
            rows += [(f"Memory, {label}",
                      "peak RSS MiB (increment over the loaded model), fresh subprocess each; ratio = Marian / ours",
                      f"{e['ours']['peak_kib'] / 1024:.0f} (+{e['ours']['increment_kib'] / 1024:.0f})",
                      f"{e['marian']['peak_kib'] / 1024:.0f} (+{e['marian']['increment_kib'] / 1024:.0f})",
                      e["ratio_peak"], None)]
    if rows:
        lines += ["## Results", "", "| section | measure | ours | Marian | ratio | target | met |",
                  "|---|---|---:|---:|---:|---:|:---:|"]
        for section, measure, ours, marian, ratio, target in rows:
            shown = f"{ratio:.0%}" if section == "MFU" else f"{ratio:.2f}×"
            if target is not None and section != "MFU" and ratio < target <= round(ratio, 2):
                shown = f"{ratio:.3f}×"  # rounding must not show a missed target as met
            target_text = "—" if target is None else (f"≥ {target:.0%} of peak" if section == "MFU"
                                                      else f"≥ {target:.2f}×")
            lines.append(f"| {section} | {measure} | {ours} | {marian} | {shown} | {target_text} | "
                         f"{verdict(ratio, target)} |")
        lines.append("")
    if "deploy" in r:
        lines += deploy_markdown(r["deploy"])
    if "profile" in r:
        lines += ["## Where the time goes (torch.profiler, self CPU time; the least disturbed of "
                  f"{args.profile_rounds} rounds)", "",
                  "| workload | model | wall ms | matmul (mm, addmm, bmm) | attention kernels + softmax | "
                  "index_select, cat, copy_ | other |", "|---|---|---:|---:|---:|---:|---:|"]
        for workload, label in (("train", "training step (fwd + bwd + Adam)"), ("beam4", "beam-4 batch")):
            for name in ("ours", "marian"):
                e = r["profile"][f"{workload}/{name}"]
                total = sum(e["groups_s"].values()) or 1
                lines.append(f"| {label} | {name} | {e['wall_s'] * 1e3:.0f} | " + " | ".join(
                    f"{e['groups_s'][g] * 1e3:.0f} ({e['groups_s'][g] / total:.0%})" for g in [*OP_GROUPS, "other"])
                    + " |")
        lines += ["", "The top ops of each are in the JSON (`parts.profile`).", ""]
    lines += [
        "## Method", "",
        "* **Same model, same weights**: a random `MarianMTModel` (seed "
        f"{args.seed}, `init_std` 0.02) with the transformer-base shape, ReLU, `scale_embedding=True`, dropout 0.1, "
        "ids pad 0 / `<s>` 1 (decoder start) / `</s>` 2, converted with `convert_marian`.",
        "* **Timings** are interleaved (ours, Marian, ours, Marian, ...) after untimed warm-up rounds; medians are "
        "reported, all runs are in the JSON.",
        "* **Training, identical batches**: the same collated batch (the fullest of the first batches of a shuffled "
        "`TokenBatchSampler` epoch) goes to both models in train mode; one step = `zero_grad`, forward with `labels` "
        "(plain cross-entropy on both), backward, `torch.optim.Adam` step (β = 0.9, 0.98, ε = 1e-9; "
        f"{'the per-tensor loop' if args.loop_adam else 'fused=True, as training/train.py and Seq2SeqTrainer'}).",
        "* **Real pipeline**: the same token budget on both sides, cost of a batch = sentences × (longest source + "
        "longest target) ≤ `max_tokens`, cut greedily; ours cuts length-sorted buckets (`TokenBatchSampler`, "
        "shuffled batch order) and collates with `Seq2SeqCollator`, Marian cuts a random order "
        "(`benchmarks/baselines.random_batches`) and collates with `DataCollatorForSeq2Seq`. Timed per step: fetching the "
        "rows from the dataset, collation, forward, backward, Adam. Throughput = Σ non-pad target tokens / Σ time.",
        "* **MFU**: FLOPs of one training step (forward + backward) counted by `torch.utils.flop_counter."
        "FlopCounterMode`; SDPA on CPU is invisible to the counter, so the attention score and value matmuls are "
        "added analytically (12 · B · T_q · T_k · d_model per attention, padded positions included, causal half not "
        "subtracted). The Adam step's elementwise work is not counted. Divided by the median training step time and "
        "by the best-of-N fp32 `torch.mm` throughput of a square matrix measured in the same run.",
        "* **Decoding**: one explicit `GenerationConfig` for both (ids above, no `bad_words_ids`, no forced EOS, "
        "`do_sample=False`); greedy: `num_beams=1`; beam 4: `num_beams=4, length_penalty=0.6, early_stopping=True`; "
        "`max_new_tokens` capped because random weights rarely emit `</s>`. Outputs are asserted identical.",
        "* **Memory**: " + (r["memory"]["method"] if "memory" in r else "see the JSON") + ".",
    ]
    if "deploy" in r:
        lines.append(
            "* **Deploy**: our converted model (the `decode` weights) exported with `vanilla-transformer export "
            "--format ctranslate2` (fp32) and `--quantization int8`; each engine runs in a `--deploy-worker` "
            "subprocess that loads it once and decodes all batches when asked; rounds go ours, fp32, int8, ours, ... "
            "after one untimed round whose outputs are compared. The CTranslate2 runner decodes each batch as "
            "`generate` does (the same beam 4 / greedy settings and `max_new_tokens`). BLEU: the whole Bible test "
            "split translated by `evaluate.translate` (ours) and `CTranslate2Translator.translate` (same batching).")
    lines.append("")
    return "\n".join(lines)


def deploy_markdown(d: dict) -> list[str]:
    """The deploy part's tables: speed of the three engines, and the trained model's BLEU through each."""
    names = {"ours": "ours `generate`", "fp32": f"CTranslate2 {d['ctranslate2']} fp32", "int8": "CTranslate2 int8"}
    lines = ["## Deploy: CTranslate2", "",
             f"Sentences / s on the `decode` inputs and weights ({d['sentences']} test sentences, batch "
             f"{d['batch_size']}, {d['beam4']['settings']['max_new_tokens']} new tokens at most, mean "
             f"{d['beam4']['mean_output_tokens']:.1f}), each engine in its own process with {d['threads']} "
             f"thread{'s' if d['threads'] != 1 else ''}, "
             f"{d['rounds']} interleaved rounds, median; in brackets the speed-up over ours and the outputs "
             "identical to ours.", "",
             "| | " + " | ".join(names[e] for e in DEPLOY_ENGINES) + " | target |",
             "|---|" + "---:|" * len(DEPLOY_ENGINES) + "---|"]
    for mode, label in (("beam4", "beam 4 (length penalty 0.6, early_stopping)"), ("greedy", "greedy")):
        e = d[mode]
        cells = [f"{e[engine]['sentences_per_s']:.2f} ({e[engine]['speedup']:.2f}×, {e[engine]['identical_to_ours']}/"
                 f"{d['sentences']})" for engine in DEPLOY_ENGINES]
        target = (", ".join(f"{k} ≥ {v:.2f}× {verdict(e[k]['speedup'], v)}" for k, v in DEPLOY_TARGETS.items())
                  if mode == "beam4" else "—")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")
    lines.append("")
    o = d["overhead"]
    lines += [f"Fixed cost of a greedy step (a model with d_model {o['d_model']} and {o['layers']}+{o['layers']} "
              f"layers, the same vocabulary and first batch, {o['steps']} steps): ours {o['ours_ms_per_step']:.2f} ms, "
              f"CTranslate2 {o['fp32_ms_per_step']:.2f} ms per step of {o['sentences']} sentences; the difference is "
              f"{o['share_of_greedy_gap']:.0%} of the greedy gap above (the rest is in the matrix products).", ""]
    b = d["bleu"]
    if "skipped" in b:
        lines += [f"BLEU through each engine: skipped — {b['skipped']}.", ""]
        return lines
    lines += [f"Bible test BLEU of `{b['model']}` ({b['sentences']} verses, beam 4, length penalty 0.6, source + 50 "
              "tokens, batches of 64 sorted by length):", "",
              "| engine | BLEU | chrF | seconds | hypotheses identical to ours | to ours with early_stopping |",
              "|---|---:|---:|---:|---:|---:|"]
    rows = (("ours", "ours `generate` (transformers' default early_stopping=False)"),
            ("ours_early_stopping", "ours `generate`, early_stopping=True (CTranslate2's rule)"),
            ("fp32", names["fp32"]), ("int8", names["int8"]))
    for key, label in rows:
        e = b[key]
        same = "—" if key == "ours" else f"{e['identical_to_ours']}/{b['sentences']}"
        same_es = f"{e['identical_to_ours_early_stopping']}/{b['sentences']}" if key in ("fp32", "int8") else "—"
        lines.append(f"| {label} | {e['bleu']:.2f} | {e['chrf']:.2f} | {e['seconds']:.1f} | {same} | {same_es} |")
    lines.append("")
    return lines


def print_profiles(profiles: dict) -> None:
    for key, value in profiles.items():
        log(f"\n=== profile {key}: wall {value['wall_s'] * 1e3:.0f} ms ===")
        log(value["table"])


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.loop_adam:
        os.environ["BENCH_LOOP_ADAM"] = "1"
    if args.memory_worker:
        memory_worker(*args.memory_worker, args.threads)
        return 0
    if args.deploy_worker:
        deploy_worker(*args.deploy_worker, args.threads)
        return 0
    quiet_libraries()

    from vanilla_transformer.training.bible import load_bible
    from baselines import tokenize_pairs

    started = time.perf_counter()
    results = {"argv": sys.argv[1:] if argv is None else list(argv), "machine": machine_info(), "parts": {},
               "settings": {k: getattr(args, k) for k in FULL} | {"quick": args.quick, "seed": args.seed,
                                                                   "layers": args.layers, "parts": list(args.parts),
                                                                   "loop_adam": args.loop_adam}}
    m = results["machine"]
    log(f"machine: {m['cpu']}, {m['usable_cores']} cores, torch threads {m['torch_threads']}, "
        f"others' CPU use {percent(m['others_cpu_start'])}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))

    bible = load_bible()
    start = time.perf_counter()
    tokenizer = build_tokenizer(bible, args.vocab_size)
    tokenized, dropped = tokenize_pairs(bible["train"], tokenizer, "es", "en", max_length=args.max_length)
    marian, ours, difference = build_models(tokenizer, args)
    results["setup"] = {"vocab_size": len(tokenizer), "layers": args.layers, "parameters": count_params(ours),
                        "marian_parameters": count_params(marian), "max_logit_difference": difference,
                        "train_pairs": len(tokenized), "dropped_over_max_length": dropped,
                        "seconds": time.perf_counter() - start}
    log(f"setup: vocab {len(tokenizer)}, {count_params(ours) / 1e6:.1f} M parameters, max logit difference "
        f"{difference:.1e}, {len(tokenized)} training pairs ({time.perf_counter() - start:.1f} s)")

    train_batch = fixed_batch(tokenized, tokenizer, args.max_tokens, args.seed)
    decode_batches, decode_count = decode_inputs(bible, tokenizer, args)
    train_models = None
    if {"train", "pipeline", "mfu", "profile"} & set(args.parts):
        train_models = {}
        for name, model in (("ours", ours), ("marian", marian)):
            copy_ = copy.deepcopy(model).train()
            train_models[name] = (copy_, make_optimizer(copy_))

    parts = results["parts"]

    def timed(name, function):
        log(f"[{name}] ...")
        part_start = time.perf_counter()
        parts[name] = function()
        parts[name]["part_seconds"] = time.perf_counter() - part_start
        log(f"[{name}] done in {parts[name]['part_seconds']:.1f} s")

    if "train" in args.parts:
        timed("train", lambda: part_train(train_models, train_batch, args))
        t = parts["train"]
        log(f"  ours {t['ours']['median_s'] * 1e3:.0f} ms/step, marian {t['marian']['median_s'] * 1e3:.0f} ms/step,"
            f" ratio {t['ratio']:.2f}x, batch {t['batch']}")
    if "mfu" in args.parts:
        timed("mfu", lambda: part_mfu(train_models, train_batch, parts["train"], args))
        f = parts["mfu"]
        log(f"  matmul peak {f['matmul']['peak_flop_s'] / 1e9:.1f} GFLOP/s; step {f['ours']['flops_per_step'] / 1e9:.2f}"
            f" GFLOP (6N estimate {f['analytic_6N'] / 1e9:.2f}); MFU ours {f['ours']['mfu']:.1%}, "
            f"marian {f['marian']['mfu']:.1%}")
    if "pipeline" in args.parts:
        timed("pipeline", lambda: part_pipeline(train_models, tokenized, tokenizer, args))
        p = parts["pipeline"]
        log(f"  ours {p['ours']['tokens_per_s']:.0f} tok/s (padding {p['ours']['padding_fraction']:.1%}), marian "
            f"{p['marian']['tokens_per_s']:.0f} tok/s (padding {p['marian']['padding_fraction']:.1%}), "
            f"ratio {p['ratio']:.2f}x")
    if "decode" in args.parts:
        timed("decode", lambda: part_decode({"ours": ours, "marian": marian}, decode_batches, decode_count,
                                            tokenizer, args))
        for mode in ("greedy", "beam4"):
            e = parts["decode"][mode]
            log(f"  {mode}: ours {e['ours']['sentences_per_s']:.2f} sent/s, marian "
                f"{e['marian']['sentences_per_s']:.2f} sent/s, ratio {e['ratio']:.2f}x, "
                f"{e['mismatched_sentences']} outputs differ")
    if "memory" in args.parts:
        timed("memory", lambda: part_memory(marian, ours, train_batch, decode_batches[0], tokenizer, args))
        for workload in ("train", "beam4"):
            e = parts["memory"][workload]
            log(f"  {workload}: ours peak {e['ours']['peak_kib'] / 1024:.0f} MiB "
                f"(+{e['ours']['increment_kib'] / 1024:.0f}), marian {e['marian']['peak_kib'] / 1024:.0f} MiB "
                f"(+{e['marian']['increment_kib'] / 1024:.0f})")
    if "deploy" in args.parts:
        timed("deploy", lambda: part_deploy(ours, decode_batches, decode_count, tokenizer, bible, args))
        for mode in ("greedy", "beam4"):
            e = parts["deploy"][mode]
            log(f"  {mode}: " + ", ".join(f"{engine} {e[engine]['sentences_per_s']:.2f} sent/s "
                                          f"({e[engine]['speedup']:.2f}x, {e[engine]['identical_to_ours']} identical)"
                                          for engine in DEPLOY_ENGINES))
    if "profile" in args.parts:
        timed("profile", lambda: part_profile(train_models, {"ours": ours, "marian": marian}, train_batch,
                                              decode_batches[0], tokenizer, args))
        print_profiles({k: v for k, v in parts["profile"].items() if isinstance(v, dict) and "table" in v})

    m["load_average_end"] = os.getloadavg()
    m["others_cpu_end"] = others_cpu_use()
    results["total_seconds"] = time.perf_counter() - started
    table = markdown(results, args)
    log("\n" + table)
    from vanilla_transformer.base.files import write_text

    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_text(Path(args.json), json.dumps(results, indent=2, default=str) + "\n")
        log(f"wrote {args.json}")
    if args.markdown:
        target = Path(args.markdown)
        previous = target.read_text(encoding="utf-8") if target.exists() else ""
        if NOTES_MARKER in previous:  # the hand-written analysis below the marker survives a re-run
            table += "\n" + NOTES_MARKER + previous.split(NOTES_MARKER, 1)[1]
        write_text(target, table)
        log(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
