"""The model in transformers' ecosystem: the Auto classes, `pipeline("translation")`, and `Seq2SeqTrainer`
fine-tuning with `DataCollatorForSeq2Seq`, `predict_with_generate` and sacrebleu metrics (tiny models, CPU)."""

from __future__ import annotations

import copy
import csv
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import sacrebleu
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    GenerationConfig,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    pipeline,
)

from vanilla_transformer.configuration import VanillaTransformerConfig
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration, VanillaTransformerModel
from vanilla_transformer.modeling.modeling_vanilla_transformer import AUTO_MAP
from vanilla_transformer.modeling.translation_pipeline import TranslationPipeline
from support.seq2seq import MAX_LENGTH, PAIRS, base_dir, tokenized, tokenizer  # noqa: F401  (fixtures)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "finetune_with_trainer.py"
CODE_FILES = ("configuration_vanilla_transformer.py", "modeling_vanilla_transformer.py")
STEPS = 60


def bleu_metric(tokenizer):
    """`compute_metrics` for predict_with_generate: corpus BLEU of the decoded predictions against the labels."""
    def compute_metrics(prediction):
        predictions = np.where(prediction.predictions < 0, tokenizer.pad_token_id, prediction.predictions)
        labels = np.where(prediction.label_ids < 0, tokenizer.pad_token_id, prediction.label_ids)
        hypotheses = tokenizer.batch_decode(predictions, skip_special_tokens=True)
        references = tokenizer.batch_decode(labels, skip_special_tokens=True)
        return {"bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score}
    return compute_metrics


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, base_dir, tokenizer):
    """Seq2SeqTrainer memorises PAIRS in STEPS updates; every generation config `generate` resolves is recorded."""
    model = AutoModelForSeq2SeqLM.from_pretrained(base_dir)
    resolved = []
    original = model._prepare_generation_config

    def spy(generation_config, **kwargs):  # what generate() decodes with, after merging config and call kwargs
        config, model_kwargs = original(generation_config, **kwargs)
        resolved.append(copy.deepcopy(config))
        return config, model_kwargs

    model._prepare_generation_config = spy
    output_dir = tmp_path_factory.mktemp("trainer")
    args = Seq2SeqTrainingArguments(
        output_dir=str(output_dir), max_steps=STEPS, per_device_train_batch_size=len(PAIRS),
        per_device_eval_batch_size=len(PAIRS), learning_rate=3e-3, lr_scheduler_type="constant", warmup_steps=0,
        logging_steps=10, save_steps=STEPS // 2, predict_with_generate=True, report_to="none", use_cpu=True, seed=0,
        disable_tqdm=True)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=tokenized(tokenizer),
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), processing_class=tokenizer,
                             compute_metrics=bleu_metric(tokenizer))
    trainer.train()
    prediction = trainer.predict(tokenized(tokenizer))
    trainer.save_model(output_dir / "final")
    return SimpleNamespace(trainer=trainer, model=model, prediction=prediction, resolved=resolved,
                           resolved_by_predict=list(resolved), output_dir=output_dir, final_dir=output_dir / "final")


# ---------------------------------------------------------------------------------------------------------------------
# Auto classes and pipeline
# ---------------------------------------------------------------------------------------------------------------------


def test_auto_classes_resolve_on_a_saved_folder(base_dir, tokenizer):
    config = AutoConfig.from_pretrained(base_dir)
    assert type(config) is VanillaTransformerConfig and config.d_model == 64 and config.vocab_size == len(tokenizer)
    seq2seq = AutoModelForSeq2SeqLM.from_pretrained(base_dir)
    assert type(seq2seq) is VanillaTransformerForConditionalGeneration
    base, info = AutoModel.from_pretrained(base_dir, output_loading_info=True)
    assert type(base) is VanillaTransformerModel
    assert not info["missing_keys"] and not info["mismatched_keys"]
    for name, tensor in seq2seq.model.state_dict().items():  # AutoModel got the trained encoder–decoder weights
        assert torch.equal(base.state_dict()[name], tensor), name

    loaded = AutoTokenizer.from_pretrained(base_dir)
    sources = [source for source, _ in PAIRS]
    assert loaded(sources)["input_ids"] == tokenizer(sources)["input_ids"]
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id, loaded.unk_token_id) == (0, 1, 2, 3)


