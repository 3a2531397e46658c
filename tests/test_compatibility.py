"""The model on the transformers release that is installed: the cache keyword, strict keywords, the tested range.

transformers 5.24 renamed the cache argument (`past_key_values` → `cache`); a model that swallowed the new name in
`**kwargs` decoded every step without its cache and produced garbage with no error. CI runs this suite on the locked,
the oldest and the newest releases (`make test`, `make test-oldest`, `make test-latest`).
"""

import inspect
import logging
import re
import tomllib
from pathlib import Path

import pytest
import torch
import transformers
from packaging.specifiers import SpecifierSet

from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration, VanillaTransformerModel
from vanilla_transformer.modeling import modeling_vanilla_transformer as module
from vanilla_transformer.modeling.modeling_vanilla_transformer import CACHE_NAME, TESTED_TRANSFORMERS

from support.models import batch, tiny_model

ROOT = Path(__file__).resolve().parents[1]


def record_decoder_steps(monkeypatch):
    """(new positions, cached positions) of every decoder call."""
    steps = []
    forward = module.VanillaTransformerDecoder.forward

    def recording(self, input_ids=None, memory=None, memory_mask=None, attention_mask=None, inputs_embeds=None,
                  cache=None, *args, **kwargs):
        length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        steps.append((length, cache.get_seq_length() if cache is not None else None))
        return forward(self, input_ids, memory, memory_mask, attention_mask, inputs_embeds, cache, *args, **kwargs)

    monkeypatch.setattr(module.VanillaTransformerDecoder, "forward", recording)
    return steps


@pytest.mark.parametrize("num_beams", [1, 4])
def test_every_decoding_step_runs_on_the_cache_generate_built(monkeypatch, num_beams):
    model = tiny_model(seed=2)
    input_ids, attention_mask, _ = batch(seed=4)
    steps = record_decoder_steps(monkeypatch)
    kwargs = dict(num_beams=num_beams, min_new_tokens=20, max_new_tokens=20)
    cached = model.generate(input_ids, attention_mask=attention_mask, **kwargs)
    # One new token per step on top of all the tokens before it: the cache is used and grows.
    assert steps == [(1, t) for t in range(20)]
    steps.clear()
    uncached = model.generate(input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    assert steps == [(t + 1, None) for t in range(20)]
    assert cached.shape == (input_ids.shape[0], 21) and torch.equal(cached, uncached)


def test_forward_takes_the_installed_cache_keyword_and_nothing_unknown():
    model = tiny_model()
    input_ids, attention_mask, labels = batch()
    parameters = inspect.signature(model.forward).parameters
    assert CACHE_NAME in parameters and not any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    assert CACHE_NAME in inspect.signature(VanillaTransformerModel.forward).parameters
    # transformers' generate passes the cache under the name its own outputs use.
    assert CACHE_NAME in transformers.modeling_outputs.Seq2SeqLMOutput.__dataclass_fields__
    with pytest.raises(TypeError, match="unexpected keyword argument 'decoder_position_ids'"):
        model(input_ids, attention_mask, labels=labels, decoder_position_ids=None)
    with pytest.raises(TypeError, match="unexpected keyword argument 'cache_params'"):
        model.model(input_ids, attention_mask, decoder_input_ids=labels, cache_params=None)


def test_the_other_release_cache_keyword(caplog):
    """From 5.24, `past_key_values` still works with a deprecation warning (as in transformers' own models);
    before 5.24, `cache` is unknown like any other keyword."""
    model = tiny_model()
    input_ids, attention_mask, labels = batch()
    if CACHE_NAME == "past_key_values":
        with pytest.raises(TypeError, match="unexpected keyword argument 'cache'"):
            model(input_ids, attention_mask, labels=labels, cache=None)
        return
    encoder_outputs = model.get_encoder()(input_ids, attention_mask)
    first = model(attention_mask=attention_mask, encoder_outputs=encoder_outputs, decoder_input_ids=labels[:, :2])
    with caplog.at_level(logging.WARNING):
        old = model(attention_mask=attention_mask, encoder_outputs=encoder_outputs, decoder_input_ids=labels[:, 2:3],
                    past_key_values=first.cache)
    assert "`past_key_values` is deprecated" in caplog.text
    assert old.cache is first.cache and old.cache.get_seq_length() == 3
    with pytest.raises(TypeError, match="not also as `past_key_values`"):
        model(input_ids, decoder_input_ids=labels, cache=None, past_key_values=None)


def test_generate_gives_no_deprecation_warning(capfd):
    """Our own calls use the installed release's names: transformers warns about none of them."""
    transformers.logging.set_verbosity_warning()
    for cached in (transformers.utils.logging.warning_once, logging.Logger.warning_once):
        getattr(cached, "cache_clear", lambda: None)()
    model = tiny_model(seed=1)
    input_ids, attention_mask, _ = batch()
    for kwargs in (dict(num_beams=1), dict(num_beams=4, num_return_sequences=2),
                   dict(do_sample=True, num_beams=1, num_return_sequences=2)):
        output = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=6,
                                return_dict_in_generate=True, **kwargs)
        assert getattr(output, CACHE_NAME).get_seq_length() > 0
    assert "deprecat" not in capfd.readouterr().err.lower()


