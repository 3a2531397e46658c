"""Data made ready once and kept on disk: the sentence pairs and their token ids as memory-mapped Arrow files.

    vanilla-transformer prepare --train_file c.de --train_target_file c.en --validation_file dev.tsv \\
        --source_lang de --target_lang en --output_dir runs/wmt
    vanilla-transformer train ... --output_dir runs/wmt        # finds the tokenizer and the tokenized data

`train` does the same work implicitly when it finds nothing to reuse; `prepare` does it ahead of time (on a CPU
machine, say). Both write to the same cache, `<output_dir>/data-cache` or `--data_cache_dir`:

* ``pairs-<key>/``: the sentence pairs of one split's local files, streamed from the files (plain text, TSV,
  JSONL, gzip-compressed or not) into an Arrow file, never held whole in memory. The key is the files' identity:
  size, modification time and a SHA-256 of their first and last MiB, with the languages.
* ``tokens-<key>/``: ``input_ids``, ``labels``, ``src_length`` and ``tgt_length`` of the pairs that fit
  `--max_length`, in corpus order, as `tokenize_pairs` gives them. The key adds the tokenizer's files and
  `--max_length` to the pairs' key (or, for a Hub dataset or the Bible, to the dataset's fingerprint).

A changed file, tokenizer or `--max_length` gives another key, so a stale entry is never read. An entry is written
under a temporary name and renamed when complete, so a killed run or a full disk never leaves a usable half entry
(the leftover temporary folder of a dead process of this machine is removed by the next run). Entries are not
removed automatically: delete the cache folder to reclaim the space.

Tokenization runs in the `tokenizers` library's own threads (all the CPUs the process may use, see
`RAYON_NUM_THREADS`), one chunk being encoded while the previous one is written; under several processes the main
process prepares and the others memory-map its result (see `train.prepare_data`). The shared BPE is trained on a
random sample of `--tokenizer_sample` pairs (all of them when the corpus is smaller), chosen with a fixed seed, so
the same data always gives the same tokenizer.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..base.files import files_sha256, head_tail_sha256

logger = logging.getLogger(__name__)

CACHE_FOLDER = "data-cache"
# Bump when what an entry holds or how it is computed changes (old entries are then never read).
CACHE_VERSION = 1
DATA_FILE = "data.arrow"
INFO_FILE = "info.json"
HASHED_BYTES = 1 << 20  # the head and the tail of a data file that its identity hashes
PAIRS_PER_CHUNK = 20_000  # rows per Arrow record batch when streaming pairs to disk
TOKENIZE_CHUNK = 4096  # pairs per encode call (two in flight: ~150 MB of encodings at 60 tokens a side)
TOKENIZER_SAMPLE_SEED = 0
_TEMPORARY = re.compile(r"\.tmp-(pairs|tokens)-[0-9a-f]+-.+")
_OWNER_FILE = ".owner"


# ---------------------------------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------------------------------


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:24]


def file_identity(path: str | os.PathLike) -> dict:
    """What a data file's cache entries depend on: size, modification time and a hash of its head and tail."""
    stat = Path(path).stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256_head_tail": head_tail_sha256(path, HASHED_BYTES)}


FileSpec = str | os.PathLike | tuple


def files_key(files: list[FileSpec], source_lang: str, target_lang: str) -> str:
    """The key of the pairs read from `files` (paths and (source, target) plain-text pairs, in order)."""
    identities = [[file_identity(p) for p in spec] if isinstance(spec, tuple) else file_identity(spec)
                  for spec in files]
    kinds = [["text-pair"] if isinstance(spec, tuple) else Path(spec).name.lower().split(".")[1:] for spec in files]
    return _digest({"version": CACHE_VERSION, "files": identities, "kinds": kinds, "langs": [source_lang, target_lang]})


