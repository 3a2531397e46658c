"""Data made ready once and kept on disk: the sentence pairs and their token ids as memory-mapped Arrow files.

    vanilla-transformer prepare --train_file c.de --train_target_file c.en --validation_file dev.tsv \\
        --source_lang de --target_lang en --output_dir runs/wmt
    vanilla-transformer train ... --output_dir runs/wmt        # finds the tokenizer and the tokenized data

`train` does the same work implicitly when it finds nothing to reuse; `prepare` does it ahead of time (on a CPU
machine, say), and both take the same decisions on the same arguments (`check_kept_pairs` included). Both write to
the same cache, `<output_dir>/data-cache` or `--data_cache_dir`:

* ``pairs-<key>/``: the sentence pairs of one split's local files, streamed from the files (plain text, TSV,
  JSONL, gzip-compressed or not) into an Arrow file, never held whole in memory. The key is the files' identity:
  their size and a SHA-256 of their whole content (not their names or modification times), with the languages.
* ``tokenizer-<key>/``: the shared BPE trained on the training pairs; the key is the training pairs' key,
  `--vocab_size`, `--tokenizer_sample` and the sample's seed. It is copied to `<output_dir>/tokenizer`; a rerun,
  another output folder on the same `--data_cache_dir`, or `prepare` then `train` never train it twice, and another
  `--vocab_size` trains another one.
* ``tokens-<key>/``: ``input_ids``, ``labels``, ``src_length`` and ``tgt_length`` of the pairs that fit
  `--max_length`, in corpus order. The key adds the tokenizer's files and `--max_length` to the pairs' key (or, for
  a Hub dataset or the Bible, to the dataset's fingerprint).

A changed file, tokenizer or `--max_length` gives another key, so a stale entry is never read. An entry is written
under a temporary name and renamed when complete, so a killed run or a full disk never leaves a usable half entry
(the leftover temporary folder of a dead process of this machine is removed by the next run). Every entry's
`info.json` holds the SHA-256 of each of its files and its own; an entry is checked when it is used, and a damaged
one (a file missing, truncated or with one byte changed, `info.json` garbled, a file where the folder should be...)
is set aside with one warning and made again. Entries are not removed automatically: delete the cache folder to
reclaim the space.

Tokenization runs in the `tokenizers` library's own threads (all the CPUs the process may use, see
`RAYON_NUM_THREADS`), one chunk being encoded while the previous one is written. A slow tokenizer (Marian's
SentencePiece `MarianTokenizer`, Python code) runs in worker processes instead, one per CPU the process may use
(`os.sched_getaffinity`), chunks handed out and written back in corpus order: the same ids, the same entry, as one
process would make. Under several training processes the main one prepares and the others memory-map its result
(see `batches.prepare_data`). The shared BPE is trained on a
random sample of `--tokenizer_sample` pairs (all of them when the corpus is smaller), chosen with a fixed seed, so
the same data always gives the same tokenizer.
"""

from __future__ import annotations

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

from ..base.files import content_sha256, files_sha256
from ..base.outputs import TOKENIZER_FOLDER_FILES
from .encoding import chunk_encoder, encoding_processes, pair_encoder  # noqa: F401  (pair_encoder: for callers)

logger = logging.getLogger(__name__)

CACHE_FOLDER = "data-cache"
# Bump when what an entry holds or how it is computed changes (old entries are then never read).
CACHE_VERSION = 2
DATA_FILE = "data.arrow"
INFO_FILE = "info.json"
FILE_CHECKSUMS = "sha256"  # info.json: {file name: SHA-256} of the entry's files
INFO_CHECKSUM = "info_sha256"  # info.json: SHA-256 of the rest of info.json
# The files of a tokenizer folder (what `AutoTokenizer.from_pretrained` reads).
TOKENIZER_NAMES = TOKENIZER_FOLDER_FILES | {"vocab.json", "merges.txt", "source.spm", "target.spm", "target_vocab.json",
                                            "sentencepiece.bpe.model", "spiece.model"}
PAIRS_PER_CHUNK = 20_000  # rows per Arrow record batch when streaming pairs to disk
TOKENIZE_CHUNK = 4096  # pairs per encode call (two in flight: ~150 MB of encodings at 60 tokens a side)
TOKENIZER_SAMPLE_SEED = 0
_TEMPORARY = re.compile(r"\.tmp-(pairs|tokens|tokenizer)-[0-9a-f]+-.+")
_ASIDE = re.compile(r"\.damaged-(pairs|tokens|tokenizer)-[0-9a-f]+-(?P<host>.+)-(?P<pid>[0-9]+)")
_OWNER_FILE = ".owner"


