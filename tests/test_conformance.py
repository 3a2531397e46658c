"""Behaving like an in-tree transformers model: loading, attention implementations, continued and assisted
generation, the static cache, `torch.export` / `torch.compile`, validation at save time."""

import copy
import inspect
import logging
import re
import subprocess
import sys
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, set_seed
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.conversion_mapping import get_model_conversion_mapping

from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration
from vanilla_transformer.modeling import modeling_vanilla_transformer as module
from vanilla_transformer.modeling.modeling_vanilla_transformer import CACHE_NAME

from support.models import batch, tiny_config, tiny_model

Model = VanillaTransformerForConditionalGeneration


# --- loading -----------------------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    model = tiny_model(seed=7)
    model.save_pretrained(tmp_path)
    return model, tmp_path


def rewrite_weights(folder, change):
    path = folder / "model.safetensors"
    weights = load_file(path)
    change(weights)
    save_file(weights, path, metadata={"format": "pt"})


def assert_tied_and_materialised(model):
    shared = model.model.shared.weight
    assert shared.device.type == "cpu"
    for alias in (model.lm_head.weight, model.model.encoder.embeddings.embed_tokens.weight,
                  model.model.decoder.embeddings.embed_tokens.weight):
        assert alias is shared
    assert all(t.device.type != "meta" for t in model.state_dict().values())


def test_a_matrix_stored_under_lm_head_only_loads_into_every_tied_name(saved):
    model, folder = saved
    rewrite_weights(folder, lambda w: w.update({"lm_head.weight": w.pop("model.shared.weight")}))
    loaded, info = Model.from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert_tied_and_materialised(loaded)
    assert torch.equal(loaded.model.shared.weight, model.model.shared.weight)


# Missing weights follow transformers' convention: initialised as in a new model, with a warning naming them
# (transformers' own table, and ours); `strict=True` refuses them. One member of each kind of weight, in both classes.
MISSING_KINDS = {
    "shared embedding": ["shared.weight"],
    "attention projection": ["decoder.layers.1.cross_attn.k_proj.weight"],
    "bias": ["encoder.layers.0.self_attn.out_proj.bias"],
    "feed-forward": ["decoder.layers.1.ffn.fc1.weight"],
    "layer norm": ["encoder.layers.1.ffn_block.norm.weight", "encoder.layers.1.ffn_block.norm.bias"],
    "final norm (pre-norm)": ["decoder.final_norm.weight"],
    "logits bias buffer": ["final_logits_bias"],
}


def saved_model(folder, bare: bool, kind: str):
    overrides = {"normalize_before": True} if "pre-norm" in kind else {}
    if "logits bias" in kind:
        overrides["add_final_logits_bias"] = True
    model = tiny_model(seed=7, **overrides)
    model = model.model if bare else model
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("kind, bare", [(kind, bare) for kind in MISSING_KINDS for bare in (False, True)
                                         if not (bare and "logits bias" in kind)])  # the bare model has no output layer
def test_missing_weights_are_initialised_with_a_warning_naming_them_and_refused_when_strict(tmp_path, caplog, kind,
                                                                                            bare):
    model = saved_model(tmp_path, bare, kind)
    cls, prefix = type(model), ("" if bare else "model.")
    names = [name if name == "final_logits_bias" else prefix + name for name in MISSING_KINDS[kind]]
    rewrite_weights(tmp_path, lambda w: [w.pop(name) for name in names])

    with pytest.raises(OSError, match=rf"lacks [^(]*{re.escape(names[-1])}.*Leave strict unset"):
        cls.from_pretrained(tmp_path, strict=True)
    with caplog.at_level(logging.WARNING):
        loaded, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    assert set(names) <= set(info["missing_keys"])
    assert all(name in caplog.text for name in names) and "newly initialised" in caplog.text
    state, fresh = model.state_dict(), loaded.state_dict()
    assert all(t.device.type != "meta" and torch.isfinite(t).all() for t in fresh.values())
    for key, tensor in state.items():
        if key not in info["missing_keys"]:
            assert torch.equal(fresh[key], tensor), key
    if not bare:
        assert_tied_and_materialised(loaded)
        input_ids, attention_mask, labels = batch()
        assert torch.isfinite(loaded(input_ids, attention_mask, labels=labels).loss)
    # Saved again (the new weights now stored) and reloaded: complete, equal.
    loaded.save_pretrained(tmp_path / "again")
    again, info = cls.from_pretrained(tmp_path / "again", strict=True, output_loading_info=True)
    assert not info["missing_keys"]
    assert all(torch.equal(again.state_dict()[key], tensor) for key, tensor in fresh.items())


