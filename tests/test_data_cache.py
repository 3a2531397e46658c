"""The on-disk data cache (issue #23) and the data-file errors of issue #21.

* Cache entries: hit, miss on a changed file / tokenizer / --max_length, never a half-written entry (killed run,
  full disk), one tokenization for two ranks, gzip streamed, `prepare` then `train` reusing it.
* What is cached is what `tokenize_pairs` gives (same rows, order and lengths), so batching and `--resume` are
  unchanged (the bit-exact resume test in test_training.py runs its resumed half from the cache).
* Bad data files: one line naming the file and the problem, non-zero exit, via the command.

Tiny corpora (test_training.write_corpus) and tiny tokenizers; new names are imported inside the tests.
"""

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.commands import command, error_line
from support.training import tiny_args, write_corpus
from vanilla_transformer.cli.train import parse_args

ROOT = Path(__file__).resolve().parents[1]


def python_path() -> str:
    """tests/ first, then this process's path (the code under test, not an installed copy) for a child process."""
    return os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))


sys.path.insert(0, str(ROOT / "benchmarks"))  # baselines.tokenize_pairs, the reference the cache must equal


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def data_args(corpus: Path, output_dir: Path, *extra: str):
    argv = tiny_args(corpus, output_dir, *extra)
    if "--tokenizer" in extra:  # the tokenizer has its own vocabulary
        index = argv.index("--vocab_size")
        del argv[index:index + 2]
    data, _, _ = parse_args(argv)
    return data


def columns(dataset) -> dict:
    return {name: dataset[name][:] for name in ("input_ids", "labels", "src_length", "tgt_length")}


def entries(root: Path, kind: str) -> list[Path]:
    return sorted(p for p in root.glob(f"{kind}-*") if p.is_dir())


class Counter:
    """Wraps a function and counts its calls."""

    def __init__(self, function):
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# What is cached equals what tokenize_pairs gives
# ---------------------------------------------------------------------------------------------------------------------


