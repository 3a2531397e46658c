"""`train --init_from MODEL`: start a run from a trained model instead of random weights (fine-tuning, domain
adaptation; fairseq's `--restore-file --reset-optimizer`, OpenNMT-py's `train_from`, Marian's `--pretrained-model`).

MODEL is a model folder (`final/`, `best/`, an averaged model), a checkpoint folder (`checkpoint-<step>/` of a run:
only its weights, config and tokenizer are taken, never its optimizer or counters), a converted OPUS-MT folder
(`convert-marian`), or a Hub model id (downloaded with `huggingface_hub.snapshot_download`, the cache
`from_pretrained` uses). Weights, config and tokenizer come from it; the optimizer and the schedule start afresh.

What would change the model's shape or vocabulary is refused (`init_problems`, one line naming every such argument);
regularisation (`REGULARISATION`: dropout, attention/activation dropout, label smoothing) may change. The run's
record (in every checkpoint) and `run_summary.json` hold the starting model's identity (`source_identity`: what was
given, the folder read, a SHA-256 of its weight files), and `--resume` refuses a starting model whose weights changed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .overrides import parse_overrides

# Config fields --init_from lets a run change (they scale no tensor and touch no vocabulary).
REGULARISATION = ("dropout", "attention_dropout", "activation_dropout", "label_smoothing")

# Defaults after --init_from (see docs/training.md, "Fine-tuning"): fairseq's fine-tuning recipes (BART, mBART) and
# Marian's (OPUS-MT adaptation) use an inverse-square-root or constant rate of a few 1e-5 with a short warmup: the
# fresh Adam moments need a few hundred updates before the full rate, but a trained model needs no 4000-update ramp.
FINE_TUNING_SCHEDULE = "inverse_sqrt"
FINE_TUNING_LEARNING_RATE = 5e-5
FINE_TUNING_WARMUP = 500
SCRATCH_SCHEDULE = "noam"
SCRATCH_WARMUP = 4000  # §5.3
SCRATCH_MAX_TOKENS = 4096
# §5.3's optimizer, the default of every run but the small-model recipe's.
PAPER_OPTIMIZER = {"adam_beta2": 0.98, "adam_epsilon": 1e-9, "clip_norm": 0.0}
# The small-model recipe (`--preset tiny` from scratch; docs/training.md, "Which recipe a preset gets"), measured
# against transformers' stock Seq2SeqTrainer recipe by benchmarks/recipe_race.py: §5.3's 4000-update warmup is half
# an hour of a 6M-parameter model on two CPU cores, and 4096-token batches give it fewer updates for the same tokens
# than 2500-token ones. §5.3's peak rate at width 256 (2.6e-3) and Glorot-uniform weights were tuned for base/big on
# 4.5M pairs; this model learns faster from N(0, 0.02) weights (BERT's and Marian's initialisation) with a peak of
# 5e-4, Adam β2 0.999, ε 1e-8 and the gradient clipped to norm 1 (the race: +3 BLEU at 20 minutes from the
# initialisation, +1 from the optimizer).
SMALL_PRESETS = ("tiny",)
SMALL_WARMUP = 600
SMALL_MAX_TOKENS = 2500
SMALL_LEARNING_RATE = 5e-4
SMALL_OPTIMIZER = {"adam_beta2": 0.999, "adam_epsilon": 1e-8, "clip_norm": 1.0}
SMALL_INIT_STD = 0.02

# The Hub download takes these files (the weights, config, generation config and any tokenizer's files).
HUB_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.spm", "*.vocab")


def small_model(model_args) -> bool:
    """Whether the run gets the small-model recipe: a small preset, trained from scratch."""
    return not getattr(model_args, "init_from", None) and getattr(model_args, "preset", None) in SMALL_PRESETS


def resolve_schedule(model_args, train) -> None:
    """Fill in the schedule and optimizer defaults, which depend on --init_from and the preset (idempotent): `noam`
    with 4000 warmup updates and §5.3's Adam from scratch; for the small presets a peak of 5e-4 after 600 warmup
    updates, Adam β2 0.999, ε 1e-8 and clipping at norm 1 (a given --lr_scale keeps the §5.3 curve); `inverse_sqrt`
    at 5e-5 after 500 warmup updates from a trained model."""
    tuned, small = bool(getattr(model_args, "init_from", None)), small_model(model_args)
    if train.lr_schedule is None:
        train.lr_schedule = FINE_TUNING_SCHEDULE if tuned else SCRATCH_SCHEDULE
    if train.warmup_steps is None:
        scratch = SMALL_WARMUP if small else SCRATCH_WARMUP
        train.warmup_steps = FINE_TUNING_WARMUP if tuned else scratch
    if train.learning_rate is None and tuned:
        train.learning_rate = FINE_TUNING_LEARNING_RATE
    elif train.learning_rate is None and small and train.lr_scale is None:
        train.learning_rate = SMALL_LEARNING_RATE
    if train.lr_scale is None:
        train.lr_scale = 1.0
    for name, value in (SMALL_OPTIMIZER if small else PAPER_OPTIMIZER).items():
        if getattr(train, name) is None:
            setattr(train, name, value)


def small_model_overrides(model_args, overrides: dict) -> dict:
    """The config overrides with the small-model recipe's initialisation, N(0, 0.02), unless the user set init_std."""
    if small_model(model_args) and "init_std" not in overrides:
        return {**overrides, "init_std": SMALL_INIT_STD}
    return overrides


