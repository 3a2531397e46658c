"""Translation with the §6.1 decoding recipe, and BLEU/chrF with sacrebleu.

* `translate`: beam search (beam 4, length penalty α = 0.6), at most source length + 50 new tokens and never more
  than the model's `max_position_embeddings`, batches of sentences sorted by length (little padding), results
  returned in the input order. An empty (or blank) sentence translates to an empty string without running the
  model; a sentence longer than the model's `max_position_embeddings` tokens is split at sentence boundaries (at
  word boundaries for a sentence longer than that on its own), each piece translated, the translations joined.
* `score`: corpus BLEU (sacrebleu's default 13a tokenization, detokenized text, as sacrebleu recommends) and chrF.

The training loop evaluates with these; the deployment layer (`deployment.engines`) puts them and CTranslate2 behind
one interface for the `evaluate`, `translate` and `serve` commands.
"""

from __future__ import annotations

import contextlib
import logging
import re

import torch

from ..modeling.modeling_vanilla_transformer import EXTRA_OUTPUT_TOKENS


logger = logging.getLogger(__name__)



# Where a text may be cut into sentences: after . ! ? ; : … (and their full-width forms) followed by white space.
SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?;:…。！？；：])\s+")


def model_length_limit(model) -> int | None:
    """The longest sequence the model was made for (`max_position_embeddings`), if its config says."""
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def split_to_fit(text: str, tokenizer, limit: int) -> list[str]:
    """`text` as consecutive pieces of at most `limit` tokens each (end of sequence included): whole sentences
    packed together, a sentence longer than `limit` cut between words, a word longer than that cut between
    tokens."""

    def length(piece: str) -> int:  # (verbose=False: no warning about a text longer than the model's length)
        return len(tokenizer(piece, truncation=False, verbose=False)["input_ids"])

    if length(text) <= limit:
        return [text]
    units = []
    for sentence in SENTENCE_BOUNDARY.split(text.strip()):
        if length(sentence) <= limit:
            units.append(sentence)
            continue
        for word in sentence.split():
            if length(word) <= limit:
                units.append(word)
                continue
            ids = tokenizer(word, add_special_tokens=False, verbose=False)["input_ids"]
            step = max(limit - 1, 1)  # room for the end-of-sequence token
            units += [tokenizer.decode(ids[i:i + step]) for i in range(0, len(ids), step)]
    pieces, current = [], ""
    for unit in units:
        candidate = f"{current} {unit}" if current else unit
        if current and length(candidate) > limit:
            pieces.append(current)
            current = unit
        else:
            current = candidate
    return pieces + [current] if current else pieces


@torch.no_grad()
def translate(model, tokenizer, sentences: list[str], batch_size: int = 64, num_beams: int = 4,
              length_penalty: float = 0.6, device: torch.device | str | None = None, synced_gpus: bool = False,
              progress: bool = False) -> list[str]:
    """Translations of `sentences` in their order, decoded in batches of similar source length.

    Each batch may produce up to (its longest source) + 50 new tokens (§6.1) and at most the model's
    `max_position_embeddings` - 1 (the decoder start token takes a position); passed explicitly, so a generation
    config with another `max_length` cannot cut translations short. A blank sentence gives "" without running the
    model; a sentence longer than `max_position_embeddings` tokens is translated piece by piece (`split_to_fit`)
    and the pieces' translations joined with a space. `synced_gpus` keeps FSDP ranks stepping together.
    """
    if not sentences:
        return []
    device = device or next(model.parameters()).device
    limit = model_length_limit(model)
    return translate_in_pieces(sentences, tokenizer, limit, lambda pieces: _translate_pieces(
        model, tokenizer, pieces, batch_size, num_beams, length_penalty, device, synced_gpus, progress, limit))


def translate_in_pieces(sentences: list[str], tokenizer, limit: int | None, translate_pieces) -> list[str]:
    """`translate_pieces(pieces) -> translations` applied to what an engine can take: a blank sentence gives ""
    without the engine; one longer than `limit` tokens is split (`split_to_fit`) and its pieces' translations are
    joined with a space."""
    pieces: list[str] = []  # what the engine translates
    owner: list[int] = []  # the sentence each piece belongs to
    kept = [index for index, sentence in enumerate(sentences) if sentence and not sentence.isspace()]
    # One batched tokenization for the lengths; only the (rare) sentences over the limit are split.
    lengths = [len(ids) for ids in tokenizer([sentences[i] for i in kept], truncation=False,
                                             verbose=False)["input_ids"]] if limit and kept else [0] * len(kept)
    for index, length in zip(kept, lengths):
        sentence = sentences[index]
        parts = split_to_fit(sentence, tokenizer, limit) if limit and length > limit else [sentence]
        pieces += parts
        owner += [index] * len(parts)
    translated = translate_pieces(pieces) if pieces else []
    hypotheses = [[] for _ in sentences]
    for index, text in zip(owner, translated):
        hypotheses[index].append(text)
    return [" ".join(part for part in parts if part) for parts in hypotheses]


