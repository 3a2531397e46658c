"""Tiny OPUS-MT stand-ins built here, nothing downloaded: random `MarianMTModel`s of a few shapes (weights large
enough that outputs depend on the input), a `MarianTokenizer` of SentencePiece models trained on the words of the
training corpus (separate source and target models, as OPUS-MT folders have), and such a model converted with
`convert-marian`."""

import json
from pathlib import Path

import pytest
import torch
from transformers import MarianConfig, MarianMTModel

from .training import WORDS

# Different head counts and FFN sizes in encoder and decoder, three activations, with and without √d scaling.
SHAPES = {
    "swish": dict(vocab_size=50, d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                  decoder_attention_heads=4, encoder_ffn_dim=24, decoder_ffn_dim=40, activation_function="swish",
                  scale_embedding=True),
    "relu": dict(vocab_size=37, d_model=24, encoder_layers=1, decoder_layers=2, encoder_attention_heads=3,
                 decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=48, activation_function="relu",
                 scale_embedding=False),
    "gelu": dict(vocab_size=61, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=8,
                 decoder_attention_heads=4, encoder_ffn_dim=16, decoder_ffn_dim=64, activation_function="gelu",
                 scale_embedding=True, max_position_embeddings=40),
}


def marian_config(vocab_size, **sizes) -> MarianConfig:
    """OPUS-MT conventions: eos = 0, pad = decoder start = the last id."""
    sizes.setdefault("max_position_embeddings", 64)
    return MarianConfig(vocab_size=vocab_size, pad_token_id=vocab_size - 1, decoder_start_token_id=vocab_size - 1,
                        eos_token_id=0, forced_eos_token_id=0, **sizes)


@torch.no_grad()
def randomize_(model: MarianMTModel, seed: int) -> MarianMTModel:
    """Weights large enough that logits depend strongly on the input (the default N(0, 0.02) gives near-flat logits,
    which would make the generation comparisons vacuous), and a non-zero final_logits_bias. The sinusoidal position
    tables are left alone."""
    generator = torch.Generator().manual_seed(seed)

    def normal(tensor, std, mean=0.0):
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std + mean)

    for name, parameter in model.named_parameters():
        if "embed_positions" in name:
            continue
        if "layer_norm" in name:
            normal(parameter, 0.1, mean=1.0 if name.endswith("weight") else 0.0)
        elif name.endswith("bias"):
            normal(parameter, 0.1)
        elif parameter.ndim == 2 and "embed" not in name and "shared" not in name:
            normal(parameter, parameter.shape[1] ** -0.5)
        else:
            normal(parameter, 1.0)  # the shared embedding / output matrix
    normal(model.final_logits_bias, 0.5)
    return model.eval()


def make_marian(shape: str, seed: int = 0, **overrides) -> MarianMTModel:
    torch.manual_seed(seed)
    model = randomize_(MarianMTModel(marian_config(**{**SHAPES[shape], **overrides})), seed)
    # What OPUS-MT generation configs carry: never generate pad, beam 4, a max length.
    model.generation_config.bad_words_ids = [[model.config.pad_token_id]]
    model.generation_config.num_beams = 4
    model.generation_config.max_length = 512
    return model


def marian_tokenizer(folder: Path):
    """A MarianTokenizer of SentencePiece models trained here on the corpus's words (separate source and target
    models, as OPUS-MT folders have), Marian's special tokens (</s> = 0, <unk> = 1, <pad> last)."""
    spm = pytest.importorskip("sentencepiece")
    from transformers import MarianTokenizer

    vocab = {"</s>": 0, "<unk>": 1}
    models = {}
    for side, words in (("source", [w[0] for w in WORDS]), ("target", [w[1] for w in WORDS])):
        text = folder / f"{side}.txt"
        text.write_text("\n".join(" ".join(words[i:] + words[:i]) for i in range(len(words))) * 10, encoding="utf-8")
        spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(folder / side), vocab_size=60,
                                       character_coverage=1.0, bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1,
                                       hard_vocab_limit=False, minloglevel=2)
        processor = spm.SentencePieceProcessor(model_file=str(folder / f"{side}.model"))
        for index in range(processor.get_piece_size()):
            vocab.setdefault(processor.id_to_piece(index), len(vocab))
        models[side] = str(folder / f"{side}.model")
    vocab["<pad>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    return MarianTokenizer(source_spm=models["source"], target_spm=models["target"], vocab=str(folder / "vocab.json"))


def converted_marian(folder: Path) -> Path:
    """A tiny random MarianMTModel with the tokenizer of `marian_tokenizer`, saved as an OPUS-MT folder in
    `folder`/opus-mt-tiny and converted with `convert-marian` into `folder`/converted (returned)."""
    from vanilla_transformer.cli import main as cli

    tokenizer = marian_tokenizer(folder)
    marian = make_marian("swish", vocab_size=len(tokenizer.get_vocab()))
    marian.save_pretrained(folder / "opus-mt-tiny")
    tokenizer.save_pretrained(folder / "opus-mt-tiny")
    assert cli.main(["convert-marian", str(folder / "opus-mt-tiny"), str(folder / "converted")]) == 0
    return folder / "converted"