def test_cached_tokens_equal_tokenize_pairs(corpus, tmp_path):
    from baselines import tokenize_pairs
    from vanilla_transformer.training.data import load_parallel
    from vanilla_transformer.training.prepare import prepare_in_cache

    unlimited = prepare_in_cache(data_args(corpus, tmp_path / "all"), tmp_path / "all").train["src_length"][:]
    limit = sorted(unlimited)[len(unlimited) // 2]  # the median: drops some pairs, keeps others
    data = data_args(corpus, tmp_path / "out", "--max_length", str(limit))
    prepared = prepare_in_cache(data, tmp_path / "out")
    raw = load_parallel(corpus / "train.tsv", "es", "en")["train"]
    expected, dropped = tokenize_pairs(raw, prepared.tokenizer, "es", "en", max_length=limit)
    assert 0 < dropped < len(raw)  # the limit drops some pairs, keeps others
    assert prepared.info["dropped_over_max_length"] == dropped and prepared.info["train_pairs"] == len(raw)
    assert columns(prepared.train) == columns(expected)
    assert prepared.train.cache_files  # memory-mapped from the cache, not held in memory


def test_fast_encoder_gives_the_ids_of_the_tokenizer_call(corpus, tmp_path):
    from transformers import PreTrainedTokenizerFast

    from vanilla_transformer.training.prepare import pair_encoder, prepare_in_cache

    tokenizer = prepare_in_cache(data_args(corpus, tmp_path / "out"), tmp_path / "out").tokenizer
    assert type(tokenizer) is PreTrainedTokenizerFast  # the fast path is the one taken
    sources = ["uno dos  tres", "ﬁn ½ Ａ", "perro\tgato", "x" * 40, "¿qué?"]
    targets = ["one two three", "…", "dog  cat ", "y", "what?"]
    expected = tokenizer(sources, text_target=targets)
    assert pair_encoder(tokenizer)(sources, targets) == (expected["input_ids"], expected["labels"])

    class Other(PreTrainedTokenizerFast):
        pass

    other = Other(tokenizer_object=tokenizer.backend_tokenizer, eos_token="</s>", pad_token="<pad>")
    assert pair_encoder(other)(sources, targets) == (expected["input_ids"], expected["labels"])


@pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
def test_a_slow_tokenizer_encodes_in_processes_with_the_ids_of_one(corpus, tmp_path, monkeypatch):
    """Marian's SentencePiece tokenizer (slow) runs in worker processes, one per usable CPU: the entry written is
    byte for byte the one a single process writes, and holds the ids of the tokenizer's own call."""
    from datasets import Dataset

    from support.marian import marian_tokenizer
    from vanilla_transformer.training import encoding, prepare

    tokenizer = marian_tokenizer(tmp_path)
    monkeypatch.setattr(prepare, "TOKENIZE_CHUNK", 16)  # 10 chunks of the 160 training pairs
    monkeypatch.setattr(encoding, "usable_cpus", lambda: 2)
    pairs, _ = prepare.local_pairs([corpus / "train.tsv"], "es", "en", tmp_path / "cache")
    one = prepare.write_tokens(pairs, tokenizer, "es", "en", 6, tmp_path / "one.arrow", processes=1)
    several = prepare.write_tokens(pairs, tokenizer, "es", "en", 6, tmp_path / "several.arrow")
    assert (one["processes"], several["processes"]) == (1, 2)
    assert 0 < one["dropped"] < 160 and several["rows"] == one["rows"]
    assert (tmp_path / "several.arrow").read_bytes() == (tmp_path / "one.arrow").read_bytes()

    sources, targets = [p["es"] for p in pairs["translation"]], [p["en"] for p in pairs["translation"]]
    expected = tokenizer(sources, text_target=targets)
    kept = [row for row, (s, t) in enumerate(zip(expected["input_ids"], expected["labels"]))
            if len(s) <= 6 and len(t) <= 6]
    written = Dataset.from_file(str(tmp_path / "several.arrow"))
    assert written["input_ids"][:] == [expected["input_ids"][row] for row in kept]
    assert written["labels"][:] == [expected["labels"][row] for row in kept]

    # a fast tokenizer keeps to one process (the tokenizers library's threads); so does a corpus of one chunk
    fast = prepare.prepare_in_cache(data_args(corpus, tmp_path / "fast"), tmp_path / "fast").tokenizer
    assert encoding.encoding_processes(fast, 10) == 1 and encoding.encoding_processes(tokenizer, 1) == 1


# ---------------------------------------------------------------------------------------------------------------------
# Hits and misses
# ---------------------------------------------------------------------------------------------------------------------


def test_second_preparation_is_read_from_the_cache(corpus, tmp_path, monkeypatch):
    from vanilla_transformer.training import prepare

    data = data_args(corpus, tmp_path / "out")
    first = prepare.prepare_in_cache(data, tmp_path / "out")
    root = tmp_path / "out" / prepare.CACHE_FOLDER
    assert len(entries(root, "pairs")) == 2 and len(entries(root, "tokens")) == 2  # train and validation

    def forbidden(*args, **kwargs):
        raise AssertionError("read or tokenized again")

    monkeypatch.setattr(prepare, "write_tokens", forbidden)
    monkeypatch.setattr(prepare, "write_pairs", forbidden)
    monkeypatch.setattr("vanilla_transformer.training.tokenizer.train_shared_bpe", forbidden)
    second = prepare.prepare_in_cache(data, tmp_path / "out")
    assert columns(second.train) == columns(first.train)
    assert columns(second.validation) == columns(first.validation)
    assert second.raw["validation"][:] == first.raw["validation"][:]


@pytest.mark.parametrize("change", ["file", "same-size file", "tokenizer", "max_length"])
def test_a_change_misses_the_cache(change, corpus, tmp_path):
    from baselines import tokenize_pairs
    from vanilla_transformer.training.data import load_parallel
    from vanilla_transformer.training.prepare import prepare_in_cache
    from vanilla_transformer.training.tokenizer import train_shared_bpe

    copy = tmp_path / "corpus"
    shutil.copytree(corpus, copy)
    output, cache = tmp_path / "out", tmp_path / "cache"
    extra = ["--data_cache_dir", str(cache)]
    prepare_in_cache(data_args(copy, output, *extra), output)
    tokens_before = entries(cache, "tokens")
    train_file = copy / "train.tsv"
    if change == "file":
        with open(train_file, "a", encoding="utf-8") as handle:
            handle.write("sol luna\tsun moon\n")
    elif change == "same-size file":  # other words of the same length, the modification time put back
        stat = train_file.stat()
        train_file.write_text(train_file.read_text().replace("uno", "dos"), encoding="utf-8")
        os.utime(train_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert train_file.stat().st_size == stat.st_size
    elif change == "tokenizer":
        rows = load_parallel(train_file, "es", "en")["train"]["translation"]
        other = train_shared_bpe([r["es"] for r in rows] + [r["en"] for r in rows], 476)
        other.save_pretrained(tmp_path / "other-tokenizer")
        extra += ["--tokenizer", str(tmp_path / "other-tokenizer")]
    else:
        extra += ["--max_length", "6"]
    data = data_args(copy, output, *extra)
    prepared = prepare_in_cache(data, output)
    new = 1 if "file" in change else 2  # a changed train file leaves the validation entry as it was
    assert len(entries(cache, "tokens")) == len(tokens_before) + new
    raw = load_parallel(train_file, "es", "en")["train"]
    expected, _ = tokenize_pairs(raw, prepared.tokenizer, "es", "en", max_length=data.max_length)
    assert columns(prepared.train) == columns(expected)  # the new data, never the stale entry


# ---------------------------------------------------------------------------------------------------------------------
# Never a half entry
# ---------------------------------------------------------------------------------------------------------------------

KILLER = textwrap.dedent("""
    import os, signal, sys
    from vanilla_transformer.training import prepare
    from vanilla_transformer.cli.train import parse_args
    corpus, output = sys.argv[1], sys.argv[2]
    prepare.TOKENIZE_CHUNK = 16
    original, calls = prepare._id_column, [0]
    def die_later(sequences):
        calls[0] += 1
        if calls[0] == 5:  # two chunks written, the third under way
            os.kill(os.getpid(), signal.SIGKILL)
        return original(sequences)
    prepare._id_column = die_later
    from pathlib import Path
    from support.training import tiny_args
    data, _, _ = parse_args(tiny_args(Path(corpus), Path(output)))
    prepare.prepare_in_cache(data, output)
""")


def test_a_killed_tokenization_leaves_no_usable_entry(corpus, tmp_path):
    from vanilla_transformer.training.prepare import CACHE_FOLDER, prepare_in_cache

    output = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", KILLER, str(corpus), str(output)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONPATH": python_path()}, cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    root = output / CACHE_FOLDER
    assert entries(root, "tokens") == []  # only the temporary folder, under another name
    leftovers = [p for p in root.iterdir() if p.name.startswith(".tmp-tokens-")]
    assert len(leftovers) == 1 and (leftovers[0] / "data.arrow").is_file()

    prepared = prepare_in_cache(data_args(corpus, output), output)
    assert prepared.info["train_pairs"] == 160 and len(prepared.train) == 160 - prepared.info["dropped_over_max_length"]
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir())  # the dead process's folder is removed


