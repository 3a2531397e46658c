"""The Hub model card (hub_card): front matter that parses, scores and architecture taken from the run, and every
missing figure left out rather than invented."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from vanilla_transformer.configuration import VanillaTransformerConfig
from vanilla_transformer.hub_card import GENERATED_CARD_MARKER, front_matter, render_card
from vanilla_transformer.modeling import VanillaTransformerForConditionalGeneration
from vanilla_transformer.training.tokenizer import train_shared_bpe

# The shape of run_summary.json as training/train.py writes it (values made up, never rounded).
SUMMARY = {
    "steps": 12000, "epochs": 3.456, "target_tokens": 12345678, "source_tokens": 13345679,
    "train_seconds": 5023.4, "wall_seconds": 5400.2, "skipped_steps": 0,
    "best_validation_bleu": 21.3456, "best_step": 11000,
    "final_validation": {"step": 12000, "validation_loss": 2.1234, "bleu": 21.0123, "chrf": 45.6789},
    "evaluations": [{"step": 11000, "validation_loss": 2.2, "bleu": 21.3456, "chrf": 45.1},
                    {"step": 12000, "validation_loss": 2.1234, "bleu": 21.0123, "chrf": 45.6789}],
    "test": {"bleu": 20.456789, "chrf": 44.3217, "split": "test", "sentences": 1503,
             "bleu_signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.5.1",
             "chrf_signature": "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.5.1",
             "bleu_detail": "BLEU = 20.46 55.1/27.0/15.2/8.9 (BP = 1.000 ratio = 1.012 hyp_len = 40000 "
                            "ref_len = 39500)"},
    "note": "BLEU and chrF are sacrebleu corpus scores of detokenized beam-search output",
    "data": {"source_lang": "es", "target_lang": "en", "dataset": "bible", "train_pairs": 28001,
             "dropped_over_max_length": 12, "validation_pairs": 801},
    "model": {"preset": "tiny", "overrides": {}, "parameters": None, "config": {}},
    "hyperparameters": {"dataset": "bible", "train_file": None, "validation_file": None, "test_file": None,
                        "tokenizer": None, "max_length": 256, "max_tokens": 4096, "gradient_accumulation_steps": 1,
                        "adam_beta1": 0.9, "adam_beta2": 0.98, "adam_epsilon": 1e-9, "warmup_steps": 4000,
                        "lr_scale": 1.0, "clip_norm": 0.0, "seed": 7},
    "libraries": {"python": "3.11.2", "torch": "2.13.0", "transformers": "5.23.0"},
    "hardware": {"platform": "Linux", "processor": "x86_64", "cpu_count": 2, "torch_threads": 2, "cuda_devices": [],
                 "num_processes": 1, "distributed_type": "DistributedType.NO", "device": "cpu",
                 "mixed_precision": "no"},
}


def saved_model(path, **overrides) -> VanillaTransformerForConditionalGeneration:
    config = VanillaTransformerConfig.tiny(**{
        "vocab_size": 211, "d_model": 48, "encoder_layers": 2, "decoder_layers": 3, "encoder_attention_heads": 4,
        "decoder_attention_heads": 2, "encoder_ffn_dim": 96, "decoder_ffn_dim": 80, **overrides})
    model = VanillaTransformerForConditionalGeneration(config)
    model.save_pretrained(path)
    return model


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def summary(**changes) -> dict:
    result = copy.deepcopy(SUMMARY)
    result.update(changes)
    return result


def table(card: str) -> dict[str, str]:
    """The two-column Markdown tables of the card as {label: value} (escaped pipes kept inside cells)."""
    rows = {}
    for line in card.splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 2 and cells[0] and not set(cells[0]) <= set("-"):
            rows[cells[0]] = cells[1]
    return rows


def metrics_of(card: str) -> dict[str, dict[str, float]]:
    """{split: {metric type: value}} from the model-index of the card's front matter."""
    index = front_matter(card).get("model-index", [])
    return {result["dataset"]["split"]: {m["type"]: m["value"] for m in result["metrics"]}
            for entry in index for result in entry["results"]}


@pytest.fixture
def model_dir(tmp_path):
    saved_model(tmp_path)
    return tmp_path


