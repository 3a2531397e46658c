"""Parallel data loading, tokenization, token-count batching and collation."""

import gzip
import json
import random
import re
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vanilla_transformer.training import data
from vanilla_transformer.training.data import (
    Seq2SeqCollator,
    TokenBatchSampler,
    batch_cost,
    load_parallel,
    load_parallel_files,
    padding_fraction,
)
from vanilla_transformer.training.tokenizer import train_shared_bpe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the baselines, kept out of the product
from baselines import greedy_batches, random_batches, random_padding_fraction, tokenize_pairs  # noqa: E402

PAIRS = [
    ("¿Dónde está el niño?", "Where is the child?"),
    ("Ella dijo: “sí”.", "She said: “yes”."),
    ("El año 1909 fue largo, muy largo.", "The year 1909 was long, very long."),
    ("Hola", "Hello"),
]


def rows(dataset):
    return [(r["translation"]["es"], r["translation"]["en"]) for r in dataset]


def write_tsv(path, pairs, header="id\ten\tnote\tes"):
    lines = [header] + [f"{i}\t{en}\tx\t{es}" for i, (es, en) in enumerate(pairs)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_text_pair(tmp_path, pairs, name="corpus"):
    source, target = tmp_path / f"{name}.es", tmp_path / f"{name}.en"
    source.write_text("".join(es + "\n" for es, _ in pairs), encoding="utf-8")
    target.write_text("".join(en + "\n" for _, en in pairs), encoding="utf-8")
    return source, target


# ------------------------------------------------------------------------------------------------------------------
# Loading


def test_every_local_format_loads_the_same_pairs(tmp_path):
    tsv = write_tsv(tmp_path / "c.tsv", PAIRS)
    nested = write_jsonl(tmp_path / "nested.jsonl", [{"translation": {"en": en, "es": es}} for es, en in PAIRS])
    flat = write_jsonl(tmp_path / "flat.jsonl", [{"es": es, "en": en, "score": 1.0} for es, en in PAIRS])
    source, target = write_text_pair(tmp_path, PAIRS)
    gz = tmp_path / "c.tsv.gz"
    gz.write_bytes(gzip.compress(tsv.read_bytes()))

    loaded = {
        "tsv": load_parallel(tsv, "es", "en"),
        "jsonl-translation": load_parallel(nested, "es", "en"),
        "jsonl-flat": load_parallel(str(flat), "es", "en"),
        "text-pair": load_parallel(source, "es", "en", target_path=target),
        "tsv.gz": load_parallel(gz, "es", "en", split="validation"),
    }
    for name, dataset_dict in loaded.items():
        split = "validation" if name == "tsv.gz" else "train"
        assert list(dataset_dict) == [split], name
        assert dataset_dict[split].column_names == ["translation"], name
        assert rows(dataset_dict[split]) == PAIRS, name


def test_swapped_direction_reads_the_other_columns(tmp_path):
    tsv = write_tsv(tmp_path / "c.tsv", PAIRS)
    assert [tuple(r["translation"][k] for k in ("en", "es")) for r in load_parallel(tsv, "en", "es")["train"]] == [
        (en, es) for es, en in PAIRS
    ]


def test_windows_line_endings_and_byte_order_mark_are_ignored(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_bytes("\ufeffes\ten\r\nHola\tHello\r\n".encode())
    assert rows(load_parallel(path, "es", "en")["train"]) == [("Hola", "Hello")]


def test_misaligned_text_files_report_both_line_counts(tmp_path):
    source, target = write_text_pair(tmp_path, PAIRS)
    target.write_text("".join(en + "\n" for _, en in PAIRS[:2]), encoding="utf-8")
    with pytest.raises(ValueError) as err:
        load_parallel(source, "es", "en", target_path=target)
    message = str(err.value)
    assert f"{source} has {len(PAIRS)} lines" in message
    assert f"{target} has 2 lines" in message
    with pytest.raises(ValueError, match=re.escape(f"{target} has 2 lines, {source} has {len(PAIRS)} lines")):
        load_parallel(target, "es", "en", target_path=source)  # the longer file second


def test_missing_language_column_names_file_and_line(tmp_path):
    tsv = write_tsv(tmp_path / "c.tsv", PAIRS, header="id\ten\tnote\tfr")
    with pytest.raises(ValueError, match=rf"{re.escape(str(tsv))}, line 1: no column 'es'"):
        load_parallel(tsv, "es", "en")
    records = [{"es": es, "en": en} for es, en in PAIRS]
    records[2] = {"es": PAIRS[2][0], "english": PAIRS[2][1]}
    jsonl = write_jsonl(tmp_path / "c.jsonl", records)
    with pytest.raises(ValueError, match=rf"{re.escape(str(jsonl))}, line 3: no key 'en'"):
        load_parallel(jsonl, "es", "en")


@pytest.mark.parametrize("side", ["es", "en"])
def test_empty_side_names_file_and_line(tmp_path, side):
    pairs = list(PAIRS)
    pairs[1] = ("   ", PAIRS[1][1]) if side == "es" else (PAIRS[1][0], "")
    tsv = write_tsv(tmp_path / "c.tsv", pairs)
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(tsv))}, line 3: empty '{side}' side"
    ):  # line 1 is the header
        load_parallel(tsv, "es", "en")
    jsonl = write_jsonl(tmp_path / "c.jsonl", [{"translation": {"es": es, "en": en}} for es, en in pairs])
    with pytest.raises(ValueError, match=rf"{re.escape(str(jsonl))}, line 2: empty '{side}' side"):
        load_parallel(jsonl, "es", "en")
    source, target = write_text_pair(tmp_path, pairs)
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(source if side == 'es' else target))}, line 2: empty '{side}' side"
    ):
        load_parallel(source, "es", "en", target_path=target)


