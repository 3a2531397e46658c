"""Deploy with CTranslate2: export a trained model, and translate with the export exactly as with `generate`.

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

`CTranslate2Translator` decodes as our `translate()` does (§6.1: beam 4, length penalty 0.6, at most the batch's
longest source + 50 tokens, batches of similar length), with one difference inherent to CTranslate2: its beam search
stops once `num_beams` hypotheses have ended, which is transformers' `early_stopping=True`; transformers' default
(False) keeps searching while a running beam could still win, so a few sentences in a hundred may differ. With
`early_stopping=True` the fp32 export gives our `generate`'s tokens exactly, greedy and beam
(tests/test_ctranslate2.py). int8 weights change the numbers, so int8 is judged by agreement and BLEU only.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

try:
    import ctranslate2
    from ctranslate2.converters import Converter
    from ctranslate2.specs import transformer_spec
    from ctranslate2.specs.common_spec import Activation
except ImportError as error:  # an optional extra: say how to get it
    raise ImportError(f'CTranslate2 is not installed ({error}): pip install "vanilla-transformer[ctranslate2]"',
                      name="ctranslate2") from error

from ..modeling.modeling_vanilla_transformer import EXTRA_OUTPUT_TOKENS, sinusoidal_table
from .checkpoints import write_json
from .errors import CommandParser
from .outputs import OutputPathError, foreign_entries, same_or_nested, staged_folder

logger = logging.getLogger(__name__)

DECODING_FILE = "decoding.json"  # the runner's settings, next to CTranslate2's own files
TOKENIZER_DIR = "tokenizer"  # our tokenizer's files, in a folder of their own (CTranslate2 writes config.json)
PLACEHOLDER = "<unused_{}>"
QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32")

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

    def _load(self):
        return build_spec(self.model, self.tokens, self.special, self.max_positions)

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
    with staged_folder(output_dir, owned=is_owned_export_file) as folder:  # complete, or not there at all
        converter.convert(str(folder), quantization=quantization, force=True)
        tokenizer.save_pretrained(folder / TOKENIZER_DIR)
        write_json(folder / DECODING_FILE, {**converter.decoding(), "quantization": quantization or "float32",
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


# ---------------------------------------------------------------------------------------------------------------------
# Translation with the exported model
# ---------------------------------------------------------------------------------------------------------------------


class CTranslate2Translator:
    """An exported folder, run by `ctranslate2.Translator` with our decoding settings.

    `translate(sentences)` works as `evaluate.translate(model, tokenizer, sentences)`: the same tokenizer, batches of
    similar source length in the same order, beam 4 with length penalty 0.6, at most the batch's longest source + 50
    new tokens (§6.1), results in the input order. `generate_ids` decodes one batch of token ids, as `generate` does
    for the padded batch.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", compute_type: str = "default", threads: int = 0):
        model_dir = Path(model_dir)
        if not (model_dir / "model.bin").is_file() or not (model_dir / DECODING_FILE).is_file():
            raise ValueError(f"{model_dir} is not a folder written by `vanilla-transformer export --format "
                             f"ctranslate2` (model.bin and {DECODING_FILE} missing)")
        device, _, index = device.partition(":")
        self.translator = ctranslate2.Translator(str(model_dir), device=device, device_index=int(index or 0),
                                                 compute_type=compute_type, intra_threads=threads)
        self.tokens = json.loads((model_dir / "shared_vocabulary.json").read_text(encoding="utf-8"))
        self.ids = {token: token_id for token_id, token in enumerate(self.tokens)}
        self.decoding = json.loads((model_dir / DECODING_FILE).read_text(encoding="utf-8"))
        if self.decoding.get("not_carried"):
            logger.warning("the model's generation_config sets %s, which this runner does not apply",
                           ", ".join(self.decoding["not_carried"]))
        self.model_dir = model_dir
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir / TOKENIZER_DIR)
        return self._tokenizer

    def generate_ids(self, sources: list[list[int]], num_beams: int = 4, length_penalty: float = 0.6,
                     max_new_tokens: int | None = None) -> list[list[int]]:
        """The generated ids of each source (without the decoder start token; with the end token when one was
        generated), as `generate(num_beams, length_penalty, max_new_tokens, early_stopping=True)` gives them for
        the padded batch. `max_new_tokens` defaults to the longest source + 50."""
        if not sources:
            return []
        longest = max(len(source) for source in sources)
        max_new_tokens = max_new_tokens if max_new_tokens is not None else longest + EXTRA_OUTPUT_TOKENS
        limit = self.decoding["max_positions"]
        if longest > limit or max_new_tokens > limit:
            raise ValueError(f"a source of {longest} tokens with up to {max_new_tokens} output tokens needs "
                             f"{max(longest, max_new_tokens)} positions, but the export holds {limit}; export "
                             f"again with --max_positions {max(longest, max_new_tokens)} (or more)")
        batch = [[self.tokens[i] for i in source] for source in sources]
        forced = self.decoding.get("forced_eos_token")
        if forced is None:
            best = [result.hypotheses[0] for result in self._search(batch, num_beams, length_penalty, max_new_tokens)]
        else:
            best = self._with_forced_end(batch, num_beams, length_penalty, max_new_tokens, forced)
        return [[self.ids[token] for token in tokens] for tokens in best]

    def _search(self, batch: list[list[str]], num_beams: int, length_penalty: float, max_new_tokens: int,
                hypotheses: int = 1):
        end_tokens = self.decoding["end_tokens"]
        return self.translator.translate_batch(
            batch, beam_size=num_beams, length_penalty=length_penalty if num_beams > 1 else 0.0,
            max_decoding_length=max_new_tokens, min_decoding_length=0, max_input_length=0,
            # With the end token in the hypothesis, CTranslate2 divides a score by the same length as transformers.
            return_end_token=True, end_token=end_tokens if len(end_tokens) > 1 else None,
            suppress_sequences=self.decoding["suppress_sequences"] or None,
            num_hypotheses=hypotheses, return_scores=hypotheses > 1)

    def _with_forced_end(self, batch, num_beams: int, length_penalty: float, limit: int, forced: str):
        """The best hypotheses when `generate` forces `forced` as the token at the length limit
        (`forced_eos_token_id`; OPUS-MT generation configs set it). CTranslate2 has no such option, so:

        * A search that stopped before the limit never reached the forced step: its result stands. Beam search
          stops once `num_beams` hypotheses have ended (early_stopping=True); if any of the `num_beams` returned
          hypotheses has `limit` tokens, fewer had ended one step before the limit.
        * Greedy: the first `limit` − 1 tokens, then the forced token.
        * Beam search: decode `limit` − 1 tokens instead. The forced step appends the forced token (log-probability
          0 once forced) to every running beam, so a hypothesis cut there scores its sum divided by limit^α instead
          of (limit − 1)^α; the best of the ended and the rescored cut hypotheses wins. (A running beam that
          CTranslate2 does not return ranks below a returned cut one, so it cannot win.)
        """
        if limit == 1:
            return [[forced] for _ in batch]
        results = self._search(batch, num_beams, length_penalty, limit, hypotheses=num_beams)
        best, again = [], []
        for row, result in enumerate(results):
            if all(len(tokens) < limit for tokens in result.hypotheses):
                best.append(result.hypotheses[0])
            elif num_beams == 1:
                best.append(result.hypotheses[0][:limit - 1] + [forced])
            else:
                best.append(None)
                again.append(row)
        if again:
            ends = set(self.decoding["end_tokens"])
            rescale = ((limit - 1) / limit) ** length_penalty
            shorter = self._search([batch[row] for row in again], num_beams, length_penalty, limit - 1,
                                   hypotheses=num_beams)
            for row, result in zip(again, shorter):
                candidates = [(score, tokens) if tokens and tokens[-1] in ends else (score * rescale, tokens + [forced])
                              for score, tokens in zip(result.scores, result.hypotheses)]
                best[row] = max(candidates, key=lambda candidate: candidate[0])[1]
        return best

    def translate(self, sentences: list[str], batch_size: int = 64, num_beams: int = 4, length_penalty: float = 0.6,
                  progress: bool = False) -> list[str]:
        """Translations of `sentences` in their order (see the class docstring)."""
        if not sentences:
            return []
        encoded = self.tokenizer(list(sentences), truncation=False)["input_ids"]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        hypotheses: list[str | None] = [None] * len(encoded)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="translating", leave=False)
        for batch in batches:
            generated = self.generate_ids([encoded[i] for i in batch], num_beams, length_penalty)
            for index, text in zip(batch, self.tokenizer.batch_decode(generated, skip_special_tokens=True)):
                hypotheses[index] = text.strip()
        return hypotheses


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`vanilla-transformer export MODEL_DIR OUT --format ctranslate2 [--quantization int8]`."""
    parser = CommandParser(
        prog="vanilla-transformer export",
        description="Export a saved model folder for a deployment engine (CTranslate2). The exported folder "
                    "translates with `vanilla-transformer translate OUT --engine ctranslate2`.")
    parser.add_argument("model_dir", help="a saved model folder (final/, best/, an averaged model, a checkpoint)")
    parser.add_argument("output_dir", help="the folder to write")
    parser.add_argument("--format", required=True, choices=["ctranslate2"], help="the engine to export for")
    parser.add_argument("--quantization", default=None, choices=QUANTIZATIONS,
                        help="weight type (default: float32, exact); int8 is ~2x faster on CPU, not exact")
    parser.add_argument("--max_positions", type=int, default=None,
                        help="rows of the position table, the longest source or output the export can translate "
                             "(default: max_position_embeddings + 50)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an output_dir that holds other files (they stay); an earlier export there "
                             "is replaced without this flag")
    args = parser.parse_args(argv)
    if not Path(args.model_dir).is_dir():
        parser.error(f"model_dir {args.model_dir} is not a directory")
    import transformers

    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar in the command's output
    output = export_ctranslate2(args.model_dir, args.output_dir, quantization=args.quantization,
                                max_positions=args.max_positions, overwrite=args.overwrite)
    print(f"wrote {output} (CTranslate2 {ctranslate2.__version__}, {args.quantization or 'float32'} weights); "
          f"translate with: vanilla-transformer translate {output} --engine ctranslate2 \"...\"")
    return 0


if __name__ == "__main__":
    from .cli import run_command

    raise SystemExit(run_command("export", main))
