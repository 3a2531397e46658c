"""LoRA fine-tuning with peft, as users do it on Marian and BART: the usual recipes adapt the queries and values of
every attention (self and cross), Seq2SeqTrainer trains the adapter, and the adapter and the merged model save and
load with the same outputs."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

# The model package first and peft second: peft's default targets must be registered whatever the import order
# (the other order runs in a subprocess below).
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration

import peft  # noqa: E402  (after the model package on purpose)
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

from support.models import batch, tiny_config, tiny_model  # noqa: E402
from support.seq2seq import PAIRS, base_dir, tokenized, tokenizer  # noqa: E402,F401  (fixtures)


def adapted_modules(model) -> set[str]:
    return {name.removeprefix("base_model.model.") for name, module in model.named_modules()
            if isinstance(module, peft.tuners.lora.LoraLayer)}


def queries_and_values(config) -> set[str]:
    names = set()
    for stack, count, attentions in (("encoder", config.encoder_layers, ("self_attn",)),
                                     ("decoder", config.decoder_layers, ("self_attn", "cross_attn"))):
        for i in range(count):
            names |= {f"model.{stack}.layers.{i}.{attention}.{projection}"
                      for attention in attentions for projection in ("q_proj", "v_proj")}
    return names


@pytest.mark.parametrize("target_modules", [None, ["q_proj", "v_proj"]], ids=["default", "marian-recipe"])
def test_lora_adapts_queries_and_values_of_every_attention(target_modules):
    config = tiny_config()
    model = get_peft_model(tiny_model(), LoraConfig(task_type="SEQ_2_SEQ_LM", target_modules=target_modules, r=4))
    expected = queries_and_values(config)
    assert len(expected) == 2 * (config.encoder_layers + 2 * config.decoder_layers)
    assert adapted_modules(model) == expected
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == len(expected) * 4 * (config.d_model + config.d_model)  # A: r × d, B: d × r


def test_lora_defaults_hold_when_peft_is_imported_before_the_model():
    script = """
import peft
from peft import LoraConfig, get_peft_model
from vanilla_transformer.configuration import VanillaTransformerConfig
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration
model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny(encoder_layers=1, decoder_layers=1))
model = get_peft_model(model, LoraConfig(task_type="SEQ_2_SEQ_LM"))
print(sorted(name for name, m in model.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    config = tiny_config(encoder_layers=1, decoder_layers=1)
    assert {name.removeprefix("base_model.model.") for name in eval(result.stdout)} == queries_and_values(config)


@pytest.fixture(scope="module")
def lora(tmp_path_factory, base_dir, tokenizer):  # noqa: F811
    """A LoRA adapter trained with Seq2SeqTrainer on PAIRS (defaults: q_proj, v_proj), its loss before and after."""
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(base_dir),
                           LoraConfig(task_type="SEQ_2_SEQ_LM", r=8, lora_alpha=16, lora_dropout=0.0))
    output_dir = tmp_path_factory.mktemp("lora")
    args = Seq2SeqTrainingArguments(
        output_dir=str(output_dir), max_steps=25, per_device_train_batch_size=len(PAIRS),
        per_device_eval_batch_size=len(PAIRS), learning_rate=1e-2, lr_scheduler_type="constant", warmup_steps=0,
        save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True)
    data = tokenized(tokenizer)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=data, eval_dataset=data,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), processing_class=tokenizer)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    model.eval()
    source = tokenizer([s for s, _ in PAIRS], return_tensors="pt", padding=True)
    return model, before, after, source, output_dir


def outputs(model, source):
    with torch.no_grad():
        logits = model(**source, decoder_input_ids=source["input_ids"][:, :6]).logits
        generated = model.generate(**source, num_beams=2, max_new_tokens=10)
    return logits, generated


def test_lora_through_seq2seq_trainer_lowers_the_loss_and_leaves_the_base_weights(lora, base_dir):  # noqa: F811
    model, before, after, _, _ = lora
    assert after < 0.8 * before
    base = AutoModelForSeq2SeqLM.from_pretrained(base_dir).state_dict()
    for name, tensor in model.get_base_model().state_dict().items():
        if "lora_" not in name:
            assert torch.equal(tensor, base[name.replace(".base_layer", "")]), name


def test_the_adapter_saves_and_loads_onto_the_base_model_with_identical_outputs(lora, base_dir, tmp_path):  # noqa: F811
    model, _, _, source, _ = lora
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()
    loaded = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(base_dir), tmp_path / "adapter").eval()
    for ours, theirs in zip(outputs(model, source), outputs(loaded, source), strict=True):
        assert torch.equal(ours, theirs)


def test_merged_model_equals_the_adapted_one_and_saves_as_a_plain_folder(lora, tmp_path):
    model, _, _, source, _ = lora
    adapted_logits, adapted_generated = outputs(model, source)
    merged = copy.deepcopy(model).merge_and_unload()
    assert type(merged) is VanillaTransformerForConditionalGeneration and not adapted_modules(merged)
    merged_logits, merged_generated = outputs(merged, source)
    torch.testing.assert_close(merged_logits, adapted_logits, rtol=0, atol=1e-5)
    assert torch.equal(merged_generated, adapted_generated)

    merged.save_pretrained(tmp_path / "merged")
    assert not any("adapter" in path.name for path in (tmp_path / "merged").iterdir())
    torch.save({"source": dict(source), "logits": merged_logits}, tmp_path / "expected.pt")
    script = f"""
import sys
sys.modules["peft"] = None  # loads without peft
import torch
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration
model = VanillaTransformerForConditionalGeneration.from_pretrained({str(tmp_path / 'merged')!r}).eval()
expected = torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True)
source = expected["source"]
logits = model(**source, decoder_input_ids=source["input_ids"][:, :6]).logits
torch.testing.assert_close(logits, expected["logits"], rtol=0, atol=1e-5)
print("same logits")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "same logits" in result.stdout


def test_gradient_reaches_only_the_adapters():
    model = get_peft_model(tiny_model(), LoraConfig(task_type="SEQ_2_SEQ_LM", r=4))
    model.train()
    input_ids, attention_mask, labels = batch()
    model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all("lora_" in name for name in with_grad)
    assert {name.rsplit(".lora_", 1)[0].removeprefix("base_model.model.") for name in with_grad} == \
        queries_and_values(tiny_config())
