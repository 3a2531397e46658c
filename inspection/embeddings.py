"""Neighbours in the shared embedding space (§3.4).

Source and target share one vocabulary and one embedding matrix, so a word's nearest neighbours may come from either
language: a trained model tends to place a word close to its translations.
"""

import logging
from typing import NamedTuple

import torch.nn.functional as F

from .inputs import token_strings

logger = logging.getLogger(__name__)


class Neighbour(NamedTuple):
    token: str
    token_id: int
    similarity: float  # cosine similarity to the query token's embedding


def resolve_token(tokenizer, token: str | int) -> int:
    """A vocabulary entry ('▁Haus'), a plain word that is a single token ('Haus'), or an id → the token id."""
    if isinstance(token, int):
        return token
    if tokenizer is None:
        raise ValueError(f"looking up {token!r} needs a tokenizer; pass a token id otherwise")
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is not None and (token_id != tokenizer.unk_token_id or token == tokenizer.unk_token):
        return int(token_id)
    pieces = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(pieces) == 1:
        return int(pieces[0])
    raise ValueError(f"{token!r} is not one token of the vocabulary; it splits into "
                     f"{tokenizer.convert_ids_to_tokens(pieces)}: ask for one of those")


def nearest_tokens(model, tokenizer, token: str | int, k: int = 10, skip_special: bool = True) -> list[Neighbour]:
    """The k tokens whose embeddings (rows of `model.get_input_embeddings().weight`) have the highest cosine
    similarity to `token`'s, across both languages; the token itself comes first (cosine 1).

    `token` is a vocabulary entry, a word that is one token, or an id (then `tokenizer` may be None and the
    neighbours are named by their ids). With `skip_special` the padding, start, end and unknown tokens are left out
    of the neighbours (their embeddings carry no meaning of a word).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"k must be a positive number of neighbours, got {k!r}")
    query = resolve_token(tokenizer, token)
    weight = model.get_input_embeddings().weight.detach().float()
    if not 0 <= query < weight.shape[0]:
        raise ValueError(f"token id {query} is outside the vocabulary (size {weight.shape[0]})")
    # The padding row is all zeros; normalize's eps turns it into a zero vector (similarity 0) instead of NaN.
    unit = F.normalize(weight, dim=-1)
    similarity = unit @ unit[query]
    ranking = similarity.clone()
    if skip_special:
        special = getattr(tokenizer, "all_special_ids", None)
        if special is None:  # no tokenizer: the ids the model's config names
            config = model.config
            special = [config.pad_token_id, config.bos_token_id, config.eos_token_id, config.decoder_start_token_id]
        special = [i for i in special if isinstance(i, int) and 0 <= i < weight.shape[0]]
        ranking[special] = float("-inf")
    # cos(x, x) = 1 is the maximum; ranking the query explicitly first only guards against a rounding tie.
    ranking[query] = float("inf")
    ids = [i for i in ranking.topk(min(k, weight.shape[0])).indices.tolist() if ranking[i] > float("-inf")]
    tokens = token_strings(tokenizer, ids)
    return [Neighbour(str(tok), i, float(similarity[i])) for tok, i in zip(tokens, ids)]
