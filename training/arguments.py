"""Command-line arguments of `vanilla-transformer train`, grouped in three dataclasses for `HfArgumentParser`.

Defaults are the paper's recipe (§5.3 optimizer and schedule, §5.4 regularisation, §6.1 decoding); every value can
come from the command line, from a YAML/JSON file given with `--config` (the command line wins), or from Python.
`validate` checks the whole set before any work starts and names the offending arguments in its message
(`UsageError`, a ValueError; exit status 2 on the command line). Flags must be spelt out: argparse's prefix matching
is off (`allow_abbrev=False`), so a typo such as `--max_step` is an error instead of silently meaning `--max_steps`.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from ..base.errors import UsageError
from ..base.outputs import TOKENIZER_FILES
from ..configuration.configuration_vanilla_transformer import VanillaTransformerConfig
from ..modeling.modeling_vanilla_transformer import BEAM_SIZE
from ..translation import DecodingOptions
from .overrides import parse_overrides
from .tokenizer import MIN_VOCAB_SIZE

PRESETS = ("tiny", "base", "big")
BUNDLED_DATASET = "bible"
BUNDLED_LANGS = ("es", "en")
GETTEXT_DATASET = "gettext"  # Debian's software-message catalogs, any language with English (es → en by default)
ENGLISH = "en"
DEFAULT_VOCAB_SIZE = 8000
# A folder `AutoTokenizer.from_pretrained` can read holds one of these.
# Model-config fields that come from the tokenizer, never from the user.
TOKENIZER_FIELDS = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")


@dataclass
class DataArguments:
    """Where the parallel text comes from and how it is cut into token batches (§5.1)."""

    dataset: str | None = field(default=None, metadata={
        "help": f"'{BUNDLED_DATASET}' (the bundled Spanish-English Bible), '{GETTEXT_DATASET}' (Debian's software "
                "messages, English with --source_lang/--target_lang, es-en by default) or a Hugging Face Hub dataset "
                "name with 'translation' rows; exclusive with --train_file"})
    dataset_config: str | None = field(default=None, metadata={"help": "config name of a Hub dataset (e.g. 'de-en')"})
    train_file: str | None = field(default=None, metadata={
        "help": "TSV or JSONL file of training pairs, or the source side of two line-aligned plain-text files (with "
                "--train_target_file)"})
    train_target_file: str | None = field(default=None, metadata={
        "help": "the target side of plain-text training pairs (one sentence per line, aligned with --train_file)"})
    validation_file: str | None = field(default=None, metadata={
        "help": "TSV or JSONL file of validation pairs (or the source side, with --validation_target_file)"})
    validation_target_file: str | None = field(default=None, metadata={
        "help": "the target side of plain-text validation pairs"})
    test_file: str | None = field(default=None, metadata={
        "help": "TSV or JSONL file of test pairs for --do_test (or the source side, with --test_target_file)"})
    test_target_file: str | None = field(default=None, metadata={"help": "the target side of plain-text test pairs"})
    source_lang: str | None = field(default=None, metadata={"help": "source language code (es for the Bible)"})
    target_lang: str | None = field(default=None, metadata={"help": "target language code (en for the Bible)"})
    tokenizer: str | None = field(default=None, metadata={
        "help": "directory of a trained tokenizer; without it a shared BPE of --vocab_size is trained on the "
                "training data and saved to <output_dir>/tokenizer"})
    vocab_size: int | None = field(default=None, metadata={
        "help": f"size of the shared BPE vocabulary to train (default {DEFAULT_VOCAB_SIZE}); not with --tokenizer"})
    max_length: int = field(default=256, metadata={
        "help": "pairs longer than this many tokens on a side are dropped; the run refuses to start when that drops "
                "more than half of the training pairs or every validation pair"})
    max_tokens: int | None = field(default=None, metadata={
        "help": "padded tokens per batch and process, source and target together (batch size × (longest source + "
                "longest target)), pairs grouped by length; default 4096, 2500 for --preset tiny from scratch; §5.1's "
                "batches hold ~25000 + 25000 tokens"})
    eval_samples: int = field(default=500, metadata={
        "help": "validation sentences translated for BLEU at each evaluation (a fixed subset; 0 = all)"})
    cache_dir: str | None = field(default=None, metadata={"help": "cache directory for datasets"})
    data_cache_dir: str | None = field(default=None, metadata={
        "help": "where the pairs, the trained tokenizer and the token ids are kept (memory-mapped Arrow files, each "
                "entry checksummed), keyed by the data files' content, --vocab_size/--tokenizer_sample and "
                "--max_length (default <output_dir>/data-cache); `vanilla-transformer prepare` fills it ahead of "
                "time"})
    tokenizer_sample: int = field(default=1_000_000, metadata={
        "help": "the shared BPE is trained on this many training pairs drawn at random (fixed seed; 0 = all)"})


@dataclass
class ModelArguments:
    """Which Transformer: a preset of Table 3 (or the small `tiny`), changed field by field."""

    init_from: str | None = field(default=None, metadata={
        "help": "start from a trained model instead of random weights: a model folder (final/, best/, averaged), a "
                "checkpoint-<step>/ folder, a converted OPUS-MT folder (convert-marian) or a Hub model id; weights, "
                "config and tokenizer come from it (only regularisation may change), the optimizer starts afresh"})
    preset: Literal["tiny", "base", "big"] | None = field(default=None, metadata={
        "help": "model size preset (default base; not with --init_from)"})
    d_model: int | None = field(default=None, metadata={"help": "override the preset's d_model"})
    layers: int | None = field(default=None, metadata={"help": "override encoder_layers and decoder_layers"})
    heads: int | None = field(default=None, metadata={"help": "override the attention heads (encoder and decoder)"})
    ffn_dim: int | None = field(default=None, metadata={"help": "override d_ff (encoder and decoder)"})
    dropout: float | None = field(default=None, metadata={"help": "override P_drop (§5.4)"})
    label_smoothing: float | None = field(default=None, metadata={"help": "override ε_ls (§5.4, default 0.1)"})
    model_overrides: str | None = field(default=None, metadata={
        "help": "any other config fields, as JSON ('{\"activation_function\": \"gelu\"}') or 'key=value,key=value'"})


@dataclass
class TrainArguments:
    """How long, how fast and where to: the §5.3 schedule, checkpoints, evaluation and export."""

    output_dir: str = field(default="output", metadata={"help": "checkpoints, best/, final/ and TensorBoard logs"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "start afresh even if checkpoints exist"})
    resume: bool = field(default=False, metadata={
        "help": "continue from the latest <output_dir>/checkpoint-<step> with the same data order, RNG and schedule"})
    seed: int = field(default=1, metadata={"help": "seed of initialisation, dropout and data order"})
    max_steps: int = field(default=100_000, metadata={"help": "optimizer updates to train for (§5.2: 100k for base)"})
    max_time: str | None = field(default=None, metadata={
        "help": "wall-clock budget of training, e.g. '3600', '90m', '12h' (evaluation included; resumed runs count "
                "the time already spent)"})
    save_steps: int = field(default=1000, metadata={"help": "write a checkpoint every this many updates"})
    eval_steps: int = field(default=1000, metadata={
        "help": "validation loss and BLEU every this many updates; save_steps must be a multiple of it"})
    logging_steps: int = field(default=50, metadata={"help": "log loss, lr, tokens/s every this many updates"})
    keep_last: int = field(default=5, metadata={"help": "checkpoints kept (the last K; 0 keeps all)"})
    average_last: int = field(default=5, metadata={
        "help": "at the end, average the weights of the last N snapshots (§6.1 averages the last 5 checkpoints) and "
                "keep the average as final/ only if its validation BLEU is higher than the last update's (both in "
                "run_summary.json); 0 or 1: no averaging"})
    average_every: int | None = field(default=None, metadata={
        "help": "updates between two snapshots of --average_last (default --eval_steps / --average_last: they span "
                "the last evaluation interval); checkpoints carry the snapshots, so --resume stays exact"})
    mixed_precision: Literal["no", "fp16", "bf16"] | None = field(default=None, metadata={
        "help": "mixed precision; default: what `accelerate config`/`accelerate launch` set, else 'no'"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per update"})
    lr_schedule: Literal["noam", "inverse_sqrt", "constant", "linear"] | None = field(default=None, metadata={
        "help": "learning-rate schedule: noam (§5.3; the default from scratch), inverse_sqrt (linear warmup, then "
                "1/sqrt(step); the default after --init_from), constant (linear warmup, then flat) or linear (linear "
                "warmup, then down to 0 at --max_steps)"})
    learning_rate: float | None = field(default=None, metadata={
        "help": "peak learning rate (reached at the end of the warmup); default 5e-5 after --init_from, 5e-4 for "
                "--preset tiny from scratch, else the peak of §5.3's curve, lr_scale · (d_model · warmup)^-0.5"})
    warmup_steps: int | None = field(default=None, metadata={
        "help": "updates of linear warmup (default 4000 from scratch, §5.3, 600 for --preset tiny; 500 after "
                "--init_from)"})
    lr_scale: float | None = field(default=None, metadata={
        "help": "lr = lr_scale · d_model^-0.5 · min(step^-0.5, step · warmup^-1.5) (§5.3 uses 1, the default); "
                "scales the noam curve and the default peak of the others, not a --learning_rate; given, even as 1, "
                "it puts --preset tiny back on §5.3's curve"})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam β1 (§5.3)"})
    adam_beta2: float | None = field(default=None, metadata={
        "help": "Adam β2 (default 0.98, §5.3; 0.999 for --preset tiny from scratch)"})
    adam_epsilon: float | None = field(default=None, metadata={
        "help": "Adam ε (default 1e-9, §5.3; 1e-8 for --preset tiny from scratch)"})
    adam_fused: bool = field(default=True, metadata={
        "help": "torch's fused Adam kernel: one pass over all parameters instead of a loop of per-tensor ops "
                "(same update; the step is several times cheaper on CPU); --adam_fused false for the loop"})
    clip_norm: float | None = field(default=None, metadata={
        "help": "clip the gradient norm to this (0 = no clipping; the default, 1.0 for --preset tiny from scratch)"})
    num_beams: int = DecodingOptions.field_like("num_beams", default=BEAM_SIZE)  # of BLEU at evaluation
    length_penalty: float = DecodingOptions.field_like("length_penalty")
    eval_batch_size: int = field(default=64, metadata={"help": "sentences per generation batch"})
    do_test: bool = field(default=False, metadata={
        "help": "at the end, translate the test split with the final model and put BLEU/chrF in run_summary.json"})
    report_to: Literal["tensorboard", "none"] = field(default="tensorboard", metadata={
        "help": "experiment tracker (through Accelerate)"})
    export_dtype: Literal["float32", "bfloat16"] = field(default="float32", metadata={
        "help": "dtype of the weights in final/ and best/ (checkpoints always keep the float32 master weights)"})


def model_override_fields() -> list[str]:
    """Config fields a user may set: the model's own fields, less those the tokenizer decides."""
    own = [f.name for f in fields(VanillaTransformerConfig) if f.name in VanillaTransformerConfig.__annotations__]
    return [name for name in own if name not in TOKENIZER_FIELDS + ("is_encoder_decoder", "tie_word_embeddings")]


