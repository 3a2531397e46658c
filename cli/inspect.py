"""`vanilla-transformer inspect MODEL_DIR --src "..." [--tgt "..."] --out DIR`: every figure and a text report for one
sentence pair.

Writes into DIR:
  attention_encoder_self_layer{L}.png, attention_decoder_self_layer{L}.png, attention_cross_layer{L}.png
      one grid of heads per layer (§3.2),
  positional_encoding.png   the sinusoidal table in the model's layout (§3.5),
  logit_lens.png            the top token read after the embeddings and each decoder layer,
  logit_attribution.png     how much each decoder sub-layer adds to the predicted token's logit,
  report.txt                source, target, logit-lens top tokens, attribution numbers, embedding neighbours.
"""

import argparse
from pathlib import Path

import torch

from ..base.outputs import same_or_nested
from ..translation.folders import device_problem, model_folder_problem, tokenizer_mismatch
from ..inspection.report import inspect_pair
from .parsing import CommandParser


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="vanilla-transformer inspect",
        description="Attention maps, positional encodings, logit lens, logit attribution and embedding neighbours "
                    "of a trained model for one sentence pair. The files are written into --out (created if "
                    "missing); other files there stay. --out may not be a file or the model/tokenizer folder.",
    )
    parser.add_argument("model_dir", help="a directory written by save_pretrained (model + tokenizer)")
    parser.add_argument("--src", required=True, help="the source sentence")
    parser.add_argument("--tgt", help="the target sentence (default: the model's own translation)")
    parser.add_argument("--out", required=True, help="directory for the figures and report.txt")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: MODEL_DIR)")
    parser.add_argument("--neighbours", nargs="+", default=(), metavar="TOKEN",
                        help="tokens whose embedding neighbours the report lists (default: two source tokens)")
    parser.add_argument("-k", type=int, default=8, help="neighbours per token (default 8)")
    parser.add_argument("--top-k", type=int, default=3, help="logit-lens tokens per layer in the report (default 3)")
    parser.add_argument("--positions", type=int, default=128, help="positions in the positional-encoding figure")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of `vanilla-transformer inspect` (argv without the sub-command); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from .. import modeling  # noqa: F401 -- registers the model with the Auto classes

    for name in ("k", "top_k", "positions"):
        if getattr(args, name) <= 0:
            parser.error(f"-{'k' if name == 'k' else '-' + name.replace('_', '-')} must be positive, "
                         f"got {getattr(args, name)}")
    problems = [model_folder_problem(args.model_dir, with_tokenizer=not args.tokenizer,
                                     ctranslate2_hint=": inspect reads the model's own weights; give the model folder "
                                     "it was exported from"), device_problem(args.device)]
    if not args.src.strip():
        problems.append("--src is empty: give the source sentence to inspect")
    if args.tgt is not None and not args.tgt.strip():
        problems.append("--tgt is empty: give the target sentence, or leave --tgt out for the model's translation")
    if args.tokenizer and not Path(args.tokenizer).is_dir():
        problems.append(f"--tokenizer {args.tokenizer} is not a directory")
    out = Path(args.out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        problems.append(f"--out {out} is an existing file, not a folder: choose another --out")
    for source in (args.model_dir, args.tokenizer):
        if source and Path(source).exists() and same_or_nested(out, Path(source)):
            problems.append(f"--out {out} is (or is inside) the input {source}: write the figures somewhere else")
    for problem in filter(None, problems):
        parser.error(problem)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_dir = Path(args.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).to(device).eval()
    if args.tokenizer:
        problem = tokenizer_mismatch(tokenizer, model.config)
        if problem:
            parser.error(f"--tokenizer {args.tokenizer} does not belong to the model in {model_dir}: {problem}; give "
                         "the tokenizer the model was trained with (or leave --tokenizer out)")
    report = inspect_pair(model, tokenizer, args.src, args.tgt, args.out, args.neighbours, args.k, args.top_k,
                     args.positions)
    print(report.read_text(encoding="utf-8").split("\n\n")[0])
    print(f"wrote figures and {report.name} to {Path(args.out)}")
    return 0
