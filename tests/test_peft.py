"""LoRA fine-tuning with peft, as users do it on Marian and BART: `target_modules=["q_proj", "v_proj"]` adapts the
queries and values of every attention (self and cross), Seq2SeqTrainer trains the adapter only, and the adapter and
the merged model save and load with the same outputs.

peft has no way for a model outside its tables to declare default targets (it looks `model_type` up in its own
dictionaries), and the model file, which ships in every saved folder, patches no library on import: `target_modules`
is named, as the README shows."""

from __future__ import annotations

import copy
import itertools
import subprocess
import sys

import peft
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration

from support.models import batch, tiny_config, tiny_model
from support.seq2seq import PAIRS, base_dir, tokenized, tokenizer  # noqa: F401  (fixtures)

RECIPE = ["q_proj", "v_proj"]  # the LoRA recipe of the Marian/BART fine-tuning guides


def adapted_modules(model) -> set[str]:
    return {name.removeprefix("base_model.model.") for name, module in model.named_modules()
            if isinstance(module, peft.tuners.lora.LoraLayer)}


def projections(config, names=("q_proj", "v_proj")) -> set[str]:
    """The named projections of every attention: encoder self-attention, decoder self- and cross-attention."""
    found = set()
    for stack, count, attentions in (("encoder", config.encoder_layers, ("self_attn",)),
                                     ("decoder", config.decoder_layers, ("self_attn", "cross_attn"))):
        for i in range(count):
            found |= {f"model.{stack}.layers.{i}.{attention}.{projection}"
                      for attention in attentions for projection in names}
    return found


def feed_forwards(config) -> set[str]:
    return {f"model.{stack}.layers.{i}.ffn.{fc}" for stack, count in (("encoder", config.encoder_layers),
                                                                      ("decoder", config.decoder_layers))
            for i in range(count) for fc in ("fc1", "fc2")}


ATTENTION = ["q_proj", "k_proj", "v_proj", "out_proj"]


@pytest.mark.parametrize("target_modules", [RECIPE, ATTENTION, "all-linear"],
                         ids=["queries-values", "all-attention", "all-linear"])
def test_lora_adapts_the_named_projections_of_every_attention(target_modules):
    config = tiny_config()
    model = get_peft_model(tiny_model(), LoraConfig(task_type="SEQ_2_SEQ_LM", target_modules=target_modules, r=4))
    if target_modules == RECIPE:
        expected = projections(config)
        assert len(expected) == 2 * (config.encoder_layers + 2 * config.decoder_layers)
    elif target_modules == ATTENTION:
        expected = projections(config, ATTENTION)
    else:  # every linear layer but the output projection (tied to the embedding), as peft does for every model
        expected = projections(config, ATTENTION) | feed_forwards(config)
    assert adapted_modules(model) == expected
    trainable = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    if target_modules == RECIPE:
        assert sum(trainable.values()) == len(expected) * 4 * (config.d_model + config.d_model)  # A: r×d, B: d×r


def test_lora_without_target_modules_asks_for_them():
    """peft has no default targets for this model type, and nothing adds them behind its back."""
    with pytest.raises(ValueError, match="target_modules"):
        get_peft_model(tiny_model(), LoraConfig(task_type="SEQ_2_SEQ_LM", r=4))


def test_importing_or_loading_the_model_leaves_the_import_system_and_peft_untouched(tmp_path):
    """The model file ships in every saved folder (`trust_remote_code`): importing it, from the package or from a
    folder, installs no import hook and changes none of peft's default-target tables, whichever is imported first."""
    tiny_model().save_pretrained(tmp_path)
    script = f"""
import sys

def snapshot():
    constants = sys.modules.get("peft.utils.constants")
    tables = {{}} if constants is None else {{
        name: dict(value) for name, value in vars(constants).items()
        if name.startswith("TRANSFORMERS_MODELS_TO_") and isinstance(value, dict)}}
    return list(sys.meta_path), sys.path_hooks[:], tables

order, source = sys.argv[1:]
if source == "folder":
    sys.modules["vanilla_transformer"] = None  # the flat copy in the folder, as where the package is not installed
import transformers  # noqa: F401  (installs a finder of its own: the baseline is taken after it)
if order == "peft-first":
    import peft.utils.constants
before = snapshot()
if source == "package":
    import vanilla_transformer.modeling
else:
    from transformers import AutoModelForSeq2SeqLM
    model = AutoModelForSeq2SeqLM.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
after = snapshot()
assert after[0] == before[0], ("sys.meta_path changed", before[0], after[0])
assert after[1] == before[1], "sys.path_hooks changed"
assert after[2] == before[2], "peft's tables changed"
if order == "model-first":  # nothing waits for peft to be imported
    import peft.utils.constants
    after = snapshot()
assert after[2] and not any("vanilla_transformer" in table for table in after[2].values())
print("untouched", len(after[2]))
"""
    for order, source in itertools.product(("peft-first", "model-first"), ("package", "folder")):
        result = subprocess.run([sys.executable, "-c", script, order, source], capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, (order, source, result.stderr[-3000:])
        assert "untouched" in result.stdout and int(result.stdout.split()[-1]) > 0, result.stdout


@pytest.fixture(scope="module")
def lora(tmp_path_factory, base_dir, tokenizer):  # noqa: F811
    """A LoRA adapter (q_proj, v_proj) trained with Seq2SeqTrainer on PAIRS, its loss before and after."""
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(base_dir),
                           LoraConfig(task_type="SEQ_2_SEQ_LM", target_modules=RECIPE, r=8, lora_alpha=16,
                                      lora_dropout=0.0))
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
    model = get_peft_model(tiny_model(), LoraConfig(task_type="SEQ_2_SEQ_LM", target_modules=RECIPE, r=4))
    model.train()
    input_ids, attention_mask, labels = batch()
    model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all("lora_" in name for name in with_grad)
    assert {name.rsplit(".lora_", 1)[0].removeprefix("base_model.model.") for name in with_grad} == \
        projections(tiny_config())
