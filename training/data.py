"""Parallel data: loading, tokenization, token-count batching and collation.

Every loader returns rows in the layout of the WMT datasets on the Hub: ``{"translation": {"es": ..., "en": ...}}``.
Local formats (``.gz`` allowed on any of them):

* TSV with a header naming the languages (``es<TAB>en``; other columns ignored, no quoting);
* JSONL with ``{"translation": {"es": ..., "en": ...}}`` or flat ``{"es": ..., "en": ...}`` per line;
* two line-aligned plain-text files, one sentence per line (``path`` and ``target_path``).

Anything that is not an existing local path is a Hub dataset name. Bad input raises `ValueError` naming the file
and the 1-based line (CR-only line endings, a truncated or corrupt ``.gz``, a plain file named ``.gz``, a folder
or a device included). A side holding only whitespace or invisible characters (Unicode format, separator and
control characters, e.g. U+200B zero-width space) counts as empty. Surrounding whitespace of each sentence is stripped; blank lines at the end of a file are
ignored (a blank line between pairs is an error). A Hub dataset fails fast, with a message, when the Hub cannot be
reached or `HF_HUB_OFFLINE=1` is set and the dataset is not cached.
"""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import math
import os
import unicodedata
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
# Rows are turned into Arrow tables this many at a time, so a large file is never held as one Python list.
_CHUNK_ROWS = 100_000


# ----------------------------------------------------------------------------------------------------------------
# Loading


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without the line break) of a UTF-8 file; ValueError on undecodable bytes.
    Blank lines at the end of the file are left out."""
    blank: list[tuple[int, str]] = []  # held back until a non-blank line shows they are not the end
    for number, line in _all_lines(path):
        if not is_blank(line):
            yield from blank
            blank.clear()
            yield number, line
        else:
            blank.append((number, line))


def _all_lines(path: Path) -> Iterator[tuple[int, str]]:
    with _open_binary(path) as handle:
        number = 0
        try:
            for number, raw in enumerate(handle, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise ValueError(f"{path}, line {number}: not valid UTF-8 (byte {raw[err.start]:#04x} at column "
                                     f"{err.start + 1})") from None
                if number == 1:
                    line = line.removeprefix("\ufeff")  # a byte-order mark written by some editors
                line = line.rstrip("\r\n")
                if "\r" in line:
                    raise ValueError(f"{path}, line {number}: a carriage return (CR) inside the line: the file has "
                                     "CR-only (old Mac) line endings; convert them to LF, e.g. tr '\\r' '\\n'")
                yield number, line
        except (EOFError, zlib.error, gzip.BadGzipFile) as err:
            what = "truncated" if isinstance(err, EOFError) else "corrupt"
            raise ValueError(f"{path}, after line {number}: {what} gzip data ({err}); re-download or re-compress "
                             "the file") from None


def _open_binary(path: Path):
    """The file's bytes, gunzipped when it is named .gz (a plain file named .gz is refused by name)."""
    if path.exists() and not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise ValueError(f"{path} is {kind}; give a data file")
    if path.suffix.lower() != ".gz":
        return open(path, "rb")
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic != b"\x1f\x8b":
        raise ValueError(f"{path}: named .gz but not gzip-compressed (it does not start with the gzip signature); "
                         "rename it without .gz or compress it")
    return gzip.open(path, "rb")


def _format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    if last in (".tsv", ".tab"):
        return "tsv"
    if last in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise ValueError(
        f"{path}: unknown format {last or '(no suffix)'}; use .tsv or .jsonl, or give the target side of a "
        "plain-text pair (target_path=; on the command line --train_target_file and the like)"
    )


# Characters that show nothing: format (Cf: zero-width space and joiners, marks of direction, soft hyphen, BOM),
# separators (Z*: spaces of every width) and controls (Cc: tabs, ...).
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Zs", "Zl", "Zp", "Cc"})


def is_blank(text: str) -> bool:
    """Nothing visible: only whitespace and invisible format characters (U+200B zero-width space and the like).
    Stops at the first visible character, so an ordinary sentence costs one lookup."""
    for character in text.strip():
        if unicodedata.category(character) not in _INVISIBLE_CATEGORIES:
            return False
    return True


def _invisible_note(text: str) -> str:
    hidden = sorted({f"U+{ord(c):04X}" for c in text if not c.isspace()})
    return f" (only invisible characters: {', '.join(hidden[:5])})" if hidden else ""


