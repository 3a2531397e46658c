"""Tests of `vanilla_transformer.inspection`: logit lens, attention maps, logit attribution, neighbours, the command."""

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from vanilla_transformer.configuration import VanillaTransformerConfig
from vanilla_transformer.inspection import (attention_maps, encode_pair, logit_attribution, logit_lens,
                                            nearest_tokens)
from vanilla_transformer.cli.inspect import main as cli
from vanilla_transformer.inspection.report import figure_names
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration

SENTENCES = [
    "the house is small", "das haus ist klein", "the cat sat on the mat", "die katze sass auf der matte",
    "the dog is big", "der hund ist gross", "a small house", "ein kleines haus",
]


@pytest.fixture(scope="module")
def tokenizer():
    """A word-level tokenizer over both languages with the model's ids <pad>=0, <s>=1, </s>=2, <unk>=3; adds </s>."""
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["<pad>", "<s>", "</s>", "<unk>"]))
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny_model(vocab_size: int, **overrides) -> VanillaTransformerForConditionalGeneration:
    torch.manual_seed(0)
    sizes = dict(vocab_size=vocab_size, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)
    return VanillaTransformerForConditionalGeneration(VanillaTransformerConfig(**{**sizes, **overrides})).eval()


def padded_batch():
    """Two sources (the second padded) and two decoder inputs; ids stay within a vocabulary of 20."""
    input_ids = torch.tensor([[5, 6, 7, 8, 2], [9, 10, 2, 0, 0]])
    attention_mask = (input_ids != 0).long()
    decoder_input_ids = torch.tensor([[1, 11, 12, 13], [1, 14, 15, 16]])
    return input_ids, attention_mask, decoder_input_ids


@pytest.mark.parametrize("normalize_before", [False, True], ids=["post-norm", "pre-norm"])
def test_logit_lens_last_readout_is_the_models_output(normalize_before):
    model = tiny_model(20, normalize_before=normalize_before, add_final_logits_bias=True)
    model.final_logits_bias.normal_()  # a non-zero bias, so that the read-out must add it
    input_ids, attention_mask, decoder_input_ids = padded_batch()

    lens = logit_lens(model, input_ids, decoder_input_ids, attention_mask)

    assert lens.shape == (model.config.decoder_layers + 1, 2, 4, 20)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    torch.testing.assert_close(lens[-1], torch.log_softmax(logits, dim=-1))
    torch.testing.assert_close(lens.logsumexp(-1), torch.zeros(lens.shape[:-1]))  # every read-out is a distribution
    assert not torch.allclose(lens[0], lens[-1])  # the embedding read-out is not the final one


def test_attention_maps_are_distributions_that_respect_masks():
    model = tiny_model(20)
    source = [5, 6, 7, 2, 0, 0]
    maps = attention_maps(model, None, source, [11, 12, 13, 2], attention_mask=[1, 1, 1, 1, 0, 0])
    layers, heads = model.config.decoder_layers, model.config.decoder_attention_heads

    assert maps.encoder_self.shape == (model.config.encoder_layers, model.config.encoder_attention_heads, 6, 6)
    assert maps.decoder_self.shape == (layers, heads, 4, 4)  # [<s>, 11, 12, 13]: the </s> is predicted, not read
    assert maps.cross.shape == (layers, heads, 4, 6)
    assert maps.source_tokens == [str(i) for i in source] and maps.target_tokens == ["1", "11", "12", "13"]
    for weights in (maps.encoder_self, maps.decoder_self, maps.cross):
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    # Padded source keys get no weight, from any query, in the encoder and in encoder–decoder attention.
    assert maps.encoder_self[..., 4:].abs().max() == 0
    assert maps.cross[..., 4:].abs().max() == 0
    # Masked decoder self-attention (§3.2.3): no weight on future positions.
    future = torch.ones(4, 4, dtype=torch.bool).triu(1)
    assert maps.decoder_self[..., future].abs().max() == 0
    # The padding changes nothing for the real tokens.
    unpadded = attention_maps(model, None, source[:4], [11, 12, 13])
    torch.testing.assert_close(maps.encoder_self[..., :4, :4], unpadded.encoder_self)
    torch.testing.assert_close(maps.cross[..., :4], unpadded.cross)
    torch.testing.assert_close(maps.decoder_self, unpadded.decoder_self)


