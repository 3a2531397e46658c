"""The model issue: configuration, the one shared matrix, caching, generation, masks, bad input, and learning."""

import logging
import math

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from vanilla_transformer.configuration import VanillaTransformerConfig
from vanilla_transformer.modeling import (
    VanillaTransformerForConditionalGeneration,
    VanillaTransformerModel,
)
from vanilla_transformer.modeling.modeling_vanilla_transformer import CACHE_NAME, shift_tokens_right, sinusoidal_table
from support.models import VOCAB, batch, tiny_config, tiny_model

# --- configuration -----------------------------------------------------------------------------------------------


def test_defaults_are_transformer_base_and_presets_override():
    base = VanillaTransformerConfig()
    assert (base.d_model, base.encoder_layers, base.encoder_ffn_dim, base.encoder_attention_heads, base.dropout) == (
        512, 6, 2048, 8, 0.1)
    assert base.positional_encoding == "interleaved" and base.normalize_before is False
    big = VanillaTransformerConfig.big()
    assert (big.d_model, big.decoder_attention_heads, big.decoder_ffn_dim, big.dropout) == (1024, 16, 4096, 0.3)
    assert VanillaTransformerConfig.big(dropout=0.1).dropout == 0.1
    assert VanillaTransformerConfig.tiny().d_model < base.d_model
    assert AutoConfig.for_model("vanilla_transformer").model_type == "vanilla_transformer"


@pytest.mark.parametrize("overrides, field", [
    (dict(d_model=100, encoder_attention_heads=8), "encoder_attention_heads"),
    (dict(d_model=96, encoder_attention_heads=4, decoder_attention_heads=5), "decoder_attention_heads"),
    (dict(encoder_layers=0), "encoder_layers"),
    (dict(decoder_ffn_dim=-1), "decoder_ffn_dim"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(dropout=1.0), "dropout"),
    (dict(attention_dropout=-0.1), "attention_dropout"),
    (dict(activation_function="relu7"), "activation_function"),
    (dict(positional_encoding="learned"), "positional_encoding"),
    (dict(pad_token_id=37000), "pad_token_id"),
    (dict(eos_token_id=-1), "eos_token_id"),
    (dict(decoder_start_token_id=99999), "decoder_start_token_id"),
])
def test_invalid_config_values_raise_value_error_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        VanillaTransformerConfig(**overrides)


def count_parameters(config):
    with torch.device("meta"):
        model = VanillaTransformerForConditionalGeneration(config)
    return sum(p.numel() for p in model.parameters())  # parameters() counts the shared matrix once


def test_parameter_counts_match_the_paper():
    base = count_parameters(VanillaTransformerConfig.base(vocab_size=37000))
    big = count_parameters(VanillaTransformerConfig.big(vocab_size=37000))
    assert 62e6 < base < 64e6, base  # paper: 65M
    assert 208e6 < big < 216e6, big  # paper: 213M


# --- the one shared matrix ---------------------------------------------------------------------------------------


def assert_one_matrix(model):
    shared = model.get_input_embeddings().weight
    assert shared is model.get_output_embeddings().weight
    assert shared is model.model.encoder.embeddings.embed_tokens.weight
    assert shared is model.model.decoder.embeddings.embed_tokens.weight


def test_one_matrix_after_init_save_load_resize_and_to(tmp_path):
    model = tiny_model()
    assert_one_matrix(model)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "configuration_vanilla_transformer.py", "generation_config.json", "model.safetensors",
        "modeling_vanilla_transformer.py"]
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        stored = [k for k in f.keys() if k.endswith("embed_tokens.weight") or "shared" in k or "lm_head" in k]
    assert stored == ["model.shared.weight"]

    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert type(loaded) is VanillaTransformerForConditionalGeneration
    assert_one_matrix(loaded)
    input_ids, attention_mask, labels = batch()
    torch.testing.assert_close(loaded(input_ids, attention_mask, labels=labels).logits,
                               model(input_ids, attention_mask, labels=labels).logits, rtol=0, atol=0)

    loaded.resize_token_embeddings(VOCAB + 7)
    assert_one_matrix(loaded)
    assert loaded.lm_head.weight.shape == (VOCAB + 7, 32) and loaded.config.vocab_size == VOCAB + 7
    assert loaded(input_ids, attention_mask, labels=labels).logits.shape[-1] == VOCAB + 7

    moved = loaded.to(torch.float64)
    assert_one_matrix(moved)
    # Training updates the one matrix everywhere: a step changes encoder, decoder and output projection together.
    optimizer = torch.optim.SGD(moved.parameters(), lr=1.0)
    moved.train()
    moved(input_ids, attention_mask, labels=labels).loss.backward()
    optimizer.step()
    assert_one_matrix(moved)


