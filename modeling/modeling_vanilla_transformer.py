"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017) as a transformers model.

The file reads in the paper's order: Embedding (§3.4, §3.5) → Attention (§3.2) → MLPs (§3.3) → the residual
sub-layer connection (§3.1, §5.4) → encoder and decoder stacks (§3.1) → Unembedding (§3.4) and the loss (§5.4).

One matrix is shared by the encoder input embedding, the decoder input embedding and the output projection (§3.4):
the three are the same `nn.Parameter`, stored once in `model.safetensors` and re-tied on load.
"""

import inspect
import math
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput

from ..configuration.configuration_vanilla_transformer import VanillaTransformerConfig

# Saved folders carry this file and the configuration file flat, so that `trust_remote_code=True` loads them where
# the vanilla_transformer package is not installed (the import above is rewritten to a sibling import there).
AUTO_MAP = {
    "AutoConfig": "configuration_vanilla_transformer.VanillaTransformerConfig",
    "AutoModel": "modeling_vanilla_transformer.VanillaTransformerModel",
    "AutoModelForSeq2SeqLM": "modeling_vanilla_transformer.VanillaTransformerForConditionalGeneration",
}

# §6.1: "We set the maximum output length during inference to input length + 50".
EXTRA_OUTPUT_TOKENS = 50


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
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
# Embedding (§3.4, §3.5)
# ---------------------------------------------------------------------------------------------------------------------


def sinusoidal_table(length: int, d_model: int, layout: str = "interleaved", offset: int = 0) -> torch.Tensor:
    """§3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).

    `layout="interleaved"` puts sin and cos at even and odd dimensions as the formula says; `"concatenated"` puts all
    sines first and all cosines second ([sin | cos]), as tensor2tensor, fairseq and Marian do. Computed in float64 so
    that large positions stay exact, returned in float32.
    """
    position = torch.arange(offset, offset + length, dtype=torch.float64)[:, None]
    inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
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
        table = self._table
        if table is None or table.shape[0] < end or table.device != like.device or table.dtype != like.dtype:
            rows = max(end, self.initial_length, 0 if table is None else table.shape[0])
            table = sinusoidal_table(rows, self.d_model, self.layout).to(device=like.device, dtype=like.dtype)
            self._table = table
        return table[offset:end]


class Embeddings(nn.Module):
    """§3.4–3.5: token → shared embedding × √d_model, + sinusoidal position, then dropout (§5.4).

    `embed_tokens` is the model's one shared `nn.Embedding`; the encoder and the decoder each hold a reference to it.
    """

    def __init__(self, config: VanillaTransformerConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self.embed_tokens = embed_tokens
        self.embed_positions = SinusoidalPositionalEncoding(
            config.d_model, config.positional_encoding, config.max_position_embeddings
        )
        self.scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.dropout = config.dropout

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
        return dropout(hidden, self.dropout, self.training)


def check_token_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """A bad id gets a ValueError naming it, not an IndexError deep in torch or a device-side assert."""
    if input_ids.ndim != 2:
        raise ValueError(f"input ids must have shape (batch, length), got {tuple(input_ids.shape)}")
    outside = (input_ids < 0) | (input_ids >= vocab_size)
    if outside.any():  # one reduction per call: this runs at every decoding step
        bad = input_ids[outside][0].item()
        raise ValueError(f"token id {bad} is outside the vocabulary (vocab_size={vocab_size}, valid ids 0..{vocab_size - 1})")


# ---------------------------------------------------------------------------------------------------------------------
# Attention (§3.2)
# ---------------------------------------------------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """§3.2.2: MultiHead(Q, K, V) = Concat(head_1..head_h) W_O, head_i = Attention(Q W_Q_i, K W_K_i, V W_V_i).

    Self-attention projects Q, K and V with one fused matrix; encoder–decoder attention (`cross=True`) projects Q
    from the decoder and K, V from the encoder output with a fused K/V matrix. Scaled dot-product attention (§3.2.1)
    runs through `torch.nn.functional.scaled_dot_product_attention`; when the caller asks for the attention maps we
    compute softmax(QKᵀ/√d_k)V explicitly, since the fused kernel does not return them.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float, cross: bool = False, layer_idx: int = 0):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.cross, self.layer_idx, self.dropout = cross, layer_idx, dropout
        if cross:
            self.q_proj = nn.Linear(d_model, d_model)
            self.kv_proj = nn.Linear(d_model, 2 * d_model)
        else:
            self.qkv_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, x: torch.Tensor, parts: int):
        """(B, T, parts·d) → `parts` tensors of shape (B, h, T, d_k)."""
        batch, length, _ = x.shape
        return x.view(batch, length, parts, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, hidden_states, memory=None, attention_mask=None, is_causal=False, cache: Cache | None = None,
                output_attentions=False):
        if self.cross:
            (query,) = self._heads(self.q_proj(hidden_states), 1)
            cross_cache = cache.cross_attention_cache if cache is not None else None
            if cache is not None and cache.is_updated.get(self.layer_idx):
                # The encoder output does not change while decoding: its K/V were projected at the first step.
                key, value = cross_cache.layers[self.layer_idx].keys, cross_cache.layers[self.layer_idx].values
            else:
                key, value = self._heads(self.kv_proj(memory), 2)
                if cache is not None:
                    key, value = cross_cache.update(key, value, self.layer_idx)
                    cache.is_updated[self.layer_idx] = True
        else:
            query, key, value = self._heads(self.qkv_proj(hidden_states), 3)
            if cache is not None:
                key, value = cache.self_attention_cache.update(key, value, self.layer_idx)

        dropout_p = self.dropout if self.training else 0.0
        # A decoding step (one query per sequence) on CPU: the explicit product is several times faster than the
        # fused kernel, whose per-call cost dominates at this size.
        decoding_step = query.shape[-2] == 1 and query.device.type == "cpu"
        # Beams (or returned sequences) of one sentence share its encoder output, kept at one row per sentence:
        # their queries become extra query positions of that row, so K/V are projected and read once per sentence.
        groups = query.shape[0] // key.shape[0]
        if groups > 1:
            query = self._merge_groups(query, groups)
        if output_attentions or decoding_step:
            output, weights = attention_with_weights(query, key, value, attention_mask, is_causal, dropout_p)
        else:
            output = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout_p,
                                                    is_causal=is_causal)
            weights = None
        if groups > 1:
            output = self._split_groups(output, groups)
            weights = None if weights is None else self._split_groups(weights, groups)
        batch, _, length, _ = output.shape
        output = output.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.out_proj(output), weights

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