def test_attention_maps_from_text_are_labelled_with_tokens(tokenizer):
    model = tiny_model(len(tokenizer))
    maps = attention_maps(model, tokenizer, "the house is small", "das haus ist klein")
    assert maps.source_tokens == ["the", "house", "is", "small", "</s>"]
    assert maps.target_tokens == ["<s>", "das", "haus", "ist", "klein"]
    assert maps.pair.label_tokens == ["das", "haus", "ist", "klein", "</s>"]


@pytest.mark.parametrize("normalize_before", [False, True], ids=["post-norm", "pre-norm"])
def test_logit_attribution_telescopes_to_the_models_logit(normalize_before):
    model = tiny_model(20, normalize_before=normalize_before)
    input_ids, attention_mask, decoder_input_ids = padded_batch()

    attribution = logit_attribution(model, input_ids, decoder_input_ids, attention_mask)

    layers = model.config.decoder_layers
    assert len(attribution.names) == 3 * layers and attribution.names[:3] == [
        "layer 1 self-attention", "layer 1 cross-attention", "layer 1 FFN"]
    assert attribution.contributions.shape == (3 * layers, 2, 4)
    torch.testing.assert_close(attribution.embedding + attribution.contributions.sum(0), attribution.final)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    assert torch.equal(attribution.token_ids, logits.argmax(-1))
    torch.testing.assert_close(attribution.final, logits.gather(-1, attribution.token_ids[..., None])[..., 0])
    # The embedding read-out is the logit lens's first entry, read at the same token.
    lens = logit_lens(model, input_ids, decoder_input_ids, attention_mask)
    embedding_log_prob = lens[0].gather(-1, attribution.token_ids[..., None])[..., 0]
    assert torch.all(embedding_log_prob <= 0)
    # Hooks are removed afterwards.
    assert all(not block._forward_hooks for layer in model.model.decoder.layers
               for block in (layer.self_attn_block, layer.cross_attn_block, layer.ffn_block))

    chosen = torch.full((2, 4), 7)
    followed = logit_attribution(model, input_ids, decoder_input_ids, attention_mask, token_ids=chosen)
    torch.testing.assert_close(followed.final, logits[..., 7])
    torch.testing.assert_close(followed.embedding + followed.contributions.sum(0), followed.final)


def test_nearest_tokens_start_with_the_token_itself(tokenizer):
    model = tiny_model(len(tokenizer))
    neighbours = nearest_tokens(model, tokenizer, "haus", k=5)

    assert len(neighbours) == 5
    assert neighbours[0].token == "haus" and neighbours[0].token_id == tokenizer.convert_tokens_to_ids("haus")
    assert neighbours[0].similarity == pytest.approx(1.0)
    similarities = [n.similarity for n in neighbours]
    assert similarities == sorted(similarities, reverse=True)
    assert not {n.token for n in neighbours} & {"<pad>", "<s>", "</s>", "<unk>"}
    by_id = nearest_tokens(model, tokenizer, neighbours[0].token_id, k=3)
    assert by_id == neighbours[:3]
    with pytest.raises(ValueError, match="not one token"):
        nearest_tokens(model, tokenizer, "haus katze", k=3)
    without_tokenizer = nearest_tokens(model, None, neighbours[0].token_id, k=3)
    assert [n.token_id for n in without_tokenizer] == [n.token_id for n in neighbours[:3]]
    assert without_tokenizer[0].token == str(neighbours[0].token_id)