def test_a_missing_shared_embedding_is_listed_with_its_tied_name_and_initialised(saved):
    model, folder = saved
    rewrite_weights(folder, lambda w: w.pop("model.shared.weight"))
    loaded, info = Model.from_pretrained(folder, output_loading_info=True)
    # The matrix and its tied name are listed (as Marian does); it is initialised, not left on `meta`, and tied.
    assert set(info["missing_keys"]) == {"model.shared.weight", "lm_head.weight"}
    assert_tied_and_materialised(loaded)
    assert not torch.equal(loaded.model.shared.weight, model.model.shared.weight)


# --- transformers' common model tests (`ModelTesterMixin`), for both classes -----------------------------------------
# transformers' test suite is not installed with transformers: the checks of its tests named in each docstring are
# made here on our classes and a few configurations.

CONFIGURATIONS = {"paper": {}, "pre-norm, logits bias": dict(normalize_before=True, add_final_logits_bias=True),
                  "marian init": dict(init_std=0.02)}
CLASSES = {"with-head": Model, "bare": module.VanillaTransformerModel}


@pytest.fixture
def seeded_initialisation(monkeypatch):
    """transformers' seeding of every module's initialisation, so that two initialisations give the same weights."""
    original = PreTrainedModel._initialize_weights

    def seeded(self, *args, **kwargs):
        set_seed(0)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "_initialize_weights", seeded)


@pytest.mark.parametrize("cls", list(CLASSES.values()), ids=list(CLASSES))
@pytest.mark.parametrize("overrides", list(CONFIGURATIONS.values()), ids=list(CONFIGURATIONS))
def test_can_init_all_missing_weights(seeded_initialisation, cls, overrides):
    """`test_can_init_all_missing_weights`: `from_pretrained(None, config=..., state_dict={})` loads (every weight
    missing), nothing stays on `meta`, and `_init_weights` gives every weight what a new model has."""
    config = tiny_config(**overrides)
    new = cls(copy.deepcopy(config))
    loaded, info = cls.from_pretrained(None, config=copy.deepcopy(config), state_dict={}, output_loading_info=True)
    assert not [name for name, p in loaded.named_parameters() if p.device.type == "meta"]
    assert list(new.state_dict()) == list(loaded.state_dict())
    assert [k for k, v in new.state_dict().items() if not torch.equal(v, loaded.state_dict()[k])] == []
    assert set(info["missing_keys"]) >= set(dict(loaded.named_parameters()))


@pytest.mark.parametrize("cls", list(CLASSES.values()), ids=list(CLASSES))
def test_from_pretrained_no_checkpoint(cls):
    """`test_from_pretrained_no_checkpoint`: `from_pretrained(None, config=..., state_dict=model.state_dict())` gives
    the same weights, tied as before, with nothing missing."""
    model = cls(tiny_config(add_final_logits_bias=True))
    loaded, info = cls.from_pretrained(None, config=model.config, state_dict=model.state_dict(), strict=True,
                                       output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), loaded.parameters(), strict=True))
    if cls is Model:
        assert_tied_and_materialised(loaded)


@pytest.mark.parametrize("cls", list(CLASSES.values()), ids=list(CLASSES))
@pytest.mark.parametrize("overrides", list(CONFIGURATIONS.values()), ids=list(CONFIGURATIONS))
def test_model_weights_reload_no_missing_tied_weights(tmp_path, caplog, cls, overrides):
    """`test_model_weights_reload_no_missing_tied_weights`: a folder whose weight file holds none of the model's
    weights loads, and `missing_keys` lists exactly the parameters and persistent buffers (a tied name may be listed
    with its source), nothing else. Our warning names the first of them and counts the rest."""
    model = cls(tiny_config(**overrides))
    model.save_pretrained(tmp_path)
    save_file({"tensor": torch.tensor([1, 2])}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING):
        loaded, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    assert re.search(r"lacks [^(]* and \d+ more \(it is incomplete", caplog.text)
    names = set(dict(loaded.named_parameters())) | set(loaded.state_dict())
    missing = set(info["missing_keys"])
    tied = set(loaded._tied_weights_keys or {})
    assert missing - names <= tied and names - missing == set()
    assert set(info["unexpected_keys"]) == {"tensor"}