def test_auto_classes_resolve(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert type(AutoModel.from_pretrained(tmp_path)) is VanillaTransformerModel
    assert type(AutoConfig.from_pretrained(tmp_path)) is VanillaTransformerConfig


def test_gradient_checkpointing_gives_same_loss_and_gradients():
    input_ids, attention_mask, labels = batch()
    results = []
    for checkpointing in (False, True):
        model = tiny_model(dropout=0.3).train()  # the recomputed forward must draw the same dropout masks
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.model.encoder.layers[0].gradient_checkpointing
        torch.manual_seed(7)
        loss = model(input_ids, attention_mask, labels=labels).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0])
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], msg=name)


def test_every_parameter_receives_a_gradient():
    for normalize_before in (False, True):
        model = tiny_model(normalize_before=normalize_before).train()
        input_ids, attention_mask, labels = batch()
        model(input_ids, attention_mask, labels=labels).loss.backward()
        for name, param in model.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, name


# --- the paper's pieces ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["interleaved", "concatenated"])
def test_sinusoidal_table_equals_the_formula(layout):
    d, length = 16, 50
    table = sinusoidal_table(length, d, layout)
    for pos in range(length):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            sin_at, cos_at = (2 * i, 2 * i + 1) if layout == "interleaved" else (i, d // 2 + i)
            assert table[pos, sin_at].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, cos_at].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_embeddings_are_scaled_and_positioned():
    model = tiny_model()
    input_ids = torch.tensor([[5, 6, 7]])
    embedded = model.model.encoder.embeddings(input_ids)
    expected = model.model.shared.weight[input_ids] * math.sqrt(32) + sinusoidal_table(3, 32)
    torch.testing.assert_close(embedded, expected)


def test_label_smoothing_equals_hand_computation():
    model = tiny_model(label_smoothing=0.1)
    input_ids, attention_mask, labels = batch()
    labels[0, -2:] = -100
    out = model(input_ids, attention_mask, labels=labels)
    log_probs = out.logits.log_softmax(-1)
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            if labels[b, t] == -100:
                continue
            nll = -log_probs[b, t, labels[b, t]]
            uniform = -log_probs[b, t].mean()  # ε spread evenly over the vocabulary
            total += 0.9 * nll + 0.1 * uniform
            count += 1
    assert out.loss.item() == pytest.approx((total / count).item(), rel=1e-5)
    # decoder_input_ids come from labels shifted right with the start token
    shifted = shift_tokens_right(labels, 0, model.config.decoder_start_token_id)
    assert shifted[0, 0] == model.config.decoder_start_token_id and shifted[0, -1] == 0
    torch.testing.assert_close(model(input_ids, attention_mask, decoder_input_ids=shifted).logits, out.logits)


@pytest.mark.parametrize("normalize_before", [False, True])
def test_padding_cannot_change_other_positions_or_rows(normalize_before):
    model = tiny_model(normalize_before=normalize_before)
    input_ids, attention_mask, labels = batch()
    reference = model(input_ids, attention_mask, labels=labels).logits
    changed = input_ids.clone()
    changed[attention_mask == 0] = 17  # different tokens under the padding mask
    torch.testing.assert_close(model(changed, attention_mask, labels=labels).logits, reference)
    # The padded row alone, unpadded, gives the same result as inside the batch.
    length = int(attention_mask[-1].sum())
    alone = model(input_ids[-1:, :length], labels=labels[-1:]).logits
    torch.testing.assert_close(alone, reference[-1:], atol=1e-5, rtol=1e-5)


