"""Data path at WMT scale (issue #23): how long before the first update, and how much memory and disk, per corpus size.

    python benchmarks/data_scale.py --pairs 100000            # one size (minutes)
    python benchmarks/data_scale.py --pairs 1000000 --pairs 4500000 --root /tmp/vt-bench --skip tokenize,old_tokenize

For each size it builds a plain-text pair corpus from the bundled Bible (neighbouring verses joined so a sentence
has ~60 tokens; the ~29 k verses are joined again with other neighbours for the larger sizes, so the text repeats),
then measures (`--skip` leaves parts out):

* `cold`: `vanilla-transformer train` (a tiny model, one process) from nothing to its first update; its log gives
  the reading time, the BPE training time (8000 tokens, default `--tokenizer_sample`), the tokenization rate, each
  rank's peak RSS (VmHWM) when the data is ready and after the first update; then the disk the cache uses;
* `warm`: `--resume` of that run, to its next update (everything from the cache);
* `two_ranks`: two CPU processes (`torchrun --nproc_per_node 2`) on the cached data, same figures per rank;
* `tokenize`: on the first 100 k pairs (the rate does not depend on the corpus size), the cache's tokenization
  (`prepare.write_tokens`) against the limit of the machine — raw `tokenizers.Tokenizer.encode_batch` on the same
  sentences, all cores, nothing else — interleaved twice, best of each;
* `old_tokenize`: the old `tokenize_pairs` (benchmarks/baselines.py) (`datasets.map`) on 20 k pairs, one process and `num_proc` = CPUs.

Results go to `benchmarks/data_scale.json` (merged by size) and are printed; BENCHMARKS.md has the hand-written
table. Timings are wall-clock and depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "data_scale.json"
TOKENS_PER_SIDE = 60
PARTS = ("cold", "warm", "two_ranks", "tokenize", "old_tokenize")


def build_corpus(pairs: int, folder: Path) -> tuple[Path, Path, Path]:
    """corpus.es / corpus.en (`pairs` lines) and valid.tsv (200 pairs) from the Bible's training split."""
    from vanilla_transformer.training.bible import load_bible

    folder.mkdir(parents=True, exist_ok=True)
    source, target, valid = folder / "corpus.es", folder / "corpus.en", folder / "valid.tsv"
    if source.is_file() and target.is_file() and valid.is_file():
        return source, target, valid
    bible = load_bible()
    rows = bible["train"]["translation"]
    es = [r["es"] for r in rows]
    en = [r["en"] for r in rows]
    n = len(es)
    written = 0
    with open(f"{source}.part", "w", encoding="utf-8") as out_s, open(f"{target}.part", "w", encoding="utf-8") as out_t:
        round_ = 0
        while written < pairs:
            start = round_ % 7  # each round joins other neighbours
            i = start
            while i < n and written < pairs:
                words, j = 0, i
                while j < n and words < TOKENS_PER_SIDE * 0.75:  # ~0.75 words per BPE token of 8000
                    words += len(en[j].split())
                    j += 1
                out_s.write(" ".join(es[i:j]) + "\n")
                out_t.write(" ".join(en[i:j]) + "\n")
                written += 1
                i = j if round_ % 2 == 0 else i + 1 + (round_ % 5)
            round_ += 1
    os.replace(f"{source}.part", source)
    os.replace(f"{target}.part", target)
    validation = bible["validation"]["translation"][:200]
    valid.write_text("es\ten\n" + "".join(f"{r['es']}\t{r['en']}\n" for r in validation), encoding="utf-8")
    return source, target, valid


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def data_arguments(source: Path, target: Path, valid: Path, cache: Path, tokenizer: Path | None = None):
    from vanilla_transformer.training.arguments import DataArguments

    return DataArguments(train_file=str(source), train_target_file=str(target), validation_file=str(valid),
                         source_lang="es", target_lang="en", data_cache_dir=str(cache),
                         tokenizer=str(tokenizer) if tokenizer else None)


