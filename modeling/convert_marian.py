"""Import OPUS-MT / Marian checkpoints (`transformers.MarianMTModel`) exactly.

A Marian model is the post-norm Transformer of the paper with a few choices of its own, all of which our config can
express: [sin | cos] positions starting at 0 (`positional_encoding="concatenated"`), optional √d_model scaling, swish
activations, N(0, init_std) initialisation and a fixed bias on the logits (`add_final_logits_bias=True`). The weights
map one to one: our attention projections carry Marian's names (`q_proj`, `k_proj`, `v_proj`, `out_proj`); only the
layer norms and the encoder–decoder attention (`encoder_attn` there, `cross_attn` here) are named differently.

    from vanilla_transformer.modeling.convert_marian import convert_marian, save_converted

    model = convert_marian("Helsinki-NLP/opus-mt-es-en")       # a Hub name (online), a local folder or a MarianMTModel
    save_converted("path/to/opus-mt-es-en", "opus-mt-es-en-vanilla")   # model + generation config + tokenizer files

Command line: `vanilla-transformer convert-marian SRC OUT_DIR` (`vanilla_transformer.cli.convert_marian`).

What cannot be represented exactly is refused with a ValueError naming the field: separate encoder/decoder
vocabularies or embeddings, an untied output projection, pre-norm / embedding-norm / learned-position variants, an odd
d_model. LayerDrop (`encoder_layerdrop`, `decoder_layerdrop`) only acts in training, so it does not change what the
checkpoint computes; our model has no LayerDrop and simply drops the setting.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, MarianConfig, MarianMTModel

from ..configuration.configuration_vanilla_transformer import VanillaTransformerConfig
from .modeling_vanilla_transformer import VanillaTransformerForConditionalGeneration, sinusoidal_table

logger = logging.getLogger(__name__)

# The Marian tokenizer's files (MarianTokenizer.vocab_files_names and the usual extras); whichever exist are copied.
TOKENIZER_FILES = (
    "source.spm",
    "target.spm",
    "vocab.json",
    "target_vocab.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)

# Flags that old Marian/BART-style config.json files carry. `MarianMTModel` ignores them (it is always post-norm, with
# sinusoidal positions and no embedding LayerNorm), so a value other than the Marian one means the checkpoint was made
# for an architecture that neither transformers' Marian nor our model computes. Field → the only value we accept.
MARIAN_ONLY_VALUES = {
    "normalize_before": False,  # pre-norm
    "add_final_layer_norm": False,  # a LayerNorm after each stack (pre-norm models)
    "normalize_embedding": False,  # LayerNorm on the embeddings
    "layernorm_embedding": False,  # mBART's name for the same
    "add_bias_logits": False,  # a trained logits bias in a separate layer
    "static_position_embeddings": True,  # False = learned positions
}

# Positions must match ours to within float32 rounding: both tables are computed in float64 and rounded, but numpy and
# torch may differ in the last bit of sin/cos (seen: 1 ulp, at most 3e-8, in a handful of entries of long tables).
POSITION_TOLERANCE = 1e-6


# ---------------------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------------------


def check_marian_config(config: MarianConfig) -> None:
    """Raise ValueError, naming the field, if `config` describes a model we cannot reproduce exactly."""
    model_type = getattr(config, "model_type", None)
    if model_type != "marian":
        raise ValueError(f"model_type must be 'marian' to convert a Marian checkpoint, got {model_type!r}")
    if not getattr(config, "share_encoder_decoder_embeddings", True):
        raise ValueError("share_encoder_decoder_embeddings=False is not supported: our model shares one embedding "
                         "matrix between the encoder, the decoder and the output layer")
    if not config.tie_word_embeddings:
        raise ValueError("tie_word_embeddings=False is not supported: our output projection is the shared embedding "
                         "matrix")
    decoder_vocab_size = getattr(config, "decoder_vocab_size", None) or config.vocab_size
    if decoder_vocab_size != config.vocab_size:
        raise ValueError(f"decoder_vocab_size ({decoder_vocab_size}) != vocab_size ({config.vocab_size}) is not "
                         "supported: our model has one vocabulary for source and target")
    for name, accepted in MARIAN_ONLY_VALUES.items():
        value = getattr(config, name, accepted)
        if value is not None and bool(value) != accepted:
            raise ValueError(f"{name}={value!r} is not supported: only the post-norm Marian Transformer with "
                             f"sinusoidal positions and no embedding LayerNorm converts exactly ({name} must be "
                             f"{accepted})")
    if config.d_model % 2:
        raise ValueError(f"d_model={config.d_model} is odd: Marian's sinusoid table for odd widths has no "
                         "counterpart in our model")


def check_marian_weights(marian: MarianMTModel) -> None:
    """Raise ValueError if the loaded weights break what the config promises: untied embeddings, or a position table
    that is not the fixed sinusoid (Marian does not save it, so a mismatch means someone changed it)."""
    shared = marian.model.shared.weight
    for name, weight in (("model.encoder.embed_tokens", marian.model.encoder.embed_tokens.weight),
                         ("model.decoder.embed_tokens", marian.model.decoder.embed_tokens.weight),
                         ("lm_head", marian.lm_head.weight)):
        if weight.shape != shared.shape or not torch.equal(weight, shared):
            raise ValueError(f"{name}.weight differs from model.shared.weight: untied embeddings are not supported")
    for stack in ("encoder", "decoder"):
        table = getattr(marian.model, stack).embed_positions.weight
        expected = sinusoidal_table(table.shape[0], table.shape[1], "concatenated").to(table)
        if not torch.allclose(table.float(), expected.float(), rtol=0.0, atol=POSITION_TOLERANCE):
            raise ValueError(f"model.{stack}.embed_positions.weight is not the sinusoidal table: learned or modified "
                             "position embeddings are not supported")


# ---------------------------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------------------------


def marian_to_config(config: MarianConfig) -> VanillaTransformerConfig:
    """The `VanillaTransformerConfig` computing what `config` computes (call `check_marian_config` first)."""
    return VanillaTransformerConfig(
        vocab_size=config.vocab_size,
        d_model=config.d_model,
        encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.encoder_attention_heads,
        decoder_attention_heads=config.decoder_attention_heads,
        encoder_ffn_dim=config.encoder_ffn_dim,
        decoder_ffn_dim=config.decoder_ffn_dim,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        activation_dropout=config.activation_dropout,
        activation_function=config.activation_function,
        max_position_embeddings=config.max_position_embeddings,
        scale_embedding=config.scale_embedding,
        normalize_before=False,
        layer_norm_eps=1e-5,  # Marian's LayerNorms are nn.LayerNorm with the default eps
        positional_encoding="concatenated",  # Marian: [sin | cos], positions from 0, no padding offset
        # MarianMTModel's loss is plain cross-entropy; 0 keeps `labels=` losses identical. Set it for fine-tuning.
        label_smoothing=0.0,
        add_final_logits_bias=True,
        init_std=config.init_std,
        use_cache=config.use_cache,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        decoder_start_token_id=config.decoder_start_token_id,  # Marian starts decoding from the pad token
        forced_eos_token_id=config.forced_eos_token_id,
        tie_word_embeddings=True,
    )


def marian_state_dict_to_ours(marian: MarianMTModel) -> dict[str, torch.Tensor]:
    """Rename every Marian weight into our layout. Raises if a Marian weight is left unused, so that a
    future Marian with extra parameters cannot be converted silently wrong."""
    source = marian.state_dict()
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        used.add(name)
        return source[name]

    def linear(ours: str, theirs: str) -> dict[str, torch.Tensor]:
        return {f"{ours}.weight": take(f"{theirs}.weight"), f"{ours}.bias": take(f"{theirs}.bias")}

    embeddings = take("model.shared.weight")
    state = {
        "model.shared.weight": embeddings,
        "lm_head.weight": embeddings,
        "final_logits_bias": take("final_logits_bias"),
    }
    # Tied copies of the shared matrix and the fixed position tables were checked by `check_marian_weights`.
    used.update(name for name in source if name.endswith(("embed_tokens.weight", "embed_positions.weight")))
    used.add("lm_head.weight")

    for stack, count in (("encoder", marian.config.encoder_layers), ("decoder", marian.config.decoder_layers)):
        for i in range(count):
            theirs, ours = f"model.{stack}.layers.{i}", f"model.{stack}.layers.{i}"
            attn = f"{theirs}.self_attn"
            for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
                state.update(linear(f"{ours}.self_attn.{projection}", f"{attn}.{projection}"))
            state.update(linear(f"{ours}.self_attn_block.norm", f"{theirs}.self_attn_layer_norm"))
            if stack == "decoder":
                cross = f"{theirs}.encoder_attn"
                for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    state.update(linear(f"{ours}.cross_attn.{projection}", f"{cross}.{projection}"))
                state.update(linear(f"{ours}.cross_attn_block.norm", f"{theirs}.encoder_attn_layer_norm"))
            state.update(linear(f"{ours}.ffn.fc1", f"{theirs}.fc1"))
            state.update(linear(f"{ours}.ffn.fc2", f"{theirs}.fc2"))
            state.update(linear(f"{ours}.ffn_block.norm", f"{theirs}.final_layer_norm"))

    unused = sorted(set(source) - used)
    if unused:
        raise ValueError(f"Marian weights with no counterpart in our model: {unused[:5]}")
    return state


def load_marian(model_or_dir: MarianMTModel | str | os.PathLike) -> MarianMTModel:
    """A `MarianMTModel` as given, or loaded from a local folder or a Hub name. The config is checked before the
    weights are read, so a model we cannot convert fails fast."""
    if isinstance(model_or_dir, MarianMTModel):
        return model_or_dir
    if not isinstance(model_or_dir, (str, os.PathLike)):
        raise TypeError(f"expected a MarianMTModel, a folder or a Hub name, got {type(model_or_dir).__name__}")
    config = AutoConfig.from_pretrained(model_or_dir)
    check_marian_config(config)
    return MarianMTModel.from_pretrained(model_or_dir, config=config)


@torch.no_grad()
def convert_marian(model_or_dir: MarianMTModel | str | os.PathLike) -> VanillaTransformerForConditionalGeneration:
    """Convert a Marian model (a `MarianMTModel`, a saved folder, or a Hub name such as
    "Helsinki-NLP/opus-mt-es-en") into a `VanillaTransformerForConditionalGeneration` computing the same logits.

    The generation config (decoder start = pad, forced EOS, bad words, beams, max length…) is carried over unchanged,
    so `generate()` decodes as the Marian model does. The result is in eval mode, on the Marian model's device and in
    its dtype.
    """
    marian = load_marian(model_or_dir)
    check_marian_config(marian.config)
    check_marian_weights(marian)
    if marian.config.encoder_layerdrop or marian.config.decoder_layerdrop:
        logger.info("encoder/decoder_layerdrop only act in training; the converted model has no LayerDrop")

    ours = VanillaTransformerForConditionalGeneration(marian_to_config(marian.config))
    ours.load_state_dict(marian_state_dict_to_ours(marian), strict=True)
    ours.to(device=marian.device, dtype=marian.dtype)

    # Marian's own generation settings replace our paper defaults (beam 4, length penalty 0.6).
    generation_config = copy.deepcopy(marian.generation_config)
    generation_config._from_model_config = False  # it is the model's real generation config, not one derived from it
    ours.generation_config = generation_config
    return ours.eval()


# ---------------------------------------------------------------------------------------------------------------------
# Saving, with the tokenizer
# ---------------------------------------------------------------------------------------------------------------------


def _tokenizer_dir(source) -> Path | None:
    """The local folder holding the Marian tokenizer files of `source`, downloading them for a Hub name."""
    if isinstance(source, MarianMTModel):
        source = source.name_or_path or None
    if source is None:
        return None
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download  # only for Hub names

    return Path(snapshot_download(str(source), allow_patterns=list(TOKENIZER_FILES)))


def copy_tokenizer_files(source, out_dir: str | os.PathLike) -> list[str]:
    """Copy the Marian tokenizer files that exist in `source` (folder, Hub name, or a model's `name_or_path`) into
    `out_dir`, and make sure `tokenizer_config.json` names `MarianTokenizer`: old OPUS-MT folders leave the class to
    config.json's model_type, which is ours now. Returns the names copied."""
    folder = _tokenizer_dir(source)
    if folder is None:
        logger.warning("no tokenizer source: pass tokenizer_source= to copy the Marian tokenizer files")
        return []
    out_dir = Path(out_dir)
    copied = []
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, out_dir / name)
            copied.append(name)
    if "source.spm" not in copied:
        logger.warning("no Marian tokenizer files found in %s", folder)
        return copied
    config_file = out_dir / "tokenizer_config.json"
    tokenizer_config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    if tokenizer_config.get("tokenizer_class") != "MarianTokenizer":
        tokenizer_config["tokenizer_class"] = "MarianTokenizer"
        config_file.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if "tokenizer_config.json" not in copied:
            copied.append("tokenizer_config.json")
    return copied


