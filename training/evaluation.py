"""BLEU/chrF with sacrebleu (`score`: corpus BLEU with sacrebleu's default 13a tokenization of detokenized text, as
sacrebleu recommends, and chrF), and the sentence pairs of a dataset to score. Translating is the translation
layer's (`vanilla_transformer.translation`).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

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