def test_future_decoder_tokens_cannot_change_earlier_logits():
    model = tiny_model()
    input_ids, attention_mask, labels = batch()
    decoder_input_ids = shift_tokens_right(labels, 0, 1)
    reference = model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids).logits
    changed = decoder_input_ids.clone()
    changed[:, 3:] = 9
    logits = model(input_ids, attention_mask, decoder_input_ids=changed).logits
    torch.testing.assert_close(logits[:, :3], reference[:, :3])
    assert not torch.allclose(logits[:, 3:], reference[:, 3:])


def test_sequences_longer_than_max_position_embeddings_work():
    model = tiny_model(max_position_embeddings=8)
    input_ids = torch.randint(4, VOCAB, (1, 20))
    out = model(input_ids, decoder_input_ids=torch.randint(4, VOCAB, (1, 30)))
    assert out.logits.shape == (1, 30, VOCAB) and torch.isfinite(out.logits).all()


def test_attentions_and_hidden_states_for_every_layer():
    model = tiny_model()
    input_ids, attention_mask, labels = batch()
    out = model(input_ids, attention_mask, labels=labels, output_attentions=True, output_hidden_states=True)
    assert len(out.encoder_attentions) == len(out.decoder_attentions) == len(out.cross_attentions) == 2
    assert out.encoder_attentions[0].shape == (3, 4, 7, 7)
    assert out.decoder_attentions[0].shape == (3, 2, 5, 5)
    assert out.cross_attentions[1].shape == (3, 2, 5, 7)
    assert len(out.encoder_hidden_states) == len(out.decoder_hidden_states) == 3
    torch.testing.assert_close(out.encoder_hidden_states[-1], out.encoder_last_hidden_state)
    # The explicit-softmax path that returns the maps computes the same thing as the fused kernel.
    torch.testing.assert_close(out.logits, model(input_ids, attention_mask, labels=labels).logits)
    # Padded source keys get no attention, future target positions get none either.
    assert out.cross_attentions[0][-1, :, :, -3:].abs().max() == 0
    assert torch.triu(out.decoder_attentions[1][0, 0], diagonal=1).abs().max() == 0


# --- bad input ---------------------------------------------------------------------------------------------------


def test_bad_input_gets_a_clear_error():
    model = tiny_model()
    input_ids, attention_mask, labels = batch()
    with pytest.raises(ValueError, match=rf"token id {VOCAB}.*vocab_size={VOCAB}"):
        model(input_ids.clamp(max=VOCAB - 1).index_fill(1, torch.tensor([2]), VOCAB), labels=labels)
    with pytest.raises(ValueError, match=r"token id -5"):
        model(input_ids, decoder_input_ids=labels.index_fill(1, torch.tensor([0]), -5))
    with pytest.raises(ValueError, match="attention_mask"):
        model(input_ids, attention_mask[:, :-1], labels=labels)
    with pytest.raises(ValueError, match="empty"):
        model(input_ids[:0], attention_mask[:0], labels=labels[:0])
    with pytest.raises(ValueError, match="empty"):
        model(input_ids[:, :0], labels=labels)


def test_an_all_padding_row_gives_no_nan():
    model = tiny_model()
    input_ids, attention_mask, labels = batch()
    attention_mask[1] = 0
    out = model(input_ids, attention_mask, labels=labels)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    reference = model(input_ids[[0, 2]], batch()[1][[0, 2]], labels=labels[[0, 2]]).logits
    torch.testing.assert_close(out.logits[[0, 2]], reference)


# --- caching and generation --------------------------------------------------------------------------------------