@pytest.mark.parametrize("kind", ["tokens", "pairs"])
def test_a_full_disk_leaves_no_entry_and_names_the_error(kind, corpus, tmp_path, monkeypatch):
    """The write fails through our seam (`prepare.write_batch`), not a patched pyarrow method."""
    import errno

    from vanilla_transformer.training import prepare

    output = tmp_path / "out"
    data = data_args(corpus, output)
    prepare.prepare_in_cache(data, output)  # the tokenizer
    root = output / prepare.CACHE_FOLDER
    for entry in entries(root, kind):
        shutil.rmtree(entry)
    real = prepare.write_batch
    column = "input_ids" if kind == "tokens" else "translation"

    def full(writer, batch):
        if column in batch.schema.names:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(writer, batch)

    monkeypatch.setattr(prepare, "write_batch", full)
    with pytest.raises(OSError, match=f"{root}: no space left on the device while writing the data cache"):
        prepare.prepare_in_cache(data, output)
    assert entries(root, kind) == [] and not any(p.name.startswith(".tmp-") for p in root.iterdir())
    monkeypatch.undo()
    assert len(prepare.prepare_in_cache(data, output).train) > 0


# ---------------------------------------------------------------------------------------------------------------------
# Two ranks, one tokenization
# ---------------------------------------------------------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from accelerate import Accelerator
    from vanilla_transformer.training import prepare
    from vanilla_transformer.cli.train import parse_args
    from vanilla_transformer.training.batches import prepare_data
    from support.training import tiny_args
    corpus, output = Path(sys.argv[1]), Path(sys.argv[2])
    calls = {"write_tokens": 0, "write_pairs": 0}
    for name in calls:
        original = getattr(prepare, name)
        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)
        setattr(prepare, name, counted)
    accelerator = Accelerator(cpu=True)
    data, _, _ = parse_args(tiny_args(corpus, output))
    prepared = prepare_data(accelerator, data, output)
    lengths = prepared.train["src_length"][:] + prepared.train["tgt_length"][:]
    (output / f"rank{accelerator.process_index}.json").write_text(json.dumps({**calls, "lengths": lengths}))