def test_undecodable_bytes_name_file_and_line(tmp_path):
    source, target = write_text_pair(tmp_path, PAIRS)
    lines = target.read_bytes().split(b"\n")
    lines[2] = "El año".encode("latin-1")  # ñ as a single Latin-1 byte: not UTF-8
    target.write_bytes(b"\n".join(lines))
    with pytest.raises(ValueError, match=rf"{re.escape(str(target))}, line 3: not valid UTF-8"):
        load_parallel(source, "es", "en", target_path=target)
    tsv = tmp_path / "c.tsv"
    tsv.write_bytes(b"es\ten\nHola\tHello\n\xff\xfe\tx\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(tsv))}, line 3: not valid UTF-8"):
        load_parallel(tsv, "es", "en")


def test_broken_rows_name_file_and_line(tmp_path):
    tsv = tmp_path / "c.tsv"
    tsv.write_text("es\ten\nHola\tHello\nsolo una columna\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{re.escape(str(tsv))}, line 3: 1 tab-separated fields"):
        load_parallel(tsv, "es", "en")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"es": "Hola", "en": "Hello"}\n{"es": "Hola", \n', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{re.escape(str(jsonl))}, line 2: invalid JSON"):
        load_parallel(jsonl, "es", "en")


def test_several_files_per_split(tmp_path):
    tsv = write_tsv(tmp_path / "a.tsv", PAIRS[:2])
    jsonl = write_jsonl(tmp_path / "b.jsonl", [{"es": es, "en": en} for es, en in PAIRS[2:]])
    source, target = write_text_pair(tmp_path, PAIRS[1:3], name="dev")
    result = load_parallel_files("es", "en", train=[tsv, jsonl], validation=(source, target))
    assert list(result) == ["train", "validation"]
    assert rows(result["train"]) == PAIRS
    assert rows(result["validation"]) == PAIRS[1:3]
    with pytest.raises(ValueError, match="no files"):
        load_parallel_files("es", "en")


def test_hub_name_tries_wmt_config_names_and_converts_flat_columns(monkeypatch):
    calls = []

    def fake_load_dataset(name, config=None, **kwargs):
        calls.append((name, config))
        if config != "en-es":
            raise ValueError(f"BuilderConfig '{config}' not found. Available: ['en-es']")
        flat = datasets.Dataset.from_dict({"es": [es for es, _ in PAIRS], "en": [en for _, en in PAIRS]})
        return datasets.DatasetDict({"train": flat, "test": flat.select([0])})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(data, "hub_reachable", lambda: True)  # no network in tests; the Hub is faked above
    loaded = load_parallel("someone/not-a-local-path", "es", "en")
    assert calls == [("someone/not-a-local-path", "es-en"), ("someone/not-a-local-path", "en-es")]
    assert rows(loaded["train"]) == PAIRS
    assert rows(loaded["test"]) == PAIRS[:1]


def test_missing_local_file_is_not_looked_up_on_the_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("asked the Hub"))
    with pytest.raises(FileNotFoundError, match="train.tsv"):
        load_parallel(tmp_path / "train.tsv", "es", "en")
    with pytest.raises(FileNotFoundError):
        load_parallel("corpus/train.jsonl", "es", "en")