def test_an_untested_transformers_release_is_named_in_one_warning(caplog):
    oldest, newest = TESTED_TRANSFORMERS
    major, minor = (int(x) for x in newest.split(".")[:2])
    with caplog.at_level(logging.WARNING, logger=module.__name__):
        assert not module.warn_if_untested_transformers(oldest)
        assert not module.warn_if_untested_transformers(newest)
        assert not module.warn_if_untested_transformers(f"{major}.{minor}.7")
        assert caplog.text == ""
        assert module.warn_if_untested_transformers(f"{major}.{minor + 1}.0")
    assert f"transformers {major}.{minor + 1}.0 is installed" in caplog.text
    assert f"tested with transformers {oldest} to {newest}" in caplog.text
    assert module.warn_if_untested_transformers("5.22.2")


def test_declared_range_and_lock_match_the_tested_releases():
    oldest, newest = TESTED_TRANSFORMERS
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirement = next(d for d in project["dependencies"] if re.match(r"transformers\b", d))
    major, minor = (int(x) for x in newest.split(".")[:2])
    assert SpecifierSet(requirement.removeprefix("transformers")) == SpecifierSet(f">={oldest},<{major}.{minor + 1}")
    locked = re.search(r"^transformers==(\S+)$", (ROOT / "requirements.lock").read_text(), re.M).group(1)
    assert locked == newest
    torch_pin = re.search(r"^torch==(\S+)$", (ROOT / "requirements.lock").read_text(), re.M)
    assert torch_pin and torch_pin.group(1).startswith("2.13.0")


@pytest.mark.parametrize("hypotheses, ratio, warned", [
    (["the the the the the the the the the the the the"] * 2, 2.0, "repeated tokens"),  # 24 tokens for 12
    (["the"] * 2, 2 / 12, "empty or truncated outputs"),
    (["a cat sat on the mat"] * 2, 1.0, None),
])
def test_a_degenerate_decoder_is_named_next_to_bleu(caplog, hypotheses, ratio, warned):
    """What the broken cache produced on transformers 5.24 (one token repeated to the length limit) must not pass
    as a low BLEU: the length ratio is reported, and a loud warning says what it means."""
    from vanilla_transformer.training.evaluation import score

    references = ["a cat sat on the mat", "the dog ran in the park"]
    with caplog.at_level(logging.WARNING):
        result = score(hypotheses, references, where="test")
    assert result["length_ratio"] == pytest.approx(ratio)
    if warned:
        assert f"WARNING (test): the translations are {ratio:.2f} times as long" in caplog.text
        assert warned in caplog.text
    else:
        assert caplog.text == ""
