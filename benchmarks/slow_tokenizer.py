"""Tokenizing for the data cache with a slow tokenizer (issue #29): Marian's SentencePiece `MarianTokenizer`, Python
code, which `prepare` runs in one worker process per usable CPU (training/encoding.py).

    python benchmarks/slow_tokenizer.py --pairs 100000                  # 1 process, then all usable CPUs
    python benchmarks/slow_tokenizer.py --pairs 1000000 --processes 2   # the parallel run alone

The corpus is the one of benchmarks/data_scale.py (neighbouring Bible verses joined, ~60 tokens a side, repeated
for large sizes). The tokenizer is an OPUS-MT-like folder made here: separate Spanish and English SentencePiece
models (unigram, 8000 pieces each) trained on 20 000 Bible verses, one vocab.json (Marian's special tokens). Each
run is `prepare.write_tokens` into an Arrow file (the cache's code, `--max_length` 256), timed from the call to the
file's end (worker start-up included), with the CPU time of the process and its workers (what an idle machine
would need, divided by the processes); the files of different process counts are checked byte-identical. Results
are appended to `benchmarks/slow_tokenizer.json` and are printed. Wall-clock timings: they
depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import warnings
from pathlib import Path
from machine import cpu_name

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "slow_tokenizer.json"
PIECES = 8000


def marian_tokenizer_folder(folder: Path) -> Path:
    """An OPUS-MT-like tokenizer folder (source.spm, target.spm, vocab.json) trained on Bible verses, made once."""
    import sentencepiece as spm
    from transformers import MarianTokenizer

    from vanilla_transformer.training.bible import load_bible

    if (folder / "tokenizer_config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rows = load_bible()["train"]["translation"][:20_000]
    vocab = {"</s>": 0, "<unk>": 1}
    for side in ("es", "en"):
        (folder / f"{side}.txt").write_text("".join(r[side] + "\n" for r in rows), encoding="utf-8")
        spm.SentencePieceTrainer.train(input=str(folder / f"{side}.txt"), model_prefix=str(folder / side),
                                       vocab_size=PIECES, bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1, minloglevel=2)
        processor = spm.SentencePieceProcessor(model_file=str(folder / f"{side}.model"))
        for index in range(processor.get_piece_size()):
            vocab.setdefault(processor.id_to_piece(index), len(vocab))
    vocab["<pad>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = MarianTokenizer(source_spm=str(folder / "es.model"), target_spm=str(folder / "en.model"),
                                vocab=str(folder / "vocab.json"))
    tokenizer.save_pretrained(folder)
    return folder


def cpu_seconds() -> float:
    """CPU time of this process and of its ended children (the worker processes, once the pool is shut down)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--processes", type=int, action="append",
                        help="process counts to time, in order (repeatable; default 1, then the usable CPUs)")
    parser.add_argument("--root", default="/tmp/vt-bench-slow-tokenizer", help="corpus, tokenizer and outputs")
    parser.add_argument("--json", default=str(RESULTS))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from data_scale import build_corpus
    from transformers import AutoTokenizer

    from vanilla_transformer.training import prepare
    from vanilla_transformer.training.encoding import usable_cpus

    root = Path(args.root)
    source, target, _ = build_corpus(args.pairs, root / f"corpus-{args.pairs}")
    tokenizer = AutoTokenizer.from_pretrained(marian_tokenizer_folder(root / "marian-tokenizer"))
    pairs, _ = prepare.local_pairs([(source, target)], "es", "en", root / "cache")
    machine = {"cpu": cpu_name(), "usable_cpus": usable_cpus(), "load_before": os.getloadavg()}
    results, files = [], []
    for processes in args.processes or [1, usable_cpus()]:
        output = root / f"tokens-{args.pairs}-{processes}.arrow"
        start, cpu = time.perf_counter(), cpu_seconds()
        info = prepare.write_tokens(pairs, tokenizer, "es", "en", 256, output, processes=processes)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        rate = args.pairs / seconds
        results.append({"pairs": args.pairs, "processes": processes, "seconds": round(seconds, 1),
                        "pairs_per_s": round(rate), "minutes_per_million_pairs": round(1e6 / rate / 60, 1),
                        "cpu_seconds": round(cpu, 1), "kept": info["rows"], "load_after": os.getloadavg()})
        print(json.dumps(results[-1]), flush=True)
        files.append(output)
    identical = len({f.read_bytes() for f in files}) == 1
    if not identical:
        print("ERROR: the token files of different process counts differ", file=sys.stderr)
    recorded = json.loads(Path(args.json).read_text()) if Path(args.json).is_file() else {}
    recorded["machine"] = machine
    day = time.strftime("%Y-%m-%d %H:%M")
    recorded["runs"] = recorded.get("runs", []) + [{**r, "date": day, "identical_across_processes": identical}
                                                   for r in results]
    Path(args.json).write_text(json.dumps(recorded, indent=1) + "\n", encoding="utf-8")
    for file in files:
        file.unlink()
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