# ------------------------------------------------------------------------------------------------------------------
# Tokenization


@pytest.fixture(scope="module")
def tokenizer():
    return train_shared_bpe([text for pair in PAIRS for text in pair] * 10, vocab_size=556)


def test_tokenize_pairs_filters_long_pairs_and_counts_them(tmp_path, tokenizer):
    dataset = load_parallel(write_tsv(tmp_path / "c.tsv", PAIRS), "es", "en")["train"]
    full, none_filtered = tokenize_pairs(dataset, tokenizer, "es", "en")
    assert none_filtered == 0
    assert set(full.column_names) == {"input_ids", "labels", "src_length", "tgt_length"}
    for row, (es, en) in zip(full, PAIRS):
        assert row["input_ids"] == tokenizer(es)["input_ids"]
        assert row["labels"] == tokenizer(en)["input_ids"]
        assert row["labels"][-1] == tokenizer.eos_token_id
        assert (row["src_length"], row["tgt_length"]) == (len(row["input_ids"]), len(row["labels"]))

    # The length columns feed the batch sampler directly.
    sampler = TokenBatchSampler(full["src_length"], full["tgt_length"], max_tokens=10**6)
    assert sampler.src_lengths.tolist() == [len(r["input_ids"]) for r in full]
    (batch,) = list(sampler)
    keys = [(sampler.src_lengths[i], sampler.tgt_lengths[i]) for i in batch]
    assert sorted(batch) == list(range(len(PAIRS))) and keys == sorted(keys)

    longest = [max(r["src_length"], r["tgt_length"]) for r in full]
    limit = sorted(longest)[1]  # keeps the two shortest pairs (and any tie)
    expected_kept = [i for i, n in enumerate(longest) if n <= limit]
    kept, n_filtered = tokenize_pairs(dataset, tokenizer, "es", "en", max_length=limit)
    assert n_filtered == len(PAIRS) - len(expected_kept) > 0
    assert kept["input_ids"] == [full[i]["input_ids"] for i in expected_kept]
    assert all(max(r["src_length"], r["tgt_length"]) <= limit for r in kept)


# ------------------------------------------------------------------------------------------------------------------
# Collation