def attention_with_weights(query, key, value, mask, is_causal, dropout_p):
    """§3.2.1 written out: softmax(QKᵀ / √d_k) V, returning the attention probabilities too."""
    scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
    if is_causal:
        mask = causal_mask(query.shape[-2], key.shape[-2], 0, query.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    output = dropout(weights, dropout_p, training=dropout_p > 0) @ value
    return output, weights


def causal_mask(length: int, total: int, past: int, device) -> torch.Tensor:
    """(length, total) boolean mask: query t (at absolute position past + t) may see keys 0..past + t (§3.2.3)."""
    rows = torch.arange(past, past + length, device=device)[:, None]
    return torch.arange(total, device=device)[None, :] <= rows


class GrowingLayer(DynamicLayer):
    """One decoder layer's self-attention K/V in a (batch, heads, capacity, head_dim) buffer that grows by doubling.

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
    """transformers' encoder–decoder cache: decoder self-attention K/V grow by one position per step (in
    `GrowingLayer`s); encoder–decoder K/V, and the source padding mask that goes with them, are made once at the
    first step.

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


def padding_mask(attention_mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """(B, S) 1/0 mask → (B, 1, 1, S) boolean mask for SDPA, or None when nothing is padded.

    A row that is all padding would make softmax over no keys (NaN); it is allowed to attend to its own padding
    instead, so its (meaningless) output stays finite and cannot poison anything downstream.
    """
    if attention_mask is None:
        return None
    if attention_mask.shape[-1] != length:
        raise ValueError(f"attention_mask has length {attention_mask.shape[-1]} but the input has length {length}")
    mask = attention_mask.bool()
    if mask.all():
        return None
    mask = mask | ~mask.any(dim=-1, keepdim=True)
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
        hidden = dropout(self.activation(self.fc1(x)), self.activation_dropout, self.training)
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
        x = x + dropout(out, self.dropout, self.training)
        return (x if self.normalize_before else self.norm(x)), extra


# ---------------------------------------------------------------------------------------------------------------------
# Encoder and decoder stacks (§3.1)
# ---------------------------------------------------------------------------------------------------------------------


class EncoderLayer(GradientCheckpointingLayer):
    """§3.1: self-attention, then the position-wise FFN, each wrapped in a `SublayerConnection`."""

    def __init__(self, config: VanillaTransformerConfig, layer_idx: int):
        super().__init__()
        self.self_attn = MultiHeadAttention(config.d_model, config.encoder_attention_heads, config.attention_dropout,
                                            layer_idx=layer_idx)
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
        heads, dropout = config.decoder_attention_heads, config.attention_dropout
        self.self_attn = MultiHeadAttention(config.d_model, heads, dropout, layer_idx=layer_idx)
        self.self_attn_block = SublayerConnection(config)
        self.cross_attn = MultiHeadAttention(config.d_model, heads, dropout, cross=True, layer_idx=layer_idx)
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
                past_key_values: EncoderDecoderCache | None = None, output_attentions=False,
                output_hidden_states=False):
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        hidden_states = self.embeddings(input_ids, inputs_embeds, past_length=past)
        length = hidden_states.shape[1]

        # Masked self-attention (§3.2.3): SDPA's own causal path when nothing is cached or padded, else an explicit
        # mask whose offset accounts for the cached positions.
        self_mask, is_causal = None, False
        if attention_mask is not None:
            keys = padding_mask(attention_mask, past + length)
            self_mask = causal_mask(length, past + length, past, hidden_states.device)
            self_mask = self_mask if keys is None else self_mask & keys
        elif length > 1:
            if past == 0 and not output_attentions:
                is_causal = True
            else:
                self_mask = causal_mask(length, past + length, past, hidden_states.device)
        elif output_attentions and past == 0:
            is_causal = True

        all_hidden, self_attentions, cross_attentions = [hidden_states], [], []
        for layer in self.layers:
            hidden_states, self_weights, cross_weights = layer(
                hidden_states, memory, self_mask=self_mask, is_causal=is_causal, memory_mask=memory_mask,
                cache=past_key_values, output_attentions=output_attentions,
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
# The models
# ---------------------------------------------------------------------------------------------------------------------


class VanillaTransformerPreTrainedModel(PreTrainedModel):
    config_class = VanillaTransformerConfig
    config: VanillaTransformerConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["EncoderLayer", "DecoderLayer"]

    def save_pretrained(self, save_directory, *args, push_to_hub=False, **kwargs):
        """transformers' `save_pretrained` (config.json, generation_config.json, model.safetensors with the shared
        matrix once), plus the two code files and `auto_map`, so the folder loads with `trust_remote_code=True`
        where this package is not installed. Trainer checkpoints and `push_to_hub` go through here too."""
        if push_to_hub:  # save fully first, then upload the folder, code files included
            repo_id = kwargs.pop("repo_id", Path(save_directory).name)
            hub_kwargs = {k: kwargs.pop(k) for k in ("commit_message", "private", "token", "revision", "create_pr")
                          if k in kwargs}
            self.save_pretrained(save_directory, *args, **kwargs)
            return self.push_to_hub(repo_id, **hub_kwargs)
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_code_files(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, use_safetensors=True, **kwargs):
        """transformers' `from_pretrained`, but pickle weights (`*.bin`) are never loaded unless the caller opts in
        with `use_safetensors=False`, and a damaged `model.safetensors` is named in the error."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, use_safetensors=use_safetensors,
                                           **kwargs)
        except Exception as error:  # safetensors' own errors do not say which file
            if type(error).__name__ != "SafetensorError" and "safetensors" not in str(error).lower():
                raise
            raise OSError(f"could not load model.safetensors from {pretrained_model_name_or_path}: the file is "
                          f"truncated or corrupt, or missing ({error})") from error

    @torch.no_grad()
    def _init_weights(self, module):
        """Glorot-uniform linear layers (as tensor2tensor and fairseq) and N(0, d_model^-0.5) embeddings, so that
        embeddings × √d_model have unit scale; `config.init_std` switches to N(0, init_std) everywhere (Marian)."""
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            if std is None:
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
        elif isinstance(module, VanillaTransformerForConditionalGeneration) and module.final_logits_bias is not None:
            init.zeros_(module.final_logits_bias)


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


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Teacher forcing (§3.1 "output embeddings are offset by one position"): [start, y_1, …, y_{n-1}]."""
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


class VanillaTransformerModel(VanillaTransformerPreTrainedModel):
    """The encoder–decoder without the output projection; returns `Seq2SeqModelOutput`."""

    _tied_weights_keys = {
        "encoder.embeddings.embed_tokens.weight": "shared.weight",
        "decoder.embeddings.embed_tokens.weight": "shared.weight",
    }

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
        self.encoder.embeddings.embed_tokens = value
        self.decoder.embeddings.embed_tokens = value

    def get_encoder(self, modality=None):
        return self.encoder

    def get_decoder(self):
        return self.decoder

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, past_key_values: Cache | None = None, inputs_embeds=None,
                decoder_inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs) -> Seq2SeqModelOutput:
        output_attentions = bool(output_attentions if output_attentions is not None else self.config.output_attentions)
        output_hidden_states = bool(output_hidden_states if output_hidden_states is not None
                                    else self.config.output_hidden_states)
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)

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
        if targets % memory.shape[0]:
            # Several target rows may share one source row (beam search does), in consecutive runs of equal length.
            raise ValueError(f"the decoder batch ({targets} rows) is not a multiple of the encoder batch "
                             f"({memory.shape[0]} rows)")
        if use_cache and past_key_values is None:
            past_key_values = TranslationCache(self.config.decoder_layers)
        elif use_cache and not isinstance(past_key_values, EncoderDecoderCache):
            past_key_values = EncoderDecoderCache(past_key_values, DynamicCache())
        if not use_cache:
            past_key_values = None

        if isinstance(past_key_values, TranslationCache):
            memory_mask = past_key_values.source_mask(attention_mask, memory.shape[1])
        else:
            memory_mask = padding_mask(attention_mask, memory.shape[1])
        hidden, decoder_hidden, decoder_self, decoder_cross = self.decoder(
            decoder_input_ids, memory, memory_mask, decoder_attention_mask,
            decoder_inputs_embeds, past_key_values, output_attentions, output_hidden_states,
        )
        output = Seq2SeqModelOutput(
            last_hidden_state=hidden,
            past_key_values=past_key_values,
            decoder_hidden_states=decoder_hidden,
            decoder_attentions=decoder_self,
            cross_attentions=decoder_cross,
            encoder_last_hidden_state=memory,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )
        return output if return_dict is not False else output.to_tuple()


