"""Saved folders: self-contained code for trust_remote_code, safetensors only, clear errors on damaged input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM, MarianConfig, MarianMTModel

from vanilla_transformer.configuration import VanillaTransformerConfig
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration, VanillaTransformerModel
from vanilla_transformer.modeling.modeling_vanilla_transformer import split_fused_projections, write_code_files


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


# --- folders saved by earlier versions (fused attention projections) ----------------------------------------------

OLD_FOLDER = Path(__file__).resolve().parent / "fixtures" / "folder_7cb0c75"  # made by make_folder_7cb0c75.py


@pytest.mark.parametrize("model_class", [VanillaTransformerForConditionalGeneration, VanillaTransformerModel])
def test_a_folder_saved_with_fused_projections_loads_split_and_computes_what_the_old_code_did(tmp_path, model_class):
    expected = load_file(OLD_FOLDER / "expected.safetensors")
    stored = load_file(OLD_FOLDER / "model.safetensors")
    assert "model.encoder.layers.0.self_attn.qkv_proj.weight" in stored  # the old layout, really
    model, info = model_class.from_pretrained(OLD_FOLDER, output_loading_info=True)  # strict: nothing missing
    assert not info["missing_keys"] and not info["unexpected_keys"]
    prefix = "model." if model_class is VanillaTransformerForConditionalGeneration else ""
    core = model.model if prefix else model
    for stack in ("encoder", "decoder"):
        for i, layer in enumerate(getattr(core, stack).layers):
            for kind in ("weight", "bias"):
                q, k, v = stored[f"model.{stack}.layers.{i}.self_attn.qkv_proj.{kind}"].chunk(3)
                attention = layer.self_attn
                for part, projection in zip((q, k, v), (attention.q_proj, attention.k_proj, attention.v_proj)):
                    assert torch.equal(getattr(projection, kind), part)
                if stack == "decoder":
                    k, v = stored[f"model.decoder.layers.{i}.cross_attn.kv_proj.{kind}"].chunk(2)
                    assert torch.equal(getattr(layer.cross_attn.k_proj, kind), k)
                    assert torch.equal(getattr(layer.cross_attn.v_proj, kind), v)
    inputs = dict(attention_mask=expected["attention_mask"], decoder_input_ids=expected["decoder_input_ids"])
    with torch.no_grad():
        output = model(expected["input_ids"], **inputs)
    if prefix:
        torch.testing.assert_close(output.logits, expected["logits"], rtol=0, atol=1e-6)
        generated = model.generate(expected["input_ids"], attention_mask=expected["attention_mask"], num_beams=2,
                                   max_new_tokens=5)
        assert torch.equal(generated, expected["generated"])
    else:
        full = VanillaTransformerForConditionalGeneration.from_pretrained(OLD_FOLDER)
        torch.testing.assert_close(full.lm_head(output.last_hidden_state), expected["logits"], rtol=0, atol=1e-6)
    # Saved again: the current names, and the same model.
    model.save_pretrained(tmp_path / "again")
    names = set(load_file(tmp_path / "again" / "model.safetensors"))
    assert f"{prefix}encoder.layers.0.self_attn.q_proj.weight" in names
    assert not any("qkv_proj" in name or "kv_proj" in name for name in names)
    again = model_class.from_pretrained(tmp_path / "again")
    assert all(torch.equal(again.state_dict()[key], tensor) for key, tensor in model.state_dict().items())


def test_state_dicts_of_earlier_versions_are_split_for_checkpoint_tools():
    """`split_fused_projections` (checkpoint averaging and --resume read weight files by name) gives the state dict
    `from_pretrained` loads from the same old file."""
    model = VanillaTransformerForConditionalGeneration.from_pretrained(OLD_FOLDER)
    split = split_fused_projections(load_file(OLD_FOLDER / "model.safetensors"))
    current = {key: tensor for key, tensor in model.state_dict().items() if key != "lm_head.weight"}
    assert split.keys() == current.keys()
    assert all(torch.equal(split[key], tensor) for key, tensor in current.items())
    assert split_fused_projections(current).keys() == current.keys()  # the current layout passes unchanged


def test_an_old_folder_loads_with_trust_remote_code_without_the_package(tmp_path):
    """The code files a folder carries today split an old folder's weights too (`trust_remote_code` loading)."""
    folder = tmp_path / "old"
    shutil.copytree(OLD_FOLDER, folder)
    write_code_files(folder)
    script = f"""
import sys
sys.modules["vanilla_transformer"] = None
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM
model = AutoModelForSeq2SeqLM.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
expected = load_file({str(folder / 'expected.safetensors')!r})
logits = model(expected["input_ids"], attention_mask=expected["attention_mask"],
               decoder_input_ids=expected["decoder_input_ids"]).logits
torch.testing.assert_close(logits, expected["logits"], rtol=0, atol=1e-6)
print("same logits")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "same logits" in result.stdout