def test_collator_pads_masks_and_shifts_labels():
    features = [
        {"input_ids": [5, 6, 7, 2], "labels": [8, 9, 2], "src_length": 4},
        {"input_ids": [5, 2], "labels": [10, 11, 12, 13, 2]},
    ]
    batch = Seq2SeqCollator(pad_token_id=0, decoder_start_token_id=1)(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "decoder_input_ids"}
    assert all(t.dtype == torch.long for t in batch.values())
    assert batch["input_ids"].tolist() == [[5, 6, 7, 2], [5, 2, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[8, 9, 2, -100, -100], [10, 11, 12, 13, 2]]
    assert batch["decoder_input_ids"].tolist() == [[1, 8, 9, 0, 0], [1, 10, 11, 12, 13]]
    # Where labels are real tokens, the decoder input is the previous label (teacher forcing).
    labels, dec = batch["labels"], batch["decoder_input_ids"]
    real = labels != -100
    assert torch.equal(dec[:, 1:][real[:, 1:]], labels[:, :-1][real[:, 1:]])
    assert torch.all(dec[~real] == 0)


def test_collator_pad_to_multiple():
    batch = Seq2SeqCollator(0, 1, pad_to_multiple_of=8)([{"input_ids": [4, 2], "labels": [4, 5, 2]}])
    assert batch["input_ids"].shape == (1, 8) and batch["labels"].shape == (1, 8)


# ------------------------------------------------------------------------------------------------------------------
# Token batching


def varied_lengths(n=600, seed=0):
    rng = random.Random(seed)
    src = [rng.choice([rng.randint(2, 12), rng.randint(10, 60), rng.randint(40, 120)]) for _ in range(n)]
    tgt = [max(2, int(s * rng.uniform(0.7, 1.4))) for s in src]
    return src, tgt


def test_padding_fraction_by_definition():
    # One batch of two: padded size 2 × (4 + 3) = 14 positions, 10 of them real.
    assert padding_fraction([[0, 1]], [2, 4], [3, 1]) == pytest.approx(4 / 14)
    assert padding_fraction([[0], [1]], [2, 4], [3, 1]) == 0.0


def test_batches_respect_budget_and_cover_every_example_once():
    src, tgt = varied_lengths()
    src[7], tgt[7] = 900, 950  # longer than the whole budget
    sampler = TokenBatchSampler(src, tgt, max_tokens=1000, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(src)))
    assert [7] in batches
    for batch in batches:
        assert len(batch) == 1 or batch_cost([(src[i], tgt[i]) for i in batch]) <= 1000
    # Batches are full: in length order, each batch could not have taken the first example of the next one.
    in_order = list(TokenBatchSampler(src, tgt, max_tokens=1000, shuffle=False))
    for batch, following in zip(in_order, in_order[1:]):
        assert batch_cost([(src[i], tgt[i]) for i in batch + following[:1]]) > 1000


def test_length_grouping_pads_far_less_than_random_batching():
    src, tgt = varied_lengths()
    sampler = TokenBatchSampler(src, tgt, max_tokens=1500, seed=0)
    grouped = padding_fraction(list(sampler), src, tgt)
    random_ = random_padding_fraction(src, tgt, max_tokens=1500, seed=0)
    assert grouped < 0.5 * random_
    assert grouped < 0.2 < random_


