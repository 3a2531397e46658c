"""Translation with the §6.1 decoding recipe, and BLEU/chrF with sacrebleu.

* `translate`: beam search (beam 4, length penalty α = 0.6), at most source length + 50 new tokens and never more
  than the model's `max_position_embeddings`, batches of sentences sorted by length (little padding), results
  returned in the input order. An empty (or blank) sentence translates to an empty string without running the
  model; a sentence longer than the model's `max_position_embeddings` tokens is split at sentence boundaries (at
  word boundaries for a sentence longer than that on its own), each piece translated, the translations joined.
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
import re
import sys
import time
from pathlib import Path

import torch

from .errors import CommandParser

logger = logging.getLogger(__name__)

# §6.1: "We set the maximum output length during inference to input length + 50".
EXTRA_OUTPUT_TOKENS = 50


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
        # Blank lines and over-long sentences as for our model; the export's position table must hold the source
        # and its source length + 50 output tokens.
        limit = max(1, translator.decoding["max_positions"] - EXTRA_OUTPUT_TOKENS)
        return lambda sentences, batch_size, num_beams, length_penalty, progress=False: translate_in_pieces(
            sentences, translator.tokenizer, limit,
            lambda pieces: translator.translate(pieces, batch_size, num_beams, length_penalty, progress=progress))
    if engine != "transformers":
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    model, tokenizer = load_model_and_tokenizer(model_dir, device)
    return lambda sentences, batch_size, num_beams, length_penalty, progress=False: translate(
        model, tokenizer, sentences, batch_size, num_beams, length_penalty, progress=progress)


def load_split(dataset: str | None, file: str | None, split: str, source_lang: str, target_lang: str,
               dataset_config: str | None = None, cache_dir: str | None = None, target_file: str | None = None):
    """One split of the bundled Bible, a Hub dataset, or a local TSV/JSONL file (or plain-text pair)."""
    from .data import load_parallel

    if dataset == "bible":
        from .bible import load_bible

        splits = load_bible(cache_dir)
    elif dataset:
        splits = load_parallel(dataset, source_lang, target_lang, config_name=dataset_config)
    else:
        splits = load_parallel(file, source_lang, target_lang, split=split, target_path=target_file)
    if split not in splits:
        raise ValueError(f"no split {split!r} (available: {', '.join(splits)})")
    return splits[split]


def device_problem(device: str | None) -> str | None:
    """Why `--device` cannot be used on this machine, or None."""
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps, ...)"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            return f"--device {device}: CUDA is not available on this machine; use --device cpu"
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            return f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {device}: MPS is not available on this machine; use --device cpu"
    return None


def model_folder_problem(model_dir: str) -> str | None:
    """Why `model_dir` is not a model folder to load, or None."""
    path = Path(model_dir)
    if not path.is_dir():
        return f"MODEL_DIR {model_dir} is not a directory"
    if not (path / "config.json").is_file():
        return f"MODEL_DIR {model_dir} is not a model folder (no config.json): give final/, best/, a checkpoint or " \
               "an averaged model"
    return None


def check_decoding_arguments(parser: argparse.ArgumentParser, args) -> None:
    """Positive batch size and beam count, a usable device, a model folder: usage errors (exit status 2)."""
    for name in ("batch_size", "num_beams", "max_samples"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            parser.error(f"--{name} must be positive, got {value}")
    if getattr(args, "engine", "transformers") == "transformers":
        folder = model_folder_problem(args.model_dir)
    else:  # an export folder: `load_translator` checks its files (after saying whether CTranslate2 is installed)
        folder = None if Path(args.model_dir).is_dir() else f"MODEL_DIR {args.model_dir} is not a folder"
    for problem in (folder, device_problem(args.device)):
        if problem:
            parser.error(problem)


def evaluate_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="vanilla-transformer evaluate", description=(
        "Translate a test set with beam search (§6.1) and print sacrebleu BLEU and chrF. Sentences longer than the "
        "model's max_position_embeddings tokens are split at sentence boundaries and translated piece by piece."))
    parser.add_argument("model_dir", help="a model folder (final/, best/, an averaged model or a checkpoint)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="'bible' or a Hub dataset name")
    source.add_argument("--file", help="a TSV or JSONL file of pairs (or the source side, with --target_file)")
    parser.add_argument("--target_file", default=None,
                        help="the target side of a plain-text pair (one sentence per line, aligned with --file)")
    parser.add_argument("--dataset_config", default=None, help="config of a Hub dataset")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--source_lang", default=None, help="default for the Bible: es")
    parser.add_argument("--target_lang", default=None, help="default for the Bible: en")
    parser.add_argument("--output", default=None, help="hypotheses file (default: hypotheses.<split>.txt); an "
                                                       "older file of that name is replaced, an input never")
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
    from .checkpoints import write_text
    from .outputs import check_output_file

    parser = evaluate_parser()
    args = parser.parse_args(argv)
    if args.dataset == "bible":
        args.source_lang, args.target_lang = args.source_lang or "es", args.target_lang or "en"
    if not args.source_lang or not args.target_lang:
        parser.error("--source_lang and --target_lang are required (except with --dataset bible)")
    check_decoding_arguments(parser, args)
    if args.target_file and not args.file:
        parser.error("--target_file goes with --file (the source side)")
    for name in ("file", "target_file"):
        path = getattr(args, name)
        if path and not Path(path).is_file():
            parser.error(f"--{name} {path} does not exist")
    output = Path(args.output or f"hypotheses.{args.split}.txt")
    try:
        check_output_file(output, flag="--output", inputs=[args.file, args.target_file, args.model_dir])
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_progress_bars()
    split = load_split(args.dataset, args.file, args.split, args.source_lang, args.target_lang,
                       args.dataset_config, args.cache_dir, args.target_file)
    sources, references = translation_pairs(split, args.source_lang, args.target_lang, args.max_samples)
    try:
        translate_fn = load_translator(args.model_dir, args.engine, args.device)
    except (ValueError, ImportError) as error:  # not an exported folder; CTranslate2 not installed
        parser.error(str(error))
    start = time.perf_counter()
    hypotheses = translate_fn(sources, args.batch_size, args.num_beams, args.length_penalty, progress=True)
    seconds = time.perf_counter() - start
    write_text(output, "".join(h + "\n" for h in hypotheses))
    scores = score(hypotheses, references, where=f"{args.split} split")
    scores.update(seconds=round(seconds, 1), hypotheses_file=str(output))
    if args.json:
        print(json.dumps(scores, indent=2))
    else:
        print(f"BLEU  {scores['bleu']:.2f}  ({scores['bleu_signature']})")
        print(f"chrF  {scores['chrf']:.2f}  ({scores['chrf_signature']})")
        print(f"length ratio (hypotheses/references)  {scores['length_ratio']:.3f}")
        print(f"{len(hypotheses)} sentences translated in {seconds:.1f} s; hypotheses written to {output}")
    return 0


def translate_main(argv: list[str] | None = None) -> int:
    """`vanilla-transformer translate MODEL_DIR "sentence" ...` (or one sentence per line on stdin)."""
    parser = CommandParser(
        prog="vanilla-transformer translate",
        description="Translate sentences with a trained model (beam search, §6.1), one output line per input. An "
                    "empty input gives an empty line. An input longer than the model's max_position_embeddings "
                    "tokens is split at sentence boundaries (between words if one sentence is that long), each piece "
                    "translated and the translations joined; no output is longer than max_position_embeddings "
                    "tokens.")
    parser.add_argument("model_dir")
    parser.add_argument("sentences", nargs="*", help="sentences to translate (default: lines of stdin; an empty "
                                                     "line gives an empty line)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_beams", type=int, default=4)
    parser.add_argument("--length_penalty", type=float, default=0.6)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--engine", choices=ENGINES, default="transformers",
                        help="ctranslate2: model_dir is a folder written by `vanilla-transformer export`")
    args = parser.parse_args(argv)
    check_decoding_arguments(parser, args)
    sentences = args.sentences or [line.rstrip("\r\n") for line in sys.stdin]
    quiet_progress_bars()
    try:
        translate_fn = load_translator(args.model_dir, args.engine, args.device)
    except (ValueError, ImportError) as error:  # not an exported folder; CTranslate2 not installed
        parser.error(str(error))
    for translation in translate_fn(sentences, args.batch_size, args.num_beams, args.length_penalty):
        print(translation)
    return 0


if __name__ == "__main__":
    from .cli import run_command

    raise SystemExit(run_command("evaluate", evaluate_main))