def test_step_by_step_decoding_with_cache_equals_full_forward():
    model = tiny_model()
    input_ids, attention_mask, labels = batch()
    decoder_input_ids = shift_tokens_right(labels, 0, 1)
    full = model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids).logits
    encoder_outputs = model.get_encoder()(input_ids, attention_mask)
    past, steps = None, []
    for t in range(decoder_input_ids.shape[1]):
        out = model(attention_mask=attention_mask, encoder_outputs=encoder_outputs,
                    decoder_input_ids=decoder_input_ids[:, t:t + 1], use_cache=True, **{CACHE_NAME: past})
        past = getattr(out, CACHE_NAME)
        steps.append(out.logits)
    assert past.get_seq_length() == decoder_input_ids.shape[1]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-4, rtol=0)
    # A chunk of several new tokens on top of a cache is masked causally with the right offset.
    out = model(attention_mask=attention_mask, encoder_outputs=encoder_outputs, decoder_input_ids=decoder_input_ids[:, :2],
                use_cache=True)
    rest = model(attention_mask=attention_mask, encoder_outputs=encoder_outputs,
                 decoder_input_ids=decoder_input_ids[:, 2:], use_cache=True, **{CACHE_NAME: getattr(out, CACHE_NAME)})
    torch.testing.assert_close(rest.logits, full[:, 2:], atol=1e-4, rtol=0)


def test_beam_search_with_and_without_cache_agree():
    model = tiny_model(seed=3)
    input_ids, attention_mask, _ = batch(seed=5)
    kwargs = dict(num_beams=4, length_penalty=0.6, max_new_tokens=12, num_return_sequences=2)
    with_cache = model.generate(input_ids, attention_mask=attention_mask, use_cache=True, **kwargs)
    without = model.generate(input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    assert with_cache.shape[0] == 6
    assert torch.equal(with_cache, without)


def test_beams_share_one_encoder_row_per_sentence():
    model = tiny_model(seed=3)
    input_ids, attention_mask, _ = batch(seed=5)
    kwargs = dict(num_beams=4, length_penalty=0.6, max_new_tokens=10, return_dict_in_generate=True)
    shared = model.generate(input_ids, attention_mask=attention_mask, **kwargs)
    # The encoder–decoder K/V are cached once per sentence (3 rows), not once per beam (12).
    cross = getattr(shared, CACHE_NAME).cross_attention_cache.layers[0]
    assert cross.keys.shape[0] == input_ids.shape[0]
    # A cache of transformers' own kind makes generate expand the encoder output per beam, as Marian/BART do:
    # the same translations and scores come out.
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    expanded = model.generate(input_ids, attention_mask=attention_mask,
                              **{CACHE_NAME: EncoderDecoderCache(DynamicCache(), DynamicCache())}, **kwargs)
    assert getattr(expanded, CACHE_NAME).cross_attention_cache.layers[0].keys.shape[0] == 4 * input_ids.shape[0]
    assert torch.equal(shared.sequences, expanded.sequences)
    torch.testing.assert_close(shared.sequences_scores, expanded.sequences_scores, atol=1e-5, rtol=0)


def test_decoding_steps_build_no_masks(monkeypatch):
    from vanilla_transformer.modeling import modeling_vanilla_transformer as module

    model = tiny_model(seed=3)
    input_ids, attention_mask, _ = batch(seed=5)  # the last row is padded
    expected = model.generate(input_ids, attention_mask=attention_mask, num_beams=4, max_new_tokens=8,
                              min_new_tokens=8)
    calls = {"padding_mask": 0, "causal_mask": 0}
    for name in calls:
        def counted(*args, _original=getattr(module, name), _name=name):
            calls[_name] += 1
            return _original(*args)
        monkeypatch.setattr(module, name, counted)
    generated = model.generate(input_ids, attention_mask=attention_mask, num_beams=4, max_new_tokens=8,
                               min_new_tokens=8)
    assert torch.equal(generated, expected)
    # One source mask for the encoder and one for encoder–decoder attention, for all 8 steps; no causal mask for
    # one-query steps (the cache holds only the past).
    assert calls == {"padding_mask": 2, "causal_mask": 0}


def test_decoder_rows_may_share_an_encoder_row():
    model = tiny_model()
    input_ids, attention_mask, labels = batch()
    decoder_input_ids = shift_tokens_right(labels, 0, 1)
    encoder_outputs = model.get_encoder()(input_ids, attention_mask)
    repeated = decoder_input_ids.repeat_interleave(2, 0)
    expanded = model(attention_mask=attention_mask.repeat_interleave(2, 0), decoder_input_ids=repeated,
                     encoder_outputs=(encoder_outputs.last_hidden_state.repeat_interleave(2, 0),),
                     output_attentions=True)
    shared = model(attention_mask=attention_mask, decoder_input_ids=repeated, encoder_outputs=encoder_outputs,
                   output_attentions=True)
    torch.testing.assert_close(shared.logits, expanded.logits, atol=1e-5, rtol=0)
    for ours, theirs in zip(shared.cross_attentions, expanded.cross_attentions):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"target batch has 4 rows but the source batch has 3: .*or a multiple"):
        model(attention_mask=attention_mask, decoder_input_ids=repeated[:4], encoder_outputs=encoder_outputs)


