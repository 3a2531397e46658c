"""One-shot GPU check: what this project claims about GPUs, measured in one go (under 8 minutes on one H100/H200).

    python benchmarks/gpu_check.py                  # on a machine with a GPU
    python benchmarks/gpu_check.py --dry-run        # anywhere: the tiny preset on CPU, a few updates (CI runs this)

1. bf16 training of the `base` preset on the Bible (es→en) for a few hundred updates with the trainer's own update
   (`train_step`: Accelerate bf16 autocast, §5 loss and Adam), every update inside
   `sdpa_kernel([FLASH_ATTENTION, EFFICIENT_ATTENTION])`, so a fall-back to the math kernel fails instead of
   running slowly; one update is profiled and the attention kernels that ran are asserted to be flash or
   memory-efficient ones.
2. Tokens/s (non-padding target tokens, and padded source + target positions) and MFU: model FLOPs per update
   (6·N·tokens split by the side each weight sees, plus the attention products; checked against
   `torch.utils.flop_counter` on one batch) / update time / the GPU's dense bf16 peak from its datasheet, and the
   same against a measured bf16 matmul.
3. Beam-4 translation speed (§6.1 settings) of validation sentences under bf16 autocast; greedy decoding of 1 and 16
   sentences, eager against the compiled static-cache step (#31): ms per step, compilation time, tokens compared.
4. With more than one GPU (`--processes`, default: all visible GPUs): the real trainer through
   `accelerate launch` with DDP and with FSDP2 (examples/accelerate/fsdp2.yaml), bf16, all GPUs.

Writes every figure to a JSON file and a section of BENCHMARKS.md between its own markers (kept by bench.py).
`--dry-run` uses the tiny preset with dropout 0 (PyTorch's CPU flash kernel has no dropout), a small vocabulary
and a few updates on CPU; it checks the script, not the hardware.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FSDP_CONFIG = REPO / "examples" / "accelerate" / "fsdp2.yaml"
sys.path.insert(0, str(REPO / "benchmarks"))
from bench import replace_section  # noqa: E402

SECTION_BEGIN = "<!-- gpu_check.py: begin (rewritten by benchmarks/gpu_check.py) -->"
SECTION_END = "<!-- gpu_check.py: end -->"
BUDGET_SECONDS = 8 * 60

# Dense bf16 tensor-core peaks from NVIDIA's datasheets (FLOP/s, without sparsity). Matched in this order.
BF16_PEAKS = (("H100 NVL", 835e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("H200 NVL", 835e12),
              ("H200", 989e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12))
FUSED_ATTENTION = ("flash", "efficient")  # aten::_scaled_dot_product_{flash,efficient}_attention[_for_cpu][_backward]
MATH_ATTENTION = "attention_math"  # aten::_scaled_dot_product_attention_math


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny preset on CPU, a few updates (tests the script)")
    parser.add_argument("--train_file", help="TSV/JSONL training pairs instead of the Bible")
    parser.add_argument("--validation_file", help="TSV/JSONL validation pairs (with --train_file)")
    parser.add_argument("--source_lang", default="es")
    parser.add_argument("--target_lang", default="en")
    parser.add_argument("--preset", default=None, help="default: base (tiny with --dry-run)")
    parser.add_argument("--updates", type=int, default=None, help="timed updates (default 300; 4 with --dry-run)")
    parser.add_argument("--warmup-updates", type=int, default=None, help="untimed first updates (default 5; 1)")
    parser.add_argument("--max-tokens", type=int, default=None, help="padded tokens per batch (default 16384; 300)")
    parser.add_argument("--vocab-size", type=int, default=None, help="shared BPE size (default 8000; 457 with --dry-run)")
    parser.add_argument("--translate-sentences", type=int, default=None, help="beam-4 sentences (default 512; 8)")
    parser.add_argument("--processes", type=int, default=None,
                        help="processes for the DDP/FSDP2 runs (default: the visible GPUs; 0 or 1 skips them)")
    parser.add_argument("--multi-updates", type=int, default=100, help="updates of each DDP/FSDP2 run")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "gpu_check.json"))
    parser.add_argument("--markdown", default=str(REPO / "BENCHMARKS.md"), help="'' leaves BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    if bool(args.train_file) != bool(args.validation_file):
        parser.error("--train_file and --validation_file go together")
    dry = args.dry_run
    defaults = {"preset": "tiny" if dry else "base", "updates": 4 if dry else 300, "warmup_updates": 1 if dry else 5,
                "max_tokens": 300 if dry else 16384, "vocab_size": 457 if dry else 8000,
                "translate_sentences": 8 if dry else 512}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# Device, peaks, FLOPs
# ---------------------------------------------------------------------------------------------------------------------


def device_info(torch) -> dict:
    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else (platform.processor() or platform.machine())
    peak = next((value for key, value in BF16_PEAKS if key in name), None) if cuda else None
    return {"type": "cuda" if cuda else "cpu", "name": name, "count": torch.cuda.device_count() if cuda else 0,
            "bf16_peak_flop_s_datasheet": peak, "torch": torch.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version()}


def synchronize(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_bf16_matmul_peak(torch, device, size: int, repeats: int = 10) -> float:
    """Best FLOP/s of a square bf16 matmul: what this device's matmul unit really gives."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = math.inf
    for _ in range(repeats):
        synchronize(torch, device)
        start = time.perf_counter()
        a @ b
        synchronize(torch, device)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def update_flops(model, batch, torch, attention: bool = True) -> int:
    """FLOPs of one forward + backward on `batch`: 6 · (weights seen by each source position · B·S + weights seen by
    each target position · B·T) plus (unless `attention` is False) the attention products, 12 · B · T_q · T_k ·
    d_model per attention layer (padded positions and the causal half included, as FlopCounterMode counts them)."""
    b, s = batch["input_ids"].shape
    t = batch["labels"].shape[1]
    source_side = target_side = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if ".encoder." in f".{name}." or name.endswith(("cross_attn.k_proj", "cross_attn.v_proj")):
                source_side += module.weight.numel()
            else:
                target_side += module.weight.numel()
    config = model.config
    products = 12 * b * config.d_model * (config.encoder_layers * s * s + config.decoder_layers * (t * t + t * s))
    return 6 * (source_side * b * s + target_side * b * t) + (products if attention else 0)


