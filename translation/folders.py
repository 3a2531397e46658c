"""Model folders: what is wrong with one (one line naming the file, before anything loads) and loading one as an
engine. Every command that reads a model folder, and `serve`, asks `model_folder_problem` first; `load_engine` (or
`deployment.engines.load_engine` for CTranslate2 exports too) also checks that the folder's tokenizer belongs to its
model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..base.outputs import MODEL_TYPE, TOKENIZER_FILES
from ..configuration.configuration_vanilla_transformer import VanillaTransformerConfig
from .engine import TransformersEngine


def load_model_and_tokenizer(model_dir: str, device: str | None = None):
    """A saved model folder (exported, best/, averaged or a checkpoint) in eval mode, with its tokenizer."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from .. import modeling  # noqa: F401  (registers the Auto classes)

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer


def load_engine(model_dir: str, device: str | None = None) -> TransformersEngine:
    """The transformers engine of a model folder; ValueError when its tokenizer does not belong to the model."""
    model, tokenizer = load_model_and_tokenizer(model_dir, device)
    mismatch = tokenizer_mismatch(tokenizer, model.config)
    if mismatch:
        raise ValueError(f"{model_dir}: the tokenizer does not belong to the model ({mismatch}): the folder mixes "
                         "files of different models; write it again")
    generation = model.generation_config
    if generation is not None and generation.max_length == model.config.max_position_embeddings:
        # Exports before the translation layer saved this cap, which switched the model's §6.1 rule off; the engine
        # gives every sentence its own limit, and the cap would only make transformers warn about both being set.
        generation.max_length = type(generation)().max_length
    return TransformersEngine(model, tokenizer)


def device_problem(device: str | None) -> str | None:
    """Why `--device` cannot be used on this machine, or None."""
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps, ...)"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            return f"--device {device}: CUDA is not available on this machine; use --device cpu"
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            return f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {device}: MPS is not available on this machine; use --device cpu"
    return None


# What `vanilla-transformer export --format ctranslate2` writes besides CTranslate2's own config.json.
CTRANSLATE2_MARKERS = ("model.bin", "decoding.json")


def config_problem(folder: str, role: str = "MODEL_DIR", ctranslate2_hint: str = "") -> str | None:
    """Why `folder` holds no config.json of our model, or None: not a folder, a training run's folder, a tokenizer
    folder, a CTranslate2 export, a config.json that is not JSON, not an object, of no or another model_type, or
    with values our config refuses. One line naming the file and what to give instead."""
    path = Path(folder)
    if not path.is_dir():
        return f"{role} {folder} is not a directory"
    config_file = path / "config.json"
    model_folders = "final/, best/, a checkpoint or an averaged model"
    if all((path / name).is_file() for name in CTRANSLATE2_MARKERS):
        return f"{role} {folder} is a CTranslate2 export, not a model folder{ctranslate2_hint}"
    if not config_file.is_file():
        if any((path / name).is_dir() for name in ("final", "best")) or any(path.glob("checkpoint-*")):
            return f"{role} {folder} is a training run's --output_dir, not a model folder (no config.json): give its " \
                   "final/ or best/ (or a checkpoint-<step>/)"
        if any((path / name).is_file() for name in TOKENIZER_FILES):
            return f"{role} {folder} holds a tokenizer but no model (no config.json): give {model_folders}"
        return f"{role} {folder} is not a model folder (no config.json): give {model_folders}"
    try:
        values = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return f"{config_file} cannot be read as JSON ({one_line_text(error)}): the folder is damaged; write it again"
    if not isinstance(values, dict):
        return f"{config_file} holds a JSON {type(values).__name__}, not the object a model config is: the folder " \
               "is damaged; write it again"
    model_type = values.get("model_type")
    if model_type != MODEL_TYPE:
        what = "has no model_type" if model_type is None else f"is the config of a {model_type!r} model"
        hint = " (bring an OPUS-MT model in with `vanilla-transformer convert-marian`)" if model_type == "marian" \
            else ""
        return f"{config_file} {what}, not of a {MODEL_TYPE} model: give {model_folders}{hint}"
    try:
        VanillaTransformerConfig.from_dict(values)
    except Exception as error:  # noqa: BLE001  (whatever the config refuses, said in one line)
        return f"{config_file} is not a valid {MODEL_TYPE} config: {one_line_text(error)}"
    return None


