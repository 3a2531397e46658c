#!/usr/bin/env python
"""Eager `generate` against a compiled static-cache decoding step, and CTranslate2 fp32, on one trained model (#31).

    python benchmarks/compiled_decoding.py --model demo_output/final --ct2 demo_output/final-ct2
    python benchmarks/compiled_decoding.py --model demo_output/final --repeats 3 --markdown ''

For each case (greedy and beam 4, a batch of 1 and of 16 Bible test verses):

* eager: `model.generate` as users call it (dynamic cache);
* compiled: a static cache and the model's step through `torch.compile(fullgraph=True)` (inductor). Greedy goes
  through transformers' own path (`generate(cache_implementation="static", compile_config=...)`; CPU needs
  `_compile_all_devices`); transformers' beam search (5.25) calls the model uncompiled whatever `compile_config` says,
  so for beam 4 the model's `forward` itself is compiled for the run. Its first call, compilation included, is
  reported apart;
* CTranslate2 fp32 (`--ct2`, an export of the same model): `translate_batch` with the same beam and length rule.

Median seconds of `--repeats` calls after one warm-up; per-token latency = seconds ÷ decoding steps (the longest
output's length); the compiled outputs are compared with eager's token for token. Results: --json, and a section of
BENCHMARKS.md between this script's markers (the CPU and its ISA named).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench import git_state, replace_section, version  # noqa: E402
from machine import cpu_isa, cpu_name  # noqa: E402

BEGIN = "<!-- compiled_decoding.py: begin (rewritten by benchmarks/compiled_decoding.py) -->"
END = "<!-- compiled_decoding.py: end -->"
CASES = [("greedy", 1, 1), ("greedy", 1, 16), ("beam 4", 4, 1), ("beam 4", 4, 16)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "demo_output" / "final"))
    parser.add_argument("--ct2", default=None, help="a CTranslate2 export of --model (fp32)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "compiled_decoding.json"))
    parser.add_argument("--markdown", default=str(REPO / "BENCHMARKS.md"), help="'' to leave it alone")
    return parser.parse_args(argv)


def timed(function, repeats: int) -> tuple[object, float]:
    function()  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return result, statistics.median(seconds)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, CompileConfig

    import vanilla_transformer.modeling  # noqa: F401  (registers the Auto classes)
    from vanilla_transformer.training.bible import load_bible

    torch.set_num_threads(args.threads)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    verses = [row["es"] for row in load_bible()["test"]["translation"][:16]]
    translator = None
    if args.ct2:
        from vanilla_transformer.deployment.ctranslate2_runtime import CTranslate2Translator

        translator = CTranslate2Translator(args.ct2, threads=args.threads)
    eager_forward = model.forward
    rows = []
    for name, beams, size in CASES:
        inputs = tokenizer(verses[:size], return_tensors="pt", padding=True)

        def eager():
            with torch.inference_mode():
                return model.generate(**inputs, num_beams=beams)

        config = CompileConfig(fullgraph=True)
        config._compile_all_devices = True

        def compiled():
            with torch.inference_mode():
                return model.generate(**inputs, num_beams=beams, cache_implementation="static", compile_config=config)

        reference, eager_seconds = timed(eager, args.repeats)
        torch._dynamo.reset()
        if beams > 1:  # transformers' beam search ignores compile_config: compile the step itself
            model.forward = torch.compile(eager_forward, fullgraph=True)
        start = time.perf_counter()
        compiled()
        first = time.perf_counter() - start
        output, compiled_seconds = timed(compiled, args.repeats)
        model.forward = eager_forward
        steps = reference.shape[1] - 1
        row = {"case": name, "batch": size, "steps": steps, "eager_s": eager_seconds, "compiled_s": compiled_seconds,
               "compiled_first_call_s": first, "identical": bool(torch.equal(output, reference)),
               "eager_ms_per_step": 1000 * eager_seconds / steps,
               "compiled_ms_per_step": 1000 * compiled_seconds / steps}
        if translator is not None:
            ids = [row_ids for row_ids in tokenizer(verses[:size])["input_ids"]]
            _, ct2_seconds = timed(lambda: translator.generate_ids(ids, num_beams=beams), args.repeats)
            row["ctranslate2_s"] = ct2_seconds
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(), "isa": cpu_isa(), "threads": args.threads,
              "model": args.model, "ct2": args.ct2, "repeats": args.repeats, "git": git_state(),
              "torch": version("torch"), "transformers": version("transformers"), "json": args.json, "rows": rows}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    text = markdown(result)
    print(text)
    if args.markdown:
        replace_section(Path(args.markdown), text, BEGIN, END)
    return 0


def markdown(result: dict) -> str:
    lines = [BEGIN, "", f"### Compiled decoding step (#31), {result['date']}", "",
             f"`python benchmarks/compiled_decoding.py` (method in its docstring). {result['cpu']} ({result['isa']}), "
             f"{result['threads']} torch threads, torch {result['torch']}, transformers {result['transformers']}; "
             f"model `{result['model']}`; median of {result['repeats']} calls; git {result['git']}.", "",
             "| decoding | batch | steps | eager s | compiled s | compiled ÷ eager | ms/step eager → compiled | "
             "first compiled call s | identical | CTranslate2 fp32 s |",
             "|---|---:|---:|---:|---:|---:|---|---:|---|---:|"]
    for row in result["rows"]:
        ct2 = f"{row['ctranslate2_s']:.3f}" if "ctranslate2_s" in row else "—"
        lines.append(f"| {row['case']} | {row['batch']} | {row['steps']} | {row['eager_s']:.3f} | "
                     f"{row['compiled_s']:.3f} | {row['compiled_s'] / row['eager_s']:.2f}× | "
                     f"{row['eager_ms_per_step']:.2f} → {row['compiled_ms_per_step']:.2f} | "
                     f"{row['compiled_first_call_s']:.1f} | {'yes' if row['identical'] else 'NO'} | {ct2} |")
    lines += ["", f"All figures: `benchmarks/{Path(result.get('json', 'compiled_decoding.json')).name}`.", END]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
