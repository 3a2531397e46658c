"""The Hugging Face Hub model card (`README.md`) of a trained model folder.

`render_card(summary, out_dir)` writes `out_dir/README.md` from the run's own record — `summary` is the content of
`run_summary.json` (see `vanilla_transformer.training.trainer`), and `out_dir/config.json` (plus
`generation_config.json` when present) describes the architecture. The card has YAML front matter for the Hub
(license, languages, `pipeline_tag: translation`, tags, datasets, metrics and a `model-index` with the BLEU/chrF
results) and sections on the model, its intended use, training data and procedure, evaluation, how to use it,
limitations and the paper's citation.

Every number in the card comes from the run. A figure the summary does not have is left out — its table row, its
sentence, its `model-index` metric, or the whole section — never guessed or shown as a placeholder. The summaries
of `best/` (`{"step", "validation"}`) and of averaged checkpoints (`{"averaged_checkpoints"}`) therefore give
shorter cards than the full one of `final/`.

The template is `model_card.md.jinja` next to this file; the facts are gathered here, so that the template only
lays them out.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import yaml

from ..base.files import write_text
from ..base.outputs import CARD_FILE, GENERATED_CARD_MARKER, is_generated_card  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

TEMPLATE = "model_card.md.jinja"
# First line of the body of every card rendered here: `vanilla-transformer push` re-renders such a card (to put
# the repo id in its code samples) and leaves any other README.md alone.

METRIC_NAMES = {"bleu": "BLEU", "chrf": "chrF"}  # model-index metric type -> display name
# Datasets known by a short name in `run_summary.json` (`data.dataset`): (name, description) for the card.
KNOWN_DATASETS = {
    "bible": ("Spanish–English Bible", "the Spanish–English Bible bundled with vanilla-transformer: Reina-Valera "
                                       "1909 and the World English Bible (public-domain SWORD modules), paired "
                                       "verse by verse"),
    "gettext": ("Debian software messages", "the English messages of the gettext catalogs of a pinned list of Debian "
                                            "packages and their translations (`vanilla-transformer gettext`), split "
                                            "by whole catalogs"),
}
# A sample sentence per source language for the code snippets (a snippet, not a claim about the model).
SAMPLE_SENTENCES = {
    "es": "En el principio creó Dios los cielos y la tierra.",
    "en": "In the beginning God created the heavens and the earth.",
    "de": "Im Anfang schuf Gott Himmel und Erde.",
    "fr": "Au commencement, Dieu créa les cieux et la terre.",
}


# ---------------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------------


def render_card(summary: dict | None, out_dir: str | os.PathLike, repo_id: str | None = None) -> Path:
    """Write `out_dir/README.md` (atomically: a temporary file renamed) and return its path.

    summary: the content of `run_summary.json` (any subset of its keys; missing figures are left out of the card).
    out_dir: a model folder with `config.json` (and optionally `generation_config.json`).
    repo_id: the Hub repo the card is for, used in the code samples (default: a local-path sample).
    """
    out_dir = Path(out_dir)
    text = card_text(summary or {}, read_config(out_dir), read_generation_config(out_dir), repo_id,
                     sentencepiece=(out_dir / "source.spm").is_file(), byte_fallback=has_byte_fallback(out_dir))
    target = out_dir / CARD_FILE
    write_text(target, text)
    logger.info("model card written to %s", target)
    return target


def card_text(summary: dict, config, generation: dict | None = None, repo_id: str | None = None,
              sentencepiece: bool = False, byte_fallback: bool = False) -> str:
    """The card as a string: YAML front matter, then the Markdown body rendered from the template. `sentencepiece`:
    the model's tokenizer is Marian's (source.spm and target.spm, as a converted OPUS-MT model has);
    `byte_fallback`: its BPE spells unseen characters as bytes."""
    facts = gather_facts(summary, config, generation or {}, repo_id, sentencepiece)
    facts["byte_fallback"] = byte_fallback
    metadata = yaml.safe_dump(facts.pop("front_matter"), sort_keys=False, allow_unicode=True, width=1000)
    template = _environment().from_string(resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8"))
    body = template.render(marker=GENERATED_CARD_MARKER, **facts)
    return f"---\n{metadata}---\n\n{body.strip()}\n"


def front_matter(card: str) -> dict:
    """The YAML front matter of a card, parsed (`{}` when there is none)."""
    if not card.startswith("---\n"):
        return {}
    end = card.index("\n---\n", 4)
    return yaml.safe_load(card[4:end]) or {}


def has_byte_fallback(out_dir: Path) -> bool:
    """Whether the folder's `tokenizer.json` is a BPE with byte fallback (tokenizers trained since it exists)."""
    try:
        return bool(json.loads((out_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"].get("byte_fallback"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def read_config(out_dir: Path):
    """The model's configuration from `out_dir/config.json` (with the class defaults for absent fields)."""
    from ..configuration import VanillaTransformerConfig

    if not (out_dir / "config.json").is_file():
        raise FileNotFoundError(f"{out_dir / 'config.json'} not found: the model card describes the saved model")
    return VanillaTransformerConfig.from_pretrained(out_dir)


def read_generation_config(out_dir: Path) -> dict:
    path = out_dir / "generation_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def count_parameters(config) -> int:
    """Parameters of the model `config` describes (the shared embedding counted once), built without memory."""
    import torch

    from ..modeling import VanillaTransformerForConditionalGeneration

    with torch.device("meta"):
        model = VanillaTransformerForConditionalGeneration(config)
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------------
# Facts: what the template shows, each only when the run recorded it
# ---------------------------------------------------------------------------------------------------------------------


def gather_facts(summary: dict, config, generation: dict, repo_id: str | None,
                 sentencepiece: bool = False) -> dict[str, Any]:
    """Everything the template and the front matter show, from the summary, config.json and generation_config.json.

    Missing figures come out as None or empty lists, which the template skips.
    """
    data = _dict(summary.get("data"))
    model_info = _dict(summary.get("model"))
    hyper = _dict(summary.get("hyperparameters"))
    source, target = data.get("source_lang"), data.get("target_lang")
    languages = [lang for lang in (source, target) if lang]
    parameters = model_info.get("parameters") or count_parameters(config)
    if repo_id:
        name = repo_id.rsplit("/", 1)[-1]
    else:  # e.g. "vanilla-transformer-base-es-en", from what the summary says
        name = "-".join(part for part in ["vanilla-transformer", model_info.get("preset"), *languages] if part)
    results = evaluation_results(summary, data, hyper)
    facts = {
        "name": name,
        "repo_id": repo_id,
        "source_lang": source,
        "target_lang": target,
        "pair": f"{source}→{target}" if source and target else None,
        "dataset": dataset_name(data.get("dataset")),
        "trained": any(key in summary for key in ("steps", "step", "averaged_checkpoints")),
        "corpus": data.get("dataset"),
        "preset": model_info.get("preset"),
        "fine_tuned_from": _dict(summary.get("init_from")) or None,  # train --init_from: name and weights hash
        "activation": config.activation_function,
        "parameters": parameters,
        "pre_norm": bool(config.normalize_before),
        "architecture": architecture_rows(config, parameters),
        "data_rows": data_rows(data, hyper, config, sentencepiece),
        "sentencepiece": sentencepiece,
        "training_rows": training_rows(summary, hyper),
        "hardware_rows": hardware_rows(summary),
        "results": results,
        "evaluation_rows": evaluation_rows(summary),
        "decoding": decoding_text(generation),
        "note": summary.get("note"),
        "sample": SAMPLE_SENTENCES.get(source or "", "…"),
        "averaged": summary.get("averaged_checkpoints") or [],
        "libraries": _dict(summary.get("libraries")),
        "metric_names": METRIC_NAMES,
    }
    facts["front_matter"] = front_matter_dict(facts, data, hyper)
    return facts


def front_matter_dict(facts: dict, data: dict, hyper: dict) -> dict:
    """The Hub metadata: a `model-index` entry per evaluated split, listing only the metrics that were measured."""
    meta: dict[str, Any] = {"license": "apache-2.0"}
    languages = [lang for lang in (facts["source_lang"], facts["target_lang"]) if lang]
    if languages:
        meta["language"] = languages
    meta["library_name"] = "transformers"
    meta["pipeline_tag"] = "translation"
    meta["tags"] = ["translation", "transformer", "vanilla-transformer", "attention-is-all-you-need", "seq2seq",
                    "custom_code"]
    hub_dataset = hub_dataset_id(data, hyper)
    if hub_dataset:
        meta["datasets"] = [hub_dataset]
    # The Hub needs a dataset name and type for each result: a score of an unnamed dataset stays in the body only.
    indexed = [result for result in facts["results"] if result["dataset_name"]]
    metrics = [m for m in METRIC_NAMES if any(m in result["metrics"] for result in indexed)]
    if metrics:
        meta["metrics"] = metrics
        meta["model-index"] = [{"name": facts["name"], "results": [
            {
                "task": {"type": "translation",
                         "name": f"Translation {facts['pair']}" if facts["pair"] else "Translation"},
                "dataset": {"name": result["dataset_name"], "type": result["dataset_type"],
                            "split": result["split"]},
                "metrics": [{"type": metric, "value": value, "name": METRIC_NAMES[metric]}
                            for metric, value in result["metrics"].items()],
            }
            for result in indexed
        ]}]
    return meta



def evaluation_results(summary: dict, data: dict, hyper: dict) -> list[dict]:
    """BLEU/chrF measured on this very model: on the test split (`test`) and at the last validation
    (`final_validation`, or `validation` in the summary of `best/`). Scores are rounded to 2 decimals, as sacrebleu
    prints them; a split without any score is left out."""
    records = []
    if _dict(summary.get("test")):
        records.append((summary["test"].get("split") or "test", summary["test"]))
    validation = _dict(summary.get("final_validation")) or _dict(summary.get("validation"))
    if validation:
        records.append(("validation", validation))
    results = []
    for split, record in records:
        metrics = {m: round(float(record[m]), 2) for m in METRIC_NAMES if _is_number(record.get(m))}
        if not metrics:
            continue
        dataset = hyper.get(f"{split}_file") or data.get("dataset")  # --test_file / --validation_file, else the corpus
        results.append({
            "split": split,
            "metrics": metrics,
            "dataset_name": dataset_name(dataset),  # None when the summary does not say (best/): no model-index
            "dataset_type": hub_dataset_id(data, hyper) or short_dataset_name(dataset),
            "sentences": record.get("sentences") if _is_number(record.get("sentences")) else None,
            "step": record.get("step") if _is_number(record.get("step")) else None,
            "signatures": {METRIC_NAMES[m]: record[f"{m}_signature"] for m in metrics if record.get(f"{m}_signature")},
        })
    return results


def architecture_rows(config, parameters: int) -> list[tuple[str, str]]:
    """(label, value) rows of the architecture table, all read from config.json."""
    def pair(encoder, decoder) -> str:
        return f"{encoder}" if encoder == decoder else f"{encoder} (encoder) / {decoder} (decoder)"

    positional = {
        "interleaved": "sinusoidal, sin at even and cos at odd dimensions (the paper's formula, §3.5)",
        "concatenated": "sinusoidal, all sines then all cosines (the tensor2tensor / fairseq / Marian layout)",
    }[config.positional_encoding]
    norm = ("pre-norm: x + Dropout(Sublayer(LayerNorm(x))), with a final LayerNorm after each stack"
            if config.normalize_before else "post-norm: LayerNorm(x + Dropout(Sublayer(x))), as in the paper")
    rows = [
        ("Layers", f"{config.encoder_layers} encoder + {config.decoder_layers} decoder"),
        ("d_model", f"{config.d_model}"),
        ("Attention heads", pair(config.encoder_attention_heads, config.decoder_attention_heads)),
        ("Feed-forward size d_ff", pair(config.encoder_ffn_dim, config.decoder_ffn_dim)),
        ("Activation", config.activation_function),
        ("Vocabulary", f"{config.vocab_size:,} tokens shared by source and target; one matrix for both "
                       "embeddings and the output projection (§3.4)"),
        ("Parameters", f"{parameters:,}" + (f" ({parameters / 1e6:.1f}M)" if parameters >= 1e6 else "")),
        ("Positional encoding", positional),
        ("Normalization", norm),
        ("Embedding scale", "×√d_model (§3.4)" if config.scale_embedding else "none"),
        ("Dropout P_drop", f"{config.dropout:g}"),
        ("Label smoothing ε_ls", f"{config.label_smoothing:g}"),
    ]
    if config.attention_dropout:
        rows.append(("Attention dropout", f"{config.attention_dropout:g}"))
    if config.activation_dropout:
        rows.append(("Activation dropout", f"{config.activation_dropout:g}"))
    return rows


def data_rows(data: dict, hyper: dict, config, sentencepiece: bool = False) -> list[tuple[str, str]]:
    rows = []
    if data.get("dataset"):
        known = KNOWN_DATASETS.get(data["dataset"])
        rows.append(("Corpus", known[1] if known else dataset_name(data["dataset"])))
    if data.get("source_lang") and data.get("target_lang"):
        rows.append(("Direction", f"{data['source_lang']} → {data['target_lang']}"))
    if _is_number(data.get("train_pairs")):
        rows.append(("Training pairs", f"{data['train_pairs']:,}"))
    if _is_number(data.get("dropped_over_max_length")) and _is_number(hyper.get("max_length")):
        rows.append(("Dropped as too long", f"{data['dropped_over_max_length']:,} pairs with a side over "
                                            f"{hyper['max_length']} tokens"))
    if _is_number(data.get("validation_pairs")):
        rows.append(("Validation pairs", f"{data['validation_pairs']:,}"))
    if hyper.get("tokenizer") and sentencepiece:
        rows.append(("Tokenizer", f"Marian's SentencePiece models, one per language (source.spm, target.spm), over "
                                  f"one vocabulary of {config.vocab_size:,} tokens, given to the run "
                                  f"({Path(hyper['tokenizer']).name})"))
    elif hyper.get("tokenizer"):
        rows.append(("Tokenizer", f"shared vocabulary of {config.vocab_size:,} tokens, given to the run "
                                  f"({Path(hyper['tokenizer']).name})"))
    elif hyper:
        rows.append(("Tokenizer", f"shared BPE of {config.vocab_size:,} tokens, trained on the source and target "
                                  "sides of the training pairs (§5.1)"))
    return rows


def training_rows(summary: dict, hyper: dict) -> list[tuple[str, str]]:
    """Procedure and hyperparameters (§5.2–5.4) as recorded; each row only when its values were recorded."""
    rows = []
    if _is_number(summary.get("steps")):
        epochs = f" ({summary['epochs']:g} epochs)" if _is_number(summary.get("epochs")) else ""
        rows.append(("Optimizer updates", f"{summary['steps']:,}{epochs}"))
    if _is_number(hyper.get("max_tokens")):
        batch = f"{hyper['max_tokens']:,} tokens per batch and process (source or target side, padding included)"
        if _is_number(hyper.get("gradient_accumulation_steps")) and hyper["gradient_accumulation_steps"] > 1:
            batch += f", {hyper['gradient_accumulation_steps']} batches accumulated per update"
        rows.append(("Batch", batch))
    if _is_number(summary.get("target_tokens")):
        seen = f"{summary['target_tokens']:,} target"
        if _is_number(summary.get("source_tokens")):
            seen += f" and {summary['source_tokens']:,} source"
        rows.append(("Tokens seen", seen + " tokens"))
    if all(_is_number(hyper.get(k)) for k in ("adam_beta1", "adam_beta2", "adam_epsilon")):
        rows.append(("Optimizer", f"Adam, β1 = {hyper['adam_beta1']:g}, β2 = {hyper['adam_beta2']:g}, "
                                  f"ε = {hyper['adam_epsilon']:g} (§5.3)"))
    schedule = hyper.get("lr_schedule")
    if schedule not in (None, "noam") and _is_number(hyper.get("warmup_steps")):
        peak = f"{hyper['learning_rate']:g}" if _is_number(hyper.get("learning_rate")) else "the §5.3 peak"
        after = {"inverse_sqrt": "then · sqrt(warmup / step)", "constant": "then constant",
                 "linear": "then down to 0 at the last update"}.get(schedule, f"then {schedule}")
        rows.append(("Learning rate", f"{schedule}: linear warmup to {peak} over {hyper['warmup_steps']:,} steps, "
                                      f"{after}"))
    elif _is_number(hyper.get("learning_rate")) and _is_number(hyper.get("warmup_steps")):
        rows.append(("Learning rate", f"§5.3 curve peaking at {hyper['learning_rate']:g} after "
                                      f"{hyper['warmup_steps']:,} warmup steps"))
    elif _is_number(hyper.get("warmup_steps")) and _is_number(hyper.get("lr_scale")):
        scale = "" if hyper["lr_scale"] == 1 else f"{hyper['lr_scale']:g} · "
        rows.append(("Learning rate", f"{scale}d_model^-0.5 · min(step^-0.5, step · warmup^-1.5), warmup = "
                                      f"{hyper['warmup_steps']:,} steps (§5.3)"))
    if _is_number(hyper.get("clip_norm")) and hyper["clip_norm"] > 0:
        rows.append(("Gradient clipping", f"norm {hyper['clip_norm']:g}"))
    hardware = _dict(summary.get("hardware"))
    if hardware.get("mixed_precision"):
        rows.append(("Mixed precision", str(hardware["mixed_precision"])))
    if _is_number(hyper.get("seed")):
        rows.append(("Seed", f"{hyper['seed']}"))
    if _is_number(summary.get("skipped_steps")) and summary["skipped_steps"] > 0:
        rows.append(("Skipped updates", f"{summary['skipped_steps']:,} (non-finite loss or gradient)"))
    return rows


def hardware_rows(summary: dict) -> list[tuple[str, str]]:
    hardware = _dict(summary.get("hardware"))
    rows = []
    devices = hardware.get("cuda_devices")
    if devices:
        counts: dict[str, int] = {}
        for device in devices:
            counts[device] = counts.get(device, 0) + 1
        rows.append(("Accelerators", ", ".join(f"{n} × {name}" for name, n in counts.items())))
    elif hardware.get("processor") or hardware.get("cpu_count"):
        cpu = str(hardware.get("processor") or "CPU")
        if _is_number(hardware.get("cpu_count")):
            cpu += f", {hardware['cpu_count']} cores"
        if _is_number(hardware.get("torch_threads")):
            cpu += f" ({hardware['torch_threads']} torch threads)"
        rows.append(("Hardware", f"CPU only: {cpu}"))
    if _is_number(hardware.get("num_processes")):
        kind = str(hardware.get("distributed_type", "")).removeprefix("DistributedType.")
        rows.append(("Processes", f"{hardware['num_processes']}" + (f" ({kind})" if kind and kind != "NO" else "")))
    if _is_number(summary.get("train_seconds")):
        rows.append(("Training time", duration(summary["train_seconds"]) + ", evaluations included"))
    if _is_number(summary.get("wall_seconds")):
        rows.append(("Wall time of the run", duration(summary["wall_seconds"])))
    return rows


def evaluation_rows(summary: dict) -> list[tuple[str, str]]:
    """Validation facts besides the BLEU/chrF results: loss, best BLEU during training."""
    rows = []
    final = _dict(summary.get("final_validation")) or _dict(summary.get("validation"))
    if _is_number(final.get("validation_loss")):
        at = f" at step {final['step']:,}" if _is_number(final.get("step")) else ""
        rows.append(("Validation loss", f"{final['validation_loss']:.4f} nats per target token{at}"))
    if _is_number(summary.get("best_validation_bleu")):
        at = f" at step {summary['best_step']:,}" if _is_number(summary.get("best_step")) else ""
        rows.append(("Best validation BLEU during training", f"{summary['best_validation_bleu']:.2f}{at} "
                                                              "(the model in `best/`)"))
    return rows


def decoding_text(generation: dict) -> str | None:
    """The defaults of `generate()` as saved in generation_config.json."""
    parts = []
    if _is_number(generation.get("num_beams")):
        parts.append("greedy search" if generation["num_beams"] == 1 else f"beam search with {generation['num_beams']}"
                     " beams")
    if _is_number(generation.get("length_penalty")) and generation.get("num_beams", 1) > 1:
        parts.append(f"length penalty {generation['length_penalty']:g}")
    if _is_number(generation.get("max_length")):
        parts.append(f"at most {generation['max_length']:,} tokens")
    elif _is_number(generation.get("max_new_tokens")):
        parts.append(f"at most {generation['max_new_tokens']:,} new tokens")
    elif parts:
        parts.append("at most source length + 50 tokens (§6.1)")
    return ", ".join(parts) or None


# ---------------------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------------------


def dataset_name(dataset: str | None) -> str | None:
    """A readable name: the bundled corpus's description, a file's name, or a Hub dataset id as it is."""
    if not dataset:
        return None
    return KNOWN_DATASETS[dataset][0] if dataset in KNOWN_DATASETS else short_dataset_name(dataset)


def short_dataset_name(dataset: str | None) -> str | None:
    if not dataset:
        return None
    return Path(dataset).name if _is_file_name(dataset) else dataset


def hub_dataset_id(data: dict, hyper: dict) -> str | None:
    """The Hub dataset the model was trained on, when it was one (not the bundled corpus, not a local file)."""
    dataset = hyper.get("dataset") if "dataset" in hyper else data.get("dataset")
    if not dataset or dataset in KNOWN_DATASETS or _is_file_name(dataset):
        return None
    return dataset


def _is_file_name(name: str) -> bool:
    return Path(name).suffix.lower() in (".tsv", ".jsonl", ".json", ".csv", ".txt") or Path(name).is_file()


def duration(seconds: float) -> str:
    seconds = float(seconds)
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        text = f"{hours} h {minutes:02d} min"
    elif minutes:
        text = f"{minutes} min {secs:02d} s"
    else:
        return f"{seconds:.1f} s"
    return f"{text} ({seconds:,.0f} s)"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                     keep_trailing_newline=True, autoescape=False)
    environment.filters["cell"] = lambda value: str(value).replace("|", "\\|")  # a "|" would end a table cell
    return environment


__all__ = ["render_card", "card_text", "front_matter", "is_generated_card", "count_parameters", "GENERATED_CARD_MARKER"]