_LOCAL_SUFFIXES = {".tsv", ".tab", ".jsonl", ".json", ".ndjson", ".gz", ".txt"}


def _pair(path: Path, number: int, source: object, target: object, source_lang: str, target_lang: str) -> dict:
    """A checked translation row."""
    for lang, text in ((source_lang, source), (target_lang, target)):
        if not isinstance(text, str):
            raise ValueError(f"{path}, line {number}: '{lang}' is {type(text).__name__}, expected a string")
        if is_blank(text):
            raise ValueError(f"{path}, line {number}: empty '{lang}' side{_invisible_note(text)}")
    return {source_lang: source.strip(), target_lang: target.strip()}


def _read_tsv(path: Path, source_lang: str, target_lang: str) -> Iterator[dict]:
    lines = _lines(path)
    header = next(lines, None)
    if header is None:
        raise ValueError(f"{path}, line 1: empty file; expected a header naming '{source_lang}' and '{target_lang}'")
    columns = [c.strip() for c in header[1].split("\t")]
    for lang in (source_lang, target_lang):
        if lang not in columns:
            hint = (" (the first line must be a header naming the languages, e.g. "
                    f"'{source_lang}<TAB>{target_lang}')")
            raise ValueError(f"{path}, line {header[0]}: no column '{lang}' in the header (columns: {columns}){hint}")
    s, t = columns.index(source_lang), columns.index(target_lang)
    for number, line in lines:
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise ValueError(
                f"{path}, line {number}: {len(fields)} tab-separated fields, the header has {len(columns)}"
            )
        yield _pair(path, number, fields[s], fields[t], source_lang, target_lang)


def _read_jsonl(path: Path, source_lang: str, target_lang: str) -> Iterator[dict]:
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: invalid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        pair = record.get("translation", record)
        if not isinstance(pair, dict):
            raise ValueError(f"{path}, line {number}: 'translation' must be an object")
        for lang in (source_lang, target_lang):
            if lang not in pair:
                raise ValueError(f"{path}, line {number}: no key '{lang}' (keys: {sorted(pair)})")
        yield _pair(path, number, pair[source_lang], pair[target_lang], source_lang, target_lang)


def _read_text_pair(source: Path, target: Path, source_lang: str, target_lang: str) -> Iterator[dict]:
    source_lines, target_lines = _lines(source), _lines(target)
    for left, right in itertools.zip_longest(source_lines, target_lines):
        if left is None or right is None:
            # Count the rest of the longer file, so the message can give both totals.
            done, rest = (right, target_lines) if left is None else (left, source_lines)
            longer_count = done[0] + sum(1 for _ in rest)
            shorter_count = done[0] - 1
            n_source, n_target = (shorter_count, longer_count) if left is None else (longer_count, shorter_count)
            raise ValueError(
                f"misaligned files: {source} has {n_source} lines, {target} has {n_target} lines "
                f"(first unmatched line: {done[0]})"
            )
        number = left[0]
        for path, text, lang in ((source, left[1], source_lang), (target, right[1], target_lang)):
            if is_blank(text):
                raise ValueError(f"{path}, line {number}: empty '{lang}' side{_invisible_note(text)}")
        yield {source_lang: left[1].strip(), target_lang: right[1].strip()}


def _to_dataset(pairs: Iterable[dict]):
    """A `datasets.Dataset` with one ``translation`` column, built chunk by chunk."""
    from datasets import Dataset, concatenate_datasets

    parts = []
    iterator = iter(pairs)
    while chunk := list(itertools.islice(iterator, _CHUNK_ROWS)):
        parts.append(Dataset.from_dict({"translation": chunk}))
    if not parts:
        return Dataset.from_dict({"translation": []})
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def read_pairs(
    path: PathLike, source_lang: str, target_lang: str, *, target_path: PathLike | None = None
) -> Iterator[dict]:
    """Checked ``{source_lang: ..., target_lang: ...}`` pairs from one local file (or plain-text pair)."""
    path = Path(path)
    if target_path is not None:
        return _read_text_pair(path, Path(target_path), source_lang, target_lang)
    reader = {"tsv": _read_tsv, "jsonl": _read_jsonl}[_format(path)]
    return reader(path, source_lang, target_lang)