def dataset_key(dataset, source_lang: str, target_lang: str) -> str:
    """The key of a `datasets.Dataset` (a Hub dataset, the Bible): its fingerprint when it lives in Arrow files
    (`datasets` derives it from them), else a hash of its content."""
    if dataset.cache_files and getattr(dataset, "_fingerprint", None):
        identity = dataset._fingerprint
    else:
        digest = hashlib.sha256()
        for batch in dataset.with_format("arrow").iter(batch_size=PAIRS_PER_CHUNK):
            for chunk in batch.to_batches():
                digest.update(chunk.serialize())
        identity = digest.hexdigest()
    return _digest({"version": CACHE_VERSION, "dataset": identity, "rows": len(dataset),
                    "langs": [source_lang, target_lang]})


def tokenizer_key(folder: str | os.PathLike) -> str:
    """A hash of the files of a tokenizer folder (what `AutoTokenizer.from_pretrained` reads)."""
    from ..base.outputs import TOKENIZER_FOLDER_FILES

    names = TOKENIZER_FOLDER_FILES | {"vocab.json", "merges.txt", "source.spm", "target.spm", "target_vocab.json",
                                      "sentencepiece.bpe.model", "spiece.model"}
    return (files_sha256(folder, names) or hashlib.sha256().hexdigest())[:24]


def tokens_key(pairs_key: str, tokenizer_folder: str | os.PathLike, max_length: int | None) -> str:
    return _digest({"version": CACHE_VERSION, "pairs": pairs_key, "tokenizer": tokenizer_key(tokenizer_folder),
                    "max_length": max_length})


# ---------------------------------------------------------------------------------------------------------------------
# Entries: complete or absent
# ---------------------------------------------------------------------------------------------------------------------


def cache_root(data_cache_dir: str | os.PathLike | None, output_dir: str | os.PathLike) -> Path:
    return Path(data_cache_dir) if data_cache_dir else Path(output_dir) / CACHE_FOLDER


def read_entry(folder: Path):
    """(memory-mapped Dataset, info) of a complete entry, or None."""
    from datasets import Dataset

    info_path, data_path = folder / INFO_FILE, folder / DATA_FILE
    if not (info_path.is_file() and data_path.is_file()):
        return None
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        dataset = Dataset.from_file(str(data_path), in_memory=False)
    except (OSError, ValueError) as error:
        logger.warning("%s: unreadable cache entry (%s); preparing it again", folder, error)
        return None
    if len(dataset) != info.get("rows"):
        logger.warning("%s: %d rows where %s says %s; preparing it again", folder, len(dataset), INFO_FILE,
                       info.get("rows"))
        return None
    return dataset, info


