"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017) as a transformers model.

The file reads in the paper's order: Embedding (§3.4, §3.5) → Attention (§3.2) → MLPs (§3.3) and the residual
sub-layer connection (§3.1, §5.4) → encoder and decoder stacks (§3.1) → Unembedding (§3.4) and the loss (§5.4).
One final section holds what the paper does not describe: generation (transformers' `generate` with the §6.1
defaults, the decoding cache) and the adapter to the installed transformers release (the cache argument's name,
folders saved by earlier versions).

One matrix is shared by the encoder input embedding, the decoder input embedding and the output projection (§3.4):
the three are the same `nn.Parameter`, stored once in `model.safetensors` and re-tied on load.
"""

import contextvars
import functools
import inspect
import json
import logging
import math
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from packaging.version import Version
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import cached_file

from ..configuration.configuration_vanilla_transformer import VanillaTransformerConfig

# Saved folders carry this file and the configuration file flat, so that `trust_remote_code=True` loads them where
# the vanilla_transformer package is not installed (the import above is rewritten to a sibling import there).
AUTO_MAP = {
    "AutoConfig": "configuration_vanilla_transformer.VanillaTransformerConfig",
    "AutoModel": "modeling_vanilla_transformer.VanillaTransformerModel",
    "AutoModelForSeq2SeqLM": "modeling_vanilla_transformer.VanillaTransformerForConditionalGeneration",
}

# §6.1 decoding: "beam search with a beam size of 4 and length penalty α = 0.6 … We set the maximum output length
# during inference to input length + 50". Defined here once: the model's generation_config and every command's
# `DecodingOptions` (vanilla_transformer.translation) take them from these names.
BEAM_SIZE = 4
LENGTH_PENALTY = 0.6
EXTRA_OUTPUT_TOKENS = 50


def new_token_limit(source_length: int, max_positions: int | None = None) -> int:
    """The §6.1 length rule: at most source length + 50 new tokens, and never more than the decoder's position table
    holds (`max_position_embeddings` - 1: the decoder start token takes a position)."""
    tokens = source_length + EXTRA_OUTPUT_TOKENS
    return max(1, min(tokens, max_positions - 1)) if max_positions else tokens

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# Embedding (§3.4, §3.5)
# ---------------------------------------------------------------------------------------------------------------------


def sinusoidal_table(length: int, d_model: int, layout: str = "interleaved",
                     offset: int | torch.Tensor = 0) -> torch.Tensor:
    """§3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).

    `layout="interleaved"` puts sin and cos at even and odd dimensions as the formula says; `"concatenated"` puts all
    sines first and all cosines second ([sin | cos]), as tensor2tensor, fairseq and Marian do. Computed in float64 so
    that large positions stay exact, returned in float32. `offset` may be a 0-d tensor (a static cache's length,
    read by a compiled step without leaving the graph).
    """
    device = offset.device if torch.is_tensor(offset) else None
    position = (torch.arange(length, dtype=torch.float64, device=device) + offset)[:, None]
    inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64, device=device) / d_model)
    angles = position * inv_freq
    if layout == "interleaved":
        table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)
    elif layout == "concatenated":
        table = torch.cat([angles.sin(), angles.cos()], dim=-1)
    else:
        raise ValueError(f"positional_encoding must be 'interleaved' or 'concatenated', got {layout!r}")
    return table.float()


class SinusoidalPositionalEncoding(nn.Module):
    """§3.5: fixed sinusoids, no parameters. Any length works: the table grows when a longer sequence comes.

    The table is cached (not a buffer: nothing to save) and kept in the device and dtype of its last use, so decoding
    step by step only slices it.
    """

    def __init__(self, d_model: int, layout: str, initial_length: int):
        super().__init__()
        self.d_model, self.layout, self.initial_length = d_model, layout, initial_length
        self._table: torch.Tensor | None = None

    def forward(self, length: int, offset: int, like: torch.Tensor) -> torch.Tensor:
        end = offset + length
        if torch.compiler.is_compiling():  # a traced graph computes its rows (a cached tensor would be baked in)
            return sinusoidal_table(length, self.d_model, self.layout, offset).to(device=like.device, dtype=like.dtype)
        table = self._table
        if table is None or table.shape[0] < end or table.device != like.device or table.dtype != like.dtype:
            rows = max(end, self.initial_length, 0 if table is None else table.shape[0])
            table = sinusoidal_table(rows, self.d_model, self.layout).to(device=like.device, dtype=like.dtype)
            self._table = table
        return table[offset:end]


class Embeddings(nn.Module):
    """§3.4–3.5: token → shared embedding × √d_model, + sinusoidal position, then dropout (§5.4).

    `embed_tokens` is the model's one shared `nn.Embedding` (`model.shared`), referenced here but not registered as
    a child: the matrix has one owner and one name, so a checkpoint without it is seen as missing by the loader,
    and FSDP puts it in one group with the output projection tied to it.
    """

    def __init__(self, config: VanillaTransformerConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self.set_embed_tokens(embed_tokens)
        self.embed_positions = SinusoidalPositionalEncoding(
            config.d_model, config.positional_encoding, config.max_position_embeddings
        )
        self.scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.dropout = config.dropout

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self._embed_tokens[0]

    def set_embed_tokens(self, embed_tokens: nn.Embedding) -> None:
        self._embed_tokens = (embed_tokens,)  # a tuple: nn.Module does not register what it holds

    def forward(self, input_ids=None, inputs_embeds=None, past_length: int = 0) -> torch.Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            check_token_ids(input_ids, self.embed_tokens.num_embeddings)
            inputs_embeds = self.embed_tokens(input_ids)
        if inputs_embeds.shape[0] == 0 or inputs_embeds.shape[1] == 0:
            raise ValueError(f"empty input: got a batch of shape {tuple(inputs_embeds.shape[:2])}")
        positions = self.embed_positions(inputs_embeds.shape[1], past_length, inputs_embeds)
        hidden = inputs_embeds * self.scale + positions
        return inverted_dropout(hidden, self.dropout, self.training)


def check_token_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """A bad id gets a ValueError naming it, not an IndexError deep in torch or a device-side assert.

    The check reads the data, so it runs in eager mode only (where `generate`, the pipeline and training run); a
    traced graph (`torch.compile`, `torch.export`) skips it rather than break on a data-dependent branch.
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input ids must have shape (batch, length), got {tuple(input_ids.shape)}")
    if torch.compiler.is_compiling():
        return
    outside = (input_ids < 0) | (input_ids >= vocab_size)
    if outside.any():  # one reduction per call: this runs at every decoding step
        bad = input_ids[outside][0].item()
        raise ValueError(f"token id {bad} is outside the vocabulary (vocab_size={vocab_size}, valid ids 0..{vocab_size - 1})")

