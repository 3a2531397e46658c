"""The data part of a warm start at WMT scale with whole-file identities and checked cache entries (issue #27), without
the Bible or hours of tokenization: a generated plain-text corpus of `--pairs` pairs (~620 bytes a pair: 2.8 GB at
4.5 M) and a planted token-id entry of the same number of rows (~60 tokens a side), then, in a fresh process (nothing
hashed yet), what `train --resume` does with the data before its first step:

* the run record's identity of the two training files (`run_record.file_identity`: their whole SHA-256);
* `prepare.prepare_in_cache` with `--tokenizer`: the cache key (the same hashes, remembered), the check of the
  token-id entry (SHA-256 of its ~2.2 GB `data.arrow`), the validation entries, `lengths_of`.

    python benchmarks/warm_start_scale.py --pairs 4500000 --root /tmp/vt-warm --output benchmarks/warm_start_scale.json

Timings are wall-clock and depend on what else runs on the machine (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

MEASURE = textwrap.dedent("""
    import json, sys, time
    start = time.perf_counter()
    from vanilla_transformer.training.arguments import DataArguments
    from vanilla_transformer.training import prepare, run_record
    imported = time.perf_counter()
    source, target, valid, tokenizer, cache, output = sys.argv[1:7]
    data = DataArguments(train_file=source, train_target_file=target, validation_file=valid, source_lang="es",
                         target_lang="en", tokenizer=tokenizer, data_cache_dir=cache, max_length=256)
    identities = [run_record.file_identity(path) for path in (source, target)]
    hashed = time.perf_counter()
    prepared = prepare.prepare_in_cache(data, output)
    src, tgt = prepare.lengths_of(prepared.train)
    ready = time.perf_counter()
    print(json.dumps({"import_seconds": round(imported - start, 2),
                      "record_identity_seconds (whole SHA-256 of the training files)": round(hashed - imported, 2),
                      "prepare_in_cache_seconds (key remembered, entries checked)": round(ready - hashed, 2),
                      "data_ready_seconds": round(ready - start, 2), "train_rows": len(src)}))
""")


def write_corpus(folder: Path, pairs: int) -> tuple[Path, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    source, target, valid = folder / "train.es", folder / "train.en", folder / "valid.tsv"
    words_es = "el perro verde come pan y el gato rojo ve la luna sobre la casa de mi padre".split()
    words_en = "the green dog eats bread and the red cat sees the moon over my father's house".split()
    rng = np.random.default_rng(0)
    block = 10_000
    for path, words in ((source, words_es), (target, words_en)):
        if path.is_file() and sum(1 for _ in open(path, "rb")) == pairs:
            continue
        with open(path, "w", encoding="utf-8") as stream:
            for first in range(0, pairs, block):
                n = min(block, pairs - first)
                counts = rng.integers(40, 75, size=n)
                stream.write("".join(" ".join(words[(i + j) % len(words)] for j in range(c)) + "\n"
                                     for i, c in zip(range(first, first + n), counts)))
    valid.write_text("es\ten\n" + "".join(f"{' '.join(words_es[:k])}\t{' '.join(words_en[:k])}\n"
                                          for k in range(3, 15)), encoding="utf-8")
    return source, target, valid


def plant(source: Path, target: Path, tokenizer: Path, cache: Path, pairs: int) -> None:
    import pyarrow as pa

    from vanilla_transformer.training import prepare

    key = prepare.tokens_key(prepare.files_key([(source, target)], "es", "en"), tokenizer, 256)
    folder = cache / f"tokens-{key}"
    if prepare.read_checked(folder) is not None:
        return
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                        ("src_length", pa.int32()), ("tgt_length", pa.int32())])
    rng = np.random.default_rng(1)

    def column(lengths):
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        values = rng.integers(4, 200, size=int(offsets[-1]), dtype=np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))

    def fill(temporary: Path) -> dict:
        with pa.OSFile(str(temporary / prepare.DATA_FILE), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for first in range(0, pairs, 100_000):
                n = min(100_000, pairs - first)
                src = rng.integers(20, 100, size=n, dtype=np.int32)
                tgt = rng.integers(20, 100, size=n, dtype=np.int32)
                prepare.write_batch(writer, pa.RecordBatch.from_arrays(
                    [column(src), column(tgt), pa.array(src), pa.array(tgt)], schema=schema))
        return {"rows": pairs, "total": pairs, "dropped": 0, "max_length": 256, "planted": True}

    prepare.write_entry(folder, fill)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4_500_000)
    parser.add_argument("--root", default="/tmp/vt-warm")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    from hash_throughput import cpu_name
    from vanilla_transformer.training.tokenizer import train_shared_bpe

    root = Path(args.root)
    start = time.perf_counter()
    source, target, valid = write_corpus(root / "corpus", args.pairs)
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        texts = [line for path in (source, target) for _, line in zip(range(2000), open(path, encoding="utf-8"))]
        train_shared_bpe(texts, 556).save_pretrained(tokenizer)
    plant(source, target, tokenizer, root / "cache", args.pairs)
    setup = time.perf_counter() - start
    result = {"cpu": cpu_name(), "pairs": args.pairs, "corpus_bytes": source.stat().st_size + target.stat().st_size,
              "cache_bytes": sum(p.stat().st_size for p in (root / "cache").rglob("*") if p.is_file()),
              "setup_seconds": round(setup, 1), "load_average_before": [round(x, 2) for x in os.getloadavg()],
              "runs": []}
    for _ in range(args.repeats):  # each a fresh process: nothing remembered, files in the page cache after the first
        done = subprocess.run([sys.executable, "-c", MEASURE, str(source), str(target), str(valid), str(tokenizer),
                               str(root / "cache"), str(root / "out")], capture_output=True, text=True, check=True)
        result["runs"].append(json.loads(done.stdout.strip().splitlines()[-1]))
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