def write_entry(folder: Path, fill: Callable[[Path], dict]):
    """Create the entry `folder`: `fill(data_path)` writes the Arrow file and returns the info (with ``rows``);
    everything goes to a temporary folder first, renamed when complete. Returns what `read_entry` gives."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(folder.parent)
    temporary = folder.parent / f".tmp-{folder.name}-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        (temporary / _OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n", encoding="utf-8")
        try:
            info = fill(temporary / DATA_FILE)
            (temporary / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        except OSError as error:
            from ..base.errors import DiskFullError, is_disk_full

            if is_disk_full(error, temporary):
                raise DiskFullError(f"{folder.parent}: no space left on the device while writing the data cache "
                                    "(nothing half-written is kept); free some space or give --data_cache_dir on "
                                    "another disk") from error
            raise
        (temporary / _OWNER_FILE).unlink()
        try:
            os.rename(temporary, folder)
        except OSError:
            if read_entry(folder) is None:  # not "another process finished first"
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    entry = read_entry(folder)
    if entry is None:
        raise RuntimeError(f"{folder}: the cache entry just written cannot be read back")
    return entry


def remove_dead_temporaries(root: Path) -> None:
    """Temporary entries left by a killed process of this machine (another machine's are left alone)."""
    host = socket.gethostname()
    for path in root.iterdir() if root.is_dir() else ():
        if not (_TEMPORARY.fullmatch(path.name) and path.is_dir()):
            continue
        try:
            owner_host, pid = (path / _OWNER_FILE).read_text(encoding="utf-8").split()
        except (OSError, ValueError):
            continue  # finishing right now (the owner file goes just before the rename), or not ours
        if owner_host == host and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------------------------------
# Pairs: local files streamed to Arrow
# ---------------------------------------------------------------------------------------------------------------------


def write_pairs(pairs: Iterable[dict], path: Path, source_lang: str, target_lang: str) -> int:
    """Stream ``{source_lang: ..., target_lang: ...}`` pairs into an Arrow file with one ``translation`` column
    (the layout of the WMT datasets), `PAIRS_PER_CHUNK` rows at a time; returns the number of rows."""
    import pyarrow as pa

    struct = pa.struct([(source_lang, pa.string()), (target_lang, pa.string())])
    schema = pa.schema([("translation", struct)])
    rows = 0
    sources, targets = [], []

    def flush(writer):
        column = pa.StructArray.from_arrays([pa.array(sources, pa.string()), pa.array(targets, pa.string())],
                                            fields=list(struct))
        writer.write_batch(pa.RecordBatch.from_arrays([column], schema=schema))
        sources.clear()
        targets.clear()

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for pair in pairs:
            sources.append(pair[source_lang])
            targets.append(pair[target_lang])
            rows += 1
            if len(sources) == PAIRS_PER_CHUNK:
                flush(writer)
        if sources or rows == 0:
            flush(writer)
    return rows


def local_pairs(files: list[FileSpec], source_lang: str, target_lang: str, root: Path):
    """The pairs of one split's local files as a memory-mapped Dataset, from the cache or streamed into it;
    returns (dataset, key)."""
    from .data import read_pairs

    key = files_key(files, source_lang, target_lang)
    folder = root / f"pairs-{key}"
    entry = read_entry(folder)
    if entry is None:
        names = ", ".join(" + ".join(map(str, f)) if isinstance(f, tuple) else str(f) for f in files)

        def pairs() -> Iterator[dict]:
            for spec in files:
                if isinstance(spec, tuple):
                    yield from read_pairs(spec[0], source_lang, target_lang, target_path=spec[1])
                else:
                    yield from read_pairs(spec, source_lang, target_lang)

        def fill(path: Path) -> dict:
            start = time.perf_counter()
            rows = write_pairs(pairs(), path, source_lang, target_lang)
            if rows == 0:
                raise ValueError(f"{names}: no sentence pairs")
            logger.info("read %d sentence pairs from %s in %.1f s", rows, names, time.perf_counter() - start)
            return {"rows": rows, "files": names, "source_lang": source_lang, "target_lang": target_lang}

        entry = write_entry(folder, fill)
    return entry[0], key


# ---------------------------------------------------------------------------------------------------------------------
# Tokenization
# ---------------------------------------------------------------------------------------------------------------------


def pair_encoder(tokenizer) -> Callable[[list[str], list[str]], tuple[list[list[int]], list[list[int]]]]:
    """A function (sources, targets) -> (input_ids, labels), the ids `tokenizer(sources, text_target=targets)`
    gives. For a plain fast tokenizer (ours) it calls the `tokenizers` library directly, in its own threads (no
    offsets, no transformers' per-batch bookkeeping); any other tokenizer goes through its `__call__`."""
    from transformers import PreTrainedTokenizerFast

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and type(tokenizer) is PreTrainedTokenizerFast:
        from tokenizers import Tokenizer

        plain = Tokenizer.from_str(backend.to_str())  # a copy without the saved padding and truncation settings
        plain.no_padding()
        plain.no_truncation()
        encode = getattr(plain, "encode_batch_fast", plain.encode_batch)

        def run(sources: list[str], targets: list[str]):
            encodings = encode(sources + targets)
            ids = [e.ids for e in encodings]
            return ids[: len(sources)], ids[len(sources):]

        return run

    def run_any(sources: list[str], targets: list[str]):
        encoded = tokenizer(sources, text_target=targets, truncation=False)
        return encoded["input_ids"], encoded["labels"]

    return run_any


def _id_column(sequences: list[list[int]]):
    import pyarrow as pa

    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int32, count=len(sequences))
    offsets = np.zeros(len(sequences) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.fromiter((i for s in sequences for i in s), dtype=np.int32, count=int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)), lengths


