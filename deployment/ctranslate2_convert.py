"""Deploy with CTranslate2: export a trained model (running the export: `ctranslate2_runtime`).

CTranslate2 (https://opennmt.net/CTranslate2) is the C++ engine most self-hosted machine translation runs on (OPUS-MT
deployments, Argos Translate / LibreTranslate). Its `TransformerSpec` describes the paper's encoder–decoder, so our
weights map onto it one to one, through its public converter API (`ctranslate2.converters.Converter`):

* the shared embedding matrix is the encoder embedding, the decoder embedding and the output projection (§3.4),
  stored once; `final_logits_bias` becomes the projection's bias; embeddings are scaled by √d_model or 1;
* the sinusoidal positions (§3.5) are written out as a table, so both layouts — the paper's interleaved one and
  [sin | cos] — are exact; the table holds `max_positions` rows (default: max_position_embeddings + 50, enough for
  the longest source `generate` expects plus the §6.1 output allowance);
* self-attention's Q, K, V matrices become CTranslate2's fused [Q; K; V] matrix, encoder–decoder attention's K, V
  its fused [K; V] matrix (concatenated along the output dimension: the same numbers); post-norm or pre-norm with its final LayerNorms and their ε; any layer and head
  counts, encoder and decoder FFN sizes; ReLU, GELU (erf or tanh), Swish/SiLU, quick-GELU, sigmoid, tanh.
  Any other activation is refused with an error naming `activation_function`.

The vocabulary comes from the model's tokenizer (ids in order; placeholders `<unused_i>` fill ids the tokenizer does
not use), with the decoder start, end and unknown tokens of the model config. The exported folder also holds the
tokenizer (`tokenizer/`) and `decoding.json` (what the runner carries over from the generation config: suppressed
tokens, end tokens, the end token forced at the length limit), so `CTranslate2Translator(folder)` needs nothing else.

    vanilla-transformer export MODEL_DIR OUT --format ctranslate2 [--quantization int8]
    vanilla-transformer translate OUT --engine ctranslate2 "Hola."

`--quantization int8` writes ±63 weights (see INT8_WEIGHT_LIMIT in `ctranslate2_runtime`): CTranslate2's own ±127 ones
saturate in the int8 kernels of x86 CPUs without VNNI (AVX2-only AMD and Intel servers).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from ..base.files import write_json
from ..base.outputs import OutputPathError, foreign_entries, same_or_nested, staged_folder
from ..modeling.modeling_vanilla_transformer import EXTRA_OUTPUT_TOKENS, sinusoidal_table
from .ctranslate2_runtime import (DECODING_FILE, INT8_WEIGHT_LIMIT, TOKENIZER_DIR,  # first: says when CTranslate2
                                  ctranslate2)  # is missing

from ctranslate2.converters import Converter  # noqa: E402
from ctranslate2.specs import transformer_spec  # noqa: E402
from ctranslate2.specs.common_spec import Activation  # noqa: E402
from ctranslate2.specs.model_spec import visit_spec  # noqa: E402

logger = logging.getLogger(__name__)

PLACEHOLDER = "<unused_{}>"
QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32")

REDUCED_RANGE_INT8 = ("int8", "int8_float32")

# Our `activation_function` names (transformers' ACT2FN) → CTranslate2's activation computing the same formula.
ACTIVATIONS = {
    "relu": Activation.RELU,
    "gelu": Activation.GELU,  # erf form
    "gelu_python": Activation.GELU,
    "gelu_new": Activation.GELUTanh,  # tanh approximation
    "gelu_fast": Activation.GELUTanh,
    "gelu_pytorch_tanh": Activation.GELUTanh,
    "gelu_python_tanh": Activation.GELUTanh,
    "quick_gelu": Activation.GELUSigmoid,  # x · sigmoid(1.702 x)
    "swish": Activation.SWISH,
    "silu": Activation.SWISH,
    "sigmoid": Activation.Sigmoid,
    "tanh": Activation.Tanh,
}


# ---------------------------------------------------------------------------------------------------------------------
# Vocabulary and special tokens
# ---------------------------------------------------------------------------------------------------------------------


def vocabulary_tokens(tokenizer, vocab_size: int) -> list[str]:
    """The token string of every id 0..vocab_size-1; ids the tokenizer does not use get unique placeholders."""
    vocab = tokenizer.get_vocab()
    if max(vocab.values(), default=-1) >= vocab_size:
        raise ValueError(f"the tokenizer has ids up to {max(vocab.values())} but the model's vocab_size is "
                         f"{vocab_size}: vocab_size must cover every tokenizer id")
    tokens: list[str | None] = [None] * vocab_size
    for token, token_id in vocab.items():
        if tokens[token_id] is not None:
            raise ValueError(f"the tokenizer maps both {tokens[token_id]!r} and {token!r} to id {token_id}")
        tokens[token_id] = token
    taken = set(vocab)
    for token_id, token in enumerate(tokens):
        if token is None:
            placeholder = PLACEHOLDER.format(token_id)
            while placeholder in taken:
                placeholder = "<" + placeholder + ">"
            tokens[token_id] = placeholder
            taken.add(placeholder)
    return tokens


def special_tokens(config, tokens: list[str], tokenizer=None) -> dict:
    """CTranslate2's special-token config (decoder start, end, unknown, bos) as strings of `tokens`."""
    if config.decoder_start_token_id is None:
        raise ValueError("decoder_start_token_id is not set: CTranslate2 needs the token decoding starts from")
    if config.eos_token_id is None:
        raise ValueError("eos_token_id is not set: CTranslate2 needs the token that ends a translation")
    eos_ids = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    unk = getattr(tokenizer, "unk_token", None) if tokenizer is not None else None
    if unk is None:
        unk = "<unk>"
    if unk not in tokens:
        raise ValueError(f"the unknown token {unk!r} is not in the vocabulary: CTranslate2 needs one (set the "
                         "tokenizer's unk_token)")
    start = tokens[config.decoder_start_token_id]
    return {
        "decoder_start_token": start,
        "bos_token": tokens[config.bos_token_id] if config.bos_token_id is not None else start,
        "eos_token": tokens[eos_ids[0]],
        "unk_token": unk,
        "end_tokens": [tokens[i] for i in eos_ids],
    }


