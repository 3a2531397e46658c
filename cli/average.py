"""`vanilla-transformer average CKPT... --output DIR`: the mean of checkpoints' weights as a model folder (§6.1)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..base.errors import UsageError
from ..base.outputs import check_output_folder
from ..training.checkpoints import average_to_folder, list_checkpoints, weights_file
from ..translation.folders import config_problem, one_line_text
from .parsing import CommandParser, quiet_progress_bars


def main(argv: list[str] | None = None) -> int:
    """`vanilla-transformer average CKPT... --output DIR`."""
    parser = CommandParser(prog="vanilla-transformer average", description=(
        "Average the model weights of checkpoints (the paper evaluates the mean of the last 5, §6.1) into a model "
        "folder. --output must be a new or empty folder or a model folder written by vanilla-transformer (which "
        "is replaced); it is never one of the inputs, a file or a training checkpoint."))
    parser.add_argument("checkpoints", nargs="*", help="checkpoint or model folders")
    parser.add_argument("--output", required=True, help="folder to write the averaged model to")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an existing folder holding other files (they are kept)")
    parser.add_argument("--last", type=int, default=None,
                        help="instead of listing checkpoints: the last N checkpoints of --run_dir")
    parser.add_argument("--run_dir", default=None, help="an --output_dir of `vanilla-transformer train`")
    parser.add_argument("--config_from", default=None,
                        help="folder with config.json and tokenizer (default: the last checkpoint)")
    args = parser.parse_args(argv)
    paths = list(args.checkpoints)
    if args.last is not None or args.run_dir is not None:
        if paths or args.last is None or args.run_dir is None:
            parser.error("give either checkpoint folders or both --last N and --run_dir DIR")
        if args.last <= 0:
            parser.error(f"--last must be positive, got {args.last}")
        if not Path(args.run_dir).is_dir():
            parser.error(f"--run_dir {args.run_dir} is not a directory")
        paths = [str(p) for p in list_checkpoints(args.run_dir)[-args.last:]]
        if len(paths) < args.last:
            parser.error(f"--run_dir {args.run_dir} has {len(paths)} checkpoints, fewer than --last {args.last}")
    if not paths:
        parser.error("no checkpoints given")
    missing = [p for p in paths + ([args.config_from] if args.config_from else []) if not Path(p).exists()]
    if missing:
        parser.error(f"not found: {', '.join(missing)}")
    if args.config_from:
        problem = config_problem(args.config_from, "--config_from", ": give the model or checkpoint folder the "
                                 "averaged weights come from")
        if problem:
            parser.error(problem)
    for path in paths:
        problem = weights_file_problem(path)
        if problem:
            parser.error(problem)
    try:
        check_output_folder(args.output, flag="--output", inputs=[*paths, args.config_from],
                            overwrite=args.overwrite)
    except UsageError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_progress_bars()
    out = average_to_folder(paths, args.output, args.config_from)
    print(f"averaged {len(paths)} checkpoints into {out}")
    return 0


def weights_file_problem(path: str) -> str | None:
    """Why the weights file of a checkpoint or model folder cannot be averaged (missing, truncated, not
    safetensors), naming the file; None when its header and size are whole. Reads the header only."""
    from safetensors import safe_open

    try:
        file = weights_file(path)
    except FileNotFoundError:
        return None  # said by the averaging itself ("no model.safetensors found")
    try:
        with safe_open(str(file), framework="pt") as weights:
            weights.keys()
    except Exception as error:  # noqa: BLE001  (SafetensorError, OSError: a damaged or cut-short file)
        return f"{file} cannot be read ({one_line_text(error)}): the file is damaged or incomplete (a checkpoint " \
               "cut short?); leave it out or write it again"
    return None
