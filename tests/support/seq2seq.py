"""A few Spanish → English pairs, a BPE tokenizer trained on them and an untrained tiny model folder (fixtures), for
the tests of the model inside transformers' ecosystem (Seq2SeqTrainer, pipelines, peft)."""

from pathlib import Path

import pytest
import torch
from datasets import Dataset

from vanilla_transformer.configuration import VanillaTransformerConfig
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration
from vanilla_transformer.training.tokenizer import train_shared_bpe

PAIRS = [
    ("el gato duerme", "the cat sleeps"),
    ("un perro corre", "a dog runs"),
    ("la casa es roja", "the house is red"),
    ("el niño come pan", "the boy eats bread"),
    # A target of more than 20 tokens: generation must not stop at transformers' default max_length of 20.
    ("en el principio creó dios los cielos y la tierra y la tierra estaba desordenada y vacía",
     "in the beginning god created the heavens and the earth and the earth was formless and empty and darkness was "
     "on the surface of the deep"),
]
MAX_LENGTH = 64  # the generation config's explicit cap, as the export writes one


@pytest.fixture(scope="module")
def tokenizer():
    return train_shared_bpe([text for pair in PAIRS for text in pair], vocab_size=556, min_frequency=1)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tokenizer) -> Path:
    """An untrained tiny model folder (save_pretrained + tokenizer), its generation config as the export writes it."""
    torch.manual_seed(0)
    config = VanillaTransformerConfig.tiny(vocab_size=len(tokenizer), d_model=64, encoder_layers=1, decoder_layers=1,
                                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                                           decoder_ffn_dim=128, dropout=0.0, label_smoothing=0.0)
    model = VanillaTransformerForConditionalGeneration(config)
    model.generation_config.max_length = MAX_LENGTH
    path = tmp_path_factory.mktemp("base")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tokenized(tokenizer, pairs=PAIRS) -> Dataset:
    sources, targets = zip(*pairs)
    return Dataset.from_dict(dict(tokenizer(list(sources), text_target=list(targets))))
