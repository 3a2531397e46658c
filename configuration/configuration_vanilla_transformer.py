"""Configuration of the Transformer of "Attention Is All You Need" (Vaswani et al., 2017).

Field names follow transformers' Marian/BART configs so that users (and `convert_marian`) find what they expect.
Defaults are the paper's transformer-base (Table 3); `base()`, `big()` and `tiny()` build the named presets.

An unknown keyword (`tiny(d_modle=64)`) raises a TypeError naming the nearest field; a config.json with keys this
version does not know (one written by another version) still loads, with one warning naming them.
"""

import contextvars
import dataclasses
import difflib

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN
from transformers.utils import logging

logger = logging.get_logger(__name__)

POSITIONAL_ENCODINGS = ("interleaved", "concatenated")
# Keywords PreTrainedConfig takes besides its dataclass fields (see its __post_init__), and the keys a saved
# config.json or transformers' loaders add that are not fields.
BASE_KEYWORDS = frozenset({
    "torch_dtype", "num_labels", "name_or_path", "_name_or_path", "_commit_hash", "output_attentions",
    "attn_implementation", "_attn_implementation", "experts_implementation", "_experts_implementation",
    "_attn_implementation_internal", "_experts_implementation_internal", "per_layer_config", "model_type",
    "auto_map", "custom_pipelines",
})
def generation_keywords() -> frozenset:
    """Generation settings (num_beams, max_length, ...) that old config.json files carry; PreTrainedConfig drops
    them."""
    from transformers import GenerationConfig

    try:
        return frozenset(GenerationConfig._get_default_generation_params())
    except AttributeError:  # a transformers without that helper
        return frozenset(GenerationConfig().to_dict())


# Set while a saved config is read (`from_dict`): unknown keys then warn instead of raising.
_LOADING_SAVED_CONFIG = contextvars.ContextVar("loading_saved_config", default=False)