def test_front_matter_parses_and_its_model_index_holds_the_run_scores(model_dir):
    run = summary()
    path = render_card(run, model_dir)
    assert path == model_dir / "README.md"
    assert [p.name for p in model_dir.iterdir() if p.name.startswith(".")] == []  # no temporary left behind
    card = path.read_text(encoding="utf-8")
    meta = front_matter(card)
    assert meta["license"] == "apache-2.0"
    assert meta["language"] == ["es", "en"]
    assert meta["pipeline_tag"] == "translation"
    assert {"translation", "transformer", "vanilla-transformer"} <= set(meta["tags"])
    assert meta["metrics"] == ["bleu", "chrf"]
    assert "datasets" not in meta  # the bundled Bible is not a Hub dataset: no made-up dataset id

    (entry,) = meta["model-index"]
    test_result = next(r for r in entry["results"] if r["dataset"]["split"] == "test")
    assert test_result["task"]["type"] == "translation"
    assert test_result["dataset"]["type"] == "bible"
    assert metrics_of(card) == {
        "test": {"bleu": round(run["test"]["bleu"], 2), "chrf": round(run["test"]["chrf"], 2)},
        "validation": {"bleu": round(run["final_validation"]["bleu"], 2),
                       "chrf": round(run["final_validation"]["chrf"], 2)},
    }
    # The body shows the same numbers, and the facts of the run.
    assert "- BLEU: **20.46**" in card and "- chrF: **44.32**" in card
    assert run["test"]["bleu_signature"] in card
    assert "1,503 sentences" in card
    rows = table(card)
    assert rows["Optimizer updates"] == "12,000 (3.456 epochs)"
    assert rows["Tokens seen"] == "12,345,678 target and 13,345,679 source tokens"
    assert rows["Training pairs"] == "28,001"
    assert rows["Training time"].startswith("1 h 23 min (5,023 s)")
    assert rows["Hardware"] == "CPU only: x86_64, 2 cores (2 torch threads)"
    assert "warmup = 4,000 steps" in rows["Learning rate"]
    for heading in ("## Model description", "## Intended use", "## Training data", "## Training procedure",
                    "## Evaluation", "## How to use", "## Limitations", "## Citation"):
        assert heading in card
    assert 'pipeline("translation"' in card and "trust_remote_code=True" in card
    assert "@inproceedings{vaswani2017attention" in card and "Attention Is All You Need" in card
    assert card.splitlines().count(GENERATED_CARD_MARKER) == 1


def test_a_hub_dataset_is_named_in_the_metadata(model_dir):
    run = summary(data={**SUMMARY["data"], "dataset": "wmt/wmt14"},
                  hyperparameters={**SUMMARY["hyperparameters"], "dataset": "wmt/wmt14"})
    meta = front_matter(render_card(run, model_dir).read_text(encoding="utf-8"))
    assert meta["datasets"] == ["wmt/wmt14"]
    assert {r["dataset"]["type"] for r in meta["model-index"][0]["results"]} == {"wmt/wmt14"}


def test_without_bleu_no_bleu_figure_appears_and_the_yaml_still_parses(model_dir):
    run = summary()
    for record in (run["test"], run["final_validation"], *run["evaluations"]):
        del record["bleu"]
    del run["test"]["bleu_signature"], run["test"]["bleu_detail"], run["best_validation_bleu"]
    card = render_card(run, model_dir).read_text(encoding="utf-8")
    meta = front_matter(card)
    assert meta["metrics"] == ["chrf"]
    assert metrics_of(card) == {"test": {"chrf": 44.32}, "validation": {"chrf": 45.68}}
    assert not [line for line in card.splitlines() if "BLEU" in line and re.search(r"\d", line)]

    for record in (run["test"], run["final_validation"]):
        del record["chrf"]
    card = render_card(run, model_dir).read_text(encoding="utf-8")
    meta = front_matter(card)  # parses
    assert "model-index" not in meta and "metrics" not in meta
    assert meta["pipeline_tag"] == "translation"
    assert not [line for line in card.splitlines() if re.search(r"BLEU|chrF", line) and re.search(r"\d", line)]
    assert "No translation-quality score was recorded" in card


def test_architecture_numbers_are_those_of_config_json(tmp_path):
    model = saved_model(tmp_path, normalize_before=True, positional_encoding="concatenated")
    config = json.loads((tmp_path / "config.json").read_text())
    rows = table(render_card({}, tmp_path).read_text(encoding="utf-8"))
    assert rows["Layers"] == f"{config['encoder_layers']} encoder + {config['decoder_layers']} decoder" == (
        "2 encoder + 3 decoder")
    assert rows["d_model"] == str(config["d_model"]) == "48"
    assert rows["Attention heads"] == "4 (encoder) / 2 (decoder)"
    assert rows["Feed-forward size d_ff"] == "96 (encoder) / 80 (decoder)"
    assert rows["Vocabulary"].startswith(f"{config['vocab_size']} tokens shared")
    assert rows["Normalization"].startswith("pre-norm")
    assert "all sines then all cosines" in rows["Positional encoding"]
    assert rows["Dropout P_drop"] == f"{config['dropout']:g}"
    assert rows["Parameters"] == f"{parameter_count(model):,}"  # counted from config.json when the run did not say

    post_norm = saved_model(tmp_path / "post", encoder_ffn_dim=2048, decoder_ffn_dim=2048, d_model=512,
                            encoder_attention_heads=8, decoder_attention_heads=8, vocab_size=8000)
    run = summary(model={"preset": "tiny", "parameters": parameter_count(post_norm)})
    rows = table(render_card(run, tmp_path / "post").read_text(encoding="utf-8"))
    assert rows["Parameters"] == f"{parameter_count(post_norm):,} ({parameter_count(post_norm) / 1e6:.1f}M)"
    assert rows["Normalization"].startswith("post-norm") and "as in the paper" in rows["Normalization"]
    assert "the paper's formula" in rows["Positional encoding"]
    assert rows["Attention heads"] == "8" and rows["Feed-forward size d_ff"] == "2048"


