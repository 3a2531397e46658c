"""`vanilla-transformer translate MODEL_DIR "sentence" ...` (or one sentence per line on stdin; with `--format html`,
one HTML fragment per line)."""

from __future__ import annotations

import sys

from ..deployment.engines import ENGINES, load_engine
from ..translation import HtmlBatch, translate_alternatives
from .evaluate import check_decoding_arguments
from .parsing import CommandParser, add_decoding_arguments, decoding_options, quiet_progress_bars


def read_lines(stream) -> list[str]:
    """The lines of `stream` (its bytes when it has them), without line ends; a line that is not UTF-8 is an error
    naming it (`ValueError`), not a traceback from the tokenizer."""
    raw = getattr(stream, "buffer", None)
    if raw is None:
        return [line.rstrip("\r\n") for line in stream]
    lines = []
    for number, line in enumerate(raw, start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"stdin, line {number}: not valid UTF-8 (byte {line[error.start]:#04x} at column "
                             f"{error.start + 1}): give UTF-8 text") from None
        lines.append(text.rstrip("\r\n"))
    return lines


def main(argv: list[str] | None = None) -> int:
    """`vanilla-transformer translate MODEL_DIR "sentence" ...` (or one sentence per line on stdin)."""
    parser = CommandParser(
        prog="vanilla-transformer translate",
        description="Translate sentences with a trained model (beam search, §6.1; sampling with --do_sample), one "
                    "output line per input (with --n_best N, its N translations separated by tabs). An "
                    "empty input gives an empty line. An input longer than the model's max_position_embeddings "
                    "tokens is split at sentence boundaries (between words if one sentence is that long), each piece "
                    "translated and the translations joined; no output is longer than max_position_embeddings "
                    "tokens. With --format html, each input is an HTML fragment: its markup, code, links, mentions "
                    "and hashtags come back unchanged (docs/translation.md).")
    parser.add_argument("model_dir")
    parser.add_argument("sentences", nargs="*", help="sentences to translate (default: lines of stdin; an empty "
                                                     "line gives an empty line)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--format", choices=("text", "html"), default="text",
                        help="html: each input (line) is an HTML fragment, translated around its markup")
    parser.add_argument("--engine", choices=ENGINES, default="transformers",
                        help="ctranslate2: model_dir is a folder written by `vanilla-transformer export`")
    add_decoding_arguments(parser)
    args = parser.parse_intermixed_args(argv)  # sentences may come after the options too
    check_decoding_arguments(parser, args)
    options = decoding_options(parser, args)
    sentences = args.sentences or read_lines(sys.stdin)
    quiet_progress_bars()
    try:
        engine = load_engine(args.model_dir, args.engine, args.device)
    except (ValueError, ImportError) as error:  # not an exported folder; CTranslate2 not installed
        parser.error(str(error))
    if engine.unsupported(options):
        parser.error(engine.unsupported(options))
    if args.format == "html":
        batch = HtmlBatch(sentences)
        found = translate_alternatives(engine, batch.texts, options, args.batch_size)
        outputs = batch.rebuild_alternatives(found, options.n_best)
    else:
        outputs = translate_alternatives(engine, sentences, options, args.batch_size)
    for alternatives in outputs:
        print("\t".join(alternatives))  # with --n_best N: the N translations, best first, tab-separated
    return 0
