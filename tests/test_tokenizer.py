"""Shared BPE tokenizer: special ids, </s> suffix, lossless round trips, normalization, save/load."""

import json

import pytest
from transformers import AutoTokenizer

from vanilla_transformer.training.tokenizer import train_shared_bpe

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
    return train_shared_bpe(texts, vocab_size=500, min_frequency=2)


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


def test_unknown_character_becomes_unk_without_crashing(tokenizer):
    ids = tokenizer("el ☃ niño")["input_ids"]
    assert tokenizer.unk_token_id in ids
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert "☃" not in decoded
    assert decoded.startswith("el") and decoded.endswith("niño")


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
    texts = SPANISH + ENGLISH + ["a  b ☃ ¿c?"]
    assert loaded(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    both = loaded(SPANISH, text_target=ENGLISH)
    assert both["labels"] == tokenizer(SPANISH, text_target=ENGLISH)["labels"]
    for ids, text in zip(both["input_ids"], SPANISH):
        assert loaded.decode(ids, skip_special_tokens=True) == text