def _empty_file_check(dataset, path: PathLike) -> None:
    if len(dataset) == 0:
        raise ValueError(f"{path}: no sentence pairs")


def load_parallel(
    path_or_name: PathLike,
    source_lang: str,
    target_lang: str,
    *,
    target_path: PathLike | None = None,
    split: str = "train",
    config_name: str | None = None,
    **hub_kwargs,
):
    """A `datasets.DatasetDict` of ``{"translation": {source_lang: ..., target_lang: ...}}`` rows.

    path_or_name: a local .tsv / .jsonl file, the source side of a plain-text pair (with ``target_path``), or a
        Hub dataset name (anything that is not an existing path).
    split: the split name a local file goes to. A Hub dataset keeps its own splits.
    config_name, hub_kwargs: for `datasets.load_dataset`; without a config, ``"{src}-{tgt}"`` and then
        ``"{tgt}-{src}"`` (the WMT naming) are tried, then none.
    """
    from datasets import DatasetDict

    if target_path is not None or os.path.exists(path_or_name):
        dataset = _to_dataset(read_pairs(path_or_name, source_lang, target_lang, target_path=target_path))
        _empty_file_check(dataset, path_or_name)
        logger.info("loaded %d sentence pairs from %s", len(dataset), path_or_name)
        return DatasetDict({split: dataset})
    name = str(path_or_name)
    if name.startswith(("/", ".", "~")) or _LOCAL_SUFFIXES & {s.lower() for s in Path(name).suffixes}:
        # Clearly meant as a file: say so instead of asking the Hub for a dataset called "data/train.tsv".
        raise FileNotFoundError(f"no such file: {name}")
    return _load_hub(name, source_lang, target_lang, config_name, **hub_kwargs)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or HF_DATASETS_OFFLINE) is set: the Hub must not be contacted."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_DATASETS_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    return bool(constants.HF_HUB_OFFLINE) or flag


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the Hub's endpoint (HF_ENDPOINT), instead of the minutes of retries a dataset load
    spends without a network."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _load_hub(name: str, source_lang: str, target_lang: str, config_name: str | None, **kwargs):
    import datasets

    offline = hub_offline()
    if not offline and not hub_reachable():
        raise ConnectionError(f"Hub dataset {name!r}: cannot reach the Hugging Face Hub (no network?); set "
                              "HF_HUB_OFFLINE=1 to use a cached copy, or give local files (--train_file ...)")
    configs = [config_name] if config_name else [f"{source_lang}-{target_lang}", f"{target_lang}-{source_lang}", None]
    errors = []
    for config in configs:
        try:
            loaded = datasets.load_dataset(name, config, **kwargs)
            break
        except ValueError as err:  # datasets' "BuilderConfig ... not found" (or a config it needs)
            errors.append(f"config {config!r}: {err}")
        except (OSError, ConnectionError) as err:
            if offline:
                raise ConnectionError(f"Hub dataset {name!r} is not in the cache and HF_HUB_OFFLINE=1 forbids "
                                      "downloading it: unset HF_HUB_OFFLINE, or give local files") from err
            raise
    else:
        raise ValueError(f"could not load Hub dataset {name!r} for {source_lang}-{target_lang}: " + "; ".join(errors))
    if isinstance(loaded, datasets.Dataset):  # a ``split=`` was passed through
        loaded = datasets.DatasetDict({str(kwargs["split"]): loaded})
    return datasets.DatasetDict(
        {
            split: to_translation_layout(part, source_lang, target_lang, f"{name}[{split}]")
            for split, part in loaded.items()
        }
    )


def to_translation_layout(dataset, source_lang: str, target_lang: str, name: str = "dataset"):
    """A dataset with flat ``source_lang`` / ``target_lang`` columns or a ``translation`` column, as ``translation``."""
    columns = dataset.column_names
    if "translation" in columns:
        sample = dataset[0]["translation"] if len(dataset) else {}
        missing = [lang for lang in (source_lang, target_lang) if sample and lang not in sample]
        if missing:
            raise ValueError(f"{name}: 'translation' has no {missing} (has {sorted(sample)})")
        return dataset
    missing = [lang for lang in (source_lang, target_lang) if lang not in columns]
    if missing:
        raise ValueError(f"{name}: no column {missing} and no 'translation' column (columns: {columns})")
    return dataset.map(
        lambda batch: {
            "translation": [{source_lang: s, target_lang: t} for s, t in zip(batch[source_lang], batch[target_lang])]
        },
        batched=True,
        remove_columns=columns,
    )