def _arrow_file(dataset) -> str | None:
    """The one Arrow file that holds `dataset` row for row (a cache entry read by `read_entry`), else None."""
    files = getattr(dataset, "cache_files", None) or []
    if len(files) == 1 and getattr(dataset, "_indices", None) is None:
        return files[0]["filename"]
    return None


def translation_batches(dataset, batch_size: int, rows: np.ndarray | None = None) -> Iterator:
    """The ``translation`` column of `dataset` (of its `rows`, sorted indices, when given) as Arrow arrays of at most
    `batch_size` pairs, in order.

    A dataset that is one Arrow file of the cache is read from the file, not through its memory map: every page of a
    mapped file that has been read counts in the process's RSS until the kernel reclaims it, so one pass over a
    4.5 M-pair corpus read that way showed as 2.8 GB more peak RSS (clean, reclaimable page cache, but measured as
    the process's); read, only the batches in hand count."""
    import pyarrow as pa

    path = _arrow_file(dataset)
    if path is None:
        source = dataset if rows is None else dataset.select(rows)
        for table in source.select_columns(["translation"]).with_format("arrow").iter(batch_size=batch_size):
            yield table.column("translation").combine_chunks()
        return
    pending, held, first = [], 0, 0  # arrays waiting to make a batch; their rows; the file row of the next batch
    with pa.OSFile(path) as file:
        for batch in pa.ipc.open_stream(file):
            column = batch.column(batch.schema.get_field_index("translation"))
            if rows is not None:  # the wanted rows of this batch, as positions within it
                lo, hi = np.searchsorted(rows, [first, first + len(column)])
                column = column.take(pa.array(rows[lo:hi] - first)) if hi > lo else column.slice(0, 0)
            first += batch.num_rows
            while len(column):
                taken = column.slice(0, batch_size - held)
                pending.append(taken)
                held += len(taken)
                column = column.slice(len(taken))
                if held == batch_size:
                    yield pa.concat_arrays(pending)
                    pending, held = [], 0
    if held:
        yield pa.concat_arrays(pending)


def write_tokens(dataset, tokenizer, source_lang: str, target_lang: str, max_length: int | None, path: Path,
                 progress: bool = False) -> dict:
    """Tokenize a ``translation`` dataset into an Arrow file of ``input_ids``, ``labels``, ``src_length`` and
    ``tgt_length`` (the columns of `data.tokenize_pairs`, same rows, same order), dropping pairs over `max_length`
    tokens on either side; returns ``{"rows": kept, "total": pairs, "dropped": ...}``."""
    import pyarrow as pa
    from tqdm.auto import tqdm

    encode = pair_encoder(tokenizer)
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                        ("src_length", pa.int32()), ("tgt_length", pa.int32())])

    def chunks():
        for column in translation_batches(dataset, TOKENIZE_CHUNK):
            yield column.field(source_lang).to_pylist(), column.field(target_lang).to_pylist()

    total = kept = 0
    start = time.perf_counter()
    bar = tqdm(total=len(dataset), desc="tokenizing", unit="pairs", disable=not progress, dynamic_ncols=True)
    # The tokenizers library releases the GIL: one chunk is encoded (in its threads) while the previous is written.
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        for sources_ids, target_ids in _pipelined(pool, encode, chunks()):
            source_column, source_lengths = _id_column(sources_ids)
            target_column, target_lengths = _id_column(target_ids)
            batch = pa.RecordBatch.from_arrays(
                [source_column, target_column, pa.array(source_lengths), pa.array(target_lengths)], schema=schema)
            if max_length is not None:
                keep = (source_lengths <= max_length) & (target_lengths <= max_length)
                if not keep.all():
                    batch = batch.filter(pa.array(keep))
            writer.write_batch(batch)
            total += len(source_lengths)
            kept += batch.num_rows
            bar.update(len(source_lengths))
        if total == 0:
            writer.write_batch(pa.RecordBatch.from_pylist([], schema=schema))
    bar.close()
    seconds = time.perf_counter() - start
    logger.info("tokenized %d pairs in %.1f s (%.0f pairs/s); %d dropped as longer than %s tokens", total, seconds,
                total / max(seconds, 1e-9), total - kept, max_length)
    return {"rows": kept, "total": total, "dropped": total - kept, "max_length": max_length,
            "seconds": round(seconds, 2)}