# ---------------------------------------------------------------------------------------------------------------------
# Attention (§3.2)
# ---------------------------------------------------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """§3.2.2: MultiHead(Q, K, V) = Concat(head_1..head_h) W_O, head_i = Attention(Q W_Q_i, K W_K_i, V W_V_i).

    Self-attention projects Q, K and V from the same input; encoder–decoder attention (`cross=True`) projects Q
    from the decoder and K, V from the encoder output (§3.2.3). Scaled dot-product attention (§3.2.1)
    is the function `config._attn_implementation` names, as in transformers' own models: "sdpa" (the default,
    `torch.nn.functional.scaled_dot_product_attention`), "eager" (`eager_attention`, written out, returning the
    attention maps) or "flex_attention", from transformers' registry of attention functions.
    """

    def __init__(self, config: VanillaTransformerConfig, num_heads: int, cross: bool = False, layer_idx: int = 0):
        super().__init__()
        d_model = config.d_model
        self.config = config
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.cross, self.layer_idx, self.dropout = cross, layer_idx, config.attention_dropout
        self.is_causal = not cross  # read by transformers' attention functions; the encoder passes is_causal=False
        # W_Q, W_K, W_V of all h heads as three matrices, under the names of Marian, BART and transformers' other
        # models, so that tools addressing projections by name (peft's LoRA `target_modules=["q_proj", "v_proj"]`)
        # reach every attention, self and cross alike. Folders saved with the earlier fused `qkv_proj` / `kv_proj`
        # are split on load (`read_fused_folder`).
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        # Glorot bounds of the fused [Q; K; V] (encoder–decoder: [K; V]) matrix the projections were before, which is
        # fairseq's √(6 / 4d) for self-attention too: a model built from a seed is the one earlier versions built.
        for projection in (self.k_proj, self.v_proj) if cross else (self.q_proj, self.k_proj, self.v_proj):
            projection.glorot_fan_out = (2 if cross else 3) * d_model

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) → (B, h, T, d_k)."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden_states, memory=None, attention_mask=None, is_causal=False, cache: Cache | None = None,
                output_attentions=False):
        query = self._heads(self.q_proj(hidden_states))
        if self.cross:
            cross_cache = cache.cross_attention_cache if cache is not None else None
            if cache is not None and cache.is_updated.get(self.layer_idx):
                # The encoder output does not change while decoding: its K/V were projected at the first step.
                key, value = cross_cache.layers[self.layer_idx].keys, cross_cache.layers[self.layer_idx].values
            else:
                key, value = self._heads(self.k_proj(memory)), self._heads(self.v_proj(memory))
                if cache is not None:
                    key, value = cross_cache.update(key, value, self.layer_idx)
                    cache.is_updated[self.layer_idx] = True
        else:
            key, value = self._heads(self.k_proj(hidden_states)), self._heads(self.v_proj(hidden_states))
            if cache is not None:
                key, value = cache.self_attention_cache.update(key, value, self.layer_idx)

        # Beams (or returned sequences) of one sentence share its encoder output, kept at one row per sentence:
        # their queries become extra query positions of that row, so K/V are projected and read once per sentence.
        groups = query.shape[0] // key.shape[0]
        if groups > 1:
            query = self._merge_groups(query, groups)
        attend, attention_mask = self._attention_function(query, attention_mask, is_causal, output_attentions)
        output, weights = attend(self, query, key, value, attention_mask, dropout=self.dropout if self.training else 0.0,
                                 scaling=self.head_dim ** -0.5, is_causal=is_causal)
        output = output.transpose(1, 2)  # the registry's layout (B, T, h, d_k) → (B, h, T, d_k)
        if groups > 1:
            output = self._split_groups(output, groups)
            weights = None if weights is None else self._split_groups(weights, groups)
        batch, _, length, _ = output.shape
        output = output.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.out_proj(output), weights if output_attentions else None

    def _attention_function(self, query, mask, is_causal, output_attentions):
        """The attention function of `config._attn_implementation`, and the mask in the form it takes."""
        implementation = self.config._attn_implementation or "sdpa"
        if output_attentions and implementation != "eager":
            # As transformers' models: only the written-out attention has the maps to return.
            logger.warning_once(f"`{implementation}` attention does not support `output_attentions=True`: the "
                                f"attention maps are computed with the `eager` implementation")
            implementation = "eager"
        if implementation == "sdpa" and query.shape[-2] == 1 and query.device.type == "cpu":
            # A decoding step (one query per sequence) on CPU: the written-out product is several times faster
            # than the fused kernel, whose per-call cost dominates at this size. Same result.
            implementation = "eager"
        if implementation == "flex_attention":
            if query.device.type == "cpu":
                # torch 2.13's CPU flex kernel reads out of bounds with a score mask (and has no backward on CPU).
                raise NotImplementedError("attn_implementation='flex_attention' runs on GPU only; on CPU use 'sdpa' "
                                          "(the default) or 'eager'")
            # transformers' flex attention adds a float mask of shape (B, 1, T, S) to the scores.
            mask = additive_mask(mask, is_causal, query)
        return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention), mask

    @staticmethod
    def _merge_groups(query: torch.Tensor, groups: int) -> torch.Tensor:
        """(B·g, h, T, d) → (B, h, g·T, d): the g consecutive rows of a sentence side by side as query positions."""
        rows, heads, length, dim = query.shape
        return query.view(rows // groups, groups, heads, length, dim).transpose(1, 2).reshape(
            rows // groups, heads, groups * length, dim)

    @staticmethod
    def _split_groups(x: torch.Tensor, groups: int) -> torch.Tensor:
        """The inverse of `_merge_groups` for outputs and attention maps: (B, h, g·T, ·) → (B·g, h, T, ·)."""
        sentences, heads, merged, last = x.shape
        return x.view(sentences, heads, groups, merged // groups, last).transpose(1, 2).reshape(
            sentences * groups, heads, merged // groups, last)


def eager_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=False,
                    **kwargs):
    """§3.2.1 written out: softmax(QKᵀ / √d_k) V, returning the attention probabilities too.

    The signature and the output layout (B, T, h, d_k) are those of transformers' attention registry; the mask is
    boolean (True = attend), broadcastable to (B, h, T, S).
    """
    scores = (query @ key.transpose(-1, -2)) * (query.shape[-1] ** -0.5 if scaling is None else scaling)
    if is_causal and query.shape[-2] > 1:
        attention_mask = causal_mask(query.shape[-2], key.shape[-2], 0, query.device)
    if attention_mask is not None:
        # The dtype's minimum, not -inf (as transformers' models): a row with every key masked gets a uniform
        # softmax, finite in every dtype, instead of NaN. The masks built here never leave a row empty anyway.
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)
    output = inverted_dropout(weights, dropout, training=dropout > 0) @ value
    return output.transpose(1, 2), weights


def additive_mask(mask, is_causal, query) -> torch.Tensor | None:
    """A boolean mask (or the causal pattern) as the float (B, 1, T, S) mask that flex attention adds to the scores."""
    if is_causal and query.shape[-2] > 1:
        mask = causal_mask(query.shape[-2], query.shape[-2], 0, query.device)
    if mask is None:
        return None
    mask = (mask if mask.ndim == 4 else mask[None, None]).expand(query.shape[0], 1, query.shape[-2], mask.shape[-1])
    return torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill_(
        ~mask, torch.finfo(query.dtype).min)


def causal_mask(length: int, total: int, past: int | torch.Tensor, device) -> torch.Tensor:
    """(length, total) boolean mask: query t (at absolute position past + t) may see keys 0..past + t (§3.2.3).
    `past` may be a 0-d tensor (a static cache's length)."""
    rows = torch.arange(length, device=device)[:, None] + past
    return torch.arange(total, device=device)[None, :] <= rows


def padding_mask(attention_mask: torch.Tensor | None, length: int, total: int | None = None) -> torch.Tensor | None:
    """(B, S) 1/0 mask → (B, 1, 1, S) boolean mask for SDPA, or None when nothing is padded.

    A row that is all padding would make softmax over no keys (NaN); it is allowed to attend to its own padding
    instead, so its (meaningless) output stays finite and cannot poison anything downstream. `total` > S pads the
    mask with masked positions (the unwritten part of a static cache).

    "Nothing is padded" is a data-dependent shortcut, taken in eager mode only: under `torch.compile`/`torch.export`
    the mask is always built, so that a graph traced on an unpadded batch still masks padded ones.
    """
    if attention_mask is None:
        return None
    if attention_mask.shape[-1] != length:
        raise ValueError(f"attention_mask has length {attention_mask.shape[-1]} but the input has length {length}")
    mask = attention_mask.bool()
    if not torch.compiler.is_compiling() and (total is None or total == length) and mask.all():
        return None
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    if total is not None and total > length:
        mask = F.pad(mask, (0, total - length), value=False)
    return mask[:, None, None, :]

# ---------------------------------------------------------------------------------------------------------------------
# MLPs (§3.3) and the residual connection around every sub-layer (§3.1, §5.4)
# ---------------------------------------------------------------------------------------------------------------------


class PositionwiseFeedForward(nn.Module):
    """§3.3: FFN(x) = max(0, x W1 + b1) W2 + b2, applied to each position alike (ReLU in the paper)."""

    def __init__(self, d_model: int, d_ff: int, activation: str, activation_dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.activation = ACT2FN[activation]
        self.activation_dropout = activation_dropout
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, x):
        hidden = inverted_dropout(self.activation(self.fc1(x)), self.activation_dropout, self.training)
        return self.fc2(hidden)


class SublayerConnection(nn.Module):
    """§3.1 + §5.4: post-norm LayerNorm(x + Dropout(Sublayer(x))), or pre-norm x + Dropout(Sublayer(LayerNorm(x))).

    The sub-layer may return (output, extra); the extra (attention maps) is passed back untouched.
    """

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = config.dropout
        self.normalize_before = config.normalize_before

    def forward(self, x, sublayer):
        out = sublayer(self.norm(x) if self.normalize_before else x)
        out, extra = out if isinstance(out, tuple) else (out, None)
        x = x + inverted_dropout(out, self.dropout, self.training)
        return (x if self.normalize_before else self.norm(x)), extra


def inverted_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout (§5.4), as `F.dropout`, with a cheaper keep-mask on CPU.

    On CPU, `F.dropout` draws its mask with `bernoulli_`, which costs twice the uniform generator (6.6 vs 3.2 ms for
    64×35×512 floats on 2 cores), and a training step runs dropout 32 times. Keeping the units whose uniform noise
    is ≥ p keeps each with probability 1 − p just the same. Elsewhere (CUDA's fused kernel) `F.dropout` is used.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training=True)
    keep = torch.rand(x.shape, device=x.device).ge_(p).div_(1.0 - p)  # 0 or 1/(1 − p), float32
    return x * keep.to(x.dtype)

# ---------------------------------------------------------------------------------------------------------------------
# Encoder and decoder stacks (§3.1)
# ---------------------------------------------------------------------------------------------------------------------


class EncoderLayer(GradientCheckpointingLayer):
    """§3.1: self-attention, then the position-wise FFN, each wrapped in a `SublayerConnection`."""

    def __init__(self, config: VanillaTransformerConfig, layer_idx: int):
        super().__init__()
        self.self_attn = MultiHeadAttention(config, config.encoder_attention_heads, layer_idx=layer_idx)
        self.self_attn_block = SublayerConnection(config)
        self.ffn = PositionwiseFeedForward(config.d_model, config.encoder_ffn_dim, config.activation_function,
                                           config.activation_dropout)
        self.ffn_block = SublayerConnection(config)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        hidden_states, weights = self.self_attn_block(
            hidden_states, lambda x: self.self_attn(x, attention_mask=attention_mask, output_attentions=output_attentions)
        )
        hidden_states, _ = self.ffn_block(hidden_states, self.ffn)
        return hidden_states, weights


class DecoderLayer(GradientCheckpointingLayer):
    """§3.1: masked self-attention, encoder–decoder attention, FFN — each wrapped in a `SublayerConnection`."""

    def __init__(self, config: VanillaTransformerConfig, layer_idx: int):
        super().__init__()
        heads = config.decoder_attention_heads
        self.self_attn = MultiHeadAttention(config, heads, layer_idx=layer_idx)
        self.self_attn_block = SublayerConnection(config)
        self.cross_attn = MultiHeadAttention(config, heads, cross=True, layer_idx=layer_idx)
        self.cross_attn_block = SublayerConnection(config)
        self.ffn = PositionwiseFeedForward(config.d_model, config.decoder_ffn_dim, config.activation_function,
                                           config.activation_dropout)
        self.ffn_block = SublayerConnection(config)

    def forward(self, hidden_states, memory, self_mask=None, is_causal=False, memory_mask=None, cache=None,
                output_attentions=False):
        hidden_states, self_weights = self.self_attn_block(
            hidden_states,
            lambda x: self.self_attn(x, attention_mask=self_mask, is_causal=is_causal, cache=cache,
                                     output_attentions=output_attentions),
        )
        hidden_states, cross_weights = self.cross_attn_block(
            hidden_states,
            lambda x: self.cross_attn(x, memory, attention_mask=memory_mask, cache=cache,
                                      output_attentions=output_attentions),
        )
        hidden_states, _ = self.ffn_block(hidden_states, self.ffn)
        return hidden_states, self_weights, cross_weights


class VanillaTransformerEncoder(nn.Module):
    """§3.1: embeddings, then N encoder layers (and a final LayerNorm in the pre-norm variant).

    `hidden_states` holds the embedding output and each layer's output (N + 1 entries), all before the pre-norm
    final LayerNorm, which only `last_hidden_state` has passed through.
    """

    def __init__(self, config: VanillaTransformerConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config, embed_tokens)
        self.layers = nn.ModuleList(EncoderLayer(config, i) for i in range(config.encoder_layers))
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.normalize_before else None

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=False,
                output_hidden_states=False, return_dict=True, **kwargs) -> BaseModelOutput:
        hidden_states = self.embeddings(input_ids, inputs_embeds)
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(hidden_states.shape[:2]):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has shape "
                             f"{tuple(hidden_states.shape[:2])}")
        mask = padding_mask(attention_mask, hidden_states.shape[1])
        all_hidden, all_attentions = [hidden_states], []
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, attention_mask=mask, output_attentions=output_attentions)
            all_hidden.append(hidden_states)
            all_attentions.append(weights)
        if self.final_norm is not None:
            hidden_states = self.final_norm(hidden_states)
        output = BaseModelOutput(
            last_hidden_state=hidden_states,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()


class VanillaTransformerDecoder(nn.Module):
    """§3.1: embeddings of the shifted target, then N decoder layers attending to the encoder output (`memory`).

    Hidden states as in the encoder: N + 1 entries, before the pre-norm final LayerNorm.
    """

    def __init__(self, config: VanillaTransformerConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config, embed_tokens)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.decoder_layers))
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.normalize_before else None

    def forward(self, input_ids=None, memory=None, memory_mask=None, attention_mask=None, inputs_embeds=None,
                cache: EncoderDecoderCache | None = None, output_attentions=False,
                output_hidden_states=False):
        past = cache.get_seq_length() if cache is not None else 0
        hidden_states = self.embeddings(input_ids, inputs_embeds, past_length=past)
        length = hidden_states.shape[1]

        # Masked self-attention (§3.2.3): the attention function's own causal path when nothing is cached or padded,
        # else an explicit mask whose offset accounts for the cached positions. A static cache returns keys for all
        # its capacity: the positions not written yet are masked like future ones. (The cache's own count of the keys
        # it returns: past + length, or a static cache's capacity — an int either way, where a static cache's `past`
        # is a tensor that a compiled step may not branch on.)
        total = cache.self_attention_cache.get_mask_sizes(length, 0)[0] if cache is not None else length
        self_mask, is_causal = None, False
        if attention_mask is not None and attention_mask.ndim == 4:
            # `generate`'s own mask for a compileable (static) cache, (B, 1, T, capacity): boolean, or 0 where seen.
            self_mask = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
            self_mask = self_mask | ~self_mask.any(dim=-1, keepdim=True)  # a padded row sees something (finite)
        elif attention_mask is not None:
            keys = padding_mask(attention_mask, past + length, total)
            self_mask = causal_mask(length, total, past, hidden_states.device)
            if keys is not None:
                # A left-padded position sees no unpadded key: let it see its causal past (padding) instead, so that
                # its meaningless output stays finite under every attention implementation and dtype (softmax over
                # nothing is NaN). No real position attends to it: its key is masked.
                visible = self_mask & keys
                self_mask = torch.where(visible.any(dim=-1, keepdim=True), visible, self_mask)
        elif past == 0 and total == length:
            is_causal = length > 1
        elif length > 1 or total > past + length:
            self_mask = causal_mask(length, total, past, hidden_states.device)

        all_hidden, self_attentions, cross_attentions = [hidden_states], [], []
        for layer in self.layers:
            hidden_states, self_weights, cross_weights = layer(
                hidden_states, memory, self_mask=self_mask, is_causal=is_causal, memory_mask=memory_mask,
                cache=cache, output_attentions=output_attentions,
            )
            all_hidden.append(hidden_states)
            self_attentions.append(self_weights)
            cross_attentions.append(cross_weights)
        if self.final_norm is not None:
            hidden_states = self.final_norm(hidden_states)
        return (hidden_states, tuple(all_hidden) if output_hidden_states else None,
                tuple(self_attentions) if output_attentions else None,
                tuple(cross_attentions) if output_attentions else None)