def counted_flops(model, batch, torch) -> tuple[int, bool]:
    """torch.utils.flop_counter's count of one forward + backward (and whether it saw the attention kernels)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
              decoder_input_ids=batch["decoder_input_ids"], labels=batch["labels"]).loss.backward()
    model.zero_grad(set_to_none=True)
    ops = counter.get_flop_counts().get("Global", {})
    return int(counter.get_total_flops()), any("scaled_dot_product" in str(op) for op in ops)


# ---------------------------------------------------------------------------------------------------------------------
# Parts
# ---------------------------------------------------------------------------------------------------------------------


def prepare_data(args):
    from baselines import tokenize_pairs
    from vanilla_transformer.training.data import load_parallel_files, translation_texts
    from vanilla_transformer.training.tokenizer import train_shared_bpe

    if args.train_file:
        raw = load_parallel_files(args.source_lang, args.target_lang, train=args.train_file,
                                  validation=args.validation_file)
    else:
        from vanilla_transformer.training.bible import load_bible

        raw = load_bible()
    tokenizer = train_shared_bpe(translation_texts(raw["train"], args.source_lang, args.target_lang),
                                 args.vocab_size)
    tokenized, _ = tokenize_pairs(raw["train"], tokenizer, args.source_lang, args.target_lang, max_length=256)
    return raw, tokenizer, tokenized


class Recorded:
    """The trainer's micro-batch stream, keeping the batches of the current update (for their sizes)."""

    def __init__(self, batches):
        self.batches, self.seen = batches, []

    def __iter__(self):
        return self

    def __next__(self):
        batch, indices = next(self.batches)
        self.seen.append(batch)
        return batch, indices