""")


def test_two_ranks_tokenize_once_and_read_the_same_data(corpus, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                             str(port), str(worker), str(corpus), str(output)], capture_output=True, text=True,
                            timeout=300, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": python_path(), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((output / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["write_tokens"] for r in ranks] == [2, 0]  # train and validation, by rank 0 only
    assert [r["write_pairs"] for r in ranks] == [2, 0]
    assert ranks[0]["lengths"] == ranks[1]["lengths"]


# ---------------------------------------------------------------------------------------------------------------------
# Formats, the tokenizer sample, prepare then train
# ---------------------------------------------------------------------------------------------------------------------


def test_a_gzip_corpus_is_streamed_to_the_same_pairs(corpus, tmp_path):
    from vanilla_transformer.training.prepare import local_pairs

    rows = [line.split("\t") for line in (corpus / "train.tsv").read_text().splitlines()[1:]]
    with gzip.open(tmp_path / "c.es.gz", "wt", encoding="utf-8") as handle:
        handle.write("".join(s + "\n" for s, _ in rows))
    (tmp_path / "c.en").write_text("".join(t + "\n" for _, t in rows), encoding="utf-8")
    gz, _ = local_pairs([(tmp_path / "c.es.gz", tmp_path / "c.en")], "es", "en", tmp_path / "cache")
    tsv, _ = local_pairs([corpus / "train.tsv"], "es", "en", tmp_path / "cache")
    assert gz["translation"][:] == tsv["translation"][:] == [{"es": s, "en": t} for s, t in rows]


def test_the_tokenizer_is_trained_on_a_fixed_random_sample(corpus, tmp_path):
    from vanilla_transformer.training.prepare import TOKENIZER_SAMPLE_SEED, prepare_in_cache, sample_texts

    import numpy as np

    prepared = prepare_in_cache(data_args(corpus, tmp_path / "a", "--tokenizer_sample", "40"), tmp_path / "a")
    assert prepared.info["tokenizer_trained"]["sample_pairs"] == 40
    assert prepared.info["tokenizer_trained"]["corpus_pairs"] == 160
    rows = [line.split("\t") for line in (corpus / "train.tsv").read_text().splitlines()[1:]]
    chosen = np.sort(np.random.default_rng(TOKENIZER_SAMPLE_SEED).choice(160, size=40, replace=False))
    from vanilla_transformer.training.prepare import local_pairs

    pairs, _ = local_pairs([corpus / "train.tsv"], "es", "en", tmp_path / "c")
    assert list(sample_texts(pairs, 40, "es", "en")) == [text for i in chosen for text in rows[i]]
    again = prepare_in_cache(data_args(corpus, tmp_path / "b", "--tokenizer_sample", "40"), tmp_path / "b")
    assert again.tokenizer.get_vocab() == prepared.tokenizer.get_vocab()  # same data, same tokenizer
    everything = prepare_in_cache(data_args(corpus, tmp_path / "c2"), tmp_path / "c2")
    assert everything.info["tokenizer_trained"]["sample_pairs"] == 160


def test_prepare_then_train_reuses_tokenizer_and_tokens(corpus, tmp_path, capsys, monkeypatch):
    from vanilla_transformer.training import prepare
    from vanilla_transformer.training.train import train

    output = tmp_path / "run"
    argv = tiny_args(corpus, output)
    status, out, err = command(capsys, "prepare", *argv)
    assert status == 0, err
    summary = json.loads(out)
    assert summary["train_pairs"] == 160 and summary["tokenizer_trained"]["sample_pairs"] == 160
    tokenizer_files = {p.name: p.read_bytes() for p in (output / "tokenizer").iterdir()}

    def forbidden(*args, **kwargs):
        raise AssertionError("train did the work again")

    monkeypatch.setattr(prepare, "write_tokens", forbidden)
    monkeypatch.setattr(prepare, "write_pairs", forbidden)
    monkeypatch.setattr("vanilla_transformer.training.tokenizer.train_shared_bpe", forbidden)
    result = train(*parse_args(tiny_args(corpus, output, "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2",
                                         "--eval_samples", "2", "--num_beams", "1")))
    assert result["steps"] == 2
    assert {p.name: p.read_bytes() for p in (output / "tokenizer").iterdir()} == tokenizer_files


def test_prepare_refuses_bad_arguments_in_one_line(corpus, tmp_path, capsys):
    status, _, err = command(capsys, "prepare", *tiny_args(corpus, tmp_path / "o", "--tokenizer_sample", "-1"))
    assert status == 2 and "--tokenizer_sample must be >= 0" in error_line(err)


# ---------------------------------------------------------------------------------------------------------------------
# Issue #21: bad data files, one line naming the file and the problem
# ---------------------------------------------------------------------------------------------------------------------


def truncated_gzip(path: Path) -> Path:
    payload = gzip.compress(("es\ten\n" + "uno dos\tone two\n" * 2000).encode())
    path.write_bytes(payload[: len(payload) // 2])
    return path


def corrupt_gzip(path: Path) -> Path:
    payload = bytearray(gzip.compress(("es\ten\n" + "uno dos\tone two\n" * 2000).encode()))
    for i in range(20, 60):
        payload[i] ^= 0xFF
    path.write_bytes(bytes(payload))
    return path


def written(content: bytes):
    def make(path: Path) -> Path:
        path.write_bytes(content)
        return path

    return make


BAD_FILES = {
    "cr-only.tsv": (written(b"es\ten\r" + b"uno dos\tone two\r" * 800), 1,
                    "cr-only.tsv, line 1: a carriage return (CR) inside the line"),
    "truncated.tsv.gz": (truncated_gzip, 1, "truncated.tsv.gz, after line"),
    "corrupt.tsv.gz": (corrupt_gzip, 1, "corrupt.tsv.gz"),
    "plain.tsv.gz": (written(b"es\ten\nuno\tone\n"), 1, "plain.tsv.gz: named .gz but not gzip"),
    "zero-width.tsv": (written("es\ten\nuno\tone\ndos\t\u200b\n".encode()), 1,
                       "zero-width.tsv, line 3: empty 'en' side (only invisible characters: U+200B)"),
    "folder": (lambda p: p.mkdir() or p, 2, "--train_file {path} is a directory, not a data file"),
    "/dev/null": (lambda p: Path("/dev/null"), 2, "--train_file /dev/null is not a regular file"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_data_file_gives_one_line_naming_it(name, corpus, tmp_path, capsys):
    make, status, message = BAD_FILES[name]
    path = make(tmp_path / name.strip("/"))
    got, _, err = command(capsys, "train", *tiny_args(corpus, tmp_path / "out", "--train_file", str(path)))
    line = error_line(err)
    assert got == status, err
    assert message.format(path=path) in line, line
    assert len(line) < 400, line  # never the file's content
    if name.endswith(".gz") and name != "plain.tsv.gz":
        assert str(path) in line and ("gzip" in line), line


def test_invisible_characters_count_as_empty_but_visible_ones_do_not():
    from vanilla_transformer.training.data import is_blank

    for text in ("", " ", "\u200b", "\u200b \u2060\ufeff", "\u00a0\u3000", "\u202e\u200d"):
        assert is_blank(text), repr(text)
    for text in ("a", "\u200ba", "。", "·", "\u0301", "🙂"):
        assert not is_blank(text), repr(text)


def test_lengths_read_from_arrow_equal_the_columns(corpus, tmp_path):
    from vanilla_transformer.training.prepare import lengths_of, prepare_in_cache

    train = prepare_in_cache(data_args(corpus, tmp_path / "out"), tmp_path / "out").train
    for dataset in (train, train.select([5, 3, 9])):  # plain Arrow table, and one with an indices mapping
        src, tgt = lengths_of(dataset)
        assert src.tolist() == dataset["src_length"][:] and tgt.tolist() == dataset["tgt_length"][:]


@pytest.mark.parametrize("batch_size", [1, 5, 7, 64, 1000])
def test_pairs_read_from_the_file_equal_the_memory_mapped_rows(corpus, tmp_path, monkeypatch, batch_size):
    """Tokenization and the BPE sample read a cache entry from its file in batches (not through the memory map, whose
    read pages would count in RSS): the same rows in the same order, whatever the file's and the reader's batch
    sizes, with or without a subset of rows; a dataset that is not one file row for row is read as a dataset."""
    import numpy as np

    from vanilla_transformer.training import prepare

    monkeypatch.setattr(prepare, "PAIRS_PER_CHUNK", 7)  # the file holds batches of 7 pairs
    pairs, _ = prepare.local_pairs([corpus / "train.tsv"], "es", "en", tmp_path)
    assert prepare._arrow_file(pairs) is not None and prepare._arrow_file(pairs.select([2, 1])) is None
    expected = pairs["translation"][:]
    subset = np.sort(np.random.default_rng(0).choice(len(pairs), size=50, replace=False))
    for dataset, rows, want in ((pairs, None, expected), (pairs, subset, [expected[i] for i in subset]),
                                (pairs.select(range(len(pairs))), subset, [expected[i] for i in subset])):
        batches = list(prepare.translation_batches(dataset, batch_size, rows))
        assert all(len(b) == batch_size for b in batches[:-1]) and 0 < len(batches[-1]) <= batch_size
        assert [pair for b in batches for pair in b.to_pylist()] == want


# ---------------------------------------------------------------------------------------------------------------------
# Issue #27: a damaged entry is set aside with one warning and made again; a flipped byte is caught
# ---------------------------------------------------------------------------------------------------------------------


def keep_mtime(path: Path, change) -> None:
    """Apply `change(path)` and put the modification time back (bit rot does not touch it either)."""
    stat = path.stat()
    change(path)
    if path.exists():
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def flip_byte(path: Path, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x01
    path.write_bytes(bytes(data))


def as_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "x").write_text("x")


def entry_as_file(entry: Path) -> None:
    shutil.rmtree(entry)
    entry.write_text("not an entry\n")


DAMAGES = {
    "truncated data.arrow": lambda e: keep_mtime(e / "data.arrow", lambda p: p.write_bytes(p.read_bytes()[:-100])),
    "data.arrow emptied": lambda e: (e / "data.arrow").write_bytes(b""),
    "one flipped byte in data.arrow": lambda e: keep_mtime(e / "data.arrow", flip_byte),
    "flipped byte near the end": lambda e: keep_mtime(e / "data.arrow", lambda p: flip_byte(p, 0.97)),
    "garbage info.json": lambda e: (e / "info.json").write_bytes(b"\x00\xff{garbage"),
    "info.json valid JSON, other counts": lambda e: (e / "info.json").write_text(
        (e / "info.json").read_text().replace('"dropped": ', '"dropped": 1', 1)),
    "info.json a list": lambda e: (e / "info.json").write_text("[1, 2]\n"),
    "data.arrow missing": lambda e: (e / "data.arrow").unlink(),
    "info.json missing": lambda e: (e / "info.json").unlink(),
    "data.arrow a folder": lambda e: as_folder(e / "data.arrow"),
    "a file where the entry's folder should be": entry_as_file,
    "an empty folder": lambda e: (shutil.rmtree(e), e.mkdir()),
}


def damage_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "damaged data-cache entry" in r.getMessage()]


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_tokens_entry_is_made_again_with_one_warning(damage, corpus, tmp_path, caplog):
    import logging

    from vanilla_transformer.training.prepare import CACHE_FOLDER, prepare_in_cache

    output = tmp_path / "out"
    data = data_args(corpus, output)
    first = prepare_in_cache(data, output)
    root = output / CACHE_FOLDER
    entry = next(e for e in entries(root, "tokens") if len(first.train) == json.loads((e / "info.json").read_text())
                 ["rows"])
    expected = columns(first.train)  # read now: `first` maps the file about to be damaged
    del first
    DAMAGES[damage](entry)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vanilla_transformer.training.prepare"):
        second = prepare_in_cache(data, output)
    warnings = damage_warnings(caplog)
    assert len(warnings) == 1 and str(entry) in warnings[0], warnings
    assert columns(second.train) == expected
    assert second.info["dropped_over_max_length"] == 160 - len(expected["src_length"])
    assert not any(p.name.startswith((".tmp-", ".damaged-")) for p in root.iterdir())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vanilla_transformer.training.prepare"):
        prepare_in_cache(data, output)  # made again: sound from now on
    assert damage_warnings(caplog) == []


@pytest.mark.parametrize("kind,damage", [("pairs", "one flipped byte in data.arrow"), ("pairs", "truncated data.arrow"),
                                         ("pairs", "a file where the entry's folder should be"),
                                         ("tokenizer", "garbage info.json"), ("tokenizer", "info.json missing")])
def test_damaged_pairs_and_tokenizer_entries_are_made_again(kind, damage, corpus, tmp_path, caplog):
    import logging

    from vanilla_transformer.training.prepare import CACHE_FOLDER, prepare_in_cache

    output, cache = tmp_path / "out", tmp_path / "cache"
    first = prepare_in_cache(data_args(corpus, output, "--data_cache_dir", str(cache)), output)
    validation, vocabulary = first.raw["validation"][:], first.tokenizer.get_vocab()
    del first
    for entry in entries(cache, kind):
        DAMAGES[damage](entry)
    other = tmp_path / "other"  # another output folder on the same cache: it must read the pairs, or the tokenizer
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vanilla_transformer.training.prepare"):
        second = prepare_in_cache(data_args(corpus, other, "--data_cache_dir", str(cache), "--max_length", "200"),
                                  other)
    assert 1 <= len(damage_warnings(caplog)) <= len(entries(cache, kind))  # one per damaged entry read
    assert second.raw["validation"][:] == validation
    assert second.tokenizer.get_vocab() == vocabulary
    assert not any(p.name.startswith((".tmp-", ".damaged-")) for p in cache.iterdir())
    assert CACHE_FOLDER not in {p.name for p in other.iterdir()}


def test_the_prepare_command_rebuilds_a_damaged_entry(corpus, tmp_path, capsys):
    """The issue's case: `prepare` again on a damaged entry failed with '.tmp-tokens-...: Directory not empty'."""
    from vanilla_transformer.training.prepare import CACHE_FOLDER

    output = tmp_path / "out"
    status, _, err = command(capsys, "prepare", *tiny_args(corpus, output))
    assert status == 0, err
    for entry in entries(output / CACHE_FOLDER, "tokens"):
        DAMAGES["one flipped byte in data.arrow"](entry)
    for _ in range(2):
        status, out, err = command(capsys, "prepare", *tiny_args(corpus, output))
        assert status == 0, err
        assert json.loads(out)["train_pairs"] == 160
    assert "Directory not empty" not in err


