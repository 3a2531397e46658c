"""`vanilla-transformer translate MODEL_DIR "sentence" ...` (or one sentence per line on stdin)."""

from __future__ import annotations

import sys

from ..deployment.engines import ENGINES, load_engine
from .evaluate import check_decoding_arguments
from .parsing import CommandParser, finite_float, quiet_progress_bars


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
    parser.add_argument("--length_penalty", type=finite_float, default=0.6)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--engine", choices=ENGINES, default="transformers",
                        help="ctranslate2: model_dir is a folder written by `vanilla-transformer export`")
    args = parser.parse_intermixed_args(argv)  # sentences may come after the options too
    check_decoding_arguments(parser, args)
    sentences = args.sentences or read_lines(sys.stdin)
    quiet_progress_bars()
    try:
        engine = load_engine(args.model_dir, args.engine, args.device)
    except (ValueError, ImportError) as error:  # not an exported folder; CTranslate2 not installed
        parser.error(str(error))
    for translation in engine.translate(sentences, args.batch_size, args.num_beams, args.length_penalty):
        print(translation)
    return 0