def part_training(args, tokenizer, tokenized, torch) -> tuple[dict, object, object]:
    """bf16 updates with the trainer's `train_step`, restricted to the flash / memory-efficient SDPA kernels."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    from vanilla_transformer.training.arguments import ModelArguments, TrainArguments
    from vanilla_transformer.training.data import Seq2SeqCollator, TokenBatchSampler, padding_fraction
    from vanilla_transformer.training.batches import MicroBatches
    from vanilla_transformer.training.model_setup import build_model
    from vanilla_transformer.training.schedule import build_optimizer, resolved
    from vanilla_transformer.training.step import train_step

    set_seed(1)
    accelerator = Accelerator(mixed_precision="bf16", cpu=args.dry_run)
    model_args = ModelArguments(preset=args.preset)
    if args.dry_run:
        model_args = ModelArguments(preset="tiny", d_model=32, layers=1, heads=2, ffn_dim=64, dropout=0.0)
    model = build_model(model_args, tokenizer)
    train_args = resolved(TrainArguments(warmup_steps=4000))  # §5.3's recipe, as `validate` would fill it
    optimizer, scheduler = build_optimizer(model, model.config.d_model, train_args)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    sampler = TokenBatchSampler(tokenized["src_length"], tokenized["tgt_length"], args.max_tokens, shuffle=True, seed=1)
    collator = Seq2SeqCollator(tokenizer.pad_token_id, tokenizer.bos_token_id)
    batches = Recorded(MicroBatches(tokenized, sampler, collator))
    padding_of = lambda groups: padding_fraction(groups, sampler.src_lengths, sampler.tgt_lengths)  # noqa: E731
    device, plain = accelerator.device, accelerator.unwrap_model(model)

    def update():
        batches.seen.clear()
        return train_step(accelerator, model, optimizer, scheduler, batches, train_args,
                          plain.config.label_smoothing, padding_of)

    fused_only = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    with sdpa_kernel(fused_only):
        for _ in range(args.warmup_updates):
            update()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as profiler:
            update()
            synchronize(torch, device)
        kernels = sorted({event.name for event in profiler.events()
                          if event.name.startswith("aten::") and "attention" in event.name})
        fused = [k for k in kernels if any(word in k.lower() for word in FUSED_ATTENTION)]
        math_kernels = [k for k in kernels if MATH_ATTENTION in k]
        if not fused or math_kernels:
            raise SystemExit(f"attention did not run on the flash / memory-efficient kernels: {kernels}")

        seconds, target_tokens, padded, flops, losses = [], 0, 0, 0, []
        for _ in range(args.updates):
            synchronize(torch, device)
            start = time.perf_counter()
            result = update()
            synchronize(torch, device)
            seconds.append(time.perf_counter() - start)
            target_tokens += result.target_tokens
            padded += sum(b["input_ids"].numel() + b["labels"].numel() for b in batches.seen)
            flops += sum(update_flops(plain, b, torch) for b in batches.seen)
            losses.append(result.loss_sum / max(result.target_tokens, 1))

    sample = {k: v.to(device) for k, v in batches.seen[0].items()}
    with accelerator.autocast():
        counted, attention_seen = counted_flops(model, sample, torch)
    estimate = update_flops(plain, sample, torch, attention=attention_seen)  # like for like
    total = sum(seconds)
    result = {
        "preset": args.preset if not args.dry_run else "tiny (d_model 32, 1 layer)",
        "parameters": sum(p.numel() for p in plain.parameters()), "mixed_precision": accelerator.mixed_precision,
        "updates": args.updates, "max_tokens": args.max_tokens, "seconds": total,
        "median_update_s": sorted(seconds)[len(seconds) // 2],
        "target_tokens_per_s": target_tokens / total, "padded_tokens_per_s": padded / total,
        "model_flop_s": flops / total, "first_loss": losses[0], "last_loss": losses[-1],
        "attention_kernels": kernels,
        "flop_estimate_check": {"estimate": estimate, "flop_counter": counted,
                                "flop_counter_saw_attention": attention_seen,
                                "ratio": estimate / counted if counted else None},
    }
    return result, accelerator, model


def part_translation(args, raw, tokenizer, accelerator, model, torch) -> dict:
    """Beam 4, length penalty 0.6, at most source length + 50 tokens (§6.1), bf16 autocast."""
    from vanilla_transformer.training.evaluation import score
    from vanilla_transformer.translation import TransformersEngine, translate

    rows = raw["validation"].select(range(min(args.translate_sentences, len(raw["validation"]))))["translation"]
    sources = [r[args.source_lang] for r in rows]
    references = [r[args.target_lang] for r in rows]
    engine = TransformersEngine(accelerator.unwrap_model(model), tokenizer, device=accelerator.device)
    batch_size = 64 if not args.dry_run else 8
    with accelerator.autocast():
        translate(engine, sources[:batch_size], batch_size=batch_size)  # warm-up
        synchronize(torch, accelerator.device)
        start = time.perf_counter()
        hypotheses = translate(engine, sources, batch_size=batch_size)
        synchronize(torch, accelerator.device)
        seconds = time.perf_counter() - start
    generated = sum(len(tokenizer(h)["input_ids"]) for h in hypotheses)
    return {"sentences": len(sources), "batch_size": batch_size, "seconds": seconds,
            "sentences_per_s": len(sources) / seconds, "output_tokens_per_s": generated / seconds,
            "bleu_after_these_updates": score(hypotheses, references)["bleu"]}


def part_compiled_decoding(args, raw, tokenizer, accelerator, model, torch) -> dict:
    """#31: greedy decoding of 1 and 16 validation sentences (float32), eager `generate` against the compiled
    static-cache step (`cache_implementation="static"` with a fullgraph `compile_config`: transformers' own compile
    path), tokens compared; median ms per decoding step of 3 calls after the first (which pays the compilation, timed
    apart). The dry run compiles with `aot_eager` (no C++ code generation on CPU)."""
    from transformers import CompileConfig

    model = accelerator.unwrap_model(model).eval()
    device = accelerator.device
    rows = raw["validation"].select(range(min(16, len(raw["validation"]))))["translation"]
    sources = [r[args.source_lang] for r in rows]
    config = CompileConfig(fullgraph=True, backend="aot_eager" if args.dry_run else "inductor")
    config._compile_all_devices = True  # transformers compiles by itself on CUDA only
    results = {}
    for size in (1, len(sources)):
        inputs = tokenizer(sources[:size], return_tensors="pt", padding=True).to(device)

        def run(**kwargs):
            synchronize(torch, device)
            start = time.perf_counter()
            with torch.inference_mode():
                output = model.generate(**inputs, num_beams=1, **kwargs)
            synchronize(torch, device)
            return output, time.perf_counter() - start

        static = dict(cache_implementation="static", compile_config=config)
        eager, _ = run()
        eager_seconds = sorted(run()[1] for _ in range(3))[1]
        compiled, first = run(**static)
        compiled_seconds = sorted(run(**static)[1] for _ in range(3))[1]
        steps = max(eager.shape[1] - 1, 1)
        results[f"batch_{size}"] = {"steps": steps, "eager_ms_per_step": 1e3 * eager_seconds / steps,
                                    "compiled_ms_per_step": 1e3 * compiled_seconds / steps,
                                    "first_compiled_call_s": first, "identical": bool(torch.equal(compiled, eager))}
    model.train()
    return {"backend": config.backend, **results}


def multi_process_command(kind: str, processes: int, output_dir: Path, tokenizer_dir: Path, args) -> list[str]:
    """`accelerate launch` of the real trainer on all GPUs: DDP, or FSDP2 with the example config (the tokenizer of
    the single-GPU part is reused, so that no run spends its time training one)."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    launch += ["--config_file", str(FSDP_CONFIG)] if kind == "fsdp2" else ["--multi_gpu"]
    data = (["--train_file", args.train_file, "--validation_file", args.validation_file]
            if args.train_file else ["--dataset", "bible"])
    return [*launch, "-m", "vanilla_transformer.training.train", *data, "--source_lang", args.source_lang,
            "--target_lang", args.target_lang, "--preset", args.preset, "--tokenizer", str(tokenizer_dir),
            "--max_tokens", str(args.max_tokens), "--mixed_precision", "bf16", "--max_steps", str(args.multi_updates),
            "--eval_steps", str(args.multi_updates), "--save_steps", str(args.multi_updates), "--eval_samples", "64",
            "--report_to", "none", "--output_dir", str(output_dir)]