def resolve_batch(data, model_args) -> None:
    """Fill in --max_tokens (idempotent): 2500 for the small presets from scratch, else 4096."""
    if data.max_tokens is None:
        data.max_tokens = SMALL_MAX_TOKENS if small_model(model_args) else SCRATCH_MAX_TOKENS


def is_local(init_from: str) -> bool:
    path = Path(init_from)
    return path.exists() or init_from.startswith((".", "/", "~")) or "\\" in init_from or init_from.count("/") > 1


def resolve_source(init_from: str) -> Path:
    """The local folder of MODEL: itself, or the Hub snapshot of a model id (ValueError in one line when neither)."""
    if is_local(init_from):
        if not Path(init_from).expanduser().exists():
            raise ValueError(f"--init_from {init_from}: no such folder (give a model folder, a checkpoint-<step>/ "
                             "folder, a convert-marian output or a Hub model id)")
        return Path(init_from).expanduser()
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(init_from)
    except HFValidationError:
        raise ValueError(f"--init_from {init_from}: no such folder, and not a Hub model id") from None
    try:
        return Path(snapshot_download(init_from, allow_patterns=list(HUB_PATTERNS)))
    except Exception as error:  # noqa: BLE001  (network, missing repo, offline cache miss: one line)
        raise ValueError(f"--init_from {init_from}: no such folder, and the Hub gives no such model "
                         f"({' '.join(str(error).split())[:300]})") from None


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def weights_sha256(folder: Path) -> str | None:
    """SHA-256 over the names and bytes of the folder's .safetensors files (what `sha256sum` of the one
    model.safetensors would not give for shards; for one file it is over its name and bytes)."""
    digest, files = hashlib.sha256(), weight_files(folder)
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest() if files else None


