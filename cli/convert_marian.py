"""`vanilla-transformer convert-marian SRC OUT_DIR`: import an OPUS-MT / Marian checkpoint exactly."""

from __future__ import annotations

import sys
from pathlib import Path

from ..base.errors import UsageError
from ..base.outputs import check_output_folder, staged_folder
from ..modeling.convert_marian import load_marian, max_logit_difference, save_converted
from .parsing import CommandParser


def _source_problem(src: str) -> str | None:
    """Why SRC is neither a folder nor a Hub model name, or None (a Hub name is only checked for its form)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    path = Path(src)
    if path.exists():
        return None if path.is_dir() else f"SRC {src} is a file; give a saved MarianMTModel folder or a Hub name"
    try:
        validate_repo_id(src)
    except HFValidationError:
        return f"SRC {src}: no such folder (and not a Hub model name such as Helsinki-NLP/opus-mt-es-en)"
    return None


def main(argv: list[str] | None = None) -> int:
    """`convert-marian SRC OUT_DIR`: convert a Marian folder (or Hub name) into a saved folder of ours, print the
    largest logit difference on a test batch, and return 0 (1 with a message when the model cannot be converted;
    argparse's 2 for a missing SRC or an OUT_DIR it may not write)."""
    parser = CommandParser(
        prog="vanilla-transformer convert-marian",
        description="Import an OPUS-MT / Marian checkpoint (MarianMTModel) exactly as a vanilla-transformer model. "
                    "OUT_DIR must be a new or empty folder or a model folder written by vanilla-transformer (which is "
                    "replaced); never SRC itself, a file or a training checkpoint.",
    )
    parser.add_argument("src", help="a saved MarianMTModel folder, or a Hub name such as Helsinki-NLP/opus-mt-es-en")
    parser.add_argument("out_dir", help="where to write the converted model and the Marian tokenizer files")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an existing folder holding other files (they are kept)")
    args = parser.parse_args(argv)
    problem = _source_problem(args.src)
    if problem:
        parser.error(problem)
    try:
        out_dir = check_output_folder(args.out_dir, flag="OUT_DIR", inputs=[args.src], overwrite=args.overwrite)
    except UsageError as error:
        parser.error(str(error))
    try:
        marian = load_marian(args.src)
        with staged_folder(out_dir) as folder:
            model = save_converted(marian, folder, tokenizer_source=args.src)
    except ValueError as error:
        print(f"vanilla-transformer convert-marian: error: {error}", file=sys.stderr)
        return 1
    difference = max_logit_difference(marian, model)
    print(f"wrote {args.out_dir} (max |logit difference| vs Marian on a test batch: {difference:.2e})")
    return 0