# ---------------------------------------------------------------------------------------------------------------------
# The models: encoder–decoder (§3.1)
# ---------------------------------------------------------------------------------------------------------------------


class VanillaTransformerPreTrainedModel(PreTrainedModel):
    """§3.1 and §5: what the models share — the configuration, weight initialisation, and saving and loading
    (safetensors only, the code files travel with the folder)."""

    config_class = VanillaTransformerConfig
    config: VanillaTransformerConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flex_attn = True
    # A decoding step with a static cache traces as one graph (test_conformance: generate's `compile_config` path).
    _can_compile_fullgraph = True
    # `forward` takes `num_items_in_batch` (Trainer passes it, and then leaves gradient accumulation's scaling to us).
    accepts_loss_kwargs = True
    _no_split_modules = ["EncoderLayer", "DecoderLayer"]

    def save_pretrained(self, save_directory, *args, push_to_hub=False, **kwargs):
        """transformers' `save_pretrained` (config.json, generation_config.json, model.safetensors with the shared
        matrix once), plus the two code files and `auto_map`, so the folder loads with `trust_remote_code=True`
        where this package is not installed. Trainer checkpoints and `push_to_hub` go through here too."""
        check_folder_target(save_directory)
        if push_to_hub:  # save fully first, then upload the folder, code files included
            repo_id = kwargs.pop("repo_id", Path(save_directory).name)
            hub_kwargs = {k: kwargs.pop(k) for k in ("commit_message", "private", "token", "revision", "create_pr")
                          if k in kwargs}
            self.save_pretrained(save_directory, *args, **kwargs)
            return self.push_to_hub(repo_id, **hub_kwargs)
        # A field changed after construction (e.g. tie_word_embeddings=False) would write a folder that
        # from_pretrained refuses: say so before writing anything.
        self.config.check_values()
        self.config.auto_map = dict(AUTO_MAP)
        # The weights under this code's names, never renamed by a conversion of transformers' (its "original
        # format"): Trainer's resume and Accelerate load the file by name with `load_state_dict`.
        kwargs.setdefault("save_original_format", False)
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_code_files(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, use_safetensors=True, strict: bool | None = None,
                        **kwargs):
        """transformers' `from_pretrained`, with what it checks after loading (all named in the message):

        - a weight the model needs that the file lacks (tied names count as present when their source is stored) is
          initialised as in a new model, with a warning naming it, as transformers' own models do (so a partial
          checkpoint, or `from_pretrained(None, config=config, state_dict={})`, loads); `strict=True` refuses it
          with an OSError;
        - a weight holding inf or NaN is an OSError (the file is damaged, or training diverged); `strict=False` loads
          it anyway with a warning;
        - nothing is left on the `meta` device; weights in the file that the model does not use are named in a
          warning; pickle weights (`*.bin`) are never loaded unless the caller opts in with `use_safetensors=False`;
          a damaged `model.safetensors` is named in the error.

        Folders saved with the fused attention projections of earlier versions load too (see `read_fused_folder`).
        """
        want_info = kwargs.pop("output_loading_info", False)
        source = pretrained_model_name_or_path
        fused = read_fused_folder(source, kwargs) if use_safetensors else None
        if fused is not None:
            pretrained_model_name_or_path, (kwargs, generation_config) = None, fused
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args,
                                                  use_safetensors=use_safetensors, output_loading_info=True, **kwargs)
        except Exception as error:  # safetensors' own errors do not say which file
            if type(error).__name__ != "SafetensorError" and "safetensors" not in str(error).lower():
                raise
            raise OSError(f"could not load model.safetensors from {source}: the file is "
                          f"truncated or corrupt, or missing ({error})") from error
        if fused is not None and generation_config is not None and model.can_generate():
            model.generation_config = generation_config
        model.check_loaded_weights("the given state dict" if source is None else source, info, strict)
        return (model, info) if want_info else model

    def check_loaded_weights(self, source, info: dict, strict: bool | None) -> None:
        """The checks of `from_pretrained` after loading (see there)."""
        state = self.state_dict()
        on_meta = [name for name, tensor in state.items() if tensor.device.type == "meta"]
        if on_meta:
            raise OSError(f"loading {source} left weights uninitialised (on the meta device): {', '.join(on_meta)}")
        if info["unexpected_keys"]:
            logger.warning(f"{source}: the weight file holds {len(info['unexpected_keys'])} weight(s) this model does "
                           f"not use, ignored: {', '.join(sorted(info['unexpected_keys']))}")
        missing = set(info["missing_keys"])
        # A tied name (lm_head.weight) is missing only because its source is: name the stored one.
        tied = self._tied_weights_keys or {}  # None on the bare VanillaTransformerModel: nothing tied to a head
        missing = sorted(name for name in missing if tied.get(name) not in missing)
        nonfinite = [name for name, tensor in state.items()
                     if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
        lacking = f"the weight file lacks {first_names(missing)} (it is incomplete, or belongs to another model)"
        damaged = f"weights hold inf or NaN: {first_names(nonfinite)} (the file is damaged, or training diverged)"
        refused = [problem for problem, found, refuse in ((lacking, missing, strict is True),
                                                          (damaged, nonfinite, strict is not False)) if found and refuse]
        if refused:
            hint = "Pass strict=False to load it anyway" if nonfinite else "Leave strict unset to initialise them"
            raise OSError(f"could not load {source}: {'; '.join(refused)}. {hint}.")
        if missing:
            logger.warning(f"{source}: {lacking}; those {len(missing)} weight(s) are newly initialised, as in a new "
                           f"model: train or fine-tune before using it (strict=True refuses such a folder)")
        if nonfinite:
            logger.warning(f"{source}: {damaged}; loaded anyway (strict=False)")

    @torch.no_grad()
    def _init_weights(self, module):
        """Glorot-uniform linear layers (as tensor2tensor and fairseq) and N(0, d_model^-0.5) embeddings, so that
        embeddings × √d_model have unit scale; `config.init_std` switches to N(0, init_std) everywhere (Marian)."""
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            fan_out = getattr(module, "glorot_fan_out", None)  # attention projections: see MultiHeadAttention
            if std is None and fan_out is not None:
                bound = math.sqrt(6.0 / (module.in_features + fan_out))
                init.uniform_(module.weight, -bound, bound)
            elif std is None:
                init.xavier_uniform_(module.weight)
            else:
                init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=self.config.d_model**-0.5 if std is None else std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, VanillaTransformerWithLMHead) and module.final_logits_bias is not None:
            init.zeros_(module.final_logits_bias)


