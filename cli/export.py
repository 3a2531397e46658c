"""`vanilla-transformer export MODEL_DIR OUT --format ctranslate2 [--quantization int8]`."""

from __future__ import annotations

import shlex

from ..deployment.ctranslate2_convert import QUANTIZATIONS, ctranslate2, export_ctranslate2
from ..translation.folders import model_folder_problem
from .parsing import CommandParser, quiet_progress_bars


def main(argv: list[str] | None = None) -> int:
    """`vanilla-transformer export MODEL_DIR OUT --format ctranslate2 [--quantization int8]`."""
    parser = CommandParser(
        prog="vanilla-transformer export",
        description="Export a saved model folder for a deployment engine (CTranslate2). The exported folder "
                    "translates with `vanilla-transformer translate OUT --engine ctranslate2`.")
    parser.add_argument("model_dir", help="a saved model folder (final/, best/, an averaged model, a checkpoint)")
    parser.add_argument("output_dir", help="the folder to write")
    parser.add_argument("--format", required=True, choices=["ctranslate2"], help="the engine to export for")
    parser.add_argument("--quantization", default=None, choices=QUANTIZATIONS,
                        help="weight type (default: float32, exact); int8 is ~2x faster on CPU, not exact")
    parser.add_argument("--max_positions", type=int, default=None,
                        help="rows of the position table, the longest source or output the export can translate "
                             "(default: max_position_embeddings + 50)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an output_dir that holds other files (they stay); an earlier export there "
                             "is replaced without this flag")
    args = parser.parse_args(argv)
    problem = model_folder_problem(args.model_dir, "MODEL_DIR", ": it is exported already (translate with it: "
                                   f"vanilla-transformer translate {args.model_dir} --engine ctranslate2 \"...\")")
    if problem:
        parser.error(problem)
    quiet_progress_bars()  # no "Loading weights" bar in the command's output
    output = export_ctranslate2(args.model_dir, args.output_dir, quantization=args.quantization,
                                max_positions=args.max_positions, overwrite=args.overwrite)
    print(f"wrote {output} (CTranslate2 {ctranslate2.__version__}, {args.quantization or 'float32'} weights); "
          f"translate with: vanilla-transformer translate {shlex.quote(str(output))} --engine ctranslate2 \"...\"")
    return 0