def measure_library(pairs: int, work: Path, parts: set[str], result: dict) -> None:
    """Tokenization rate of the cache's code against raw `encode_batch` (and the old `tokenize_pairs`) on the first
    100 k pairs (the rate does not depend on the corpus size), interleaved twice, best of each; needs the tokenizer
    of the cold run."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from vanilla_transformer.training import prepare

    source, target, valid = build_corpus(pairs, work / "corpus")
    folder = work / "run" / "tokenizer"
    cache = work / "lib-cache"
    shutil.rmtree(cache, ignore_errors=True)
    subset = min(pairs, 100_000)
    sub_source, sub_target = work / "subset.es", work / "subset.en"
    for path, full in ((sub_source, source), (sub_target, target)):
        with open(full, encoding="utf-8") as lines:
            path.write_text("".join(line for _, line in zip(range(subset), lines)), encoding="utf-8")
    raw, _ = prepare.local_pairs([(sub_source, sub_target)], "es", "en", cache)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    plain = Tokenizer.from_file(str(folder / "tokenizer.json"))

    def raw_encode():
        for table in raw.with_format("arrow").iter(batch_size=prepare.TOKENIZE_CHUNK):
            column = table.column("translation").combine_chunks()
            plain.encode_batch(column.field("es").to_pylist() + column.field("en").to_pylist())

    def ours():
        prepare.write_tokens(raw, tokenizer, "es", "en", 256, work / "tokens.arrow")

    best = {"raw": float("inf"), "ours": float("inf")}
    for _ in range(2):
        for name, function in (("raw", raw_encode), ("ours", ours)):
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    (work / "tokens.arrow").unlink()
    result["tokenize_subset"] = {"pairs": subset, "raw_encode_batch_pairs_per_s": round(subset / best["raw"]),
                                 "ours_pairs_per_s": round(subset / best["ours"]),
                                 "ours_vs_raw": round(best["raw"] / best["ours"], 3)}
    if "old_tokenize" in parts:
        from baselines import tokenize_pairs

        small = raw.select(range(min(subset, 20_000))).map(lambda x: x, keep_in_memory=True)  # in memory, as before
        old = {}
        for num_proc in (None, len(os.sched_getaffinity(0))):
            start = time.perf_counter()
            tokenize_pairs(small, tokenizer, "es", "en", 256, num_proc=num_proc)
            old[f"num_proc={num_proc or 1}_pairs_per_s"] = round(len(small) / (time.perf_counter() - start))
        result["old_tokenize_pairs_per_s"] = old
    shutil.rmtree(cache, ignore_errors=True)


def from_log(log: str) -> dict:
    """What the cold run's log says about reading, the BPE and tokenization."""
    out = {}
    read = re.search(r"read (\d+) sentence pairs from .* in ([\d.]+) s", log)
    if read:
        out["read_seconds"] = float(read.group(2))
    bpe = re.search(r"trained a shared BPE of (\d+) tokens on (\d+) of the (\d+) training pairs .* in ([\d.]+) s", log)
    if bpe:
        out["bpe"] = {"vocab": int(bpe.group(1)), "sample_pairs": int(bpe.group(2)), "seconds": float(bpe.group(4))}
    tokenized = re.search(r"tokenized (\d+) pairs in ([\d.]+) s \((\d+) pairs/s\)", log)
    if tokenized:
        out["tokenize"] = {"pairs": int(tokenized.group(1)), "seconds": float(tokenized.group(2)),
                           "pairs_per_s": int(tokenized.group(3))}
    return out