def save_converted(src: MarianMTModel | str | os.PathLike, out_dir: str | os.PathLike,
                   tokenizer_source: str | os.PathLike | None = None) -> VanillaTransformerForConditionalGeneration:
    """Convert `src` and write a normal saved folder to `out_dir` (config.json, generation_config.json,
    model.safetensors) plus the Marian tokenizer files, so that `AutoModelForSeq2SeqLM.from_pretrained(out_dir)`
    (after `import vanilla_transformer.modeling`) and `AutoTokenizer.from_pretrained(out_dir)` both load.

    The tokenizer files come from `tokenizer_source` if given, else from `src` (a folder or Hub name, or the
    `name_or_path` of a `MarianMTModel`). Returns the converted model.
    """
    model = convert_marian(src)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    copy_tokenizer_files(tokenizer_source if tokenizer_source is not None else src, out_dir)
    return model


@torch.no_grad()
def max_logit_difference(marian: MarianMTModel, ours: VanillaTransformerForConditionalGeneration,
                         length: int = 9) -> float:
    """Largest |logit difference| between the two models on a fixed random batch (a sanity check after converting)."""
    generator = torch.Generator().manual_seed(0)
    vocab = marian.config.vocab_size
    input_ids = torch.randint(0, vocab, (2, length), generator=generator).to(marian.device)
    decoder_input_ids = torch.randint(0, vocab, (2, length - 2), generator=generator).to(marian.device)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, length // 2:] = 0
    was_training = marian.training
    marian.eval()
    try:
        theirs = marian(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    finally:
        marian.train(was_training)
    mine = ours(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    return (theirs.float() - mine.float()).abs().max().item()


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


__all__ = [
    "convert_marian",
    "save_converted",
    "check_marian_config",
    "check_marian_weights",
    "marian_to_config",
    "marian_state_dict_to_ours",
    "load_marian",
    "copy_tokenizer_files",
    "max_logit_difference",
]