FileSpec = PathLike | tuple[PathLike, PathLike]


def load_parallel_files(
    source_lang: str,
    target_lang: str,
    **splits: FileSpec | Sequence[FileSpec] | None,
):
    """A `DatasetDict` from local files per split (`train=`, `validation=`, `test=` or any other split name);
    several files of one split are concatenated in order.

    Each file is a .tsv / .jsonl path or a ``(source_path, target_path)`` tuple (a plain-text pair); several files
    go in a list, e.g.
    ``load_parallel_files("es", "en", train=["a.tsv", ("b.es", "b.en")], validation="dev.jsonl")``.
    """
    from datasets import DatasetDict

    def specs(value) -> list[FileSpec]:
        if value is None:
            return []
        if isinstance(value, (str, os.PathLike, tuple)):
            return [value]
        return list(value)

    def pairs(files: list[FileSpec]) -> Iterator[dict]:
        for spec in files:
            if isinstance(spec, tuple):
                yield from read_pairs(spec[0], source_lang, target_lang, target_path=spec[1])
            else:
                yield from read_pairs(spec, source_lang, target_lang)

    result = {}
    for split, value in splits.items():
        files = specs(value)
        if files:
            result[split] = _to_dataset(pairs(files))
            _empty_file_check(result[split], ", ".join(map(str, files)))
            logger.info("%s: %d sentence pairs from %d file(s)", split, len(result[split]), len(files))
    if not result:
        raise ValueError("no files given (train=, validation=, test=)")
    return DatasetDict(result)


def translation_texts(dataset, *langs: str) -> Iterator[str]:
    """Every sentence of the given languages (for training a shared tokenizer), read in batches."""
    for batch in dataset.iter(batch_size=1000):
        for pair in batch["translation"]:
            for lang in langs:
                yield pair[lang]


# ----------------------------------------------------------------------------------------------------------------
# Batching


def batch_cost(lengths: Sequence[tuple[int, int]]) -> int:
    """Tokens a batch occupies once padded: batch size × (longest source + longest target)."""
    return len(lengths) * (max(s for s, _ in lengths) + max(t for _, t in lengths))


def _int_array(values) -> np.ndarray:
    if not isinstance(values, np.ndarray) and hasattr(values, "__getitem__"):
        values = values[:]  # a `datasets` Column reads itself in one go when sliced, element by element otherwise
    return np.asarray(values, dtype=np.int64)