# ---------------------------------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------------------------------


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:24]


def file_identity(path: str | os.PathLike) -> dict:
    """What a data file's cache entries depend on: its size and a SHA-256 of its whole content (computed once per
    process, see `content_sha256`); not its name, place or modification time, so a copy or a moved file is the same
    data and any edited byte is other data."""
    return {"size": Path(path).stat().st_size, "sha256": content_sha256(path)}


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
    return (files_sha256(folder, TOKENIZER_NAMES) or hashlib.sha256().hexdigest())[:24]


def tokens_key(pairs_key: str, tokenizer_folder: str | os.PathLike, max_length: int | None) -> str:
    return _digest({"version": CACHE_VERSION, "pairs": pairs_key, "tokenizer": tokenizer_key(tokenizer_folder),
                    "max_length": max_length})


def trained_tokenizer_key(train_key: str, vocab_size: int, sample: int) -> str:
    """The key of the shared BPE trained on the training pairs of key `train_key`: the data, `--vocab_size`,
    `--tokenizer_sample`, the seed of the sample and the kind of BPE (with byte fallback: an entry cached before
    byte fallback is never taken for one with it)."""
    return _digest({"version": CACHE_VERSION, "train": train_key, "vocab_size": vocab_size, "sample": sample,
                    "seed": TOKENIZER_SAMPLE_SEED, "byte_fallback": True})


# ---------------------------------------------------------------------------------------------------------------------
# Entries: complete, or set aside and made again
# ---------------------------------------------------------------------------------------------------------------------


class DamagedEntry(Exception):
    """A cache entry that is there but not as it was written; the message says what is wrong."""


def cache_root(data_cache_dir: str | os.PathLike | None, output_dir: str | os.PathLike) -> Path:
    return Path(data_cache_dir) if data_cache_dir else Path(output_dir) / CACHE_FOLDER


def _info_digest(info: dict) -> str:
    return hashlib.sha256(json.dumps({k: v for k, v in info.items() if k != INFO_CHECKSUM}, sort_keys=True,
                                     default=str).encode()).hexdigest()


def checked_info(folder: Path) -> dict | None:
    """The info of the complete entry `folder`, None when there is no entry; `DamagedEntry` when something is
    there but not what was written: not a folder, a file missing or not a file, an `info.json` that is not the
    JSON written (its own checksum), a file whose SHA-256 is not the one `info.json` recorded (one flipped byte
    included). The files are hashed once per process (`content_sha256`: ~1 s a GB)."""
    if not os.path.lexists(folder):
        return None
    if folder.is_symlink() or not folder.is_dir():
        raise DamagedEntry("not a folder")
    try:
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedEntry(f"no {INFO_FILE}") from None
    except (OSError, ValueError) as error:
        raise DamagedEntry(f"{INFO_FILE} unreadable ({error.__class__.__name__}: {error})") from None
    if not isinstance(info, dict) or info.get(INFO_CHECKSUM) != _info_digest(info):
        raise DamagedEntry(f"{INFO_FILE} is not the one written (its checksum differs)")
    checksums = info.get(FILE_CHECKSUMS)
    if not isinstance(checksums, dict) or not checksums:
        raise DamagedEntry(f"{INFO_FILE} lists no files")
    for name, expected in sorted(checksums.items()):
        path = folder / name
        if path.is_symlink() or not path.is_file():
            raise DamagedEntry(f"{name} is {'missing' if not os.path.lexists(path) else 'not a file'}")
        try:
            if content_sha256(path) != expected:
                raise DamagedEntry(f"{name} is not the file written (its SHA-256 differs)")
        except OSError as error:
            raise DamagedEntry(f"{name} unreadable ({error})") from None
    return info


def set_aside(folder: Path, reason: str) -> None:
    """Move the damaged entry `folder` out of the way (then delete it), with one warning: the caller makes it again."""
    logger.warning("%s: damaged data-cache entry (%s); it is set aside and made again", folder, reason)
    aside = folder.parent / f".damaged-{folder.name}-{socket.gethostname()}-{os.getpid()}"
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return  # another process set it aside first
    except OSError as error:
        raise OSError(f"{folder}: a damaged data-cache entry that cannot be moved aside ({error}); delete it") \
            from error
    _remove(aside)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def read_entry(folder: Path):
    """(memory-mapped Dataset, info) of the complete data entry `folder`, or None when there is none; a damaged one
    is set aside (`set_aside`, one warning) and None returned, so that the caller writes it again."""
    info = read_checked(folder)
    if info is None:
        return None
    from datasets import Dataset

    try:
        dataset = Dataset.from_file(str(folder / DATA_FILE), in_memory=False)
    except (OSError, ValueError) as error:
        set_aside(folder, f"{DATA_FILE} unreadable ({error})")
        return None
    if len(dataset) != info.get("rows"):
        set_aside(folder, f"{len(dataset)} rows where {INFO_FILE} says {info.get('rows')}")
        return None
    return dataset, info


