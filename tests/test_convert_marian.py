"""Exactness of `convert_marian`: randomly initialised tiny `MarianMTModel`s, built locally, must give the same logits,
the same greedy / beam-search outputs and the same losses after conversion, and survive a save/load round trip with
their tokenizer. Nothing is downloaded."""

import json

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

import vanilla_transformer.modeling  # noqa: F401  (registers our model with the Auto classes)
from support.marian import SHAPES, make_marian
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration
from vanilla_transformer.cli.convert_marian import main
from vanilla_transformer.modeling.convert_marian import convert_marian, save_converted
from vanilla_transformer.modeling.modeling_vanilla_transformer import sinusoidal_table

TOLERANCE = 1e-4

# MarianTokenizer recommends sacremoses (punctuation normalisation), which the tests do not need.
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

def padded_batch(config, source_lengths, target_length, seed=0):
    """Right-padded sources of the given lengths (as the Marian tokenizer pads) and random decoder inputs."""
    generator = torch.Generator().manual_seed(seed)
    pad, vocab = config.pad_token_id, config.vocab_size
    width = max(source_lengths)
    input_ids = torch.randint(1, vocab - 1, (len(source_lengths), width), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(source_lengths):
        input_ids[row, length - 1] = config.eos_token_id
        input_ids[row, length:] = pad
        attention_mask[row, :length] = 1
    decoder_input_ids = torch.randint(1, vocab - 1, (len(source_lengths), target_length), generator=generator)
    decoder_input_ids[:, 0] = config.decoder_start_token_id
    return input_ids, attention_mask, decoder_input_ids


def max_abs_difference(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


# ---------------------------------------------------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("positions, d_model", [(512, 512), (64, 16), (33, 24), (1024, 1024), (8192, 256)])
def test_sinusoidal_table_matches_marian(positions, d_model):
    """Our "concatenated" table is Marian's: same positions (from 0, no padding offset), [sin | cos] halves, at odd
    and even positions alike."""
    theirs = MarianSinusoidalPositionalEmbedding(positions, d_model).create_weight()
    ours = sinusoidal_table(positions, d_model, "concatenated")
    assert ours.shape == theirs.shape
    # numpy and torch may round sin/cos differently in the last bit of a few entries of long tables.
    for parity in (0, 1):  # even and odd positions
        assert max_abs_difference(ours[parity::2], theirs[parity::2]) <= 3e-8
    if (positions, d_model) == (512, 512):  # the OPUS-MT shape: bit for bit
        assert torch.equal(ours, theirs)


# ---------------------------------------------------------------------------------------------------------------------
# Exactness
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("source_lengths, target_length", [([7, 4, 6], 6), ([8, 5, 2], 5)])
def test_logits_match(shape, source_lengths, target_length):
    marian = make_marian(shape)
    ours = convert_marian(marian)
    assert isinstance(ours, VanillaTransformerForConditionalGeneration) and not ours.training
    input_ids, attention_mask, decoder_input_ids = padded_batch(marian.config, source_lengths, target_length)
    with torch.no_grad():
        expected = marian(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
        actual = ours(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
    assert actual.logits.shape == expected.logits.shape
    assert max_abs_difference(actual.logits, expected.logits) <= TOLERANCE
    assert max_abs_difference(actual.encoder_last_hidden_state, expected.encoder_last_hidden_state) <= TOLERANCE
    assert expected.logits.std() > 1.0  # the comparison is not between near-constant outputs


def test_loss_matches():
    """label_smoothing is set to 0 so that `labels=` gives MarianMTModel's plain cross-entropy."""
    marian = make_marian("relu")
    ours = convert_marian(marian)
    input_ids, attention_mask, labels = padded_batch(marian.config, [5, 3], 4)
    labels[1, 2:] = -100
    with torch.no_grad():
        expected = marian(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        actual = ours(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    assert abs(actual.item() - expected.item()) <= TOLERANCE


def test_config_and_generation_config_carried_over():
    marian = make_marian("swish", encoder_layerdrop=0.1, decoder_layerdrop=0.2, dropout=0.2, attention_dropout=0.05,
                         activation_dropout=0.15)
    ours = convert_marian(marian)  # LayerDrop only acts in training: accepted
    config = ours.config
    assert config.positional_encoding == "concatenated" and config.add_final_logits_bias
    assert (config.encoder_attention_heads, config.decoder_attention_heads) == (2, 4)
    assert (config.encoder_ffn_dim, config.decoder_ffn_dim) == (24, 40)
    assert (config.dropout, config.attention_dropout, config.activation_dropout) == (0.2, 0.05, 0.15)
    assert (config.activation_function, config.scale_embedding, config.layer_norm_eps) == ("swish", True, 1e-5)
    assert (config.pad_token_id, config.eos_token_id, config.decoder_start_token_id, config.forced_eos_token_id,
            config.bos_token_id) == (49, 0, 49, 0, None)
    assert (config.init_std, config.max_position_embeddings, config.vocab_size) == (0.02, 64, 50)
    assert torch.equal(ours.final_logits_bias, marian.final_logits_bias)
    assert ours.final_logits_bias.abs().sum() > 0
    generation = ours.generation_config
    assert (generation.decoder_start_token_id, generation.pad_token_id, generation.eos_token_id,
            generation.forced_eos_token_id) == (49, 49, 0, 0)
    assert (generation.bad_words_ids, generation.num_beams, generation.max_length) == ([[49]], 4, 512)
    assert generation.length_penalty == marian.generation_config.length_penalty  # not our paper default 0.6


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("num_beams", [1, 4])
def test_generate_matches(shape, num_beams):
    marian = make_marian(shape, seed=1)
    ours = convert_marian(marian)
    input_ids, attention_mask, _ = padded_batch(marian.config, [7, 4, 6], 1, seed=2)
    arguments = dict(attention_mask=attention_mask, max_new_tokens=10, num_beams=num_beams, do_sample=False,
                     length_penalty=1.0, early_stopping=False)
    expected = marian.generate(input_ids, **arguments)
    actual = ours.generate(input_ids, **arguments)
    assert torch.equal(actual, expected)
    assert len({tuple(row.tolist()) for row in expected}) > 1  # outputs depend on the source


# ---------------------------------------------------------------------------------------------------------------------
# Saving, with the Marian tokenizer
# ---------------------------------------------------------------------------------------------------------------------


def tiny_marian_tokenizer(folder):
    """A Marian tokenizer made here: a tiny sentencepiece model used as source.spm and target.spm, and a vocab.json
    with Marian's special tokens (</s> = 0, <unk> = 1, <pad> last)."""
    spm = pytest.importorskip("sentencepiece")
    from transformers import MarianTokenizer

    sentences = ["the cat sat on the mat", "a dog ran in the park", "el gato se sentó en la alfombra",
                 "un perro corrió en el parque", "hello world", "buenos días"]
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(sentences * 20), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(folder / "sp"), vocab_size=40,
                                   character_coverage=1.0, bos_id=-1, eos_id=-1, unk_id=0, pad_id=-1,
                                   hard_vocab_limit=False, minloglevel=2)
    processor = spm.SentencePieceProcessor(model_file=str(folder / "sp.model"))
    vocab = {"</s>": 0, "<unk>": 1}
    for index in range(processor.get_piece_size()):
        vocab.setdefault(processor.id_to_piece(index), len(vocab))
    vocab["<pad>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    sp_model = str(folder / "sp.model")
    return MarianTokenizer(source_spm=sp_model, target_spm=sp_model, vocab=str(folder / "vocab.json"))


@pytest.fixture
def marian_folder(tmp_path):
    """A saved MarianMTModel folder with its tokenizer, as an OPUS-MT download looks."""
    tokenizer = tiny_marian_tokenizer(tmp_path)
    vocab_size = len(tokenizer.get_vocab())
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (vocab_size - 1, 0)
    marian = make_marian("swish", vocab_size=vocab_size)
    folder = tmp_path / "opus-mt-tiny"
    marian.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, marian, tokenizer


@pytest.mark.parametrize("old_tokenizer_config", [False, True])
def test_save_converted_round_trip(marian_folder, tmp_path, old_tokenizer_config):
    folder, marian, tokenizer = marian_folder
    if old_tokenizer_config:  # early OPUS-MT folders do not name the tokenizer class
        config_file = folder / "tokenizer_config.json"
        config = json.loads(config_file.read_text())
        config.pop("tokenizer_class", None)
        config_file.write_text(json.dumps(config))
    out = tmp_path / "converted"
    converted = save_converted(folder, out)
    for name in ("config.json", "generation_config.json", "model.safetensors", "source.spm", "target.spm",
                 "vocab.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name

    reloaded = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    assert isinstance(reloaded, VanillaTransformerForConditionalGeneration)
    assert reloaded.generation_config.to_diff_dict() == converted.generation_config.to_diff_dict()
    assert reloaded.generation_config.bad_words_ids == [[marian.config.pad_token_id]]

    loaded_tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(loaded_tokenizer).__name__ == "MarianTokenizer"
    sources = ["the cat sat on the mat", "hello"]
    batch = loaded_tokenizer(sources, return_tensors="pt", padding=True)
    assert torch.equal(batch.input_ids, tokenizer(sources, return_tensors="pt", padding=True).input_ids)

    decoder_input_ids = torch.tensor([[marian.config.decoder_start_token_id, 3, 4, 5, 6]] * 2)
    with torch.no_grad():
        expected = marian(**batch, decoder_input_ids=decoder_input_ids).logits
        actual = reloaded(**batch, decoder_input_ids=decoder_input_ids).logits
        converted_logits = converted(**batch, decoder_input_ids=decoder_input_ids).logits
    assert max_abs_difference(actual, expected) <= TOLERANCE
    assert torch.equal(actual, converted_logits)

    arguments = dict(max_new_tokens=6, num_beams=4, do_sample=False)
    generated = reloaded.generate(**batch, **arguments)
    assert torch.equal(generated, marian.generate(**batch, **arguments))
    assert isinstance(loaded_tokenizer.batch_decode(generated, skip_special_tokens=True)[0], str)


def test_cli(marian_folder, tmp_path, capsys):
    folder, _, _ = marian_folder
    out = tmp_path / "from-cli"
    assert main([str(folder), str(out)]) == 0
    assert "max |logit difference|" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file() and (out / "source.spm").is_file()
    assert type(AutoTokenizer.from_pretrained(out)).__name__ == "MarianTokenizer"


# ---------------------------------------------------------------------------------------------------------------------
# Refusals: what cannot be represented exactly
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("share_encoder_decoder_embeddings", False),
    ("tie_word_embeddings", False),
    ("decoder_vocab_size", 53),
    ("normalize_before", True),
    ("add_final_layer_norm", True),
    ("normalize_embedding", True),
    ("layernorm_embedding", True),
    ("add_bias_logits", True),
    ("static_position_embeddings", False),
    ("d_model", 15),
])
def test_refuses_config(field, value):
    marian = make_marian("swish")
    setattr(marian.config, field, value)
    with pytest.raises(ValueError, match=field):
        convert_marian(marian)


def test_refuses_from_folder_before_loading_weights(marian_folder, tmp_path):
    folder, _, _ = marian_folder
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "normalize_before": True}))
    (folder / "model.safetensors").unlink()  # the config alone must be enough to refuse
    with pytest.raises(ValueError, match="normalize_before"):
        convert_marian(folder)
    assert main([str(folder), str(tmp_path / "out")]) == 1


def test_refuses_other_model_types(tmp_path):
    from transformers import BartConfig

    BartConfig(vocab_size=20, d_model=16, encoder_layers=1, decoder_layers=1).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type"):
        convert_marian(tmp_path)


def test_refuses_learned_positions():
    marian = make_marian("relu")
    with torch.no_grad():
        marian.model.decoder.embed_positions.weight[3] += 0.01
    with pytest.raises(ValueError, match="embed_positions"):
        convert_marian(marian)


def test_refuses_untied_output_weights():
    marian = make_marian("relu")
    marian.lm_head.weight = torch.nn.Parameter(marian.lm_head.weight.detach() + 0.01)
    with pytest.raises(ValueError, match="lm_head"):
        convert_marian(marian)