@strict
class VanillaTransformerConfig(PreTrainedConfig):
    r"""
    Sizes of the encoder–decoder and the choices the paper leaves open.

    vocab_size: size of the shared source/target vocabulary (one matrix for both embeddings and the output layer).
    d_model, encoder_layers, decoder_layers, encoder/decoder_attention_heads, encoder/decoder_ffn_dim: Table 3.
    dropout: P_drop on every sub-layer output and on embeddings + positions (§5.4).
    attention_dropout / activation_dropout: dropout on attention probabilities / after the FFN activation (not in
        the paper; used by peers, 0.0 by default).
    activation_function: "relu" in the paper (§3.3); any name from `transformers.activations.ACT2FN` ("swish", "gelu").
    max_position_embeddings: the longest sequence `generate` produces by default. Positions are computed on the fly,
        so longer inputs work.
    scale_embedding: multiply embeddings by sqrt(d_model) (§3.4).
    normalize_before: False = the paper's post-norm `LayerNorm(x + Sublayer(x))`; True = pre-norm with a final
        LayerNorm after each stack.
    positional_encoding: "interleaved" = the paper's formula (sin at even, cos at odd dimensions, §3.5);
        "concatenated" = [sin | cos] halves as in tensor2tensor, fairseq and Marian.
    label_smoothing: ε_ls of the training loss (§5.4).
    add_final_logits_bias: add a (non-trained) bias buffer to the logits, as Marian checkpoints carry one.
    """

    model_type = "vanilla_transformer"
    # The cache output, under either name (transformers 5.24 renamed past_key_values to cache).
    keys_to_ignore_at_inference = ["past_key_values", "cache"]
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "encoder_attention_heads",
        "num_hidden_layers": "decoder_layers",
    }

    vocab_size: int = 37000
    d_model: int = 512
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 8
    decoder_attention_heads: int = 8
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    dropout: float | int = 0.1
    attention_dropout: float | int = 0.0
    activation_dropout: float | int = 0.0
    activation_function: str = "relu"
    max_position_embeddings: int = 1024
    scale_embedding: bool = True
    normalize_before: bool = False
    layer_norm_eps: float = 1e-5
    positional_encoding: str = "interleaved"
    label_smoothing: float | int = 0.1
    add_final_logits_bias: bool = False
    init_std: float | None = None
    use_cache: bool = True
    is_encoder_decoder: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    decoder_start_token_id: int | None = 1
    forced_eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        self.check_keywords(kwargs)
        super().__post_init__(**kwargs)
        self.check_values()

    @classmethod
    def known_names(cls) -> list[str]:
        """Every field and alias a keyword may name."""
        return sorted({f.name for f in dataclasses.fields(cls)} | set(cls.attribute_map))

    def check_keywords(self, extra: dict) -> None:
        """Keywords that are not fields: PreTrainedConfig's own are fine; any other raises a TypeError naming the
        nearest field, or, while a saved config.json is read, warns once (a config from another version)."""
        unknown = sorted(set(extra) - BASE_KEYWORDS - set(self.attribute_map))
        if not unknown:
            return
        generation = generation_keywords()
        if _LOADING_SAVED_CONFIG.get():
            unknown = [name for name in unknown if name not in generation]  # PreTrainedConfig drops those itself
            if unknown:
                logger.warning_once(f"config.json holds keys {type(self).__name__} does not know "
                                    f"({', '.join(unknown)}; written by another version?): they are kept as "
                                    "attributes and have no effect")
            return
        names = self.known_names()
        described, any_close = [], False
        for name in unknown:
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            any_close |= bool(close)
            described.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        own = [name for name in type(self).__annotations__ if not name.startswith("_")]
        fields = "" if any_close else f"; its own fields are {', '.join(own)}"
        hint = "" if generation.isdisjoint(unknown) else " (generation settings belong in model.generation_config)"
        raise TypeError(f"{type(self).__name__} got unknown keyword(s) {', '.join(described)}{hint}{fields}")

    def check_values(self):
        """Every bad value raises ValueError naming the field (a plain ValueError, not wrapped by `@strict`)."""
        sizes = ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                 "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings")
        for name in sizes:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, name):
                raise ValueError(f"d_model ({self.d_model}) must be divisible by {name} ({getattr(self, name)})")
        if self.d_model % 2:
            raise ValueError(f"d_model must be even for sinusoidal positions, got {self.d_model}")
        for name in ("dropout", "attention_dropout", "activation_dropout", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.activation_function not in ACT2FN:
            raise ValueError(f"activation_function {self.activation_function!r} is unknown; use one of "
                             f"{sorted(ACT2FN)}")
        if self.positional_encoding not in POSITIONAL_ENCODINGS:
            raise ValueError(f"positional_encoding must be one of {POSITIONAL_ENCODINGS}, got "
                             f"{self.positional_encoding!r}")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"layer_norm_eps must be positive, got {self.layer_norm_eps}")
        if not self.tie_word_embeddings:
            raise ValueError("tie_word_embeddings must be True: the paper shares one matrix between both "
                             "embeddings and the output projection (§3.4)")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "forced_eos_token_id"):
            value = getattr(self, name)
            for token_id in value if isinstance(value, list) else [value]:
                if token_id is not None and not 0 <= token_id < self.vocab_size:
                    raise ValueError(f"{name}={token_id} is outside the vocabulary (vocab_size={self.vocab_size})")

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """Refuses another model's config.json: a Marian or BART config would build a silently different model."""
        model_type = config_dict.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(f"config.json has model_type {model_type!r}, not {cls.model_type!r}; to bring a Marian "
                             "checkpoint in, use vanilla_transformer.modeling.convert_marian")
        token = _LOADING_SAVED_CONFIG.set(True)
        try:
            return super().from_dict(config_dict, **kwargs)
        finally:
            _LOADING_SAVED_CONFIG.reset(token)

    # Presets --------------------------------------------------------------------------------------------------------
    @classmethod
    def base(cls, **overrides) -> "VanillaTransformerConfig":
        """Transformer-base (Table 3): N=6, d_model=512, d_ff=2048, h=8, P_drop=0.1 — 65M parameters in the paper."""
        return cls(**overrides)

    @classmethod
    def big(cls, **overrides) -> "VanillaTransformerConfig":
        """Transformer-big (Table 3): N=6, d_model=1024, d_ff=4096, h=16, P_drop=0.3 — 213M parameters in the paper."""
        sizes = dict(d_model=1024, encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096,
                     decoder_ffn_dim=4096, dropout=0.3)
        return cls(**{**sizes, **overrides})

    @classmethod
    def tiny(cls, **overrides) -> "VanillaTransformerConfig":
        """A small model for tests and the CPU demo: 3+3 layers of width 256."""
        sizes = dict(vocab_size=8000, d_model=256, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=1024, decoder_ffn_dim=1024, dropout=0.1,
                     max_position_embeddings=512)
        return cls(**{**sizes, **overrides})

    @classmethod
    def preset(cls, name: str, **overrides) -> "VanillaTransformerConfig":
        """`preset("base" | "big" | "tiny", **overrides)`."""
        presets = {"base": cls.base, "big": cls.big, "tiny": cls.tiny}
        if name not in presets:
            raise ValueError(f"preset must be one of {sorted(presets)}, got {name!r}")
        return presets[name](**overrides)


__all__ = ["VanillaTransformerConfig"]