def test_teacher_forced_batches_must_match_exactly():
    """Only generate's beams share a source row: with input ids, or with labels, the row counts must be equal."""
    model = tiny_model()
    input_ids, attention_mask, labels = batch()
    with pytest.raises(ValueError, match=r"labels have 6 rows but the source batch has 3"):
        model(input_ids, attention_mask, labels=labels.repeat(2, 1))
    encoder_outputs = model.get_encoder()(input_ids, attention_mask)
    with pytest.raises(ValueError, match=r"labels have 6 rows but the source batch has 3"):
        model(attention_mask=attention_mask, encoder_outputs=encoder_outputs, labels=labels.repeat(2, 1))
    with pytest.raises(ValueError, match=r"target batch has 6 rows but the source batch has 3: they must be equal$"):
        model(input_ids, attention_mask, decoder_input_ids=shift_tokens_right(labels, 0, 1).repeat(2, 1))
    with pytest.raises(ValueError, match=r"labels have shape \(3, 5\) but the decoder input has shape \(3, 4\)"):
        model(input_ids, attention_mask, decoder_input_ids=labels[:, :4], labels=labels)


def test_loss_is_the_mean_over_labelled_tokens_or_the_sum_over_num_items_in_batch():
    model = tiny_model(label_smoothing=0.1)
    input_ids, attention_mask, labels = batch()
    labels[0, 3:] = -100
    out = model(input_ids, attention_mask, labels=labels)
    logits = out.logits.flatten(0, 1)
    mean = torch.nn.functional.cross_entropy(logits, labels.flatten(), ignore_index=-100, label_smoothing=0.1)
    torch.testing.assert_close(out.loss, mean)
    summed = model(input_ids, attention_mask, labels=labels, num_items_in_batch=torch.tensor(40)).loss
    torch.testing.assert_close(summed, mean * (labels != -100).sum() / 40)


def test_a_batch_without_labelled_tokens_has_loss_zero_not_nan(caplog):
    model = tiny_model()
    input_ids, attention_mask, labels = batch()
    labels = torch.full_like(labels, -100)
    logging.Logger.warning_once.cache_clear()  # transformers' once-per-process warnings: this test must see it
    with caplog.at_level("WARNING"):
        loss = model(input_ids, attention_mask, decoder_input_ids=torch.ones_like(labels), labels=labels).loss
    assert loss.item() == 0.0
    assert "every label is -100" in caplog.text


def test_dropout_keeps_each_unit_with_probability_one_minus_p():
    from vanilla_transformer.modeling.modeling_vanilla_transformer import inverted_dropout as dropout

    x = torch.full((1000, 1000), 2.0, requires_grad=True)
    torch.manual_seed(0)
    y = dropout(x, 0.1, training=True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.003  # 10 standard deviations of a million Bernoulli(0.1) draws
    assert torch.equal(y[y != 0], torch.full_like(y[y != 0], 2.0 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float() / 0.9)  # the gradient flows through the kept units only
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0, training=True) is x
    assert torch.equal(dropout(x, 1.0, training=True), torch.zeros_like(x))
    half = dropout(torch.ones(4, 8, dtype=torch.bfloat16), 0.5, training=True)
    assert half.dtype == torch.bfloat16


def test_generate_modes():
    model = tiny_model(seed=1)
    input_ids, attention_mask, _ = batch()
    greedy = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=6)
    # Greedy is the argmax of the full forward at every step.
    logits = model(input_ids, attention_mask, decoder_input_ids=greedy[:, :-1]).logits
    finished = torch.zeros(len(greedy), dtype=torch.bool)
    for t in range(greedy.shape[1] - 1):
        expected = logits[:, t].argmax(-1)
        assert torch.equal(greedy[~finished, t + 1], expected[~finished])
        finished |= greedy[:, t + 1] == model.config.eos_token_id
    torch.manual_seed(0)
    sampled = model.generate(input_ids, attention_mask=attention_mask, do_sample=True, num_beams=1, top_k=5,
                             max_new_tokens=6)
    torch.manual_seed(0)
    again = model.generate(input_ids, attention_mask=attention_mask, do_sample=True, num_beams=1, top_k=5,
                           max_new_tokens=6)
    assert torch.equal(sampled, again)
    # Without a length the paper's rule applies: at most source length + 50 new tokens.
    unbounded = model.generate(input_ids[:1], num_beams=1)
    assert unbounded.shape[1] <= 1 + input_ids.shape[1] + 50
    assert model.generation_config.num_beams == 4 and model.generation_config.length_penalty == 0.6