def source_identity(init_from: str, folder: Path) -> dict:
    """What the run started from: as given, the folder read, the hash of its weights, the model type and size."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return {"name": init_from, "path": str(folder.resolve()), "weights_sha256": weights_sha256(folder),
            "kind": source_kind(folder),
            "config": {k: config.get(k) for k in ("d_model", "encoder_layers", "decoder_layers", "vocab_size")}}


def source_kind(folder: Path) -> str:
    if (folder / "trainer_state.json").is_file():
        return "checkpoint"
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file() and "MarianTokenizer" in tokenizer_config.read_text(encoding="utf-8"):
        return "converted OPUS-MT (Marian)"
    return "model folder"


# What the user set that --init_from cannot honour: (argument, is it set?).
def refused_arguments(data, model_args) -> list[str]:
    named = {"--preset": model_args.preset, "--d_model": model_args.d_model, "--layers": model_args.layers,
             "--heads": model_args.heads, "--ffn_dim": model_args.ffn_dim, "--vocab_size": data.vocab_size,
             "--tokenizer": None if data.tokenizer == getattr(data, "init_from_tokenizer", None) else data.tokenizer}
    refused = [name for name, value in named.items() if value is not None]
    try:
        overrides = parse_overrides(model_args.model_overrides)
    except ValueError:
        overrides = {}  # said by build_model_config
    refused += [f"--model_overrides {key}" for key in overrides if key not in REGULARISATION]
    return refused


def init_problems(data, model_args) -> list[str]:
    """Why --init_from cannot start this run (one string per problem), and, when it can, point `--tokenizer` at the
    starting model's folder (so `prepare` and the data cache tokenize with its tokenizer)."""
    from ..translation.folders import model_folder_problem

    refused = refused_arguments(data, model_args)
    if refused:
        return [f"--init_from {model_args.init_from} takes the model's shape and vocabulary from it; refused: "
                f"{', '.join(refused)} (only regularisation may change: --dropout, --label_smoothing, "
                f"--model_overrides {'/'.join(REGULARISATION[1:3])})"]
    try:
        folder = resolve_source(model_args.init_from)
    except ValueError as error:
        return [str(error)]
    problem = model_folder_problem(str(folder), role="--init_from", ctranslate2_hint="")
    if problem:
        return [problem if problem.startswith("--init_from") else f"--init_from: {problem}"]
    data.tokenizer = data.init_from_tokenizer = str(folder)
    return []


def regularisation(model_args) -> dict:
    """The regularisation the run sets: --dropout, --label_smoothing and those of --model_overrides."""
    try:
        changes = {key: value for key, value in parse_overrides(model_args.model_overrides).items()
                   if key in REGULARISATION}
    except ValueError:
        changes = {}  # said by `arguments.validate`
    for name in ("dropout", "label_smoothing"):
        if getattr(model_args, name) is not None:
            changes[name] = getattr(model_args, name)
    return changes


def load_initial_model(model_args, folder: Path):
    """The starting model in float32 (whatever dtype its folder holds), its regularisation overridden."""
    import torch

    from ..modeling import VanillaTransformerForConditionalGeneration

    changes = regularisation(model_args)
    return VanillaTransformerForConditionalGeneration.from_pretrained(folder, torch_dtype=torch.float32, **changes)


def initial_config(model_args):
    """The config of the starting model with the run's regularisation (what --resume compares its checkpoint to)."""
    from ..configuration.configuration_vanilla_transformer import VanillaTransformerConfig

    return VanillaTransformerConfig.from_pretrained(resolve_source(model_args.init_from), **regularisation(model_args))


def extend_record(record: dict, model_args, train) -> dict:
    """Add the starting model's identity and the schedule to a run record (see run_record.py)."""
    init_from = getattr(model_args, "init_from", None)
    record["init_from"] = source_identity(init_from, resolve_source(init_from)) if init_from else None
    record["schedule"] = {"lr_schedule": train.lr_schedule, "learning_rate": train.learning_rate}
    return record


def record_differences(old: dict, new: dict) -> list[str]:
    """What --resume refuses beyond `run_record.differences`: another starting model, another schedule, and a
    changed --max_steps under the linear schedule (which decays to 0 at --max_steps)."""
    refused = []
    before, after = old.get("init_from"), new.get("init_from")
    if "init_from" in old and (before or {}).get("weights_sha256") != (after or {}).get("weights_sha256"):
        shown = [f"{x['name']} (weights {x['weights_sha256'][:12]})" if x else "(random weights)"
                 for x in (before, after)]
        refused.append(f"--init_from {shown[0]} → {shown[1]}")
    for name, value in (new.get("schedule") or {}).items():
        previous = (old.get("schedule") or {}).get(name, value)
        if previous != value:
            refused.append(f"--{name} {previous} → {value}")
    if (new.get("schedule") or {}).get("lr_schedule") == "linear":
        steps = [record.get("arguments", {}).get("max_steps") for record in (old, new)]
        if None not in steps and steps[0] != steps[1]:
            refused.append(f"--max_steps {steps[0]} → {steps[1]} (the linear schedule decays to 0 at --max_steps)")
    return refused