# ---------------------------------------------------------------------------------------------------------------------
# The model spec
# ---------------------------------------------------------------------------------------------------------------------


def check_exportable(config) -> None:
    """Raise ValueError, naming the field, for a config CTranslate2's Transformer cannot compute exactly."""
    if config.activation_function not in ACTIVATIONS:
        raise ValueError(f"activation_function {config.activation_function!r} has no CTranslate2 counterpart; "
                         f"exportable: {sorted(ACTIVATIONS)}")
    if not config.tie_word_embeddings:
        raise ValueError("tie_word_embeddings=False cannot be exported: the output projection must be the shared "
                         "embedding matrix")


def default_max_positions(config) -> int:
    """Rows of the exported position table: the longest source `generate` expects, plus the §6.1 output allowance."""
    return config.max_position_embeddings + EXTRA_OUTPUT_TOKENS


def _tensor(value: torch.Tensor) -> torch.Tensor:
    """A float32 CPU copy: CTranslate2 quantizes the arrays it is given in place, which must not reach the model."""
    return value.detach().to(device="cpu", dtype=torch.float32, copy=True).contiguous()


def _linear(spec, *modules) -> None:
    """One CTranslate2 linear layer from one module, or from several fused along the output dimension (its
    self-attention takes [Q; K; V] as one matrix, its encoder–decoder attention [K; V])."""
    spec.weight = _tensor(torch.cat([module.weight for module in modules]))
    if modules[0].bias is not None:
        spec.bias = _tensor(torch.cat([module.bias for module in modules]))


def _projections(attention, *names):
    return [getattr(attention, name) for name in names]


def _layer_norm(spec, module) -> None:
    spec.gamma = _tensor(module.weight)
    spec.beta = _tensor(module.bias)