def _sorted_batch_ends(src: np.ndarray, tgt: np.ndarray, max_tokens: int) -> np.ndarray:
    """Where `_greedy_batches` cuts a sequence sorted by (source length, target length): the end of every batch.

    Equal (source, target) lengths come in runs, and a batch started inside a run of c equal pairs holds
    max(1, max_tokens // (s + t)) of them, so the cut is computed per run, in bulk, not per pair: the loop is over the
    distinct length pairs (thousands), not over the corpus (millions). The same cuts as the per-pair greedy cut
    (tested against benchmarks/baselines.greedy_batches).
    """
    if len(src) == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero((src[1:] != src[:-1]) | (tgt[1:] != tgt[:-1])) + 1
    run_starts = np.concatenate(([0], change))
    counts = np.diff(np.concatenate((run_starts, [len(src)]))).tolist()
    ends: list[int] = []
    pos, size, max_src, max_tgt = 0, 0, 0, 0
    for s, t, c in zip(src[run_starts].tolist(), tgt[run_starts].tolist(), counts):
        while c:
            if size:  # an open batch: take as many of this run as still fit, or close it
                s_max, t_max = max(max_src, s), max(max_tgt, t)
                room = max_tokens // (s_max + t_max) - size
                if room <= 0:
                    ends.append(pos)
                    size = 0
                    continue
                taken = min(room, c)
                size, max_src, max_tgt = size + taken, s_max, t_max
            else:  # a new batch: whole batches of `cap` equal pairs, then an open one with the rest
                cap = max(1, max_tokens // (s + t))  # one pair over the budget still gets a batch of its own
                full = (c - 1) // cap
                ends.extend(range(pos + cap, pos + full * cap + 1, cap))
                pos, c = pos + full * cap, c - full * cap
                taken = c
                size, max_src, max_tgt = taken, s, t
            pos, c = pos + taken, c - taken
    if size:
        ends.append(pos)
    return np.array(ends, dtype=np.int64)


class TokenBatchSampler(Sampler[list[int]]):
    """Batches of similar-length pairs holding at most ``max_tokens`` padded tokens, as in the paper (§5.1).

    Cost of a batch = batch size × (longest source + longest target); one example longer than the budget gets a
    batch of its own. Examples are sorted by (source length, target length), ties broken at random each epoch;
    the batches are then cut greedily and their order shuffled with ``seed + epoch`` — everything is a function
    of (lengths, max_tokens, seed, epoch).

    Distributed: with ``num_replicas`` > 1 every rank gets ``batches[rank::num_replicas]`` of the same epoch
    list, padded by repeating its first batches (or, with ``drop_last``, cut) to a multiple of ``num_replicas``,
    so every rank runs the same number of steps. Give each process its own ``rank``, and do not let another
    layer (e.g. accelerate's batch-sampler sharding) split the batches again.

    Resuming: ``set_epoch(epoch, start_index=k)`` makes the next iterations skip this rank's first k batches.

    Scale: an epoch is held as numpy arrays (the sorted order and the batches' order, ~16 bytes a pair), and the
    cuts are computed once, since the sorted sequence of lengths is the same every epoch — only which pair of equal
    lengths fills which place changes. A corpus of millions of pairs is planned in well under a second.
    """

    def __init__(
        self,
        src_lengths: Sequence[int],
        tgt_lengths: Sequence[int],
        max_tokens: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ):
        if len(src_lengths) != len(tgt_lengths):
            raise ValueError(f"{len(src_lengths)} source lengths but {len(tgt_lengths)} target lengths")
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} not in [0, {num_replicas})")
        self.src_lengths, self.tgt_lengths = _int_array(src_lengths), _int_array(tgt_lengths)
        if len(self.src_lengths) and (self.src_lengths + self.tgt_lengths).min() < 1:
            raise ValueError("every pair needs at least one token (source + target length ≥ 1)")
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.epoch = 0
        self.start_index = 0
        by_length = np.lexsort((self.tgt_lengths, self.src_lengths))
        self._ends = _sorted_batch_ends(self.src_lengths[by_length], self.tgt_lengths[by_length], max_tokens)
        self._starts = np.concatenate(([0], self._ends[:-1])).astype(np.int64)
        self._plan: tuple[int, np.ndarray, np.ndarray] | None = None

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        """Use the batches of ``epoch``, starting at this rank's batch ``start_index`` (to resume mid-epoch)."""
        self.epoch = epoch
        self.start_index = start_index

    def _epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(pairs in length order, ties shuffled; the epoch's batches as indices into the cuts, padded or cut for
        the ranks)."""
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1], self._plan[2]
        n, n_batches = len(self.src_lengths), len(self._ends)
        rng = np.random.default_rng(self.seed + epoch)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        # lexsort is stable, so the random order above breaks ties between equal lengths.
        order = order[np.lexsort((self.tgt_lengths[order], self.src_lengths[order]))]
        batches = rng.permutation(n_batches) if self.shuffle else np.arange(n_batches)
        if self.num_replicas > 1 and n_batches:
            remainder = n_batches % self.num_replicas
            if remainder and self.drop_last:
                batches = batches[: n_batches - remainder]
            elif remainder:  # repeat the first batches so that every rank runs the same number of steps
                extra = self.num_replicas - remainder
                batches = np.concatenate((batches, np.tile(batches, math.ceil(extra / n_batches))[:extra]))
        self._plan = (epoch, order, batches)
        return order, batches

    def _batch(self, order: np.ndarray, b: int) -> list[int]:
        return order[self._starts[b] : self._ends[b]].tolist()

    @property
    def num_batches(self) -> int:
        """Batches of an epoch over all ranks (the same every epoch): the cuts, padded or cut to a multiple of the
        ranks — counted without planning an epoch."""
        n_batches, world = len(self._ends), self.num_replicas
        if world == 1 or n_batches % world == 0:
            return n_batches
        return n_batches - n_batches % world if self.drop_last else n_batches + world - n_batches % world

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All ranks' batches of an epoch, in order, before sharding (the same on every rank)."""
        order, batches = self._epoch_plan(self.epoch if epoch is None else epoch)
        return [self._batch(order, b) for b in batches.tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        order, batches = self._epoch_plan(self.epoch)
        mine = batches[self.rank :: self.num_replicas][self.start_index :]
        yield from (self._batch(order, b) for b in mine.tolist())

    def __len__(self) -> int:
        return max(0, self.num_batches // self.num_replicas - self.start_index)


def padding_fraction(batches: Iterable[Sequence[int]], src_lengths: Sequence[int], tgt_lengths: Sequence[int]) -> float:
    """Share of the positions in padded batches (source and target together) that are padding."""
    padded = real = 0
    for batch in batches:
        if not batch:
            continue
        padded += batch_cost([(src_lengths[i], tgt_lengths[i]) for i in batch])
        real += sum(src_lengths[i] + tgt_lengths[i] for i in batch)
    return 1.0 - real / padded if padded else 0.0


# ----------------------------------------------------------------------------------------------------------------
# Collation


@dataclass
class Seq2SeqCollator:
    """Pads ``input_ids`` / ``labels`` features into LongTensors for teacher forcing.

    Returns ``input_ids`` (padded with ``pad_token_id``), ``attention_mask``, ``labels`` (``label_pad_id`` on
    padding, so the loss ignores it) and ``decoder_input_ids`` (labels shifted right behind
    ``decoder_start_token_id``, ``pad_token_id`` where the labels are padding). Other feature keys are ignored.
    """

    pad_token_id: int
    decoder_start_token_id: int
    label_pad_id: int = -100
    pad_to_multiple_of: int | None = None

    def _width(self, sequences: list[list[int]]) -> int:
        width = max(len(s) for s in sequences)
        if self.pad_to_multiple_of:
            width = math.ceil(width / self.pad_to_multiple_of) * self.pad_to_multiple_of
        return width

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("empty batch")
        sources = [list(f["input_ids"]) for f in features]
        labels = [list(f["labels"]) for f in features]
        src_width, tgt_width = self._width(sources), self._width(labels)

        input_ids = torch.full((len(features), src_width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), src_width), dtype=torch.long)
        label_ids = torch.full((len(features), tgt_width), self.label_pad_id, dtype=torch.long)
        decoder_input_ids = torch.full((len(features), tgt_width), self.pad_token_id, dtype=torch.long)
        for row, (src, tgt) in enumerate(zip(sources, labels)):
            input_ids[row, : len(src)] = torch.tensor(src, dtype=torch.long)
            attention_mask[row, : len(src)] = 1
            label_ids[row, : len(tgt)] = torch.tensor(tgt, dtype=torch.long)
            decoder_input_ids[row, : len(tgt)] = torch.tensor(
                [self.decoder_start_token_id] + tgt[:-1], dtype=torch.long
            )
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": label_ids,
            "decoder_input_ids": decoder_input_ids,
        }


