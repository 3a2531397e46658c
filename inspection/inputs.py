"""Turning a sentence pair (text or token ids) into the tensors a teacher-forced forward pass needs.

Every inspection tool looks at one forward pass in which the decoder reads the target shifted right by one position
(§3.1: "the output embeddings are offset by one position"): the decoder input is [start, y_1, …, y_n] and the token
it should predict at each position is [y_1, …, y_n, </s>].
"""

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..modeling.modeling_vanilla_transformer import new_token_limit

logger = logging.getLogger(__name__)

# A sentence: text (needs a tokenizer) or token ids (a list, a 1-D tensor or a (1, length) tensor).
Sentence = str | Sequence[int] | torch.Tensor


@dataclass
class EncodedPair:
    """One source/target pair, ready for a teacher-forced forward pass (all tensors have batch size 1).

    `decoder_input_ids[t]` is what the decoder reads at position t and `labels[t]` the token it should predict there.
    The token strings label figures and reports; without a tokenizer they are the ids as text.
    """

    input_ids: torch.Tensor  # (1, source_length), ends with </s> when it came from a tokenizer
    attention_mask: torch.Tensor  # (1, source_length), 1 = real token, 0 = padding
    decoder_input_ids: torch.Tensor  # (1, target_length) = [start, y_1, …, y_n]
    labels: torch.Tensor  # (1, target_length) = [y_1, …, y_n, </s>]
    source_tokens: list[str]
    target_tokens: list[str]  # the decoder input tokens, i.e. the query/key labels of decoder attention
    label_tokens: list[str]


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Run without dropout (§5.4 applies it only in training) and restore the caller's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    """Token strings for axis labels (vocabulary entries, e.g. '▁Haus'), or the ids as text without a tokenizer."""
    ids = [int(i) for i in ids]
    if tokenizer is None:
        return [str(i) for i in ids]
    return [str(token) for token in tokenizer.convert_ids_to_tokens(ids)]


def _as_ids(sentence: Sentence, tokenizer, target: bool) -> list[int]:
    if isinstance(sentence, str):
        if tokenizer is None:
            raise ValueError("a sentence given as text needs a tokenizer; pass token ids otherwise")
        encoded = tokenizer(text_target=sentence) if target else tokenizer(sentence)
        return list(encoded["input_ids"])
    if isinstance(sentence, torch.Tensor):
        if sentence.ndim == 2 and sentence.shape[0] != 1:
            raise ValueError(f"inspection looks at one sentence pair; got a batch of {sentence.shape[0]}")
        if sentence.ndim not in (1, 2):
            raise ValueError(f"token ids must have shape (length,) or (1, length), got {tuple(sentence.shape)}")
        return [int(i) for i in sentence.flatten().tolist()]
    return [int(i) for i in sentence]


def _until_eos(ids: list[int], eos_token_id: int | None) -> list[int]:
    """The target sentence proper: everything before the first </s> (and so no padding after it)."""
    if eos_token_id is not None and eos_token_id in ids:
        return ids[: ids.index(eos_token_id)]
    return ids


def translate(model, tokenizer, src: Sentence, **generate_kwargs) -> list[int]:
    """Translate one source sentence with `model.generate` (beam search as set in `generation_config`, §6.1, and at
    most the §6.1 length, source + 50 tokens, unless `generate_kwargs` say otherwise).

    Returns the target token ids without the decoder start token and without the final </s>.
    """
    input_ids = torch.tensor([_as_ids(src, tokenizer, target=False)], device=model_device(model))
    if "max_new_tokens" not in generate_kwargs and "max_length" not in generate_kwargs:
        generate_kwargs["max_new_tokens"] = new_token_limit(
            input_ids.shape[1], getattr(model.config, "max_position_embeddings", None))
    with eval_mode(model):
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **generate_kwargs)
    ids = output[0].tolist()
    if ids and ids[0] == model.config.decoder_start_token_id:
        ids = ids[1:]
    target = _until_eos(ids, _eos_id(model))
    logger.info("translated %d source tokens into %d target tokens", input_ids.shape[1], len(target))
    return target


def _eos_id(model) -> int | None:
    eos = model.config.eos_token_id
    return eos[0] if isinstance(eos, list) else eos


def encode_pair(model, tokenizer, src: Sentence, tgt: Sentence | None = None,
                attention_mask: Sequence[int] | torch.Tensor | None = None) -> EncodedPair:
    """Source and target → the decoder's teacher-forced input and the tokens it should predict.

    `src`/`tgt` are text (tokenized with `tokenizer`, the target with `text_target=`) or token ids. The target is cut
    at its first </s>; the decoder then reads [start, y_1, …, y_n] and should predict [y_1, …, y_n, </s>]. Without
    `tgt` the model translates the source first (`translate`). `attention_mask` marks real source tokens (1) and
    padding (0); by default every source token is real.
    """
    device = model_device(model)
    source = _as_ids(src, tokenizer, target=False)
    if not source:
        raise ValueError("the source sentence is empty")
    if tgt is None:
        target = translate(model, tokenizer, source)
    else:
        target = _until_eos(_as_ids(tgt, tokenizer, target=True), _eos_id(model))
    start, eos = model.config.decoder_start_token_id, _eos_id(model)
    decoder_input = [start] + target
    labels = target + [eos]

    if attention_mask is None:
        mask = torch.ones(1, len(source), dtype=torch.long)
    else:
        mask = torch.as_tensor(attention_mask, dtype=torch.long).reshape(1, -1)
        if mask.shape[1] != len(source):
            raise ValueError(f"attention_mask has length {mask.shape[1]} but the source has {len(source)} tokens")
    return EncodedPair(
        input_ids=torch.tensor([source], device=device),
        attention_mask=mask.to(device),
        decoder_input_ids=torch.tensor([decoder_input], device=device),
        labels=torch.tensor([labels], device=device),
        source_tokens=token_strings(tokenizer, source),
        target_tokens=token_strings(tokenizer, decoder_input),
        label_tokens=token_strings(tokenizer, labels),
    )