def _stack_common(spec, stack, model, positions: torch.Tensor) -> None:
    """Embeddings (shared matrix, scale), the position table, the pre-norm final LayerNorm."""
    config = model.config
    embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    embeddings.weight = _tensor(model.model.shared.weight)
    spec.scale_embeddings = math.sqrt(config.d_model) if config.scale_embedding else 1.0
    spec.position_encodings.encodings = positions
    if stack.final_norm is not None:
        _layer_norm(spec.layer_norm, stack.final_norm)


def build_spec(model, tokens: list[str], special: dict, max_positions: int | None = None):
    """A `ctranslate2.specs.TransformerSpec` holding the weights of `model` (ours, for conditional generation)."""
    config = model.config
    check_exportable(config)
    activation = ACTIVATIONS[config.activation_function]
    pre_norm = bool(config.normalize_before)
    encoder_spec = transformer_spec.TransformerEncoderSpec(
        config.encoder_layers, config.encoder_attention_heads, pre_norm=pre_norm, activation=activation)
    decoder_spec = transformer_spec.TransformerDecoderSpec(
        config.decoder_layers, config.decoder_attention_heads, pre_norm=pre_norm, activation=activation)
    spec = transformer_spec.TransformerSpec(encoder_spec, decoder_spec)

    positions = sinusoidal_table(max_positions or default_max_positions(config), config.d_model,
                                 config.positional_encoding)
    encoder, decoder = model.model.encoder, model.model.decoder

    _stack_common(spec.encoder, encoder, model, positions)
    for layer_spec, layer in zip(spec.encoder.layer, encoder.layers):
        _linear(layer_spec.self_attention.linear[0], *_projections(layer.self_attn, "q_proj", "k_proj", "v_proj"))
        _linear(layer_spec.self_attention.linear[1], layer.self_attn.out_proj)
        _layer_norm(layer_spec.self_attention.layer_norm, layer.self_attn_block.norm)
        _linear(layer_spec.ffn.linear_0, layer.ffn.fc1)
        _linear(layer_spec.ffn.linear_1, layer.ffn.fc2)
        _layer_norm(layer_spec.ffn.layer_norm, layer.ffn_block.norm)

    _stack_common(spec.decoder, decoder, model, positions)
    for layer_spec, layer in zip(spec.decoder.layer, decoder.layers):
        _linear(layer_spec.self_attention.linear[0], *_projections(layer.self_attn, "q_proj", "k_proj", "v_proj"))
        _linear(layer_spec.self_attention.linear[1], layer.self_attn.out_proj)
        _layer_norm(layer_spec.self_attention.layer_norm, layer.self_attn_block.norm)
        _linear(layer_spec.attention.linear[0], layer.cross_attn.q_proj)
        _linear(layer_spec.attention.linear[1], *_projections(layer.cross_attn, "k_proj", "v_proj"))
        _linear(layer_spec.attention.linear[2], layer.cross_attn.out_proj)
        _layer_norm(layer_spec.attention.layer_norm, layer.cross_attn_block.norm)
        _linear(layer_spec.ffn.linear_0, layer.ffn.fc1)
        _linear(layer_spec.ffn.linear_1, layer.ffn.fc2)
        _layer_norm(layer_spec.ffn.layer_norm, layer.ffn_block.norm)

    spec.decoder.projection.weight = _tensor(model.get_output_embeddings().weight)
    if model.final_logits_bias is not None:
        spec.decoder.projection.bias = _tensor(model.final_logits_bias.reshape(-1))

    spec.config.layer_norm_epsilon = float(config.layer_norm_eps)
    for name in ("decoder_start_token", "bos_token", "eos_token", "unk_token"):
        setattr(spec.config, name, special[name])
    spec.register_source_vocabulary(tokens)
    spec.register_target_vocabulary(tokens)
    return spec


# ---------------------------------------------------------------------------------------------------------------------
# Generation settings the runner carries over
# ---------------------------------------------------------------------------------------------------------------------