def test_generation_config_is_saved_with_paper_defaults(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert (loaded.generation_config.num_beams, loaded.generation_config.length_penalty) == (4, 0.6)
    assert loaded.generation_config.decoder_start_token_id == 1


# --- the end-to-end proof that the stack learns ------------------------------------------------------------------


def test_tiny_model_learns_to_reverse_sequences():
    torch.manual_seed(0)
    config = tiny_config(vocab_size=16, d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128,
                         encoder_attention_heads=4, decoder_attention_heads=4, label_smoothing=0.0)
    model = VanillaTransformerForConditionalGeneration(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.9, 0.98), eps=1e-9)
    g = torch.Generator().manual_seed(0)

    def sample(n):
        source = torch.randint(4, 16, (n, 6), generator=g)
        labels = torch.cat([source.flip(1), torch.full((n, 1), 2)], 1)
        return source, labels

    accuracy = 0.0
    for step in range(1, 801):
        source, labels = sample(64)
        loss = model(source, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            model.eval()
            source, labels = sample(256)
            with torch.no_grad():
                predicted = model(source, labels=labels).logits.argmax(-1)
            accuracy = (predicted == labels).float().mean().item()
            model.train()
            if accuracy >= 0.99:
                break
    assert accuracy >= 0.99, f"token accuracy {accuracy:.3f} after {step} steps"
    generated = model.eval().generate(source[:8], num_beams=1, max_new_tokens=7)
    assert (generated[:, 1:7] == source[:8].flip(1)).float().mean() >= 0.95


# --- bad arguments to generate and save_pretrained ----------------------------------------------------------------


@pytest.mark.parametrize("name, value", [("num_beams", 0), ("num_beams", -1), ("num_beams", 2.5),
                                         ("num_return_sequences", 0)])
def test_generate_refuses_a_non_positive_count_naming_it(name, value):
    model = tiny_model()
    input_ids, attention_mask, _ = batch()
    with pytest.raises(ValueError, match=rf"^{name} must be a positive integer, got {value}$"):
        model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=3, **{name: value})
    model.generation_config.num_beams = 0  # in the generation config, as from a hand-edited generation_config.json
    with pytest.raises(ValueError, match=r"^num_beams must be a positive integer, got 0$"):
        model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=3)


@pytest.mark.parametrize("model_class", [VanillaTransformerForConditionalGeneration, VanillaTransformerModel])
@pytest.mark.parametrize("below", [False, True])
def test_save_pretrained_onto_a_file_is_one_clear_error_naming_the_path(tmp_path, model_class, below):
    model = model_class(tiny_config())
    existing = tmp_path / "notes.txt"
    existing.write_text("mine", encoding="utf-8")
    target = existing / "model" if below else existing
    with pytest.raises(NotADirectoryError) as raised:
        model.save_pretrained(target)
    message = str(raised.value)
    assert message == f"cannot save the model to {target}: {existing if below else 'it'} is a file, not a folder"
    assert ".tmp" not in message
    assert existing.read_text(encoding="utf-8") == "mine" and sorted(tmp_path.iterdir()) == [existing]
