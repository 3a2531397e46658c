"""Attention maps of every layer and head (§3.2): encoder self-attention, masked decoder self-attention (§3.2.3) and
encoder–decoder ("cross") attention, for one sentence pair, labelled with its tokens."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .inputs import EncodedPair, Sentence, encode_pair, eval_mode

logger = logging.getLogger(__name__)


@dataclass
class AttentionMaps:
    """softmax(QKᵀ/√d_k) of every head (§3.2.1) for one sentence pair: rows are queries, columns keys; rows sum
    to 1.

    Source tokens label the encoder's queries and keys and the keys of cross-attention; target tokens (the decoder
    input, [start, y_1, …, y_n]) label the decoder's queries and the keys of its self-attention.
    """

    encoder_self: torch.Tensor  # (encoder_layers, heads, source_length, source_length)
    decoder_self: torch.Tensor  # (decoder_layers, heads, target_length, target_length)
    cross: torch.Tensor  # (decoder_layers, heads, target_length, source_length)
    source_tokens: list[str]
    target_tokens: list[str]
    pair: EncodedPair  # the ids and masks the maps were computed from


def attention_maps(model, tokenizer, src: Sentence, tgt: Sentence | None = None, *,
                   attention_mask: Sequence[int] | torch.Tensor | None = None) -> AttentionMaps:
    """All attention weights of one teacher-forced forward pass.

    `src` and `tgt` are text (then `tokenizer` is needed) or token ids (then `tokenizer` may be None and the tokens
    are labelled by their ids). The target is what the decoder should produce; it reads it shifted right
    ([start, y_1, …, y_n], see `encode_pair`). Without `tgt` the model translates the source first.
    `attention_mask` marks padded source positions (0), which then receive no attention.
    """
    pair = encode_pair(model, tokenizer, src, tgt, attention_mask)
    with eval_mode(model):
        outputs = model(input_ids=pair.input_ids, attention_mask=pair.attention_mask,
                        decoder_input_ids=pair.decoder_input_ids, output_attentions=True, use_cache=False,
                        return_dict=True)
    # Each entry is (batch=1, heads, queries, keys); stack the layers and drop the batch.
    return AttentionMaps(
        encoder_self=torch.stack(outputs.encoder_attentions)[:, 0].float().cpu(),
        decoder_self=torch.stack(outputs.decoder_attentions)[:, 0].float().cpu(),
        cross=torch.stack(outputs.cross_attentions)[:, 0].float().cpu(),
        source_tokens=pair.source_tokens,
        target_tokens=pair.target_tokens,
        pair=pair,
    )