def _translate_pieces(model, tokenizer, pieces: list[str], batch_size: int, num_beams: int, length_penalty: float,
                      device, synced_gpus: bool, progress: bool, limit: int | None) -> list[str]:
    """Beam search over `pieces` in batches of similar length; results in the order of `pieces`."""
    encoded = tokenizer(pieces, truncation=False)["input_ids"] if pieces else []
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if synced_gpus:  # every process must run as many generate calls, even with nothing (left) to translate
        batches += [None] * (_most_batches_of_any_process(len(batches), device) - len(batches))
    hypotheses: list[str] = [""] * len(encoded)
    was_training = model.training
    model.eval()
    with explicit_length_is_intended():
        for batch in _progress(batches, progress, "translating"):
            rows = [encoded[i] for i in batch] if batch else [[tokenizer.eos_token_id]]
            input_ids, attention_mask = pad_batch(rows, tokenizer.pad_token_id, device)
            new_tokens = input_ids.shape[1] + EXTRA_OUTPUT_TOKENS
            if limit:
                new_tokens = max(1, min(new_tokens, limit - 1))
            beam = {"length_penalty": length_penalty} if num_beams > 1 else {}  # a beam-search setting only
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, num_beams=num_beams,
                                    max_new_tokens=new_tokens, synced_gpus=synced_gpus, **beam)
            for index, text in zip(batch or [], tokenizer.batch_decode(output, skip_special_tokens=True)):
                hypotheses[index] = text.strip()
    model.train(was_training)
    return hypotheses


def _most_batches_of_any_process(count: int, device) -> int:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return count
    value = torch.tensor([count], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item())


@contextlib.contextmanager
def explicit_length_is_intended():
    """Exported models carry `max_length` in generation_config.json; passing `max_new_tokens` (the §6.1 rule) on
    top makes transformers warn at every batch that both are set. The explicit value is the intended one."""
    generation_logger = logging.getLogger("transformers.generation.utils")
    level = generation_logger.level
    generation_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        generation_logger.setLevel(level)


def _progress(items, enabled: bool, description: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, leave=False)


def pad_batch(sequences: list[list[int]], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask) of token-id lists."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, :len(ids)] = 1
    return input_ids.to(device), attention_mask.to(device)


# A hypothesis/reference length ratio outside these bounds means a degenerate decoder: outputs that repeat a token
# up to the length limit (above), or that end at once (below). BLEU alone hides which one it was.
DEGENERATE_LENGTH_RATIO = (0.5, 1.5)


def score(hypotheses: list[str], references: list[str], where: str = "", warn: bool = True) -> dict:
    """Corpus BLEU and chrF of detokenized text (sacrebleu defaults), with their signatures, and the
    hypothesis/reference length ratio (sacrebleu's token counts), warned about loudly when degenerate."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    length_ratio = bleu_score.sys_len / max(bleu_score.ref_len, 1)
    low, high = DEGENERATE_LENGTH_RATIO
    if warn and not low <= length_ratio <= high:
        logger.warning("WARNING%s: the translations are %.2f times as long as the references (expected %.1f-%.1f): "
                       "the decoder is degenerate (%s), so BLEU %.2f is not a real result. Early in training this "
                       "is normal; from a trained model it is not: check the installed transformers version "
                       "(`make test`).", f" ({where})" if where else "", length_ratio, low, high,
                       "repeated tokens" if length_ratio > high else "empty or truncated outputs", bleu_score.score)
    return {"bleu": bleu_score.score, "chrf": chrf_score.score, "length_ratio": length_ratio,
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature()),
            "bleu_detail": str(bleu_score), "sentences": len(references)}


def translation_pairs(dataset, source_lang: str, target_lang: str, limit: int | None = None) -> tuple[list, list]:
    """(sources, references) of a `translation` dataset, the first `limit` rows when given."""
    rows = dataset["translation"] if limit is None else dataset.select(range(min(limit, len(dataset))))["translation"]
    return [r[source_lang] for r in rows], [r[target_lang] for r in rows]