def first_names(names: list[str], shown: int = 12) -> str:
    """The first `shown` names, and how many more (all of them are in `output_loading_info`'s lists)."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def check_folder_target(save_directory) -> None:
    """`save_pretrained` writes a folder: an existing file at that path (or above it) is one clear error naming the
    path, before anything is written (transformers only logs it, and the code files then fail on a temporary name)."""
    path = Path(save_directory)
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                what = "it" if candidate == path else str(candidate)
                raise NotADirectoryError(f"cannot save the model to {save_directory}: {what} is a file, not a folder")
            return


def write_code_files(save_directory) -> None:
    """Copies this file and the configuration file flat into `save_directory`, the package-relative import of the
    configuration rewritten to a sibling import (idempotent: a flat copy stays as it is)."""
    modeling_source = Path(__file__).read_text(encoding="utf-8")
    modeling_source = re.sub(r"from \.\.configuration\.configuration_vanilla_transformer import",
                             "from .configuration_vanilla_transformer import", modeling_source)
    configuration_source = Path(inspect.getsourcefile(VanillaTransformerConfig)).read_text(encoding="utf-8")
    for name, source in (("modeling_vanilla_transformer.py", modeling_source),
                         ("configuration_vanilla_transformer.py", configuration_source)):
        target = Path(save_directory) / name
        temporary = target.with_suffix(".py.tmp")
        temporary.write_text(source, encoding="utf-8")
        os.replace(temporary, target)  # atomic: a reader never sees half a file


class VanillaTransformerModel(VanillaTransformerPreTrainedModel):
    """§3.1: the encoder–decoder (one shared embedding matrix, §3.4) without the output projection; returns
    `Seq2SeqModelOutput`."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.encoder = VanillaTransformerEncoder(config, self.shared)
        self.decoder = VanillaTransformerDecoder(config, self.shared)
        self.post_init()

    def get_input_embeddings(self):
        return self.shared

    def set_input_embeddings(self, value: nn.Embedding):
        self.shared = value
        self.encoder.embeddings.set_embed_tokens(value)
        self.decoder.embeddings.set_embed_tokens(value)

    def get_encoder(self, modality=None):
        return self.encoder

    def get_decoder(self):
        return self.decoder

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, cache: Cache | None = None, inputs_embeds=None, decoder_inputs_embeds=None,
                use_cache=None, output_attentions=None, output_hidden_states=None,
                return_dict=None) -> Seq2SeqModelOutput:
        """The arguments of transformers' seq2seq models (`cache` under the installed release's name, see
        `takes_cache_argument`); any other keyword is a TypeError rather than silently ignored.

        Several decoder rows may share one encoder row (in consecutive runs of equal size), as the beams of a
        sentence do inside `generate`: only with a precomputed `encoder_outputs`. Otherwise the batch sizes of the
        source and the target must be equal."""
        output_attentions = bool(output_attentions if output_attentions is not None else self.config.output_attentions)
        output_hidden_states = bool(output_hidden_states if output_hidden_states is not None
                                    else self.config.output_hidden_states)
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)

        shares_encoder_rows = encoder_outputs is not None
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_ids, attention_mask, inputs_embeds, output_attentions,
                                           output_hidden_states)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        memory = encoder_outputs.last_hidden_state
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(memory.shape[:2]):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but the source has shape "
                             f"{tuple(memory.shape[:2])}")

        if decoder_input_ids is None and decoder_inputs_embeds is None:
            raise ValueError("pass decoder_input_ids (or labels to VanillaTransformerForConditionalGeneration)")
        targets = (decoder_input_ids if decoder_input_ids is not None else decoder_inputs_embeds).shape[0]
        if targets != memory.shape[0] and (not shares_encoder_rows or targets % memory.shape[0]):
            raise ValueError(f"the target batch has {targets} rows but the source batch has {memory.shape[0]}: "
                             f"they must be equal" + (" (or a multiple of it, for decoder rows sharing an encoder "
                                                      "row)" if shares_encoder_rows else ""))
        if use_cache and cache is None:
            cache = TranslationCache(self.config.decoder_layers)
        elif use_cache and not isinstance(cache, EncoderDecoderCache):
            cache = EncoderDecoderCache(cache, DynamicCache())
        if not use_cache:
            cache = None

        if isinstance(cache, TranslationCache):
            memory_mask = cache.source_mask(attention_mask, memory.shape[1])
        else:
            memory_mask = padding_mask(attention_mask, memory.shape[1])
        hidden, decoder_hidden, decoder_self, decoder_cross = self.decoder(
            decoder_input_ids, memory, memory_mask, decoder_attention_mask,
            decoder_inputs_embeds, cache, output_attentions, output_hidden_states,
        )
        output = Seq2SeqModelOutput(
            last_hidden_state=hidden,
            decoder_hidden_states=decoder_hidden,
            decoder_attentions=decoder_self,
            cross_attentions=decoder_cross,
            encoder_last_hidden_state=memory,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            **{CACHE_NAME: cache},
        )
        return output if return_dict is not False else output.to_tuple()