def test_translation_pipeline_translates_like_generate(finetuned, tokenizer):
    translator = pipeline("translation", model=str(finetuned.final_dir), device="cpu")
    assert isinstance(translator, TranslationPipeline)
    model, loaded_tokenizer = translator.model, translator.tokenizer
    sources = [source for source, _ in PAIRS]

    def generated(source, **kwargs):
        output = model.generate(**loaded_tokenizer(source, return_tensors="pt"), **kwargs)
        return loaded_tokenizer.decode(output[0], skip_special_tokens=True)

    outputs = translator(sources)
    assert all(set(output) == {"translation_text"} and isinstance(output["translation_text"], str)
               for output in outputs)
    assert [output["translation_text"] for output in outputs] == [generated(source) for source in sources]
    assert [output["translation_text"] for output in outputs] == [target for _, target in PAIRS]  # memorised
    assert translator(sources[0]) == [{"translation_text": PAIRS[0][1]}]  # one string in, a list of one dict out
    # Generation parameters of the call reach generate() like generate's own kwargs.
    short = translator(sources[-1], num_beams=1, max_new_tokens=3)[0]["translation_text"]
    assert short == generated(sources[-1], num_beams=1, max_new_tokens=3)
    assert PAIRS[-1][1].startswith(short) and len(loaded_tokenizer(short, add_special_tokens=False)["input_ids"]) == 3


# ---------------------------------------------------------------------------------------------------------------------
# Seq2SeqTrainer
# ---------------------------------------------------------------------------------------------------------------------


def test_trainer_fine_tuning_lowers_the_loss(finetuned):
    losses = [entry["loss"] for entry in finetuned.trainer.state.log_history if "loss" in entry]
    assert len(losses) == STEPS // 10
    assert losses[-1] < losses[0] / 10, losses
    assert finetuned.prediction.metrics["test_loss"] < losses[0] / 10


def test_trainer_generates_with_the_models_generation_config(finetuned, tokenizer):
    assert finetuned.resolved_by_predict, "generate() was never called"
    for config in finetuned.resolved_by_predict:
        assert (config.num_beams, config.length_penalty, config.max_length) == (4, 0.6, MAX_LENGTH)
    predictions = np.where(finetuned.prediction.predictions < 0, tokenizer.pad_token_id,
                           finetuned.prediction.predictions)
    hypotheses = tokenizer.batch_decode(predictions, skip_special_tokens=True)
    assert hypotheses == [target for _, target in PAIRS]
    assert finetuned.prediction.metrics["test_bleu"] > 99
    long_target = len(tokenizer(PAIRS[-1][1])["input_ids"])
    assert long_target > 20
    assert int((predictions[-1] != tokenizer.pad_token_id).sum()) >= long_target  # not cut at 20 tokens


def test_trainer_without_a_length_in_the_generation_config_is_not_stuck_at_20_tokens(finetuned, tokenizer):
    """transformers' default max_length is 20; the model's generate() applies §6.1 (source length + 50) instead."""
    model = finetuned.model
    saved = model.generation_config
    model.generation_config = GenerationConfig(num_beams=4, length_penalty=0.6, bos_token_id=1, eos_token_id=2,
                                               pad_token_id=0, decoder_start_token_id=1)
    try:
        prediction = finetuned.trainer.predict(tokenized(tokenizer, PAIRS[-1:]))
    finally:
        model.generation_config = saved
    assert finetuned.resolved[-1].max_new_tokens == len(tokenizer(PAIRS[-1][0])["input_ids"]) + 50
    ids = np.where(prediction.predictions < 0, tokenizer.pad_token_id, prediction.predictions)
    assert tokenizer.batch_decode(ids, skip_special_tokens=True) == [PAIRS[-1][1]]