def part_multi_process(args, processes: int, tokenizer) -> dict:
    results = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
        tokenizer.save_pretrained(Path(folder) / "tokenizer")
        for kind in ("ddp", "fsdp2"):
            output_dir = Path(folder) / kind
            command = multi_process_command(kind, processes, output_dir, Path(folder) / "tokenizer", args)
            start = time.perf_counter()
            run = subprocess.run(command, capture_output=True, text=True, timeout=240)
            wall = time.perf_counter() - start
            if run.returncode != 0:
                results[kind] = {"command": shlex.join(command), "error": run.stderr[-2000:]}
                continue
            summary = json.loads((output_dir / "final" / "run_summary.json").read_text())
            results[kind] = {"command": shlex.join(command), "processes": processes, "wall_s": wall,
                             "steps": summary["steps"], "train_seconds": summary["train_seconds"],
                             "target_tokens_per_s": summary["target_tokens"] / summary["train_seconds"],
                             "distributed_type": summary["hardware"]["distributed_type"],
                             "final_validation": summary["final_validation"]}
    return results


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


def flop_rate(value: float) -> str:
    return f"{value / 1e12:.1f} TFLOP/s" if value >= 1e12 else f"{value / 1e9:.2f} GFLOP/s"


def markdown(results: dict) -> str:
    d, t, b = results["device"], results["training"], results["translation"]
    title = "GPU check" + (" (dry run on CPU: checks the script, not the hardware)" if results["dry_run"] else "")
    lines = [SECTION_BEGIN, f"## {title}", "",
             f"Command: `{results['command']}` — {results['date']}, {results['total_seconds']:.0f} s in all "
             f"(budget {BUDGET_SECONDS // 60} min).", "",
             f"Device: {d['name']} ({d['type']}" + (f", {d['count']} visible" if d["count"] else "")
             + f"), torch {d['torch']}, CUDA {d['cuda']}.",
             "", "| measure | value |", "|---|---:|",
             f"| bf16 training, {t['preset']}, {t['parameters'] / 1e6:.2f} M parameters, {t['updates']} updates of "
             f"≤ {t['max_tokens']} padded tokens | {t['median_update_s'] * 1e3:.1f} ms / update (median) |",
             f"| target tokens / s (non-padding) | {t['target_tokens_per_s']:,.0f} |",
             f"| padded source + target tokens / s | {t['padded_tokens_per_s']:,.0f} |",
             f"| model FLOP/s (6·N·tokens + attention) | {flop_rate(t['model_flop_s'])} |"]
    if results["mfu_datasheet"] is not None:
        lines.append(f"| MFU vs datasheet bf16 peak ({flop_rate(d['bf16_peak_flop_s_datasheet'])}) | "
                     f"{results['mfu_datasheet']:.1%} |")
    lines += [f"| MFU vs measured bf16 matmul ({flop_rate(results['matmul_bf16_flop_s'])}) | "
              f"{results['mfu_measured']:.1%} |",
              f"| attention kernels (one profiled update) | {', '.join(t['attention_kernels'])} |",
              f"| loss, first → last timed update | {t['first_loss']:.3f} → {t['last_loss']:.3f} |",
              f"| beam-4 translation, {b['sentences']} sentences, batch {b['batch_size']} | "
              f"{b['sentences_per_s']:.1f} sentences / s, {b['output_tokens_per_s']:,.0f} output tokens / s |"]
    compiled = results.get("compiled_decoding") or {}
    for key, run in compiled.items():
        if key.startswith("batch_"):
            lines.append(f"| greedy, {key.replace('_', ' ')}, float32: eager → compiled static-cache step "
                         f"({compiled['backend']}) | {run['eager_ms_per_step']:.2f} → "
                         f"{run['compiled_ms_per_step']:.2f} "
                         f"ms / step; first call {run['first_compiled_call_s']:.1f} s; tokens "
                         f"{'identical' if run['identical'] else 'DIFFERENT'} |")
    for kind, run in results.get("multi_process", {}).items():
        if "error" in run:
            lines.append(f"| {kind}, `accelerate launch` | failed: see the JSON |")
        else:
            lines.append(f"| {kind} on {run['processes']} processes, {run['steps']} updates | "
                         f"{run['target_tokens_per_s']:,.0f} target tokens / s (one evaluation and checkpoint "
                         f"included) |")
    if not results.get("multi_process"):
        lines.append("| DDP / FSDP2 over several GPUs | skipped: fewer than two processes |")
    check = t["flop_estimate_check"]
    lines += ["", f"FLOP estimate / torch.utils.flop_counter on one batch: {check['ratio']:.3f}"
              + ("" if check["flop_counter_saw_attention"] else " (without the attention products: the counter does "
                 "not see this device's attention kernel)") + ". All figures: `benchmarks/gpu_check.json`.",
              SECTION_END]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    replace_section(path, section, SECTION_BEGIN, SECTION_END)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    started = time.perf_counter()
    device = device_info(torch)
    if device["type"] != "cuda" and not args.dry_run:
        log("no GPU visible: run with --dry-run to check the script on CPU")
        return 2
    if args.dry_run:
        torch.set_num_threads(min(torch.get_num_threads(), 2))
    log(f"device: {device['name']} ({device['type']}), dry run: {args.dry_run}")
    raw, tokenizer, tokenized = prepare_data(args)
    log(f"data: {len(tokenized)} training pairs, vocabulary {len(tokenizer)} ({time.perf_counter() - started:.0f} s)")
    training, accelerator, model = part_training(args, tokenizer, tokenized, torch)
    log(f"training: {training['target_tokens_per_s']:,.0f} target tokens/s, kernels {training['attention_kernels']}")
    matmul = measured_bf16_matmul_peak(torch, accelerator.device, 8192 if device["type"] == "cuda" else 512)
    translation = part_translation(args, raw, tokenizer, accelerator, model, torch)
    log(f"beam 4: {translation['sentences_per_s']:.1f} sentences/s")
    compiled = part_compiled_decoding(args, raw, tokenizer, accelerator, model, torch)
    log(f"compiled greedy step: {compiled}")
    processes = args.processes if args.processes is not None else device["count"]
    peak = device["bf16_peak_flop_s_datasheet"]
    results = {
        "command": shlex.join(["python", "benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": time.strftime("%Y-%m-%d %H:%M"), "dry_run": args.dry_run, "device": device,
        "training": training, "matmul_bf16_flop_s": matmul,
        "mfu_datasheet": training["model_flop_s"] / peak if peak else None,
        "mfu_measured": training["model_flop_s"] / matmul, "translation": translation,
        "compiled_decoding": compiled,
    }
    if processes > 1:
        results["multi_process"] = part_multi_process(args, processes, tokenizer)
    results["total_seconds"] = time.perf_counter() - started
    results["within_budget"] = results["total_seconds"] <= BUDGET_SECONDS
    section = markdown(results)
    log("\n" + section)
    from vanilla_transformer.base.files import write_text

    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_text(Path(args.json), json.dumps(results, indent=2, default=str) + "\n")
    if args.markdown:
        write_section(Path(args.markdown), section)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