# ---------------------------------------------------------------------------------------------------------------------
# Unembedding (§3.4) and the label-smoothed loss (§5.4)
# ---------------------------------------------------------------------------------------------------------------------


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Teacher forcing (§3.1 "output embeddings are offset by one position"): [start, y_1, …, y_{n-1}]."""
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


class VanillaTransformerWithLMHead(VanillaTransformerPreTrainedModel):
    """§3.4 + §5.4: the encoder–decoder, then the output projection with the shared embedding matrix (§3.4), and
    the label-smoothed loss (§5.4). Use `VanillaTransformerForConditionalGeneration`, which adds `generate()` (see
    the last section); this class holds everything up to the loss.

    `labels` give the label-smoothed cross-entropy (ε = `config.label_smoothing`, positions labelled -100 ignored);
    `decoder_input_ids` are made from `labels` shifted right when absent.
    """

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.model = VanillaTransformerModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        # Marian checkpoints add a fixed bias to the logits; a buffer (saved, not trained) only when asked for.
        self.final_logits_bias = nn.Buffer(torch.zeros(1, config.vocab_size)) if config.add_final_logits_bias else None
        self.post_init()

    def get_input_embeddings(self):
        return self.model.shared

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def get_encoder(self, modality=None):
        return self.model.encoder

    def get_decoder(self):
        return self.model.decoder

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        vocab = embeddings.weight.shape[0]
        if self.final_logits_bias is not None and self.final_logits_bias.shape[-1] != vocab:
            old = self.final_logits_bias
            bias = old.new_zeros(1, vocab)
            keep = min(vocab, old.shape[-1])
            bias[:, :keep] = old[:, :keep]
            self.final_logits_bias = nn.Buffer(bias)
        return embeddings

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor):
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, cache=None, inputs_embeds=None, decoder_inputs_embeds=None, labels=None,
                use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                num_items_in_batch=None) -> Seq2SeqLMOutput:
        """`VanillaTransformerModel.forward`'s arguments, plus `labels` (the loss) and `num_items_in_batch`: the
        number of labelled tokens of the whole (accumulated) batch, as `Trainer` passes it; the loss is then the
        summed loss divided by it, so that gradient accumulation weights every token alike."""
        if labels is not None:
            use_cache = False
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
            target = decoder_input_ids if decoder_input_ids is not None else decoder_inputs_embeds
            if tuple(labels.shape) != tuple(target.shape[:2]):
                raise ValueError(f"labels have shape {tuple(labels.shape)} but the decoder input has shape "
                                 f"{tuple(target.shape[:2])}: they must be equal")
            # Teacher forcing: one target row per source row (only generate's beams share a source row).
            source = input_ids if input_ids is not None else inputs_embeds
            if source is None and encoder_outputs is not None:
                source = encoder_outputs[0]
            if source is not None and source.shape[0] != labels.shape[0]:
                raise ValueError(f"labels have {labels.shape[0]} rows but the source batch has {source.shape[0]}: "
                                 f"they must be equal")
        outputs = self.model(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, cache,
            inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states, return_dict=True,
        )
        logits = self.lm_head(outputs.last_hidden_state)
        if self.final_logits_bias is not None:
            logits.add_(self.final_logits_bias)  # in place: no second (batch, length, vocab) tensor

        loss = None
        if labels is not None:
            loss = self.loss(logits, labels, num_items_in_batch)
        output = Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
        )
        return output if return_dict is not False else output.to_tuple()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        """§5.4 label-smoothed cross-entropy (ε = `config.label_smoothing`) over the labelled positions (-100 is
        ignored): the mean per labelled token, or the sum divided by `num_items_in_batch` when given. A batch
        without any labelled token has loss 0 (and no gradient), with a warning, rather than NaN. The sums come
        from `label_smoothed_loss_sums`, as the trainer's do."""
        total, _, count = label_smoothed_loss_sums(logits, labels, self.config.label_smoothing)
        if num_items_in_batch is None:
            if not torch.compiler.is_compiling() and count.item() == 0:
                logger.warning_once("every label is -100 (ignored): the loss of this batch is 0")
            num_items_in_batch = count.clamp(min=1)
        elif torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(total.device)
        return total / num_items_in_batch


