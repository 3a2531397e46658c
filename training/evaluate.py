"""Translation with the §6.1 decoding recipe, and BLEU/chrF with sacrebleu.

* `translate`: beam search (beam 4, length penalty α = 0.6), at most source length + 50 new tokens, batches of
  sentences sorted by length (little padding), results returned in the input order.
* `score`: corpus BLEU (sacrebleu's default 13a tokenization, detokenized text, as sacrebleu recommends) and chrF.
* `vanilla-transformer evaluate MODEL_DIR --dataset bible --split test`: prints BLEU and chrF, writes hypotheses.
* `vanilla-transformer translate MODEL_DIR "sentence" ...`: translates sentences (or stdin lines).
* `--engine ctranslate2` (both commands): MODEL_DIR is a folder written by `vanilla-transformer export --format
  ctranslate2`, run by CTranslate2 with the same decoding settings (see `ctranslate2_export`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# §6.1: "We set the maximum output length during inference to input length + 50".
EXTRA_OUTPUT_TOKENS = 50


@torch.no_grad()
def translate(model, tokenizer, sentences: list[str], batch_size: int = 64, num_beams: int = 4,
              length_penalty: float = 0.6, device: torch.device | str | None = None, synced_gpus: bool = False,
              progress: bool = False) -> list[str]:
    """Translations of `sentences` in their order, decoded in batches of similar source length.

    Each batch may produce up to (its longest source) + 50 new tokens (§6.1); passed explicitly, so a generation
    config with another `max_length` cannot cut translations short. `synced_gpus` keeps FSDP ranks stepping together.
    """
    if not sentences:
        return []
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    encoded = tokenizer(list(sentences), truncation=False)["input_ids"]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    hypotheses: list[str | None] = [None] * len(encoded)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    with explicit_length_is_intended():
        for batch in _progress(batches, progress, "translating"):
            input_ids, attention_mask = pad_batch([encoded[i] for i in batch], tokenizer.pad_token_id, device)
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, num_beams=num_beams,
                                    length_penalty=length_penalty,
                                    max_new_tokens=input_ids.shape[1] + EXTRA_OUTPUT_TOKENS, synced_gpus=synced_gpus)
            for index, text in zip(batch, tokenizer.batch_decode(output, skip_special_tokens=True)):
                hypotheses[index] = text.strip()
    model.train(was_training)
    return hypotheses


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


def score(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU and chrF of detokenized text (sacrebleu defaults), with their signatures."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    return {"bleu": bleu_score.score, "chrf": chrf_score.score, "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()), "bleu_detail": str(bleu_score), "sentences": len(references)}


def translation_pairs(dataset, source_lang: str, target_lang: str, limit: int | None = None) -> tuple[list, list]:
    """(sources, references) of a `translation` dataset, the first `limit` rows when given."""
    rows = dataset["translation"] if limit is None else dataset.select(range(min(limit, len(dataset))))["translation"]
    return [r[source_lang] for r in rows], [r[target_lang] for r in rows]


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------


def quiet_progress_bars() -> None:
    """No per-file progress bars from transformers ("Loading weights", "Writing model shards") in command output."""
    import transformers

    transformers.utils.logging.disable_progress_bar()


def load_model_and_tokenizer(model_dir: str, device: str | None = None):
    """A saved model folder (exported, best/, averaged or a checkpoint) in eval mode, with its tokenizer."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from .. import modeling  # noqa: F401  (registers the Auto classes)

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer


ENGINES = ("transformers", "ctranslate2")


def load_translator(model_dir: str, engine: str = "transformers", device: str | None = None):
    """`translate_fn(sentences, batch_size, num_beams, length_penalty, progress) -> list[str]` for a model folder:
    our model through `generate` ("transformers"), or a folder written by `vanilla-transformer export --format
    ctranslate2` run by CTranslate2 ("ctranslate2"). Both decode with the same settings (§6.1)."""
    if engine == "ctranslate2":
        from .ctranslate2_export import CTranslate2Translator

        translator = CTranslate2Translator(model_dir, device=device or "auto")  # auto: a GPU when there is one
        return lambda sentences, batch_size, num_beams, length_penalty, progress=False: translator.translate(
            sentences, batch_size, num_beams, length_penalty, progress=progress)
    if engine != "transformers":
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    model, tokenizer = load_model_and_tokenizer(model_dir, device)
    return lambda sentences, batch_size, num_beams, length_penalty, progress=False: translate(
        model, tokenizer, sentences, batch_size, num_beams, length_penalty, progress=progress)