def model_overrides(args: ModelArguments) -> dict:
    """All config overrides: the named flags first, then `--model_overrides` (which may not repeat them)."""
    named = {}
    if args.d_model is not None:
        named["d_model"] = args.d_model
    if args.layers is not None:
        named.update(encoder_layers=args.layers, decoder_layers=args.layers)
    if args.heads is not None:
        named.update(encoder_attention_heads=args.heads, decoder_attention_heads=args.heads)
    if args.ffn_dim is not None:
        named.update(encoder_ffn_dim=args.ffn_dim, decoder_ffn_dim=args.ffn_dim)
    if args.dropout is not None:
        named["dropout"] = args.dropout
    if args.label_smoothing is not None:
        named["label_smoothing"] = args.label_smoothing
    extra = parse_overrides(args.model_overrides)
    allowed = model_override_fields()
    unknown = sorted(set(extra) - set(allowed))
    if unknown:
        named_unknown = ", ".join(name + nearest(name, allowed) for name in unknown)
        raise ValueError(f"--model_overrides: unknown config field(s) {named_unknown}; known fields: "
                         f"{', '.join(allowed)}")
    repeated = sorted(set(extra) & set(named))
    if repeated:
        raise ValueError(f"--model_overrides repeats {', '.join(repeated)}, already set by its own flag")
    return {**named, **extra}