def label_smoothed_loss_sums(logits: torch.Tensor, labels: torch.Tensor,
                             label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(label-smoothed loss, plain NLL, labelled tokens): both losses summed over the labelled positions (-100 is
    ignored), the count a 0-dimensional integer tensor. The model's `loss` divides the first by a token count; the
    trainer (`vanilla_transformer.training`) sums them over a global batch and logs the NLL.

    Smoothing as in §5.4 and `torch.nn.functional.cross_entropy`: (1 - ε) · NLL + ε · mean over the vocabulary of
    -log p. Computed in float32 whatever the autocast precision, from one log-softmax.
    """
    labels = labels.to(logits.device)
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    mask = labels != -100
    nll = -log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    nll_sum = (nll * mask).sum()
    if label_smoothing:
        smooth = -log_probs.mean(dim=-1)
        loss_sum = ((1.0 - label_smoothing) * nll + label_smoothing * smooth).mul(mask).sum()
    else:
        loss_sum = nll_sum
    return loss_sum, nll_sum, mask.sum()


# ---------------------------------------------------------------------------------------------------------------------
# Generation (§6.1) and the adapter to transformers (not in the paper)
# ---------------------------------------------------------------------------------------------------------------------


# --- The transformers releases this file works with

# Tested (CI runs the suite on the oldest and on the newest release); pyproject.toml declares
# transformers>=OLDEST,<the minor release after NEWEST. Outside that range the model may still work: we warn once.
TESTED_TRANSFORMERS = ("5.23.0", "5.25.0")

# transformers 5.24 renamed the cache argument of `forward`/`generate`, and the cache field of model outputs, from
# `past_key_values` to `cache`. A model that takes the old name while `generate` passes the new one decodes every
# step without its cache (garbage, no error). So the code says `cache`, and at the boundary speaks the name of the
# installed release: CACHE_NAME is the keyword `forward`/`generate` take and the output field that holds the cache.
CACHE_NAME = "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"


def warn_if_untested_transformers(installed: str = transformers.__version__) -> bool:
    """Logs one warning (and returns True) when the installed transformers is outside the tested range."""
    oldest, newest = (Version(v) for v in TESTED_TRANSFORMERS)
    version = Version(installed)
    if oldest <= Version(version.base_version) < Version(f"{newest.major}.{newest.minor + 1}"):
        return False
    logger.warning(f"transformers {installed} is installed, but vanilla-transformer is tested with transformers "
                   f"{TESTED_TRANSFORMERS[0]} to {TESTED_TRANSFORMERS[1]}: check generate() outputs before relying "
                   f"on them (`make test-latest` runs the suite against the newest releases)")
    return True


warn_if_untested_transformers()


def takes_cache_argument(forward):
    """Gives `forward(..., cache=None, ...)` the cache keyword of the installed transformers (see CACHE_NAME).

    Before 5.24 the keyword is `past_key_values` and `cache` is unknown (a TypeError, like any other unknown keyword);
    from 5.24 on it is `cache`, and `past_key_values` is still accepted with a deprecation warning, as transformers'
    own models do. The signature shows the installed name, since `generate` reads it to decide what to pass.
    """
    signature = inspect.signature(forward)
    if CACHE_NAME != "cache":
        signature = signature.replace(parameters=[
            parameter.replace(name=CACHE_NAME) if parameter.name == "cache" else parameter
            for parameter in signature.parameters.values()
        ])

    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        if CACHE_NAME != "cache":
            if "cache" in kwargs:
                raise TypeError(f"{type(self).__name__}.forward() got an unexpected keyword argument 'cache' "
                                f"(transformers {transformers.__version__} calls it {CACHE_NAME!r})")
            if CACHE_NAME in kwargs:
                kwargs["cache"] = kwargs.pop(CACHE_NAME)
        elif "past_key_values" in kwargs:
            if "cache" in kwargs:
                raise TypeError("pass the cache as `cache` only, not also as `past_key_values`")
            logger.warning_once("`past_key_values` is deprecated in transformers >= 5.24: pass `cache` instead")
            kwargs["cache"] = kwargs.pop("past_key_values")
        return forward(self, *args, **kwargs)

    wrapper.__signature__ = signature
    return wrapper


# The models' `forward` take the cache under the installed release's name. Applied here rather than as a decorator
# where `forward` is defined, so that this adapter stays in this section; `VanillaTransformerForConditionalGeneration`
# below does the same in its class body.
VanillaTransformerModel.forward = takes_cache_argument(VanillaTransformerModel.forward)


# --- Generation: the decoding cache, and generate() with the §6.1 defaults

# Whether the `generate` call running in this context keeps one encoder row per sentence (see
# `VanillaTransformerForConditionalGeneration.generate`): per call, never on the model instance.
SHARE_ENCODER_ROWS: contextvars.ContextVar[bool] = contextvars.ContextVar("share_encoder_rows", default=False)


class GrowingLayer(DynamicLayer):
    """Decoding (§6.1; the paper does not describe a cache): one decoder layer's self-attention K/V in a
    (batch, heads, capacity, head_dim) buffer that grows by doubling.

    transformers' `DynamicLayer` concatenates a new tensor every step and beam search then copies it again to reorder
    it: two allocations and copies of the whole cache per step. Here a step writes one position in place, and
    reordering is one `index_select` of the filled part into a spare buffer. `keys`/`values` are views of the
    filled part: (batch, heads, length, head_dim), each head's (length, head_dim) block contiguous.
    """

    def lazy_initialization(self, key_states, value_states):
        super().lazy_initialization(key_states, value_states)
        self.length = 0
        self._buffers = self._spares = None

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self._buffers is None or self.length + new > self._buffers[0].shape[-2]:
            self._grow(self.length + new, key_states)
        for buffer, states in zip(self._buffers, (key_states, value_states)):
            buffer[:, :, self.length:self.length + new] = states
        self.length += new
        self._expose()
        return self.keys, self.values

    def _grow(self, needed: int, like: torch.Tensor):
        batch, heads, _, head_dim = like.shape
        capacity = max(16, needed, 2 * (0 if self._buffers is None else self._buffers[0].shape[-2]))
        grown = tuple(like.new_empty(batch, heads, capacity, head_dim) for _ in range(2))
        if self._buffers is not None:
            for old, new in zip(self._buffers, grown):
                new[:, :, :self.length] = old[:, :, :self.length]
        self._buffers, self._spares = grown, None

    def _expose(self):
        self.keys, self.values = (buffer[:, :, :self.length] for buffer in self._buffers)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if not self.is_initialized or self.length == 0:
            return
        if self._spares is None:
            self._spares = tuple(torch.empty_like(buffer) for buffer in self._buffers)
        beam_idx = beam_idx.to(self._buffers[0].device)
        for buffer, spare in zip(self._buffers, self._spares):
            torch.index_select(buffer[:, :, :self.length], 0, beam_idx, out=spare[:, :, :self.length])
        self._buffers, self._spares = self._spares, self._buffers
        self._expose()

    def _replace(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Rebuilds the buffers from plain (batch, heads, length, head_dim) tensors (crop, repeat, select)."""
        self._buffers = (keys.contiguous(), values.contiguous())
        self._spares, self.length = None, keys.shape[-2]
        self._expose()

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        if self.is_initialized and self.length:
            self._replace(self.keys, self.values)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            self._replace(self.keys.repeat_interleave(repeats, 0), self.values.repeat_interleave(repeats, 0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self._replace(self.keys[indices], self.values[indices])

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0


class TranslationCache(EncoderDecoderCache):
    """Decoding (§6.1; not in the paper's model): transformers' encoder–decoder cache. Decoder self-attention K/V
    grow by one position per step (in `GrowingLayer`s); encoder–decoder K/V, and the source padding mask that goes
    with them, are made once at the first step.

    Beam search reorders the cache after every step. Only the self-attention part needs it: the beams of a sentence
    share one source, whose encoder–decoder K/V are kept once per sentence (or, expanded, as identical copies that
    reordering among themselves would not change) — skipping that copy saves most of a beam step's memory traffic.
    """

    def __init__(self, num_layers: int):
        self_attention = DynamicCache()
        self_attention.layers = [GrowingLayer() for _ in range(num_layers)]
        super().__init__(self_attention, DynamicCache())
        self._source_mask, self._has_source_mask = None, False

    def source_mask(self, attention_mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
        """`padding_mask` of the source, built at the first step and reused: the source does not change."""
        if not self._has_source_mask:
            self._source_mask, self._has_source_mask = padding_mask(attention_mask, length), True
        return self._source_mask

    def reorder_cache(self, beam_idx: torch.LongTensor):
        self.self_attention_cache.reorder_cache(beam_idx)


class VanillaTransformerForConditionalGeneration(VanillaTransformerWithLMHead, GenerationMixin):
    """The full model (§3.4, §5.4: `VanillaTransformerWithLMHead`) with transformers' `generate()` (greedy, beam
    search, sampling) and the paper's §6.1 decoding defaults in `generation_config`: beam 4, length penalty 0.6,
    at most source length + 50 tokens."""

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        if self.generation_config is not None and not self.generation_config.to_diff_dict().get("num_beams"):
            # §6.1 decoding: beam 4, length penalty 0.6 (saved in generation_config.json; from_pretrained reloads it).
            self.generation_config.num_beams = BEAM_SIZE
            self.generation_config.length_penalty = LENGTH_PENALTY

    forward = takes_cache_argument(VanillaTransformerWithLMHead.forward)

    def _expand_inputs_for_generation(self, expand_size=1, is_encoder_decoder=False, input_ids=None, **model_kwargs):
        """transformers repeats every input once per beam. The encoder output and its mask stay at one row per
        sentence here: the beams of a sentence share them in encoder–decoder attention, whose K/V are then projected
        once per sentence instead of once per beam (and beam search never has to reorder them). `generate` decides
        whether rows are shared (`share_encoder_rows`)."""
        if expand_size == 1 or model_kwargs.get("encoder_outputs") is None or not SHARE_ENCODER_ROWS.get():
            return super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **model_kwargs)
        shared = {key: model_kwargs.pop(key) for key in ("encoder_outputs", "attention_mask") if key in model_kwargs}
        input_ids, model_kwargs = super()._expand_inputs_for_generation(expand_size, False, input_ids, **model_kwargs)
        return input_ids, {**model_kwargs, **shared}

    @torch.no_grad()
    def generate(self, inputs=None, generation_config=None, share_encoder_rows: bool = True, **kwargs):
        """transformers' `generate`, plus the paper's length rule (§6.1): when neither the call nor the generation
        config sets a length, decode at most source length + 50 tokens.

        With several beams or returned sequences per sentence, the encoder output stays at one row per sentence (see
        `_expand_inputs_for_generation`), so `encoder_hidden_states` / `encoder_attentions` of a
        `return_dict_in_generate=True` result have the input's batch size, not batch × beams.
        `share_encoder_rows=False` gives transformers' classic layout (one encoder row per beam); so does a cache
        of transformers' own classes (`cache_implementation="static"`, or one passed in), which expects it.
        """
        config = generation_config if generation_config is not None else self.generation_config
        for name in ("num_beams", "num_return_sequences"):
            value = kwargs.get(name, getattr(config, name, 1))
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        sets_length = {"max_length", "max_new_tokens"} & config.to_diff_dict().keys()
        if not sets_length and "max_length" not in kwargs and "max_new_tokens" not in kwargs:
            source = next((x for x in (inputs, kwargs.get("input_ids"), kwargs.get("inputs_embeds")) if x is not None),
                          None)
            if source is not None and source.ndim in (2, 3):
                kwargs["max_new_tokens"] = new_token_limit(source.shape[1], self.config.max_position_embeddings)
        use_cache = kwargs.get("use_cache", config.use_cache) is not False
        transformers_cache = kwargs.get("cache_implementation", config.cache_implementation) is not None
        if kwargs.get(CACHE_NAME) is None and use_cache and not transformers_cache:
            kwargs[CACHE_NAME] = TranslationCache(self.config.decoder_layers)
        # The choice travels with this call (a context variable: each thread, each call its own), not on the model,
        # which several threads may be generating with at once.
        token = SHARE_ENCODER_ROWS.set(share_encoder_rows and (
            isinstance(kwargs.get(CACHE_NAME), TranslationCache) or not use_cache))
        try:
            return super().generate(inputs, generation_config, **kwargs)
        finally:
            SHARE_ENCODER_ROWS.reset(token)


# --- Folders saved with fused projections

# Until the attention projections were split (vanilla-transformer 7cb0c75 and before), self-attention stored W_Q, W_K,
# W_V as one `qkv_proj` ([Q; K; V] along the output dimension) and encoder–decoder attention W_K, W_V as one `kv_proj`.
# `from_pretrained` splits them (`read_fused_folder`); `save_pretrained` writes the current names. No conversion is
# registered with transformers: its conversions are undone on save (transformers saves a model's "original format"),
# which would write the fused layout again, and registering one changes a table of transformers for every caller.
FUSED_PROJECTION = re.compile(r"(?P<attention>(?:.*\.)?(?:self_attn|cross_attn))\.(?P<fused>qkv_proj|kv_proj)\."
                              r"(?P<kind>weight|bias)")


def split_fused_projections(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict in the fused layout (see FUSED_PROJECTION) in the current one; other keys unchanged. Used by
    `from_pretrained` for old folders, and by code that loads weight files with `load_state_dict` (checkpoint
    averaging, resuming)."""
    converted = {}
    for key, tensor in state_dict.items():
        match = FUSED_PROJECTION.fullmatch(key)
        if match is None:
            converted[key] = tensor
            continue
        names = ("q_proj", "k_proj", "v_proj") if match["fused"] == "qkv_proj" else ("k_proj", "v_proj")
        for name, part in zip(names, tensor.chunk(len(names), dim=0)):
            converted[f"{match['attention']}.{name}.{match['kind']}"] = part.contiguous()
    return converted


HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


def read_fused_folder(source, kwargs: dict) -> tuple[dict, object] | None:
    """For a folder (local or on the Hub) whose safetensors hold the fused projections: the keyword arguments that
    load it with `from_pretrained(None, ...)` (its config, its split state dict), and its generation config (None
    when it has none). None for any other folder, which takes the usual loading path: decided from the files'
    headers, no weights read."""
    if source is None or kwargs.get("state_dict") is not None or kwargs.get("gguf_file") is not None:
        return None
    hub = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
    try:
        found = cached_file(source, "model.safetensors", _raise_exceptions_for_missing_entries=False, **hub)
        files = [found] if found is not None else []
        if not files:
            index = cached_file(source, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False,
                                **hub)
            if index is not None:
                shards = sorted(set(json.loads(Path(index).read_text(encoding="utf-8"))["weight_map"].values()))
                files = [cached_file(source, shard, **hub) for shard in shards]
        keys = set()
        for file in files:
            with safe_open(str(file), framework="pt") as weights:
                keys.update(weights.keys())
    except Exception:  # noqa: BLE001  (anything unreadable: transformers' own loading names the problem)
        return None
    if not any(FUSED_PROJECTION.fullmatch(key) for key in keys):
        return None
    state_dict = {}
    for file in files:
        state_dict.update(load_file(str(file)))
    kwargs = dict(kwargs)
    config = kwargs.pop("config", None)
    if config is None:
        config, kwargs = VanillaTransformerConfig.from_pretrained(source, return_unused_kwargs=True, **kwargs)
    for key in HUB_KWARGS:
        kwargs.pop(key, None)
    try:
        generation_config = GenerationConfig.from_pretrained(source, **hub)
    except OSError:  # no generation_config.json: the model's defaults
        generation_config = None
    return {**kwargs, "config": config, "state_dict": split_fused_projections(state_dict)}, generation_config


__all__ = [
    "VanillaTransformerPreTrainedModel",
    "VanillaTransformerModel",
    "VanillaTransformerForConditionalGeneration",
    "sinusoidal_table",
    "shift_tokens_right",
    "split_fused_projections",
]