def read_checked(folder: Path) -> dict | None:
    """`checked_info(folder)`, a damaged entry being set aside (None)."""
    try:
        return checked_info(folder)
    except DamagedEntry as damage:
        set_aside(folder, str(damage))
        return None


def write_batch(writer, batch) -> None:
    """Append one record batch to an Arrow stream of the cache: every entry's data goes through here (the seam the
    tests use to fail a write, e.g. a full disk)."""
    writer.write_batch(batch)


def write_entry(folder: Path, fill: Callable[[Path], dict], read: Callable[[Path], object] | None = None):
    """Create the entry `folder`: `fill(temporary_folder)` writes its files there and returns the info (with
    ``rows`` for a data entry); the files' SHA-256 and the info's own are added to `info.json`. Everything goes to a
    temporary folder first, renamed when complete. Returns `read(folder)` (default `read_entry`)."""
    read = read or read_entry
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(folder.parent)
    if os.path.lexists(folder) and read_checked(folder) is not None:
        return read(folder)  # another process wrote it meanwhile
    temporary = folder.parent / f".tmp-{folder.name}-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        (temporary / _OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n", encoding="utf-8")
        try:
            info = fill(temporary)
            names = sorted(p.name for p in temporary.iterdir() if p.name != _OWNER_FILE)
            info[FILE_CHECKSUMS] = {name: content_sha256(temporary / name) for name in names}
            info[INFO_CHECKSUM] = _info_digest(info)
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
            if read_checked(folder) is None:  # not "another process finished first"
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    entry = read(folder)
    if entry is None:
        raise RuntimeError(f"{folder}: the cache entry just written cannot be read back")
    return entry


def remove_dead_temporaries(root: Path) -> None:
    """Temporary and set-aside entries left by a killed process of this machine (another machine's are left
    alone)."""
    host = socket.gethostname()
    for path in root.iterdir() if root.is_dir() else ():
        aside = _ASIDE.fullmatch(path.name)
        if aside:
            if aside["host"] == host and not _alive(int(aside["pid"])):
                _remove(path)
            continue
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
        write_batch(writer, pa.RecordBatch.from_arrays([column], schema=schema))
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

        def fill(temporary: Path) -> dict:
            start = time.perf_counter()
            rows = write_pairs(pairs(), temporary / DATA_FILE, source_lang, target_lang)
            if rows == 0:
                raise ValueError(f"{names}: no sentence pairs")
            logger.info("read %d sentence pairs from %s in %.1f s", rows, names, time.perf_counter() - start)
            return {"rows": rows, "files": names, "source_lang": source_lang, "target_lang": target_lang}

        entry = write_entry(folder, fill)
    return entry[0], key


# ---------------------------------------------------------------------------------------------------------------------
# Tokenization
# ---------------------------------------------------------------------------------------------------------------------