@pytest.mark.parametrize("cls", list(CLASSES.values()), ids=list(CLASSES))
def test_reverse_loading_mapping(tmp_path, cls):
    """`test_reverse_loading_mapping`: every conversion transformers applies on load must be undone on save. None is
    registered (folders of the fused layout are split by `from_pretrained` itself), so a save writes the model's own
    names, and save → load → save round-trips exactly."""
    model = cls(tiny_config())
    legacy = {"add_legacy": False} if "add_legacy" in inspect.signature(get_model_conversion_mapping).parameters else {}
    assert [c for c in get_model_conversion_mapping(model, **legacy) if "proj" in str(c)] == []
    model.save_pretrained(tmp_path / "first")
    stored = load_file(tmp_path / "first" / "model.safetensors")
    assert set(stored) == set(model.state_dict()) - set(model._tied_weights_keys or {})
    reloaded, info = cls.from_pretrained(tmp_path / "first", strict=True, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert all(torch.equal(reloaded.state_dict()[key], tensor) for key, tensor in model.state_dict().items())
    reloaded.save_pretrained(tmp_path / "second")
    again = load_file(tmp_path / "second" / "model.safetensors")
    assert again.keys() == stored.keys() and all(torch.equal(again[key], stored[key]) for key in stored)


def test_importing_the_model_registers_no_conversion_with_transformers():
    """The model file travels in every saved folder (`trust_remote_code`): importing it changes no table of
    transformers'."""
    script = """
from transformers import conversion_mapping
before = {name: dict(value) for name, value in vars(conversion_mapping).items() if isinstance(value, dict)}
import vanilla_transformer.modeling
after = {name: dict(value) for name, value in vars(conversion_mapping).items() if isinstance(value, dict)}
assert before.keys() == after.keys(), set(after) ^ set(before)
assert all(before[name].keys() == after[name].keys() for name in before), [
    (name, set(after[name]) ^ set(before[name])) for name in before if before[name].keys() != after[name].keys()]
assert conversion_mapping.get_checkpoint_conversion_mapping("vanilla_transformer") is None
print("unchanged")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "unchanged" in result.stdout, result.stderr[-3000:]


def test_non_finite_weights_are_refused_naming_the_tensor(saved, caplog):
    _, folder = saved
    rewrite_weights(folder, lambda w: w["model.encoder.layers.0.ffn.fc2.weight"].view(-1)[3:5].fill_(float("nan")))
    with pytest.raises(OSError, match=r"inf or NaN: model\.encoder\.layers\.0\.ffn\.fc2\.weight \("):
        Model.from_pretrained(folder)
    with caplog.at_level(logging.WARNING):
        loaded = Model.from_pretrained(folder, strict=False)
    assert "model.encoder.layers.0.ffn.fc2.weight" in caplog.text and "loaded anyway" in caplog.text
    assert loaded.model.encoder.layers[0].ffn.fc2.weight.isnan().sum() == 2


def test_unexpected_weights_are_named_in_a_warning(saved, caplog):
    model, folder = saved
    rewrite_weights(folder, lambda w: w.update({"model.encoder.extra.weight": torch.ones(3)}))
    with caplog.at_level(logging.WARNING):
        loaded = Model.from_pretrained(folder)
    assert "not use, ignored: model.encoder.extra.weight" in caplog.text
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_a_config_changed_after_construction_is_refused_before_saving(tmp_path):
    model = tiny_model()
    model.config.tie_word_embeddings = False
    with pytest.raises(ValueError, match="tie_word_embeddings must be True"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- attention implementations -----------------------------------------------------------------------------------


def count_eager_calls(monkeypatch):
    calls = []
    eager = module.eager_attention

    def counting(*args, **kwargs):
        calls.append(args[1].shape[-2])  # query length
        return eager(*args, **kwargs)

    monkeypatch.setattr(module, "eager_attention", counting)
    return calls


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attn_implementation_is_loaded_and_used(saved, monkeypatch, implementation):
    _, folder = saved
    model = Model.from_pretrained(folder, attn_implementation=implementation).eval()
    assert model.config._attn_implementation == implementation
    calls = count_eager_calls(monkeypatch)
    input_ids, attention_mask, labels = batch()
    model(input_ids, attention_mask, labels=labels)
    # 2 encoder layers, 2 decoder layers × (self, cross): all written out, or none.
    assert len(calls) == (6 if implementation == "eager" else 0)


def test_eager_and_sdpa_agree_with_padding_causal_masks_and_the_cache(saved):
    _, folder = saved
    eager = Model.from_pretrained(folder, attn_implementation="eager").eval()
    sdpa = Model.from_pretrained(folder, attn_implementation="sdpa").eval()
    input_ids, attention_mask, labels = batch()
    decoder_attention_mask = torch.ones_like(labels)
    decoder_attention_mask[0, -2:] = 0
    for kwargs in (dict(labels=labels), dict(labels=labels, decoder_attention_mask=decoder_attention_mask)):
        torch.testing.assert_close(eager(input_ids, attention_mask, **kwargs).logits,
                                   sdpa(input_ids, attention_mask, **kwargs).logits, atol=1e-5, rtol=0)
    for kwargs in (dict(num_beams=1), dict(num_beams=3)):
        assert torch.equal(eager.generate(input_ids, attention_mask=attention_mask, max_new_tokens=8, **kwargs),
                           sdpa.generate(input_ids, attention_mask=attention_mask, max_new_tokens=8, **kwargs))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bare", [False, True])
def test_left_padding_gives_finite_equal_outputs_in_every_implementation_and_dtype(saved, dtype, bare):
    """A left-padded target position sees no real key; its (meaningless) output must still be finite, in eager and
    sdpa alike, in float32 and bfloat16 — and the real positions must not change."""
    _, folder = saved
    cls = module.VanillaTransformerModel if bare else Model
    input_ids, attention_mask, labels = batch()
    decoder_input_ids = labels.clone()
    decoder_attention_mask = torch.ones_like(labels)
    decoder_attention_mask[0, :2] = 0  # left padding
    decoder_attention_mask[1, :1] = 0
    attention_mask = attention_mask.flip(-1)  # the source left-padded too
    kwargs = dict(attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                  decoder_attention_mask=decoder_attention_mask, output_hidden_states=True)
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model = cls.from_pretrained(folder, attn_implementation=implementation, dtype=dtype).eval()
        outputs[implementation] = model(input_ids, **kwargs)
    for name in ("decoder_hidden_states", "encoder_hidden_states"):
        for eager, sdpa in zip(getattr(outputs["eager"], name), getattr(outputs["sdpa"], name), strict=True):
            assert torch.isfinite(eager).all() and torch.isfinite(sdpa).all(), name
            tolerance = 1e-5 if dtype == torch.float32 else 5e-2
            torch.testing.assert_close(eager.float(), sdpa.float(), atol=tolerance, rtol=tolerance)
    # What stands at the padded positions changes nothing at the real ones.
    model = cls.from_pretrained(folder, attn_implementation="eager").eval()
    other = {**kwargs, "decoder_input_ids": decoder_input_ids.masked_fill(decoder_attention_mask == 0, 5)}
    before, after = (model(input_ids, **k).decoder_hidden_states[-1] for k in (kwargs, other))
    real = decoder_attention_mask.bool()
    torch.testing.assert_close(before[real], after[real], atol=1e-5, rtol=0)


def test_output_attentions_falls_back_to_eager_with_a_warning(saved, caplog):
    _, folder = saved
    eager = Model.from_pretrained(folder, attn_implementation="eager").eval()
    sdpa = Model.from_pretrained(folder, attn_implementation="sdpa").eval()
    input_ids, attention_mask, labels = batch()
    logging.Logger.warning_once.cache_clear()  # transformers' once-per-process warnings: this test must see it
    with caplog.at_level(logging.WARNING):
        ours = sdpa(input_ids, attention_mask, labels=labels, output_attentions=True)
    theirs = eager(input_ids, attention_mask, labels=labels, output_attentions=True)
    for name in ("encoder_attentions", "decoder_attentions", "cross_attentions"):
        for a, b in zip(getattr(ours, name), getattr(theirs, name), strict=True):
            torch.testing.assert_close(a, b)
            torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))
    assert "`sdpa` attention does not support `output_attentions=True`" in caplog.text


def test_flex_attention_on_cpu_is_refused_clearly(saved):
    _, folder = saved
    model = Model.from_pretrained(folder, attn_implementation="flex_attention").eval()
    input_ids, attention_mask, labels = batch()
    with pytest.raises(NotImplementedError, match="flex_attention' runs on GPU only"):
        model(input_ids, attention_mask, labels=labels)


# --- generation ----------------------------------------------------------------------------------------------------


def test_continuing_from_a_returned_cache_equals_one_longer_generate():
    model = tiny_model(seed=2)
    input_ids, attention_mask, _ = batch(seed=4)
    first = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, min_new_tokens=6,
                           max_new_tokens=6, return_dict_in_generate=True)
    continued = model.generate(input_ids, attention_mask=attention_mask, decoder_input_ids=first.sequences,
                               num_beams=1, min_new_tokens=6, max_new_tokens=6,
                               **{CACHE_NAME: getattr(first, CACHE_NAME)})
    longer = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, min_new_tokens=12,
                            max_new_tokens=12)
    assert continued.shape == (3, 13) and torch.equal(continued, longer)


def test_two_threads_generating_with_different_settings_on_one_model_get_their_own_results():
    """`share_encoder_rows` travels with the call: a thread that starts first (sharing rows) and is held until a
    second thread (not sharing) has finished still decodes with its own setting — as if they ran one after the
    other."""
    model = tiny_model(seed=3)
    input_ids, attention_mask, _ = batch(seed=5)
    kwargs = dict(attention_mask=attention_mask, num_beams=3, max_new_tokens=6, return_dict_in_generate=True)
    rows = lambda out: getattr(out, CACHE_NAME).cross_attention_cache.layers[0].keys  # noqa: E731
    sequential = {share: model.generate(input_ids, share_encoder_rows=share, **kwargs) for share in (True, False)}
    assert rows(sequential[True]).shape[0] == 3   # encoder–decoder K/V once per sentence
    assert rows(sequential[False]).shape[0] == 9  # once per beam

    second_done = threading.Event()
    original = model._prepare_special_tokens

    def hold_the_first_thread(*args, **kw):  # runs before the inputs are expanded for the beams
        if threading.current_thread().name == "first":
            assert second_done.wait(timeout=60)
        return original(*args, **kw)

    model._prepare_special_tokens = hold_the_first_thread
    results = {}

    def run(share):
        results[share] = model.generate(input_ids, share_encoder_rows=share, **kwargs)
        if not share:
            second_done.set()

    threads = [threading.Thread(target=run, args=(True,), name="first"),
               threading.Thread(target=run, args=(False,), name="second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for share in (True, False):
        assert torch.equal(results[share].sequences, sequential[share].sequences)
        assert rows(results[share]).shape == rows(sequential[share]).shape
        assert torch.equal(rows(results[share]), rows(sequential[share]))


@pytest.mark.parametrize("num_beams", [1, 4])
def test_a_forced_target_prefix_is_kept_and_decoding_goes_on_from_it(num_beams):
    model = tiny_model(seed=2)
    input_ids, attention_mask, _ = batch(seed=4)
    prefix = torch.tensor([[1, 5, 6], [1, 7, 8], [1, 9, 9]])
    kwargs = dict(decoder_input_ids=prefix, num_beams=num_beams, max_new_tokens=6, min_new_tokens=6)
    ours = model.generate(input_ids, attention_mask=attention_mask, **kwargs)
    # transformers' classic layout (one encoder row per beam) on the same prefix gives the same result.
    classic = model.generate(input_ids, attention_mask=attention_mask, share_encoder_rows=False, **kwargs)
    assert torch.equal(ours[:, :3], prefix) and torch.equal(ours, classic)
    # Greedy from a prefix is the step-by-step argmax of the full forward.
    if num_beams == 1:
        logits = model(input_ids, attention_mask, decoder_input_ids=ours[:, :-1]).logits
        assert torch.equal(logits[:, 2:].argmax(-1), ours[:, 3:])


def test_generate_from_inputs_embeds_equals_generate_from_ids():
    model = tiny_model(seed=2)
    input_ids, attention_mask, _ = batch(seed=4)
    embeds = model.get_input_embeddings()(input_ids)
    for num_beams in (1, 4):
        assert torch.equal(model.generate(inputs_embeds=embeds, attention_mask=attention_mask, num_beams=num_beams),
                           model.generate(input_ids, attention_mask=attention_mask, num_beams=num_beams))


def test_share_encoder_rows_false_gives_the_classic_layout():
    model = tiny_model(seed=3)
    input_ids, attention_mask, _ = batch(seed=5)
    kwargs = dict(num_beams=4, max_new_tokens=8, return_dict_in_generate=True)
    shared = model.generate(input_ids, attention_mask=attention_mask, **kwargs)
    classic = model.generate(input_ids, attention_mask=attention_mask, share_encoder_rows=False, **kwargs)
    rows = lambda out: getattr(out, CACHE_NAME).cross_attention_cache.layers[0].keys.shape[0]  # noqa: E731
    assert rows(shared) == 3 and rows(classic) == 12  # encoder–decoder K/V per sentence, or per beam
    assert torch.equal(shared.sequences, classic.sequences)
    torch.testing.assert_close(shared.sequences_scores, classic.sequences_scores, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kwargs", [dict(assistant_model="draft"), dict(prompt_lookup_num_tokens=3)],
                         ids=["assisted", "prompt-lookup"])
def test_speculative_decoding_gives_exactly_the_greedy_output(kwargs):
    model = tiny_model(seed=2)
    if kwargs.get("assistant_model") == "draft":
        kwargs = dict(assistant_model=tiny_model(seed=9, d_model=16, encoder_layers=1, decoder_layers=1,
                                                 encoder_attention_heads=2, decoder_attention_heads=2))
    input_ids, attention_mask, _ = batch(seed=4)
    for row in range(2):  # transformers' assisted decoding takes one sentence at a time
        source = dict(input_ids=input_ids[row:row + 1], attention_mask=attention_mask[row:row + 1])
        greedy = model.generate(**source, num_beams=1, min_new_tokens=15, max_new_tokens=15)
        assert torch.equal(model.generate(**source, num_beams=1, min_new_tokens=15, max_new_tokens=15, **kwargs),
                           greedy)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_the_static_cache_gives_identical_outputs(num_beams):
    model = tiny_model(seed=2)
    input_ids, attention_mask, _ = batch(seed=4)
    kwargs = dict(num_beams=num_beams, max_new_tokens=10)
    static = model.generate(input_ids, attention_mask=attention_mask, cache_implementation="static",
                            return_dict_in_generate=True, **kwargs)
    assert type(getattr(static, CACHE_NAME).self_attention_cache).__name__ == "StaticCache"
    assert torch.equal(static.sequences, model.generate(input_ids, attention_mask=attention_mask, **kwargs))


# --- torch.export and torch.compile ------------------------------------------------------------------------------


class Seq2Seq(nn.Module):
    """The teacher-forced forward, as the graph an exporter sees."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, decoder_input_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                          use_cache=False).logits


class DecodingStep(nn.Module):
    """One cached decoding step with the cache as plain tensors: (L, B, h, T, d_k) self-attention and
    encoder–decoder K/V in, the logits and the grown self-attention K/V out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, decoder_input_ids, encoder_hidden_states, attention_mask, keys, values, cross_keys, cross_values):
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        for layer in range(keys.shape[0]):
            cache.self_attention_cache.update(keys[layer], values[layer], layer)
            cache.cross_attention_cache.update(cross_keys[layer], cross_values[layer], layer)
            cache.is_updated[layer] = True
        out = self.model(encoder_outputs=(encoder_hidden_states,), attention_mask=attention_mask,
                         decoder_input_ids=decoder_input_ids, use_cache=True, **{CACHE_NAME: cache})
        grown = getattr(out, CACHE_NAME).self_attention_cache.layers
        return out.logits, torch.stack([layer.keys for layer in grown]), torch.stack([layer.values for layer in grown])


def padded_and_unpadded():
    input_ids, attention_mask, labels = batch()
    return (input_ids, torch.ones_like(attention_mask), labels), (input_ids, attention_mask, labels)


def test_torch_export_of_the_forward_equals_eager_and_keeps_the_padding_mask():
    model = tiny_model(seed=1)
    (ids, full_mask, labels), (_, padded_mask, _) = padded_and_unpadded()
    decoder_input_ids = module.shift_tokens_right(labels, 0, 1)
    # Traced on an unpadded batch: the mask must not be baked in as "nothing padded".
    exported = torch.export.export(Seq2Seq(model), (ids, full_mask, decoder_input_ids)).module()
    for mask in (full_mask, padded_mask):
        torch.testing.assert_close(exported(ids, mask, decoder_input_ids),
                                   model(ids, mask, decoder_input_ids=decoder_input_ids).logits, atol=1e-5, rtol=0)


def test_torch_export_of_a_cached_decoding_step_equals_eager():
    model = tiny_model(seed=1)
    _, (input_ids, attention_mask, labels) = padded_and_unpadded()
    decoder_input_ids = module.shift_tokens_right(labels, 0, 1)
    encoder_outputs = model.get_encoder()(input_ids, attention_mask)
    prefix = model(encoder_outputs=encoder_outputs, attention_mask=attention_mask,
                   decoder_input_ids=decoder_input_ids[:, :3], use_cache=True)
    cache = getattr(prefix, CACHE_NAME)
    stack = lambda layers, part: torch.stack([getattr(layer, part) for layer in layers]).contiguous()  # noqa: E731
    inputs = (decoder_input_ids[:, 3:4], encoder_outputs.last_hidden_state, attention_mask,
              stack(cache.self_attention_cache.layers, "keys"), stack(cache.self_attention_cache.layers, "values"),
              stack(cache.cross_attention_cache.layers, "keys"), stack(cache.cross_attention_cache.layers, "values"))
    exported = torch.export.export(DecodingStep(model), inputs).module()
    logits, keys, _ = exported(*inputs)
    full = model(input_ids, attention_mask, decoder_input_ids=decoder_input_ids[:, :4]).logits
    torch.testing.assert_close(logits[:, 0], full[:, 3], atol=1e-5, rtol=0)
    assert keys.shape[-2] == 4


def test_torch_compile_fullgraph_runs_and_equals_eager():
    """`fullgraph=True` fails on any graph break (data-dependent Python branches); the `aot_eager` backend traces
    forward and backward graphs like inductor does, without inductor's minute of C++ code generation on 2 cores."""
    model = tiny_model(seed=1)
    (ids, full_mask, labels), (_, padded_mask, _) = padded_and_unpadded()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for mask in (full_mask, padded_mask):
        torch.testing.assert_close(compiled(input_ids=ids, attention_mask=mask, labels=labels).logits,
                                   model(ids, mask, labels=labels).logits, atol=1e-5, rtol=0)


def test_generate_compiles_the_static_cache_step_fullgraph_and_decodes_as_eager():
    """transformers' own compile path (`compile_config`, CPU allowed with `_compile_all_devices`): greedy decoding with
    a static cache runs every step after the first through one `fullgraph=True` graph (the cache's length is a
    tensor there: positions and the causal mask are computed from it, not from a Python int), on a padded batch,
    with the source + 50 length rule, and gives eager's tokens. `aot_eager` traces like inductor without its C++
    code generation."""
    from transformers import CompileConfig

    model = tiny_model(seed=2)
    input_ids, attention_mask, _ = batch(seed=4)
    assert not attention_mask.all()  # a padded row
    config = CompileConfig(fullgraph=True, backend="aot_eager")
    config._compile_all_devices = True  # transformers compiles on CUDA-like devices only unless told
    # one row first, then the padded batch: a second shape recompiles, and must not branch on the cache's length
    for ids, mask in ((input_ids[:1, :5], attention_mask[:1, :5]), (input_ids, attention_mask)):
        eager = model.generate(ids, attention_mask=mask, num_beams=1)
        compiled = model.generate(ids, attention_mask=mask, num_beams=1, cache_implementation="static",
                                  compile_config=config)
        assert hasattr(model, "_compiled_call")  # the compiled step was used, not eager's fallback
        assert eager.shape[1] > 2 and torch.equal(compiled, eager)


def test_bad_ids_are_still_named_in_eager_mode():
    model = tiny_model()
    input_ids, attention_mask, labels = batch()
    input_ids[1, 2] = 999
    with pytest.raises(ValueError, match="token id 999 is outside the vocabulary"):
        model(input_ids, attention_mask, labels=labels)
