"""What splitting the attention projections cost: the fused layout of commit 7cb0c75 (one `qkv_proj` matmul per
self-attention, one `kv_proj` per encoder–decoder attention) against today's separate `q_proj`/`k_proj`/`v_proj`,
on one training step (forward + backward + Adam) and greedy / beam-4 decoding, for the tiny and base sizes.

Both models hold the same weights (the old one gets today's Q, K, V concatenated) and decode the same inputs; their
outputs are checked equal before timing. The old code is read from git (`git show 7cb0c75:...`), so run this from
a clone. Timings alternate old/new in each round; the median of the rounds is reported.

    .venv/bin/python benchmarks/bench_attention_layout.py --threads 1 --rounds 5
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "7cb0c75"


def import_old_model(commit: str, folder: Path):
    """The model file of `commit` as a flat module next to its configuration file (as `trust_remote_code` does)."""
    package = folder / "old_vanilla"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    for name, directory in (("configuration_vanilla_transformer", "configuration"),
                            ("modeling_vanilla_transformer", "modeling")):
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{directory}/{name}.py"], check=True,
                                capture_output=True, text=True).stdout
        source = source.replace("from ..configuration.configuration_vanilla_transformer import",
                                "from .configuration_vanilla_transformer import")
        (package / f"{name}.py").write_text(source, encoding="utf-8")
    sys.path.insert(0, str(folder))
    return importlib.import_module("old_vanilla.modeling_vanilla_transformer")


def fused_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Today's state dict in the fused layout of the old code."""
    fused = {}
    for key, tensor in state.items():
        for attention, parts, target in (("self_attn", ("q_proj", "k_proj", "v_proj"), "qkv_proj"),
                                         ("cross_attn", ("k_proj", "v_proj"), "kv_proj")):
            marker = f".{attention}.{parts[0]}."
            if marker in key:
                fused[key.replace(marker, f".{attention}.{target}.")] = torch.cat(
                    [state[key.replace(marker, f".{attention}.{part}.")] for part in parts])
        if not any(f".{attention}.{part}." in key for attention, parts in (
                ("self_attn", ("q_proj", "k_proj", "v_proj")), ("cross_attn", ("k_proj", "v_proj")))
                for part in parts):
            fused[key] = tensor
    return fused


def make_pair(old, size: str, vocab: int):
    from vanilla_transformer.configuration import VanillaTransformerConfig
    from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration

    kwargs = dict(vocab_size=vocab, dropout=0.1)
    new_config = VanillaTransformerConfig.tiny(**kwargs) if size == "tiny" else VanillaTransformerConfig(**kwargs)
    old_config = (old.VanillaTransformerConfig.tiny(**kwargs) if size == "tiny"
                  else old.VanillaTransformerConfig(**kwargs))
    torch.manual_seed(0)
    new = VanillaTransformerForConditionalGeneration(new_config)
    previous = old.VanillaTransformerForConditionalGeneration(old_config)
    missing, unexpected = previous.load_state_dict(fused_state_dict(new.state_dict()), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    previous.tie_weights()
    return {"old (fused)": previous, "new (split)": new}


def batch(vocab: int, rows: int, source: int, target: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(4, vocab, (rows, source), generator=g)
    labels = torch.randint(4, vocab, (rows, target), generator=g)
    return input_ids, torch.ones_like(input_ids), labels


def time_training(models, data, rounds: int) -> dict[str, float]:
    input_ids, attention_mask, labels = data
    optimizers = {name: torch.optim.Adam(model.parameters(), lr=1e-4) for name, model in models.items()}
    times = {name: [] for name in models}
    for round_ in range(rounds + 1):  # the first round warms up
        for name, model in models.items():
            model.train()
            start = time.perf_counter()
            loss = model(input_ids, attention_mask, labels=labels).loss
            loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def time_decoding(models, data, num_beams: int, new_tokens: int, rounds: int) -> dict[str, float]:
    input_ids, attention_mask, _ = data
    kwargs = dict(attention_mask=attention_mask, num_beams=num_beams, min_new_tokens=new_tokens,
                  max_new_tokens=new_tokens)
    outputs = {}
    for model in models.values():
        model.eval()
    times = {name: [] for name in models}
    for round_ in range(rounds + 1):
        for name, model in models.items():
            start = time.perf_counter()
            outputs[name] = model.generate(input_ids, **kwargs)
            if round_:
                times[name].append(time.perf_counter() - start)
    first, *others = outputs.values()
    assert all(torch.equal(first, other) for other in others), "old and new decode differently"
    return {name: statistics.median(values) for name, values in times.items()}


def run(sizes, rounds: int, threads: int, vocab: int) -> dict:
    torch.set_num_threads(threads)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        old = import_old_model(OLD_COMMIT, Path(folder))
        for size in sizes:
            models = make_pair(old, size, vocab)
            # The models must be the same function of their weights before timing them.
            for model in models.values():
                model.eval()
            data = batch(vocab, 16, 24, 24)
            with torch.no_grad():
                logits = [m(data[0], data[1], labels=data[2]).logits for m in models.values()]
            torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)
            train = batch(vocab, 32 if size == "tiny" else 16, 32, 32)
            decode = batch(vocab, 8, 20, 20, seed=1)
            results[size] = {  # decoding first: training changes the weights
                "greedy, 8 sentences × 24 tokens": time_decoding(models, decode, 1, 24, rounds),
                "beam 4, 8 sentences × 24 tokens": time_decoding(models, decode, 4, 24, rounds),
                f"train step ({train[0].shape[0]} × 32 + 32 tokens)": time_training(models, train, rounds),
            }
    return results


def markdown(results: dict, threads: int, rounds: int) -> str:
    lines = [f"| size | what | old fused (ms) | new split (ms) | new / old |", "|---|---|---:|---:|---:|"]
    for size, parts in results.items():
        for what, times in parts.items():
            old, new = times["old (fused)"], times["new (split)"]
            lines.append(f"| {size} | {what} | {old * 1e3:.1f} | {new * 1e3:.1f} | {new / old:.3f} |")
    return "\n".join(lines) + f"\n\n{threads} thread(s), median of {rounds} alternating rounds."


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parse.add_argument("--sizes", default="tiny,base", help="comma-separated: tiny, base")
    parse.add_argument("--rounds", type=int, default=5)
    parse.add_argument("--threads", type=int, default=1)
    parse.add_argument("--vocab", type=int, default=8000)
    parse.add_argument("--json", default="", help="also write the figures here")
    return parse


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    results = run(args.sizes.split(","), args.rounds, args.threads, args.vocab)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    sys.stdout.write(markdown(results, args.threads, args.rounds) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
