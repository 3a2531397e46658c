"""Shared BPE tokenizer: special ids, </s> suffix, lossless round trips (byte fallback included), normalization,
save/load, old tokenizers without byte fallback."""

import json

import pytest
from transformers import AutoTokenizer

from support.training import tiny_args, write_corpus
from vanilla_transformer.cli.train import parse_args
from vanilla_transformer.training.tokenizer import BYTE_TOKENS, train_shared_bpe
from vanilla_transformer.training.train import train

SPANISH = [
    "¿Dónde está el niño? ¡Está en la casa!",
    "El pingüino come pescado en el año 2024.",
    "Ella dijo: “mañana iremos a Jerusalén”.",
    "Los niños cantan canciones alegres.",
    "¡Qué día tan hermoso hace hoy!",
]
ENGLISH = [
    "Where is the child? He is in the house!",
    "The penguin eats fish in the year 2024.",
    "She said: “tomorrow we will go to Jerusalem”.",
    "The children sing happy songs.",
    "What a beautiful day it is today!",
]
ONLY_IN_TARGET = "Thessalonians"


@pytest.fixture(scope="module")
def tokenizer():
    texts = (SPANISH + ENGLISH) * 20 + [f"Paul wrote to the {ONLY_IN_TARGET} again"] * 20
    return train_shared_bpe(texts, vocab_size=756, min_frequency=2)


def test_special_token_ids(tokenizer):
    assert tokenizer.convert_tokens_to_ids(["<pad>", "<s>", "</s>", "<unk>"]) == [0, 1, 2, 3]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (
        0,
        1,
        2,
        3,
    )
    assert tokenizer.model_max_length == 1024


def test_source_and_labels_end_with_eos_and_have_no_bos(tokenizer):
    encoded = tokenizer(SPANISH[:2], text_target=ENGLISH[:2])
    for ids in encoded["input_ids"] + encoded["labels"]:
        assert ids[-1] == tokenizer.eos_token_id
        assert ids.count(tokenizer.eos_token_id) == 1
        assert tokenizer.bos_token_id not in ids
        assert tokenizer.pad_token_id not in ids