def test_order_is_deterministic_per_seed_and_epoch_and_reshuffled_between_epochs():
    src, tgt = varied_lengths()
    a = TokenBatchSampler(src, tgt, max_tokens=1000, seed=1)
    b = TokenBatchSampler(src, tgt, max_tokens=1000, seed=1)
    assert list(a) == list(b) == list(a)
    first = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    second = list(a)
    assert second == list(b)
    assert second != first
    assert sorted(i for batch in second for i in batch) == list(range(len(src)))
    c = TokenBatchSampler(src, tgt, max_tokens=1000, seed=2)
    assert list(c) != first
    unshuffled = TokenBatchSampler(src, tgt, max_tokens=1000, shuffle=False)
    order = [i for batch in unshuffled for i in batch]
    assert order == sorted(order, key=lambda i: (src[i], tgt[i]))


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_get_disjoint_shards_with_equal_counts(drop_last):
    src, tgt = varied_lengths(n=500)
    world = 3
    samplers = [
        TokenBatchSampler(src, tgt, max_tokens=800, seed=5, num_replicas=world, rank=r, drop_last=drop_last)
        for r in range(world)
    ]
    for s in samplers:
        s.set_epoch(2)
    shards = [list(s) for s in samplers]
    all_batches = samplers[0].epoch_batches()
    assert len(all_batches) % world == 0
    assert {len(s) for s in samplers} == {len(shard) for shard in shards} == {len(all_batches) // world}
    # Interleaving the shards gives back the epoch's batch list: disjoint positions, nothing left out.
    assert [shards[r][k] for k in range(len(shards[0])) for r in range(world)] == all_batches

    unsharded = TokenBatchSampler(src, tgt, max_tokens=800, seed=5)
    unsharded.set_epoch(2)
    n_real = len(list(unsharded))
    assert n_real % world  # this corpus needs padding or dropping, so both branches are exercised
    covered = {i for shard in shards for batch in shard for i in batch}
    if drop_last:
        assert len(all_batches) == n_real - n_real % world
        dropped = unsharded.epoch_batches()[len(all_batches) :]
        assert covered == set(range(len(src))) - {i for b in dropped for i in b}
        seen = [i for shard in shards for batch in shard for i in batch]
        assert len(seen) == len(set(seen))
    else:
        assert covered == set(range(len(src)))
        padded = all_batches[n_real:]  # repeats of the first batches, only to even out the counts
        assert len(padded) == (-n_real) % world
        assert all(batch in all_batches[:n_real] for batch in padded)
        seen = [i for shard in shards for batch in shard for i in batch]
        assert len(seen) - len(set(seen)) == sum(len(b) for b in padded)


def per_pair_epoch_batches(src, tgt, max_tokens, seed, epoch, num_replicas=1, drop_last=False):
    """The epoch as the sampler made it before it was planned per run of equal lengths: greedy over every pair."""
    rng = np.random.default_rng(seed + epoch)
    src_a, tgt_a = np.asarray(src), np.asarray(tgt)
    order = rng.permutation(len(src))
    order = order[np.lexsort((tgt_a[order], src_a[order]))]
    batches = greedy_batches(order.tolist(), src, tgt, max_tokens)
    batches = [batches[i] for i in rng.permutation(len(batches))]
    remainder = len(batches) % num_replicas
    if remainder and drop_last:
        batches = batches[: len(batches) - remainder]
    elif remainder:
        extra = num_replicas - remainder
        batches = batches + (batches * -(-extra // len(batches)))[:extra]
    return batches


@pytest.mark.parametrize("max_tokens", [1, 7, 60, 1000, 10**6])
def test_batches_are_exactly_those_of_the_per_pair_greedy_cut(max_tokens):
    # The data position of --resume is an index into this list: planning per run must not move a single pair.
    rng = random.Random(max_tokens)
    src = [rng.choice([1, 2, 3, 5, 8, 30, 200]) for _ in range(3000)]  # long runs of equal lengths
    tgt = [rng.choice([1, 2, 4, 9, 31, 150]) for _ in range(3000)]
    src[:50], tgt[:50] = varied_lengths(n=50)
    for world, drop_last in [(1, False), (3, False), (3, True)]:
        sampler = TokenBatchSampler(src, tgt, max_tokens, seed=11, num_replicas=world, drop_last=drop_last)
        for epoch in (0, 1):
            expected = per_pair_epoch_batches(src, tgt, max_tokens, 11, epoch, world, drop_last)
            assert sampler.epoch_batches(epoch) == expected
        assert sampler.num_batches == len(expected)


def test_resuming_skips_the_first_batches_of_the_epoch():
    src, tgt = varied_lengths()
    sampler = TokenBatchSampler(src, tgt, max_tokens=1000, seed=4)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_epoch(3, start_index=5)
    assert len(sampler) == len(full) - 5
    assert list(sampler) == full[5:]
    sampler.set_epoch(4)
    assert len(list(sampler)) == len(sampler)


def test_dataloader_with_sampler_and_collator_gives_padded_batches_within_budget(tmp_path):
    src, tgt = varied_lengths(n=200)
    features = [{"input_ids": [7] * (s - 1) + [2], "labels": [8] * (t - 1) + [2]} for s, t in zip(src, tgt)]
    sampler = TokenBatchSampler(src, tgt, max_tokens=600, seed=0)
    loader = DataLoader(features, batch_sampler=sampler, collate_fn=Seq2SeqCollator(0, 1))
    seen = 0
    for batch in loader:
        n, width = batch["input_ids"].shape
        assert n == 1 or n * (width + batch["labels"].shape[1]) <= 600
        assert torch.all(batch["input_ids"].gather(1, batch["attention_mask"].sum(1, keepdim=True) - 1) == 2)
        seen += n
    assert seen == len(features)
    assert len(loader) == len(sampler)


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError):
        TokenBatchSampler([1, 2], [1], max_tokens=10)
    with pytest.raises(ValueError):
        TokenBatchSampler([1], [1], max_tokens=10, num_replicas=2, rank=2)
    with pytest.raises(ValueError):
        TokenBatchSampler([1], [1], max_tokens=0)


def test_random_batches_use_the_same_budget():
    assert [sorted(b) for b in random_batches([3, 3, 3], [3, 3, 3], max_tokens=12)] in (
        [[0, 1], [2]],
        [[0, 2], [1]],
        [[1, 2], [0]],
    )