def stamped_run(command: list[str], marks: dict[str, str], log: Path, env: dict | None = None) -> dict:
    """Run `command`, timestamping (from the start) the first stderr line matching each regex of `marks`."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})}, cwd=REPO)
    found: dict[str, float] = {}
    lines: list[str] = []

    def reader():
        for line in process.stderr:
            lines.append(line)
            for name, pattern in marks.items():
                if name not in found and re.search(pattern, line):
                    found[name] = round(time.perf_counter() - start, 1)

    thread = threading.Thread(target=reader)
    thread.start()
    code = process.wait()
    thread.join()
    log.write_text("".join(lines))
    found.update(from_log("".join(lines)))
    if code != 0:
        raise RuntimeError(f"{command[:4]} exited with {code}; see {log}")
    return {**found, "total_seconds": round(time.perf_counter() - start, 1),
            "rank_lines": [ln.strip()[9:] for ln in lines if re.search(r"rank \d+: ", ln)]}


def train_command(source, target, valid, output: Path, cache: Path, *extra: str) -> list[str]:
    return ["--train_file", str(source), "--train_target_file", str(target), "--validation_file", str(valid),
            "--source_lang", "es", "--target_lang", "en", "--preset", "tiny", "--d_model", "64", "--layers", "1",
            "--heads", "2", "--ffn_dim", "128", "--max_tokens", "4096", "--eval_samples", "2", "--num_beams", "1",
            "--logging_steps", "1", "--report_to", "none", "--output_dir", str(output), "--data_cache_dir",
            str(cache), *extra]


def plant_tiled_cache(pairs: int, work: Path, smaller: Path) -> Path:
    """The token-id entry of this size's corpus, made by repeating the real train entry of a smaller run (its
    tokenizer, its length distribution) instead of tokenizing: for measuring warm starts and memory at a size whose
    tokenization would take too long here. Returns the tokenizer folder to pass with --tokenizer."""
    from datasets import Dataset

    from vanilla_transformer.training import prepare

    tokenizer = smaller / "run" / "tokenizer"
    real = max((p for p in (smaller / "cache").glob("tokens-*")),
               key=lambda p: json.loads((p / prepare.INFO_FILE).read_text())["rows"])
    table = Dataset.from_file(str(real / prepare.DATA_FILE)).data.table
    source, target, _ = build_corpus(pairs, work / "corpus")
    key = prepare.tokens_key(prepare.files_key([(source, target)], "es", "en"), tokenizer, 256)

    def fill(temporary: Path) -> dict:
        import pyarrow as pa

        written = 0
        with pa.OSFile(str(temporary / prepare.DATA_FILE), "wb") as sink, \
                pa.ipc.new_stream(sink, table.schema) as writer:
            while written < pairs:
                for batch in table.slice(0, pairs - written).to_batches(max_chunksize=65536):
                    prepare.write_batch(writer, batch)
                    written += batch.num_rows
        return {"rows": pairs, "total": pairs, "dropped": 0, "max_length": 256, "tiled_from": str(real)}

    shutil.rmtree(work / "cache", ignore_errors=True)
    prepare.write_entry(work / "cache" / f"tokens-{key}", fill)
    return tokenizer


def measure_training(pairs: int, work: Path, parts: set[str], result: dict, tokenizer: Path | None = None) -> None:
    source, target, valid = build_corpus(pairs, work / "corpus")
    output, cache = work / "run", work / "cache"
    main = [sys.executable, "-m", "vanilla_transformer.training.train"]
    given = ("--tokenizer", str(tokenizer)) if tokenizer else ()
    if "cold" in parts:
        shutil.rmtree(output, ignore_errors=True)
        if tokenizer is None:
            shutil.rmtree(cache, ignore_errors=True)
        cold = stamped_run(main + train_command(source, target, valid, output, cache, "--max_steps", "1",
                                                "--save_steps", "1", "--eval_steps", "1", *given),
                           {"first_update": r"step 1 \|"}, work / "cold.log")
        result["cold"] = cold
        result["disk_bytes"] = {"cache": folder_size(cache), "tokenizer": folder_size(output / "tokenizer"),
                                "corpus": result.get("corpus_bytes")}
    if "warm" in parts:
        result["warm_resume"] = stamped_run(
            main + train_command(source, target, valid, output, cache, "--max_steps", "2", "--save_steps", "1",
                                 "--eval_steps", "1", "--resume", *given),
            {"first_update": r"step 2 \|"}, work / "warm.log")
    if "two_ranks" in parts:
        two = work / "two"
        shutil.rmtree(two, ignore_errors=True)
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29555",
                  "-m", "vanilla_transformer.training.train"]
        result["two_ranks_warm"] = stamped_run(
            launch + train_command(source, target, valid, two, cache, "--max_steps", "1", "--save_steps", "1",
                                   "--eval_steps", "1", "--tokenizer", str(tokenizer or output / "tokenizer")),
            {"first_update": r"step 1 \|"}, work / "two.log", env={"OMP_NUM_THREADS": "1"})


def machine() -> dict:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s*(.+)", text)
    flags = re.search(r"Flags:\s*(.+)", text)
    avx = sorted(f for f in (flags.group(1).split() if flags else []) if f.startswith("avx"))
    return {"cpu": model.group(1).strip() if model else "?", "avx": avx, "cpus": len(os.sched_getaffinity(0)),
            "load_before": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--pairs", type=int, action="append", help="corpus size (repeatable; default 100000)")
    parser.add_argument("--root", default="/tmp/vt-bench", help="where corpora and runs go (large)")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to skip, of {','.join(PARTS)}")
    parser.add_argument("--json", default=str(RESULTS))
    parser.add_argument("--tiled-from", type=int, default=None, help=(
        "do not tokenize: plant the token ids of the --root run of this smaller size, repeated, and measure the "
        "start from the cache, --resume and two ranks (the cold run then reads no text)"))
    args = parser.parse_args(argv)
    parts = set(PARTS) - set(filter(None, args.skip.split(",")))
    results = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).is_file() else {}
    for pairs in args.pairs or [100_000]:
        work = Path(args.root) / f"pairs-{pairs}"
        work.mkdir(parents=True, exist_ok=True)
        result = {"pairs": pairs, "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
        source, target, _ = build_corpus(pairs, work / "corpus")
        result["corpus_bytes"] = source.stat().st_size + target.stat().st_size
        tokenizer = None
        if args.tiled_from:
            tokenizer = plant_tiled_cache(pairs, work, Path(args.root) / f"pairs-{args.tiled_from}")
            result["tiled_from"] = args.tiled_from
        measure_training(pairs, work, parts, result, tokenizer)
        if "tokenize" in parts and not args.tiled_from:
            measure_library(pairs, work, parts, result)
        result["machine"]["load_after"] = os.getloadavg()
        results[f"{pairs}-tiled" if args.tiled_from else str(pairs)] = result
        print(json.dumps(result, indent=1), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