# ---------------------------------------------------------------------------------------------------------------------
# Unembedding (§3.4) and the label-smoothed loss (§5.4)
# ---------------------------------------------------------------------------------------------------------------------


class VanillaTransformerForConditionalGeneration(VanillaTransformerPreTrainedModel, GenerationMixin):
    """The full model: encoder–decoder, then the output projection with the shared embedding matrix (§3.4).

    `labels` give the label-smoothed cross-entropy (ε = `config.label_smoothing`, positions labelled -100 ignored);
    `decoder_input_ids` are made from `labels` shifted right when absent. `generate()` is transformers' own
    (greedy, beam search, sampling), with the paper's §6.1 defaults in `generation_config`.
    """

    _tied_weights_keys = {
        "lm_head.weight": "model.shared.weight",
        "model.encoder.embeddings.embed_tokens.weight": "model.shared.weight",
        "model.decoder.embeddings.embed_tokens.weight": "model.shared.weight",
    }

    def __init__(self, config: VanillaTransformerConfig):
        super().__init__(config)
        self.model = VanillaTransformerModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        # Marian checkpoints add a fixed bias to the logits; a buffer (saved, not trained) only when asked for.
        self.final_logits_bias = nn.Buffer(torch.zeros(1, config.vocab_size)) if config.add_final_logits_bias else None
        self.post_init()
        if self.generation_config is not None and not self.generation_config.to_diff_dict().get("num_beams"):
            # §6.1 decoding: beam 4, length penalty 0.6 (saved in generation_config.json; from_pretrained reloads it).
            self.generation_config.num_beams = 4
            self.generation_config.length_penalty = 0.6

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
                encoder_outputs=None, past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None,
                labels=None, use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                **kwargs) -> Seq2SeqLMOutput:
        if labels is not None:
            use_cache = False
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        outputs = self.model(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, past_key_values,
            inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states, return_dict=True,
        )
        logits = self.lm_head(outputs.last_hidden_state)
        if self.final_logits_bias is not None:
            logits.add_(self.final_logits_bias)  # in place: no second (batch, length, vocab) tensor

        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten().to(logits.device),
                                   ignore_index=-100, label_smoothing=self.config.label_smoothing)
        output = Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
        )
        return output if return_dict is not False else output.to_tuple()

    def _expand_inputs_for_generation(self, expand_size=1, is_encoder_decoder=False, input_ids=None, **model_kwargs):
        """transformers repeats every input once per beam. The encoder output and its mask stay at one row per
        sentence here: the beams of a sentence share them in encoder–decoder attention, whose K/V are then projected
        once per sentence instead of once per beam (and beam search never has to reorder them)."""
        cache = model_kwargs.get("past_key_values")
        if expand_size == 1 or model_kwargs.get("encoder_outputs") is None or not (
                cache is None or isinstance(cache, TranslationCache)):
            return super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **model_kwargs)
        shared = {key: model_kwargs.pop(key) for key in ("encoder_outputs", "attention_mask") if key in model_kwargs}
        input_ids, model_kwargs = super()._expand_inputs_for_generation(expand_size, False, input_ids, **model_kwargs)
        return input_ids, {**model_kwargs, **shared}

    @torch.no_grad()
    def generate(self, inputs=None, generation_config=None, **kwargs):
        """transformers' `generate`, plus the paper's length rule (§6.1): when neither the call nor the generation
        config sets a length, decode at most source length + 50 tokens.

        With several beams or returned sequences per sentence the encoder output stays at one row per sentence (see
        `_expand_inputs_for_generation`), so `encoder_hidden_states` / `encoder_attentions` of a
        `return_dict_in_generate=True` result have the input's batch size, not batch × beams."""
        config = generation_config if generation_config is not None else self.generation_config
        sets_length = {"max_length", "max_new_tokens"} & config.to_diff_dict().keys()
        if not sets_length and "max_length" not in kwargs and "max_new_tokens" not in kwargs:
            source = inputs if inputs is not None else kwargs.get("input_ids")
            if source is not None and source.ndim == 2:
                kwargs["max_new_tokens"] = source.shape[1] + EXTRA_OUTPUT_TOKENS
        if kwargs.get("past_key_values") is None and kwargs.get("use_cache", config.use_cache) is not False:
            kwargs["past_key_values"] = TranslationCache(self.config.decoder_layers)
        return super().generate(inputs, generation_config, **kwargs)


__all__ = [
    "VanillaTransformerPreTrainedModel",
    "VanillaTransformerModel",
    "VanillaTransformerForConditionalGeneration",
    "sinusoidal_table",
    "shift_tokens_right",
]
