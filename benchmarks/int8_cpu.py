#!/usr/bin/env python
"""int8 vs fp32 BLEU of a trained model through CTranslate2, per CPU instruction set (BENCHMARKS.md: int8 by CPU).

    python benchmarks/int8_cpu.py                               # demo_output/final, the Bible test split
    python benchmarks/int8_cpu.py --model DIR --sentences 200 --json /tmp/int8.json
    python benchmarks/int8_cpu.py --toy      # no trained model needed: tests/test_ctranslate2.py's learned toy model

Three exports of the same model: fp32; int8 with CTranslate2's own ±127 weights (what `export --quantization int8`
wrote before the ±63 change); int8 with our ±63 weights (`export --quantization int8` now). Each runs in its own
process with oneDNN capped by `ONEDNN_MAX_CPU_ISA` (CTranslate2's int8 GEMM on AMD CPUs is oneDNN's `gemm_u8s8s32`):

* native       what this CPU has (with AVX-512 VNNI: `vpdpbusd`, 32-bit sums, no saturation);
* AVX512_CORE  AVX-512 without VNNI (Skylake-SP): `vpmaddubsw`, pairs of u8·s8 products summed in 16 bits;
* AVX2         an AVX2-only CPU (Zen 1–3, Haswell–Coffee Lake): `vpmaddubsw` too;

plus CTranslate2's ±127 int8 with Intel MKL instead of oneDNN (`CT2_USE_MKL=1`, `MKL_ENABLE_INSTRUCTIONS=AVX2`),
CTranslate2's documented switch on AMD CPUs. The instruction set oneDNN reports (`ONEDNN_VERBOSE`) and CTranslate2's
GEMM backend (`CT2_VERBOSE`) are recorded with every row. Hypotheses are compared with fp32's on the native ISA.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

# (label, export, environment)
RUNS = (
    ("native", "fp32", {}),
    ("native", "int8 ±127 (CTranslate2's)", {}),
    ("native", "int8 ±63 (ours)", {}),
    ("AVX512_CORE (no VNNI)", "fp32", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}),
    ("AVX512_CORE (no VNNI)", "int8 ±127 (CTranslate2's)", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}),
    ("AVX512_CORE (no VNNI)", "int8 ±63 (ours)", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}),
    ("AVX2", "fp32", {"ONEDNN_MAX_CPU_ISA": "AVX2", "CT2_FORCE_CPU_ISA": "AVX2"}),
    ("AVX2", "int8 ±127 (CTranslate2's)", {"ONEDNN_MAX_CPU_ISA": "AVX2", "CT2_FORCE_CPU_ISA": "AVX2"}),
    ("AVX2", "int8 ±63 (ours)", {"ONEDNN_MAX_CPU_ISA": "AVX2", "CT2_FORCE_CPU_ISA": "AVX2"}),
    ("AVX2, MKL", "int8 ±127 (CTranslate2's)", {"CT2_USE_MKL": "1", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                                                 "CT2_FORCE_CPU_ISA": "AVX2"}),
)
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in FLAGS if flag in present]
    except OSError:
        pass
    return []


def worker(folder: str, sources_file: str, output_file: str, threads: int) -> None:
    from vanilla_transformer.deployment.engines import load_engine
    from vanilla_transformer.translation import translate

    sources = json.loads(Path(sources_file).read_text())
    start = time.perf_counter()
    hypotheses = translate(load_engine(folder, "ctranslate2", device="cpu", threads=threads), sources)
    Path(output_file).write_text(json.dumps({"hypotheses": hypotheses, "seconds": time.perf_counter() - start}))


def exports(model_dir: Path, root: Path) -> dict[str, Path]:
    from vanilla_transformer.deployment.ctranslate2_convert import (VanillaTransformerConverter, export_ctranslate2,
                                                                    load_for_export)
    from vanilla_transformer.deployment.ctranslate2_runtime import DECODING_FILE, TOKENIZER_DIR

    folders = {"fp32": export_ctranslate2(model_dir, root / "fp32"),
               "int8 ±63 (ours)": export_ctranslate2(model_dir, root / "int8", quantization="int8")}
    # CTranslate2 quantizing the weights itself (±127), with our runner's files.
    full = root / "int8_ct2"
    model, tokenizer = load_for_export(model_dir)
    VanillaTransformerConverter(model, tokenizer).convert(str(full), quantization="int8", force=True)
    shutil.copytree(folders["fp32"] / TOKENIZER_DIR, full / TOKENIZER_DIR)
    decoding = json.loads((folders["int8 ±63 (ours)"] / DECODING_FILE).read_text())
    decoding.pop("int8_weight_limit", None)
    (full / DECODING_FILE).write_text(json.dumps(decoding))
    folders["int8 ±127 (CTranslate2's)"] = full
    return folders


def toy_model(folder: Path):
    """The learned toy model of the int8 test (`learned_model`), saved to `folder`: (sources, references, folder)."""
    sys.path.insert(0, str(REPO / "tests"))
    from support.toy_task import TEST_PAIRS, learned_model

    model, tokenizer = learned_model()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return [s for s, _ in TEST_PAIRS], [t for _, t in TEST_PAIRS], str(folder)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "demo_output" / "final"), help="a trained model folder")
    parser.add_argument("--sentences", type=int, default=0, help="the first N test verses (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results_int8_cpu.json"))
    parser.add_argument("--toy", action="store_true",
                        help="instead of --model and the Bible: the learned word-reversal model of "
                             "tests/support/toy_task.py (`learned_model`: fp32 BLEU 85-90 on its 48 test pairs; a "
                             "minute on an idle core)")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker, args.threads)
        return 0

    import ctranslate2

    from bench import git_state, others_cpu_use, version
    from machine import cpu_isa, cpu_name
    from vanilla_transformer.training.bible import load_bible
    from vanilla_transformer.training.evaluation import score, translation_pairs

    if args.toy:
        sources, references, args.model = toy_model(Path(tempfile.mkdtemp(prefix="int8-cpu-toy-")))
    else:
        sources, references = translation_pairs(load_bible()["test"], "es", "en", args.sentences or None)
    result = {"argv": sys.argv[1:] if argv is None else argv, "date": time.strftime("%Y-%m-%d %H:%M"),
              "cpu": cpu_name(), "isa": cpu_isa(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(),
              "threads": args.threads,
              "load_average_start": os.getloadavg(), "others_cpu_start": others_cpu_use(),
              "ctranslate2": ctranslate2.__version__, "transformers": version("transformers"), "git": git_state(),
              "model": str(args.model), "sentences": len(sources), "runs": []}
    hypotheses_fp32 = None
    with tempfile.TemporaryDirectory(prefix="int8-cpu-") as folder:
        root = Path(folder)
        folders = exports(Path(args.model), root)
        (root / "sources.json").write_text(json.dumps(sources))
        for isa, export, environment in RUNS:
            env = {**os.environ, **environment, "ONEDNN_VERBOSE": "1", "CT2_VERBOSE": "1"}
            process = subprocess.run(
                [sys.executable, __file__, "--threads", str(args.threads), "--worker", str(folders[export]),
                 str(root / "sources.json"), str(root / "out.json")], env=env, capture_output=True, text=True)
            if process.returncode:
                raise RuntimeError(f"{isa} {export}: {process.stderr[-2000:]}")
            output = json.loads((root / "out.json").read_text())
            onednn = next((line.split("isa:", 1)[1] for line in process.stdout.splitlines() if ",isa:" in line), "-")
            backend = next((line.split("GEMM_S8 backend:", 1)[1].strip() for line in process.stderr.splitlines()
                            if "GEMM_S8 backend:" in line), "-")
            hypotheses = output["hypotheses"]
            if hypotheses_fp32 is None:
                hypotheses_fp32 = hypotheses
            row = {"isa": isa, "export": export, "environment": environment, "onednn_isa": onednn,
                   "ct2_gemm_s8_backend": backend, **score(hypotheses, references, warn=False),
                   "identical_to_native_fp32": sum(a == b for a, b in zip(hypotheses, hypotheses_fp32)),
                   "seconds": output["seconds"]}
            row.pop("signature", None)
            result["runs"].append(row)
            print(f"{isa:22} {export:26} BLEU {row['bleu']:6.2f}  chrF {row['chrf']:6.2f}  identical "
                  f"{row['identical_to_native_fp32']}/{len(sources)}  ({onednn}; {backend})", flush=True)
    result["load_average_end"], result["others_cpu_end"] = os.getloadavg(), others_cpu_use()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