def forced_eos_id(generation_config) -> int | None:
    """The one token `generate` forces at the length limit (`forced_eos_token_id`, OPUS-MT configs set it)."""
    value = getattr(generation_config, "forced_eos_token_id", None)
    if isinstance(value, list):
        return value[0] if len(value) == 1 else None
    return value


# Generation settings that change `generate`'s output and that the runner does not reproduce, with the values that
# leave the output unchanged (transformers 5 leaves unset fields at None).
NEUTRAL_SETTINGS = {
    "forced_bos_token_id": (None,),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "repetition_penalty": (None, 1.0),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "begin_suppress_tokens": (None, []),
    "sequence_bias": (None, {}),
    "diversity_penalty": (None, 0.0),
    "do_sample": (None, False),
}


def not_carried_settings(generation_config) -> list[str]:
    """The names of the settings in NEUTRAL_SETTINGS that `generation_config` sets to something else."""
    if generation_config is None:
        return []
    not_carried = [name for name, neutral in NEUTRAL_SETTINGS.items()
                   if getattr(generation_config, name, None) not in neutral]
    if getattr(generation_config, "forced_eos_token_id", None) is not None and forced_eos_id(generation_config) is None:
        not_carried.append("forced_eos_token_id")  # several forced end tokens
    return not_carried


def decoding_settings(model, tokens: list[str], special: dict, max_positions: int) -> dict:
    """What the runner needs besides the weights: the position limit, the end tokens, the end token forced at the
    length limit, and the tokens `generate` never produces (`bad_words_ids`, `suppress_tokens` of the generation
    config → CTranslate2's `suppress_sequences`)."""
    generation_config = getattr(model, "generation_config", None)
    suppress = []
    for ids in getattr(generation_config, "bad_words_ids", None) or []:
        suppress.append([tokens[i] for i in ids])
    for token_id in getattr(generation_config, "suppress_tokens", None) or []:
        suppress.append([tokens[token_id]])
    forced = forced_eos_id(generation_config)
    not_carried = not_carried_settings(generation_config)
    if not_carried:
        logger.warning("generation_config sets %s, which the CTranslate2 runner does not apply",
                       ", ".join(not_carried))
    return {"max_positions": max_positions, "end_tokens": special["end_tokens"], "suppress_sequences": suppress,
            "forced_eos_token": None if forced is None else tokens[forced], "not_carried": not_carried}


# ---------------------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------------------


def quantize_int8(spec, limit: int) -> None:
    """Quantize, in `spec`, the weights CTranslate2's int8 quantization would (each variable with a `<name>_scale`)
    as it does — per output row, scale = limit / max |row|, rounded to the nearest integer — but to ±`limit`."""
    def quantize(layer, name, value):
        key = name.rsplit("/", 1)[-1]
        if not isinstance(value, torch.Tensor) or value.dim() != 2 or not hasattr(layer, f"{key}_scale"):
            return
        amax = value.abs().amax(dim=1)
        scale = limit / torch.where(amax > 0, amax, torch.ones_like(amax))
        setattr(layer, key, torch.round(value * scale[:, None]).to(torch.int8))
        setattr(layer, f"{key}_scale", scale)

    visit_spec(spec, quantize)


class VanillaTransformerConverter(Converter):
    """CTranslate2's converter interface for our model:
    `VanillaTransformerConverter(model, tokenizer).convert(output_dir, quantization="int8")` writes CTranslate2's
    model folder (model.bin, config.json, shared_vocabulary.json). `export_ctranslate2` adds the tokenizer and the
    runner's settings and writes atomically."""

    def __init__(self, model, tokenizer, max_positions: int | None = None):
        if max_positions is not None and max_positions <= 0:
            raise ValueError(f"max_positions must be positive, got {max_positions}")
        self.model, self.tokenizer = model, tokenizer
        self.max_positions = max_positions or default_max_positions(model.config)
        check_exportable(model.config)
        self.tokens = vocabulary_tokens(tokenizer, model.config.vocab_size)
        self.special = special_tokens(model.config, self.tokens, tokenizer)
        self.int8_weight_limit = None  # set: the weights are quantized here (`quantize_int8`), not by CTranslate2

    def _load(self):
        spec = build_spec(self.model, self.tokens, self.special, self.max_positions)
        if self.int8_weight_limit is not None:
            quantize_int8(spec, self.int8_weight_limit)
        return spec

    def decoding(self) -> dict:
        return decoding_settings(self.model, self.tokens, self.special, self.max_positions)