def _pipelined(pool, encode, chunks):
    """encode(chunk) for each chunk, the next one running in `pool` while the caller handles the current."""
    pending = None
    for sources, targets in chunks:
        future = pool.submit(encode, sources, targets)
        if pending is not None:
            yield pending.result()
        pending = future
    if pending is not None:
        yield pending.result()


def lengths_of(tokenized_dataset) -> tuple[np.ndarray, np.ndarray]:
    """The ``src_length`` and ``tgt_length`` columns as numpy arrays, straight from the (memory-mapped) Arrow table:
    0.2 s and no copy of the rest at 4.5 M pairs, where `datasets`' numpy formatting takes seconds and ~300 MB."""
    if getattr(tokenized_dataset, "_indices", None) is None:
        table = tokenized_dataset.data.table
        return table.column("src_length").to_numpy(), table.column("tgt_length").to_numpy()
    columns = tokenized_dataset.select_columns(["src_length", "tgt_length"]).with_format("numpy")[:]
    return columns["src_length"], columns["tgt_length"]


def tokenized(dataset, key: str, tokenizer, tokenizer_folder, source_lang: str, target_lang: str,
              max_length: int | None, root: Path, progress: bool = False):
    """The tokenized pairs of `dataset` (whose pairs key is `key`), from the cache or tokenized into it;
    returns (memory-mapped dataset, info)."""
    folder = root / f"tokens-{tokens_key(key, tokenizer_folder, max_length)}"
    entry = read_entry(folder)
    if entry is not None:
        logger.info("tokenized data from the cache: %s (%d pairs)", folder, len(entry[0]))
        return entry
    return write_entry(folder, lambda path: write_tokens(dataset() if callable(dataset) else dataset, tokenizer,
                                                         source_lang, target_lang, max_length, path, progress))


# ---------------------------------------------------------------------------------------------------------------------
# Raw splits of a Hub dataset or the Bible
# ---------------------------------------------------------------------------------------------------------------------


def load_raw_data(data):
    """A DatasetDict with `train`, `validation` (and maybe `test`) of `translation` rows (local files are read into
    memory here; `prepare_data` streams them into the cache instead)."""
    from .data import load_splits

    def spec(split):
        path, target = getattr(data, f"{split}_file"), getattr(data, f"{split}_target_file")
        return (path, target) if target else path

    splits = load_splits(data.source_lang, data.target_lang, data.dataset, data.dataset_config, data.cache_dir,
                         files={split: spec(split) for split in ("train", "validation", "test")})
    for needed in ("train", "validation"):
        if needed not in splits:
            raise ValueError(f"the data has no {needed!r} split (splits: {', '.join(splits)})")
    return splits


# ---------------------------------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------------------------------


def sample_texts(dataset, pairs: int | None, source_lang: str, target_lang: str) -> Iterator[str]:
    """The sentences (source, target, source, ...) of `pairs` pairs of `dataset` chosen at random with a fixed seed,
    in corpus order; all pairs when `pairs` is None, 0 or at least the dataset's size."""
    rows = None
    if pairs and pairs < len(dataset):
        rng = np.random.default_rng(TOKENIZER_SAMPLE_SEED)
        rows = np.sort(rng.choice(len(dataset), size=pairs, replace=False))
    for column in translation_batches(dataset, 1000, rows):
        for source, target in zip(column.field(source_lang).to_pylist(), column.field(target_lang).to_pylist()):
            yield source
            yield target