@pytest.mark.parametrize(
    "text",
    [
        "¿Dónde está el pingüino? ¡Ay, qué frío!",
        "ÁÉÍÓÚ Ñandú áéíóú ñ ü Ü",
        "“Comillas” y ‘simples’ — «angulares»",
        "Año 1909, capítulo 3:16; 42 + 7 = 49",
        "mañana",
        "x",
    ],
)
def test_round_trip_is_lossless(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_whitespace_runs_fold_to_one_space_and_ends_are_stripped(tokenizer):
    ids = tokenizer("  el   niño\tcome\n\nbien  ")["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "el niño come bien"
    assert ids == tokenizer("el niño come bien")["input_ids"]


def test_nfkc_composes_accents_and_folds_compatibility_characters(tokenizer):
    decomposed = "nin\u0303o cafe\u0301"  # n + combining tilde, e + combining acute
    assert tokenizer(decomposed)["input_ids"] == tokenizer("niño café")["input_ids"]
    assert tokenizer.decode(tokenizer("ﬁn")["input_ids"], skip_special_tokens=True) == "fin"


# What the BPE never saw in training: emoji, other scripts, symbols, software placeholders with them.
UNSEEN = ["🙂👍", "Привет, мир", "Ελληνικά", "日本語のテキスト", "→ ∑ ≤ ∞", "✓ done: {name} → %1$s ☃",
          "el niño 🙂 come ${var}\\n 🇪🇸", "😀" * 40]


@pytest.fixture(scope="module")
def old_tokenizer():
    """A tokenizer as every folder saved before byte fallback holds one."""
    return train_shared_bpe((SPANISH + ENGLISH) * 20, vocab_size=400, min_frequency=2, byte_fallback=False)


@pytest.mark.parametrize("text", UNSEEN)
def test_unseen_characters_come_back_exactly_through_bytes(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_byte_tokens_follow_the_merges_and_spell_utf8(tokenizer):
    vocab = tokenizer.get_vocab()
    assert [vocab[token] for token in BYTE_TOKENS] == list(range(len(vocab) - 256, len(vocab)))
    assert len(tokenizer) <= 756  # the byte tokens count in --vocab_size
    pieces = tokenizer.tokenize("☃")
    assert pieces == ["▁", *(f"<0x{byte:02X}>" for byte in "☃".encode())]
    # Seen text is split as it would be without byte fallback: no byte token where a merge exists.
    assert not set(tokenizer.tokenize(" ".join(SPANISH + ENGLISH))) & set(BYTE_TOKENS)


def test_byte_fallback_keeps_the_merges_of_the_same_budget(tokenizer, old_tokenizer):
    """Byte fallback costs 256 merges of the vocabulary, not the tokens of seen text: the first merges learned are
    the same ones, in the same order, so frequent words split alike."""
    texts = (SPANISH + ENGLISH) * 20
    same_budget = train_shared_bpe(texts, vocab_size=400 + 256, min_frequency=2)
    old = old_tokenizer.get_vocab()
    new = same_budget.get_vocab()
    assert {token: new[token] for token in old} == old
    for text in SPANISH + ENGLISH:
        assert same_budget(text)["input_ids"] == old_tokenizer(text)["input_ids"]


def test_old_tokenizer_without_byte_fallback_still_turns_unseen_into_unk(old_tokenizer):
    ids = old_tokenizer("el ☃ niño")["input_ids"]
    assert old_tokenizer.unk_token_id in ids
    decoded = old_tokenizer.decode(ids, skip_special_tokens=True)
    assert "☃" not in decoded
    assert decoded.startswith("el") and decoded.endswith("niño")
    assert not set(old_tokenizer.get_vocab()) & set(BYTE_TOKENS)


def test_old_tokenizer_folder_still_loads_and_trains(old_tokenizer, tmp_path):
    old_tokenizer.save_pretrained(tmp_path / "old")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "old")
    assert loaded("el ☃ niño")["input_ids"] == old_tokenizer("el ☃ niño")["input_ids"]
    argv = tiny_args(write_corpus(tmp_path / "corpus"), tmp_path / "run", "--max_steps", "2", "--eval_steps", "2")
    at = argv.index("--vocab_size")
    argv[at:at + 2] = ["--tokenizer", str(tmp_path / "old")]
    summary = train(*parse_args(argv))
    assert summary["steps"] == 2
    trained = AutoTokenizer.from_pretrained(tmp_path / "run" / "final")
    assert trained.get_vocab() == old_tokenizer.get_vocab()
    assert trained("uno ☃")["input_ids"] == old_tokenizer("uno ☃")["input_ids"]


def test_vocabulary_is_shared_and_learns_merges(tokenizer):
    # A word seen only on the English side is still a single piece of the one vocabulary...
    assert tokenizer.tokenize(ONLY_IN_TARGET) == ["▁" + ONLY_IN_TARGET]
    # ...and frequent words of both languages are merged into whole pieces.
    assert tokenizer.tokenize("niños children") == ["▁niños", "▁children"]


def test_save_and_autotokenizer_load_behave_identically(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["clean_up_tokenization_spaces"] is False
    assert config["model_max_length"] == 1024
    assert (config["pad_token"], config["bos_token"], config["eos_token"], config["unk_token"]) == (
        "<pad>",
        "<s>",
        "</s>",
        "<unk>",
    )

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.is_fast
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id, loaded.unk_token_id) == (0, 1, 2, 3)
    texts = SPANISH + ENGLISH + ["a  b ☃ ¿c?"] + UNSEEN
    assert loaded(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    both = loaded(SPANISH, text_target=ENGLISH)
    assert both["labels"] == tokenizer(SPANISH, text_target=ENGLISH)["labels"]
    for ids, text in zip(both["input_ids"], SPANISH):
        assert loaded.decode(ids, skip_special_tokens=True) == text
    for text in UNSEEN:
        assert loaded.decode(loaded(text)["input_ids"], skip_special_tokens=True) == text
