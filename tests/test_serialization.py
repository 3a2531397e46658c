"""Saved folders: self-contained code for trust_remote_code, safetensors only, clear errors on damaged input."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, MarianConfig, MarianMTModel

from vanilla_transformer.configuration import VanillaTransformerConfig
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration


def tiny_saved(path):
    torch.manual_seed(0)
    config = VanillaTransformerConfig.tiny(vocab_size=30, d_model=16, encoder_layers=1, decoder_layers=1,
                                           encoder_attention_heads=2, decoder_attention_heads=2,
                                           encoder_ffn_dim=32, decoder_ffn_dim=32)
    model = VanillaTransformerForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    return model


def test_saved_folder_loads_with_trust_remote_code_without_the_package(tmp_path):
    model = tiny_saved(tmp_path / "model")
    ids = torch.tensor([[5, 6, 7, 8, 2]])
    torch.save(model(ids, decoder_input_ids=ids).logits, tmp_path / "expected.pt")
    # The reference translation is decoded without a cache, so a loaded model whose cache is not used (as when a
    # transformers release renames the cache argument) cannot agree with it by sharing the same defect.
    reference = model.generate(ids, num_beams=4, min_new_tokens=12, max_new_tokens=12, use_cache=False)
    torch.save(reference, tmp_path / "reference.pt")
    assert json.loads((tmp_path / "model" / "config.json").read_text())["auto_map"]["AutoModelForSeq2SeqLM"] == (
        "modeling_vanilla_transformer.VanillaTransformerForConditionalGeneration")
    script = f"""
import sys
sys.modules["vanilla_transformer"] = None  # make the package unimportable in this process
import torch
from transformers import AutoModelForSeq2SeqLM
model = AutoModelForSeq2SeqLM.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
ids = torch.tensor([[5, 6, 7, 8, 2]])
expected = torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True)
torch.testing.assert_close(model(ids, decoder_input_ids=ids).logits, expected, rtol=0, atol=1e-6)  # threads may differ
print("same logits")
translation = model.generate(ids, num_beams=4, min_new_tokens=12, max_new_tokens=12)
assert torch.equal(translation, torch.load({str(tmp_path / 'reference.pt')!r}, weights_only=True)), translation
print("same translation")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "same logits" in result.stdout and "same translation" in result.stdout


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_safetensors_is_named_in_the_error(tmp_path, damage):
    tiny_saved(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * 64)
    with pytest.raises(OSError, match="model.safetensors"):
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path)


def test_config_of_another_model_type_is_refused(tmp_path):
    config = MarianConfig(vocab_size=30, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, pad_token_id=29,
                          decoder_start_token_id=29, eos_token_id=0, forced_eos_token_id=0)
    MarianMTModel(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'marian'"):
        VanillaTransformerForConditionalGeneration.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'marian'"):
        VanillaTransformerConfig.from_pretrained(tmp_path)


def test_pickle_weights_need_an_explicit_opt_in(tmp_path):
    model = tiny_saved(tmp_path)
    weights = tmp_path / "model.safetensors"
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(OSError):
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, use_safetensors=False)
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight)