def ensure_tokenizer(data, output_dir: str | os.PathLike, train_pairs: Callable[[], object]):
    """`--tokenizer`, else `<output_dir>/tokenizer` when an earlier run or `prepare` left one there, else a shared
    BPE of `--vocab_size` trained on a sample of `--tokenizer_sample` training pairs and saved there (atomically).
    Returns (tokenizer read back from disk, its folder, what was trained or None)."""
    from transformers import AutoTokenizer

    from .arguments import DEFAULT_VOCAB_SIZE
    from ..base.outputs import is_owned_tokenizer_file, staged_folder
    from .tokenizer import train_shared_bpe

    trained = None
    if data.tokenizer:
        folder = Path(data.tokenizer)
    else:
        folder = Path(output_dir) / "tokenizer"
        if not (folder / "tokenizer.json").is_file():
            pairs = train_pairs()
            sample = min(data.tokenizer_sample or len(pairs), len(pairs))
            start = time.perf_counter()
            tokenizer = train_shared_bpe(sample_texts(pairs, sample, data.source_lang, data.target_lang),
                                         data.vocab_size or DEFAULT_VOCAB_SIZE)
            with staged_folder(folder, owned=is_owned_tokenizer_file) as staging:
                tokenizer.save_pretrained(staging)
            trained = {"vocab_size": len(tokenizer), "sample_pairs": sample, "corpus_pairs": len(pairs),
                       "seconds": round(time.perf_counter() - start, 2)}
            logger.info("trained a shared BPE of %d tokens on %d of the %d training pairs (%s) in %.1f s: %s",
                        len(tokenizer), sample, len(pairs), "all" if sample == len(pairs) else "a random sample",
                        trained["seconds"], folder)
    return AutoTokenizer.from_pretrained(folder), folder, trained


# ---------------------------------------------------------------------------------------------------------------------
# Everything `train` needs
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    """The tokenizer, the tokenized train and validation splits (memory-mapped), the raw validation (and test)
    pairs, and counts for the run summary."""

    tokenizer: object
    tokenizer_folder: Path
    train: object
    validation: object
    raw: dict
    info: dict = field(default_factory=dict)


def file_specs(data, split: str) -> list[FileSpec]:
    path, target = getattr(data, f"{split}_file"), getattr(data, f"{split}_target_file")
    if not path:
        return []
    return [(path, target)] if target else [path]


def prepare_data(data, output_dir: str | os.PathLike, progress: bool = False) -> PreparedData:
    """Read, tokenize and cache what `data` (a `DataArguments`) names, reusing every cache entry that fits."""
    root = cache_root(data.data_cache_dir, output_dir)
    langs = (data.source_lang, data.target_lang)
    read: dict[str, object] = {}
    if data.train_file:
        specs = {split: file_specs(data, split) for split in ("train", "validation", "test")}
        specs = {split: files for split, files in specs.items() if files}
        keys = {split: files_key(files, *langs) for split, files in specs.items()}

        def raw(split: str):
            if split not in read:
                read[split] = local_pairs(specs[split], *langs, root)[0]
            return read[split]
    else:
        read.update(load_raw_data(data))
        keys = {split: dataset_key(read[split], *langs) for split in read}
        raw = read.__getitem__
    tokenizer, folder, trained = ensure_tokenizer(data, output_dir, lambda: raw("train"))
    train, train_info = tokenized(lambda: raw("train"), keys["train"], tokenizer, folder, *langs, data.max_length,
                                  root, progress)
    validation, validation_info = tokenized(raw("validation"), keys["validation"], tokenizer, folder, *langs,
                                            data.max_length, root, progress)
    splits = {"validation": raw("validation")}
    if "test" in keys:
        splits["test"] = raw("test")
    info = {"train_pairs": train_info["total"], "train_kept": train_info["rows"],
            "dropped_over_max_length": train_info["dropped"], "validation_pairs": validation_info["total"],
            "validation_dropped": validation_info["dropped"], "cache": str(root)}
    if trained:
        info["tokenizer_trained"] = trained
    return PreparedData(tokenizer, folder, train, validation, splits, info)