def weights_problem(folder: str) -> str | None:
    """Why the weights of `folder` (model.safetensors, or the shards its index lists) do not fit its config.json,
    or None: an unreadable file, a tensor of another shape (say a `vocab_size` edited by hand), a missing tensor.
    Read from the files' headers and a model built on the meta device: no weights are loaded."""
    from safetensors import safe_open

    from ..modeling import VanillaTransformerForConditionalGeneration

    path = Path(folder)
    config = VanillaTransformerConfig.from_pretrained(path)
    index = path / "model.safetensors.index.json"
    if (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    elif index.is_file():
        try:
            files = sorted({path / name for name in json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                            .values()})
        except (OSError, UnicodeDecodeError, ValueError, KeyError, AttributeError, TypeError) as error:
            return f"{index} cannot be read ({one_line_text(error)}): the folder is damaged; write it again"
    else:
        return f"{folder} holds no weights (no model.safetensors): give a folder written by save_pretrained"
    shapes = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as weights:
                shapes.update({key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()})
        except Exception as error:  # noqa: BLE001  (SafetensorError, OSError: a damaged or missing file)
            return f"{file} cannot be read ({one_line_text(error)}): the file is damaged or incomplete; write it again"
    with torch.device("meta"):
        model = VanillaTransformerForConditionalGeneration(config)
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    for key, shape in expected.items():
        if key in shapes and shapes[key] != shape:
            return f"{folder}: the weights do not fit config.json ({key} has shape {shapes[key]} in the weights, " \
                   f"config.json (vocab_size {config.vocab_size}, d_model {config.d_model}) makes it {shape}): the " \
                   "files come from different models; write the folder again"
    missing = sorted(key for key in expected if key not in shapes and key not in tied)
    if missing:
        return f"{folder}: the weights lack {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''} that " \
               "config.json needs: the files come from different models; write the folder again"
    return None


def model_folder_problem(model_dir: str, role: str = "MODEL_DIR", ctranslate2_hint: str = ": add --engine ctranslate2",
                         with_tokenizer: bool = True) -> str | None:
    """Why `model_dir` is not a model folder to load, or None: `config_problem`, then `weights_problem`, then (unless
    the tokenizer comes from elsewhere) `tokenizer_problem`. Every command that loads a model folder asks this first,
    so that a broken folder is one line, not a traceback."""
    return (config_problem(model_dir, role, ctranslate2_hint) or weights_problem(model_dir)
            or (tokenizer_problem(model_dir) if with_tokenizer else None))


def tokenizer_problem(model_dir: str) -> str | None:
    """Why the tokenizer of `model_dir` cannot translate for its model, or None: missing, unreadable, or of another
    model (`tokenizer_mismatch`: a copied-in tokenizer of another vocabulary decodes garbage without a word)."""
    from transformers import AutoTokenizer

    if not any((Path(model_dir) / name).is_file() for name in TOKENIZER_FILES):
        return f"{model_dir} holds no tokenizer ({' or '.join(TOKENIZER_FILES)}): copy in the tokenizer the model " \
               "was trained with"
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except Exception as error:  # noqa: BLE001  (whatever the tokenizer files hold, said in one line)
        return f"{model_dir}: the tokenizer cannot be loaded ({one_line_text(error)}): the folder is damaged"
    mismatch = tokenizer_mismatch(tokenizer, VanillaTransformerConfig.from_pretrained(model_dir))
    if mismatch:
        return f"{model_dir}: the tokenizer does not belong to the model ({mismatch}): the folder mixes files of " \
               "different models; put the model's own tokenizer back"
    return None


# A model's vocabulary may be the tokenizer's rounded up (to a multiple of 8 or 64, for fast matrix products).
VOCABULARY_ROUNDING = 64


def vocabulary_size_mismatch(tokens: int, vocab_size: int) -> str | None:
    """How a tokenizer of `tokens` tokens disagrees with a model vocabulary of `vocab_size`, or None: it may not
    make ids the model cannot embed, nor leave more of the vocabulary unused than rounding up would."""
    if tokens > vocab_size or vocab_size > -(-tokens // VOCABULARY_ROUNDING) * VOCABULARY_ROUNDING:
        return f"it has {tokens} tokens, the model's vocabulary {vocab_size}"
    return None


def tokenizer_mismatch(tokenizer, config) -> str | None:
    """How `tokenizer` disagrees with the model `config` (vocabulary size, special ids), or None."""
    size = vocabulary_size_mismatch(len(tokenizer), config.vocab_size)
    if size:
        return size
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        ours, theirs = getattr(tokenizer, name, None), getattr(config, name, None)
        allowed = theirs if isinstance(theirs, list) else [theirs]
        if theirs is not None and ours not in allowed:
            return f"its {name} is {ours}, the model's {theirs}"
    return None


def one_line_text(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