def load_for_export(model_dir: str | Path):
    """The model (fp32, CPU, eval mode) and tokenizer of a saved model folder."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from .. import modeling  # noqa: F401  (registers the Auto classes)

    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


def export_ctranslate2(model, output_dir: str | Path, tokenizer=None, quantization: str | None = None,
                       max_positions: int | None = None, overwrite: bool = False) -> Path:
    """Write a CTranslate2 model folder for `model` (a saved model folder, or a model with `tokenizer`).

    `quantization`: None keeps float32 weights; "int8", "int8_float32", "int16", "float16", ... as CTranslate2's
    converters accept. `max_positions`: rows of the position table (default max_position_embeddings + 50).
    The folder appears complete or not at all. An existing `output_dir` is replaced only when it holds nothing but
    an earlier export; with `overwrite`, the export's files are added to a folder holding other files, which stay.
    Never the model folder itself, or a file.
    """
    output_dir = Path(output_dir)
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    check_export_folder(output_dir, model if isinstance(model, (str, Path)) else None, overwrite)
    if isinstance(model, (str, Path)):
        model, loaded_tokenizer = load_for_export(model)
        tokenizer = tokenizer if tokenizer is not None else loaded_tokenizer
    if tokenizer is None:
        raise ValueError("pass the model's tokenizer: the exported vocabulary is the tokenizer's")

    converter = VanillaTransformerConverter(model, tokenizer, max_positions)
    if quantization in REDUCED_RANGE_INT8:
        converter.int8_weight_limit = INT8_WEIGHT_LIMIT
    with staged_folder(output_dir, owned=is_owned_export_file) as folder:  # complete, or not there at all
        converter.convert(str(folder), quantization=None if converter.int8_weight_limit else quantization, force=True)
        tokenizer.save_pretrained(folder / TOKENIZER_DIR)
        write_json(folder / DECODING_FILE, {**converter.decoding(), "quantization": quantization or "float32",
                                            "int8_weight_limit": converter.int8_weight_limit,
                                            "ctranslate2_version": ctranslate2.__version__})
    logger.info("CTranslate2 model written to %s", output_dir)
    return output_dir


# What an export folder holds: CTranslate2's files, our decoding settings and our tokenizer.
EXPORT_FILES = frozenset({"model.bin", "config.json", "shared_vocabulary.json", "vocabulary.json", DECODING_FILE,
                          TOKENIZER_DIR})


def is_owned_export_file(folder: Path, name: str) -> bool:
    return name in EXPORT_FILES


def check_export_folder(output_dir: Path, model_dir, overwrite: bool) -> None:
    """Refuse, before any work, an output folder the export may not write (`OutputPathError`, naming it)."""
    if model_dir is not None and same_or_nested(output_dir, Path(model_dir)):
        raise OutputPathError(f"OUT {output_dir} is (or contains, or is inside) the model folder {model_dir}: "
                              "write the export somewhere else")
    if output_dir.is_symlink() or (output_dir.exists() and not output_dir.is_dir()):
        raise OutputPathError(f"OUT {output_dir} is an existing file, not a folder: choose another OUT")
    foreign = foreign_entries(output_dir, is_owned_export_file) if output_dir.is_dir() else []
    if foreign and not overwrite:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise OutputPathError(f"OUT {output_dir} already holds files that are not a CTranslate2 export written by "
                              f"vanilla-transformer ({shown}): choose a new or empty folder, or pass --overwrite to "
                              "add the export's files to it (the other files stay)")