def test_partial_summaries_give_shorter_cards_without_invented_figures(model_dir):
    card = render_card({}, model_dir).read_text(encoding="utf-8")
    meta = front_matter(card)
    assert "language" not in meta and "model-index" not in meta and "metrics" not in meta
    for absent in ("## Training data", "## Training procedure", "Libraries:", "Training time", "Optimizer updates"):
        assert absent not in card
    assert "## Model description" in card and "## Citation" in card

    # best/: {"step", "validation"} only. The scores are shown; without the dataset's name they cannot go into the
    # model-index (the Hub requires it there), and no name is made up.
    best = {"step": 500, "validation": {"step": 500, "validation_loss": 3.5, "bleu": 9.876, "chrf": 30.1234}}
    card = render_card(best, model_dir).read_text(encoding="utf-8")
    assert "- BLEU: **9.88**" in card and "- chrF: **30.12**" in card and "after 500 updates" in card
    assert "model-index" not in front_matter(card) and "unknown" not in card
    assert "## Training procedure" not in card
    card = render_card({**best, "data": SUMMARY["data"]}, model_dir).read_text(encoding="utf-8")
    assert metrics_of(card) == {"validation": {"bleu": 9.88, "chrf": 30.12}}

    # An average of checkpoints (§6.1).
    averaged = {"averaged_checkpoints": ["out/checkpoint-800", "out/checkpoint-900", "out/checkpoint-1000"]}
    card = render_card(averaged, model_dir).read_text(encoding="utf-8")
    assert "average of 3 checkpoints" in card and "model-index" not in front_matter(card)


def test_the_export_renders_the_card_into_the_model_folder(tmp_path):
    """The hook of training/export.py: `save_model_folder(..., summary=...)` ends with a README.md card."""
    from vanilla_transformer.training.export import save_model_folder

    tokenizer = train_shared_bpe(["el gato duerme", "the cat sleeps"], vocab_size=457, min_frequency=1)
    torch.manual_seed(0)
    model = VanillaTransformerForConditionalGeneration(VanillaTransformerConfig.tiny(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32))
    run = summary(model={"preset": "tiny", "parameters": parameter_count(model)})
    folder = save_model_folder(model, tokenizer, tmp_path / "final", summary=run)
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert metrics_of(card)["test"] == {"bleu": 20.46, "chrf": 44.32}
    assert table(card)["Parameters"] == f"{parameter_count(model):,}"
    assert "- Decoding (`generation_config.json`, used by `generate()` by default): beam search with 4 beams, " \
           "length penalty 0.6" in card
    # A tokenizer with byte fallback loses no character, and the card says so; an old one's card keeps its warning.
    assert "spelled as its UTF-8 bytes (byte fallback)" in card and "no byte fallback" not in card
    old = train_shared_bpe(["el gato duerme", "the cat sleeps"], vocab_size=201, min_frequency=1, byte_fallback=False)
    card = (save_model_folder(model, old, tmp_path / "old", summary=run) / "README.md").read_text(encoding="utf-8")
    assert "become `<unk>` and are\n  lost in the output (no byte fallback)" in card and "UTF-8 bytes" not in card


def test_a_gpu_run_without_test_scores(model_dir):
    """As train.py writes it without --do_test on two GPUs: `test` is None; the validation scores remain."""
    hardware = {**SUMMARY["hardware"], "cuda_devices": ["NVIDIA H200", "NVIDIA H200"], "num_processes": 2,
                "distributed_type": "DistributedType.MULTI_GPU", "mixed_precision": "bf16"}
    card = render_card(summary(test=None, hardware=hardware), model_dir).read_text(encoding="utf-8")
    rows = table(card)
    assert rows["Accelerators"] == "2 × NVIDIA H200"
    assert rows["Processes"] == "2 (MULTI_GPU)" and rows["Mixed precision"] == "bf16"
    assert "Hardware" not in rows  # no "CPU only" row for a GPU run
    assert metrics_of(card) == {"validation": {"bleu": 21.01, "chrf": 45.68}}
    assert "Test split" not in card