def nearest(name: str, candidates) -> str:
    """' (did you mean X?)' for the closest candidate, or ''."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def build_model_config(args: ModelArguments, vocab_size: int = DEFAULT_VOCAB_SIZE,
                       special_ids: dict | None = None) -> VanillaTransformerConfig:
    """The preset with the user's overrides and the tokenizer's vocabulary size and special ids."""
    preset = args.preset or "base"
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {args.preset!r}")
    from .init_from import small_model_overrides

    overrides = small_model_overrides(args, model_overrides(args))
    return VanillaTransformerConfig.preset(preset, **overrides, vocab_size=vocab_size,
                                           **(special_ids or {}))


def parse_duration(text: str | float | int | None) -> float | None:
    """'3600', '90s', '90m', '1.5h', '1h30m' → seconds (None stays None)."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
        if not parts or not any(parts.groups()):
            raise ValueError(f"--max_time: cannot read {text!r} as a duration (e.g. 3600, 90m, 1h30m)")
        hours, minutes, secs = (float(g) if g else 0.0 for g in parts.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise ValueError(f"--max_time must be positive, got {text!r}")
    return seconds


def validate(data: DataArguments, model: ModelArguments, train: TrainArguments) -> None:
    """Every contradiction or missing piece, found before any data is read; `UsageError` (a ValueError) naming the
    arguments.

    Fills in the Bible's default languages (es → en) when `--dataset bible` is given without them.
    """
    from .init_from import init_problems, resolve_batch, resolve_schedule

    problems = []
    resolve_schedule(model, train)
    resolve_batch(data, model)
    check_data_source(data, problems)
    check_numbers(data, train, problems)
    if model.init_from and not problems:
        problems.extend(init_problems(data, model))
    try:
        build_model_config(model)
    except (ValueError, TypeError) as error:
        problems.append(f"model: {error}")
    try:
        parse_duration(train.max_time)
    except ValueError as error:
        problems.append(str(error))
    if train.do_test and data.train_file and not data.test_file:
        problems.append("--do_test needs a --test_file (the split it translates at the end)")
    check_output_dir(train, problems)
    if train.resume and not problems:
        check_resume(model, train, problems)
    if train.resume and not problems:
        check_run_record(data, model, train, problems)
    if problems:
        raise UsageError("invalid arguments: " + "; ".join(problems))


def check_data_source(data: DataArguments, problems: list[str]) -> None:
    """Exactly one source of training data; languages known and distinct; files and tokenizer present."""
    if data.dataset and data.train_file:
        problems.append("--dataset and --train_file are mutually exclusive: give one source of training data")
    if not data.dataset and not data.train_file:
        problems.append("no training data: give --dataset (e.g. 'bible') or --train_file")
    if data.dataset and (data.validation_file or data.test_file):
        problems.append("--validation_file/--test_file go with --train_file, not with --dataset (which has splits)")
    if data.train_file and not data.validation_file:
        problems.append("--train_file needs a --validation_file (evaluation, BLEU and best/ use it)")
    if data.dataset == GETTEXT_DATASET:
        if data.source_lang is None and data.target_lang is None:
            data.source_lang, data.target_lang = BUNDLED_LANGS
        elif ENGLISH not in (data.source_lang, data.target_lang) or data.source_lang == data.target_lang:
            problems.append(f"--dataset {GETTEXT_DATASET} pairs English (the messages' msgid) with another language: "
                            f"one of --source_lang/--target_lang must be {ENGLISH}; got --source_lang "
                            f"{data.source_lang} --target_lang {data.target_lang}")
    if data.dataset == BUNDLED_DATASET:
        if data.source_lang is None and data.target_lang is None:
            data.source_lang, data.target_lang = BUNDLED_LANGS
        elif {data.source_lang, data.target_lang} != set(BUNDLED_LANGS):
            problems.append(f"--dataset {BUNDLED_DATASET} has the languages {' and '.join(BUNDLED_LANGS)}; got "
                            f"--source_lang {data.source_lang} --target_lang {data.target_lang}")
    missing = [name for name in ("source_lang", "target_lang") if not getattr(data, name)]
    if missing:
        problems.append(f"missing {' and '.join('--' + m for m in missing)}")
    elif data.source_lang == data.target_lang:
        problems.append(f"--source_lang and --target_lang are both {data.source_lang!r}")
    for split in ("train", "validation", "test"):
        for name in (f"{split}_file", f"{split}_target_file"):
            path = getattr(data, name)
            if path and not Path(path).is_file():
                problems.append(f"--{name} {path} {not_a_file(Path(path))}")
        if getattr(data, f"{split}_target_file") and not getattr(data, f"{split}_file"):
            problems.append(f"--{split}_target_file needs --{split}_file (the source side)")
    if data.data_cache_dir:
        problem = writable_folder_problem(Path(data.data_cache_dir), "--data_cache_dir")
        if problem:
            problems.append(problem)
    if data.tokenizer is not None and data.tokenizer == getattr(data, "init_from_tokenizer", None):
        pass  # the starting model's own, checked with it (`init_from.init_problems`)
    elif data.tokenizer is not None:
        if not Path(data.tokenizer).is_dir():
            problems.append(f"--tokenizer {data.tokenizer} is not a directory")
        elif not any((Path(data.tokenizer) / name).is_file() for name in TOKENIZER_FILES):
            problems.append(f"--tokenizer {data.tokenizer} holds no tokenizer (no {' or '.join(TOKENIZER_FILES)}); "
                            "give a folder written by tokenizer.save_pretrained, or leave --tokenizer out to train one")
        else:
            problems.extend(tokenizer_problems(data.tokenizer))
        if data.vocab_size is not None:
            problems.append("--vocab_size and --tokenizer contradict each other: the tokenizer has its own vocabulary")


# The special tokens training needs: (attribute, what it is, what the model does with it).
NEEDED_TOKENS = (("eos_token", "end-of-sentence", "the model could never end a translation"),
                 ("pad_token", "padding", "batches of different lengths cannot be formed"),
                 ("bos_token", "beginning-of-sentence", "the decoder starts every translation from it"))


def tokenizer_problems(folder: str) -> list[str]:
    """What the tokenizer in `folder` lacks for training: an unreadable tokenizer, or a missing end-of-sentence,
    padding or beginning-of-sentence token."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as error:  # noqa: BLE001  (whatever transformers says about a broken folder, in one line)
        return [f"--tokenizer {folder} cannot be loaded ({' '.join(str(error).split())})"]
    return [f"--tokenizer {folder} has no {meaning} token ({name}): {why}; set {name} in its tokenizer_config.json "
            "(tokenizer.add_special_tokens) or give another tokenizer"
            for name, meaning, why in NEEDED_TOKENS if getattr(tokenizer, f"{name}_id", None) is None]


def not_a_file(path: Path) -> str:
    """Why an existing or missing path is not a data file, as the end of a sentence naming it."""
    if not path.exists():
        return "does not exist"
    if path.is_dir():
        return "is a directory, not a data file"
    return "is not a regular file (a device, a pipe or a socket); give a data file"


def check_numbers(data: DataArguments, train: TrainArguments, problems: list[str]) -> None:
    """Positive counts, sensible probabilities, and save_steps a multiple of eval_steps."""
    positive = {"--max_length": data.max_length, "--max_tokens": data.max_tokens, "--max_steps": train.max_steps,
                "--save_steps": train.save_steps, "--eval_steps": train.eval_steps,
                "--logging_steps": train.logging_steps,
                "--gradient_accumulation_steps": train.gradient_accumulation_steps, "--num_beams": train.num_beams,
                "--eval_batch_size": train.eval_batch_size}
    if data.vocab_size is not None:
        positive["--vocab_size"] = data.vocab_size
    for group in (data, train):
        for item in fields(group):
            value = getattr(group, item.name)
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"--{item.name} must be a finite number, got {value}")
    problems.extend(f"{name} must be positive, got {value}" for name, value in positive.items() if value <= 0)
    if data.vocab_size is not None and 0 < data.vocab_size < MIN_VOCAB_SIZE:
        problems.append(f"--vocab_size {data.vocab_size} is below the {MIN_VOCAB_SIZE} tokens every vocabulary holds "
                        "(special tokens, the base alphabet and the 256 byte tokens): use at least that")
    if train.lr_scale is not None and train.lr_scale <= 0:
        problems.append(f"--lr_scale must be positive, got {train.lr_scale}")
    if train.lr_schedule in (None, "noam") and train.warmup_steps is not None and train.warmup_steps <= 0:
        problems.append(f"--warmup_steps must be positive, got {train.warmup_steps} (the noam schedule divides by it; "
                        "the other --lr_schedule values take 0)")
    elif train.warmup_steps is not None and train.warmup_steps < 0:
        problems.append(f"--warmup_steps must be >= 0, got {train.warmup_steps}")
    if train.learning_rate is not None and train.learning_rate < 0:
        problems.append(f"--learning_rate must be >= 0, got {train.learning_rate}")
    if train.learning_rate is not None and train.lr_scale not in (None, 1.0):
        problems.append("--lr_scale and --learning_rate contradict each other: --lr_scale scales the §5.3 curve, "
                        "--learning_rate sets the peak; give one")
    if train.average_every is not None and train.average_every <= 0:
        problems.append(f"--average_every must be positive, got {train.average_every}")
    for name in ("keep_last", "clip_norm", "average_last"):
        if getattr(train, name) < 0:
            problems.append(f"--{name} must be >= 0, got {getattr(train, name)}")
    if data.tokenizer_sample < 0:
        problems.append(f"--tokenizer_sample must be >= 0 (0 = all pairs), got {data.tokenizer_sample}")
    if data.eval_samples < 0:
        problems.append(f"--eval_samples must be >= 0 (0 = all), got {data.eval_samples}")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0 <= getattr(train, name) < 1:
            problems.append(f"--{name} must be in [0, 1), got {getattr(train, name)}")
    if train.adam_epsilon <= 0:
        problems.append(f"--adam_epsilon must be positive, got {train.adam_epsilon}")
    if train.save_steps > 0 and train.eval_steps > 0 and train.save_steps % train.eval_steps:
        problems.append(f"--save_steps ({train.save_steps}) must be a multiple of --eval_steps ({train.eval_steps}), "
                        "so that every checkpoint records a fresh validation score")
    if data.max_tokens > 0 and data.max_length > data.max_tokens:
        problems.append(f"--max_length ({data.max_length}) is larger than --max_tokens ({data.max_tokens}): the "
                        "longest pairs would not fit in a batch")


def writable_folder_problem(path: Path, flag: str) -> str | None:
    """Why `path` cannot become (or is not) a writable folder, or None."""
    existing = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), None)
    if existing is None:
        return None
    if not existing.is_dir():
        what = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        return f"{flag} {path} {what}; give a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" ({existing} is read-only)"
        return f"{flag} {path} is not writable{where}; give a folder you can write to"
    return None


def check_output_dir(train: TrainArguments, problems: list[str]) -> None:
    """Never silently overwrite a run, never 'resume' nothing, never write where a user file is in the way."""
    from .checkpoints import latest_checkpoint
    from ..base.outputs import MODEL_FOLDER_FILES, is_owned_model_file

    output_dir = Path(train.output_dir)
    problem = writable_folder_problem(output_dir, "--output_dir")
    if problem:
        problems.append(problem)
        return
    if train.resume and train.overwrite_output_dir:
        problems.append("--resume and --overwrite_output_dir contradict each other")
    existing = latest_checkpoint(output_dir)
    if train.resume and existing is None:
        problems.append(f"--resume: no checkpoint-<step> folder in --output_dir {output_dir}")
    if not train.resume and not train.overwrite_output_dir and existing is not None:
        problems.append(f"--output_dir {output_dir} already holds {Path(existing).name}: pass --resume to "
                        "continue it or --overwrite_output_dir to start afresh")
    for name in ("best", "final", "tokenizer", "runs"):
        path = output_dir / name
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            problems.append(f"--output_dir {output_dir}: {path} is a file, where the run writes its {name}/ folder; "
                            "move it away")
        elif name in ("best", "final") and path.is_dir():
            clashes = sorted(e.name for e in path.iterdir()
                             if e.name in MODEL_FOLDER_FILES and not is_owned_model_file(path, e.name))
            if clashes:
                problems.append(f"--output_dir {output_dir}: {path} holds {', '.join(clashes)} not written by "
                                f"vanilla-transformer, which the run's {name}/ model would replace; move them away")


def check_resume(model: ModelArguments, train: TrainArguments, problems: list[str]) -> None:
    """`--resume` needs a complete checkpoint (every state file there, at the size written) made for the same
    model as the one the arguments describe."""
    from .checkpoints import resumable_checkpoint

    checkpoint, passed_over = resumable_checkpoint(train.output_dir)
    if checkpoint is None:
        problems.append(f"--resume: no complete checkpoint in --output_dir {train.output_dir} ("
                        f"{'; '.join(passed_over)}); start afresh with --overwrite_output_dir")
        return
    from .init_from import initial_config

    try:
        saved = VanillaTransformerConfig.from_pretrained(checkpoint).to_dict()  # every field, defaults included
        wanted = (initial_config(model) if model.init_from else build_model_config(model)).to_dict()
    except (OSError, ValueError, TypeError):
        return  # no config to compare (an older checkpoint) or a bad model argument, reported elsewhere
    changed = [f"{name} {saved[name]} there, {wanted[name]} now" for name in model_override_fields()
               if name in saved and name in wanted and saved[name] != wanted[name]]
    if changed:
        problems.append(f"--resume: {checkpoint.name} was trained with another model ({'; '.join(changed)}): give the "
                        "model arguments of the run being resumed")


def check_run_record(data: DataArguments, model: ModelArguments, train: TrainArguments, problems: list[str]) -> None:
    """`--resume` continues the run its checkpoint recorded (`run_record`): other data, tokenizer, seed, schedule,
    batches... are refused, each named `old → new`; so is a `--max_steps` below the checkpoint's step."""
    from .checkpoints import read_state, resumable_checkpoint
    from .run_record import resume_problems, run_record

    checkpoint, _ = resumable_checkpoint(train.output_dir)
    if checkpoint is None:
        return  # said by check_resume
    try:
        state = read_state(checkpoint)
    except (OSError, ValueError):
        return  # then the checkpoint is not complete either
    from .init_from import extend_record, record_differences

    record = extend_record(run_record(data, train, DEFAULT_VOCAB_SIZE), model, train)
    problems.extend(resume_problems(checkpoint, state, record))
    if isinstance(state.get("run"), dict):
        refused = record_differences(state["run"], record)
        if refused:
            problems.append(f"--resume: {checkpoint.name} was trained with other settings ({'; '.join(refused)})")
    if not isinstance(state.get("run"), dict):  # a checkpoint from before runs were recorded: check the vocabulary
        problems.extend(vocabulary_problems(checkpoint, data, train))


def vocabulary_problems(checkpoint: Path, data: DataArguments, train: TrainArguments) -> list[str]:
    """The tokenizer `--resume` would use must have the checkpoint model's vocabulary size (else the weights do not
    even load)."""
    from transformers import AutoTokenizer

    from .run_record import tokenizer_folder

    folder = tokenizer_folder(data, train.output_dir)
    try:
        saved = VanillaTransformerConfig.from_pretrained(checkpoint).vocab_size
        size = len(AutoTokenizer.from_pretrained(folder))
    except Exception:  # noqa: BLE001  (no config or tokenizer to compare: loading says what is wrong)
        return []
    if size == saved:
        return []
    return [f"--resume: {checkpoint.name} was trained with a vocabulary of {saved} tokens, the tokenizer in {folder} "
            f"has {size}: give the run's own tokenizer"]


def arguments_dict(*groups) -> dict:
    """All arguments as one flat dict (for run_summary.json and TensorBoard's hparams)."""
    return {f.name: getattr(group, f.name) for group in groups for f in fields(group)}
