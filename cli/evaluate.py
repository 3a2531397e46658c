"""`vanilla-transformer evaluate MODEL_DIR --dataset bible --split test`: BLEU and chrF of a model on a test set."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from ..base.files import write_text
from ..base.outputs import check_output_file
from ..deployment.engines import ENGINES, load_engine
from ..training.data import load_split
from ..training.evaluation import score, translation_pairs
from ..translation import translate
from ..translation.folders import device_problem, model_folder_problem
from .parsing import CommandParser, add_decoding_arguments, decoding_options, quiet_progress_bars


def check_decoding_arguments(parser: argparse.ArgumentParser, args) -> None:
    """Positive batch size, a usable device, a model folder: usage errors (exit status 2). (The decoding options are
    checked by `decoding_options`.)"""
    for name in ("batch_size", "max_samples"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            parser.error(f"--{name} must be positive, got {value}")
    if getattr(args, "engine", "transformers") == "transformers":
        folder = model_folder_problem(args.model_dir)
    else:  # an export folder: `load_engine` checks its files (after saying whether CTranslate2 is installed)
        folder = None if Path(args.model_dir).is_dir() else f"MODEL_DIR {args.model_dir} is not a folder"
    for problem in (folder, device_problem(args.device)):
        if problem:
            parser.error(problem)


def evaluate_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="vanilla-transformer evaluate", description=(
        "Translate a test set (beam search as in §6.1 unless the decoding options say otherwise) and print sacrebleu "
        "BLEU and chrF. Every sentence is decoded as it would be alone, so the scores do not depend on "
        "--batch_size. Sentences longer than the model's max_position_embeddings tokens are split at sentence "
        "boundaries and translated piece by piece."))
    parser.add_argument("model_dir", help="a model folder (final/, best/, an averaged model or a checkpoint)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="'bible', 'gettext' (Debian's software messages) or a Hub dataset name")
    source.add_argument("--file", help="a TSV or JSONL file of pairs (or the source side, with --target_file)")
    parser.add_argument("--target_file", default=None,
                        help="the target side of a plain-text pair (one sentence per line, aligned with --file)")
    parser.add_argument("--dataset_config", default=None, help="config of a Hub dataset")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--source_lang", default=None, help="default for the Bible: es")
    parser.add_argument("--target_lang", default=None, help="default for the Bible: en")
    parser.add_argument("--output", default=None, help="hypotheses file, a line each (default: hypotheses.<split>.txt); "
                        "a .jsonl file gets one JSON object a line, {source, reference, hypothesis}, which is the "
                        "default where sources hold line breaks (software messages); an older file of that name is "
                        "replaced, an input never")
    parser.add_argument("--batch_size", type=int, default=64, help="sentences per generation batch")
    parser.add_argument("--max_samples", type=int, default=None, help="only the first N sentences")
    parser.add_argument("--cache_dir", default=None)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--engine", choices=ENGINES, default="transformers",
                        help="ctranslate2: model_dir is a folder written by `vanilla-transformer export`")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    add_decoding_arguments(parser, exclude=("n_best",))
    return parser


def hypotheses_file(parser: argparse.ArgumentParser, output: str | None, split: str, sources: list[str]) -> Path:
    """Where the hypotheses go. A text file holds one a line, which a hypothesis with line breaks (each line of a
    source is translated as a line) would misalign: such sources get a .jsonl file by default, and a .txt asked for
    is refused before anything is translated."""
    broken = sum("\n" in source for source in sources)
    if output is None:
        return Path(f"hypotheses.{split}.jsonl" if broken else f"hypotheses.{split}.txt")
    if broken and Path(output).suffix != ".jsonl":
        parser.error(f"--output {output}: {broken} of the {len(sources)} sources hold line breaks, so their "
                     "translations do too and a file of one hypothesis a line would misalign them; give a .jsonl "
                     "file (one JSON object a line)")
    return Path(output)


def main(argv: list[str] | None = None) -> int:
    """`vanilla-transformer evaluate MODEL_DIR --dataset bible --split test [--output FILE]`."""
    parser = evaluate_parser()
    args = parser.parse_args(argv)
    if args.dataset in ("bible", "gettext"):  # both es → en by default
        args.source_lang, args.target_lang = args.source_lang or "es", args.target_lang or "en"
    if not args.source_lang or not args.target_lang:
        parser.error("--source_lang and --target_lang are required (except with --dataset bible or gettext)")
    check_decoding_arguments(parser, args)
    options = decoding_options(parser, args)
    if args.target_file and not args.file:
        parser.error("--target_file goes with --file (the source side)")
    for name in ("file", "target_file"):
        path = getattr(args, name)
        if path and not Path(path).is_file():
            parser.error(f"--{name} {path} does not exist")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_progress_bars()
    split = load_split(args.dataset, args.file, args.split, args.source_lang, args.target_lang,
                       args.dataset_config, args.cache_dir, args.target_file)
    sources, references = translation_pairs(split, args.source_lang, args.target_lang, args.max_samples)
    output = hypotheses_file(parser, args.output, args.split, sources)
    try:
        check_output_file(output, flag="--output", inputs=[args.file, args.target_file, args.model_dir])
    except ValueError as error:
        parser.error(str(error))
    try:
        engine = load_engine(args.model_dir, args.engine, args.device)
    except (ValueError, ImportError) as error:  # not an exported folder; CTranslate2 not installed
        parser.error(str(error))
    if engine.unsupported(options):
        parser.error(engine.unsupported(options))
    start = time.perf_counter()
    hypotheses = translate(engine, sources, options, args.batch_size, progress=True)
    seconds = time.perf_counter() - start
    if output.suffix == ".jsonl":
        write_text(output, "".join(json.dumps({"source": source, "reference": reference, "hypothesis": hypothesis},
                                              ensure_ascii=False) + "\n"
                                   for source, reference, hypothesis in zip(sources, references, hypotheses)))
    else:
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