def test_an_entry_is_hashed_once_per_process(corpus, tmp_path, monkeypatch):
    """The checksum is cheap: each file is hashed once per process (then remembered while size, mtime and ctime
    stay), and a write to the file (new ctime) makes it hashed again."""
    from vanilla_transformer.base import files
    from vanilla_transformer.training.prepare import CACHE_FOLDER, checked_info, prepare_in_cache

    output = tmp_path / "out"
    prepare_in_cache(data_args(corpus, output), output)
    entry = entries(output / CACHE_FOLDER, "tokens")[0]
    reads = Counter(open)
    monkeypatch.setattr("builtins.open", reads)
    checked_info(entry)
    checked_info(entry)
    assert reads.calls == 0  # hashed when written, remembered since
    keep_mtime(entry / "data.arrow", flip_byte)
    with pytest.raises(Exception, match="SHA-256 differs"):
        checked_info(entry)
    assert files.content_sha256(entry / "data.arrow") in files._HASHED.values()


# ---------------------------------------------------------------------------------------------------------------------
# Issue #27: a data file's identity covers every byte (cache keys and --resume's record)
# ---------------------------------------------------------------------------------------------------------------------


def big_corpus(path: Path, mib: int = 3) -> Path:
    """A TSV over `mib` MiB: larger than the 1 MiB head and tail the identity once hashed."""
    line = "uno dos tres cuatro\tone two three four\n"
    path.write_text("es\ten\n" + line * ((mib << 20) // len(line)), encoding="utf-8")
    return path


def same_size_edit(path: Path, offset: int) -> None:
    """Change one letter at `offset` (from the end when negative) into another, keeping size and mtime."""
    def change(p):
        data = bytearray(p.read_bytes())
        position = offset % len(data)
        while not chr(data[position]).isalpha():
            position += 1
        data[position] = ord("x") if data[position] != ord("x") else ord("y")
        p.write_bytes(bytes(data))
    keep_mtime(path, change)


@pytest.mark.parametrize("offset", [1 << 20, (3 << 20) // 2, (2 << 20) + 7, 10, -3], ids=[
    "just-after-the-first-MiB", "middle", "just-before-the-last-MiB", "head", "tail"])
def test_a_same_size_edit_anywhere_changes_the_identity(offset, tmp_path):
    from vanilla_transformer.training import prepare, run_record

    path = big_corpus(tmp_path / "train.tsv")
    before_record, before_key = run_record.file_identity(path), prepare.files_key([path], "es", "en")
    size, mtime = path.stat().st_size, path.stat().st_mtime_ns
    same_size_edit(path, offset)
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (size, mtime)
    after = run_record.file_identity(path)
    assert not run_record.same_file(before_record, after)
    assert prepare.files_key([path], "es", "en") != before_key


def test_a_moved_or_copied_file_keeps_its_identity(tmp_path):
    from vanilla_transformer.training import prepare, run_record

    path = big_corpus(tmp_path / "train.tsv", mib=2)
    identity, key = run_record.file_identity(path), prepare.files_key([path], "es", "en")
    (tmp_path / "elsewhere").mkdir()
    moved = Path(shutil.move(path, tmp_path / "elsewhere" / "train.tsv"))
    copied = Path(shutil.copyfile(moved, tmp_path / "copy.tsv"))
    for other in (moved, copied):
        assert run_record.same_file(identity, run_record.file_identity(other))
        assert prepare.files_key([other], "es", "en") == key


def test_resume_refuses_a_training_file_edited_in_the_middle(corpus, tmp_path):
    """The record's comparison (what `--resume` runs before anything): same path, same size and mtime, one letter in
    the middle changed: refused, named '(same path, other content)'; an unchanged file and an earlier version's record
    (hash of the first and last MiB only) are accepted."""
    from vanilla_transformer.training import run_record

    copy = tmp_path / "corpus"
    shutil.copytree(corpus, copy)
    big_corpus(copy / "train.tsv")
    data, _, train = parse_args(tiny_args(copy, tmp_path / "out"))
    old = run_record.run_record(data, train, 201)
    assert run_record.differences(old, run_record.run_record(data, train, 201))[0] == []
    legacy = json.loads(json.dumps(old))
    for identity in legacy["files"].values():
        if identity:
            identity["sample_sha256"] = run_record.sample_sha256(identity["path"])
            del identity["sha256"]
    assert run_record.differences(legacy, run_record.run_record(data, train, 201))[0] == []
    same_size_edit(copy / "train.tsv", (3 << 20) // 2)
    refused, _ = run_record.differences(old, run_record.run_record(data, train, 201))
    assert len(refused) == 1 and refused[0].startswith("--train_file") and "(same path, other content)" in refused[0]
    refused, _ = run_record.differences(legacy, run_record.run_record(data, train, 201))
    assert refused == []  # what an earlier version's record can tell: its head and tail are unchanged


# ---------------------------------------------------------------------------------------------------------------------
# Issue #27/#29: the tokenizer is a cache entry keyed by the data, --vocab_size, --tokenizer_sample and the seed
# ---------------------------------------------------------------------------------------------------------------------


def no_training(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the tokenizer was trained again")

    monkeypatch.setattr("vanilla_transformer.training.tokenizer.train_shared_bpe", forbidden)


def test_the_tokenizer_is_trained_once_per_key(corpus, tmp_path, monkeypatch):
    from vanilla_transformer.training.prepare import prepare_in_cache

    cache = tmp_path / "cache"

    def prepared(output: Path, *extra: str):
        return prepare_in_cache(data_args(corpus, output, "--data_cache_dir", str(cache), *extra), output)

    first = prepared(tmp_path / "a")
    assert first.info["tokenizer_trained"]["vocab_size"] == 457 and len(entries(cache, "tokenizer")) == 1
    with monkeypatch.context() as patch:
        no_training(patch)
        for output in (tmp_path / "a", tmp_path / "b"):  # a rerun; another output folder on the same cache
            again = prepared(output)
            assert "tokenizer_trained" not in again.info
            assert again.tokenizer.get_vocab() == first.tokenizer.get_vocab()
            assert (output / "tokenizer" / "tokenizer.json").read_bytes() == \
                (tmp_path / "a" / "tokenizer" / "tokenizer.json").read_bytes()
    bigger = prepared(tmp_path / "a", "--vocab_size", "486")  # prepare again, another --vocab_size: a new tokenizer
    assert len(bigger.tokenizer) == 486 and bigger.info["tokenizer_trained"]["vocab_size"] == 486
    assert len(entries(cache, "tokenizer")) == 2
    sampled = prepared(tmp_path / "a", "--tokenizer_sample", "50")  # another sample: another tokenizer
    assert sampled.info["tokenizer_trained"]["sample_pairs"] == 50 and len(entries(cache, "tokenizer")) == 3
    with monkeypatch.context() as patch:
        no_training(patch)
        back = prepared(tmp_path / "a")  # back to the first arguments: the first tokenizer, not trained again
        assert back.tokenizer.get_vocab() == first.tokenizer.get_vocab()


def fake_checkpoint(output: Path) -> None:
    (output / "checkpoint-2").mkdir()
    (output / "checkpoint-2" / "trainer_state.json").write_text("{}\n")


def test_a_runs_tokenizer_is_adopted_never_replaced(corpus, tmp_path, monkeypatch):
    from vanilla_transformer.base.errors import UsageError
    from vanilla_transformer.training.prepare import CACHE_FOLDER, prepare_in_cache

    output = tmp_path / "run"
    same, other = data_args(corpus, output), data_args(corpus, output, "--vocab_size", "486")
    first = prepare_in_cache(same, output)
    vocabulary = first.tokenizer.get_vocab()
    fake_checkpoint(output)
    with pytest.raises(UsageError, match="is the tokenizer of the run in"):
        prepare_in_cache(other, output)
    assert AutoTokenizer_vocab(output / "tokenizer") == vocabulary
    shutil.rmtree(output / CACHE_FOLDER)  # the cache deleted under a run: its tokenizer is adopted, not retrained
    with monkeypatch.context() as patch:
        no_training(patch)
        again = prepare_in_cache(same, output)
    assert again.tokenizer.get_vocab() == vocabulary and len(entries(output / CACHE_FOLDER, "tokenizer")) == 1


def AutoTokenizer_vocab(folder: Path) -> dict:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).get_vocab()


# ---------------------------------------------------------------------------------------------------------------------
# prepare and train take the same decisions on the same arguments
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra, message", [
    (("--max_length", "3"), "--max_length 3 drops all 160 training pairs"),
    (("--max_length", "12"), "--max_length 12 drops"),
    (("--max_length", "200", "--tokenizer_sample", "-1"), "--tokenizer_sample must be >= 0"),
    (("--max_length", "400"), "--max_length (400) is larger than --max_tokens (300)"),
], ids=["max_length-3", "max_length-12", "negative-sample", "max_length-over-max_tokens"])
def test_prepare_refuses_what_train_refuses(extra, message, corpus, tmp_path, capsys):
    lines = {}
    for name in ("prepare", "train"):
        status, _, err = command(capsys, name, *tiny_args(corpus, tmp_path / name, *extra, "--max_steps", "2",
                                                          "--eval_steps", "2", "--save_steps", "2"))
        lines[name] = error_line(err)
        assert status == 2 and message in lines[name], lines[name]
    said = {name: line.split(": error: ")[1].replace(" prepare ", " train ") for name, line in lines.items()}
    assert said["prepare"] == said["train"]


def test_prepare_then_a_fresh_train_with_another_vocab_size_trains_another_tokenizer(corpus, tmp_path, capsys):
    from vanilla_transformer.training.train import train

    output = tmp_path / "run"
    status, out, err = command(capsys, "prepare", *tiny_args(corpus, output))
    assert status == 0 and json.loads(out)["tokenizer_trained"]["vocab_size"] == 457, err
    train(*parse_args(tiny_args(corpus, output, "--vocab_size", "486", "--max_steps", "2", "--eval_steps", "2",
                                "--save_steps", "2", "--eval_samples", "2", "--num_beams", "1")))
    assert len(AutoTokenizer_vocab(output / "tokenizer")) == 486
    assert len(AutoTokenizer_vocab(output / "final")) == 486


def test_resume_on_a_damaged_cache_rebuilds_it_and_keeps_the_runs_tokenizer(corpus, tmp_path, monkeypatch, caplog):
    """`train`, then the tokens entry damaged (one byte) and the tokenizer entry deleted: `--resume` makes the tokens
    again (one warning), adopts the run's tokenizer (its checkpoint records the same arguments) and goes on."""
    import logging

    from vanilla_transformer.training.prepare import CACHE_FOLDER
    from vanilla_transformer.training.train import train

    output = tmp_path / "run"
    common = ("--eval_steps", "2", "--save_steps", "2", "--eval_samples", "2", "--num_beams", "1")
    train(*parse_args(tiny_args(corpus, output, "--max_steps", "2", *common)))
    tokenizer = (output / "tokenizer" / "tokenizer.json").read_bytes()
    root = output / CACHE_FOLDER
    for entry in entries(root, "tokens"):
        DAMAGES["one flipped byte in data.arrow"](entry)
    for entry in entries(root, "tokenizer"):
        shutil.rmtree(entry)
    no_training(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="vanilla_transformer.training.prepare"):
        result = train(*parse_args(tiny_args(corpus, output, "--max_steps", "4", "--resume", *common)))
    assert result["steps"] == 4
    assert len(damage_warnings(caplog)) == 2  # the train and the validation entries, once each
    assert (output / "tokenizer" / "tokenizer.json").read_bytes() == tokenizer
    assert len(entries(root, "tokenizer")) == 1


def test_other_processes_take_the_main_process_tokenizer_into_their_own_cache(corpus, tmp_path, monkeypatch):
    """A node's own --data_cache_dir (not shared): its first process adopts the tokenizer the main process put in
    <output_dir>/tokenizer instead of training one (which might differ) over it."""
    from vanilla_transformer.training.prepare import prepare_in_cache

    output = tmp_path / "run"
    first = prepare_in_cache(data_args(corpus, output, "--data_cache_dir", str(tmp_path / "node0")), output)
    no_training(monkeypatch)
    other = prepare_in_cache(data_args(corpus, output, "--data_cache_dir", str(tmp_path / "node1")), output, main=False)
    assert other.tokenizer.get_vocab() == first.tokenizer.get_vocab()
    assert len(entries(tmp_path / "node1", "tokenizer")) == 1
    assert columns(other.train) == columns(first.train)