def test_trainer_checkpoints_are_safetensors_folders_with_the_code_files(finetuned):
    checkpoints = sorted(finetuned.output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [p.name for p in checkpoints] == [f"checkpoint-{STEPS // 2}", f"checkpoint-{STEPS}"]
    for folder in [*checkpoints, finetuned.final_dir]:
        names = {p.name for p in folder.iterdir()}
        assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", *CODE_FILES} <= names
        assert not {"pytorch_model.bin", "model.bin"} & names
        assert json.loads((folder / "config.json").read_text())["auto_map"] == AUTO_MAP
    last = AutoModelForSeq2SeqLM.from_pretrained(checkpoints[-1])
    assert last.generation_config.max_length == MAX_LENGTH
    for name, tensor in finetuned.model.state_dict().items():
        assert torch.equal(last.state_dict()[name], tensor), name


# ---------------------------------------------------------------------------------------------------------------------
# examples/finetune_with_trainer.py
# ---------------------------------------------------------------------------------------------------------------------


def test_the_finetuning_example_runs_offline_on_a_local_folder(finetuned, tmp_path, monkeypatch, capsys):
    """The example fine-tunes the model saved above further, on new pairs from a TSV, and saves a model folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = importlib.util.spec_from_file_location("finetune_with_trainer", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    new_pairs = [("el perro duerme", "the dog sleeps"), ("la niña come pan", "the girl eats bread")]
    train_file = tmp_path / "pairs.tsv"
    with train_file.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter="\t").writerows(new_pairs)

    status = example.main(["--model", str(finetuned.final_dir), "--train_file", str(train_file), "--output_dir",
                           str(tmp_path / "out"), "--max_steps", "10", "--learning_rate", "3e-3"])
    assert status == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"model.safetensors", "tokenizer.json", *CODE_FILES}
    tuned = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out")
    before = AutoModelForSeq2SeqLM.from_pretrained(finetuned.final_dir)
    assert not torch.equal(tuned.lm_head.weight, before.lm_head.weight)
    printed = capsys.readouterr().out
    assert "trained 10 steps" in printed and "BLEU on the training pairs" in printed
    assert f"saved to {tmp_path / 'out'}" in printed


def test_trainer_gradient_accumulation_weights_every_token_alike(base_dir, tokenizer, tmp_path):
    """Trainer passes `num_items_in_batch` (the labelled tokens of the whole accumulated batch) and leaves the
    scaling to the model: 2 micro-batches × 2 accumulated make the same update as one batch of 4, although the
    micro-batches hold different numbers of target tokens."""
    pairs = sorted(PAIRS[:4], key=lambda pair: len(pair[1]))  # unequal token counts per micro-batch
    weights = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        model = AutoModelForSeq2SeqLM.from_pretrained(base_dir)
        args = Seq2SeqTrainingArguments(
            output_dir=str(tmp_path / f"ga{accumulation}"), max_steps=1, per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation, learning_rate=1.0, optim="sgd", lr_scheduler_type="constant",
            warmup_steps=0, report_to="none", use_cpu=True, seed=0, disable_tqdm=True, save_strategy="no",
            train_sampling_strategy="sequential")
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=tokenized(tokenizer, pairs),
                                 data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))
        assert trainer.model_accepts_loss_kwargs
        trainer.train()
        weights.append(model.model.shared.weight.detach().clone())
    untrained = AutoModelForSeq2SeqLM.from_pretrained(base_dir).model.shared.weight
    assert not torch.equal(weights[0], untrained)
    torch.testing.assert_close(weights[1], weights[0], atol=1e-6, rtol=0)