def never_ending(model):
    """`model` with its end token banned: it translates until the length limit stops it."""
    model.generation_config.bad_words_ids = [[model.config.eos_token_id]]
    return model


def test_encode_pair_translates_when_no_target_is_given(tokenizer):
    """Without a target the model translates the source, with the §6.1 length rule: a random model that never ends
    stops after source length + 50 tokens (not at the generation cap, nor at a max_new_tokens of its own)."""
    model = never_ending(tiny_model(len(tokenizer), max_position_embeddings=256))
    model.generation_config.max_new_tokens = 4  # the translate command ignores it; so does inspect
    pair = encode_pair(model, tokenizer, "the cat sat")  # 3 words + </s>
    assert pair.decoder_input_ids[0, 0].item() == model.config.decoder_start_token_id
    assert pair.decoder_input_ids.shape[1] == 1 + 4 + 50
    assert pair.labels[0, -1].item() == model.config.eos_token_id
    assert torch.equal(pair.labels[0, :-1], pair.decoder_input_ids[0, 1:])


def test_inspect_translates_with_the_length_rule_even_from_an_old_folder(tokenizer, tmp_path, capsys):
    """`inspect` without --tgt on a folder written before the translation layer, whose generation_config.json still
    caps the length at max_position_embeddings (255 new tokens here, as in issue #27): source + 50 tokens."""
    model = never_ending(tiny_model(len(tokenizer), max_position_embeddings=256))
    model.generation_config.max_length = model.config.max_position_embeddings  # what old exports saved
    model_dir = tmp_path / "old"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    assert json.loads((model_dir / "generation_config.json").read_text())["max_length"] == 256

    assert cli([str(model_dir), "--src", "the house is small", "--out", str(tmp_path / "out"), "--positions", "8",
                "-k", "2"]) == 0
    report = (tmp_path / "out" / "report.txt").read_text(encoding="utf-8")
    decoder_input = next(line for line in report.splitlines() if line.startswith("target tokens (decoder input): "))
    assert len(decoder_input.split(": ", 1)[1].split()) == 1 + 5 + 50  # <s>, then 4 words + </s> + 50 tokens


def test_inspect_on_a_ctranslate2_export_asks_for_the_model_folder(tmp_path, capsys):
    """A CTranslate2 export has no PyTorch weights to inspect; the message names what to give instead (inspect has
    no --engine option to suggest)."""
    export = tmp_path / "ct2"
    export.mkdir()
    for name in ("model.bin", "decoding.json", "config.json"):
        (export / name).write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        cli([str(export), "--src", "the house", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert "is a CTranslate2 export" in line and "the model folder it was exported from" in line
    assert "--engine" not in line


@pytest.mark.parametrize("with_target", [True, False], ids=["given-target", "translated"])
def test_inspect_command_writes_every_figure_and_the_report(tokenizer, tmp_path, with_target):
    overrides = {} if with_target else dict(normalize_before=True, positional_encoding="concatenated")
    model = tiny_model(len(tokenizer), **overrides)
    model.generation_config.max_new_tokens = 5  # keep the random model's translation short
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = tmp_path / "inspect"

    argv = [str(model_dir), "--src", "the house is small", "--out", str(out), "--positions", "32", "-k", "4"]
    if with_target:
        argv += ["--tgt", "das haus ist klein"]
    assert cli(argv) == 0

    expected = figure_names(model.config.encoder_layers, model.config.decoder_layers)
    assert "attention_cross_layer2.png" in expected and "positional_encoding.png" in expected
    for name in expected:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = (out / "report.txt").read_text(encoding="utf-8")
    assert report.startswith("source: the house is small\n")
    if with_target:
        assert "target: das haus ist klein\n" in report
    for section in ("Logit lens", "Direct logit attribution", "Nearest tokens"):
        assert section in report
    assert "'the': 'the' 1.000" in report and "'house': 'house' 1.000" in report