def _id_column(flat: tuple[np.ndarray, np.ndarray]):
    """An Arrow list column, and its lengths, of one side of a chunk as `encoding.encode_flat` gives it."""
    import pyarrow as pa

    lengths, values = flat
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
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
                 progress: bool = False, processes: int | None = None) -> dict:
    """Tokenize a ``translation`` dataset into an Arrow file of ``input_ids``, ``labels``, ``src_length`` and
    ``tgt_length`` (what benchmarks/baselines.tokenize_pairs gives: same rows, same order), dropping pairs over
    `max_length` tokens on either side; returns ``{"rows": kept, "total": pairs, "dropped": ...}``. `processes`:
    how many processes encode (default `encoding_processes`: one per usable CPU for a slow tokenizer)."""
    import pyarrow as pa
    from tqdm.auto import tqdm

    processes = processes or encoding_processes(tokenizer, -(-len(dataset) // TOKENIZE_CHUNK))
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
                        ("src_length", pa.int32()), ("tgt_length", pa.int32())])

    def chunks():
        for column in translation_batches(dataset, TOKENIZE_CHUNK):
            yield column.field(source_lang).to_pylist(), column.field(target_lang).to_pylist()

    total = kept = 0
    start = time.perf_counter()
    bar = tqdm(total=len(dataset), desc="tokenizing", unit="pairs", disable=not progress, dynamic_ncols=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer, \
            chunk_encoder(tokenizer, processes) as encoded:
        for sources_ids, target_ids in encoded(chunks()):
            source_column, source_lengths = _id_column(sources_ids)
            target_column, target_lengths = _id_column(target_ids)
            batch = pa.RecordBatch.from_arrays(
                [source_column, target_column, pa.array(source_lengths), pa.array(target_lengths)], schema=schema)
            if max_length is not None:
                keep = (source_lengths <= max_length) & (target_lengths <= max_length)
                if not keep.all():
                    batch = batch.filter(pa.array(keep))
            write_batch(writer, batch)
            total += len(source_lengths)
            kept += batch.num_rows
            bar.update(len(source_lengths))
        if total == 0:
            write_batch(writer, pa.RecordBatch.from_pylist([], schema=schema))
    bar.close()
    seconds = time.perf_counter() - start
    logger.info("tokenized %d pairs in %.1f s (%.0f pairs/s, %d process%s); %d dropped as longer than %s tokens",
                total, seconds, total / max(seconds, 1e-9), processes, "" if processes == 1 else "es", total - kept,
                max_length)
    return {"rows": kept, "total": total, "dropped": total - kept, "max_length": max_length,
            "seconds": round(seconds, 2), "processes": processes}


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
    return write_entry(folder, lambda temporary: write_tokens(dataset() if callable(dataset) else dataset, tokenizer,
                                                              source_lang, target_lang, max_length,
                                                              temporary / DATA_FILE, progress))


# ---------------------------------------------------------------------------------------------------------------------
# Raw splits of a Hub dataset or the Bible
# ---------------------------------------------------------------------------------------------------------------------


def load_raw_data(data):
    """A DatasetDict with `train`, `validation` (and maybe `test`) of `translation` rows (local files are read into
    memory here; `prepare_in_cache` streams them into the cache instead)."""
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


def ensure_tokenizer(data, output_dir: str | os.PathLike, train_key: str, train_pairs: Callable[[], object],
                     root: Path, main: bool = True):
    """`--tokenizer`, else the shared BPE of `--vocab_size` trained on `--tokenizer_sample` training pairs, kept in the
    cache as ``tokenizer-<key>/`` (key: the training data's key, `--vocab_size`, `--tokenizer_sample` and the sample's
    seed) and trained only when that entry is missing; it is copied to `<output_dir>/tokenizer`, the run's own.

    A run's tokenizer (`<output_dir>` holds a checkpoint) is never replaced: when the entry is missing it is adopted
    into the cache (not trained again), and when the entry is another tokenizer `UsageError` says so. Not `main` (the
    other processes of a run, after the main one): `<output_dir>/tokenizer` is the one the main process put there,
    adopted into this cache (a node's own `--data_cache_dir`) when the entry is missing.
    Returns (tokenizer read back from disk, its folder, what was trained now or None)."""
    from transformers import AutoTokenizer

    if data.tokenizer:
        return AutoTokenizer.from_pretrained(data.tokenizer), Path(data.tokenizer), None
    from ..base.errors import UsageError
    from ..base.outputs import is_owned_tokenizer_file, staged_folder
    from .arguments import DEFAULT_VOCAB_SIZE
    from .checkpoints import latest_checkpoint

    vocab_size = data.vocab_size or DEFAULT_VOCAB_SIZE
    entry = root / f"tokenizer-{trained_tokenizer_key(train_key, vocab_size, data.tokenizer_sample)}"
    folder = Path(output_dir) / "tokenizer"
    checkpoint = latest_checkpoint(output_dir)
    runs_own = checkpoint is not None and (folder / "tokenizer.json").is_file()
    trained = None
    if read_checked(entry) is None:
        if not main or (runs_own and run_made_with(checkpoint, folder, data, vocab_size)):
            write_entry(entry, lambda temporary: {"adopted_from": str(folder), **copy_tokenizer(folder, temporary)},
                        read=read_checked)
        elif runs_own:
            raise UsageError(f"{folder} is the tokenizer of the run in {output_dir}, which {checkpoint.name} records "
                             f"with other arguments than these (--vocab_size {vocab_size}, --tokenizer_sample "
                             f"{data.tokenizer_sample}, this training data): give the run's arguments, or another "
                             "--output_dir")
        else:
            info = write_entry(entry, lambda temporary: train_tokenizer(data, vocab_size, train_pairs(), temporary),
                               read=read_checked)
            trained = {name: info[name] for name in ("vocab_size", "sample_pairs", "corpus_pairs", "seconds")}
    if tokenizer_key(folder) != tokenizer_key(entry):
        if runs_own:
            raise UsageError(f"{folder} is the tokenizer of the run in {output_dir}, not the one of these arguments "
                             f"({entry}: --vocab_size {vocab_size}, --tokenizer_sample {data.tokenizer_sample}, this "
                             "training data): give the run's arguments, or another --output_dir")
        with staged_folder(folder, owned=is_owned_tokenizer_file) as staging:
            copy_tokenizer(entry, staging)
        logger.info("tokenizer %s (from the data cache) put in %s", entry, folder)
    return AutoTokenizer.from_pretrained(folder), folder, trained


def run_made_with(checkpoint: Path, folder: Path, data, vocab_size: int) -> bool:
    """Whether the run of `checkpoint` (its tokenizer in `folder`) was trained with this `--vocab_size`,
    `--tokenizer_sample` and training data, as far as its record tells (a checkpoint without a record: the size of
    the vocabulary)."""
    from transformers import AutoTokenizer

    from .checkpoints import read_state
    from .run_record import file_identity, same_file

    try:
        record = read_state(checkpoint).get("run")
    except (OSError, ValueError, AttributeError):
        record = None
    if not isinstance(record, dict):
        try:
            return len(AutoTokenizer.from_pretrained(folder)) == vocab_size
        except Exception:  # noqa: BLE001  (an unreadable tokenizer is not this run's)
            return False
    arguments, files = record.get("arguments", {}), record.get("files", {})
    if arguments.get("vocab_size") != vocab_size or arguments.get("tokenizer_sample", data.tokenizer_sample) != \
            data.tokenizer_sample:
        return False
    return all(same_file(files.get(name), file_identity(getattr(data, name)))
               for name in ("train_file", "train_target_file") if name in files)


def copy_tokenizer(source: Path, target: Path) -> dict:
    """Copy the tokenizer files of `source` into `target`; returns {} (an info to fill)."""
    for name in sorted(TOKENIZER_NAMES):
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    return {}


def train_tokenizer(data, vocab_size: int, pairs, folder: Path) -> dict:
    """Train the shared BPE on the sample of `pairs` and save it into `folder`; returns what was trained."""
    from .tokenizer import train_shared_bpe

    sample = min(data.tokenizer_sample or len(pairs), len(pairs))
    start = time.perf_counter()
    tokenizer = train_shared_bpe(sample_texts(pairs, sample, data.source_lang, data.target_lang), vocab_size)
    tokenizer.save_pretrained(folder)
    seconds = round(time.perf_counter() - start, 2)
    logger.info("trained a shared BPE of %d tokens on %d of the %d training pairs (%s) in %.1f s", len(tokenizer),
                sample, len(pairs), "all" if sample == len(pairs) else "a random sample", seconds)
    return {"vocab_size": len(tokenizer), "sample_pairs": sample, "corpus_pairs": len(pairs), "seconds": seconds}


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


def prepare_in_cache(data, output_dir: str | os.PathLike, progress: bool = False, main: bool = True) -> PreparedData:
    """Read, tokenize and cache what `data` (a `DataArguments`) names, reusing every cache entry that fits. `main`:
    False in the other processes of a run, which take the tokenizer the main process chose (`ensure_tokenizer`)."""
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
    tokenizer, folder, trained = ensure_tokenizer(data, output_dir, keys["train"], lambda: raw("train"), root, main)
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


def check_kept_pairs(info: dict, max_length: int) -> None:
    """Refuse data that `--max_length` guts: more than half of the training pairs, or every validation pair (one
    check for `train` and `prepare`, on the counts of `PreparedData.info`)."""
    from ..base.errors import UsageError

    for split, total, dropped in (("training", info["train_pairs"], info["dropped_over_max_length"]),
                                  ("validation", info["validation_pairs"], info["validation_dropped"])):
        gutted = dropped * 2 > total if split == "training" else dropped == total
        if gutted:
            amount = f"all {total}" if dropped == total else f"{dropped} of {total}"
            raise UsageError(f"--max_length {max_length} drops {amount} {split} pairs (longer than {max_length} tokens "
                             "on a side): raise --max_length (and --max_tokens with it), or shorten the data")