def load_splits(source_lang: str, target_lang: str, dataset: str | None = None, dataset_config: str | None = None,
                cache_dir: str | None = None, files: dict | None = None):
    """The one place that decides where data comes from: the bundled Bible (`dataset="bible"`), a Hub dataset, or
    local files (`files`: {split: a .tsv/.jsonl path, a (source, target) plain-text pair, or a list of those})."""
    if dataset == "bible":
        from .bible import load_bible

        return load_bible(cache_dir)
    if dataset == "gettext":  # Debian's software-message catalogs (training/gettext_corpus.py)
        from .gettext_corpus import load_gettext

        return load_gettext(source_lang, target_lang, cache_dir)
    if dataset:
        kwargs = {"cache_dir": cache_dir} if cache_dir else {}
        return load_parallel(dataset, source_lang, target_lang, config_name=dataset_config, **kwargs)
    return load_parallel_files(source_lang, target_lang, **(files or {}))


def load_split(dataset: str | None, file: str | None, split: str, source_lang: str, target_lang: str,
               dataset_config: str | None = None, cache_dir: str | None = None, target_file: str | None = None):
    """One split of the bundled Bible, a Hub dataset, or a local TSV/JSONL file (or plain-text pair)."""
    splits = load_splits(source_lang, target_lang, dataset, dataset_config, cache_dir,
                         files={split: (file, target_file) if target_file else file})
    if split not in splits:
        raise ValueError(f"no split {split!r} (available: {', '.join(splits)})")
    return splits[split]