def load_split(dataset: str | None, file: str | None, split: str, source_lang: str, target_lang: str,
               dataset_config: str | None = None, cache_dir: str | None = None):
    """One split of the bundled Bible, a Hub dataset, or a local TSV/JSONL file."""
    from .data import load_parallel

    if dataset == "bible":
        from .bible import load_bible

        splits = load_bible(cache_dir)
    elif dataset:
        splits = load_parallel(dataset, source_lang, target_lang, config_name=dataset_config)
    else:
        splits = load_parallel(file, source_lang, target_lang, split=split)
    if split not in splits:
        raise ValueError(f"no split {split!r} (available: {', '.join(splits)})")
    return splits[split]


def evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vanilla-transformer evaluate", description=(
        "Translate a test set with beam search (§6.1) and print sacrebleu BLEU and chrF."))
    parser.add_argument("model_dir", help="a model folder (final/, best/, an averaged model or a checkpoint)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="'bible' or a Hub dataset name")
    source.add_argument("--file", help="a TSV or JSONL file of pairs")
    parser.add_argument("--dataset_config", default=None, help="config of a Hub dataset")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--source_lang", default=None, help="default for the Bible: es")
    parser.add_argument("--target_lang", default=None, help="default for the Bible: en")
    parser.add_argument("--output", default=None, help="hypotheses file (default: hypotheses.<split>.txt)")
    parser.add_argument("--batch_size", type=int, default=64, help="sentences per generation batch")
    parser.add_argument("--num_beams", type=int, default=4)
    parser.add_argument("--length_penalty", type=float, default=0.6)
    parser.add_argument("--max_samples", type=int, default=None, help="only the first N sentences")
    parser.add_argument("--cache_dir", default=None)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--engine", choices=ENGINES, default="transformers",
                        help="ctranslate2: model_dir is a folder written by `vanilla-transformer export`")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    return parser


def evaluate_main(argv: list[str] | None = None) -> int:
    """`vanilla-transformer evaluate MODEL_DIR --dataset bible --split test [--output FILE]`."""
    parser = evaluate_parser()
    args = parser.parse_args(argv)
    if args.dataset == "bible":
        args.source_lang, args.target_lang = args.source_lang or "es", args.target_lang or "en"
    if not args.source_lang or not args.target_lang:
        parser.error("--source_lang and --target_lang are required (except with --dataset bible)")
    if not Path(args.model_dir).is_dir():
        parser.error(f"model_dir {args.model_dir} is not a directory")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_progress_bars()
    split = load_split(args.dataset, args.file, args.split, args.source_lang, args.target_lang,
                       args.dataset_config, args.cache_dir)
    sources, references = translation_pairs(split, args.source_lang, args.target_lang, args.max_samples)
    try:
        translate_fn = load_translator(args.model_dir, args.engine, args.device)
    except (ValueError, ImportError) as error:  # not an exported folder; CTranslate2 not installed
        parser.error(str(error))
    start = time.perf_counter()
    hypotheses = translate_fn(sources, args.batch_size, args.num_beams, args.length_penalty, progress=True)
    seconds = time.perf_counter() - start
    output = Path(args.output or f"hypotheses.{args.split}.txt")
    output.write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    scores = score(hypotheses, references)
    scores.update(seconds=round(seconds, 1), hypotheses_file=str(output))
    if args.json:
        print(json.dumps(scores, indent=2))
    else:
        print(f"BLEU  {scores['bleu']:.2f}  ({scores['bleu_signature']})")
        print(f"chrF  {scores['chrf']:.2f}  ({scores['chrf_signature']})")
        print(f"{len(hypotheses)} sentences translated in {seconds:.1f} s; hypotheses written to {output}")
    return 0


def translate_main(argv: list[str] | None = None) -> int:
    """`vanilla-transformer translate MODEL_DIR "sentence" ...` (or one sentence per line on stdin)."""
    parser = argparse.ArgumentParser(prog="vanilla-transformer translate",
                                     description="Translate sentences with a trained model (beam search, §6.1).")
    parser.add_argument("model_dir")
    parser.add_argument("sentences", nargs="*", help="sentences to translate (default: lines of stdin)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_beams", type=int, default=4)
    parser.add_argument("--length_penalty", type=float, default=0.6)
    parser.add_argument("--device", default=None)
    parser.add_argument("--engine", choices=ENGINES, default="transformers",
                        help="ctranslate2: model_dir is a folder written by `vanilla-transformer export`")
    args = parser.parse_args(argv)
    if not Path(args.model_dir).is_dir():
        parser.error(f"model_dir {args.model_dir} is not a directory")
    sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    quiet_progress_bars()
    try:
        translate_fn = load_translator(args.model_dir, args.engine, args.device)
    except (ValueError, ImportError) as error:  # not an exported folder; CTranslate2 not installed
        parser.error(str(error))
    for translation in translate_fn(sentences, args.batch_size, args.num_beams, args.length_penalty):
        print(translation)
    return 0


if __name__ == "__main__":
    raise SystemExit(evaluate_main())
